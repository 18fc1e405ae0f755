/*
 * lifecycle.c - the two-life trials of lifecycle.h. The parent maps a shared area for the
 * histories and barriers, forks the first life's node processes (each opens its fabric and its
 * engine node over element files and a log directory in the trial's directory), ends that life as
 * the trial says, then forks the second life on the same files, which reads every block back. The
 * parent checks both lives' histories together with the linearizability checker: the first life's
 * unanswered writes are pending (they may or may not have taken effect), its acknowledged ones
 * must all be there, and nothing older than them may come back.
 *
 * What it leaves out: nodes that restart while others run (a later step of the lifecycle work).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "conf.h"
#include "lifecycle.h"
#include "linz.h"

#define LC_BS 4096u
#define LC_MAXN 5u
#define LC_MAXOPS 600u
#define LC_ELEM_BLOCKS 16u
#define LC_CHILD_S 60
#define LC_WAIT_MS 30000

struct lc_shared {
	struct bench_sbar start[2], end[2];
	struct linz_op ops[2][LC_MAXN][LC_MAXOPS + 64];
	uint32_t nops[2][LC_MAXN];
	_Atomic uint32_t closed; /* LC_CLOSE: how many have closed, in order */
	uint64_t recovered[LC_MAXN], stale[LC_MAXN], recovery_ns[LC_MAXN], bad[LC_MAXN];
	char why[2][LC_MAXN][256];
};

struct lc_child {
	const struct lc_trial *t;
	struct lc_shared *sh;
	uint32_t id, life;
	const char *dir, *cluster;
	bool attempt; /* the second life's first attempt, without t->absent */
};

#define LFAIL(c, ...)                                                                              \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->life][(c)->id], sizeof((c)->sh->why[0][0]),             \
			 __VA_ARGS__);                                                             \
		fprintf(stderr, "lifecycle life %u node %u: %s\n", (c)->life + 1, (c)->id,         \
			(c)->sh->why[(c)->life][(c)->id]);                                         \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static uint64_t lc_rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static struct linz_op *lc_begin(struct lc_child *c, uint64_t block, uint64_t value, bool write)
{
	struct linz_op *op = &c->sh->ops[c->life][c->id][c->sh->nops[c->life][c->id]];

	op->block = block;
	op->value = value;
	op->is_write = write;
	op->node = c->id + c->life * LC_MAXN;
	op->resp = 0;
	atomic_thread_fence(memory_order_seq_cst);
	op->inv = bench_now_ns();
	c->sh->nops[c->life][c->id]++;
	return op;
}

/*
 * lc_read_done - a read's value, then its response time: a read counts in the history only once
 * it has a response, and a node may be SIGKILLed between any two stores here, so the value must
 * be in place first (the other order recorded a read of 0 that never happened). Returns 0, or
 * -EILSEQ for a torn block (the value is then the block's first 8 bytes).
 */
static int lc_read_done(struct linz_op *op, const uint8_t *buf)
{
	uint64_t t = bench_now_ns(), v;
	int ret = bench_block_value(buf, LC_BS, &v);

	op->value = v;
	atomic_thread_fence(memory_order_seq_cst);
	op->resp = t;
	return ret;
}

static void lc_nap(void)
{
	struct timespec t = { 0, 1000000 };

	nanosleep(&t, NULL);
}

static int lc_child_main(struct lc_child *c)
{
	const struct lc_trial *t = c->t;
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_attr na = { .nodes = t->nodes,
				    .raid = { .level = t->raid_level == 1 ? COH_RAID1 : COH_RAID5,
					      .nelems = 3,
					      .chunk_blocks = 2 },
				    .elem_blocks = LC_ELEM_BLOCKS,
				    .replicas = (int)t->replicas,
				    .log_bytes = (size_t)t->log_kib << 10,
				    .cache_blocks = 64,
				    .timeout_ms = 2000 };
	char paths[3][600], logs[600];
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	uint64_t s = t->seed * 0x9e3779b97f4a7c15ull + c->id + 1, nblocks, until;
	uint8_t buf[LC_BS];
	uint32_t i;
	int ret = 0, r;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	snprintf(logs, sizeof(logs), "%s/logs", c->dir);
	na.log_dir = logs;
	if (c->life == 0 && t->end == LC_CRASH_ALL && c->id == t->crash_node) {
		na.crash_point = t->crash_point;
		na.crash_after = t->crash_after;
	}
	/* Every life: a life after a crash recovers the logs before it serves, and on rdma under
	 * TCG that took longer than the default (the rig's whole-cluster crash trials timed out in
	 * life 2). A bound only: an open that forms returns at once. */
	na.open_timeout_ms = 20000;
	if (c->attempt) {
		/* Without the absent nodes: a wait that must time out is kept short; a forced
		 * open that must succeed gets the long bound (on rdma under TCG, with the machine
		 * busy, forming and recovering took longer than 3 s). */
		na.open_timeout_ms = t->force ? 20000 : 3000;
		na.force_open = t->force;
	}
	r = coh_fabric_open(&fa, &fab);
	if (r)
		LFAIL(c, "fabric open: %s", coh_strerror(r));
	na.fab = fab;
	r = coh_node_open(&na, &n);
	if (c->attempt) {
		/* Without the absent nodes: a node that may hold the only copy of some writer's
		 * acknowledged writes is missing, so the cluster waits (and says so), unless
		 * forced. */
		if (t->force && r)
			LFAIL(c, "forced open without %#x: %s", t->absent, coh_strerror(r));
		if (!t->force && r != -ETIMEDOUT)
			LFAIL(c, "open without %#x: %s, not a wait", t->absent, coh_strerror(r));
		goto out;
	}
	if (r && c->life == 1 && t->damage == LC_TRUNCATE_ELEM) {
		/* A cut element file: refused with a clear error, not opened over lost data. */
		if (r != -ENOSPC)
			LFAIL(c, "open on a cut element file: %s, not -ENOSPC", coh_strerror(r));
		goto out;
	}
	if (r)
		LFAIL(c, "node open: %s", coh_strerror(r));
	if (c->life == 1 && t->damage == LC_TRUNCATE_ELEM)
		LFAIL(c, "opened on a cut element file");
	nblocks = coh_node_nblocks(n);
	if (bench_sbar_wait(&c->sh->start[c->life], LC_WAIT_MS))
		LFAIL(c, "start barrier timed out");
	if (c->life == 1) {
		/* The second life: every block, from every node. */
		r = coh_node_stats(n, &st);
		c->sh->recovered[c->id] = st.recovered_blocks;
		c->sh->stale[c->id] = st.stale_records;
		c->sh->recovery_ns[c->id] = st.last_recovery_ns;
		c->sh->bad[c->id] = st.corrupt_records + st.torn_records;
		for (i = 0; i < nblocks; i++) {
			struct linz_op *op = lc_begin(c, i, 0, false);

			r = coh_node_read(n, i, 1, buf);
			if (r)
				LFAIL(c, "read of block %u: %s", i, coh_strerror(r));
			if (lc_read_done(op, buf))
				LFAIL(c, "block %u torn or corrupt", i);
		}
		if ((r = coh_node_flush(n)))
			LFAIL(c, "flush: %s", coh_strerror(r));
		if (bench_sbar_wait(&c->sh->end[1], LC_WAIT_MS))
			LFAIL(c, "barrier after the reads timed out");
		if (c->id == 0) {
			uint64_t bad = 0;

			r = coh_node_check(n, &bad);
			if (r || bad)
				LFAIL(c, "scrub: %s, %llu stripes with parity not matching",
				      coh_strerror(r), (unsigned long long)bad);
		}
		if (bench_sbar_wait(&c->sh->end[1], LC_WAIT_MS))
			LFAIL(c, "barrier before close timed out");
		goto out;
	}
	for (i = 0; i < t->ops; i++) {
		uint64_t b = lc_rnd(&s) % nblocks, v;
		bool w = lc_rnd(&s) % 10 < 6;
		struct linz_op *op;

		if (w) {
			v = (uint64_t)(c->id + 1) << 32 | (i + 1);
			bench_fill_block(buf, LC_BS, v);
			op = lc_begin(c, b, v, true);
			r = coh_node_write(n, b, 1, buf);
			op->resp = r ? UINT64_MAX : bench_now_ns();
		} else {
			op = lc_begin(c, b, 0, false);
			r = coh_node_read(n, b, 1, buf);
			if (r) {
				c->sh->nops[0][c->id]--;
				continue;
			}
			if (lc_read_done(op, buf))
				LFAIL(c, "block %llu read back torn", (unsigned long long)b);
		}
	}
	if (t->end == LC_CRASH_ALL) {
		/* The parent kills the whole cluster; wait for it, bounded. */
		until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;
		while (bench_now_ns() < until)
			lc_nap();
		LFAIL(c, "not killed");
	}
	/* LC_CLOSE: close in the trial's order. */
	if (bench_sbar_wait(&c->sh->end[0], LC_WAIT_MS))
		LFAIL(c, "barrier before the closes timed out");
	if (t->end == LC_STOP) {
		/* One node stops the whole cluster; then every node's I/O is refused. */
		if (c->id == t->order[0] && (r = coh_node_stop_cluster(n, LC_WAIT_MS)))
			LFAIL(c, "cluster stop: %s", coh_strerror(r));
		if (bench_sbar_wait(&c->sh->end[0], LC_WAIT_MS))
			LFAIL(c, "barrier after the stop timed out");
		if ((r = coh_node_read(n, 0, 1, buf)) != -ESHUTDOWN)
			LFAIL(c, "a read after the cluster stopped: %s", coh_strerror(r));
		if ((r = coh_node_stats(n, &st)) || !st.stopped)
			LFAIL(c, "not stopped");
	}
	for (i = 0; i < t->nodes && t->order[i] != c->id; i++)
		;
	until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;
	while (atomic_load(&c->sh->closed) < i && bench_now_ns() < until)
		lc_nap();
	if (atomic_load(&c->sh->closed) < i)
		LFAIL(c, "my turn to close never came");
	r = coh_node_close(&n);
	atomic_fetch_add(&c->sh->closed, 1);
	if (r)
		LFAIL(c, "close: %s", coh_strerror(r));
out:
	r = coh_node_close(&n);
	if (r && !ret)
		fprintf(stderr, "lifecycle node %u: close: %s\n", c->id, coh_strerror(r));
	coh_fabric_close(&fab);
	return ret;
}

/* lc_life - fork one life's nodes (@only: a subset, for an attempt that must wait); for a crash,
 * kill them all when the trial says. */
static int lc_life(const struct lc_trial *t, struct lc_shared *sh, uint32_t life, const char *dir,
		   const char *cluster, uint32_t only)
{
	pid_t pids[LC_MAXN];
	uint32_t i, j, killed = 0;
	int failed = 0;

	fflush(NULL);
	for (j = 0; j < t->nodes; j++) {
		/* A staggered start goes in reverse order: the lowest node, which leads, last. */
		i = life == 0 && t->start_gap_ms ? t->nodes - 1 - j : j;
		if (!(only >> i & 1)) {
			pids[i] = 0;
			killed |= 1u << i;
			continue;
		}
		if (life == 0 && t->start_gap_ms && j) {
			struct timespec gap = { t->start_gap_ms / 1000,
						(long)(t->start_gap_ms % 1000) * 1000000 };

			nanosleep(&gap, NULL); /* the scenario: a node that starts late */
		}
		pids[i] = fork();
		if (pids[i] == 0) {
			struct lc_child c = { .t = t,
					      .sh = sh,
					      .id = i,
					      .life = life,
					      .dir = dir,
					      .cluster = cluster,
					      .attempt = only != (1u << t->nodes) - 1 };

			alarm(LC_CHILD_S);
			_exit(lc_child_main(&c));
		}
		if (pids[i] < 0) {
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			return 1;
		}
	}
	if (life == 0 && t->end == LC_CRASH_ALL) {
		/* Kill everyone once the crash node died at its point, or once node 0 has done
		 * its share, whichever comes first. */
		uint64_t until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;
		int st;

		while (bench_now_ns() < until) {
			if (t->crash_node < t->nodes &&
			    waitpid(pids[t->crash_node], &st, WNOHANG) == pids[t->crash_node]) {
				struct timespec gap = { t->death_gap_us / 1000000,
							(long)(t->death_gap_us % 1000000) * 1000 };

				killed |= 1u << t->crash_node;
				/* The fault, not a wait for anything: the survivors have seen the
				 * death and are somewhere in their view change (or done). */
				if (t->death_gap_us)
					nanosleep(&gap, NULL);
				break;
			}
			if (sh->nops[0][0] >= t->kill_after_ops)
				break;
			lc_nap();
		}
		for (i = 0; i < t->nodes; i++) {
			if (!(killed >> i & 1))
				kill(pids[i], SIGKILL);
		}
	}
	for (i = 0; i < t->nodes; i++) {
		int st = 0;

		if (killed >> i & 1)
			continue;
		if (bench_wait_child(pids[i], &st, LC_CHILD_S + 10)) {
			failed = 1;
			continue;
		}
		if (life == 0 && t->end == LC_CRASH_ALL) {
			if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
				fprintf(stderr, "lifecycle: life 1 node %u was not killed: %s\n", i,
					sh->why[0][i]);
				failed = 1;
			}
		} else if (WIFSIGNALED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "lifecycle: life %u node %u %s %d: %s\n", life + 1, i,
				WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), sh->why[life][i]);
			failed = 1;
		}
	}
	return failed;
}

/* lc_corrupt_tail - flip bytes in the payload of the record at the tail of the log copy in
 * @fd: the region starts after the file's header page, and its header names the tail (offset
 * 16, little-endian), where a scan begins. */
static int lc_corrupt_tail(int fd)
{
	uint8_t junk[256], hdr[32];
	uint64_t tail = 0;
	size_t i;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(0xa5 ^ i);
	if (pread(fd, hdr, sizeof(hdr), 4096) != (ssize_t)sizeof(hdr))
		return 1;
	for (i = 0; i < 8; i++)
		tail |= (uint64_t)hdr[16 + i] << (8 * i);
	if (!tail)
		return 0; /* never written */
	return pwrite(fd, junk, sizeof(junk), (off_t)(4096 + tail + 64)) != (ssize_t)sizeof(junk);
}

/* lc_damage - what the trial does to the files between the lives. */
static int lc_damage(const struct lc_trial *t, const char *dir)
{
	char path[700];
	struct stat st;
	int fd, ret = 0;

	if (t->damage == LC_CORRUPT_LOGS) {
		uint32_t h, w;

		for (h = 0; h < t->nodes && !ret; h++) {
			for (w = 0; w < t->nodes && !ret; w++) {
				snprintf(path, sizeof(path), "%s/logs/rlog-%u-from-%u", dir, h, w);
				fd = open(path, O_RDWR);
				if (fd < 0)
					continue;
				ret = lc_corrupt_tail(fd);
				close(fd);
			}
		}
		return ret;
	}
	if (t->damage == LC_TRUNCATE_ELEM)
		snprintf(path, sizeof(path), "%s/elem1", dir);
	else
		/* A copy of node 1's log: k = 1 keeps it on node 2 only, k = 2 on nodes 2 and 0. */
		snprintf(path, sizeof(path), "%s/logs/rlog-%u-from-1", dir,
			 t->replicas == 1 ? 2 : 0);
	fd = open(path, O_RDWR);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "lifecycle: cannot damage %s\n", path);
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (t->damage == LC_CORRUPT_LOG) {
		ret = lc_corrupt_tail(fd);
	} else if (ftruncate(fd, st.st_size / 2) < 0) {
		ret = 1;
	}
	close(fd);
	return ret;
}

int lc_run(const struct lc_trial *t, struct lc_result *res)
{
	char dir[] = "/dev/shm/cohort-life-XXXXXX", cluster[2][600], logs[600];
	struct linz_op *all = NULL;
	struct lc_shared *sh;
	size_t nall = 0;
	uint32_t l, i, j;
	int failed = 0;

	memset(res, 0, sizeof(*res));
	if (t->nodes < 3 || t->nodes > LC_MAXN || t->ops > LC_MAXOPS)
		return 1;
	if (!mkdtemp(dir))
		return 1;
	snprintf(logs, sizeof(logs), "%s/logs", dir);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || mkdir(logs, 0700)) {
		bench_remove_tree(dir);
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	for (l = 0; l < 2; l++) {
		bench_sbar_init(&sh->start[l], t->nodes);
		bench_sbar_init(&sh->end[l], t->nodes);
		if (strcmp(conf_provider(), "shm")) {
			if (conf_cluster_new(cluster[l], sizeof(cluster[l]), t->nodes))
				failed = 1;
		} else {
			snprintf(cluster[l], sizeof(cluster[l]), "%s/c%u", dir, l + 1);
		}
	}
	failed = lc_life(t, sh, 0, dir, cluster[0], (1u << t->nodes) - 1);
	if (!failed && t->absent) {
		char c3[600];

		/* A first attempt without the absent nodes, on a cluster address of its own. */
		if (strcmp(conf_provider(), "shm")) {
			if (conf_cluster_new(c3, sizeof(c3), t->nodes))
				failed = 1;
		} else {
			snprintf(c3, sizeof(c3), "%s/c3", dir);
		}
		bench_sbar_init(&sh->start[1], t->nodes);
		if (!failed)
			failed = lc_life(t, sh, 1, dir, c3, (1u << t->nodes) - 1 - t->absent);
		sh->nops[1][0] = sh->nops[1][1] = sh->nops[1][2] = sh->nops[1][3] = sh->nops[1][4] =
		    0;
	}
	if (!failed && t->damage)
		failed = lc_damage(t, dir);
	if (!failed && !(t->absent && t->force))
		failed = lc_life(t, sh, 1, dir, cluster[1], (1u << t->nodes) - 1);
	if (t->damage == LC_TRUNCATE_ELEM) {
		/* Nothing was read: only the refusal is checked. */
		munmap(sh, sizeof(*sh));
		bench_remove_tree(dir);
		return failed;
	}
	all = calloc((size_t)2 * LC_MAXN * (LC_MAXOPS + 64), sizeof(*all));
	for (l = 0; all && l < 2; l++) {
		for (i = 0; i < t->nodes; i++) {
			for (j = 0; j < sh->nops[l][i] && j < LC_MAXOPS + 64; j++) {
				struct linz_op op = sh->ops[l][i][j];

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
		}
	}
	for (i = 0; i < t->nodes; i++) {
		res->recovered_blocks += sh->recovered[i];
		res->stale_records += sh->stale[i];
		res->bad_records += sh->bad[i];
		if (sh->recovery_ns[i] > res->recovery_ns)
			res->recovery_ns = sh->recovery_ns[i];
	}
	if (!all) {
		failed = 1;
	} else if (!failed && linz_check(all, nall, stderr)) {
		fprintf(stderr,
			"lifecycle: the history across the two lives is not linearizable\n");
		failed = 1;
	}
	free(all);
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}

/*
 * The rejoin trial (lc_rejoin_run). Node processes are slots: node id x incarnation. Each runs
 * its workload until the parent says stop, publishing the view it serves; the parent kills and
 * restarts victims round after round, each time waiting (bounded) for the observable effect: the
 * survivors serving a view without the victim, then every node serving a view with it again.
 */
#define RJ_MAXINC 24u
#define RJ_MAXOPS 400u

struct rj_shared {
	struct linz_op ops[LC_MAXN][RJ_MAXINC][RJ_MAXOPS + 64];
	uint32_t nops[LC_MAXN][RJ_MAXINC];
	_Atomic uint32_t view_epoch[LC_MAXN], view_members[LC_MAXN], serving[LC_MAXN];
	_Atomic uint32_t inc[LC_MAXN]; /* the incarnation running now */
	_Atomic uint32_t stop, final_done, final_go;
	_Atomic uint32_t alive; /* nodes in the final phase */
	uint64_t formations[LC_MAXN];
	char why[LC_MAXN][256];
};

struct rj_child {
	const struct lc_rejoin *t;
	struct rj_shared *sh;
	uint32_t id, inc;
	const char *dir, *cluster;
};

#define RJFAIL(c, ...)                                                                             \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "rejoin node %u inc %u: %s\n", (c)->id, (c)->inc,                  \
			(c)->sh->why[(c)->id]);                                                    \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static struct linz_op *rj_begin(struct rj_child *c, uint64_t block, uint64_t value, bool write)
{
	struct linz_op *op = &c->sh->ops[c->id][c->inc][c->sh->nops[c->id][c->inc]];

	op->block = block;
	op->value = value;
	op->is_write = write;
	op->node = c->id * RJ_MAXINC + c->inc;
	op->resp = 0;
	atomic_thread_fence(memory_order_seq_cst);
	op->inv = bench_now_ns();
	c->sh->nops[c->id][c->inc]++;
	return op;
}

static void rj_publish(struct rj_child *c, struct coh_node *n)
{
	struct coh_node_stats st;

	if (coh_node_stats(n, &st))
		return;
	atomic_store(&c->sh->view_members[c->id], st.quorum ? st.members : 0);
	atomic_store(&c->sh->view_epoch[c->id], st.epoch);
	c->sh->formations[c->id] = st.view_changes;
}

static int rj_child_main(struct rj_child *c)
{
	const struct lc_rejoin *t = c->t;
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_attr na = { .nodes = t->nodes,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = LC_ELEM_BLOCKS,
				    .replicas = (int)t->replicas,
				    .log_bytes = 64u << 10,
				    .cache_blocks = 64,
				    .timeout_ms = 1000,
				    .open_timeout_ms = 20000 };
	char paths[3][600], logs[600];
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	uint64_t s = t->seed * 0x9e3779b97f4a7c15ull + c->id * 131 + c->inc + 1, nblocks, until;
	uint8_t buf[LC_BS];
	uint32_t i;
	int ret = 0, r;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	snprintf(logs, sizeof(logs), "%s/logs", c->dir);
	na.log_dir = logs;
	r = coh_fabric_open(&fa, &fab);
	if (r)
		RJFAIL(c, "fabric open: %s", coh_strerror(r));
	na.fab = fab;
	r = coh_node_open(&na, &n);
	if (r)
		RJFAIL(c, "node open: %s", coh_strerror(r));
	nblocks = coh_node_nblocks(n);
	atomic_store(&c->sh->serving[c->id], 1);
	for (i = 0; !atomic_load(&c->sh->stop); i++) {
		uint64_t b = lc_rnd(&s) % nblocks, v;
		bool w = lc_rnd(&s) % 10 < 6;
		struct linz_op *op;

		rj_publish(c, n);
		if (c->sh->nops[c->id][c->inc] >= RJ_MAXOPS) {
			lc_nap();
			continue;
		}
		if (w) {
			v = (uint64_t)(c->id * RJ_MAXINC + c->inc + 1) << 32 | (i + 1);
			bench_fill_block(buf, LC_BS, v);
			op = rj_begin(c, b, v, true);
			r = coh_node_write(n, b, 1, buf);
			op->resp = r ? UINT64_MAX : bench_now_ns();
		} else {
			op = rj_begin(c, b, 0, false);
			r = coh_node_read(n, b, 1, buf);
			if (r) {
				c->sh->nops[c->id][c->inc]--;
				continue;
			}
			if (lc_read_done(op, buf))
				RJFAIL(c, "block %llu read back torn", (unsigned long long)b);
		}
	}
	/* The end: every block from every node, then one scrub. */
	atomic_fetch_add(&c->sh->alive, 1);
	until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;
	while (!atomic_load(&c->sh->final_go) && bench_now_ns() < until)
		lc_nap();
	for (i = 0; i < nblocks; i++) {
		struct linz_op *op = rj_begin(c, i, 0, false);

		r = coh_node_read(n, i, 1, buf);
		if (r)
			RJFAIL(c, "final read of block %u: %s", i, coh_strerror(r));
		if (lc_read_done(op, buf))
			RJFAIL(c, "block %u torn or corrupt", i);
	}
	if ((r = coh_node_flush(n)))
		RJFAIL(c, "flush: %s", coh_strerror(r));
	atomic_fetch_add(&c->sh->final_done, 1);
	until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;
	while (atomic_load(&c->sh->final_done) < t->nodes && bench_now_ns() < until)
		lc_nap();
	if (c->id == 0) {
		uint64_t bad = 0;

		r = coh_node_check(n, &bad);
		if (r || bad)
			RJFAIL(c, "scrub: %s, %llu stripes with parity not matching",
			       coh_strerror(r), (unsigned long long)bad);
	}
	rj_publish(c, n);
	atomic_fetch_add(&c->sh->final_done, 1);
	until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;
	while (atomic_load(&c->sh->final_done) < 2 * t->nodes && bench_now_ns() < until)
		lc_nap();
out:
	r = coh_node_close(&n);
	if (r && !ret)
		fprintf(stderr, "rejoin node %u: close: %s\n", c->id, coh_strerror(r));
	coh_fabric_close(&fab);
	return ret;
}

static pid_t rj_start(const struct lc_rejoin *t, struct rj_shared *sh, uint32_t id, const char *dir,
		      const char *cluster)
{
	uint32_t inc = atomic_load(&sh->inc[id]);
	pid_t pid;

	atomic_store(&sh->serving[id], 0);
	atomic_store(&sh->view_members[id], 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct rj_child c = {
			.t = t, .sh = sh, .id = id, .inc = inc, .dir = dir, .cluster = cluster
		};

		alarm(LC_CHILD_S * 4);
		_exit(rj_child_main(&c));
	}
	return pid;
}

/* rj_wait_view - until every node of @who serves a view whose members are @members. */
static int rj_wait_view(struct rj_shared *sh, uint32_t who, uint32_t members, uint32_t ms)
{
	uint64_t until = bench_now_ns() + (uint64_t)ms * 1000000ull;
	uint32_t p;

	for (;;) {
		bool all = true;

		for (p = 0; p < LC_MAXN; p++) {
			if ((who >> p & 1) && atomic_load(&sh->view_members[p]) != members)
				all = false;
		}
		if (all)
			return 0;
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		lc_nap();
	}
}

int lc_rejoin_run(const struct lc_rejoin *t, struct lc_rejoin_result *res)
{
	char dir[] = "/dev/shm/cohort-rejoin-XXXXXX", cluster[600], logs[600];
	uint32_t all = (1u << t->nodes) - 1, r, i, j, v, w;
	/* Three deaths at once on rdma are three lease expiries before the survivors stop, then
	 * three restarts and a formation of five: under TCG that took 17-36 s in the rig, beside
	 * the 30 s that one death and its rejoin get. */
	uint32_t wait_ms = t->kill_majority ? 3 * LC_WAIT_MS : LC_WAIT_MS;
	struct linz_op *ops = NULL;
	struct rj_shared *sh;
	pid_t pids[LC_MAXN];
	size_t nops = 0;
	int failed = 0, st;

	memset(res, 0, sizeof(*res));
	if (t->nodes < 3 || t->nodes > LC_MAXN ||
	    t->rounds * (t->kill_majority ? 3
			 : t->kill_two	  ? 2
					  : 1) >=
		RJ_MAXINC ||
	    (t->kill_majority && t->nodes != 5))
		return 1;
	if (!mkdtemp(dir))
		return 1;
	snprintf(logs, sizeof(logs), "%s/logs", dir);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || mkdir(logs, 0700)) {
		bench_remove_tree(dir);
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	if (strcmp(conf_provider(), "shm")) {
		if (conf_cluster_new(cluster, sizeof(cluster), t->nodes))
			failed = 1;
	} else {
		snprintf(cluster, sizeof(cluster), "%s/c", dir);
	}
	for (i = 0; i < t->nodes && !failed; i++) {
		pids[i] = rj_start(t, sh, i, dir, cluster);
		if (pids[i] < 0)
			failed = 1;
	}
	if (!failed && rj_wait_view(sh, all, all, LC_WAIT_MS)) {
		fprintf(stderr, "rejoin: the cluster never served with every node\n");
		failed = 1;
	}
	for (r = 0; r < t->rounds && !failed; r++) {
		uint32_t gone, left;
		uint64_t t0;

		v = r % t->nodes;
		w = (v + 1) % t->nodes;
		gone = 1u << v | (t->kill_two || t->kill_majority ? 1u << w : 0);
		if (t->kill_majority)
			gone |= 1u << (w + 1) % t->nodes;
		left = all & ~gone;
		for (i = 0; i < t->nodes; i++) {
			if (!(gone >> i & 1))
				continue;
			kill(pids[i], SIGKILL);
			waitpid(pids[i], &st, 0);
			atomic_fetch_add(&sh->inc[i], 1);
		}
		/* Without a majority the survivors serve nothing (view_members 0). */
		if (!t->restart_in_view_change &&
		    rj_wait_view(sh, left, t->kill_majority ? 0 : left, wait_ms)) {
			fprintf(stderr,
				"rejoin: round %u: the survivors %#x never served without "
				"%#x\n",
				r, left, gone);
			failed = 1;
			break;
		}
		t0 = bench_now_ns();
		for (i = 0; i < t->nodes; i++) {
			if (gone >> i & 1)
				pids[i] = rj_start(t, sh, i, dir, cluster);
		}
		if (rj_wait_view(sh, all, all, wait_ms)) {
			fprintf(stderr, "rejoin: round %u: nodes %#x never admitted again\n", r,
				gone);
			failed = 1;
			break;
		}
		if (bench_now_ns() - t0 > res->rejoin_ns_max)
			res->rejoin_ns_max = bench_now_ns() - t0;
	}
	atomic_store(&sh->stop, 1);
	if (!failed) {
		uint64_t until = bench_now_ns() + (uint64_t)LC_WAIT_MS * 1000000ull;

		while (atomic_load(&sh->alive) < t->nodes && bench_now_ns() < until)
			lc_nap();
	}
	atomic_store(&sh->final_go, 1);
	for (i = 0; i < t->nodes; i++) {
		if (bench_wait_child(pids[i], &st, LC_CHILD_S * 4) ||
		    (!failed && (WIFSIGNALED(st) || WEXITSTATUS(st)))) {
			fprintf(stderr, "rejoin: node %u ended badly: %s\n", i, sh->why[i]);
			failed = 1;
		}
		res->formations += sh->formations[i];
	}
	ops = calloc((size_t)LC_MAXN * RJ_MAXINC * (RJ_MAXOPS + 64), sizeof(*ops));
	for (i = 0; ops && i < t->nodes; i++) {
		for (j = 0; j < RJ_MAXINC; j++) {
			uint32_t k;

			for (k = 0; k < sh->nops[i][j] && k < RJ_MAXOPS + 64; k++) {
				struct linz_op op = sh->ops[i][j][k];

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
				ops[nops++] = op;
			}
		}
	}
	if (!ops) {
		failed = 1;
	} else if (!failed && linz_check(ops, nops, stderr)) {
		fprintf(stderr, "rejoin: the history of every incarnation is not linearizable\n");
		failed = 1;
	}
	free(ops);
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}
