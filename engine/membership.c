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
#include <sched.h>
#include <isa-l/crc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cohort/log.h"
#include "node_internal.h"

#define CH_CTL 240u
#define CH_LOG 241u
#define CTL_RECVS 16u

struct memb {
	struct coh_cq *cq;
	struct coh_ep *ep[NODE_MAX];
	struct coh_mr *buf; /* receive slots per peer, then one send slot */
	pthread_t thread;
	bool started;
	_Atomic bool stop;
	/* what each peer said last */
	uint32_t view_epoch[NODE_MAX], view_members[NODE_MAX];
	uint32_t view_cepoch[NODE_MAX], view_cmembers[NODE_MAX]; /* its last committed view */
	uint32_t flushed[NODE_MAX], ready[NODE_MAX], cleared[NODE_MAX], zeroed[NODE_MAX];
	uint32_t hosts_of[NODE_MAX]; /* with FLUSHED: the dead writers whose log it holds */
	uint32_t desc_epoch[NODE_MAX];
	struct coh_mr_desc desc[NODE_MAX];
	uint32_t cdesc_epoch[NODE_MAX][COH_CACHE_DESCS];
	struct coh_mr_desc cdesc[NODE_MAX][COH_CACHE_DESCS];
	uint32_t dead;	 /* peers known gone (events, goodbyes, silence) */
	uint32_t bye;	 /* of which said goodbye (an orderly leave, not a failure) */
	uint32_t proven; /* of which are known to have stopped (their process is gone, or a bye) */
	uint32_t replayed; /* dead nodes whose takeover finished in a round of this view change */
	bool peer_down_proven; /* the fabric's PEER_DOWN says the process is gone */
	uint64_t down_ns;
};

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
				(uint64_t)p << 32 | slot);
}

/* ctl_send_msg - send @m to @p (bounded), unless @p is gone or a test's hook loses it. */
static void ctl_send_msg(struct coh_node *n, uint32_t p, struct ctl_msg *m)
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
	ctl_send_msg(n, p, &m);
}

static void broadcast(struct coh_node *n, uint32_t to, uint8_t type, uint32_t epoch,
		      uint32_t members)
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
static void set_lease_members(struct coh_node *n, uint32_t members)
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
	set_lease_members(n, __atomic_load_n(&n->lease_members, __ATOMIC_RELAXED) & ~(1u << p));
	COH_LOG_INFO("node %u: node %u is gone (%s)", n->me, p, why);
}

static void take_events(struct coh_node *n)
{
	struct coh_event ev;
	uint32_t s, p;

	while (coh_fabric_event_get(n->fab, &ev, 0) == 0) {
		if (ev.type == COH_EVENT_PEER_DOWN)
			mark_dead(n, ev.peer, "fabric", n->m->peer_down_proven);
	}
	s = lease_suspects(n);
	for (p = 0; s && p < n->nodes; p++) {
		if ((s >> p & 1) && !(n->m->dead >> p & 1))
			mark_dead(n, p, "silent: no lease traffic", false);
	}
}

/* pump - take fabric events and control messages for up to @timeout_ms. */
static void pump(struct coh_node *n, int timeout_ms)
{
	struct coh_wc wc[16];
	int i, k;

	take_events(n);
	k = coh_cq_wait(n->m->cq, wc, 16, timeout_ms);
	for (i = 0; i < k; i++) {
		uint32_t p = (uint32_t)(wc[i].wr_id >> 32), slot = (uint32_t)wc[i].wr_id;
		struct ctl_msg m;

		if (wc[i].opcode != COH_WC_RECV || wc[i].status)
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
		} else if (m.type == CTL_BYE) {
			n->m->bye |= 1u << p;
			mark_dead(n, p, "goodbye", true);
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
		/* A region kept from an earlier run holds nothing this cluster wrote. */
		memset(coh_mr_addr(n->host[p]), 0, n->log_bytes);
		if ((uint32_t)coh_mr_persistence(n->host[p]) < mode)
			mode = (uint32_t)coh_mr_persistence(n->host[p]);
	}
	n->log_persistence = mode;
	return 0;
}

/* send_descs - give each member writer the descriptor of the region hosted here for it. */
static int send_descs(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	uint32_t p;
	int ret;

	for (p = 0; p < n->nodes; p++) {
		struct coh_mr_desc d;

		if (p == n->me || !n->host[p] || !(members >> p & 1))
			continue;
		ret = coh_mr_export(n->host[p], &d);
		if (ret)
			return ret;
		ctl_send(n, p, CTL_DESC, epoch, members, &d);
	}
	return 0;
}

/* wait_until - pump until @done says so, a member of @members dies (-EAGAIN), a newer view is
 * proposed (-EAGAIN), or the bound passes (-ETIMEDOUT). */
static int wait_until(struct coh_node *n, uint32_t epoch, uint32_t members,
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
		pump(n, 5);
	}
}

static uint32_t others(const struct coh_node *n, uint32_t members)
{
	return members & ~(1u << n->me);
}

/* all_reached - every other member's last word of one kind (@said, by node) is at @epoch:
 * exactly for descriptors (they belong to one epoch), at least for the barriers. */
static bool all_reached(struct coh_node *n, const uint32_t *said, uint32_t epoch, uint32_t members,
			bool exact)
{
	uint32_t p, o = others(n, members);

	for (p = 0; p < n->nodes; p++) {
		if ((o >> p & 1) && (exact ? said[p] != epoch : said[p] < epoch))
			return false;
	}
	return true;
}

static bool all_descs(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return all_reached(n, n->m->desc_epoch, epoch, members, true);
}

static bool all_flushed(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return all_reached(n, n->m->flushed, epoch, members, false);
}

static bool all_ready(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return all_reached(n, n->m->ready, epoch, members, false);
}

static bool all_cleared(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return all_reached(n, n->m->cleared, epoch, members, false);
}

static bool all_zeroed(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return all_reached(n, n->m->zeroed, epoch, members, false);
}

/* all_cdescs - every other member's re-keyed cache descriptors of @epoch are in. */
static bool all_cdescs(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	uint32_t i;

	for (i = 0; i < COH_CACHE_DESCS; i++) {
		uint32_t said[NODE_MAX], p;

		for (p = 0; p < n->nodes; p++)
			said[p] = n->m->cdesc_epoch[p][i];
		if (!all_reached(n, said, epoch, members, true))
			return false;
	}
	return true;
}

/* import_descs - point the log writer at the regions the members host for it now. */
static int import_descs(struct coh_node *n, uint32_t members)
{
	uint32_t p;
	int ret;

	for (p = 0; p < n->nodes; p++) {
		if (p == n->me || !(members >> p & 1))
			continue;
		coh_rmr_delete(&n->w.rmr[p]);
		ret = coh_rmr_import(n->w.ep[p], &n->m->desc[p], &n->w.rmr[p]);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * agree - propose (@epoch, @members) until every member proposes the same. Returns 0 with the
 * agreed view in *epoch, *members, or -ETIMEDOUT / -ESHUTDOWN.
 */
static int agree(struct coh_node *n, uint32_t *epoch, uint32_t *members)
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

			if (!(others(n, P) >> p & 1) || pe < E)
				continue;
			if (pe > E || pm != P) {
				uint32_t np = P & pm;

				E = np != P ? (pe > E ? pe : E) + 1 : pe;
				P = np;
				sent = false;
			}
		}
		if (!sent) {
			struct ctl_msg m = { .type = CTL_VIEW, .epoch = E, .members = P };

			pthread_mutex_lock(&n->state_lock);
			m.cepoch = n->epoch;
			m.cmembers = n->members;
			pthread_mutex_unlock(&n->state_lock);
			for (p = 0; p < n->nodes; p++) {
				if (others(n, P) >> p & 1)
					ctl_send_msg(n, p, &m);
			}
			sent = true;
			deadline = node_now_ns() + (uint64_t)n->timeout_ms * 3 * 1000000ull;
		}
		for (p = 0; p < n->nodes; p++) {
			if ((others(n, P) >> p & 1) &&
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
				if ((others(n, P) >> p & 1) && n->m->view_epoch[p] != E)
					mark_dead(n, p, "silent during the view change", false);
			}
			continue;
		}
		pump(n, 5);
	}
}

/* Takeover. */

struct replay {
	struct coh_node *n;
	uint64_t *stripes;
	uint64_t count, cap, blocks, skipped;
};

static int add_stripe(struct replay *r, uint64_t s)
{
	if (r->count == r->cap) {
		uint64_t cap = r->cap ? r->cap * 2 : 64, *p;

		p = realloc(r->stripes, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		r->stripes = p;
		r->cap = cap;
	}
	r->stripes[r->count++] = s;
	return 0;
}

static int replay_visit(void *arg, const struct rlog_rec *rec, const uint8_t *payload)
{
	struct replay *r = arg;
	struct coh_node *n = r->n;
	int ret;

	/* rlog_scan visits only live DATA records. */
	if (rec->addr >= n->vol_blocks || rec->len != n->bsize) {
		COH_LOG_ERR("node %u: log record %llu names block %llu (%u bytes), outside the "
			    "volume: skipped",
			    n->me, (unsigned long long)rec->lsn, (unsigned long long)rec->addr,
			    rec->len);
		r->skipped++;
		return 0;
	}
	/* Replaying is writing the record's block again: the same bytes to the same place, so
	 * doing it twice (a second survivor after the first died) has the same effect. */
	ret = coh_raid_write(n->raid, rec->addr, 1, payload);
	if (ret)
		return ret;
	r->blocks++;
	return add_stripe(r, coh_raid_stripe_of(n->raid, rec->addr));
}

/* replay_step - a destage was in progress on @stripe: finish it (parity from the data). */
static int replay_step(void *arg, uint64_t stripe, uint8_t step)
{
	struct replay *r = arg;
	uint64_t stripes = (r->n->vol_blocks + r->n->stripe_blocks - 1) / r->n->stripe_blocks;

	(void)step;
	if (stripe >= stripes) {
		r->skipped++;
		return 0;
	}
	return add_stripe(r, stripe);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int node_replay(struct coh_node *n, uint32_t d, const uint8_t *region, size_t len)
{
	struct replay r = { .n = n };
	struct rlog_scan_stats st = { 0 };
	uint64_t i, repaired = 0;
	int ret;

	/* The replay writes the store: only a member may (a node the others have excluded has
	 * lost its lease by the time they take over). */
	if (n->lease && !node_lease_ok(n))
		return -EAGAIN;
	ret = rlog_scan(region, len, (uint16_t)d, replay_visit, &r, &st);
	if (!ret)
		ret = rlog_scan_steps(region, len, (uint16_t)d, replay_step, &r);
	if (!ret && r.count) {
		/* Then finish every stripe it was updating: recompute parity from the data. */
		qsort(r.stripes, r.count, sizeof(*r.stripes), cmp_u64);
		for (i = 0; i < r.count && !ret; i++) {
			if (i && r.stripes[i] == r.stripes[i - 1])
				continue;
			ret = coh_raid_stripe_repair(n->raid, r.stripes[i]);
			repaired++;
		}
	}
	free(r.stripes);
	/* The copies of this log are zeroed once every replay is done (barrier READY): what the
	 * replay wrote must be on the elements' media by then. */
	if (!ret)
		ret = coh_store_flush(n->vol);
	pthread_mutex_lock(&n->state_lock);
	n->replayed_blocks += r.blocks;
	n->repaired_stripes += repaired;
	n->corrupt_records += st.corrupt + r.skipped;
	n->torn_records += st.torn;
	pthread_mutex_unlock(&n->state_lock);
	COH_LOG_INFO("node %u: took over node %u: %llu blocks replayed, %llu stripes repaired, "
		     "%llu corrupt and %llu torn records left out: %s",
		     n->me, d, (unsigned long long)r.blocks, (unsigned long long)repaired,
		     (unsigned long long)(st.corrupt + r.skipped), (unsigned long long)st.torn,
		     coh_strerror(ret));
	return ret;
}

/* io_take - take the I/O lock for a view change step: the operation holding it may be waiting
 * for something only this view change brings, so ask it to let go. */
static void io_take(struct coh_node *n)
{
	if (n->cache)
		coh_cache_yield(n->cache, true);
	pthread_mutex_lock(&n->io);
	if (n->cache)
		coh_cache_yield(n->cache, false);
	n->io_since = node_now_ns();
}

/* io_give - let go of the I/O lock after a view change step, keeping the longest hold: how long
 * this node's own I/O was stopped by the view change at most (coh_node_stats). */
static void io_give(struct coh_node *n)
{
	uint64_t held = node_now_ns() - n->io_since;

	if (held > n->hold_max)
		n->hold_max = held;
	pthread_mutex_unlock(&n->io);
}

/* log_hosted - the dead writers in @gone whose log has a copy here: the region's header names
 * the writer. A copy that was zeroed (its takeover done) or never written has none. */
static uint32_t log_hosted(struct coh_node *n, uint32_t gone)
{
	uint32_t d, mine = 0, gen;
	uint64_t toff, tlsn;
	uint16_t w;

	for (d = 0; d < n->nodes; d++) {
		if ((gone >> d & 1) && n->host[d] &&
		    !rlog_region_hdr_decode(coh_mr_addr(n->host[d]), &w, &gen, &toff, &tlsn) &&
		    w == d)
			mine |= 1u << d;
	}
	return mine;
}

/* hosts_of - the survivors of @P that said (FLUSHED of this round) they hold a copy of @d's log,
 * this node included. */
static uint32_t hosts_of(struct coh_node *n, uint32_t P, uint32_t d)
{
	uint32_t p, hosts = 0;

	for (p = 0; p < n->nodes; p++) {
		if (!(P >> p & 1))
			continue;
		if (p == n->me ? (log_hosted(n, 1u << d) != 0) : (n->m->hosts_of[p] >> d & 1))
			hosts |= 1u << p;
	}
	return hosts;
}

/* takeover - for each node that left @old: race for its locks; if this node wins, replay its
 * log from the copy here. Called with the I/O lock not held (the replay is long; only the
 * directory steps take it). The candidates are the survivors whose copy of the log says it is
 * the dead node's (a writer that moved its log has its live copy where it moved it, whatever
 * the membership at the start of this view change says). */
static int takeover(struct coh_node *n, uint32_t old, uint32_t P, uint32_t E)
{
	uint32_t d, gone = old & ~P;
	int ret = 0, r;

	for (d = 0; d < n->nodes; d++) {
		uint32_t hosts;
		uint64_t taken = 0;
		bool won = false;

		if (!(gone >> d & 1))
			continue;
		hosts = n->k ? hosts_of(n, P, d) : 0;
		if (!hosts && n->k && !(n->m->replayed >> d & 1))
			COH_LOG_ERR("node %u: no survivor holds node %u's log: its acknowledged "
				    "writes not yet destaged are lost",
				    n->me, d);
		/* Nobody left to replay (or the replay was done in an earlier round of this view
		 * change and the copies zeroed): the survivors still race, so that someone frees
		 * the dead node's locks. */
		io_take(n);
		r = n->cache ? coh_cache_take_over(n->cache, d, hosts ? hosts : P, E, &won, &taken)
			     : -ESHUTDOWN;
		io_give(n);
		if (r)
			return r;
		if (!won)
			continue;
		COH_LOG_INFO("node %u: won node %u's %llu locks", n->me, d,
			     (unsigned long long)taken);
		node_point(n, COH_CRASH_VIEW_TAKEN, E);
		if (n->takeover_hook)
			n->takeover_hook(n->takeover_arg, d);
		if (hosts >> n->me & 1) {
			r = node_replay(n, d, coh_mr_addr(n->host[d]), n->log_bytes);
			if (r)
				return r;
			node_point(n, COH_CRASH_VIEW_REPLAY, E);
		}
		pthread_mutex_lock(&n->state_lock);
		n->takeovers++;
		n->last_takeover_ns = node_now_ns() - n->m->down_ns;
		pthread_mutex_unlock(&n->state_lock);
	}
	return ret;
}

/* relog - this node's log lost a peer: destage everything it holds dirty (retiring the records
 * on the peers left), then start the log afresh on the new peers. Only this node's I/O waits. */
static int relog(struct coh_node *n, uint32_t P, uint32_t E)
{
	uint32_t want = node_log_peers(n->nodes, P, n->me, n->k);
	int ret = 0;

	if (!n->k || n->w.peers == want)
		return 0;
	io_take(n);
	pthread_mutex_lock(&n->w.lock);
	n->w.peers &= P;
	pthread_mutex_unlock(&n->w.lock);
	if (n->cache)
		ret = coh_cache_flush(n->cache);
	if (!ret) {
		node_point(n, COH_CRASH_VIEW_RELOG, E);
		ret = rlog_writer_reset(&n->w, want, n->k, E);
	}
	io_give(n);
	if (!ret)
		node_point(n, COH_CRASH_VIEW_RELOGGED, E);
	return ret;
}

/*
 * fence_gone - make sure the nodes that left (@gone) have stopped before the survivors go past
 * the fence: those known stopped (their process is gone, or they said goodbye) need nothing; the
 * others are killed where the fabric can and the policy says so (COH_FENCE_AUTO), and otherwise,
 * or if no proof of their death comes within the timeout, every lease this node granted them is
 * outwaited. Bounded by the timeout plus the lease.
 */
static int fence_gone(struct coh_node *n, uint32_t gone, uint32_t P, uint32_t E)
{
	uint32_t unproven = gone & ~n->m->proven, p;
	uint64_t deadline, until;

	if (!unproven)
		return 0;
	if (n->fence == COH_FENCE_AUTO) {
		bool asked = false;

		for (p = 0; p < n->nodes; p++) {
			if ((unproven >> p & 1) && !coh_fabric_fence_peer(n->fab, p))
				asked = true;
		}
		deadline = node_now_ns() + (uint64_t)n->timeout_ms * 1000000ull;
		while (asked && (gone & ~n->m->proven) && node_now_ns() < deadline &&
		       !atomic_load(&n->m->stop)) {
			pump(n, 5);
			if (n->m->dead & P)
				return -EAGAIN;
		}
		unproven = gone & ~n->m->proven;
		if (!unproven)
			return 0;
	}
	until = lease_outwait_ns(n, unproven);
	if (until > node_now_ns())
		COH_LOG_INFO("node %u: view %u: outwaiting the leases of %#x (%llu ms)", n->me, E,
			     unproven, (unsigned long long)(until - node_now_ns()) / 1000000ull);
	while (node_now_ns() < until && !atomic_load(&n->m->stop)) {
		uint64_t left = (until - node_now_ns()) / 1000000ull + 1;

		pump(n, left < 5 ? (int)left : 5);
		if (n->m->dead & P)
			return -EAGAIN;
	}
	return 0;
}

/*
 * rekey - the fence itself: re-key this node's cache regions and the dead nodes' log regions it
 * hosts, give the survivors the new cache descriptors and take theirs (this exchange is the
 * barrier that makes everyone wait for every survivor's fence_gone), then fence the dead in the
 * cache: nothing more is sent to them and nothing waits for them. An excluded node that still
 * runs can touch none of these regions from here on. Returns 0, -EAGAIN (a death or a newer
 * view: again) or an error.
 */
static int rekey(struct coh_node *n, uint32_t old, uint32_t P, uint32_t E)
{
	struct coh_mr_desc d[COH_CACHE_DESCS];
	uint32_t gone = old & ~P, p, i;
	int ret;

	for (p = 0; p < n->nodes; p++) {
		if ((gone >> p & 1) && n->host[p] && (ret = coh_mr_rekey(n->host[p])))
			COH_LOG_WARN("node %u: re-keying node %u's log region: %s", n->me, p,
				     coh_strerror(ret));
	}
	io_take(n);
	ret = n->cache ? coh_cache_rekey(n->cache, d) : -ESHUTDOWN;
	io_give(n);
	if (ret)
		return ret;
	for (p = 0; p < n->nodes; p++) {
		if (!(others(n, P) >> p & 1))
			continue;
		for (i = 0; i < COH_CACHE_DESCS; i++) {
			struct ctl_msg m = { .type = CTL_CDESC,
					     .idx = (uint8_t)i,
					     .epoch = E,
					     .members = P,
					     .desc = d[i] };

			ctl_send_msg(n, p, &m);
		}
	}
	ret = wait_until(n, E, P, all_cdescs, 3ull * n->timeout_ms);
	if (ret)
		return ret == -ETIMEDOUT ? -EAGAIN : ret;
	io_take(n);
	ret = n->cache ? coh_cache_fence(n->cache, gone) : -ESHUTDOWN;
	for (p = 0; !ret && p < n->nodes; p++) {
		if (others(n, P) >> p & 1)
			ret = coh_cache_import(n->cache, p, n->m->cdesc[p]);
	}
	io_give(n);
	if (!ret)
		node_point(n, COH_CRASH_VIEW_FENCED, E);
	return ret;
}

/* zero_dead_logs - every dead node's log is replayed (barrier READY): its copies here go, so
 * that no later round, nor a later death, can replay it over what the survivors write next. */
static void zero_dead_logs(struct coh_node *n, uint32_t gone)
{
	uint32_t d;

	for (d = 0; d < n->nodes; d++) {
		if ((gone >> d & 1) && n->host[d])
			memset(coh_mr_addr(n->host[d]), 0, n->log_bytes);
	}
	n->m->replayed |= gone;
}

/* cache_step - one directory step of the view change, with the I/O lock held. */
static int cache_step(struct coh_node *n, int (*fn)(struct coh_cache *c))
{
	int ret;

	io_take(n);
	ret = n->cache ? fn(n->cache) : -ESHUTDOWN;
	io_give(n);
	return ret;
}

/* step_barrier - a directory step, then the barrier after it: tell the others this node has done
 * it and wait until they all have. FLUSHED also says whose dead logs this node holds. Returns 0,
 * the step's error, or 1 when the barrier did not close (a newer view, a death, or its bound). */
static int step_barrier(struct coh_node *n, int (*fn)(struct coh_cache *c), uint8_t type,
			bool (*all)(struct coh_node *n, uint32_t epoch, uint32_t members),
			uint32_t E, uint32_t P)
{
	int ret = cache_step(n, fn);
	uint32_t p;

	if (ret)
		return ret;
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = type, .epoch = E, .members = P };

		if (!(others(n, P) >> p & 1))
			continue;
		if (type == CTL_FLUSHED)
			m.aux = log_hosted(n, n->members & ~P);
		ctl_send_msg(n, p, &m);
	}
	return wait_until(n, E, P, all, 3ull * n->timeout_ms) ? 1 : 0;
}

static void progress(struct coh_node *n)
{
	pthread_mutex_lock(&n->state_lock);
	n->progress++;
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
}

void node_step_pause(void *arg)
{
	struct coh_node *n = arg;
	uint64_t taken = atomic_load(&n->io_taken), until;

	if (!atomic_load(&n->io_wanted))
		return;
	io_give(n);
	/* A mutex is not fair: taken again at once, it would stay here. Wait, bounded, until the
	 * operation has it; it runs to its end or, if it waits on the network, lets go when
	 * io_take asks. */
	until = node_now_ns() + 2000000;
	while (atomic_load(&n->io_taken) == taken && atomic_load(&n->io_wanted) &&
	       node_now_ns() < until)
		sched_yield();
	io_take(n);
	/* An operation that io_take made let go waits for the view change to move on: this is
	 * such a move, so it tries again now (and waits for the next pause on @io). */
	progress(n);
}

/* commit - the new view is in place: let I/O go (or, without @quorum, refuse it). */
static void commit(struct coh_node *n, uint32_t E, uint32_t P, bool quorum)
{
	pthread_mutex_lock(&n->state_lock);
	n->epoch = E;
	n->members = P;
	n->quorum = quorum;
	n->changing = false;
	n->progress++;
	n->view_changes++;
	n->last_view_ns = node_now_ns() - n->m->down_ns;
	n->last_view_hold_ns = n->hold_max;
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
	set_lease_members(n, quorum ? P & ~n->m->dead : 0);
	if (!quorum)
		lease_drop(n);
	node_point(n, COH_CRASH_VIEW_COMMITTED, E);
}

/* stop_serving - this node serves no more I/O: its cache goes, and view @E of members @P is put
 * in place without a quorum (operations get -EROFS). */
static void stop_serving(struct coh_node *n, uint32_t E, uint32_t P)
{
	io_take(n);
	coh_cache_abandon(&n->cache);
	commit(n, E, P, false);
	io_give(n);
}

/* leave - this node cannot finish its part: what it could not destage is in its log on its
 * peers, so it leaves and a survivor replays it. */
static void leave(struct coh_node *n, uint32_t E, uint32_t P, const char *what, int err)
{
	COH_LOG_ERR("node %u: %s in view change: %s; leaving the cluster", n->me, what,
		    coh_strerror(err));
	broadcast(n, others(n, P), CTL_BYE, E, P);
	stop_serving(n, E, 1u << n->me);
}

/* newest_commit - the newest view a member of @P says it committed, if newer than this node's
 * own: the member had every READY and ZEROED of that round, so this node did all its part of it
 * and only missed the end. */
static bool newest_commit(struct coh_node *n, uint32_t P, uint32_t *Ec, uint32_t *Pc, uint32_t *who)
{
	uint32_t p, mine;
	bool found = false;

	pthread_mutex_lock(&n->state_lock);
	mine = n->epoch;
	pthread_mutex_unlock(&n->state_lock);
	for (p = 0; p < n->nodes; p++) {
		if ((others(n, P) >> p & 1) && n->m->view_cepoch[p] > mine &&
		    (!found || n->m->view_cepoch[p] > *Ec)) {
			*Ec = n->m->view_cepoch[p];
			*Pc = n->m->view_cmembers[p];
			*who = p;
			found = true;
		}
	}
	return found;
}

/*
 * catch_up - commit view (@Ec, @Pc), which member @who committed while this node was still
 * waiting for its last barrier. The rebuilt words take effect here too and this node's taken
 * locks go, exactly as if its own barrier had closed; the dead of that round are finished (their
 * logs were replayed and zeroed everywhere before anyone committed). The caller goes on from
 * there with the deaths since.
 */
static int catch_up(struct coh_node *n, uint32_t Ec, uint32_t Pc, uint32_t who)
{
	int ret;

	COH_LOG_INFO("node %u: node %u committed view %u (members %#x) before this node saw its "
		     "last barrier: committing it here first",
		     n->me, who, Ec, Pc);
	/* Local only: the regions of the survivors may have been re-keyed since by a round this
	 * node has not reached; lost grants are adopted at the end of that round. */
	ret = cache_step(n, coh_cache_view_commit);
	if (ret)
		return ret;
	commit(n, Ec, Pc, true);
	return 0;
}

/* transient - a step failed because of another death or a newer view: start again. */
static bool transient(int ret)
{
	return ret == -EAGAIN || ret == -ESHUTDOWN || ret == -ECONNRESET || ret == -ETIMEDOUT ||
	       ret == -EACCES || ret == -ENOTCONN || ret == -EPIPE || ret == -EIO;
}

/*
 * view_change - the sequence in the file comment. Called by the membership thread. @old is the
 * committed view's members; a catch-up moves it on.
 */
static void view_change(struct coh_node *n)
{
	uint32_t old = n->members, E = n->epoch, P = old, round, Ec = 0, Pc = 0, who = 0;
	int ret;

	pthread_mutex_lock(&n->state_lock);
	n->changing = true;
	pthread_mutex_unlock(&n->state_lock);
	n->hold_max = 0;
	n->m->replayed = 0;
	COH_LOG_INFO("node %u: view change from epoch %u (members %#x, gone %#x)", n->me, E, old,
		     n->m->dead & old);
	for (round = 0; round < 4 * NODE_MAX; round++) {
		if (atomic_load(&n->m->stop))
			break;
		E++;
		P = old & ~n->m->dead;
		ret = agree(n, &E, &P);
		if (ret)
			break;
		node_point(n, COH_CRASH_VIEW_AGREED, E);
		if (newest_commit(n, P, &Ec, &Pc, &who)) {
			ret = catch_up(n, Ec, Pc, who);
			if (ret)
				goto again;
			old = Pc;
			n->m->replayed = 0;
			if (!(old & n->m->dead))
				return; /* nothing died since that view: it is this one */
			pthread_mutex_lock(&n->state_lock);
			n->changing = true;
			pthread_mutex_unlock(&n->state_lock);
			continue;
		}
		if ((uint32_t)__builtin_popcount(P) * 2 <= n->nodes) {
			/* Fenced: write nothing more to the shared storage. */
			/* The last nodes of a cluster shutting down get here too: not an error
			 * when everyone missing said goodbye. */
			COH_LOG_AT(n->m->dead & old & ~n->m->bye ? COH_LOG_LEVEL_ERR
								 : COH_LOG_LEVEL_INFO,
				   "node %u: view %u has %u of %u nodes, not a majority: this node "
				   "stops serving I/O",
				   n->me, E, __builtin_popcount(P), n->nodes);
			stop_serving(n, E, P);
			return;
		}
		ret = fence_gone(n, old & ~P, P, E);
		if (!ret)
			ret = rekey(n, old, P, E);
		if (ret)
			goto again;
		progress(n);
		ret = relog(n, P, E);
		if (ret) {
			/* A new peer of the log died while the log moved: another round moves it
			 * again, to peers that live. Only a failure with every peer alive is this
			 * node's own, and then it leaves rather than hold its writes up. */
			uint64_t until = node_now_ns() + (uint64_t)n->timeout_ms * 1000000ull;

			while (!(n->m->dead & P) && node_now_ns() < until &&
			       !atomic_load(&n->m->stop))
				pump(n, 5);
			if (n->m->dead & P)
				goto again;
			leave(n, E, P, "destage", ret);
			return;
		}
		progress(n);
		ret = step_barrier(n, coh_cache_rebuild_clear, CTL_CLEARED, all_cleared, E, P);
		if (!ret) {
			node_point(n, COH_CRASH_VIEW_CLEARED, E);
			ret = step_barrier(n, coh_cache_rebuild_claim, CTL_FLUSHED, all_flushed, E,
					   P);
		}
		if (ret > 0)
			continue; /* the barrier did not close: a newer view */
		if (ret)
			goto again;
		node_point(n, COH_CRASH_VIEW_CLAIMED, E);
		ret = takeover(n, old, P, E);
		if (ret) {
			if (!transient(ret))
				COH_LOG_ERR("node %u: takeover: %s", n->me, coh_strerror(ret));
			goto again;
		}
		broadcast(n, others(n, P), CTL_READY, E, P);
		node_point(n, COH_CRASH_VIEW_READY, E);
		if (wait_until(n, E, P, all_ready, 3ull * n->timeout_ms))
			continue;
		/* Every dead node's log is replayed and the group flushed: zero the copies here
		 * (they were re-keyed at the fence), and only then let anyone commit. */
		zero_dead_logs(n, old & ~P);
		node_point(n, COH_CRASH_VIEW_ZEROED, E);
		broadcast(n, others(n, P), CTL_ZEROED, E, P);
		if (wait_until(n, E, P, all_zeroed, 3ull * n->timeout_ms))
			continue;
		ret = cache_step(n, coh_cache_view_commit);
		if (!ret)
			ret = cache_step(n, coh_cache_adopt_lost);
		if (ret)
			goto again;
		commit(n, E, P, true);
		n->m->down_ns = 0;
		COH_LOG_INFO("node %u: epoch %u, members %#x", n->me, E, P);
		return;
	again:
		COH_LOG_WARN("node %u: view %u: %s; again", n->me, E, coh_strerror(ret));
	}
	COH_LOG_AT(n->m->dead & old & ~n->m->bye || !atomic_load(&n->m->stop) ? COH_LOG_LEVEL_ERR
									      : COH_LOG_LEVEL_INFO,
		   "node %u: view change did not finish: serving no I/O", n->me);
	stop_serving(n, E, old & ~n->m->dead);
}

static void *memb_main(void *arg)
{
	struct coh_node *n = arg;

	while (!atomic_load(&n->m->stop)) {
		pump(n, 20);
		if (lease_excluded(n) && n->quorum) {
			/* The others went on without this node (it was paused, or cut off): whatever
			 * it holds is theirs now. It stops serving; its lease has lapsed already. */
			COH_LOG_ERR("node %u: excluded from the cluster (view %u): serving no I/O",
				    n->me, lease_excluded(n));
			stop_serving(n, lease_excluded(n), 1u << n->me);
			continue;
		}
		if ((n->m->dead & n->members) && n->quorum)
			view_change(n);
	}
	return NULL;
}

/* Setup. */

static int ctl_mesh(struct coh_node *n)
{
	uint32_t p, s;
	int ret;

	ret = coh_cq_new(n->fab, n->nodes * (CTL_RECVS + 8) + 16, &n->m->cq);
	if (ret)
		return ret;
	ret = coh_mr_new(n->fab, send_off(n) + CTL_MSG_SIZE, COH_ACCESS_LOCAL_WRITE, &n->m->buf);
	if (ret)
		return ret;
	for (p = 0; p < n->nodes; p++) {
		struct coh_ep_attr a = { .peer = p,
					 .channel = CH_CTL,
					 .send_cq = n->m->cq,
					 .recv_cq = n->m->cq,
					 .max_send_wr = 8,
					 .max_recv_wr = CTL_RECVS,
					 .max_msg_size = CTL_MSG_SIZE,
					 .timeout_ms = n->timeout_ms };
		struct coh_ep_attr l = { .peer = p,
					 .channel = CH_LOG,
					 .send_cq = n->w.cq,
					 .recv_cq = n->w.cq,
					 .max_send_wr = 160,
					 .max_recv_wr = 1,
					 .max_msg_size = 64,
					 .timeout_ms = n->timeout_ms };

		if (p == n->me)
			continue;
		ret = coh_ep_new(n->fab, &a, &n->m->ep[p]);
		if (!ret)
			ret = coh_ep_new(n->fab, &l, &n->w.ep[p]);
		if (ret) {
			COH_LOG_ERR("node %u: connecting to node %u: %s", n->me, p,
				    coh_strerror(ret));
			return ret;
		}
		for (s = 0; s < CTL_RECVS && !ret; s++)
			ret = post_recv(n, p, s);
		if (ret)
			return ret;
	}
	return 0;
}

/* wait_lease - the first lease, before any I/O: bounded by the timeout. */
static int wait_lease(struct coh_node *n)
{
	uint64_t deadline = node_now_ns() + (uint64_t)n->timeout_ms * 1000000ull;

	while (!node_lease_ok(n)) {
		if (node_now_ns() >= deadline)
			return -ETIMEDOUT;
		pump(n, 1);
	}
	return 0;
}

int membership_init(struct coh_node *n)
{
	uint32_t all = (uint32_t)((1ull << n->nodes) - 1);
	struct coh_fabric_info info;
	int ret;

	n->m = calloc(1, sizeof(*n->m));
	if (!n->m)
		return -ENOMEM;
	if (!coh_fabric_query(n->fab, &info))
		n->m->peer_down_proven = info.peer_down_proven;
	set_lease_members(n, all);
	ret = host_regions(n);
	if (!ret)
		ret = ctl_mesh(n);
	if (!ret)
		ret = lease_init(n);
	if (!ret)
		ret = send_descs(n, 1, all);
	if (!ret)
		ret = wait_until(n, 1, all, all_descs, n->timeout_ms);
	if (!ret)
		ret = import_descs(n, all);
	if (!ret)
		ret = rlog_writer_reset(&n->w, node_log_peers(n->nodes, all, n->me, n->k), n->k, 1);
	if (ret) {
		COH_LOG_ERR("node %u: log setup: %s", n->me, coh_strerror(ret));
		return ret;
	}
	n->epoch = 1;
	n->members = all;
	n->quorum = true;
	ret = lease_start(n);
	if (!ret)
		ret = wait_lease(n);
	if (ret) {
		COH_LOG_ERR("node %u: no lease from a majority: %s", n->me, coh_strerror(ret));
		return ret;
	}
	ret = node_cache_open(n);
	if (ret)
		return ret;
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

int membership_goodbye(struct coh_node *n)
{
	if (!n->m)
		return 0;
	broadcast(n, others(n, n->members), CTL_BYE, n->epoch, n->members);
	return 0;
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
