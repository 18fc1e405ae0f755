/*
 * tcmu_ring_shim.h - a fake TCMU kernel side in ordinary memory (tests/tcmu_ring_shim.c) for the
 * ring tests; C, called from tests/tcmu_ring_test.cc. Leaves out everything the ring module does
 * not see: time-outs, the qfull queue, the page allocator.
 */
#ifndef COHORT_TCMU_RING_SHIM_H
#define COHORT_TCMU_RING_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tcmu_fake;
struct tcmu_ring;

/* One answer as the kernel reads it from a slot. */
struct tcmu_fake_done {
	uint16_t cmd_id;
	uint8_t status;
	bool read_len_set;
	uint32_t read_len;
	uint8_t sense_key, asc;
};

int tcmu_fake_new(uint32_t cmdr_size, uint32_t data_size, uint16_t version, uint16_t flags,
		  struct tcmu_fake **fp);
void tcmu_fake_delete(struct tcmu_fake *f);
int tcmu_fake_ring_init(struct tcmu_fake *f);
struct tcmu_ring *tcmu_fake_ring(struct tcmu_fake *f);
uint8_t *tcmu_fake_mem(struct tcmu_fake *f);
size_t tcmu_fake_size(struct tcmu_fake *f);
uint32_t tcmu_fake_tail(struct tcmu_fake *f);
uint32_t tcmu_fake_head(struct tcmu_fake *f);
/* Queue a CMD as queue_cmd_ring() does, with @data_len bytes of data in @niov iovecs starting at
 * mapping offset *@data_at. Returns the entry's ring offset or -ENOSPC. */
int tcmu_fake_queue_cmd(struct tcmu_fake *f, uint16_t cmd_id, const uint8_t *cdb, uint32_t cdb_len,
			uint32_t data_len, uint32_t niov, size_t *data_at);
/* Queue @len raw bytes as one entry (a malformed one, for the parser). */
int tcmu_fake_queue_raw(struct tcmu_fake *f, const void *entry, uint32_t len);
int tcmu_fake_queue_tmr(struct tcmu_fake *f, uint8_t type);
/* Reap what the tail passed since the last reap, as the kernel does: up to @max answers. */
int tcmu_fake_reap(struct tcmu_fake *f, struct tcmu_fake_done *out, int max);
/* Complete @ids (GOOD) from @nthreads threads at once; the number of refused completions. */
int tcmu_fake_complete_threads(struct tcmu_fake *f, const uint16_t *ids, uint32_t n,
			       uint32_t nthreads);

#ifdef __cplusplus
}
#endif

#endif
