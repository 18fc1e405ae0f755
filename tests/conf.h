/*
 * conf.h - harness of the fabric conformance suite: runs a scenario as a cluster of node
 * processes on whichever provider the environment names, with a control plane (barriers,
 * messages, descriptor exchange) that scenarios use to coordinate.
 *
 * Environment: COHORT_TEST_PROVIDER ("shm", default, or "rdma"); COHORT_TEST_CLUSTER (rdma: the
 * "ip:port,..." list; default built from COHORT_RXE_IP with ports from COHORT_TEST_PORT_BASE);
 * COHORT_TEST_SHM_BASE (shm: where cluster directories are made, default /dev/shm).
 */
#ifndef COHORT_TESTS_CONF_H
#define COHORT_TESTS_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cohort/fabric.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CONF_MAX_NODES 8u
#define CONF_MSG_MAX 256u
#define CONF_TIMEOUT_MS 10000

/* Per-node state a scenario works with. ep[i] is the data endpoint (channel 1) to node i, or the
 * loopback endpoint for i == id; they all complete on data_cq. */
struct conf_node {
	struct coh_fabric *fab;
	uint32_t id, n;
	const char *provider;
	struct coh_cq *data_cq;
	struct coh_ep *ep[CONF_MAX_NODES];
	/* control plane, private to conf.c */
	struct coh_cq *ctl_cq;
	struct coh_ep *ctl[CONF_MAX_NODES];
	struct coh_mr *ctl_mr;
	uint8_t inbox[CONF_MAX_NODES][64][CONF_MSG_MAX];
	uint32_t inbox_len[CONF_MAX_NODES][64];
	uint32_t inbox_head[CONF_MAX_NODES], inbox_count[CONF_MAX_NODES];
};

typedef int (*conf_scenario_fn)(struct conf_node *cn);

/* A failed check inside a scenario: print where and return 1 from the scenario. */
#define CONF_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "node %u: %s:%d: check failed: %s: ", cn->id, __FILE__,    \
				__LINE__, #cond);                                                  \
			fprintf(stderr, __VA_ARGS__);                                              \
			fprintf(stderr, "\n");                                                     \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

/*
 * conf_run - fork @n node processes, bring each up (fabric, full mesh of control and data
 * endpoints) and run @fn in each. @expect_killed is a bitmap of nodes expected to die by
 * SIGKILL. Returns 0 when every node ended as expected; otherwise prints why and returns 1.
 * Bounded: each child has an alarm of @timeout_s seconds.
 */
int conf_run(const char *name, uint32_t n, conf_scenario_fn fn, uint64_t expect_killed,
	     unsigned int timeout_s);

/* The provider under test, from the environment. */
const char *conf_provider(void);

/* Control plane. Each returns 0 or a negative errno. */
int conf_send(struct conf_node *cn, uint32_t peer, const void *msg, uint32_t len);
int conf_recv(struct conf_node *cn, uint32_t peer, void *msg, uint32_t *len, int timeout_ms);
int conf_barrier(struct conf_node *cn);
/* Every node exports @mr and receives every other node's descriptor into descs[node]. */
int conf_exchange(struct conf_node *cn, struct coh_mr *mr, struct coh_mr_desc *descs);
/* Wait for exactly one data completion. */
int conf_wait1(struct conf_node *cn, struct coh_wc *wc);

/*
 * conf_auth_pair - two node processes, with cluster secrets @secret0 and @secret1 (NULL: none),
 * each open a fabric and an endpoint to the other and pass a message each way; @res[i] gets
 * node i's result (0 or -errno). Returns 1 when the run itself failed.
 */
int conf_auth_pair(const char *secret0, const char *secret1, int res[2]);

/* Single-process helpers for tests that open fabrics themselves. */
int conf_cluster_new(char *buf, size_t len, uint32_t n);
void conf_cluster_cleanup(const char *cluster);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_TESTS_CONF_H */
