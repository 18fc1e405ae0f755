/*
 * bench_engine.c - cohort-bench engine: the operation engine (coh_node_submit) under load. A
 * 3-node cluster (k = 1, RAID-5 over 3 element files) on this host; 1, 2 or all 3 nodes submit
 * 4 KiB operations at random blocks of a 64-block set, keeping a fixed number in flight (a
 * closed loop), and every other node idles. Rows:
 *   fabric_write_flush_1  the floor of an acknowledged write: a raw 4 KiB WRITE then FLUSH to
 *                         node 1's persistent region, as one log copy costs
 *   memcpy_4k             the floor of a read hit: a 4 KiB memcpy
 *   read_sync, write_sync one node, synchronous calls one after another (no engine thread)
 *   <op>_qd<D>_n<N>[_disj|_shared]  op read, write or mix (70% reads), D in flight per node on
 *                         N nodes; with N > 1, each node on a set of its own (disj) or all on
 *                         the same set (shared: every write moves locks)
 *   open_<S>, view_change_<S>, restart_<S>  against the volume's size (bench_scale.c)
 * Each latency sample is one operation, from its submit to its callback; the table's Mop/s is
 * the operations of all N nodes over the longest node's wall time. With --csv, each such row is
 * followed by one of suite engine_rate whose percentiles are all that wall time per operation
 * (1e9 / operations per second), so that the CSV carries the rate too (scripts/bench-plot.sh). What it leaves out: ops of
 * more than one block, and a cluster across hosts (rdma runs the 3 nodes on this host, as the
 * replication suite does).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/node.h"

#define EB_BS 4096u
#define EB_NODES 3u
#define EB_SET 64u /* blocks per set: 16 resources of 4 */
#define EB_ELEM_BLOCKS 256u
#define EB_LOG_BYTES (16u << 20)
#define EB_TIMEOUT_MS 5000u
#define EB_BARRIER_MS 300000
#define EB_CHILD_S 1800u
#define EB_FLOOR_CH 250u
#define EB_MAXQD 64u

static const uint32_t eb_qds[] = { 1, 4, 16, 32, 64 };
static const char *const eb_ops[] = { "read", "write", "mix" };

struct eshared {
	struct bench_sbar all;
	struct coh_mr_desc floor_desc;
	uint64_t elapsed[EB_NODES];
	uint32_t count[EB_NODES];
	int err[EB_NODES];
	char why[EB_NODES][200];
	uint64_t ns[]; /* EB_NODES * cap samples */
};

struct eb {
	const struct bench_opts *o;
	struct eshared *sh;
	uint32_t me, cap;
	const char *dir;
	struct coh_fabric *fab;
	struct coh_node *node;
	struct coh_cq *cq;
	struct coh_ep *ep;
	struct coh_mr *src, *dst;
	struct coh_rmr *rmr;
};

/* One row's workload on one node. */
struct eb_slot {
	struct coh_io io;
	struct eb_run *run;
	uint64_t t0;
	uint8_t buf[EB_BS];
};

struct eb_run {
	struct eb *b;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t free_mask;
	uint32_t done, measured_from; /* completions; the first measured one */
	int err;
	uint64_t *ns;
	struct eb_slot slots[EB_MAXQD];
};

/* eb_set - blocks in each node's set (--set; disjoint sets of 3 nodes fit the volume). */
static uint32_t eb_set(const struct eb *b)
{
	return b->o->set_blocks ? b->o->set_blocks : EB_SET;
}

static void eb_why(struct eb *b, const char *what, int err)
{
	snprintf(b->sh->why[b->me], sizeof(b->sh->why[0]), "%s: %s", what, coh_strerror(err));
}

static int eb_open(struct eb *b)
{
	struct coh_fabric_attr fa = { .provider = b->o->provider,
				      .node_id = b->me,
				      .cluster =
					  strcmp(b->o->provider, "shm") ? b->o->cluster : b->dir,
				      .shm_latency_ns = b->o->latency_ns };
	struct coh_node_attr na = { .nodes = EB_NODES,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = EB_ELEM_BLOCKS,
				    .replicas = 1,
				    .log_bytes =
					b->o->log_kib ? (size_t)b->o->log_kib << 10 : EB_LOG_BYTES,
				    .cache_blocks = b->o->cache_blocks,
				    .destage_high = b->o->destage_high,
				    .timeout_ms = EB_TIMEOUT_MS,
				    .queue_depth = EB_MAXQD,
				    .lanes = b->o->lanes };
	char paths[3][256];
	uint32_t i;
	int ret;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", b->dir, i);
		na.elem_paths[i] = paths[i];
	}
	ret = coh_fabric_open(&fa, &b->fab);
	if (ret) {
		eb_why(b, "fabric open", ret);
		return ret;
	}
	na.fab = b->fab;
	ret = coh_node_open(&na, &b->node);
	if (ret)
		eb_why(b, "node open", ret);
	return ret;
}

/* eb_floor_up - node 0 writes into a persistent region node 1 exports, on endpoints of its own. */
static int eb_floor_up(struct eb *b)
{
	struct coh_ep_attr ea = { .peer = b->me == 0 ? 1 : 0,
				  .channel = EB_FLOOR_CH,
				  .max_send_wr = 4,
				  .max_recv_wr = 1 };
	int ret = 0;

	if (b->me > 1)
		return bench_sbar_wait(&b->sh->all, EB_BARRIER_MS);
	ret = coh_cq_new(b->fab, 16, &b->cq);
	if (!ret) {
		ea.send_cq = ea.recv_cq = b->cq;
		ret = coh_ep_new(b->fab, &ea, &b->ep);
	}
	if (!ret && b->me == 0) {
		ret = coh_mr_new(b->fab, EB_BS, COH_ACCESS_LOCAL_WRITE, &b->src);
		if (!ret)
			memset(coh_mr_addr(b->src), 0x5a, EB_BS);
	} else if (!ret) {
		ret = coh_mr_new_pmem(b->fab, NULL, EB_LOG_BYTES,
				      COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ |
					  COH_ACCESS_REMOTE_FLUSH,
				      &b->dst);
		if (!ret)
			ret = coh_mr_export(b->dst, &b->sh->floor_desc);
	}
	if (!ret)
		ret = bench_sbar_wait(&b->sh->all, EB_BARRIER_MS);
	if (!ret && b->me == 0)
		ret = coh_rmr_import(b->ep, &b->sh->floor_desc, &b->rmr);
	if (ret)
		eb_why(b, "floor set-up", ret);
	return ret;
}

static int eb_floor_wait(struct eb *b)
{
	struct coh_wc wc;
	int got = coh_cq_wait(b->cq, &wc, 1, EB_TIMEOUT_MS);

	return got < 0 ? got : wc.status;
}

static void eb_emit(struct eb *b, const char *op, uint64_t *ns, uint32_t n, double mops)
{
	struct bench_row row;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "engine");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", b->o->provider);
	row.size = EB_BS;
	row.rate_mops = mops;
	bench_stats(ns, n, &row);
	bench_print_row(&row, b->o->csv);
	fflush(stdout);
}

/*
 * eb_emit_rate - CSV only: the rate of a row as a row of suite "engine_rate", the same op, whose
 * every percentile is the wall time per operation of all nodes together (1e9 / ops per second),
 * so that the CSV keeps its columns and still carries what the table's Mop/s says.
 */
static void eb_emit_rate(struct eb *b, const char *op, uint32_t ops, uint64_t wall_ns)
{
	struct bench_row row;
	uint64_t per = (wall_ns + ops / 2) / ops;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "engine_rate");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", b->o->provider);
	row.size = EB_BS;
	row.samples = ops;
	row.min = row.p50 = row.p99 = row.p999 = row.max = per;
	bench_print_row(&row, true);
	fflush(stdout);
}

/* eb_floors - node 0: WRITE + FLUSH to node 1 at a new offset each time, and a memcpy. */
static int eb_floors(struct eb *b)
{
	uint64_t slots = EB_LOG_BYTES / (EB_BS + 64), i, n = b->o->iters + b->o->warmup;
	static uint8_t from[EB_BS], to[EB_BS];
	int ret = 0;

	if (bench_op_selected(b->o, "fabric_write_flush_1")) {
		for (i = 0; i < n && !ret; i++) {
			uint64_t off = (i % slots) * (EB_BS + 64), t0 = bench_now_ns();

			ret = coh_ep_post_write(b->ep, b->src, 0, b->rmr, off, EB_BS, 1);
			if (!ret)
				ret = eb_floor_wait(b);
			if (!ret)
				ret = coh_ep_post_flush(b->ep, b->rmr, off, EB_BS, 1);
			if (!ret)
				ret = eb_floor_wait(b);
			if (i >= b->o->warmup)
				b->sh->ns[i - b->o->warmup] = bench_now_ns() - t0;
		}
		if (ret) {
			eb_why(b, "floor", ret);
			return ret;
		}
		eb_emit(b, "fabric_write_flush_1", b->sh->ns, b->o->iters, 0);
	}
	if (bench_op_selected(b->o, "memcpy_4k")) {
		for (i = 0; i < n; i++) {
			uint64_t t0 = bench_now_ns();

			from[i % EB_BS] = (uint8_t)i;
			memcpy(to, from, EB_BS);
			__asm__ volatile("" : : "r"(to) : "memory");
			if (i >= b->o->warmup)
				b->sh->ns[i - b->o->warmup] = bench_now_ns() - t0;
		}
		eb_emit(b, "memcpy_4k", b->sh->ns, b->o->iters, 0);
	}
	return 0;
}

static uint64_t eb_rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void eb_done(struct coh_io *io, int status, void *arg)
{
	struct eb_slot *sl = arg;
	struct eb_run *run = sl->run;
	uint64_t t = bench_now_ns() - sl->t0;

	(void)io;
	pthread_mutex_lock(&run->lock);
	if (run->done >= run->measured_from && run->done - run->measured_from < run->b->cap)
		run->ns[run->done - run->measured_from] = t;
	run->done++;
	if (status && !run->err)
		run->err = status;
	run->free_mask |= 1ull << (sl - run->slots);
	pthread_cond_signal(&run->cond);
	pthread_mutex_unlock(&run->lock);
}

/* eb_take - a free slot of the first @qd, or -1 when none frees up within the bound. With @all,
 * wait until all are free. */
static int eb_take(struct eb_run *run, uint32_t qd, bool all)
{
	uint64_t mask = qd >= 64 ? ~0ull : (1ull << qd) - 1;
	uint64_t until = bench_now_ns() + (uint64_t)EB_TIMEOUT_MS * 4 * 1000000ull;
	int slot = -1;

	pthread_mutex_lock(&run->lock);
	while (!(all ? (run->free_mask & mask) == mask : (run->free_mask & mask) != 0) &&
	       bench_now_ns() < until) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&run->cond, &run->lock, &ts);
	}
	if (all ? (run->free_mask & mask) == mask : (run->free_mask & mask) != 0) {
		slot = __builtin_ctzll(run->free_mask & mask);
		if (!all)
			run->free_mask &= ~(1ull << slot);
	}
	pthread_mutex_unlock(&run->lock);
	return slot;
}

/* eb_workload - this node's part of a row: @warm then @n operations, @qd in flight. */
static int eb_workload(struct eb *b, uint32_t op, uint32_t qd, uint64_t base, uint32_t warm,
		       uint32_t n, uint64_t *elapsed)
{
	static struct eb_run run;
	uint64_t s = 0x9e3779b97f4a7c15ull * (b->me + 1) + qd * 131 + op, t0 = 0;
	uint32_t i;
	int ret = 0;

	memset(&run, 0, sizeof(run));
	run.b = b;
	pthread_mutex_init(&run.lock, NULL);
	pthread_cond_init(&run.cond, NULL);
	run.free_mask = ~0ull;
	run.measured_from = warm;
	run.ns = b->sh->ns + (size_t)b->me * b->cap;
	for (i = 0; i < warm + n && !ret; i++) {
		int slot = eb_take(&run, qd, false);
		struct eb_slot *sl;
		uint64_t r = eb_rnd(&s);
		bool w = op == 1 || (op == 2 && r % 10 >= 7);

		if (slot < 0) {
			ret = -ETIMEDOUT;
			break;
		}
		if (i == warm) {
			/* Measured from here: the warm-up's last operations are still in flight,
			 * as in the steady state. */
			t0 = bench_now_ns();
		}
		sl = &run.slots[slot];
		sl->run = &run;
		if (w)
			memset(sl->buf, (int)(r >> 8), 64);
		sl->io = (struct coh_io){ .io_size = sizeof(sl->io),
					  .type = w ? COH_IO_WRITE : COH_IO_READ,
					  .lba = base + (r >> 16) % eb_set(b),
					  .nblocks = 1,
					  .buf = sl->buf,
					  .cb = eb_done,
					  .cb_arg = sl };
		sl->t0 = bench_now_ns();
		ret = coh_node_submit(b->node, &sl->io);
	}
	if (eb_take(&run, qd, true) < 0 && !ret)
		ret = -ETIMEDOUT;
	*elapsed = bench_now_ns() - t0;
	if (!ret)
		ret = run.err;
	pthread_mutex_destroy(&run.lock);
	pthread_cond_destroy(&run.cond);
	return ret;
}

/* eb_sync - one node, synchronous calls: the engine thread's hop left out. */
static int eb_sync(struct eb *b, bool w)
{
	uint64_t s = 0x2545f4914f6cdd1dull, i, n = b->o->iters + b->o->warmup;
	static uint8_t buf[EB_BS];
	int ret = 0;

	for (i = 0; i < n && !ret; i++) {
		uint64_t r = eb_rnd(&s), t0 = bench_now_ns();

		memset(buf, (int)r, 64);
		ret = w ? coh_node_write(b->node, (r >> 16) % eb_set(b), 1, buf)
			: coh_node_read(b->node, (r >> 16) % eb_set(b), 1, buf);
		if (i >= b->o->warmup)
			b->sh->ns[i - b->o->warmup] = bench_now_ns() - t0;
	}
	if (ret) {
		eb_why(b, w ? "write_sync" : "read_sync", ret);
		return ret;
	}
	eb_emit(b, w ? "write_sync" : "read_sync", b->sh->ns, b->o->iters, 0);
	return 0;
}

static void eb_row_name(char *name, size_t len, uint32_t op, uint32_t qd, uint32_t nodes,
			bool shared)
{
	snprintf(name, len, "%s_qd%u_n%u%s", eb_ops[op], qd, nodes,
		 nodes == 1 ? ""
		 : shared   ? "_shared"
			    : "_disj");
}

/* eb_rows - every node walks the same rows; the active ones run, node 0 prints. */
static int eb_rows(struct eb *b)
{
	uint32_t op, q, nodes, sh_i;
	int ret = 0;

	for (op = 0; op < 3; op++) {
		for (nodes = 1; nodes <= EB_NODES; nodes++) {
			for (sh_i = 0; sh_i < (nodes == 1 ? 1u : 2u); sh_i++) {
				for (q = 0; q < sizeof(eb_qds) / sizeof(eb_qds[0]); q++) {
					char name[24];
					uint64_t el = 0, max_el = 0;
					uint32_t total = 0, warm, k;
					bool shared = sh_i == 1;

					eb_row_name(name, sizeof(name), op, eb_qds[q], nodes,
						    shared);
					if (!bench_op_selected(b->o, name))
						continue;
					warm = b->o->warmup < 64 * eb_qds[q] ? b->o->warmup
									     : 64 * eb_qds[q];
					ret = bench_sbar_wait(&b->sh->all, EB_BARRIER_MS);
					if (ret) {
						eb_why(b, "barrier", ret);
						return ret;
					}
					if (b->me < nodes) {
						struct coh_node_stats s0 = { 0 }, s1 = { 0 };

						(void)coh_node_stats(b->node, &s0);
						ret = eb_workload(b, op, eb_qds[q],
								  shared ? 0 : b->me * eb_set(b),
								  warm, b->o->iters, &el);
						(void)coh_node_stats(b->node, &s1);
						/* What the log did for node 0's writes in this row: how
						 * many rounds carried several writes (group commit), and
						 * whether it ran full (back-pressure, destages). */
						if (b->me == 0 && s1.log_appends != s0.log_appends)
							fprintf(
							    b->o->csv ? stderr : stdout,
							    "  %s: node 0's log: %llu appends, %llu "
							    "rounds carried %llu of them together, %llu "
							    "back-pressure waits, %llu destages, "
							    "%llu background destage rounds\n",
							    name,
							    (unsigned long long)(s1.log_appends -
										 s0.log_appends),
							    (unsigned long long)(s1.log_group_rounds -
										 s0.log_group_rounds),
							    (unsigned long long)(s1.log_group_writes -
										 s0.log_group_writes),
							    (unsigned long long)(s1.log_backpressure -
										 s0.log_backpressure),
							    (unsigned long long)(s1.destages -
										 s0.destages),
							    (unsigned long long)(s1.log_bg_destages -
										 s0.log_bg_destages));
						b->sh->elapsed[b->me] = el;
						b->sh->err[b->me] = ret;
						if (ret) {
							eb_why(b, name, ret);
							return ret;
						}
					}
					ret = bench_sbar_wait(&b->sh->all, EB_BARRIER_MS);
					if (ret) {
						eb_why(b, "barrier", ret);
						return ret;
					}
					if (b->me)
						continue;
					/* Node 0 gathers the active nodes' samples. */
					for (k = 0; k < nodes; k++) {
						if (k)
							memmove(b->sh->ns + total,
								b->sh->ns + (size_t)k * b->cap,
								b->o->iters * sizeof(uint64_t));
						total += b->o->iters;
						if (b->sh->elapsed[k] > max_el)
							max_el = b->sh->elapsed[k];
					}
					eb_emit(b, name, b->sh->ns, total,
						max_el ? total * 1e3 / (double)max_el : 0);
					if (b->o->csv && max_el)
						eb_emit_rate(b, name, total, max_el);
				}
			}
		}
	}
	return 0;
}

static int eb_node(struct eb *b)
{
	int ret = eb_open(b);

	if (!ret)
		ret = eb_floor_up(b);
	if (!ret && b->me == 0)
		ret = eb_floors(b);
	if (!ret && b->me == 0 && bench_op_selected(b->o, "read_sync"))
		ret = eb_sync(b, false);
	if (!ret && b->me == 0 && bench_op_selected(b->o, "write_sync"))
		ret = eb_sync(b, true);
	if (!ret)
		ret = eb_rows(b);
	/* Everyone is done before anyone leaves: a leave destages and asks the others to. */
	if (!ret)
		ret = bench_sbar_wait(&b->sh->all, EB_BARRIER_MS);
	coh_rmr_delete(&b->rmr);
	coh_ep_delete(&b->ep);
	coh_mr_delete(&b->src);
	coh_mr_delete(&b->dst);
	coh_cq_delete(&b->cq);
	if (b->node && coh_node_close(&b->node) && !ret)
		ret = -EIO;
	coh_fabric_close(&b->fab);
	return ret;
}

int bench_engine(const struct bench_opts *o)
{
	char dir[] = "/dev/shm/cohort-bench-engine-XXXXXX";
	uint32_t cap = o->iters + o->warmup, i;
	pid_t pids[EB_NODES];
	struct eshared *sh;
	size_t len;
	int ret = 0;

	if (o->node >= 0 || (!strcmp(o->provider, "shm") && o->cluster)) {
		fprintf(stderr,
			"cohort-bench engine: forks its own cluster on this host (no --node; "
			"--cluster only for rdma, 3 addresses)\n");
		return -EINVAL;
	}
	if (!mkdtemp(dir))
		return -errno;
	len = sizeof(*sh) + (size_t)EB_NODES * cap * sizeof(uint64_t);
	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		ret = -errno;
		bench_remove_tree(dir);
		return ret;
	}
	memset(sh, 0, sizeof(*sh));
	bench_sbar_init(&sh->all, EB_NODES);
	bench_print_header(o->csv);
	fflush(NULL);
	for (i = 0; i < EB_NODES; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct eb b = { .o = o, .sh = sh, .me = i, .cap = cap, .dir = dir };

			alarm(EB_CHILD_S);
			_exit(eb_node(&b) ? 1 : 0);
		}
		if (pids[i] < 0) {
			ret = -errno;
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			goto out;
		}
	}
	for (i = 0; i < EB_NODES; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, EB_CHILD_S + 10) || !WIFEXITED(st) ||
		    WEXITSTATUS(st)) {
			fprintf(stderr, "cohort-bench engine: node %u failed: %s\n", i,
				sh->why[i][0] ? sh->why[i] : "died");
			ret = -EIO;
		}
	}
out:
	munmap(sh, len);
	bench_remove_tree(dir);
	if (!ret)
		ret = bench_scale(o);
	return ret;
}
