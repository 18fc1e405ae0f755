/*
 * bench_cache.c - cohort-bench cache: latency of the coherent cache's operations on the shm
 * provider, each beside the raw fabric operations it is built from, measured in the same run:
 *   read_hit         a block this node holds (no network operation)
 *   read_miss_peer   a block a peer caches: one CAS on the directory + one READ of the peer's slot
 *   read_miss_store  a block nobody caches: one CAS + a store read
 *   write_held       a block this node holds exclusively (no network operation)
 *   write_transfer   a block another node holds exclusively: one request, the holder writes back
 *                    and hands over
 *   fabric_cas, fabric_read_slot, fabric_cas+read   the raw floor of read_miss_peer
 *   write_fresh_x8   8 blocks nobody holds, written one after the other (8 resources, 8 CAS
 *                    round trips): the baseline of
 *   write_range8_fresh  the same 8 blocks' worth written as one range: its 8 CASes go together
 *                    (acq_batch), one round trip
 * and aggregate throughput of a 70/30 read/write mix from 1 to 4 nodes.
 * Each resource is one block here (resource_blocks = 1), so that every miss pays its own CAS.
 * On shm the store is a file in the cluster directory; on rdma (--cluster ip:port,... with up to
 * four addresses) a file in /dev/shm shared by the node processes on this host.
 * Node processes are forked; they meet at a process-shared barrier outside the measured code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/cache.h"

#define BS 4096u
#define SLOT (BS + 64u)

struct shared {
	pthread_barrier_t bar;
	struct coh_mr_desc raw_desc;
	uint64_t results[4][2]; /* throughput: ops and ns per node */
	uint64_t lat[];		/* throughput: 4 x iters per-op latencies */
};

struct bc {
	const struct bench_opts *o;
	struct shared *sh;
	uint32_t me, nodes;
	struct coh_fabric *fab;
	struct coh_store *store;
	struct coh_cache *cache;
	/* raw baseline */
	struct coh_cq *cq;
	struct coh_ep *ep;
	struct coh_mr *raw, *loc;
	struct coh_rmr *rraw;
};

static int bc_up(struct bc *b, const char *dir, const char *store, uint64_t nblocks,
		 uint32_t cache_blocks, bool raw)
{
	struct coh_fabric_attr fa = { .provider = b->o->provider,
				      .node_id = b->me,
				      .cluster =
					  strcmp(b->o->provider, "shm") ? b->o->cluster : dir,
				      .shm_latency_ns = b->o->latency_ns };
	struct coh_cache_attr ca = { .nodes = b->nodes,
				     .resource_blocks = 1,
				     .cache_blocks = cache_blocks };
	int ret;

	ret = coh_fabric_open(&fa, &b->fab);
	if (!ret)
		ret = coh_store_open_file(store, BS, nblocks, true, &b->store);
	if (ret)
		return ret;
	ca.fab = b->fab;
	ca.store = b->store;
	ret = coh_cache_open(&ca, &b->cache);
	if (ret || !raw)
		return ret;
	/* A raw endpoint beside the cache's, for the floor: node 1 exports a slot-sized region
	 * with an atomic word in it. */
	struct coh_ep_attr ea = {
		.peer = 1 - b->me, .channel = 50, .max_send_wr = 4, .max_recv_wr = 4
	};
	if ((ret = coh_cq_new(b->fab, 16, &b->cq)))
		return ret;
	ea.send_cq = ea.recv_cq = b->cq;
	/* As many slots as the misses below touch, each last written by the peer, and as many
	 * local landing slots, so that the floor pays the same cold cache lines at both ends as a
	 * real miss does (a miss lands in a slot of its own). fabric_read_slot lands in one warm
	 * slot: the difference between the two rows is the price of cold memory. */
	if ((ret = coh_mr_new(b->fab, (size_t)b->o->iters * SLOT,
			      COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_ATOMIC, &b->raw)) ||
	    (ret = coh_mr_new(b->fab, (size_t)b->o->iters * SLOT,
			      COH_ACCESS_LOCAL_WRITE | COH_ACCESS_REMOTE_READ, &b->loc)) ||
	    (ret = coh_ep_new(b->fab, &ea, &b->ep)))
		return ret;
	if (b->me == 1) {
		memset(coh_mr_addr(b->raw), 0x77, (size_t)b->o->iters * SLOT);
		coh_mr_export(b->raw, &b->sh->raw_desc);
	}
	pthread_barrier_wait(&b->sh->bar);
	if (b->me == 0)
		ret = coh_rmr_import(b->ep, &b->sh->raw_desc, &b->rraw);
	return ret;
}

static void bc_down(struct bc *b)
{
	pthread_barrier_wait(&b->sh->bar);
	coh_rmr_delete(&b->rraw);
	coh_ep_delete(&b->ep);
	coh_mr_delete(&b->loc);
	coh_mr_delete(&b->raw);
	coh_cq_delete(&b->cq);
	coh_cache_close(&b->cache);
	coh_store_delete(&b->store);
	coh_fabric_close(&b->fab);
}

static void emit(const struct bench_opts *o, const char *op, uint64_t *ns, uint32_t n,
		 double net_per_op)
{
	struct bench_row row;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "cache");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", o->provider);
	row.size = BS;
	row.net_per_op = net_per_op;
	row.has_net = true;
	bench_stats(ns, n, &row);
	bench_print_row(&row, o->csv);
}

static uint64_t net_ops(struct coh_cache *c)
{
	struct coh_cache_stats s;

	coh_cache_stats(c, &s);
	return s.net_atomic + s.net_read + s.net_write + s.net_send;
}

/* measure - time @n calls of one cache operation on blocks @base + i * @step. */
static int measure(struct bc *b, const char *op, bool write, uint64_t base, uint64_t step,
		   uint64_t *ns)
{
	uint32_t n = b->o->iters, i;
	uint8_t buf[BS];
	uint64_t net0 = net_ops(b->cache);
	int ret = 0;

	if (!bench_op_selected(b->o, op))
		return 0;
	memset(buf, 0x5a, sizeof(buf));
	for (i = 0; i < n && !ret; i++) {
		uint64_t t0 = bench_now_ns();

		ret = write ? coh_cache_write(b->cache, base + i * step, 1, buf)
			    : coh_cache_read(b->cache, base + i * step, 1, buf);
		ns[i] = bench_now_ns() - t0;
	}
	if (ret) {
		fprintf(stderr, "cohort-bench cache: %s: %s\n", op, coh_strerror(ret));
		return ret;
	}
	emit(b->o, op, ns, n, (double)(net_ops(b->cache) - net0) / n);
	if (getenv("COHORT_BENCH_DEBUG")) {
		struct coh_cache_stats st;

		coh_cache_stats(b->cache, &st);
		fprintf(
		    stderr,
		    "  after %s: hits %llu misses %llu peer %llu store %llu atomics %llu reads %llu sends %llu\n",
		    op, (unsigned long long)st.hits, (unsigned long long)st.misses,
		    (unsigned long long)st.peer_fetches, (unsigned long long)st.store_reads,
		    (unsigned long long)st.net_atomic, (unsigned long long)st.net_read,
		    (unsigned long long)st.net_send);
	}
	return 0;
}

static int raw_floor(struct bc *b, uint64_t *ns)
{
	uint32_t n = b->o->iters, i;
	uint64_t old;
	int ret = 0;

	for (i = 0; i < n && !ret; i++) {
		uint64_t t0 = bench_now_ns();

		ret = coh_ep_cas_sync(b->ep, b->rraw, (uint64_t)i * SLOT, 0x7777777777777777ull,
				      0x7777777777777777ull, &old);
		ns[i] = bench_now_ns() - t0;
	}
	if (!ret)
		emit(b->o, "fabric_cas", ns, n, 1);
	for (i = 0; i < n && !ret; i++) {
		uint64_t t0 = bench_now_ns();

		ret = coh_ep_read_sync(b->ep, b->loc, 0, b->rraw, (uint64_t)i * SLOT, SLOT);
		ns[i] = bench_now_ns() - t0;
	}
	if (!ret)
		emit(b->o, "fabric_read_slot", ns, n, 1);
	return ret;
}

/*
 * miss_vs_floor - read_miss_peer and its floor, fabric_cas+read, measured in alternation: the
 * miss of block @base + i, and a CAS plus a READ of raw slot i into local slot i, in one order on
 * even i and the other on odd i. Both find what the peer wrote last and land in memory of the
 * same kind that nothing here has touched (a miss lands in the cache's slot, registered as the
 * floor's landing region is), and whatever the machine is doing meanwhile falls on both alike:
 * the ratio of the two rows is the cache's own cost, not the difference between two moments.
 */
static int miss_vs_floor(struct bc *b, uint64_t base, uint64_t *ns, uint64_t *floor_ns)
{
	uint32_t n = b->o->iters, i, k;
	uint64_t net0 = net_ops(b->cache), old;
	uint8_t buf[BS];
	int ret = 0;

	if (!bench_op_selected(b->o, "read_miss_peer") &&
	    !bench_op_selected(b->o, "fabric_cas+read"))
		return 0;
	for (i = 0; i < n && !ret; i++) {
		for (k = 0; k < 2 && !ret; k++) {
			uint64_t t0 = bench_now_ns();

			if (k == (i & 1)) {
				ret = coh_cache_read(b->cache, base + i, 1, buf);
				ns[i] = bench_now_ns() - t0;
				continue;
			}
			ret = coh_ep_cas_sync(b->ep, b->rraw, (uint64_t)i * SLOT + SLOT - 64, 0, 1,
					      &old);
			if (!ret)
				ret = coh_ep_read_sync(b->ep, b->loc, (uint64_t)i * SLOT, b->rraw,
						       (uint64_t)i * SLOT, SLOT);
			floor_ns[i] = bench_now_ns() - t0;
		}
	}
	if (ret) {
		fprintf(stderr, "cohort-bench cache: read_miss_peer or its floor: %s\n",
			coh_strerror(ret));
		return ret;
	}
	/* The cache's network operations only: the floor's go through an endpoint of its own. */
	if (bench_op_selected(b->o, "fabric_cas+read"))
		emit(b->o, "fabric_cas+read", floor_ns, n, 2);
	if (bench_op_selected(b->o, "read_miss_peer"))
		emit(b->o, "read_miss_peer", ns, n, (double)(net_ops(b->cache) - net0) / n);
	return 0;
}

/*
 * fresh8 - write_fresh_x8 and write_range8_fresh over blocks nobody has used, from @base: sample
 * i writes 8 blocks, one by one or as one range, in one order on even i and the other on odd i
 * (as miss_vs_floor), so that the two rows see the same moments. @n samples each.
 */
static int fresh8(struct bc *b, uint64_t base, uint32_t n, uint64_t *ns, uint64_t *range_ns)
{
	uint8_t *buf = malloc(8 * BS);
	uint32_t i, k, j;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	memset(buf, 0x6b, 8 * BS);
	for (i = 0; i < n && !ret; i++) {
		for (k = 0; k < 2 && !ret; k++) {
			uint64_t lba = base + (2 * (uint64_t)i + k) * 8, t0 = bench_now_ns();

			if (k == (i & 1)) {
				ret = coh_cache_write(b->cache, lba, 8, buf);
				range_ns[i] = bench_now_ns() - t0;
				continue;
			}
			for (j = 0; j < 8 && !ret; j++)
				ret = coh_cache_write(b->cache, lba + j, 1, buf);
			ns[i] = bench_now_ns() - t0;
		}
	}
	free(buf);
	if (getenv("COHORT_BENCH_DEBUG")) {
		struct coh_cache_stats st;

		coh_cache_stats(b->cache, &st);
		fprintf(stderr, "  after the fresh rows: %llu CASes batched, atomics %llu\n",
			(unsigned long long)st.cas_batched, (unsigned long long)st.net_atomic);
	}
	if (ret) {
		fprintf(stderr, "cohort-bench cache: write_fresh_x8 or write_range8_fresh: %s\n",
			coh_strerror(ret));
		return ret;
	}
	if (bench_op_selected(b->o, "write_fresh_x8"))
		emit(b->o, "write_fresh_x8", ns, n, 8);
	if (bench_op_selected(b->o, "write_range8_fresh"))
		emit(b->o, "write_range8_fresh", range_ns, n, 8);
	return 0;
}

/* latency - two nodes; node 0 measures, node 1 prepares what node 0 will find. */
static int latency(const struct bench_opts *o, struct shared *sh, uint32_t me, const char *dir,
		   const char *store)
{
	/* The fresh-range rows write 16 blocks a sample, at most 1000 samples: the volume and the
	 * cache (a slot per block) grow by that much, not by 16 per iteration. */
	uint64_t N = o->iters, peer_base = 1 * N + 16, store_base = 2 * N + 32,
		 xfer_base = 3 * N + 48, fresh_base = 4 * N + 64, F = N < 1000 ? N : 1000,
		 blocks = fresh_base + 16 * F;
	struct bc b = { .o = o, .sh = sh, .me = me, .nodes = 2 };
	uint8_t buf[BS];
	uint64_t *ns = calloc(2 * N, sizeof(*ns)), i;
	int ret;

	if (!ns)
		return -ENOMEM;
	memset(buf, 0x33, sizeof(buf));
	ret = bc_up(&b, dir, store, blocks, (uint32_t)blocks, true);
	if (ret)
		goto out;
	if (me == 0) {
		ret = raw_floor(&b, ns);
		/* Warm: one read and one write, so the loops below find them held. */
		if (!ret)
			ret = coh_cache_read(b.cache, 0, 1, buf);
		if (!ret)
			ret = measure(&b, "read_hit", false, 0, 0, ns);
		if (!ret)
			ret = coh_cache_write(b.cache, 1, 1, buf);
		if (!ret)
			ret = measure(&b, "write_held", true, 1, 0, ns);
	}
	pthread_barrier_wait(&sh->bar);
	if (me == 1) {
		/* Prepare what node 0 will find: the floor's slots and the blocks it will miss on
		 * written here last, these cached here shared, then blocks held exclusive. */
		memset(coh_mr_addr(b.raw), 0x78, (size_t)N * SLOT);
		for (i = 0; i < N && !ret; i++)
			ret = coh_cache_read(b.cache, peer_base + i, 1, buf);
		for (i = 0; i < N && !ret; i++)
			ret = coh_cache_write(b.cache, xfer_base + i, 1, buf);
	}
	pthread_barrier_wait(&sh->bar);
	if (me == 0 && !ret) {
		ret = miss_vs_floor(&b, peer_base, ns, ns + N);
		if (!ret)
			ret = measure(&b, "read_miss_store", false, store_base, 1, ns);
		if (!ret)
			ret = measure(&b, "write_transfer", true, xfer_base, 1, ns);
		if (!ret && (bench_op_selected(o, "write_fresh_x8") ||
			     bench_op_selected(o, "write_range8_fresh")))
			ret = fresh8(&b, fresh_base, (uint32_t)F, ns, ns + N);
	}
	bc_down(&b);
out:
	free(ns);
	return ret;
}

/* throughput - @nodes nodes, each a 70/30 read/write mix over a shared volume of hot blocks. */
static int throughput(const struct bench_opts *o, struct shared *sh, uint32_t me, uint32_t nodes,
		      const char *dir, const char *store)
{
	struct bc b = { .o = o, .sh = sh, .me = me, .nodes = nodes };
	uint64_t s = 0x9e3779b97f4a7c15ull * (me + 1), t0, i, n = o->iters;
	uint8_t buf[BS];
	int ret;

	memset(buf, (int)me, sizeof(buf));
	ret = bc_up(&b, dir, store, 4096, 4096, false);
	if (ret)
		return ret;
	pthread_barrier_wait(&sh->bar);
	t0 = bench_now_ns();
	for (i = 0; i < n && !ret; i++) {
		uint64_t t1 = bench_now_ns();

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		if (s % 10 < 7)
			ret = coh_cache_read(b.cache, (s >> 8) % 4096, 1, buf);
		else
			ret = coh_cache_write(b.cache, (s >> 8) % 4096, 1, buf);
		sh->lat[me * n + i] = bench_now_ns() - t1;
	}
	sh->results[me][0] = i;
	sh->results[me][1] = bench_now_ns() - t0;
	bc_down(&b);
	return ret;
}

/* run - fork @nodes processes running @fn, wait for all. */
static int run(const struct bench_opts *o, struct shared *sh, uint32_t nodes, bool tput)
{
	char dir[] = "/dev/shm/cohort-bench-cache-XXXXXX", store[128];
	const char *list = o->cluster;
	uint32_t have = 1;

	/* On rdma, a run needs as many addresses as nodes. */
	while (list && (list = strchr(list, ','))) {
		have++;
		list++;
	}
	if (strcmp(o->provider, "shm") && have < nodes)
		return 0;
	pid_t pids[4];
	uint32_t i;
	int ret = 0, st;

	if (!mkdtemp(dir))
		return -errno;
	snprintf(store, sizeof(store), "%s/store", dir);
	pthread_barrierattr_t ba;
	pthread_barrierattr_init(&ba);
	pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&sh->bar, &ba, nodes);
	fflush(stdout);
	for (i = 0; i < nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			alarm(600);
			_exit((tput ? throughput(o, sh, i, nodes, dir, store)
				    : latency(o, sh, i, dir, store))
				  ? 1
				  : 0);
		}
	}
	for (i = 0; i < nodes; i++) {
		if (pids[i] < 0 || waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) ||
		    WEXITSTATUS(st))
			ret = -EIO;
	}
	pthread_barrier_destroy(&sh->bar);
	bench_remove_tree(dir);
	return ret;
}

int bench_cache(const struct bench_opts *o)
{
	struct shared *sh;
	uint32_t nodes, i;
	size_t len;
	int ret;

	if (strcmp(o->provider, "shm") && (!o->cluster || !strchr(o->cluster, ','))) {
		fprintf(stderr,
			"cohort-bench cache: --cluster needs one address per node (up to 4) "
			"for %s\n",
			o->provider);
		return -EINVAL;
	}
	len = sizeof(*sh) + 4 * (size_t)o->iters * sizeof(uint64_t);
	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	bench_print_header(o->csv);
	ret = run(o, sh, 2, false);
	for (nodes = 1; nodes <= 4 && !ret && bench_op_selected(o, "mix"); nodes++) {
		struct bench_row row;
		uint64_t ops = 0, ns = 0;

		memset(sh->results, 0, sizeof(sh->results));
		ret = run(o, sh, nodes, true);
		if (ret)
			break;
		for (i = 0; i < nodes; i++) {
			ops += sh->results[i][0];
			if (sh->results[i][1] > ns)
				ns = sh->results[i][1];
		}
		memset(&row, 0, sizeof(row));
		snprintf(row.suite, sizeof(row.suite), "cache");
		snprintf(row.op, sizeof(row.op), "mix70r_%unodes", nodes);
		snprintf(row.provider, sizeof(row.provider), "%s", o->provider);
		row.size = BS;
		/* Percentiles over every operation of every node; the rate is the aggregate. */
		bench_stats(sh->lat, (uint32_t)(nodes * o->iters), &row);
		row.rate_mops = ns ? ops / (ns / 1e3) : 0;
		bench_print_row(&row, o->csv);
	}
	if (ret)
		fprintf(stderr, "cohort-bench cache: a node failed\n");
	munmap(sh, len);
	return ret;
}
