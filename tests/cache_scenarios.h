/* cache_scenarios.h - the coherent cache scenarios, for the googletest driver. */
#ifndef COHORT_TESTS_CACHE_SCENARIOS_H
#define COHORT_TESTS_CACHE_SCENARIOS_H

#include <stddef.h>

#include "conf.h"

#ifdef __cplusplus
extern "C" {
#endif

void cache_sc_set_store(const char *path);
void cache_sc_set_seed(uint64_t seed);
int sc_cache_costs(struct conf_node *cn);
int sc_cache_invalidation(struct conf_node *cn);
int sc_cache_contention(struct conf_node *cn);
int sc_cache_handover_order(struct conf_node *cn);
int sc_cache_linearizable(struct conf_node *cn);
int sc_cache_retry_drains_queue(struct conf_node *cn);
int sc_cache_write_undo(struct conf_node *cn);
int sc_cache_version_wrap(struct conf_node *cn);
int sc_cache_rekey_fences(struct conf_node *cn);
int sc_cache_hold_and_yield(struct conf_node *cn);
int sc_cache_lost_grant(struct conf_node *cn);
int sc_cache_serve_unlocked(struct conf_node *cn);
int sc_cache_inv_shared_word(struct conf_node *cn);
int sc_cache_range_batch(struct conf_node *cn);
int sc_cache_fence_waits_handover(struct conf_node *cn);
uint32_t cache_sc_version_bits(void);
/* Local-state unit checks (cache_grant.c): 0, or -1 with the failed condition in @why. */
int cache_unit_stale_grants(char *why, size_t len);
int cache_unit_res_walk(char *why, size_t len);

#ifdef __cplusplus
}
#endif

#endif
