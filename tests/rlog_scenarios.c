/*
 * rlog_scenarios.c - the log writer against real peers (conf_run: node processes over the
 * provider under test). Node 0 writes a log with k = 2 copies, on nodes 1 and 2.
 *
 * Partial append: node 2 dies, and node 0's next append reaches node 1 only. The write is not
 * acknowledged (one copy of two), and no destage will ever retire it (the cache never installed
 * it), so the writer must retire the copy that landed: node 1's scan must not find it live, or a
 * survivor's replay after a second death would write it over newer data. The record appended
 * before the death stays live. Its ABANDONED mark missed node 2, so it is pending until marked
 * again on the peers the writer has then. Then a retirement that fails (the writer's only peer is the dead
 * node 2) is done again once the writer's peer is node 1: it must reach node 1. Taken as done at
 * the first try, the second would find nothing to retire and succeed, and the lock could move
 * on with the record live on node 1 (the lost write of a whole-cluster crash trial).
 *
 * Rewrite: node 0 writes a log with k = 1 on node 1 and rewrites blocks. Node 1 scans its copy
 * after each phase: a rewrite leaves the superseded record live on the peer, and the scan keeps
 * only the newest; a destage retires the newest and everything it superseded; a corrupt newest
 * record brings back the older one only where the block was not destaged.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "engine/rlog.h"
#include "rlog_scenarios.h"

#define LOG_LEN (256u * 1024u)
#define LOG_CHANNEL 7u
#define BSIZE 4096u
#define LBA_KEPT 7u
#define LBA_FAILED 9u
#define LBA_RETRIED 11u

struct live_seen {
	uint32_t kept, failed, retried;
};

static int count_live(void *arg, const struct rlog_rec *r, const uint8_t *payload)
{
	struct live_seen *s = arg;

	(void)payload;
	if (r->type == RLOG_DATA && r->addr == LBA_KEPT)
		s->kept++;
	if (r->type == RLOG_DATA && r->addr == LBA_FAILED)
		s->failed++;
	if (r->type == RLOG_DATA && r->addr == LBA_RETRIED)
		s->retried++;
	return 0;
}

/* The harness's final barrier needs every node: the survivors finish by themselves. */
static void forget_node_2(struct conf_node *cn)
{
	coh_ep_delete(&cn->ep[2]);
	coh_ep_delete(&cn->ctl[2]);
	cn->n = 2;
}

static int log_ep(struct conf_node *cn, uint32_t peer, struct coh_cq *cq, struct coh_ep **ep)
{
	struct coh_ep_attr a = { .peer = peer,
				 .channel = LOG_CHANNEL,
				 .send_cq = cq,
				 .recv_cq = cq,
				 .max_send_wr = 64,
				 .max_recv_wr = 1,
				 .timeout_ms = CONF_TIMEOUT_MS };

	return coh_ep_new(cn->fab, &a, ep);
}

static int writer_node(struct conf_node *cn, struct coh_mr_desc *descs)
{
	static uint8_t block[BSIZE];
	struct rlog_writer w;
	char msg[8];
	uint32_t len = sizeof(msg);
	struct coh_event ev;
	uint32_t p;
	int ret;

	CONF_CHECK(rlog_writer_init(&w, cn->fab, BSIZE, LOG_LEN, 2000, NULL, NULL, NULL) == 0,
		   "writer init");
	for (p = 1; p <= 2; p++) {
		CONF_CHECK(log_ep(cn, p, w.cq, &w.ep[p]) == 0, "log endpoint to %u", p);
		CONF_CHECK(coh_rmr_import(w.ep[p], &descs[p], &w.rmr[p]) == 0, "import %u", p);
	}
	CONF_CHECK(rlog_writer_reset(&w, 1u << 1 | 1u << 2, 2, 1) == 0, "reset");
	memset(block, 0xa5, sizeof(block));
	CONF_CHECK(rlog_append_data(&w, LBA_KEPT, 1, block, NULL) == 0, "append with both peers");
	CONF_CHECK(rlog_append_data(&w, LBA_RETRIED, 1, block, NULL) == 0, "second append");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: appended");
	/* Node 2 dies now; the append below must see it gone. */
	CONF_CHECK(coh_fabric_event_get(cn->fab, &ev, CONF_TIMEOUT_MS) == 0, "no event");
	CONF_CHECK(ev.type == COH_EVENT_PEER_DOWN && ev.peer == 2, "event %u for %u", ev.type,
		   ev.peer);
	memset(block, 0x5a, sizeof(block));
	ret = rlog_append_data(&w, LBA_FAILED, 1, block, NULL);
	CONF_CHECK(ret != 0, "an append with one copy of two succeeded");
	/* Its ABANDONED mark could not reach node 2: pending (the engine hands no lock on) until
	 * marked again where the writer's peers are now. */
	CONF_CHECK(rlog_abandon_pending(&w), "a mark that missed a peer is not pending");
	w.peers = 1u << 1;
	ret = rlog_abandon_retry(&w);
	CONF_CHECK(ret == 0 && !rlog_abandon_pending(&w), "the mark again: %s", coh_strerror(ret));
	/* A retirement that reaches no peer fails, and is done again where it can land. */
	w.peers = 1u << 2;
	CONF_CHECK(rlog_retire(&w, LBA_RETRIED, 1, UINT64_MAX) != 0,
		   "a retirement on a dead peer succeeded");
	w.peers = 1u << 1;
	ret = rlog_retire(&w, LBA_RETRIED, 1, UINT64_MAX);
	CONF_CHECK(ret == 0, "the retirement again: %s", coh_strerror(ret));
	CONF_CHECK(conf_send(cn, 1, "scan", 4) == 0, "tell node 1");
	CONF_CHECK(conf_recv(cn, 1, msg, &len, CONF_TIMEOUT_MS) == 0, "node 1 did not scan");
	for (p = 1; p <= 2; p++) {
		coh_rmr_delete(&w.rmr[p]);
		coh_ep_delete(&w.ep[p]);
	}
	rlog_writer_fini(&w);
	forget_node_2(cn);
	return 0;
}

int sc_rlog_partial_append(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct rlog_scan_stats st;
	struct live_seen seen = { 0 };
	struct coh_cq *cq = NULL;
	struct coh_ep *ep = NULL;
	struct coh_mr *mr;
	char msg[8];
	uint32_t len = sizeof(msg);

	if (cn->n != 3)
		return 1;
	CONF_CHECK(coh_mr_new(cn->fab, LOG_LEN,
			      COH_ACCESS_LOCAL_WRITE | COH_ACCESS_REMOTE_WRITE |
				  COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_FLUSH,
			      &mr) == 0,
		   "region");
	memset(coh_mr_addr(mr), 0, LOG_LEN);
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	if (cn->id == 0) {
		int ret = writer_node(cn, descs);

		coh_mr_delete(&mr);
		return ret;
	}
	CONF_CHECK(coh_cq_new(cn->fab, 128, &cq) == 0, "cq");
	CONF_CHECK(log_ep(cn, 0, cq, &ep) == 0, "log endpoint to 0");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: appended");
	if (cn->id == 2)
		raise(SIGKILL);
	CONF_CHECK(conf_recv(cn, 0, msg, &len, CONF_TIMEOUT_MS) == 0, "no word from node 0");
	CONF_CHECK(rlog_scan(coh_mr_addr(mr), LOG_LEN, 0, count_live, &seen, &st) == 0, "scan");
	CONF_CHECK(seen.kept == 1, "the acknowledged record is live %u times", seen.kept);
	CONF_CHECK(seen.failed == 0, "the record of the failed append is still live here");
	CONF_CHECK(seen.retried == 0, "the record whose retirement failed once is still live here");
	CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "tell node 0");
	coh_ep_delete(&ep);
	coh_cq_delete(&cq);
	coh_mr_delete(&mr);
	forget_node_2(cn);
	return 0;
}

struct rw_seen {
	uint32_t count[16];
	uint8_t fill[16];
};

static int rw_visit(void *arg, const struct rlog_rec *r, const uint8_t *payload)
{
	struct rw_seen *s = arg;

	if (r->addr < 16) {
		s->count[r->addr]++;
		s->fill[r->addr] = payload[0];
	}
	return 0;
}

/* rw_await_scan - the peer's side of a phase: node 0's word, then a scan of the region it writes
 * (what a recovery would replay), into @seen and @st. */
static int rw_await_scan(struct conf_node *cn, const uint8_t *reg, struct rw_seen *seen,
			 struct rlog_scan_stats *st)
{
	char msg[8];
	uint32_t len = sizeof(msg);

	CONF_CHECK(conf_recv(cn, 0, msg, &len, CONF_TIMEOUT_MS) == 0, "no word from node 0");
	memset(seen, 0, sizeof(*seen));
	CONF_CHECK(rlog_scan(reg, LOG_LEN, 0, rw_visit, seen, st) == 0, "scan");
	return 0;
}

static int rw_append(struct rlog_writer *w, uint64_t lba, uint8_t fill)
{
	static uint8_t block[BSIZE];

	memset(block, fill, sizeof(block));
	return rlog_append_data(w, lba, 1, block, NULL);
}

/* rw_corrupt - flip a payload byte of the newest record of @lba in @region. */
static bool rw_corrupt(uint8_t *region, uint64_t lba)
{
	uint64_t off, best = 0, at = 0;
	struct rlog_rec r;

	for (off = RLOG_RING; off + RLOG_ALIGN <= LOG_LEN; off += RLOG_ALIGN) {
		if (!rlog_rec_decode(region + off, LOG_LEN - off, &r) && r.type == RLOG_DATA &&
		    r.addr == lba && r.lsn > best) {
			best = r.lsn;
			at = off;
		}
	}
	if (!best)
		return false;
	region[at + RLOG_ALIGN + 100] ^= 0x10;
	return true;
}

static int rw_phase(struct conf_node *cn, uint32_t to, const char *what)
{
	char msg[8];
	uint32_t len = sizeof(msg);

	CONF_CHECK(conf_send(cn, to, "next", 4) == 0, "%s: tell node %u", what, to);
	CONF_CHECK(conf_recv(cn, to, msg, &len, CONF_TIMEOUT_MS) == 0, "%s: no word from %u", what,
		   to);
	return 0;
}

/* rw_region - this node's zeroed log region (it hosts node 0's log), exchanged with the others. */
static int rw_region(struct conf_node *cn, struct coh_mr **mr, struct coh_mr_desc *descs)
{
	CONF_CHECK(coh_mr_new(cn->fab, LOG_LEN,
			      COH_ACCESS_LOCAL_WRITE | COH_ACCESS_REMOTE_WRITE |
				  COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_FLUSH,
			      mr) == 0,
		   "region");
	memset(coh_mr_addr(*mr), 0, LOG_LEN);
	CONF_CHECK(conf_exchange(cn, *mr, descs) == 0, "exchange");
	return 0;
}

/* rw_writer_up - node 0's log writer, k = 1, its copy on node 1; rw_writer_down undoes it and
 * deletes @mr. */
static int rw_writer_up(struct conf_node *cn, struct rlog_writer *w, struct coh_mr_desc *descs)
{
	CONF_CHECK(rlog_writer_init(w, cn->fab, BSIZE, LOG_LEN, 2000, NULL, NULL, NULL) == 0,
		   "writer init");
	CONF_CHECK(log_ep(cn, 1, w->cq, &w->ep[1]) == 0, "log endpoint to 1");
	CONF_CHECK(coh_rmr_import(w->ep[1], &descs[1], &w->rmr[1]) == 0, "import");
	CONF_CHECK(rlog_writer_reset(w, 1u << 1, 1, 1) == 0, "reset");
	return 0;
}

static void rw_writer_down(struct rlog_writer *w, struct coh_mr **mr)
{
	coh_rmr_delete(&w->rmr[1]);
	coh_ep_delete(&w->ep[1]);
	rlog_writer_fini(w);
	coh_mr_delete(mr);
}

/*
 * A write replicated but not installed (the cache could not take it: rlog_abandon_write), in
 * the order the cache makes it happen. Node 0 writes block 5 (0x11, acknowledged), then blocks
 * 5 and 6 in one write (0x22). Before 0x22 goes in, another lane evicts block 5 from its slot:
 * 0x11 is written back to the store, and that destage's retirement leaves the records alone
 * (0x22's is newer). Then 0x22 cannot go in (the other lane's dirty block in the slot) and is
 * undone: the peer's copy must replay nothing for blocks 5 and 6. 0x11 live again there would
 * stay live with nothing dirty to destage it, and a replay after node 0's death would put it
 * over a later write of another node.
 */
int sc_rlog_write_undo(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct rlog_scan_stats st;
	struct coh_cq *cq = NULL;
	struct coh_ep *ep = NULL;
	struct coh_mr *mr;
	struct rw_seen seen;
	uint8_t *reg;

	if (cn->n != 2)
		return 1;
	CONF_CHECK(rw_region(cn, &mr, descs) == 0, "region");
	reg = coh_mr_addr(mr);
	if (cn->id == 0) {
		static uint8_t two[2 * BSIZE];
		struct rlog_writer w;
		uint64_t last = 0;

		CONF_CHECK(rw_writer_up(cn, &w, descs) == 0, "writer up");
		static uint8_t one[BSIZE];
		uint64_t first = 0;

		memset(one, 0x11, sizeof(one));
		CONF_CHECK(rw_append(&w, 4, 0x01) == 0 &&
			       rlog_append_data(&w, 5, 1, one, &first) == 0,
			   "4, 5");
		memset(two, 0x22, sizeof(two));
		CONF_CHECK(rlog_append_data(&w, 5, 2, two, &last) == 0 && last, "5-6");
		CONF_CHECK(w.superseded == 1 && rlog_live_count(&w) == 3,
			   "superseded %llu live %llu", (unsigned long long)w.superseded,
			   (unsigned long long)rlog_live_count(&w));
		CONF_CHECK(rlog_retire(&w, 5, 1, first) == 0 && rlog_live_count(&w) == 3,
			   "the eviction of 0x11 retired 0x22's record");
		CONF_CHECK(rlog_abandon_write(&w, 5, 2, last) == 0, "undo");
		CONF_CHECK(
		    w.superseded == 0 && rlog_live_count(&w) == 1 && !rlog_abandon_pending(&w),
		    "after the undo: superseded %llu live %llu", (unsigned long long)w.superseded,
		    (unsigned long long)rlog_live_count(&w));
		CONF_CHECK(rw_phase(cn, 1, "undo") == 0, "phase 1");
		rw_writer_down(&w, &mr);
		return 0;
	}
	CONF_CHECK(coh_cq_new(cn->fab, 128, &cq) == 0, "cq");
	CONF_CHECK(log_ep(cn, 0, cq, &ep) == 0, "log endpoint to 0");
	CONF_CHECK(rw_await_scan(cn, reg, &seen, &st) == 0, "scan 1");
	CONF_CHECK(seen.count[5] == 0,
		   "block 5 replayed %u times, last %#x (want none: 0x11 is in the store, and its "
		   "record would outlive the lock)",
		   seen.count[5], seen.fill[5]);
	CONF_CHECK(seen.count[6] == 0, "block 6 (never installed) would be replayed");
	CONF_CHECK(seen.count[4] == 1, "block 4 replayed %u times", seen.count[4]);
	CONF_CHECK(st.abandoned == 3 && st.live == 1, "abandoned %llu live %llu",
		   (unsigned long long)st.abandoned, (unsigned long long)st.live);
	CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "answer 1");
	coh_ep_delete(&ep);
	coh_cq_delete(&cq);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * A batched destage whose flush failed (rlog_retire_keep, rlog_retire_kept). Node 0 writes
 * blocks 2, 3 and 7; a batch destages 2 and 3 and keeps them (its flush failed): they stay live
 * on the peer, and kept. A retry whose flush fails keeps them still; one whose flush works
 * retires them, and only them: the peer then replays block 7 alone, and nothing is kept.
 */
static int rk_flush_fails(void *arg)
{
	(*(int *)arg)++;
	return -EIO;
}

static int rk_flush_works(void *arg)
{
	(*(int *)arg)++;
	return 0;
}

int sc_rlog_retire_kept(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct rlog_scan_stats st;
	struct coh_cq *cq = NULL;
	struct coh_ep *ep = NULL;
	struct coh_mr *mr;
	struct rw_seen seen;
	uint32_t b;
	uint8_t *reg;

	if (cn->n != 2)
		return 1;
	CONF_CHECK(rw_region(cn, &mr, descs) == 0, "region");
	reg = coh_mr_addr(mr);
	if (cn->id == 0) {
		struct rlog_range r[2] = { { .lba = 2, .upto = UINT64_MAX, .n = 1 },
					   { .lba = 3, .upto = UINT64_MAX, .n = 1 } };
		struct rlog_writer w;
		int flushes = 0;

		CONF_CHECK(rw_writer_up(cn, &w, descs) == 0, "writer up");
		CONF_CHECK(rw_append(&w, 2, 0x22) == 0 && rw_append(&w, 3, 0x33) == 0 &&
			       rw_append(&w, 7, 0x77) == 0,
			   "2, 3, 7");
		CONF_CHECK(!rlog_retire_kept_any(&w), "kept before any batch");
		rlog_retire_keep(&w, r, 2);
		CONF_CHECK(rlog_retire_kept_any(&w) && rlog_live_count(&w) == 3, "kept 2 and 3");
		CONF_CHECK(rlog_retire_kept(&w, rk_flush_fails, &flushes) == -EIO && flushes == 1 &&
			       rlog_retire_kept_any(&w) && rlog_live_count(&w) == 3,
			   "a retry whose flush failed retired something");
		CONF_CHECK(rw_phase(cn, 1, "kept") == 0, "phase 1");
		CONF_CHECK(rlog_retire_kept(&w, rk_flush_works, &flushes) == 0 && flushes == 2 &&
			       !rlog_retire_kept_any(&w) && rlog_live_count(&w) == 1,
			   "the retry after a good flush: kept %d live %llu",
			   rlog_retire_kept_any(&w), (unsigned long long)rlog_live_count(&w));
		CONF_CHECK(rlog_retire_kept(&w, rk_flush_fails, &flushes) == 0 && flushes == 2,
			   "nothing kept, yet a flush");
		CONF_CHECK(rw_phase(cn, 1, "retired") == 0, "phase 2");
		rw_writer_down(&w, &mr);
		return 0;
	}
	CONF_CHECK(coh_cq_new(cn->fab, 128, &cq) == 0, "cq");
	CONF_CHECK(log_ep(cn, 0, cq, &ep) == 0, "log endpoint to 0");
	for (b = 0; b < 2; b++) {
		CONF_CHECK(rw_await_scan(cn, reg, &seen, &st) == 0, "scan %u", b);
		CONF_CHECK(seen.count[7] == 1, "block 7 replayed %u times", seen.count[7]);
		/* Kept: still live on the peer (a recovery replays them). Retired: not. */
		CONF_CHECK(seen.count[2] == (b ? 0u : 1u) && seen.count[3] == (b ? 0u : 1u),
			   "phase %u: blocks 2 and 3 replayed %u and %u times", b, seen.count[2],
			   seen.count[3]);
		CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "answer %u", b);
	}
	coh_ep_delete(&ep);
	coh_cq_delete(&cq);
	coh_mr_delete(&mr);
	return 0;
}

int sc_rlog_rewrite(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct rlog_scan_stats st;
	struct coh_cq *cq = NULL;
	struct coh_ep *ep = NULL;
	struct coh_mr *mr;
	struct rw_seen seen;
	char msg[8];
	uint32_t len;
	uint8_t *reg;

	if (cn->n != 2)
		return 1;
	CONF_CHECK(rw_region(cn, &mr, descs) == 0, "region");
	reg = coh_mr_addr(mr);
	if (cn->id == 0) {
		struct rlog_writer w;

		CONF_CHECK(rw_writer_up(cn, &w, descs) == 0, "writer up");
		/* Block 4 stays live throughout: the tail cannot pass what comes after it. */
		CONF_CHECK(rw_append(&w, 4, 0x01) == 0, "append 4");
		CONF_CHECK(rw_append(&w, 5, 0x11) == 0 && rw_append(&w, 5, 0x22) == 0, "rewrite 5");
		CONF_CHECK(w.superseded == 1, "superseded %llu", (unsigned long long)w.superseded);
		CONF_CHECK(rw_phase(cn, 1, "rewrite") == 0, "phase 1");
		CONF_CHECK(rlog_retire(&w, 5, 1, UINT64_MAX) == 0, "destage 5");
		CONF_CHECK(rw_phase(cn, 1, "destage") == 0, "phase 2");
		CONF_CHECK(rw_append(&w, 6, 0x33) == 0 && rw_append(&w, 6, 0x44) == 0 &&
			       rw_append(&w, 7, 0x55) == 0 && rw_append(&w, 7, 0x66) == 0 &&
			       rlog_retire(&w, 7, 1, UINT64_MAX) == 0 &&
			       rw_append(&w, 8, 0x77) == 0,
			   "rewrite 6 and 7, destage 7");
		CONF_CHECK(rw_phase(cn, 1, "corrupt") == 0, "phase 3");
		rw_writer_down(&w, &mr);
		return 0;
	}
	CONF_CHECK(coh_cq_new(cn->fab, 128, &cq) == 0, "cq");
	CONF_CHECK(log_ep(cn, 0, cq, &ep) == 0, "log endpoint to 0");
	/* Phase 1: both records of block 5 are live here; only the newest counts. */
	CONF_CHECK(rw_await_scan(cn, reg, &seen, &st) == 0, "scan 1");
	CONF_CHECK(seen.count[5] == 1 && seen.fill[5] == 0x22,
		   "block 5 replayed %u times, last %#x (want once, 0x22)", seen.count[5],
		   seen.fill[5]);
	CONF_CHECK(st.live == 2 && st.superseded == 1, "live %llu superseded %llu",
		   (unsigned long long)st.live, (unsigned long long)st.superseded);
	CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "answer 1");
	/* Phase 2: the destage retired the newest and the one it superseded. */
	CONF_CHECK(rw_await_scan(cn, reg, &seen, &st) == 0, "scan 2");
	CONF_CHECK(seen.count[5] == 0, "block 5 replayed after its destage");
	CONF_CHECK(st.retired == 2 && st.superseded == 0 && st.live == 1,
		   "retired %llu superseded %llu live %llu", (unsigned long long)st.retired,
		   (unsigned long long)st.superseded, (unsigned long long)st.live);
	CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "answer 2");
	/* Phase 3: the newest records of 6 (not destaged) and 7 (destaged) are corrupted here. */
	len = sizeof(msg);
	CONF_CHECK(conf_recv(cn, 0, msg, &len, CONF_TIMEOUT_MS) == 0, "no word from node 0");
	CONF_CHECK(rw_corrupt(reg, 6) && rw_corrupt(reg, 7), "records to corrupt not found");
	memset(&seen, 0, sizeof(seen));
	CONF_CHECK(rlog_scan(reg, LOG_LEN, 0, rw_visit, &seen, &st) == 0, "scan 3");
	CONF_CHECK(st.corrupt == 2, "corrupt %llu", (unsigned long long)st.corrupt);
	CONF_CHECK(seen.count[6] == 1 && seen.fill[6] == 0x33,
		   "block 6: %u visits, %#x (want the older record, 0x33)", seen.count[6],
		   seen.fill[6]);
	CONF_CHECK(seen.count[7] == 0, "block 7 was destaged, and an older record came back");
	CONF_CHECK(seen.count[8] == 1 && seen.fill[8] == 0x77 && seen.count[4] == 1, "blocks 4, 8");
	CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "answer 3");
	coh_ep_delete(&ep);
	coh_cq_delete(&cq);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * Group commit against a real peer: node 0 holds its writer's lock while 8 threads each append a
 * block of their own, so that all 8 are queued when the first of them, the leader, gets the
 * lock. Then the lock goes: one round carries all 8 (one WRITE and one FLUSH to the peer), and
 * every write is on the peer once its call returns.
 */
#define GC_WRITERS 8u

struct gc_arg {
	struct rlog_writer *w;
	uint32_t i;
	int ret;
};

static void *gc_writer(void *arg)
{
	struct gc_arg *a = arg;
	static uint8_t blocks[GC_WRITERS][BSIZE];

	memset(blocks[a->i], 0x40 + (int)a->i, BSIZE);
	a->ret = rlog_append_data(a->w, a->i, 1, blocks[a->i], NULL);
	return NULL;
}

static uint32_t gc_queued(struct rlog_writer *w)
{
	uint32_t n;

	pthread_mutex_lock(&w->gc_lock);
	n = w->gc_queued;
	pthread_mutex_unlock(&w->gc_lock);
	return n;
}

static uint64_t gc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int sc_rlog_group_commit(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct rlog_scan_stats st;
	struct coh_cq *cq = NULL;
	struct coh_ep *ep = NULL;
	struct coh_mr *mr;
	struct rw_seen seen;
	uint32_t i;
	uint8_t *reg;

	if (cn->n != 2)
		return 1;
	CONF_CHECK(rw_region(cn, &mr, descs) == 0, "region");
	reg = coh_mr_addr(mr);
	if (cn->id == 0) {
		static struct rlog_writer w;
		struct gc_arg args[GC_WRITERS];
		pthread_t th[GC_WRITERS];
		uint64_t until;
		uint32_t q = 0;

		CONF_CHECK(rw_writer_up(cn, &w, descs) == 0, "writer up");
		pthread_mutex_lock(&w.lock);
		for (i = 0; i < GC_WRITERS; i++) {
			args[i] = (struct gc_arg){ .w = &w, .i = i, .ret = -EINPROGRESS };
			if (pthread_create(&th[i], NULL, gc_writer, &args[i])) {
				pthread_mutex_unlock(&w.lock);
				CONF_CHECK(0, "thread %u", i);
			}
		}
		/* Bounded: every writer queues at once (the leader waits for the lock). */
		until = gc_now_ms() + CONF_TIMEOUT_MS;
		while ((q = gc_queued(&w)) < GC_WRITERS && gc_now_ms() < until) {
			struct timespec t = { 0, 200000 };

			nanosleep(&t, NULL);
		}
		CONF_CHECK(w.appended == 0, "an append went out with the lock held");
		pthread_mutex_unlock(&w.lock);
		for (i = 0; i < GC_WRITERS; i++)
			pthread_join(th[i], NULL);
		CONF_CHECK(q == GC_WRITERS, "%u of %u writes queued", q, GC_WRITERS);
		for (i = 0; i < GC_WRITERS; i++)
			CONF_CHECK(args[i].ret == 0, "write %u: %d", i, args[i].ret);
		CONF_CHECK(w.appended == GC_WRITERS && w.group_commits == 1 &&
			       w.group_writes == GC_WRITERS,
			   "appended %llu in %llu group rounds of %llu writes (want 8 in 1 of 8)",
			   (unsigned long long)w.appended, (unsigned long long)w.group_commits,
			   (unsigned long long)w.group_writes);
		CONF_CHECK(rw_phase(cn, 1, "group") == 0, "phase 1");
		rw_writer_down(&w, &mr);
		return 0;
	}
	CONF_CHECK(coh_cq_new(cn->fab, 128, &cq) == 0, "cq");
	CONF_CHECK(log_ep(cn, 0, cq, &ep) == 0, "log endpoint to 0");
	CONF_CHECK(rw_await_scan(cn, reg, &seen, &st) == 0, "scan");
	for (i = 0; i < GC_WRITERS; i++)
		CONF_CHECK(seen.count[i] == 1 && seen.fill[i] == 0x40 + i,
			   "block %u: %u records, fill %#x", i, seen.count[i], seen.fill[i]);
	CONF_CHECK(st.live == GC_WRITERS, "live %llu", (unsigned long long)st.live);
	CONF_CHECK(conf_send(cn, 0, "ok", 2) == 0, "answer");
	coh_ep_delete(&ep);
	coh_cq_delete(&cq);
	coh_mr_delete(&mr);
	return 0;
}
