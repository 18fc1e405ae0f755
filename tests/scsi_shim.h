/*
 * scsi_shim.h - the SCSI unit's unit tests' C side: a unit (engine/scsi/lu.c) on a mock block
 * path in memory, and a synchronous way to run one command on it.
 */
#ifndef COHORT_TESTS_SCSI_SHIM_H
#define COHORT_TESTS_SCSI_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How the mock completes: inside submit, or later on a thread of its own. */
enum sm_mode {
	SM_INLINE = 0,
	SM_THREAD = 1
};

struct sm_result {
	uint8_t status;
	uint8_t key, asc, ascq;
	bool info_valid;
	uint32_t info;
	uint32_t sense_len, data_len;
	uint32_t calls; /* times the done callback ran */
	uint8_t sks[3]; /* sense bytes 15-17: SKSV, C/D, BPV, bit pointer, field pointer */
};

/* sm_open - a unit of @nblocks blocks of @bs bytes over zeroed memory; @max_xfer its piece size
 * (0: default); 0 or -errno. */
int sm_open(uint32_t bs, uint64_t nblocks, uint32_t max_xfer, int mode);
/* sm_open_pr - three units of @nblocks blocks sharing one reservation table of @pr_blocks blocks
 * (after the units' blocks in the mock's memory): unit 0 serves SM_HOST_A through relative port
 * 1, unit 1 SM_HOST_B through port 2, unit 2 SM_HOST_A through port 2 (another controller). */
#define SM_HOST_A "iqn.2026-12.org.cohort:host-a"
#define SM_HOST_B "naa.5001405aabbccdd0"
int sm_open_pr(uint32_t bs, uint64_t nblocks, uint32_t pr_blocks, int mode);
/* sm_run_on - sm_run on unit @unit of sm_open_pr (one iovec piece). */
int sm_run_on(uint32_t unit, const uint8_t *cdb, uint32_t cdb_len, void *buf, uint32_t len,
	      struct sm_result *r);
/* sm_run_as - sm_run_on through a unit of its own that serves @initiator at @rel_port (made for
 * the command, sharing sm_open_pr's table). */
int sm_run_as(const char *initiator, uint16_t rel_port, const uint8_t *cdb, uint32_t cdb_len,
	      void *buf, uint32_t len, struct sm_result *r);
/* sm_lu_new - would a unit like the open one, with these reservation attributes, be made? 0 or
 * coh_scsi_lu_new's -errno (the unit is freed at once). */
int sm_lu_new(const char *initiator, uint16_t rel_port, uint32_t pr_blocks, uint64_t pr_lba);
/* sm_open_virtual - a unit of @nblocks blocks with no memory behind it (capacity reports of
 * units too big to hold); its media commands fail with -EIO. */
int sm_open_virtual(uint32_t bs, uint64_t nblocks);
void sm_close(void);
/* sm_errno_sense - what coh_scsi_sense_from_errno makes of @err on a command that @is_write. */
void sm_errno_sense(int err, bool is_write, struct sm_result *r);
/* Make the mock's next @n submits fail with @err (-EBUSY at submit; others at completion). */
void sm_fail(int err, uint32_t n, bool at_submit);
/* ... after letting @skip submits through. */
void sm_fail_after(uint32_t skip, int err, uint32_t n, bool at_submit);
uint8_t *sm_mem(void);	   /* the blocks */
uint64_t sm_submits(void); /* engine operations submitted so far */
void sm_set_state(uint32_t state);
/* sm_grow - the volume grown to @nblocks (the mock's memory with it, when larger), then
 * coh_scsi_lu_grow on the open unit (sm_open_pr's first); its result. Call it with nothing in
 * flight. */
int sm_grow(uint64_t nblocks);
void sm_set_tpg(uint16_t tpg_id, uint16_t rel_port, uint16_t count);
/* sm_run - execute @cdb with @buf (@len bytes; split into @pieces iovec pieces of odd sizes when
 * @pieces > 1), wait (bounded: 10 s) for the answer. 0, or -ETIMEDOUT. */
int sm_run(const uint8_t *cdb, uint32_t cdb_len, void *buf, uint32_t len, uint32_t pieces,
	   struct sm_result *r);

/* sm_run_short - TEST UNIT READY in a command whose cmd_size says it is a byte shorter than the
 * unit's struct; 0, or -EIO when the unit wrote past the public fields. */
int sm_run_short(struct sm_result *r);

/* sse_every_node_one_disk (scsi_engine.c) - a unit on each node of a real three-node cluster:
 * one identity, a write through one read through the others, a read past the end, COMPARE AND
 * WRITE raced with one winner a round and each loser's MISCOMPARE offset. 0 when all held. */
int sse_every_node_one_disk(void);

#ifdef __cplusplus
}
#endif

#endif
