/*
 * bgdestage.c - the background destage scenario of bgdestage.h, on the multi-node harness
 * (engine_harness.c: node processes forked after mapping a shared area, each with its own
 * fabric and node over shared element files, barriers across them). It leaves out crashes: the
 * crash trials (takeover.c) cover the destage steps the background destage goes through.
 *
 * Every wait is bounded: the harness's barriers and alarm, and the wait for the low watermark
 * (BG_WAIT_MS).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bgdestage.h"
#include "cohort/node.h"
#include "engine_harness.h"

#define BG_BS EN_BS
#define BG_ELEM_BLOCKS 512u /* RAID-5 over 3 elements: 1024 blocks */
#define BG_LOG_BYTES (128u << 10)
#define BG_RANGE 256u /* each node's blocks: [id * BG_RANGE, id * BG_RANGE + written) */
#define BG_WAIT_MS 30000

/* The run's setting and where its result goes: set before the fork (the nodes read bg_on), and
 * filled by the judge, in the parent. */
static bool bg_on;
static struct bg_result *bg_out;

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

/* bg_bad_attrs - watermarks out of range are refused before anything is opened; so are a fence
 * mode out of range and COH_FENCE_AGENT without its agent. */
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
	na.destage_high = na.destage_low = 0;
	na.fence = COH_FENCE_AGENT;
	ok = ok && coh_node_open(&na, &n) == -EINVAL && !n;
	na.fence = COH_FENCE_AGENT + 1;
	ok = ok && coh_node_open(&na, &n) == -EINVAL && !n;
	return ok;
}

/* bg_node - one node: write in bursts, read everything back. */
static int bg_node(struct en_child *c)
{
	struct bg_result *res = &c->sh->bg;
	struct coh_node_stats st;
	uint8_t buf[BG_BS], want[BG_BS];
	uint32_t i, burst, total, bad = 0, id = c->id;
	uint64_t lba;
	int ret;

	if (id == 0)
		res->bad_attr_refused = bg_bad_attrs(c->fab);
	if (coh_node_stats(c->n, &st))
		EFAIL(c, "stats");
	/* Four logs' worth, in bursts of 40% of one. With the watermarks at 50% and 25%, a burst
	 * that starts at most half full ends short of full, and after a burst that leaves the log
	 * past the high watermark the writer waits for the low one. */
	burst = (uint32_t)(st.log_size / (BG_BS + 64) * 40 / 100);
	total = (uint32_t)(st.log_size / (BG_BS + 64) * 4);
	if (total > BG_RANGE || !burst)
		EFAIL(c, "log of %llu bytes does not suit the range",
		      (unsigned long long)st.log_size);
	if (en_bar(c, 0))
		EFAIL(c, "barrier 0");
	for (i = 0; i < total; i++) {
		lba = (uint64_t)id * BG_RANGE + i;
		bg_fill(buf, lba);
		ret = coh_node_write(c->n, lba, 1, buf);
		if (ret)
			EFAIL(c, "write %llu: %s", (unsigned long long)lba, coh_strerror(ret));
		if (bg_on && (i + 1) % burst == 0) {
			ret = bg_wait_low(c->n, st.log_size * 50 / 100, st.log_size * 25 / 100);
			if (ret)
				EFAIL(c, "log not brought to its low watermark: %s",
				      coh_strerror(ret));
		}
	}
	if (coh_node_stats(c->n, &st))
		EFAIL(c, "stats");
	res->bg_destages[id] = st.log_bg_destages;
	res->bg_blocks[id] = st.log_bg_blocks;
	res->backpressure[id] = st.log_backpressure;
	res->appends[id] = st.log_appends;
	res->log_size[id] = st.log_size;
	res->blocks_written = total;
	if (en_bar(c, 1))
		EFAIL(c, "barrier 1");
	/* Every node's blocks, through this node: from its cache, a peer's, or the group. */
	for (i = 0; i < c->nodes * BG_RANGE; i++) {
		if (i % BG_RANGE >= total)
			continue;
		ret = coh_node_read(c->n, i, 1, buf);
		if (ret)
			EFAIL(c, "read %u: %s", i, coh_strerror(ret));
		bg_fill(want, i);
		if (memcmp(buf, want, BG_BS))
			bad++;
	}
	__atomic_fetch_add(&res->bad_reads, bad, __ATOMIC_SEQ_CST);
	if (en_bar(c, 2))
		EFAIL(c, "barrier 2");
	ret = coh_node_close(&c->n);
	if (ret)
		EFAIL(c, "close: %s", coh_strerror(ret));
	return 0;
}

/* bg_judge - the counters out of the shared area, before the harness unmaps it. */
static int bg_judge(struct en_shared *sh, uint32_t nodes)
{
	(void)nodes;
	*bg_out = sh->bg;
	return 0;
}

int bg_run(uint32_t nodes, bool on, struct bg_result *res)
{
	const struct en_opts o = { .elem_blocks = BG_ELEM_BLOCKS,
				   .log_bytes = BG_LOG_BYTES,
				   .cache_blocks = 1024,
				   .destage_high = on ? 50 : COH_NODE_DESTAGE_OFF };

	if (nodes < 2 || nodes > BG_MAXN || nodes > EN_MAXN || !res)
		return 1;
	bg_on = on;
	bg_out = res;
	return en_run_opts("bgdestage", nodes, 1, 0, &o, NULL, bg_node, bg_judge);
}
