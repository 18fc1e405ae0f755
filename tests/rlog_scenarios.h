/* rlog_scenarios.h - the log writer against real peers, for the googletest driver. */
#ifndef COHORT_TESTS_RLOG_SCENARIOS_H
#define COHORT_TESTS_RLOG_SCENARIOS_H

#include "conf.h"

#ifdef __cplusplus
extern "C" {
#endif

int sc_rlog_partial_append(struct conf_node *cn);
int sc_rlog_rewrite(struct conf_node *cn);
int sc_rlog_write_undo(struct conf_node *cn);
int sc_rlog_retire_kept(struct conf_node *cn);
/* 2 nodes: 8 threads' writes queued behind the writer's lock go out in one round (group commit),
 * and each is on the peer. */
int sc_rlog_group_commit(struct conf_node *cn);

#ifdef __cplusplus
}
#endif

#endif
