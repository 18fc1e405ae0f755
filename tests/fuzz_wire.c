/*
 * fuzz_wire.c - fuzz target for what Cohort parses from peers and from configuration: region
 * descriptors, cluster address lists and the cache's lock messages. Built with libFuzzer when the compiler has it
 * (COHORT_FUZZ), and always with fuzz_driver.c, a bounded random driver that ctest runs.
 * Properties: nothing crashes; a descriptor or lock message that decodes re-encodes to the same
 * bytes; a parsed address has a non-empty host and a non-zero port.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_internal.h"
#include "verbs/verbs_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct coh_mr_desc d, e;
	struct coh_mr_fields f;
	char str[512], host[256];
	uint16_t port;
	uint32_t node;

	if (size >= COH_MR_DESC_SIZE) {
		memcpy(d.bytes, data, COH_MR_DESC_SIZE);
		if (mr_desc_decode(&d, &f) == 0) {
			mr_desc_encode(&f, &e);
			if (memcmp(d.bytes, e.bytes, COH_MR_DESC_SIZE))
				abort();
		}
	}
	if (size >= CMSG_SIZE) {
		struct cmsg m;
		uint8_t again[CMSG_SIZE];

		if (cmsg_decode(data, CMSG_SIZE, 8, 1000, &m) == 0) {
			cmsg_encode(&m, again);
			if (memcmp(again, data, CMSG_SIZE))
				abort();
		}
	}
	if (size >= 1) {
		size_t n = size - 1 < sizeof(str) - 1 ? size - 1 : sizeof(str) - 1;

		node = data[0] % 8;
		memcpy(str, data + 1, n);
		str[n] = '\0';
		if (cluster_addr_parse(str, node, host, sizeof(host), &port) == 0 &&
		    (!host[0] || !port))
			abort();
	}
	return 0;
}
