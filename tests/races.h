/*
 * races.h - the failures the randomized crash trials never injected, each as a deterministic
 * scenario of node processes on the provider under test (issue 12): a paused member, a writer
 * that dies between its exclusive CAS and its invalidations, a writer that moved its log, a death
 * during a log move, a view change that only some survivors commit, a log move followed by a
 * whole-cluster crash, a death inside a compare-and-write. Each returns 0 when the
 * cluster came through with every acknowledged write readable and nothing stale served, else 1
 * with the reason on stderr.
 */
#ifndef COHORT_TESTS_RACES_H
#define COHORT_TESTS_RACES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1: a member paused past the failure detector, excluded, resumed: it serves nothing stale and
 * touches no directory word. @fence is enum coh_fence. */
int rc_paused_member(uint32_t fence);
/* 2: a writer dies between its exclusive CAS and its invalidations; a later writer gets the
 * resource by a grant; the old sharers must not serve their copies. */
int rc_writer_dies_before_invalidating(void);
/* 3: a writer moves its log (its peer died) and writes; it dies before the view change commits:
 * its acknowledged write is replayed from where the log moved. */
int rc_writer_moved_its_log(void);
/* 4: a new log peer dies while the log moves to it: another round, not a node leaving. */
int rc_death_during_log_move(void);
/* 5: a view change commits on one survivor and not on the others (a second death before their
 * last barrier): @commit_somewhere 1 drops the dying node's last barrier message (ZEROED) to
 * all but one survivor, which commits; 0 drops its READY, so nobody commits. */
int rc_partial_commit(int commit_somewhere);
/* 6: a writer whose log peer died destages and moves its log; another node writes the block
 * meanwhile; the whole cluster crashes and restarts: the acknowledged write is there, not the
 * first writer's record left live on the dead peer's copy. */
int rc_log_move_then_cluster_crash(void);
/* 7: an element goes missing for one node only, which then writes around it: the others must
 * not read the element's old contents, before or after a restart. */
int rc_element_missing_on_one_node(void);
/* 8: a node joins while a member is slow to stop serving (its destage takes longer than a
 * timeout): the formation waits for it, none fails, and everything written is read back. */
int rc_join_while_a_member_is_slow(void);
/* 9: a node dies inside a compare-and-write, at crash point @point: the block holds the old
 * value or the dead node's whole, and of two compare-and-writes against it after, exactly one
 * succeeds. */
int rc_compare_write_dies_at(uint32_t point);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_TESTS_RACES_H */
