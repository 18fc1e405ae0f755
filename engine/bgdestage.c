/*
 * bgdestage.c - background destage from a watermark: a per-node thread that, once this node's log
 * region is more than coh_node_attr.destage_high percent used, writes back the blocks whose live
 * records keep the log's tail where it is (the oldest first) until the use is at most
 * destage_low percent. Writers then rarely meet a full log, whose reclaim (node.c, reclaim)
 * destages everything this node holds while the writer waits; that stays as the last resort.
 *
 * The write-back is the cache's own (coh_cache_writeback: slot_clean, the destage hook, which is
 * vol_destage with its step slots and crash points, then the records' retirement), so that a
 * block written meanwhile, its records and the crash trials are handled as for a flush. It runs
 * with the node's I/O lock shared, as an operation does, one batch at a time, so a view change
 * waits for at most one batch. What it leaves out: destaging ahead of the cache's evictions (the
 * cache is direct-mapped; a slot is freed by its own eviction, and each dirty slot has a live
 * record, so bounding the log's use bounds the dirty slots too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "cohort/log.h"
#include "node_internal.h"

#define BG_BATCH 64u	/* blocks written back per hold of the I/O lock */
#define BG_IDLE_MS 1000 /* safety bound of the idle wait (a kick normally wakes it) */
#define BG_RETRY_MS 10	/* a round that stopped short of the low watermark, again */

/* bgd_kick - the log passed the high watermark (rlog_kick_fn; the log writer's lock is held,
 * so this only signals). */
static void bgd_kick(void *arg)
{
	struct coh_node *n = arg;

	if (atomic_exchange(&n->bg.kicked, true))
		return;
	pthread_mutex_lock(&n->bg.lock);
	pthread_cond_signal(&n->bg.cond);
	pthread_mutex_unlock(&n->bg.lock);
}

/* bgd_batch - write back the blocks of up to BG_BATCH of the oldest live records, holding the
 * I/O lock shared as an operation does. *@written is how many. 0, -EAGAIN (no cache: a view
 * change or a fence; or a view change asked for the I/O lock, coh_cache_yield, and the batch
 * gave way between two blocks), or the write-back's error. */
static int bgd_batch(struct coh_node *n, uint32_t *written)
{
	uint64_t lbas[BG_BATCH];
	uint32_t m;
	int ret;

	*written = 0;
	m = rlog_oldest_live(&n->w, lbas, BG_BATCH);
	if (!m)
		return 0;
	/* A view change step that pauses between batches looks for us (node_step_pause). */
	atomic_fetch_add(&n->io_wanted, 1);
	pthread_rwlock_rdlock(&n->io);
	atomic_fetch_sub(&n->io_wanted, 1);
	atomic_fetch_add(&n->io_taken, 1);
	ret = node_cache_writeback(n, lbas, m, written);
	pthread_rwlock_unlock(&n->io);
	return ret;
}

/* bgd_round - from above the high watermark down to the low one. A round stops early on an
 * error or when a batch writes nothing back (the oldest records' blocks are not dirty here: a
 * write replicated and not yet installed by another lane); it then stays @draining, and the
 * thread tries again after BG_RETRY_MS even below the high watermark. Writers go on meanwhile,
 * so the use may grow during a batch: only a batch that writes nothing ends the round. */
static void bgd_round(struct coh_node *n)
{
	uint64_t used = rlog_used(&n->w, NULL);
	int ret = 0;

	if (!n->bg.draining && used <= n->bg.high)
		return;
	if (!node_lease_ok(n))
		return;
	if (!n->bg.draining)
		atomic_fetch_add(&n->bg.rounds, 1);
	n->bg.draining = true;
	while (used > n->bg.low && !atomic_load(&n->bg.stop)) {
		uint32_t written;

		/* A writer met the full log and destages everything: out of its way. */
		if (atomic_load(&n->bg.reclaiming))
			break;
		ret = bgd_batch(n, &written);
		atomic_fetch_add(&n->bg.blocks, written);
		if (ret || !written)
			break;
		used = rlog_used(&n->w, NULL);
	}
	if (used <= n->bg.low)
		n->bg.draining = false;
	if (ret)
		COH_LOG_DBG("node %u: background destage stopped: %s", n->me, coh_strerror(ret));
}

/* bgd_main - the destage thread: a round per kick (or per BG_IDLE_MS), until node_bg_stop. */
static void *bgd_main(void *arg)
{
	struct coh_node *n = arg;

	pthread_mutex_lock(&n->bg.lock);
	while (!atomic_load(&n->bg.stop)) {
		if (!atomic_load(&n->bg.kicked)) {
			struct timespec until;

			node_realtime_in(n->bg.draining ? BG_RETRY_MS : BG_IDLE_MS, &until);
			pthread_cond_timedwait(&n->bg.cond, &n->bg.lock, &until);
			if (atomic_load(&n->bg.stop))
				break;
		}
		pthread_mutex_unlock(&n->bg.lock);
		/* Cleared before the round: an append past the watermark during it kicks again. */
		atomic_store(&n->bg.kicked, false);
		bgd_round(n);
		pthread_mutex_lock(&n->bg.lock);
	}
	pthread_mutex_unlock(&n->bg.lock);
	return NULL;
}

int node_bg_init(struct coh_node *n, uint32_t high_pct, uint32_t low_pct)
{
	uint64_t cap;

	memset(&n->bg, 0, sizeof(n->bg));
	/* Off unless asked for: a batch holds the I/O lock shared while it waits on the fabric,
	 * and one that waited on a dead peer held a view change past its timeout (once, on rdma
	 * in the rig). docs/concurrency.md, "Background destage". */
	if (!high_pct)
		high_pct = COH_NODE_DESTAGE_OFF;
	if (!low_pct)
		low_pct = high_pct / 2;
	if (high_pct > COH_NODE_DESTAGE_OFF || low_pct >= high_pct)
		return -EINVAL;
	pthread_mutex_init(&n->bg.lock, NULL);
	pthread_cond_init(&n->bg.cond, NULL);
	n->bg.inited = true;
	if (high_pct == COH_NODE_DESTAGE_OFF || !n->k)
		return 0; /* off; without a log (k = 0) there is nothing to reclaim */
	(void)rlog_used(&n->w, &cap);
	n->bg.high = cap * high_pct / 100;
	n->bg.low = cap * low_pct / 100;
	n->bg.on = true;
	return 0;
}

int node_bg_start(struct coh_node *n)
{
	int ret;

	if (!n->bg.on)
		return 0;
	ret = -pthread_create(&n->bg.thread, NULL, bgd_main, n);
	if (ret)
		return ret;
	n->bg.started = true;
	/* Only now: a kick before the thread exists would be a signal nobody waits for (harmless,
	 * the flag stays set), but the log must not call into a node whose thread failed. */
	pthread_mutex_lock(&n->w.lock);
	n->w.kick_above = n->bg.high;
	n->w.kick = bgd_kick;
	pthread_mutex_unlock(&n->w.lock);
	return 0;
}

void node_bg_stop(struct coh_node *n)
{
	if (!n->bg.inited)
		return;
	if (n->bg.started) {
		pthread_mutex_lock(&n->w.lock);
		n->w.kick = NULL;
		pthread_mutex_unlock(&n->w.lock);
		pthread_mutex_lock(&n->bg.lock);
		atomic_store(&n->bg.stop, true);
		pthread_cond_signal(&n->bg.cond);
		pthread_mutex_unlock(&n->bg.lock);
		pthread_join(n->bg.thread, NULL);
		n->bg.started = false;
	}
}

void node_bg_fini(struct coh_node *n)
{
	node_bg_stop(n);
	if (!n->bg.inited)
		return;
	pthread_cond_destroy(&n->bg.cond);
	pthread_mutex_destroy(&n->bg.lock);
	n->bg.inited = false;
}
