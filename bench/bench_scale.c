/*
 * bench_scale.c - the volume-size rows of cohort-bench engine (issue 14, "cost independent of
 * volume size"): what opening, a view change and a restart cost against the size of the volume,
 * for volumes of 1 GiB, 64 GiB and 1 TiB (RAID-5 over 3 sparse element files in /dev/shm, 64 KiB
 * resources, k = 1):
 *   open_<S>         a fresh 3-node cluster: node 0's coh_node_open, from the call to serving
 *   view_change_<S>  each node writes 32 blocks, node 2 is SIGKILLed: the survivors' view change
 *                    (coh_node_stats.last_view_ns, the longest of the two)
 *   restart_<S>      then nodes 0 and 1 are SIGKILLed too (their writes in the logs), and all
 *                    three start again on the same files: node 0's coh_node_open, recovery
 *                    included; node 0 then reads the 96 blocks back, and the row fails unless
 *                    each holds its acknowledged write
 * The table also prints node 0's resident memory after open and after the view change, and its
 * proportional share of it (Pss: the nodes map each other's shm regions, and Rss counts those
 * in full in each): what the per-resource state costs before any data is cached, and what a
 * view change adds. One sample per row (COHORT_BENCH_SCALE_ITERS for more).
 * What it leaves out: rdma, and data: the volume is sparse, only 96 blocks are ever written.
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

#define BS_BS 4096u
#define BS_NODES 3u
#define BS_CHUNK 8u /* RAID-5 of 3: stripes of 16 blocks, 64 KiB resources */
#define BS_ALARM_S 900u
#define BS_WAIT_MS 600000
#define BS_WRITES                                                                                  \
	32u /* acknowledged writes per node in the first life, checked after the restart */

struct bs_shared {
	struct bench_sbar start, written, done;
	_Atomic uint32_t phase; /* 1: the survivors measured the view change */
	uint64_t open_ns[BS_NODES], view_ns[BS_NODES], rss[BS_NODES], pss[BS_NODES];
	uint64_t rss_view[BS_NODES], pss_view[BS_NODES]; /* after the view change */
	char why[BS_NODES][200];
};

struct bs_ctx {
	struct bs_shared *sh;
	const char *dir;
	uint32_t me;
	uint64_t gib;
	bool life2;
};

/* bs_mem - this process's resident memory, and its proportional share (Pss: a page mapped by
 * n processes counts 1/n: the nodes map each other's shm regions, which Rss counts in full in
 * every one of them). Bytes; 0 when /proc says nothing. */
static void bs_mem(uint64_t *rss, uint64_t *pss)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	unsigned long kb;

	*rss = *pss = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Rss: %lu kB", &kb) == 1)
			*rss = (uint64_t)kb << 10;
		else if (sscanf(line, "Pss: %lu kB", &kb) == 1)
			*pss = (uint64_t)kb << 10;
	}
	fclose(f);
}

/* bs_block - the @i-th block written (of BS_NODES * BS_WRITES), spread evenly over the volume. */
static uint64_t bs_block(struct coh_node *n, uint64_t i)
{
	return i * (coh_node_nblocks(n) / (BS_NODES * BS_WRITES));
}

static int bs_child(struct bs_ctx *x)
{
	struct coh_fabric_attr fa = { .provider = "shm", .node_id = x->me };
	struct coh_node_attr na = {
		.nodes = BS_NODES,
		.raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = BS_CHUNK },
		.elem_blocks = (x->gib << 30) / 2 / BS_BS,
		.replicas = 1,
		.timeout_ms = 10000,
		.open_timeout_ms = BS_WAIT_MS
	};
	char paths[3][600], logs[600], cluster[600];
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	uint8_t buf[BS_BS];
	uint64_t t0, i;
	int ret = 0, r;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%llu", x->dir, (unsigned long long)i);
		na.elem_paths[i] = paths[i];
	}
	snprintf(logs, sizeof(logs), "%s/logs", x->dir);
	snprintf(cluster, sizeof(cluster), "%s/c%u", x->dir, x->life2 ? 2 : 1);
	na.log_dir = logs;
	fa.cluster = cluster;
	if ((r = coh_fabric_open(&fa, &fab)))
		goto fail;
	na.fab = fab;
	t0 = bench_now_ns();
	if ((r = coh_node_open(&na, &n)))
		goto fail;
	x->sh->open_ns[x->me] = bench_now_ns() - t0;
	bs_mem(&x->sh->rss[x->me], &x->sh->pss[x->me]);
	if (x->life2) {
		/* Every acknowledged write of the first life is there (node 0 checks). */
		for (i = 0; x->me == 0 && i < BS_NODES * BS_WRITES; i++) {
			uint64_t v = 0,
				 want = 0x5cull << 40 | (i / BS_WRITES) << 32 | (i % BS_WRITES + 1);

			if ((r = coh_node_read(n, bs_block(n, i), 1, buf)))
				goto fail;
			if (bench_block_value(buf, BS_BS, &v) || v != want) {
				snprintf(x->sh->why[x->me], sizeof(x->sh->why[0]),
					 "block %llu after the restart: %#llx, acknowledged %#llx",
					 (unsigned long long)bs_block(n, i), (unsigned long long)v,
					 (unsigned long long)want);
				ret = 1;
				goto out;
			}
		}
		bench_sbar_wait(&x->sh->done, BS_WAIT_MS);
		goto out;
	}
	if (bench_sbar_wait(&x->sh->start, BS_WAIT_MS)) {
		r = -ETIMEDOUT;
		goto fail;
	}
	/* Writes spread over the volume, so that each log has records and the view change has
	 * resources of the dead node's to take over. */
	for (i = 0; i < BS_WRITES; i++) {
		bench_fill_block(buf, BS_BS, 0x5cull << 40 | (uint64_t)x->me << 32 | (i + 1));
		if ((r = coh_node_write(n, bs_block(n, x->me * BS_WRITES + i), 1, buf)))
			goto fail;
	}
	if (bench_sbar_wait(&x->sh->written, BS_WAIT_MS)) {
		r = -ETIMEDOUT;
		goto fail;
	}
	if (x->me == 2)
		kill(getpid(), SIGKILL);
	if ((r = coh_node_wait_epoch(n, 2, BS_WAIT_MS)))
		goto fail;
	if ((r = coh_node_stats(n, &st)))
		goto fail;
	x->sh->view_ns[x->me] = st.last_view_ns;
	bs_mem(&x->sh->rss_view[x->me], &x->sh->pss_view[x->me]);
	atomic_fetch_add(&x->sh->phase, 1);
	/* The parent SIGKILLs this node now: a whole-cluster crash. */
	for (;;)
		pause();
fail:
	snprintf(x->sh->why[x->me], sizeof(x->sh->why[0]), "%s", coh_strerror(r));
	ret = 1;
out:
	coh_node_close(&n);
	coh_fabric_close(&fab);
	return ret;
}

static pid_t bs_fork(struct bs_ctx *x)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		alarm(BS_ALARM_S);
		_exit(bs_child(x));
	}
	return pid;
}

/* bs_sample - one cluster's two lives at @gib GiB: its open, view change and restart times. */
static int bs_sample(struct bs_shared *sh, uint64_t gib, uint64_t *open_ns, uint64_t *view_ns,
		     uint64_t *restart_ns, uint64_t mem[4])
{
	char dir[] = "/dev/shm/cohort-bench-scale-XXXXXX", logs[600];
	uint64_t until;
	pid_t pids[BS_NODES];
	uint32_t i;
	int st, ret = 0;

	if (!mkdtemp(dir))
		return -errno;
	snprintf(logs, sizeof(logs), "%s/logs", dir);
	mkdir(logs, 0700);
	memset(sh, 0, sizeof(*sh));
	bench_sbar_init(&sh->start, BS_NODES);
	bench_sbar_init(&sh->written, BS_NODES);
	for (i = 0; i < BS_NODES; i++) {
		struct bs_ctx x = { .sh = sh, .dir = dir, .me = i, .gib = gib };

		pids[i] = bs_fork(&x);
	}
	until = bench_now_ns() + (uint64_t)BS_WAIT_MS * 1000000ull;
	while (atomic_load(&sh->phase) < 2 && bench_now_ns() < until) {
		for (i = 0; i < 2; i++) {
			if (pids[i] && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				fprintf(stderr, "cohort-bench scale: node %u ended: %s\n", i,
					sh->why[i]);
				pids[i] = 0;
				ret = -EIO;
			}
		}
		if (ret)
			break;
		struct timespec t = { 0, 5000000 };

		nanosleep(&t, NULL);
	}
	if (!ret && atomic_load(&sh->phase) < 2)
		ret = -ETIMEDOUT;
	*open_ns = sh->open_ns[0];
	mem[0] = sh->rss[0];
	mem[1] = sh->pss[0];
	mem[2] = sh->rss_view[0];
	mem[3] = sh->pss_view[0];
	*view_ns = sh->view_ns[0] > sh->view_ns[1] ? sh->view_ns[0] : sh->view_ns[1];
	for (i = 0; i < BS_NODES; i++) {
		if (pids[i]) {
			kill(pids[i], SIGKILL);
			bench_wait_child(pids[i], &st, BS_ALARM_S);
		}
	}
	if (!ret) {
		bench_sbar_init(&sh->done, BS_NODES);
		memset(sh->open_ns, 0, sizeof(sh->open_ns));
		for (i = 0; i < BS_NODES; i++) {
			struct bs_ctx x = {
				.sh = sh, .dir = dir, .me = i, .gib = gib, .life2 = true
			};

			pids[i] = bs_fork(&x);
		}
		for (i = 0; i < BS_NODES; i++) {
			if (bench_wait_child(pids[i], &st, BS_ALARM_S) || !WIFEXITED(st) ||
			    WEXITSTATUS(st)) {
				fprintf(stderr, "cohort-bench scale: restart of node %u: %s\n", i,
					sh->why[i][0] ? sh->why[i] : "died");
				ret = -EIO;
			}
		}
		*restart_ns = sh->open_ns[0];
	}
	bench_remove_tree(dir);
	return ret;
}

static void bs_row(const struct bench_opts *o, const char *op, uint64_t gib, uint64_t *ns,
		   uint32_t n)
{
	struct bench_row row;

	memset(&row, 0, sizeof(row));
	snprintf(row.suite, sizeof(row.suite), "engine");
	snprintf(row.op, sizeof(row.op), "%s", op);
	snprintf(row.provider, sizeof(row.provider), "%s", o->provider);
	row.size = (size_t)(gib << 30);
	bench_stats(ns, n, &row);
	bench_print_row(&row, o->csv);
	fflush(stdout);
}

int bench_scale(const struct bench_opts *o)
{
	static const uint64_t sizes[] = { 1, 64, 1024 };
	static const char *const names[] = { "1g", "64g", "1t" };
	const char *env = getenv("COHORT_BENCH_SCALE_ITERS");
	uint32_t iters = env ? (uint32_t)atoi(env) : 1, s, i;
	uint64_t open_ns[8], view_ns[8], restart_ns[8], mem[8][4];
	struct bs_shared *sh;
	char op[3][24];
	int ret = 0;

	if (strcmp(o->provider, "shm"))
		return 0;
	if (!iters || iters > 8)
		iters = 1;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]) && !ret; s++) {
		snprintf(op[0], sizeof(op[0]), "open_%s", names[s]);
		snprintf(op[1], sizeof(op[1]), "view_change_%s", names[s]);
		snprintf(op[2], sizeof(op[2]), "restart_%s", names[s]);
		if (!bench_op_selected(o, op[0]) && !bench_op_selected(o, op[1]) &&
		    !bench_op_selected(o, op[2]))
			continue;
		for (i = 0; i < iters && !ret; i++)
			ret = bs_sample(sh, sizes[s], &open_ns[i], &view_ns[i], &restart_ns[i],
					mem[i]);
		if (ret) {
			fprintf(stderr, "cohort-bench scale: %s: %s\n", names[s],
				coh_strerror(ret));
			break;
		}
		bs_row(o, op[0], sizes[s], open_ns, iters);
		bs_row(o, op[1], sizes[s], view_ns, iters);
		bs_row(o, op[2], sizes[s], restart_ns, iters);
		fprintf(o->csv ? stderr : stdout,
			"%s%s: node 0 resident after open %.0f MiB (its share %.0f MiB), after the "
			"view change %.0f MiB (%.0f MiB)\n",
			o->csv ? "" : "  ", names[s], (double)mem[0][0] / (1 << 20),
			(double)mem[0][1] / (1 << 20), (double)mem[0][2] / (1 << 20),
			(double)mem[0][3] / (1 << 20));
	}
	munmap(sh, sizeof(*sh));
	return ret;
}
