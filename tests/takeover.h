/*
 * takeover.h - crash trials of the engine: a cluster of node processes on the shm provider runs a
 * workload of writes with known content and reads over a RAID-5 (or RAID-1) volume while up to
 * three nodes die by SIGKILL, each at its own point (the write path, a step of the coherence
 * protocol, a step of the view change that an earlier death started, or between operations),
 * and one node may be paused (SIGSTOP) past the failure detector and resumed. The survivors'
 * view is then checked: every acknowledged write readable from every survivor, the whole history
 * (the dead nodes' unfinished operations as pending) linearizable, every stripe's parity
 * matching its data, and a paused node that the others excluded serving nothing.
 */
#ifndef COHORT_TESTS_TAKEOVER_H
#define COHORT_TESTS_TAKEOVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TK_MAXN 7u	/* nodes per trial: 3 deaths of 7 leave a majority */
#define TK_MAXV 3u	/* victims per trial */
#define TK_MAXOPS 4160u /* operations per node, the final reads included */
#define TK_NONE 99u	/* no such node */

/* The width of the directory word's version field this test was built with (a narrow build,
 * -DCOHORT_VER_BITS=8, wraps every 256 lock handovers); takeover_tests.cmake defines it. */
#ifndef TK_VER_BITS
#ifdef COHORT_VER_BITS
#define TK_VER_BITS COHORT_VER_BITS
#else
#define TK_VER_BITS 24
#endif
#endif

/*
 * struct tk_victim - a node that dies: at the @after-th time it reaches crash point @point (enum
 * coh_crash_point: 1-7 the write path, 8-16 the coherence protocol, 17-27 a view change, which
 * only a node that runs one reaches), or with @point 0 before its operation @kill_at_op. A
 * victim whose point never comes dies after its last operation; one with a view-change point
 * first waits, bounded, for the view changes of the victims before it in the list (and of a
 * paused node's exclusion), so that it dies during one if its point comes there.
 */
struct tk_victim {
	uint32_t node;
	uint32_t point;
	uint32_t after;
	uint32_t kill_at_op;
};

struct tk_trial {
	uint32_t nodes; /* 3 .. TK_MAXN */
	uint32_t nvictims;
	struct tk_victim victims[TK_MAXV];
	uint32_t ops;	     /* operations per node, at most TK_MAXOPS - 64 */
	uint32_t replicas;   /* k */
	uint32_t raid_level; /* 1 or 5 */
	uint64_t seed;
	uint32_t log_kib;    /* each log region; small to exercise back-pressure */
	uint32_t timeout_ms; /* every node's timeout_ms; 0: 3000 */
	uint32_t fence;	     /* enum coh_fence, every node's; COH_FENCE_AGENT: the parent
			      * kills and reaps the node the agent names (tk_fence_agent) */
	/* A pause: the parent stops @pause_node (SIGSTOP) once it has done @pause_at_op
	 * operations, and resumes it (SIGCONT) after @pause_ms, or, with @pause_ms 0, once every
	 * survivor serves a view without it (bounded). TK_NONE: no pause. */
	uint32_t pause_node;
	uint32_t pause_at_op;
	uint32_t pause_ms;
	/* With @cut, the pause is a partition instead: at the same moments the network between
	 * @pause_node and every other node is cut and healed again (coh_fabric_partition; shm
	 * only), and the node runs on meanwhile: its operations, its lease, its view changes. */
	uint32_t cut;
	/* Operations each node keeps in flight: 0 or 1, one synchronous call after another;
	 * more, submitted (coh_node_submit) with that many outstanding, so that a death or a
	 * pause finds many in flight. At most TK_MAXQD. */
	uint32_t qd;
};
#define TK_MAXQD 64u

/* What became of the paused node. */
enum tk_pause_end {
	TK_PAUSE_NONE = 0, /* no pause in the trial */
	TK_PAUSE_MEMBER,   /* a member to the end: not excluded, or excluded and admitted again */
	TK_PAUSE_FENCED,   /* killed by SIGKILL (the survivors' fence; never the harness) */
	TK_PAUSE_EXCLUDED, /* alive and outside the survivors' view; it left at the end */
};

struct tk_result {
	uint64_t acked_writes, pending_writes, reads, failed_ops;
	uint64_t takeovers, replayed_blocks, repaired_stripes, backpressure;
	uint64_t takeover_ns, view_ns; /* as the winner measured them */
	uint64_t trial_ns;	       /* fork to the last reap */
	uint32_t epoch;		       /* the survivors' final epoch */
	uint32_t survivors;	       /* their final view's members */
	int victim_died;	       /* 1 if every victim was killed */
	uint32_t died_at_end;	       /* victims (bit by node) whose point never came */
	uint32_t pause_end;	       /* enum tk_pause_end */
	uint32_t paused_refused; /* the paused node's operations refused after its exclusion */
	uint64_t paused_ms;	 /* how long it was stopped */
	uint64_t
	    transfers; /* the fewest exclusive lock transfers a resource saw (from the history) */
	uint32_t fence_calls; /* COH_FENCE_AGENT: how many times the survivors' agents were asked */
};

/* tk_run - one trial. Returns 0 when every check passed, else 1 with the reason on stderr. */
int tk_run(const struct tk_trial *t, struct tk_result *res);

/* tk_describe - every field of @t, in words, into @buf: enough to run the trial again. */
void tk_describe(const struct tk_trial *t, char *buf, size_t len);

/* tk_point_name - the name of crash point @pt ("XCAS", "VIEW_RELOG"; "between-ops" for 0). */
const char *tk_point_name(uint32_t pt);

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
