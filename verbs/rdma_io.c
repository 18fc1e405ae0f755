/*
 * rdma_io.c - the data path of the rdma provider: posting one-sided and two-sided operations on
 * an endpoint's current queue pair, turning verbs completions into Cohort completions, and the
 * software completions that stand in for the device when an operation never reaches it.
 *
 * Every work request is signaled and owns a slot of its endpoint (rdma_slot); the verbs wr_id is
 * the slot's address, so a completion finds its endpoint, opcode and caller's wr_id even when the
 * device reports an error (whose opcode field is undefined). A slot is freed only when its
 * completion is taken, which is what bounds each endpoint to max_send_wr (max_recv_wr)
 * outstanding operations and keeps the completion queue from overflowing.
 *
 * Remote bounds and rights are checked here against the imported descriptor before posting: a
 * violation is a software completion with -EACCES and never reaches the wire, so it does not
 * break the connection. When a connection fails, what was in flight on it completes with its
 * error or is flushed (-ECONNRESET), except receives, which are carried over; operations posted
 * while the replacement is being made are parked in their slots and posted on it in posting
 * order, so a re-established endpoint loses no receive buffer and no later operation. A remote
 * access error is reported once re-establishment has told a revoked key (-EACCES) from a dying
 * peer (-ECONNRESET). An endpoint that goes down completes everything with -ECONNRESET.
 *
 * Not here: connection management (rdma_cm.c) and object lifetimes (rdma.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdma_internal.h"

/* Completions taken from the device per ibv_poll_cq call. */
#define RDMA_POLL_BATCH 16

/* rdma_wc_status - a verbs completion status as a Cohort status. */
static int rdma_wc_status(enum ibv_wc_status st)
{
	switch (st) {
	case IBV_WC_SUCCESS:
		return 0;
	case IBV_WC_REM_ACCESS_ERR:
		return -EACCES;
	case IBV_WC_WR_FLUSH_ERR:
	/* The responder failed the operation, or stopped answering: its side of the connection
	 * is gone (a peer that died or restarted: its regions are gone with it), not a medium
	 * failure. As a flush, the caller takes it for a broken connection (the engine retries
	 * after the view change; a SCSI unit answers ALUA transition), never for -EIO, which the
	 * front end reports as a MEDIUM ERROR that multipath does not retry. */
	case IBV_WC_REM_OP_ERR:
	case IBV_WC_REM_ABORT_ERR:
	case IBV_WC_RESP_TIMEOUT_ERR:
		return -ECONNRESET;
	case IBV_WC_RETRY_EXC_ERR:
	case IBV_WC_RNR_RETRY_EXC_ERR:
		return -ETIMEDOUT;
	case IBV_WC_LOC_LEN_ERR:
		return -EMSGSIZE;
	default:
		return -EIO;
	}
}

/* rdma_slots_init - allocate the endpoint's slots and free stacks and its lock. */
int rdma_slots_init(struct rdma_ep *ep)
{
	uint32_t ns = ep->attr.max_send_wr, nr = ep->attr.max_recv_wr, i;
	int ret;

	ep->sslots = calloc(ns, sizeof(*ep->sslots));
	ep->rslots = calloc(nr, sizeof(*ep->rslots));
	ep->sfree = calloc(ns, sizeof(*ep->sfree));
	ep->rfree = calloc(nr, sizeof(*ep->rfree));
	if (!ep->sslots || !ep->rslots || !ep->sfree || !ep->rfree) {
		ret = -ENOMEM;
		goto err_free;
	}
	for (i = 0; i < ns; i++) {
		ep->sslots[i].ep = ep;
		ep->sfree[i] = ns - 1 - i;
	}
	for (i = 0; i < nr; i++) {
		ep->rslots[i].ep = ep;
		ep->rslots[i].opcode = COH_WC_RECV;
		ep->rfree[i] = nr - 1 - i;
	}
	ep->nsfree = ns;
	ep->nrfree = nr;
	ret = pthread_mutex_init(&ep->lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_free;
	}
	return 0;

err_free:
	free(ep->sslots);
	free(ep->rslots);
	free(ep->sfree);
	free(ep->rfree);
	return ret;
}

/* rdma_slots_fini - free what rdma_slots_init made. */
void rdma_slots_fini(struct rdma_ep *ep)
{
	pthread_mutex_destroy(&ep->lock);
	free(ep->sslots);
	free(ep->rslots);
	free(ep->sfree);
	free(ep->rfree);
}

/* rdma_slot_get - take a free slot, or NULL when the limit is reached. Under ep->lock. */
static struct rdma_slot *rdma_slot_get(struct rdma_ep *ep, bool recv)
{
	if (recv)
		return ep->nrfree ? &ep->rslots[ep->rfree[--ep->nrfree]] : NULL;
	return ep->nsfree ? &ep->sslots[ep->sfree[--ep->nsfree]] : NULL;
}

/* rdma_slot_put - free @s. Under ep->lock. */
static void rdma_slot_put(struct rdma_ep *ep, struct rdma_slot *s)
{
	s->state = RDMA_SLOT_FREE;
	s->conn = NULL;
	if (s->opcode == COH_WC_RECV)
		ep->rfree[ep->nrfree++] = (uint32_t)(s - ep->rslots);
	else
		ep->sfree[ep->nsfree++] = (uint32_t)(s - ep->sslots);
}

/* rdma_sw_push - append a software completion; any thread. Grows the list when full. */
static void rdma_sw_push(struct rdma_cq *cq, const struct coh_wc *wc, struct rdma_slot *slot)
{
	uint64_t one = 1;
	uint32_t i;

	pthread_mutex_lock(&cq->sw_lock);
	if (cq->sw_count == cq->sw_cap) {
		struct rdma_swc *sw = malloc(2 * (size_t)cq->sw_cap * sizeof(*sw));

		if (!sw) {
			pthread_mutex_unlock(&cq->sw_lock);
			COH_LOG_ERR("node %u: out of memory; a completion is lost",
				    cq->fab->base.node_id);
			return;
		}
		for (i = 0; i < cq->sw_count; i++)
			sw[i] = cq->sw[(cq->sw_head + i) % cq->sw_cap];
		free(cq->sw);
		cq->sw = sw;
		cq->sw_head = 0;
		cq->sw_cap *= 2;
	}
	i = (cq->sw_head + cq->sw_count) % cq->sw_cap;
	cq->sw[i].wc = *wc;
	cq->sw[i].slot = slot;
	cq->sw_count++;
	atomic_store(&cq->sw_pending, cq->sw_count);
	pthread_mutex_unlock(&cq->sw_lock);
	/* Wakes a sleeper in rdma_cq_sleep; cannot fail short of a counter overflow. */
	if (write(cq->wake_fd, &one, sizeof(one)) < 0)
		COH_LOG_WARN("eventfd write: %s", strerror(errno));
}

/* rdma_slot_fail - complete @s in software with @status. Under ep->lock. */
static void rdma_slot_fail(struct rdma_ep *ep, struct rdma_slot *s, int status)
{
	struct coh_wc wc = {
		.wr_id = s->wr_id, .status = status, .opcode = s->opcode, .peer = ep->attr.peer
	};

	s->state = RDMA_SLOT_DONE;
	s->conn = NULL;
	rdma_sw_push(s->opcode == COH_WC_RECV ? ep->rcq : ep->scq, &wc, s);
}

/* rdma_sw_take - take up to @max software completions, freeing their slots. */
static int rdma_sw_take(struct rdma_cq *cq, struct coh_wc *wc, int max)
{
	struct rdma_slot *slots[RDMA_POLL_BATCH];
	int taken = 0, k, j;

	while (taken < max) {
		pthread_mutex_lock(&cq->sw_lock);
		for (k = 0; k < RDMA_POLL_BATCH && taken + k < max && cq->sw_count; k++) {
			wc[taken + k] = cq->sw[cq->sw_head].wc;
			slots[k] = cq->sw[cq->sw_head].slot;
			cq->sw_head = (cq->sw_head + 1) % cq->sw_cap;
			cq->sw_count--;
		}
		atomic_store(&cq->sw_pending, cq->sw_count);
		pthread_mutex_unlock(&cq->sw_lock);
		if (!k)
			break;
		/* Outside sw_lock: the endpoint lock comes first in the lock order. */
		for (j = 0; j < k; j++) {
			struct rdma_ep *ep = slots[j] ? slots[j]->ep : NULL;

			if (!ep)
				continue;
			pthread_mutex_lock(&ep->lock);
			rdma_slot_put(ep, slots[j]);
			pthread_mutex_unlock(&ep->lock);
		}
		taken += k;
	}
	return taken;
}

/* rdma_qp_post - post slot @s on connection @c. Returns 0 or -errno. Under ep->lock. */
static int rdma_qp_post(struct rdma_fabric *fab, struct rdma_conn *c, struct rdma_slot *s)
{
	uint32_t lkey = s->mr ? s->mr->mr->lkey : 0, n;
	struct ibv_qp_ex *qpx = c->qpx;

	if (s->opcode == COH_WC_RECV) {
		struct ibv_sge sge = { .addr = s->laddr, .length = s->len, .lkey = lkey };
		struct ibv_recv_wr wr = { .wr_id = (uintptr_t)s, .sg_list = &sge, .num_sge = 1 };
		struct ibv_recv_wr *bad;

		return -ibv_post_recv(c->qp, &wr, &bad);
	}
	ibv_wr_start(qpx);
	qpx->wr_id = (uintptr_t)s;
	qpx->wr_flags = IBV_SEND_SIGNALED;
	switch (s->opcode) {
	case COH_WC_WRITE:
		ibv_wr_rdma_write(qpx, s->rkey, s->raddr);
		ibv_wr_set_sge(qpx, lkey, s->laddr, s->len);
		break;
	case COH_WC_READ:
		ibv_wr_rdma_read(qpx, s->rkey, s->raddr);
		ibv_wr_set_sge(qpx, lkey, s->laddr, s->len);
		break;
	case COH_WC_CAS:
		ibv_wr_atomic_cmp_swp(qpx, s->rkey, s->raddr, s->compare, s->swap);
		ibv_wr_set_sge(qpx, lkey, s->laddr, 8);
		break;
	case COH_WC_FAA:
		ibv_wr_atomic_fetch_add(qpx, s->rkey, s->raddr, s->compare);
		ibv_wr_set_sge(qpx, lkey, s->laddr, 8);
		break;
	case COH_WC_FLUSH:
#ifdef COHORT_HAVE_IBV_FLUSH
		if (fab->native_flush) {
			ibv_wr_flush(qpx, s->rkey, s->raddr, s->len, IBV_FLUSH_GLOBAL,
				     IBV_FLUSH_RANGE);
			break;
		}
#endif
		/* A READ is executed after every WRITE posted before it on this connection has
		 * been placed at the target, so its completion is the flush point. Read the last
		 * bytes of the range: any byte would do. Placed means in the target's memory
		 * system, which with DDIO is its CPU cache: on persistent memory that survives
		 * power loss only with eADR (rdma_mr_new_pmem sets the region's mode so). */
		n = s->len < 8 ? s->len : 8;
		ibv_wr_rdma_read(qpx, s->rkey, s->raddr + s->len - n);
		ibv_wr_set_sge(qpx, fab->sink_mr->lkey, (uintptr_t)fab->sink, n);
		break;
	default:
		/* Providers such as rxe read the INLINE flag to know where the data is. */
		if (s->len <= fab->max_inline)
			qpx->wr_flags |= IBV_SEND_INLINE;
		ibv_wr_send(qpx);
		if (s->len <= fab->max_inline)
			ibv_wr_set_inline_data(qpx, (void *)(uintptr_t)s->laddr, s->len);
		else
			ibv_wr_set_sge(qpx, lkey, s->laddr, s->len);
		break;
	}
	return -ibv_wr_complete(qpx);
}

/* rdma_slot_post - post @s on the endpoint's current connection for its direction. */
static int rdma_slot_post(struct rdma_ep *ep, struct rdma_slot *s)
{
	bool recv = s->opcode == COH_WC_RECV;
	struct rdma_conn *c = recv ? rdma_ep_rq(ep) : rdma_ep_sq(ep);
	int ret;

	if (!c || !c->qp)
		return -ENOTCONN;
	ret = rdma_qp_post(ep->fab, c, s);
	if (ret)
		return ret;
	s->state = RDMA_SLOT_POSTED;
	s->conn = c;
	c->outstanding++;
	c->rposted += recv;
	return 0;
}

/* rdma_ep_rstale - receives still posted on retired connections. Under ep->lock. */
static uint32_t rdma_ep_rstale(const struct rdma_ep *ep)
{
	const struct rdma_conn *c;
	uint32_t n = 0;

	for (c = ep->retired; c; c = c->next)
		n += c->rposted;
	return n;
}

/* rdma_ep_broken - the current connection failed under the poster: start replacing it. */
static void rdma_ep_broken(struct rdma_ep *ep)
{
	if (atomic_load(&ep->state) != RDMA_EP_UP)
		return;
	atomic_store(&ep->state, RDMA_EP_RECONNECTING);
	atomic_store(&ep->kick, ep->conn_gen + 1);
}

/* rdma_post_or_park - post @s on the current connection; if the device refuses, park it and start
 * replacing the connection. Returns true when the CM thread must be woken. Under ep->lock. */
static bool rdma_post_or_park(struct rdma_ep *ep, struct rdma_slot *s)
{
	int ret = rdma_slot_post(ep, s);

	if (!ret)
		return false;
	COH_LOG_WARN("node %u: %s post to node %u failed: %s; re-establishing",
		     ep->fab->base.node_id, s->opcode == COH_WC_RECV ? "receive" : "send-side",
		     ep->attr.peer, strerror(-ret));
	s->state = RDMA_SLOT_PARKED;
	rdma_ep_broken(ep);
	return true;
}

/* rdma_seq_cmp - order slots by posting sequence, for qsort. */
static int rdma_seq_cmp(const void *a, const void *b)
{
	const struct rdma_slot *x = *(struct rdma_slot *const *)a,
			       *y = *(struct rdma_slot *const *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* rdma_repost_dir - post one direction's parked slots in posting order. */
static void rdma_repost_dir(struct rdma_ep *ep, struct rdma_slot *slots, uint32_t n,
			    struct rdma_slot **list)
{
	uint32_t i, k = 0;
	int ret;

	for (i = 0; i < n; i++) {
		if (slots[i].state == RDMA_SLOT_PARKED)
			list[k++] = &slots[i];
	}
	qsort(list, k, sizeof(*list), rdma_seq_cmp);
	for (i = 0; i < k; i++) {
		ret = rdma_slot_post(ep, list[i]);
		if (ret) {
			COH_LOG_WARN("node %u: cannot re-post an operation to node %u: %s",
				     ep->fab->base.node_id, ep->attr.peer, strerror(-ret));
			rdma_slot_fail(ep, list[i], -ECONNRESET);
		}
	}
}

/* rdma_ep_repost - post the parked operations on the replacement connection, in posting order.
 * Receives wait until none is left on a retired connection: buffers must stay in the order they
 * were posted in. Under ep->lock. */
void rdma_ep_repost(struct rdma_ep *ep)
{
	uint32_t ns = ep->attr.max_send_wr, nr = ep->attr.max_recv_wr;
	struct rdma_slot **list = malloc((ns > nr ? ns : nr) * sizeof(*list));

	if (!list) {
		COH_LOG_ERR("node %u: out of memory re-posting operations", ep->fab->base.node_id);
		rdma_ep_fail_parked(ep);
		return;
	}
	rdma_repost_dir(ep, ep->sslots, ns, list);
	if (!rdma_ep_rstale(ep))
		rdma_repost_dir(ep, ep->rslots, nr, list);
	free(list);
}

/* rdma_ep_fail_parked - complete parked operations with -ECONNRESET. Under ep->lock. */
void rdma_ep_fail_parked(struct rdma_ep *ep)
{
	uint32_t i;

	for (i = 0; i < ep->attr.max_send_wr; i++) {
		if (ep->sslots[i].state == RDMA_SLOT_PARKED)
			rdma_slot_fail(ep, &ep->sslots[i], -ECONNRESET);
	}
	for (i = 0; i < ep->attr.max_recv_wr; i++) {
		if (ep->rslots[i].state == RDMA_SLOT_PARKED)
			rdma_slot_fail(ep, &ep->rslots[i], -ECONNRESET);
	}
}

/* rdma_ep_release_held - report the held remote access errors with @status. Under ep->lock. */
void rdma_ep_release_held(struct rdma_ep *ep, int status)
{
	uint32_t i;

	for (i = 0; i < ep->attr.max_send_wr; i++) {
		if (ep->sslots[i].state == RDMA_SLOT_HELD)
			rdma_slot_fail(ep, &ep->sslots[i], status);
	}
}

/* rdma_hw_status - a device completion's status as a Cohort status. */
static int rdma_hw_status(const struct ibv_wc *hw, bool recv)
{
	/* Soft-RoCE (Linux 6.1) completes a receive whose buffer is too small for the message
	 * with "local QP operation error"; the provider builds receive requests itself (one
	 * checked buffer), so on a receive that status has no other cause. */
	if (recv && hw->status == IBV_WC_LOC_QP_OP_ERR)
		return -EMSGSIZE;
	return rdma_wc_status(hw->status);
}

/*
 * rdma_cqe - handle one device completion. With @defer it goes to the software list (with its
 * slot, freed when taken); otherwise into @out and the slot is freed. Returns 1 when @out was
 * filled, 0 otherwise (deferred, or a flushed receive carried over to a replacement connection).
 */
static int rdma_cqe(struct rdma_cq *cq, const struct ibv_wc *hw, struct coh_wc *out, bool defer)
{
	struct rdma_slot *s = (struct rdma_slot *)(uintptr_t)hw->wr_id;
	struct rdma_ep *ep = s->ep;
	bool recv = s->opcode == COH_WC_RECV, kicked = false, stale;
	int state, filled = 0;
	struct rdma_conn *c;
	struct coh_wc wc;

	/* The completion can be generated before the poster (maybe the CM thread re-posting)
	 * has finished filling the slot: read it only under the lock the poster holds. */
	pthread_mutex_lock(&ep->lock);
	c = s->conn;
	if (c && c->outstanding)
		c->outstanding--;
	if (c && recv && c->rposted)
		c->rposted--;
	s->conn = NULL;
	stale = c && c != ep->act && c != ep->pas;
	state = atomic_load(&ep->state);
	if (hw->status != IBV_WC_SUCCESS && state == RDMA_EP_UP && c && !stale) {
		COH_LOG_WARN("node %u: completion error on the connection to node %u: %s",
			     ep->fab->base.node_id, ep->attr.peer, ibv_wc_status_str(hw->status));
		rdma_ep_broken(ep);
		state = RDMA_EP_RECONNECTING;
		kicked = true;
	}
	if (recv && hw->status == IBV_WC_WR_FLUSH_ERR && state != RDMA_EP_DOWN) {
		/* The buffer was never filled: it goes to the replacement connection. */
		s->state = RDMA_SLOT_PARKED;
	} else if (hw->status == IBV_WC_REM_ACCESS_ERR && state == RDMA_EP_RECONNECTING) {
		/* A revoked key, or a peer being killed (its regions go before its queue pairs).
		 * Only re-establishment tells which, and -EACCES means "fenced" to the caller, so
		 * wait for it: rdma_ep_release_held(). */
		s->state = RDMA_SLOT_HELD;
	} else {
		wc.wr_id = s->wr_id;
		wc.status = rdma_hw_status(hw, recv);
		wc.opcode = s->opcode;
		wc.byte_len = recv && hw->status == IBV_WC_SUCCESS ? hw->byte_len : 0;
		wc.peer = ep->attr.peer;
		if (defer) {
			s->state = RDMA_SLOT_DONE;
			rdma_sw_push(cq, &wc, s);
		} else {
			*out = wc;
			rdma_slot_put(ep, s);
			filled = 1;
		}
	}
	/* The last receive of a retired connection releases the parked ones, in order. */
	if (recv && stale && state == RDMA_EP_UP && !rdma_ep_rstale(ep))
		rdma_ep_repost(ep);
	pthread_mutex_unlock(&ep->lock);
	if (kicked)
		rdma_wake(ep->fab);
	return filled;
}

/* rdma_cq_poll - software completions first, then the device's; never blocks. */
int rdma_cq_poll(struct coh_cq *bcq, struct coh_wc *wc, int max)
{
	struct rdma_cq *cq = container_of(bcq, struct rdma_cq, base);
	struct ibv_wc hw[RDMA_POLL_BATCH];
	int n = 0, want, got, i;

	if (atomic_load_explicit(&cq->sw_pending, memory_order_acquire))
		n = rdma_sw_take(cq, wc, max);
	while (n < max) {
		want = max - n < RDMA_POLL_BATCH ? max - n : RDMA_POLL_BATCH;
		got = ibv_poll_cq(cq->cq, want, hw);
		if (got < 0) {
			COH_LOG_ERR("node %u: ibv_poll_cq failed", cq->fab->base.node_id);
			break;
		}
		for (i = 0; i < got; i++)
			n += rdma_cqe(cq, &hw[i], &wc[n], false);
		if (got < want)
			break;
	}
	return n;
}

/* rdma_cq_sleep - arm the queue and sleep until a completion event, a software completion or
 * @timeout_ms; spurious returns are fine (the caller loops). */
int rdma_cq_sleep(struct coh_cq *bcq, int timeout_ms)
{
	struct rdma_cq *cq = container_of(bcq, struct rdma_cq, base);
	struct pollfd pfd[2] = { { .fd = cq->ch->fd, .events = POLLIN },
				 { .fd = cq->wake_fd, .events = POLLIN } };
	struct ibv_cq *evcq;
	struct ibv_wc hw;
	uint64_t drain;
	void *ctx;
	int ret;

	if (atomic_load(&cq->sw_pending))
		return 0;
	if (!cq->armed) {
		ret = ibv_req_notify_cq(cq->cq, 0);
		if (ret)
			return -ret;
		cq->armed = true;
	}
	/* A completion that arrived before the queue was armed raises no event: look once more.
	 * One found here goes to the software list, where the caller's next poll takes it. */
	if (ibv_poll_cq(cq->cq, 1, &hw) > 0) {
		rdma_cqe(cq, &hw, NULL, true);
		return 0;
	}
	ret = poll(pfd, 2, timeout_ms);
	if (ret < 0)
		return errno == EINTR ? 0 : -errno;
	if (!ret)
		return -ETIMEDOUT;
	if ((pfd[0].revents & POLLIN) && !ibv_get_cq_event(cq->ch, &evcq, &ctx)) {
		ibv_ack_cq_events(evcq, 1);
		cq->armed = false;
	}
	if ((pfd[1].revents & POLLIN) && read(cq->wake_fd, &drain, sizeof(drain)) < 0 &&
	    errno != EAGAIN)
		COH_LOG_WARN("eventfd read: %s", strerror(errno));
	return 0;
}

/* rdma_cq_wake - the same eventfd as a software completion: poll() in rdma_cq_sleep returns. */
void rdma_cq_wake(struct coh_cq *bcq)
{
	struct rdma_cq *cq = container_of(bcq, struct rdma_cq, base);
	uint64_t one = 1;

	if (write(cq->wake_fd, &one, sizeof(one)) < 0)
		COH_LOG_WARN("eventfd write: %s", strerror(errno));
}

/* rdma_remote_ok - whether @op stays inside the imported region and has the right to. */
static bool rdma_remote_ok(const struct coh_op *op)
{
	const struct coh_mr_fields *f = &op->rmr->f;
	uint32_t need;

	switch (op->code) {
	case COH_OP_WRITE:
		need = COH_ACCESS_REMOTE_WRITE;
		break;
	case COH_OP_READ:
		need = COH_ACCESS_REMOTE_READ;
		break;
	case COH_OP_FLUSH:
		need = COH_ACCESS_REMOTE_FLUSH;
		break;
	default:
		need = COH_ACCESS_REMOTE_ATOMIC;
		break;
	}
	if (!(f->access & need) || op->roff > f->len || op->len > f->len - op->roff)
		return false;
	/* The device needs naturally aligned atomics; caller memory may start anywhere. */
	return need != COH_ACCESS_REMOTE_ATOMIC || !((f->addr + op->roff) & 7);
}

/* rdma_post - check @op against the remote region and post it, park it while the connection is
 * being replaced, or complete it in software. */
int rdma_post(struct coh_ep *bep, const struct coh_op *op)
{
	struct rdma_ep *ep = container_of(bep, struct rdma_ep, base);
	struct rdma_slot *s;
	bool kicked = false;
	int state;

	pthread_mutex_lock(&ep->lock);
	s = rdma_slot_get(ep, false);
	if (!s) {
		pthread_mutex_unlock(&ep->lock);
		return -EAGAIN;
	}
	s->wr_id = op->wr_id;
	s->seq = ep->seq++;
	s->opcode = (uint8_t)op->code;
	s->mr = op->lmr ? container_of(op->lmr, struct rdma_mr, base) : NULL;
	s->laddr = op->lmr ? (uintptr_t)op->lmr->addr + op->loff : 0;
	s->len = (uint32_t)op->len;
	s->rkey = op->rmr ? op->rmr->f.rkey : 0;
	s->raddr = op->rmr ? op->rmr->f.addr + op->roff : 0;
	s->compare = op->compare;
	s->swap = op->swap;
	state = atomic_load(&ep->state);
	if (state == RDMA_EP_DOWN) {
		rdma_slot_fail(ep, s, -ECONNRESET);
	} else if (op->code != COH_OP_SEND && !rdma_remote_ok(op)) {
		COH_LOG_DBG("node %u: operation outside region %u of node %u refused",
			    ep->fab->base.node_id, op->rmr->f.region, ep->attr.peer);
		rdma_slot_fail(ep, s, -EACCES);
	} else if (state != RDMA_EP_UP) {
		s->state = RDMA_SLOT_PARKED;
	} else {
		kicked = rdma_post_or_park(ep, s);
	}
	pthread_mutex_unlock(&ep->lock);
	if (kicked)
		rdma_wake(ep->fab);
	return 0;
}

/* rdma_post_recv - post a receive, or park it while the connection is being replaced (or while
 * receives of the failed connection are still to be carried over, to keep their order). */
int rdma_post_recv(struct coh_ep *bep, struct coh_mr *bmr, size_t off, size_t len, uint64_t wr_id)
{
	struct rdma_ep *ep = container_of(bep, struct rdma_ep, base);
	struct rdma_slot *s;
	bool kicked = false;
	int state;

	pthread_mutex_lock(&ep->lock);
	s = rdma_slot_get(ep, true);
	if (!s) {
		pthread_mutex_unlock(&ep->lock);
		return -EAGAIN;
	}
	s->wr_id = wr_id;
	s->seq = ep->seq++;
	s->mr = container_of(bmr, struct rdma_mr, base);
	s->laddr = (uintptr_t)bmr->addr + off;
	s->len = (uint32_t)len;
	state = atomic_load(&ep->state);
	if (state == RDMA_EP_DOWN) {
		rdma_slot_fail(ep, s, -ECONNRESET);
	} else if (state != RDMA_EP_UP || rdma_ep_rstale(ep)) {
		s->state = RDMA_SLOT_PARKED;
	} else {
		kicked = rdma_post_or_park(ep, s);
	}
	pthread_mutex_unlock(&ep->lock);
	if (kicked)
		rdma_wake(ep->fab);
	return 0;
}

/* rdma_ep_drain - at ep_delete, after its queue pairs are destroyed: move what the queues
 * hold to the software lists and complete the endpoint's leftovers with -ECONNRESET. */
void rdma_ep_drain(struct rdma_ep *ep)
{
	struct rdma_cq *cqs[2] = { ep->scq, ep->rcq != ep->scq ? ep->rcq : NULL };
	struct ibv_wc hw[RDMA_POLL_BATCH];
	int i, j, got;
	uint32_t k;

	/* Completions of other endpoints met on the way stay pending on the software list. */
	for (i = 0; i < 2 && cqs[i]; i++) {
		while ((got = ibv_poll_cq(cqs[i]->cq, RDMA_POLL_BATCH, hw)) > 0) {
			for (j = 0; j < got; j++)
				rdma_cqe(cqs[i], &hw[j], NULL, true);
		}
	}
	/* What is still outstanding can no longer complete: its queue pairs are gone. */
	pthread_mutex_lock(&ep->lock);
	for (k = 0; k < ep->attr.max_send_wr + ep->attr.max_recv_wr; k++) {
		struct rdma_slot *s = k < ep->attr.max_send_wr
					  ? &ep->sslots[k]
					  : &ep->rslots[k - ep->attr.max_send_wr];
		struct coh_wc wc = { .wr_id = s->wr_id,
				     .status = -ECONNRESET,
				     .opcode = s->opcode,
				     .peer = ep->attr.peer };

		if (s->state == RDMA_SLOT_POSTED || s->state == RDMA_SLOT_PARKED ||
		    s->state == RDMA_SLOT_HELD)
			rdma_sw_push(s->opcode == COH_WC_RECV ? ep->rcq : ep->scq, &wc, NULL);
	}
	pthread_mutex_unlock(&ep->lock);
	/* Completions stay in their queues after the endpoint goes, detached from its slots. */
	for (i = 0; i < 2 && cqs[i]; i++) {
		pthread_mutex_lock(&cqs[i]->sw_lock);
		for (k = 0; k < cqs[i]->sw_count; k++) {
			struct rdma_swc *e = &cqs[i]->sw[(cqs[i]->sw_head + k) % cqs[i]->sw_cap];

			if (e->slot && e->slot->ep == ep)
				e->slot = NULL;
		}
		pthread_mutex_unlock(&cqs[i]->sw_lock);
	}
}
