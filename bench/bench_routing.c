/*
 * bench_routing.c - cohort-bench routing: commands through the router (include/cohort/router.h)
 * on three controllers of this host, with the shape: group ga cabled to controllers 0-1,
 * gb to 1-2, and a third, gc, to 0 and 2, each a Cohort cluster (RAID-5 over 3 element files,
 * k = 1, every controller a member), a logical volume on each, a volume striped over ga and gb
 * (8-block chunks) and one over all three (4-block chunks). One controller submits, closed
 * loop, while the others serve. Rows:
 *   fabric_rtt_64        the floor of a forward: a 64-byte SEND and its 64-byte answer between
 *                        controllers 2 and 0
 *   local_<op>_qd<D>     controller 0 on la (an AMF of ga: its own engine), 4 KiB
 *   forwarded_<op>_qd<D> controller 2 on la (not an AMF of ga: forwarded to 0), 4 KiB
 *   shared_write_qd1_holder, shared_write_qd1_preferred
 *                        controller 2's forwarded 4 KiB writes on la's set while controller 1
 *                        (ga's other AMF) writes the same set on its own engine: sent to the
 *                        AMF holding the block's lock (coh_route_attr.group_holders), or always
 *                        to the preferred AMF, 0, which then takes the locks from 1 and 1
 *                        back (lock ping-pong); controller 1's writes and the locks its engine
 *                        gave away are printed on stderr
 *   group16_write_qd32   controller 0, 64 KiB writes on la (one group)
 *   virtual16_write_qd32 controller 0 (the coordinator), 64 KiB writes on the striped volume:
 *                        two components of 32 KiB on the two groups, in parallel
 *   virtual16x3_write_qd32  the same on the volume striped over three groups: each write
 *                        three components (16 KiB chunks: 32, 16 and 16 KiB), in parallel
 * The 4 KiB rows touch random blocks of a 256-block set; the 64 KiB rows give each slot in
 * flight a range of its own (no two overlap), so that they measure the fan-out and not the
 * wait behind an overlapping write.
 * Each sample is one command from its submit to its callback; the table's Mop/s is the row's
 * commands over its wall time. What it leaves out: rdma (the groups' clusters are made on shm
 * here).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/router.h"

#define RB_BS 4096u
#define RB_NODES 3u
#define RB_ELEM_BLOCKS 1024u
#define RB_SET 256u /* blocks of la the rows touch */
#define RB_TIMEOUT_MS 5000u
#define RB_BARRIER_MS 300000
#define RB_CHILD_S 1800u
#define RB_RTT_CH 251u
#define RB_MAXQD 32u
#define RB_BIG 16u /* blocks of the 64 KiB rows */
#define RB_GROUPS 3u

struct rshared {
	struct bench_sbar all;
	char why[RB_NODES][200];
	/* The shared_write rows: the background writer stops when @bg_stop is set; controller
	 * 2's router ignores the lock's holder while @holders_off is. */
	_Atomic uint32_t bg_stop, holders_off;
	uint64_t ns[]; /* cap samples */
};

struct rb {
	const struct bench_opts *o;
	struct rshared *sh;
	uint32_t me, cap;
	char dirs[1 + RB_GROUPS][96]; /* the forwarder's cluster, ga's, gb's, gc's */
	struct coh_fabric *fab[1 + RB_GROUPS];
	struct coh_node *node[RB_GROUPS];
	struct coh_route *r;
	struct coh_map map;
	uint32_t la, vs, vs3;
	struct coh_cq *cq;
	struct coh_ep *ep;
	struct coh_mr *msg;
};

struct rb_slot {
	struct coh_route_io rio;
	struct rb_run *run;
	uint64_t t0;
	uint8_t *buf;
};

struct rb_run {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t done, measured_from, cap, free_mask;
	int err;
	uint64_t *ns;
	struct rb_slot slots[RB_MAXQD];
};

static const char *const rb_dir_names[1 + RB_GROUPS] = { "fwd", "ga", "gb", "gc" };

static void rb_why(struct rb *b, const char *what, int err)
{
	snprintf(b->sh->why[b->me], sizeof(b->sh->why[0]), "%s: %s", what, coh_strerror(err));
}

static void rb_name(char *dst, const char *s)
{
	snprintf(dst, COH_MAP_NAME_MAX + 1, "%s", s);
}

static uint32_t rb_logical(struct coh_map *m, const char *name, uint32_t g, uint64_t first,
			   uint64_t blocks)
{
	struct coh_map_volume *v = &m->volumes[m->nvolumes];

	rb_name(v->name, name);
	v->id[0] = (uint8_t)(m->nvolumes + 1);
	v->kind = COH_MAP_LOGICAL;
	v->group = g;
	v->first_block = first;
	v->blocks = blocks;
	return m->nvolumes++;
}

/* rb_stripe - a virtual volume @name striped over @n logical volumes @comp in @chunk blocks. */
static uint32_t rb_stripe(struct coh_map *m, const char *name, uint8_t id, uint32_t chunk,
			  uint32_t n, const uint32_t *comp)
{
	uint32_t i, vi = m->nvolumes++;
	struct coh_map_volume *v = &m->volumes[vi];

	rb_name(v->name, name);
	v->id[0] = id;
	v->kind = COH_MAP_VIRTUAL;
	v->layout = COH_MAP_STRIPE;
	v->stripe_blocks = chunk;
	v->ncomp = n;
	for (i = 0; i < n; i++) {
		v->comp[i] = comp[i];
		v->blocks += m->volumes[comp[i]].blocks;
	}
	return vi;
}

/* rb_map - the table: ga on 0-1, gb on 1-2, gc on 0 and 2; la, lb, vs striped over sa and sb,
 * vs3 striped over ta, tb and tc. */
static void rb_map(struct rb *b)
{
	static const char *const names[RB_GROUPS] = { "ga", "gb", "gc" };
	static const uint32_t amfs[RB_GROUPS] = { 0x3, 0x6, 0x5 }, pref[RB_GROUPS] = { 0, 2, 0 };
	struct coh_map *m = &b->map;
	uint32_t two[2], three[3], g;

	memset(m, 0, sizeof(*m));
	m->version = 1;
	m->nodes = RB_NODES;
	m->block_size = RB_BS;
	m->ngroups = RB_GROUPS;
	for (g = 0; g < RB_GROUPS; g++) {
		rb_name(m->groups[g].name, names[g]);
		m->groups[g].amfs = amfs[g];
		m->groups[g].preferred = pref[g];
		m->groups[g].blocks = 2 * RB_ELEM_BLOCKS;
	}
	b->la = rb_logical(m, "la", 0, 0, 512);
	rb_logical(m, "lb", 1, 0, 512);
	two[0] = rb_logical(m, "sa", 0, 1024, 512);
	two[1] = rb_logical(m, "sb", 1, 1024, 512);
	b->vs = rb_stripe(m, "vs", 0x77, 8, 2, two);
	three[0] = rb_logical(m, "ta", 0, 1536, 512);
	three[1] = rb_logical(m, "tb", 1, 1536, 512);
	three[2] = rb_logical(m, "tc", 2, 0, 512);
	b->vs3 = rb_stripe(m, "vs3", 0x78, 4, 3, three);
}

static int rb_engine_submit(void *arg, struct coh_io *io)
{
	return coh_node_submit(arg, io);
}

static int rb_engine_read_cached(void *arg, uint64_t lba, void *buf)
{
	return coh_node_read_cached(arg, lba, buf);
}

static int rb_holders(void *arg, uint32_t g, uint64_t gblock, uint32_t *owner, uint32_t *sharers)
{
	struct rb *b = arg;

	if (atomic_load(&b->sh->holders_off))
		return -ENOENT; /* the router takes the preferred AMF */
	return coh_node_lock_holders(b->node[g], gblock, owner, sharers);
}

static int rb_open(struct rb *b)
{
	struct coh_route_attr ra;
	char paths[3][160];
	uint32_t g, i;
	int ret;

	for (i = 0; i < 1 + RB_GROUPS; i++) {
		struct coh_fabric_attr fa = { .provider = "shm",
					      .node_id = b->me,
					      .cluster = b->dirs[i],
					      .shm_latency_ns = b->o->latency_ns };

		ret = coh_fabric_open(&fa, &b->fab[i]);
		if (ret) {
			rb_why(b, "fabric open", ret);
			return ret;
		}
	}
	for (g = 0; g < RB_GROUPS; g++) {
		struct coh_node_attr na = {
			.fab = b->fab[1 + g],
			.nodes = RB_NODES,
			.raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
			.elem_blocks = RB_ELEM_BLOCKS,
			.replicas = 1,
			.log_bytes = 16u << 20,
			.timeout_ms = RB_TIMEOUT_MS,
			.queue_depth = 64,
			.lanes = b->o->lanes
		};

		for (i = 0; i < 3; i++) {
			snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", b->dirs[1 + g], i);
			na.elem_paths[i] = paths[i];
		}
		ret = coh_node_open(&na, &b->node[g]);
		if (ret) {
			rb_why(b, "node open", ret);
			return ret;
		}
	}
	rb_map(b);
	memset(&ra, 0, sizeof(ra));
	ra.attr_size = sizeof(ra);
	ra.map = &b->map;
	ra.fab = b->fab[0];
	ra.fwd.max_blocks = RB_BIG;
	ra.fwd.slots = RB_MAXQD;
	for (g = 0; g < RB_GROUPS; g++) {
		if (b->map.groups[g].amfs & (1u << b->me)) {
			ra.group_submit[g] = rb_engine_submit;
			ra.group_read_cached[g] = rb_engine_read_cached;
			ra.group_arg[g] = b->node[g];
		}
	}
	/* As cohortd: a forwarded command goes to the AMF holding its block's lock. */
	ra.group_holders = rb_holders;
	ra.view_arg = b;
	ret = coh_route_new(&ra, &b->r);
	if (ret)
		rb_why(b, "router", ret);
	return ret;
}

/* rb_rtt - controllers 0 and 2: a 64-byte SEND and its answer, on endpoints of their own. */
static int rb_rtt(struct rb *b)
{
	struct coh_ep_attr ea = { .peer = b->me == 0 ? 2 : 0,
				  .channel = RB_RTT_CH,
				  .max_send_wr = 4,
				  .max_recv_wr = 4,
				  .max_msg_size = 64 };
	uint32_t i, n = b->o->iters + b->o->warmup;
	struct coh_wc wc;
	int ret;

	if (b->me == 1 || !bench_op_selected(b->o, "fabric_rtt_64"))
		return 0;
	ret = coh_cq_new(b->fab[0], 16, &b->cq);
	if (!ret)
		ret = coh_mr_new(b->fab[0], 4096, COH_ACCESS_LOCAL_WRITE, &b->msg);
	if (!ret) {
		ea.send_cq = ea.recv_cq = b->cq;
		ret = coh_ep_new(b->fab[0], &ea, &b->ep);
	}
	/* Each side keeps a receive posted ahead of the message it waits for. */
	if (!ret)
		ret = coh_ep_post_recv(b->ep, b->msg, 64, 64, 2);
	for (i = 0; i < n && !ret; i++) {
		uint64_t t0 = bench_now_ns();
		uint32_t want = 2, got = 0;

		if (b->me == 2)
			ret = coh_ep_post_send(b->ep, b->msg, 0, 64, 1);
		else
			want = 1; /* controller 0: the message, then its answer's send */
		while (!ret && got < want) {
			ret = coh_cq_wait(b->cq, &wc, 1, RB_TIMEOUT_MS);
			if (ret > 0) {
				ret = wc.status;
				got++;
			}
		}
		if (!ret)
			ret = coh_ep_post_recv(b->ep, b->msg, 64, 64, 2);
		if (!ret && b->me == 0) {
			ret = coh_ep_post_send(b->ep, b->msg, 0, 64, 1);
			if (!ret)
				ret = coh_cq_wait(b->cq, &wc, 1, RB_TIMEOUT_MS);
			ret = ret > 0 ? wc.status : ret;
		}
		if (b->me == 2 && i >= b->o->warmup)
			b->sh->ns[i - b->o->warmup] = bench_now_ns() - t0;
	}
	if (ret) {
		rb_why(b, "fabric_rtt_64", ret);
		return ret;
	}
	if (b->me == 2) {
		struct bench_row row;

		memset(&row, 0, sizeof(row));
		snprintf(row.suite, sizeof(row.suite), "routing");
		snprintf(row.op, sizeof(row.op), "fabric_rtt_64");
		snprintf(row.provider, sizeof(row.provider), "shm");
		row.size = 64;
		bench_stats(b->sh->ns, b->o->iters, &row);
		bench_print_row(&row, b->o->csv);
		fflush(stdout);
	}
	return 0;
}

static void rb_done(struct coh_route_io *rio, const struct coh_map_status *st)
{
	struct rb_slot *sl = rio->arg;
	struct rb_run *run = sl->run;
	uint64_t t = bench_now_ns() - sl->t0;

	pthread_mutex_lock(&run->lock);
	if (run->done >= run->measured_from && run->done - run->measured_from < run->cap)
		run->ns[run->done - run->measured_from] = t;
	run->done++;
	if (st->status && !run->err)
		run->err = st->status;
	run->free_mask |= 1u << (sl - run->slots);
	pthread_cond_signal(&run->cond);
	pthread_mutex_unlock(&run->lock);
}

/* rb_take - a free slot of the first @qd (all of them with @all), or -1 past the bound. */
static int rb_take(struct rb_run *run, uint32_t qd, bool all)
{
	uint32_t mask = qd >= 32 ? ~0u : (1u << qd) - 1;
	uint64_t until = bench_now_ns() + (uint64_t)RB_TIMEOUT_MS * 4 * 1000000ull;
	int slot = -1;

	pthread_mutex_lock(&run->lock);
	while (!(all ? (run->free_mask & mask) == mask : (run->free_mask & mask) != 0) &&
	       bench_now_ns() < until) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&run->cond, &run->lock, &ts);
	}
	if (all ? (run->free_mask & mask) == mask : (run->free_mask & mask) != 0) {
		slot = __builtin_ctz(run->free_mask & mask);
		if (!all)
			run->free_mask &= ~(1u << slot);
	}
	pthread_mutex_unlock(&run->lock);
	return slot;
}

/* rb_row - one row, run by controller @who (the others serve), printed by it. */
static int rb_row(struct rb *b, uint32_t who, const char *name, uint32_t type, uint32_t vol,
		  uint32_t nblocks, uint32_t qd)
{
	static struct rb_run run;
	static uint8_t bufs[RB_MAXQD][RB_BIG * RB_BS];
	uint64_t s = 0x9e3779b97f4a7c15ull + qd, t0 = 0, wall;
	uint32_t i, n = b->o->iters, warm = b->o->warmup;
	int ret = 0;

	if (!bench_op_selected(b->o, name))
		return 0;
	if (b->me == who) {
		memset(&run, 0, sizeof(run));
		pthread_mutex_init(&run.lock, NULL);
		pthread_cond_init(&run.cond, NULL);
		run.free_mask = ~0u;
		run.measured_from = warm;
		run.cap = b->cap;
		run.ns = b->sh->ns;
		for (i = 0; i < warm + n && !ret; i++) {
			int slot = rb_take(&run, qd, false);
			struct rb_slot *sl;

			if (slot < 0) {
				ret = -ETIMEDOUT;
				break;
			}
			if (i == warm)
				t0 = bench_now_ns();
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			sl = &run.slots[slot];
			sl->run = &run;
			sl->buf = bufs[slot];
			memset(sl->buf, (int)s, 64);
			sl->rio = (struct coh_route_io){
				.type = type,
				.volume = vol,
				/* 4 KiB rows: random blocks of a set; 64 KiB rows: each slot its own
				 * range, so that what they measure is the fan-out, not queueing
				 * behind overlapping writes */
				.lba = nblocks == 1 ? (s >> 16) % RB_SET : (uint64_t)slot * nblocks,
				.nblocks = nblocks,
				.buf = sl->buf,
				.done = rb_done,
				.arg = sl,
			};
			sl->t0 = bench_now_ns();
			ret = coh_route_submit(b->r, &sl->rio);
		}
		if (rb_take(&run, qd, true) < 0 && !ret)
			ret = -ETIMEDOUT;
		wall = bench_now_ns() - t0;
		if (!ret)
			ret = run.err;
		if (ret) {
			rb_why(b, name, ret);
		} else {
			struct bench_row row;

			memset(&row, 0, sizeof(row));
			snprintf(row.suite, sizeof(row.suite), "routing");
			snprintf(row.op, sizeof(row.op), "%s", name);
			snprintf(row.provider, sizeof(row.provider), "shm");
			row.size = (size_t)nblocks * RB_BS;
			row.rate_mops = wall ? (double)n * 1e3 / (double)wall : 0;
			bench_stats(run.ns, n, &row);
			bench_print_row(&row, b->o->csv);
			fflush(stdout);
		}
		pthread_mutex_destroy(&run.lock);
		pthread_cond_destroy(&run.cond);
	}
	/* A background writer (the shared_write rows) stops once the measured row is done. */
	if (b->me == who)
		atomic_store(&b->sh->bg_stop, 1);
	if (bench_sbar_wait(&b->sh->all, RB_BARRIER_MS) && !ret)
		ret = -ETIMEDOUT;
	return ret;
}

/* rb_bg_done - the background writer's completion. */
static void rb_bg_done(struct coh_route_io *rio, const struct coh_map_status *st)
{
	struct rb_run *run = rio->arg;

	pthread_mutex_lock(&run->lock);
	run->done++;
	if (st->status && !run->err)
		run->err = st->status;
	pthread_cond_signal(&run->cond);
	pthread_mutex_unlock(&run->lock);
}

/* rb_bg_writer - controller 1 (an AMF of ga, not its preferred) writes random blocks of la's
 * set on its own engine, one at a time, until the measured row is done (bounded: the row's
 * barrier time). Returns 0 or the first error. */
static int rb_bg_writer(struct rb *b, uint64_t *writes)
{
	static uint8_t buf[RB_BS];
	struct rb_run run;
	uint64_t s = 0x2545f4914f6cdd1dull, until = bench_now_ns() + RB_BARRIER_MS * 1000000ull;
	struct coh_route_io rio;
	int ret = 0;

	memset(&run, 0, sizeof(run));
	pthread_mutex_init(&run.lock, NULL);
	pthread_cond_init(&run.cond, NULL);
	*writes = 0;
	while (!ret && !atomic_load(&b->sh->bg_stop) && bench_now_ns() < until) {
		uint32_t was = run.done;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		memset(buf, (int)s, 64);
		rio = (struct coh_route_io){ .type = COH_IO_WRITE,
					     .volume = b->la,
					     .lba = (s >> 16) % RB_SET,
					     .nblocks = 1,
					     .buf = buf,
					     .done = rb_bg_done,
					     .arg = &run };
		ret = coh_route_submit(b->r, &rio);
		pthread_mutex_lock(&run.lock);
		while (!ret && run.done == was && bench_now_ns() < until) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec++;
			pthread_cond_timedwait(&run.cond, &run.lock, &ts);
		}
		if (!ret && run.done == was)
			ret = -ETIMEDOUT;
		if (!ret)
			ret = run.err;
		pthread_mutex_unlock(&run.lock);
		(*writes)++;
	}
	pthread_mutex_destroy(&run.lock);
	pthread_cond_destroy(&run.cond);
	return ret;
}

/*
 * rb_shared_row - controller 2's forwarded 4 KiB writes on la's set while controller 1 writes
 * the same set on its own engine: with @holders each of 2's goes to the AMF holding the block's
 * lock (mostly 1), without them to ga's preferred AMF, 0, which then takes the locks from 1 and
 * 1 back from it. Controller 1 says on stderr how many writes it made meanwhile and how many
 * locks its ga engine gave to others.
 */
static int rb_shared_row(struct rb *b, const char *name, bool holders)
{
	struct coh_node_stats *st = NULL;
	uint64_t writes = 0, given = 0;
	int ret = 0;

	if (!bench_op_selected(b->o, name))
		return 0;
	if (b->me == 1) {
		st = malloc(sizeof(*st));
		if (!st)
			return -ENOMEM;
		atomic_store(&b->sh->bg_stop, 0);
		atomic_store(&b->sh->holders_off, !holders);
		if (!coh_node_stats(b->node[0], st))
			given = st->lock_transfers;
	}
	/* Nobody starts before the flags are set. */
	if (bench_sbar_wait(&b->sh->all, RB_BARRIER_MS))
		ret = -ETIMEDOUT;
	if (!ret && b->me == 1) {
		ret = rb_bg_writer(b, &writes);
		if (ret)
			rb_why(b, "background writer", ret);
		if (!coh_node_stats(b->node[0], st))
			given = st->lock_transfers - given;
		fprintf(
		    stderr,
		    "routing: %s: controller 1 wrote %llu blocks of the same set meanwhile; its "
		    "ga engine gave %llu locks to others\n",
		    name, (unsigned long long)writes, (unsigned long long)given);
	}
	free(st);
	if (!ret)
		ret = rb_row(b, 2, name, COH_IO_WRITE, b->la, 1, 1);
	return ret;
}

static int rb_node(struct rb *b)
{
	static const uint32_t qds[] = { 1, 32 };
	char name[32];
	uint32_t q, w;
	int ret = rb_open(b);

	if (!ret)
		ret = bench_sbar_wait(&b->sh->all, RB_BARRIER_MS);
	if (!ret)
		ret = rb_rtt(b);
	for (w = 0; w < 2 && !ret; w++) {
		for (q = 0; q < 2 && !ret; q++) {
			uint32_t type = w ? COH_IO_WRITE : COH_IO_READ;

			snprintf(name, sizeof(name), "local_%s_qd%u", w ? "write" : "read", qds[q]);
			ret = rb_row(b, 0, name, type, b->la, 1, qds[q]);
			snprintf(name, sizeof(name), "forwarded_%s_qd%u", w ? "write" : "read",
				 qds[q]);
			if (!ret)
				ret = rb_row(b, 2, name, type, b->la, 1, qds[q]);
		}
	}
	if (!ret)
		ret = rb_shared_row(b, "shared_write_qd1_holder", true);
	if (!ret)
		ret = rb_shared_row(b, "shared_write_qd1_preferred", false);
	if (!ret)
		ret = rb_row(b, 0, "group16_write_qd32", COH_IO_WRITE, b->la, RB_BIG, 32);
	if (!ret)
		ret = rb_row(b, 0, "virtual16_write_qd32", COH_IO_WRITE, b->vs, RB_BIG, 32);
	if (!ret)
		ret = rb_row(b, 0, "virtual16x3_write_qd32", COH_IO_WRITE, b->vs3, RB_BIG, 32);
	/* Everyone is done before anyone leaves. */
	if (!ret)
		ret = bench_sbar_wait(&b->sh->all, RB_BARRIER_MS);
	coh_route_delete(&b->r);
	coh_ep_delete(&b->ep);
	coh_mr_delete(&b->msg);
	coh_cq_delete(&b->cq);
	for (q = 0; q < RB_GROUPS; q++)
		if (b->node[q] && coh_node_close(&b->node[q]) && !ret)
			ret = -EIO;
	for (q = 0; q < 1 + RB_GROUPS; q++)
		coh_fabric_close(&b->fab[q]);
	return ret;
}

int bench_routing(const struct bench_opts *o)
{
	char dir[] = "/dev/shm/cohort-bench-routing-XXXXXX";
	uint32_t cap = o->iters + o->warmup, i;
	pid_t pids[RB_NODES];
	struct rshared *sh;
	size_t len;
	int ret = 0;

	if (o->node >= 0 || strcmp(o->provider, "shm")) {
		fprintf(stderr, "cohort-bench routing: forks its own controllers on this host, on "
				"shm (no --node, no rdma yet)\n");
		return -EINVAL;
	}
	if (!mkdtemp(dir))
		return -errno;
	len = sizeof(*sh) + (size_t)cap * sizeof(uint64_t);
	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		ret = -errno;
		bench_remove_tree(dir);
		return ret;
	}
	memset(sh, 0, sizeof(*sh));
	bench_sbar_init(&sh->all, RB_NODES);
	for (i = 0; i < 1 + RB_GROUPS; i++) {
		char sub[96];

		snprintf(sub, sizeof(sub), "%s/%s", dir, rb_dir_names[i]);
		if (mkdir(sub, 0700)) {
			ret = -errno;
			goto out;
		}
	}
	bench_print_header(o->csv);
	fflush(NULL);
	for (i = 0; i < RB_NODES; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct rb b = { .o = o, .sh = sh, .me = i, .cap = cap };

			for (uint32_t d = 0; d < 1 + RB_GROUPS; d++)
				snprintf(b.dirs[d], sizeof(b.dirs[d]), "%s/%s", dir,
					 rb_dir_names[d]);
			alarm(RB_CHILD_S);
			_exit(rb_node(&b) ? 1 : 0);
		}
		if (pids[i] < 0) {
			ret = -errno;
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			goto out;
		}
	}
	for (i = 0; i < RB_NODES; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, RB_CHILD_S + 10) || !WIFEXITED(st) ||
		    WEXITSTATUS(st)) {
			fprintf(stderr, "cohort-bench routing: controller %u failed: %s\n", i,
				sh->why[i][0] ? sh->why[i] : "died");
			ret = -EIO;
		}
	}
out:
	munmap(sh, len);
	bench_remove_tree(dir);
	return ret;
}
