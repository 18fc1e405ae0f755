/*
 * engine_harness.h - the multi-node harness of the engine's scenario tests (engine_io.c), of the
 * background destage (bgdestage.c) and of the SCSI unit on a real cluster (scsi_engine.c): node processes forked after mapping a shared
 * area, each opening its fabric (shm in a fresh cluster directory, or rdma in the VM rig) and its
 * node over element files there, with barriers across them. C only (the shared area is
 * _Atomic); the gtest side sees the scenarios' own headers.
 *
 * Every wait is bounded: the barriers (EN_WAIT_MS), and an alarm in every child (EN_CHILD_S).
 */
#ifndef COHORT_TESTS_ENGINE_HARNESS_H
#define COHORT_TESTS_ENGINE_HARNESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench.h"
#include "bgdestage.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "cohort/node_hooks.h"
#include "linz.h"

#define EN_MAXN 3u
#define EN_BS 4096u
#define EN_ELEM_BLOCKS 16u /* RAID-5 over 3 elements, chunk 2: 32 blocks, 8 resources */
#define EN_WAIT_MS 30000
#define EN_CHILD_S 120
#define EN_MAXOPS 6000u
#define EN_MAXSTATES 64u

/* struct en_shared - the area every node process of one run shares (zeroed at the start): the
 * harness's barriers, @killed and @why, and each scenario's fields, whichever file it is in. */
struct en_shared {
	struct bench_sbar bar[8];	/* bar[7]: the harness's, at the end of every node */
	struct bench_sbar bar_one_less; /* the end, when one node was killed on purpose */
	/* the state machine scenario */
	_Atomic uint32_t nstates;
	uint32_t states[EN_MAXSTATES];
	/* compare-and-write: successes per round, cluster-wide */
	_Atomic uint32_t caw_won[64];
	_Atomic uint64_t caw_value[64];
	/* linearizability: each node's history */
	_Atomic uint32_t nops[EN_MAXN];
	/* parallel: node 1 holds its service thread at a request for PA_RES while @hold */
	_Atomic bool hold, held, release;
	/* destage race: node 0's write, replicated and not installed, asks for a flush */
	_Atomic bool dr_armed, dr_flush, dr_flushed, dr_acked;
	uint32_t killed; /* nodes that end by SIGKILL, on purpose */
	/* SCSI (scsi_engine.c): each node's VPD 0x80 and 0x83 pages, and each round's COMPARE AND
	 * WRITE successes and winner (the node, + 1) */
	uint8_t vpd80[EN_MAXN][64], vpd83[EN_MAXN][128];
	_Atomic uint32_t scsi_won[64];
	_Atomic uint32_t scsi_winner[64];
	/* background destage (bgdestage.c): each node's counters, the reads that came back wrong */
	struct bg_result bg;
	struct linz_op ops[EN_MAXN][EN_MAXOPS];
	char why[EN_MAXN][256];
};

/* struct en_child - one node process: its id, its fabric and node (open while the scenario
 * runs; a scenario may close the node itself, leaving @n NULL). */
struct en_child {
	struct en_shared *sh;
	uint32_t id, nodes;
	const char *dir, *cluster;
	struct coh_fabric *fab;
	struct coh_node *n;
	/* scenario-local */
	const struct coh_io *watch; /* the operation whose states the hook records */
};

/* EFAIL - record why this node failed (shown by en_run) and return 1 from the scenario. */
#define EFAIL(c, ...)                                                                              \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "%s node %u: %s\n", __func__, (c)->id, (c)->sh->why[(c)->id]);     \
		return 1;                                                                          \
	} while (0)

/* en_bar - wait (bounded) for every node at barrier @i (0-6); 0, or -ETIMEDOUT. */
int en_bar(struct en_child *c, uint32_t i);

/*
 * en_run - fork @nodes (at most EN_MAXN) node processes over a RAID-5 volume of 3 elements with
 * @k replicas and a queue depth of @depth, each with @hooks (NULL: none; arg is the node's
 * struct en_child, and manual_engine applies to node 0 only), running @fn, then the end barrier;
 * then @judge (may be NULL) over the shared area. 0 when every node exits 0 (or was killed on
 * purpose: @killed) and @judge says 0. @name prefixes what it reports.
 */
int en_run(const char *name, uint32_t nodes, uint32_t k, uint32_t depth,
	   const struct coh_node_hooks *hooks, int (*fn)(struct en_child *c),
	   int (*judge)(struct en_shared *sh, uint32_t nodes));

/* struct en_opts - what en_run_opts sets beyond en_run's node: each field 0 for en_run's value
 * (EN_ELEM_BLOCKS blocks per element, a 256 KiB log, 64 cache blocks, no background destage). */
struct en_opts {
	uint32_t elem_blocks, log_bytes, cache_blocks, destage_high;
};

/* en_run_opts - en_run with the node attributes of @o (NULL: en_run's). */
int en_run_opts(const char *name, uint32_t nodes, uint32_t k, uint32_t depth,
		const struct en_opts *o, const struct coh_node_hooks *hooks,
		int (*fn)(struct en_child *c), int (*judge)(struct en_shared *sh, uint32_t nodes));

#endif /* COHORT_TESTS_ENGINE_HARNESS_H */
