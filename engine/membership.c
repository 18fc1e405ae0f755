/*
 * membership.c - the control plane of a node: the log regions it hosts and their exchange, the
 * membership thread, and the view change that follows a node's failure (PEER_DOWN from the
 * fabric, a goodbye, or silence reported by the lease thread, lease.c).
 *
 * A view change, on every survivor, while I/O to everything the dead did not hold goes on:
 *   1. agree: each node proposes (epoch, members) to the others until all members of the
 *      proposal propose the same. A proposal that differs, or a newer epoch, makes a node take
 *      the intersection of the member sets under a higher epoch, so the views converge (member
 *      sets only shrink, epochs only grow). Nodes that never answer are left out. Each proposal
 *      also carries the sender's last committed view: a node that finds a member committed a
 *      view it did not (that member had every READY and ZEROED of it, this node had not yet)
 *      commits that view first, and only then deals with the new deaths. So a round is
 *      all-or-nothing: either nobody built on it, and it is redone, or everyone commits it.
 *   2. quorum: a view without a majority of the configured nodes is fenced: the node drops its
 *      cache without writing anything and serves no I/O (its peers replay its log), so a
 *      minority never writes the shared storage (no split brain).
 *   3. fence: a node excluded without proof of its death (silent, or only cut off) is killed
 *      where the fabric can (COH_FENCE_AUTO on shm) or its lease is outwaited; then every
 *      survivor re-keys its cache regions and the dead nodes' log regions it hosts, and the
 *      survivors exchange the new descriptors (barrier: every descriptor in, so nobody goes
 *      past this point before every survivor has outwaited the leases it granted). Then the
 *      dead are fenced in the cache.
 *   4. a writer whose log lost a peer destages what it holds and starts its log afresh on its
 *      new peers (only its own I/O waits for that); a failure here (another death) starts the
 *      view change again.
 *   5. rebuild the dead homes' directory words on the next members (clear, barrier CLEARED,
 *      claim, barrier FLUSHED, which also says whose dead logs each survivor holds copies of:
 *      the copies themselves say, not the membership, because a writer may have moved its log).
 *   6. take over: for each dead node, the survivors holding a copy of its log race for its
 *      locks with one CAS (coh_cache_take_over); the winner invalidates every member's copy of
 *      what it took, replays the live records from its copy, repairs the stripes it was
 *      updating and flushes the group; barrier READY.
 *   7. every copy of the dead nodes' logs is zeroed; barrier ZEROED. A restarted round can no
 *      longer replay a log some node may have built on.
 *   8. commit: the rebuilt words take effect and the taken locks are let go.
 * Any failure or newer proposal during 3-8 starts again at 1 with a higher epoch; every step is
 * idempotent. The interface is messages and a member bitmap, so an external membership service
 * (corosync CPG) could drive the same steps. docs/recovery.md describes each step and why.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <isa-l/crc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cohort/log.h"
#include "membership_internal.h"

/* Codec. Layout: magic 0, type 4, idx 5, from 6, epoch 8, members 12, cepoch 16, cmembers 20,
 * aux 24, reserved 28 (zero), desc 32..79, crc 80 (of 0..79), zero to 95. */

static void put32le(uint8_t *b, uint32_t v)
{
	v = htole32(v);
	memcpy(b, &v, 4);
}

static uint32_t get32le(const uint8_t *b)
{
	uint32_t v;

	memcpy(&v, b, 4);
	return le32toh(v);
}

void ctl_encode(const struct ctl_msg *m, uint8_t *b)
{
	uint16_t f = htole16(m->from);

	memset(b, 0, CTL_MSG_SIZE);
	put32le(b, CTL_MAGIC);
	b[4] = m->type;
	b[5] = m->idx;
	memcpy(b + 6, &f, 2);
	put32le(b + 8, m->epoch);
	put32le(b + 12, m->members);
	put32le(b + 16, m->cepoch);
	put32le(b + 20, m->cmembers);
	put32le(b + 24, m->aux);
	memcpy(b + 32, m->desc.bytes, COH_MR_DESC_SIZE);
	put32le(b + 80, crc32_iscsi(b, 80, 0));
}

int ctl_decode(const uint8_t *b, uint32_t len, uint32_t nodes, struct ctl_msg *m)
{
	uint16_t f;
	uint32_t i;

	if (len != CTL_MSG_SIZE || nodes == 0 || nodes > NODE_MAX)
		return -EPROTO;
	if (get32le(b) != CTL_MAGIC || get32le(b + 80) != crc32_iscsi((unsigned char *)b, 80, 0))
		return -EPROTO;
	for (i = 28; i < 32; i++) {
		if (b[i])
			return -EPROTO;
	}
	for (i = 84; i < CTL_MSG_SIZE; i++) {
		if (b[i])
			return -EPROTO;
	}
	m->type = b[4];
	m->idx = b[5];
	memcpy(&f, b + 6, 2);
	m->from = le16toh(f);
	m->epoch = get32le(b + 8);
	m->members = get32le(b + 12);
	m->cepoch = get32le(b + 16);
	m->cmembers = get32le(b + 20);
	m->aux = get32le(b + 24);
	memcpy(m->desc.bytes, b + 32, COH_MR_DESC_SIZE);
	if (m->type < CTL_DESC || m->type > CTL_TYPE_MAX || m->from >= nodes ||
	    m->idx >= COH_CACHE_DESCS ||
	    (nodes < 32 && (m->members >> nodes || m->cmembers >> nodes)))
		return -EPROTO;
	return 0;
}

/* Transport. */

static size_t send_off(const struct coh_node *n)
{
	return (size_t)n->nodes * CTL_RECVS * CTL_MSG_SIZE;
}

static int post_recv(struct coh_node *n, uint32_t p, uint32_t slot)
{
	return coh_ep_post_recv(n->m->ep[p], n->m->buf,
				((size_t)p * CTL_RECVS + slot) * CTL_MSG_SIZE, CTL_MSG_SIZE,
				(uint64_t)n->m->conn_gen[p] << 48 | (uint64_t)p << 32 | slot);
}

/* ctl_send_msg - send @m to @p (bounded), unless @p is gone or a test's hook loses it. */
void memb_send(struct coh_node *n, uint32_t p, struct ctl_msg *m)
{
	int ret;

	if (!n->m->ep[p] || (n->m->dead >> p & 1))
		return;
	if (node_point(n, COH_POINT_CTL_SEND, (uint64_t)m->type << 8 | p) == COH_POINT_DROP)
		return;
	m->from = (uint16_t)n->me;
	ctl_encode(m, (uint8_t *)coh_mr_addr(n->m->buf) + send_off(n));
	ret = coh_ep_send_sync(n->m->ep[p], n->m->buf, send_off(n), CTL_MSG_SIZE);
	if (ret)
		COH_LOG_INFO("node %u: control message to %u: %s", n->me, p, coh_strerror(ret));
}

static void ctl_send(struct coh_node *n, uint32_t p, uint8_t type, uint32_t epoch, uint32_t members,
		     const struct coh_mr_desc *desc)
{
	struct ctl_msg m = { .type = type, .epoch = epoch, .members = members };

	if (desc)
		m.desc = *desc;
	memb_send(n, p, &m);
}

void memb_broadcast(struct coh_node *n, uint32_t to, uint8_t type, uint32_t epoch, uint32_t members)
{
	uint32_t p;

	for (p = 0; p < n->nodes; p++) {
		if (p != n->me && (to >> p & 1))
			ctl_send(n, p, type, epoch, members, NULL);
	}
}

/* set_lease_members - whom the lease thread asks and answers. Sequentially consistent with its
 * promise (lease.c, lease_handle): a node taken out here gets no answer after the caller reads
 * its last one. */
void memb_set_lease_members(struct coh_node *n, uint32_t members)
{
	__atomic_store_n(&n->lease_members, members, __ATOMIC_SEQ_CST);
}

static void mark_dead(struct coh_node *n, uint32_t p, const char *why, bool proven)
{
	if (p >= n->nodes || p == n->me)
		return;
	if (proven)
		n->m->proven |= 1u << p;
	if (n->m->dead >> p & 1)
		return;
	if (!n->m->dead || !n->m->down_ns)
		n->m->down_ns = node_now_ns();
	n->m->dead |= 1u << p;
	n->m->conn &= ~(1u << p);
	n->m->hello_seen &= ~(1u << p);
	n->m->hello_epoch[p] = 0;
	n->m->hello_members[p] = 0;
	n->m->joiners &= ~(1u << p);
	memb_set_lease_members(n,
			       __atomic_load_n(&n->lease_members, __ATOMIC_RELAXED) & ~(1u << p));
	COH_LOG_INFO("node %u: node %u is gone (%s)", n->me, p, why);
}

static void take_events(struct coh_node *n)
{
	struct coh_event ev;
	uint32_t s, p;

	while (coh_fabric_event_get(n->fab, &ev, 0) == 0) {
		if (ev.type != COH_EVENT_PEER_DOWN)
			continue;
		/* The end of a life older than the one this node is connected to now: reported
		 * late (a node that closed and opened again at once, a loaded monitor), it is not
		 * news about the peer, and taken as such it would drop the new life just admitted
		 * (its proposals sent to an endpoint this node has just forgotten). A member of
		 * this node's view is another matter: its life ended, and only a view change takes
		 * it out (memb_connect). */
		if (ev.peer < n->nodes && ev.peer != n->me &&
		    !(n->quorum && (n->members >> ev.peer & 1)) && n->m->ep[ev.peer] &&
		    coh_ep_is_up(n->m->ep[ev.peer]) &&
		    coh_ep_peer_incarnation(n->m->ep[ev.peer]) > ev.incarnation) {
			COH_LOG_INFO("node %u: node %u's earlier life %#" PRIx64
				     " ended; connected to a later one",
				     n->me, ev.peer, ev.incarnation);
			continue;
		}
		mark_dead(n, ev.peer, "fabric", n->m->peer_down_proven);
	}
	s = lease_suspects(n);
	for (p = 0; s && p < n->nodes; p++) {
		if ((s >> p & 1) && !(n->m->dead >> p & 1))
			mark_dead(n, p, "silent: no lease traffic", false);
	}
	s = lease_fenced(n);
	for (p = 0; s && p < n->nodes; p++) {
		if ((s >> p & 1) && !(n->m->dead >> p & 1))
			mark_dead(n, p, "it fenced itself (a view without quorum)", false);
	}
}

/* pump - take fabric events and control messages for up to @timeout_ms. */
void memb_pump(struct coh_node *n, int timeout_ms)
{
	struct coh_wc wc[16];
	int i, k;

	take_events(n);
	k = coh_cq_wait(n->m->cq, wc, 16, timeout_ms);
	for (i = 0; i < k; i++) {
		uint32_t p = (uint32_t)(wc[i].wr_id >> 32) & 0xffff, slot = (uint32_t)wc[i].wr_id;
		struct ctl_msg m;

		if (wc[i].opcode != COH_WC_RECV || wc[i].status || p >= n->nodes ||
		    (uint16_t)(wc[i].wr_id >> 48) != n->m->conn_gen[p])
			continue;
		if (ctl_decode((uint8_t *)coh_mr_addr(n->m->buf) +
				   ((size_t)p * CTL_RECVS + slot) * CTL_MSG_SIZE,
			       wc[i].byte_len, n->nodes, &m) ||
		    m.from != p) {
			COH_LOG_WARN("node %u: malformed control message from %u dropped", n->me,
				     p);
		} else if (m.type == CTL_VIEW) {
			n->m->view_epoch[p] = m.epoch;
			n->m->view_members[p] = m.members;
			n->m->view_cepoch[p] = m.cepoch;
			n->m->view_cmembers[p] = m.cmembers;
		} else if (m.type == CTL_FLUSHED) {
			n->m->flushed[p] = m.epoch;
			n->m->hosts_of[p] = m.aux;
		} else if (m.type == CTL_READY) {
			n->m->ready[p] = m.epoch;
		} else if (m.type == CTL_QUIESCED) {
			n->m->quiesced[p] = m.epoch;
		} else if (m.type == CTL_CLEARED) {
			n->m->cleared[p] = m.epoch;
		} else if (m.type == CTL_ZEROED) {
			n->m->zeroed[p] = m.epoch;
		} else if (m.type == CTL_DESC) {
			n->m->desc[p] = m.desc;
			n->m->desc_epoch[p] = m.epoch;
		} else if (m.type == CTL_CDESC) {
			n->m->cdesc[p][m.idx] = m.desc;
			n->m->cdesc_epoch[p][m.idx] = m.epoch;
		} else if (m.type == CTL_STATE) {
			struct node_state *s = &n->m->said[p];

			s->prepared_epoch = m.epoch;
			s->prepared_members = m.members;
			s->committed_epoch = m.cepoch;
			s->committed_members = m.cmembers;
			s->log_gen = m.aux;
			s->clean = m.idx != 0;
			s->elem_missing = ctl_word(&m, 1);
			n->m->said_state |= 1u << p;
			n->m->said_tag[p] = ctl_tag(&m);
			n->m->copies[p] = n->m->copies_next[p];
			n->m->copies_next[p] = 0;
		} else if (m.type == CTL_COPY && m.cepoch < n->nodes) {
			n->m->copy_gen[p][m.cepoch] = m.epoch;
			n->m->copy_live[p][m.cepoch] = m.aux;
			n->m->copy_bad[p][m.cepoch] = ctl_tag(&m);
			n->m->copies_next[p] |= 1u << m.cepoch;
		} else if (m.type == CTL_RECOVERED) {
			n->m->recovered[p] = m.epoch;
		} else if (m.type == CTL_RZEROED) {
			n->m->rzeroed[p] = m.epoch;
		} else if (m.type == CTL_HELLO) {
			n->m->hello_epoch[p] = m.epoch;
			n->m->hello_members[p] = m.members;
			n->m->hello_seen |= 1u << p;
		} else if (m.type == CTL_JOIN) {
			n->m->joiners |= 1u << p;
		} else if (m.type == CTL_FORM) {
			n->m->form_epoch[p] = m.epoch;
			n->m->form_members[p] = m.members;
		} else if (m.type == CTL_DRAIN) {
			n->m->drain_asked |= 1u << p;
			n->m->drain_epoch[p] = m.epoch;
			if (m.idx == 1)
				n->m->drain_stop |= 1u << p;
		} else if (m.type == CTL_DRAINED) {
			n->m->drained[p] = m.epoch;
		} else if (m.type == CTL_BYE) {
			n->m->bye |= 1u << p;
			mark_dead(n, p, "goodbye", true);
		} else if (m.type == CTL_ELEM) {
			/* What it finds missing, it has; marked here in memb_elems, then
			 * acknowledged. */
			n->m->elem_said[p] |= m.aux;
			n->m->elem_acked[p] |= m.aux;
			n->m->elem_asked |= 1u << p;
		} else if (m.type == CTL_ELEM_ACK) {
			n->m->elem_acked[p] |= m.aux;
		}
		if (post_recv(n, p, slot))
			COH_LOG_WARN("node %u: re-arming control receive from %u failed", n->me, p);
	}
	take_events(n);
}

/* Log regions. */

static int host_regions(struct coh_node *n)
{
	uint32_t p, mode = COH_PERSIST_PMEM;
	char path[sizeof(n->log_dir) + 64];
	int ret;

	for (p = 0; p < n->nodes; p++) {
		if (p == n->me)
			continue;
		/* Mapped with libpmem2: on a DAX file system or device the log survives power
		 * loss; elsewhere it survives the writer's death (and, on a disk, the host's once
		 * flushed). The weakest region sets the node's stated guarantee. */
		if (n->log_dir[0])
			snprintf(path, sizeof(path), "%s/rlog-%u-from-%u", n->log_dir, n->me, p);
		ret = coh_mr_new_pmem(n->fab, n->log_dir[0] ? path : NULL, n->log_bytes,
				      COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ |
					  COH_ACCESS_REMOTE_FLUSH,
				      &n->host[p]);
		if (ret) {
			COH_LOG_ERR("node %u: log region for node %u: %s", n->me, p,
				    coh_strerror(ret));
			return ret;
		}
		/* A region kept from an earlier run may hold acknowledged writes: the recovery at
		 * open (recovery.c) replays it, or finds it stale, before anything zeroes it. */
		if ((uint32_t)coh_mr_persistence(n->host[p]) < mode)
			mode = (uint32_t)coh_mr_persistence(n->host[p]);
	}
	n->log_persistence = mode;
	return 0;
}

/* wait_until - pump until @done says so, a member of @members dies (-EAGAIN), a newer view is
 * proposed (-EAGAIN), or the bound passes (-ETIMEDOUT). */
int memb_wait_until(struct coh_node *n, uint32_t epoch, uint32_t members,
		    bool (*done)(struct coh_node *n, uint32_t epoch, uint32_t members),
		    uint64_t bound_ms)
{
	uint64_t deadline = node_now_ns() + bound_ms * 1000000ull;
	uint32_t p;

	for (;;) {
		if (done(n, epoch, members))
			return 0;
		if (n->m->dead & members)
			return -EAGAIN;
		for (p = 0; p < n->nodes; p++) {
			if ((members >> p & 1) && n->m->view_epoch[p] > epoch)
				return -EAGAIN;
		}
		if (node_now_ns() >= deadline || atomic_load(&n->m->stop))
			return -ETIMEDOUT;
		memb_pump(n, 5);
	}
}

uint32_t memb_others(const struct coh_node *n, uint32_t members)
{
	return members & ~(1u << n->me);
}

/* all_reached - every other member's last word of one kind (@said, by node) is at @epoch:
 * exactly for descriptors (they belong to one epoch), at least for the barriers. */
bool memb_all_reached(struct coh_node *n, const uint32_t *said, uint32_t epoch, uint32_t members,
		      bool exact)
{
	uint32_t p, o = memb_others(n, members);

	for (p = 0; p < n->nodes; p++) {
		if ((o >> p & 1) && (exact ? said[p] != epoch : said[p] < epoch))
			return false;
	}
	return true;
}

/*
 * agree - propose (@epoch, @members) until every member proposes the same. Returns 0 with the
 * agreed view in *epoch, *members (at once, without agreement, when the view has no majority
 * or no place for this node any more: the caller stops serving), or -ESHUTDOWN.
 */
int memb_agree(struct coh_node *n, uint32_t *epoch, uint32_t *members)
{
	uint64_t deadline = node_now_ns() + (uint64_t)n->timeout_ms * 3 * 1000000ull;
	uint32_t E = *epoch, P = *members & ~n->m->dead, p;
	bool sent = false;

	for (;;) {
		bool all = true;

		if (atomic_load(&n->m->stop))
			return -ESHUTDOWN;
		if (P & n->m->dead) {
			P &= ~n->m->dead;
			E++;
			sent = false;
		}
		for (p = 0; p < n->nodes; p++) {
			uint32_t pe = n->m->view_epoch[p], pm = n->m->view_members[p];

			if (!(memb_others(n, P) >> p & 1) || pe < E)
				continue;
			if (pe > E || pm != P) {
				uint32_t np = P & pm;

				E = np != P ? (pe > E ? pe : E) + 1 : pe;
				P = np;
				sent = false;
			}
		}
		/* P only shrinks: once it has no majority, or a member's view has left this node
		 * out, no agreement can serve. Say so now (the caller stops serving): waiting for
		 * members that went on without this node only ended when they left (a node paused
		 * past the failure detector, resumed in a view change of its own, each member's
		 * newer view starting the wait again). */
		if (!(P >> n->me & 1) || !node_majority(n, P)) {
			*epoch = E;
			*members = P;
			return 0;
		}
		if (!sent) {
			struct ctl_msg m = { .type = CTL_VIEW, .epoch = E, .members = P };

			pthread_mutex_lock(&n->state_lock);
			m.cepoch = n->epoch;
			m.cmembers = n->members;
			pthread_mutex_unlock(&n->state_lock);
			for (p = 0; p < n->nodes; p++) {
				if (memb_others(n, P) >> p & 1)
					memb_send(n, p, &m);
			}
			sent = true;
			deadline = node_now_ns() + (uint64_t)n->timeout_ms * 3 * 1000000ull;
		}
		for (p = 0; p < n->nodes; p++) {
			if ((memb_others(n, P) >> p & 1) &&
			    (n->m->view_epoch[p] != E || n->m->view_members[p] != P))
				all = false;
		}
		if (all) {
			*epoch = E;
			*members = P;
			return 0;
		}
		if (node_now_ns() >= deadline) {
			/* Silent members are left out: if they are alive but cut off, they are
			 * the minority side, and fence themselves. */
			for (p = 0; p < n->nodes; p++) {
				if ((memb_others(n, P) >> p & 1) && n->m->view_epoch[p] != E)
					mark_dead(n, p, "silent during the view change", false);
			}
			continue;
		}
		memb_pump(n, 5);
	}
}

/* Connections. */

void memb_forget(struct coh_node *n, uint32_t p)
{
	coh_ep_delete(&n->m->ep[p]);
	n->m->conn &= ~(1u << p);
	n->m->hello_seen &= ~(1u << p);
	n->m->hello_epoch[p] = 0;
	n->m->hello_members[p] = 0;
	n->m->joiners &= ~(1u << p);
	n->m->join_asked &= ~(1u << p);
	n->m->said_state &= ~(1u << p);
}

void memb_hello(struct coh_node *n, uint32_t to)
{
	uint32_t p;

	memb_tell(n, to);
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_HELLO };

		if (!(memb_others(n, to) >> p & 1))
			continue;
		/* The epoch even when not serving (a view without a majority still used its
		 * number: a formation must be above it); members only when serving. */
		pthread_mutex_lock(&n->state_lock);
		m.epoch = n->epoch;
		m.members = n->quorum ? n->members : 0;
		pthread_mutex_unlock(&n->state_lock);
		memb_send(n, p, &m);
	}
}

void memb_hello_stopped(struct coh_node *n)
{
	uint32_t p, e;

	pthread_mutex_lock(&n->state_lock);
	e = n->epoch;
	pthread_mutex_unlock(&n->state_lock);
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_HELLO, .epoch = e }; /* no members: serving none */

		if (memb_others(n, n->m->conn) >> p & 1)
			memb_send(n, p, &m);
	}
}

int memb_connect(struct coh_node *n, uint32_t p, int timeout_ms)
{
	struct coh_ep_attr a = { .peer = p,
				 .channel = CH_CTL,
				 .send_cq = n->m->cq,
				 .recv_cq = n->m->cq,
				 .max_send_wr = 8,
				 .max_recv_wr = CTL_RECVS,
				 .max_msg_size = CTL_MSG_SIZE,
				 .timeout_ms = (uint32_t)timeout_ms };
	uint32_t s;
	int ret;

	if (n->m->ep[p]) {
		if (coh_ep_is_up(n->m->ep[p])) {
			/* Still there (it was only silent, or this node was): tell it again. */
			if (!(n->m->conn >> p & 1)) {
				n->m->conn |= 1u << p;
				memb_hello(n, 1u << p);
			}
			return 0;
		}
		memb_forget(n, p);
	}
	ret = coh_ep_new(n->fab, &a, &n->m->ep[p]);
	if (ret)
		return ret;
	n->m->conn_gen[p]++;
	for (s = 0; s < CTL_RECVS && !ret; s++)
		ret = post_recv(n, p, s);
	if (ret) {
		memb_forget(n, p);
		return ret;
	}
	n->m->conn |= 1u << p;
	/* A node this one serves with is dead until the view change takes it out; any other that
	 * answers is alive, whatever an earlier incarnation did. */
	if (!n->quorum || !(n->members >> p & 1)) {
		n->m->dead &= ~(1u << p);
		n->m->proven &= ~(1u << p);
		n->m->bye &= ~(1u << p);
	}
	COH_LOG_INFO("node %u: connected to node %u", n->me, p);
	memb_hello(n, 1u << p);
	return 0;
}

/*
 * memb_connect_some - try the configured nodes this node has no control connection to. While it
 * serves, only those outside its view, briefly and now and then (a node that restarts finds its
 * way in when one of these meets its own, longer, attempts); while it forms, all of them, each
 * for a while.
 */
static uint64_t memb_jitter(struct coh_node *n)
{
	uint64_t *s = &n->m->jitter;

	if (!*s)
		*s = node_now_ns() * 0x9e3779b97f4a7c15ull + n->me + 1;
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * memb_connect_wait - how long to wait for @p's handshake. A handshake cut off part way fails on
 * both sides, so two nodes whose waits are both shorter than one handshake keep missing each
 * other (on soft-RoCE under a busy machine one took more than 200 ms). Each timeout in a row
 * doubles the next wait, up to four times the first; a connection resets it. While it serves, a
 * node waits briefly (10 ms at first), since its membership thread answers nothing meanwhile;
 * while it forms, longer and at random (50-200 ms at first), so that two present nodes'
 * attempts soon come together. The rdma provider also lets a handshake under way finish.
 */
static int memb_connect_wait(struct coh_node *n, uint32_t p, bool serving)
{
	uint32_t slow = n->m->conn_slow[p] < 2 ? n->m->conn_slow[p] : 2;

	if (serving)
		return 10 << slow;
	return (50 + (int)(memb_jitter(n) % 150)) << slow;
}

static void memb_connect_some(struct coh_node *n)
{
	uint32_t all = (uint32_t)((1ull << n->nodes) - 1), targets = memb_others(n, all), p;
	bool serving = n->quorum;
	int ret;

	if (serving)
		targets &= ~n->members;
	for (p = 0; p < n->nodes && !atomic_load(&n->m->stop); p++) {
		if (!(targets >> p & 1) || node_now_ns() < n->m->next_try_ns[p])
			continue;
		if ((n->m->conn >> p & 1) && n->m->ep[p] && coh_ep_is_up(n->m->ep[p]))
			continue;
		ret = memb_connect(n, p, memb_connect_wait(n, p, serving));
		if (!ret) {
			n->m->conn_slow[p] = 0;
		} else {
			n->m->next_try_ns[p] = node_now_ns() + (serving ? 200000000ull : 0);
			if (ret == -ETIMEDOUT && n->m->conn_slow[p] < UINT8_MAX)
				n->m->conn_slow[p]++;
		}
		memb_pump(n, 0);
	}
}

/* memb_stop_here - this node stops serving for good (a cluster stop): its cache goes (its dirty
 * blocks destaged, its locks released), its lease thread stops, and it records a clean stop. */
static int memb_stop_here(struct coh_node *n)
{
	int ret = 0, r;

	pthread_rwlock_wrlock(&n->io);
	if (n->cache)
		ret = coh_cache_close(&n->cache);
	pthread_mutex_lock(&n->state_lock);
	n->quorum = false;
	__atomic_store_n(&n->stopped, true, __ATOMIC_RELEASE); /* read unlocked too: io.c */
	__atomic_add_fetch(&n->progress, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
	pthread_rwlock_unlock(&n->io);
	lease_stop(n);
	lease_drop(n);
	memb_set_lease_members(n, 0);
	if (!ret && !rlog_live_count(&n->w)) {
		n->st.clean = true;
		r = node_state_store(n, &n->st);
		if (r)
			ret = r;
	}
	COH_LOG_INFO("node %u: stopped with the cluster: %s", n->me,
		     ret ? coh_strerror(ret) : "everything destaged");
	return ret;
}

/* memb_drain - other nodes asked this one to destage before they leave (CTL_DRAIN): do it and
 * say so. With the I/O lock, between operations. A cluster stop also stops this node. */
static void memb_drain(struct coh_node *n)
{
	uint32_t asked = n->m->drain_asked, p;
	int ret = 0;

	n->m->drain_asked = 0;
	pthread_rwlock_wrlock(&n->io);
	if (n->cache)
		ret = node_cache_flush(n);
	pthread_rwlock_unlock(&n->io);
	if (!ret && (n->m->drain_stop & asked))
		ret = memb_stop_here(n);
	n->m->drain_stop &= ~asked;
	if (ret)
		COH_LOG_WARN("node %u: destage asked by a node that leaves: %s", n->me,
			     coh_strerror(ret));
	for (p = 0; !ret && p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_DRAINED, .epoch = n->m->drain_epoch[p] };

		if (asked >> p & 1)
			memb_send(n, p, &m);
	}
}

/* memb_leave_wait - until every node of @others has destaged (CTL_DRAINED), is leaving itself
 * (it asked us to drain: it destaged before it asked), or is gone; answering the nodes that ask
 * this one meanwhile (it has destaged already). -ETIMEDOUT after three timeouts. */
static int memb_leave_wait(struct coh_node *n, uint32_t E, uint32_t others)
{
	uint64_t deadline = node_now_ns() + 3ull * n->timeout_ms * 1000000ull;
	uint32_t p, done;

	for (;;) {
		for (p = 0; p < n->nodes; p++) {
			struct ctl_msg m = { .type = CTL_DRAINED, .epoch = n->m->drain_epoch[p] };

			if (n->m->drain_asked >> p & 1)
				memb_send(n, p, &m);
		}
		n->m->drain_asked = 0;
		done = n->m->dead | n->m->bye;
		for (p = 0; p < n->nodes; p++) {
			/* A member that proposes a newer view is in a view change (someone else
			 * left or died) and will not drain before it ends, which waits for this
			 * node's answer: waiting here would make it take this node for dead and
			 * fence it. Its writes are in its log copies, as after a timeout here. */
			if (n->m->drained[p] >= E || n->m->drain_epoch[p] >= E ||
			    n->m->view_epoch[p] > E)
				done |= 1u << p;
		}
		if (!(others & ~done))
			return 0;
		if (node_now_ns() >= deadline || atomic_load(&n->m->stop))
			return -ETIMEDOUT;
		memb_pump(n, 5);
	}
}

/*
 * memb_leave - an orderly leave (coh_node_close). While this node still counts for a majority:
 * destage what it holds, ask every other member to destage what they hold (CTL_DRAIN; bounded:
 * a member that does not answer keeps its data in its log copies, which a recovery replays), let
 * the cache go (locks released), say goodbye, and record that this node left cleanly. So a
 * shutdown of the whole cluster in any order leaves the elements complete: after the close that
 * ends the majority, the nodes left can acknowledge nothing more, and hold nothing not destaged.
 * A node that serves nothing leaves with nothing to destage (what it acknowledged is in copies).
 */
static void memb_elems(struct coh_node *n);

static int memb_leave(struct coh_node *n)
{
	uint32_t E = n->epoch, others = memb_others(n, n->members & ~n->m->dead), p;
	uint64_t until = node_now_ns() + (uint64_t)n->timeout_ms * 1000000ull;
	int ret = 0, r;

	/* The close gives the locks back, and the others then read the group without asking
	 * this node: first they must know what it found missing (memb_elems), bounded. Past the
	 * bound the locks are kept (below), for the view change to take over. */
	while (n->raid && atomic_load(&n->elem_unacked) && node_now_ns() < until &&
	       !atomic_load(&n->m->stop)) {
		memb_pump(n, 5);
		memb_elems(n);
	}
	if (n->quorum && n->cache) {
		pthread_rwlock_wrlock(&n->io);
		ret = node_cache_flush(n);
		pthread_rwlock_unlock(&n->io);
		for (p = 0; !ret && p < n->nodes; p++) {
			struct ctl_msg m = { .type = CTL_DRAIN, .epoch = E };

			if (others >> p & 1)
				memb_send(n, p, &m);
		}
		if (!ret && others && memb_leave_wait(n, E, others))
			COH_LOG_WARN(
			    "node %u: leaving: not every member destaged (their log copies "
			    "keep it)",
			    n->me);
		pthread_rwlock_wrlock(&n->io);
		if (!ret && atomic_load(&n->elem_unacked)) {
			/* A member may not know an element is missing: given back, a lock would
			 * let it read what this node wrote around the element. */
			COH_LOG_WARN("node %u: leaving before every member knows the missing "
				     "elements %#x: the locks kept for the others to take over",
				     n->me, coh_raid_missing(n->raid));
			ret = -ETIMEDOUT;
		}
		if (ret) {
			/* The log's peers may be leaving too: destage without them rather than not
			 * at all (this node is not dying). The records stay live on the peers, so
			 * no lock is given back: the others take them over with this node's log
			 * (a view change), and a replay of a copy writes what the destage wrote,
			 * with nobody having written since. Given back, another node's write to
			 * one of the blocks could be lost to a replay of the older record. */
			COH_LOG_WARN("node %u: destage at close: %s; again without log peers, "
				     "the locks kept for the others to take over",
				     n->me, coh_strerror(ret));
			pthread_mutex_lock(&n->w.lock);
			n->w.peers = 0;
			pthread_mutex_unlock(&n->w.lock);
			if (coh_cache_flush(n->cache))
				COH_LOG_ERR(
				    "node %u: destage without log peers failed too; what it "
				    "acknowledged is in its log copies",
				    n->me);
			coh_cache_abandon(&n->cache);
		} else {
			ret = coh_cache_close(&n->cache);
			if (ret)
				COH_LOG_ERR(
				    "node %u: destage at close: %s; what it acknowledged is "
				    "in its log copies, its locks kept for the others",
				    n->me, coh_strerror(ret));
		}
		pthread_rwlock_unlock(&n->io);
	}
	memb_broadcast(n, memb_others(n, n->m->conn), CTL_BYE, n->epoch, n->members);
	if (!ret && !rlog_live_count(&n->w)) {
		n->st.clean = true;
		r = node_state_store(n, &n->st);
		if (r && !ret)
			ret = r;
	}
	return ret;
}

/*
 * memb_stop_cluster - the ordered stop of the whole cluster (coh_node_stop_cluster): every other
 * member is asked to destage and stop (CTL_DRAIN with the stop flag), this node does the same,
 * and the stop is done when every member has answered, or is gone, within three timeouts.
 */
int memb_stop_cluster(struct coh_node *n, int timeout_ms)
{
	uint32_t E = n->epoch, others = memb_others(n, n->members & ~n->m->dead), p;
	int ret, r;

	(void)timeout_ms;
	if (!n->quorum)
		return -EROFS;
	COH_LOG_INFO("node %u: stopping the cluster (epoch %u, members %#x)", n->me, E, n->members);
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_DRAIN, .idx = 1, .epoch = E };

		if (others >> p & 1)
			memb_send(n, p, &m);
	}
	pthread_rwlock_wrlock(&n->io);
	ret = n->cache ? node_cache_flush(n) : 0;
	pthread_rwlock_unlock(&n->io);
	r = memb_leave_wait(n, E, others);
	if (!ret)
		ret = r;
	r = memb_stop_here(n);
	return ret ? ret : r;
}

/*
 * memb_elems - one element missing anywhere is missing everywhere. A node that finds an element
 * missing (an I/O error: maybe only its own path to it) writes around it from then on, and a node
 * that still reads it would read data those writes no longer put there, or compute parity from
 * it. So: the elements the others say they miss are marked missing here, and acknowledged; this
 * node's own set is persisted (the state file: a restart keeps it) and told to every member until
 * each has acknowledged it; until then no lock leaves this node (node_hold_locks), so no member
 * reads what it wrote degraded before it knows. A formation exchanges the sets too
 * (recovery.c). Membership thread.
 */
void memb_elems_take(struct coh_node *n, uint32_t from, uint32_t set)
{
	uint32_t e;

	for (e = 0; e < 32; e++) {
		if ((set >> e & 1) && !(coh_raid_missing(n->raid) >> e & 1)) {
			COH_LOG_ERR("node %u: node %u has element %u missing: missing here too",
				    n->me, from, e);
			coh_raid_fail_element(n->raid, e);
		}
	}
}

static void memb_elems(struct coh_node *n)
{
	uint32_t miss, asked = n->m->elem_asked, p, others, pending = 0, g;
	uint64_t now = node_now_ns() / 1000000ull;

	g = atomic_load(&n->elem_gen);
	for (p = 0; p < n->nodes; p++) {
		if (asked >> p & 1)
			memb_elems_take(n, p, n->m->elem_said[p]);
	}
	miss = coh_raid_missing(n->raid);
	if (miss != n->st.elem_missing &&
	    node_persist(n, n->st.prepared_epoch, n->st.prepared_members, false))
		COH_LOG_ERR("node %u: the missing elements %#x not on record", n->me, miss);
	n->m->elem_asked = 0;
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_ELEM_ACK, .epoch = n->epoch, .aux = miss };

		if (asked >> p & 1)
			memb_send(n, p, &m);
	}
	if (!miss)
		return;
	others = n->members & ~n->m->dead & ~(1u << n->me);
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_ELEM, .epoch = n->epoch, .aux = miss };

		if (!(others >> p & 1) || (n->m->elem_acked[p] & miss) == miss)
			continue;
		pending |= 1u << p;
		if (now >= n->m->elem_next_ms[p]) {
			memb_send(n, p, &m);
			n->m->elem_next_ms[p] = now + 50;
		}
	}
	/* Every member has it: locks may leave again, unless another element went missing
	 * meanwhile (its hook set the flag again after @g was read). */
	if (!pending && atomic_load(&n->elem_unacked)) {
		atomic_store(&n->elem_unacked, false);
		if (atomic_load(&n->elem_gen) != g)
			atomic_store(&n->elem_unacked, true);
		else
			COH_LOG_INFO("node %u: every member has elements %#x missing too", n->me,
				     miss);
	}
}

static void *memb_main(void *arg)
{
	struct coh_node *n = arg;

	while (!atomic_load(&n->m->stop)) {
		if (atomic_load(&n->m->leave_req)) {
			int ret = memb_leave(n);

			pthread_mutex_lock(&n->state_lock);
			n->m->leave_ret = ret;
			n->m->left = true;
			n->quorum = false;
			pthread_cond_broadcast(&n->view_cond);
			pthread_mutex_unlock(&n->state_lock);
			break;
		}
		memb_pump(n, 20);
		memb_connect_some(n);
		if (n->raid)
			memb_elems(n);
		if (lease_excluded(n) && n->quorum) {
			/* The others went on without this node (it was paused, or cut off): whatever
			 * it holds is theirs now. It stops serving (its lease has lapsed already) for
			 * good: this incarnation is fenced. coh_node_stats says so (excluded_epoch),
			 * and its owner closes it and opens it again, which rejoins as a restart. */
			view_stop_excluded(n);
			continue;
		}
		if ((n->m->dead & n->members) && n->quorum) {
			view_change(n);
			continue;
		}
		if (n->m->drain_asked)
			memb_drain(n);
		if (atomic_load(&n->m->stop_req)) {
			int ret = memb_stop_cluster(n, 0);

			atomic_store(&n->m->stop_req, false);
			pthread_mutex_lock(&n->state_lock);
			n->m->stop_ret = ret;
			n->m->stop_done = true;
			pthread_cond_broadcast(&n->view_cond);
			pthread_mutex_unlock(&n->state_lock);
		}
		if (!n->stopped)
			form_step(n);
	}
	return NULL;
}

/* Setup. */

static int ctl_queues(struct coh_node *n)
{
	int ret;

	ret = coh_cq_new(n->fab, n->nodes * (CTL_RECVS + 8) + 16, &n->m->cq);
	if (ret)
		return ret;
	return coh_mr_new(n->fab, send_off(n) + CTL_MSG_SIZE, COH_ACCESS_LOCAL_WRITE, &n->m->buf);
}

int membership_init(struct coh_node *n)
{
	struct coh_fabric_info info;
	bool found;
	int ret;

	n->m = calloc(1, sizeof(*n->m));
	if (!n->m)
		return -ENOMEM;
	if (!coh_fabric_query(n->fab, &info))
		n->m->peer_down_proven = info.peer_down_proven;
	memb_set_lease_members(n, 0);
	ret = node_state_load(n, &n->st, &found);
	/* Elements found missing in an earlier life stay missing (a replaced one needs a
	 * rebuild, which the group does not do). */
	if (!ret)
		memb_elems_take(n, n->me, n->st.elem_missing);
	if (!ret)
		ret = host_regions(n);
	if (!ret)
		ret = ctl_queues(n);
	if (!ret)
		ret = lease_init(n);
	if (ret) {
		COH_LOG_ERR("node %u: membership setup: %s", n->me, coh_strerror(ret));
		return ret;
	}
	pthread_mutex_lock(&n->state_lock);
	n->epoch = n->st.committed_epoch;
	n->members = 0;
	n->quorum = false;
	pthread_mutex_unlock(&n->state_lock);
	n->m->forming_since_ns = node_now_ns();
	if (found)
		COH_LOG_INFO("node %u: last prepared view %u (members %#x), committed %u; log "
			     "generation %u%s",
			     n->me, n->st.prepared_epoch, n->st.prepared_members,
			     n->st.committed_epoch, n->st.log_gen,
			     n->st.clean ? ", left cleanly" : "");
	ret = -pthread_create(&n->m->thread, NULL, memb_main, n);
	if (ret)
		return ret;
	n->m->started = true;
	return 0;
}

void membership_stop(struct coh_node *n)
{
	if (!n->m || !n->m->started)
		return;
	atomic_store(&n->m->stop, true);
	pthread_join(n->m->thread, NULL);
	n->m->started = false;
}

int membership_leave(struct coh_node *n)
{
	struct timespec until;
	int ret = 0;

	if (!n->m || !n->m->started)
		return 0;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 6 * (time_t)n->timeout_ms / 1000 + 1;
	atomic_store(&n->m->leave_req, true);
	pthread_mutex_lock(&n->state_lock);
	while (!n->m->left && !ret)
		ret = -pthread_cond_timedwait(&n->view_cond, &n->state_lock, &until);
	if (!ret)
		ret = n->m->leave_ret;
	pthread_mutex_unlock(&n->state_lock);
	return ret;
}

void membership_fini(struct coh_node *n)
{
	uint32_t p;

	if (!n->m)
		return;
	membership_stop(n);
	lease_fini(n);
	for (p = 0; p < NODE_MAX; p++)
		coh_ep_delete(&n->m->ep[p]);
	coh_mr_delete(&n->m->buf);
	coh_cq_delete(&n->m->cq);
	free(n->m);
	n->m = NULL;
}
