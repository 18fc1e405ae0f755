/*
 * viewchange.c - the view change a membership thread runs after deaths (membership.c says who
 * died and agrees on the new view): the fence, the log move, the directory rebuild, the takeover
 * and replay, the zeroing of the dead logs, and the commit, with their barriers. The sequence
 * and why each step is safe are in membership.c's file comment and docs/recovery.md.
 *
 * What it leaves out: the transport, the agreement and the failure detection (membership.c,
 * lease.c), and the cache's side of each step (cache/view.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/log.h"
#include "membership_internal.h"

static bool vc_all_flushed(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->flushed, epoch, members, false);
}

static bool vc_all_ready(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->ready, epoch, members, false);
}

static bool vc_all_cleared(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->cleared, epoch, members, false);
}

static bool vc_all_zeroed(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->zeroed, epoch, members, false);
}

/* all_cdescs - every other member's re-keyed cache descriptors of @epoch are in. */
static bool vc_all_cdescs(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	uint32_t i;

	for (i = 0; i < COH_CACHE_DESCS; i++) {
		uint32_t said[NODE_MAX], p;

		for (p = 0; p < n->nodes; p++)
			said[p] = n->m->cdesc_epoch[p][i];
		if (!memb_all_reached(n, said, epoch, members, true))
			return false;
	}
	return true;
}

/* Takeover. */

struct replay {
	struct coh_node *n;
	bool collect; /* vc_need: only list the stripes, write nothing */
	uint64_t *stripes;
	uint64_t count, cap, blocks, skipped;
};

static int vc_add_stripe(struct replay *r, uint64_t s)
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

static int vc_replay_visit(void *arg, const struct rlog_rec *rec, const uint8_t *payload)
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
	if (r->collect)
		return vc_add_stripe(r, coh_raid_stripe_of(n->raid, rec->addr));
	/* Replaying is writing the record's block again: the same bytes to the same place, so
	 * doing it twice (a second survivor after the first died) has the same effect. */
	ret = coh_raid_write(n->raid, rec->addr, 1, payload);
	if (ret)
		return ret;
	r->blocks++;
	return vc_add_stripe(r, coh_raid_stripe_of(n->raid, rec->addr));
}

/* replay_step - a destage was in progress on @stripe: finish it (parity from the data). */
static int vc_replay_step(void *arg, uint64_t stripe, uint8_t step)
{
	struct replay *r = arg;
	uint64_t stripes = (r->n->vol_blocks + r->n->stripe_blocks - 1) / r->n->stripe_blocks;

	(void)step;
	if (stripe >= stripes) {
		r->skipped++;
		return 0;
	}
	return vc_add_stripe(r, stripe);
}

static int vc_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* vc_scan - visit @d's log copy @region: its live records (replayed, unless @r->collect), then
 * its step slots; then @r->stripes sorted, each once (@r->count of them). */
static int vc_scan(struct replay *r, uint32_t d, const uint8_t *region, size_t len,
		   struct rlog_scan_stats *st)
{
	uint64_t i, m = 0;
	int ret = rlog_scan(region, len, (uint16_t)d, vc_replay_visit, r, st);

	if (!ret)
		ret = rlog_scan_steps(region, len, (uint16_t)d, vc_replay_step, r);
	if (ret || !r->count)
		return ret;
	qsort(r->stripes, r->count, sizeof(*r->stripes), vc_cmp_u64);
	for (i = 0; i < r->count; i++) {
		if (!i || r->stripes[i] != r->stripes[m - 1])
			r->stripes[m++] = r->stripes[i];
	}
	r->count = m;
	return 0;
}

/*
 * vc_need - the resources (a resource is a stripe: node_cache_open) that a replay of @d's log copy
 * here would write: those of its live records and of its step slots, ascending, none twice. The
 * takeover holds exactly these of the dead home's unclaimed words (coh_cache_take_over), instead
 * of every one of them, so that its cost follows what @d logged, not the volume. *@need is NULL
 * (take every unclaimed word, as before) if the copy cannot be read; the caller frees it.
 */
static int vc_need(struct coh_node *n, uint32_t d, uint64_t **need, uint64_t *nneed)
{
	struct replay r = { .n = n, .collect = true };
	struct rlog_scan_stats st = { 0 };
	int ret = vc_scan(&r, d, coh_mr_addr(n->host[d]), n->log_bytes, &st);

	*need = NULL;
	*nneed = 0;
	if (!ret && !r.stripes && !(r.stripes = malloc(sizeof(*r.stripes))))
		ret = -ENOMEM; /* an empty list is not NULL */
	if (ret) {
		free(r.stripes);
		return ret;
	}
	*need = r.stripes;
	*nneed = r.count;
	return 0;
}

int node_replay(struct coh_node *n, uint32_t d, const uint8_t *region, size_t len)
{
	struct replay r = { .n = n };
	struct rlog_scan_stats st = { 0 };
	uint64_t i, repaired = 0;
	int ret;

	/* The replay writes the store: only a member may (a node the others have excluded has
	 * lost its lease by the time they take over). Recovery at open replays before anyone
	 * serves, and so before any lease. */
	if (n->lease && !n->recovering && !node_lease_ok(n))
		return -EAGAIN;
	ret = vc_scan(&r, d, region, len, &st);
	/* Then finish every stripe it was updating: recompute parity from the data. */
	for (i = 0; i < r.count && !ret; i++) {
		ret = coh_raid_stripe_repair(n->raid, r.stripes[i]);
		repaired++;
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
static void vc_io_take(struct coh_node *n)
{
	uint64_t t0 = node_now_ns();

	if (n->cache)
		coh_cache_yield(n->cache, true);
	pthread_rwlock_wrlock(&n->io);
	if (n->cache)
		coh_cache_yield(n->cache, false);
	n->io_since = node_now_ns();
	/* Operations finish their step before a view change step runs; one that waits out a
	 * transport timeout (a peer cut off) holds it up that long. Longer than a timeout, and the
	 * others may leave this node out (docs/recovery.md, "Partitions"). */
	if (n->io_since - t0 > (uint64_t)n->timeout_ms * 1000000ull)
		COH_LOG_WARN("node %u: the view change waited %llu ms for I/O to stop", n->me,
			     (unsigned long long)((n->io_since - t0) / 1000000ull));
}

/* io_give - let go of the I/O lock after a view change step, keeping the longest hold: how long
 * this node's own I/O was stopped by the view change at most (coh_node_stats). */
static void vc_io_give(struct coh_node *n)
{
	uint64_t held = node_now_ns() - n->io_since;

	if (held > n->hold_max)
		n->hold_max = held;
	pthread_rwlock_unlock(&n->io);
}

/* log_hosted - the dead writers in @gone whose log has a copy here: the region's header names
 * the writer. A copy that was zeroed (its takeover done) or never written has none. */
static uint32_t vc_log_hosted(struct coh_node *n, uint32_t gone)
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
static uint32_t vc_hosts_of(struct coh_node *n, uint32_t P, uint32_t d)
{
	uint32_t p, hosts = 0;

	for (p = 0; p < n->nodes; p++) {
		if (!(P >> p & 1))
			continue;
		if (p == n->me ? (vc_log_hosted(n, 1u << d) != 0) : (n->m->hosts_of[p] >> d & 1))
			hosts |= 1u << p;
	}
	return hosts;
}

/* takeover - for each node that left @old: race for its locks; if this node wins, replay its
 * log from the copy here. Called with the I/O lock not held (the replay is long; only the
 * directory steps take it). The candidates are the survivors whose copy of the log says it is
 * the dead node's (a writer that moved its log has its live copy where it moved it, whatever
 * the membership at the start of this view change says). */
static int vc_takeover(struct coh_node *n, uint32_t old, uint32_t P, uint32_t E)
{
	uint32_t d, gone = old & ~P;
	int ret = 0, r;

	for (d = 0; d < n->nodes; d++) {
		static const uint64_t none[1];
		uint32_t hosts;
		uint64_t taken = 0, nneed = 0, *need = NULL;
		bool won = false;

		if (!(gone >> d & 1))
			continue;
		hosts = n->k ? vc_hosts_of(n, P, d) : 0;
		if (!hosts && n->k && !(n->m->replayed >> d & 1))
			COH_LOG_ERR("node %u: no survivor holds node %u's log: its acknowledged "
				    "writes not yet destaged are lost",
				    n->me, d);
		/* What this node would replay if it won. A copy it cannot list makes it take
		 * every unclaimed word (NULL), as a takeover did before it listed them. Without
		 * a copy it wins only when nobody has one (or the replay was done in an earlier
		 * round of this view change and the copies zeroed): nothing will be replayed, and
		 * the dead home's unclaimed words are left free. */
		if ((hosts >> n->me & 1) && vc_need(n, d, &need, &nneed))
			COH_LOG_WARN("node %u: node %u's log copy could not be listed; the "
				     "takeover holds every unclaimed resource of its home",
				     n->me, d);
		/* Nobody left to replay: the survivors still race, so that someone frees the
		 * dead node's locks. */
		vc_io_take(n);
		r = n->cache ? coh_cache_take_over(n->cache, d, hosts ? hosts : P, E,
						   (hosts >> n->me & 1) ? need : none, nneed, &won,
						   &taken)
			     : -ESHUTDOWN;
		vc_io_give(n);
		free(need);
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
		n->locks_taken += taken;
		n->last_takeover_ns = node_now_ns() - n->m->down_ns;
		pthread_mutex_unlock(&n->state_lock);
	}
	return ret;
}

/* relog - this node's log lost a peer: destage everything it holds dirty (retiring the records
 * on the peers left), then start the log afresh on the new peers. Only this node's I/O waits. */
static int vc_relog(struct coh_node *n, uint32_t P, uint32_t E)
{
	uint32_t want = node_log_peers(n->nodes, P, n->me, n->k);
	int ret = 0;

	if (!n->k || (n->w.peers == want && !atomic_load(&n->relog_hold)))
		return 0;
	vc_io_take(n);
	/* The flush retires records on the peers left only: a dead peer's copy keeps them live,
	 * and a recovery replays that copy until the new generation is on record. Until then no
	 * lock leaves this node (node_hold_locks), or another node's write to a block destaged
	 * here could be overtaken by this one's older record at a whole-cluster restart. If the
	 * move fails, the locks stay held: this node's next view change moves the log again. */
	atomic_store(&n->relog_hold, true);
	if (n->w.peers != want) {
		pthread_mutex_lock(&n->w.lock);
		n->w.peers &= P;
		pthread_mutex_unlock(&n->w.lock);
		if (n->cache)
			ret = node_cache_flush(n);
		if (!ret) {
			node_point(n, COH_CRASH_VIEW_RELOG, E);
			ret = rlog_writer_reset(&n->w, want, n->k, E);
		}
	}
	/* The new generation is on record before the first write in it is acknowledged. */
	if (!ret)
		ret = node_persist(n, n->st.prepared_epoch, n->st.prepared_members, false);
	if (!ret)
		atomic_store(&n->relog_hold, false);
	vc_io_give(n);
	if (!ret)
		node_point(n, COH_CRASH_VIEW_RELOGGED, E);
	return ret;
}

/*
 * vc_fence_agent - the caller's fence agent (COH_FENCE_AGENT) for each node of @unproven: one it
 * fenced is proven stopped, and its lease need not be outwaited. Returns those still unproven.
 */
static uint32_t vc_fence_agent(struct coh_node *n, uint32_t unproven, uint32_t E)
{
	uint32_t p;
	int r;

	for (p = 0; p < n->nodes; p++) {
		if (!(unproven >> p & 1))
			continue;
		r = n->fence_agent(n->fence_arg, p);
		if (!r) {
			COH_LOG_WARN("node %u: view %u: node %u fenced by the fence agent", n->me,
				     E, p);
			n->m->proven |= 1u << p;
			atomic_fetch_add(&n->agent_fenced, 1);
		} else {
			COH_LOG_ERR("node %u: view %u: the fence agent failed for node %u (%s): "
				    "outwaiting its lease instead, which does not cover a pause "
				    "between a lease check and a write (docs/recovery.md)",
				    n->me, E, p, coh_strerror(r));
			atomic_fetch_add(&n->agent_failed, 1);
		}
	}
	return unproven & ~n->m->proven;
}

/*
 * fence_gone - make sure the nodes that left (@gone) have stopped before the survivors go past
 * the fence: those known stopped (their process is gone, or they said goodbye) need nothing; the
 * others are killed where the fabric can and the policy says so (COH_FENCE_AUTO), or by the
 * caller's agent (COH_FENCE_AGENT), and otherwise, or if no proof of their death comes within
 * the timeout, every lease this node granted them is outwaited. Bounded by the timeout plus the
 * lease (the agent is bounded by the timeout: coh_node_attr.fence_agent).
 */
static int vc_fence_gone(struct coh_node *n, uint32_t gone, uint32_t P, uint32_t E)
{
	uint32_t unproven = gone & ~n->m->proven, p;
	uint64_t deadline, until;

	if (!unproven)
		return 0;
	if (n->fence == COH_FENCE_AGENT) {
		unproven = vc_fence_agent(n, unproven, E);
		if (!unproven)
			return 0;
	}
	if (n->fence == COH_FENCE_AUTO) {
		bool asked = false;

		for (p = 0; p < n->nodes; p++) {
			if ((unproven >> p & 1) && !coh_fabric_fence_peer(n->fab, p))
				asked = true;
		}
		deadline = node_now_ns() + (uint64_t)n->timeout_ms * 1000000ull;
		while (asked && (gone & ~n->m->proven) && node_now_ns() < deadline &&
		       !atomic_load(&n->m->stop)) {
			memb_pump(n, 5);
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

		memb_pump(n, left < 5 ? (int)left : 5);
		if (n->m->dead & P)
			return -EAGAIN;
	}
	return 0;
}

/*
 * rekey - the fence itself: re-key this node's cache regions and the dead nodes' log regions it
 * hosts, give the survivors the new cache descriptors and take theirs (this exchange is the
 * barrier that makes everyone wait for every survivor's vc_fence_gone), then fence the dead in the
 * cache: nothing more is sent to them and nothing waits for them. An excluded node that still
 * runs can touch none of these regions from here on. Returns 0, -EAGAIN (a death or a newer
 * view: again) or an error.
 */
static int vc_rekey(struct coh_node *n, uint32_t old, uint32_t P, uint32_t E)
{
	struct coh_mr_desc d[COH_CACHE_DESCS];
	uint32_t gone = old & ~P, p, i;
	int ret;

	for (p = 0; p < n->nodes; p++) {
		if ((gone >> p & 1) && n->host[p] && (ret = coh_mr_rekey(n->host[p])))
			COH_LOG_WARN("node %u: re-keying node %u's log region: %s", n->me, p,
				     coh_strerror(ret));
	}
	vc_io_take(n);
	ret = n->cache ? coh_cache_rekey(n->cache, d) : -ESHUTDOWN;
	vc_io_give(n);
	if (ret)
		return ret;
	for (p = 0; p < n->nodes; p++) {
		if (!(memb_others(n, P) >> p & 1))
			continue;
		for (i = 0; i < COH_CACHE_DESCS; i++) {
			struct ctl_msg m = { .type = CTL_CDESC,
					     .idx = (uint8_t)i,
					     .epoch = E,
					     .members = P,
					     .desc = d[i] };

			memb_send(n, p, &m);
		}
	}
	ret = memb_wait_until(n, E, P, vc_all_cdescs, 3ull * n->timeout_ms);
	if (ret)
		return ret == -ETIMEDOUT ? -EAGAIN : ret;
	vc_io_take(n);
	ret = n->cache ? coh_cache_fence(n->cache, gone) : -ESHUTDOWN;
	for (p = 0; !ret && p < n->nodes; p++) {
		if (memb_others(n, P) >> p & 1)
			ret = coh_cache_import(n->cache, p, n->m->cdesc[p]);
	}
	vc_io_give(n);
	if (!ret)
		node_point(n, COH_CRASH_VIEW_FENCED, E);
	return ret;
}

/* zero_dead_logs - every dead node's log is replayed (barrier READY): its copies here go, so
 * that no later round, nor a later death, can replay it over what the survivors write next. */
static int vc_zero_dead_logs(struct coh_node *n, uint32_t gone, uint32_t E, uint32_t P)
{
	uint32_t d;
	int ret;

	for (d = 0; d < n->nodes; d++) {
		if (!(gone >> d & 1) || !n->host[d])
			continue;
		memset(coh_mr_addr(n->host[d]), 0, n->log_bytes);
		/* Durable before ZEROED goes out: a copy that came back after a crash of the host
		 * could be replayed over what the survivors write once they commit. */
		ret = coh_mr_persist(n->host[d], 0, n->log_bytes);
		if (ret)
			return ret;
	}
	n->m->replayed |= gone;
	/* This view is prepared here: a cluster restarting on these files knows the dead of this
	 * view are done with (recovery.c). */
	return node_persist(n, E, P, false);
}

/* cache_step - one directory step of the view change, with the I/O lock held. */
static int vc_cache_step(struct coh_node *n, int (*fn)(struct coh_cache *c))
{
	int ret;

	vc_io_take(n);
	ret = n->cache ? fn(n->cache) : -ESHUTDOWN;
	vc_io_give(n);
	return ret;
}

/* step_barrier - a directory step, then the barrier after it: tell the others this node has done
 * it and wait until they all have. FLUSHED also says whose dead logs this node holds. Returns 0,
 * the step's error, or 1 when the barrier did not close (a newer view, a death, or its bound). */
static int vc_step_barrier(struct coh_node *n, int (*fn)(struct coh_cache *c), uint8_t type,
			   bool (*all)(struct coh_node *n, uint32_t epoch, uint32_t members),
			   uint32_t E, uint32_t P)
{
	int ret = vc_cache_step(n, fn);
	uint32_t p;

	if (ret)
		return ret;
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = type, .epoch = E, .members = P };

		if (!(memb_others(n, P) >> p & 1))
			continue;
		if (type == CTL_FLUSHED)
			m.aux = vc_log_hosted(n, n->members & ~P);
		memb_send(n, p, &m);
	}
	return memb_wait_until(n, E, P, all, 3ull * n->timeout_ms) ? 1 : 0;
}

static void vc_progress(struct coh_node *n)
{
	pthread_mutex_lock(&n->state_lock);
	__atomic_add_fetch(&n->progress, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
}

void node_step_pause(void *arg)
{
	struct coh_node *n = arg;
	uint64_t taken = atomic_load(&n->io_taken), until;

	if (!atomic_load(&n->io_wanted))
		return;
	vc_io_give(n);
	/* A mutex is not fair: taken again at once, it would stay here. Wait, bounded, until the
	 * operation has it; it runs to its end or, if it waits on the network, lets go when
	 * io_take asks. */
	until = node_now_ns() + 2000000;
	while (atomic_load(&n->io_taken) == taken && atomic_load(&n->io_wanted) &&
	       node_now_ns() < until)
		sched_yield();
	vc_io_take(n);
	/* An operation that io_take made let go waits for the view change to move on: this is
	 * such a move, so it tries again now (and waits for the next pause on @io). */
	vc_progress(n);
}

/* commit - the new view is in place: let I/O go (or, without @quorum, refuse it). */
static void vc_commit(struct coh_node *n, uint32_t E, uint32_t P, bool quorum)
{
	pthread_mutex_lock(&n->state_lock);
	n->epoch = E;
	n->members = P;
	n->quorum = quorum;
	n->changing = false;
	__atomic_add_fetch(&n->progress, 1, __ATOMIC_RELEASE);
	n->view_changes++;
	n->last_view_ns = node_now_ns() - n->m->down_ns;
	n->last_view_hold_ns = n->hold_max;
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
	memb_set_lease_members(n, quorum ? P & ~n->m->dead : 0);
	if (!quorum)
		lease_drop(n);
	else
		node_persist(n, E, P, true);
	node_point(n, COH_CRASH_VIEW_COMMITTED, E);
}

/* stop_serving - this node serves no more I/O: its cache goes, and view @E of members @P is put
 * in place without a quorum (operations get -EROFS). */
void view_stop_serving(struct coh_node *n, uint32_t E, uint32_t P)
{
	vc_io_take(n);
	coh_cache_abandon(&n->cache);
	vc_commit(n, E, P, false);
	vc_io_give(n);
	memb_hello_stopped(n);
}

void view_stop_excluded(struct coh_node *n)
{
	COH_LOG_ERR("node %u: excluded from the cluster (view %u): serving no I/O until it is "
		    "admitted again",
		    n->me, lease_excluded(n));
	view_stop_serving(n, lease_excluded(n), 1u << n->me);
}

/* leave - this node cannot finish its part: what it could not destage is in its log on its
 * peers, so it leaves and a survivor replays it. */
static void vc_leave(struct coh_node *n, uint32_t E, uint32_t P, const char *what, int err)
{
	COH_LOG_ERR("node %u: %s in view change: %s; leaving the cluster", n->me, what,
		    coh_strerror(err));
	memb_broadcast(n, memb_others(n, P), CTL_BYE, E, P);
	view_stop_serving(n, E, 1u << n->me);
}

/* newest_commit - the newest view a member of @P says it committed, if newer than this node's
 * own: the member had every READY and ZEROED of that round, so this node did all its part of it
 * and only missed the end. */
static bool vc_newest_commit(struct coh_node *n, uint32_t P, uint32_t *Ec, uint32_t *Pc,
			     uint32_t *who)
{
	uint32_t p, mine;
	bool found = false;

	pthread_mutex_lock(&n->state_lock);
	mine = n->epoch;
	pthread_mutex_unlock(&n->state_lock);
	for (p = 0; p < n->nodes; p++) {
		/* A view without a majority (a fenced node's) was never committed by anyone
		 * else: nothing to catch up with. Nor is one without this node: that member
		 * went on without it (it was excluded, and must not commit that view itself). */
		if ((memb_others(n, P) >> p & 1) && n->m->view_cepoch[p] > mine &&
		    node_majority(n, n->m->view_cmembers[p]) &&
		    (n->m->view_cmembers[p] >> n->me & 1) &&
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
static int vc_catch_up(struct coh_node *n, uint32_t Ec, uint32_t Pc, uint32_t who)
{
	int ret;

	COH_LOG_INFO("node %u: node %u committed view %u (members %#x) before this node saw its "
		     "last barrier: committing it here first",
		     n->me, who, Ec, Pc);
	/* Local only: the regions of the survivors may have been re-keyed since by a round this
	 * node has not reached; lost grants are adopted at the end of that round. */
	ret = vc_cache_step(n, coh_cache_view_commit);
	if (ret)
		return ret;
	vc_commit(n, Ec, Pc, true);
	return 0;
}

/* transient - a step failed because of another death or a newer view: start again. */
static bool vc_transient(int ret)
{
	return ret == -EAGAIN || ret == -ESHUTDOWN || ret == -ECONNRESET || ret == -ETIMEDOUT ||
	       ret == -EACCES || ret == -ENOTCONN || ret == -EPIPE || ret == -EIO;
}

/*
 * view_change - the sequence in the file comment. Called by the membership thread. @old is the
 * committed view's members; a catch-up moves it on.
 */
void view_change(struct coh_node *n)
{
	uint32_t old = n->members, E = n->epoch, P = old, round, Ec = 0, Pc = 0, who = 0;
	const char *what = "agreeing";
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
		if (lease_excluded(n)) {
			/* A member refused this node's lease from a view without it (memb_main
			 * checks between view changes; a node resumed from a pause is in one). */
			view_stop_excluded(n);
			return;
		}
		E++;
		P = old & ~n->m->dead;
		ret = memb_agree(n, &E, &P);
		if (ret)
			break;
		node_point(n, COH_CRASH_VIEW_AGREED, E);
		if (vc_newest_commit(n, P, &Ec, &Pc, &who)) {
			what = "catching up";
			ret = vc_catch_up(n, Ec, Pc, who);
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
		if (!(P >> n->me & 1)) {
			/* A member's view left this node out: it was excluded (memb_agree). */
			COH_LOG_ERR("node %u: view %u (members %#x) has no place for this node: it "
				    "stops serving I/O until it is admitted again",
				    n->me, E, P);
			view_stop_serving(n, E, 1u << n->me);
			return;
		}
		if (!node_majority(n, P)) {
			/* Fenced: write nothing more to the shared storage. */
			/* The last nodes of a cluster shutting down get here too: not an error
			 * when everyone missing said goodbye. */
			COH_LOG_AT(n->m->dead & old & ~n->m->bye ? COH_LOG_LEVEL_ERR
								 : COH_LOG_LEVEL_INFO,
				   "node %u: view %u has %u of %u nodes, not a majority: this node "
				   "stops serving I/O",
				   n->me, E, __builtin_popcount(P), n->nodes);
			view_stop_serving(n, E, P);
			return;
		}
		what = "fencing";
		ret = vc_fence_gone(n, old & ~P, P, E);
		if (!ret) {
			what = "re-keying";
			ret = vc_rekey(n, old, P, E);
		}
		if (ret)
			goto again;
		vc_progress(n);
		ret = vc_relog(n, P, E);
		if (ret) {
			/* A new peer of the log died while the log moved: another round moves it
			 * again, to peers that live. Only a failure with every peer alive is this
			 * node's own, and then it leaves rather than hold its writes up. */
			uint64_t until = node_now_ns() + (uint64_t)n->timeout_ms * 1000000ull;

			while (!(n->m->dead & P) && node_now_ns() < until &&
			       !atomic_load(&n->m->stop))
				memb_pump(n, 5);
			if (n->m->dead & P)
				goto again;
			vc_leave(n, E, P, "destage", ret);
			return;
		}
		vc_progress(n);
		what = "clearing the directory";
		ret =
		    vc_step_barrier(n, coh_cache_rebuild_clear, CTL_CLEARED, vc_all_cleared, E, P);
		if (!ret) {
			node_point(n, COH_CRASH_VIEW_CLEARED, E);
			what = "claiming the directory";
			ret = vc_step_barrier(n, coh_cache_rebuild_claim, CTL_FLUSHED,
					      vc_all_flushed, E, P);
		}
		if (ret > 0)
			continue; /* the barrier did not close: a newer view */
		if (ret)
			goto again;
		node_point(n, COH_CRASH_VIEW_CLAIMED, E);
		what = "taking over";
		ret = vc_takeover(n, old, P, E);
		if (ret) {
			if (!vc_transient(ret))
				COH_LOG_ERR("node %u: takeover: %s", n->me, coh_strerror(ret));
			goto again;
		}
		memb_broadcast(n, memb_others(n, P), CTL_READY, E, P);
		node_point(n, COH_CRASH_VIEW_READY, E);
		if (memb_wait_until(n, E, P, vc_all_ready, 3ull * n->timeout_ms))
			continue;
		/* Every dead node's log is replayed and the group flushed: zero the copies here
		 * (they were re-keyed at the fence), and only then let anyone commit. */
		what = "zeroing the dead logs";
		ret = vc_zero_dead_logs(n, old & ~P, E, P);
		if (ret)
			goto again;
		node_point(n, COH_CRASH_VIEW_ZEROED, E);
		memb_broadcast(n, memb_others(n, P), CTL_ZEROED, E, P);
		if (memb_wait_until(n, E, P, vc_all_zeroed, 3ull * n->timeout_ms))
			continue;
		what = "committing the cache";
		ret = vc_cache_step(n, coh_cache_view_commit);
		if (!ret)
			ret = vc_cache_step(n, coh_cache_adopt_lost);
		if (ret)
			goto again;
		vc_commit(n, E, P, true);
		n->m->down_ns = 0;
		COH_LOG_INFO("node %u: epoch %u, members %#x", n->me, E, P);
		return;
	again:
		COH_LOG_WARN("node %u: view %u: %s: %s; again", n->me, E, what, coh_strerror(ret));
	}
	COH_LOG_AT(n->m->dead & old & ~n->m->bye || !atomic_load(&n->m->stop) ? COH_LOG_LEVEL_ERR
									      : COH_LOG_LEVEL_INFO,
		   "node %u: view change did not finish: serving no I/O", n->me);
	view_stop_serving(n, E, old & ~n->m->dead);
}
