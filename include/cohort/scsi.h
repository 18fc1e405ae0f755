/*
 * scsi.h - a SCSI logical unit over a Cohort volume: SBC-3/SPC-4 emulation of the commands a
 * front end (the TCMU ring, engine/scsi/tcmu.c) hands it, executed on the asynchronous engine.
 *
 * Consumer tier. A front end creates one logical unit per exported volume and passes each
 * command's CDB and data buffer to coh_scsi_cmd_exec; the unit answers with a SAM status, sense
 * data and the Data-In length. Media commands become struct coh_io operations submitted through
 * the unit's submit function (coh_node_submit on a node); everything else is answered from the
 * unit's attributes. Every node exports a volume with the same identity (VPD 0x80 serial and the
 * 0x83 NAA designator derive from @volume_id), and every path reports active/optimized.
 *
 * Persistent reservations are cluster-wide when the unit is given a table and the one initiator it
 * serves (@pr_blocks, @initiator); otherwise refused.
 *
 * Leaves out: the transport (TCMU, its ring and configfs: tcmu.h), REPORT LUNS (the kernel's),
 * task management.
 */
#ifndef COHORT_SCSI_H
#define COHORT_SCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cohort/node.h"

#ifdef __cplusplus
extern "C" {
#endif

#define COH_SCSI_SENSE_MAX 96	     /* TCMU_SENSE_BUFFERSIZE: the most sense a front end carries */
#define COH_SCSI_CDB_MAX 32	     /* the longest CDB parsed (variable-length CDBs are refused) */
#define COH_SCSI_PR_TABLE_BYTES 8192 /* a volume's reservation table (struct coh_scsi_lu_attr) */

/* SAM status codes (SAM-5 table 33). */
enum coh_scsi_status {
	COH_SCSI_GOOD = 0x00,
	COH_SCSI_CHECK_CONDITION = 0x02,
	COH_SCSI_BUSY = 0x08,
	COH_SCSI_RESERVATION_CONFLICT = 0x18,
	COH_SCSI_TASK_SET_FULL = 0x28,
};

/* The path's ALUA state as this node reports it (REPORT TARGET PORT GROUPS, and the sense of
 * media commands refused while not active). */
enum coh_scsi_lu_state {
	COH_SCSI_LU_ACTIVE = 0,	       /* active/optimized: the node serves I/O */
	COH_SCSI_LU_TRANSITIONING = 1, /* a view change or rejoin: NOT READY 04h/0Ah, retry */
	COH_SCSI_LU_UNAVAILABLE = 2,   /* fenced, leaving or without quorum: NOT READY 04h/0Ch, so
					  that dm-multipath fails the path and uses another */
};

/* How a unit reaches the block path: coh_node_submit with @ctx a struct coh_node, or a test's
 * own. Same contract as coh_node_submit: 0 and the callback runs exactly once, or -errno and it
 * never runs. */
typedef int (*coh_scsi_submit_fn)(void *ctx, struct coh_io *io);

/**
 * struct coh_scsi_lu_attr - a logical unit.
 * @attr_size: sizeof(struct coh_scsi_lu_attr) as the caller was built with
 * @block_size: logical block size in bytes (512 to 65536, a power of two; the volume's)
 * @nblocks: capacity in logical blocks
 * @first_lba: where the volume starts in the node's block space (a volume carved from the group:
 *             the unit's LBA 0 is the engine's @first_lba)
 * @volume_id: the volume's identity, the same on every node (VPD 0x80 serial: its 32 hex
 *             digits; VPD 0x83: an NAA 6 designator built from it)
 * @volume_name: for the T10 vendor designator and logs (copied; at most 64 bytes)
 * @tpg_id: this node's target port group (RTPG; one group per node, each active/optimized)
 * @rel_port_id: this node's relative target port identifier
 * @tpg_count: how many controller nodes export the volume (RTPG lists a group for each)
 * @max_xfer_blocks: the longest READ/WRITE in blocks (VPD 0xB0; longer ones are split into
 *                   several engine operations, and COMPARE AND WRITE, one operation, takes at
 *                   most this many); 0 takes the default (256). Each piece is one log record
 *                   per block on the log peers, so keep it well under the node's log_bytes
 * @submit, @submit_ctx: the block path
 * @pr_lba, @pr_blocks: persistent reservations (docs/frontend.md): the volume's reservation
 *                      table, @pr_blocks blocks at @pr_lba of the block path's space (outside
 *                      the unit's LBAs; at least 8 KiB, at most @max_xfer_blocks), the same for
 *                      every unit of the volume on every node. 0 blocks: PERSISTENT RESERVE IN
 *                      and OUT are refused (INVALID COMMAND OPERATION CODE)
 * @initiator: the one initiator this unit serves (its SCSI name: iqn., eui. or naa.; at most 223
 *             bytes, copied), which with @rel_port_id is the I_T nexus reservations are kept
 *             for. Required with @pr_blocks; the transport must let only that initiator reach
 *             the unit (an LIO ACL mapping this unit's backstore for it alone)
 */
struct coh_scsi_lu_attr {
	size_t attr_size;
	uint32_t block_size;
	uint64_t nblocks;
	uint64_t first_lba;
	uint8_t volume_id[16];
	const char *volume_name;
	uint16_t tpg_id;
	uint16_t rel_port_id;
	uint16_t tpg_count;
	uint32_t max_xfer_blocks;
	coh_scsi_submit_fn submit;
	void *submit_ctx;
	uint64_t pr_lba;
	uint32_t pr_blocks;
	const char *initiator;
};

struct coh_scsi_lu;

/** coh_scsi_lu_new - a unit from @attr (validated: -EINVAL names nothing, so check the log). */
int coh_scsi_lu_new(const struct coh_scsi_lu_attr *attr, struct coh_scsi_lu **lu);
/** coh_scsi_lu_delete - free @lu; no command may be in flight on it. */
void coh_scsi_lu_delete(struct coh_scsi_lu *lu);
/**
 * coh_scsi_lu_grow - the unit's capacity is @nblocks from the next command on (READ CAPACITY,
 * MODE SENSE's block descriptor, the range checks), while commands run: its volume grew. A host
 * sees it at its next READ CAPACITY (a rescan). 0; -EINVAL (smaller than now, or too large);
 * -EBUSY (a unit with a reservation table, which lies right after its blocks).
 */
int coh_scsi_lu_grow(struct coh_scsi_lu *lu, uint64_t nblocks);
/** coh_scsi_lu_nblocks - the unit's capacity now. */
uint64_t coh_scsi_lu_nblocks(struct coh_scsi_lu *lu);
/** coh_scsi_lu_set_state - what the unit reports from now on (enum coh_scsi_lu_state). */
void coh_scsi_lu_set_state(struct coh_scsi_lu *lu, uint32_t state);

struct coh_scsi_cmd;
typedef void (*coh_scsi_done_fn)(struct coh_scsi_cmd *cmd, void *arg);

/**
 * struct coh_scsi_cmd - one SCSI command.
 * @cmd_size: sizeof(struct coh_scsi_cmd) as the caller was built with
 * @cdb, @cdb_len: the command descriptor block (the caller's until done)
 * @iov, @iov_cnt: the data buffer: Data-Out to read from, or Data-In to fill (the caller's until
 *                 done); its total length is what the transport allocated
 * @done, @done_arg: called exactly once when the command is answered, possibly before
 *                   coh_scsi_cmd_exec returns, possibly on an engine thread
 * Set by the unit before @done:
 * @status: enum coh_scsi_status
 * @sense, @sense_len: fixed-format sense data when @status is CHECK CONDITION
 * @data_len: Data-In bytes produced (less than the buffer: the transport reports a residual)
 * The rest is the unit's.
 */
struct coh_scsi_cmd {
	size_t cmd_size;
	const uint8_t *cdb;
	uint32_t cdb_len;
	const struct iovec *iov;
	uint32_t iov_cnt;
	coh_scsi_done_fn done;
	void *done_arg;

	uint8_t status;
	uint8_t sense[COH_SCSI_SENSE_MAX];
	uint32_t sense_len;
	uint32_t data_len;

	/* The unit's, from exec to done. */
	struct coh_scsi_lu *lu;
	struct coh_io io;
	void *bounce;
	uint64_t lba;
	uint32_t nblocks, done_blocks;
	uint32_t op_state;
	uint8_t *pat;	  /* WRITE SAME, UNMAP: the blocks each piece writes */
	uint64_t *ext;	  /* UNMAP: (lba, blocks) pairs; WRITE SAME and the rest: one, inline */
	uint64_t ext1[2]; /* ... that one */
	uint32_t n_ext, i_ext; /* extents, and the one being done */
	uint32_t chunk;	       /* blocks of the piece in flight */
	int err;	       /* the first piece's failure */
	uint32_t sync; /* (atomic) whether a piece's completion or its submitter goes on (lu.c) */
	uint8_t *data; /* the command's data, contiguous: the iovec's one piece or @bounce */
	uint64_t data_len_total;
	uint8_t *pr_buf;      /* the reservation table: as read, as to be written, decoded */
	uint32_t pr_try;      /* PERSISTENT RESERVE OUT: COMPARE AND WRITE rounds lost so far */
	uint8_t pr_param[24]; /* ... its parameter list */
};

/**
 * coh_scsi_cmd_exec - execute @cmd on @lu. Always answered: @cmd->done runs exactly once, with
 * GOOD, CHECK CONDITION and sense, BUSY or TASK SET FULL (the engine's queue is full: the
 * initiator retries). A malformed CDB gets ILLEGAL REQUEST with the field's sense, never a crash.
 * A @cmd whose cmd_size is smaller than the unit's struct is answered ILLEGAL REQUEST at once.
 */
void coh_scsi_cmd_exec(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd);

/**
 * coh_scsi_sense_from_errno - the one map from an engine error to SCSI: fills @cmd's status and
 * sense for @err (a -errno from the block path) on a command that @is_write or not.
 */
void coh_scsi_sense_from_errno(struct coh_scsi_cmd *cmd, int err, bool is_write);

#ifdef __cplusplus
}
#endif

#endif
