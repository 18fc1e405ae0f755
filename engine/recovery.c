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
 * Barrier RECOVERED, then every node zeroes and persists every copy it hosts, barrier ZEROED, and
 * the new view is V*'s epoch and more, with every node as a member. A corrupt or torn record is
 * found by its checksum, counted and never replayed (rlog_scan).
 *
 * What it leaves out: a cluster that opens without every configured node (the lifecycle issue's
 * next step); the view change after a death (viewchange.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "cohort/log.h"
#include "membership_internal.h"

/* rec_copy - this node's copy of @w's log: its generation and live records; false when there is
 * none (no header of @w's: never written, or zeroed). */
static bool rec_copy(struct coh_node *n, uint32_t w, uint32_t *gen, uint32_t *live)
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
	return true;
}

static bool rec_all_stated(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	(void)epoch;
	return (n->m->said_state & memb_others(n, members)) == memb_others(n, members);
}

static bool rec_all_recovered(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->recovered, epoch, members, false);
}

static bool rec_all_zeroed(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->rzeroed, epoch, members, false);
}

/* rec_tell - this node's CTL_COPYs, then its CTL_STATE (FIFO per pair: the state comes last). */
static void rec_tell(struct coh_node *n, const struct node_state *mine, uint32_t all)
{
	uint32_t p, w, gen, live;

	for (w = 0; w < n->nodes; w++) {
		if (!rec_copy(n, w, &gen, &live))
			continue;
		n->m->copy_gen[n->me][w] = gen;
		n->m->copy_live[n->me][w] = live;
		n->m->copies[n->me] |= 1u << w;
		for (p = 0; p < n->nodes; p++) {
			struct ctl_msg m = {
				.type = CTL_COPY, .epoch = gen, .cepoch = w, .aux = live
			};

			if (memb_others(n, all) >> p & 1)
				memb_send(n, p, &m);
		}
	}
	n->m->said[n->me] = *mine;
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_STATE,
				     .idx = mine->clean,
				     .epoch = mine->prepared_epoch,
				     .members = mine->prepared_members,
				     .cepoch = mine->committed_epoch,
				     .cmembers = mine->committed_members,
				     .aux = mine->log_gen };

		if (memb_others(n, all) >> p & 1)
			memb_send(n, p, &m);
	}
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

int memb_recover(struct coh_node *n, uint32_t *epoch)
{
	uint32_t all = (uint32_t)((1ull << n->nodes) - 1), p, w, Ep = 0, Mp = all, Emax = 0, E;
	uint64_t t0 = node_now_ns(), blocks0, stale = 0;
	uint32_t replayed = 0;
	int ret;

	rec_tell(n, &n->st, all);
	ret = memb_wait_until(n, 0, all, rec_all_stated, 3ull * n->timeout_ms);
	if (ret)
		return ret;
	/* V*: the newest prepared view; every node decides from the same messages. */
	for (p = 0; p < n->nodes; p++) {
		const struct node_state *s = &n->m->said[p];

		if (s->prepared_epoch > Ep) {
			Ep = s->prepared_epoch;
			Mp = s->prepared_members;
		}
		if (s->prepared_epoch > Emax)
			Emax = s->prepared_epoch;
		if (s->committed_epoch > Emax)
			Emax = s->committed_epoch;
	}
	E = Emax + 1;
	pthread_mutex_lock(&n->state_lock);
	blocks0 = n->replayed_blocks;
	pthread_mutex_unlock(&n->state_lock);
	for (w = 0; w < n->nodes; w++) {
		uint32_t best = 0, src = NODE_MAX;

		for (p = 0; p < n->nodes; p++) {
			if (!(n->m->copies[p] >> w & 1))
				continue;
			if (!(Mp >> p & 1) || !(Mp >> w & 1)) {
				stale += n->m->copy_live[p][w];
				continue;
			}
			if (src == NODE_MAX || n->m->copy_gen[p][w] > best) {
				best = n->m->copy_gen[p][w];
				src = p;
			}
		}
		if (src == NODE_MAX || !n->m->copy_live[src][w])
			continue;
		if (src == n->me) {
			n->recovering = true;
			COH_LOG_INFO(
			    "node %u: recovery: replaying writer %u's log (generation %u, %u "
			    "live records)",
			    n->me, w, best, n->m->copy_live[src][w]);
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
	ret = rec_barrier(n, CTL_RZEROED, E, all, rec_all_zeroed);
	if (ret)
		return ret;
	pthread_mutex_lock(&n->state_lock);
	n->recoveries++;
	n->recovered_blocks += n->replayed_blocks - blocks0;
	n->recovered_writers |= replayed;
	n->stale_records += stale;
	n->last_recovery_ns = node_now_ns() - t0;
	pthread_mutex_unlock(&n->state_lock);
	if (Ep || replayed || stale)
		COH_LOG_INFO("node %u: recovery at open: view %u prepared before (members %#x); "
			     "writers %#x replayed, %llu stale records discarded; epoch %u",
			     n->me, Ep, Mp, replayed, (unsigned long long)stale, E);
	/* This node's own log starts a generation above any copy of it anywhere. */
	for (p = 0; p < n->nodes; p++) {
		if ((n->m->copies[p] >> n->me & 1) && n->m->copy_gen[p][n->me] > n->st.log_gen)
			n->st.log_gen = n->m->copy_gen[p][n->me];
	}
	*epoch = E;
	return 0;
}
