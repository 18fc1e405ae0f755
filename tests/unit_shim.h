/* unit_shim.h - what unit_shim.c exposes to the C++ unit tests. */
#ifndef COHORT_TESTS_UNIT_SHIM_H
#define COHORT_TESTS_UNIT_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/fabric.h"

#ifdef __cplusplus
extern "C" {
#endif

struct shim_fields {
	uint8_t provider;
	uint32_t node, region, rkey, access;
	uint64_t addr, len, incarnation;
	uint8_t persist;
};

int shim_desc_decode(const uint8_t *bytes, struct shim_fields *out);
void shim_desc_encode(const struct shim_fields *in, uint8_t *bytes);
int shim_cluster_addr(const char *cluster, uint32_t node, char *host, size_t hostlen,
		      uint16_t *port);
void shim_peer_down(struct coh_fabric *fab, uint32_t peer, uint64_t inc);
bool shim_slot_len_ok(uint32_t len, uint32_t slot_size);

enum {
	SHIM_CORRUPT_LEN = 1,
	SHIM_CORRUPT_TAIL = 2
};
int shim_corrupt_ring(const char *dir, uint32_t channel, int what);

/* The cluster-directory name the next shm region of @fab will get. */
void shim_shm_next_mr_name(struct coh_fabric *fab, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
