/*
 * membership.c - the control plane of a node: the log regions it hosts and their exchange, the
 * membership thread, and the view change that follows a node's failure (PEER_DOWN from the
 * fabric, or a goodbye).
 *
 * A view change, on every survivor, while I/O to everything the dead did not hold goes on:
 *   1. agree: each node proposes (epoch, members) to the others until all members of the
 *      proposal propose the same. A proposal that differs, or a newer epoch, makes a node
 *      take the intersection of the member sets under a higher epoch, so the views converge
 *      (member sets only shrink, epochs only grow). Nodes that never answer are left out.
 *   2. quorum: a view without a majority of the configured nodes is fenced: the node drops its
 *      cache without writing anything and serves no I/O (its peers replay its log), so a
 *      minority never writes the shared storage (no split brain).
 *   3. fence the dead in the cache; a writer whose log lost a peer destages what it holds and
 *      starts its log afresh on its new peers (only its own I/O waits for that).
 *   4. rebuild the dead homes' directory words on the next members (clear, barrier CLEARED,
 *      claim, barrier FLUSHED).
 *   5. take over: for each dead node, the survivors holding a copy of its log race for its
 *      locks with one CAS (coh_cache_take_over); the winner, holding them, replays the live
 *      records from its copy and repairs the stripes it was updating; barrier READY.
 *   6. commit: the rebuilt words take effect and the taken locks are let go; every copy of the
 *      dead node's log is zeroed and re-keyed (the dead lose access).
 * Any failure or newer proposal during 3-6 starts again at 1 with a higher epoch; every step is
 * idempotent. The interface is messages and a member bitmap, so an external membership service
 * (corosync CPG) could drive the same steps.
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
	uint32_t flushed[NODE_MAX], ready[NODE_MAX], cleared[NODE_MAX], desc_epoch[NODE_MAX];
	struct coh_mr_desc desc[NODE_MAX];
	uint32_t dead; /* peers known gone (events, goodbyes, silence) */
	uint32_t bye;  /* of which said goodbye (an orderly leave, not a failure) */
	uint64_t down_ns;
};

/* Codec. Layout: magic 0, type 4, from 6, epoch 8, members 12, desc 16..63, crc 64 (of 0..63). */

void ctl_encode(const struct ctl_msg *m, uint8_t *b)
{
	uint32_t v;
	uint16_t f = htole16(m->from);

	memset(b, 0, CTL_MSG_SIZE);
	v = htole32(CTL_MAGIC);
	memcpy(b, &v, 4);
	b[4] = m->type;
	memcpy(b + 6, &f, 2);
	v = htole32(m->epoch);
	memcpy(b + 8, &v, 4);
	v = htole32(m->members);
	memcpy(b + 12, &v, 4);
	memcpy(b + 16, m->desc.bytes, COH_MR_DESC_SIZE);
	v = htole32(crc32_iscsi(b, 64, 0));
	memcpy(b + 64, &v, 4);
}

int ctl_decode(const uint8_t *b, uint32_t len, uint32_t nodes, struct ctl_msg *m)
{
	uint32_t v, crc;
	uint16_t f;

	if (len != CTL_MSG_SIZE || nodes == 0 || nodes > NODE_MAX)
		return -EPROTO;
	memcpy(&v, b, 4);
	if (le32toh(v) != CTL_MAGIC)
		return -EPROTO;
	memcpy(&crc, b + 64, 4);
	if (le32toh(crc) != crc32_iscsi((unsigned char *)b, 64, 0))
		return -EPROTO;
	m->type = b[4];
	memcpy(&f, b + 6, 2);
	m->from = le16toh(f);
	memcpy(&v, b + 8, 4);
	m->epoch = le32toh(v);
	memcpy(&v, b + 12, 4);
	m->members = le32toh(v);
	memcpy(m->desc.bytes, b + 16, COH_MR_DESC_SIZE);
	if (m->type < CTL_DESC || m->type > CTL_CLEARED || m->from >= nodes ||
	    (nodes < 32 && m->members >> nodes))
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

static void ctl_send(struct coh_node *n, uint32_t p, uint8_t type, uint32_t epoch, uint32_t members,
		     const struct coh_mr_desc *desc)
{
	struct ctl_msg m = {
		.type = type, .from = (uint16_t)n->me, .epoch = epoch, .members = members
	};
	int ret;

	if (!n->m->ep[p] || (n->m->dead >> p & 1))
		return;
	if (desc)
		m.desc = *desc;
	ctl_encode(&m, (uint8_t *)coh_mr_addr(n->m->buf) + send_off(n));
	ret = coh_ep_send_sync(n->m->ep[p], n->m->buf, send_off(n), CTL_MSG_SIZE);
	if (ret)
		COH_LOG_INFO("node %u: control message to %u: %s", n->me, p, coh_strerror(ret));
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

static void mark_dead(struct coh_node *n, uint32_t p, const char *why)
{
	if (p >= n->nodes || p == n->me || (n->m->dead >> p & 1))
		return;
	if (!n->m->dead || !n->m->down_ns)
		n->m->down_ns = node_now_ns();
	n->m->dead |= 1u << p;
	COH_LOG_INFO("node %u: node %u is gone (%s)", n->me, p, why);
}

/* pump - take fabric events and control messages for up to @timeout_ms. */
static void pump(struct coh_node *n, int timeout_ms)
{
	struct coh_event ev;
	struct coh_wc wc[16];
	int i, k;

	while (coh_fabric_event_get(n->fab, &ev, 0) == 0) {
		if (ev.type == COH_EVENT_PEER_DOWN)
			mark_dead(n, ev.peer, "fabric");
	}
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
		} else if (m.type == CTL_FLUSHED) {
			n->m->flushed[p] = m.epoch;
		} else if (m.type == CTL_READY) {
			n->m->ready[p] = m.epoch;
		} else if (m.type == CTL_CLEARED) {
			n->m->cleared[p] = m.epoch;
		} else if (m.type == CTL_DESC) {
			n->m->desc[p] = m.desc;
			n->m->desc_epoch[p] = m.epoch;
		} else if (m.type == CTL_BYE) {
			n->m->bye |= 1u << p;
			mark_dead(n, p, "goodbye");
		}
		if (post_recv(n, p, slot))
			COH_LOG_WARN("node %u: re-arming control receive from %u failed", n->me, p);
	}
	while (coh_fabric_event_get(n->fab, &ev, 0) == 0) {
		if (ev.type == COH_EVENT_PEER_DOWN)
			mark_dead(n, ev.peer, "fabric");
	}
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
			broadcast(n, others(n, P), CTL_VIEW, E, P);
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
					mark_dead(n, p, "silent during the view change");
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
	struct rlog_scan_stats st;
	uint64_t i, repaired = 0;
	int ret;

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

/* takeover - for each node that left @old: race for its locks; if this node wins, replay its
 * log from the copy here. Called with the I/O lock not held (the replay is long; only the
 * directory steps take it). */
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
		hosts = n->k ? node_log_peers(n->nodes, old, d, n->k) & P : 0;
		if (!hosts && n->k)
			COH_LOG_ERR("node %u: no survivor holds node %u's log: its acknowledged "
				    "writes not yet destaged are lost",
				    n->me, d);
		/* Nobody left to replay: the survivors still race, so that someone frees the
		 * dead node's locks. */
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
		if (n->takeover_hook)
			n->takeover_hook(n->takeover_arg, d);
		if (hosts) {
			r = node_replay(n, d, coh_mr_addr(n->host[d]), n->log_bytes);
			if (r && !ret)
				ret = r;
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
	if (!ret)
		ret = rlog_writer_reset(&n->w, want, n->k, E);
	io_give(n);
	return ret;
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
 * it and wait until they all have. Returns 0, the step's error, or 1 when the barrier did not
 * close (a newer view, a death, or its bound). */
static int step_barrier(struct coh_node *n, int (*fn)(struct coh_cache *c), uint8_t type,
			bool (*all)(struct coh_node *n, uint32_t epoch, uint32_t members),
			uint32_t E, uint32_t P)
{
	int ret = cache_step(n, fn);

	if (ret)
		return ret;
	broadcast(n, others(n, P), type, E, P);
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

/* commit - the new view is in place: let I/O go. */
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

/* view_change - the sequence in the file comment. Called by the membership thread. */
static void view_change(struct coh_node *n)
{
	uint32_t old = n->members, E = n->epoch, P, round, d;
	int ret;

	pthread_mutex_lock(&n->state_lock);
	n->changing = true;
	pthread_mutex_unlock(&n->state_lock);
	n->hold_max = 0;
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
		if (n->cache)
			coh_cache_fence(n->cache, old & ~P);
		progress(n);
		ret = relog(n, P, E);
		if (ret) {
			leave(n, E, P, "destage", ret);
			return;
		}
		progress(n);
		ret = step_barrier(n, coh_cache_rebuild_clear, CTL_CLEARED, all_cleared, E, P);
		if (!ret)
			ret = step_barrier(n, coh_cache_rebuild_claim, CTL_FLUSHED, all_flushed, E,
					   P);
		if (ret > 0)
			continue; /* the barrier did not close: a newer view */
		if (ret)
			goto again;
		ret = takeover(n, old, P, E);
		if (ret == -EAGAIN || ret == -ESHUTDOWN || ret == -ECONNRESET)
			goto again;
		if (ret)
			COH_LOG_ERR("node %u: takeover: %s", n->me, coh_strerror(ret));
		broadcast(n, others(n, P), CTL_READY, E, P);
		if (wait_until(n, E, P, all_ready, 3ull * n->timeout_ms))
			continue;
		ret = cache_step(n, coh_cache_view_commit);
		if (ret)
			goto again;
		/* Every dead node's log is replayed: zero the copies here, and re-key them, so
		 * that a dead node that was only cut off can no longer write them. */
		for (d = 0; d < n->nodes; d++) {
			if (!((old & ~P) >> d & 1) || !n->host[d])
				continue;
			memset(coh_mr_addr(n->host[d]), 0, n->log_bytes);
			ret = coh_mr_rekey(n->host[d]);
			if (ret)
				COH_LOG_WARN("node %u: re-keying node %u's log region: %s", n->me,
					     d, coh_strerror(ret));
		}
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

int membership_init(struct coh_node *n)
{
	uint32_t all = (uint32_t)((1ull << n->nodes) - 1);
	int ret;

	n->m = calloc(1, sizeof(*n->m));
	if (!n->m)
		return -ENOMEM;
	ret = host_regions(n);
	if (!ret)
		ret = ctl_mesh(n);
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
	for (p = 0; p < NODE_MAX; p++)
		coh_ep_delete(&n->m->ep[p]);
	coh_mr_delete(&n->m->buf);
	coh_cq_delete(&n->m->cq);
	free(n->m);
	n->m = NULL;
}
