/*
 * lease.c - a node's lease and the cluster's failure detector, on a thread and a channel of
 * their own so that neither a long view change step nor a busy I/O path holds them up.
 *
 * The lease. Every period (a quarter of the lease) the node asks every member for a renewal; a
 * member that still counts it as a member answers at once. When a majority of the configured
 * nodes (this one included) has answered a round, the lease runs to the round's send time plus
 * the lease length. The node serves I/O only while it holds a lease: the cache checks it after
 * every read's copy and before every acknowledgement and write-back (coh_cache_attr.lease), the
 * engine before every destage step and replay. A member records when it last answered each node
 * (@granted_ns); when the cluster excludes a node without proof that it died, every survivor waits
 * until its own last answer plus the lease (with room for clock rates 1% apart) has passed before
 * the view change goes past the fence, and the REKEYED barrier makes each survivor wait for all
 * of them. A majority answered the node's last renewal and a majority agreed on the new view, so
 * one of the survivors answered it: by then its lease is over. docs/recovery.md, "Fencing".
 *
 * The detector. A member from whom nothing (a request or an answer) has come for @suspect_ms is
 * reported to the membership thread as silent (lease_suspects), which starts a view change
 * without it. A node that asks and is told by a member of a newer view that it is no longer a
 * member (a NACK) learns that it was excluded (lease_excluded).
 *
 * What it leaves out: the view change itself (membership.c); what a node does once excluded
 * (it stops serving; a restart rejoins, which is the lifecycle work).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/log.h"
#include "node_internal.h"

#define CH_LEASE 242u
#define LEASE_RECVS 16u
#define LEASE_ROUNDS 16u /* renewal rounds whose answers are still counted */

struct lease {
	struct coh_cq *cq;
	struct coh_ep *ep[NODE_MAX];
	struct coh_mr *buf; /* receive slots per peer, then two send slots per peer */
	uint32_t busy[2];   /* send slots in flight: [0] requests, [1] answers, bit per peer */
	pthread_t thread;
	bool started;
	_Atomic bool stop;
	uint32_t period_ms, suspect_ms;
	/* Renewal rounds (this thread only). */
	uint64_t seq;
	uint64_t sent_ns[LEASE_ROUNDS];
	uint32_t acked[LEASE_ROUNDS];
	/* The detector (this thread only). */
	uint64_t heard_ns[NODE_MAX];
	uint32_t was_member;
	/* What the membership thread reads. */
	_Atomic uint64_t granted_ns[NODE_MAX]; /* this node's last answer to each node */
	_Atomic uint32_t suspects;	       /* members silent for @suspect_ms */
	_Atomic uint32_t fenced;	 /* members that answered from a view without quorum */
	_Atomic uint32_t excluded_epoch; /* a NACK's epoch, or 0 */
};

static size_t lease_send_off(const struct coh_node *n, uint32_t p, uint32_t kind)
{
	return ((size_t)n->nodes * LEASE_RECVS + 2 * p + kind) * CTL_MSG_SIZE;
}

static int lease_post_recv(struct coh_node *n, uint32_t p, uint32_t slot)
{
	return coh_ep_post_recv(n->lease->ep[p], n->lease->buf,
				((size_t)p * LEASE_RECVS + slot) * CTL_MSG_SIZE, CTL_MSG_SIZE,
				(uint64_t)p << 32 | slot);
}

/* lease_send - post @m to @p without waiting: a peer that does not take it (cut off, gone)
 * must not hold up the renewals with the others. A slot still in flight skips this message,
 * which is then lost, as any message to such a peer. @kind 0 for requests, 1 for answers. */
static void lease_send(struct coh_node *n, uint32_t p, uint32_t kind, const struct ctl_msg *m)
{
	struct lease *l = n->lease;

	if (!l->ep[p] || !coh_ep_is_up(l->ep[p]) || (l->busy[kind] >> p & 1))
		return;
	ctl_encode(m, (uint8_t *)coh_mr_addr(l->buf) + lease_send_off(n, p, kind));
	if (!coh_ep_post_send(l->ep[p], l->buf, lease_send_off(n, p, kind), CTL_MSG_SIZE,
			      (uint64_t)1 << 63 | (uint64_t)kind << 32 | p))
		l->busy[kind] |= 1u << p;
}

/* lease_members - the nodes this node answers and asks: its view's members not known gone. */
static uint32_t lease_members(const struct coh_node *n)
{
	return __atomic_load_n(&n->lease_members, __ATOMIC_SEQ_CST);
}

/* lease_extend - a majority answered round @seq: the lease runs to its send time plus the
 * lease. Never shortened here; lease_drop ends it. */
static void lease_extend(struct coh_node *n, uint64_t sent_ns)
{
	uint64_t end = (sent_ns + (uint64_t)n->lease_ms * 1000000ull) / 1000000ull, cur;

	cur = __atomic_load_n(&n->lease_end_ms, __ATOMIC_RELAXED);
	while (end > cur && !__atomic_compare_exchange_n(&n->lease_end_ms, &cur, end, false,
							 __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
}

void lease_drop(struct coh_node *n)
{
	__atomic_store_n(&n->lease_end_ms, 0, __ATOMIC_RELEASE);
}

static void lease_handle(struct coh_node *n, uint32_t p, const struct ctl_msg *m, uint64_t now)
{
	struct lease *l = n->lease;
	uint32_t members = lease_members(n);
	struct ctl_msg a = { .from = (uint16_t)n->me };
	uint64_t i;

	l->heard_ns[p] = now;
	switch (m->type) {
	case CTL_LEASE:
		if (members >> p & 1) {
			/* The promise comes before the answer: a survivor that excludes @p reads it
			 * after marking @p gone, and the answer goes only if @p was not yet gone. */
			atomic_store(&l->granted_ns[p], now);
			if (!(lease_members(n) >> p & 1))
				return;
			a.type = CTL_LEASE_ACK;
			a.aux = m->aux;
			a.epoch = m->epoch;
		} else {
			a.type = CTL_LEASE_NACK;
			pthread_mutex_lock(&n->state_lock);
			a.epoch = n->epoch;
			a.members = n->members;
			pthread_mutex_unlock(&n->state_lock);
		}
		lease_send(n, p, 1, &a);
		break;
	case CTL_LEASE_ACK:
		i = m->aux;
		if (i > l->seq || l->seq - i >= LEASE_ROUNDS)
			break;
		l->acked[i % LEASE_ROUNDS] |= 1u << p;
		if (node_majority(n, l->acked[i % LEASE_ROUNDS]))
			lease_extend(n, l->sent_ns[i % LEASE_ROUNDS]);
		break;
	case CTL_LEASE_NACK:
		/* Only a view with a majority excludes anyone. A node cut off from the others
		 * makes a view of itself alone, without quorum, and answers them from it once the
		 * network heals: that says nothing about them. */
		if (!node_majority(n, m->members)) {
			/* ... except about its sender: a member of this node's view that answers
			 * from a view of its own without quorum has fenced itself. It serves nothing
			 * and dropped its cache; it is gone, and comes back by a formation. */
			if (lease_members(n) >> p & 1)
				atomic_fetch_or(&l->fenced, 1u << p);
			break;
		}
		pthread_mutex_lock(&n->state_lock);
		i = m->epoch > n->epoch && !(m->members >> n->me & 1);
		pthread_mutex_unlock(&n->state_lock);
		if (i && !atomic_load(&l->excluded_epoch)) {
			COH_LOG_WARN("node %u: node %u says view %u (members %#x) has no place for "
				     "this node: it was excluded",
				     n->me, p, m->epoch, m->members);
			atomic_store(&l->excluded_epoch, m->epoch);
		}
		break;
	default:
		break;
	}
}

/* lease_round - ask every member for a renewal. */
static void lease_round(struct coh_node *n, uint64_t now)
{
	struct lease *l = n->lease;
	uint32_t members = lease_members(n), p;
	struct ctl_msg m = { .type = CTL_LEASE, .from = (uint16_t)n->me };

	l->seq++;
	l->sent_ns[l->seq % LEASE_ROUNDS] = now;
	l->acked[l->seq % LEASE_ROUNDS] = 1u << n->me;
	if (node_majority(n, 1u << n->me))
		lease_extend(n, now);
	pthread_mutex_lock(&n->state_lock);
	m.epoch = n->epoch;
	pthread_mutex_unlock(&n->state_lock);
	m.aux = (uint32_t)l->seq;
	for (p = 0; p < n->nodes; p++) {
		if (p != n->me && (members >> p & 1))
			lease_send(n, p, 0, &m);
	}
}

/* lease_watch - members silent for too long are suspects; a node that becomes a member is
 * heard from now on. */
static void lease_watch(struct coh_node *n, uint64_t now)
{
	struct lease *l = n->lease;
	uint32_t members = lease_members(n), p, s = 0;

	for (p = 0; p < n->nodes; p++) {
		if (p == n->me || !(members >> p & 1))
			continue;
		if (!(l->was_member >> p & 1))
			l->heard_ns[p] = now;
		else if (now - l->heard_ns[p] > (uint64_t)l->suspect_ms * 1000000ull)
			s |= 1u << p;
	}
	l->was_member = members;
	if (s & ~atomic_load(&l->suspects))
		atomic_fetch_or(&l->suspects, s);
}

static void *lease_main(void *arg)
{
	struct coh_node *n = arg;
	struct lease *l = n->lease;
	uint64_t next = 0;

	while (!atomic_load(&l->stop)) {
		struct coh_wc wc[16];
		uint64_t now = node_now_ns();
		int k, i;

		if (now >= next) {
			lease_round(n, now);
			lease_watch(n, now);
			next = now + (uint64_t)l->period_ms * 1000000ull;
		}
		/* In slices of at most 10 ms, so that a stop is seen soon (a close waits for it). */
		k = (int)((next - now) / 1000000ull) + 1;
		k = coh_cq_wait(l->cq, wc, 16, k < 10 ? k : 10);
		now = node_now_ns();
		for (i = 0; i < k; i++) {
			uint32_t p = (uint32_t)(wc[i].wr_id >> 32), slot = (uint32_t)wc[i].wr_id;
			struct ctl_msg m;

			if (wc[i].opcode == COH_WC_SEND) {
				l->busy[(wc[i].wr_id >> 32) & 1] &= ~(1u << (uint32_t)wc[i].wr_id);
				continue;
			}
			if (wc[i].opcode != COH_WC_RECV || wc[i].status)
				continue;
			if (ctl_decode((uint8_t *)coh_mr_addr(l->buf) +
					   ((size_t)p * LEASE_RECVS + slot) * CTL_MSG_SIZE,
				       wc[i].byte_len, n->nodes, &m) ||
			    m.from != p)
				COH_LOG_WARN("node %u: malformed lease message from %u dropped",
					     n->me, p);
			else
				lease_handle(n, p, &m, now);
			if (lease_post_recv(n, p, slot))
				COH_LOG_WARN("node %u: re-arming lease receive from %u failed",
					     n->me, p);
		}
	}
	return NULL;
}

int lease_init(struct coh_node *n)
{
	struct lease *l;
	int ret;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	n->lease = l;
	l->period_ms = n->lease_ms / 4 ? n->lease_ms / 4 : 1;
	l->suspect_ms = 2 * n->timeout_ms;
	ret = coh_cq_new(n->fab, n->nodes * (LEASE_RECVS + 8) + 16, &l->cq);
	if (!ret)
		ret = coh_mr_new(n->fab, lease_send_off(n, n->nodes, 0), COH_ACCESS_LOCAL_WRITE,
				 &l->buf);
	return ret;
}

/* lease_drop_peer - forget the endpoint to @p (its incarnation ended, or it left the view).
 * Completions of its sends still in the queue name a slot that is then free. */
static void lease_drop_peer(struct lease *l, uint32_t p)
{
	coh_ep_delete(&l->ep[p]);
	l->busy[0] &= ~(1u << p);
	l->busy[1] &= ~(1u << p);
}

int lease_connect(struct coh_node *n, uint32_t members)
{
	struct coh_ep_attr a[NODE_MAX];
	struct coh_ep *made[NODE_MAX];
	struct lease *l = n->lease;
	uint32_t p, s, cnt = 0, i;
	int ret;

	if (l->started)
		return -EBUSY;
	for (p = 0; p < n->nodes; p++) {
		if (p == n->me)
			continue;
		if (l->ep[p] && (!(members >> p & 1) || !coh_ep_is_up(l->ep[p])))
			lease_drop_peer(l, p);
		if (!(members >> p & 1) || l->ep[p])
			continue;
		a[cnt++] = (struct coh_ep_attr){ .peer = p,
						 .channel = CH_LEASE,
						 .send_cq = l->cq,
						 .recv_cq = l->cq,
						 .max_send_wr = 8,
						 .max_recv_wr = LEASE_RECVS,
						 .max_msg_size = CTL_MSG_SIZE,
						 .timeout_ms = n->timeout_ms };
	}
	if (!cnt)
		return 0;
	/* All at once: one late peer costs one timeout, not one per peer waited for in turn. */
	ret = coh_ep_new_many(n->fab, a, cnt, made);
	if (ret) {
		COH_LOG_ERR("node %u: lease channels to nodes %#x: %s", n->me, members,
			    coh_strerror(ret));
		return ret;
	}
	for (i = 0; i < cnt; i++) {
		p = a[i].peer;
		l->ep[p] = made[i];
		for (s = 0; s < LEASE_RECVS && !ret; s++)
			ret = lease_post_recv(n, p, s);
	}
	return ret;
}

int lease_start(struct coh_node *n)
{
	struct lease *l = n->lease;
	uint64_t now = node_now_ns();
	uint32_t p;
	int ret;

	if (l->started)
		return 0;
	for (p = 0; p < n->nodes; p++)
		l->heard_ns[p] = now;
	l->was_member = lease_members(n);
	atomic_store(&l->stop, false);
	atomic_store(&l->suspects, 0);
	atomic_store(&l->fenced, 0);
	atomic_store(&l->excluded_epoch, 0);
	ret = -pthread_create(&l->thread, NULL, lease_main, n);
	if (!ret)
		l->started = true;
	return ret;
}

void lease_stop(struct coh_node *n)
{
	struct lease *l = n->lease;

	if (!l || !l->started)
		return;
	atomic_store(&l->stop, true);
	pthread_join(l->thread, NULL);
	l->started = false;
}

void lease_fini(struct coh_node *n)
{
	struct lease *l = n->lease;
	uint32_t p;

	if (!l)
		return;
	lease_stop(n);
	for (p = 0; p < NODE_MAX; p++)
		coh_ep_delete(&l->ep[p]);
	coh_mr_delete(&l->buf);
	coh_cq_delete(&l->cq);
	free(l);
	n->lease = NULL;
}

uint32_t lease_fenced(struct coh_node *n)
{
	return n->lease ? atomic_exchange(&n->lease->fenced, 0) : 0;
}

uint32_t lease_suspects(struct coh_node *n)
{
	return n->lease ? atomic_exchange(&n->lease->suspects, 0) : 0;
}

uint32_t lease_excluded(struct coh_node *n)
{
	return n->lease ? atomic_load(&n->lease->excluded_epoch) : 0;
}

/*
 * lease_outwait_ns - the time (this node's clock) after which no lease this node granted to a
 * node in @gone can still run: its last answer to each, plus the lease and 1% for the rates of
 * two clocks. The caller has already taken @gone out of lease_members, so no answer follows.
 */
uint64_t lease_outwait_ns(struct coh_node *n, uint32_t gone)
{
	uint64_t until = 0, t;
	uint32_t p;

	if (!n->lease)
		return 0;
	for (p = 0; p < n->nodes; p++) {
		if (!(gone >> p & 1))
			continue;
		t = atomic_load(&n->lease->granted_ns[p]);
		if (!t)
			continue;
		t += (uint64_t)n->lease_ms * 1010000ull + 1000000ull;
		if (t > until)
			until = t;
	}
	return until;
}
