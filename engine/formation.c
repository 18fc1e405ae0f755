/*
 * formation.c - how a set of nodes becomes a serving cluster: at a first start, after a whole-
 * cluster crash, and whenever a node comes back to a cluster that runs (the view grows).
 *
 * A formation is one view (epoch E, members F) that every node of F agrees on and then builds
 * from nothing but the shared storage and the log copies:
 *   - propose: the leader (the lowest member of a serving view that has nodes asking to join, or
 *     the lowest connected node when none serves) sends CTL_FORM(E, F); a node of F that is
 *     connected to all of F adopts it and echoes it, a later proposal (higher E) replacing an
 *     earlier one. Agreed when every node of F has echoed the same (E, F).
 *   - quiesce: a node that was serving destages everything it holds dirty (with its lease), lets
 *     its cache go (its locks released), and stops its lease thread. I/O waits meanwhile.
 *   - connect: log and lease endpoints to every node of F, new incarnations included.
 *   - recover (recovery.c): whatever the log copies hold that is current goes to the group, then
 *     every copy is zeroed and the view is prepared.
 *   - set up: log descriptors exchanged, the log restarted on its k peers of F, the lease, the
 *     cache opened anew over F, and the view committed.
 * If anything fails part way (a death, a timeout), every node of F drops what it built, serves
 * nothing, and a new formation follows. Nothing is lost by that: what any node acknowledged is
 * destaged or in a log copy that the next recovery replays, and copies are zeroed only after the
 * replays of all of F are done.
 *
 * When to form, without a serving cluster: a majority of the configured nodes is connected, and
 * rec_wait_for finds no absent node that may hold the only copy of some writer's live records
 * (unless coh_node_attr.force_open says to go on and report what may be lost). After a grace of
 * one timeout the leader forms with whoever is there; before that it waits for everyone.
 *
 * What it leaves out: the view change after a death (viewchange.c), which shrinks a view without
 * stopping I/O to what the dead did not hold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cohort/log.h"
#include "membership_internal.h"

static uint32_t form_all(const struct coh_node *n)
{
	return (uint32_t)((1ull << n->nodes) - 1);
}

static uint32_t form_lowest(uint32_t set)
{
	return set ? (uint32_t)__builtin_ctz(set) : NODE_MAX;
}

/* form_newest_epoch - above every epoch this node has heard of. */
static uint32_t form_newest_epoch(struct coh_node *n)
{
	uint32_t p, e = n->epoch;

	for (p = 0; p < n->nodes; p++) {
		const struct node_state *s = &n->m->said[p];

		if (n->m->hello_epoch[p] > e)
			e = n->m->hello_epoch[p];
		if (s->prepared_epoch > e)
			e = s->prepared_epoch;
		if (s->committed_epoch > e)
			e = s->committed_epoch;
		if (n->m->form_epoch[p] > e)
			e = n->m->form_epoch[p];
		if (n->m->view_epoch[p] > e)
			e = n->m->view_epoch[p];
	}
	if (n->st.prepared_epoch > e)
		e = n->st.prepared_epoch;
	if (n->st.committed_epoch > e)
		e = n->st.committed_epoch;
	return e;
}

/* form_adopt - make (E, F) this node's proposal and echo it to F. */
static void form_adopt(struct coh_node *n, uint32_t E, uint32_t F)
{
	uint32_t p;

	n->m->form_cur_epoch = E;
	n->m->form_cur_members = F;
	n->m->form_epoch[n->me] = E;
	n->m->form_members[n->me] = F;
	n->m->form_since_ns = node_now_ns();
	for (p = 0; p < n->nodes; p++) {
		struct ctl_msg m = { .type = CTL_FORM, .epoch = E, .members = F };

		if (memb_others(n, F) >> p & 1)
			memb_send(n, p, &m);
	}
}

static bool form_agreed(struct coh_node *n, uint32_t E, uint32_t F)
{
	uint32_t p;

	for (p = 0; p < n->nodes; p++) {
		if ((memb_others(n, F) >> p & 1) &&
		    (n->m->form_epoch[p] != E || n->m->form_members[p] != F))
			return false;
	}
	return true;
}

/* form_quiesce - a serving node stops: its dirty blocks to the group (while it still holds its
 * lease), its cache and locks go, its lease thread stops. I/O waits (n->forming). */
static void form_quiesce(struct coh_node *n)
{
	int ret;

	pthread_mutex_lock(&n->state_lock);
	n->forming = true;
	n->changing = true;
	pthread_mutex_unlock(&n->state_lock);
	pthread_rwlock_wrlock(&n->io);
	if (n->cache) {
		ret = node_cache_flush(n);
		if (ret)
			COH_LOG_WARN("node %u: destage before a formation: %s; the log copies keep "
				     "what is left, and the recovery replays them",
				     n->me, coh_strerror(ret));
		if (ret)
			coh_cache_abandon(&n->cache);
		else
			coh_cache_close(&n->cache);
	}
	pthread_mutex_lock(&n->state_lock);
	n->quorum = false;
	pthread_mutex_unlock(&n->state_lock);
	pthread_rwlock_unlock(&n->io);
	lease_stop(n);
	lease_drop(n);
}

/* form_connect_logs - the log endpoints to the nodes of @F, new incarnations included. The I/O
 * path is stopped (form_quiesce), so the writer's queue is this thread's meanwhile. */
static int form_connect_logs(struct coh_node *n, uint32_t F)
{
	struct coh_ep_attr a[NODE_MAX];
	struct coh_ep *made[NODE_MAX];
	uint32_t p, cnt = 0, i;
	int ret = 0;

	pthread_mutex_lock(&n->w.lock);
	for (p = 0; p < n->nodes; p++) {
		if (p == n->me)
			continue;
		if (n->w.ep[p] && (!(F >> p & 1) || !coh_ep_is_up(n->w.ep[p]))) {
			coh_rmr_delete(&n->w.rmr[p]);
			coh_ep_delete(&n->w.ep[p]);
		}
		if ((F >> p & 1) && !n->w.ep[p])
			a[cnt++] = (struct coh_ep_attr){ .peer = p,
							 .channel = CH_LOG,
							 .send_cq = n->w.cq,
							 .recv_cq = n->w.cq,
							 .max_send_wr = 160,
							 .max_recv_wr = 1,
							 .max_msg_size = 64,
							 .timeout_ms = n->timeout_ms };
	}
	/* All at once, as lease_connect. */
	if (cnt)
		ret = coh_ep_new_many(n->fab, a, cnt, made);
	for (i = 0; !ret && i < cnt; i++)
		n->w.ep[a[i].peer] = made[i];
	n->w.peers = 0;
	pthread_mutex_unlock(&n->w.lock);
	return ret;
}

static bool form_all_quiesced(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->quiesced, epoch, members, true);
}

/*
 * form_sync - wait until every node of @F has stopped serving for formation @E, so that the
 * endpoints are made by all at about the same time. Without it a node that served destaged its
 * cache first (form_quiesce) while a node that served nothing was already waiting for its
 * endpoints: on soft-RoCE under load that wait ran out, the formation failed, and the next
 * failed the same way (a joining node never got in). A destage may take a while: bounded by
 * five timeouts.
 */
static int form_sync(struct coh_node *n, uint32_t E, uint32_t F)
{
	memb_broadcast(n, memb_others(n, F), CTL_QUIESCED, E, F);
	return memb_wait_until(n, E, F, form_all_quiesced, 5ull * n->timeout_ms);
}

static bool form_all_descs(struct coh_node *n, uint32_t epoch, uint32_t members)
{
	return memb_all_reached(n, n->m->desc_epoch, epoch, members, true);
}

/* form_descs - give each node of @F the descriptor of the region hosted here for it, take the
 * ones they host for this node's log, and point the log writer at them. */
static int form_descs(struct coh_node *n, uint32_t E, uint32_t F)
{
	uint32_t p;
	int ret;

	for (p = 0; p < n->nodes; p++) {
		struct coh_mr_desc d;

		if (p == n->me || !n->host[p] || !(F >> p & 1))
			continue;
		/* A new key: descriptors of earlier lives stop working. */
		ret = coh_mr_rekey(n->host[p]);
		if (!ret)
			ret = coh_mr_export(n->host[p], &d);
		if (ret)
			return ret;
		{
			struct ctl_msg m = {
				.type = CTL_DESC, .epoch = E, .members = F, .desc = d
			};

			memb_send(n, p, &m);
		}
	}
	ret = memb_wait_until(n, E, F, form_all_descs, 3ull * n->timeout_ms);
	if (ret)
		return ret;
	pthread_mutex_lock(&n->w.lock);
	for (p = 0; p < n->nodes && !ret; p++) {
		if (p == n->me || !(F >> p & 1))
			continue;
		coh_rmr_delete(&n->w.rmr[p]);
		ret = coh_rmr_import(n->w.ep[p], &n->m->desc[p], &n->w.rmr[p]);
	}
	pthread_mutex_unlock(&n->w.lock);
	return ret;
}

/* form_wait_lease - the first lease of the new view: bounded by three timeouts (every member's
 * lease thread starts once its own steps before are done, and a member that replayed logs in
 * the recovery is later than the others: on soft-RoCE under TCG one timeout was not enough). */
static int form_wait_lease(struct coh_node *n, uint32_t E, uint32_t F)
{
	uint64_t deadline = node_now_ns() + 3ull * n->timeout_ms * 1000000ull;

	while (!node_lease_ok(n)) {
		if (node_now_ns() >= deadline)
			return -ETIMEDOUT;
		if (n->m->dead & F)
			return -EAGAIN;
		memb_pump(n, 1);
	}
	(void)E;
	return 0;
}

/* form_abort - a formation failed part way: drop what it built; serve nothing; form again. */
static void form_abort(struct coh_node *n, uint32_t E, int err)
{
	COH_LOG_WARN("node %u: formation of epoch %u failed: %s; serving nothing until the next",
		     n->me, E, coh_strerror(err));
	lease_stop(n);
	lease_drop(n);
	pthread_rwlock_wrlock(&n->io);
	coh_cache_abandon(&n->cache);
	pthread_rwlock_unlock(&n->io);
	pthread_mutex_lock(&n->state_lock);
	n->formations_failed++;
	n->quorum = false;
	n->forming = false;
	n->changing = false;
	__atomic_add_fetch(&n->progress, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
	n->m->form_cur_epoch = 0;
	n->m->form_cur_members = 0;
	memb_set_lease_members(n, 0);
	/* It may have served before this formation: nobody should take it for serving now. */
	memb_hello_stopped(n);
}

/* form_run - build view (E, F) with the other nodes of F. */
static int form_run(struct coh_node *n, uint32_t E, uint32_t F)
{
	uint64_t t0 = node_now_ns();
	uint32_t p;
	int ret;

	COH_LOG_INFO("node %u: forming epoch %u with nodes %#x", n->me, E, F);
	node_point(n, COH_CRASH_FORM_AGREED, E);
	if (n->quorum || n->cache)
		form_quiesce(n);
	pthread_mutex_lock(&n->state_lock);
	n->forming = true;
	n->changing = true;
	pthread_mutex_unlock(&n->state_lock);
	/* The nodes of F are alive and with us, whatever happened to them before. */
	n->m->dead &= ~F;
	n->m->proven &= ~F;
	n->m->bye &= ~F;
	n->m->joiners &= ~F;
	memb_set_lease_members(n, F);
	lease_stop(n);
	ret = form_sync(n, E, F);
	if (!ret)
		ret = form_connect_logs(n, F);
	if (!ret)
		ret = lease_connect(n, F);
	if (!ret)
		ret = memb_recover(n, F, E);
	if (!ret)
		node_point(n, COH_CRASH_FORM_RECOVERED, E);
	if (!ret)
		ret = form_descs(n, E, F);
	if (!ret)
		ret = rlog_writer_reset(&n->w, node_log_peers(n->nodes, F, n->me, n->k), n->k, E);
	if (!ret)
		ret = node_persist(n, E, F, true);
	if (!ret) {
		pthread_mutex_lock(&n->state_lock);
		n->epoch = E;
		n->members = F;
		pthread_mutex_unlock(&n->state_lock);
		ret = lease_start(n);
	}
	if (!ret)
		ret = form_wait_lease(n, E, F);
	if (!ret) {
		pthread_rwlock_wrlock(&n->io);
		ret = node_cache_open(n);
		pthread_rwlock_unlock(&n->io);
	}
	if (ret) {
		form_abort(n, E, ret);
		return ret;
	}
	pthread_mutex_lock(&n->state_lock);
	n->quorum = true;
	n->forming = false;
	n->changing = false;
	__atomic_add_fetch(&n->progress, 1, __ATOMIC_RELEASE);
	n->view_changes++;
	n->last_view_ns = node_now_ns() - t0;
	pthread_cond_broadcast(&n->view_cond);
	pthread_mutex_unlock(&n->state_lock);
	n->m->form_cur_epoch = 0;
	n->m->form_cur_members = 0;
	n->m->down_ns = 0;
	COH_LOG_INFO("node %u: serving in epoch %u, members %#x (formed in %llu ms)", n->me, E, F,
		     (unsigned long long)(node_now_ns() - t0) / 1000000ull);
	node_point(n, COH_CRASH_FORM_COMMITTED, E);
	for (p = 0; p < n->nodes; p++) {
		if (memb_others(n, n->m->conn) >> p & 1)
			memb_hello(n, 1u << p);
	}
	return 0;
}

/* form_lead - as the leader, propose a formation when one is due. */
static void form_lead(struct coh_node *n)
{
	uint32_t conn = n->m->conn | 1u << n->me, serving = 0, p, F, wait;
	uint64_t now = node_now_ns();
	char why[160] = "";

	if (n->m->form_cur_epoch)
		return;
	if (n->quorum) {
		/* A serving leader admits the connected nodes that asked. */
		uint32_t ask = n->m->joiners & n->m->conn & ~n->members;

		if (!ask || n->changing || form_lowest(n->members & ~n->m->dead) != n->me)
			return;
		COH_LOG_INFO("node %u: admitting nodes %#x into the cluster", n->me, ask);
		form_adopt(n, form_newest_epoch(n) + 1, (n->members & ~n->m->dead) | ask);
		return;
	}
	/* Not serving: join a serving cluster if there is one; otherwise lead a formation. */
	for (p = 0; p < n->nodes; p++) {
		/* A serving node's HELLO names its members; one that serves nothing names none
		 * (its epoch is still there, for form_newest_epoch). */
		if ((n->m->conn >> p & 1) && n->m->hello_members[p])
			serving |= 1u << p;
	}
	if (serving) {
		/* Ask every serving node (the leader may not be connected yet, or not be the one
		 * this node thinks): each records the ask and the leader of their view admits. A
		 * serving node that connects later is asked at once; all again after a timeout. */
		uint32_t ask = serving;

		if (now - n->m->join_sent_ns > (uint64_t)n->timeout_ms * 1000000ull) {
			n->m->join_sent_ns = now;
			n->m->join_asked = 0;
		}
		ask &= ~n->m->join_asked;
		for (p = 0; p < n->nodes; p++) {
			struct ctl_msg m = { .type = CTL_JOIN, .epoch = n->st.prepared_epoch };

			if (!(ask >> p & 1))
				continue;
			COH_LOG_INFO("node %u: asking node %u to admit it (epoch %u)", n->me, p,
				     n->m->hello_epoch[p]);
			memb_send(n, p, &m);
			n->m->join_asked |= 1u << p;
		}
		return;
	}
	F = conn & ~serving;
	if (form_lowest(F) != n->me || !node_majority(n, F))
		goto waiting;
	/* Everyone this node has heard from has said what it kept. */
	if ((n->m->hello_seen | 1u << n->me) != (F | 1u << n->me) && F != (1u << n->me))
		goto waiting;
	if (F != form_all(n) && now - n->m->forming_since_ns < (uint64_t)n->timeout_ms * 1000000ull)
		goto waiting;
	wait = rec_wait_for(n, F, why, sizeof(why));
	if (wait && !n->force_open)
		goto waiting;
	if (wait)
		COH_LOG_ERR("node %u: forced open without nodes %#x (%s): acknowledged writes not "
			    "yet destaged that only they hold are lost",
			    n->me, wait, why);
	form_adopt(n, form_newest_epoch(n) + 1, F);
	return;
waiting:
	if (now - n->m->waiting_log_ns > 5000000000ull) {
		uint32_t absent = form_all(n) & ~conn;

		n->m->waiting_log_ns = now;
		if (!node_majority(n, F))
			COH_LOG_INFO("node %u: waiting for a majority: connected %#x, absent %#x",
				     n->me, conn, absent);
		else if (why[0])
			COH_LOG_INFO("node %u: waiting for nodes %#x: %s (force_open goes on "
				     "without them)",
				     n->me, absent & rec_wait_for(n, F, NULL, 0), why);
	}
}

void form_step(struct coh_node *n)
{
	uint32_t p, E = n->m->form_cur_epoch, F = n->m->form_cur_members;

	form_lead(n);
	/* Adopt a newer proposal that includes this node and whose nodes are all connected. */
	for (p = 0; p < n->nodes; p++) {
		uint32_t pe = n->m->form_epoch[p], pf = n->m->form_members[p];

		/* Only a view newer than any this node had (the echoes of one it has built stay
		 * recorded). */
		if (p == n->me || !pe || pe <= E || pe <= n->epoch || !(pf >> n->me & 1) ||
		    (memb_others(n, pf) & ~n->m->conn))
			continue;
		/* A serving node follows only its own leader, growing its view. */
		if (n->quorum && ((pf & n->members & ~n->m->dead) != (n->members & ~n->m->dead) ||
				  form_lowest(n->members & ~n->m->dead) != p))
			continue;
		if (n->changing && n->quorum)
			continue;
		form_adopt(n, pe, pf);
		E = pe;
		F = pf;
	}
	if (!E)
		return;
	if (form_agreed(n, E, F)) {
		form_run(n, E, F);
		return;
	}
	if (node_now_ns() - n->m->form_since_ns > 3ull * n->timeout_ms * 1000000ull) {
		COH_LOG_INFO(
		    "node %u: proposal of epoch %u (nodes %#x) not agreed in time; dropped", n->me,
		    E, F);
		n->m->form_cur_epoch = 0;
		n->m->form_cur_members = 0;
	}
}
