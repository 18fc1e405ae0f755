/*
 * node.c - a controller node: the redundancy group, the coherent cache laid on it, the
 * replication log each write goes through before it is acknowledged, and the membership that
 * turns a node's failure into a new epoch in which a survivor finishes the dead node's work.
 *
 * The write path: the cache takes the stripes exclusive and invalidates the other copies; its
 * write hook appends the blocks to this node's log on k peers (WRITE + FLUSH) while the locks are
 * held; then the data goes into the cache and the write is acknowledged. A destage (the cache
 * writing a dirty block back, on handover, eviction or flush) is a stepped stripe update whose
 * every step is logged before it takes effect; when it is done the block's records are retired,
 * persistently, before the lock can move on. So a survivor never replays a block over someone
 * else's newer write.
 *
 * A view change (membership.c drives it) agrees on the new member set, rebuilds the dead homes'
 * directory words from the survivors, and lets one survivor per dead node win its locks, replay
 * its live records from its copy of the log and repair the stripes it was updating. I/O goes on
 * meanwhile: an operation that meets a dead node (cache or log) gets -EAGAIN, lets go of
 * everything, waits for the view change's next step and tries again, bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cohort/log.h"
#include "membership_internal.h"

uint64_t node_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* node_crash_point - the crash-test facility: die here when told to. */
void node_crash_point(struct coh_node *n, uint32_t pt)
{
	node_point(n, pt, 0);
}

int node_point(struct coh_node *n, uint32_t pt, uint64_t detail)
{
	io_point(pt);
	if (n->crash_point == pt && n->crash_point &&
	    atomic_fetch_add(&n->crash_count, 1) + 1 == n->crash_after) {
		COH_LOG_INFO("node %u: crash point %u reached: SIGKILL", n->me, pt);
		kill(getpid(), SIGKILL);
	}
	return n->hooks.point ? n->hooks.point(n->hooks.arg, pt, detail) : 0;
}

/* node_lease_holds - this node's lease runs for at least @margin_ms more. */
static bool node_lease_holds(struct coh_node *n, uint64_t margin_ms)
{
	return node_now_ns() / 1000000ull + margin_ms <
	       __atomic_load_n(&n->lease_end_ms, __ATOMIC_ACQUIRE);
}

bool node_lease_ok(struct coh_node *n)
{
	return node_lease_holds(n, 0);
}

/*
 * node_may_write - the group's gate (coh_raid_attr.may_write), asked before each element write:
 * the lease must hold for an eighth of a lease more, so that a write that takes a moment (a
 * device's queue, a page fault) still lands before the others can have outwaited the lease. A
 * step checked only once (step_hook) let a node paused in the middle of the step's writes finish
 * them after the takeover had repaired and rewritten the stripe. Open's recovery, which replays
 * before any lease with nobody serving (n->recovering), is not gated.
 */
static int node_may_write(void *arg)
{
	struct coh_node *n = arg;

	if (!n->lease || atomic_load(&n->recovering))
		return 0;
	return node_lease_holds(n, n->lease_ms / 8) ? 0 : -EAGAIN;
}

/* cache_point - the cache's named steps are crash points too (COH_CRASH_CACHE onwards). */
static int cache_point(void *arg, uint32_t pt, uint64_t detail)
{
	return node_point(arg, COH_CRASH_CACHE + pt - 1, detail);
}

static void rlog_point(void *arg, int point)
{
	(void)point;
	node_crash_point(arg, COH_CRASH_RECLAIM);
}

/* The volume: a store over the group whose writes are logged stepped destages. */

static int vol_read(void *ctx, uint64_t lba, uint32_t nblocks, void *buf)
{
	struct coh_node *n = ctx;

	return coh_raid_read(n->raid, lba, nblocks, buf);
}

static const uint32_t step_point[] = {
	[COH_RAID_STEP_READ_OLD] = COH_CRASH_DESTAGE_READ_OLD,
	[COH_RAID_STEP_WRITE_DATA] = COH_CRASH_DESTAGE_DATA,
	[COH_RAID_STEP_WRITE_PARITY] = COH_CRASH_DESTAGE_PARITY,
	[COH_RAID_STEP_DONE] = COH_CRASH_DESTAGE_DONE,
};

struct destage {
	struct coh_node *n;
	uint32_t slot;
	bool stepped; /* a step of the update took effect */
};

/* step_hook - before each step of a stripe update takes effect, its state is on the peers. */
static int step_hook(void *arg, uint64_t stripe, enum coh_raid_step step)
{
	struct destage *d = arg;
	struct coh_node *n = d->n;
	int ret = 0;

	if (n->k)
		ret = rlog_step_put(&n->w, d->slot, stripe, (uint8_t)step);
	if (!ret && (unsigned)step < sizeof(step_point) / sizeof(step_point[0]))
		node_crash_point(n, step_point[step]);
	/* Each step writes the group: only while this node is a member (its lease; the others
	 * outwait it before they replay or write what it held). */
	if (!ret && !node_lease_ok(n))
		ret = -EAGAIN;
	if (!ret)
		d->stepped = true;
	return ret;
}

/* vol_repair_stripes - make the parity of stripes @s0..@s1 follow their data, then flush. */
static int vol_repair_stripes(struct coh_node *n, uint64_t s0, uint64_t s1)
{
	uint64_t s;
	int ret = 0;

	for (s = s0; s <= s1 && !ret; s++)
		ret = coh_raid_stripe_repair(n->raid, s);
	return ret ? ret : coh_raid_flush(n->raid);
}

/* vol_hold_pending - keep a stopped update for repair; false when the table is full. */
static bool vol_hold_pending(struct coh_node *n, uint64_t s0, uint64_t s1, uint32_t slot)
{
	bool held = false;

	pthread_mutex_lock(&n->state_lock);
	if (n->npend < NODE_PEND_MAX) {
		n->pend[n->npend].s0 = s0;
		n->pend[n->npend].s1 = s1;
		n->pend[n->npend].slot = slot;
		n->npend++;
		held = true;
	}
	pthread_mutex_unlock(&n->state_lock);
	return held;
}

/*
 * vol_repair_pending - with the lease back, repair the stripes whose update a lapse stopped
 * part-way (this node still holds them: it was not excluded, or the formation that admitted it
 * again dropped them, node_cache_open), and end their step slots. A repair that fails stays
 * pending. Returns 0, or the first error.
 */
static int vol_repair_pending(struct coh_node *n)
{
	int ret = 0;

	while (!ret && node_lease_ok(n)) {
		uint64_t s0, s1;
		uint32_t slot;

		pthread_mutex_lock(&n->state_lock);
		if (!n->npend) {
			pthread_mutex_unlock(&n->state_lock);
			break;
		}
		n->npend--;
		s0 = n->pend[n->npend].s0;
		s1 = n->pend[n->npend].s1;
		slot = n->pend[n->npend].slot;
		pthread_mutex_unlock(&n->state_lock);
		ret = vol_repair_stripes(n, s0, s1);
		if (!ret && slot < RLOG_STEP_SLOTS)
			ret = rlog_step_end(&n->w, slot);
		if (ret) {
			/* Not repaired: keep it (the slot, if ended, stays ended: the stripe is
			 * still held here and repaired by the next try). It was just taken out,
			 * so there is room. */
			(void)vol_hold_pending(n, s0, s1, slot);
		} else {
			pthread_mutex_lock(&n->state_lock);
			n->repaired_stripes += s1 - s0 + 1;
			pthread_mutex_unlock(&n->state_lock);
		}
	}
	return ret;
}

/*
 * Batched destage. A flush of many blocks (coh_cache_flush, coh_cache_writeback) writes each back
 * through vol_destage on the calling thread; there, instead of flushing every element and
 * retiring the block's records for each block, the ranges are collected, and every VOL_BATCH
 * ranges (and at the end) one flush of the elements is followed by one retirement of all of
 * them, in round trips of 64 records. Between a block's write and its batch's retirement its
 * slot is already clean while its records are live: @batched counts such ranges, and no lock
 * leaves this node while it is not zero (node_hold_locks), or another node's write of the block
 * could be overtaken by a replay of the older record. A request refused for that makes the batch
 * commit after the block it is writing (@batch_wanted), so a lock waits for one destage at most,
 * as it did when each block was retired on its own. A batch whose flush or retirement fails
 * leaves its ranges kept in the log (rlog_retire_keep), and node_hold_locks holds the locks
 * until they are retired (rlog_retire_kept).
 */
#define VOL_BATCH 64u

struct vol_batch {
	struct coh_node *n;
	struct rlog_range r[VOL_BATCH];
	uint32_t count;
};

/* The batch of the flush this thread runs for a node, or NULL. */
static __thread struct vol_batch *vol_batch;

static int vol_flush_raid(void *arg)
{
	return coh_raid_flush(((struct coh_node *)arg)->raid);
}

/* vol_batch_commit - flush the elements, then retire the batch's records; on a failure they are
 * kept for node_hold_locks to retire. Returns 0 or the error. */
static int vol_batch_commit(struct vol_batch *b)
{
	struct coh_node *n = b->n;
	int ret;

	if (!b->count)
		return 0;
	ret = coh_raid_flush(n->raid);
	if (!ret)
		ret = rlog_retire_many(&n->w, b->r, b->count);
	if (ret)
		rlog_retire_keep(&n->w, b->r, b->count);
	atomic_fetch_sub(&n->batched, b->count);
	b->count = 0;
	return ret;
}

static int vol_batch_add(struct vol_batch *b, uint64_t lba, uint32_t nblocks, uint64_t upto)
{
	b->r[b->count].lba = lba;
	b->r[b->count].n = nblocks;
	b->r[b->count].upto = upto;
	b->count++;
	atomic_fetch_add(&b->n->batched, 1);
	/* Full, or another node waits for a lock the batch holds here: a request is refused
	 * while a batch is open, so it is not kept open past the block being written. */
	if (b->count == VOL_BATCH || atomic_exchange(&b->n->batch_wanted, false))
		return vol_batch_commit(b);
	return 0;
}

/* vol_batch_run - @fn(@n->cache, ...) with this thread's destages batched; 0 or the first
 * error of either. */
static int vol_batch_run(struct coh_node *n, int (*fn)(struct coh_node *n, void *arg), void *arg)
{
	struct vol_batch b = { .n = n };
	int ret, r;

	if (!n->k || vol_batch)
		return fn(n, arg); /* nothing to retire, or inside a batch already */
	vol_batch = &b;
	ret = fn(n, arg);
	vol_batch = NULL;
	r = vol_batch_commit(&b);
	return ret ? ret : r;
}

static int vol_flush_fn(struct coh_node *n, void *arg)
{
	(void)arg;
	return n->cache ? coh_cache_flush(n->cache) : -ENOSPC;
}

/* node_cache_flush - coh_cache_flush of this node's cache, its destages batched. */
int node_cache_flush(struct coh_node *n)
{
	return vol_batch_run(n, vol_flush_fn, NULL);
}

struct vol_wb {
	const uint64_t *lbas;
	uint32_t n, *written;
};

static int vol_writeback_fn(struct coh_node *n, void *arg)
{
	struct vol_wb *wb = arg;

	return n->cache ? coh_cache_writeback(n->cache, wb->lbas, wb->n, wb->written) : -EAGAIN;
}

/* node_cache_writeback - coh_cache_writeback of @lbas, its destages batched. */
int node_cache_writeback(struct coh_node *n, const uint64_t *lbas, uint32_t m, uint32_t *written)
{
	struct vol_wb wb = { .lbas = lbas, .n = m, .written = written };

	return vol_batch_run(n, vol_writeback_fn, &wb);
}

/* vol_destage - a destage of data whose last log record is @upto (its write hook's sequence):
 * the stepped update of the stripes, then the records retired, those up to @upto (the cache's
 * destage hook). */
static int vol_destage(void *ctx, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t upto)
{
	struct coh_node *n = ctx;
	struct destage d = { .n = n };
	uint64_t s0 = coh_raid_stripe_of(n->raid, lba),
		 s1 = coh_raid_stripe_of(n->raid, lba + nblocks - 1);
	bool keep_slot = false, gated = false, batched;
	int ret, r;

	/* First what an earlier lapse left half done: a read-modify-write on top of it would keep
	 * the parity wrong. */
	ret = vol_repair_pending(n);
	if (ret)
		return ret;
	if (n->k) {
		ret = rlog_step_begin(&n->w, &d.slot);
		if (ret)
			return ret;
	}
	ret = node_lease_ok(n) ? coh_raid_write_stepped(n->raid, lba, nblocks, buf, step_hook, &d)
			       : -EAGAIN;
	if (ret && d.stepped && node_lease_ok(n)) {
		/* Stopped part-way (a step's state could not be replicated, or an element
		 * failed): the data may be written and the parity not. Make the parity follow
		 * the data now, while this node still holds the stripes: a later read-modify-write
		 * on top of a stale parity would keep it wrong. The block stays dirty. */
		uint64_t s;

		for (s = s0; s <= s1 && !gated; s++)
			gated = coh_raid_stripe_repair(n->raid, s) == -EAGAIN;
	}
	if (ret && d.stepped && (gated || !node_lease_ok(n))) {
		/* Stopped part-way because the lease ran out, or nearly (a pause; the gate,
		 * node_may_write): this node may no longer write the group, so the repair waits
		 * for the lease, and the step slot stays live on the peers meanwhile (survivors
		 * that exclude this node repair from it). */
		keep_slot = vol_hold_pending(n, s0, s1, n->k ? d.slot : RLOG_STEP_SLOTS);
		if (!keep_slot)
			COH_LOG_WARN("node %u: stripes %llu..%llu stopped part-way and no room to "
				     "hold them for repair; the step slot is cleared",
				     n->me, (unsigned long long)s0, (unsigned long long)s1);
	}
	/* The records go only once the stripes are on the elements' media: retired over data in
	 * a volatile cache (the page cache of an element file, a disk's write cache), they would
	 * leave a power loss nothing to replay. In a batch (a flush of many blocks on this
	 * thread: vol_batch_run) the flush and the retirement are the batch's, one for up to
	 * VOL_BATCH ranges; until then the records stay live, and no lock leaves this node. */
	batched = n->k && vol_batch && vol_batch->n == n;
	if (!ret && n->k && !batched)
		ret = coh_raid_flush(n->raid);
	if (!ret) {
		atomic_fetch_add(&n->destages, s1 - s0 + 1);
		if (batched)
			ret = vol_batch_add(vol_batch, lba, nblocks, upto);
		else if (n->k)
			ret = rlog_retire(&n->w, lba, nblocks, upto);
	}
	if (n->k && !keep_slot) {
		/* Cleared only after the retirement: a survivor that sees the slot repairs the
		 * stripe, which is harmless once the update is whole. */
		r = rlog_step_end(&n->w, d.slot);
		if (r && !ret)
			ret = r;
	}
	return ret;
}

/* vol_write - the store's write: a destage of whatever data the log has last. The cache writes
 * back through vol_destage. */
static int vol_write(void *ctx, uint64_t lba, uint32_t nblocks, const void *buf)
{
	return vol_destage(ctx, lba, nblocks, buf, UINT64_MAX);
}

static int vol_flush(void *ctx)
{
	struct coh_node *n = ctx;
	uint32_t i;
	int ret, r;

	/* A flush promises whole stripes: first those a lapse left half done. */
	ret = vol_repair_pending(n);
	for (i = 0; i < n->nelems; i++) {
		if (n->elems[i] && (r = coh_store_flush(n->elems[i])) && !ret)
			ret = r;
	}
	return ret;
}

static void vol_close(void *ctx)
{
	(void)ctx;
}

static const struct coh_store_ops vol_ops = {
	.read = vol_read,
	.write = vol_write,
	.flush = vol_flush,
	.close = vol_close,
};

/* log_peer_down - one of the log's current peers is unreachable. */
static bool log_peer_down(struct coh_node *n)
{
	uint32_t p, peers;

	pthread_mutex_lock(&n->w.lock);
	peers = n->w.peers;
	pthread_mutex_unlock(&n->w.lock);
	for (p = 0; p < n->nodes; p++) {
		if ((peers >> p & 1) && (!n->w.ep[p] || !coh_ep_is_up(n->w.ep[p])))
			return true;
	}
	return false;
}

/* The cache's write hook: replicate before the data is installed and acknowledged. */
static int write_hook(void *arg, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t *seq)
{
	struct coh_node *n = arg;
	int ret;

	node_crash_point(n, COH_CRASH_BEFORE_REPLICATION);
	if (!n->k) {
		io_point(COH_CRASH_REPLICATED); /* nothing to replicate: on to the install */
		return 0;
	}
	ret = rlog_append_data(&n->w, lba, nblocks, buf, seq);
	if (!ret)
		node_crash_point(n, COH_CRASH_REPLICATED);
	else if (log_peer_down(n))
		ret = -EAGAIN; /* not acknowledged; again once the log has its new peers */
	return ret;
}

/* The cache's write_undo hook: a block of a replicated write did not go into the cache (the
 * write fails). Its record would describe data no copy holds: replayed after this node's death,
 * over another node's later write of the block, it would lose that write. Marked ABANDONED;
 * where the mark does not land it is kept pending, and no lock leaves until it does
 * (node_hold_locks). */
static void write_undo(void *arg, uint64_t lba, uint32_t nblocks, uint64_t seq)
{
	struct coh_node *n = arg;
	int ret;

	if (!n->k)
		return;
	ret = rlog_abandon_write(&n->w, lba, nblocks, seq);
	COH_LOG_WARN("node %u: a write of lba %llu failed after it was replicated: its records "
		     "%s",
		     n->me, (unsigned long long)lba,
		     ret ? "are kept pending (no lock leaves until they are marked)"
			 : "are marked abandoned");
}

/* The cache's hold_locks hook: no lock leaves while a record a recovery could replay may be live
 * on a peer that its retirement did not reach: the log is moving to new peers (vc_relog), or a
 * failed append's ABANDONED mark did not land everywhere; nor while a member may still use an
 * element that went missing here (membership.c, memb_elems). The latter is tried again here, on the
 * service thread, each time a request would otherwise be served (bounded by the timeout). */
static bool node_hold_locks(void *arg)
{
	struct coh_node *n = arg;

	if (atomic_load(&n->relog_hold) || atomic_load(&n->elem_unacked))
		return true;
	if (!n->k)
		return false;
	/* A batched destage between its writes and its retirement (vol_batch): it commits after
	 * the block it is writing, and the requester asks again. */
	if (atomic_load(&n->batched)) {
		atomic_store(&n->batch_wanted, true);
		return true;
	}
	if (rlog_retire_kept_any(&n->w) && rlog_retire_kept(&n->w, vol_flush_raid, n)) {
		COH_LOG_DBG("node %u: destaged blocks' records may be live on a peer: no lock "
			    "handed on until they are retired or the log moves",
			    n->me);
		return true;
	}
	if (!rlog_abandon_pending(&n->w))
		return false;
	if (rlog_abandon_retry(&n->w)) {
		COH_LOG_DBG("node %u: a failed append's records may be live on a peer: no lock "
			    "handed on until they are marked or the log moves",
			    n->me);
		return true;
	}
	return false;
}

/* The group's on_missing hook: an element went missing here (an I/O error, or an operator). From
 * now on this node writes around it, so every other node must stop reading it before it sees
 * anything this node writes: locks stay here until each member has said so (memb_elems tells
 * them). Does not block. */
static void node_elem_missing(void *arg, uint32_t missing)
{
	struct coh_node *n = arg;

	(void)missing;
	atomic_fetch_add(&n->elem_gen, 1);
	atomic_store(&n->elem_unacked, true);
}

int coh_node_fail_element(struct coh_node *n, uint32_t idx)
{
	return n && n->raid ? coh_raid_fail_element(n->raid, idx) : -EINVAL;
}

/* Back-pressure: the log is full; destage everything this node holds dirty. The last resort:
 * the background destage (bgdestage.c) normally keeps the log below its high watermark. */
static int reclaim(void *arg)
{
	struct coh_node *n = arg;
	int ret;

	/* The destage thread stands aside meanwhile (bgdestage.c, bgd_round): two destages at
	 * once only contend for the same stripes, log lock and cores. */
	atomic_fetch_add(&n->bg.reclaiming, 1);
	ret = node_cache_flush(n);
	atomic_fetch_sub(&n->bg.reclaiming, 1);
	return ret;
}

/* log_peers - where writer @w's log goes in view @members: the next k members after it. */
uint32_t node_log_peers(uint32_t nodes, uint32_t members, uint32_t w, uint32_t k)
{
	uint32_t peers = 0, i, got = 0;

	for (i = 1; i < nodes && got < k; i++) {
		uint32_t p = (w + i) % nodes;

		if (members >> p & 1) {
			peers |= 1u << p;
			got++;
		}
	}
	return peers;
}

int node_cache_open(struct coh_node *n)
{
	struct coh_cache_attr ca = {
		.fab = n->fab,
		.nodes = n->nodes,
		.store = n->vol,
		.resource_blocks = n->stripe_blocks,
		.cache_blocks = n->cache_blocks,
		.timeout_ms = n->timeout_ms,
		.members = n->members,
		/* The cache's channels for this epoch, clear of the control (240) and log (241)
		 * channels. */
		.channel_base =
		    16 + coh_cache_channels(io_lanes(n)) *
			     (n->epoch % ((240 - 16) / coh_cache_channels(io_lanes(n)))),
		.lanes = io_lanes(n),
		.write_hook = write_hook,
		.destage = vol_destage,
		.step_pause = node_step_pause,
		.point = cache_point,
		.lease = &n->lease_end_ms,
		.hold_locks = node_hold_locks,
		.write_undo = write_undo,
		.hook_arg = n,
	};

	/* A new tenure: the updates a lapse left half done in the last one were repaired by the
	 * survivors that took this node's stripes (from the live step slots), or by this node
	 * before the formation that reopens the cache destaged; their slots are gone with the
	 * log's restart. */
	pthread_mutex_lock(&n->state_lock);
	while (n->npend) {
		n->npend--;
		if (n->pend[n->npend].slot < RLOG_STEP_SLOTS)
			rlog_step_forget(&n->w, n->pend[n->npend].slot);
	}
	pthread_mutex_unlock(&n->state_lock);
	atomic_store(&n->relog_hold, false); /* the log starts afresh with this cache */
	return coh_cache_open(&ca, &n->cache);
}

static int attr_check(const struct coh_node_attr *a)
{
	uint32_t i;

	if (!a->fab || a->nodes < 2 || a->nodes > 32 || !a->elem_blocks ||
	    a->fence > COH_FENCE_AGENT || (a->fence == COH_FENCE_AGENT && !a->fence_agent) ||
	    (a->hooks &&
	     a->hooks->hooks_size < offsetof(struct coh_node_hooks, arg) + sizeof(void *)) ||
	    a->raid.nelems > COH_RAID_MAX_ELEMS || !a->raid.nelems ||
	    a->replicas < COH_NODE_REPLICAS_NONE || a->replicas >= (int)a->nodes ||
	    a->queue_depth > 4096 || a->lanes > COH_CACHE_MAX_LANES - 1 ||
	    a->destage_high > COH_NODE_DESTAGE_OFF ||
	    (a->destage_low && (!a->destage_high || a->destage_low >= a->destage_high)) ||
	    (a->block_size && (a->block_size < 512 || (a->block_size & (a->block_size - 1)))))
		return -EINVAL;
	if (coh_fabric_node_id(a->fab) >= a->nodes)
		return -EINVAL;
	for (i = 0; i < a->raid.nelems; i++) {
		if (!a->elem_paths[i])
			return -EINVAL;
	}
	return 0;
}

static void node_free(struct coh_node *n)
{
	uint32_t i;

	node_bg_fini(n);
	io_fini(n);
	coh_cache_abandon(&n->cache);
	membership_fini(n);
	rlog_writer_fini(&n->w);
	for (i = 0; i < COH_CACHE_MAX_NODES; i++)
		coh_mr_delete(&n->host[i]);
	coh_store_delete(&n->vol);
	coh_raid_delete(&n->raid);
	for (i = 0; i < n->nelems; i++)
		coh_store_delete(&n->elems[i]);
	pthread_cond_destroy(&n->view_cond);
	pthread_rwlock_destroy(&n->io);
	pthread_mutex_destroy(&n->state_lock);
	free(n);
}

/* node_realtime_in - the CLOCK_REALTIME time @ms from now, for pthread_cond_timedwait. */
void node_realtime_in(int ms, struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* node_wait_serving - until this node serves I/O (a formation committed), at most @ms. */
int node_wait_serving(struct coh_node *n, uint32_t ms)
{
	struct timespec until;
	int ret = 0;

	node_realtime_in((int)ms, &until);
	pthread_mutex_lock(&n->state_lock);
	while (!n->quorum && !ret)
		ret = -pthread_cond_timedwait(&n->view_cond, &n->state_lock, &until);
	pthread_mutex_unlock(&n->state_lock);
	return ret;
}

int coh_node_open(const struct coh_node_attr *attr, struct coh_node **nodep)
{
	struct coh_raid_attr ra;
	struct coh_node *n;
	uint32_t i;
	int ret;

	if (!attr || !nodep)
		return -EINVAL;
	ret = attr_check(attr);
	if (ret)
		return ret;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	{
		pthread_rwlockattr_t rwa;

		/* Writers first: a view change step that waits for @io must not wait for a
		 * stream of operations that keep taking it shared. */
		pthread_rwlockattr_init(&rwa);
		pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&n->io, &rwa);
		pthread_rwlockattr_destroy(&rwa);
	}
	pthread_mutex_init(&n->state_lock, NULL);
	pthread_cond_init(&n->view_cond, NULL);
	(void)io_init(n, attr->queue_depth, attr->lanes,
		      attr->hooks &&
			  attr->hooks->hooks_size >=
			      offsetof(struct coh_node_hooks, manual_engine) + sizeof(bool) &&
			  attr->hooks->manual_engine);
	n->fab = attr->fab;
	n->me = coh_fabric_node_id(attr->fab);
	n->nodes = attr->nodes;
	n->bsize = attr->block_size ? attr->block_size : 4096;
	n->k = attr->replicas == COH_NODE_REPLICAS_NONE ? 0
	       : attr->replicas				? (uint32_t)attr->replicas
							: 1;
	n->log_bytes = attr->log_bytes ? attr->log_bytes : 4u << 20;
	n->log_bytes = n->log_bytes / RLOG_ALIGN * RLOG_ALIGN;
	n->cache_blocks = attr->cache_blocks ? attr->cache_blocks : 1024;
	n->timeout_ms = attr->timeout_ms ? attr->timeout_ms : COH_FABRIC_DEFAULT_TIMEOUT_MS;
	n->crash_point = attr->crash_point;
	n->takeover_hook = attr->takeover_hook;
	n->takeover_arg = attr->takeover_arg;
	n->crash_after = attr->crash_after ? attr->crash_after : 1;
	n->fence = attr->fence;
	n->fence_agent = attr->fence_agent;
	n->fence_arg = attr->fence_arg;
	n->force_open = attr->force_open;
	n->open_timeout_ms = attr->open_timeout_ms ? attr->open_timeout_ms : 10 * n->timeout_ms;
	n->lease_ms = attr->lease_ms ? attr->lease_ms : n->timeout_ms / 4;
	if (!attr->lease_ms && n->lease_ms < 100)
		n->lease_ms = 100;
	if (!attr->lease_ms && n->lease_ms > 2000)
		n->lease_ms = 2000;
	if (attr->hooks) {
		size_t len = attr->hooks->hooks_size < sizeof(n->hooks) ? attr->hooks->hooks_size
									: sizeof(n->hooks);

		memcpy(&n->hooks, attr->hooks, len);
	}
	n->nelems = attr->raid.nelems;
	if (attr->log_dir)
		snprintf(n->log_dir, sizeof(n->log_dir), "%s", attr->log_dir);

	/* The redundancy group and the volume on it. */
	ra = attr->raid;
	for (i = 0; i < n->nelems; i++) {
		ret = coh_store_open_file(attr->elem_paths[i], n->bsize, attr->elem_blocks, true,
					  &n->elems[i]);
		if (ret) {
			COH_LOG_ERR("node %u: element %s: %s", n->me, attr->elem_paths[i],
				    coh_strerror(ret));
			goto err_free;
		}
		ra.elems[i] = n->elems[i];
		/* Element writes are done by the writing thread itself (a pause cannot hold one
		 * in a kernel worker), and one the kernel interrupted is issued again only while
		 * the lease still allows it, as its first issue was (node_may_write). */
		ret = coh_store_set_write_gate(n->elems[i], node_may_write, n);
		if (ret)
			goto err_free;
	}
	ra.on_missing = node_elem_missing;
	ra.may_write = node_may_write;
	ra.arg = n;
	ret = coh_raid_new(&ra, &n->raid);
	if (ret) {
		COH_LOG_ERR("node %u: redundancy group: %s", n->me, coh_strerror(ret));
		goto err_free;
	}
	n->stripe_blocks = coh_raid_stripe_blocks(n->raid);
	n->vol_blocks = coh_raid_nblocks(n->raid);
	ret = coh_store_new(&vol_ops, n, n->bsize, n->vol_blocks, &n->vol);
	if (ret)
		goto err_free;
	ret = rlog_writer_init(&n->w, n->fab, n->bsize, n->log_bytes, n->timeout_ms, reclaim,
			       rlog_point, n);
	if (ret)
		goto err_free;
	ret = node_bg_init(n, attr->destage_high, attr->destage_low);
	if (ret)
		goto err_free;
	/* Log regions and the control plane; the membership thread connects to the others, and
	 * forms a cluster with them (or joins the one that runs), recovering first. */
	ret = membership_init(n);
	if (!ret)
		ret = node_wait_serving(n, n->open_timeout_ms);
	if (!ret)
		ret = io_start(n);
	if (!ret)
		ret = node_bg_start(n);
	if (ret) {
		COH_LOG_ERR("node %u: open: %s", n->me, coh_strerror(ret));
		goto err_free;
	}
	*nodep = n;
	return 0;

err_free:
	node_free(n);
	return ret;
}

int coh_node_close(struct coh_node **nodep)
{
	struct coh_node *n;
	int ret;

	if (!nodep || !*nodep)
		return 0;
	n = *nodep;
	/* The engine thread would wait for itself. */
	if (io_on_engine_thread(n))
		return -EDEADLK;
	*nodep = NULL;
	/* The background destage first: the leave destages everything itself. */
	node_bg_stop(n);
	/* Operations not yet started end with -ESHUTDOWN; the one running ends first. */
	io_stop(n);
	/* Destage, ask the others to, release, say goodbye: the others take over nothing when
	 * they see this node leave (membership.c, memb_leave). */
	ret = membership_leave(n);
	membership_stop(n);
	node_free(n);
	return ret;
}

uint64_t coh_node_nblocks(const struct coh_node *n)
{
	return n ? n->vol_blocks : 0;
}

uint32_t coh_node_block_size(const struct coh_node *n)
{
	return n ? n->bsize : 0;
}

int coh_node_read_cached(struct coh_node *n, uint64_t lba, void *buf)
{
	int ret = -EAGAIN;

	if (!n || !buf || lba >= n->vol_blocks)
		return -EINVAL;
	if (__atomic_load_n(&n->stopped, __ATOMIC_ACQUIRE) || pthread_rwlock_tryrdlock(&n->io))
		return -EAGAIN;
	if (n->cache)
		ret = coh_cache_read_cached(n->cache, lba, buf);
	pthread_rwlock_unlock(&n->io);
	return ret;
}

uint32_t coh_node_members(struct coh_node *n)
{
	uint32_t m;

	if (!n)
		return 0;
	pthread_mutex_lock(&n->state_lock);
	m = n->members;
	pthread_mutex_unlock(&n->state_lock);
	return m;
}

int coh_node_lock_holders(struct coh_node *n, uint64_t lba, uint32_t *owner, uint32_t *sharers)
{
	int ret = -EAGAIN;

	if (!n || !owner || !sharers || lba >= n->vol_blocks)
		return -EINVAL;
	/* A hint: a view change step that holds the cache is not waited for. */
	if (pthread_rwlock_tryrdlock(&n->io))
		return -EAGAIN;
	if (n->cache)
		ret = coh_cache_lock_holders(n->cache, lba, owner, sharers);
	pthread_rwlock_unlock(&n->io);
	return ret;
}

int coh_node_stats(struct coh_node *n, struct coh_node_stats *st)
{
	uint32_t i;

	if (!n || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&n->state_lock);
	st->epoch = n->epoch;
	st->members = n->members;
	st->quorum = n->quorum;
	st->view_changing = n->changing || n->forming;
	st->log_persistence = n->log_persistence;
	st->view_changes = n->view_changes;
	st->formations_failed = n->formations_failed;
	st->takeovers = n->takeovers;
	st->locks_taken = n->locks_taken;
	st->replayed_blocks = n->replayed_blocks;
	st->repaired_stripes = n->repaired_stripes;
	st->corrupt_records = n->corrupt_records;
	st->torn_records = n->torn_records;
	st->last_takeover_ns = n->last_takeover_ns;
	st->last_view_ns = n->last_view_ns;
	st->last_view_hold_ns = n->last_view_hold_ns;
	st->recoveries = n->recoveries;
	st->recovered_blocks = n->recovered_blocks;
	st->stale_records = n->stale_records;
	st->last_recovery_ns = n->last_recovery_ns;
	st->recovered_writers = n->recovered_writers;
	st->stopped = n->stopped;
	st->excluded_epoch = lease_excluded(n);
	st->log_copies_wanted = n->k;
	if (st->quorum) {
		uint32_t w;

		for (w = 0; w < n->nodes && w < 32; w++) {
			if (st->members >> w & 1)
				st->log_copies[w] = (uint32_t)__builtin_popcount(
				    node_log_peers(n->nodes, st->members, w, n->k));
			if ((st->members >> w & 1) && st->log_copies[w] < n->k)
				st->degraded = true;
		}
	}
	if (st->members != (uint32_t)((1ull << n->nodes) - 1))
		st->degraded = true;
	pthread_mutex_unlock(&n->state_lock);
	st->reads = atomic_load(&n->reads);
	st->writes = atomic_load(&n->writes);
	st->destages = atomic_load(&n->destages);
	st->log_bg_destages = atomic_load(&n->bg.rounds);
	st->log_bg_blocks = atomic_load(&n->bg.blocks);
	st->dead_waits = atomic_load(&n->dead_waits);
	/* Without the log writer's lock, which a round holds across its network waits (each
	 * counter on its own: struct rlog_writer). */
	st->log_appends = __atomic_load_n(&n->w.appended, __ATOMIC_RELAXED);
	st->log_retired = __atomic_load_n(&n->w.retired, __ATOMIC_RELAXED);
	st->log_backpressure = __atomic_load_n(&n->w.backpressure, __ATOMIC_RELAXED);
	st->log_used = __atomic_load_n(&n->w.used, __ATOMIC_RELAXED);
	st->log_size = n->w.region_len - RLOG_RING;
	st->log_superseded = __atomic_load_n(&n->w.superseded, __ATOMIC_RELAXED);
	st->log_group_rounds = __atomic_load_n(&n->w.group_commits, __ATOMIC_RELAXED);
	st->log_group_writes = __atomic_load_n(&n->w.group_writes, __ATOMIC_RELAXED);
	st->log_live = rlog_live_count(&n->w);
	st->log_moving = atomic_load(&n->relog_hold);
	st->elements_missing = coh_raid_missing(n->raid);
	st->abandon_pending = n->k && rlog_abandon_pending(&n->w);
	pthread_mutex_lock(&n->eng.lock);
	st->io_inflight = n->eng.inflight;
	pthread_mutex_unlock(&n->eng.lock);
	st->fence_agent_fenced = atomic_load(&n->agent_fenced);
	st->fence_agent_failed = atomic_load(&n->agent_failed);
	st->io_submitted = atomic_load(&n->eng.submitted);
	st->io_completed = atomic_load(&n->eng.completed);
	st->io_refused = atomic_load(&n->eng.refused);
	for (i = 0; i < COH_LAT_BUCKETS; i++) {
		st->lat_read[i] = atomic_load_explicit(&n->eng.lat[0][i], memory_order_relaxed);
		st->lat_write[i] = atomic_load_explicit(&n->eng.lat[1][i], memory_order_relaxed);
	}
	/* The cache, unless a view change step holds it (this call never waits for one). */
	if (!pthread_rwlock_tryrdlock(&n->io)) {
		struct coh_cache_stats cs;

		if (n->cache && !coh_cache_stats(n->cache, &cs)) {
			st->cache_valid = true;
			st->cache_hits = cs.hits;
			st->cache_misses = cs.misses;
			st->cache_peer_fetches = cs.peer_fetches;
			st->lock_requests = cs.lock_requests;
			st->lock_transfers = cs.lock_transfers;
			st->lock_grants_lost = cs.grants_lost;
			st->lock_replies_dropped = cs.replies_dropped;
		}
		pthread_rwlock_unlock(&n->io);
	}
	return 0;
}

int coh_node_wait_epoch(struct coh_node *n, uint32_t epoch, int timeout_ms)
{
	struct timespec until;
	int ret = 0;

	if (!n || timeout_ms < 0)
		return -EINVAL;
	/* commit() broadcasts view_cond whenever a view is put in place. */
	node_realtime_in(timeout_ms, &until);
	pthread_mutex_lock(&n->state_lock);
	while ((n->epoch < epoch || n->changing) && !ret)
		ret = -pthread_cond_timedwait(&n->view_cond, &n->state_lock, &until);
	if (!ret && !n->quorum)
		ret = -EROFS;
	pthread_mutex_unlock(&n->state_lock);
	return ret;
}

int coh_node_check(struct coh_node *n, uint64_t *bad)
{
	uint64_t s, ns;
	int ret = 0;

	if (!n || !bad)
		return -EINVAL;
	*bad = 0;
	ns = (n->vol_blocks + n->stripe_blocks - 1) / n->stripe_blocks;
	for (s = 0; s < ns && !ret; s++) {
		bool ok = true;

		ret = coh_raid_stripe_check(n->raid, s, &ok);
		if (!ret && !ok)
			(*bad)++;
	}
	return ret;
}

int coh_node_stop_cluster(struct coh_node *n, int timeout_ms)
{
	struct timespec until;
	int ret = 0;

	if (!n || timeout_ms < 0 || !n->m)
		return -EINVAL;
	pthread_mutex_lock(&n->state_lock);
	if (!n->quorum) {
		pthread_mutex_unlock(&n->state_lock);
		return n->stopped ? 0 : -EROFS;
	}
	n->m->stop_done = false;
	pthread_mutex_unlock(&n->state_lock);
	atomic_store(&n->m->stop_req, true);
	node_realtime_in(timeout_ms, &until);
	pthread_mutex_lock(&n->state_lock);
	while (!n->m->stop_done && !ret)
		ret = -pthread_cond_timedwait(&n->view_cond, &n->state_lock, &until);
	if (!ret)
		ret = n->m->stop_ret;
	pthread_mutex_unlock(&n->state_lock);
	return ret;
}
