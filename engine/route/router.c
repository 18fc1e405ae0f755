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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cohort/log.h"
#include "cohort/router.h"

#define ROUTE_DEFAULT_RETRIES 4u
#define ROUTE_DEFAULT_COORD_MS 30000u
#define ROUTE_DEFAULT_MAX_OPS 256u

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
	struct route_sub *next; /* in @pending */
};

struct route_op {
	struct coh_route *r;
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

struct coh_route {
	struct coh_route_attr a;
	struct coh_map map;
	uint32_t me, max_blocks;
	struct coh_fwd *fwd;
	struct coh_coord *coord;
	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;  /* @inside went to 0 while stopping */
	uint32_t inside;      /* engine threads in a completion of ours (route_enter) */
	struct route_sub *pending;
	uint32_t running; /* components out on an engine or the forwarder */
	uint32_t ops;	  /* commands in flight */
	bool stopping;
	struct coh_route_stats st;
};

static void route_sub_run(struct route_sub *s);
static void route_op_run(struct route_op *op);
static void route_coordinate(struct route_op *op);

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
			target = (uint32_t)__builtin_ctz(coh_fwd_up(r->fwd));
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
			ret = coh_map_target(&r->map, s->volume, r->me, coh_fwd_up(r->fwd),
					     COH_MAP_NO_NODE, &target);
		}
		if (ret) {
			route_sub_finish(s, ret, 0);
			return;
		}
		pthread_mutex_lock(&r->lock);
		r->running++;
		pthread_mutex_unlock(&r->lock);
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
			s->fc.map_version = r->map.version;
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
	struct coh_route *r = op->r;
	uint32_t g, c, p, n = 0, maxp;
	int v, ret;

	if (op->type == COH_IO_FLUSH) {
		op->subs = calloc(r->map.ngroups, sizeof(*op->subs));
		if (!op->subs)
			return -ENOMEM;
		for (g = 0; g < r->map.ngroups; g++) {
			v = route_first_logical(&r->map, g);
			/* A flush sent by another controller is for its volume's group only. */
			if (v < 0 || (op->fcmd && r->map.volumes[op->volume].group != g))
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
	maxp = coh_map_split_pieces(&r->map, op->volume, op->nblocks);
	op->pieces = calloc(maxp, sizeof(*op->pieces));
	if (!op->pieces)
		return -ENOMEM;
	ret = coh_map_split(&r->map, op->volume, op->lba, op->nblocks, op->comps,
			    COH_MAP_MAX_COMPONENTS, &op->ncomps, op->pieces, maxp, &op->nsubs);
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
			s->buf = (uint8_t *)op->buf + pc->host_block * r->map.block_size;
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

/* route_coordinate - at the coordinator: the grant on the range, then the components. */
static void route_coordinate(struct route_op *op)
{
	struct coh_route *r = op->r;
	int ret;

	memset(&op->creq, 0, sizeof(op->creq));
	op->creq.lba = op->lba;
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
	return op;
}

/* route_start - a new operation's first step. */
static void route_start(struct route_op *op)
{
	struct coh_route *r = op->r;

	if (op->type != COH_IO_FLUSH && r->map.volumes[op->volume].kind == COH_MAP_VIRTUAL) {
		/* A command sent here by another controller is coordinated here: its origin chose
		 * this controller. */
		if (op->fcmd || (uint32_t)__builtin_ctz(coh_fwd_up(r->fwd)) == r->me) {
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

int coh_route_submit(struct coh_route *r, struct coh_route_io *rio)
{
	const struct coh_map_volume *v;
	struct route_op *op;
	int ret;

	if (!r || !rio || !rio->done)
		return -EINVAL;
	if (rio->type == COH_IO_FLUSH) {
		if (rio->nblocks)
			return -EINVAL;
	} else {
		if ((rio->type != COH_IO_READ && rio->type != COH_IO_WRITE &&
		     rio->type != COH_IO_COMPARE_WRITE) ||
		    rio->volume >= r->map.nvolumes || !rio->buf || !rio->nblocks ||
		    rio->nblocks > r->max_blocks ||
		    (rio->type == COH_IO_COMPARE_WRITE && 2 * rio->nblocks > r->max_blocks))
			return -EINVAL;
		v = &r->map.volumes[rio->volume];
		if (rio->lba >= v->blocks || rio->nblocks > v->blocks - rio->lba)
			return -EINVAL;
	}
	op = route_op_new(r, true, &ret);
	if (!op)
		return ret;
	op->type = rio->type;
	op->volume = rio->type == COH_IO_FLUSH ? 0 : rio->volume;
	op->lba = rio->lba;
	op->nblocks = rio->nblocks;
	op->buf = rio->buf;
	op->rio = rio;
	rio->priv = op;
	route_start(op);
	return 0;
}

/* route_execute - the forwarder's executor: a command another controller sent here. */
static void route_execute(void *arg, struct coh_fwd_cmd *cmd)
{
	struct coh_route *r = arg;
	const struct coh_map_volume *v;
	struct route_op *op;
	uint32_t t;
	int ret;

	if (cmd->map_version != r->map.version) {
		coh_fwd_complete(cmd, -ESTALE, 0);
		return;
	}
	if (cmd->volume >= r->map.nvolumes) {
		coh_fwd_complete(cmd, -EINVAL, 0);
		return;
	}
	v = &r->map.volumes[cmd->volume];
	if (cmd->op != COH_FWD_FLUSH &&
	    (cmd->lba >= v->blocks || cmd->nblocks > v->blocks - cmd->lba)) {
		coh_fwd_complete(cmd, -EINVAL, 0);
		return;
	}
	/* A logical volume's command comes to an AMF of its group; anything else is a stale
	 * route (the origin routes it again). */
	if ((cmd->op == COH_FWD_FLUSH || v->kind == COH_MAP_LOGICAL) &&
	    (coh_map_target(&r->map, cmd->volume, r->me, 1u << r->me, COH_MAP_NO_NODE, &t) ||
	     t != r->me)) {
		coh_fwd_complete(cmd, -EHOSTUNREACH, 0);
		return;
	}
	op = route_op_new(r, false, &ret);
	if (!op) {
		coh_fwd_complete(cmd, ret, 0);
		return;
	}
	route_count(r, &r->st.executed_for_others);
	op->type = cmd->op;
	op->volume = cmd->volume;
	op->lba = cmd->lba;
	op->nblocks = cmd->nblocks;
	op->buf = cmd->buf;
	op->fcmd = cmd;
	route_start(op);
}

int coh_route_new(const struct coh_route_attr *attr, struct coh_route **rp)
{
	struct coh_route *r;
	struct coh_fwd_attr fa;
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
	memcpy(&r->a, attr, sizeof(r->a));
	r->map = *attr->map;
	r->a.map = &r->map;
	r->me = me;
	if (!r->a.retries)
		r->a.retries = ROUTE_DEFAULT_RETRIES;
	if (!r->a.coord_timeout_ms)
		r->a.coord_timeout_ms = ROUTE_DEFAULT_COORD_MS;
	if (!r->a.max_ops)
		r->a.max_ops = ROUTE_DEFAULT_MAX_OPS;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	ret = coh_coord_new(r->a.max_ops, r->a.max_ops, &r->coord);
	if (ret)
		goto err_free;
	fa = attr->fwd;
	fa.attr_size = sizeof(fa);
	fa.fab = attr->fab;
	fa.nodes = r->map.nodes;
	fa.block_size = r->map.block_size;
	fa.execute = route_execute;
	fa.exec_arg = r;
	r->max_blocks = fa.max_blocks ? fa.max_blocks : COH_FWD_DEFAULT_MAX_BLOCKS;
	ret = coh_fwd_new(&fa, &r->fwd);
	if (ret)
		goto err_coord;
	*rp = r;
	return 0;

err_coord:
	coh_coord_delete(&r->coord);
err_free:
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}

void coh_route_delete(struct coh_route **rp)
{
	struct coh_route *r;
	struct timespec until;
	uint32_t inside;

	if (!rp || !*rp)
		return;
	r = *rp;
	*rp = NULL;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_mutex_unlock(&r->lock);
	coh_fwd_delete(&r->fwd);
	/* An engine thread may still be in the tail of the completion that told the caller its
	 * last command was done. Bounded; past it the router is left allocated rather than freed
	 * under that thread. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&r->lock);
	while (r->inside && !pthread_cond_timedwait(&r->cond, &r->lock, &until))
		;
	inside = r->inside;
	pthread_mutex_unlock(&r->lock);
	if (inside) {
		COH_LOG_ERR("route: node %u: %u completions never returned; the router is left "
			    "allocated",
			    r->me, inside);
		return;
	}
	coh_coord_delete(&r->coord);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void coh_route_stats(struct coh_route *r, struct coh_route_stats *st)
{
	if (!r || !st)
		return;
	pthread_mutex_lock(&r->lock);
	*st = r->st;
	pthread_mutex_unlock(&r->lock);
}

struct coh_fwd *coh_route_forwarder(struct coh_route *r)
{
	return r ? r->fwd : NULL;
}
