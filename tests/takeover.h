/*
 * takeover.h - crash trials of the engine: a cluster of node processes on the shm provider runs a
 * workload of writes with known content and reads over a RAID-5 volume, one node dies by SIGKILL
 * at a chosen point, and the survivors' view is checked: every acknowledged write readable from
 * every survivor, the whole history (the dead node's unfinished operations as pending)
 * linearizable, every stripe's parity matching its data.
 */
#ifndef COHORT_TESTS_TAKEOVER_H
#define COHORT_TESTS_TAKEOVER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tk_trial {
	uint32_t nodes;	      /* 3 .. 5 */
	uint32_t victim;      /* the node that dies; >= nodes: nobody */
	uint32_t crash_point; /* enum coh_crash_point; 0: between operations */
	uint32_t crash_after; /* the n-th time the point is reached */
	uint32_t kill_at_op;  /* crash_point 0: before this operation */
	uint32_t ops;	      /* operations per node */
	uint32_t replicas;    /* k */
	uint32_t raid_level;  /* 1 or 5 */
	uint64_t seed;
	uint32_t log_kib; /* each log region; small to exercise back-pressure */
};

struct tk_result {
	uint64_t acked_writes, pending_writes, reads;
	uint64_t takeovers, replayed_blocks, repaired_stripes, backpressure;
	uint64_t takeover_ns, view_ns; /* as the winner measured them */
	uint32_t epoch;		       /* the survivors' final epoch */
	int victim_died;	       /* 1 if the victim was killed */
};

/* tk_run - one trial. Returns 0 when every check passed, else 1 with the reason on stderr. */
int tk_run(const struct tk_trial *t, struct tk_result *res);

/*
 * tk_hold_run - a takeover held open: node 0 writes block 0 and dies; node 1 wins its locks and
 * holds its takeover (the takeover hook) while node 2 shows that a read of block 0 waits for it
 * and that I/O to other resources, lock transfers included, goes on. Returns 0 or 1.
 */
int tk_hold_run(void);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_TESTS_TAKEOVER_H */
