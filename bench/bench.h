/*
 * bench.h - shared parts of cohort-bench: latency samples and their percentiles, and the two
 * output forms (a human-readable table, and CSV with the fixed header
 * suite,op,provider,size,samples,min_ns,p50_ns,p99_ns,p999_ns,max_ns).
 */
#ifndef COHORT_BENCH_H
#define COHORT_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bench_opts {
	const char *provider;
	const char *cluster;
	int node; /* -1: run every node as a forked process */
	uint32_t iters;
	uint32_t warmup;
	size_t min_size, max_size;
	bool csv;
	const char *ops;     /* comma-separated subset, or NULL for all */
	uint32_t lanes;	     /* engine: coh_node_attr.lanes; 0: the default */
	uint32_t latency_ns; /* engine, shm: coh_fabric_attr.shm_latency_ns */
	/* engine: blocks per node's set (0: 64), each node's log in KiB (0: 16 MiB), cache
	 * blocks (0: the node's), coh_node_attr.destage_high (0: the node's) */
	uint32_t set_blocks, log_kib, cache_blocks, destage_high;
};

/* struct bench_row - one measured line. @rate_mops is 0 when not measured. */
struct bench_row {
	char suite[16];
	char op[32];
	char provider[16];
	size_t size;
	uint32_t samples;
	uint64_t min, p50, p99, p999, max;
	double rate_mops;
	bool has_net; /* table only: fabric operations per cache operation */
	double net_per_op;
};

uint64_t bench_now_ns(void);
/* bench_stats - sort @ns (n samples) and fill the percentiles of @row. */
void bench_stats(uint64_t *ns, uint32_t n, struct bench_row *row);
void bench_print_header(bool csv);
void bench_print_row(const struct bench_row *row, bool csv);
bool bench_op_selected(const struct bench_opts *o, const char *op);
/* bench_remove_tree - remove a directory made for a run, and what is in it. */
void bench_remove_tree(const char *dir);

/* A barrier for forked node processes, in memory they share (MAP_SHARED, set up before fork). */
struct bench_sbar {
	_Atomic uint32_t count, gen;
	uint32_t parties;
};
void bench_sbar_init(struct bench_sbar *b, uint32_t parties);
/* Wait until every party has arrived, at most @timeout_ms. Returns 0 or -ETIMEDOUT. */
int bench_sbar_wait(struct bench_sbar *b, int timeout_ms);
/* Reap @pid, killing it first if it outlives @timeout_s. Returns 0 or -errno of waitpid. */
int bench_wait_child(pid_t pid, int *status, int timeout_s);
/* Block contents that name their write: @value in the first 8 bytes, then a pattern derived from
 * it; value 0 is the all-zero block. bench_block_value returns -EILSEQ for a torn or mixed block. */
void bench_fill_block(uint8_t *b, size_t len, uint64_t value);
int bench_block_value(const uint8_t *b, size_t len, uint64_t *value);

int bench_fabric(const struct bench_opts *o);
int bench_cache(const struct bench_opts *o);
int bench_replication(const struct bench_opts *o);
int bench_engine(const struct bench_opts *o);
/* cohort-bench routing: the router over two groups on three controllers (bench_routing.c). */
int bench_routing(const struct bench_opts *o);
/* The volume-size rows of the engine suite (open_1g, view_change_64g, restart_1t, ...; shm). */
int bench_scale(const struct bench_opts *o);
/* The lifecycle rows of the replication suite (recovery_<N>m, rejoin_<N>m; shm only). */
int bench_lifecycle(const struct bench_opts *o);

#endif
