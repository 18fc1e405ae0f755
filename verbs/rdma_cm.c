/*
 * rdma_cm.c - the CM thread of the rdma provider and the connection protocol it speaks: the
 * private data carried by connect, accept and reject, answering connection requests (accept,
 * hold until the local endpoint exists, or refuse), probes and goodbyes, the timers, and the
 * thread's loop over the fabric's rdma_cm event channel.
 *
 * One thread per fabric reads the event channel and makes every rdma_cm call; every state change
 * runs under rdma_fabric.lock (the endpoint side of it is in rdma_ep.c). User threads only link a
 * new endpoint, hand a deleted one's connections over, ask for the goodbye, and wait on the
 * fabric's condition variable. Between two nodes the lower id is the active side and the higher
 * one accepts. A request that arrives before the local ep_new is held (RDMA_MAX_PENDING at most)
 * and refused when the fabric's timeout passes. Malformed requests are refused and logged.
 *
 * Ids and queue pairs are destroyed only by this thread, after it acknowledged the event it was
 * handling (the graveyard): rdma_destroy_id waits for unacknowledged events of its id.
 * Device async events are not read: their fd belongs to the verbs context, which other fabrics of
 * the same process may share, and completions and CM events already report every failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rdma_internal.h"

/* Private data layout, little-endian: 0 magic(4) 4 version(1) 5 type(1) 6 flags(1) 7 channel(1)
 * 8 node(4) 12 target(4) 16 incarnation(8) 24 target incarnation(8) 32 max_msg(4) 36 reason(4)
 * 40 reserved(4). */

/* rdma_put32 - store @v little-endian. */
static void rdma_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* rdma_get32 - load a little-endian 32-bit value. */
static uint32_t rdma_get32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* rdma_pdata_encode - write @m in wire form into @buf (RDMA_PDATA_LEN bytes). */
static void rdma_pdata_encode(const struct rdma_pdata *m, uint8_t *buf)
{
	memset(buf, 0, RDMA_PDATA_LEN);
	rdma_put32(buf, RDMA_PDATA_MAGIC);
	buf[4] = RDMA_PDATA_VERSION;
	buf[5] = m->type;
	buf[6] = m->flags;
	buf[7] = m->channel;
	rdma_put32(buf + 8, m->node);
	rdma_put32(buf + 12, m->target);
	rdma_put32(buf + 16, (uint32_t)m->inc);
	rdma_put32(buf + 20, (uint32_t)(m->inc >> 32));
	rdma_put32(buf + 24, (uint32_t)m->target_inc);
	rdma_put32(buf + 28, (uint32_t)(m->target_inc >> 32));
	rdma_put32(buf + 32, m->max_msg);
	rdma_put32(buf + 36, (uint32_t)m->reason);
}

/* rdma_pdata_mac - the MAC of wire-form @buf (its bytes before the MAC), and of @req_mac: the
 * request an answer is for, so that an answer is good for that request only. */
static int rdma_pdata_mac(const struct rdma_fabric *fab, const uint8_t *buf, const uint8_t *req_mac,
			  uint8_t out[VERBS_MAC_LEN])
{
	struct verbs_mac_part parts[2] = { { buf, RDMA_PDATA_MAC_OFF },
					   { req_mac, req_mac ? RDMA_PDATA_MAC_LEN : 0 } };

	return verbs_mac(&fab->base, "cohort-rdma-cm", parts, req_mac ? 2 : 1, out);
}

/*
 * rdma_pdata_seal - write @m in wire form into @buf, with this node's proof of the cluster secret
 * when it has one: the time, and the MAC over the rest (and over @req_mac, for an answer). The
 * MAC sent is kept in @m->mac.
 */
static void rdma_pdata_seal(const struct rdma_fabric *fab, struct rdma_pdata *m, uint8_t *buf,
			    const uint8_t *req_mac)
{
	uint8_t mac[VERBS_MAC_LEN];

	memset(m->mac, 0, sizeof(m->mac));
	if (fab->base.secret_len) {
		m->flags |= RDMA_PDATA_F_AUTH;
		m->ts = (uint32_t)time(NULL);
	}
	rdma_pdata_encode(m, buf);
	if (!fab->base.secret_len)
		return;
	rdma_put32(buf + 40, m->ts);
	if (rdma_pdata_mac(fab, buf, req_mac, mac) == 0)
		memcpy(m->mac, mac, sizeof(m->mac));
	memcpy(buf + RDMA_PDATA_MAC_OFF, m->mac, sizeof(m->mac));
}

/*
 * rdma_pdata_auth - does the sender of wire-form @raw (decoded: @m) know this node's cluster
 * secret, or do both have none? A request (@req_mac NULL) must also be recent by this node's
 * clock. Returns 0, or -EACCES with @why set.
 */
static int rdma_pdata_auth(const struct rdma_fabric *fab, const struct rdma_pdata *m,
			   const uint8_t *raw, const uint8_t *req_mac, const char **why)
{
	bool mine = fab->base.secret_len != 0, theirs = (m->flags & RDMA_PDATA_F_AUTH) != 0;
	uint8_t want[VERBS_MAC_LEN];
	int64_t skew;

	if (!mine && !theirs)
		return 0;
	if (mine != theirs) {
		*why = mine ? "it has no cluster secret and this node has one"
			    : "it has a cluster secret and this node has none";
		return -EACCES;
	}
	if (rdma_pdata_mac(fab, raw, req_mac, want) ||
	    !verbs_mac_equal(want, raw + RDMA_PDATA_MAC_OFF, RDMA_PDATA_MAC_LEN)) {
		*why = "it does not prove this cluster's secret";
		return -EACCES;
	}
	skew = (int64_t)time(NULL) - (int64_t)m->ts;
	if (!req_mac && (skew > RDMA_AUTH_SKEW_S || skew < -(int64_t)RDMA_AUTH_SKEW_S)) {
		*why = "its clock is more than 300 s from this node's (an old request replayed?)";
		return -EACCES;
	}
	return 0;
}

/* rdma_pdata_decode - check and decode received private data. Returns 0 or -EPROTO. */
static int rdma_pdata_decode(const void *data, size_t len, struct rdma_pdata *m)
{
	const uint8_t *p = data;

	if (!p || len < RDMA_PDATA_LEN || rdma_get32(p) != RDMA_PDATA_MAGIC ||
	    p[4] != RDMA_PDATA_VERSION || p[5] < RDMA_MSG_CONNECT || p[5] > RDMA_MSG_BYE_REPLY)
		return -EPROTO;
	m->type = p[5];
	m->flags = p[6];
	m->channel = p[7];
	m->node = rdma_get32(p + 8);
	m->target = rdma_get32(p + 12);
	m->inc = rdma_get32(p + 16) | (uint64_t)rdma_get32(p + 20) << 32;
	m->target_inc = rdma_get32(p + 24) | (uint64_t)rdma_get32(p + 28) << 32;
	m->max_msg = rdma_get32(p + 32);
	m->reason = (int32_t)rdma_get32(p + 36);
	m->ts = rdma_get32(p + 40);
	memcpy(m->mac, p + RDMA_PDATA_MAC_OFF, sizeof(m->mac));
	if (m->node >= COH_FABRIC_MAX_NODES || !m->inc)
		return -EPROTO;
	return 0;
}

/* rdma_msg - a message from this node to @target about @channel. */
static struct rdma_pdata rdma_msg(const struct rdma_fabric *fab, uint8_t type, uint32_t target,
				  uint32_t channel, uint64_t target_inc)
{
	struct rdma_pdata m = { .type = type,
				.channel = (uint8_t)channel,
				.node = fab->base.node_id,
				.target = target,
				.inc = fab->incarnation,
				.target_inc = target_inc };

	return m;
}

/* rdma_graveyard_empty - destroy what was buried. CM thread, holding no unacked event. */
static void rdma_graveyard_empty(struct rdma_fabric *fab)
{
	struct rdma_ctx *ctx, *next;

	/* Under the lock, so that ep_delete counts exactly what is left of its endpoint;
	 * rdma_destroy_id only waits for unacked events, and this thread holds none. */
	pthread_mutex_lock(&fab->lock);
	for (ctx = fab->graveyard; ctx; ctx = next) {
		next = ctx->next_dead;
		if (ctx->kind == RDMA_CTX_CONN) {
			struct rdma_conn *c = container_of(ctx, struct rdma_conn, ctx);

			rdma_conn_release(c);
			/* An owner being deleted waits for this; any other owner is alive. */
			if (c->owner && c->owner->dying) {
				c->owner->dying--;
				pthread_cond_broadcast(&fab->cond);
			}
			free(c);
		} else {
			struct rdma_probe *p = container_of(ctx, struct rdma_probe, ctx);

			if (p->id)
				rdma_destroy_id(p->id);
			free(p);
		}
	}
	fab->graveyard = NULL;
	pthread_mutex_unlock(&fab->lock);
}

/* rdma_reply - answer request @req on @id with a rejection carrying @type, then bury @id. */
static void rdma_reply(struct rdma_fabric *fab, struct rdma_cm_id *id, const struct rdma_pdata *req,
		       uint8_t type, uint8_t flags, int reason, uint32_t max_msg)
{
	struct rdma_pdata r = rdma_msg(fab, type, req->node, req->channel, req->inc);
	uint8_t buf[RDMA_PDATA_LEN];

	r.flags = flags;
	r.reason = reason;
	r.max_msg = max_msg;
	rdma_pdata_seal(fab, &r, buf, req->mac);
	/* Fails harmlessly when the requester already gave up. */
	if (rdma_reject(id, buf, sizeof(buf)))
		COH_LOG_DBG("node %u: rdma_reject: %s", fab->base.node_id, strerror(errno));
	rdma_id_bury(fab, id);
}

/* rdma_accept_req - accept request @req on @id as @ep's (new) passive connection. */
static void rdma_accept_req(struct rdma_fabric *fab, struct rdma_ep *ep, struct rdma_cm_id *id,
			    const struct rdma_pdata *req, uint8_t resp_res, uint8_t init_depth)
{
	struct rdma_pdata a = rdma_msg(fab, RDMA_MSG_ACCEPT, req->node, req->channel, req->inc);
	struct rdma_conn_param param;
	uint8_t buf[RDMA_PDATA_LEN];
	struct rdma_conn *c;
	int state, ret;

	if (req->max_msg != ep->attr.max_msg_size) {
		COH_LOG_ERR(
		    "node %u: node %u channel %u asks max_msg_size %u, this endpoint has %u",
		    fab->base.node_id, req->node, req->channel, req->max_msg,
		    ep->attr.max_msg_size);
		rdma_reply(fab, id, req, RDMA_MSG_REFUSE, 0, EINVAL, ep->attr.max_msg_size);
		if (atomic_load(&ep->state) == RDMA_EP_CONNECTING)
			rdma_ep_fail_first(fab, ep, -EINVAL);
		return;
	}
	c = rdma_conn_new(ep, RDMA_ROLE_PASSIVE);
	if (!c) {
		rdma_reply(fab, id, req, RDMA_MSG_REFUSE, 0, EBUSY, 0);
		return;
	}
	c->id = id;
	id->context = c;
	rdma_id_tune(fab, id);
	ret = rdma_conn_qp(fab, ep, c);
	if (ret) {
		COH_LOG_ERR("node %u: cannot create a queue pair for node %u: %s",
			    fab->base.node_id, req->node, strerror(-ret));
		goto err_refuse;
	}
	a.max_msg = ep->attr.max_msg_size;
	rdma_pdata_seal(fab, &a, buf, req->mac);
	memset(&param, 0, sizeof(param));
	param.private_data = buf;
	param.private_data_len = RDMA_PDATA_LEN;
	param.responder_resources = resp_res < fab->rd_atom ? resp_res : fab->rd_atom;
	param.initiator_depth = init_depth < fab->init_rd_atom ? init_depth : fab->init_rd_atom;
	param.retry_count = RDMA_RETRY_COUNT;
	param.rnr_retry_count = RDMA_RNR_RETRY;
	if (rdma_accept(id, &param)) {
		COH_LOG_WARN("node %u: rdma_accept from node %u: %s", fab->base.node_id, req->node,
			     strerror(errno));
		goto err_refuse;
	}
	state = atomic_load(&ep->state);
	pthread_mutex_lock(&ep->lock);
	if (state == RDMA_EP_UP)
		atomic_store(&ep->state, RDMA_EP_RECONNECTING);
	if (ep->pas)
		rdma_conn_retire(ep, ep->pas);
	ep->pas = c;
	pthread_mutex_unlock(&ep->lock);
	if (!ep->ever_up)
		ep->peer_inc = req->inc;
	if (state == RDMA_EP_UP) {
		/* The peer noticed a failure first and is replacing the connection. */
		ep->phase = RDMA_PH_WAIT_PEER;
		if (!ep->deadline)
			ep->deadline = rdma_now_ms() + ep->attr.timeout_ms;
	}
	return;

err_refuse:
	rdma_reject(id, NULL, 0);
	rdma_conn_bury(fab, c);
}

/* rdma_pending_add - hold a request until the matching endpoint is made (bounded). */
static void rdma_pending_add(struct rdma_fabric *fab, struct rdma_cm_id *id,
			     const struct rdma_pdata *req, const struct rdma_conn_param *cp)
{
	struct rdma_pending *pd = NULL;
	uint32_t i;

	for (i = 0; i < fab->n_pending; i++) {
		if (fab->pending[i].req.node == req->node &&
		    fab->pending[i].req.channel == req->channel) {
			/* A newer attempt of the same connection supersedes the older. */
			pd = &fab->pending[i];
			rdma_reply(fab, pd->id, &pd->req, RDMA_MSG_REFUSE, 0, EBUSY, 0);
			break;
		}
	}
	if (!pd) {
		if (fab->n_pending == RDMA_MAX_PENDING) {
			COH_LOG_WARN(
			    "node %u: too many pending connection requests; refusing node %u",
			    fab->base.node_id, req->node);
			rdma_reply(fab, id, req, RDMA_MSG_REFUSE, 0, EBUSY, 0);
			return;
		}
		pd = &fab->pending[fab->n_pending++];
	}
	pd->id = id;
	pd->req = *req;
	pd->resp_res = cp->initiator_depth;
	pd->init_depth = cp->responder_resources;
	pd->expires = rdma_now_ms() + fab->base.timeout_ms;
}

/* rdma_pending_match - accept a held request for @ep, if one arrived. */
static void rdma_pending_match(struct rdma_fabric *fab, struct rdma_ep *ep)
{
	uint32_t i;

	for (i = 0; i < fab->n_pending; i++) {
		struct rdma_pending pd = fab->pending[i];

		if (pd.req.node != ep->attr.peer || pd.req.channel != ep->attr.channel)
			continue;
		fab->pending[i] = fab->pending[--fab->n_pending];
		rdma_accept_req(fab, ep, pd.id, &pd.req, pd.resp_res, pd.init_depth);
		return;
	}
}

/* rdma_probe_start - ask @peer a PROBE (is @channel still there?) or tell it BYE. */
void rdma_probe_start(struct rdma_fabric *fab, uint8_t type, uint32_t peer, uint32_t channel,
		      uint64_t peer_inc, uint32_t timeout_ms)
{
	struct sockaddr_storage ss;
	struct rdma_probe *p;

	if (rdma_peer_addr(fab, peer, &ss))
		return;
	p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->ctx.kind = RDMA_CTX_PROBE;
	p->type = type;
	p->peer = peer;
	p->channel = channel;
	p->peer_inc = peer_inc;
	p->deadline = rdma_now_ms() + timeout_ms;
	if (rdma_create_id(fab->ech, &p->id, p, RDMA_PS_TCP))
		goto err_free;
	if (rdma_resolve_addr(p->id, NULL, (struct sockaddr *)&ss, RDMA_RESOLVE_MS))
		goto err_destroy_id;
	p->next = fab->probes;
	fab->probes = p;
	return;

err_destroy_id:
	rdma_destroy_id(p->id);
err_free:
	COH_LOG_WARN("node %u: cannot probe node %u: %s", fab->base.node_id, peer, strerror(errno));
	free(p);
}

/* rdma_probe_finish - act on a probe's answer (@outcome) and bury it. */
static void rdma_probe_finish(struct rdma_fabric *fab, struct rdma_probe *p,
			      enum rdma_outcome outcome)
{
	struct rdma_probe **pp;
	struct rdma_ep *ep;

	if (p->done)
		return;
	p->done = true;
	for (pp = &fab->probes; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	rdma_bury(fab, &p->ctx);
	pthread_cond_broadcast(&fab->cond);
	if (p->type != RDMA_MSG_PROBE)
		return;
	ep = rdma_find_ep(fab, p->peer, p->channel);
	if (!ep || atomic_load(&ep->state) != RDMA_EP_RECONNECTING || ep->peer_inc != p->peer_inc)
		return;
	if (outcome == RDMA_GONE)
		rdma_peer_gone(fab, p->peer, p->peer_inc, "its listener is gone");
	else if (outcome == RDMA_NO_EP)
		rdma_ep_down(fab, ep, "the peer deleted its endpoint");
	else if (outcome == RDMA_ALIVE && !ep->need_act)
		/* The peer still had the endpoint: it is reconnecting, or it is deleting the
		 * endpoint at this moment (a probe can arrive between its disconnect and its
		 * delete). Ask again shortly, rather than wait for the deadline and call the
		 * whole node down over one endpoint it closed on purpose. */
		ep->probe_at = rdma_now_ms() + RDMA_REPROBE_MS;
}

/* rdma_on_request - a connection request reached the listener. */
static void rdma_on_request(struct rdma_fabric *fab, struct rdma_cm_event *ev)
{
	const struct rdma_conn_param *cp = &ev->param.conn;
	uint32_t me = fab->base.node_id;
	struct rdma_cm_id *id = ev->id;
	const char *why = NULL;
	struct rdma_pdata m;
	struct rdma_ep *ep;
	int state;

	id->context = NULL;
	if (rdma_pdata_decode(cp->private_data, cp->private_data_len, &m) || m.target != me ||
	    (m.type != RDMA_MSG_CONNECT && m.type != RDMA_MSG_PROBE && m.type != RDMA_MSG_BYE) ||
	    id->verbs != fab->verbs) {
		COH_LOG_WARN("node %u: rejected a malformed connection request (%u bytes of "
			     "private data)",
			     me, cp->private_data_len);
		rdma_reject(id, NULL, 0);
		rdma_id_bury(fab, id);
		return;
	}
	if (rdma_pdata_auth(fab, &m, cp->private_data, NULL, &why)) {
		/* Before anything it asks is looked at: a node without the secret learns nothing
		 * (not even whether an endpoint exists) and changes nothing. Logged once per
		 * incarnation, as it asks again and again. */
		if (fab->auth_logged[m.node] != m.inc) {
			fab->auth_logged[m.node] = m.inc;
			COH_LOG_ERR("node %u: refused node %u (channel %u): %s", me, m.node,
				    m.channel, why);
		}
		rdma_reply(fab, id, &m, RDMA_MSG_REFUSE, 0, EACCES, 0);
		fab->auth_refused_ms[m.node] = rdma_now_ms();
		/* An endpoint waiting for its first connection from that node fails with the
		 * same clear error as the other side's, rather than time out (one made later
		 * too: see rdma_cm_main's loop). */
		ep = rdma_find_ep(fab, m.node, m.channel);
		if (m.type == RDMA_MSG_CONNECT && ep &&
		    atomic_load(&ep->state) == RDMA_EP_CONNECTING)
			rdma_ep_fail_first(fab, ep, -EACCES);
		return;
	}
	fab->auth_refused_ms[m.node] = 0;
	ep = rdma_find_ep(fab, m.node, m.channel);
	if (m.type == RDMA_MSG_PROBE) {
		bool has = ep && atomic_load(&ep->state) != RDMA_EP_DOWN && ep->ever_up &&
			   ep->peer_inc == m.inc;

		rdma_reply(fab, id, &m, RDMA_MSG_PROBE_REPLY, has ? RDMA_PDATA_F_HAS_EP : 0, 0, 0);
		return;
	}
	if (m.type == RDMA_MSG_BYE) {
		rdma_peer_gone(fab, m.node, m.inc, "it left the cluster");
		rdma_reply(fab, id, &m, RDMA_MSG_BYE_REPLY, 0, 0, 0);
		return;
	}
	if ((m.target_inc && m.target_inc != fab->incarnation) ||
	    (m.node != me && fab->down_inc[m.node] == m.inc)) {
		/* It talks to an earlier life of this node, or it was declared down: both ends
		 * must start over with new endpoints. */
		rdma_reply(fab, id, &m, RDMA_MSG_REFUSE, 0, ECONNRESET, 0);
		return;
	}
	if (ep && ep->ever_up && m.inc != ep->peer_inc) {
		rdma_peer_gone(fab, m.node, ep->peer_inc, "it restarted");
		ep = NULL;
	}
	state = ep ? atomic_load(&ep->state) : RDMA_EP_DOWN;
	if (!ep || state == RDMA_EP_DOWN) {
		if (ep && ep->peer_inc == m.inc)
			rdma_reply(fab, id, &m, RDMA_MSG_REFUSE, 0, ECONNRESET, 0);
		else if (m.flags & RDMA_PDATA_F_REPLACE)
			rdma_reply(fab, id, &m, RDMA_MSG_REFUSE, 0, ENOENT, 0);
		else
			rdma_pending_add(fab, id, &m, cp);
		return;
	}
	if (!ep->need_pas) {
		COH_LOG_ERR("node %u: node %u connects on channel %u, but this node is the active "
			    "side (do both nodes use the same cluster list?)",
			    me, m.node, m.channel);
		rdma_reply(fab, id, &m, RDMA_MSG_REFUSE, 0, EPROTO, 0);
		return;
	}
	rdma_accept_req(fab, ep, id, &m, cp->initiator_depth, cp->responder_resources);
}

/* rdma_on_rejected - the peer rejected @ep's active attempt. */
static void rdma_on_rejected(struct rdma_fabric *fab, struct rdma_ep *ep, struct rdma_cm_event *ev)
{
	const struct rdma_conn_param *cp = &ev->param.conn;
	const char *why = NULL;
	struct rdma_pdata m;

	if (rdma_pdata_decode(cp->private_data, cp->private_data_len, &m) ||
	    m.type != RDMA_MSG_REFUSE || m.node != ep->attr.peer || m.target != fab->base.node_id ||
	    (m.reason != EACCES &&
	     rdma_pdata_auth(fab, &m, cp->private_data, ep->attempt->sent_mac, &why))) {
		/* Not a Cohort answer (or not one from a node with our secret). Status 8 (invalid service id) means nobody listens there:
		 * the peer process is not running. Anything else (a stale connection) is retried. */
		rdma_attempt_failed(fab, ep, ev->status == 8 ? RDMA_GONE : RDMA_RETRY, ECONNREFUSED,
				    "nobody listens at its address");
		return;
	}
	if (ep->ever_up && m.inc != ep->peer_inc) {
		rdma_attempt_failed(fab, ep, RDMA_GONE, ECONNRESET, "it restarted");
		return;
	}
	switch (m.reason) {
	case EACCES:
		/* Not authenticated: it may come from anyone, but a retry cannot help either. */
		COH_LOG_ERR(
		    "node %u: node %u refused this node: the cluster secrets differ (or one "
		    "of the two has none)",
		    fab->base.node_id, ep->attr.peer);
		rdma_attempt_failed(fab, ep, RDMA_FATAL, EACCES, "cluster secret mismatch");
		break;
	case EINVAL:
		COH_LOG_ERR("node %u: node %u channel %u refused: its max_msg_size is %u, ours %u",
			    fab->base.node_id, ep->attr.peer, ep->attr.channel, m.max_msg,
			    ep->attr.max_msg_size);
		rdma_attempt_failed(fab, ep, RDMA_FATAL, EINVAL, "message size mismatch");
		break;
	case EPROTO:
		rdma_attempt_failed(fab, ep, RDMA_FATAL, ECONNREFUSED, "protocol mismatch");
		break;
	case ENOENT:
	case ECONNRESET:
		rdma_attempt_failed(fab, ep, RDMA_NO_EP, ECONNRESET,
				    "the peer has no such endpoint");
		break;
	default:
		rdma_attempt_failed(fab, ep, RDMA_RETRY, 0, "busy");
		break;
	}
}

/* rdma_on_established - @c is connected. */
static void rdma_on_established(struct rdma_fabric *fab, struct rdma_ep *ep, struct rdma_conn *c,
				struct rdma_cm_event *ev)
{
	const struct rdma_conn_param *cp = &ev->param.conn;
	const char *why = NULL;
	struct rdma_pdata m;

	if (c->role == RDMA_ROLE_PASSIVE) {
		if (c != ep->pas)
			return;
		c->established = true;
		rdma_ep_check_up(fab, ep);
		return;
	}
	if (c != ep->attempt)
		return;
	c->established = true;
	if (!rdma_pdata_decode(cp->private_data, cp->private_data_len, &m) &&
	    m.type == RDMA_MSG_ACCEPT &&
	    rdma_pdata_auth(fab, &m, cp->private_data, c->sent_mac, &why)) {
		COH_LOG_ERR("node %u: node %u accepted, but %s", fab->base.node_id, ep->attr.peer,
			    why);
		rdma_disconnect(c->id);
		rdma_attempt_failed(fab, ep, RDMA_FATAL, EACCES, "cluster secret mismatch");
		return;
	}
	if (rdma_pdata_decode(cp->private_data, cp->private_data_len, &m) ||
	    m.type != RDMA_MSG_ACCEPT || m.node != ep->attr.peer || m.target != fab->base.node_id ||
	    m.max_msg != ep->attr.max_msg_size) {
		COH_LOG_WARN("node %u: malformed accept from node %u; retrying", fab->base.node_id,
			     ep->attr.peer);
		rdma_disconnect(c->id);
		rdma_attempt_failed(fab, ep, RDMA_RETRY, 0, "malformed accept");
		return;
	}
	if (ep->ever_up && m.inc != ep->peer_inc) {
		rdma_disconnect(c->id);
		rdma_attempt_failed(fab, ep, RDMA_GONE, ECONNRESET, "it restarted");
		return;
	}
	ep->peer_inc = m.inc;
	ep->attempt = NULL;
	pthread_mutex_lock(&ep->lock);
	if (ep->act)
		rdma_conn_retire(ep, ep->act);
	ep->act = c;
	pthread_mutex_unlock(&ep->lock);
	rdma_ep_check_up(fab, ep);
}

/* rdma_conn_event - an event on an endpoint connection. Under fab->lock. */
static void rdma_conn_event(struct rdma_fabric *fab, struct rdma_conn *c, struct rdma_cm_event *ev)
{
	struct rdma_ep *ep = c->ep;
	struct rdma_conn_param param;
	struct rdma_pdata m;
	uint8_t buf[RDMA_PDATA_LEN];
	bool current;
	int ret;

	if (c->dead || !ep)
		return;
	current = c == ep->act || c == ep->pas;
	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (c == ep->attempt && rdma_resolve_route(c->id, RDMA_RESOLVE_MS))
			rdma_attempt_failed(fab, ep, RDMA_RETRY, 0, "route resolution failed");
		break;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		if (c != ep->attempt)
			break;
		ret = rdma_conn_qp(fab, ep, c);
		if (ret) {
			COH_LOG_ERR("node %u: cannot create a queue pair: %s", fab->base.node_id,
				    strerror(-ret));
			rdma_attempt_failed(fab, ep, RDMA_RETRY, 0, "no queue pair");
			break;
		}
		m = rdma_msg(fab, RDMA_MSG_CONNECT, ep->attr.peer, ep->attr.channel,
			     ep->ever_up ? ep->peer_inc : 0);
		m.flags = ep->ever_up ? RDMA_PDATA_F_REPLACE : 0;
		m.max_msg = ep->attr.max_msg_size;
		rdma_pdata_seal(fab, &m, buf, NULL);
		memcpy(c->sent_mac, m.mac, sizeof(c->sent_mac));
		memset(&param, 0, sizeof(param));
		param.private_data = buf;
		param.private_data_len = RDMA_PDATA_LEN;
		param.responder_resources = fab->rd_atom;
		param.initiator_depth = fab->init_rd_atom;
		param.retry_count = RDMA_RETRY_COUNT;
		param.rnr_retry_count = RDMA_RNR_RETRY;
		if (rdma_connect(c->id, &param))
			rdma_attempt_failed(fab, ep, RDMA_RETRY, 0, "rdma_connect failed");
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
		rdma_on_established(fab, ep, c, ev);
		break;
	case RDMA_CM_EVENT_REJECTED:
		if (c == ep->attempt)
			rdma_on_rejected(fab, ep, ev);
		else if (current)
			rdma_conn_break(fab, ep, "rejected", false);
		break;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		if (c == ep->attempt)
			rdma_attempt_failed(fab, ep, RDMA_GONE, ETIMEDOUT,
					    rdma_event_str(ev->event));
		else if (current)
			rdma_conn_break(fab, ep, rdma_event_str(ev->event), false);
		break;
	case RDMA_CM_EVENT_DISCONNECTED:
		if (current)
			rdma_conn_break(fab, ep, "disconnected by the peer", true);
		break;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		COH_LOG_ERR("node %u: the RDMA device was removed", fab->base.node_id);
		rdma_ep_down(fab, ep, "device removed");
		break;
	default:
		break;
	}
}

/* rdma_probe_event - an event on a probe or goodbye. Under fab->lock. */
static void rdma_probe_event(struct rdma_fabric *fab, struct rdma_probe *p,
			     struct rdma_cm_event *ev)
{
	const struct rdma_conn_param *cp = &ev->param.conn;
	struct rdma_conn_param param;
	const char *why = NULL;
	struct rdma_pdata m;
	uint8_t buf[RDMA_PDATA_LEN];

	if (p->done)
		return;
	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (rdma_resolve_route(p->id, RDMA_RESOLVE_MS))
			rdma_probe_finish(fab, p, RDMA_GONE);
		break;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		m = rdma_msg(fab, p->type, p->peer, p->channel, p->peer_inc);
		rdma_pdata_seal(fab, &m, buf, NULL);
		memcpy(p->sent_mac, m.mac, sizeof(p->sent_mac));
		memset(&param, 0, sizeof(param));
		param.private_data = buf;
		param.private_data_len = RDMA_PDATA_LEN;
		param.retry_count = RDMA_RETRY_COUNT;
		/* No queue pair: the peer always rejects, so any number will do. */
		param.qp_num = 1;
		if (rdma_connect(p->id, &param))
			rdma_probe_finish(fab, p, RDMA_GONE);
		break;
	case RDMA_CM_EVENT_REJECTED:
		/* An answer without our secret's proof tells nothing about the peer: as if it had
		 * not answered in Cohort's form (a refusal for the secret says it is alive). */
		if (rdma_pdata_decode(cp->private_data, cp->private_data_len, &m) ||
		    m.node != p->peer || m.target != fab->base.node_id ||
		    (m.type == RDMA_MSG_REFUSE && m.reason == EACCES) ||
		    rdma_pdata_auth(fab, &m, cp->private_data, p->sent_mac, &why))
			/* Without a listener the peer's CM answers "invalid service id" (8). */
			rdma_probe_finish(fab, p, ev->status == 8 ? RDMA_GONE : RDMA_ALIVE);
		else if (m.inc != p->peer_inc)
			rdma_probe_finish(fab, p, RDMA_GONE);
		else
			rdma_probe_finish(
			    fab, p, (m.flags & RDMA_PDATA_F_HAS_EP) ? RDMA_ALIVE : RDMA_NO_EP);
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
	case RDMA_CM_EVENT_CONNECT_RESPONSE:
		rdma_disconnect(p->id);
		rdma_probe_finish(fab, p, RDMA_ALIVE);
		break;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		rdma_probe_finish(fab, p, RDMA_GONE);
		break;
	default:
		break;
	}
}

/* rdma_cm_event - dispatch one CM event, then acknowledge it. */
static void rdma_cm_event(struct rdma_fabric *fab, struct rdma_cm_event *ev)
{
	struct rdma_ctx *ctx;

	pthread_mutex_lock(&fab->lock);
	if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
		rdma_on_request(fab, ev);
	} else {
		ctx = ev->id->context;
		if (ctx && ctx->kind == RDMA_CTX_CONN)
			rdma_conn_event(fab, container_of(ctx, struct rdma_conn, ctx), ev);
		else if (ctx && ctx->kind == RDMA_CTX_PROBE)
			rdma_probe_event(fab, container_of(ctx, struct rdma_probe, ctx), ev);
		else if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL)
			COH_LOG_ERR("node %u: the RDMA device was removed", fab->base.node_id);
	}
	pthread_mutex_unlock(&fab->lock);
	/* Acknowledge last: until then no thread can destroy the event's id (rdma_destroy_id
	 * waits for it), so the context the handler used stayed valid. */
	rdma_ack_cm_event(ev);
}

/* rdma_kicks - start replacing connections the poller saw fail. Under fab->lock. */
static void rdma_kicks(struct rdma_fabric *fab)
{
	struct rdma_ep *ep;
	unsigned int k;

	for (ep = fab->eps; ep; ep = ep->next) {
		k = atomic_exchange(&ep->kick, 0);
		if (k && k - 1 == ep->conn_gen && ep->phase == RDMA_PH_IDLE &&
		    atomic_load(&ep->state) == RDMA_EP_RECONNECTING)
			rdma_conn_break(fab, ep, "completion error", false);
	}
}

/* rdma_timers - run what is due; return the milliseconds until the next timer. */
static int rdma_timers(struct rdma_fabric *fab)
{
	uint64_t now = rdma_now_ms(), next = now + RDMA_TICK_MS;
	struct rdma_probe *p, *pnext;
	struct rdma_conn **cp;
	struct rdma_ep *ep;
	uint32_t i;

	for (ep = fab->eps; ep; ep = ep->next) {
		int state = atomic_load(&ep->state);

		if (ep->phase == RDMA_PH_BACKOFF) {
			if (now >= ep->retry_at)
				rdma_attempt_start(fab, ep);
			else if (ep->retry_at < next)
				next = ep->retry_at;
		}
		if (state == RDMA_EP_RECONNECTING && ep->probe_at && !ep->need_act &&
		    ep->phase == RDMA_PH_WAIT_PEER) {
			if (now >= ep->probe_at) {
				ep->probe_at = 0;
				rdma_probe_start(fab, RDMA_MSG_PROBE, ep->attr.peer,
						 ep->attr.channel, ep->peer_inc,
						 ep->attr.timeout_ms);
			} else if (ep->probe_at < next) {
				next = ep->probe_at;
			}
		}
		if (state == RDMA_EP_RECONNECTING && ep->deadline) {
			if (now >= ep->deadline && ep->loopback)
				rdma_ep_down(fab, ep, "loopback connection not re-established");
			else if (now >= ep->deadline)
				rdma_peer_gone(fab, ep->attr.peer, ep->peer_inc,
					       "connection not re-established in time");
			else if (ep->deadline < next)
				next = ep->deadline;
		}
		if (state == RDMA_EP_CONNECTING && ep->need_pas && !ep->pas &&
		    fab->auth_refused_ms[ep->attr.peer] &&
		    now - fab->auth_refused_ms[ep->attr.peer] < ep->attr.timeout_ms) {
			/* Its peer was just refused for the cluster secret and will not ask again. */
			rdma_ep_fail_first(fab, ep, -EACCES);
			continue;
		}
		if (state == RDMA_EP_CONNECTING && ep->need_pas && !ep->pas)
			rdma_pending_match(fab, ep);
		if (!ep->retired)
			continue;
		/* A retired connection goes once its flushed requests have been taken. */
		pthread_mutex_lock(&ep->lock);
		for (cp = &ep->retired; *cp;) {
			struct rdma_conn *c = *cp;

			if (c->outstanding) {
				cp = &c->next;
				continue;
			}
			*cp = c->next;
			rdma_conn_bury(fab, c);
		}
		pthread_mutex_unlock(&ep->lock);
		if (ep->retired && now + 50 < next)
			next = now + 50;
	}
	for (i = 0; i < fab->n_pending;) {
		struct rdma_pending *pd = &fab->pending[i];

		if (now < pd->expires) {
			if (pd->expires < next)
				next = pd->expires;
			i++;
			continue;
		}
		COH_LOG_WARN("node %u: node %u's request for channel %u expired: no such endpoint "
			     "was made here",
			     fab->base.node_id, pd->req.node, pd->req.channel);
		rdma_reply(fab, pd->id, &pd->req, RDMA_MSG_REFUSE, 0, ETIMEDOUT, 0);
		*pd = fab->pending[--fab->n_pending];
	}
	for (p = fab->probes; p; p = pnext) {
		pnext = p->next;
		if (now >= p->deadline)
			rdma_probe_finish(fab, p, RDMA_GONE);
		else if (p->deadline < next)
			next = p->deadline;
	}
	return (int)(next - now) + 1;
}

/* rdma_bye_start - send the goodbyes fabric_close asked for. CM thread, under fab->lock. */
static void rdma_bye_start(struct rdma_fabric *fab)
{
	uint32_t peer;

	for (peer = 0; peer < COH_FABRIC_MAX_NODES; peer++) {
		if (fab->known & (1ull << peer))
			rdma_probe_start(fab, RDMA_MSG_BYE, peer, 0, fab->peer_inc[peer],
					 RDMA_BYE_MS);
	}
	fab->bye = 2;
	pthread_cond_broadcast(&fab->cond);
}

/* rdma_cm_main - the CM thread: CM events, wake-ups from other threads, timers. */
void *rdma_cm_main(void *arg)
{
	struct rdma_fabric *fab = arg;
	struct pollfd pfd[2] = { { .fd = fab->ech->fd, .events = POLLIN },
				 { .fd = fab->wake_fd, .events = POLLIN } };
	struct rdma_cm_event *ev;
	uint64_t drain;
	int timeout, i;

	pthread_mutex_lock(&fab->lock);
	timeout = rdma_timers(fab);
	pthread_mutex_unlock(&fab->lock);
	while (!atomic_load(&fab->stop)) {
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR)
			COH_LOG_ERR("node %u: poll: %s", fab->base.node_id, strerror(errno));
		if ((pfd[1].revents & POLLIN) && read(fab->wake_fd, &drain, sizeof(drain)) < 0 &&
		    errno != EAGAIN)
			COH_LOG_WARN("node %u: eventfd read: %s", fab->base.node_id,
				     strerror(errno));
		/* Bounded batch, so that timers and stop requests are never starved. */
		for (i = 0; i < 64 && !rdma_get_cm_event(fab->ech, &ev); i++) {
			rdma_cm_event(fab, ev);
			rdma_graveyard_empty(fab);
		}
		pthread_mutex_lock(&fab->lock);
		if (fab->bye == 1)
			rdma_bye_start(fab);
		rdma_kicks(fab);
		timeout = rdma_timers(fab);
		pthread_mutex_unlock(&fab->lock);
		rdma_graveyard_empty(fab);
		if (i == 64)
			timeout = 0;
	}
	return NULL;
}

/* rdma_cm_goodbye - have the CM thread tell every peer connected in this incarnation that it
 * leaves, and wait (bounded) for their answers. */
void rdma_cm_goodbye(struct rdma_fabric *fab)
{
	uint64_t deadline = verbs_now_ns() + (RDMA_BYE_MS + 500ull) * 1000000ull;
	struct timespec abs = { .tv_sec = (time_t)(deadline / 1000000000ull),
				.tv_nsec = (long)(deadline % 1000000000ull) };
	struct rdma_probe *p;
	bool waiting;

	pthread_mutex_lock(&fab->lock);
	fab->bye = 1;
	rdma_wake(fab);
	for (;;) {
		waiting = fab->bye != 2;
		for (p = fab->probes; p; p = p->next)
			waiting |= p->type == RDMA_MSG_BYE && !p->done;
		if (!waiting || pthread_cond_timedwait(&fab->cond, &fab->lock, &abs) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&fab->lock);
}

/* rdma_cm_release - after the CM thread stopped: destroy every id it still tracked. */
void rdma_cm_release(struct rdma_fabric *fab)
{
	struct rdma_probe *p, *pnext;
	struct rdma_ep *ep;
	uint32_t i;

	pthread_mutex_lock(&fab->lock);
	for (i = 0; i < fab->n_pending; i++) {
		rdma_reject(fab->pending[i].id, NULL, 0);
		rdma_id_bury(fab, fab->pending[i].id);
	}
	fab->n_pending = 0;
	for (p = fab->probes; p; p = pnext) {
		pnext = p->next;
		p->done = true;
		rdma_bury(fab, &p->ctx);
	}
	fab->probes = NULL;
	/* Endpoints the caller failed to delete (coh_fabric_close reported them): release their
	 * device resources; their memory stays with the caller's dangling handles. */
	for (ep = fab->eps; ep; ep = ep->next) {
		struct rdma_conn *c, *cs[3] = { ep->act, ep->pas, ep->attempt };

		for (i = 0; i < 3; i++) {
			if (cs[i])
				rdma_conn_bury(fab, cs[i]);
		}
		while ((c = ep->retired)) {
			ep->retired = c->next;
			rdma_conn_bury(fab, c);
		}
		ep->act = ep->pas = ep->attempt = NULL;
	}
	fab->eps = NULL;
	pthread_mutex_unlock(&fab->lock);
	rdma_graveyard_empty(fab);
}
