/*
 * router.c - the router (router.h): a command's way from the controller that received it to
 * the engines that hold its data.
 *
 * A command is an operation object (struct route_op) with a state: ROUTE_FORWARDED (sent whole
 * to a virtual volume's coordinator), ROUTE_HELD (waiting for its coordination grant),
 * ROUTE_RUNNING (its component commands, struct route_sub, out on engines or forwarded), then
 * completed once: the caller's callback, or coh_fwd_complete for a command executed for another
 * controller. A component command is one piece of the split (coh_map_split): a contiguous range
 * of one logical volume and of the host's buffer, so no data is copied here.
 *
 * Back-pressure: a component an engine or the forwarder refuses with -EBUSY waits in @pending
 * and is tried again when another component completes; with nothing else out, it fails with
 * -EBUSY instead of waiting for a completion that will not come.
 *
 * Leaves out: what router.h says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cohort/log.h"
#include "cohort/route_hooks.h"
#include "cohort/router.h"
#include "le.h"

#define ROUTE_DEFAULT_RETRIES 4u
#define ROUTE_DEFAULT_COORD_MS 30000u
#define ROUTE_DEFAULT_MAX_OPS 256u
#define ROUTE_DEFAULT_REROUTE_WAIT_MS 8000u

enum route_state {
	ROUTE_FORWARDED = 1,
	ROUTE_HELD,
	ROUTE_RUNNING,
	ROUTE_DONE,
};

struct route_op;

struct route_sub {
	struct route_op *op;
	bool whole;	 /* the whole command, to the virtual volume's coordinator */
	uint32_t comp;	 /* its component; the group for a flush */
	uint32_t volume; /* the logical volume */
	uint64_t vlba;	 /* first block in the logical volume */
	uint64_t gblock; /* the same in the group */
	uint32_t group, nblocks, tries;
	void *buf;
	int status;
	uint32_t done, miscompare; /* a compare-and-write's -EILSEQ: the first byte that differs */
	struct coh_io io;
	struct coh_fwd_cmd fc;
	/* waiting for the group's view to exclude @gone (rdma: a broken connection; a target
	 * that did not answer in time), until @gone_deadline_ns, then failed with @gone_status */
	uint32_t gone;
	int gone_status;
	uint64_t gone_deadline_ns;
	struct route_sub *next; /* in @pending or @parked */
};

/* A version of the mapping table. An operation holds the one it started under to its end (a
 * command runs entirely under one table); a change makes a new one current. */
struct route_table {
	struct coh_map map;
	_Atomic uint32_t refs;
};

struct route_op {
	struct coh_route *r;
	struct route_table *tab;
	uint32_t state, type, volume, nblocks;
	uint64_t lba;
	void *buf;
	struct coh_route_io *rio;  /* submitted here, or */
	struct coh_fwd_cmd *fcmd;  /* executed for another controller */
	struct coh_coord_req creq; /* its grant, when it has one */
	bool granted;
	uint32_t ncomps, nsubs;
	struct coh_map_comp comps[COH_MAP_MAX_COMPONENTS];
	struct coh_map_piece *pieces;
	struct route_sub *subs;
	_Atomic uint32_t outstanding;
};

struct route_change;

struct coh_route {
	struct coh_route_attr a;
	struct coh_map first; /* the table as the caller gave it (a.map points here) */
	char *map_path;	      /* where the table is kept, or NULL */
	char *accept_path;    /* where the acceptor's state is kept (@map_path.accept), or NULL */
	uint32_t me, max_blocks, fwd_timeout_ms;
	struct coh_fwd *fwd;
	struct coh_coord *coord;
	pthread_mutex_t save_lock;    /* the table file, and the switch that follows a save;
				       * the acceptor's state and its file */
	struct coh_map_accept acc;    /* the acceptor's state (route_promise, route_accept) */
	pthread_mutex_t lock;	      /* everything below */
	pthread_cond_t cond;	      /* @inside went to 0 while stopping; the table changed */
	struct route_table *tab;      /* the current table */
	struct route_change *change;  /* the change this controller runs, as the configuration
				      * controller */
	uint64_t round;		      /* the last ballot round it proposed in */
	struct coh_route_hooks hooks; /* route_hooks.h */
	/* whether @hooks has a point: read without the lock, so that a command's points cost
	 * nothing (no lock) when no test installed any */
	_Atomic bool hooked;
	uint32_t inside; /* engine threads in a completion of ours (route_enter) */
	struct route_sub *pending;
	struct route_sub *parked; /* waiting for a view to exclude their target */
	uint32_t running;	  /* components out on an engine or the forwarder */
	uint32_t ops;		  /* commands in flight */
	/* each group's view at the forwarder's last tick (route_tick; its thread only) */
	uint32_t tick_view[COH_MAP_MAX_GROUPS];
	/* A peer's table this controller refused (another table of the same version, or a newer
	 * one it may not take: two histories of changes), per peer while it is connected: the
	 * volumes the two disagree on are fenced here (route_fenced) until the peer offers a
	 * table that agrees or goes down. @conflicts has a bit per entry set, read without the
	 * lock by every command. */
	struct route_table *conflict[COH_MAP_MAX_NODES];
	_Atomic uint32_t conflicts;
	bool stopping;
	struct coh_route_stats st;
};

static void route_sub_run(struct route_sub *s);
static int route_point(struct coh_route *r, uint32_t point, uint64_t detail);
static void route_op_run(struct route_op *op);
static void route_tab_put(struct route_table *t);
static void route_coordinate(struct route_op *op);
static bool route_map_same(const struct coh_map *a, const struct coh_map *b);
static void route_change_tick(struct coh_route *r, uint64_t now);
static void route_offer(struct coh_route *r, uint32_t peers);
static uint32_t route_config_live(struct coh_route *r);

static uint64_t route_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static bool route_gone(int status)
{
	return status == -ECONNRESET || status == -EHOSTDOWN;
}

static void route_count(struct coh_route *r, uint64_t *field)
{
	pthread_mutex_lock(&r->lock);
	(*field)++;
	pthread_mutex_unlock(&r->lock);
}

/* route_tab_new - a table of one reference (the caller's), a copy of @m. */
static struct route_table *route_tab_new(const struct coh_map *m)
{
	struct route_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->map = *m;
	atomic_store(&t->refs, 1);
	return t;
}

/* route_tab_get - a reference to the current table. */
static struct route_table *route_tab_get(struct coh_route *r)
{
	struct route_table *t;

	pthread_mutex_lock(&r->lock);
	t = r->tab;
	atomic_fetch_add(&t->refs, 1);
	pthread_mutex_unlock(&r->lock);
	return t;
}

static void route_tab_put(struct route_table *t)
{
	if (t && atomic_fetch_sub(&t->refs, 1) == 1)
		free(t);
}

/* route_kick - try the components that waited for room again; let held grants expire. */
static void route_kick(struct coh_route *r)
{
	struct route_sub *s, *list;

	coh_coord_expire(r->coord, route_now_ns());
	pthread_mutex_lock(&r->lock);
	list = r->pending;
	r->pending = NULL;
	pthread_mutex_unlock(&r->lock);
	while ((s = list)) {
		list = s->next;
		route_sub_run(s);
	}
}

/* route_op_free - the end of an operation: its memory and its count. */
static void route_op_free(struct route_op *op)
{
	struct coh_route *r = op->r;

	pthread_mutex_lock(&r->lock);
	r->ops--;
	pthread_mutex_unlock(&r->lock);
	route_tab_put(op->tab);
	free(op->subs);
	free(op->pieces);
	free(op);
}

/* route_op_complete - answer the command with @st, once. */
static void route_op_complete(struct route_op *op, const struct coh_map_status *st)
{
	struct coh_route *r = op->r;

	op->state = ROUTE_DONE;
	if (op->granted) {
		op->granted = false;
		coh_coord_release(r->coord, &op->creq); /* grants those waiting for the range */
	}
	if (!op->rio)
		route_point(r, COH_ROUTE_POINT_CMD_EXECUTED,
			    (uint64_t)op->fcmd->origin << 32 | (uint32_t)st->status);
	if (op->rio)
		op->rio->done(op->rio, st);
	else if (op->type == COH_IO_COMPARE_WRITE)
		coh_fwd_complete(op->fcmd, st->status, st->status == -EILSEQ ? st->miscompare : 0);
	else
		coh_fwd_complete(op->fcmd, st->status, st->status ? st->good : 0);
	route_op_free(op);
	route_kick(r);
}

static void route_op_fail(struct route_op *op, int status)
{
	struct coh_map_status st = { .status = status, .comp = -1 };

	route_op_complete(op, &st);
}

/* route_op_finish - every component is done: the aggregate status. */
static void route_op_finish(struct route_op *op)
{
	struct coh_map_result res[COH_MAP_MAX_COMPONENTS];
	struct coh_map_status st;
	uint32_t c, i;

	if (op->type == COH_IO_COMPARE_WRITE) {
		/* One component, whole (route_op_plan): its status is the command's. */
		memset(&st, 0, sizeof(st));
		st.comp = -1;
		st.status = op->subs[0].status;
		st.good = st.status ? 0 : op->nblocks;
		st.miscompare = op->subs[0].miscompare;
		route_op_complete(op, &st);
		return;
	}
	if (op->type == COH_IO_FLUSH || op->subs[0].whole) {
		memset(&st, 0, sizeof(st));
		st.comp = -1;
		for (i = 0; i < op->nsubs && !st.status; i++)
			st.status = op->subs[i].status;
		/* The coordinator's count is the whole command's: blocks done before its error. */
		st.good =
		    st.status ? (op->type == COH_IO_FLUSH ? 0 : op->subs[0].done) : op->nblocks;
		st.fail_block = st.good;
		route_op_complete(op, &st);
		return;
	}
	/* A component's subs are its pieces in order: its count is what they did, up to the
	 * first that failed. */
	for (c = 0; c < op->ncomps; c++) {
		uint32_t done = 0;

		res[c].status = 0;
		for (i = 0; i < op->nsubs; i++) {
			struct route_sub *s = &op->subs[i];

			if (s->comp != c)
				continue;
			if (s->status) {
				res[c].status = s->status;
				done += s->done < s->nblocks ? s->done : 0;
				break;
			}
			done += s->nblocks;
		}
		res[c].done = res[c].status ? done : 0;
	}
	coh_map_aggregate(op->comps, op->pieces, op->ncomps, op->nblocks, res, &st);
	route_op_complete(op, &st);
}

/* route_sub_finish - component @s is done with @status after @done blocks. */
static void route_sub_finish(struct route_sub *s, int status, uint32_t done)
{
	struct route_op *op = s->op;

	if (op->nsubs > 1)
		route_point(op->r, COH_ROUTE_POINT_COMPONENT_DONE,
			    (uint64_t)s->comp << 32 | (uint32_t)status);
	s->status = status;
	s->done = status ? done : s->nblocks;
	if (atomic_fetch_sub(&op->outstanding, 1) == 1)
		route_op_finish(op);
}

/* route_sub_ended - an engine or the forwarder gave @s back: count it, then the others'
 * turn. */
static void route_sub_ended(struct coh_route *r)
{
	pthread_mutex_lock(&r->lock);
	r->running--;
	pthread_mutex_unlock(&r->lock);
}

/* route_enter, route_leave - around a completion on an engine's thread: the caller's callback
 * runs inside it, and the caller may delete the router as soon as it has its last completion,
 * while this thread still has the rest of the completion to run (coh_route_delete waits). */
static void route_enter(struct coh_route *r)
{
	pthread_mutex_lock(&r->lock);
	r->inside++;
	pthread_mutex_unlock(&r->lock);
}

static void route_leave(struct coh_route *r)
{
	pthread_mutex_lock(&r->lock);
	if (!--r->inside)
		pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock); /* the last touch of @r */
}

static void route_sub_io_done(struct coh_io *io, int status, void *arg)
{
	struct route_sub *s = arg;
	struct coh_route *r = s->op->r;

	route_enter(r);
	route_sub_ended(r);
	s->miscompare = status == -EILSEQ ? io->miscompare : 0;
	route_sub_finish(s, status, 0);
	route_kick(r);
	route_leave(r);
}

static void route_sub_fwd_done(struct coh_fwd_cmd *fc, int status, uint32_t done)
{
	struct route_sub *s = fc->arg;
	struct coh_route *r = s->op->r;

	route_sub_ended(r);
	if (route_gone(status) && s->tries < r->a.retries) {
		/* The target is gone: route it again, to a live AMF (after its takeover). */
		s->tries++;
		route_count(r, &r->st.rerouted);
		route_sub_run(s);
	} else if ((status == -ECONNABORTED || status == -ETIMEDOUT) && r->a.group_view &&
		   s->tries < r->a.retries) {
		/* Cut off, or silent (paused?), not proven dead: it may yet execute this. Routed
		 * again only once the group's view (a coordinator: every group's) has excluded it
		 * (route_tick); past the wait, the status stands. */
		s->gone = fc->peer;
		s->gone_status = status;
		s->gone_deadline_ns = route_now_ns() + (uint64_t)r->a.reroute_wait_ms * 1000000ull;
		pthread_mutex_lock(&r->lock);
		s->next = r->parked;
		r->parked = s;
		r->st.waited_views++;
		pthread_mutex_unlock(&r->lock);
	} else {
		/* A compare-and-write's miscompare comes with its offset as the count. */
		s->miscompare = status == -EILSEQ && fc->op == COH_FWD_CAW ? done : 0;
		route_sub_finish(s, status, fc->op == COH_FWD_CAW ? 0 : done);
	}
	route_kick(r);
}

/* route_sub_busy - @s was refused for room: wait for a completion, unless none will come. */
static void route_sub_busy(struct route_sub *s)
{
	struct coh_route *r = s->op->r;
	bool wait;

	pthread_mutex_lock(&r->lock);
	wait = r->running > 0 && !r->stopping;
	if (wait) {
		s->next = r->pending;
		r->pending = s;
	}
	pthread_mutex_unlock(&r->lock);
	if (!wait)
		route_sub_finish(s, -EBUSY, 0);
}

/* route_holder - the live AMF of @s's group that holds the lock of its first block, as the
 * group's directory says (group_holders), or COH_MAP_NO_NODE: none does, the caller gave no way
 * to ask, or there is no choice to make (this controller is an AMF, or only one is alive). */
static uint32_t route_holder(struct coh_route *r, const struct route_sub *s, uint32_t alive)
{
	const struct coh_map_group *g = &s->op->tab->map.groups[s->group];
	uint32_t amfs = g->amfs & alive, owner = COH_MAP_NO_NODE, sharers = 0, held;

	/* Not on the forwarder's thread (a coordinator splitting a forwarded command): the READ
	 * of the word may wait, and that thread forwards every command of this controller. */
	if (!r->a.group_holders || s->op->type == COH_IO_FLUSH || (g->amfs >> r->me & 1) ||
	    __builtin_popcount(amfs) < 2 || coh_fwd_on_thread(r->fwd) ||
	    r->a.group_holders(r->a.view_arg, s->group, s->gblock, &owner, &sharers))
		return COH_MAP_NO_NODE;
	held = (owner < 32 ? 1u << owner : sharers) & amfs;
	if (!held)
		return COH_MAP_NO_NODE;
	return held >> g->preferred & 1 ? g->preferred : (uint32_t)__builtin_ctz(held);
}

/*
 * route_live - the controllers a command may go to: those the forwarder is connected to (and
 * this one), less those group @g's view here has excluded (@g == COH_MAP_NO_NODE: any group's,
 * for the coordinator of whole commands). An excluded controller may still be connected: one
 * that was paused is fenced, and what is sent to it would wait for its deadline.
 */
static uint32_t route_live(struct coh_route *r, const struct coh_map *m, uint32_t g)
{
	uint32_t alive = coh_fwd_up(r->fwd), v, i;

	if (!r->a.group_view)
		return alive;
	for (i = 0; i < m->ngroups; i++) {
		if (g != COH_MAP_NO_NODE && i != g)
			continue;
		v = r->a.group_view(r->a.view_arg, i);
		if (v) /* no view (an engine stopping): nothing learnt */
			alive &= v | 1u << r->me;
	}
	return alive;
}

/* route_pick - the target of component @s (coh_map_target), the lock's holder first. */
static int route_pick(struct coh_route *r, struct route_op *op, const struct route_sub *s,
		      uint32_t *target)
{
	uint32_t alive = route_live(r, &op->tab->map, s->group), holder = route_holder(r, s, alive);
	int ret;

	ret = coh_map_target(&op->tab->map, s->volume, r->me, alive, holder, target);
	if (!ret && holder != COH_MAP_NO_NODE && *target == holder &&
	    holder != op->tab->map.groups[s->group].preferred)
		route_count(r, &r->st.to_holder);
	return ret;
}

/* route_read_cached - a one-block read forwarded here, answered from the group's cache on the
 * forwarder's thread when the engine can without waiting (group_read_cached): no engine thread
 * is woken for it. Only there: a caller's own thread gets its callback after its submit. */
static bool route_read_cached(struct coh_route *r, struct route_op *op, struct route_sub *s)
{
	int (*rd)(void *arg, uint64_t lba, void *buf) = r->a.group_read_cached[s->group];

	if (!rd || op->type != COH_IO_READ || s->nblocks != 1 || !coh_fwd_on_thread(r->fwd) ||
	    rd(r->a.group_arg[s->group], s->gblock, s->buf))
		return false;
	route_count(r, &r->st.read_cached);
	route_count(r, &r->st.local);
	route_sub_ended(r);
	route_sub_finish(s, 0, 0);
	route_kick(r);
	return true;
}

/* route_sub_run - send component @s to its group's engine here, or to an AMF of the group. */
static void route_sub_run(struct route_sub *s)
{
	struct route_op *op = s->op;
	struct coh_route *r = op->r;
	uint32_t target;
	int ret;

	for (;;) {
		if (s->whole) {
			/* The coordinator of virtual volumes: the lowest live controller. */
			target =
			    (uint32_t)__builtin_ctz(route_live(r, &op->tab->map, COH_MAP_NO_NODE));
			ret = 0;
			if (target == r->me) {
				/* This one is it now (the one before it is gone). */
				op->subs[0].whole = false;
				free(op->subs);
				op->subs = NULL;
				op->nsubs = 0;
				route_coordinate(op);
				return;
			}
		} else {
			ret = route_pick(r, op, s, &target);
		}
		if (ret) {
			route_sub_finish(s, ret, 0);
			return;
		}
		pthread_mutex_lock(&r->lock);
		r->running++;
		pthread_mutex_unlock(&r->lock);
		if (target == r->me && route_read_cached(r, op, s))
			return;
		if (target == r->me) {
			memset(&s->io, 0, sizeof(s->io));
			s->io.io_size = sizeof(s->io);
			s->io.type = op->type;
			s->io.lba = op->type == COH_IO_FLUSH ? 0 : s->gblock;
			s->io.nblocks = op->type == COH_IO_FLUSH ? 0 : s->nblocks;
			s->io.buf = s->buf;
			s->io.cb = route_sub_io_done;
			s->io.cb_arg = s;
			ret = r->a.group_submit[s->group](r->a.group_arg[s->group], &s->io);
			if (!ret)
				route_count(r, &r->st.local);
		} else {
			memset(&s->fc, 0, sizeof(s->fc));
			s->fc.op = op->type;
			s->fc.volume = s->volume;
			s->fc.map_version = op->tab->map.version;
			memcpy(s->fc.volume_id, op->tab->map.volumes[s->volume].id,
			       COH_MAP_ID_BYTES);
			s->fc.lba = s->vlba;
			s->fc.nblocks = op->type == COH_IO_FLUSH ? 0 : s->nblocks;
			s->fc.buf = s->buf;
			s->fc.done = route_sub_fwd_done;
			s->fc.arg = s;
			ret = coh_fwd_submit(r->fwd, target, &s->fc);
			if (!ret)
				route_count(r, &r->st.forwarded);
		}
		if (!ret)
			return;
		route_sub_ended(r);
		if (ret == -EBUSY) {
			route_sub_busy(s);
			return;
		}
		if (!route_gone(ret) || s->tries >= r->a.retries) {
			route_sub_finish(s, ret, 0);
			return;
		}
		s->tries++; /* the target went down between the look and the submit */
		route_count(r, &r->st.rerouted);
	}
}

/* route_first_logical - a logical volume of group @g (a flush is sent by one), or -1. */
static int route_first_logical(const struct coh_map *m, uint32_t g)
{
	uint32_t v;

	for (v = 0; v < m->nvolumes; v++)
		if (m->volumes[v].kind == COH_MAP_LOGICAL && m->volumes[v].group == g)
			return (int)v;
	return -1;
}

/* route_op_plan - the components and subs of @op (the split, or one per group for a flush). */
static int route_op_plan(struct route_op *op)
{
	const struct coh_map *m = &op->tab->map;
	uint32_t g, c, p, n = 0, maxp;
	int v, ret;

	if (op->type == COH_IO_FLUSH) {
		op->subs = calloc(m->ngroups, sizeof(*op->subs));
		if (!op->subs)
			return -ENOMEM;
		for (g = 0; g < m->ngroups; g++) {
			v = route_first_logical(m, g);
			/* A flush sent by another controller is for its volume's group only. */
			if (v < 0 || (op->fcmd && m->volumes[op->volume].group != g))
				continue;
			op->subs[n].op = op;
			op->subs[n].comp = g;
			op->subs[n].group = g;
			op->subs[n].volume = (uint32_t)v;
			n++;
		}
		op->nsubs = n;
		return 0;
	}
	maxp = coh_map_split_pieces(m, op->volume, op->nblocks);
	op->pieces = calloc(maxp, sizeof(*op->pieces));
	if (!op->pieces)
		return -ENOMEM;
	ret = coh_map_split(m, op->volume, op->lba, op->nblocks, op->comps, COH_MAP_MAX_COMPONENTS,
			    &op->ncomps, op->pieces, maxp, &op->nsubs);
	if (ret)
		return ret;
	/* A compare-and-write is atomic only inside one group's engine: its range must lie in one
	 * component, in one piece (a stripe's chunk); its buffer is the compare data, then the
	 * write data. */
	if (op->type == COH_IO_COMPARE_WRITE && (op->ncomps != 1 || op->nsubs != 1))
		return -EINVAL;
	op->subs = calloc(op->nsubs, sizeof(*op->subs));
	if (!op->subs)
		return -ENOMEM;
	for (c = 0; c < op->ncomps; c++) {
		const struct coh_map_comp *k = &op->comps[c];
		uint64_t off = 0;

		for (p = 0; p < k->npieces; p++) {
			const struct coh_map_piece *pc = &op->pieces[k->first_piece + p];
			struct route_sub *s = &op->subs[k->first_piece + p];

			s->op = op;
			s->comp = c;
			s->volume = k->volume;
			s->group = k->group;
			s->vlba = k->lba + off;
			s->gblock = k->group_block + off;
			s->nblocks = pc->nblocks;
			s->buf = (uint8_t *)op->buf + pc->host_block * m->block_size;
			off += pc->nblocks;
		}
	}
	return 0;
}

/* route_op_run - the grant is had (or not needed): send every component. */
static void route_op_run(struct route_op *op)
{
	uint32_t i, n;
	int ret;

	ret = route_op_plan(op);
	if (ret) {
		route_op_fail(op, ret);
		return;
	}
	if (!op->nsubs) {
		route_op_finish(op);
		return;
	}
	op->state = ROUTE_RUNNING;
	n = op->nsubs;
	atomic_store(&op->outstanding, n);
	if (op->ncomps > 1)
		route_count(op->r, &op->r->st.components);
	for (i = 0; i < n; i++)
		route_sub_run(&op->subs[i]); /* the last one may free @op: read nothing after */
}

static void route_coord_granted(struct coh_coord_req *req, int status)
{
	struct route_op *op = req->arg;

	if (status) {
		route_op_fail(op, status);
		return;
	}
	op->granted = true;
	route_op_run(op);
}

/*
 * route_coord_key - where @op's range lies in the coordination table: its virtual volume's own
 * space, so that commands on two virtual volumes (which share no component: coh_map_check)
 * never wait for each other. The volume's id, folded, is the top 16 bits (stable across table
 * versions, as the id is); a fold shared by two volumes only makes them wait needlessly, never
 * lets an overlap through. A range past 2^48 blocks goes in one space for all.
 */
static uint64_t route_coord_key(const struct route_op *op)
{
	const uint8_t *id = op->tab->map.volumes[op->volume].id;
	uint32_t h = 2166136261u, i;

	if (op->lba + op->nblocks >= 1ull << 48)
		return op->lba;
	for (i = 0; i < COH_MAP_ID_BYTES; i++)
		h = (h ^ id[i]) * 16777619u;
	return (uint64_t)((h ^ h >> 16) & 0x7fff) << 48 | op->lba;
}

/* route_coordinate - at the coordinator: the grant on the range, then the components. */
static void route_coordinate(struct route_op *op)
{
	struct coh_route *r = op->r;
	int ret;

	memset(&op->creq, 0, sizeof(op->creq));
	op->creq.lba = route_coord_key(op);
	op->creq.nblocks = op->nblocks;
	op->creq.origin = op->fcmd ? op->fcmd->origin : r->me;
	op->creq.granted = route_coord_granted;
	op->creq.arg = op;
	op->state = ROUTE_HELD;
	ret = coh_coord_request(r->coord, &op->creq,
				route_now_ns() + (uint64_t)r->a.coord_timeout_ms * 1000000ull);
	if (ret == -EINPROGRESS) {
		route_count(r, &r->st.coord_held);
		return; /* route_coord_granted runs later */
	}
	if (ret) {
		route_op_fail(op, ret);
		return;
	}
	op->granted = true;
	route_op_run(op);
}

/* route_op_new - an operation for @type on @volume, counted against max_ops when @bounded. */
static struct route_op *route_op_new(struct coh_route *r, bool bounded, int *ret)
{
	struct route_op *op;

	pthread_mutex_lock(&r->lock);
	*ret = r->stopping ? -ESHUTDOWN : bounded && r->ops >= r->a.max_ops ? -EBUSY : 0;
	if (!*ret)
		r->ops++;
	pthread_mutex_unlock(&r->lock);
	if (*ret)
		return NULL;
	op = calloc(1, sizeof(*op));
	if (!op) {
		pthread_mutex_lock(&r->lock);
		r->ops--;
		pthread_mutex_unlock(&r->lock);
		*ret = -ENOMEM;
		return NULL;
	}
	op->r = r;
	op->tab = route_tab_get(r);
	return op;
}

/* route_start - a new operation's first step. */
static void route_start(struct route_op *op)
{
	struct coh_route *r = op->r;

	if (op->type != COH_IO_FLUSH && op->tab->map.volumes[op->volume].kind == COH_MAP_VIRTUAL) {
		/* A command sent here by another controller is coordinated here: its origin chose
		 * this controller. */
		if (op->fcmd || (uint32_t)__builtin_ctz(
				    route_live(r, &op->tab->map, COH_MAP_NO_NODE)) == r->me) {
			route_coordinate(op);
			return;
		}
		/* Else it goes whole to the coordinator, as a command of its own. */
		op->subs = calloc(1, sizeof(*op->subs));
		if (!op->subs) {
			route_op_fail(op, -ENOMEM);
			return;
		}
		op->nsubs = 1;
		op->subs[0].op = op;
		op->subs[0].whole = true;
		op->subs[0].volume = op->volume;
		op->subs[0].vlba = op->lba;
		op->subs[0].nblocks = op->nblocks;
		op->subs[0].buf = op->buf;
		op->state = ROUTE_FORWARDED;
		atomic_store(&op->outstanding, 1);
		route_sub_run(&op->subs[0]);
		return;
	}
	route_op_run(op);
}

/* route_excluded - whether @s's target (@s->gone) is out of the view of its group, or, sent
 * whole to a coordinator, of every group: fenced there, and refused by every AMF from now on
 * (route_origin_ok), so nothing it still has can land after the retry. */
static bool route_excluded(struct coh_route *r, const struct route_sub *s)
{
	const struct coh_map *m = &s->op->tab->map;
	uint32_t g;

	if (!s->whole)
		return !(r->a.group_view(r->a.view_arg, s->group) & (1u << s->gone));
	for (g = 0; g < m->ngroups; g++)
		if (r->a.group_view(r->a.view_arg, g) & (1u << s->gone))
			return false;
	return true;
}

/* route_origin_ok - a command from @origin on volume @v may run here: with the groups' views,
 * only while @origin is in the view of every group it touches (an excluded controller is
 * fenced: a component it sends late, of a command whose retry went elsewhere, must not land
 * after that retry). */
static bool route_origin_ok(struct coh_route *r, const struct coh_map *m, uint32_t v,
			    uint32_t origin)
{
	const struct coh_map_volume *vo = &m->volumes[v];
	uint32_t c;

	if (!r->a.group_view)
		return true;
	if (vo->kind == COH_MAP_LOGICAL)
		return r->a.group_view(r->a.view_arg, vo->group) & (1u << origin);
	for (c = 0; c < vo->ncomp; c++)
		if (!(r->a.group_view(r->a.view_arg, m->volumes[vo->comp[c]].group) &
		      (1u << origin)))
			return false;
	return true;
}

/* route_vol_same - whether volume @i of @m is the same in @o: there by its id, in the same
 * blocks of the same group (a logical volume), or over the same components laid out alike,
 * each the same (a virtual one). Then a command on it means the same blocks under either. */
static bool route_vol_same(const struct coh_map *m, uint32_t i, const struct coh_map *o)
{
	const struct coh_map_volume *a = &m->volumes[i], *b;
	int j = coh_map_find_id(o, a->id, i);
	uint32_t c;

	if (j < 0)
		return false;
	b = &o->volumes[j];
	if (a->kind != b->kind || a->blocks != b->blocks)
		return false;
	if (a->kind == COH_MAP_LOGICAL)
		return a->group == b->group && a->first_block == b->first_block;
	if (a->layout != b->layout || a->stripe_blocks != b->stripe_blocks || a->ncomp != b->ncomp)
		return false;
	for (c = 0; c < a->ncomp; c++)
		if (memcmp(m->volumes[a->comp[c]].id, o->volumes[b->comp[c]].id,
			   COH_MAP_ID_BYTES) ||
		    !route_vol_same(m, a->comp[c], o))
			return false;
	return true;
}

/* route_fenced - whether volume @v of @m is fenced by a conflict: a peer's refused table
 * (struct coh_route's @conflict) has it otherwise, or not at all. Two controllers that run
 * different tables would otherwise write the same blocks as two volumes (one grown into what
 * the other added). */
static bool route_fenced(struct coh_route *r, const struct coh_map *m, uint32_t v)
{
	uint32_t p;
	bool fenced = false;

	if (!atomic_load(&r->conflicts))
		return false;
	pthread_mutex_lock(&r->lock);
	for (p = 0; p < r->first.nodes && !fenced; p++)
		if (r->conflict[p])
			fenced = !route_vol_same(m, v, &r->conflict[p]->map);
	if (fenced)
		r->st.refused_conflict++;
	pthread_mutex_unlock(&r->lock);
	return fenced;
}

/* route_conflict_set - @peer's table @m was refused here (a conflict), or agrees now (@m
 * NULL: the conflict ends). True when that is news: a conflict not known before. */
static bool route_conflict_set(struct coh_route *r, uint32_t peer, const struct coh_map *m)
{
	struct route_table *old, *t = m ? route_tab_new(m) : NULL;
	bool fresh;

	if (peer >= COH_MAP_MAX_NODES || (m && !t))
		return false; /* no memory: the next offer tries again */
	pthread_mutex_lock(&r->lock);
	old = r->conflict[peer];
	fresh = m && (!old || !route_map_same(&old->map, m));
	if (!fresh && m) {
		route_tab_put(t); /* the one already held */
		t = old;
		old = NULL;
	}
	r->conflict[peer] = t;
	if (t)
		atomic_fetch_or(&r->conflicts, 1u << peer);
	else
		atomic_fetch_and(&r->conflicts, ~(1u << peer));
	r->st.conflict_peers = atomic_load(&r->conflicts);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (old && !m)
		COH_LOG_WARN("route: node %u: the conflict with node %u's table has ended", r->me,
			     peer);
	route_tab_put(old);
	return fresh;
}

/* route_tick - the forwarder's tick: components waiting for their group's view to exclude the
 * target they were cut off from are routed again once it has, or fail past their bound. */
static void route_tick(void *arg)
{
	struct coh_route *r = arg;
	struct route_sub *s, *list, *keep = NULL;
	uint64_t now = route_now_ns();
	uint32_t g, p, view, dropped = 0, back = 0, ngroups;

	/* A controller a group's view has just excluded is fenced: whatever this one forwarded
	 * to it and still waits for is abandoned now (parked below, then routed again), not
	 * left to its deadline. The connection of one that is paused, not dead, stays up, and
	 * its commands would otherwise wait for the forwarder's timeout, past a host's. */
	route_change_tick(r, now);
	pthread_mutex_lock(&r->lock);
	ngroups = r->a.group_view ? r->tab->map.ngroups : 0;
	pthread_mutex_unlock(&r->lock);
	for (g = 0; g < ngroups && g < COH_MAP_MAX_GROUPS; g++) {
		view = r->a.group_view(r->a.view_arg, g);
		if (!view)
			continue; /* no view (an engine stopping): nothing learnt */
		dropped |= r->tick_view[g] & ~view;
		if (r->tick_view[g])
			back |= view & ~r->tick_view[g];
		r->tick_view[g] = view;
	}
	for (p = 0; dropped >> p; p++) {
		if ((dropped >> p & 1) && p != r->me)
			coh_fwd_abandon(r->fwd, p);
	}
	/* Taken back by a group (a paused controller resumed and admitted again, its connection
	 * up all along): the changes made without it reached it unanswered, if at all. */
	back &= coh_fwd_up(r->fwd) & ~(1u << r->me);
	if (back)
		route_offer(r, back);

	pthread_mutex_lock(&r->lock);
	list = r->parked;
	r->parked = NULL;
	pthread_mutex_unlock(&r->lock);
	while ((s = list)) {
		list = s->next;
		if (route_excluded(r, s)) {
			/* Excluded: fenced, its log in the survivors' hands. */
			s->tries++;
			route_count(r, &r->st.rerouted);
			route_sub_run(s);
		} else if (now >= s->gone_deadline_ns) {
			route_sub_finish(s, s->gone_status, 0);
		} else {
			s->next = keep;
			keep = s;
		}
	}
	if (!keep)
		return;
	pthread_mutex_lock(&r->lock);
	while ((s = keep)) {
		keep = s->next;
		s->next = r->parked;
		r->parked = s;
	}
	pthread_mutex_unlock(&r->lock);
}

int coh_route_submit(struct coh_route *r, struct coh_route_io *rio)
{
	const struct coh_map_volume *v;
	const struct coh_map *m;
	struct route_op *op;
	int ret, idx = 0;

	if (!r || !rio || !rio->done)
		return -EINVAL;
	if (rio->type != COH_IO_FLUSH &&
	    ((rio->type != COH_IO_READ && rio->type != COH_IO_WRITE &&
	      rio->type != COH_IO_COMPARE_WRITE) ||
	     !rio->buf || !rio->nblocks || rio->nblocks > r->max_blocks ||
	     (rio->type == COH_IO_COMPARE_WRITE && 2 * rio->nblocks > r->max_blocks)))
		return -EINVAL;
	if (rio->type == COH_IO_FLUSH && rio->nblocks)
		return -EINVAL;
	op = route_op_new(r, true, &ret);
	if (!op)
		return ret;
	/* The table this command runs under, to its end. */
	m = &op->tab->map;
	if (rio->type != COH_IO_FLUSH) {
		if (!le_zero(rio->volume_id, COH_MAP_ID_BYTES)) /* else named by its index */
			idx = coh_map_find_id(m, rio->volume_id, rio->volume);
		else
			idx = rio->volume < m->nvolumes ? (int)rio->volume : -EINVAL;
		ret = idx == -ENOENT ? -ENXIO : idx < 0 ? -EINVAL : 0;
		if (!ret) {
			v = &m->volumes[idx];
			if (rio->lba >= v->blocks || rio->nblocks > v->blocks - rio->lba)
				ret = -EINVAL;
			else if (route_fenced(r, m, (uint32_t)idx))
				ret = -ENOTUNIQ;
		}
		if (ret) {
			route_op_free(op); /* never started: no callback */
			return ret;
		}
	}
	op->type = rio->type;
	op->volume = (uint32_t)idx;
	op->lba = rio->lba;
	op->nblocks = rio->nblocks;
	op->buf = rio->buf;
	op->rio = rio;
	rio->priv = op;
	route_start(op);
	return 0;
}

/*
 * Online table changes. The table in effect on a controller is replaced only by a newer version
 * that coh_map_compatible allows, after it is kept in the table file (route_map_adopt). Tables
 * move as COH_FWD_MAP commands (their action and ballot in the request's block field). A change
 * is made by the configuration controller, the lowest live controller, as single-decree Paxos
 * over the next version, so that two tables of one version are never both in effect, whoever
 * dies when (struct route_change):
 *
 * - PREPARE: the proposer sends its table and a ballot (round << 8 | its id, above any round
 *   it saw refused) to every live controller. Each takes the table if it is newer (a lagging
 *   one catches up), refuses when its own is newer (-ESTALE, offered back) or another of the
 *   same version (-ENOTUNIQ: a conflict), else promises the ballot, kept in its acceptor file
 *   (coh_map_accept_save), unless it promised a higher one (-EALREADY with that round). A table
 *   it accepted for that version goes back first (ROUTE_MAP_ACCEPTED; the answer -EINPROGRESS).
 * - ACCEPT: with promises from a majority (the proposer is one), the proposer proposes the
 *   table accepted in the highest ballot it learnt of, else its own. Each controller that did
 *   not promise a higher ballot keeps it as accepted: kept, not in effect.
 * - COMMIT: accepted by a majority, the table is chosen: the proposer adopts it and offers it
 *   to every live controller, which adopt it as a newer table (ROUTE_MAP_OFFER).
 *
 * A proposer that dies part-way leaves accepted tables, in effect nowhere but, once chosen, at
 * the proposer itself. The next round finishes the one that may have been chosen before any
 * other: the asker's, or a recovery round that the configuration controller runs when it holds
 * an accepted table or a peer sends it one (route_recover: on every connection that goes down
 * or comes up). Offers carry only tables in effect; a controller that was away gets the newest
 * one when its connection comes up, both sides offering theirs.
 */
enum route_map_action {
	ROUTE_MAP_OFFER = 1,	/* a table in effect: take it if it is newer */
	ROUTE_MAP_PROPOSE = 2,	/* to the configuration controller: make it the next version */
	ROUTE_MAP_PREPARE = 3,	/* phase 1: the proposer's table, and its ballot to promise */
	ROUTE_MAP_ACCEPT = 4,	/* phase 2: the next version, to accept in the ballot */
	ROUTE_MAP_ACCEPTED = 5, /* to the proposer: the table accepted here, with its ballot */
};

/* The states keep the numbers the hooks knew as SYNC and PUSH (route_hooks.h). */
enum route_change_state {
	CHANGE_PREPARE = 1,
	CHANGE_ACCEPT = 2,
	CHANGE_COMMIT = 3, /* chosen and adopted here: offered to every live peer, answered */
};

/* PREPAREs in a higher ballot, after a refusal that named one, before a change gives up. */
#define ROUTE_CHANGE_TRIES 4u

/* Someone waiting for a change's outcome (coh_route_map_change): two references, the waiter's
 * and the change's, so that a waiter that gave up leaves nothing dangling. */
struct route_waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int status;
	char err[160];
	_Atomic uint32_t refs;
};

struct route_change {
	struct coh_route *r;
	struct route_table *base; /* the table in effect when it began: it makes the next one */
	struct coh_map next;	  /* the table asked for, when @asked */
	bool asked;		  /* else a recovery round, which only finishes an accepted table */
	struct coh_map value;	  /* what ACCEPT proposes */
	uint64_t ballot;
	uint32_t state, tries;
	_Atomic uint32_t outstanding, acks, newer;
	/* Under the router's lock (the answers, the accepted tables sent back and the tick run on
	 * the forwarder's thread; a change's first step on the asker's): */
	uint64_t higher;	     /* the highest round a refusal named (-EALREADY) */
	uint32_t expect, found_from; /* peers whose accepted table is on its way; that came */
	bool waiting;		     /* PREPARE answered; for the accepted tables on their way */
	uint64_t found_deadline_ns;
	uint64_t found_ballot; /* the highest ballot of an accepted table learnt of, 0: none */
	struct coh_map found;
	struct coh_fwd_cmd *fcmd; /* proposed by another controller, or */
	struct route_waiter *w;	  /* asked here, or neither (a recovery round) */
};

/* A table on its way to a peer. */
struct route_msg {
	struct coh_fwd_cmd fc;
	struct coh_route *r;
	struct route_change *ch; /* the change it is a step of, or NULL */
	struct route_waiter *w;	 /* a proposal's waiter */
	uint8_t buf[];
};

/* route_waiter_new - a waiter with its two references (the waiter's and the answer's). */
static struct route_waiter *route_waiter_new(void)
{
	struct route_waiter *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	atomic_store(&w->refs, 2);
	return w;
}

static void route_waiter_put(struct route_waiter *w)
{
	if (w && atomic_fetch_sub(&w->refs, 1) == 1) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mu);
		free(w);
	}
}

/* route_waiter_wait - until @w is woken or @until (CLOCK_REALTIME) passes: its status (its
 * message into @err when there is one), or -ETIMEDOUT. Drops the waiter's reference. */
static int route_waiter_wait(struct route_waiter *w, const struct timespec *until, char *err,
			     size_t errlen)
{
	int ret;

	pthread_mutex_lock(&w->mu);
	while (!w->done && !pthread_cond_timedwait(&w->cv, &w->mu, until))
		;
	ret = w->done ? w->status : -ETIMEDOUT;
	if (ret && w->done && w->err[0] && err)
		snprintf(err, errlen, "%s", w->err);
	pthread_mutex_unlock(&w->mu);
	route_waiter_put(w);
	return ret;
}

static void route_waiter_wake(struct route_waiter *w, int status, const char *err)
{
	pthread_mutex_lock(&w->mu);
	w->done = true;
	w->status = status;
	if (err && !w->err[0])
		snprintf(w->err, sizeof(w->err), "%s", err);
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	route_waiter_put(w);
}

/* route_map_same - whether two tables are the same (their on-disk forms). */
static bool route_map_same(const struct coh_map *a, const struct coh_map *b)
{
	static _Thread_local uint8_t ea[COH_MAP_ENCODED_MAX], eb[COH_MAP_ENCODED_MAX];
	size_t la, lb;

	if (coh_map_encode(a, ea, sizeof(ea), &la) || coh_map_encode(b, eb, sizeof(eb), &lb))
		return false;
	return la == lb && !memcmp(ea, eb, la);
}

/*
 * route_map_adopt - make @next this controller's table, when it is newer than the current one
 * and may replace it online: kept in the table file first, then current (operations started
 * before keep theirs). 0 when adopted or already current; -ESTALE when the current one is
 * newer; -ENOTUNIQ when it is another table of the same version (a conflict: logged, kept out);
 * -EINVAL when it may not replace the current one; -errno from the file.
 */
static int route_map_adopt(struct coh_route *r, const struct coh_map *next, uint32_t from)
{
	struct route_table *cur, *t;
	char err[160] = "";
	uint64_t was;
	int ret = 0;

	pthread_mutex_lock(&r->save_lock);
	cur = route_tab_get(r);
	was = cur->map.version;
	if (next->version < was) {
		ret = -ESTALE;
	} else if (next->version == was) {
		if (!route_map_same(&cur->map, next)) {
			ret = -ENOTUNIQ;
			COH_LOG_ERR("route: node %u: node %u has another table of version %llu: a "
				    "conflict, kept out (docs/routing.md)",
				    r->me, from, (unsigned long long)was);
			route_count(r, &r->st.map_conflicts);
		}
	} else {
		ret = coh_map_compatible(&cur->map, next, err, sizeof(err));
		if (ret)
			COH_LOG_ERR("route: node %u: table version %llu from node %u refused: %s",
				    r->me, (unsigned long long)next->version, from, err);
		if (!ret && r->map_path) {
			ret = coh_map_save(r->map_path, next, err, sizeof(err));
			if (ret)
				COH_LOG_ERR("route: node %u: table version %llu not kept: %s",
					    r->me, (unsigned long long)next->version, err);
		}
		t = ret ? NULL : route_tab_new(next);
		if (!ret && !t)
			ret = -ENOMEM;
		if (!ret) {
			pthread_mutex_lock(&r->lock);
			route_tab_put(r->tab);
			r->tab = t;
			r->st.map_changes++;
			pthread_cond_broadcast(&r->cond);
			pthread_mutex_unlock(&r->lock);
			COH_LOG_INFO("route: node %u: table version %llu (was %llu, from node %u)",
				     r->me, (unsigned long long)next->version,
				     (unsigned long long)was, from);
		}
	}
	route_tab_put(cur);
	pthread_mutex_unlock(&r->save_lock);
	return ret;
}

static void route_change_sent(struct route_change *ch, int status, uint32_t done, uint32_t peer);
static void route_recover(struct coh_route *r);

/* route_point - a named step of a change or a command (route_hooks.h). */
static int route_point(struct coh_route *r, uint32_t point, uint64_t detail)
{
	struct coh_route_hooks h;

	if (!atomic_load_explicit(&r->hooked, memory_order_relaxed))
		return 0;
	pthread_mutex_lock(&r->lock);
	h = r->hooks;
	pthread_mutex_unlock(&r->lock);
	return h.point ? h.point(h.arg, point, detail) : 0;
}

static void route_msg_done(struct coh_fwd_cmd *fc, int status, uint32_t done)
{
	struct route_msg *msg = fc->arg;
	char err[160];

	if (msg->ch) {
		route_point(msg->r, COH_ROUTE_POINT_CHANGE_ANSWER,
			    (uint64_t)msg->ch->state << 32 | fc->peer);
		route_change_sent(msg->ch, status, done, fc->peer);
	} else if (msg->w) {
		snprintf(err, sizeof(err), "the configuration controller (node %u): %s", fc->peer,
			 coh_strerror(status));
		route_waiter_wake(msg->w, status, status ? err : NULL);
	}
	free(msg);
}

/* route_send_map - send @m to @peer as @action in @ballot: for @ch's step, @w's proposal, or
 * neither (no answer needed). 0, or -errno when it was not sent. */
static int route_send_map(struct coh_route *r, uint32_t peer, const struct coh_map *m,
			  uint32_t action, uint64_t ballot, struct route_change *ch,
			  struct route_waiter *w)
{
	uint32_t bs = m->block_size, nblocks = (COH_MAP_ENCODED_MAX + bs - 1) / bs;
	struct route_msg *msg;
	size_t used;
	int ret;

	if (nblocks > r->max_blocks)
		return -EMSGSIZE;
	msg = calloc(1, sizeof(*msg) + (size_t)nblocks * bs);
	if (!msg)
		return -ENOMEM;
	ret = coh_map_encode(m, msg->buf, (size_t)nblocks * bs, &used);
	if (ret) {
		free(msg);
		return ret;
	}
	msg->r = r;
	msg->ch = ch;
	msg->w = w;
	msg->fc.op = COH_FWD_MAP;
	msg->fc.lba = (uint64_t)action | ballot << 8;
	msg->fc.map_version = m->version;
	msg->fc.nblocks = (uint32_t)((used + bs - 1) / bs);
	msg->fc.buf = msg->buf;
	msg->fc.done = route_msg_done;
	msg->fc.arg = msg;
	ret = coh_fwd_submit(r->fwd, peer, &msg->fc);
	if (ret)
		free(msg);
	return ret;
}

/* route_offer - offer this controller's table in effect to @peers (a mask); no answer needed. */
static void route_offer(struct coh_route *r, uint32_t peers)
{
	struct route_table *cur = route_tab_get(r);
	uint32_t p;

	for (p = 0; p < r->first.nodes; p++)
		if (peers & (1u << p))
			route_send_map(r, p, &cur->map, ROUTE_MAP_OFFER, 0, NULL, NULL);
	route_tab_put(cur);
}

/* route_acc_for - the acceptor's state for the version after @base: the one kept, or a fresh
 * one when the kept one is for another version (an older change's, made since). Under
 * @save_lock. */
static void route_acc_for(struct coh_route *r, uint64_t base, struct coh_map_accept *a)
{
	if (r->acc.version == base + 1) {
		*a = r->acc;
		return;
	}
	memset(a, 0, sizeof(*a));
	a->version = base + 1;
}

/* route_acc_keep - make @a the acceptor's state: in its file first (before any answer says
 * so), then here. Under @save_lock. */
static int route_acc_keep(struct coh_route *r, const struct coh_map_accept *a)
{
	char err[200] = "";
	int ret;

	if (r->accept_path) {
		ret = coh_map_accept_save(r->accept_path, a, err, sizeof(err));
		if (ret) {
			COH_LOG_ERR("route: node %u: the acceptor's state not kept: %s", r->me,
				    err);
			return ret;
		}
	}
	r->acc = *a;
	return 0;
}

/*
 * route_promise - phase 1 here: promise @ballot for the version after @base (the table in
 * effect here). 0, with the table accepted for that version, when there is one, in @found and
 * its ballot in *@found_ballot (else 0); -EALREADY, *@higher the round of a ballot as high or
 * higher promised already; -ESTALE when the table here is not @base; -errno from the file.
 */
static int route_promise(struct coh_route *r, uint64_t base, uint64_t ballot, uint64_t *higher,
			 struct coh_map *found, uint64_t *found_ballot)
{
	struct coh_map_accept *a = malloc(sizeof(*a));
	struct route_table *cur;
	int ret = 0;

	*found_ballot = 0;
	if (!a)
		return -ENOMEM;
	pthread_mutex_lock(&r->save_lock);
	cur = route_tab_get(r);
	if (cur->map.version != base) {
		ret = -ESTALE;
		goto out;
	}
	route_acc_for(r, base, a);
	if (a->promised >= ballot) {
		*higher = a->promised >> 8;
		ret = -EALREADY;
		goto out;
	}
	a->promised = ballot;
	ret = route_acc_keep(r, a);
	if (!ret && a->ballot) {
		*found = a->map;
		*found_ballot = a->ballot;
	}
out:
	route_tab_put(cur);
	pthread_mutex_unlock(&r->save_lock);
	free(a);
	return ret;
}

/*
 * route_accept - phase 2 here: accept @next, the version after the table in effect, in @ballot
 * (kept in the acceptor file before it is answered; not in effect). -EALREADY, *@higher the
 * round of a higher ballot promised; -ESTALE when @next is not the version after this
 * controller's (its own is newer, or it lags and the next PREPARE brings it up); -EINVAL when
 * @next may not replace it; -errno from the file.
 */
static int route_accept(struct coh_route *r, const struct coh_map *next, uint64_t ballot,
			uint64_t *higher, uint32_t from)
{
	struct coh_map_accept *a = malloc(sizeof(*a));
	struct route_table *cur;
	char err[160];
	int ret;

	if (!a)
		return -ENOMEM;
	pthread_mutex_lock(&r->save_lock);
	cur = route_tab_get(r);
	if (next->version != cur->map.version + 1) {
		ret = -ESTALE;
		goto out;
	}
	route_acc_for(r, cur->map.version, a);
	if (a->promised > ballot) {
		*higher = a->promised >> 8;
		ret = -EALREADY;
		goto out;
	}
	ret = coh_map_compatible(&cur->map, next, err, sizeof(err));
	if (ret) {
		COH_LOG_ERR("route: node %u: table version %llu from node %u not accepted: %s",
			    r->me, (unsigned long long)next->version, from, err);
		goto out;
	}
	a->promised = ballot;
	a->ballot = ballot;
	a->map = *next;
	ret = route_acc_keep(r, a);
out:
	route_tab_put(cur);
	pthread_mutex_unlock(&r->save_lock);
	free(a);
	return ret;
}

static void route_change_end(struct route_change *ch, int status, const char *err)
{
	struct coh_route *r = ch->r;

	if (status && ch->asked)
		COH_LOG_WARN("route: node %u: table version %llu not made: %s", r->me,
			     (unsigned long long)ch->next.version,
			     err ? err : coh_strerror(status));
	else if (status)
		COH_LOG_WARN("route: node %u: a table another controller began is not finished: "
			     "%s",
			     r->me, err ? err : coh_strerror(status));
	if (ch->fcmd)
		coh_fwd_complete(ch->fcmd, status, 0);
	if (ch->w)
		route_waiter_wake(ch->w, status, err);
	route_tab_put(ch->base);
	/* Last: coh_route_delete waits for @change to be gone before it frees the router. */
	pthread_mutex_lock(&r->lock);
	if (r->change == ch)
		r->change = NULL;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	free(ch);
}

/* route_change_tick - the forwarder's tick: a change waiting past its bound for an accepted
 * table a promise said was coming cannot choose without it (that table may have been chosen):
 * it ends, to be asked again. */
static void route_change_tick(struct coh_route *r, uint64_t now)
{
	struct route_change *late = NULL;

	pthread_mutex_lock(&r->lock);
	if (r->change && r->change->waiting && now >= r->change->found_deadline_ns) {
		late = r->change;
		late->waiting = false;
	}
	pthread_mutex_unlock(&r->lock);
	if (late)
		route_change_end(late, -EAGAIN,
				 "an accepted table a controller announced never came: ask again");
}

static void route_change_step(struct route_change *ch);

/* route_change_prepare - a round in a new ballot, above @above (a round): this controller
 * promises it first (it is an acceptor too), then asks every live peer. */
static void route_change_prepare(struct route_change *ch, uint64_t above)
{
	struct coh_route *r = ch->r;
	uint64_t higher = above, fb = 0, round;
	int ret;

	do {
		pthread_mutex_lock(&r->lock);
		if (higher > r->round)
			r->round = higher;
		round = ++r->round;
		pthread_mutex_unlock(&r->lock);
		ch->ballot = round << 8 | r->me;
		ret = route_promise(r, ch->base->map.version, ch->ballot, &higher, &ch->found, &fb);
	} while (ret == -EALREADY && ++ch->tries <= ROUTE_CHANGE_TRIES);
	if (ret) {
		route_change_end(ch, ret == -EALREADY || ret == -ESTALE ? -EAGAIN : ret,
				 ret == -ESTALE	    ? "the table here changed meanwhile: ask again"
				 : ret == -EALREADY ? "a higher ballot is promised here: ask again"
						    : "the promise was not kept here");
		return;
	}
	atomic_store(&ch->acks, 0);
	atomic_store(&ch->newer, 0);
	pthread_mutex_lock(&r->lock);
	ch->higher = 0;
	ch->expect = ch->found_from = 0;
	ch->waiting = false;
	ch->found_ballot = fb;
	ch->state = CHANGE_PREPARE; /* route_change_found reads it under the lock */
	pthread_mutex_unlock(&r->lock);
	route_change_step(ch);
}

/* route_change_propose - promised by a majority, every accepted table learnt of: ACCEPT the one
 * of the highest ballot, which may have been chosen, else the table asked for. This controller
 * accepts it first. A recovery round that learnt of none has nothing to do. */
static void route_change_propose(struct route_change *ch)
{
	struct coh_route *r = ch->r;
	uint64_t higher = 0;
	int ret;

	if (ch->found_ballot) {
		ch->value = ch->found;
	} else if (ch->asked) {
		ch->value = ch->next;
	} else {
		route_change_end(ch, 0, NULL);
		return;
	}
	ret = route_accept(r, &ch->value, ch->ballot, &higher, r->me);
	if (ret) {
		route_change_end(ch, ret == -EALREADY || ret == -ESTALE ? -EAGAIN : ret,
				 "not accepted here: ask again");
		return;
	}
	atomic_store(&ch->acks, 0);
	pthread_mutex_lock(&r->lock);
	ch->state = CHANGE_ACCEPT;
	pthread_mutex_unlock(&r->lock);
	route_change_step(ch);
}

/* route_change_next - every peer answered this step: the next one, or the end. */
static void route_change_next(struct route_change *ch)
{
	struct coh_route *r = ch->r;
	uint32_t acks = atomic_load(&ch->acks), need = r->first.nodes / 2 + 1;
	uint64_t higher;
	char err[160];
	bool wait;
	int ret;

	if (ch->state == CHANGE_PREPARE) {
		if (atomic_load(&ch->newer)) {
			route_change_end(ch, -EAGAIN,
					 "a controller has a newer table (it is being offered "
					 "here): ask again");
			return;
		}
		pthread_mutex_lock(&r->lock);
		higher = ch->higher;
		pthread_mutex_unlock(&r->lock);
		if (acks + 1 < need) {
			if (higher && ch->tries++ < ROUTE_CHANGE_TRIES) {
				route_change_prepare(ch, higher);
				return;
			}
			snprintf(err, sizeof(err),
				 "promised by %u of %u controllers, not a majority: ask again",
				 acks + 1, r->first.nodes);
			route_change_end(ch, -EAGAIN, err);
			return;
		}
		/* The accepted tables the promises said are on their way (route_change_found; the
		 * tick bounds the wait). */
		pthread_mutex_lock(&r->lock);
		wait = ch->waiting = (ch->expect & ~ch->found_from) != 0;
		ch->found_deadline_ns = route_now_ns() + (uint64_t)r->fwd_timeout_ms * 1000000ull;
		pthread_mutex_unlock(&r->lock);
		if (!wait)
			route_change_propose(ch);
		return;
	}
	if (ch->state == CHANGE_COMMIT) {
		/* Every live peer answered the offer of the chosen table (each has it in effect
		 * before its answer: an asker's table is the new one when it hears). */
		bool other = !ch->asked || !route_map_same(&ch->value, &ch->next);

		if (other)
			COH_LOG_INFO("route: node %u: table version %llu, an interrupted change, "
				     "finished",
				     r->me, (unsigned long long)ch->value.version);
		if (other && ch->asked)
			route_change_end(ch, -EAGAIN,
					 "an interrupted change to this version was finished "
					 "first: ask again");
		else
			route_change_end(ch, 0, NULL);
		return;
	}
	/* ACCEPT: chosen once a majority of the cluster accepted it. */
	if (acks + 1 < need) {
		snprintf(err, sizeof(err),
			 "accepted by %u of %u controllers, not a majority: not in effect; the "
			 "next change finishes it if it was chosen",
			 acks + 1, r->first.nodes);
		route_change_end(ch, -EAGAIN, err);
		return;
	}
	route_point(r, COH_ROUTE_POINT_CHANGE_ADOPT, ch->value.version);
	ret = route_map_adopt(r, &ch->value, r->me);
	if (ret) {
		snprintf(err, sizeof(err), "chosen, not kept here: %s", coh_strerror(ret));
		route_change_end(ch, ret, err);
		return;
	}
	pthread_mutex_lock(&r->lock);
	ch->state = CHANGE_COMMIT;
	pthread_mutex_unlock(&r->lock);
	route_change_step(ch);
}

static void route_change_sent(struct route_change *ch, int status, uint32_t done, uint32_t peer)
{
	struct coh_route *r = ch->r;

	if (status == 1) {
		/* the sending loop's own count */
	} else if (ch->state == CHANGE_PREPARE && (!status || status == -EINPROGRESS)) {
		atomic_fetch_add(&ch->acks, 1);
		if (status == -EINPROGRESS) { /* its accepted table comes before this answer */
			pthread_mutex_lock(&r->lock);
			ch->expect |= 1u << peer;
			pthread_mutex_unlock(&r->lock);
		}
	} else if (ch->state == CHANGE_PREPARE && (status == -ESTALE || status == -ENOTUNIQ)) {
		atomic_fetch_add(&ch->newer, 1);
	} else if (status == -EALREADY) {
		pthread_mutex_lock(&r->lock);
		if (done > ch->higher)
			ch->higher = done;
		pthread_mutex_unlock(&r->lock);
	} else if (ch->state == CHANGE_ACCEPT && !status) {
		atomic_fetch_add(&ch->acks, 1);
	}
	if (atomic_fetch_sub(&ch->outstanding, 1) == 1)
		route_change_next(ch);
}

/* route_change_step - send this step's table to every live peer (route_config_live): PREPARE
 * the table the change builds on and ACCEPT the one proposed, in the round's ballot; COMMIT
 * offers the chosen one. A peer connected but excluded by the groups (paused) is not waited
 * for, which would hold the change up for the forwarder's timeout: it gets the COMMIT's offer
 * unanswered, and the tick offers the table again once the groups take it back. */
static void route_change_step(struct route_change *ch)
{
	struct coh_route *r = ch->r;
	uint32_t up = coh_fwd_up(r->fwd) & ~(1u << r->me), live = route_config_live(r) & up, p;
	bool prepare = ch->state == CHANGE_PREPARE;
	uint32_t action = prepare		       ? ROUTE_MAP_PREPARE
			  : ch->state == CHANGE_ACCEPT ? ROUTE_MAP_ACCEPT
						       : ROUTE_MAP_OFFER;

	atomic_store(&ch->outstanding, 1); /* this loop's own, so that no answer ends the step */
	for (p = 0; p < r->first.nodes; p++) {
		if (!(up & (1u << p)))
			continue;
		if (!(live & (1u << p))) {
			if (action == ROUTE_MAP_OFFER)
				route_send_map(r, p, &ch->value, ROUTE_MAP_OFFER, 0, NULL, NULL);
			continue;
		}
		atomic_fetch_add(&ch->outstanding, 1);
		if (route_point(r, COH_ROUTE_POINT_CHANGE_SEND, (uint64_t)ch->state << 32 | p) ==
			COH_ROUTE_DROP ||
		    route_send_map(r, p, prepare ? &ch->base->map : &ch->value, action,
				   action == ROUTE_MAP_OFFER ? 0 : ch->ballot, ch, NULL))
			atomic_fetch_sub(&ch->outstanding, 1);
	}
	route_change_sent(ch, 1, 0, r->me); /* neither an ack nor a refusal */
}

/* route_change_found - an accepted table a peer sent back (ROUTE_MAP_ACCEPTED): to the round
 * that waits for it, or, with no change running, a reason for a recovery round. */
static void route_change_found(struct coh_route *r, const struct coh_map *m, uint64_t ballot,
			       uint32_t from)
{
	struct route_change *ch;
	bool go = false, idle;

	pthread_mutex_lock(&r->lock);
	ch = r->change;
	/* for the version after this controller's: an older change's table is moot */
	idle = !ch && m->version == r->tab->map.version + 1;
	if (ch && ch->state == CHANGE_PREPARE && m->version == ch->base->map.version + 1) {
		if (ballot > ch->found_ballot) {
			ch->found = *m;
			ch->found_ballot = ballot;
		}
		ch->found_from |= 1u << from;
		go = ch->waiting && !(ch->expect & ~ch->found_from);
		if (go)
			ch->waiting = false;
	}
	pthread_mutex_unlock(&r->lock);
	if (go)
		route_change_propose(ch);
	else if (idle)
		route_recover(r);
}

/* route_change_begin - @ch, on the table in effect, becomes this controller's one change: 0,
 * or -EBUSY/-ESHUTDOWN (@ch freed). */
static int route_change_begin(struct coh_route *r, struct route_change *ch, char *err,
			      size_t errlen)
{
	int ret = 0;

	ch->r = r;
	ch->state = CHANGE_PREPARE;
	pthread_mutex_lock(&r->lock);
	if (r->change || r->stopping) {
		ret = r->stopping ? -ESHUTDOWN : -EBUSY;
		if (err) /* an asker's (a recovery round has none) */
			snprintf(err, errlen, "%s",
				 r->stopping ? "stopping" : "another change is running");
		if (err && ret == -EBUSY)
			r->st.changes_busy++;
	} else {
		r->change = ch;
	}
	pthread_mutex_unlock(&r->lock);
	if (ret) {
		route_tab_put(ch->base);
		free(ch);
	}
	return ret;
}

/* route_config_live - the controllers a change counts on: connected (coh_fwd_up) and in every
 * group's view (route_live), this one always. The lowest is the configuration controller, so a
 * controller the groups excluded (paused, or cut off: fenced) hands the role on although its
 * connection may stay up (a paused process's stays up; on rdma its NIC still acknowledges).
 * Asker, configuration controller and recovery pick by this one set. */
static uint32_t route_config_live(struct coh_route *r)
{
	struct route_table *t = route_tab_get(r);
	uint32_t live = route_live(r, &t->map, COH_MAP_NO_NODE);

	route_tab_put(t);
	return live;
}

/* route_is_config - whether this controller is the configuration controller and a majority of
 * the cluster is live; else why not, in @err. */
static int route_is_config(struct coh_route *r, char *err, size_t errlen)
{
	uint32_t up = route_config_live(r);

	if (!up) {
		if (err)
			snprintf(err, errlen, "the forwarder is not up yet");
		return -EAGAIN;
	}
	if ((uint32_t)__builtin_ctz(up) != r->me) {
		if (err)
			snprintf(err, errlen, "node %u is the configuration controller now",
				 (uint32_t)__builtin_ctz(up));
		return -EREMOTE;
	}
	if ((uint32_t)__builtin_popcount(up) * 2 <= r->first.nodes) {
		if (err)
			snprintf(err, errlen,
				 "%u of %u controllers live: a change needs a majority",
				 (uint32_t)__builtin_popcount(up), r->first.nodes);
		return -EAGAIN;
	}
	return 0;
}

/* route_change_start - as the configuration controller: make @next the next version. */
static int route_change_start(struct coh_route *r, const struct coh_map *next,
			      struct coh_fwd_cmd *fcmd, struct route_waiter *w, char *err,
			      size_t errlen)
{
	struct route_change *ch;
	struct route_table *cur;
	int ret;

	ret = route_is_config(r, err, errlen);
	if (ret)
		return ret;
	cur = route_tab_get(r);
	if (next->version != cur->map.version + 1) {
		snprintf(err, errlen, "version %llu: the table is at %llu (make the change on it)",
			 (unsigned long long)next->version, (unsigned long long)cur->map.version);
		ret = -ESTALE;
	} else {
		ret = coh_map_compatible(&cur->map, next, err, errlen);
	}
	if (ret) {
		route_tab_put(cur);
		return ret;
	}
	ch = calloc(1, sizeof(*ch));
	if (!ch) {
		route_tab_put(cur);
		return -ENOMEM;
	}
	ch->base = cur;
	ch->next = *next;
	ch->asked = true;
	ch->fcmd = fcmd;
	ch->w = w;
	ret = route_change_begin(r, ch, err, errlen);
	if (ret)
		return ret;
	COH_LOG_INFO("route: node %u: making table version %llu", r->me,
		     (unsigned long long)next->version);
	route_change_prepare(ch, 0);
	return 0;
}

/* route_recover - as the configuration controller, with no change running: a round that only
 * finishes a table some controller accepted and no one made (its proposer died part-way); it
 * ends at once when no controller has one. */
static void route_recover(struct coh_route *r)
{
	struct route_change *ch;

	if (route_is_config(r, NULL, 0))
		return;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return;
	ch->base = route_tab_get(r);
	if (route_change_begin(r, ch, NULL, 0))
		return;
	COH_LOG_INFO("route: node %u: looking for a change to version %llu left unfinished", r->me,
		     (unsigned long long)ch->base->map.version + 1);
	route_change_prepare(ch, 0);
}

/* route_nudge - this controller holds a table it accepted for the version after its own: the
 * change that proposed it may be unfinished. The configuration controller runs a recovery
 * round; another sends the table to it (which makes it run one). */
static void route_nudge(struct coh_route *r)
{
	struct coh_map_accept *a = malloc(sizeof(*a));
	struct route_table *cur;
	uint32_t up, cfg;
	bool held;

	if (!a)
		return;
	pthread_mutex_lock(&r->save_lock);
	cur = route_tab_get(r);
	held = r->acc.ballot && r->acc.version == cur->map.version + 1;
	if (held)
		*a = r->acc;
	route_tab_put(cur);
	pthread_mutex_unlock(&r->save_lock);
	up = route_config_live(r);
	cfg = up ? (uint32_t)__builtin_ctz(up) : r->me; /* none before the forwarder is up */
	if (held && up && cfg == r->me)
		route_recover(r);
	else if (held && up)
		route_send_map(r, cfg, &a->map, ROUTE_MAP_ACCEPTED, a->ballot, NULL, NULL);
	free(a);
}

/* route_map_execute - a table another controller sent here (forwarder thread). */
static void route_map_execute(struct coh_route *r, struct coh_fwd_cmd *cmd)
{
	uint32_t action = (uint32_t)(cmd->lba & 0xff);
	uint64_t ballot = cmd->lba >> 8, higher = 0, fb = 0;
	struct coh_map *m = malloc(2 * sizeof(*m)), *found = m + 1;
	char err[160];
	int ret;

	if (!m) {
		coh_fwd_complete(cmd, -ENOMEM, 0);
		return;
	}
	ret = coh_map_decode(cmd->buf, (size_t)cmd->nblocks * r->first.block_size, m, err,
			     sizeof(err));
	if (ret) {
		COH_LOG_WARN("route: node %u: a table from node %u refused: %s", r->me, cmd->origin,
			     err);
		coh_fwd_complete(cmd, ret == -ENODATA ? -EBADMSG : ret, 0);
		goto out;
	}
	if (action < ROUTE_MAP_OFFER || action > ROUTE_MAP_ACCEPTED ||
	    ((action == ROUTE_MAP_OFFER || action == ROUTE_MAP_PROPOSE) != !ballot)) {
		coh_fwd_complete(cmd, -EINVAL, 0);
		goto out;
	}
	switch (action) {
	case ROUTE_MAP_PROPOSE:
		ret = route_change_start(r, m, cmd, NULL, err, sizeof(err));
		if (ret == -EBUSY) /* the asker asks again: not worth a warning each time */
			COH_LOG_INFO("route: node %u: node %u's change refused: %s", r->me,
				     cmd->origin, err);
		else if (ret)
			COH_LOG_WARN("route: node %u: node %u's change refused: %s", r->me,
				     cmd->origin, err);
		if (ret)
			coh_fwd_complete(cmd, ret, 0);
		goto out; /* else route_change_end completes it */
	case ROUTE_MAP_ACCEPT:
		ret = route_accept(r, m, ballot, &higher, cmd->origin);
		if (!ret)
			route_point(r, COH_ROUTE_POINT_CHANGE_ACCEPTED, m->version);
		coh_fwd_complete(cmd, ret, ret == -EALREADY ? (uint32_t)higher : 0);
		goto out;
	case ROUTE_MAP_ACCEPTED:
		route_change_found(r, m, ballot, cmd->origin);
		coh_fwd_complete(cmd, 0, 0);
		goto out;
	}
	/* An offer, or a PREPARE's table: taken when it is newer. */
	ret = route_map_adopt(r, m, cmd->origin);
	if (ret == -ESTALE)
		route_offer(r, 1u << cmd->origin); /* ours is newer: offer it back */
	if (ret == -ENOTUNIQ || ret == -EINVAL) {
		/* Two histories of changes (docs/routing.md, "Two tables of one version"): the
		 * volumes they disagree on are fenced while the peer is here; a new conflict is
		 * offered back, so that the peer fences them too. */
		if (route_conflict_set(r, cmd->origin, m))
			route_offer(r, 1u << cmd->origin);
	} else if (!ret || ret == -ESTALE) {
		route_conflict_set(r, cmd->origin, NULL);
	}
	if (action == ROUTE_MAP_PREPARE && !ret) {
		ret = route_promise(r, m->version, ballot, &higher, found, &fb);
		if (!ret && fb) {
			/* Sent before the answer, so that the proposer has it when it counts. */
			ret = route_send_map(r, cmd->origin, found, ROUTE_MAP_ACCEPTED, fb, NULL,
					     NULL);
			ret = ret ? ret : -EINPROGRESS;
		}
		coh_fwd_complete(cmd, ret, ret == -EALREADY ? (uint32_t)higher : 0);
		goto out;
	}
	coh_fwd_complete(cmd, ret, 0);
out:
	free(m);
}

/* route_peer_up - a connection came up: offer the peer this controller's table. */
static void route_peer_up(void *arg, uint32_t peer)
{
	route_offer(arg, 1u << peer);
	route_nudge(arg);
}

/* route_peer_down - a connection broke: offer this controller's table to every other live
 * controller, and look for a change its death left unfinished (route_nudge). */
static void route_peer_down(void *arg, uint32_t peer)
{
	struct coh_route *r = arg;

	/* A peer that is away writes nothing under its table: its conflict, if any, is found
	 * again when it is back (both sides offer), before its router serves (route_sync). */
	route_conflict_set(r, peer, NULL);
	route_offer(r, coh_fwd_up(r->fwd) & ~(1u << r->me));
	route_nudge(r);
}

int coh_route_set_hooks(struct coh_route *r, const struct coh_route_hooks *h)
{
	if (!r || (h && (h->hooks_size < offsetof(struct coh_route_hooks, arg) + sizeof(void *) ||
			 !h->point)))
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	memset(&r->hooks, 0, sizeof(r->hooks));
	if (h)
		memcpy(&r->hooks, h,
		       h->hooks_size < sizeof(r->hooks) ? h->hooks_size : sizeof(r->hooks));
	atomic_store(&r->hooked, h != NULL);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* route_change_ask - one try of coh_route_map_change: @next to the configuration controller
 * (this one, or sent there), and its outcome (bounded). */
static int route_change_ask(struct coh_route *r, const struct coh_map *next, char *err,
			    size_t errlen)
{
	struct route_waiter *w;
	struct timespec until;
	uint32_t cfg;
	int ret;

	w = route_waiter_new();
	if (!w)
		return -ENOMEM;
	cfg = route_config_live(r);
	cfg = cfg ? (uint32_t)__builtin_ctz(cfg) : r->me; /* none: this one says why */
	if (cfg == r->me) {
		ret = route_change_start(r, next, NULL, w, err, errlen);
	} else {
		ret = route_send_map(r, cfg, next, ROUTE_MAP_PROPOSE, 0, NULL, w);
		if (ret)
			snprintf(err, errlen, "the configuration controller (node %u): %s", cfg,
				 coh_strerror(ret));
	}
	if (ret) {
		route_waiter_put(w);
		route_waiter_put(w);
		return ret;
	}
	/* Bounded: every step's commands end within the forwarder's timeout; twice that for a
	 * proposal, and some room. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3 * (time_t)(r->fwd_timeout_ms / 1000 + 1) + 5;
	ret = route_waiter_wait(w, &until, err, errlen);
	if (ret == -ETIMEDOUT)
		snprintf(err, errlen, "no outcome within the bound: ask for the table again");
	return ret;
}

int coh_route_map_change(struct coh_route *r, const struct coh_map *next, char *err, size_t errlen)
{
	struct route_table *cur;
	struct timespec nap = { 0, 0 };
	uint64_t busy_until;
	char buf[160] = "";
	long nap_ms = 10;
	int ret;

	if (!r || !next)
		return -EINVAL;
	if (!err || !errlen) {
		err = buf;
		errlen = sizeof(buf);
	}
	err[0] = 0;
	/* Checked here first, against this controller's table, for an error that says why; the
	 * configuration controller checks again against its own. */
	cur = route_tab_get(r);
	ret = next->version > cur->map.version ? coh_map_compatible(&cur->map, next, err, errlen)
					       : coh_map_check(next, err, errlen);
	route_tab_put(cur);
	if (ret)
		return ret;
	/* Another change running (another asker's, or a recovery round after a controller came or
	 * went, which the asker cannot see coming) ends within a few forwarder timeouts; and the
	 * role is in flux while the controllers' views of who is live differ (one has seen a death
	 * the other has not yet: -EREMOTE). Asked again until one timeout has passed, backing
	 * off, before that is the answer. */
	busy_until = route_now_ns() + (uint64_t)r->fwd_timeout_ms * 1000000ull;
	for (;;) {
		ret = route_change_ask(r, next, err, errlen);
		if ((ret != -EBUSY && ret != -EREMOTE) || route_now_ns() >= busy_until)
			return ret;
		nap.tv_nsec = nap_ms * 1000000L;
		nanosleep(&nap, NULL); /* a backoff: the running change may be another node's */
		nap_ms = nap_ms < 160 ? 2 * nap_ms : nap_ms;
		err[0] = 0;
	}
}

int coh_route_map(struct coh_route *r, struct coh_map *out)
{
	struct route_table *t;

	if (!r || !out)
		return -EINVAL;
	t = route_tab_get(r);
	*out = t->map;
	route_tab_put(t);
	return 0;
}

/* route_execute - the forwarder's executor: a command another controller sent here. */
static void route_execute(void *arg, struct coh_fwd_cmd *cmd)
{
	struct coh_route *r = arg;
	const struct coh_map_volume *v;
	const struct coh_map *m;
	struct route_op *op;
	uint32_t t;
	int ret, idx;

	if (cmd->op == COH_FWD_MAP) {
		route_map_execute(r, cmd);
		return;
	}
	op = route_op_new(r, false, &ret);
	if (!op) {
		coh_fwd_complete(cmd, ret, 0);
		return;
	}
	/* The volume by its id in this controller's table: a volume the two tables do not both
	 * have, or a range only the newer one has, is a stale route (the host tries again). */
	m = &op->tab->map;
	idx = coh_map_find_id(m, cmd->volume_id, cmd->volume);
	ret = idx < 0 ? -ESTALE : 0;
	if (!ret) {
		v = &m->volumes[idx];
		if (cmd->op != COH_FWD_FLUSH &&
		    (cmd->lba >= v->blocks || cmd->nblocks > v->blocks - cmd->lba))
			ret = cmd->map_version != m->version ? -ESTALE : -EINVAL;
	}
	/* A logical volume's command comes to an AMF of its group; anything else is a stale
	 * route (the origin routes it again). */
	if (!ret && (cmd->op == COH_FWD_FLUSH || v->kind == COH_MAP_LOGICAL) &&
	    (coh_map_target(m, (uint32_t)idx, r->me, 1u << r->me, COH_MAP_NO_NODE, &t) ||
	     t != r->me))
		ret = -EHOSTUNREACH;
	/* A volume two tables disagree on is fenced here as at the origin (route_fenced). */
	if (!ret && route_fenced(r, m, (uint32_t)idx))
		ret = -ENOTUNIQ;
	/* An origin the groups have excluded is fenced: -EACCES (its host goes elsewhere). */
	if (!ret && !route_origin_ok(r, m, (uint32_t)idx, cmd->origin)) {
		ret = -EACCES;
		route_count(r, &r->st.refused_fenced);
	}
	if (ret) {
		route_op_free(op);
		coh_fwd_complete(cmd, ret, 0);
		return;
	}
	route_count(r, &r->st.executed_for_others);
	op->type = cmd->op;
	op->volume = (uint32_t)idx;
	op->lba = cmd->lba;
	op->nblocks = cmd->nblocks;
	op->buf = cmd->buf;
	op->fcmd = cmd;
	route_point(r, COH_ROUTE_POINT_CMD_RECEIVED, (uint64_t)cmd->origin << 32 | cmd->op);
	route_start(op);
}

/* route_first_table - the table to start with: the newer of the caller's and the kept one
 * (kept from now on). */
static int route_first_table(struct coh_route *r, struct coh_map *m)
{
	struct coh_map kept;
	char err[160];
	int ret;

	*m = r->first;
	if (!r->map_path)
		return 0;
	ret = coh_map_load(r->map_path, &kept, err, sizeof(err));
	if (ret == -ENOENT || ret == -ENODATA || (!ret && kept.version < m->version))
		goto save;
	if (ret) {
		COH_LOG_ERR("route: node %u: the kept table: %s", r->me, err);
		return ret;
	}
	if (coh_map_same_groups(&kept, m, err, sizeof(err))) {
		COH_LOG_ERR("route: node %u: %s is not the configuration's: %s", r->me, r->map_path,
			    err);
		return -EINVAL;
	}
	if (kept.version > m->version)
		COH_LOG_INFO("route: node %u: table version %llu from %s", r->me,
			     (unsigned long long)kept.version, r->map_path);
	*m = kept;
	return 0;

save:
	ret = coh_map_save(r->map_path, m, err, sizeof(err));
	if (ret)
		COH_LOG_ERR("route: node %u: %s", r->me, err);
	return ret;
}

/* route_first_accept - the acceptor's state kept beside the table: a promise or an accepted
 * table forgotten could let two tables of one version be chosen, so one that cannot be read
 * stops the start (an operator removes it knowingly). */
static int route_first_accept(struct coh_route *r)
{
	char err[200] = "";
	int ret;

	if (!r->accept_path)
		return 0;
	ret = coh_map_accept_load(r->accept_path, &r->acc, err, sizeof(err));
	if (ret == -ENOENT) {
		memset(&r->acc, 0, sizeof(r->acc));
		return 0;
	}
	if (ret)
		COH_LOG_ERR("route: node %u: the acceptor's state: %s (docs/routing.md, \"Online "
			    "changes\")",
			    r->me, err);
	return ret;
}

/* route_sync - at the start: offer the table to every live peer and, when one has a newer one
 * (it offers it back), wait for it. Bounded by the forwarder's timeout. */
static void route_sync(struct coh_route *r)
{
	struct route_waiter *w[COH_MAP_MAX_NODES] = { 0 };
	uint32_t up = coh_fwd_up(r->fwd) & ~(1u << r->me), p;
	struct route_table *cur = route_tab_get(r);
	uint64_t was = cur->map.version;
	struct timespec until;
	uint32_t conflicted = 0;
	bool newer = false;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += (time_t)(r->fwd_timeout_ms / 1000 + 1);
	for (p = 0; p < r->first.nodes; p++) {
		if (!(up & (1u << p)) || !(w[p] = route_waiter_new()))
			continue;
		/* an offer with a waiter: route_msg_done wakes it with the answer */
		if (route_send_map(r, p, &cur->map, ROUTE_MAP_OFFER, 0, NULL, w[p])) {
			route_waiter_put(w[p]);
			route_waiter_put(w[p]);
			w[p] = NULL;
		}
	}
	route_tab_put(cur);
	for (p = 0; p < r->first.nodes; p++) {
		int ret;

		if (!w[p])
			continue;
		ret = route_waiter_wait(w[p], &until, NULL, 0);
		newer = ret == -ESTALE || newer;
		/* Another table of this version there: the peer offers it back, and the volumes
		 * the two disagree on are fenced here before the caller serves. (A peer that
		 * refused a newer table of ours fences them on its side.) */
		if (ret == -ENOTUNIQ)
			conflicted |= 1u << p;
	}
	if (!newer && !conflicted)
		return;
	pthread_mutex_lock(&r->lock);
	while (((newer && r->tab->map.version == was) ||
		(atomic_load(&r->conflicts) & conflicted) != conflicted) &&
	       !pthread_cond_timedwait(&r->cond, &r->lock, &until))
		;
	pthread_mutex_unlock(&r->lock);
}

int coh_route_new(const struct coh_route_attr *attr, struct coh_route **rp)
{
	struct coh_route *r;
	struct coh_fwd_attr fa;
	struct coh_map m;
	uint32_t me, g;
	int ret;

	if (!attr || !rp || !attr->map || !attr->fab ||
	    attr->attr_size < offsetof(struct coh_route_attr, max_ops) + sizeof(uint32_t))
		return -EINVAL;
	ret = coh_map_check(attr->map, NULL, 0);
	if (ret)
		return ret;
	me = coh_fabric_node_id(attr->fab);
	if (me >= attr->map->nodes)
		return -EINVAL;
	for (g = 0; g < attr->map->ngroups; g++)
		if ((attr->map->groups[g].amfs & (1u << me)) && !attr->group_submit[g])
			return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	memcpy(&r->a, attr, attr->attr_size < sizeof(r->a) ? attr->attr_size : sizeof(r->a));
	r->first = *attr->map;
	r->a.map = &r->first;
	r->me = me;
	if (r->a.map_path && (!(r->map_path = strdup(r->a.map_path)) ||
			      asprintf(&r->accept_path, "%s.accept", r->a.map_path) < 0)) {
		free(r->map_path);
		free(r);
		return -ENOMEM;
	}
	if (!r->a.retries)
		r->a.retries = ROUTE_DEFAULT_RETRIES;
	if (!r->a.coord_timeout_ms)
		r->a.coord_timeout_ms = ROUTE_DEFAULT_COORD_MS;
	if (!r->a.max_ops)
		r->a.max_ops = ROUTE_DEFAULT_MAX_OPS;
	if (!r->a.reroute_wait_ms)
		r->a.reroute_wait_ms = ROUTE_DEFAULT_REROUTE_WAIT_MS;
	pthread_mutex_init(&r->save_lock, NULL);
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	ret = route_first_table(r, &m);
	if (!ret)
		ret = route_first_accept(r);
	if (ret)
		goto err_free;
	r->tab = route_tab_new(&m);
	ret = r->tab ? coh_coord_new(r->a.max_ops, r->a.max_ops, &r->coord) : -ENOMEM;
	if (ret)
		goto err_tab;
	fa = attr->fwd;
	fa.attr_size = sizeof(fa);
	fa.fab = attr->fab;
	fa.nodes = m.nodes;
	fa.block_size = m.block_size;
	fa.execute = route_execute;
	fa.peer_up = route_peer_up;
	fa.peer_down = route_peer_down;
	fa.tick = route_tick;
	fa.exec_arg = r;
	r->max_blocks = fa.max_blocks ? fa.max_blocks : COH_FWD_DEFAULT_MAX_BLOCKS;
	r->fwd_timeout_ms = fa.timeout_ms ? fa.timeout_ms : 4 * COH_FABRIC_DEFAULT_TIMEOUT_MS;
	ret = coh_fwd_new(&fa, &r->fwd);
	if (ret)
		goto err_coord;
	route_sync(r);
	route_nudge(r); /* a change this controller accepted before it stopped may be unfinished */
	*rp = r;
	return 0;

err_coord:
	coh_coord_delete(&r->coord);
err_tab:
	route_tab_put(r->tab);
err_free:
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->save_lock);
	free(r->accept_path);
	free(r->map_path);
	free(r);
	return ret;
}

void coh_route_delete(struct coh_route **rp)
{
	struct route_sub *s, *parked;
	struct coh_route *r;
	struct coh_fwd *fwd;
	struct timespec until;
	uint32_t inside;

	if (!rp || !*rp)
		return;
	r = *rp;
	*rp = NULL;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_mutex_unlock(&r->lock);
	/* A change this controller runs ends with the forwarder: its steps' commands fail with
	 * -ESHUTDOWN and it ends with them. */
	/* Its thread reads @fwd until it is joined (its callbacks submit): cleared only after. */
	fwd = r->fwd;
	coh_fwd_delete(&fwd);
	r->fwd = NULL;
	/* Components that waited for a view: no tick will come again. */
	pthread_mutex_lock(&r->lock);
	parked = r->parked;
	r->parked = NULL;
	pthread_mutex_unlock(&r->lock);
	while ((s = parked)) {
		parked = s->next;
		route_sub_finish(s, -ESHUTDOWN, 0);
	}
	/* An engine thread may still be in the tail of the completion that told the caller its
	 * last command was done. Bounded; past it the router is left allocated rather than freed
	 * under that thread. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&r->lock);
	while ((r->inside || r->change) && !pthread_cond_timedwait(&r->cond, &r->lock, &until))
		;
	inside = r->inside + (r->change ? 1 : 0);
	pthread_mutex_unlock(&r->lock);
	if (inside) {
		COH_LOG_ERR("route: node %u: %u completions never returned; the router is left "
			    "allocated",
			    r->me, inside);
		return;
	}
	coh_coord_delete(&r->coord);
	for (uint32_t p = 0; p < COH_MAP_MAX_NODES; p++)
		route_tab_put(r->conflict[p]);
	route_tab_put(r->tab);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->save_lock);
	free(r->accept_path);
	free(r->map_path);
	free(r);
}

void coh_route_stats(struct coh_route *r, struct coh_route_stats *st)
{
	if (!r || !st)
		return;
	pthread_mutex_lock(&r->lock);
	*st = r->st;
	st->map_version = r->tab->map.version;
	pthread_mutex_unlock(&r->lock);
}

struct coh_fwd *coh_route_forwarder(struct coh_route *r)
{
	return r ? r->fwd : NULL;
}
