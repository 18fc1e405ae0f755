/*
 * tcmu_ring.h - the TCMU command ring as plain memory (engine tier, private to engine/scsi/):
 * the mailbox check, the entry parser, and out-of-order completion by slot stealing with the
 * tail advance. Nothing here opens a file or starts a thread, so tests lay a ring out in
 * ordinary memory the way the kernel's queue_cmd_ring() does and drive it (tests/tcmu_ring_test.cc,
 * tests/fuzz_tcmu.c); engine/scsi/tcmu.c maps the real one from /dev/uioN.
 *
 * Leaves out: configfs, the uio fd (the caller writes 4 bytes to it when a completion moved the
 * tail), SCSI emulation (coh_scsi_cmd_exec), KEEP_BUF and BIDI data (a BIDI entry's Data-In
 * iovecs are not handed on).
 */
#ifndef COHORT_TCMU_RING_H
#define COHORT_TCMU_RING_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TCMU_RING_IOV_MAX 256 /* iovecs per command; more gets CHECK CONDITION */
#define TCMU_RING_CDB_MAX 32  /* COH_SCSI_CDB_MAX */
#define TCMU_RING_SENSE_MAX 96

/* What one ring entry is, once parsed. */
enum tcmu_ring_kind {
	TCMU_RING_PAD = 0, /* skipped */
	TCMU_RING_CMD = 1, /* a command: answer it with tcmu_ring_complete */
	TCMU_RING_TMR = 2, /* a task management notification: acknowledged by skipping it */
};

/**
 * struct tcmu_ring_entry - a parsed entry, copied out of the shared ring (the slot itself may be
 * overwritten by another command's completion from then on).
 * @kind: enum tcmu_ring_kind
 * @off, @len: where the entry lies in the command ring
 * @cmd_id: the kernel's id of a CMD
 * @bad: a CMD whose CDB or iovecs do not lie where they must (inside its entry, inside the data
 *       area); answer it with CHECK CONDITION without touching its data
 * @cdb, @cdb_len: the CDB (its length from its operation code's group)
 * @iov, @iov_cnt: Data-Out/Data-In buffers, as pointers into the mapping (validated)
 */
struct tcmu_ring_entry {
	uint32_t kind;
	uint32_t off, len;
	uint16_t cmd_id;
	bool bad;
	uint8_t cdb[TCMU_RING_CDB_MAX];
	uint32_t cdb_len;
	struct iovec iov[TCMU_RING_IOV_MAX];
	uint32_t iov_cnt;
};

/**
 * struct tcmu_ring - one device's ring over a mapping of @map_size bytes at @base.
 * @lock: guards @tail, @next and the slots in [@tail, @next) (taken by every completion, which
 *        can run on any engine thread, and by the ring thread when it consumes)
 * @next: offset of the first entry not yet parsed (the ring thread's; read by completions)
 * @tail: the tail as this process last stored it in the mailbox
 * @open: CMD entries parsed and not yet answered
 */
struct tcmu_ring {
	uint8_t *base;
	size_t map_size;
	uint32_t cmdr_off, cmdr_size;
	size_t data_off;
	pthread_mutex_t lock;
	uint32_t next, tail;
	uint32_t open;
};

/**
 * tcmu_ring_init - check the mailbox of a mapping (version 2, out-of-order completion, a command
 * ring that lies inside it) and start consuming at the mailbox's tail. Returns 0, -EPROTO (an
 * unsupported version or no OOOC) or -EINVAL (a ring that does not fit the mapping).
 */
int tcmu_ring_init(struct tcmu_ring *r, void *base, size_t map_size);
void tcmu_ring_fini(struct tcmu_ring *r);

/** tcmu_ring_pending - true when the kernel has queued entries not yet parsed. */
bool tcmu_ring_pending(struct tcmu_ring *r);

/**
 * tcmu_ring_next - parse the next queued entry into @e and consume it (PAD and TMR entries are
 * passed over by the tail as soon as nothing before them is open). Returns 1 with @e filled, 0
 * when nothing is queued, or -EPROTO when the ring itself is broken (an entry header whose length
 * is zero, unaligned or past the queued part): nothing after it can be found.
 */
int tcmu_ring_next(struct tcmu_ring *r, struct tcmu_ring_entry *e);

/**
 * tcmu_ring_parse - parse the entry at ring offset @off, with @avail bytes queued from there, into
 * @e without consuming it. The same return values as tcmu_ring_next (0 is not returned).
 */
int tcmu_ring_parse(const struct tcmu_ring *r, uint32_t off, uint32_t avail,
		    struct tcmu_ring_entry *e);

/**
 * tcmu_ring_skip - move the tail over PAD and TMR entries (a TMR is acknowledged so) that nothing
 * open precedes. Returns true when the tail moved (the caller tells the kernel).
 */
bool tcmu_ring_skip(struct tcmu_ring *r);

/**
 * tcmu_ring_complete - answer command @cmd_id: its id, @status, @sense (when @status is CHECK
 * CONDITION) and, when @read_len is not UINT32_MAX, a short Data-In length go into the oldest
 * still-open CMD slot; the tail then moves over every answered or skipped entry. Thread-safe.
 * Returns true when the tail moved (the caller tells the kernel: a 4-byte write to the uio fd),
 * false when no slot was open (a caller's bug, logged by the caller).
 */
bool tcmu_ring_complete(struct tcmu_ring *r, uint16_t cmd_id, uint8_t status, const uint8_t *sense,
			uint32_t sense_len, uint32_t read_len);

/** tcmu_ring_cdb_len - a CDB's length from its operation code (SPC-4 4.2.5.1 groups); 0 when
 * a variable-length CDB (7Fh) is too short to say. */
uint32_t tcmu_ring_cdb_len(const uint8_t *cdb, uint32_t avail);

#ifdef __cplusplus
}
#endif

#endif
