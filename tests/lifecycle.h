/*
 * lifecycle.h - trials of a cluster's whole life (issue 13): one life of node processes runs a
 * workload of writes with known content and reads, and ends as the trial says (every process
 * SIGKILLed at once, at a random moment or right after one node reached a crash point; or a
 * shutdown); then a second life of fresh processes opens on the same element files and log
 * directory, reads every block, and the histories of both lives together must be linearizable
 * (an acknowledged write that is lost, or an old value that comes back, is not), with every
 * stripe's parity matching its data.
 */
#ifndef COHORT_TESTS_LIFECYCLE_H
#define COHORT_TESTS_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum lc_end {
	LC_CRASH_ALL = 0, /* every node SIGKILLed at once */
	LC_CLOSE = 1,	  /* every node closes, in the order given by @order */
	LC_STOP = 2, /* node order[0] stops the cluster (coh_node_stop_cluster), then all close */
};

struct lc_trial {
	uint32_t nodes;	     /* 3 .. 5 */
	uint32_t replicas;   /* k */
	uint32_t raid_level; /* 1 or 5 */
	uint32_t ops;	     /* operations per node in the first life */
	uint64_t seed;
	uint32_t end;	     /* enum lc_end */
	uint32_t crash_node; /* LC_CRASH_ALL: this node dies at @crash_point, then all do; >= nodes:
				 everybody dies after @kill_after_ops operations of node 0 */
	uint32_t crash_point; /* enum coh_crash_point */
	uint32_t crash_after;
	uint32_t kill_after_ops;
	uint32_t death_gap_us; /* LC_CRASH_ALL: the others die this long after @crash_node did (in
				  the survivors' view change), not at once */
	uint32_t order[5];     /* LC_CLOSE: the order of the closes */
	uint32_t log_kib;
	uint32_t start_gap_ms; /* the first life's nodes start in reverse order, this far apart */
	uint32_t absent;       /* before the second life, these nodes' peers try to open without
				  them, and must wait (their open times out), unless @force */
	bool force;	       /* ... with force_open: they open without them */
	uint32_t damage;       /* enum lc_damage: done to the files between the lives */
};

enum lc_damage {
	LC_DAMAGE_NONE = 0,
	LC_TRUNCATE_LOG, /* a copy of node 1's log (node 2's for k = 1, else node 0's) cut to half */
	LC_CORRUPT_LOG,	 /* bytes of the first records of that copy flipped */
	LC_TRUNCATE_ELEM, /* element 1 cut to half: the second life must refuse to open */
	LC_CORRUPT_LOGS,  /* the record at the tail of every log copy corrupted */
};

struct lc_result {
	uint64_t acked_writes, pending_writes, reads;
	uint64_t recovered_blocks, stale_records, bad_records;
	uint64_t recovery_ns;
};

/* lc_run - one trial of two lives. Returns 0 when every check passed, else 1 (reason on stderr). */
int lc_run(const struct lc_trial *t, struct lc_result *res);

/*
 * struct lc_rejoin - a cluster that runs while its nodes die and come back: in each of @rounds,
 * node (round % @nodes) is SIGKILLed (@kill_two: and the next one too, both restarted at once),
 * the others go on without it, then it starts again on its files and is admitted, while every
 * node keeps reading and writing. At the end every node reads every block; the history of every
 * incarnation must be linearizable and every stripe consistent.
 */
struct lc_rejoin {
	uint32_t nodes, replicas, rounds;
	uint64_t seed;
	bool kill_two;
	bool restart_in_view_change; /* restart the victim before the others have excluded it */
	/* kill three (a majority of five) at once: the survivors stop serving, still connected to
	 * each other, and must form again with the three once they are back */
	bool kill_majority;
};

struct lc_rejoin_result {
	uint64_t acked_writes, pending_writes, reads, formations;
	uint64_t rejoin_ns_max; /* from a victim's restart to its serving */
};

int lc_rejoin_run(const struct lc_rejoin *t, struct lc_rejoin_result *res);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_TESTS_LIFECYCLE_H */
