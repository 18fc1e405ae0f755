/*
 * bench_lifecycle.c - the lifecycle rows of cohort-bench replication (issue 13): what a restart
 * and a rejoin cost, on the shm provider, against the data they have to deal with:
 *   recovery_<N>m  a 3-node cluster (k = 1) acknowledges N MiB of distinct blocks, none of them
 *                  destaged (the caches hold them all), and every node is SIGKILLed; a fresh
 *                  cluster then opens on the same files: the time its recovery took, from the
 *                  first state exchanged to the copies zeroed (coh_node_stats.last_recovery_ns,
 *                  the longest over the nodes), for N = 1, 16 and 64. The replay writes every
 *                  block to the RAID-5 group and recomputes every stripe's parity.
 *   rejoin_<N>m    a 3-node cluster; node 2 is SIGKILLed and its log replayed by the others;
 *                  nodes 0 and 1 then hold N MiB acknowledged and not destaged (k = 1: one log
 *                  copy each, on each other); node 2 starts again: from its start to its
 *                  coh_node_open returning, serving. The admission destages everything the
 *                  members hold (that is how the logs get back their k copies: emptied, then
 *                  restarted on their peers of the new view), so the table also gives that as a
 *                  throughput.
 * Each sample is a fresh cluster in a fresh directory under /dev/shm (COHORT_BENCH_LIFE_ITERS
 * samples per row, default 3). COHORT_BENCH_ELEM_DIR puts the element files in a fresh directory
 * under that one instead (a disk file system: every destage's fsync then costs what it does
 * there). What it leaves out: rdma (the rig's lifecycle test covers its behaviour, not its
 * speed), and logs on a disk file system (their msyncs add to every row).
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
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/node.h"

#define BL_BS 4096u
#define BL_NODES 3u
#define BL_ITERS 3u
#define BL_ALARM_S 600u

struct bl_shared {
	struct bench_sbar start, done;
	_Atomic uint32_t written, phase;
	uint64_t recovery_ns[BL_NODES];
	uint64_t open_ns;
	char why[BL_NODES][200];
};

struct bl_ctx {
	struct bl_shared *sh;
	const char *dir, *edir; /* the cluster's directory; the elements' */
	uint32_t me, mib;
	bool life2, rejoin;
};

static void bl_nap(void)
{
	struct timespec t = { 0, 1000000 };

	nanosleep(&t, NULL);
}

/* bl_elem_blocks - element size for @mib of distinct blocks over RAID-5 of 3 (2 data). */
static uint64_t bl_elem_blocks(uint32_t mib)
{
	return (uint64_t)mib * 256 / 2 + 512;
}

static int bl_child(struct bl_ctx *x)
{
	struct coh_fabric_attr fa = { .provider = "shm", .node_id = x->me };
	uint64_t nblocks = (uint64_t)x->mib * 256, i, t0;
	struct coh_node_attr na = { .nodes = BL_NODES,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = bl_elem_blocks(x->mib),
				    .replicas = 1,
				    .log_bytes = ((size_t)x->mib << 20) + (4u << 20),
				    .cache_blocks = (uint32_t)nblocks + 1024,
				    .timeout_ms = 5000,
				    .open_timeout_ms = 300000 };
	char paths[3][600], logs[600], cluster[600];
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	uint8_t buf[BL_BS];
	int ret = 0, r;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%llu", x->edir, (unsigned long long)i);
		na.elem_paths[i] = paths[i];
	}
	snprintf(logs, sizeof(logs), "%s/logs", x->dir);
	/* A rejoin attaches to the running cluster; a second life starts a fabric of its own. */
	snprintf(cluster, sizeof(cluster), "%s/c%u", x->dir, x->life2 && !x->rejoin ? 2 : 1);
	na.log_dir = logs;
	fa.cluster = cluster;
	if ((r = coh_fabric_open(&fa, &fab)))
		goto fail;
	na.fab = fab;
	t0 = bench_now_ns();
	if ((r = coh_node_open(&na, &n)))
		goto fail;
	if (x->rejoin && x->life2) {
		/* The restarted node: its open is the rejoin. */
		x->sh->open_ns = bench_now_ns() - t0;
		atomic_store(&x->sh->phase, 3);
		goto out;
	}
	if (x->life2) {
		if ((r = coh_node_stats(n, &st)))
			goto fail;
		x->sh->recovery_ns[x->me] = st.last_recovery_ns;
		bench_sbar_wait(&x->sh->done, 600000);
		goto out;
	}
	if (bench_sbar_wait(&x->sh->start, 600000)) {
		r = -ETIMEDOUT;
		goto fail;
	}
	if (x->rejoin) {
		/* Node 2 dies first; then 0 and 1 write, half each. */
		if (x->me == 2) {
			kill(getpid(), SIGKILL);
		}
		while (atomic_load(&x->sh->phase) < 1)
			bl_nap();
	}
	if (x->me == 0 || (x->rejoin && x->me == 1)) {
		uint64_t from = x->rejoin ? x->me * nblocks / 2 : 0,
			 to = x->rejoin ? from + nblocks / 2 : nblocks;

		for (i = from; i < to; i++) {
			bench_fill_block(buf, BL_BS, 0xb1ull << 32 | (i + 1));
			if ((r = coh_node_write(n, i, 1, buf)))
				goto fail;
		}
		atomic_fetch_add(&x->sh->written, 1);
	}
	/* The parent kills this process (the whole cluster), or, for a rejoin, waits for the
	 * restarted node to serve. */
	while (atomic_load(&x->sh->phase) < 3)
		bl_nap();
	goto out;
fail:
	snprintf(x->sh->why[x->me], sizeof(x->sh->why[0]), "%s", coh_strerror(r));
	ret = 1;
out:
	coh_node_close(&n);
	coh_fabric_close(&fab);
	return ret;
}

static pid_t bl_fork(struct bl_ctx *x)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		alarm(BL_ALARM_S);
		_exit(bl_child(x));
	}
	return pid;
}

/* bl_sample - one fresh cluster: one sample of recovery_<mib>m or rejoin_<mib>m. */
static int bl_sample(struct bl_shared *sh, uint32_t mib, bool rejoin, uint64_t *ns)
{
	char dir[] = "/dev/shm/cohort-bench-life-XXXXXX", logs[600], edir[600];
	const char *ebase = getenv("COHORT_BENCH_ELEM_DIR");
	pid_t pids[BL_NODES];
	uint32_t i, writers = rejoin ? 2 : 1;
	int st, ret = 0;

	if (!mkdtemp(dir))
		return -errno;
	snprintf(edir, sizeof(edir), "%s", dir);
	if (ebase && *ebase) {
		snprintf(edir, sizeof(edir), "%s/cohort-bench-elems-XXXXXX", ebase);
		if (!mkdtemp(edir)) {
			ret = -errno;
			bench_remove_tree(dir);
			return ret;
		}
	}
	snprintf(logs, sizeof(logs), "%s/logs", dir);
	mkdir(logs, 0700);
	memset(sh, 0, sizeof(*sh));
	bench_sbar_init(&sh->start, BL_NODES);
	bench_sbar_init(&sh->done, BL_NODES);
	for (i = 0; i < BL_NODES; i++) {
		struct bl_ctx x = {
			.sh = sh, .dir = dir, .edir = edir, .me = i, .mib = mib, .rejoin = rejoin
		};

		pids[i] = bl_fork(&x);
	}
	if (rejoin) {
		waitpid(pids[2], &st, 0); /* node 2 killed itself after the start */
		atomic_store(&sh->phase, 1);
	}
	while (atomic_load(&sh->written) < writers && !ret) {
		for (i = 0; i < BL_NODES; i++) {
			if (!(rejoin && i == 2) && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				fprintf(stderr, "cohort-bench lifecycle: node %u ended: %s\n", i,
					sh->why[i]);
				ret = -EIO;
				pids[i] = 0;
			}
		}
		bl_nap();
	}
	if (!ret && rejoin) {
		struct bl_ctx x = { .sh = sh,
				    .dir = dir,
				    .edir = edir,
				    .me = 2,
				    .mib = mib,
				    .rejoin = true,
				    .life2 = true };

		/* node 2's restart is measured inside it, from its start to serving */
		pids[2] = bl_fork(&x);
		waitpid(pids[2], &st, 0);
		pids[2] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			ret = -EIO;
		*ns = sh->open_ns;
		atomic_store(&sh->phase, 3);
	}
	for (i = 0; i < BL_NODES; i++) {
		if (!pids[i])
			continue;
		if (!rejoin)
			kill(pids[i], SIGKILL);
		bench_wait_child(pids[i], &st, BL_ALARM_S);
	}
	if (!ret && !rejoin) {
		/* The second life: its recovery. */
		bench_sbar_init(&sh->done, BL_NODES);
		for (i = 0; i < BL_NODES; i++) {
			struct bl_ctx x = { .sh = sh,
					    .dir = dir,
					    .edir = edir,
					    .me = i,
					    .mib = mib,
					    .life2 = true };

			pids[i] = bl_fork(&x);
		}
		*ns = 0;
		for (i = 0; i < BL_NODES; i++) {
			if (bench_wait_child(pids[i], &st, BL_ALARM_S) || !WIFEXITED(st) ||
			    WEXITSTATUS(st))
				ret = -EIO;
			if (sh->recovery_ns[i] > *ns)
				*ns = sh->recovery_ns[i];
		}
	}
	bench_remove_tree(dir);
	if (strcmp(edir, dir))
		bench_remove_tree(edir);
	return ret;
}

static void bl_row(const struct bench_opts *o, const char *op, uint32_t mib, uint64_t *ns,
		   uint32_t n)
{
	struct bench_row row;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "repl");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", o->provider);
	row.size = (size_t)mib << 20;
	bench_stats(ns, n, &row);
	bench_print_row(&row, o->csv);
	if (!o->csv && row.p50)
		printf("  %s: %.1f MiB/s at p50\n", op, (double)mib / ((double)row.p50 / 1e9));
}

int bench_lifecycle(const struct bench_opts *o)
{
	static const uint32_t sizes[] = { 1, 16, 64 };
	const char *env = getenv("COHORT_BENCH_LIFE_ITERS");
	uint32_t iters = env ? (uint32_t)atoi(env) : BL_ITERS, s, i;
	struct bl_shared *sh;
	uint64_t ns[16];
	char op[24];
	int ret = 0, rj;

	if (strcmp(o->provider, "shm"))
		return 0;
	if (!iters || iters > 16)
		iters = BL_ITERS;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	for (rj = 0; rj < 2 && !ret; rj++) {
		for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]) && !ret; s++) {
			if (rj && sizes[s] > 16)
				continue;
			snprintf(op, sizeof(op), "%s_%um", rj ? "rejoin" : "recovery", sizes[s]);
			if (!bench_op_selected(o, op))
				continue;
			for (i = 0; i < iters && !ret; i++)
				ret = bl_sample(sh, sizes[s], rj, &ns[i]);
			if (!ret)
				bl_row(o, op, sizes[s], ns, iters);
		}
	}
	munmap(sh, sizeof(*sh));
	return ret;
}
