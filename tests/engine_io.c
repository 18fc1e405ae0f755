/*
 * engine_io.c - the scenarios of engine_io.h: the operation engine (engine/io.c) on real node
 * processes, forked by the harness of engine_harness.c (which the SCSI unit's cluster test,
 * scsi_engine.c, shares). The hooks below are this file's: every scenario here runs with them.
 *
 * - The state machine, step by step: node 0 runs a manual engine (coh_node_hooks.manual_engine),
 *   so nothing it submits runs until it polls; the io_state hook records every transition.
 * - Compare-and-write across the cluster: every node submits many compare-and-writes against
 *   the same old value at once; exactly one may succeed per round, cluster-wide.
 * - Linearizability with several submitting threads per node, each keeping operations in flight
 *   (up to 64 per node), checked by linz.c over the whole history.
 * - Operations in parallel: an operation that waits on another node (its lock request held at
 *   that node's service thread by the point hook) does not hold up operations on other
 *   resources, which complete while it still waits.
 *
 * Every wait is bounded: the barriers, the completions, and an alarm in every child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_harness.h"
#include "engine_io.h"

static void en_io_state(void *arg, const struct coh_io *io, uint32_t state)
{
	struct en_child *c = arg;
	uint32_t i;

	if (io != c->watch)
		return;
	i = atomic_fetch_add(&c->sh->nstates, 1);
	if (i < EN_MAXSTATES)
		c->sh->states[i] = state;
}

#define PA_RES 1u /* resource 1: blocks 4-7 */

/* en_point - node 1's service thread, serving a request for PA_RES while the parallel scenario
 * holds it: wait (bounded) for the release. */
static int en_point(void *arg, uint32_t pt, uint64_t detail)
{
	struct en_child *c = arg;
	uint64_t until;

	if (c->id == 0 && pt == COH_CRASH_REPLICATED && atomic_exchange(&c->sh->dr_armed, false)) {
		/* The destage race: a flush now, while this write is in the log and not yet in
		 * the cache. Another thread does it (bounded). */
		atomic_store(&c->sh->dr_flush, true);
		until = bench_now_ns() + (uint64_t)EN_WAIT_MS * 1000000ull;
		while (!atomic_load(&c->sh->dr_flushed) && bench_now_ns() < until) {
			struct timespec t = { 0, 100000 };

			nanosleep(&t, NULL);
		}
		return 0;
	}

	if (c->id != 1 || pt != COH_CRASH_SERVE_WB || detail != PA_RES ||
	    !atomic_load(&c->sh->hold))
		return 0;
	atomic_store(&c->sh->held, true);
	until = bench_now_ns() + (uint64_t)EN_WAIT_MS / 3 * 1000000ull;
	while (!atomic_load(&c->sh->release) && bench_now_ns() < until) {
		struct timespec t = { 0, 100000 };

		nanosleep(&t, NULL);
	}
	atomic_store(&c->sh->hold, false);
	return 0;
}

/* Every node's hooks in these scenarios; the state machine's node 0 runs a manual engine. */
static const struct coh_node_hooks en_hooks = { .hooks_size = sizeof(en_hooks),
						.io_state = en_io_state,
						.point = en_point };
static const struct coh_node_hooks en_hooks_manual0 = { .hooks_size = sizeof(en_hooks_manual0),
							.io_state = en_io_state,
							.point = en_point,
							.manual_engine = true };

/* The state machine, step by step. */

struct en_done {
	_Atomic uint32_t calls;
	int status;
	uint32_t state_in_cb;	      /* coh_io_state() as the callback saw it */
	struct en_child *resubmit_on; /* submit the same operation again, once */
};

static void en_cb(struct coh_io *io, int status, void *arg)
{
	struct en_done *d = arg;

	/* Status first: a thread that sees the count (seq_cst) sees it. */
	d->status = status;
	d->state_in_cb = coh_io_state(io);
	atomic_fetch_add(&d->calls, 1);
	if (d->resubmit_on) {
		struct en_child *c = d->resubmit_on;

		d->resubmit_on = NULL;
		if (coh_node_submit(c->n, io))
			d->status = -EPROTO;
	}
}

static void en_io(struct coh_io *io, uint32_t type, uint64_t lba, uint32_t nblocks, void *buf,
		  struct en_done *d)
{
	memset(io, 0, sizeof(*io));
	io->io_size = sizeof(*io);
	io->type = type;
	io->lba = lba;
	io->nblocks = nblocks;
	io->buf = buf;
	io->cb = en_cb;
	io->cb_arg = d;
}

static bool en_states_are(struct en_shared *sh, const uint32_t *want, uint32_t n)
{
	uint32_t i, got = atomic_load(&sh->nstates);

	if (got != n) {
		fprintf(stderr, "states: %u transitions, want %u:", got, n);
		for (i = 0; i < got && i < EN_MAXSTATES; i++)
			fprintf(stderr, " %s", coh_io_state_name(sh->states[i]));
		fprintf(stderr, "\n");
		return false;
	}
	for (i = 0; i < n; i++) {
		if (sh->states[i] != want[i]) {
			fprintf(stderr, "state %u is %s, want %s\n", i,
				coh_io_state_name(sh->states[i]), coh_io_state_name(want[i]));
			return false;
		}
	}
	return true;
}

#define SM_BLOCK 4u /* resource 1 */

static int sm_node0(struct en_child *c)
{
	static uint8_t wbuf[4][EN_BS], rbuf[EN_BS], rbuf4[EN_BS], caw[2 * EN_BS];
	static struct coh_io io[8];
	static struct en_done d[8];
	static const uint32_t write_states[] = { COH_IO_QUEUED, COH_IO_ACQUIRE, COH_IO_INVALIDATE,
						 COH_IO_LOG,	COH_IO_INSTALL, COH_IO_COMPLETE };
	static const uint32_t hit_states[] = { COH_IO_ACQUIRE, COH_IO_COMPLETE };
	uint64_t v = 0, nb = coh_node_nblocks(c->n);
	uint32_t i;
	int r;

	/* Refused at once, and no callback ever: a bad request. */
	en_io(&io[0], COH_IO_WRITE, nb, 1, wbuf[0], &d[0]);
	if ((r = coh_node_submit(c->n, &io[0])) != -EINVAL)
		EFAIL(c, "a write past the end: %d", r);
	en_io(&io[0], COH_IO_READ, 0, 1, rbuf, &d[0]);
	io[0].cb = NULL;
	if ((r = coh_node_submit(c->n, &io[0])) != -EINVAL)
		EFAIL(c, "no callback: %d", r);
	en_io(&io[0], COH_IO_FLUSH, 3, 0, NULL, &d[0]);
	if ((r = coh_node_submit(c->n, &io[0])) != -EINVAL)
		EFAIL(c, "a flush with a range: %d", r);
	en_io(&io[0], COH_IO_READ, 0, 1, rbuf, &d[0]);
	io[0].io_size = 8;
	if ((r = coh_node_submit(c->n, &io[0])) != -EINVAL)
		EFAIL(c, "a short struct: %d", r);
	en_io(&io[0], 99, 0, 1, rbuf, &d[0]);
	if ((r = coh_node_submit(c->n, &io[0])) != -EINVAL)
		EFAIL(c, "an unknown type: %d", r);
	if (atomic_load(&d[0].calls))
		EFAIL(c, "a refused operation's callback ran");

	/* Three writes of one block and a read of it: queued, nothing runs until a poll. */
	for (i = 0; i < 3; i++) {
		bench_fill_block(wbuf[i], EN_BS, 0x7000000000ull + i + 1);
		en_io(&io[i], COH_IO_WRITE, SM_BLOCK, 1, wbuf[i], &d[i]);
	}
	en_io(&io[3], COH_IO_READ, SM_BLOCK, 1, rbuf, &d[3]);
	c->watch = &io[0];
	for (i = 0; i < 4; i++) {
		if ((r = coh_node_submit(c->n, &io[i])))
			EFAIL(c, "submit %u: %s", i, coh_strerror(r));
	}
	/* queue_depth is 4: a fifth is refused until one completes. */
	en_io(&io[4], COH_IO_READ, 0, 1, rbuf4, &d[4]);
	if ((r = coh_node_submit(c->n, &io[4])) != -EBUSY)
		EFAIL(c, "a fifth operation with a depth of 4: %d", r);
	for (i = 0; i < 4; i++) {
		if (coh_io_state(&io[i]) != COH_IO_QUEUED || atomic_load(&d[i].calls))
			EFAIL(c, "operation %u ran before a poll (%s)", i,
			      coh_io_state_name(coh_io_state(&io[i])));
	}
	/* One step: the first write runs to its end, the others wait. */
	if ((r = coh_node_engine_poll(c->n, 1)) != 1)
		EFAIL(c, "poll 1: %d", r);
	if (atomic_load(&d[0].calls) != 1 || d[0].status || d[0].state_in_cb != COH_IO_IDLE)
		EFAIL(c, "first write: %u calls, status %d, state %s in its callback",
		      atomic_load(&d[0].calls), d[0].status, coh_io_state_name(d[0].state_in_cb));
	if (!en_states_are(c->sh, write_states, 6))
		EFAIL(c, "the first write's states (a write of a resource nobody holds)");
	for (i = 1; i < 4; i++) {
		if (coh_io_state(&io[i]) != COH_IO_QUEUED || atomic_load(&d[i].calls))
			EFAIL(c, "operation %u moved on a poll of one", i);
	}
	if ((r = coh_node_submit(c->n, &io[4])))
		EFAIL(c, "a fifth after a completion: %s", coh_strerror(r));
	/* The rest, in order: the read sees the third write. */
	atomic_store(&c->sh->nstates, 0);
	c->watch = &io[3];
	if ((r = coh_node_engine_poll(c->n, 10)) != 4)
		EFAIL(c, "poll 2: %d", r);
	for (i = 0; i < 5; i++) {
		if (atomic_load(&d[i].calls) != 1 || d[i].status)
			EFAIL(c, "operation %u: %u calls, status %s", i, atomic_load(&d[i].calls),
			      coh_strerror(d[i].status));
	}
	if (bench_block_value(rbuf, EN_BS, &v) || v != 0x7000000003ull)
		EFAIL(c, "the read after three writes saw %llx", (unsigned long long)v);
	if (!en_states_are(c->sh, hit_states, 2))
		EFAIL(c, "the read's states (a hit on a block held exclusive)");

	/* A callback that submits its own operation again. */
	en_io(&io[5], COH_IO_READ, SM_BLOCK, 1, rbuf, &d[5]);
	d[5].resubmit_on = c;
	if ((r = coh_node_submit(c->n, &io[5])) || coh_node_engine_poll(c->n, 10) != 2 ||
	    atomic_load(&d[5].calls) != 2 || d[5].status)
		EFAIL(c, "resubmitted from its callback: %u calls, status %d",
		      atomic_load(&d[5].calls), d[5].status);

	/* Compare-and-write: equal, then not. */
	memcpy(caw, wbuf[2], EN_BS);
	bench_fill_block(caw + EN_BS, EN_BS, 0x7000000010ull);
	en_io(&io[6], COH_IO_COMPARE_WRITE, SM_BLOCK, 1, caw, &d[6]);
	if ((r = coh_node_submit(c->n, &io[6])) || coh_node_engine_poll(c->n, 1) != 1 ||
	    d[6].status)
		EFAIL(c, "a compare-and-write that matches: %s", coh_strerror(d[6].status));
	if ((r = coh_node_read(c->n, SM_BLOCK, 1, rbuf)) || bench_block_value(rbuf, EN_BS, &v) ||
	    v != 0x7000000010ull)
		EFAIL(c, "after the compare-and-write: %s, %llx", coh_strerror(r),
		      (unsigned long long)v);
	/* the old data again: a miscompare, at the first byte that differs */
	for (i = 0; i < EN_BS && caw[i] == rbuf[i]; i++)
		;
	bench_fill_block(caw + EN_BS, EN_BS, 0x7000000011ull);
	en_io(&io[6], COH_IO_COMPARE_WRITE, SM_BLOCK, 1, caw, &d[6]);
	if ((r = coh_node_submit(c->n, &io[6])) || coh_node_engine_poll(c->n, 1) != 1 ||
	    d[6].status != -EILSEQ || io[6].miscompare != i)
		EFAIL(c, "a compare-and-write that does not match: %s at %u (want -EILSEQ at %u)",
		      coh_strerror(d[6].status), io[6].miscompare, i);
	if ((r = coh_node_read(c->n, SM_BLOCK, 1, rbuf)) || bench_block_value(rbuf, EN_BS, &v) ||
	    v != 0x7000000010ull)
		EFAIL(c, "a miscompare wrote: %llx", (unsigned long long)v);

	/* Closing with operations queued: each ends once, with -ESHUTDOWN, never run. */
	bench_fill_block(wbuf[3], EN_BS, 0x7000000099ull);
	en_io(&io[6], COH_IO_WRITE, SM_BLOCK, 1, wbuf[3], &d[6]);
	en_io(&io[7], COH_IO_FLUSH, 0, 0, NULL, &d[7]);
	atomic_store(&d[6].calls, 0);
	if (coh_node_submit(c->n, &io[6]) || coh_node_submit(c->n, &io[7]))
		EFAIL(c, "submit before close");
	if (en_bar(c, 0))
		EFAIL(c, "barrier 0");
	if ((r = coh_node_close(&c->n)))
		EFAIL(c, "close: %s", coh_strerror(r));
	if (atomic_load(&d[6].calls) != 1 || d[6].status != -ESHUTDOWN ||
	    atomic_load(&d[7].calls) != 1 || d[7].status != -ESHUTDOWN)
		EFAIL(c, "queued at close: %u calls (%s), %u calls (%s)", atomic_load(&d[6].calls),
		      coh_strerror(d[6].status), atomic_load(&d[7].calls),
		      coh_strerror(d[7].status));
	if (en_bar(c, 1))
		EFAIL(c, "barrier 1");
	return 0;
}

static int sm_node(struct en_child *c)
{
	uint8_t buf[EN_BS];
	uint64_t v = 0;
	int r;

	if (c->id == 0)
		return sm_node0(c);
	if (en_bar(c, 0))
		EFAIL(c, "barrier 0");
	if (en_bar(c, 1))
		EFAIL(c, "barrier 1");
	/* The write queued at node 0's close never ran. */
	if ((r = coh_node_read(c->n, SM_BLOCK, 1, buf)) || bench_block_value(buf, EN_BS, &v) ||
	    v != 0x7000000010ull)
		EFAIL(c, "block %u after node 0 left: %s, %llx", SM_BLOCK, coh_strerror(r),
		      (unsigned long long)v);
	return 0;
}

int en_state_machine(void)
{
	return en_run("engine_state_machine", 3, 1, 4, &en_hooks_manual0, sm_node, NULL);
}

/* Compare-and-write across the cluster. */

#define CAW_ROUNDS 24u
#define CAW_PER_NODE 8u
#define CAW_BLOCK 9u

struct caw_op {
	struct coh_io io;
	uint8_t buf[2 * EN_BS];
	struct en_child *c;
	uint32_t round;
	uint64_t value;
	_Atomic int status;
	_Atomic bool done;
};

static void caw_cb(struct coh_io *io, int status, void *arg)
{
	struct caw_op *o = arg;

	(void)io;
	if (!status) {
		atomic_fetch_add(&o->c->sh->caw_won[o->round], 1);
		atomic_store(&o->c->sh->caw_value[o->round], o->value);
	}
	atomic_store(&o->status, status);
	atomic_store(&o->done, true);
}

static int caw_node(struct en_child *c)
{
	static struct caw_op ops[CAW_PER_NODE];
	uint8_t cur[EN_BS];
	uint64_t v, until;
	uint32_t round, i;
	int r;

	for (round = 0; round < CAW_ROUNDS; round++) {
		if (en_bar(c, round % 4))
			EFAIL(c, "barrier, round %u", round);
		/* Everyone reads the block, and all compare against that. */
		if ((r = coh_node_read(c->n, CAW_BLOCK, 1, cur)))
			EFAIL(c, "read, round %u: %s", round, coh_strerror(r));
		if (en_bar(c, 4 + round % 2))
			EFAIL(c, "barrier after the read, round %u", round);
		for (i = 0; i < CAW_PER_NODE; i++) {
			struct caw_op *o = &ops[i];

			o->c = c;
			o->round = round;
			o->value = (uint64_t)(c->id + 1) << 40 | (uint64_t)round << 16 | (i + 1);
			atomic_store(&o->done, false);
			memcpy(o->buf, cur, EN_BS);
			bench_fill_block(o->buf + EN_BS, EN_BS, o->value);
			o->io = (struct coh_io){ .io_size = sizeof(o->io),
						 .type = COH_IO_COMPARE_WRITE,
						 .lba = CAW_BLOCK,
						 .nblocks = 1,
						 .buf = o->buf,
						 .cb = caw_cb,
						 .cb_arg = o };
			if ((r = coh_node_submit(c->n, &o->io)))
				EFAIL(c, "submit: %s", coh_strerror(r));
		}
		until = bench_now_ns() + (uint64_t)EN_WAIT_MS * 1000000ull;
		for (i = 0; i < CAW_PER_NODE; i++) {
			while (!atomic_load(&ops[i].done)) {
				struct timespec t = { 0, 200000 };

				if (bench_now_ns() > until)
					EFAIL(c, "compare-and-write %u of round %u never completed",
					      i, round);
				nanosleep(&t, NULL);
			}
			r = atomic_load(&ops[i].status);
			if (r && r != -EILSEQ)
				EFAIL(c, "compare-and-write: %s", coh_strerror(r));
		}
		if (en_bar(c, 6))
			EFAIL(c, "barrier at the end of round %u", round);
		if (atomic_load(&c->sh->caw_won[round]) != 1)
			EFAIL(c, "round %u: %u compare-and-writes succeeded against the same data",
			      round, atomic_load(&c->sh->caw_won[round]));
		if ((r = coh_node_read(c->n, CAW_BLOCK, 1, cur)) ||
		    bench_block_value(cur, EN_BS, &v) || v != atomic_load(&c->sh->caw_value[round]))
			EFAIL(c, "round %u: the block holds %llx, the winner wrote %llx", round,
			      (unsigned long long)v,
			      (unsigned long long)atomic_load(&c->sh->caw_value[round]));
		/* Every node has read it (shared, nothing asked of anyone any more): each has the
		 * block at hand, and coh_node_read_cached gives it without the engine. */
		if (en_bar(c, 6))
			EFAIL(c, "barrier after the reads of round %u", round);
		memset(cur, 0, sizeof(cur));
		/* It only tries the cache's lock, which the service thread may hold a moment:
		 * a few tries, bounded; a block that is not at hand fails every one. */
		for (i = 0; i < 1000; i++) {
			if ((r = coh_node_read_cached(c->n, CAW_BLOCK, cur)) != -EAGAIN)
				break;
			sched_yield();
		}
		if (r || bench_block_value(cur, EN_BS, &v) ||
		    v != atomic_load(&c->sh->caw_value[round]))
			EFAIL(c, "round %u: read from the cache: %s, %llx", round, coh_strerror(r),
			      (unsigned long long)v);
	}
	if ((r = coh_node_read_cached(c->n, coh_node_nblocks(c->n), cur)) != -EINVAL)
		EFAIL(c, "a cached read past the end: %s", coh_strerror(r));
	return 0;
}

int en_compare_write_cluster(void)
{
	return en_run("engine_compare_write", 3, 1, 64, &en_hooks, caw_node, NULL);
}

/* Linearizability with several submitting threads per node. */

#define LZ_THREADS 4u
#define LZ_QD 16u /* per thread: 64 per node */
#define LZ_OPS_PER_THREAD 400u
#define LZ_BLOCKS 12u

struct lz_op {
	struct coh_io io;
	uint8_t buf[EN_BS];
	struct lz_thread *t;
	struct linz_op *rec;
	bool w;
};

struct lz_thread {
	struct en_child *c;
	uint32_t tid;
	struct lz_op ops[LZ_QD];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t free_mask;
	int err;
	pthread_t th;
};

static void lz_cb(struct coh_io *io, int status, void *arg)
{
	struct lz_op *o = arg;
	struct lz_thread *t = o->t;
	uint64_t resp = bench_now_ns();

	(void)io;
	if (!status && !o->w && bench_block_value(o->buf, EN_BS, &o->rec->value))
		status = -EILSEQ;
	if (!status) {
		atomic_thread_fence(memory_order_seq_cst);
		o->rec->resp = resp;
	}
	pthread_mutex_lock(&t->lock);
	if (status && !t->err)
		t->err = status;
	t->free_mask |= 1u << (o - t->ops);
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

/* lz_slot - a free slot (with @all, wait for all of them); -1 after EN_WAIT_MS. */
static int lz_slot(struct lz_thread *t, bool all)
{
	uint32_t mask = (1u << LZ_QD) - 1;
	uint64_t until = bench_now_ns() + (uint64_t)EN_WAIT_MS * 1000000ull;
	int slot = -1;

	pthread_mutex_lock(&t->lock);
	while (bench_now_ns() < until && !(all ? t->free_mask == mask : t->free_mask != 0)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&t->cond, &t->lock, &ts);
	}
	if (all ? t->free_mask == mask : t->free_mask != 0) {
		slot = __builtin_ctz(t->free_mask);
		if (!all)
			t->free_mask &= ~(1u << slot);
	}
	pthread_mutex_unlock(&t->lock);
	return slot;
}

static void *lz_main(void *arg)
{
	struct lz_thread *t = arg;
	struct en_child *c = t->c;
	uint64_t s = (uint64_t)(c->id * LZ_THREADS + t->tid + 1) * 0x9e3779b97f4a7c15ull;
	uint32_t i;

	for (i = 0; i < LZ_OPS_PER_THREAD && !t->err; i++) {
		int slot = lz_slot(t, false), r;
		struct lz_op *o;
		uint32_t at;
		uint64_t b;

		if (slot < 0) {
			t->err = -ETIMEDOUT;
			break;
		}
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		o = &t->ops[slot];
		o->t = t;
		b = s % LZ_BLOCKS;
		o->w = (s >> 20) % 10 < 5;
		at = atomic_fetch_add(&c->sh->nops[c->id], 1);
		if (at >= EN_MAXOPS) {
			t->err = -ENOSPC;
			break;
		}
		o->rec = &c->sh->ops[c->id][at];
		o->rec->block = b;
		o->rec->node = c->id;
		o->rec->is_write = o->w;
		o->rec->value =
		    o->w ? (uint64_t)(c->id + 1) << 40 | (uint64_t)t->tid << 32 | (i + 1) : 0;
		o->rec->resp = 0;
		if (o->w)
			bench_fill_block(o->buf, EN_BS, o->rec->value);
		o->io = (struct coh_io){ .io_size = sizeof(o->io),
					 .type = o->w ? COH_IO_WRITE : COH_IO_READ,
					 .lba = b,
					 .nblocks = 1,
					 .buf = o->buf,
					 .cb = lz_cb,
					 .cb_arg = o };
		atomic_thread_fence(memory_order_seq_cst);
		o->rec->inv = bench_now_ns();
		r = coh_node_submit(c->n, &o->io);
		if (r == -EBUSY) {
			/* the node's depth is shared by the threads: not expected at 64 */
			t->err = r;
			break;
		}
		if (r)
			lz_cb(&o->io, r, o);
	}
	if (lz_slot(t, true) < 0 && !t->err)
		t->err = -ETIMEDOUT;
	return NULL;
}

/* lz_check_latency - every operation of this node succeeded: the node's latency histograms
 * count each one once, and their percentiles are in order. */
static int lz_check_latency(struct en_child *c)
{
	static struct coh_node_stats st;
	uint64_t counted = 0, p50, p99, p999;
	uint32_t b;

	if (coh_node_stats(c->n, &st))
		EFAIL(c, "stats");
	for (b = 0; b < COH_LAT_BUCKETS; b++)
		counted += st.lat_read[b] + st.lat_write[b];
	if (counted != (uint64_t)LZ_THREADS * LZ_OPS_PER_THREAD)
		EFAIL(c, "latency histograms count %llu operations, not %u",
		      (unsigned long long)counted, LZ_THREADS * LZ_OPS_PER_THREAD);
	p50 = coh_lat_percentile(st.lat_write, 0.5);
	p99 = coh_lat_percentile(st.lat_write, 0.99);
	p999 = coh_lat_percentile(st.lat_write, 0.999);
	if (!p50 || p50 > p99 || p99 > p999)
		EFAIL(c, "write latency percentiles out of order: %llu %llu %llu ns",
		      (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)p999);
	return 0;
}

static int lz_node(struct en_child *c)
{
	static struct lz_thread th[LZ_THREADS];
	uint32_t i;
	int err = 0;

	if (en_bar(c, 0))
		EFAIL(c, "start barrier");
	for (i = 0; i < LZ_THREADS; i++) {
		th[i].c = c;
		th[i].tid = i;
		th[i].free_mask = (1u << LZ_QD) - 1;
		pthread_mutex_init(&th[i].lock, NULL);
		pthread_cond_init(&th[i].cond, NULL);
		if (pthread_create(&th[i].th, NULL, lz_main, &th[i]))
			EFAIL(c, "thread %u", i);
	}
	for (i = 0; i < LZ_THREADS; i++) {
		pthread_join(th[i].th, NULL);
		if (th[i].err && !err)
			err = th[i].err;
	}
	if (err)
		EFAIL(c, "an operation failed: %s", coh_strerror(err));
	return lz_check_latency(c);
}

static int lz_judge(struct en_shared *sh, uint32_t nodes)
{
	static struct linz_op all[EN_MAXN * EN_MAXOPS];
	size_t n = 0;
	uint32_t i, j;

	for (i = 0; i < nodes; i++) {
		uint32_t k = atomic_load(&sh->nops[i]);

		for (j = 0; j < k && j < EN_MAXOPS; j++)
			all[n++] = sh->ops[i][j];
	}
	if (n != (size_t)nodes * LZ_THREADS * LZ_OPS_PER_THREAD) {
		fprintf(stderr, "engine_linz: %zu operations recorded\n", n);
		return 1;
	}
	return linz_check(all, n, stderr) ? 1 : 0;
}

int en_linz_many_in_flight(void)
{
	return en_run("engine_linz", 3, 1, LZ_THREADS * LZ_QD, &en_hooks, lz_node, lz_judge);
}

/* Operations in parallel. */

#define PA_A 4u	 /* in PA_RES, which node 1 holds */
#define PA_B 12u /* resource 3, which node 0 holds */

/* pa_wait - wait (bounded) for @d's callback. */
static bool pa_wait(struct en_done *d)
{
	uint64_t until = bench_now_ns() + (uint64_t)EN_WAIT_MS * 1000000ull;

	while (!atomic_load(&d->calls) && bench_now_ns() < until) {
		struct timespec t = { 0, 100000 };

		nanosleep(&t, NULL);
	}
	return atomic_load(&d->calls) == 1;
}

static int pa_node(struct en_child *c)
{
	static uint8_t a[EN_BS], b[EN_BS], b2[EN_BS], rb[EN_BS];
	static struct coh_io io[3];
	static struct en_done d[3];
	uint64_t v = 0, until;
	int r;

	bench_fill_block(a, EN_BS, 0x5a00000001ull);
	bench_fill_block(b, EN_BS, 0x5b00000001ull);
	if (c->id == 1 && (r = coh_node_write(c->n, PA_A, 1, a)))
		EFAIL(c, "write A: %s", coh_strerror(r));
	if (c->id == 0 && (r = coh_node_write(c->n, PA_B, 1, b)))
		EFAIL(c, "write B: %s", coh_strerror(r));
	if (c->id == 1)
		atomic_store(&c->sh->hold, true);
	if (en_bar(c, 0))
		EFAIL(c, "barrier 0");
	if (c->id == 0) {
		/* A write into node 1's resource: its request waits at node 1. */
		bench_fill_block(a, EN_BS, 0x5a00000002ull);
		en_io(&io[0], COH_IO_WRITE, PA_A, 1, a, &d[0]);
		if ((r = coh_node_submit(c->n, &io[0])))
			EFAIL(c, "submit A: %s", coh_strerror(r));
		until = bench_now_ns() + (uint64_t)EN_WAIT_MS * 1000000ull;
		while (!atomic_load(&c->sh->held) && bench_now_ns() < until) {
			struct timespec t = { 0, 100000 };

			nanosleep(&t, NULL);
		}
		if (!atomic_load(&c->sh->held))
			EFAIL(c, "node 1 never served the request for A");
		/* A read and a write of a resource held here: they do not wait for A. */
		en_io(&io[1], COH_IO_READ, PA_B, 1, rb, &d[1]);
		bench_fill_block(b2, EN_BS, 0x5b00000002ull);
		en_io(&io[2], COH_IO_WRITE, PA_B + 1, 1, b2, &d[2]);
		if ((r = coh_node_submit(c->n, &io[1])) || (r = coh_node_submit(c->n, &io[2])))
			EFAIL(c, "submit B: %s", coh_strerror(r));
		if (!pa_wait(&d[1]) || !pa_wait(&d[2]))
			EFAIL(c, "the operations on B did not complete");
		if (atomic_load(&d[0].calls) || coh_io_state(&io[0]) == COH_IO_IDLE)
			EFAIL(c, "the write of A completed before the operations on B: they waited "
				 "for it");
		atomic_store(&c->sh->release, true);
		if (d[1].status || d[2].status || bench_block_value(rb, EN_BS, &v) ||
		    v != 0x5b00000001ull)
			EFAIL(c, "B: %s, %s, read %llx", coh_strerror(d[1].status),
			      coh_strerror(d[2].status), (unsigned long long)v);
		if (!pa_wait(&d[0]) || d[0].status)
			EFAIL(c, "the write of A: %s", coh_strerror(d[0].status));
		if ((r = coh_node_read(c->n, PA_A, 1, rb)) || bench_block_value(rb, EN_BS, &v) ||
		    v != 0x5a00000002ull)
			EFAIL(c, "A after the release: %s, %llx", coh_strerror(r),
			      (unsigned long long)v);
	}
	if (en_bar(c, 1))
		EFAIL(c, "barrier 1");
	return 0;
}

int en_parallel(void)
{
	return en_run("engine_parallel", 3, 1, 16, &en_hooks, pa_node, NULL);
}

/* A destage while a later write of the block is replicated and not yet installed. */

#define DR_BLOCK 20u

static bool dr_wait(_Atomic bool *flag)
{
	uint64_t until = bench_now_ns() + (uint64_t)EN_WAIT_MS * 1000000ull;

	while (!atomic_load(flag) && bench_now_ns() < until) {
		struct timespec t = { 0, 100000 };

		nanosleep(&t, NULL);
	}
	return atomic_load(flag);
}

static int dr_node(struct en_child *c)
{
	static uint8_t v1[EN_BS], v2[EN_BS], rb[EN_BS];
	static struct coh_io io;
	static struct en_done d;
	uint64_t v = 0;
	int r;

	bench_fill_block(v1, EN_BS, 0xd100000001ull);
	bench_fill_block(v2, EN_BS, 0xd100000002ull);
	if (c->id == 0) {
		c->sh->killed = 1u;
		/* v1: acknowledged, dirty here, its record live on the log's peer. */
		if ((r = coh_node_write(c->n, DR_BLOCK, 1, v1)))
			EFAIL(c, "write v1: %s", coh_strerror(r));
		atomic_store(&c->sh->dr_armed, true);
		en_io(&io, COH_IO_WRITE, DR_BLOCK, 1, v2, &d);
		if ((r = coh_node_submit(c->n, &io)))
			EFAIL(c, "submit v2: %s", coh_strerror(r));
		/* v2's record is on the peer and v2 is not in the cache: destage what is. */
		if (!dr_wait(&c->sh->dr_flush))
			EFAIL(c, "the write of v2 never reached its replicated step");
		r = coh_node_flush(c->n);
		atomic_store(&c->sh->dr_flushed, true);
		if (r)
			EFAIL(c, "flush: %s", coh_strerror(r));
		if (!pa_wait(&d) || d.status)
			EFAIL(c, "write v2: %s", coh_strerror(d.status));
		/* v2 is acknowledged; it is in this node's cache and in its log only. Die. */
		atomic_store(&c->sh->dr_acked, true);
		kill(getpid(), SIGKILL);
		EFAIL(c, "still alive");
	}
	if (!dr_wait(&c->sh->dr_acked))
		EFAIL(c, "node 0 never acknowledged v2");
	/* Node 0 is gone: the survivors take its locks and replay its log. */
	if ((r = coh_node_read(c->n, DR_BLOCK, 1, rb)) || bench_block_value(rb, EN_BS, &v))
		EFAIL(c, "read after node 0 died: %s", coh_strerror(r));
	if (v != 0xd100000002ull)
		EFAIL(c,
		      "block %u is %llx after node 0 died: the acknowledged write v2 (%llx) is "
		      "lost",
		      DR_BLOCK, (unsigned long long)v, 0xd100000002ull);
	return 0;
}

int en_destage_race(void)
{
	return en_run("engine_destage_race", 3, 1, 16, &en_hooks, dr_node, NULL);
}
