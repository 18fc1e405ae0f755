/*
 * recovery.c - recovery at open: before a cluster that starts on existing logs serves anything,
 * every acknowledged write still in a log copy reaches the redundancy group, exactly once in
 * effect, and only then are the copies zeroed. Opening never destroys a record that may hold an
 * acknowledged write.
 *
 * Every node tells the others what it kept (CTL_STATE: its last prepared and committed views and
 * its own log generation; CTL_COPY: for each writer whose log it hosts a copy of, the copy's
 * generation and live record count). From that, every node decides the same way:
 *   - V*, the newest view any node prepared (zeroed the dead logs for, or recovered into). A node
 *     outside V*'s members was excluded before it: its copies are stale, and so are the copies of
 *     writers outside V* (their logs were replayed, and zeroed by every member, before V*).
 *   - for each writer of V*, the copy of the highest generation among V*'s members: a writer moves
 *     its log to a new generation only after destaging everything, so an older generation holds no
 *     record a replay needs. The lowest node holding it replays it (node_replay: every live record
 *     in log order, then parity for every stripe they touch or a step slot names, then a flush of
 *     the group). Replaying is writing the same bytes again, so a second replay of the same copy,
 *     after a crash during this recovery, has the same effect.
 * Barrier RECOVERED, then every node zeroes and persists every copy it hosts, persists the new
 * view as prepared, barrier RZEROED. A corrupt or torn record is found by its checksum, counted
 * and never replayed (rlog_scan).
 *
 * The participants are a formation's (formation.c): every configured node at a first start, a
 * majority after a crash when nothing that may hold the only copy of some writer's live records
 * is missing (rec_wait_for), the members and a joiner when a node comes back.
 *
 * What it leaves out: the view change after a death (viewchange.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cohort/log.h"
#include "membership_internal.h"

/* rec_copy - this node's copy of @w's log: its generation and live records; false when there is
 * none (no header of @w's: never written, or zeroed). */
static bool rec_copy(struct coh_node *n, uint32_t w, uint32_t *gen, uint32_t *live, uint32_t *bad)
{
	struct rlog_scan_stats st;
	uint64_t toff, tlsn;
	uint16_t hw;

	if (w == n->me || !n->host[w] ||
	    rlog_region_hdr_decode(coh_mr_addr(n->host[w]), &hw, gen, &toff, &tlsn) || hw != w)
		return false;
	if (rlog_scan(coh_mr_addr(n->host[w]), n->log_bytes, (uint16_t)w, NULL, NULL, &st))
		st.live = 0; /* a bad header: rlog_scan has said so; nothing in it is replayed */
	*live = (uint32_t)st.live;
	*bad = (uint32_t)(st.corrupt + st.torn);
	return true;
}

/* rec_tell - this node's CTL_COPYs, then its CTL_STATE tagged @tag, to @to (FIFO per pair: the
 * state comes last and closes the batch). */
static void rec_tell(struct coh_node *n, uint32_t to, uint32_t tag)
{
	uint32_t p, w, gen, live, bad, mine = 0;

	for (w = 0; w < n->nodes; w++) {
		if (!rec_copy(n, w, &gen, &live, &bad))
			continue;
		n->m->copy_gen[n->me][w] = gen;
		n->m->copy_live[n->me][w] = live;
		n->m->copy_bad[n->me][w] = bad;
		mine |= 1u << w;
		for (p = 0; p < n->nodes; p++) {
			struct ctl_msg m = {
				.type = CTL_COPY, .epoch = gen, .cepoch = w, .aux = live
			};

			ctl_set_tag(&m, bad);
			if (memb_others(n, to) >> p & 1)
				memb_send(n, p, &m);
		}
	}
	n->m->copies[n->me] = mine;
	n->m->said[n->me] = n->st;
	n->m->said_state |= 1u << n->me;
	n->m->said_tag[n->me] = tag;
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_STATE,
				     .idx = n->st.clean,
				     .epoch = n->st.prepared_epoch,
				     .members = n->st.prepared_members,
				     .cepoch = n->st.committed_epoch,
				     .cmembers = n->st.committed_members,
				     .aux = n->st.log_gen };

		ctl_set_tag(&m, tag);
		/* The elements this node finds missing: missing for the cluster that forms. */
		ctl_set_word(&m, 1, coh_raid_missing(n->raid));
		if (memb_others(n, to) >> p & 1)
			memb_send(n, p, &m);
	}
}

void memb_tell(struct coh_node *n, uint32_t to)
{
	rec_tell(n, to, 0);
}

static bool rec_all_stated(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	uint32_t p;

	for (p = 0; p < n->nodes; p++) {
		if ((memb_others(n, members) >> p & 1) &&
		    (!(n->m->said_state >> p & 1) || n->m->said_tag[p] != epoch))
			return false;
	}
	return true;
}

static bool rec_all_recovered(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->recovered, epoch, members, false);
}

static bool rec_all_zeroed(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->rzeroed, epoch, members, false);
}

/* rec_barrier - tell @all that this node has passed step @type of recovery @epoch, and wait for
 * them all. */
static int rec_barrier(struct coh_node *n, uint8_t type, uint32_t epoch, uint32_t all,
		       bool (*done)(struct coh_node *n, uint32_t epoch, uint32_t members))
{
	struct ctl_msg m = { .type = type, .epoch = epoch, .members = all };
	uint32_t p;

	for (p = 0; p < n->nodes; p++) {
		if (memb_others(n, all) >> p & 1)
			memb_send(n, p, &m);
	}
	return memb_wait_until(n, epoch, all, done, 3ull * n->timeout_ms);
}

/* rec_newest - V*: the newest view any of @present prepared (0, every node: none ever did). */
static void rec_newest(struct coh_node *n, uint32_t present, uint32_t *Ep, uint32_t *Mp)
{
	uint32_t p;

	*Ep = 0;
	*Mp = (uint32_t)((1ull << n->nodes) - 1);
	for (p = 0; p < n->nodes; p++) {
		const struct node_state *s = &n->m->said[p];

		if ((present >> p & 1) && (n->m->said_state >> p & 1) && s->prepared_epoch > *Ep) {
			*Ep = s->prepared_epoch;
			*Mp = s->prepared_members;
		}
	}
}

/*
 * rec_wait_for - the nodes a formation of @present must still wait for, because they may hold
 * the only copy of some writer's live records. For a writer of V* that is present, its log's
 * current generation (its own state says which) must be in a present copy; for one that is
 * absent, every other node of V* must be present, since its log may have moved to any of them
 * after V* (a log move is prepared only with the view change that follows it). Nothing is waited
 * for when no present node ever prepared a view (a new cluster: a majority of a cluster that ran
 * always holds one), or when the writers keep no log (k = 0).
 */
uint32_t rec_wait_for(struct coh_node *n, uint32_t present, char *why, size_t len)
{
	uint32_t Ep, Mp, w, p, wait = 0;

	rec_newest(n, present, &Ep, &Mp);
	if (!Ep || !n->k)
		return 0;
	for (w = 0; w < n->nodes; w++) {
		uint32_t need = 0;
		bool have = false;

		if (!(Mp >> w & 1))
			continue;
		if (present >> w & 1) {
			uint32_t gen = n->m->said[w].log_gen;

			for (p = 0; p < n->nodes && !have; p++)
				have = (present >> p & 1) && (Mp >> p & 1) &&
				       (n->m->copies[p] >> w & 1) && n->m->copy_gen[p][w] >= gen;
			/* No copy of its current generation here: it is on its log peers. */
			if (!have && gen)
				need = node_log_peers(n->nodes, Mp, w, n->k) & ~present;
		} else {
			need = Mp & ~(1u << w) & ~present;
		}
		if (need && !(wait & need) && why && len)
			snprintf(why, len, "writer %u's newest log may be only on nodes %#x", w,
				 need);
		wait |= need;
	}
	return wait;
}

int memb_recover(struct coh_node *n, uint32_t all, uint32_t E)
{
	uint32_t p, w, Ep, Mp, replayed = 0, src_of = 0;
	uint64_t t0 = node_now_ns(), blocks0, stale = 0;
	int ret;

	rec_tell(n, all, E);
	ret = memb_wait_until(n, E, all, rec_all_stated, 3ull * n->timeout_ms);
	if (ret)
		return ret;
	rec_newest(n, all, &Ep, &Mp);
	/* An element any of them finds missing is missing here before anything is replayed or
	 * read: its contents may be older than what was written around it. */
	for (p = 0; p < n->nodes; p++) {
		if (all >> p & 1)
			memb_elems_take(n, p, n->m->said[p].elem_missing);
	}
	pthread_mutex_lock(&n->state_lock);
	blocks0 = n->replayed_blocks;
	pthread_mutex_unlock(&n->state_lock);
	for (w = 0; w < n->nodes; w++) {
		uint32_t best = 0, src = NODE_MAX;

		for (p = 0; p < n->nodes; p++) {
			if (!(all >> p & 1) || !(n->m->copies[p] >> w & 1))
				continue;
			/* A node outside V* was excluded before it, and a writer outside V* had
			 * its log replayed and zeroed by every member of the view that excluded
			 * it: what such copies hold is stale. */
			if (Ep && (!(Mp >> p & 1) || !(Mp >> w & 1))) {
				stale += n->m->copy_live[p][w];
				continue;
			}
			/* The newest generation; of its copies, the one with the fewest records
			 * found corrupt (the others' copies of them are intact), then the most
			 * live records (an append that reached only some copies). */
			if (src == NODE_MAX || n->m->copy_gen[p][w] > best ||
			    (n->m->copy_gen[p][w] == best &&
			     (n->m->copy_bad[p][w] < n->m->copy_bad[src][w] ||
			      (n->m->copy_bad[p][w] == n->m->copy_bad[src][w] &&
			       n->m->copy_live[p][w] > n->m->copy_live[src][w])))) {
				best = n->m->copy_gen[p][w];
				src = p;
			}
		}
		if (src == n->me)
			src_of |= 1u << w; /* replayed here: node_replay counts its bad records */
		if (src == NODE_MAX || !n->m->copy_live[src][w])
			continue;
		if (src == n->me) {
			COH_LOG_INFO(
			    "node %u: recovery: replaying writer %u's log (generation %u, %u "
			    "live records)",
			    n->me, w, best, n->m->copy_live[src][w]);
			n->recovering = true;
			ret = node_replay(n, w, coh_mr_addr(n->host[w]), n->log_bytes);
			n->recovering = false;
			if (ret) {
				COH_LOG_ERR("node %u: recovery: replay of writer %u's log: %s",
					    n->me, w, coh_strerror(ret));
				return ret;
			}
		}
		replayed |= 1u << w;
	}
	ret = rec_barrier(n, CTL_RECOVERED, E, all, rec_all_recovered);
	if (ret)
		return ret;
	/* Every copy is replayed where it was current: none may be replayed again later, over
	 * what this cluster is about to write. */
	for (w = 0; w < n->nodes; w++) {
		if (!n->host[w])
			continue;
		memset(coh_mr_addr(n->host[w]), 0, n->log_bytes);
		ret = coh_mr_persist(n->host[w], 0, n->log_bytes);
		if (ret)
			return ret;
	}
	/* This node's own log starts a generation above any copy of it anywhere. */
	for (p = 0; p < n->nodes; p++) {
		if ((all >> p & 1) && (n->m->copies[p] >> n->me & 1) &&
		    n->m->copy_gen[p][n->me] > n->st.log_gen)
			n->st.log_gen = n->m->copy_gen[p][n->me];
	}
	pthread_mutex_lock(&n->w.lock);
	if (n->w.gen < n->st.log_gen)
		n->w.gen = n->st.log_gen;
	pthread_mutex_unlock(&n->w.lock);
	ret = node_persist(n, E, all, false);
	if (!ret)
		ret = rec_barrier(n, CTL_RZEROED, E, all, rec_all_zeroed);
	if (ret)
		return ret;
	pthread_mutex_lock(&n->state_lock);
	/* Bad records found in the copies kept here, replayed or not: reported once, here. */
	for (w = 0; w < n->nodes; w++) {
		if ((n->m->copies[n->me] >> w & 1) && (src_of >> w & 1) == 0)
			n->corrupt_records += n->m->copy_bad[n->me][w];
	}
	n->recoveries++;
	n->recovered_blocks += n->replayed_blocks - blocks0;
	n->recovered_writers |= replayed;
	n->stale_records += stale;
	n->last_recovery_ns = node_now_ns() - t0;
	pthread_mutex_unlock(&n->state_lock);
	if (Ep || replayed || stale)
		COH_LOG_INFO(
		    "node %u: recovery into epoch %u (members %#x): view %u prepared before "
		    "(members %#x); writers %#x replayed, %llu stale records discarded",
		    n->me, E, all, Ep, Mp, replayed, (unsigned long long)stale);
	return 0;
}
