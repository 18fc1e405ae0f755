/*
 * coherence.c - the coherence protocol: acquiring resources (one CAS on the directory word, or
 * one request to the exclusive holder), invalidating sharers, serving other nodes' requests with
 * lazy release and in-order handover, and the block reads and writes built on them.
 *
 * Read hits and writes under a held exclusive lock touch only local memory. A read miss takes the
 * block from a peer's cache slot with one READ when a peer has it (checked by tag, version and
 * CRC), else from the store. An exclusive holder writes its dirty blocks back to the store before
 * it downgrades or hands over, so the store is never older than any clean copy.
 *
 * Node failure: an operation that needs a dead node (its home, its exclusive owner, a reply that
 * had to pass through it) returns -EAGAIN rather than waiting, so that the engine can run its
 * view change (view.c) and try again; operations that need only live nodes go on. Replication of
 * dirty data is the engine's, through the write hook.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <isa-l/crc.h>
#include <stdlib.h>
#include <string.h>

#include "cache_internal.h"

/* cache_realtime_in - @ts is @ms from now on the clock condition variables wait on. */
void cache_realtime_in(int ms, struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_nsec += (long)ms * 1000000;
	while (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static uint32_t block_crc(const struct coh_cache *c, const uint8_t *data)
{
	return crc32_iscsi((unsigned char *)data, (int)c->bsize, 0);
}

/* cache_invalidated - a writer has taken the resource since this node's shared tenure began:
 * its invalidation word changed (see inv_token). Lock held. */
bool cache_invalidated(const struct coh_cache *c, uint64_t r)
{
	return atomic_load_explicit(inv_word(c, r), memory_order_acquire) != c->res[r].inv_base;
}

/* cache_lease_ok - this node may still serve: its lease, renewed by the engine through contact
 * with a majority, runs past now on the precise clock (the coarse one lags it by a tick). */
bool cache_lease_ok(const struct coh_cache *c)
{
	return !c->lease ||
	       cache_now_ms() + c->lease_slack_ms < __atomic_load_n(c->lease, __ATOMIC_ACQUIRE);
}

/*
 * cache_new_tenure - a tenure of @r is about to begin from nothing: empty the slots that still
 * hold its blocks from an earlier one, before this node's bit or name can appear in the word (a
 * peer that READs a slot checks only its version, which may have wrapped since). Lock held.
 */
void cache_new_tenure(struct coh_cache *c, uint64_t r)
{
	struct res_state *st = res_of(c, r);
	uint64_t lba, end = (r + 1) * c->res_blocks;

	if (st->fresh)
		return;
	if (end > c->nblocks)
		end = c->nblocks;
	for (lba = r * c->res_blocks; lba < end; lba++) {
		struct slot_hdr *h = slot_of(c, lba);

		if (atomic_load_explicit(&h->tag, memory_order_relaxed) != lba + 1)
			continue;
		/* Every tenure ends with its dirty blocks written back (a handover, a flush):
		 * one still dirty here is older than the store, and must not reach it. */
		if (h->dirty)
			COH_LOG_ERR(
			    "node %u: block %llu still dirty after its tenure ended; dropped",
			    c->me, (unsigned long long)lba);
		atomic_store_explicit(&h->tag, 0, memory_order_release);
		h->dirty = 0;
	}
	st->fresh = true;
}

static bool slot_valid(const struct coh_cache *c, uint64_t lba, const struct res_state *st)
{
	const struct slot_hdr *h = slot_of(c, lba);

	return atomic_load_explicit(&h->tag, memory_order_relaxed) == lba + 1 &&
	       (h->rv == st->lv || h->rv == st->cv);
}

/* slot_destage - write the dirty block in @h (of @lba) back to the store: through the engine's
 * destage hook, with the sequence its data was written with, when there is one. Lock held. */
static int slot_destage(struct coh_cache *c, const struct slot_hdr *h, uint64_t lba)
{
	const uint8_t *d = (const uint8_t *)h + SLOT_HDR;

	return c->destage ? c->destage(c->hook_arg, lba, 1, d, h->seq)
			  : coh_store_write(c->store, lba, 1, d);
}

/* slot_evict - before @h is reused for @lba, write back the dirty block of another address it
 * holds. Lock held. */
static int slot_evict(struct coh_cache *c, struct slot_hdr *h, uint64_t lba)
{
	uint64_t tag = atomic_load_explicit(&h->tag, memory_order_relaxed);
	int ret;

	if (!tag || tag == lba + 1 || !h->dirty)
		return 0;
	ret = slot_destage(c, h, tag - 1);
	CTRACE(c, "evict lba %llu val %llx rv %u ret %d", (unsigned long long)tag - 1,
	       (unsigned long long)*(uint64_t *)((uint8_t *)h + SLOT_HDR), h->rv, ret);
	if (!ret)
		CACHE_STAT(c, store_writes, 1);
	return ret;
}

/* wb_wait - wait a little (1 ms at most) for a write-back from a slot to end; the caller looks
 * again. Lock held; dropped while waiting. The thread counts as asleep, so another lane runs. */
static void wb_wait(struct coh_cache *c)
{
	struct timespec ts;

	cache_realtime_in(1, &ts);
	c->wb_waiters++;
	coh_thread_sleeping(true);
	pthread_cond_timedwait(&c->wb_cond, &c->lock, &ts);
	coh_thread_sleeping(false);
	c->wb_waiters--;
}

/*
 * slot_wb_drop - write back the dirty block of @lba that @h holds, with the lock dropped while it
 * is written: slot_hdr.wb keeps everyone off the slot meanwhile, and res_state.wb keeps its
 * resource from being handed on by anyone but the service thread that is doing so (serve). Lock
 * held on entry and on return; @h holds @lba, dirty, with no write-back in flight.
 */
static int slot_wb_drop(struct coh_cache *c, struct slot_hdr *h, uint64_t lba)
{
	uint64_t r = lba / c->res_blocks;
	struct res_state *st = res_of(c, r);
	int ret;

	h->wb = 1;
	st->wb++;
	pthread_mutex_unlock(&c->lock);
	ret = slot_destage(c, h, lba);
	pthread_mutex_lock(&c->lock);
	CTRACE(c, "clean lba %llu val %llx rv %u ret %d", (unsigned long long)lba,
	       (unsigned long long)*(uint64_t *)((uint8_t *)h + SLOT_HDR), h->rv, ret);
	h->wb = 0;
	st->wb--;
	if (!ret) {
		h->dirty = 0;
		CACHE_STAT(c, store_writes, 1);
	}
	if (c->wb_waiters)
		pthread_cond_broadcast(&c->wb_cond);
	/* A request that waited for the write-back to end. */
	if (!st->wb && st->head)
		cache_kick(c, r);
	return ret;
}

/*
 * slot_clean - make @h ready for a block of @lba (UINT64_MAX: for none, just clean): no
 * write-back from it in flight, and no dirty block of another address in it. That block is
 * written back with the lock dropped (slot_wb_drop): the other lanes and the service thread go
 * on. Lock held on entry and on return; dropped while waiting and writing. Returns 0,
 * -ETIMEDOUT (by @deadline, ms), or the write-back's error.
 */
static int slot_clean(struct coh_cache *c, struct slot_hdr *h, uint64_t lba, uint64_t deadline)
{
	for (;;) {
		uint64_t tag = atomic_load_explicit(&h->tag, memory_order_relaxed);
		int ret;

		if (h->wb) {
			if (cache_now_ms() >= deadline)
				return -ETIMEDOUT;
			wb_wait(c);
			continue;
		}
		if (!tag || tag == lba + 1 || !h->dirty)
			return 0;
		ret = slot_wb_drop(c, h, tag - 1);
		if (ret)
			return ret;
	}
}

/* slot_install - put a block in its slot, writing back the dirty block it evicts (under the
 * lock: callers make the slot ready first with slot_clean, so this is the rare case of one write
 * whose blocks share a slot); a dirty one with the write hook's sequence @seq. Lock held, and no
 * write-back from the slot in flight. */
static int slot_install(struct coh_cache *c, uint64_t lba, const void *data, uint32_t rv,
			bool dirty, uint64_t seq)
{
	struct slot_hdr *h = slot_of(c, lba);
	uint8_t *d = (uint8_t *)h + SLOT_HDR;
	int ret;

	ret = slot_evict(c, h, lba);
	if (ret)
		return ret;
	/* Peers may be reading this slot: clear the tag first, so that a read racing the refill
	 * sees no tag or a CRC that does not match, never a mix it accepts. */
	atomic_store_explicit(&h->tag, 0, memory_order_release);
	atomic_thread_fence(memory_order_release);
	memcpy(d, data, c->bsize);
	h->rv = rv;
	h->crc = block_crc(c, d);
	h->dirty = dirty;
	h->seq = seq;
	atomic_store_explicit(&h->tag, lba + 1, memory_order_release);
	return 0;
}

/*
 * serve_writeback - write the dirty blocks of @r back to the store before it is handed on, each
 * with the lock dropped while it is written (slot_wb_drop; res_state.srv keeps this node's lanes
 * off @r meanwhile). A lane may be writing one of them back already, to make room in its slot:
 * that one is waited for, since the next holder reads the store. Lock held on entry and on
 * return. Returns 0, -ETIMEDOUT (by @deadline, ms) or the write-back's error.
 */
static int serve_writeback(struct coh_cache *c, uint64_t r, uint64_t deadline)
{
	uint64_t lba, end = (r + 1) * c->res_blocks;
	int ret;

	if (end > c->nblocks)
		end = c->nblocks;
	for (lba = r * c->res_blocks; lba < end; lba++) {
		struct slot_hdr *h = slot_of(c, lba);

		for (;;) {
			if (atomic_load(&h->tag) != lba + 1)
				break;
			if (h->wb) {
				if (cache_now_ms() >= deadline)
					return -ETIMEDOUT;
				wb_wait(c);
				continue;
			}
			if (!h->dirty)
				break;
			ret = slot_wb_drop(c, h, lba);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* cache_writeback_all - every dirty block back to the store, each with the lock dropped while it
 * is written (slot_clean), then the store flushed. */
int cache_writeback_all(struct coh_cache *c)
{
	uint64_t deadline = cache_now_ms() + c->timeout_ms;
	uint32_t i;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < c->nslots && !ret; i++)
		ret = slot_clean(c, (struct slot_hdr *)(c->slots + (size_t)i * c->stride),
				 UINT64_MAX, deadline);
	pthread_mutex_unlock(&c->lock);
	return ret ? ret : coh_store_flush(c->store);
}

/*
 * inval_write - write a fresh invalidation token into the invalidation word of @r at each node
 * of @sharers (not this one, nor a fenced one) through @x, and wait for every completion.
 * Returns the sharers whose write did not land, whatever the reason (a dead peer, a region
 * re-keyed by a view change, a lost connection): they are owed one. Caller's thread owns @x;
 * no lock needed.
 */
static uint32_t inval_write(struct coh_cache *c, struct xport *x, uint64_t r, uint32_t sharers,
			    uint32_t *sent)
{
	uint64_t val = inv_token(c->me, atomic_fetch_add(&c->inv_count, 1) + 1);
	uint32_t n, count = 0, failed = 0;

	*sent = 0;
	if (xp_ready(x))
		return sharers & ~(1u << c->me) & ~atomic_load(&c->dead);
	memcpy((uint8_t *)coh_mr_addr(x->buf) + x->bounce_off, &val, sizeof(val));
	x->wr_failed = 0;
	for (n = 0; n < c->nodes; n++) {
		int r1;

		/* A dead sharer's copy died with it. */
		if (!(sharers & 1u << n) || n == c->me || node_dead(c, n))
			continue;
		r1 = x->one[n] && x->inv[n]
			 ? coh_ep_post_write(x->one[n], x->buf, x->bounce_off, x->inv[n],
					     inv_off_at(x->inv[n], r), 8, XP_WRID_NODE | n)
			 : -ENOTCONN;
		if (r1) {
			failed |= 1u << n;
			continue;
		}
		x->outstanding++;
		count++;
	}
	if (count && xp_wait_sends(x) == -ETIMEDOUT)
		failed |= sharers & ~(1u << c->me); /* not known to have landed */
	failed |= x->wr_failed;
	atomic_fetch_add(&c->net_write, count);
	*sent = count;
	return failed & ~atomic_load(&c->dead);
}

/* Serving requests (service thread). */

/* reply_skip - @p is a peer a reply timed out on less than a timeout ago (see reply_send). */
static bool reply_skip(struct coh_cache *c, uint32_t p)
{
	return p < 32 && (atomic_load(&c->unreach) >> p & 1) &&
	       cache_now_ms() - atomic_load(&c->unreach_ms[p]) < c->timeout_ms;
}

/* reply_make - the answer of @type to @req. */
static struct cmsg reply_make(const struct coh_cache *c, const struct cmsg *req, uint8_t type,
			      uint32_t version, uint32_t holder_v)
{
	struct cmsg m = { .type = type,
			  .mode = req->mode,
			  .requester = req->requester,
			  .resource = req->resource,
			  .version = version,
			  .holder = c->me,
			  .holder_v = holder_v,
			  .seq = req->seq };

	m.lane = req->lane;
	return m;
}

/* reply_send - send answer @m to its requester's lane, and wait for it to leave. Service thread;
 * the lock not held. */
static void reply_send(struct coh_cache *c, const struct cmsg *m)
{
	uint32_t p = m->requester;
	int ret;

	/* Fenced since it asked (coh_cache_fence): it is sent nothing. */
	if (node_dead(c, p))
		return;

	/* A peer that a reply just failed to reach gets nothing for a timeout: what was sent to
	 * it would fail the same way, one transport timeout each, while every other node's
	 * requests wait for the service thread. Its request times out there and is asked again,
	 * as after a lost reply. */
	if (reply_skip(c, p)) {
		atomic_fetch_add(&c->replies_dropped, 1);
		return;
	}
	ret = xp_send(&c->svc, c->to_lane[p][m->lane], m);
	if (ret == -ETIMEDOUT && p < 32) {
		atomic_store(&c->unreach_ms[p], cache_now_ms());
		atomic_fetch_or(&c->unreach, 1u << p);
	} else if (!ret && p < 32) {
		atomic_fetch_and(&c->unreach, ~(1u << p));
	}
	if (ret)
		COH_LOG_WARN("node %u: reply to %u: %s", c->me, p, coh_strerror(ret));
}

static void reply(struct coh_cache *c, const struct cmsg *req, uint8_t type, uint32_t version,
		  uint32_t holder_v)
{
	struct cmsg m = reply_make(c, req, type, version, holder_v);

	reply_send(c, &m);
}

/* svc_send - send one message of the outbox. Service thread; the lock not held. */
static void svc_send(struct coh_cache *c, const struct svc_out *o)
{
	int ret;

	if (!o->fwd) {
		reply_send(c, &o->m);
		/* The grant is on its way; the waiters handed over with it are not yet. */
		if (o->m.type == CMSG_GRANT)
			cache_point(c, COH_CACHE_PT_SERVE_SENT, o->m.resource);
		return;
	}
	/* Fenced since: the waiter, or the new owner it was to be handed to, is gone. */
	if (node_dead(c, o->to) || node_dead(c, o->m.requester))
		return;
	ret = xp_send(&c->svc, c->svc.to_svc[o->to], &o->m);
	CTRACE(c, "handover queued r%llu req n%u seq %llx to n%u ret %d",
	       (unsigned long long)o->m.resource, o->m.requester, (unsigned long long)o->m.seq,
	       o->to, ret);
}

/* svc_post - put a message in the outbox, for svc_flush once the lock is dropped. If the outbox
 * cannot grow, what it holds and this are sent at once, in order, under the lock, as every
 * answer was before the outbox: slower for the others, not wrong. Lock held. */
static void svc_post(struct coh_cache *c, const struct cmsg *m, uint32_t to, bool fwd)
{
	struct svc_out o = { .m = *m, .to = to, .fwd = fwd };
	uint32_t i;

	if (c->n_out == c->cap_out) {
		uint32_t cap = c->cap_out ? c->cap_out * 2 : 16;
		struct svc_out *no = realloc(c->out, cap * sizeof(*no));

		if (!no) {
			for (i = 0; i < c->n_out; i++)
				svc_send(c, &c->out[i]);
			c->out_done += c->n_out;
			c->n_out = 0;
			pthread_cond_broadcast(&c->out_cond);
			svc_send(c, &o);
			return;
		}
		c->out = no;
		c->cap_out = cap;
	}
	c->out[c->n_out++] = o;
	c->out_posted++;
}

/* svc_answer - post the answer of @type to @req (svc_post). Lock held. */
static void svc_answer(struct coh_cache *c, const struct cmsg *req, uint8_t type, uint32_t version,
		       uint32_t holder_v)
{
	struct cmsg m = reply_make(c, req, type, version, holder_v);

	svc_post(c, &m, 0, false);
}

/* svc_flush - send what the outbox holds, in the order it was posted. Service thread; the lock
 * not held. */
static void svc_flush(struct coh_cache *c)
{
	uint32_t i, n = c->n_out;

	if (!n)
		return;
	for (i = 0; i < n; i++)
		svc_send(c, &c->out[i]);
	c->n_out = 0;
	pthread_mutex_lock(&c->lock);
	c->out_done += n;
	pthread_cond_broadcast(&c->out_cond);
	pthread_mutex_unlock(&c->lock);
}

/*
 * serve_refuse - answer @req RETRY, and every request queued behind it too: the resource stays
 * here for now (its home is being rebuilt, a write-back failed, this node's lease lapsed), and a
 * request left in the queue would wait for a kick that only a pin dropping gives. Each requester
 * reads the word again and asks again, within its own deadline. The answers go once the lock is
 * dropped (svc_flush). Lock held.
 */
static void serve_refuse(struct coh_cache *c, struct res_state *st, const struct cmsg *req)
{
	struct req *q;

	svc_answer(c, req, CMSG_RETRY, 0, 0);
	while ((q = st->head)) {
		st->head = q->next;
		if (!node_dead(c, q->m.requester))
			svc_answer(c, &q->m, CMSG_RETRY, 0, 0);
		free(q);
	}
	st->tail = NULL;
}

/* serve_wb_why - what a failed write-back's @ret means, for the log. The store's -EAGAIN is the
 * engine's write gate (node_may_write: the lease ran out, or is in the last eighth it keeps to
 * spare) or a fabric queue that was full, not only the latter (coh_strerror's words). */
static const char *serve_wb_why(struct coh_cache *c, int ret)
{
	if (ret != -EAGAIN)
		return coh_strerror(ret);
	return cache_lease_ok(c)
		   ? "refused for now: the lease is about to run out, or a queue was full"
		   : "the lease ran out";
}

/* serve_held - a record of this node's that a recovery could replay may be live on a peer
 * (coh_cache_attr.hold_locks): nothing leaves until it is not. The hook may retire such records
 * (fabric round trips), so it is asked with the lock dropped: before the write-back, and again
 * after it, since the write-back itself can make one (a batch's records, an element found
 * missing). */
static bool serve_held(struct coh_cache *c)
{
	return c->hold_locks && c->hold_locks(c->hook_arg);
}

/* serve_check - why @req cannot have the resource now (a word for the trace), or NULL. Looked at
 * before the hand-over begins and again after the lock was dropped for it. Lock held. */
static const char *serve_check(struct coh_cache *c, const struct cmsg *req)
{
	/* The word is being rebuilt (or the requester is gone): keep the resource; the
	 * requester asks again once the view change is done. */
	if (node_dead(c, res_home(c, req->resource)) || node_dead(c, req->requester))
		return "dead";
	/* Its grant would not be sent (reply_send): the word would name it with no grant on its
	 * way, which only a timeout there mends (acq_lost_grant). Keep the resource until it
	 * answers again; it asks again. */
	if (reply_skip(c, req->requester))
		return "unreachable";
	/* The others may have excluded this node and taken its locks over: its dirty blocks
	 * must not reach the store, nor its grants anyone. */
	if (!cache_lease_ok(c))
		return "lease";
	return NULL;
}

/*
 * serve - give @req what it asks for on a resource this node holds exclusively and is not
 * using. Lock held on entry and on return; dropped across every network wait: the invalidations
 * this node owes, the write-back of its dirty blocks, and the CAS that moves the word. The
 * resource stays marked meanwhile (res_state.srv: this node's lanes and read hits keep off it,
 * as the spin model's pin does: cache/model/coherence.pml, serve), and the answers and forwards
 * wait in the outbox for svc_flush. What the lock no longer keeps out, the fence does: it waits
 * for a hand-over between its CAS and its new state, then for the grant to leave (svc_cas,
 * out_posted), so that no claim sees the word moved and the resource still held here.
 */
static void serve(struct coh_cache *c, struct res_state *st, const struct cmsg *req)
{
	uint64_t r = req->resource, deadline = cache_now_ms() + c->timeout_ms;
	uint64_t expect, want, got = 0;
	const char *why;
	uint32_t v, owed;
	struct req *q;
	bool held;
	int ret;

	why = serve_check(c, req);
	if (why)
		goto refuse;
	st->srv = true;
	pthread_mutex_unlock(&c->lock);
	held = serve_held(c);
	pthread_mutex_lock(&c->lock);
	if (held) {
		why = "held";
		goto refuse_srv;
	}
	owed = st->owed & ~atomic_load(&c->dead);
	if (owed) {
		/* Invalidations this node owes for the resource land before anyone else gets it:
		 * a grant involves none, so the copies would stay readable. */
		uint32_t sent, left;

		pthread_mutex_unlock(&c->lock);
		left = inval_write(c, &c->svc, r, owed, &sent);
		pthread_mutex_lock(&c->lock);
		CACHE_STAT(c, inval_sent, sent);
		st->owed = (st->owed & ~owed) | left;
		if (left) {
			why = "owes";
			goto refuse_srv;
		}
	}
	ret = serve_writeback(c, r, deadline);
	if (ret) {
		/* Until a view change takes the failed peer out, the requester asks again: say so
		 * once in a while, not each time. */
		if (c->wb_failures++ % 1000 == 0)
			COH_LOG_ERR("node %u: write-back of resource %llu failed (%s); keeping it "
				    "(%llu such failures)",
				    c->me, (unsigned long long)r, serve_wb_why(c, ret),
				    (unsigned long long)c->wb_failures);
		why = "write-back";
		goto refuse_srv;
	}
	pthread_mutex_unlock(&c->lock);
	cache_point(c, COH_CACHE_PT_SERVE_WB, r);
	held = serve_held(c);
	pthread_mutex_lock(&c->lock);
	/* While the lock was dropped a view change may have fenced a node or taken the resource
	 * over, the engine may hold its locks, or the lease may have run out. */
	why = held ? "held" : serve_check(c, req);
	if (!why && (st->level != L_X || st->tk || st->pinned || st->wb ||
		     (st->owed & ~atomic_load(&c->dead))))
		why = "changed";
	if (why)
		goto refuse_srv;
	v = st->lv;
	expect = dir_make(true, c->me, 0, v);
	if (req->mode == MODE_S) {
		want = dir_make(false, 0, 1u << c->me | 1u << req->requester, v);
		/* This node stays a sharer: its copy is invalidated by any change of its word
		 * from here on (the CAS below comes first for any writer). */
		st->inv_base = atomic_load_explicit(inv_word(c, r), memory_order_acquire);
	} else {
		want = dir_make(true, req->requester, 0, v + 1);
	}
	/* The CAS with the lock dropped too: the resource stays marked (srv), and the fence waits
	 * for the hand-over's new state and grant before it lets anyone claim (svc_cas). */
	c->svc_cas = true;
	pthread_mutex_unlock(&c->lock);
	ret = xp_cas(&c->svc, r, expect, want, &got);
	if (!ret && got == expect)
		cache_point(c, COH_CACHE_PT_SERVE_CAS, r);
	pthread_mutex_lock(&c->lock);
	c->svc_cas = false;
	c->cas_gen++;
	pthread_cond_broadcast(&c->out_cond);
	CTRACE(c, "serve r%llu to n%u mode %u seq %llx cas %llx->%llx got %llx ret %d",
	       (unsigned long long)r, req->requester, req->mode, (unsigned long long)req->seq,
	       (unsigned long long)expect, (unsigned long long)want, (unsigned long long)got, ret);
	if (ret || got != expect) {
		/* Unreachable: its home died and the fence has not come yet, or the regions were
		 * re-keyed and the new descriptors are not in yet. Otherwise a word that is not
		 * ours while we hold the resource is a protocol error. */
		if (ret)
			COH_LOG_INFO("node %u: directory of resource %llu: %s", c->me,
				     (unsigned long long)r, coh_strerror(ret));
		else
			COH_LOG_ERR("node %u: directory of resource %llu is %llx, not ours", c->me,
				    (unsigned long long)r, (unsigned long long)got);
		why = "cas";
		goto refuse_srv;
	}
	st->dir_guess = want;
	st->obs_gen = atomic_load(&c->fence_gen);
	st->level = req->mode == MODE_S ? L_S : L_I;
	st->cv = v;
	st->srv = false;
	pthread_cond_broadcast(&c->kick_cond);
	CACHE_STAT(c, lock_transfers, 1);
	svc_answer(c, req, CMSG_GRANT, dir_ver(want), v);
	/* The waiters behind this one: after a handover they belong to the new owner, in order;
	 * after a downgrade nobody holds the resource exclusively, so they retry their CAS. */
	while ((q = st->head)) {
		st->head = q->next;
		if (node_dead(c, q->m.requester) || q->m.requester == req->requester)
			;
		else if (req->mode == MODE_X)
			svc_post(c, &q->m, req->requester, true);
		else
			svc_answer(c, &q->m, CMSG_RETRY, 0, 0);
		free(q);
	}
	st->tail = NULL;
	return;

refuse_srv:
	st->srv = false;
	pthread_cond_broadcast(&c->kick_cond);
refuse:
	CTRACE(c, "serve r%llu to n%u: retry (%s)", (unsigned long long)r, req->requester, why);
	serve_refuse(c, st, req);
}

/* enqueue - put a request at the tail of @st's queue: requests are served in the order they
 * arrived here. Lock held. */
static void enqueue(struct coh_cache *c, struct res_state *st, const struct cmsg *m)
{
	struct req *q = calloc(1, sizeof(*q));

	if (!q) {
		COH_LOG_ERR("out of memory queueing a lock request; it will time out");
		return;
	}
	CACHE_STAT(c, lock_queued, 1);
	q->m = *m;
	if (st->tail)
		st->tail->next = q;
	else
		st->head = q;
	st->tail = q;
}

void svc_handle(struct coh_cache *c, const struct cmsg *m)
{
	struct res_state *st = res_of(c, m->resource);
	uint64_t cur;
	int ret;

	if (m->type != CMSG_REQ) {
		COH_LOG_WARN("node %u: unexpected message type %u from %u", c->me, m->type,
			     m->requester);
		return;
	}
	/* Our own request, forwarded back to us with a queue handed over: a copy of one our
	 * application thread sent again after a fence. It holds or asks on its own. */
	if (node_dead(c, m->requester) || m->requester == c->me)
		return;
	pthread_mutex_lock(&c->lock);
	if (st->level == L_X) {
		if (st->pinned || st->tk || st->head || st->wb)
			enqueue(c, st, m);
		else
			serve(c, st, m);
		pthread_mutex_unlock(&c->lock);
		svc_flush(c);
		return;
	}
	pthread_mutex_unlock(&c->lock);
	if (node_dead(c, res_home(c, m->resource))) {
		reply(c, m, CMSG_RETRY, 0, 0);
		return;
	}
	/* Not ours (any more): ask the directory who has it. A CAS that expects 0 and swaps 0
	 * reads the word without changing it. */
	ret = xp_cas(&c->svc, m->resource, 0, 0, &cur);
	if (ret) {
		/* Its home is unreachable or its region was just re-keyed (a view change): the
		 * requester asks again rather than wait out its timeout. */
		COH_LOG_INFO("node %u: directory read for node %u: %s", c->me, m->requester,
			     coh_strerror(ret));
		reply(c, m, CMSG_RETRY, 0, 0);
		return;
	}
	CTRACE(c, "svc r%llu from n%u seq %llx: not held, word %llx",
	       (unsigned long long)m->resource, m->requester, (unsigned long long)m->seq,
	       (unsigned long long)cur);
	if (dir_excl(cur) && dir_owner(cur) == c->me) {
		/* Our application thread is between its CAS and taking the resource, or a grant
		 * to it is in flight: the request waits for it. The grant may also have reached a
		 * lane whose operation gave up before it came (a timeout, a view change's yield)
		 * and which no operation uses now: nobody would ever take it in, and the request
		 * would wait for it for good. Take in the idle lanes' grants first (svc_main does
		 * again while requests wait). */
		cache_take_idle_lanes(c);
		pthread_mutex_lock(&c->lock);
		if (st->level == L_X && !st->pinned && !st->tk && !st->head && !st->wb)
			serve(c, st, m);
		else
			enqueue(c, st, m);
		pthread_mutex_unlock(&c->lock);
		svc_flush(c);
	} else if (dir_excl(cur) && dir_owner(cur) != m->requester &&
		   !node_dead(c, dir_owner(cur))) {
		ret = xp_send(&c->svc, c->svc.to_svc[dir_owner(cur)], m);
		if (ret) {
			COH_LOG_INFO("node %u: forward: %s", c->me, coh_strerror(ret));
			reply(c, m, CMSG_RETRY, 0, 0);
		}
	} else {
		reply(c, m, CMSG_RETRY, 0, 0);
	}
}

void svc_serve_queued(struct coh_cache *c)
{
	pthread_mutex_lock(&c->lock);
	while (c->n_kick) {
		uint64_t r = c->kick[--c->n_kick];
		struct res_state *st = res_of(c, r);
		struct req *q = st->head;

		if (!q || st->pinned || st->tk || st->level != L_X || st->wb)
			continue;
		st->head = q->next;
		if (!st->head)
			st->tail = NULL;
		serve(c, st, &q->m);
		free(q);
		/* Its answers, before the next: none is sent with the lock held. */
		if (c->n_out) {
			pthread_mutex_unlock(&c->lock);
			svc_flush(c);
			pthread_mutex_lock(&c->lock);
		}
	}
	/* An application thread may be waiting for the queue of a resource to drain. */
	pthread_cond_broadcast(&c->kick_cond);
	pthread_mutex_unlock(&c->lock);
}

/* Acquiring (application thread). */

/* cache_kick - tell the service thread that requests queued on @r can be served. Lock held. */
void cache_kick(struct coh_cache *c, uint64_t r)
{
	uint32_t i;

	for (i = 0; i < c->n_kick; i++) {
		if (c->kick[i] == r)
			return;
	}
	if (c->n_kick == c->cap_kick) {
		uint32_t cap = c->cap_kick ? c->cap_kick * 2 : 16;
		uint64_t *k = realloc(c->kick, cap * sizeof(*k));

		if (k) {
			c->kick = k;
			c->cap_kick = cap;
		}
	}
	if (c->n_kick < c->cap_kick)
		c->kick[c->n_kick++] = r;
	c->svc_kick = true;
	coh_cq_wake(c->svc.cq); /* it may sleep on the fabric: no message announces this */
}

static void unpin(struct coh_cache *c, uint64_t r)
{
	struct res_state *st = res_of(c, r);

	pthread_mutex_lock(&c->lock);
	st->pinned = false;
	if (st->head)
		cache_kick(c, r);
	pthread_mutex_unlock(&c->lock);
}

/*
 * cache_set_floor - a fresh look at the word (a CAS's result, a grant just applied, a word just
 * taken) says versions up to @v are over or held here. Assigned, not raised: the word is the
 * truth about versions, and a floor kept from long ago may be on the far side of a wrap, where
 * no comparison means anything. Lock held.
 */
void cache_set_floor(struct coh_cache *c, struct res_state *st, uint32_t v)
{
	st->vfloor = v & DIR_VER_MASK;
	st->obs_gen = atomic_load_explicit(&c->fence_gen, memory_order_relaxed);
}

/*
 * cache_apply_grant - take a grant into the local state (lock held). @current: it answers the
 * request this thread waits for now. Returns false for a grant that is old news.
 *
 * Every grant is a tenure its giver made with a CAS: an exclusive handover or an upgrade moves
 * the version on, and a downgrade grants the giver's version, which the receiver never had. So a
 * real grant is later than every version its receiver has held, and later than the version before
 * any word it has seen since. Each resource keeps that bound (@vfloor, set on every grant, CAS,
 * adoption and takeover to what the word said then), and a grant at or before it is a tenure
 * already counted here: a duplicate, or one that arrived after the resource came by other means
 * (adopted, or a copy of the request answered first), perhaps after the node had passed it on and
 * had a later version since. Applying it would make two exclusive holders. A grant that answers
 * the current request is new by definition; and one for an older copy of a request is new when its
 * version is (the copy was served after the node let the resource go). The floor is refreshed
 * before every request (acquire looks at the word first after a fence), so the comparison is
 * always between two recent versions, whatever the width of the field.
 *
 * An exclusive holder ignores a grant not later than its own version whatever it answers: the
 * tenure is the same (adopted, then the grant), and the giver's copy is older than this tenure's
 * writes.
 *
 * A grant that begins a tenure from nothing empties the resource's old slots first; a shared
 * grant that answers no current request counts as invalidated at once (this node cannot tell
 * which invalidations since its giver's CAS were meant for it), so its first use looks at the
 * word again.
 */
bool cache_apply_grant(struct coh_cache *c, const struct cmsg *m, bool current)
{
	struct res_state *st = res_of(c, m->resource);

	if ((st->level == L_X && !ver_after(m->version, st->lv)) ||
	    (!current && st->seen && !ver_after(m->version, st->vfloor))) {
		CTRACE(c, "grant r%llu v%u from n%u seq %llx IGNORED (lv %u)",
		       (unsigned long long)m->resource, m->version, m->holder,
		       (unsigned long long)m->seq, st->lv);
		return false;
	}
	CTRACE(c, "grant r%llu mode %u v%u from n%u hv %u seq %llx (was level %u lv %u)",
	       (unsigned long long)m->resource, m->mode, m->version, m->holder, m->holder_v,
	       (unsigned long long)m->seq, st->level, st->lv);

	if (st->level == L_I && !current)
		cache_new_tenure(c, m->resource);
	if (m->mode == MODE_S && !current)
		st->inv_base =
		    ~atomic_load_explicit(inv_word(c, m->resource), memory_order_acquire);
	st->level = m->mode == MODE_X ? L_X : L_S;
	st->mine_at = 0;
	cache_set_floor(c, st, m->version);
	st->lv = m->version;
	st->cv = m->holder_v;
	st->holder = m->holder;
	st->holder_v = m->holder_v;
	st->seen = true;
	st->fresh = false;
	st->dir_guess = m->mode == MODE_X
			    ? dir_make(true, c->me, 0, m->version)
			    : dir_make(false, 0, 1u << c->me | 1u << m->holder, m->version);
	return true;
}

/*
 * grant_take - take in @m, a grant that answers no request @x waits for now: applied, unless
 * another lane has claimed its resource; then it is left for that lane (coh_cache.deferred).
 * Returns what cache_apply_grant returns (false when deferred). Lock held.
 */
static bool grant_take(struct coh_cache *c, struct xport *x, const struct cmsg *m)
{
	uint8_t cl = res_of(c, m->resource)->claim;

	if (cl && cl != x->lane + 1 && c->n_deferred < CACHE_DEFER_MAX) {
		CTRACE(c, "grant r%llu seq %llx deferred to lane %u",
		       (unsigned long long)m->resource, (unsigned long long)m->seq, cl - 1);
		c->deferred[c->n_deferred++] = *m;
		return false;
	}
	return cache_apply_grant(c, m, false);
}

/* deferred_take - the first grant left for @r (see grant_take), removed; false when none. Lock
 * held. */
static bool deferred_take(struct coh_cache *c, uint64_t r, struct cmsg *m)
{
	uint32_t i;

	for (i = 0; i < c->n_deferred; i++) {
		if (c->deferred[i].resource != r)
			continue;
		*m = c->deferred[i];
		c->deferred[i] = c->deferred[--c->n_deferred];
		return true;
	}
	return false;
}

/* deferred_apply - take in every grant left for @r, with @r claimed by this lane. Lock held. */
static void deferred_apply(struct coh_cache *c, uint64_t r)
{
	struct cmsg m;

	while (c->n_deferred && deferred_take(c, r, &m))
		cache_apply_grant(c, &m, false);
}

static void take_grants_on(struct coh_cache *c, struct xport *x, int wait_ms)
{
	struct cmsg m;

	if (xp_poll(x, wait_ms) > 0) {
		while (xp_poll(x, 0) > 0)
			;
	}
	while (xp_take(x, &m)) {
		if (m.type == CMSG_GRANT) {
			pthread_mutex_lock(&c->lock);
			/* Requests queued here for it are served now (svc_serve_queued). */
			if (grant_take(c, x, &m) && res_of(c, m.resource)->head)
				cache_kick(c, m.resource);
			pthread_mutex_unlock(&c->lock);
		}
	}
}

void cache_take_grants(struct coh_cache *c, int wait_ms)
{
	take_grants_on(c, app_x(c), wait_ms);
}

/* lanes_take - take in the grants that reached each lane but @self: every lane (@wait: their
 * locks waited for), or those whose lock is free at once. */
static void lanes_take(struct coh_cache *c, struct xport *self, bool wait)
{
	uint32_t l;

	for (l = 0; l < c->nlanes; l++) {
		struct xport *x = &c->lane[l];

		if (x == self)
			continue;
		if (wait)
			pthread_mutex_lock(&x->mu);
		else if (pthread_mutex_trylock(&x->mu))
			continue;
		take_grants_on(c, x, 0);
		pthread_mutex_unlock(&x->mu);
	}
}

void cache_take_idle_lanes(struct coh_cache *c)
{
	lanes_take(c, NULL, false);
}

/*
 * cache_drain_all - take in the grants that have reached every lane, and those left for a claim
 * (a view change step: no operation runs, so no lane is in use and nothing is claimed).
 */
void cache_drain_all(struct coh_cache *c)
{
	struct cmsg m;

	lanes_take(c, NULL, true);
	pthread_mutex_lock(&c->lock);
	while (c->n_deferred) {
		m = c->deferred[--c->n_deferred];
		cache_apply_grant(c, &m, false);
	}
	pthread_mutex_unlock(&c->lock);
}

/*
 * lanes_drain - a grant can arrive on a lane after the request it answers was given up (a fence,
 * a timeout); it is applied by whichever thread next uses that lane. A lane that stays idle would
 * keep it, and another lane acquiring the same resource would find the word naming this node and
 * nothing here to say so: so a lane that finds that takes in the grants of the idle lanes
 * (those whose lock it gets at once).
 */
void lanes_drain(struct coh_cache *c, struct xport *self)
{
	lanes_take(c, self, false);
}

/*
 * wait_reply - wait for the answer from @target to request @seq; grants for older requests that
 * arrive meanwhile are applied too, so the local state never falls behind the directory.
 * Returns -EAGAIN when the target is down, or when a node was fenced since the request left
 * (@gen): the request may have been forwarded to the dead node and lost, so it is sent again.
 */
static int wait_reply(struct coh_cache *c, uint32_t target, uint32_t gen, const struct cmsg *req,
		      struct cmsg *out, uint64_t deadline)
{
	struct xport *x = app_x(c);
	uint64_t seq = req->seq;
	uint64_t now, slice;
	struct cmsg m;
	int ret;

	for (;;) {
		bool found;

		/* A grant for this resource that another lane took from its endpoints: an answer
		 * to an earlier copy of this request, sent from that lane. */
		if (c->nlanes > 1) {
			pthread_mutex_lock(&c->lock);
			found = c->n_deferred && deferred_take(c, req->resource, &m);
			if (found && cache_apply_grant(c, &m, false) &&
			    (m.mode == MODE_X || req->mode == MODE_S)) {
				pthread_mutex_unlock(&c->lock);
				*out = m;
				return 0;
			}
			pthread_mutex_unlock(&c->lock);
		}
		while (xp_take(x, &m)) {
			if (m.type == CMSG_GRANT && !same_seq(m.seq, seq)) {
				bool applied;

				pthread_mutex_lock(&c->lock);
				applied = grant_take(c, x, &m);
				pthread_mutex_unlock(&c->lock);
				/* An earlier copy of this request (sent again after a fence) was
				 * served first: that is our answer. The later copy is dropped
				 * where it reaches us. */
				if (applied && m.resource == req->resource &&
				    (m.mode == MODE_X || req->mode == MODE_S)) {
					*out = m;
					return 0;
				}
				continue;
			}
			if (same_seq(m.seq, seq)) {
				*out = m;
				return 0;
			}
		}
		now = cache_now_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (!coh_ep_is_up(x->one[target]) || node_dead(c, target) ||
		    atomic_load(&c->fence_gen) != gen || atomic_load(&c->yield))
			return -EAGAIN;
		/* In slices, so that the target's death, a fence or a view change step that
		 * needs this thread's place ends the wait soon rather than at the deadline: the
		 * reply may be waiting for that very step. Shorter once nodes have died. */
		slice = atomic_load(&c->dead) ? 2 : 20;
		ret = xp_poll(x, (int)(deadline - now < slice ? deadline - now : slice));
		if (ret < 0 && ret != -ETIMEDOUT)
			return ret;
		if (ret == -ETIMEDOUT && c->nlanes > 1)
			lanes_drain(c, x);
	}
}

/*
 * invalidate_sharers - the application thread's invalidation after it took @r exclusively. The
 * write is not acknowledged before every sharer's invalidation has landed. A sharer whose
 * invalidation fails is owed one: the resource is not used, nor handed on (serve pays first),
 * before it lands or that node is fenced. Returns 0, or -EAGAIN while some are owed.
 */
static int invalidate_sharers(struct coh_cache *c, uint64_t r, uint32_t sharers)
{
	uint32_t count, failed = inval_write(c, app_x(c), r, sharers, &count);

	pthread_mutex_lock(&c->lock);
	CACHE_STAT(c, inval_sent, count);
	res_of(c, r)->owed = failed;
	pthread_mutex_unlock(&c->lock);
	return failed ? -EAGAIN : 0;
}

static uint32_t pick_sharer(const struct coh_cache *c, uint32_t sharers)
{
	uint32_t n;

	sharers &= ~(1u << c->me);
	for (n = 0; n < c->nodes; n++) {
		if (sharers & 1u << n)
			return n;
	}
	return NODE_NONE;
}

/* pay_owed - invalidations that failed when this node took @r: send them again to the sharers
 * not yet fenced. Returns 0, or -EAGAIN while one still fails. */
static int pay_owed(struct coh_cache *c, uint64_t r)
{
	struct res_state *st = res_of(c, r);
	uint32_t owed;

	pthread_mutex_lock(&c->lock);
	owed = st->owed & ~atomic_load(&c->dead);
	st->owed = owed;
	pthread_mutex_unlock(&c->lock);
	return owed ? invalidate_sharers(c, r, owed) : 0;
}

int cache_pay_all_owed(struct coh_cache *c)
{
	uint64_t r;
	int ret = 0;

	/* One hold of the lock for the walk, let go only to pay (a volume has millions of
	 * resources, and almost none owes anything). */
	pthread_mutex_lock(&c->lock);
	for (r = res_next_used(c, 0); r < c->nres && !ret; r = res_next_used(c, r + 1)) {
		if (!res_of(c, r)->owed)
			continue;
		pthread_mutex_unlock(&c->lock);
		ret = pay_owed(c, r);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* acq_guess - what @st's word probably is (acquire says why): the word as last seen since fence
 * @gen, or else one like the last word this node saw, not naming it. Returns whether it was seen.
 * Lock held. */
static bool acq_guess(const struct coh_cache *c, const struct res_state *st, uint32_t gen,
		      uint64_t *guess)
{
	if (st->seen && st->obs_gen == gen) {
		*guess = st->dir_guess;
		return true;
	}
	*guess = dir_excl(c->last_word) ? 0 : c->last_word & ~(1ull << c->me);
	return false;
}

/*
 * acq_wait_svc - wait, bounded, for the service thread: a hand-over of the resource in progress
 * (res_state.srv) or a queue it was asked to serve (acq_yield_queue). Lock held on entry,
 * dropped on return. Returns 0 (look again), -ETIMEDOUT or -EAGAIN (a view change step wants
 * this thread's place).
 */
static int acq_wait_svc(struct coh_cache *c, uint64_t deadline)
{
	struct timespec ts;

	cache_realtime_in(2, &ts);
	coh_thread_sleeping(true);
	pthread_cond_timedwait(&c->kick_cond, &c->lock, &ts);
	coh_thread_sleeping(false);
	pthread_mutex_unlock(&c->lock);
	if (cache_now_ms() >= deadline)
		return -ETIMEDOUT;
	if (atomic_load(&c->yield))
		return -EAGAIN;
	return 0;
}

/*
 * acq_yield_queue - others are queued for @r while this node holds it: they go first, or a node
 * that keeps using a resource it holds would starve them (lazy release alone does not prevent
 * that; the spin model found the cycle). Hand the queue to the service thread and wait, bounded,
 * for it to drain (acq_wait_svc).
 */
static int acq_yield_queue(struct coh_cache *c, uint64_t r, uint64_t deadline)
{
	cache_kick(c, r);
	return acq_wait_svc(c, deadline);
}

/* acq_want - the word a CAS for @mode puts in place of @guess: this node added to the sharers,
 * or this node exclusive with the version moved on. */
static uint64_t acq_want(const struct coh_cache *c, int mode, uint64_t guess)
{
	if (mode == MODE_S)
		return guess | 1u << c->me;
	return dir_make(true, c->me, 0, dir_ver(guess) + 1);
}

/* acq_cas_note - take in a CAS on @st's word (@expect to @want; it found @old) posted since fence
 * @gen: what this node saw of the word and, when it won, the tenure in @mode it began (not
 * pinned: the caller decides). Returns whether it won. Lock held. */
static bool acq_cas_note(struct coh_cache *c, struct res_state *st, int mode, uint64_t expect,
			 uint64_t want, uint64_t old, uint32_t gen)
{
	bool won = old == expect;

	st->seen = true;
	c->last_word = won ? want : old;
	cache_set_floor(c, st, won ? dir_ver(want) : dir_ver(old) - 1);
	st->obs_gen = gen;
	if (!won) {
		st->dir_guess = old;
		return false;
	}
	st->level = mode == MODE_X ? L_X : L_S;
	st->lv = dir_ver(want);
	st->cv = dir_ver(expect);
	st->holder = pick_sharer(c, dir_sharers(expect));
	st->holder_v = dir_ver(expect);
	st->dir_guess = want;
	st->fresh = false;
	return true;
}

/*
 * acq_cas - join @r by CAS on its word (not exclusive as far as @guess says). Returns 1 with @r
 * pinned in @mode, 0 when the CAS lost (@guess is then the current word), or an error. A writer
 * that wins invalidates the old sharers before it uses the resource.
 */
static int acq_cas(struct coh_cache *c, uint64_t r, int mode, uint64_t *guess)
{
	struct res_state *st = res_of(c, r);
	uint64_t want, old;
	uint32_t gen = atomic_load(&c->fence_gen);
	int ret;

	want = acq_want(c, mode, *guess);
	ret = xp_cas(app_x(c), r, *guess, want, &old);
	CTRACE(c, "acq r%llu mode %d cas %llx->%llx old %llx ret %d", (unsigned long long)r, mode,
	       (unsigned long long)*guess, (unsigned long long)want, (unsigned long long)old, ret);
	if (ret)
		return ret;
	pthread_mutex_lock(&c->lock);
	if (!acq_cas_note(c, st, mode, *guess, want, old, gen)) {
		pthread_mutex_unlock(&c->lock);
		*guess = old;
		return 0;
	}
	st->pinned = true;
	pthread_mutex_unlock(&c->lock);
	if (mode == MODE_S) {
		cache_point(c, COH_CACHE_PT_SCAS, r);
		return 1;
	}
	cache_point(c, COH_CACHE_PT_XCAS, r);
	/* The resource is ours now, whatever happens to the invalidations: a failed one is owed,
	 * and paid before the resource is used. */
	ret = invalidate_sharers(c, r, dir_sharers(*guess));
	if (ret) {
		unpin(c, r);
		return ret;
	}
	return 1;
}

/*
 * acq_request - ask @owner, the exclusive holder @guess names, for @r in @mode, and take the
 * answer in. Returns 1 with @r pinned, 0 to look again (RETRY, or a grant that left us short),
 * or an error (-EAGAIN: the owner or a fence got in the way).
 */
static int acq_request(struct coh_cache *c, uint64_t r, int mode, uint32_t owner, uint64_t deadline)
{
	struct res_state *st = res_of(c, r);
	struct xport *x = app_x(c);
	struct cmsg m, req;
	uint32_t gen;
	bool got;
	int ret;

	m = (struct cmsg){ .type = CMSG_REQ,
			   .mode = (uint8_t)mode,
			   .lane = (uint8_t)x->lane,
			   .requester = c->me,
			   .resource = r,
			   .holder = NODE_NONE,
			   .seq = atomic_fetch_add(&c->next_seq, 1) + 1 };
	gen = atomic_load(&c->fence_gen);
	pthread_mutex_lock(&c->lock);
	/* The owner adds this node to the word when it serves the request: the tenure's
	 * invalidations are the ones that change the word from here on. */
	st->inv_base = atomic_load_explicit(inv_word(c, r), memory_order_acquire);
	pthread_mutex_unlock(&c->lock);
	ret = xp_send(x, x->to_svc[owner], &m);
	if (ret)
		return coh_ep_is_up(x->one[owner]) ? ret : -EAGAIN;
	cache_point(c, COH_CACHE_PT_REQ, r);
	pthread_mutex_lock(&c->lock);
	CACHE_STAT(c, lock_requests, 1);
	pthread_mutex_unlock(&c->lock);
	req = m;
	ret = wait_reply(c, owner, gen, &req, &m, deadline);
	CTRACE(c, "req r%llu mode %d to n%u seq %llx: ret %d type %u v%u seq %llx",
	       (unsigned long long)r, mode, owner, (unsigned long long)req.seq, ret, m.type,
	       m.version, (unsigned long long)m.seq);
	if (ret)
		return ret;
	if (m.type != CMSG_GRANT) {
		/* RETRY: the holder moved on. Forget the guess so that the next CAS fails (or
		 * succeeds on a free word) and returns the current word. */
		pthread_mutex_lock(&c->lock);
		st->dir_guess = 0;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	/* Applied here unless it is old news (see cache_apply_grant); then the state says what we
	 * hold, and the caller goes on from there. */
	pthread_mutex_lock(&c->lock);
	cache_apply_grant(c, &m, same_seq(m.seq, req.seq));
	got = st->level == L_X || (mode == MODE_S && st->level == L_S && !cache_invalidated(c, r));
	if (got)
		st->pinned = true;
	pthread_mutex_unlock(&c->lock);
	if (!got)
		return 0;
	cache_point(c, COH_CACHE_PT_GRANTED, r);
	return 1;
}

/*
 * acq_lost_grant - the word names this node exclusive (@guess) and no grant came. Its giver made
 * its CAS, and then its message was lost: the SEND failed (a network cut longer than the
 * transport's retries) or was not sent (a requester a reply had just timed out on: reply_send). The
 * giver lives, so no view change adopts the grant (view.c, adopt_lost), and every operation on
 * @r would wait for a grant that never comes. After a timeout it is taken as the word says, as
 * adopt_lost takes one: the giver wrote its blocks back before its CAS, and a grant that does come
 * later is old news (cache_apply_grant). The word is read again by CAS with the lock held, so
 * that no grant is taken in meanwhile. Returns 1 when taken, 0 to keep waiting, or an error.
 */
static int acq_lost_grant(struct coh_cache *c, struct xport *x, uint64_t r, uint64_t guess)
{
	struct res_state *st = res_of(c, r);
	uint16_t now = (uint16_t)(cache_now_ms() >> 4);
	uint64_t cur;
	int ret = 0;

	if (!now)
		now = 1;
	pthread_mutex_lock(&c->lock);
	if (st->level == L_X) {
		ret = 1;
	} else if (!st->mine_at) {
		st->mine_at = now;
	} else if ((uint32_t)(uint16_t)(now - st->mine_at) * 16u >= c->timeout_ms) {
		ret = xp_cas(x, r, guess, guess, &cur);
		if (!ret && dir_excl(cur) && dir_owner(cur) == c->me && st->level != L_X) {
			COH_LOG_WARN(
			    "node %u: resource %llu: its grant never came; taking it as its "
			    "directory word says",
			    c->me, (unsigned long long)r);
			CTRACE(c, "lost grant r%llu word %llx (was level %u lv %u)",
			       (unsigned long long)r, (unsigned long long)cur, st->level, st->lv);
			cache_hold_word(c, r, cur);
			CACHE_STAT(c, grants_lost, 1);
			if (st->head)
				cache_kick(c, r);
			ret = 1;
		}
		st->mine_at = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/*
 * acquire - get @r in @mode and pin it. Returns 0, -ETIMEDOUT, -EAGAIN (a dead node stands in
 * the way: its word, its lock or its reply; try again after the view change moves on), or a
 * fabric error.
 */
static int acquire(struct coh_cache *c, uint64_t r, int mode)
{
	uint64_t deadline = cache_now_ms() + c->timeout_ms, guess, old;
	struct res_state *st = res_of(c, r);
	struct xport *x = app_x(c);
	bool upgrading = false;
	uint32_t owner, lv;
	int ret;

	for (;;) {
		/* A view change step wants this thread's place: a holder that answers RETRY
		 * (its write-back failing on a dead log peer, say) does so until that very step
		 * is done, and each round here is quick, so look on every round. */
		if (atomic_load(&c->yield))
			return -EAGAIN;
		pthread_mutex_lock(&c->lock);
		if (c->n_deferred)
			deferred_apply(c, r);
		if (st->level == L_S && cache_invalidated(c, r)) {
			st->level = L_I;
			CACHE_STAT(c, inval_seen, 1);
		}
		if (st->tk) {
			/* Taken over from a dead node: its replay comes first. */
			pthread_mutex_unlock(&c->lock);
			return -EAGAIN;
		}
		if (st->srv) {
			/* The service thread is handing it on: once the word has moved, ask. */
			ret = acq_wait_svc(c, deadline);
			if (ret)
				return ret;
			continue;
		}
		if (st->head && !st->pinned && st->level == L_X) {
			ret = acq_yield_queue(c, r, deadline);
			if (ret)
				return ret;
			continue;
		}
		if (st->level == L_X || (mode == MODE_S && st->level == L_S)) {
			bool owed = st->owed != 0;

			st->pinned = true;
			pthread_mutex_unlock(&c->lock);
			if (owed && (ret = pay_owed(c, r))) {
				unpin(c, r);
				return ret;
			}
			return 0;
		}
		if (st->level == L_S) {
			/* Upgrading: the CAS below drops our sharer bit. Our blocks stay valid if it
			 * wins (nobody wrote meanwhile); any other way to X begins a new tenure. */
			st->level = L_I;
			upgrading = true;
		}
		/* A resource not looked at since the last fence: guess that its word looks like
		 * the last one seen (its sharer set and version, not an owner), and let the CAS
		 * fetch the real one. Right for sequential and populate-then-read patterns, which
		 * then pay one CAS instead of two; wrong costs one failed CAS, the same as no
		 * guess. */
		if (!acq_guess(c, st, atomic_load(&c->fence_gen), &guess))
			upgrading = false;
		if (!upgrading || dir_excl(guess))
			cache_new_tenure(c, r);
		lv = st->lv;
		pthread_mutex_unlock(&c->lock);
		if (cache_now_ms() >= deadline)
			return -ETIMEDOUT;
		/* The word's home died: it is being rebuilt on the next member. */
		if (node_dead(c, res_home(c, r)))
			return -EAGAIN;

		if (!dir_excl(guess)) {
			pthread_mutex_lock(&c->lock);
			st->inv_base = atomic_load_explicit(inv_word(c, r), memory_order_acquire);
			pthread_mutex_unlock(&c->lock);
			ret = acq_cas(c, r, mode, &guess);
			if (ret < 0)
				return ret;
			if (ret > 0)
				return 0;
			/* The word moved. Still shared at our version with our bit in it, our copy
			 * is as good as it was (others joined); otherwise whatever comes next is a
			 * new tenure. */
			upgrading = upgrading && !dir_excl(guess) && dir_ver(guess) == lv &&
				    (dir_sharers(guess) >> c->me & 1);
			if (!dir_excl(guess))
				continue;
		}
		owner = dir_owner(guess);
		if (owner == c->me) {
			/* A grant to us not yet taken in: take it, then look again. If its sender
			 * died after its CAS and before its message, the grant never comes; the
			 * view change's commit gives us the resource (view.c, adopt_lost), and
			 * the view change needs this thread's place first. If its sender lives
			 * and its message was lost, acq_lost_grant takes it after a timeout. */
			cache_take_grants(c, 1);
			if (c->nlanes > 1)
				lanes_drain(c, x);
			if (atomic_load(&c->yield))
				return -EAGAIN;
			ret = acq_lost_grant(c, x, r, guess);
			if (ret < 0)
				return ret;
			continue;
		}
		if (owner >= c->nodes || node_dead(c, owner) || !x->to_svc[owner] ||
		    !coh_ep_is_up(x->one[owner])) {
			/* The owner is dead, or was when we last looked: a survivor takes its
			 * locks over. Look again (a CAS of 0 for 0 reads the word). */
			uint32_t gen = atomic_load(&c->fence_gen);

			ret = xp_cas(x, r, 0, 0, &old);
			if (ret)
				return ret;
			pthread_mutex_lock(&c->lock);
			st->dir_guess = old;
			st->seen = true;
			cache_set_floor(c, st, dir_ver(old) - 1);
			st->obs_gen = gen;
			pthread_mutex_unlock(&c->lock);
			if (old != guess)
				continue;
			return -EAGAIN;
		}
		upgrading = false;
		ret = acq_request(c, r, mode, owner, deadline);
		if (ret < 0)
			return ret;
		if (ret > 0)
			return 0;
	}
}

/* unclaim - @r is free for this node's other lanes again, with the grants left for it taken
 * in. Lock held. */
static void unclaim(struct coh_cache *c, uint64_t r)
{
	if (c->n_deferred)
		deferred_apply(c, r);
	res_of(c, r)->claim = 0;
	if (c->claim_waiters)
		pthread_cond_broadcast(&c->claim_cond);
}

/*
 * claim - take @r for this lane: wait, bounded, while another lane of this node is acquiring or
 * using it, so that the steps of one resource (its level, tenure, pin and slots) are one lane's at
 * a time. Claims are taken in ascending order like the locks themselves, so lanes cannot wait on
 * each other in a cycle. Returns 0, -ETIMEDOUT or -EAGAIN (a view change step wants the place).
 */
static int claim(struct coh_cache *c, uint64_t r, uint64_t deadline)
{
	struct res_state *st = res_of(c, r);

	pthread_mutex_lock(&c->lock);
	while (st->claim) {
		struct timespec ts;

		if (cache_now_ms() >= deadline || atomic_load(&c->yield)) {
			pthread_mutex_unlock(&c->lock);
			return atomic_load(&c->yield) ? -EAGAIN : -ETIMEDOUT;
		}
		cache_realtime_in(1, &ts);
		c->claim_waiters++;
		/* Asleep as on the network: the engine may start another thread meanwhile. */
		coh_thread_sleeping(true);
		pthread_cond_timedwait(&c->claim_cond, &c->lock, &ts);
		coh_thread_sleeping(false);
		c->claim_waiters--;
		if (!st->claim)
			break;
		/* The lane holding it may wait for a grant that arrived on this one. */
		pthread_mutex_unlock(&c->lock);
		cache_take_grants(c, 0);
		pthread_mutex_lock(&c->lock);
	}
	st->claim = (uint8_t)(app_x(c)->lane + 1);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/*
 * acq_batch - the directory CASes of a range, sent at once: for each resource of [@r0, @r1]
 * (claimed by this lane) that this node does not hold and whose word it guesses is not exclusive,
 * the CAS acquire would send first (acq_cas, with acquire's guess), up to XP_CAS_BATCH of them, all
 * posted before any is waited for, to whichever homes they have. A CAS that wins leaves its
 * resource held but not pinned, as a grant taken in does: acquire then pins it at once, or the
 * service thread hands it on first to a request that was waiting (so holding a later resource
 * of the range while an earlier one is waited for cannot deadlock), and an exclusive one owes
 * the old sharers their invalidations (res_state.owed), paid before anyone uses it. A CAS that
 * loses leaves the word it found as the guess. Best effort: on any error nothing is taken from
 * the results, and acquire does each resource as if there had been no batch (a word that moved
 * to this node unseen is found there, as after any lost CAS reply). Lane's place.
 */
static void acq_batch(struct coh_cache *c, uint64_t r0, uint64_t r1, int mode)
{
	uint64_t res[XP_CAS_BATCH], expect[XP_CAS_BATCH], want[XP_CAS_BATCH], old[XP_CAS_BATCH];
	uint64_t r, g;
	uint32_t home[XP_CAS_BATCH], gen = atomic_load(&c->fence_gen), n = 0, i, dead;
	struct xport *x = app_x(c);
	uint8_t *scratch = (uint8_t *)coh_mr_addr(x->buf) + x->bounce_off;
	int ret = 0, r2;

	pthread_mutex_lock(&c->lock);
	for (r = r0; r <= r1 && n < XP_CAS_BATCH; r++) {
		struct res_state *st = res_of(c, r);
		uint32_t h = res_home(c, r);

		if (c->n_deferred)
			deferred_apply(c, r);
		if (st->level != L_I || st->tk || st->srv || st->head || node_dead(c, h) ||
		    !x->one[h] || !x->dir[h])
			continue;
		acq_guess(c, st, gen, &g);
		if (dir_excl(g))
			continue;
		res[n] = r;
		home[n] = h;
		expect[n] = g;
		want[n] = acq_want(c, mode, g);
		cache_new_tenure(c, r);
		st->inv_base = atomic_load_explicit(inv_word(c, r), memory_order_acquire);
		n++;
	}
	pthread_mutex_unlock(&c->lock);
	/* One CAS is what acquire sends anyway. */
	if (n < 2 || xp_ready(x))
		return;
	for (i = 0; i < n && !ret; i++) {
		ret =
		    coh_ep_post_cas(x->one[home[i]], x->buf, x->bounce_off + i * 8, x->dir[home[i]],
				    res_dir_off(c, res[i]), expect[i], want[i], 0);
		if (!ret)
			x->outstanding++;
	}
	r2 = xp_wait_sends(x);
	atomic_fetch_add(&c->net_atomic, i);
	CACHE_STAT(c, cas_batched, n);
	if (ret || r2)
		return;
	memcpy(old, scratch, n * sizeof(*old));
	dead = atomic_load(&c->dead);
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < n; i++) {
		struct res_state *st = res_of(c, res[i]);

		CTRACE(c, "acq batch r%llu mode %d cas %llx->%llx old %llx",
		       (unsigned long long)res[i], mode, (unsigned long long)expect[i],
		       (unsigned long long)want[i], (unsigned long long)old[i]);
		/* A winner is held, unpinned, until acquire comes to it. */
		if (acq_cas_note(c, st, mode, expect[i], want[i], old[i], gen) && mode == MODE_X)
			st->owed |= dir_sharers(expect[i]) & ~(1u << c->me) & ~dead;
	}
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < n; i++) {
		if (old[i] == expect[i])
			cache_point(c, mode == MODE_X ? COH_CACHE_PT_XCAS : COH_CACHE_PT_SCAS,
				    res[i]);
	}
}

/* acq_unwind - let go of what acquire_range took of [@r0, @r1]: pinned and claimed below @r,
 * claimed only from @r up to @rc. */
static void acq_unwind(struct coh_cache *c, uint64_t r0, uint64_t r, uint64_t rc)
{
	uint64_t i;

	for (i = r0; i < r; i++)
		unpin(c, i);
	pthread_mutex_lock(&c->lock);
	for (i = r0; i <= rc; i++)
		unclaim(c, i);
	pthread_mutex_unlock(&c->lock);
}

static int acquire_range(struct coh_cache *c, uint64_t lba, uint32_t n, int mode, uint64_t *r0,
			 uint64_t *r1)
{
	uint64_t deadline = cache_now_ms() + c->timeout_ms, r;
	int ret;

	*r0 = lba / c->res_blocks;
	*r1 = (lba + n - 1) / c->res_blocks;
	if (*r1 > *r0) {
		/* Several resources: claim them all (ascending, as below), send the CASes that can
		 * go together at once, then acquire each in order, most of them already held. */
		for (r = *r0; r <= *r1; r++) {
			ret = claim(c, r, deadline);
			if (ret) {
				if (r > *r0)
					acq_unwind(c, *r0, *r0, r - 1);
				return ret;
			}
		}
		acq_batch(c, *r0, *r1, mode);
		for (r = *r0; r <= *r1; r++) {
			ret = acquire(c, r, mode);
			if (ret) {
				acq_unwind(c, *r0, r, *r1);
				return ret;
			}
		}
		return 0;
	}
	/* Ascending order: no two nodes (nor two lanes) can each hold a resource the other waits
	 * for. */
	for (r = *r0; r <= *r1; r++) {
		ret = claim(c, r, deadline);
		if (!ret) {
			ret = acquire(c, r, mode);
			if (ret) {
				pthread_mutex_lock(&c->lock);
				unclaim(c, r);
				pthread_mutex_unlock(&c->lock);
			}
		}
		if (ret) {
			while (r-- > *r0) {
				unpin(c, r);
				pthread_mutex_lock(&c->lock);
				unclaim(c, r);
				pthread_mutex_unlock(&c->lock);
			}
			return ret;
		}
	}
	return 0;
}

static void release_range(struct coh_cache *c, uint64_t r0, uint64_t r1)
{
	uint64_t r;

	pthread_mutex_lock(&c->lock);
	for (r = r0; r <= r1; r++) {
		struct res_state *st = res_of(c, r);

		st->pinned = false;
		if (st->head)
			cache_kick(c, r);
		unclaim(c, r);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Reads and writes. */

/*
 * fetch_into_slot - READ the holder's slot for @lba, header and block, into this lane's bounce
 * area, and keep it if the holder's tag, version and CRC all match (a READ that raced a refill at
 * the holder fails the CRC); then install it in our own slot for it (writing back the dirty block
 * it evicts). The READ lands in the lane's own memory, not in the slot: the slot may be filled
 * meanwhile by another lane for another address that maps to it. Lock not held during the READ.
 */
static int fetch_into_slot(struct coh_cache *c, uint32_t holder, uint32_t v, uint64_t lba,
			   uint32_t rv, uint8_t *out)
{
	struct xport *x = app_x(c);
	uint8_t *b = (uint8_t *)coh_mr_addr(x->buf) + x->bounce_off;
	struct slot_hdr *h = (struct slot_hdr *)b;
	uint8_t *d = b + SLOT_HDR;
	int ret;

	ret = xp_ready(x);
	if (!ret)
		ret = x->slots[holder]
			  ? coh_ep_post_read(x->one[holder], x->buf, x->bounce_off,
					     x->slots[holder], slot_off(c, lba), c->stride, 0)
			  : -ENOTCONN;
	if (!ret) {
		x->outstanding++;
		ret = xp_wait_sends(x);
		atomic_fetch_add(&c->net_read, 1);
	}
	/* A READ given up on may still land in the bounce area: wait it out (bounded) before the
	 * area is used for anything else (xp_ready refuses to post until it has). */
	if (ret == -ETIMEDOUT)
		(void)xp_ready(x);
	if (ret || atomic_load_explicit(&h->tag, memory_order_relaxed) != lba + 1 || h->rv != v ||
	    h->crc != block_crc(c, d))
		return ret ? ret : -ENOENT;
	memcpy(out, d, c->bsize);
	pthread_mutex_lock(&c->lock);
	ret = slot_clean(c, slot_of(c, lba), lba, cache_now_ms() + c->timeout_ms);
	if (!ret)
		ret = slot_install(c, lba, d, rv, false, 0);
	CACHE_STAT(c, peer_fetches, 1);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

static int read_block(struct coh_cache *c, uint64_t lba, uint8_t *out)
{
	struct res_state *st = res_of(c, lba / c->res_blocks);
	uint32_t holder, holder_v, rv;
	int ret;

	pthread_mutex_lock(&c->lock);
	CACHE_STAT(c, reads, 1);
	if (slot_valid(c, lba, st)) {
		memcpy(out, (uint8_t *)slot_of(c, lba) + SLOT_HDR, c->bsize);
		CTRACE(c, "read lba %llu hit val %llx lv %u cv %u rv %u", (unsigned long long)lba,
		       (unsigned long long)*(uint64_t *)out, st->lv, st->cv, slot_of(c, lba)->rv);
		CACHE_STAT(c, hits, 1);
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	CACHE_STAT(c, misses, 1);
	holder = st->holder;
	holder_v = st->holder_v;
	rv = st->lv;
	pthread_mutex_unlock(&c->lock);

	/* The newest content is in the holder's cache or, failing that, in the store: every
	 * exclusive holder writes back before it lets go. */
	if (holder != NODE_NONE && holder != c->me &&
	    fetch_into_slot(c, holder, holder_v, lba, rv, out) == 0) {
		CTRACE(c, "read lba %llu peer n%u hv %u val %llx", (unsigned long long)lba, holder,
		       holder_v, (unsigned long long)*(uint64_t *)out);
		return 0;
	}
	ret = coh_store_read(c->store, lba, 1, out);
	CTRACE(c, "read lba %llu store val %llx rv %u ret %d", (unsigned long long)lba,
	       (unsigned long long)*(uint64_t *)out, rv, ret);
	if (ret)
		return ret;
	pthread_mutex_lock(&c->lock);
	CACHE_STAT(c, store_reads, 1);
	ret = slot_clean(c, slot_of(c, lba), lba, cache_now_ms() + c->timeout_ms);
	if (!ret)
		ret = slot_install(c, lba, out, rv, false, 0);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* still_shared - no resource of the range that is held shared was invalidated meanwhile. */
static bool still_shared(struct coh_cache *c, uint64_t r0, uint64_t r1)
{
	bool ok = true;
	uint64_t r;

	pthread_mutex_lock(&c->lock);
	for (r = r0; r <= r1 && ok; r++)
		ok = res_of(c, r)->level != L_S || !cache_invalidated(c, r);
	pthread_mutex_unlock(&c->lock);
	return ok;
}

/*
 * read_hit - a one-block read that needs nothing but this node's own slot, done in one hold of
 * the lock: the resource held here (exclusive, or shared and not invalidated), not taken over,
 * owing no invalidation, with no request queued for it (those go first: acq_yield_queue), and
 * the block valid in its slot. The lock keeps the service thread from handing the resource on
 * while the block is copied, so nothing is pinned. A shared copy is checked for an invalidation
 * again after the copy, as still_shared does. Returns true with the block in @out; false: take
 * the full path (nothing was changed). With @try, a lock another thread holds is a miss too (a
 * thread that must not wait: the lock is held across a store write at times).
 */
static bool read_hit(struct coh_cache *c, uint64_t lba, uint8_t *out, bool try)
{
	uint64_t r = lba / c->res_blocks;
	struct res_state *st = res_of(c, r);
	bool hit;

	if (try) {
		if (pthread_mutex_trylock(&c->lock))
			return false;
	} else {
		pthread_mutex_lock(&c->lock);
	}
	hit = (st->level == L_X || (st->level == L_S && !cache_invalidated(c, r))) && !st->tk &&
	      !st->srv && !st->owed && !st->head && slot_valid(c, lba, st);
	if (hit) {
		memcpy(out, (uint8_t *)slot_of(c, lba) + SLOT_HDR, c->bsize);
		hit = st->level == L_X || !cache_invalidated(c, r);
	}
	if (hit) {
		CACHE_STAT(c, reads, 1);
		CACHE_STAT(c, hits, 1);
	}
	pthread_mutex_unlock(&c->lock);
	return hit;
}

static int read_range(struct coh_cache *c, uint64_t lba, uint32_t nblocks, void *buf)
{
	uint64_t deadline, r0, r1, i;
	int ret;

	deadline = cache_now_ms() + c->timeout_ms;
	for (;;) {
		ret = acquire_range(c, lba, nblocks, MODE_S, &r0, &r1);
		if (ret)
			return ret;
		for (i = 0; i < nblocks && !ret; i++)
			ret = read_block(c, lba + i, (uint8_t *)buf + i * c->bsize);
		/* The second half of the seqlock: a writer invalidates sharers without waiting for
		 * their reads, then may write the block back to the store. A shared read that
		 * overlapped that could have taken a torn block from the store, so it is done
		 * again. (Peer reads are also checked by CRC; hits copy our own slots, which no
		 * other node writes.) The slots it filled carry the old version and are never
		 * valid again. */
		if (ret || still_shared(c, r0, r1)) {
			release_range(c, r0, r1);
			/* Checked after the copy: the data was current when it was copied if this
			 * node was still a member then, and the others invalidate it until they
			 * have outwaited the lease (docs/recovery.md, "Fencing"). */
			if (!ret && !cache_lease_ok(c))
				ret = -EAGAIN;
			return ret;
		}
		release_range(c, r0, r1);
		if (cache_now_ms() >= deadline)
			return -ETIMEDOUT;
	}
}

int coh_cache_read_cached(struct coh_cache *c, uint64_t lba, void *buf)
{
	if (!c || !buf || lba >= c->nblocks)
		return -EINVAL;
	return read_hit(c, lba, buf, true) && cache_lease_ok(c) ? 0 : -EAGAIN;
}

int coh_cache_read(struct coh_cache *c, uint64_t lba, uint32_t nblocks, void *buf)
{
	struct xport *x;
	int ret;

	if (!c || !buf || !nblocks || lba >= c->nblocks || nblocks > c->nblocks - lba)
		return -EINVAL;
	/* Checked after the copy, as below. A hit needs no lane: it touches no endpoint. */
	if (nblocks == 1 && read_hit(c, lba, buf, false))
		return cache_lease_ok(c) ? 0 : -EAGAIN;
	x = lane_enter(c);
	ret = read_range(c, lba, nblocks, buf);
	lane_exit(x);
	return ret;
}

/*
 * write_compare - with the range held exclusive: the current content (this node's slots, else the
 * last holder's cache or the store, which every exclusive holder writes back to before it lets
 * go) against @cmp. Returns 0, -EILSEQ with *@miscompare, or a read error.
 */
static int write_compare(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const uint8_t *cmp,
			 uint32_t *miscompare)
{
	uint8_t *cur = malloc(c->bsize);
	uint32_t i, b;
	int ret = cur ? 0 : -ENOMEM;

	for (i = 0; i < nblocks && !ret; i++) {
		ret = read_block(c, lba + i, cur);
		for (b = 0; !ret && b < c->bsize; b++) {
			if (cur[b] != cmp[(size_t)i * c->bsize + b]) {
				*miscompare = i * c->bsize + b;
				ret = -EILSEQ;
			}
		}
	}
	free(cur);
	return ret;
}

/*
 * write_ready - make the slots of [@lba, @lba + @nblocks) ready for the write's data: every
 * dirty block of another address written back (slot_clean, the lock dropped while it is written),
 * and then, in the same hold of the lock as the install that follows, none dirtied again or being
 * written back. So the install puts every block in at once (a reader sees all or none of a write)
 * without a write-back under the lock, except where two blocks of the write share a slot. Lock
 * held on entry and return. Returns 0, -ETIMEDOUT or a write-back's error.
 */
static int write_ready(struct coh_cache *c, uint64_t lba, uint32_t nblocks)
{
	uint64_t deadline = cache_now_ms() + c->timeout_ms;
	uint32_t i, n = nblocks < c->nslots ? nblocks : c->nslots;
	bool ready;
	int ret;

	do {
		for (i = 0; i < n; i++) {
			ret = slot_clean(c, slot_of(c, lba + i), lba + i, deadline);
			if (ret)
				return ret;
		}
		/* A slot cleaned first may have been filled again while a later one was being
		 * written back: look at them all again, with the lock held throughout. */
		ready = true;
		for (i = 0; i < n && ready; i++) {
			const struct slot_hdr *h = slot_of(c, lba + i);
			uint64_t tag = atomic_load_explicit(&h->tag, memory_order_relaxed);

			ready = !h->wb && (!tag || tag == lba + i + 1 || !h->dirty);
		}
		if (!ready && cache_now_ms() >= deadline)
			return -ETIMEDOUT;
	} while (!ready);
	return 0;
}

/* write_wait_wb - wait until no slot of [@lba, @lba + @nblocks) has a write-back in flight. No
 * deadline of its own: each write-back is bounded. Lock held; dropped while waiting. */
static void write_wait_wb(struct coh_cache *c, uint64_t lba, uint32_t nblocks)
{
	uint32_t i, n = nblocks < c->nslots ? nblocks : c->nslots;
	bool again;

	do {
		again = false;
		for (i = 0; i < n && !again; i++)
			again = slot_of(c, lba + i)->wb != 0;
		if (again)
			wb_wait(c); /* then all of them again: those before may have one by now */
	} while (again);
}

static int write_range(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const void *cmp,
		       const void *buf, uint32_t *miscompare)
{
	uint64_t r0, r1, i, seq = 0;
	uint8_t undo_small[128], *undo = NULL;
	bool undo_lost = false;
	int ret, r;

	ret = acquire_range(c, lba, nblocks, MODE_X, &r0, &r1);
	if (ret)
		return ret;
	if (cmp) {
		ret = write_compare(c, lba, nblocks, cmp, miscompare);
		if (ret) {
			release_range(c, r0, r1);
			return ret;
		}
	}
	cache_point(c, COH_CACHE_PT_INVAL, r0);
	/* The slots made ready before the data is logged: a failure here fails the write with
	 * nothing logged. */
	pthread_mutex_lock(&c->lock);
	ret = write_ready(c, lba, nblocks);
	pthread_mutex_unlock(&c->lock);
	if (ret) {
		release_range(c, r0, r1);
		return ret;
	}
	if (c->write_hook) {
		ret = c->write_hook(c->hook_arg, lba, nblocks, buf, &seq);
		CTRACE(c, "hook lba %llu n %u val %llx ret %d", (unsigned long long)lba, nblocks,
		       (unsigned long long)*(const uint64_t *)buf, ret);
		if (ret) {
			release_range(c, r0, r1);
			return ret;
		}
	}
	/* Logged: now in it goes, all blocks in one hold of the lock. Another lane may have used
	 * a slot meanwhile: a write-back from it is waited for (each is bounded), and a dirty block
	 * put there since is written back under the lock (slot_install). A block that cannot go
	 * in (that write-back failed) does not stop the others: each block is wholly written or
	 * not at all, and the records of one that is not are undone below. */
	pthread_mutex_lock(&c->lock);
	write_wait_wb(c, lba, nblocks);
	for (i = 0; i < nblocks; i++) {
		struct res_state *st = res_of(c, (lba + i) / c->res_blocks);

		/* The previous holder's copy is older than what this tenure writes, and a written
		 * block evicted from here goes to the store: misses now read the store. */
		st->holder = NODE_NONE;
		r = slot_install(c, lba + i, (const uint8_t *)buf + i * c->bsize, st->lv, true,
				 seq);
		CTRACE(c, "write lba %llu val %llx lv %u ret %d", (unsigned long long)(lba + i),
		       (unsigned long long)*(const uint64_t *)((const uint8_t *)buf + i * c->bsize),
		       st->lv, r);
		if (r && c->write_hook && c->write_undo && !undo && !undo_lost) {
			undo = nblocks <= 8 * sizeof(undo_small) ? undo_small
								 : malloc((nblocks + 7) / 8);
			undo_lost = !undo;
			if (undo)
				memset(undo, 0, (nblocks + 7) / 8);
		}
		if (r && undo)
			undo[i / 8] |= (uint8_t)(1u << (i % 8));
		if (r && !ret)
			ret = r;
		CACHE_STAT(c, writes, 1);
	}
	pthread_mutex_unlock(&c->lock);
	/* Never a block that went in: its records protect what the cache now holds (and undoing
	 * them could bring back nothing older than the store). Without memory for the bitmap the
	 * records stay live, and that is said. */
	if (undo_lost)
		COH_LOG_ERR(
		    "node %u: out of memory: the records of a failed write at lba %llu stay "
		    "live",
		    c->me, (unsigned long long)lba);
	for (i = 0; undo && i < nblocks; i++) {
		if (undo[i / 8] >> (i % 8) & 1)
			c->write_undo(c->hook_arg, lba + i, 1, seq);
	}
	if (undo != undo_small)
		free(undo);
	if (!ret)
		cache_point(c, COH_CACHE_PT_INSTALLED, r0);
	release_range(c, r0, r1);
	/* Not acknowledged once the lease has lapsed: the others may have excluded this node.
	 * The data is logged and installed, so it may have taken effect and been read (as any
	 * write that is not acknowledged may). -ETIME, not -EAGAIN: the engine must not write
	 * it again, since another node's write may have come after it, and a second copy would
	 * put the older data back over that one. */
	if (!ret && !cache_lease_ok(c))
		ret = -ETIME;
	return ret;
}

/* write_entry - a write or compare-and-write on the calling thread's lane. */
static int write_entry(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const void *cmp,
		       const void *buf, uint32_t *miscompare)
{
	struct xport *x;
	int ret;

	if (!c || !buf || !nblocks || lba >= c->nblocks || nblocks > c->nblocks - lba)
		return -EINVAL;
	x = lane_enter(c);
	ret = write_range(c, lba, nblocks, cmp, buf, miscompare);
	lane_exit(x);
	return ret;
}

int coh_cache_write(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const void *buf)
{
	return write_entry(c, lba, nblocks, NULL, buf, NULL);
}

int coh_cache_compare_write(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const void *cmp,
			    const void *buf, uint32_t *miscompare)
{
	uint32_t dummy;

	if (!cmp)
		return -EINVAL;
	return write_entry(c, lba, nblocks, cmp, buf, miscompare ? miscompare : &dummy);
}

/*
 * coh_cache_lock_holders - the directory word of @lba's resource, read once: from this node's own
 * region when it is the home, else with one READ on the calling thread's lane, which is taken only
 * if free (a hint must not wait behind an operation). Nothing is locked by it: the word may change
 * the moment after.
 */
int coh_cache_lock_holders(struct coh_cache *c, uint64_t lba, uint32_t *owner, uint32_t *sharers)
{
	struct xport *x;
	uint64_t r, w;
	uint32_t home;
	int ret;

	if (!c || !owner || !sharers || lba >= c->nblocks)
		return -EINVAL;
	r = lba / c->res_blocks;
	home = res_home(c, r);
	if (home >= c->nodes || node_dead(c, home))
		return -ECONNRESET;
	if (home == c->me) {
		w = __atomic_load_n(
		    (uint64_t *)((uint8_t *)coh_mr_addr(c->dir_mr) + res_dir_off(c, r)),
		    __ATOMIC_ACQUIRE);
	} else {
		x = app_x(c);
		if (pthread_mutex_trylock(&x->mu))
			return -EBUSY;
		ret = xp_ready(x);
		if (!ret)
			ret = x->one[home] && x->dir[home]
				  ? coh_ep_post_read(x->one[home], x->buf, x->bounce_off,
						     x->dir[home], res_dir_off(c, r), 8, 0)
				  : -ENOTCONN;
		if (!ret) {
			x->outstanding++;
			ret = xp_wait_sends(x);
			atomic_fetch_add(&c->net_read, 1);
		}
		memcpy(&w, (uint8_t *)coh_mr_addr(x->buf) + x->bounce_off, sizeof(w));
		lane_exit(x);
		if (ret)
			return ret;
	}
	*owner = dir_excl(w) ? dir_owner(w) : NODE_NONE;
	*sharers = dir_sharers(w);
	return 0;
}

int coh_cache_flush(struct coh_cache *c)
{
	return c ? cache_writeback_all(c) : -EINVAL;
}

int coh_cache_writeback(struct coh_cache *c, const uint64_t *lbas, uint32_t n, uint32_t *written)
{
	uint64_t deadline;
	uint32_t i, done = 0;
	int ret = 0;

	if (!c || (n && !lbas))
		return -EINVAL;
	deadline = cache_now_ms() + c->timeout_ms;
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < n && !ret; i++) {
		struct slot_hdr *h;

		if (lbas[i] >= c->nblocks)
			continue;
		h = slot_of(c, lbas[i]);
		/* Only a slot that still holds this block dirty: one evicted or written back since
		 * the caller looked has had its records retired already. The write-back itself is
		 * the flush's and the eviction's (slot_clean): the lock is dropped while the
		 * block is written, and a writer of the same slot waits for it (slot_hdr.wb), so
		 * that the destage hook retires only the records the written data covers. */
		if (atomic_load_explicit(&h->tag, memory_order_relaxed) != lbas[i] + 1 ||
		    !h->dirty || h->wb)
			continue;
		/* A view change wants the caller's place (coh_cache_yield): give way between
		 * blocks, not after the whole batch. */
		if (atomic_load(&c->yield)) {
			ret = -EAGAIN;
			break;
		}
		ret = slot_clean(c, h, UINT64_MAX, deadline);
		if (!ret)
			done++;
	}
	pthread_mutex_unlock(&c->lock);
	if (written)
		*written = done;
	if (!ret && done)
		ret = coh_store_flush(c->store);
	return ret;
}

/* cache_release_all - give back every resource this node holds, after writing back, so that the
 * others need not ask a node that is leaving. Best effort: a CAS that loses a race is left. Not
 * when the write-back failed: the blocks left dirty are only in this node's log copies, and a
 * resource given back could be written by another node and then lose that write to a replay of
 * the older record. Kept, the others take the resources over with the log (a view change). */
int cache_release_all(struct coh_cache *c)
{
	uint64_t r, old;
	int ret = cache_writeback_all(c), r2;
	struct xport *x;

	if (ret)
		return ret;
	x = lane_enter(c);

	for (r = res_next_used(c, 0); r < c->nres; r = res_next_used(c, r + 1)) {
		struct res_state *st = res_of(c, r);
		uint64_t want, expect;
		int level;

		/* The service thread still answers the others while this runs (they may ask for
		 * what is being released): read and change the state under the lock, never hold
		 * it across the CAS. */
		pthread_mutex_lock(&c->lock);
		level = st->level;
		if (level == L_X) {
			expect = dir_make(true, c->me, 0, st->lv);
			want = dir_make(false, 0, 0, st->lv);
		} else {
			expect = st->dir_guess;
			want = st->dir_guess & ~(uint64_t)(1u << c->me);
		}
		pthread_mutex_unlock(&c->lock);
		if (level == L_I)
			continue;
		r2 = xp_cas(x, r, expect, want, &old);
		/* A home that already left took its directory with it: nothing to release. The
		 * data is in the store either way. */
		if (r2)
			COH_LOG_INFO("node %u: release of resource %llu: %s", c->me,
				     (unsigned long long)r, coh_strerror(r2));
		pthread_mutex_lock(&c->lock);
		st->level = L_I;
		pthread_mutex_unlock(&c->lock);
	}
	lane_exit(x);
	return ret;
}
