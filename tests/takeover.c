/*
 * takeover.c - the crash trials of takeover.h. The parent forks the node processes after mapping
 * a shared area for their histories and barriers; each node opens its fabric (shm, in a fresh
 * cluster directory; or, with COHORT_TEST_PROVIDER=rdma in the VM rig, rdma on fresh ports of
 * COHORT_RXE_IP) and its engine node over element files in that directory, runs its
 * share of the workload, and records every operation's invocation and response. The victim
 * dies at its crash point (or, if the point never comes, after its last operation). The
 * survivors wait for the new epoch, destage, read every block back, and the lowest of them
 * scrubs the parity. The parent then checks the whole history for linearizability.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "conf.h"
#include "linz.h"
#include "takeover.h"

#define BS 4096u
#define MAXN 5u
#define MAXOPS 512u
#define ELEM_BLOCKS 8u
#define CHILD_TIMEOUT_S 40

struct tk_shared {
	struct bench_sbar start, survivors;
	struct linz_op ops[MAXN][MAXOPS];
	uint32_t nops[MAXN];
	uint64_t takeovers[MAXN], replayed[MAXN], repaired[MAXN], backpressure[MAXN];
	uint64_t takeover_ns[MAXN], view_ns[MAXN];
	uint32_t epoch[MAXN];
	char why[MAXN][256];
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct child {
	const struct tk_trial *t;
	struct tk_shared *sh;
	uint32_t id;
	const char *dir;
	const char *cluster; /* the fabric's cluster address: @dir on shm */
};

#define FAIL(c, ...)                                                                               \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "takeover node %u: %s\n", (c)->id, (c)->sh->why[(c)->id]);         \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static struct linz_op *op_begin(struct child *c, uint64_t block, uint64_t value, bool write)
{
	struct linz_op *op = &c->sh->ops[c->id][c->sh->nops[c->id]];

	op->block = block;
	op->value = value;
	op->is_write = write;
	op->node = c->id;
	op->resp = 0;
	atomic_thread_fence(memory_order_seq_cst);
	op->inv = bench_now_ns();
	c->sh->nops[c->id]++;
	return op;
}

static int child_main(struct child *c)
{
	const struct tk_trial *t = c->t;
	uint32_t i;
	bool victim = c->id == t->victim;
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_attr na = { .nodes = t->nodes,
				    .raid = { .level = t->raid_level == 1 ? COH_RAID1 : COH_RAID5,
					      .nelems = 3,
					      .chunk_blocks = 2 },
				    .elem_blocks = ELEM_BLOCKS,
				    .replicas = (int)t->replicas,
				    .log_bytes = (size_t)t->log_kib << 10,
				    .cache_blocks = 64,
				    .timeout_ms = 3000 };
	char paths[3][600];
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	uint64_t s = t->seed * 0x9e3779b97f4a7c15ull + c->id + 1, nblocks;
	uint8_t buf[BS];
	int ret = 0, r;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	if (victim) {
		na.crash_point = t->crash_point;
		na.crash_after = t->crash_after;
	}
	r = coh_fabric_open(&fa, &fab);
	if (r)
		FAIL(c, "fabric open: %s", coh_strerror(r));
	na.fab = fab;
	r = coh_node_open(&na, &n);
	if (r)
		FAIL(c, "node open: %s", coh_strerror(r));
	nblocks = coh_node_nblocks(n);
	if (bench_sbar_wait(&c->sh->start, 30000))
		FAIL(c, "start barrier timed out");

	for (i = 0; i < t->ops; i++) {
		uint64_t b = rnd(&s) % nblocks, v;
		bool w = rnd(&s) % 10 < 6;
		struct linz_op *op;

		if (victim && !t->crash_point && i == t->kill_at_op)
			kill(getpid(), SIGKILL);
		if (w) {
			v = (uint64_t)(c->id + 1) << 32 | (i + 1);
			bench_fill_block(buf, BS, v);
			op = op_begin(c, b, v, true);
			r = coh_node_write(n, b, 1, buf);
			if (r) {
				/* Not acknowledged: it may or may not have taken effect. */
				op->resp = UINT64_MAX;
				if (r == -EROFS)
					FAIL(c, "write refused: %s", coh_strerror(r));
				continue;
			}
			op->resp = bench_now_ns();
		} else {
			op = op_begin(c, b, 0, false);
			r = coh_node_read(n, b, 1, buf);
			op->resp = bench_now_ns();
			if (r) {
				c->sh->nops[c->id]--; /* a failed read tells nothing */
				if (r == -EROFS)
					FAIL(c, "read refused: %s", coh_strerror(r));
				continue;
			}
			if (bench_block_value(buf, BS, &op->value))
				FAIL(c, "block %llu read back torn or corrupt",
				     (unsigned long long)b);
		}
	}
	if (victim) /* its crash point never came: die between operations */
		kill(getpid(), SIGKILL);

	/* Survivors: the victim's death must have made a new epoch. */
	if (t->victim < t->nodes) {
		r = coh_node_wait_epoch(n, 2, 60000);
		if (r)
			FAIL(c, "no new epoch after the victim died: %s", coh_strerror(r));
	}
	if (bench_sbar_wait(&c->sh->survivors, 60000))
		FAIL(c, "barrier after the workload timed out");
	r = coh_node_flush(n);
	if (r)
		FAIL(c, "flush: %s", coh_strerror(r));
	if (bench_sbar_wait(&c->sh->survivors, 60000))
		FAIL(c, "barrier after the flush timed out");
	/* Every block from every survivor: each read joins the history. */
	for (i = 0; i < nblocks; i++) {
		struct linz_op *op = op_begin(c, i, 0, false);

		r = coh_node_read(n, i, 1, buf);
		op->resp = bench_now_ns();
		if (r)
			FAIL(c, "final read of block %u: %s", i, coh_strerror(r));
		if (bench_block_value(buf, BS, &op->value))
			FAIL(c, "block %u torn or corrupt after takeover", i);
	}
	if (bench_sbar_wait(&c->sh->survivors, 60000))
		FAIL(c, "barrier after the reads timed out");
	r = coh_node_stats(n, &st);
	if (r)
		FAIL(c, "stats: %s", coh_strerror(r));
	c->sh->takeovers[c->id] = st.takeovers;
	c->sh->replayed[c->id] = st.replayed_blocks;
	c->sh->repaired[c->id] = st.repaired_stripes;
	c->sh->backpressure[c->id] = st.log_backpressure;
	c->sh->takeover_ns[c->id] = st.last_takeover_ns;
	c->sh->view_ns[c->id] = st.last_view_ns;
	c->sh->epoch[c->id] = st.epoch;
	if (c->id == (t->victim == 0 ? 1u : 0u)) {
		uint64_t bad = 0;

		r = coh_node_check(n, &bad);
		if (r)
			FAIL(c, "scrub: %s", coh_strerror(r));
		if (bad)
			FAIL(c, "%llu stripes with parity not matching data",
			     (unsigned long long)bad);
	}
	if (bench_sbar_wait(&c->sh->survivors, 60000))
		FAIL(c, "barrier before close timed out");
out:
	r = coh_node_close(&n);
	if (r && !ret)
		fprintf(stderr, "takeover node %u: close: %s\n", c->id, coh_strerror(r));
	coh_fabric_close(&fab);
	return ret;
}

/*
 * trial_setup - a fresh directory (@dir, a mkdtemp template), a zeroed area of @len bytes shared
 * with the node processes to come, and the cluster address for @nodes nodes: the directory on
 * shm, fresh loopback addresses otherwise. Returns the area, or NULL with nothing left behind.
 */
static void *trial_setup(char *dir, size_t len, uint32_t nodes, char *cluster, size_t clen)
{
	void *sh;

	if (!mkdtemp(dir))
		return NULL;
	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_remove_tree(dir);
		return NULL;
	}
	memset(sh, 0, len);
	if (strcmp(conf_provider(), "shm")) {
		if (conf_cluster_new(cluster, clen, nodes)) {
			fprintf(stderr, "takeover: no cluster address for provider %s\n",
				conf_provider());
			munmap(sh, len);
			bench_remove_tree(dir);
			return NULL;
		}
	} else {
		snprintf(cluster, clen, "%s", dir);
	}
	return sh;
}

/* trial_abort - a fork failed after @started nodes: kill and reap them, undo trial_setup. */
static int trial_abort(const pid_t *pids, uint32_t started, void *sh, size_t len, const char *dir)
{
	while (started--) {
		kill(pids[started], SIGKILL);
		waitpid(pids[started], NULL, 0);
	}
	munmap(sh, len);
	bench_remove_tree(dir);
	return 1;
}

int tk_run(const struct tk_trial *t, struct tk_result *res)
{
	char dir[] = "/dev/shm/cohort-takeover-XXXXXX", cluster[512];
	struct tk_shared *sh;
	struct linz_op *all = NULL;
	pid_t pids[MAXN];
	size_t nall = 0;
	uint32_t i, j;
	int failed = 0;

	memset(res, 0, sizeof(*res));
	if (t->nodes < 3 || t->nodes > MAXN || t->ops + 64 > MAXOPS)
		return 1;
	sh = trial_setup(dir, sizeof(*sh), t->nodes, cluster, sizeof(cluster));
	if (!sh)
		return 1;
	bench_sbar_init(&sh->start, t->nodes);
	bench_sbar_init(&sh->survivors, t->victim < t->nodes ? t->nodes - 1 : t->nodes);
	fflush(NULL);
	for (i = 0; i < t->nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct child c = {
				.t = t, .sh = sh, .id = i, .dir = dir, .cluster = cluster
			};

			alarm(CHILD_TIMEOUT_S);
			_exit(child_main(&c));
		}
		if (pids[i] < 0)
			return trial_abort(pids, i, sh, sizeof(*sh), dir);
	}
	for (i = 0; i < t->nodes; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, CHILD_TIMEOUT_S + 10)) {
			failed = 1;
			continue;
		}
		if (i == t->victim) {
			res->victim_died = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
			if (!res->victim_died) {
				fprintf(stderr, "takeover: the victim %u was not killed\n", i);
				failed = 1;
			}
		} else if (WIFSIGNALED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "takeover: node %u %s %d\n", i,
				WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			failed = 1;
		}
	}
	/* The history: the victim's unanswered write is pending (it may or may not have taken
	 * effect); its unanswered read tells nothing. */
	all = calloc((size_t)t->nodes * MAXOPS, sizeof(*all));
	for (i = 0; all && i < t->nodes; i++) {
		for (j = 0; j < sh->nops[i] && j < MAXOPS; j++) {
			struct linz_op op = sh->ops[i][j];

			if (!op.resp) {
				if (!op.is_write)
					continue;
				op.resp = UINT64_MAX;
			}
			if (op.is_write && op.resp == UINT64_MAX)
				res->pending_writes++;
			else if (op.is_write)
				res->acked_writes++;
			else
				res->reads++;
			all[nall++] = op;
		}
		if (i != t->victim) {
			res->takeovers += sh->takeovers[i];
			res->replayed_blocks += sh->replayed[i];
			res->repaired_stripes += sh->repaired[i];
			if (sh->takeover_ns[i] > res->takeover_ns && sh->takeovers[i])
				res->takeover_ns = sh->takeover_ns[i];
			if (sh->view_ns[i] > res->view_ns)
				res->view_ns = sh->view_ns[i];
			res->epoch = sh->epoch[i];
		}
		res->backpressure += sh->backpressure[i];
	}
	if (!all) {
		failed = 1;
	} else if (!failed && linz_check(all, nall, stderr)) {
		fprintf(stderr, "takeover: the history across the crash is not linearizable\n");
		failed = 1;
	}
	free(all);
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}

/*
 * The hold trial (tk_hold_run): node 0 writes block 0 and dies; node 1, the only holder of its
 * log, wins its locks and holds its takeover open in the takeover hook until node 2 says so.
 * Meanwhile node 2 reads block 0 (which must wait) and does I/O on other resources, including a
 * lock transfer from node 1 (which must not).
 */
struct hold_shared {
	struct bench_sbar start, written, after;
	_Atomic uint32_t holding, released, read_done, read_early;
	uint64_t v0, read_value;
	int read_ret;
	char why[3][256];
};

struct hold_child {
	struct hold_shared *sh;
	struct coh_node *n;
	uint32_t id;
};

static void hold_hook(void *arg, uint32_t dead)
{
	struct hold_child *hc = arg;
	uint64_t until = bench_now_ns() + 20000000000ull;
	struct timespec nap = { 0, 1000000 };

	(void)dead;
	atomic_store(&hc->sh->holding, hc->id + 1);
	while (!atomic_load(&hc->sh->released) && bench_now_ns() < until)
		nanosleep(&nap, NULL);
}

static void *hold_reader(void *arg)
{
	struct hold_child *hc = arg;
	uint8_t buf[BS];

	hc->sh->read_ret = coh_node_read(hc->n, 0, 1, buf);
	/* Block 0 was the dead node's: its read must not finish before the takeover has. */
	atomic_store(&hc->sh->read_early, !atomic_load(&hc->sh->released));
	if (!hc->sh->read_ret && bench_block_value(buf, BS, &hc->sh->read_value))
		hc->sh->read_ret = -EILSEQ;
	atomic_store(&hc->sh->read_done, 1);
	return NULL;
}

#define HFAIL(...)                                                                                 \
	do {                                                                                       \
		snprintf(sh->why[id], sizeof(sh->why[0]), __VA_ARGS__);                            \
		fprintf(stderr, "hold node %u: %s\n", id, sh->why[id]);                            \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static int hold_child_main(struct hold_shared *sh, uint32_t id, const char *dir,
			   const char *cluster)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = id,
				      .cluster = cluster };
	struct coh_node_attr na = { .nodes = 3,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = ELEM_BLOCKS,
				    .cache_blocks = 64,
				    .timeout_ms = 3000,
				    .takeover_hook = hold_hook };
	struct hold_child hc = { .sh = sh, .id = id };
	struct timespec nap = { 0, 1000000 };
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	char paths[3][600];
	uint8_t buf[BS];
	pthread_t reader;
	uint64_t until, v, b;
	int ret = 0, r;
	uint32_t i;

	na.takeover_arg = &hc;
	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", dir, i);
		na.elem_paths[i] = paths[i];
	}
	r = coh_fabric_open(&fa, &fab);
	if (r)
		HFAIL("fabric open: %s", coh_strerror(r));
	na.fab = fab;
	r = coh_node_open(&na, &n);
	if (r)
		HFAIL("node open: %s", coh_strerror(r));
	hc.n = n;
	if (bench_sbar_wait(&sh->start, 30000))
		HFAIL("start barrier timed out");
	if (id == 0) {
		/* Acknowledged here, not destaged: only node 1's copy of the log has it. */
		bench_fill_block(buf, BS, sh->v0);
		r = coh_node_write(n, 0, 1, buf);
		if (r)
			HFAIL("write of block 0: %s", coh_strerror(r));
		if (bench_sbar_wait(&sh->written, 30000))
			HFAIL("barrier after the write timed out");
		kill(getpid(), SIGKILL);
	}
	if (bench_sbar_wait(&sh->written, 30000))
		HFAIL("barrier after the write timed out");
	if (id == 2) {
		until = bench_now_ns() + 20000000000ull;
		while (atomic_load(&sh->holding) != 2 && bench_now_ns() < until)
			nanosleep(&nap, NULL);
		if (atomic_load(&sh->holding) != 2)
			HFAIL("node 1 never held node 0's takeover (holding %u)",
			      atomic_load(&sh->holding));
		if (pthread_create(&reader, NULL, hold_reader, &hc))
			HFAIL("reader thread");
		/* Wait until the read has met the dead node's resource and is waiting. */
		until = bench_now_ns() + 20000000000ull;
		do {
			nanosleep(&nap, NULL);
			coh_node_stats(n, &st);
		} while (!st.dead_waits && !atomic_load(&sh->read_done) && bench_now_ns() < until);
		/* Other resources, while the takeover is held: block 4 (resource 1, homed on
		 * node 1, and written by node 1's lock transfer to us), block 8, a read of 9. */
		for (b = 4; b <= 8 && !ret; b += 4) {
			bench_fill_block(buf, BS, (3ull << 32) | b);
			r = coh_node_write(n, b, 1, buf);
			if (r)
				HFAIL("write of block %llu during the takeover: %s",
				      (unsigned long long)b, coh_strerror(r));
		}
		r = coh_node_read(n, 9, 1, buf);
		if (r)
			HFAIL("read of block 9 during the takeover: %s", coh_strerror(r));
		if (atomic_load(&sh->read_done))
			HFAIL("the read of the dead node's block finished while its takeover was "
			      "held (%s)",
			      coh_strerror(sh->read_ret));
		atomic_store(&sh->released, 1);
		pthread_join(reader, NULL);
		if (sh->read_ret)
			HFAIL("read of block 0 after the takeover: %s", coh_strerror(sh->read_ret));
		if (atomic_load(&sh->read_early))
			HFAIL("the read of block 0 finished before the takeover");
		if (sh->read_value != sh->v0)
			HFAIL("block 0 read %llx, acknowledged %llx",
			      (unsigned long long)sh->read_value, (unsigned long long)sh->v0);
	}
	r = coh_node_wait_epoch(n, 2, 30000);
	if (r)
		HFAIL("no new epoch: %s", coh_strerror(r));
	if (bench_sbar_wait(&sh->after, 30000))
		HFAIL("barrier after the takeover timed out");
	for (b = 0; b <= 8; b += 4) {
		uint64_t want = b ? (3ull << 32) | b : sh->v0;

		r = coh_node_read(n, b, 1, buf);
		if (r || bench_block_value(buf, BS, &v) || v != want)
			HFAIL("block %llu after the takeover: %s, %llx not %llx",
			      (unsigned long long)b, coh_strerror(r), (unsigned long long)v,
			      (unsigned long long)want);
	}
	coh_node_stats(n, &st);
	if (id == 1 && st.takeovers != 1)
		HFAIL("node 1 took over %llu times, not once", (unsigned long long)st.takeovers);
	if (bench_sbar_wait(&sh->after, 30000))
		HFAIL("barrier before close timed out");
out:
	r = coh_node_close(&n);
	if (r && !ret)
		fprintf(stderr, "hold node %u: close: %s\n", id, coh_strerror(r));
	coh_fabric_close(&fab);
	return ret;
}

int tk_hold_run(void)
{
	char dir[] = "/dev/shm/cohort-hold-XXXXXX", cluster[512];
	struct hold_shared *sh;
	pid_t pids[3];
	uint32_t i;
	int failed = 0;

	sh = trial_setup(dir, sizeof(*sh), 3, cluster, sizeof(cluster));
	if (!sh)
		return 1;
	sh->v0 = 1ull << 32 | 1;
	bench_sbar_init(&sh->start, 3);
	bench_sbar_init(&sh->written, 3);
	bench_sbar_init(&sh->after, 2);
	fflush(NULL);
	for (i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			alarm(CHILD_TIMEOUT_S);
			_exit(hold_child_main(sh, i, dir, cluster));
		}
		if (pids[i] < 0)
			return trial_abort(pids, i, sh, sizeof(*sh), dir);
	}
	for (i = 0; i < 3; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, CHILD_TIMEOUT_S + 10)) {
			failed = 1;
		} else if (i == 0) {
			failed |= !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		} else if (WIFSIGNALED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "hold: node %u %s %d\n", i,
				WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			failed = 1;
		}
	}
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}
