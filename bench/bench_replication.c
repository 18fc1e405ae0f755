/*
 * bench_replication.c - cohort-bench replication: what the engine's replication and takeover
 * cost (include/cohort/node.h), on the shm provider, beside the fabric operations they are built
 * from, measured in the same run:
 *   fabric_write_flush_1  a 4 KiB WRITE then a FLUSH to one peer's persistent region (the floor
 *                         of one log copy)
 *   fabric_write_flush_2  the same to two peers: both WRITEs, then both FLUSHes
 *   write_k0, _k1, _k2    an acknowledged 4 KiB coh_node_write of a block this node already holds
 *                         exclusive, with k = 0, 1, 2 log copies: no network operation for the
 *                         cache; the write hook appends the block to the log on k peers (WRITE +
 *                         FLUSH); the block is rewritten, and the record it supersedes is left
 *                         to the scan (rlog.c, "Supersession"): no second round
 *   write_k1_new, _k2_new the same on a block with no live record (its last write destaged): the
 *                         append alone
 *   takeover, view_change a node SIGKILLed with acknowledged writes in its log, over many kills:
 *                         from the survivors' failure event to its log replayed into the group,
 *                         and to I/O resuming (coh_node_stats of the winner)
 *   kill_to_io            from the victim's last write starting (it dies inside it) to the last
 *                         survivor's coh_node_wait_epoch returning: the above plus detection
 *   write_during_view     meanwhile, node 0 (the winner: it hosts the victim's log) rewrites
 *                         blocks of stripes homed on itself that the victim never touched, in a
 *                         loop: the latency of each such write that overlaps the window from the
 *                         victim's fatal write to node 0's new epoch. A view change that stopped
 *                         all I/O would show here as a write as long as the view change.
 *   view_io_hold          per kill, the longest one step of the view change held node 0's I/O
 *                         lock (coh_node_stats.last_view_hold_ns): what the design stops, beside
 *                         what the writes above saw
 *   recovery_<N>m, rejoin_<N>m  a restart's recovery and a node's rejoin against the data they
 *                         deal with (bench_lifecycle.c)
 * Each measurement is a fresh 3-node cluster (RAID-5 over 3 element files, chunk 2) in a fresh
 * directory under /dev/shm; node processes are forked and meet at bounded barriers outside the
 * measured code. Node 0 measures the latency rows and prints them; the kill rows are gathered by
 * the parent through the shared area. On rdma (--provider rdma --cluster ip:port,ip:port,ip:port)
 * the three nodes are processes of this host on the given addresses, the element files stay in
 * /dev/shm, and each node's log regions are files the provider maps with libpmem2. What it leaves
 * out: multi-block writes, and writes that need a lock transfer (cohort-bench cache has those).
 */
#define _GNU_SOURCE
#include <errno.h>
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

#define BS 4096u
#define NODES 3u
#define ELEM_BLOCKS 256u
#define HOT_BLOCKS 8u		  /* the rewritten set: two stripes */
#define NEW_BATCH 64u		  /* _new rows: blocks written between two (unmeasured) destages */
#define LAT_LOG_BYTES (64u << 20) /* room enough that back-pressure never enters the rows */
#define FLOOR_STRIDE (BS + 64u)	  /* the floor walks its region as the log's ring does */
#define FLOOR_CHANNEL 250u	  /* clear of the engine's channels (16..207, 240, 241) */
#define KILL_WRITES 64u		  /* acknowledged writes in the victim's log when it dies */
#define OTHER_CAP 4096u	 /* write_during_view samples kept per kill (the max is kept exactly) */
#define OTHER_BLOCK 240u /* stripe 60 (homed on node 0), far from the victim's stripes 0-16 */
#define OTHER_BLOCKS 4u
#define KILLS_DEFAULT 20u
#define KILLS_MAX 1000u
#define TIMEOUT_MS 5000u   /* the engine's bound for each of its waits */
#define BARRIER_MS 120000  /* latency rows: the measuring node may take a while */
#define CHILD_ALARM_S 300u /* a child that outlives this is stuck: die */

/* A barrier in shared memory for forked processes, with a bound: a dead or stuck party makes the
 * others fail instead of hanging. Generation-counted, so it can be reused. */
enum row_id {
	R_FLOOR1,
	R_FLOOR2,
	R_K0,
	R_K1,
	R_K2,
	R_K1_NEW,
	R_K2_NEW,
	R_MAX,
};

struct rshared {
	struct bench_sbar all, survivors;
	struct coh_mr_desc floor_desc[NODES];
	uint64_t p50[R_MAX];
	/* one kill */
	_Atomic uint64_t victim_inv_ns;	  /* when the victim's fatal write began */
	_Atomic uint32_t victim_survived; /* its crash point never came */
	uint64_t resume_ns[NODES];
	/* node 0's writes to other stripes during one kill (write_during_view) */
	uint64_t *other_ns; /* OTHER_CAP per kill, shared */
	uint32_t other_n, other_in_window;
	uint64_t other_max;
	struct coh_node_stats st[NODES];
	uint64_t backpressure;
	char why[NODES][200];
	uint64_t ns[]; /* samples of one latency row */
};

struct rb {
	const struct bench_opts *o;
	struct rshared *sh;
	uint32_t me;
	const char *dir;
	struct coh_fabric *fab;
	struct coh_node *node;
	/* the floor: node 0 writes into regions that nodes 1 and 2 export */
	struct coh_cq *cq;
	struct coh_ep *ep[NODES];
	struct coh_mr *src, *dst;
	struct coh_rmr *rmr[NODES];
};

#define FAIL(b, ...)                                                                               \
	do {                                                                                       \
		snprintf((b)->sh->why[(b)->me], sizeof((b)->sh->why[0]), __VA_ARGS__);             \
		ret = -EIO;                                                                        \
		goto out;                                                                          \
	} while (0)

/* rb_open - this node's fabric and engine node, collective with the other two. */
static int rb_open(struct rb *b, int replicas, size_t log_bytes, uint32_t crash_after)
{
	struct coh_fabric_attr fa = { .provider = b->o->provider,
				      .node_id = b->me,
				      .cluster =
					  strcmp(b->o->provider, "shm") ? b->o->cluster : b->dir };
	struct coh_node_attr na = { .nodes = NODES,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = ELEM_BLOCKS,
				    .replicas = replicas,
				    .log_bytes = log_bytes,
				    .timeout_ms = TIMEOUT_MS };
	char paths[3][256];
	uint32_t i;
	int ret;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", b->dir, i);
		na.elem_paths[i] = paths[i];
	}
	if (crash_after) {
		na.crash_point = COH_CRASH_REPLICATED;
		na.crash_after = crash_after;
	}
	ret = coh_fabric_open(&fa, &b->fab);
	if (ret) {
		snprintf(b->sh->why[b->me], sizeof(b->sh->why[0]), "fabric open: %s",
			 coh_strerror(ret));
		return ret;
	}
	na.fab = b->fab;
	ret = coh_node_open(&na, &b->node);
	if (ret)
		snprintf(b->sh->why[b->me], sizeof(b->sh->why[0]), "node open: %s",
			 coh_strerror(ret));
	return ret;
}

/* rb_close - undo rb_open() and floor_up(), whatever part of them was done. */
static int rb_close(struct rb *b)
{
	uint32_t p;
	int ret;

	for (p = 0; p < NODES; p++)
		coh_rmr_delete(&b->rmr[p]);
	for (p = 0; p < NODES; p++)
		coh_ep_delete(&b->ep[p]);
	coh_mr_delete(&b->src);
	coh_mr_delete(&b->dst);
	coh_cq_delete(&b->cq);
	ret = coh_node_close(&b->node);
	if (ret)
		snprintf(b->sh->why[b->me], sizeof(b->sh->why[0]), "node close: %s",
			 coh_strerror(ret));
	coh_fabric_close(&b->fab);
	return ret;
}

/* emit - print a latency row from the samples in the shared area; keep its p50 for the ratios. */
static void emit(struct rb *b, enum row_id id, const char *op, uint32_t n, size_t size)
{
	struct bench_row row;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "repl");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", b->o->provider);
	row.size = size;
	bench_stats(b->sh->ns, n, &row);
	bench_print_row(&row, b->o->csv);
	if (id < R_MAX)
		b->sh->p50[id] = row.p50;
}

/*
 * floor_up - raw endpoints beside the engine's: nodes 1 and 2 make a persistent region as large
 * as a log region (the log is what the floor stands for) and export it; node 0 imports both.
 */
static int floor_up(struct rb *b)
{
	uint32_t peers = b->me == 0 ? 0x6u : 0x1u, p;
	int ret;

	ret = coh_cq_new(b->fab, 64, &b->cq);
	if (ret)
		return ret;
	for (p = 0; p < NODES; p++) {
		struct coh_ep_attr ea = { .peer = p,
					  .channel = FLOOR_CHANNEL,
					  .send_cq = b->cq,
					  .recv_cq = b->cq,
					  .max_send_wr = 4,
					  .max_recv_wr = 1 };

		if (!(peers >> p & 1))
			continue;
		ret = coh_ep_new(b->fab, &ea, &b->ep[p]);
		if (ret)
			return ret;
	}
	if (b->me == 0) {
		ret = coh_mr_new(b->fab, BS, COH_ACCESS_LOCAL_WRITE, &b->src);
		if (ret)
			return ret;
		memset(coh_mr_addr(b->src), 0x5a, BS);
	} else {
		/* FLUSH needs REMOTE_FLUSH on the target region, beside REMOTE_WRITE. */
		ret = coh_mr_new_pmem(b->fab, NULL, LAT_LOG_BYTES,
				      COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ |
					  COH_ACCESS_REMOTE_FLUSH,
				      &b->dst);
		if (ret)
			return ret;
		ret = coh_mr_export(b->dst, &b->sh->floor_desc[b->me]);
		if (ret)
			return ret;
	}
	ret = bench_sbar_wait(&b->sh->all, BARRIER_MS);
	for (p = 1; b->me == 0 && !ret && p < NODES; p++)
		ret = coh_rmr_import(b->ep[p], &b->sh->floor_desc[p], &b->rmr[p]);
	return ret;
}

/* floor_wait - take @n completions of the floor's operations; the first error seen. */
static int floor_wait(struct rb *b, uint32_t n)
{
	struct coh_wc wc[NODES];
	int got, i, ret = 0;

	while (n) {
		got = coh_cq_wait(b->cq, wc, (int)n, TIMEOUT_MS);
		if (got < 0)
			return got;
		for (i = 0; i < got; i++) {
			if (wc[i].status && !ret)
				ret = wc[i].status;
		}
		n -= (uint32_t)got;
	}
	return ret;
}

/*
 * floor_measure - WRITE + FLUSH to @npeers peers at a new offset each time, as the log does it:
 * the WRITEs to every peer posted together and waited for, then the FLUSHes together (a FLUSH
 * covers WRITEs that completed before it was posted). With two peers that is two round trips,
 * not four.
 */
static int floor_measure(struct rb *b, enum row_id id, const char *op, uint32_t npeers)
{
	uint64_t slots = LAT_LOG_BYTES / FLOOR_STRIDE, i, n = b->o->iters + b->o->warmup;
	uint32_t p;
	int ret = 0;

	for (i = 0; i < n && !ret; i++) {
		uint64_t off = (i % slots) * FLOOR_STRIDE, t0 = bench_now_ns();

		for (p = 1; p <= npeers && !ret; p++)
			ret = coh_ep_post_write(b->ep[p], b->src, 0, b->rmr[p], off, BS, p);
		if (!ret)
			ret = floor_wait(b, npeers);
		for (p = 1; p <= npeers && !ret; p++)
			ret = coh_ep_post_flush(b->ep[p], b->rmr[p], off, BS, p);
		if (!ret)
			ret = floor_wait(b, npeers);
		if (i >= b->o->warmup)
			b->sh->ns[i - b->o->warmup] = bench_now_ns() - t0;
	}
	if (ret) {
		snprintf(b->sh->why[0], sizeof(b->sh->why[0]), "%s: %s", op, coh_strerror(ret));
		return ret;
	}
	emit(b, id, op, b->o->iters, BS);
	return 0;
}

/*
 * write_measure - acknowledged writes of blocks this node holds exclusive. Rewrites cycle over
 * HOT_BLOCKS; @fresh writes NEW_BATCH blocks in turn and destages them (unmeasured) before the
 * next round, so that no block has a live record when it is written.
 */
static int write_measure(struct rb *b, enum row_id id, const char *op, bool fresh)
{
	uint32_t set = fresh ? NEW_BATCH : HOT_BLOCKS, n = b->o->iters, i, w;
	uint8_t buf[BS];
	int ret = 0;

	memset(buf, 0x3c, sizeof(buf));
	/* Warm: every block of the set taken exclusive, then the unmeasured iterations. */
	w = b->o->warmup > set ? b->o->warmup : set;
	for (i = 0; i < w && !ret; i++)
		ret = coh_node_write(b->node, i % set, 1, buf);
	if (!ret && fresh)
		ret = coh_node_flush(b->node);
	for (i = 0; i < n && !ret; i++) {
		uint64_t t0, v = i;

		if (fresh && i && i % set == 0 && (ret = coh_node_flush(b->node)))
			break;
		memcpy(buf, &v, sizeof(v));
		t0 = bench_now_ns();
		ret = coh_node_write(b->node, i % set, 1, buf);
		b->sh->ns[i] = bench_now_ns() - t0;
	}
	if (ret) {
		snprintf(b->sh->why[0], sizeof(b->sh->why[0]), "%s: %s", op, coh_strerror(ret));
		return ret;
	}
	emit(b, id, op, n, BS);
	return 0;
}

/* lat_selected - whether the cluster with k = @k has a row to measure. */
static bool lat_selected(const struct bench_opts *o, uint32_t k)
{
	switch (k) {
	case 0:
		return bench_op_selected(o, "fabric_write_flush_1") ||
		       bench_op_selected(o, "fabric_write_flush_2") ||
		       bench_op_selected(o, "write_k0");
	case 1:
		return bench_op_selected(o, "write_k1") || bench_op_selected(o, "write_k1_new");
	default:
		return bench_op_selected(o, "write_k2") || bench_op_selected(o, "write_k2_new");
	}
}

/* lat_child - one node of a latency cluster with k = @k; node 0 measures, 1 and 2 serve. */
static int lat_child(struct rb *b, uint32_t k)
{
	static const int replicas[] = { COH_NODE_REPLICAS_NONE, 1, 2 };
	static const char *const rows[] = { "write_k0", "write_k1", "write_k2" };
	static const char *const new_rows[] = { NULL, "write_k1_new", "write_k2_new" };
	static const enum row_id ids[] = { R_K0, R_K1, R_K2 },
				 new_ids[] = { R_MAX, R_K1_NEW, R_K2_NEW };
	bool floor = k == 0 && (bench_op_selected(b->o, "fabric_write_flush_1") ||
				bench_op_selected(b->o, "fabric_write_flush_2"));
	struct coh_node_stats st;
	int ret, r;

	ret = rb_open(b, replicas[k], LAT_LOG_BYTES, 0);
	if (ret)
		goto out;
	if (floor && (ret = floor_up(b)))
		FAIL(b, "floor setup: %s", coh_strerror(ret));
	if (bench_sbar_wait(&b->sh->all, BARRIER_MS))
		FAIL(b, "start barrier timed out");
	if (b->me == 0) {
		if (floor && bench_op_selected(b->o, "fabric_write_flush_1"))
			ret = floor_measure(b, R_FLOOR1, "fabric_write_flush_1", 1);
		if (!ret && floor && bench_op_selected(b->o, "fabric_write_flush_2"))
			ret = floor_measure(b, R_FLOOR2, "fabric_write_flush_2", 2);
		if (!ret && bench_op_selected(b->o, rows[k]))
			ret = write_measure(b, ids[k], rows[k], false);
		if (!ret && new_rows[k] && bench_op_selected(b->o, new_rows[k]))
			ret = write_measure(b, new_ids[k], new_rows[k], true);
		if (!coh_node_stats(b->node, &st))
			b->sh->backpressure += st.log_backpressure;
		/* Destage now, not in coh_node_close(): the others close at the same time, and a
		 * destage needs this node's log peers (see docs/benchmarks.md, section 5). */
		r = coh_node_flush(b->node);
		if (r && !ret)
			FAIL(b, "flush: %s", coh_strerror(r));
	}
	if (bench_sbar_wait(&b->sh->all, BARRIER_MS) && !ret)
		FAIL(b, "end barrier timed out");
out:
	r = rb_close(b);
	return ret ? ret : r;
}

/*
 * kill_child - one node of a kill trial. Node 2 writes KILL_WRITES blocks (acknowledged, live in
 * its log on node 0) and dies at the replication point of the next one; 0 and 1 wait for the
 * new epoch, record what they measured, and the winner reads the victim's blocks back.
 */
/*
 * other_writes - node 0, during a kill: rewrite blocks of a stripe the victim never touched until
 * the new epoch is in place (bounded), then keep the latency of every write that overlapped the
 * window from the victim's fatal write to now. Returns what coh_node_wait_epoch would.
 */
static int other_writes(struct rb *b, uint32_t trial)
{
	struct rshared *sh = b->sh;
	uint64_t *t = malloc(2 * sizeof(*t) * 65536), start = bench_now_ns(), end, from;
	uint64_t *out = sh->other_ns + (size_t)trial * OTHER_CAP;
	uint8_t buf[BS];
	uint32_t n = 0, i;
	int ret;

	if (!t)
		return -ENOMEM;
	for (;;) {
		ret = coh_node_wait_epoch(b->node, 2, 0);
		if (ret != -ETIMEDOUT || bench_now_ns() - start > 20000000000ull)
			break;
		bench_fill_block(buf, BS, 0xffull << 32 | n);
		t[2 * (n % 65536)] = bench_now_ns();
		ret = coh_node_write(b->node, OTHER_BLOCK + n % OTHER_BLOCKS, 1, buf);
		t[2 * (n % 65536) + 1] = bench_now_ns();
		if (ret)
			break;
		n++;
	}
	/* The window: from the victim's fatal write (it dies inside it) to the epoch here. */
	end = bench_now_ns();
	from = atomic_load(&sh->victim_inv_ns);
	sh->other_n = 0;
	sh->other_in_window = 0;
	sh->other_max = 0;
	for (i = n > 65536 ? n - 65536 : 0; i < n; i++) {
		uint64_t s0 = t[2 * (i % 65536)], s1 = t[2 * (i % 65536) + 1];

		if (s1 < from || s0 > end)
			continue;
		sh->other_in_window++;
		if (s1 - s0 > sh->other_max)
			sh->other_max = s1 - s0;
		if (sh->other_n < OTHER_CAP)
			out[sh->other_n++] = s1 - s0;
	}
	free(t);
	return ret;
}

static int kill_child(struct rb *b, uint32_t trial)
{
	static const uint8_t zero[BS];
	bool victim = b->me == NODES - 1;
	uint8_t buf[BS], want[BS];
	struct coh_node_stats st;
	uint32_t i;
	int ret, r;

	ret = rb_open(b, 1, 0, victim ? KILL_WRITES + 1 : 0);
	if (ret)
		goto out;
	if (b->me == 0) {
		/* Take the other stripes now, so that the loop below needs nobody. */
		for (i = 0; i < OTHER_BLOCKS; i++) {
			bench_fill_block(buf, BS, 0xfeull << 32 | i);
			ret = coh_node_write(b->node, OTHER_BLOCK + i, 1, buf);
			if (ret)
				FAIL(b, "write of block %u: %s", OTHER_BLOCK + i,
				     coh_strerror(ret));
		}
	}
	if (bench_sbar_wait(&b->sh->all, 30000))
		FAIL(b, "start barrier timed out");
	if (victim) {
		for (i = 0; i <= KILL_WRITES; i++) {
			bench_fill_block(buf, BS, (uint64_t)(trial + 1) << 32 | (i + 1));
			atomic_store(&b->sh->victim_inv_ns, bench_now_ns());
			ret = coh_node_write(b->node, i, 1, buf);
			if (ret)
				FAIL(b, "write %u: %s", i, coh_strerror(ret));
		}
		atomic_store(&b->sh->victim_survived, 1);
		FAIL(b, "the crash point was never reached");
	}
	ret = b->me == 0 ? other_writes(b, trial) : coh_node_wait_epoch(b->node, 2, 20000);
	b->sh->resume_ns[b->me] = bench_now_ns();
	if (ret)
		FAIL(b, "no new epoch after node %u died: %s", NODES - 1, coh_strerror(ret));
	ret = coh_node_stats(b->node, &st);
	if (ret)
		FAIL(b, "stats: %s", coh_strerror(ret));
	b->sh->st[b->me] = st;
	if (st.takeovers) {
		/* Every acknowledged write of the victim must be there; its last one, logged
		 * but never acknowledged, may or may not be. */
		for (i = 0; i <= KILL_WRITES; i++) {
			ret = coh_node_read(b->node, i, 1, buf);
			if (ret)
				FAIL(b, "read of block %u: %s", i, coh_strerror(ret));
			bench_fill_block(want, BS, (uint64_t)(trial + 1) << 32 | (i + 1));
			if (memcmp(buf, want, BS) && (i < KILL_WRITES || memcmp(buf, zero, BS)))
				FAIL(b, "block %u lost its acknowledged write after the takeover",
				     i);
		}
	}
	if (bench_sbar_wait(&b->sh->survivors, 30000))
		FAIL(b, "barrier before close timed out");
out:
	r = rb_close(b);
	return ret ? ret : r;
}

/*
 * cluster - fork the three nodes of one cluster in a fresh directory, running lat_child(k) or,
 * for @trial >= 0, kill_child(trial). Returns 0 when every node did what it should (the victim
 * of a trial dies of SIGKILL), else -EIO with the reasons on stderr.
 */
static int cluster(const struct bench_opts *o, struct rshared *sh, uint32_t k, int trial)
{
	char dir[] = "/dev/shm/cohort-bench-repl-XXXXXX";
	pid_t pids[NODES];
	uint32_t i;
	int ret = 0;

	if (!mkdtemp(dir))
		return -errno;
	bench_sbar_init(&sh->all, NODES);
	bench_sbar_init(&sh->survivors, NODES - 1);
	memset(sh->why, 0, sizeof(sh->why));
	memset(sh->st, 0, sizeof(sh->st));
	memset(sh->resume_ns, 0, sizeof(sh->resume_ns));
	atomic_store(&sh->victim_inv_ns, 0);
	atomic_store(&sh->victim_survived, 0);
	fflush(NULL);
	for (i = 0; i < NODES; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct rb b = { .o = o, .sh = sh, .me = i, .dir = dir };

			alarm(CHILD_ALARM_S);
			_exit((trial >= 0 ? kill_child(&b, (uint32_t)trial) : lat_child(&b, k))
				  ? 1
				  : 0);
		}
		if (pids[i] < 0) {
			ret = -errno;
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			bench_remove_tree(dir);
			return ret;
		}
	}
	for (i = 0; i < NODES; i++) {
		bool victim = trial >= 0 && i == NODES - 1;
		int st = 0;

		if (bench_wait_child(pids[i], &st, CHILD_ALARM_S + 10)) {
			ret = -EIO;
			continue;
		}
		if (victim && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL &&
		    !atomic_load(&sh->victim_survived))
			continue;
		if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "cohort-bench replication: %s node %u %s %d%s%s\n",
				trial >= 0 ? "kill trial:" : "latency:", i,
				WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
				sh->why[i][0] ? ": " : "", sh->why[i]);
			ret = -EIO;
		}
	}
	bench_remove_tree(dir);
	return ret;
}

/* kill_row - print a row of the kill trials; its size is the data acknowledged in the log. */
static void kill_row(const struct bench_opts *o, const char *op, uint64_t *ns, uint32_t n)
{
	struct bench_row row;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "repl");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", o->provider);
	row.size = (size_t)KILL_WRITES * BS;
	bench_stats(ns, n, &row);
	bench_print_row(&row, o->csv);
}

/* kills - the takeover rows: @n trials, each a fresh cluster and one SIGKILL. */
static int kills(const struct bench_opts *o, struct rshared *sh, uint32_t n)
{
	uint64_t *take = calloc(n, sizeof(*take)), *view = calloc(n, sizeof(*view)),
		 *io = calloc(n, sizeof(*io)),
		 *other = calloc((size_t)n * OTHER_CAP, sizeof(*other)),
		 *hold = calloc(n, sizeof(*hold));
	uint64_t other_max = 0, in_window = 0;
	uint32_t t, i, got = 0, nother = 0;
	size_t olen = (size_t)n * OTHER_CAP * sizeof(uint64_t);
	int ret = 0;

	sh->other_ns = mmap(NULL, olen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh->other_ns == MAP_FAILED) {
		sh->other_ns = NULL;
		ret = -errno;
		goto out;
	}
	if (!take || !view || !io || !other || !hold) {
		ret = -ENOMEM;
		goto out;
	}
	for (t = 0; t < n && !ret; t++) {
		uint64_t last = 0;
		int winner = -1;

		ret = cluster(o, sh, 1, (int)t);
		if (ret)
			break;
		for (i = 0; i < NODES - 1; i++) {
			if (sh->st[i].takeovers)
				winner = (int)i;
			if (sh->resume_ns[i] > last)
				last = sh->resume_ns[i];
		}
		if (winner < 0 || sh->st[winner].replayed_blocks < KILL_WRITES) {
			fprintf(stderr,
				"cohort-bench replication: kill %u: %s (replayed %llu blocks)\n", t,
				winner < 0 ? "no survivor took over" : "too few blocks replayed",
				winner < 0 ? 0ull
					   : (unsigned long long)sh->st[winner].replayed_blocks);
			ret = -EIO;
			break;
		}
		take[got] = sh->st[winner].last_takeover_ns;
		view[got] = sh->st[winner].last_view_ns;
		io[got] = last - atomic_load(&sh->victim_inv_ns);
		got++;
		memcpy(other + nother, sh->other_ns + (size_t)t * OTHER_CAP,
		       sh->other_n * sizeof(*other));
		nother += sh->other_n;
		in_window += sh->other_in_window;
		hold[got - 1] = sh->st[0].last_view_hold_ns;
		if (sh->other_max > other_max)
			other_max = sh->other_max;
	}
	if (!ret) {
		if (bench_op_selected(o, "takeover"))
			kill_row(o, "takeover", take, got);
		if (bench_op_selected(o, "view_change"))
			kill_row(o, "view_change", view, got);
		if (bench_op_selected(o, "kill_to_io"))
			kill_row(o, "kill_to_io", io, got);
		if (bench_op_selected(o, "write_during_view") && nother) {
			kill_row(o, "write_during_view", other, nother);
			if (!o->csv)
				printf("  write_during_view: node 0 completed %.0f writes per kill "
				       "inside the window; the longest took %.3f us\n",
				       (double)in_window / got, other_max / 1e3);
		}
		if (bench_op_selected(o, "view_io_hold"))
			kill_row(o, "view_io_hold", hold, got);
	}
out:
	if (sh->other_ns)
		munmap(sh->other_ns, olen);
	sh->other_ns = NULL;
	free(hold);
	free(other);
	free(take);
	free(view);
	free(io);
	return ret;
}

/* ratio - a p50 beside its floor's, when both were measured. */
static void ratio(const struct rshared *sh, enum row_id a, enum row_id b, const char *what)
{
	if (sh->p50[a] && sh->p50[b])
		printf("  %-44s %6.2fx  (%.3f us / %.3f us)\n", what,
		       (double)sh->p50[a] / (double)sh->p50[b], sh->p50[a] / 1e3, sh->p50[b] / 1e3);
}

int bench_replication(const struct bench_opts *o)
{
	const char *env = getenv("COHORT_BENCH_KILLS");
	uint32_t nkills = o->iters < KILLS_DEFAULT ? o->iters : KILLS_DEFAULT, k;
	struct rshared *sh;
	size_t len;
	int ret = 0;

	if (o->node >= 0 || (!strcmp(o->provider, "shm") && o->cluster)) {
		fprintf(stderr, "cohort-bench replication: forks its own clusters on this host "
				"(no --node; --cluster only for rdma)\n");
		return -EINVAL;
	}
	if (strcmp(o->provider, "shm")) {
		const char *c = o->cluster;
		uint32_t addrs = c && *c ? 1 : 0;

		while (c && (c = strchr(c, ','))) {
			addrs++;
			c++;
		}
		if (addrs != NODES) {
			fprintf(stderr,
				"cohort-bench replication: --provider %s needs --cluster with %u "
				"addresses, one per node\n",
				o->provider, NODES);
			return -EINVAL;
		}
	}
	if (env) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);

		if (*end || !v || v > KILLS_MAX) {
			fprintf(stderr, "cohort-bench replication: COHORT_BENCH_KILLS 1..%u\n",
				KILLS_MAX);
			return -EINVAL;
		}
		nkills = (uint32_t)v;
	}
	len = sizeof(*sh) + ((size_t)o->iters + o->warmup) * sizeof(uint64_t);
	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	memset(sh, 0, sizeof(*sh));
	bench_print_header(o->csv);
	for (k = 0; k < 3 && !ret; k++) {
		if (lat_selected(o, k))
			ret = cluster(o, sh, k, -1);
	}
	if (!ret &&
	    (bench_op_selected(o, "takeover") || bench_op_selected(o, "view_change") ||
	     bench_op_selected(o, "kill_to_io") || bench_op_selected(o, "write_during_view") ||
	     bench_op_selected(o, "view_io_hold")))
		ret = kills(o, sh, nkills);
	if (!ret)
		ret = bench_lifecycle(o);
	if (!o->csv && ((sh->p50[R_FLOOR1] && (sh->p50[R_K1] || sh->p50[R_K1_NEW])) ||
			(sh->p50[R_FLOOR2] && (sh->p50[R_K2] || sh->p50[R_K2_NEW])))) {
		printf("p50 ratios:\n");
		ratio(sh, R_K1, R_FLOOR1, "write_k1 / fabric_write_flush_1");
		ratio(sh, R_K2, R_FLOOR2, "write_k2 / fabric_write_flush_2");
		ratio(sh, R_K1_NEW, R_FLOOR1, "write_k1_new / fabric_write_flush_1");
		ratio(sh, R_K2_NEW, R_FLOOR2, "write_k2_new / fabric_write_flush_2");
		if (sh->backpressure)
			printf("  (log back-pressure: %llu times in the write rows)\n",
			       (unsigned long long)sh->backpressure);
	}
	if (ret)
		fprintf(stderr, "cohort-bench replication: failed: %s\n", coh_strerror(ret));
	munmap(sh, len);
	return ret;
}
