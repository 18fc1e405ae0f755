/*
 * cache.c - setting up and tearing down a node's coherent cache: its exported regions (directory
 * words for the resources it is home to, invalidation words, cache slots), the mesh of endpoints
 * of its two threads (see the channel plan in cache_internal.h), the exchange of region
 * descriptors, the lock-message codec, and the service thread that answers other nodes.
 * The protocol itself is in coherence.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "cache_internal.h"

/* Messages. */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Layout: 0 magic(2) 2 type 3 mode 4 requester 8 resource(8) 16 version 20 holder
 * 24 holder_v(3) 27 lane(1) 28 seq(4, low bits) */
void cmsg_encode(const struct cmsg *m, uint8_t *b)
{
	memset(b, 0, CMSG_SIZE);
	b[0] = (uint8_t)CMSG_MAGIC;
	b[1] = (uint8_t)(CMSG_MAGIC >> 8);
	b[2] = m->type;
	b[3] = m->mode;
	put32(b + 4, m->requester);
	put32(b + 8, (uint32_t)m->resource);
	put32(b + 12, (uint32_t)(m->resource >> 32));
	put32(b + 16, m->version);
	put32(b + 20, m->holder);
	put32(b + 24, m->holder_v & DIR_VER_MASK);
	b[27] = m->lane;
	put32(b + 28, (uint32_t)m->seq);
}

int cmsg_decode(const uint8_t *b, uint32_t len, uint32_t nodes, uint64_t nres, struct cmsg *m)
{
	struct cmsg d;

	if (len != CMSG_SIZE || (b[0] | b[1] << 8) != CMSG_MAGIC || b[27] >= COH_CACHE_MAX_LANES)
		return -EPROTO;
	d.lane = b[27];
	d.type = b[2];
	d.mode = b[3];
	d.requester = get32(b + 4);
	d.resource = get32(b + 8) | (uint64_t)get32(b + 12) << 32;
	d.version = get32(b + 16);
	d.holder = get32(b + 20);
	d.holder_v = get32(b + 24) & 0xffffff;
	d.seq = get32(b + 28);
	if (d.type < CMSG_REQ || d.type > CMSG_RETRY || d.mode < MODE_S || d.mode > MODE_X)
		return -EPROTO;
	if (d.requester >= nodes || d.resource >= nres || d.version > DIR_VER_MASK)
		return -EPROTO;
	if (d.holder != NODE_NONE && d.holder >= nodes)
		return -EPROTO;
	*m = d;
	return 0;
}

/* Transport of one thread. The buffer region holds XP_RECVS receive slots per receiving
 * endpoint, one send slot, and a bounce area of one slot (header + block) for peer fetches. */

static size_t xp_bounce_off(const struct xport *x)
{
	return (size_t)(x->n_recv_eps * XP_RECVS + 1) * CMSG_SIZE;
}

static int xp_post_recv(struct xport *x, uint32_t epi, uint32_t slot)
{
	return coh_ep_post_recv(x->recv_eps[epi], x->buf,
				(size_t)(epi * XP_RECVS + slot) * CMSG_SIZE, CMSG_SIZE,
				(uint64_t)epi << 32 | slot);
}

/* xp_poll - take completions; file decoded messages in the inbox. Returns the number of
 * completions taken, -ETIMEDOUT, or an error completion's status. */
int xp_poll(struct xport *x, int timeout_ms)
{
	struct coh_cache *c = x->c;
	struct coh_wc wc[16];
	int n, i, ret = 0;

	/* -EINTR: a wake (coh_cq_wake) with nothing arrived. Whoever woke this thread set a flag
	 * the service loop looks at on every pass, so a wake that a nested wait takes is not
	 * lost. */
	n = coh_cq_wait(x->cq, wc, 16, timeout_ms);
	if (n == -EAGAIN || n == -EINTR)
		return 0;
	if (n < 0)
		return n;
	for (i = 0; i < n; i++) {
		uint32_t epi = (uint32_t)(wc[i].wr_id >> 32), slot = (uint32_t)wc[i].wr_id;
		struct cmsg m;

		if (wc[i].opcode != COH_WC_RECV) {
			x->outstanding--;
			if (wc[i].status && (wc[i].wr_id & XP_WRID_NODE))
				x->wr_failed |= 1u << (wc[i].wr_id & 31);
			if (wc[i].status && !ret)
				ret = wc[i].status;
			continue;
		}
		if (wc[i].status) {
			/* A flushed receive: the peer is gone; its endpoint is not re-armed. */
			continue;
		}
		if (wc[i].peer < 32 &&
		    (atomic_load_explicit(&c->unreach, memory_order_relaxed) >> wc[i].peer & 1))
			atomic_fetch_and(&c->unreach, ~(1u << wc[i].peer));
		if (cmsg_decode((uint8_t *)coh_mr_addr(x->buf) +
				    (size_t)(epi * XP_RECVS + slot) * CMSG_SIZE,
				wc[i].byte_len, c->nodes, c->nres, &m)) {
			COH_LOG_WARN("node %u: malformed lock message from %u dropped", c->me,
				     wc[i].peer);
		} else if (x->in_count == XP_INBOX) {
			COH_LOG_ERR("node %u: lock message inbox full; dropping", c->me);
		} else {
			x->inbox[(x->in_head + x->in_count++) % XP_INBOX] = m;
		}
		if (xp_post_recv(x, epi, slot) && !ret)
			ret = -EIO;
	}
	return ret ? ret : n;
}

bool xp_take(struct xport *x, struct cmsg *m)
{
	if (!x->in_count)
		return false;
	*m = x->inbox[x->in_head];
	x->in_head = (x->in_head + 1) % XP_INBOX;
	x->in_count--;
	return true;
}

/* xp_wait_sends - wait, bounded, until every send-side operation this thread posted is done.
 * Returns the first error status seen. */
int xp_wait_sends(struct xport *x)
{
	int ret = 0, r;

	while (x->outstanding) {
		r = xp_poll(x, (int)x->c->timeout_ms);
		if (r == -ETIMEDOUT)
			return r;
		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
}

/*
 * xp_ready - call before posting. An earlier wait that gave up (it timed out) left operations
 * out: take their completions first, so that their status is not counted for the new ones and a
 * late result (a CAS's old word, in the bounce area every operation shares) cannot land over a
 * new one's. -ETIMEDOUT when they are still out after another bound: post nothing then.
 */
int xp_ready(struct xport *x)
{
	if (!x->outstanding)
		return 0;
	(void)xp_wait_sends(x);
	x->wr_failed = 0;
	if (!x->outstanding)
		return 0;
	COH_LOG_WARN("node %u: %u fabric operations still out after two bounds", x->c->me,
		     x->outstanding);
	return -ETIMEDOUT;
}

/* xp_cas_at - one fabric CAS on the word at @off of @node's directory region, waited for. */
int xp_cas_at(struct xport *x, uint32_t node, uint64_t off, uint64_t expect, uint64_t swap,
	      uint64_t *old)
{
	struct coh_cache *c = x->c;
	uint8_t *scratch = (uint8_t *)coh_mr_addr(x->buf) + x->bounce_off;
	int ret;

	if (node >= c->nodes || !x->one[node] || !x->dir[node])
		return -ENOTCONN;
	if (node_dead(c, node))
		return -ECONNRESET;
	ret = xp_ready(x);
	if (!ret)
		ret = coh_ep_post_cas(x->one[node], x->buf, x->bounce_off, x->dir[node], off,
				      expect, swap, 0);
	if (ret)
		return ret;
	x->outstanding++;
	ret = xp_wait_sends(x);
	if (ret)
		return ret;
	memcpy(old, scratch, sizeof(*old));
	atomic_fetch_add(&c->net_atomic, 1);
	return 0;
}

/*
 * xp_cas_many - @n (at most XP_CAS_BATCH) fabric CASes on words of @node's directory region,
 * posted together and waited for together: one round trip where xp_cas_at pays @n. The view
 * change's steps use it, since they touch many words while the I/O lock is held.
 */
int xp_cas_many(struct xport *x, uint32_t node, uint32_t n, const uint64_t *off,
		const uint64_t *expect, const uint64_t *swap, uint64_t *old)
{
	struct coh_cache *c = x->c;
	uint8_t *scratch = (uint8_t *)coh_mr_addr(x->buf) + x->bounce_off;
	uint32_t i;
	int ret = 0, r;

	if (n > XP_CAS_BATCH)
		return -EINVAL;
	if (node >= c->nodes || !x->one[node] || !x->dir[node])
		return -ENOTCONN;
	if (node_dead(c, node))
		return -ECONNRESET;
	ret = xp_ready(x);
	if (ret)
		return ret;
	for (i = 0; i < n && !ret; i++) {
		ret = coh_ep_post_cas(x->one[node], x->buf, x->bounce_off + i * 8, x->dir[node],
				      off[i], expect[i], swap[i], 0);
		if (!ret)
			x->outstanding++;
	}
	r = xp_wait_sends(x);
	if (ret || r)
		return ret ? ret : r;
	memcpy(old, scratch, n * sizeof(*old));
	atomic_fetch_add(&c->net_atomic, n);
	return 0;
}

/* xp_cas - one fabric CAS on the directory word of @r at its home, waited for. */
int xp_cas(struct xport *x, uint64_t r, uint64_t expect, uint64_t swap, uint64_t *old)
{
	return xp_cas_at(x, res_home(x->c, r), res_dir_off(x->c, r), expect, swap, old);
}

/* xp_send - send one lock message and wait for it to leave. */
int xp_send(struct xport *x, struct coh_ep *ep, const struct cmsg *m)
{
	size_t off = (size_t)x->n_recv_eps * XP_RECVS * CMSG_SIZE;
	int ret;

	if (!ep)
		return -ENOTCONN;
	ret = xp_ready(x);
	if (ret)
		return ret;
	cmsg_encode(m, (uint8_t *)coh_mr_addr(x->buf) + off);
	ret = coh_ep_post_send(ep, x->buf, off, CMSG_SIZE, 0);
	if (ret)
		return ret;
	x->outstanding++;
	atomic_fetch_add(&x->c->net_send, 1);
	return xp_wait_sends(x);
}

/* Setup. */

/* mesh_want - one endpoint of the mesh: @ch to @peer on @cq, made into *@out. */
struct mesh_want {
	uint32_t peer, ch;
	struct coh_cq *cq;
	struct coh_ep **out;
};

/* mesh_open - every endpoint of every lane and of the service thread, connected at the same time
 * (coh_ep_new_many: the mesh has 3 lanes + 1 endpoints per peer, and one handshake after the
 * other would take that many round trips of the connection manager). Bounded by three timeouts,
 * not one: every member makes its mesh at once (a formation, a view change), and on soft-RoCE
 * under TCG the 50-odd handshakes of each of five nodes took longer than 2 s. */
static int mesh_open(struct coh_cache *c)
{
	struct coh_ep_attr *attrs;
	struct mesh_want *w;
	struct coh_ep **eps;
	uint32_t p, l, n = 0, i, max = c->nodes * (3 * c->nlanes + 1);
	int ret = -ENOMEM;

	w = calloc(max, sizeof(*w));
	attrs = calloc(max, sizeof(*attrs));
	eps = calloc(max, sizeof(*eps));
	if (!w || !attrs || !eps)
		goto out;
	for (p = 0; p < c->nodes; p++) {
		if (!is_member(c, p))
			continue;
		for (l = 0; l < c->nlanes; l++) {
			struct xport *x = &c->lane[l];

			w[n++] = (struct mesh_want){ p, lane_ch(l, CH_APP), x->cq, &x->one[p] };
			if (p == c->me)
				continue;
			/* Channel 11 (and each lane's second) is lower.app <-> higher.svc; 12 the
			 * reverse. */
			w[n++] =
			    (struct mesh_want){ p, lane_ch(l, CH_APP_SVC),
						c->me < p ? x->cq : c->svc.cq,
						c->me < p ? &x->to_svc[p] : &c->to_lane[p][l] };
			w[n++] =
			    (struct mesh_want){ p, lane_ch(l, CH_SVC_APP),
						c->me < p ? c->svc.cq : x->cq,
						c->me < p ? &c->to_lane[p][l] : &x->to_svc[p] };
		}
		w[n++] = (struct mesh_want){ p, CH_SVC, c->svc.cq, &c->svc.one[p] };
	}
	for (i = 0; i < n; i++)
		attrs[i] = (struct coh_ep_attr){ .peer = w[i].peer,
						 .channel = c->ch_base + w[i].ch - CH_APP,
						 .send_cq = w[i].cq,
						 .recv_cq = w[i].cq,
						 .max_send_wr = XP_CAS_BATCH,
						 .max_recv_wr = XP_RECVS,
						 .max_msg_size = 256,
						 .timeout_ms = 3 * c->timeout_ms };
	ret = coh_ep_new_many(c->fab, attrs, n, eps);
	if (ret)
		goto out;
	for (i = 0; i < n; i++)
		*w[i].out = eps[i];
	/* The receiving endpoints of each thread, and the service thread's sends to peers. */
	for (p = 0; p < c->nodes; p++) {
		if (!is_member(c, p) || p == c->me)
			continue;
		for (l = 0; l < c->nlanes; l++) {
			struct xport *x = &c->lane[l];

			x->recv_eps[x->n_recv_eps++] = x->to_svc[p];
			c->svc.recv_eps[c->svc.n_recv_eps++] = c->to_lane[p][l];
		}
		c->svc.recv_eps[c->svc.n_recv_eps++] = c->svc.one[p];
		c->svc.to_svc[p] = c->svc.one[p];
	}
out:
	free(w);
	free(attrs);
	free(eps);
	return ret;
}

static int xp_arm(struct coh_cache *c, struct xport *x)
{
	size_t len = xp_bounce_off(x) + SLOT_HDR + c->bsize;
	uint32_t e, s;
	int ret;

	x->c = c;
	x->bounce_off = xp_bounce_off(x);
	ret = coh_mr_new(c->fab, len, COH_ACCESS_LOCAL_WRITE, &x->buf);
	for (e = 0; !ret && e < x->n_recv_eps; e++) {
		for (s = 0; !ret && s < XP_RECVS; s++)
			ret = xp_post_recv(x, e, s);
	}
	return ret;
}

/* exchange - send our three descriptors to every peer on lane 0's one-sided channel, import
 * theirs on every lane's and the service thread's one-sided endpoints. */
static int exchange(struct coh_cache *c)
{
	struct coh_mr_desc mine[3], theirs[3];
	struct coh_mr *tmp;
	uint32_t p, l, got = 0;
	int ret;

	if ((ret = coh_mr_export(c->dir_mr, &mine[0])) ||
	    (ret = coh_mr_export(c->inv_mr, &mine[1])) ||
	    (ret = coh_mr_export(c->slots_mr, &mine[2])))
		return ret;
	ret = coh_mr_new(c->fab, sizeof(mine) * (c->nodes + 1), COH_ACCESS_LOCAL_WRITE, &tmp);
	if (ret)
		return ret;
	memcpy(coh_mr_addr(tmp), mine, sizeof(mine));
	for (p = 0; !ret && p < c->nodes; p++) {
		if (p != c->me && is_member(c, p)) {
			ret = coh_ep_post_recv(c->lane[0].one[p], tmp, sizeof(mine) * (p + 1),
					       sizeof(mine), p);
		}
	}
	for (p = 0; !ret && p < c->nodes; p++) {
		if (p != c->me && is_member(c, p))
			ret = coh_ep_send_sync(c->lane[0].one[p], tmp, 0, sizeof(mine));
	}
	while (!ret && got < c->nmemb - 1) {
		struct coh_wc wc;
		/* As long as a peer's mesh may still take (mesh_open). */
		int n = coh_cq_wait(c->lane[0].cq, &wc, 1, 3 * (int)c->timeout_ms);

		if (n < 0)
			ret = n;
		else if (wc.status)
			ret = wc.status;
		else if (wc.opcode == COH_WC_RECV)
			got++;
	}
	for (p = 0; !ret && p < c->nodes; p++) {
		if (!is_member(c, p))
			continue;
		if (p == c->me)
			memcpy(theirs, mine, sizeof(mine));
		else
			memcpy(theirs, (uint8_t *)coh_mr_addr(tmp) + sizeof(mine) * (p + 1),
			       sizeof(mine));
		for (l = 0; !ret && l < c->nlanes; l++) {
			struct xport *x = &c->lane[l];

			ret = coh_rmr_import(x->one[p], &theirs[0], &x->dir[p]);
			if (!ret)
				ret = coh_rmr_import(x->one[p], &theirs[1], &x->inv[p]);
			if (!ret)
				ret = coh_rmr_import(x->one[p], &theirs[2], &x->slots[p]);
		}
		if (!ret)
			ret = coh_rmr_import(c->svc.one[p], &theirs[0], &c->svc.dir[p]);
		if (!ret)
			ret = coh_rmr_import(c->svc.one[p], &theirs[1], &c->svc.inv[p]);
	}
	coh_mr_delete(&tmp);
	return ret;
}

/* svc_import - take in the directory descriptors a view change left for this thread
 * (coh_cache_import): the thread's endpoints are its own, so it swaps them in itself. */
static void svc_import(struct coh_cache *c)
{
	struct coh_mr_desc d[COH_CACHE_MAX_NODES][2];
	uint32_t pending, p;
	int ret;

	pthread_mutex_lock(&c->lock);
	pending = c->svc_desc_pending;
	c->svc_desc_pending = 0;
	memcpy(d, c->svc_desc, sizeof(d));
	pthread_mutex_unlock(&c->lock);
	for (p = 0; pending && p < c->nodes; p++) {
		if (!(pending >> p & 1) || !c->svc.one[p])
			continue;
		coh_rmr_delete(&c->svc.dir[p]);
		coh_rmr_delete(&c->svc.inv[p]);
		ret = coh_rmr_import(c->svc.one[p], &d[p][0], &c->svc.dir[p]);
		if (!ret)
			ret = coh_rmr_import(c->svc.one[p], &d[p][1], &c->svc.inv[p]);
		if (ret)
			COH_LOG_WARN("node %u: service thread: node %u's new directory: %s", c->me,
				     p, coh_strerror(ret));
	}
}

int coh_cache_rekey(struct coh_cache *c, struct coh_mr_desc descs[COH_CACHE_DESCS])
{
	int ret;

	if (!c || !descs)
		return -EINVAL;
	/* The slots are also this thread's local target of peer READs (fetch_into_slot), so the
	 * re-key runs in the application thread's place, as every view change step does. */
	if ((ret = coh_mr_rekey(c->dir_mr)) || (ret = coh_mr_rekey(c->inv_mr)) ||
	    (ret = coh_mr_rekey(c->slots_mr)))
		return ret;
	if ((ret = coh_mr_export(c->dir_mr, &descs[0])) ||
	    (ret = coh_mr_export(c->inv_mr, &descs[1])) ||
	    (ret = coh_mr_export(c->slots_mr, &descs[2])))
		return ret;
	CTRACE(c, "rekey");
	return coh_cache_import(c, c->me, descs);
}

int coh_cache_import(struct coh_cache *c, uint32_t peer,
		     const struct coh_mr_desc descs[COH_CACHE_DESCS])
{
	uint32_t l;
	int ret;

	if (!c || !descs || peer >= c->nodes || !is_member(c, peer))
		return -EINVAL;
	/* Every lane's: the caller holds them all (a view change step). */
	for (l = 0; l < c->nlanes; l++) {
		struct xport *x = &c->lane[l];

		if (!x->one[peer])
			return -ENOTCONN;
		coh_rmr_delete(&x->dir[peer]);
		coh_rmr_delete(&x->inv[peer]);
		coh_rmr_delete(&x->slots[peer]);
		if ((ret = coh_rmr_import(x->one[peer], &descs[0], &x->dir[peer])) ||
		    (ret = coh_rmr_import(x->one[peer], &descs[1], &x->inv[peer])) ||
		    (ret = coh_rmr_import(x->one[peer], &descs[2], &x->slots[peer])))
			return ret;
	}
	pthread_mutex_lock(&c->lock);
	c->svc_desc[peer][0] = descs[0];
	c->svc_desc[peer][1] = descs[1];
	__atomic_or_fetch(&c->svc_desc_pending, 1u << peer, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&c->lock);
	coh_cq_wake(c->svc.cq);
	return 0;
}

static void *svc_main(void *arg)
{
	struct coh_cache *c = arg;
	uint32_t budget;
	struct cmsg m;

	while (!atomic_load(&c->stop)) {
		if (__atomic_load_n(&c->svc_desc_pending, __ATOMIC_RELAXED))
			svc_import(c);
		/* Woken by the fabric: a message, or coh_cq_wake from a thread that dropped a pin
		 * with requests waiting (cache_kick), imported new descriptors, or stops the
		 * cache. The bound is only a safety net. */
		int ret = xp_poll(&c->svc, SVC_IDLE_MS);

		if (ret < 0 && ret != -ETIMEDOUT)
			COH_LOG_WARN("node %u: service thread: %s", c->me, coh_strerror(ret));
		/* Idle for a while: a grant may sit on a lane no operation uses, with requests
		 * queued here for it (svc_handle). */
		if (ret == -ETIMEDOUT)
			cache_take_idle_lanes(c);
		/* Only the messages in the inbox now: handling one polls, and so takes in more
		 * (a requester told to retry asks again at once), and an unbounded loop here would
		 * starve the kicks and the imports below it. A new directory descriptor goes in
		 * before the next message: every message served with the revoked one fails. */
		for (budget = c->svc.in_count; budget && xp_take(&c->svc, &m); budget--) {
			if (__atomic_load_n(&c->svc_desc_pending, __ATOMIC_RELAXED))
				svc_import(c);
			svc_handle(c, &m);
		}
		pthread_mutex_lock(&c->lock);
		if (c->svc_kick) {
			c->svc_kick = false;
			pthread_mutex_unlock(&c->lock);
			svc_serve_queued(c);
		} else {
			pthread_mutex_unlock(&c->lock);
		}
	}
	return NULL;
}

static void xp_close(struct xport *x, uint32_t nodes)
{
	uint32_t p;

	for (p = 0; p < nodes; p++) {
		coh_rmr_delete(&x->dir[p]);
		coh_rmr_delete(&x->inv[p]);
		coh_rmr_delete(&x->slots[p]);
	}
	for (p = 0; p < nodes; p++) {
		/* The service thread's to_svc aliases its one-sided endpoint. */
		if (x->to_svc[p] != x->one[p])
			coh_ep_delete(&x->to_svc[p]);
		coh_ep_delete(&x->one[p]);
	}
	coh_mr_delete(&x->buf);
	coh_cq_delete(&x->cq);
}

/*
 * cache_inv_words - how many invalidation words this node keeps: a power of two, one per
 * resource for a volume of up to 4 per cache slot (and at least 4096), else that many. A node
 * has a valid shared copy only of resources whose blocks are in its slots, so 4 per slot keeps
 * two of them from sharing a word most of the time, and the region follows the cache, not the
 * volume: 32 KiB for the default 1024 slots, where one word per resource of a 1 TiB volume of
 * 64 KiB resources was 128 MiB on every node.
 */
static uint64_t cache_inv_words(const struct coh_cache *c)
{
	uint64_t want = (uint64_t)c->nslots * 4, words = 1;

	if (want < 4096)
		want = 4096;
	if (want > c->nres)
		want = c->nres;
	while (words < want)
		words <<= 1;
	return words;
}

static void cache_free(struct coh_cache *c)
{
	uint32_t p, l;

	for (l = 0; l < c->nlanes; l++)
		xp_close(&c->lane[l], c->nodes);
	for (p = 0; p < c->nodes; p++) {
		for (l = 0; l < COH_CACHE_MAX_LANES; l++)
			coh_ep_delete(&c->to_lane[p][l]);
	}
	xp_close(&c->svc, c->nodes);
	coh_mr_delete(&c->img_mr);
	coh_mr_delete(&c->slots_mr);
	coh_mr_delete(&c->inv_mr);
	coh_mr_delete(&c->dir_mr);
	if (c->res && c->res_used) {
		uint64_t r;

		for (r = res_next_used(c, 0); r < c->nres; r = res_next_used(c, r + 1)) {
			struct res_state *st = res_of(c, r);

			while (st->head) {
				struct req *q = st->head;

				st->head = q->next;
				free(q);
			}
		}
	}
	if (c->trace)
		fclose(c->trace);
	free(c->res);
	free(c->res_used);
	free(c->kick);
	free(c->out);
	pthread_cond_destroy(&c->kick_cond);
	pthread_cond_destroy(&c->claim_cond);
	pthread_cond_destroy(&c->wb_cond);
	pthread_cond_destroy(&c->out_cond);
	for (l = 0; l < COH_CACHE_MAX_LANES; l++)
		pthread_mutex_destroy(&c->lane[l].mu);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int coh_cache_open(const struct coh_cache_attr *attr, struct coh_cache **cachep)
{
	struct coh_fabric_info info;
	struct coh_cache *c;
	uint32_t depth, members, n, l, lanes;
	int ret;

	if (!attr || !cachep || !attr->fab || !attr->store || !attr->nodes ||
	    attr->nodes > COH_CACHE_MAX_NODES || attr->lanes > COH_CACHE_MAX_LANES)
		return -EINVAL;
	lanes = attr->lanes ? attr->lanes : 1;
	if ((attr->channel_base ? attr->channel_base : CH_APP) + coh_cache_channels(lanes) - 1 >
	    255)
		return -EINVAL;
	if (coh_fabric_query(attr->fab, &info) || info.node_id >= attr->nodes)
		return -EINVAL;
	members =
	    attr->members ? attr->members : (uint32_t)((1ull << attr->nodes) - 1); /* nodes <= 32 */
	if (!(members >> info.node_id & 1) || (attr->nodes < 32 && members >> attr->nodes))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fab = attr->fab;
	c->store = attr->store;
	c->me = info.node_id;
	c->nodes = attr->nodes;
	if (getenv("COHORT_CACHE_TRACE")) {
		char path[256];

		snprintf(path, sizeof(path), "%s/%d.n%u", getenv("COHORT_CACHE_TRACE"), getpid(),
			 c->me);
		c->trace = fopen(path, "w");
		if (c->trace)
			setvbuf(c->trace, NULL, _IOLBF, 0);
	}
	c->members = members;
	c->nlanes = lanes;
	for (n = 0; n < c->nodes; n++) {
		if (members >> n & 1)
			c->memb[c->nmemb++] = n;
	}
	c->ch_base = attr->channel_base ? attr->channel_base : CH_APP;
	c->write_hook = attr->write_hook;
	c->write_undo = attr->write_undo;
	c->destage = attr->destage;
	c->step_pause = attr->step_pause;
	c->point = attr->point;
	c->lease = attr->lease;
	c->hold_locks = attr->hold_locks;
	c->hook_arg = attr->hook_arg;
	{
		struct timespec res;

		/* The lease is checked on the coarse clock, which lags the precise one by up to a
		 * tick: that much is taken off the lease. */
		clock_getres(CLOCK_MONOTONIC_COARSE, &res);
		c->lease_slack_ms = (uint32_t)(res.tv_nsec / 1000000) + 1;
	}
	c->bsize = coh_store_block_size(attr->store);
	c->nblocks = coh_store_nblocks(attr->store);
	c->res_blocks = attr->resource_blocks ? attr->resource_blocks : 65536 / c->bsize;
	if (!c->res_blocks)
		c->res_blocks = 1;
	c->nslots = attr->cache_blocks ? attr->cache_blocks : 1024;
	c->stride = SLOT_HDR + c->bsize;
	c->timeout_ms = attr->timeout_ms ? attr->timeout_ms : COH_FABRIC_DEFAULT_TIMEOUT_MS;
	c->nres = (c->nblocks + c->res_blocks - 1) / c->res_blocks;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->kick_cond, NULL);
	pthread_cond_init(&c->claim_cond, NULL);
	pthread_cond_init(&c->wb_cond, NULL);
	pthread_cond_init(&c->out_cond, NULL);
	for (l = 0; l < COH_CACHE_MAX_LANES; l++)
		pthread_mutex_init(&c->lane[l].mu, NULL);
	c->res = calloc(c->nres, sizeof(*c->res));
	c->res_used =
	    calloc((c->nres + RES_GROUP * 64 - 1) / (RES_GROUP * 64), sizeof(*c->res_used));
	if (!c->res || !c->res_used) {
		ret = -ENOMEM;
		goto err_free;
	}
	/* Every node's region has room for every word, so that a word whose home dies can be
	 * rebuilt at the same offset on its next home; the last words arbitrate takeovers. */
	for (n = 0; n < c->nodes; n++)
		c->home_of[n] = home_in(c, members, n);
	c->inv_mask = cache_inv_words(c) - 1;
	c->bucket_words = (c->nres + c->nodes - 1) / c->nodes;
	c->dir_words = c->nodes * c->bucket_words + COH_CACHE_MAX_NODES;
	if ((ret = coh_mr_new(c->fab, c->dir_words * 8,
			      COH_ACCESS_REMOTE_ATOMIC | COH_ACCESS_REMOTE_READ, &c->dir_mr)) ||
	    (ret =
		 coh_mr_new(c->fab, (c->inv_mask + 1) * 8, COH_ACCESS_REMOTE_WRITE, &c->inv_mr)) ||
	    (ret = coh_mr_new(c->fab, (size_t)c->nslots * c->stride,
			      COH_ACCESS_REMOTE_READ | COH_ACCESS_LOCAL_WRITE, &c->slots_mr)))
		goto err_free;
	c->inv = coh_mr_addr(c->inv_mr);
	c->slots = coh_mr_addr(c->slots_mr);
	depth = (8 + XP_RECVS) * 3 * c->nodes + 16;
	for (l = 0; l < c->nlanes; l++) {
		c->lane[l].lane = l;
		ret = coh_cq_new(c->fab, depth, &c->lane[l].cq);
		if (ret)
			goto err_free;
	}
	/* The service thread receives on every lane's channels too. */
	ret = coh_cq_new(c->fab, depth + (c->nlanes - 1) * XP_RECVS * c->nodes, &c->svc.cq);
	if (ret)
		goto err_free;
	ret = mesh_open(c);
	for (l = 0; !ret && l < c->nlanes; l++)
		ret = xp_arm(c, &c->lane[l]);
	if (!ret)
		ret = xp_arm(c, &c->svc);
	if (!ret)
		ret = exchange(c);
	if (ret) {
		COH_LOG_ERR("node %u: cache open: %s", c->me, coh_strerror(ret));
		goto err_free;
	}
	ret = -pthread_create(&c->svc_thread, NULL, svc_main, c);
	if (ret)
		goto err_free;
	*cachep = c;
	return 0;

err_free:
	cache_free(c);
	return ret;
}

int coh_cache_close(struct coh_cache **cachep)
{
	struct coh_cache *c;
	int ret;

	if (!cachep || !*cachep)
		return 0;
	c = *cachep;
	*cachep = NULL;
	ret = cache_release_all(c);
	atomic_store(&c->stop, true);
	coh_cq_wake(c->svc.cq);
	pthread_join(c->svc_thread, NULL);
	cache_free(c);
	return ret;
}

int coh_cache_abandon(struct coh_cache **cachep)
{
	struct coh_cache *c;

	if (!cachep || !*cachep)
		return 0;
	c = *cachep;
	*cachep = NULL;
	atomic_store(&c->stop, true);
	coh_cq_wake(c->svc.cq);
	pthread_join(c->svc_thread, NULL);
	cache_free(c);
	return 0;
}

/* The lane each thread uses, per cache: a thread binds when it takes a lane (the engine's lane
 * lock), and a thread that never did uses lane 0. */
static __thread struct coh_cache *lane_cache;
static __thread uint32_t lane_no;

int coh_cache_lane_bind(struct coh_cache *c, uint32_t lane)
{
	if (!c || lane >= c->nlanes)
		return -EINVAL;
	lane_cache = c;
	lane_no = lane;
	return 0;
}

struct xport *app_x(struct coh_cache *c)
{
	return &c->lane[lane_cache == c && lane_no < c->nlanes ? lane_no : 0];
}

struct xport *lane_enter(struct coh_cache *c)
{
	struct xport *x = app_x(c);

	pthread_mutex_lock(&x->mu);
	return x;
}

void lane_exit(struct xport *x)
{
	pthread_mutex_unlock(&x->mu);
}

int coh_cache_stats(const struct coh_cache *c, struct coh_cache_stats *st)
{
	const uint64_t *from;
	uint64_t *to;
	size_t i;

	if (!c || !st)
		return -EINVAL;
	from = (const uint64_t *)&c->stats;
	to = (uint64_t *)st;
	_Static_assert(sizeof(*st) % sizeof(uint64_t) == 0, "coh_cache_stats: counters only");
	/* Without the cache lock (struct coh_cache): each counter on its own, relaxed. */
	for (i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
	st->net_atomic = atomic_load(&c->net_atomic);
	st->net_read = atomic_load(&c->net_read);
	st->net_write = atomic_load(&c->net_write);
	st->net_send = atomic_load(&c->net_send);
	st->replies_dropped = atomic_load(&c->replies_dropped);
	return 0;
}
