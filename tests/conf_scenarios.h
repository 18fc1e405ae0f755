/* conf_scenarios.h - the conformance scenarios, for the googletest driver. */
#ifndef COHORT_TESTS_CONF_SCENARIOS_H
#define COHORT_TESTS_CONF_SCENARIOS_H

#include "conf.h"

#ifdef __cplusplus
extern "C" {
#endif

int sc_connect(struct conf_node *cn);
int sc_write_send_order(struct conf_node *cn);
int sc_atomics(struct conf_node *cn);
int sc_read_concurrent(struct conf_node *cn);
int sc_access(struct conf_node *cn);
int sc_many_outstanding(struct conf_node *cn);
int sc_sizes(struct conf_node *cn);
int sc_recv_too_small(struct conf_node *cn);
int sc_flush_and_sync(struct conf_node *cn);
int sc_peer_killed(struct conf_node *cn);
int sc_clean_leave(struct conf_node *cn);
int sc_partition(struct conf_node *cn);
int sc_pmem_region(struct conf_node *cn);
int sc_cq_wake(struct conf_node *cn);

#ifdef __cplusplus
}
#endif

#endif
