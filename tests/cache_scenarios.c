/*
 * cache_scenarios.c - coherent cache scenarios, run as clusters of node processes by conf_run():
 * network cost of hits and held writes, invalidation of exactly the sharers, peer fetch, mutual
 * exclusion and progress under contention, and randomized histories checked for
 * linearizability. Each node opens the cache over one store file shared by all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cache_scenarios.h"
#include "cohort/cache.h"
#include "linz.h"

#define BS 4096u

static char store_path[512];

void cache_sc_set_store(const char *path)
{
	snprintf(store_path, sizeof(store_path), "%s", path);
}

struct cnode {
	struct coh_store *store;
	struct coh_cache *cache;
};

static int cache_up_hook(struct conf_node *cn, struct cnode *x, uint64_t nblocks,
			 uint32_t res_blocks,
			 int (*hook)(void *, uint64_t, uint32_t, const void *, uint64_t *),
			 void *arg)
{
	struct coh_cache_attr a = { .fab = cn->fab,
				    .nodes = cn->n,
				    .resource_blocks = res_blocks,
				    .cache_blocks = 256,
				    .timeout_ms = 10000,
				    .write_hook = hook,
				    .hook_arg = arg };
	int ret;

	ret = coh_store_open_file(store_path, BS, nblocks, true, &x->store);
	if (ret)
		return ret;
	a.store = x->store;
	return coh_cache_open(&a, &x->cache);
}

static int cache_up(struct conf_node *cn, struct cnode *x, uint64_t nblocks, uint32_t res_blocks)
{
	return cache_up_hook(cn, x, nblocks, res_blocks, NULL, NULL);
}

static int cache_down(struct conf_node *cn, struct cnode *x)
{
	/* Nobody may still need this node's answers when it closes. */
	int ret = conf_barrier(cn);
	int r2 = coh_cache_close(&x->cache);

	coh_store_delete(&x->store);
	return ret ? ret : r2;
}

static uint64_t net(const struct coh_cache_stats *s)
{
	return s->net_atomic + s->net_read + s->net_write + s->net_send;
}

/*
 * Node 0 writes a block twice and reads it: the second write and the read cost no network
 * operation. Node 1 then reads it: one request to node 0 and the data from node 0's cache, not
 * the store; its second read is a hit with no network operation.
 */
int sc_cache_costs(struct conf_node *cn)
{
	struct coh_cache_stats a, b;
	uint8_t buf[BS], got[BS];
	struct cnode x;

	CONF_CHECK(cache_up(cn, &x, 64, 16) == 0, "cache up");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x1111);
		CONF_CHECK(coh_cache_write(x.cache, 3, 1, buf) == 0, "first write");
		coh_cache_stats(x.cache, &a);
		bench_fill_block(buf, BS, 0x2222);
		CONF_CHECK(coh_cache_write(x.cache, 3, 1, buf) == 0, "second write");
		CONF_CHECK(coh_cache_read(x.cache, 3, 1, got) == 0, "read");
		coh_cache_stats(x.cache, &b);
		CONF_CHECK(net(&a) == net(&b), "held write and hit cost %llu network ops",
			   (unsigned long long)(net(&b) - net(&a)));
		CONF_CHECK(b.hits == a.hits + 1, "hit not counted");
		CONF_CHECK(!memcmp(buf, got, BS), "read back");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "written");
	if (cn->id == 1) {
		uint64_t v;

		CONF_CHECK(coh_cache_read(x.cache, 3, 1, got) == 0, "remote read");
		CONF_CHECK(bench_block_value(got, BS, &v) == 0 && v == 0x2222, "value %llx",
			   (unsigned long long)v);
		coh_cache_stats(x.cache, &a);
		CONF_CHECK(a.lock_requests == 1, "lock requests %llu",
			   (unsigned long long)a.lock_requests);
		CONF_CHECK(a.peer_fetches == 1 && a.store_reads == 0,
			   "miss served by peer %llu / store %llu",
			   (unsigned long long)a.peer_fetches, (unsigned long long)a.store_reads);
		CONF_CHECK(coh_cache_read(x.cache, 3, 1, got) == 0, "second read");
		coh_cache_stats(x.cache, &b);
		CONF_CHECK(net(&a) == net(&b) && b.hits == a.hits + 1, "shared hit cost %llu",
			   (unsigned long long)(net(&b) - net(&a)));
	}
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * Nodes 1 and 2 read a block (sharers); node 3, if any, does not. Node 0 then writes it: exactly
 * two invalidations, and the sharers find their copies invalid and read the new value. A write
 * to a resource nobody shares sends none.
 */
int sc_cache_invalidation(struct conf_node *cn)
{
	struct coh_cache_stats a, b;
	uint32_t owner, sharers;
	uint8_t buf[BS];
	struct cnode x;
	uint64_t v;

	if (cn->n < 3)
		return 1;
	CONF_CHECK(cache_up(cn, &x, 64, 16) == 0, "cache up");
	if (cn->id == 1 || cn->id == 2) {
		CONF_CHECK(coh_cache_read(x.cache, 20, 1, buf) == 0, "share");
		CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == 0, "initial");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "shared");
	/* Every node reads who holds it (one of them is the word's home, the others READ it). */
	CONF_CHECK(coh_cache_lock_holders(x.cache, 20, &owner, &sharers) == 0 &&
		       owner == COH_CACHE_NO_NODE && sharers == 0x6,
		   "holders of a shared block: owner %x, sharers %x", owner, sharers);
	CONF_CHECK(coh_cache_lock_holders(x.cache, 1u << 30, &owner, &sharers) == -EINVAL,
		   "holders past the end");
	CONF_CHECK(conf_barrier(cn) == 0, "holders read");
	if (cn->id == 0) {
		coh_cache_stats(x.cache, &a);
		bench_fill_block(buf, BS, 0xabc);
		CONF_CHECK(coh_cache_write(x.cache, 20, 1, buf) == 0, "write shared");
		coh_cache_stats(x.cache, &b);
		CONF_CHECK(b.inval_sent - a.inval_sent == 2, "invalidations %llu, sharers 2",
			   (unsigned long long)(b.inval_sent - a.inval_sent));
		bench_fill_block(buf, BS, 0xdef);
		CONF_CHECK(coh_cache_write(x.cache, 40, 1, buf) == 0, "write unshared");
		coh_cache_stats(x.cache, &a);
		CONF_CHECK(a.inval_sent == b.inval_sent, "invalidation sent for unshared data");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "written");
	CONF_CHECK(coh_cache_lock_holders(x.cache, 20, &owner, &sharers) == 0 && owner == 0 &&
		       sharers == 0,
		   "holders of a written block: owner %x, sharers %x", owner, sharers);
	CONF_CHECK(conf_barrier(cn) == 0, "holders read again");
	if (cn->id == 1 || cn->id == 2) {
		CONF_CHECK(coh_cache_read(x.cache, 20, 1, buf) == 0, "reread");
		CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == 0xabc,
			   "stale value %llx after write", (unsigned long long)v);
		coh_cache_stats(x.cache, &a);
		CONF_CHECK(a.inval_seen == 1, "invalidations seen %llu",
			   (unsigned long long)a.inval_seen);
	}
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * Every node writes the same block many times (each write needs the exclusive lock, so the lock
 * is handed over constantly) and reads it back. Every node finishing within the bound is the
 * absence of starvation; every read seeing a whole block some node wrote, and all nodes agreeing
 * on the last value afterwards, is coherence under contention.
 */
int sc_cache_contention(struct conf_node *cn)
{
	enum {
		PER_NODE = 300
	};
	uint8_t buf[BS];
	struct cnode x;
	uint64_t v, last = 0, agreed;
	uint32_t i, len;

	CONF_CHECK(cache_up(cn, &x, 64, 16) == 0, "cache up");
	CONF_CHECK(conf_barrier(cn) == 0, "start");
	for (i = 1; i <= PER_NODE; i++) {
		bench_fill_block(buf, BS, (uint64_t)(cn->id + 1) << 32 | i);
		CONF_CHECK(coh_cache_write(x.cache, 5, 1, buf) == 0, "write %u", i);
		CONF_CHECK(coh_cache_read(x.cache, 5, 1, buf) == 0, "read %u", i);
		CONF_CHECK(bench_block_value(buf, BS, &v) == 0, "torn block");
		/* Our own writes come back in order: never an older one of ours. */
		if (v >> 32 == cn->id + 1u)
			CONF_CHECK((v & 0xffffffffu) >= last, "own write went back");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "done");
	CONF_CHECK(coh_cache_read(x.cache, 5, 1, buf) == 0, "final read");
	CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && (v & 0xffffffffu) == PER_NODE,
		   "final %llx", (unsigned long long)v);
	if (cn->id == 0) {
		for (i = 1; i < cn->n; i++) {
			CONF_CHECK(conf_recv(cn, i, &agreed, &len, CONF_TIMEOUT_MS) == 0,
				   "collect");
			CONF_CHECK(agreed == v, "node %u saw %llx, node 0 %llx", i,
				   (unsigned long long)agreed, (unsigned long long)v);
		}
	} else {
		CONF_CHECK(conf_send(cn, 0, &v, sizeof(v)) == 0, "report");
	}
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * Handover order. Node 0 holds a resource exclusively and stays inside a write to it (the write
 * hook runs with the resource held and in use) while the other nodes ask for it one at a time:
 * node 0 lets the next one ask only once its own counter shows the previous request queued
 * here. Each node, once it holds the resource (in its own write hook, where tenures cannot
 * overlap), takes a ticket with a fabric FAA on a counter at node 0. The tickets must come out
 * in the order the requests arrived: the documented order is FIFO by arrival at the holder, and
 * the queue travels with the lock, in order, to each next holder. Three rounds, each on a
 * resource of its own and with the nodes asking in a different order, so that the order seen is
 * the arrival order and not, say, the order of node ids.
 */
enum {
	HO_ROUNDS = 3
};

struct ho_ctx {
	struct conf_node *cn;
	struct cnode *x;
	struct coh_rmr *counter; /* node 0's counters, one word per round */
	uint32_t round;
	uint64_t ticket[HO_ROUNDS];
	int err;
};

/* The order the contenders ask in, per round, over nodes 1..3. */
static const uint32_t ho_order[HO_ROUNDS][3] = { { 1, 2, 3 }, { 3, 1, 2 }, { 2, 3, 1 } };

static int ho_hook(void *arg, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t *seq)
{
	struct ho_ctx *h = arg;
	struct conf_node *cn = h->cn;
	struct coh_cache_stats st;
	uint64_t t0 = bench_now_ns();
	uint32_t k, r = h->round;

	(void)seq;
	(void)lba;
	(void)nblocks;
	(void)buf;
	if (cn->id != 0)
		return coh_ep_faa_sync(cn->ep[0], h->counter, r * 8, 1, &h->ticket[r]);
	/* Node 0: in the middle of its write, let the contenders ask one by one. */
	coh_cache_stats(h->x->cache, &st);
	for (k = 0; k < 3; k++) {
		uint64_t want = st.lock_queued + 1;
		uint32_t node = ho_order[r][k];

		if ((h->err = conf_send(cn, node, &r, sizeof(r))))
			return h->err;
		/* Bounded: the request is one message away. */
		for (;;) {
			coh_cache_stats(h->x->cache, &st);
			if (st.lock_queued >= want)
				break;
			if (bench_now_ns() - t0 > 10ull * 1000000000ull)
				return h->err = -ETIMEDOUT;
			sched_yield();
		}
		if (st.lock_queued != want)
			return h->err = -EPROTO;
	}
	return 0;
}

int sc_cache_handover_order(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct ho_ctx h = { .cn = cn };
	struct coh_mr *mr;
	uint8_t buf[BS];
	struct cnode x;
	uint32_t r, k, len;

	if (cn->n != 4)
		return 1;
	h.x = &x;
	CONF_CHECK(coh_mr_new(cn->fab, 64, COH_ACCESS_REMOTE_ATOMIC, &mr) == 0, "counter region");
	memset(coh_mr_addr(mr), 0, 64);
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	if (cn->id != 0)
		CONF_CHECK(coh_rmr_import(cn->ep[0], &descs[0], &h.counter) == 0, "import");
	CONF_CHECK(cache_up_hook(cn, &x, 64, 16, ho_hook, &h) == 0, "cache up");
	for (r = 0; r < HO_ROUNDS; r++) {
		/* Resource 1 + r: blocks 16 (r + 1) ..; node 0 writes first and holds it. */
		uint64_t lba = 16 * (r + 1);

		h.round = r;
		if (cn->id == 0) {
			bench_fill_block(buf, BS, 0x100 * (r + 1));
			CONF_CHECK(coh_cache_write(x.cache, lba, 1, buf) == 0,
				   "round %u: hold (%s)", r, coh_strerror(h.err));
		} else {
			uint32_t got;

			CONF_CHECK(conf_recv(cn, 0, &got, &len, CONF_TIMEOUT_MS) == 0 && got == r,
				   "round %u: go", r);
			bench_fill_block(buf, BS, 0x100 * (r + 1) + cn->id);
			CONF_CHECK(coh_cache_write(x.cache, lba, 1, buf) == 0, "round %u: write",
				   r);
		}
		CONF_CHECK(conf_barrier(cn) == 0, "round %u done", r);
	}
	if (cn->id == 0) {
		for (k = 1; k < cn->n; k++) {
			uint64_t t[HO_ROUNDS];

			CONF_CHECK(conf_recv(cn, k, t, &len, CONF_TIMEOUT_MS) == 0 &&
				       len == sizeof(t),
				   "tickets of node %u", k);
			for (r = 0; r < HO_ROUNDS; r++) {
				uint32_t pos = 0;

				while (ho_order[r][pos] != k)
					pos++;
				CONF_CHECK(
				    t[r] == pos,
				    "round %u: node %u asked in place %u but held the resource "
				    "in place %llu",
				    r, k, pos + 1, (unsigned long long)t[r] + 1);
			}
		}
		/* The last in line wrote last. */
		for (r = 0; r < HO_ROUNDS; r++) {
			uint64_t v;

			CONF_CHECK(coh_cache_read(x.cache, 16 * (r + 1), 1, buf) == 0, "read back");
			CONF_CHECK(bench_block_value(buf, BS, &v) == 0 &&
				       v == 0x100 * (r + 1) + ho_order[r][2],
				   "round %u: final value %llx", r, (unsigned long long)v);
		}
	} else {
		CONF_CHECK(conf_send(cn, 0, h.ticket, sizeof(h.ticket)) == 0, "report");
	}
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	coh_rmr_delete(&h.counter);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * Random reads and writes, single- and multi-block (crossing resources), on a few hot blocks from
 * every node; every operation's invocation, response and values are recorded; node 0 checks the
 * whole history for per-block linearizability.
 */
static uint64_t sc_seed;

void cache_sc_set_seed(uint64_t seed)
{
	sc_seed = seed;
}

int sc_cache_linearizable(struct conf_node *cn)
{
	enum {
		OPS = 400,
		BLOCKS = 12,
		RES = 4,
		MAXN = 3
	};
	struct linz_op *hist;
	uint8_t buf[MAXN * BS];
	char path[600];
	struct cnode x;
	uint64_t s = sc_seed * 7919 + cn->id + 1, seq = 0;
	size_t nh = 0;
	uint32_t i, k;
	FILE *f;

	hist = calloc(OPS * MAXN, sizeof(*hist));
	CONF_CHECK(hist, "calloc");
	CONF_CHECK(cache_up(cn, &x, BLOCKS, RES) == 0, "cache up");
	CONF_CHECK(conf_barrier(cn) == 0, "start");
	for (i = 0; i < OPS; i++) {
		uint64_t lba, inv, resp;
		uint32_t n;
		bool w;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		w = s % 100 < 40;
		n = 1 + (uint32_t)(s >> 8) % 4 == 1 ? 1 + (uint32_t)(s >> 16) % MAXN : 1;
		lba = (s >> 24) % BLOCKS;
		if (lba + n > BLOCKS)
			n = (uint32_t)(BLOCKS - lba);
		if (w) {
			for (k = 0; k < n; k++)
				bench_fill_block(buf + k * BS, BS,
						 (uint64_t)(cn->id + 1) << 40 | ++seq);
		}
		inv = bench_now_ns();
		if (w)
			CONF_CHECK(coh_cache_write(x.cache, lba, n, buf) == 0, "write %u", i);
		else
			CONF_CHECK(coh_cache_read(x.cache, lba, n, buf) == 0, "read %u", i);
		resp = bench_now_ns();
		for (k = 0; k < n; k++) {
			struct linz_op *o = &hist[nh++];

			o->inv = inv;
			o->resp = resp;
			o->block = lba + k;
			o->node = cn->id;
			o->is_write = w;
			CONF_CHECK(bench_block_value(buf + k * BS, BS, &o->value) == 0,
				   "block %llu is torn or mixed", (unsigned long long)(lba + k));
		}
	}
	snprintf(path, sizeof(path), "%s.hist.%u", store_path, cn->id);
	f = fopen(path, "wb");
	CONF_CHECK(f && fwrite(hist, sizeof(*hist), nh, f) == nh && fclose(f) == 0, "save");
	CONF_CHECK(conf_barrier(cn) == 0, "saved");
	if (cn->id == 0) {
		struct linz_op *all = calloc(OPS * MAXN * cn->n, sizeof(*all));
		size_t total = 0;
		uint32_t p;
		int ret;

		CONF_CHECK(all, "calloc");
		for (p = 0; p < cn->n; p++) {
			snprintf(path, sizeof(path), "%s.hist.%u", store_path, p);
			f = fopen(path, "rb");
			CONF_CHECK(f, "open %s", path);
			total += fread(all + total, sizeof(*all), OPS * MAXN, f);
			fclose(f);
			unlink(path);
		}
		ret = linz_check(all, total, stderr);
		CONF_CHECK(ret == 0, "history of %zu block operations is not linearizable (%d)",
			   total, ret);
		free(all);
	}
	free(hist);
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * A refused request does not strand the ones behind it (issue 12, bug 6). Node 0 holds a
 * resource exclusively, dirty, and stays inside its write (the write hook) until nodes 1 and 2
 * have both asked for it and wait in its queue. Its next write-back then fails once (a store
 * that fails one write), so the head of the queue is answered RETRY. Both requesters must still
 * get the resource well within their timeout: the one behind the head too, although no pin of
 * node 0's drops again to serve it.
 */
struct rq_store {
	struct coh_store *file;
	int fail;   /* writes still to fail */
	int failed; /* writes failed */
};

static int rq_read(void *ctx, uint64_t lba, uint32_t n, void *buf)
{
	struct rq_store *s = ctx;

	return coh_store_read(s->file, lba, n, buf);
}

static int rq_write(void *ctx, uint64_t lba, uint32_t n, const void *buf)
{
	struct rq_store *s = ctx;

	if (__atomic_load_n(&s->fail, __ATOMIC_ACQUIRE) > 0) {
		__atomic_sub_fetch(&s->fail, 1, __ATOMIC_ACQ_REL);
		__atomic_add_fetch(&s->failed, 1, __ATOMIC_ACQ_REL);
		return -EIO;
	}
	return coh_store_write(s->file, lba, n, buf);
}

static int rq_flush(void *ctx)
{
	struct rq_store *s = ctx;

	return coh_store_flush(s->file);
}

static void rq_close(void *ctx)
{
	(void)ctx;
}

static const struct coh_store_ops rq_ops = {
	.read = rq_read, .write = rq_write, .flush = rq_flush, .close = rq_close
};

struct rq_ctx {
	struct conf_node *cn;
	struct coh_cache *cache;
	struct rq_store *store;
	int err;
};

static int rq_hook(void *arg, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t *seq)
{
	struct rq_ctx *h = arg;
	struct coh_cache_stats st;
	uint64_t t0 = bench_now_ns();
	uint32_t k, go = 1;

	(void)seq;
	(void)lba;
	(void)nblocks;
	(void)buf;
	if (h->cn->id != 0 || !h->store || h->store->fail < 0)
		return 0;
	h->store->fail = -1; /* once: later writes of node 0 do not come here again */
	coh_cache_stats(h->cache, &st);
	for (k = 1; k <= 2; k++) {
		uint64_t want = st.lock_queued + 1;

		if ((h->err = conf_send(h->cn, k, &go, sizeof(go))))
			return h->err;
		while (coh_cache_stats(h->cache, &st) == 0 && st.lock_queued < want) {
			if (bench_now_ns() - t0 > 10ull * 1000000000ull)
				return h->err = -ETIMEDOUT;
			sched_yield();
		}
	}
	/* Both wait here; the write-back that serves the first one fails. */
	__atomic_store_n(&h->store->fail, 1, __ATOMIC_RELEASE);
	return 0;
}

int sc_cache_retry_drains_queue(struct conf_node *cn)
{
	struct rq_store rs = { 0 };
	struct rq_ctx h = { .cn = cn };
	struct coh_cache_attr a = { .fab = cn->fab,
				    .nodes = cn->n,
				    .resource_blocks = 16,
				    .cache_blocks = 256,
				    .timeout_ms = 3000,
				    .write_hook = rq_hook,
				    .hook_arg = &h };
	struct coh_store *file = NULL, *st = NULL;
	uint8_t buf[BS];
	uint32_t go, len;
	uint64_t v, t0;
	int r;

	CONF_CHECK(coh_store_open_file(store_path, BS, 64, true, &file) == 0, "store");
	rs.file = file;
	if (cn->id == 0) {
		CONF_CHECK(coh_store_new(&rq_ops, &rs, BS, 64, &st) == 0, "failing store");
		h.store = &rs;
	}
	a.store = st ? st : file;
	CONF_CHECK(coh_cache_open(&a, &h.cache) == 0, "cache up");
	CONF_CHECK(conf_barrier(cn) == 0, "start");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x600);
		CONF_CHECK(coh_cache_write(h.cache, 5, 1, buf) == 0 && !h.err, "hold: %d", h.err);
	} else {
		CONF_CHECK(conf_recv(cn, 0, &go, &len, CONF_TIMEOUT_MS) == 0, "go");
		t0 = bench_now_ns();
		bench_fill_block(buf, BS, 0x600 + cn->id);
		r = coh_cache_write(h.cache, 6, 1, buf);
		CONF_CHECK(r == 0, "write behind a refused request: %s after %llu ms",
			   coh_strerror(r), (unsigned long long)(bench_now_ns() - t0) / 1000000);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "written");
	if (cn->id == 0)
		CONF_CHECK(__atomic_load_n(&rs.failed, __ATOMIC_ACQUIRE) == 1,
			   "write-backs failed: %d", __atomic_load_n(&rs.failed, __ATOMIC_ACQUIRE));
	CONF_CHECK(coh_cache_read(h.cache, 5, 1, buf) == 0, "read 5");
	CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == 0x600, "block 5: %llx",
		   (unsigned long long)v);
	CONF_CHECK(conf_barrier(cn) == 0, "read");
	CONF_CHECK(coh_cache_close(&h.cache) == 0, "close");
	coh_store_delete(&st);
	coh_store_delete(&file);
	return 0;
}

/*
 * A replicated write that cannot go into the cache is undone (write_undo), and only for the block
 * that did not go in. One node, 16 slots, two lanes: it writes blocks 19 and 20 in one write;
 * inside its write hook (logged, not yet installed) another thread writes block 36 (block 20's
 * slot), dirty, and the store then fails one write. Installing block 20 must write block 36 back
 * first, which fails: block 20 is not installed, the write fails, write_undo is called for block
 * 20 with the hook's sequence, and for nothing else; block 19 went in; block 36 keeps its value.
 */
struct wu_ctx {
	struct coh_cache *cache;
	struct rq_store *store;
	int calls, undone, err;
	uint64_t undo_lba, undo_seq;
};

static void *wu_writer(void *arg)
{
	struct wu_ctx *h = arg;
	uint8_t buf[BS];

	bench_fill_block(buf, BS, 0x836);
	h->err = coh_cache_lane_bind(h->cache, 1);
	if (!h->err)
		h->err = coh_cache_write(h->cache, 36, 1, buf);
	return NULL;
}

static int wu_hook(void *arg, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t *seq)
{
	struct wu_ctx *h = arg;
	pthread_t t;

	(void)buf;
	*seq = 100 + (uint64_t)++h->calls;
	if (lba != 19 || nblocks != 2 || h->calls != 1)
		return 0;
	if (pthread_create(&t, NULL, wu_writer, h))
		return -ENOMEM;
	pthread_join(t, NULL);
	__atomic_store_n(&h->store->fail, 1, __ATOMIC_RELEASE);
	return 0;
}

static void wu_undo(void *arg, uint64_t lba, uint32_t nblocks, uint64_t seq)
{
	struct wu_ctx *h = arg;

	h->undone += (int)nblocks;
	h->undo_lba = lba;
	h->undo_seq = seq;
}

int sc_cache_write_undo(struct conf_node *cn)
{
	struct rq_store rs = { 0 };
	struct wu_ctx h = { .store = &rs };
	struct coh_cache_attr a = { .fab = cn->fab,
				    .nodes = cn->n,
				    .resource_blocks = 1,
				    .cache_blocks = 16,
				    .timeout_ms = 3000,
				    .write_hook = wu_hook,
				    .write_undo = wu_undo,
				    .hook_arg = &h,
				    .lanes = 2 };
	struct coh_store *file = NULL, *st = NULL;
	uint8_t two[2 * BS];
	uint8_t buf[BS];
	uint64_t v;
	uint32_t i;
	int r;

	if (cn->n != 1)
		return 1;
	CONF_CHECK(coh_store_open_file(store_path, BS, 64, true, &file) == 0, "store");
	rs.file = file;
	CONF_CHECK(coh_store_new(&rq_ops, &rs, BS, 64, &st) == 0, "failing store");
	a.store = st;
	CONF_CHECK(coh_cache_open(&a, &h.cache) == 0, "cache up");
	/* Block 20 shares its slot with block 36 (16 slots). */
	for (i = 0; i < 2; i++)
		bench_fill_block(two + (size_t)i * BS, BS, 0x800 + 19 + i);
	r = coh_cache_write(h.cache, 19, 2, two);
	CONF_CHECK(r == -EIO, "the write whose last block could not go in: %s", coh_strerror(r));
	CONF_CHECK(h.err == 0, "the write of block 36 in between: %s", coh_strerror(h.err));
	CONF_CHECK(h.undone == 1 && h.undo_lba == 20 && h.undo_seq == 101,
		   "undone %d blocks, last %llu seq %llu (want block 20 alone, seq 101)", h.undone,
		   (unsigned long long)h.undo_lba, (unsigned long long)h.undo_seq);
	CONF_CHECK(coh_cache_read(h.cache, 19, 1, buf) == 0 &&
		       bench_block_value(buf, BS, &v) == 0 && v == 0x813,
		   "block 19: %llx", (unsigned long long)v);
	CONF_CHECK(coh_cache_read(h.cache, 36, 1, buf) == 0 &&
		       bench_block_value(buf, BS, &v) == 0 && v == 0x836,
		   "block 36: %llx (the other lane's write)", (unsigned long long)v);
	CONF_CHECK(coh_cache_close(&h.cache) == 0, "close");
	coh_store_delete(&st);
	coh_store_delete(&file);
	return 0;
}

/*
 * The version field wraps (issue 12, bug 7). Node 2 reads block 3 and keeps its copy. Node 1
 * writes it (node 2's copy is invalidated), then nodes 0 and 1 take turns writing it until the
 * word's version has gone all the way round: back to the version of node 2's copy. Node 2 then
 * reads block 3, by a shared grant at that very version: it must get the last write, not its
 * own old copy, and not time out. Only meaningful where a wrap takes few writes
 * (cmake -DCOHORT_VER_BITS=6 or 8); cache_sc_version_bits says how wide the field is.
 */
uint32_t cache_sc_version_bits(void)
{
#ifdef COHORT_VER_BITS
	return COHORT_VER_BITS;
#else
	return 24;
#endif
}

int sc_cache_version_wrap(struct conf_node *cn)
{
	uint32_t writes = 1u << cache_sc_version_bits(), i, tok, len;
	uint8_t buf[BS];
	uint64_t v, last = 0;
	struct cnode x;

	if (cn->n != 3)
		return 1;
	CONF_CHECK(cache_up(cn, &x, 64, 16) == 0, "cache up");
	if (cn->id == 2) {
		CONF_CHECK(coh_cache_read(x.cache, 3, 1, buf) == 0, "first read");
		CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == 0, "first value %llx",
			   (unsigned long long)v);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "shared");
	/* Node 1 first (from the shared word: +1), then 0 and 1 in turn (a handover each: +1):
	 * @writes bumps in all, so the word's version ends where node 2's copy was filled. */
	for (i = 0; i < writes && cn->id != 2; i++) {
		uint32_t who = i % 2 == 0 ? 1 : 0;

		if (who != cn->id)
			continue;
		if (i)
			CONF_CHECK(conf_recv(cn, 1 - cn->id, &tok, &len, CONF_TIMEOUT_MS) == 0,
				   "token %u", i);
		last = 0x700000000ull | (i + 1);
		bench_fill_block(buf, BS, last);
		CONF_CHECK(coh_cache_write(x.cache, 3, 1, buf) == 0, "write %u", i);
		if (i + 1 < writes)
			CONF_CHECK(conf_send(cn, 1 - cn->id, &i, sizeof(i)) == 0, "pass %u", i);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "wrapped");
	CONF_CHECK(coh_cache_read(x.cache, 3, 1, buf) == 0, "read after the wrap");
	CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == (0x700000000ull | writes),
		   "node %u read %llx after the wrap, last write %llx", cn->id,
		   (unsigned long long)v, (unsigned long long)(0x700000000ull | writes));
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * A node the others have fenced loses remote access (issue 12, bug 1's second half). Node 2
 * reads block 20 (resource 1). Nodes 0 and 1 fence node 2, re-key their regions and exchange the
 * new descriptors (what a view change does); node 2 is not told. Node 0 writes block 20 (node
 * 2's invalidation is skipped: it is fenced). Node 2 then writes block 48 (resource 3, homed on
 * node 0): its CAS on node 0's word must be refused, so that the word does not come to name a
 * node nobody will ever hear from; node 1 then writes block 48 as usual.
 */
int sc_cache_rekey_fences(struct conf_node *cn)
{
	struct coh_mr_desc mine[COH_CACHE_DESCS], theirs[COH_CACHE_DESCS];
	uint32_t len, go = 1, other = 1 - cn->id;
	uint8_t buf[BS];
	struct cnode x;
	int32_t res;
	uint64_t v;

	if (cn->n != 3)
		return 1;
	CONF_CHECK(cache_up(cn, &x, 64, 16) == 0, "cache up");
	if (cn->id == 2)
		CONF_CHECK(coh_cache_read(x.cache, 20, 1, buf) == 0, "share");
	CONF_CHECK(conf_barrier(cn) == 0, "shared");
	if (cn->id < 2) {
		CONF_CHECK(coh_cache_fence(x.cache, 1u << 2) == 0, "fence");
		CONF_CHECK(coh_cache_rekey(x.cache, mine) == 0, "rekey");
		CONF_CHECK(conf_send(cn, other, mine, sizeof(mine)) == 0, "send descriptors");
		CONF_CHECK(conf_recv(cn, other, theirs, &len, CONF_TIMEOUT_MS) == 0 &&
			       len == sizeof(theirs),
			   "descriptors");
		CONF_CHECK(coh_cache_import(x.cache, other, theirs) == 0, "import");
		CONF_CHECK(conf_send(cn, other, &go, sizeof(go)) == 0 &&
			       conf_recv(cn, other, &go, &len, CONF_TIMEOUT_MS) == 0,
			   "both re-keyed");
	}
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x900);
		CONF_CHECK(coh_cache_write(x.cache, 20, 1, buf) == 0, "write after the fence");
		CONF_CHECK(conf_send(cn, 2, &go, sizeof(go)) == 0, "go");
	}
	if (cn->id == 2) {
		CONF_CHECK(conf_recv(cn, 0, &go, &len, CONF_TIMEOUT_MS) == 0, "go");
		bench_fill_block(buf, BS, 0x902);
		res = coh_cache_write(x.cache, 48, 1, buf);
		CONF_CHECK(conf_send(cn, 1, &res, sizeof(res)) == 0, "report");
		CONF_CHECK(res != 0, "a fenced node's write took the lock");
	}
	if (cn->id == 1) {
		CONF_CHECK(conf_recv(cn, 2, &res, &len, CONF_TIMEOUT_MS) == 0, "result");
		bench_fill_block(buf, BS, 0x901);
		CONF_CHECK(coh_cache_write(x.cache, 48, 1, buf) == 0,
			   "write of block 48 after the fenced node tried it (it got %s)",
			   coh_strerror(res));
		CONF_CHECK(coh_cache_read(x.cache, 20, 1, buf) == 0 &&
			       bench_block_value(buf, BS, &v) == 0 && v == 0x900,
			   "block 20");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "done");
	if (cn->id == 2)
		CONF_CHECK(coh_cache_abandon(&x.cache) == 0, "abandon");
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * The engine's hold (coh_cache_attr.hold_locks) and the background destage's yield. Node 0
 * writes block 3 and holds its locks: node 1's read of it gets no grant (it times out, bounded)
 * while the hold is on, and reads node 0's value once it is off. Node 0 also writes blocks 20 to
 * 23 and writes them back with coh_cache_writeback: with coh_cache_yield on, nothing is written
 * and it says -EAGAIN; with it off, all four reach the store.
 */
static bool hold_on(void *arg)
{
	return __atomic_load_n((bool *)arg, __ATOMIC_ACQUIRE);
}

int sc_cache_hold_and_yield(struct conf_node *cn)
{
	static bool hold;
	struct coh_cache_attr a = {
		.fab = cn->fab,
		.nodes = cn->n,
		.resource_blocks = 4,
		.cache_blocks = 256,
		/* The read under the hold waits this long; on rdma under TCG the
				     * cache's connections took longer than 500 ms to make. */
		.timeout_ms = 3000,
		.hold_locks = hold_on,
		.hook_arg = &hold
	};
	const uint64_t lbas[4] = { 20, 21, 22, 23 };
	struct coh_cache_stats s0, s1;
	struct coh_store *st = NULL;
	struct coh_cache *c = NULL;
	uint8_t buf[BS];
	uint32_t written = 99, i;
	uint64_t v;
	int r;

	CONF_CHECK(coh_store_open_file(store_path, BS, 64, true, &st) == 0, "store");
	a.store = st;
	CONF_CHECK(coh_cache_open(&a, &c) == 0, "cache up");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x700);
		CONF_CHECK(coh_cache_write(c, 3, 1, buf) == 0, "write 3");
		__atomic_store_n(&hold, true, __ATOMIC_RELEASE);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "held");
	if (cn->id == 1) {
		r = coh_cache_read(c, 3, 1, buf);
		CONF_CHECK(r == -ETIMEDOUT, "a read of a held resource: %s, not a timeout",
			   coh_strerror(r));
	}
	CONF_CHECK(conf_barrier(cn) == 0, "refused");
	if (cn->id == 0)
		__atomic_store_n(&hold, false, __ATOMIC_RELEASE);
	CONF_CHECK(conf_barrier(cn) == 0, "let go");
	if (cn->id == 1) {
		CONF_CHECK(coh_cache_read(c, 3, 1, buf) == 0, "read 3 after the hold");
		CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == 0x700, "block 3: %llx",
			   (unsigned long long)v);
	}
	/* Block 3 went to the store on the way to node 1 (the service thread writes back with
	 * the cache lock dropped, so it could still be under way beside the writes below). */
	CONF_CHECK(conf_barrier(cn) == 0, "read back");
	if (cn->id == 0) {
		for (i = 0; i < 4; i++) {
			bench_fill_block(buf, BS, 0x720 + i);
			CONF_CHECK(coh_cache_write(c, lbas[i], 1, buf) == 0, "write %llu",
				   (unsigned long long)lbas[i]);
		}
		coh_cache_stats(c, &s0);
		coh_cache_yield(c, true);
		r = coh_cache_writeback(c, lbas, 4, &written);
		coh_cache_yield(c, false);
		coh_cache_stats(c, &s1);
		CONF_CHECK(r == -EAGAIN && written == 0 && s1.store_writes == s0.store_writes,
			   "write-back with a view change waiting: %s, %u written", coh_strerror(r),
			   written);
		r = coh_cache_writeback(c, lbas, 4, &written);
		CONF_CHECK(r == 0 && written == 4, "write-back: %s, %u written", coh_strerror(r),
			   written);
		for (i = 0; i < 4; i++) {
			CONF_CHECK(coh_store_read(st, lbas[i], 1, buf) == 0 &&
				       bench_block_value(buf, BS, &v) == 0 && v == 0x720 + i,
				   "block %llu in the store: %llx", (unsigned long long)lbas[i],
				   (unsigned long long)v);
		}
	}
	CONF_CHECK(conf_barrier(cn) == 0, "done");
	CONF_CHECK(coh_cache_close(&c) == 0, "close");
	coh_store_delete(&st);
	return 0;
}

/*
 * A grant whose message is lost while its giver lives. Node 0 holds resource 0 (block 5 written);
 * node 1 writes block 6, so node 0 writes back, changes the word to name node 1, and sends the
 * grant: its point hook cuts the network to node 1 right after the CAS (shm's
 * coh_fabric_partition, from node 0's side only) and heals it once the send has failed, after the
 * transport's retries. The word names node 1, node 1 has no grant, and nobody died, so no view
 * change adopts it. Node 1 must take it after a timeout (acq_lost_grant) and its write succeed,
 * within a few attempts; then each node reads the other's block, current. On rdma (no cut) the
 * scenario ends after its setup.
 */
struct lg_ctx {
	struct coh_fabric *fab;
	int cut, healed;
};

static int lg_point(void *arg, uint32_t pt, uint64_t detail)
{
	struct lg_ctx *h = arg;

	if (detail != 0)
		return 0;
	if (pt == COH_CACHE_PT_SERVE_CAS && !h->cut)
		h->cut = coh_fabric_partition(h->fab, 1ull << 1) == 0 ? 1 : -1;
	else if (pt == COH_CACHE_PT_SERVE_SENT && h->cut == 1 && !h->healed)
		h->healed = coh_fabric_partition(h->fab, 0) == 0 ? 1 : -1;
	return 0;
}

int sc_cache_lost_grant(struct conf_node *cn)
{
	struct lg_ctx h = { .fab = cn->fab };
	struct coh_cache_attr a = { .fab = cn->fab,
				    .nodes = cn->n,
				    .resource_blocks = 16,
				    .cache_blocks = 256,
				    .timeout_ms = 1000,
				    .hook_arg = &h };
	struct coh_cache_stats s;
	struct coh_store *st = NULL;
	struct coh_cache *c = NULL;
	uint8_t buf[BS];
	uint64_t v;
	int r = -1, i;

	if (coh_fabric_partition(cn->fab, 0) == -EOPNOTSUPP)
		return 0;
	if (cn->id == 0)
		a.point = lg_point;
	CONF_CHECK(coh_store_open_file(store_path, BS, 64, true, &st) == 0, "store");
	a.store = st;
	CONF_CHECK(coh_cache_open(&a, &c) == 0, "cache up");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x500);
		CONF_CHECK(coh_cache_write(c, 5, 1, buf) == 0, "write 5");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "held");
	if (cn->id == 1) {
		/* The first attempt waits out its request; a later one finds the word naming this
		 * node with no grant for a timeout. Four timeouts bound it, as the engine does. */
		bench_fill_block(buf, BS, 0x601);
		for (i = 0; i < 4 && r; i++)
			r = coh_cache_write(c, 6, 1, buf);
		CONF_CHECK(r == 0, "write 6 after a lost grant: %s (%d attempts)", coh_strerror(r),
			   i);
		coh_cache_stats(c, &s);
		CONF_CHECK(s.grants_lost == 1, "grants taken as the word said: %llu",
			   (unsigned long long)s.grants_lost);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "written");
	if (cn->id == 0)
		CONF_CHECK(h.cut == 1 && h.healed == 1, "the cut did not happen: %d %d", h.cut,
			   h.healed);
	CONF_CHECK(coh_cache_read(c, cn->id == 0 ? 6 : 5, 1, buf) == 0, "read back");
	CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == (cn->id == 0 ? 0x601u : 0x500u),
		   "block %d: %llx", cn->id == 0 ? 6 : 5, (unsigned long long)v);
	CONF_CHECK(conf_barrier(cn) == 0, "done");
	CONF_CHECK(coh_cache_close(&c) == 0, "close");
	coh_store_delete(&st);
	return 0;
}

/*
 * The service thread hands a resource on without the cache lock. Node 0 writes blocks 5 (resource
 * 0) and 40 (resource 2); node 1 writes block 7, so node 0's service thread writes block 5 back
 * and hands resource 0 over. At each of the two points of the hand-over where it waits on the
 * network (COH_CACHE_PT_SERVE_WB, after the write-back; COH_CACHE_PT_SERVE_CAS, after the CAS)
 * its hook, on the service thread, asks a helper thread of node 0 for a read of block 40 and
 * waits for it, bounded (3 s): a read hit takes the cache lock, so it comes back only if the
 * service thread does not hold that lock there (it did before, across the write-back, the CAS
 * and every send). At the first point the hook also starts a thread that writes block 6 (resource 0, the
 * one being handed over) without waiting for it: it must wait for the hand-over (res_state.srv)
 * and then ask node 1 for the resource, and its write must not be lost either way. Then both
 * nodes read blocks 5, 6, 7 and 40 and find every write.
 */
enum {
	SW_WB,
	SW_CAS,
	SW_POINTS
};

struct sw_read {
	struct sw_ctx *x;
	pthread_t t;
	int done, ret;
	uint64_t val;
};

struct sw_ctx {
	struct coh_cache *c;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct sw_read rd[SW_POINTS];
	int fired[SW_POINTS], started[SW_POINTS];
	int in_time[SW_POINTS]; /* the read came back while the hook waited */
	pthread_t writer;
	int writer_ret, writer_started;
};

static void *sw_reader(void *arg)
{
	struct sw_read *rd = arg;
	uint8_t buf[BS];
	uint64_t v = 0;
	int r = coh_cache_read(rd->x->c, 40, 1, buf);

	if (!r && bench_block_value(buf, BS, &v))
		r = -EBADMSG;
	pthread_mutex_lock(&rd->x->mu);
	rd->ret = r;
	rd->val = v;
	rd->done = 1;
	pthread_cond_broadcast(&rd->x->cond);
	pthread_mutex_unlock(&rd->x->mu);
	return NULL;
}

static void *sw_writer(void *arg)
{
	struct sw_ctx *x = arg;
	uint8_t buf[BS];
	int r = -1, i;

	bench_fill_block(buf, BS, 0x606);
	/* Bounded like the engine's retries: a view change is not expected here. */
	for (i = 0; i < 4 && r; i++)
		r = coh_cache_write(x->c, 6, 1, buf);
	x->writer_ret = r;
	return NULL;
}

static int sw_point(void *arg, uint32_t pt, uint64_t detail)
{
	struct sw_ctx *x = arg;
	struct timespec ts;
	int i;

	if (detail != 0)
		return 0;
	if (pt == COH_CACHE_PT_SERVE_WB)
		i = SW_WB;
	else if (pt == COH_CACHE_PT_SERVE_CAS)
		i = SW_CAS;
	else
		return 0;
	pthread_mutex_lock(&x->mu);
	if (x->fired[i]) {
		pthread_mutex_unlock(&x->mu);
		return 0;
	}
	x->fired[i] = 1;
	x->rd[i].x = x;
	x->started[i] = pthread_create(&x->rd[i].t, NULL, sw_reader, &x->rd[i]) == 0;
	if (i == SW_WB)
		x->writer_started = pthread_create(&x->writer, NULL, sw_writer, x) == 0;
	/* Well inside the requester's timeout (10 s), so that a hit that waits shows as such. */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 3;
	while (x->started[i] && !x->rd[i].done) {
		if (pthread_cond_timedwait(&x->cond, &x->mu, &ts))
			break;
	}
	x->in_time[i] = x->rd[i].done;
	pthread_mutex_unlock(&x->mu);
	return 0;
}

int sc_cache_serve_unlocked(struct conf_node *cn)
{
	static const struct {
		uint64_t lba, val;
	} want[] = { { 5, 0x505 }, { 6, 0x606 }, { 7, 0x707 }, { 40, 0x404 } };
	struct sw_ctx h = { .writer_ret = 1 };
	struct coh_cache_attr a = { .fab = cn->fab,
				    .nodes = cn->n,
				    .resource_blocks = 16,
				    .cache_blocks = 256,
				    .timeout_ms = 10000,
				    .hook_arg = &h };
	struct coh_store *st = NULL;
	uint8_t buf[BS];
	uint64_t v;
	uint32_t i;
	int done[SW_POINTS], p;

	pthread_mutex_init(&h.mu, NULL);
	pthread_cond_init(&h.cond, NULL);
	if (cn->id == 0)
		a.point = sw_point;
	CONF_CHECK(coh_store_open_file(store_path, BS, 64, true, &st) == 0, "store");
	a.store = st;
	CONF_CHECK(coh_cache_open(&a, &h.c) == 0, "cache up");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x505);
		CONF_CHECK(coh_cache_write(h.c, 5, 1, buf) == 0, "write 5");
		bench_fill_block(buf, BS, 0x404);
		CONF_CHECK(coh_cache_write(h.c, 40, 1, buf) == 0, "write 40");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "held");
	if (cn->id == 1) {
		bench_fill_block(buf, BS, 0x707);
		CONF_CHECK(coh_cache_write(h.c, 7, 1, buf) == 0, "write 7");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "handed over");
	if (cn->id == 0) {
		static const char *const name[SW_POINTS] = { "write-back", "CAS" };

		int fired[SW_POINTS], started[SW_POINTS], wstarted;

		pthread_mutex_lock(&h.mu);
		for (p = 0; p < SW_POINTS; p++) {
			fired[p] = h.fired[p];
			started[p] = h.started[p];
			done[p] = h.in_time[p];
		}
		wstarted = h.writer_started;
		pthread_mutex_unlock(&h.mu);
		for (p = 0; p < SW_POINTS; p++) {
			if (started[p])
				pthread_join(h.rd[p].t, NULL);
		}
		if (wstarted)
			pthread_join(h.writer, NULL);
		for (p = 0; p < SW_POINTS; p++)
			CONF_CHECK(fired[p] && started[p], "the hand-over's %s point: %d %d",
				   name[p], fired[p], started[p]);
		for (p = 0; p < SW_POINTS; p++) {
			CONF_CHECK(done[p], "a read hit waited for the service thread's %s",
				   name[p]);
			CONF_CHECK(h.rd[p].ret == 0 && h.rd[p].val == 0x404,
				   "read hit during the %s: %s, %llx", name[p],
				   coh_strerror(h.rd[p].ret), (unsigned long long)h.rd[p].val);
		}
		CONF_CHECK(wstarted && h.writer_ret == 0, "write 6 during the hand-over: %s",
			   coh_strerror(h.writer_ret));
	}
	CONF_CHECK(conf_barrier(cn) == 0, "written");
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		CONF_CHECK(coh_cache_read(h.c, want[i].lba, 1, buf) == 0, "read %llu",
			   (unsigned long long)want[i].lba);
		CONF_CHECK(bench_block_value(buf, BS, &v) == 0 && v == want[i].val,
			   "node %u block %llu: %llx, not %llx", cn->id,
			   (unsigned long long)want[i].lba, (unsigned long long)v,
			   (unsigned long long)want[i].val);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "done");
	CONF_CHECK(coh_cache_close(&h.c) == 0, "close");
	coh_store_delete(&st);
	pthread_cond_destroy(&h.cond);
	pthread_mutex_destroy(&h.mu);
	return 0;
}

/*
 * Invalidation words shared by resources (cache_inv_words: sized by the cache, not the volume).
 * One block per resource and 8192 resources against 4096 words: resources 5 and 4101 share one.
 * Both nodes read block 5 (node 1 a sharer of resource 5), node 1 reads block 4101 too; node 0
 * writes 4101, which invalidates node 1's copy of 4101 and, through the shared word, makes its
 * copy of 5 look invalidated too: node 1's next read of 5 counts an invalidation seen, asks
 * again, and still reads the value it had. A real invalidation of 5 still works: node 0 writes
 * 5 and node 1 reads the new value. Then each node reads both blocks, current.
 */
int sc_cache_inv_shared_word(struct conf_node *cn)
{
	struct coh_cache_stats s0, s1;
	struct cnode x = { 0 };
	struct coh_cache *c;
	uint8_t buf[BS];
	uint64_t v;

	CONF_CHECK(cache_up(cn, &x, 8192, 1) == 0, "cache up");
	c = x.cache;
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x5a);
		CONF_CHECK(coh_cache_write(c, 5, 1, buf) == 0, "write 5");
		bench_fill_block(buf, BS, 0x41a);
		CONF_CHECK(coh_cache_write(c, 4101, 1, buf) == 0, "write 4101");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "written");
	CONF_CHECK(coh_cache_read(c, 5, 1, buf) == 0 && bench_block_value(buf, BS, &v) == 0 &&
		       v == 0x5a,
		   "block 5: %llx", (unsigned long long)v);
	if (cn->id == 1)
		CONF_CHECK(coh_cache_read(c, 4101, 1, buf) == 0 &&
			       bench_block_value(buf, BS, &v) == 0 && v == 0x41a,
			   "block 4101: %llx", (unsigned long long)v);
	CONF_CHECK(conf_barrier(cn) == 0, "shared");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x41b);
		CONF_CHECK(coh_cache_write(c, 4101, 1, buf) == 0, "write 4101 again");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "4101 invalidated");
	if (cn->id == 1) {
		coh_cache_stats(c, &s0);
		CONF_CHECK(coh_cache_read(c, 5, 1, buf) == 0 &&
			       bench_block_value(buf, BS, &v) == 0 && v == 0x5a,
			   "block 5 after 4101's write: %llx", (unsigned long long)v);
		coh_cache_stats(c, &s1);
		CONF_CHECK(s1.inval_seen == s0.inval_seen + 1,
			   "resource 5 did not share 4101's word: %llu invalidations seen",
			   (unsigned long long)(s1.inval_seen - s0.inval_seen));
	}
	CONF_CHECK(conf_barrier(cn) == 0, "5 read again");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x5b);
		CONF_CHECK(coh_cache_write(c, 5, 1, buf) == 0, "write 5 again");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "5 invalidated");
	CONF_CHECK(coh_cache_read(c, 5, 1, buf) == 0 && bench_block_value(buf, BS, &v) == 0 &&
		       v == 0x5b,
		   "node %u block 5 after its write: %llx", cn->id, (unsigned long long)v);
	CONF_CHECK(coh_cache_read(c, 4101, 1, buf) == 0 && bench_block_value(buf, BS, &v) == 0 &&
		       v == 0x41b,
		   "node %u block 4101: %llx", cn->id, (unsigned long long)v);
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	return 0;
}

/*
 * A range's directory CASes go together (acq_batch). Resources of 4 blocks. Node 0 writes blocks
 * 0 to 15 (resources 0 to 3, never used): the four CASes go in one batch, every one wins, and
 * that is all the atomics the write costs. Node 1 then reads blocks 0 to 15: its batch guesses
 * the words free and loses each (node 0 holds them), and it asks node 0 for each in turn; then
 * it writes blocks 16 to 31 (resources 4 to 7) in one batch. Each node reads all 32 blocks and
 * finds every write.
 */
int sc_cache_range_batch(struct conf_node *cn)
{
	struct coh_cache_stats s0, s1;
	struct cnode x = { 0 };
	struct coh_cache *c;
	uint8_t *buf = malloc(32 * BS);
	uint64_t v, want;
	uint32_t i;

	CONF_CHECK(buf, "malloc");
	CONF_CHECK(cache_up(cn, &x, 64, 4) == 0, "cache up");
	c = x.cache;
	if (cn->id == 0) {
		for (i = 0; i < 16; i++)
			bench_fill_block(buf + i * BS, BS, 0x1000 + i);
		coh_cache_stats(c, &s0);
		CONF_CHECK(coh_cache_write(c, 0, 16, buf) == 0, "write 0..15");
		coh_cache_stats(c, &s1);
		CONF_CHECK(s1.cas_batched - s0.cas_batched == 4 &&
			       s1.net_atomic - s0.net_atomic == 4,
			   "a fresh range of 4: %llu batched, %llu atomics",
			   (unsigned long long)(s1.cas_batched - s0.cas_batched),
			   (unsigned long long)(s1.net_atomic - s0.net_atomic));
	}
	CONF_CHECK(conf_barrier(cn) == 0, "node 0 wrote");
	if (cn->id == 1) {
		CONF_CHECK(coh_cache_read(c, 0, 16, buf) == 0, "read 0..15");
		for (i = 0; i < 16; i++)
			CONF_CHECK(bench_block_value(buf + i * BS, BS, &v) == 0 && v == 0x1000 + i,
				   "block %u: %llx", i, (unsigned long long)v);
		for (i = 0; i < 16; i++)
			bench_fill_block(buf + i * BS, BS, 0x2000 + i);
		coh_cache_stats(c, &s0);
		CONF_CHECK(coh_cache_write(c, 16, 16, buf) == 0, "write 16..31");
		coh_cache_stats(c, &s1);
		CONF_CHECK(s1.cas_batched - s0.cas_batched == 4, "a range of 4: %llu batched",
			   (unsigned long long)(s1.cas_batched - s0.cas_batched));
	}
	CONF_CHECK(conf_barrier(cn) == 0, "node 1 wrote");
	CONF_CHECK(coh_cache_read(c, 0, 32, buf) == 0, "read 0..31");
	for (i = 0; i < 32; i++) {
		want = i < 16 ? 0x1000 + i : 0x2000 + (i - 16);
		CONF_CHECK(bench_block_value(buf + i * BS, BS, &v) == 0 && v == want,
			   "node %u block %u: %llx, not %llx", cn->id, i, (unsigned long long)v,
			   (unsigned long long)want);
	}
	CONF_CHECK(cache_down(cn, &x) == 0, "down");
	free(buf);
	return 0;
}

/*
 * The fence waits for a hand-over in flight (coh_cache_fence, svc_cas). Three nodes. Node 0
 * writes block 5 (resource 0); node 1 writes block 6, so node 0's service thread hands resource 0
 * over. At the point between the hand-over's CAS (sent with the cache lock dropped) and its new
 * state and grant (COH_CACHE_PT_SERVE_CAS), the hook starts a thread that fences node 2 (a
 * bystander) and waits, bounded (1 s), to see whether that fence returns: it must not, since a
 * claim after it could find the word moved and the resource still held here, or the grant not
 * yet sent (docs/recovery.md, "Why grants are taken in first"). Once the hook has returned the
 * fence must return 0, and node 1's write must have its grant. Then nodes 0 and 1 read both
 * blocks; node 2, fenced by node 0, abandons its cache.
 */
struct fw_ctx {
	struct coh_cache *c;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t t;
	int fired, started, returned, ret, during_hook;
};

static void *fw_fence(void *arg)
{
	struct fw_ctx *x = arg;
	int r = coh_cache_fence(x->c, 1u << 2);

	pthread_mutex_lock(&x->mu);
	x->ret = r;
	x->returned = 1;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->mu);
	return NULL;
}

static int fw_point(void *arg, uint32_t pt, uint64_t detail)
{
	struct fw_ctx *x = arg;
	struct timespec ts;

	if (pt != COH_CACHE_PT_SERVE_CAS || detail != 0)
		return 0;
	pthread_mutex_lock(&x->mu);
	if (!x->fired) {
		x->fired = 1;
		x->started = pthread_create(&x->t, NULL, fw_fence, x) == 0;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		while (x->started && !x->returned) {
			if (pthread_cond_timedwait(&x->cond, &x->mu, &ts))
				break;
		}
		x->during_hook = x->returned;
	}
	pthread_mutex_unlock(&x->mu);
	return 0;
}

int sc_cache_fence_waits_handover(struct conf_node *cn)
{
	struct fw_ctx h = { .ret = 1 };
	struct coh_cache_attr a = { .fab = cn->fab,
				    .nodes = cn->n,
				    .resource_blocks = 16,
				    .cache_blocks = 256,
				    .timeout_ms = 10000,
				    .hook_arg = &h };
	struct coh_store *st = NULL;
	uint8_t buf[BS];
	uint64_t v;
	int started = 0, during = 0, returned = 0, ret = 1;

	if (cn->n != 3)
		return 1;
	pthread_mutex_init(&h.mu, NULL);
	pthread_cond_init(&h.cond, NULL);
	if (cn->id == 0)
		a.point = fw_point;
	CONF_CHECK(coh_store_open_file(store_path, BS, 64, true, &st) == 0, "store");
	a.store = st;
	CONF_CHECK(coh_cache_open(&a, &h.c) == 0, "cache up");
	if (cn->id == 0) {
		bench_fill_block(buf, BS, 0x505);
		CONF_CHECK(coh_cache_write(h.c, 5, 1, buf) == 0, "write 5");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "held");
	if (cn->id == 1) {
		bench_fill_block(buf, BS, 0x606);
		CONF_CHECK(coh_cache_write(h.c, 6, 1, buf) == 0, "write 6");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "handed over");
	if (cn->id == 0) {
		pthread_mutex_lock(&h.mu);
		started = h.started;
		pthread_mutex_unlock(&h.mu);
		if (started)
			pthread_join(h.t, NULL);
		pthread_mutex_lock(&h.mu);
		during = h.during_hook;
		returned = h.returned;
		ret = h.ret;
		pthread_mutex_unlock(&h.mu);
		CONF_CHECK(started, "the hand-over's CAS point was not reached");
		CONF_CHECK(!during, "the fence returned while a hand-over was between its CAS and "
				    "its grant");
		CONF_CHECK(returned && ret == 0, "the fence: %s", coh_strerror(ret));
	}
	if (cn->id < 2) {
		CONF_CHECK(coh_cache_read(h.c, 5, 1, buf) == 0 &&
			       bench_block_value(buf, BS, &v) == 0 && v == 0x505,
			   "node %u block 5: %llx", cn->id, (unsigned long long)v);
		CONF_CHECK(coh_cache_read(h.c, 6, 1, buf) == 0 &&
			       bench_block_value(buf, BS, &v) == 0 && v == 0x606,
			   "node %u block 6: %llx", cn->id, (unsigned long long)v);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "done");
	if (cn->id == 2)
		CONF_CHECK(coh_cache_abandon(&h.c) == 0, "abandon");
	else
		CONF_CHECK(coh_cache_close(&h.c) == 0, "close");
	coh_store_delete(&st);
	pthread_cond_destroy(&h.cond);
	pthread_mutex_destroy(&h.mu);
	return 0;
}
