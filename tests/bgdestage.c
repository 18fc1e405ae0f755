/*
 * bgdestage.c - the background destage scenario of bgdestage.h: node processes forked after
 * mapping a shared area, each with its own fabric (shm, a fresh cluster directory) and node over
 * shared element files, with barriers across them. It leaves out crashes: the crash trials
 * (takeover.c) cover the destage steps the background destage goes through.
 *
 * Every wait is bounded: the barriers (BG_WAIT_MS), the wait for the low watermark, and an alarm
 * in every child (BG_CHILD_S).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bgdestage.h"
#include "cohort/fabric.h"
#include "cohort/node.h"

#define BG_BS 4096u
#define BG_ELEM_BLOCKS 512u /* RAID-5 over 3 elements: 1024 blocks */
#define BG_LOG_BYTES (128u << 10)
#define BG_RANGE 256u /* each node's blocks: [id * BG_RANGE, id * BG_RANGE + written) */
#define BG_WAIT_MS 30000
#define BG_CHILD_S 240

struct bg_shared {
	struct bench_sbar bar[4];
	struct bg_result res;
	char why[BG_MAXN][200];
};

/* bg_fill - the content of block @lba. */
static void bg_fill(uint8_t *b, uint64_t lba)
{
	uint32_t i;

	for (i = 0; i < BG_BS / 8; i++) {
		uint64_t v = lba * 0x9e3779b97f4a7c15ull + i;

		memcpy(b + 8 * i, &v, 8);
	}
}

static uint64_t bg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* bg_wait_low - if the log's use is past @high bytes, wait until it is at most @low (the
 * background destage's doing: this writer asks for nothing), polled every 100 us, at most
 * BG_WAIT_MS. 0 or -ETIMEDOUT. */
static int bg_wait_low(struct coh_node *n, uint64_t high, uint64_t low)
{
	uint64_t deadline = bg_now_ms() + BG_WAIT_MS;
	const struct timespec poll = { 0, 100000 };
	struct coh_node_stats st;

	if (coh_node_stats(n, &st))
		return -EIO;
	if (st.log_used <= high)
		return 0;
	for (;;) {
		if (coh_node_stats(n, &st))
			return -EIO;
		if (st.log_used <= low)
			return 0;
		if (bg_now_ms() >= deadline) {
			fprintf(stderr, "log %llu of %llu bytes used; %llu rounds, %llu blocks\n",
				(unsigned long long)st.log_used, (unsigned long long)st.log_size,
				(unsigned long long)st.log_bg_destages,
				(unsigned long long)st.log_bg_blocks);
			return -ETIMEDOUT;
		}
		nanosleep(&poll, NULL);
	}
}

static int bg_open(uint32_t id, uint32_t nodes, const char *dir, bool on, struct coh_fabric **fab,
		   struct coh_node **n)
{
	struct coh_fabric_attr fa = { .provider = "shm", .node_id = id, .cluster = dir };
	struct coh_node_attr na = { .nodes = nodes,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = BG_ELEM_BLOCKS,
				    .replicas = 1,
				    .log_bytes = BG_LOG_BYTES,
				    .cache_blocks = 1024,
				    .timeout_ms = 5000,
				    .destage_high = on ? 50 : COH_NODE_DESTAGE_OFF };
	char paths[3][600];
	uint32_t i;
	int ret;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", dir, i);
		na.elem_paths[i] = paths[i];
	}
	ret = coh_fabric_open(&fa, fab);
	if (ret)
		return ret;
	na.fab = *fab;
	ret = coh_node_open(&na, n);
	if (ret)
		coh_fabric_close(fab);
	return ret;
}

/* bg_bad_attrs - watermarks out of range are refused before anything is opened. */
static bool bg_bad_attrs(struct coh_fabric *fab)
{
	struct coh_node_attr na = { .fab = fab,
				    .nodes = 2,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_paths = { "/nonexistent/a", "/nonexistent/b",
						    "/nonexistent/c" },
				    .elem_blocks = BG_ELEM_BLOCKS };
	struct coh_node *n = NULL;
	bool ok;

	na.destage_high = 101;
	ok = coh_node_open(&na, &n) == -EINVAL && !n;
	na.destage_high = 40;
	na.destage_low = 40;
	ok = ok && coh_node_open(&na, &n) == -EINVAL && !n;
	return ok;
}

#define BGFAIL(sh, id, ...)                                                                        \
	do {                                                                                       \
		snprintf((sh)->why[id], sizeof((sh)->why[0]), __VA_ARGS__);                        \
		fprintf(stderr, "bgdestage node %u: %s\n", id, (sh)->why[id]);                     \
		return 1;                                                                          \
	} while (0)

/* bg_child - one node: write in bursts, read everything back. */
static int bg_child(struct bg_shared *sh, uint32_t id, uint32_t nodes, const char *dir, bool on)
{
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	uint8_t buf[BG_BS], want[BG_BS];
	uint32_t i, burst, total, bad = 0;
	uint64_t lba;
	int ret;

	ret = bg_open(id, nodes, dir, on, &fab, &n);
	if (ret)
		BGFAIL(sh, id, "open: %s", coh_strerror(ret));
	if (id == 0)
		sh->res.bad_attr_refused = bg_bad_attrs(fab);
	if (coh_node_stats(n, &st))
		BGFAIL(sh, id, "stats");
	/* Four logs' worth, in bursts of 40% of one. With the watermarks at 50% and 25%, a burst
	 * that starts at most half full ends short of full, and after a burst that leaves the log
	 * past the high watermark the writer waits for the low one. */
	burst = (uint32_t)(st.log_size / (BG_BS + 64) * 40 / 100);
	total = (uint32_t)(st.log_size / (BG_BS + 64) * 4);
	if (total > BG_RANGE || !burst)
		BGFAIL(sh, id, "log of %llu bytes does not suit the range",
		       (unsigned long long)st.log_size);
	if (bench_sbar_wait(&sh->bar[0], BG_WAIT_MS))
		BGFAIL(sh, id, "barrier 0");
	for (i = 0; i < total; i++) {
		lba = (uint64_t)id * BG_RANGE + i;
		bg_fill(buf, lba);
		ret = coh_node_write(n, lba, 1, buf);
		if (ret)
			BGFAIL(sh, id, "write %llu: %s", (unsigned long long)lba,
			       coh_strerror(ret));
		if (on && (i + 1) % burst == 0) {
			ret = bg_wait_low(n, st.log_size * 50 / 100, st.log_size * 25 / 100);
			if (ret)
				BGFAIL(sh, id, "log not brought to its low watermark: %s",
				       coh_strerror(ret));
		}
	}
	if (coh_node_stats(n, &st))
		BGFAIL(sh, id, "stats");
	sh->res.bg_destages[id] = st.log_bg_destages;
	sh->res.bg_blocks[id] = st.log_bg_blocks;
	sh->res.backpressure[id] = st.log_backpressure;
	sh->res.appends[id] = st.log_appends;
	sh->res.log_size[id] = st.log_size;
	sh->res.blocks_written = total;
	if (bench_sbar_wait(&sh->bar[1], BG_WAIT_MS))
		BGFAIL(sh, id, "barrier 1");
	/* Every node's blocks, through this node: from its cache, a peer's, or the group. */
	for (i = 0; i < nodes * BG_RANGE; i++) {
		if (i % BG_RANGE >= total)
			continue;
		ret = coh_node_read(n, i, 1, buf);
		if (ret)
			BGFAIL(sh, id, "read %u: %s", i, coh_strerror(ret));
		bg_fill(want, i);
		if (memcmp(buf, want, BG_BS))
			bad++;
	}
	__atomic_fetch_add(&sh->res.bad_reads, bad, __ATOMIC_SEQ_CST);
	if (bench_sbar_wait(&sh->bar[2], BG_WAIT_MS))
		BGFAIL(sh, id, "barrier 2");
	ret = coh_node_close(&n);
	coh_fabric_close(&fab);
	if (ret)
		BGFAIL(sh, id, "close: %s", coh_strerror(ret));
	return 0;
}

int bg_run(uint32_t nodes, bool on, struct bg_result *res)
{
	char dir[] = "/dev/shm/cohort-bgdestage-XXXXXX";
	struct bg_shared *sh;
	pid_t pids[BG_MAXN];
	int failed = 0;
	uint32_t i;

	if (nodes < 2 || nodes > BG_MAXN || !res || !mkdtemp(dir))
		return 1;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_remove_tree(dir);
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	for (i = 0; i < 4; i++)
		bench_sbar_init(&sh->bar[i], nodes);
	fflush(NULL);
	for (i = 0; i < nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			alarm(BG_CHILD_S);
			_exit(bg_child(sh, i, nodes, dir, on));
		}
		if (pids[i] < 0) {
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			failed = 1;
			goto out_unmap;
		}
	}
	for (i = 0; i < nodes; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, BG_CHILD_S + 10) || WIFSIGNALED(st) ||
		    WEXITSTATUS(st)) {
			fprintf(stderr, "bgdestage: node %u ended badly: %s\n", i, sh->why[i]);
			failed = 1;
		}
	}
	if (!failed)
		*res = sh->res;
out_unmap:
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}
