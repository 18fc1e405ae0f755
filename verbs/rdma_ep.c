/*
 * rdma_ep.c - endpoints of the rdma provider and the state of their connections: making the
 * connection objects and queue pairs, starting and failing active attempts, replacing a broken
 * connection, taking an endpoint or a whole peer down, ep_new and ep_delete.
 *
 * An endpoint is one RC connection to a peer, or two (active and passive) to the node itself. Its
 * state moves CONNECTING -> UP <-> RECONNECTING -> DOWN; everything here runs under
 * rdma_fabric.lock on the CM thread (rdma_cm.c), which reacts to CM events and timers by calling
 * these functions, except ep_new and ep_delete, which only link or unlink the endpoint and wait. A connection that breaks is replaced on the same endpoint: the active
 * side (the lower node id, or both halves for loopback) starts a new attempt, the passive side
 * probes the peer and waits for the replacement; the endpoint's timeout bounds either. The peer is
 * reported down once (fabric_peer_down) when its listener is gone, its incarnation changed, or it
 * does not come back in time.
 *
 * Not here: the wire protocol and the CM thread (rdma_cm.c), posting (rdma_io.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdma_internal.h"

/* rdma_find_ep - the linked endpoint to @peer on @channel, or NULL. Under fab->lock. */
struct rdma_ep *rdma_find_ep(struct rdma_fabric *fab, uint32_t peer, uint32_t channel)
{
	struct rdma_ep *ep;

	for (ep = fab->eps; ep; ep = ep->next) {
		if (ep->attr.peer == peer && ep->attr.channel == channel)
			return ep;
	}
	return NULL;
}

/* rdma_bury - hand @ctx to the CM thread, which destroys it after the current event's ack. */
void rdma_bury(struct rdma_fabric *fab, struct rdma_ctx *ctx)
{
	ctx->next_dead = fab->graveyard;
	fab->graveyard = ctx;
}

/* rdma_conn_bury - disown @c and schedule its destruction. Under fab->lock. */
void rdma_conn_bury(struct rdma_fabric *fab, struct rdma_conn *c)
{
	c->dead = true;
	c->ep = NULL;
	rdma_bury(fab, &c->ctx);
}

/* rdma_id_bury - schedule the destruction of a bare id (a refused request). */
void rdma_id_bury(struct rdma_fabric *fab, struct rdma_cm_id *id)
{
	struct rdma_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		COH_LOG_ERR("node %u: out of memory; leaking a connection id", fab->base.node_id);
		return;
	}
	c->ctx.kind = RDMA_CTX_CONN;
	c->id = id;
	id->context = c;
	rdma_conn_bury(fab, c);
}

/* rdma_conn_release - destroy a connection's QP and id, keeping its memory. */
void rdma_conn_release(struct rdma_conn *c)
{
	if (!c->id)
		return;
	if (c->id->qp)
		rdma_destroy_qp(c->id);
	rdma_destroy_id(c->id);
	c->id = NULL;
	c->qp = NULL;
}

/* rdma_id_tune - bound transport retries on @id so that a dead peer is noticed quickly. */
void rdma_id_tune(struct rdma_fabric *fab, struct rdma_cm_id *id)
{
	uint8_t t = RDMA_ACK_TIMEOUT;

	if (rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
		COH_LOG_WARN("node %u: cannot set the ACK timeout: %s", fab->base.node_id,
			     strerror(errno));
}

/* rdma_conn_new - a connection object for @ep (no id yet). */
struct rdma_conn *rdma_conn_new(struct rdma_ep *ep, enum rdma_role role)
{
	struct rdma_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ctx.kind = RDMA_CTX_CONN;
	c->owner = ep;
	c->ep = ep;
	c->role = role;
	return c;
}

/* rdma_conn_qp - create @c's RC queue pair on its id, on @ep's completion queues. */
int rdma_conn_qp(struct rdma_fabric *fab, struct rdma_ep *ep, struct rdma_conn *c)
{
	struct ibv_qp_init_attr_ex qa;

	memset(&qa, 0, sizeof(qa));
	qa.qp_context = c;
	qa.send_cq = ep->scq->cq;
	qa.recv_cq = ep->rcq->cq;
	qa.cap.max_send_wr = ep->attr.max_send_wr;
	qa.cap.max_recv_wr = ep->attr.max_recv_wr;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	qa.cap.max_inline_data = fab->max_inline;
	qa.qp_type = IBV_QPT_RC;
	qa.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
	qa.pd = fab->pd;
	qa.send_ops_flags = rdma_send_ops(fab);
	if (rdma_create_qp_ex(c->id, &qa))
		return -errno;
	c->qp = c->id->qp;
	c->qpx = ibv_qp_to_qp_ex(c->qp);
	if (!c->qpx) {
		rdma_destroy_qp(c->id);
		c->qp = NULL;
		return -EOPNOTSUPP;
	}
	return 0;
}

/* rdma_conn_retire - stop using @c: flush its work requests and tell the peer. Under ep->lock. */
void rdma_conn_retire(struct rdma_ep *ep, struct rdma_conn *c)
{
	struct ibv_qp_attr qpa = { .qp_state = IBV_QPS_ERR };

	/* Error state flushes every posted request, so each slot gets its completion and the
	 * connection can be destroyed once @outstanding drains. */
	if (c->qp && ibv_modify_qp(c->qp, &qpa, IBV_QP_STATE))
		COH_LOG_WARN("node %u: cannot move a queue pair to error: %s",
			     ep->fab->base.node_id, strerror(errno));
	if (c->established)
		rdma_disconnect(c->id);
	c->next = ep->retired;
	ep->retired = c;
}

/* rdma_retire_current - retire the endpoint's current connections. Under fab->lock, ep->lock. */
static void rdma_retire_current(struct rdma_ep *ep)
{
	if (ep->act)
		rdma_conn_retire(ep, ep->act);
	if (ep->pas)
		rdma_conn_retire(ep, ep->pas);
	ep->act = NULL;
	ep->pas = NULL;
}

/* rdma_ep_fail_first - end ep_new's wait with @err. Under fab->lock. */
void rdma_ep_fail_first(struct rdma_fabric *fab, struct rdma_ep *ep, int err)
{
	ep->result = err;
	pthread_mutex_lock(&ep->lock);
	atomic_store(&ep->state, RDMA_EP_DOWN);
	rdma_retire_current(ep);
	pthread_mutex_unlock(&ep->lock);
	pthread_cond_broadcast(&fab->cond);
}

/* rdma_ep_down - fail @ep for good: posted work flushes, later posts complete -ECONNRESET. */
void rdma_ep_down(struct rdma_fabric *fab, struct rdma_ep *ep, const char *why)
{
	int state = atomic_load(&ep->state);

	if (state == RDMA_EP_DOWN)
		return;
	if (ep->attempt) {
		rdma_conn_bury(fab, ep->attempt);
		ep->attempt = NULL;
	}
	ep->phase = RDMA_PH_IDLE;
	ep->deadline = 0;
	ep->probe_at = 0;
	if (state == RDMA_EP_CONNECTING)
		ep->result = -ECONNREFUSED;
	pthread_mutex_lock(&ep->lock);
	atomic_store(&ep->state, RDMA_EP_DOWN);
	rdma_retire_current(ep);
	rdma_ep_fail_parked(ep);
	rdma_ep_release_held(ep, -ECONNRESET);
	pthread_mutex_unlock(&ep->lock);
	COH_LOG_INFO("node %u: endpoint to node %u channel %u is down: %s", fab->base.node_id,
		     ep->attr.peer, ep->attr.channel, why);
	pthread_cond_broadcast(&fab->cond);
}

/* rdma_peer_gone - report @peer's incarnation @inc down once and fail its endpoints. */
void rdma_peer_gone(struct rdma_fabric *fab, uint32_t peer, uint64_t inc, const char *why)
{
	struct rdma_ep *ep;
	uint32_t i;

	/* Endpoints first: whoever takes the event must find them down already. */
	for (ep = fab->eps; ep; ep = ep->next) {
		if (ep->attr.peer == peer && ep->ever_up && ep->peer_inc == inc)
			rdma_ep_down(fab, ep, why);
	}
	if (peer != fab->base.node_id && inc && fab->down_inc[peer] != inc) {
		fab->down_inc[peer] = inc;
		COH_LOG_WARN("node %u: peer %u (incarnation %#" PRIx64 ") is gone: %s",
			     fab->base.node_id, peer, inc, why);
		fabric_peer_down(&fab->base, peer, inc);
	}
	if (fab->peer_inc[peer] == inc)
		fab->known &= ~(1ull << peer);
	/* Requests that incarnation left behind can never be served. */
	for (i = 0; i < fab->n_pending;) {
		struct rdma_pending *pd = &fab->pending[i];

		if (pd->req.node == peer && pd->req.inc == inc) {
			rdma_reject(pd->id, NULL, 0);
			rdma_id_bury(fab, pd->id);
			*pd = fab->pending[--fab->n_pending];
		} else {
			i++;
		}
	}
}

/* rdma_backoff - schedule the next active attempt. */
static void rdma_backoff(struct rdma_ep *ep)
{
	ep->phase = RDMA_PH_BACKOFF;
	ep->retry_at = rdma_now_ms() + ep->backoff_ms;
	ep->backoff_ms =
	    ep->backoff_ms * 2 > RDMA_BACKOFF_MAX_MS ? RDMA_BACKOFF_MAX_MS : ep->backoff_ms * 2;
}

/* rdma_attempt_start - start an active connection attempt for @ep. Under fab->lock. */
void rdma_attempt_start(struct rdma_fabric *fab, struct rdma_ep *ep)
{
	struct rdma_conn *c = rdma_conn_new(ep, RDMA_ROLE_ACTIVE);

	if (!c)
		goto err_backoff;
	if (rdma_create_id(fab->ech, &c->id, c, RDMA_PS_TCP)) {
		COH_LOG_WARN("node %u: rdma_create_id: %s", fab->base.node_id, strerror(errno));
		goto err_free_conn;
	}
	rdma_id_tune(fab, c->id);
	if (rdma_resolve_addr(c->id, NULL, (struct sockaddr *)&ep->peer_addr, RDMA_RESOLVE_MS)) {
		COH_LOG_WARN("node %u: cannot resolve node %u's address: %s", fab->base.node_id,
			     ep->attr.peer, strerror(errno));
		goto err_destroy_id;
	}
	ep->attempt = c;
	ep->phase = RDMA_PH_CONNECT;
	return;

err_destroy_id:
	/* No event was produced for it, so it can go at once. */
	rdma_destroy_id(c->id);
err_free_conn:
	free(c);
err_backoff:
	rdma_backoff(ep);
}

/* rdma_attempt_failed - the active attempt ended without a connection; decide what next. */
void rdma_attempt_failed(struct rdma_fabric *fab, struct rdma_ep *ep, enum rdma_outcome outcome,
			 int err, const char *why)
{
	int state = atomic_load(&ep->state);

	if (ep->attempt) {
		rdma_conn_bury(fab, ep->attempt);
		ep->attempt = NULL;
	}
	ep->phase = RDMA_PH_IDLE;
	if (state == RDMA_EP_CONNECTING) {
		/* The peer may simply not be listening yet: ep_new's deadline bounds the retries. */
		if (outcome == RDMA_FATAL)
			rdma_ep_fail_first(fab, ep, -err);
		else
			rdma_backoff(ep);
		return;
	}
	if (state != RDMA_EP_RECONNECTING)
		return;
	if (outcome == RDMA_RETRY)
		rdma_backoff(ep);
	else if (outcome == RDMA_GONE && !ep->loopback)
		rdma_peer_gone(fab, ep->attr.peer, ep->peer_inc, why);
	else
		rdma_ep_down(fab, ep, why);
}

/* rdma_conn_break - a current connection of @ep failed: replace it, or fail the endpoint. */
void rdma_conn_break(struct rdma_fabric *fab, struct rdma_ep *ep, const char *why, bool orderly)
{
	int state = atomic_load(&ep->state);

	if (state == RDMA_EP_DOWN)
		return;
	pthread_mutex_lock(&ep->lock);
	if (state != RDMA_EP_CONNECTING)
		atomic_store(&ep->state, RDMA_EP_RECONNECTING);
	rdma_retire_current(ep);
	pthread_mutex_unlock(&ep->lock);
	/* An attempt in flight cannot finish without the half that failed (on a loopback endpoint
	 * the attempt made the passive half): start over. */
	if (ep->need_act && ep->attempt) {
		rdma_conn_bury(fab, ep->attempt);
		ep->attempt = NULL;
	}
	if (state == RDMA_EP_CONNECTING) {
		/* Half-made first connection: start over; ep_new's deadline bounds it. */
		if (ep->need_act)
			rdma_backoff(ep);
		return;
	}
	if (!ep->deadline)
		ep->deadline = rdma_now_ms() + ep->attr.timeout_ms;
	/* A disconnect from the peer is how every orderly close of its endpoint starts (a cache
	 * reopened at a view change closes dozens): not worth a warning by itself. Whether it
	 * comes back or the peer is gone is logged when that is known. */
	if (orderly)
		COH_LOG_INFO("node %u: connection to node %u channel %u %s; re-establishing",
			     fab->base.node_id, ep->attr.peer, ep->attr.channel, why);
	else
		COH_LOG_WARN("node %u: connection to node %u channel %u failed (%s); "
			     "re-establishing",
			     fab->base.node_id, ep->attr.peer, ep->attr.channel, why);
	if (ep->need_act) {
		if (ep->phase != RDMA_PH_BACKOFF)
			rdma_attempt_start(fab, ep);
	} else if (ep->phase != RDMA_PH_WAIT_PEER) {
		ep->phase = RDMA_PH_WAIT_PEER;
		rdma_probe_start(fab, RDMA_MSG_PROBE, ep->attr.peer, ep->attr.channel, ep->peer_inc,
				 ep->attr.timeout_ms);
	}
}

/* rdma_ep_check_up - make @ep UP once every connection it needs is established. */
void rdma_ep_check_up(struct rdma_fabric *fab, struct rdma_ep *ep)
{
	int state = atomic_load(&ep->state);
	uint32_t peer = ep->attr.peer;

	if (ep->need_act && !(ep->act && ep->act->established))
		return;
	if (ep->need_pas && !(ep->pas && ep->pas->established))
		return;
	if (state != RDMA_EP_CONNECTING && state != RDMA_EP_RECONNECTING)
		return;
	pthread_mutex_lock(&ep->lock);
	ep->conn_gen++;
	atomic_store(&ep->state, RDMA_EP_UP);
	/* The peer is alive: remote access errors met on the way were real. */
	rdma_ep_release_held(ep, -EACCES);
	rdma_ep_repost(ep);
	pthread_mutex_unlock(&ep->lock);
	ep->phase = RDMA_PH_IDLE;
	ep->deadline = 0;
	ep->probe_at = 0;
	ep->backoff_ms = RDMA_BACKOFF_MS;
	if (state == RDMA_EP_CONNECTING)
		COH_LOG_INFO("node %u: connected to node %u channel %u (incarnation %#" PRIx64 ")",
			     fab->base.node_id, peer, ep->attr.channel, ep->peer_inc);
	else
		COH_LOG_WARN("node %u: connection to node %u channel %u re-established",
			     fab->base.node_id, peer, ep->attr.channel);
	ep->ever_up = true;
	if (peer != fab->base.node_id) {
		fab->known |= 1ull << peer;
		fab->peer_inc[peer] = ep->peer_inc;
	}
	pthread_cond_broadcast(&fab->cond);
}

/* rdma_conn_push - add @c (may be NULL) to the list at @list. */
static void rdma_conn_push(struct rdma_conn **list, struct rdma_conn *c)
{
	if (!c)
		return;
	c->next = *list;
	*list = c;
}

/* rdma_ep_teardown - unlink @ep, have the CM thread destroy its connections, settle its slots and
 * free it. Returns 0, or -ETIMEDOUT when the CM thread did not destroy them in time (the endpoint
 * is then leaked, since the CM thread may still use it). */
static int rdma_ep_teardown(struct rdma_fabric *fab, struct rdma_ep *ep)
{
	uint64_t deadline = verbs_now_ns() + RDMA_TEARDOWN_MS * 1000000ull;
	struct timespec abs = { .tv_sec = (time_t)(deadline / 1000000000ull),
				.tv_nsec = (long)(deadline % 1000000000ull) };
	struct rdma_conn *list, *c, *next;
	struct rdma_ctx *ctx;
	struct rdma_ep **epp;
	uint32_t i, left;

	pthread_mutex_lock(&fab->lock);
	for (epp = &fab->eps; *epp; epp = &(*epp)->next) {
		if (*epp == ep) {
			*epp = ep->next;
			break;
		}
	}
	pthread_mutex_lock(&ep->lock);
	atomic_store(&ep->state, RDMA_EP_DOWN);
	/* Completions still to come must not touch connections the CM thread is about to free. */
	for (i = 0; i < ep->attr.max_send_wr; i++)
		ep->sslots[i].conn = NULL;
	for (i = 0; i < ep->attr.max_recv_wr; i++)
		ep->rslots[i].conn = NULL;
	list = ep->retired;
	ep->retired = NULL;
	rdma_conn_push(&list, ep->act);
	rdma_conn_push(&list, ep->pas);
	rdma_conn_push(&list, ep->attempt);
	ep->act = ep->pas = ep->attempt = NULL;
	pthread_mutex_unlock(&ep->lock);
	for (c = list; c; c = next) {
		next = c->next;
		rdma_conn_bury(fab, c);
	}
	/* Every connection of the endpoint is in the graveyard now. Their queue pairs use the
	 * endpoint's completion queues, which the caller may delete next: wait until they are
	 * gone. Destroying ids here instead would race with the CM thread inside librdmacm. */
	for (ctx = fab->graveyard; ctx; ctx = ctx->next_dead) {
		if (ctx->kind == RDMA_CTX_CONN &&
		    container_of(ctx, struct rdma_conn, ctx)->owner == ep)
			ep->dying++;
	}
	rdma_wake(fab);
	while (ep->dying && pthread_cond_timedwait(&fab->cond, &fab->lock, &abs) != ETIMEDOUT)
		;
	left = ep->dying;
	pthread_mutex_unlock(&fab->lock);
	if (left) {
		COH_LOG_ERR("node %u: the CM thread did not release the endpoint to node %u; "
			    "leaking it",
			    fab->base.node_id, ep->attr.peer);
		return -ETIMEDOUT;
	}
	/* No queue pair of the endpoint exists any more, so no completion can still arrive for
	 * its slots. */
	rdma_ep_drain(ep);
	rdma_slots_fini(ep);
	free(ep);
	return 0;
}

/* rdma_ep_start - make an endpoint and let the CM thread start its connection; no wait. */
static int rdma_ep_start(struct rdma_fabric *fab, const struct coh_ep_attr *attr,
			 struct rdma_ep **epp)
{
	struct rdma_cq *scq = container_of(attr->send_cq, struct rdma_cq, base);
	struct rdma_cq *rcq = container_of(attr->recv_cq, struct rdma_cq, base);
	uint32_t me = fab->base.node_id;
	struct rdma_ep *ep;
	int ret;

	if (attr->max_send_wr > fab->max_qp_wr || attr->max_recv_wr > fab->max_qp_wr)
		return -EINVAL;
	if (scq->base.reserved > scq->hw_depth || rcq->base.reserved > rcq->hw_depth) {
		COH_LOG_ERR("node %u: completion queue holds %u completions on this device", me,
			    scq->hw_depth < rcq->hw_depth ? scq->hw_depth : rcq->hw_depth);
		return -ENOSPC;
	}
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->fab = fab;
	ep->attr = *attr;
	ep->scq = scq;
	ep->rcq = rcq;
	ep->loopback = attr->peer == me;
	ep->need_act = attr->peer >= me;
	ep->need_pas = attr->peer <= me;
	ep->backoff_ms = RDMA_BACKOFF_MS;
	atomic_init(&ep->state, RDMA_EP_CONNECTING);
	atomic_init(&ep->kick, 0);
	ret = rdma_peer_addr(fab, attr->peer, &ep->peer_addr);
	if (ret)
		goto err_free_ep;
	ret = rdma_slots_init(ep);
	if (ret)
		goto err_free_ep;
	pthread_mutex_lock(&fab->lock);
	if (rdma_find_ep(fab, attr->peer, attr->channel)) {
		pthread_mutex_unlock(&fab->lock);
		ret = -EEXIST;
		goto err_fini_slots;
	}
	ep->next = fab->eps;
	fab->eps = ep;
	/* The CM thread starts the attempt (a due backoff) or matches a held request. */
	if (ep->need_act)
		ep->phase = RDMA_PH_BACKOFF;
	rdma_wake(fab);
	pthread_mutex_unlock(&fab->lock);
	*epp = ep;
	return 0;

err_fini_slots:
	rdma_slots_fini(ep);
err_free_ep:
	free(ep);
	return ret;
}

/* rdma_ep_midway - @ep's first handshake is under way: its request is out and not yet answered,
 * or the peer's is accepted and not yet confirmed. Under fab->lock. */
static bool rdma_ep_midway(const struct rdma_ep *ep)
{
	return (ep->pas && !ep->pas->established) || (ep->attempt && ep->attempt->qp);
}

/*
 * rdma_ep_finish - wait until @deadline (ns) for @ep's first connection. On failure the endpoint
 * is torn down. A handshake under way at the deadline gets RDMA_MIDWAY_GRACE_MS more, once:
 * cutting it off tears the other side's half down too (its queue pair then cannot be made), so
 * two nodes that each wait less than one handshake takes (the membership's short waits, soft-RoCE
 * under load) would never connect.
 */
static int rdma_ep_finish(struct rdma_fabric *fab, struct rdma_ep *ep, uint64_t deadline)
{
	struct timespec abs = { .tv_sec = (time_t)(deadline / 1000000000ull),
				.tv_nsec = (long)(deadline % 1000000000ull) };
	bool graced = false;
	int ret, state;

	pthread_mutex_lock(&fab->lock);
	while (atomic_load(&ep->state) == RDMA_EP_CONNECTING) {
		if (pthread_cond_timedwait(&fab->cond, &fab->lock, &abs) != ETIMEDOUT)
			continue;
		if (graced || !rdma_ep_midway(ep))
			break;
		graced = true;
		deadline += RDMA_MIDWAY_GRACE_MS * 1000000ull;
		abs.tv_sec = (time_t)(deadline / 1000000000ull);
		abs.tv_nsec = (long)(deadline % 1000000000ull);
	}
	state = atomic_load(&ep->state);
	ret = ep->result ? ep->result : -ECONNREFUSED;
	pthread_mutex_unlock(&fab->lock);
	if (state == RDMA_EP_UP || state == RDMA_EP_RECONNECTING)
		return 0;
	if (state == RDMA_EP_CONNECTING) {
		/* The caller has -ETIMEDOUT and decides what it means (a peer not started yet is
		 * routine for the membership, which says so itself). */
		COH_LOG_INFO("node %u: no connection to node %u channel %u within %u ms",
			     fab->base.node_id, ep->attr.peer, ep->attr.channel,
			     ep->attr.timeout_ms);
		ret = -ETIMEDOUT;
	}
	/* The endpoint never worked; a teardown error adds nothing to @ret. */
	rdma_ep_teardown(fab, ep);
	return ret;
}

/* rdma_ep_new - make an endpoint and wait (bounded by attr->timeout_ms) for its connection. */
int rdma_ep_new(struct coh_fabric *bfab, const struct coh_ep_attr *attr, struct coh_ep **epp)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	uint64_t deadline = verbs_now_ns() + (uint64_t)attr->timeout_ms * 1000000ull;
	struct rdma_ep *ep;
	int ret;

	ret = rdma_ep_start(fab, attr, &ep);
	if (!ret)
		ret = rdma_ep_finish(fab, ep, deadline);
	if (!ret)
		*epp = &ep->base;
	return ret;
}

/*
 * rdma_ep_new_many - @n endpoints whose connections are made at the same time: every one is
 * started, then each waited for (bounded by its own timeout from the start). A mesh of many
 * endpoints connects in about the time of one, where one after the other pays each handshake
 * in turn. All or nothing: on a failure every endpoint made is torn down.
 */
int rdma_ep_new_many(struct coh_fabric *bfab, const struct coh_ep_attr *attrs, uint32_t n,
		     struct coh_ep **eps)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	uint64_t t0 = verbs_now_ns();
	struct rdma_ep **made;
	uint32_t i, j, started = 0;
	int ret = 0;

	made = calloc(n ? n : 1, sizeof(*made));
	if (!made)
		return -ENOMEM;
	for (i = 0; i < n && !ret; i++) {
		ret = rdma_ep_start(fab, &attrs[i], &made[i]);
		if (!ret)
			started++;
	}
	for (i = 0; !ret && i < n; i++) {
		ret = rdma_ep_finish(fab, made[i], t0 + (uint64_t)attrs[i].timeout_ms * 1000000ull);
		if (ret) {
			/* made[i] is torn down already: the rest go too, those waited for and
			 * those not. */
			for (j = 0; j < started; j++) {
				if (j != i)
					rdma_ep_teardown(fab, made[j]);
			}
			started = 0;
		}
	}
	if (ret) {
		for (j = 0; j < started; j++)
			rdma_ep_teardown(fab, made[j]);
	} else {
		for (i = 0; i < n; i++)
			eps[i] = &made[i]->base;
	}
	free(made);
	return ret;
}

/* rdma_ep_delete - disconnect and free an endpoint. */
int rdma_ep_delete(struct coh_ep *bep)
{
	struct rdma_ep *ep = container_of(bep, struct rdma_ep, base);

	return rdma_ep_teardown(ep->fab, ep);
}

/* rdma_ep_is_up - false once the endpoint failed for good. */
bool rdma_ep_is_up(const struct coh_ep *bep)
{
	const struct rdma_ep *ep = container_of(bep, const struct rdma_ep, base);

	return atomic_load(&ep->state) != RDMA_EP_DOWN;
}

/* rdma_ep_peer_inc - the incarnation its last connection reached; the CM thread sets it. */
uint64_t rdma_ep_peer_inc(const struct coh_ep *bep)
{
	const struct rdma_ep *ep = container_of(bep, const struct rdma_ep, base);
	uint64_t inc;

	pthread_mutex_lock(&ep->fab->lock);
	inc = ep->ever_up ? ep->peer_inc : 0;
	pthread_mutex_unlock(&ep->fab->lock);
	return inc;
}
