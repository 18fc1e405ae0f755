/*
 * engine_io.c - the scenarios of engine_io.h: the operation engine (engine/io.c) on real node
 * processes. A small harness, like races.c's, forks the nodes after mapping a shared area; each
 * opens its fabric (shm in a fresh cluster directory, or rdma in the VM rig) and its node over
 * element files there.
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
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "cohort/node_hooks.h"
#include "cohort/scsi.h"
#include "conf.h"
#include "engine_io.h"
#include "linz.h"

#define EN_MAXN 3u
#define EN_BS 4096u
#define EN_ELEM_BLOCKS 16u /* RAID-5 over 3 elements, chunk 2: 32 blocks, 8 resources */
#define EN_WAIT_MS 30000
#define EN_CHILD_S 120
#define EN_MAXOPS 6000u
#define EN_MAXSTATES 64u

struct en_shared {
	struct bench_sbar bar[8];
	struct bench_sbar bar_one_less; /* the end, when one node was killed on purpose */
	/* the state machine scenario */
	_Atomic uint32_t nstates;
	uint32_t states[EN_MAXSTATES];
	/* compare-and-write: successes per round, cluster-wide */
	_Atomic uint32_t caw_won[64];
	_Atomic uint64_t caw_value[64];
	/* linearizability: each node's history */
	_Atomic uint32_t nops[EN_MAXN];
	/* parallel: node 1 holds its service thread at a request for PA_RES while @hold */
	_Atomic bool hold, held, release;
	/* destage race: node 0's write, replicated and not installed, asks for a flush */
	_Atomic bool dr_armed, dr_flush, dr_flushed, dr_acked;
	uint32_t killed; /* nodes that end by SIGKILL, on purpose */
	/* SCSI: each node's VPD 0x80 and 0x83 pages, and each round's COMPARE AND WRITE winner */
	uint8_t vpd80[EN_MAXN][64], vpd83[EN_MAXN][128];
	_Atomic uint32_t scsi_winner[64];
	struct linz_op ops[EN_MAXN][EN_MAXOPS];
	char why[EN_MAXN][256];
};

struct en_child {
	struct en_shared *sh;
	uint32_t id, nodes;
	const char *dir, *cluster;
	struct coh_fabric *fab;
	struct coh_node *n;
	/* scenario-local */
	const struct coh_io *watch; /* the operation whose states the hook records */
};

#define EFAIL(c, ...)                                                                              \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "%s node %u: %s\n", __func__, (c)->id, (c)->sh->why[(c)->id]);     \
		return 1;                                                                          \
	} while (0)

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

static int en_open(struct en_child *c, uint32_t k, uint32_t depth, bool manual)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_hooks hooks = { .hooks_size = sizeof(hooks),
					.arg = c,
					.io_state = en_io_state,
					.point = en_point,
					.manual_engine = manual };
	struct coh_node_attr na = { .nodes = c->nodes,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = EN_ELEM_BLOCKS,
				    .replicas = (int)k,
				    .log_bytes = 256u << 10,
				    .cache_blocks = 64,
				    .timeout_ms = 5000,
				    .queue_depth = depth,
				    .hooks = &hooks };
	char paths[3][600];
	uint32_t i;
	int ret;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	ret = coh_fabric_open(&fa, &c->fab);
	if (ret)
		return ret;
	na.fab = c->fab;
	return coh_node_open(&na, &c->n);
}

static int en_bar(struct en_child *c, uint32_t i)
{
	return bench_sbar_wait(&c->sh->bar[i], EN_WAIT_MS);
}

/* en_run - fork @nodes node processes running @fn; 0 when every one exits 0. */
static int en_run(const char *name, uint32_t nodes, uint32_t k, uint32_t depth, bool manual0,
		  int (*fn)(struct en_child *c), int (*judge)(struct en_shared *sh, uint32_t nodes))
{
	char dir[] = "/dev/shm/cohort-engine-XXXXXX", cluster[512];
	struct en_shared *sh;
	pid_t pids[EN_MAXN];
	int failed = 0, r;
	uint32_t i;

	if (!mkdtemp(dir))
		return 1;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_remove_tree(dir);
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	for (i = 0; i < 8; i++)
		bench_sbar_init(&sh->bar[i], nodes);
	bench_sbar_init(&sh->bar_one_less, nodes - 1);
	if (strcmp(conf_provider(), "shm")) {
		if (conf_cluster_new(cluster, sizeof(cluster), nodes)) {
			munmap(sh, sizeof(*sh));
			bench_remove_tree(dir);
			return 1;
		}
	} else {
		snprintf(cluster, sizeof(cluster), "%s", dir);
	}
	fflush(NULL);
	for (i = 0; i < nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct en_child c = {
				.sh = sh, .id = i, .nodes = nodes, .dir = dir, .cluster = cluster
			};

			alarm(EN_CHILD_S);
			r = en_open(&c, k, depth, manual0 && i == 0);
			if (r) {
				fprintf(stderr, "%s node %u: open: %s\n", name, i, coh_strerror(r));
				_exit(1);
			}
			r = fn(&c);
			if (!r && (sh->killed ? bench_sbar_wait(&sh->bar_one_less, EN_WAIT_MS)
					      : en_bar(&c, 7)))
				r = 1;
			if (c.n && coh_node_close(&c.n) && !r)
				fprintf(stderr, "%s node %u: close failed\n", name, i);
			coh_fabric_close(&c.fab);
			_exit(r);
		}
		if (pids[i] < 0) {
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			munmap(sh, sizeof(*sh));
			bench_remove_tree(dir);
			return 1;
		}
	}
	for (i = 0; i < nodes; i++) {
		int st = 0;

		if (!bench_wait_child(pids[i], &st, EN_CHILD_S + 10) && (sh->killed >> i & 1) &&
		    WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
			continue;
		if (WIFSIGNALED(st) || WEXITSTATUS(st) || (sh->killed >> i & 1)) {
			fprintf(stderr, "%s: node %u ended badly (%s %d): %s\n", name, i,
				WIFSIGNALED(st) ? "signal" : "exit",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), sh->why[i]);
			failed = 1;
		}
	}
	if (!failed && judge)
		failed = judge(sh, nodes);
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}

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
	return en_run("engine_state_machine", 3, 1, 4, true, sm_node, NULL);
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
	}
	return 0;
}

int en_compare_write_cluster(void)
{
	return en_run("engine_compare_write", 3, 1, 64, false, caw_node, NULL);
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
	return en_run("engine_linz", 3, 1, LZ_THREADS * LZ_QD, false, lz_node, lz_judge);
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
	return en_run("engine_parallel", 3, 1, 16, false, pa_node, NULL);
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
	return en_run("engine_destage_race", 3, 1, 16, false, dr_node, NULL);
}

/* The SCSI unit on the real engine: a unit per node over the same volume, as each controller
 * exports it (built with the host path: COHORT_FRONTEND). */
#ifdef COHORT_TEST_SCSI

#define SC_ROUNDS 24u
#define SC_BLOCK 9u

struct sc_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t calls;
};

static void sc_done(struct coh_scsi_cmd *cmd, void *arg)
{
	struct sc_wait *w = arg;

	(void)cmd;
	pthread_mutex_lock(&w->lock);
	w->calls++;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int sc_submit(void *ctx, struct coh_io *io)
{
	return coh_node_submit(ctx, io);
}

/* sc_exec - run one command on @lu with @buf, bounded; its status (or -1: no answer in time, or
 * more than one). */
static int sc_exec(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len, void *buf,
		   uint32_t len, struct coh_scsi_cmd *cmd)
{
	struct sc_wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	struct iovec iov = { buf, len };
	struct timespec until;
	int ret = 0;

	memset(cmd, 0, sizeof(*cmd));
	cmd->cmd_size = sizeof(*cmd);
	cmd->cdb = cdb;
	cmd->cdb_len = cdb_len;
	cmd->iov = &iov;
	cmd->iov_cnt = 1;
	cmd->done = sc_done;
	cmd->done_arg = &w;
	coh_scsi_cmd_exec(lu, cmd);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += EN_WAIT_MS / 1000;
	pthread_mutex_lock(&w.lock);
	while (!w.calls && !ret)
		ret = pthread_cond_timedwait(&w.cond, &w.lock, &until);
	pthread_mutex_unlock(&w.lock);
	return w.calls == 1 ? cmd->status : -1;
}

static void sc_rw16(uint8_t *c, uint8_t op, uint64_t lba, uint32_t n)
{
	int i;

	memset(c, 0, 16);
	c[0] = op;
	for (i = 0; i < 8; i++)
		c[2 + i] = (uint8_t)(lba >> (56 - 8 * i));
	for (i = 0; i < 4; i++)
		c[10 + i] = (uint8_t)(n >> (24 - 8 * i));
}

static int sc_node(struct en_child *c)
{
	static uint8_t buf[2 * EN_BS], back[2 * EN_BS];
	struct coh_scsi_lu_attr la = { .attr_size = sizeof(la),
				       .block_size = EN_BS,
				       .nblocks = coh_node_nblocks(c->n),
				       .volume_id = { 0xc0, 0x40, 0x77, 7 },
				       .volume_name = "engine",
				       .tpg_id = (uint16_t)(c->id + 1),
				       .rel_port_id = (uint16_t)(c->id + 1),
				       .tpg_count = (uint16_t)c->nodes,
				       .submit = sc_submit,
				       .submit_ctx = c->n };
	uint8_t cdb[16], inq[6] = { 0x12, 1, 0x83, 0, 128, 0 };
	static struct coh_scsi_cmd cmd;
	struct coh_scsi_lu *lu;
	uint32_t r;
	int st;

	if (coh_scsi_lu_new(&la, &lu))
		EFAIL(c, "unit");
	if (sc_exec(lu, inq, 6, c->sh->vpd83[c->id], 128, &cmd) != COH_SCSI_GOOD)
		EFAIL(c, "INQUIRY VPD 0x83");
	inq[2] = 0x80;
	if (sc_exec(lu, inq, 6, c->sh->vpd80[c->id], 64, &cmd) != COH_SCSI_GOOD)
		EFAIL(c, "INQUIRY VPD 0x80");
	/* A write through node 0's unit, read back through every other node's at once. */
	if (c->id == 0) {
		bench_fill_block(buf, EN_BS, 0x5c5100000001ull);
		bench_fill_block(buf + EN_BS, EN_BS, 0x5c5100000002ull);
		sc_rw16(cdb, 0x8a, 3, 2);
		if ((st = sc_exec(lu, cdb, 16, buf, sizeof(buf), &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "WRITE(16): status %d", st);
	}
	if (en_bar(c, 0))
		EFAIL(c, "barrier 0");
	if (c->id != 0) {
		bench_fill_block(buf, EN_BS, 0x5c5100000001ull);
		bench_fill_block(buf + EN_BS, EN_BS, 0x5c5100000002ull);
		sc_rw16(cdb, 0x88, 3, 2);
		if ((st = sc_exec(lu, cdb, 16, back, sizeof(back), &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "READ(16): status %d", st);
		if (memcmp(back, buf, sizeof(buf)))
			EFAIL(c, "READ(16) through node %u does not return node 0's write", c->id);
	}
	/* COMPARE AND WRITE from every node at once against the same old data: one wins. */
	for (r = 0; r < SC_ROUNDS; r++) {
		uint64_t old = 0xca0000000000ull | r, mine = 0xcb0000000000ull | r << 8 | c->id;

		if (c->id == 0) {
			bench_fill_block(buf, EN_BS, old);
			sc_rw16(cdb, 0x8a, SC_BLOCK, 1);
			if (sc_exec(lu, cdb, 16, buf, EN_BS, &cmd) != COH_SCSI_GOOD)
				EFAIL(c, "round %u: WRITE of the old data", r);
		}
		if (en_bar(c, 1 + r % 2))
			EFAIL(c, "round %u: barrier", r);
		bench_fill_block(buf, EN_BS, old);
		bench_fill_block(buf + EN_BS, EN_BS, mine);
		memset(cdb, 0, 16);
		cdb[0] = 0x89;
		cdb[9] = SC_BLOCK;
		cdb[13] = 1;
		st = sc_exec(lu, cdb, 16, buf, 2 * EN_BS, &cmd);
		if (st == COH_SCSI_GOOD) {
			atomic_fetch_add(&c->sh->scsi_winner[r], 1);
		} else if (st != COH_SCSI_CHECK_CONDITION || (cmd.sense[2] & 0xf) != 0xe ||
			   cmd.sense[12] != 0x1d) {
			EFAIL(c, "round %u: COMPARE AND WRITE: status %d, sense key %x asc %x", r,
			      st, cmd.sense[2] & 0xf, cmd.sense[12]);
		}
		if (en_bar(c, 3 + r % 2))
			EFAIL(c, "round %u: barrier after", r);
		if (atomic_load(&c->sh->scsi_winner[r]) != 1)
			EFAIL(c, "round %u: %u COMPARE AND WRITEs succeeded against the same data",
			      r, atomic_load(&c->sh->scsi_winner[r]));
	}
	if (en_bar(c, 5))
		EFAIL(c, "barrier end");
	coh_scsi_lu_delete(lu);
	return 0;
}

/* sc_judge - every node reported the same identity. */
static int sc_judge(struct en_shared *sh, uint32_t nodes)
{
	uint32_t i;

	for (i = 1; i < nodes; i++) {
		/* The designators before this node's own port and group (the last 16 bytes). */
		uint32_t len = ((uint32_t)sh->vpd83[0][2] << 8 | sh->vpd83[0][3]) + 4 - 16;

		if (memcmp(sh->vpd80[i], sh->vpd80[0], 36) ||
		    memcmp(sh->vpd83[i], sh->vpd83[0], len)) {
			fprintf(stderr, "engine_scsi: node %u reports another identity\n", i);
			return 1;
		}
	}
	return 0;
}

int en_scsi_every_controller(void)
{
	return en_run("engine_scsi", 3, 1, 16, false, sc_node, sc_judge);
}
#endif
