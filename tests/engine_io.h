/*
 * engine_io.h - scenarios of the operation engine (engine/io.c) on node processes: the state
 * machine driven step by step, compare-and-write raced across the cluster, and linearizability
 * with several submitting threads per node. Each returns 0 on success.
 */
#ifndef COHORT_TESTS_ENGINE_IO_H
#define COHORT_TESTS_ENGINE_IO_H

#ifdef __cplusplus
extern "C" {
#endif

/* Node 0 of 3 runs a manual engine: refusals without callbacks, queued operations that do not
 * move until a poll, a poll of one that runs exactly one, the states of a write and of a hit,
 * back-pressure at the queue depth, a callback that resubmits, compare-and-write that matches
 * and that does not, and close with operations queued (each ends once, -ESHUTDOWN). */
int en_state_machine(void);
/* 3 nodes, rounds of 8 compare-and-writes per node against the same data: exactly one wins. */
int en_compare_write_cluster(void);
/* 3 nodes, 4 threads per node with 16 operations in flight each; the history is linearizable. */
int en_linz_many_in_flight(void);
/* 3 nodes: node 0's write of a block node 1 holds waits at node 1 (its service thread held at
 * that request); a read and a write of a resource node 0 holds, submitted after it, complete
 * first. */
int en_parallel(void);
/* 3 nodes: node 0 writes a block twice; while the second write is replicated and not yet in its
 * cache, a flush destages the first; node 0 acknowledges the second and dies. The survivors read
 * the second (its log record was not retired by the destage of the first). */
int en_destage_race(void);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_TESTS_ENGINE_IO_H */
