/*
 * takeover.c - the crash trials of takeover.h. The parent maps a shared area for the nodes'
 * histories, their published views and the barriers, and forks the node processes; each opens
 * its fabric (shm, in a fresh cluster directory; or, with COHORT_TEST_PROVIDER=rdma in the VM
 * rig, rdma on fresh ports of COHORT_RXE_IP) and its engine node over element files in that
 * directory, runs its share of the workload, and records every operation's invocation, response
 * and error. A thread in each node publishes the node's view (epoch, members, quorum, whether a
 * view change is under way) every millisecond, so that the parent can see what the cluster did
 * without asking the nodes anything.
 *
 * The victims die at their crash points (or, if a point never comes, after their last
 * operation). The parent stops the paused node (SIGSTOP) once it has done its share of
 * operations, and resumes it (SIGCONT) after a set time or once every survivor serves a view
 * without it. With tk_trial.cut the pause is a partition at the same moments: a thread of each
 * node (tk_cutter) cuts its fabric off from the other side (coh_fabric_partition) and heals it
 * again, and the cut-off node runs on. When every node is done with its workload and the
 * survivors agree on a view of exactly the nodes still alive (a paused node the others excluded
 * is first told to leave), the parent lets them go on: they destage, read every block back, and
 * the lowest scrubs the parity. The parent then checks the whole history for linearizability
 * and what the paused node did after its exclusion.
 *
 * Every wait is bounded: an alarm in every child, the children's own waits end before it, and the
 * parent kills and reaps whatever is left once its own bound passes, then removes the directory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "conf.h"
#include "linz.h"
#include "takeover.h"

#define BS 4096u
#define MAXN TK_MAXN
#define MAXOPS TK_MAXOPS
#define ELEM_BLOCKS 8u /* RAID-5 over 3 elements, chunk 2: 16 blocks, 4 resources */
#define CHILD_TIMEOUT_S 40
#define REFUSED_MAX 8u /* operations a paused node tries after its first refusal */

/* Where each node is; the parent waits on these. */
enum tk_phase {
	PH_START = 0,
	PH_WORKLOAD,
	PH_SETTLING, /* workload done: waits for the parent's go (or to be told to leave) */
	PH_FINAL,    /* one of the survivors: flush, read back, scrub */
	PH_LEFT,     /* told to leave (excluded, not admitted again): closing */
	PH_DONE,
};

/* A node's view as its publisher thread saw it last: the epoch in the high half, then flags and
 * the member bitmap. One 64-bit word, so that the parent reads a consistent snapshot. */
#define VIEW_SETTLED (1ull << 31) /* a committed view with quorum, no view change under way */
#define VIEW_QUORUM (1ull << 30)
#define VIEW_MEMBERS 0x3fffffffull
#define VIEW_EPOCH(v) ((uint32_t)((v) >> 32))

/* What became of each operation beside its linz_op: its error, and (the paused node only) the
 * node's own view right after the response, which says whether it had been admitted again. */
struct tk_oprec {
	int32_t err;
	uint32_t pad;
	uint64_t view;
};

/* A barrier of node processes that gives up when the trial has failed elsewhere (@abort in the
 * shared area), so that one node's failure ends the others' waits at once, not at their bound. */
struct tk_bar {
	_Atomic uint32_t count, gen;
	uint32_t parties;
};

struct tk_shared {
	struct tk_bar start, fin;
	_Atomic uint32_t abort; /* a node failed: nobody waits for the others any more */
	struct linz_op ops[MAXN][MAXOPS];
	struct tk_oprec rec[MAXN][MAXOPS];
	_Atomic uint32_t nops[MAXN];
	_Atomic uint32_t phase[MAXN];
	_Atomic uint64_t view[MAXN];
	/* The parent's word: go (with the survivors), leave (a node outside their view). */
	_Atomic uint32_t go, go_mask, leave[MAXN];
	/* The pause: when the node was resumed, and the epoch of the first view the survivors
	 * served without it (0: resumed before they excluded it, or no pause). */
	_Atomic uint32_t resumed, excl_epoch;
	_Atomic uint64_t resume_ns;
	_Atomic uint64_t cut_mask; /* tk_trial.cut: the nodes cut off from the rest, by bit */
	/* COH_FENCE_AGENT: the nodes the agent asked the parent to kill, and those it has killed
	 * and reaped (or found reaped), by bit; how many times it was asked. */
	_Atomic uint32_t fence_req, fence_done, fence_calls;
	_Atomic uint32_t died_at_end; /* victims whose point never came, by node */
	uint64_t takeovers[MAXN], replayed[MAXN], repaired[MAXN], backpressure[MAXN];
	uint64_t takeover_ns[MAXN], view_ns[MAXN];
	uint32_t epoch[MAXN];
	char why[MAXN][256];
};

static const char *const tk_points[] = {
	"between-ops",	  "BEFORE_REPLICATION",
	"REPLICATED",	  "DESTAGE_READ_OLD",
	"DESTAGE_DATA",	  "DESTAGE_PARITY",
	"DESTAGE_DONE",	  "RECLAIM",
	"XCAS",		  "INVAL",
	"SCAS",		  "REQ",
	"GRANTED",	  "SERVE_WB",
	"SERVE_CAS",	  "SERVE_SENT",
	"INSTALLED",	  "VIEW_AGREED",
	"VIEW_FENCED",	  "VIEW_RELOG",
	"VIEW_RELOGGED",  "VIEW_CLEARED",
	"VIEW_CLAIMED",	  "VIEW_TAKEN",
	"VIEW_REPLAY",	  "VIEW_READY",
	"VIEW_ZEROED",	  "VIEW_COMMITTED",
	"FORM_AGREED",	  "FORM_RECOVERED",
	"FORM_COMMITTED",
};

const char *tk_point_name(uint32_t pt)
{
	return pt < sizeof(tk_points) / sizeof(tk_points[0]) ? tk_points[pt] : "?";
}

void tk_describe(const struct tk_trial *t, char *buf, size_t len)
{
	size_t off;
	uint32_t i;

#define TK_ADD(...)                                                                                \
	do {                                                                                       \
		if (off < len)                                                                     \
			off += (size_t)snprintf(buf + off, len - off, __VA_ARGS__);                \
	} while (0)
	off = 0;
	TK_ADD(
	    "seed %llu nodes %u k %u raid %u ops %u log %u KiB timeout %u ms fence %s ver %u bits",
	    (unsigned long long)t->seed, t->nodes, t->replicas, t->raid_level, t->ops, t->log_kib,
	    t->timeout_ms ? t->timeout_ms : 3000,
	    t->fence == COH_FENCE_AGENT	  ? "agent"
	    : t->fence == COH_FENCE_LEASE ? "lease"
					  : "auto",
	    TK_VER_BITS);
	if (!t->nvictims)
		TK_ADD("; no victim");
	for (i = 0; i < t->nvictims && i < TK_MAXV; i++) {
		const struct tk_victim *v = &t->victims[i];

		if (v->point)
			TK_ADD("; victim %u at %u (%s) after %u", v->node, v->point,
			       tk_point_name(v->point), v->after);
		else
			TK_ADD("; victim %u before op %u", v->node, v->kill_at_op);
	}
	if (t->qd > 1)
		TK_ADD("; %u in flight per node", t->qd);
	if (t->pause_node < t->nodes) {
		TK_ADD("; %s node %u after op %u ", t->cut ? "cut off" : "pause", t->pause_node,
		       t->pause_at_op);
		if (t->pause_ms)
			TK_ADD("for %u ms", t->pause_ms);
		else
			TK_ADD("until excluded");
	}
#undef TK_ADD
}

static uint64_t tk_rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void tk_nap_us(long us)
{
	struct timespec t = { 0, us * 1000 };

	nanosleep(&t, NULL);
}

/* tk_slow - not on shm: the rig runs the trials on rdma over soft-RoCE in a TCG guest of 2 vCPUs,
 * where every step takes some ten times longer. */
static bool tk_slow(void)
{
	return strcmp(conf_provider(), "shm") != 0;
}

/* tk_timeout_ms - every node's timeout_ms; at least 3 s where the machine is slow (a shorter one
 * there excludes nodes that are only slow). */
static uint32_t tk_timeout_ms(const struct tk_trial *t)
{
	uint32_t ms = t->timeout_ms ? t->timeout_ms : 3000;

	return tk_slow() && ms < 3000 ? 3000 : ms;
}

/* tk_child_s - the bound of one node process (its alarm): the base, more for long runs, and for
 * a pause the failure detector (2 timeouts), the view change and the lease, many times over;
 * three times as long where the machine is slow. */
static uint32_t tk_child_s(const struct tk_trial *t)
{
	uint32_t s = CHILD_TIMEOUT_S + t->ops / 40;

	if (t->pause_node < t->nodes)
		s += t->pause_ms ? t->pause_ms / 1000 + 1 : 10 * tk_timeout_ms(t) / 1000;
	return tk_slow() ? 3 * s : s;
}

static int tk_victim_of(const struct tk_trial *t, uint32_t id)
{
	uint32_t i;

	for (i = 0; i < t->nvictims && i < TK_MAXV; i++) {
		if (t->victims[i].node == id)
			return (int)i;
	}
	return -1;
}

static bool tk_view_point(uint32_t pt)
{
	return pt >= COH_CRASH_VIEW_FIRST && pt <= COH_CRASH_VIEW_COMMITTED;
}

/* One submitted operation of the asynchronous workload (tk_trial.qd > 1). */
struct tk_aio {
	struct coh_io io;
	struct child *c;
	uint32_t idx; /* its place in the node's history */
	bool w;
	uint8_t buf[BS];
};

struct child {
	const struct tk_trial *t;
	struct tk_shared *sh;
	uint32_t id;
	const char *dir;
	const char *cluster; /* the fabric's cluster address: @dir on shm */
	struct coh_fabric *fab;
	struct coh_node *n;
	pthread_t pub, cutter;
	bool pub_started, cutter_started;
	_Atomic bool pub_stop;
	uint64_t deadline_ns; /* this node's own waits end here, before its alarm */
	/* The asynchronous workload: slots, which are free, and what the callbacks saw. */
	struct tk_aio aio[TK_MAXQD];
	pthread_mutex_t aio_lock;
	pthread_cond_t aio_cond;
	uint64_t aio_free; /* bitmap of free slots */
	uint32_t aio_refused;
	int aio_err;	      /* a refusal while a majority lives, or a torn read: the failure */
	uint64_t aio_err_blk; /* ... and its block */
};

/* tk_stacks - with COHORT_TAKEOVER_STACKS=PREFIX, a failing node writes every thread's stack to
 * PREFIX.<node>.<pid> (gdb): what a hang was waiting for, which the message alone does not say. */
static void tk_stacks(uint32_t id)
{
	const char *pre = getenv("COHORT_TAKEOVER_STACKS");
	char cmd[512];

	if (!pre)
		return;
	snprintf(cmd, sizeof(cmd),
		 "gdb -p %d -batch -ex 'thread apply all bt' >'%s.%u.%d' 2>&1 </dev/null",
		 (int)getpid(), pre, id, (int)getpid());
	if (system(cmd) != 0)
		fprintf(stderr, "takeover node %u: gdb could not dump the stacks\n", id);
}

#define FAIL(c, ...)                                                                               \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "takeover node %u: %s\n", (c)->id, (c)->sh->why[(c)->id]);         \
		tk_stacks((c)->id);                                                                \
		atomic_store(&(c)->sh->abort, 1);                                                  \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static void tk_bar_init(struct tk_bar *b, uint32_t parties)
{
	atomic_store(&b->count, 0);
	atomic_store(&b->gen, 0);
	b->parties = parties;
}

/* tk_view_now - this node's view, packed as the shared area's view words are. */
static uint64_t tk_view_now(struct coh_node *n)
{
	struct coh_node_stats st;
	uint64_t v;

	if (coh_node_stats(n, &st))
		return 0;
	v = (uint64_t)st.epoch << 32 | (st.members & VIEW_MEMBERS);
	if (st.quorum)
		v |= VIEW_QUORUM;
	/* wait_epoch with no time to wait: 0 only when the view is committed, no view change
	 * is under way, and it has a majority. */
	if (st.quorum && coh_node_wait_epoch(n, st.epoch, 0) == 0)
		v |= VIEW_SETTLED;
	return v;
}

static void *tk_publisher(void *arg)
{
	struct child *c = arg;

	while (!atomic_load(&c->pub_stop)) {
		atomic_store(&c->sh->view[c->id], tk_view_now(c->n));
		tk_nap_us(1000);
	}
	return NULL;
}

/*
 * tk_fence_agent - COH_FENCE_AGENT's agent (coh_node_attr.fence_agent) in a trial: the parent,
 * which holds every node's pid, kills the node and reaps it (so its death is certain, and no pid
 * of another process is ever hit), as a STONITH agent powers a machine off; this waits for that,
 * at most half a timeout.
 */
static int tk_fence_agent(void *arg, uint32_t node)
{
	struct child *c = arg;
	uint64_t until = bench_now_ns() + (uint64_t)tk_timeout_ms(c->t) * 500000ull;

	atomic_fetch_add(&c->sh->fence_calls, 1);
	atomic_fetch_or(&c->sh->fence_req, 1u << node);
	while (!(atomic_load(&c->sh->fence_done) >> node & 1)) {
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		tk_nap_us(500);
	}
	return 0;
}

/* tk_cutter - tk_trial.cut: cut this node's fabric off from the other side of the partition and
 * heal it, as the parent says. A thread of its own that never calls the node: the publisher can
 * wait on the node's locks, and a heal applied late is a longer cut than the trial says. */
static void *tk_cutter(void *arg)
{
	struct child *c = arg;
	uint64_t applied = 0, all = (1ull << c->t->nodes) - 1;

	while (!atomic_load(&c->pub_stop)) {
		uint64_t cut = atomic_load(&c->sh->cut_mask);

		/* Both sides of a partition cut their own fabric: this node's peers on the other
		 * side of it. */
		if (cut != applied) {
			coh_fabric_partition(c->fab, cut >> c->id & 1 ? all & ~cut : cut);
			applied = cut;
		}
		tk_nap_us(200);
	}
	return NULL;
}

/* tk_refusable - whether node @c may see an operation refused without failing the trial: the
 * paused node once resumed (the parent judges its answers), the cut-off node from the cut on. */
static bool tk_refusable(const struct child *c)
{
	if (c->id != c->t->pause_node)
		return false;
	return atomic_load(&c->sh->resumed) || (c->t->cut && atomic_load(&c->sh->cut_mask));
}

static void tk_pub_stop(struct child *c)
{
	atomic_store(&c->pub_stop, true);
	if (c->cutter_started)
		pthread_join(c->cutter, NULL);
	c->cutter_started = false;
	if (!c->pub_started)
		return;
	pthread_join(c->pub, NULL);
	c->pub_started = false;
}

static int tk_left_ms(const struct child *c)
{
	uint64_t now = bench_now_ns();

	return now >= c->deadline_ns ? 0 : (int)((c->deadline_ns - now) / 1000000ull);
}

/* tk_bar_wait - until every party has arrived: 0; -ECANCELED once the trial failed elsewhere;
 * -ETIMEDOUT at this node's deadline. */
static int tk_bar_wait(struct child *c, struct tk_bar *b)
{
	uint32_t gen = atomic_load(&b->gen);

	if (atomic_fetch_add(&b->count, 1) + 1 == b->parties) {
		atomic_store(&b->count, 0);
		atomic_fetch_add(&b->gen, 1);
		return 0;
	}
	while (atomic_load(&b->gen) == gen) {
		if (atomic_load(&c->sh->abort))
			return -ECANCELED;
		if (bench_now_ns() > c->deadline_ns)
			return -ETIMEDOUT;
		tk_nap_us(200);
	}
	return 0;
}

static struct linz_op *tk_op_begin(struct child *c, uint64_t block, uint64_t value, bool write)
{
	uint32_t i = atomic_load(&c->sh->nops[c->id]);
	struct linz_op *op = &c->sh->ops[c->id][i];

	op->block = block;
	op->value = value;
	op->is_write = write;
	op->node = c->id;
	op->resp = 0;
	c->sh->rec[c->id][i].err = 0;
	atomic_thread_fence(memory_order_seq_cst);
	op->inv = bench_now_ns();
	atomic_store(&c->sh->nops[c->id], i + 1);
	return op;
}

/* tk_wait_without - until this node serves a settled view without the nodes of @without, at
 * most @ms. Returns 0 or -ETIMEDOUT. */
static int tk_wait_without(struct child *c, uint32_t without, int ms)
{
	uint64_t until = bench_now_ns() + (uint64_t)ms * 1000000ull, v;

	for (;;) {
		v = tk_view_now(c->n);
		if ((v & VIEW_SETTLED) && !(v & without))
			return 0;
		if (atomic_load(&c->sh->abort))
			return -ECANCELED;
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		tk_nap_us(1000);
	}
}

/*
 * tk_victim_end - a victim whose point did not come during its workload. One with a view-change
 * point first waits for the view changes it is meant to die in: those of the victims before it
 * in the list, and of a paused node's exclusion (the pause lasts until the others excluded it).
 * Then it dies, as every victim does, by SIGKILL.
 */
static void tk_victim_end(struct child *c, int vi)
{
	const struct tk_trial *t = c->t;
	const struct tk_victim *v = &t->victims[vi];
	uint32_t without = 0;
	int i, ms;

	if (tk_view_point(v->point)) {
		for (i = 0; i < vi; i++)
			without |= 1u << t->victims[i].node;
		if (t->pause_node < t->nodes && !t->pause_ms)
			without |= 1u << t->pause_node;
		ms = tk_left_ms(c) - 5000;
		if (without && ms > 0)
			tk_wait_without(c, without, ms);
	}
	atomic_fetch_or(&c->sh->died_at_end, 1u << c->id);
	kill(getpid(), SIGKILL);
	for (;;)
		pause();
}

/* tk_settle - a node done with its workload waits for the parent's word: 1 to go on with the
 * survivors, 0 to leave; -ETIMEDOUT if none came in time, -ECANCELED if the trial failed. */
static int tk_settle(struct child *c)
{
	while (bench_now_ns() < c->deadline_ns) {
		if (atomic_load(&c->sh->abort))
			return -ECANCELED;
		if (atomic_load(&c->sh->leave[c->id]))
			return 0;
		if (atomic_load(&c->sh->go))
			return atomic_load(&c->sh->go_mask) >> c->id & 1 ? 1 : 0;
		tk_nap_us(1000);
	}
	return -ETIMEDOUT;
}

/* tk_aio_done - an operation's completion, on the node's engine thread: its record, as the
 * synchronous loop writes it (the response last), then its slot back. */
static void tk_aio_done(struct coh_io *io, int status, void *arg)
{
	struct tk_aio *a = arg;
	struct child *c = a->c;
	struct linz_op *op = &c->sh->ops[c->id][a->idx];
	struct tk_oprec *rec = &c->sh->rec[c->id][a->idx];
	bool paused = c->id == c->t->pause_node;
	uint64_t t_resp = bench_now_ns();
	int err = status;

	(void)io;
	rec->err = status;
	if (paused)
		rec->view = tk_view_now(c->n);
	if (!status && !a->w && bench_block_value(a->buf, BS, &op->value))
		rec->err = err = -EILSEQ;
	atomic_thread_fence(memory_order_seq_cst);
	op->resp = t_resp;
	pthread_mutex_lock(&c->aio_lock);
	if (err && tk_refusable(c))
		c->aio_refused++;
	else if ((err == -EILSEQ || err == -EROFS) && !c->aio_err) {
		c->aio_err = err;
		c->aio_err_blk = op->block;
	}
	c->aio_free |= 1ull << (a - c->aio);
	pthread_cond_signal(&c->aio_cond);
	pthread_mutex_unlock(&c->aio_lock);
}

/* tk_aio_slot - a free slot, waiting (bounded by the node's deadline) for a completion when all
 * @qd are out; -1 when none came in time. With @all, wait until every slot is free. */
static int tk_aio_slot(struct child *c, uint32_t qd, bool all)
{
	uint64_t mask = qd >= 64 ? ~0ull : (1ull << qd) - 1;
	int slot = -1;

	pthread_mutex_lock(&c->aio_lock);
	while (bench_now_ns() < c->deadline_ns) {
		if (all ? (c->aio_free & mask) == mask : (c->aio_free & mask) != 0)
			break;
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 10000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&c->aio_cond, &c->aio_lock, &until);
	}
	if (all ? (c->aio_free & mask) == mask : (c->aio_free & mask) != 0) {
		slot = __builtin_ctzll(c->aio_free & mask);
		if (!all)
			c->aio_free &= ~(1ull << slot);
	}
	pthread_mutex_unlock(&c->aio_lock);
	return slot;
}

/*
 * tk_workload_async - the workload with @t->qd operations in flight: the same operations as the
 * synchronous loop draws, submitted as slots free up. Returns 0, or 1 with the reason in why.
 */
static int tk_workload_async(struct child *c, uint64_t *s, uint64_t nblocks)
{
	const struct tk_trial *t = c->t;
	const struct tk_victim *v =
	    tk_victim_of(t, c->id) >= 0 ? &t->victims[tk_victim_of(t, c->id)] : NULL;
	uint32_t qd = t->qd > TK_MAXQD ? TK_MAXQD : t->qd, i;
	bool paused = c->id == t->pause_node;
	int ret = 0, r;

	for (i = 0; i < t->ops; i++) {
		uint64_t b = tk_rnd(s) % nblocks, val;
		bool w = tk_rnd(s) % 10 < 6;
		struct tk_aio *a;
		int slot;

		if (v && !v->point && i == v->kill_at_op)
			kill(getpid(), SIGKILL); /* with up to qd operations in flight */
		pthread_mutex_lock(&c->aio_lock);
		r = c->aio_err;
		if (paused && c->aio_refused > REFUSED_MAX)
			r = 1;
		pthread_mutex_unlock(&c->aio_lock);
		if (r)
			break;
		slot = tk_aio_slot(c, qd, false);
		if (slot < 0)
			FAIL(c, "no operation completed in time (%u in flight)", qd);
		a = &c->aio[slot];
		val = w ? (uint64_t)(c->id + 1) << 32 | (i + 1) : 0;
		tk_op_begin(c, b, val, w);
		a->c = c;
		a->w = w;
		a->idx = atomic_load(&c->sh->nops[c->id]) - 1;
		if (w)
			bench_fill_block(a->buf, BS, val);
		a->io = (struct coh_io){ .io_size = sizeof(a->io),
					 .type = w ? COH_IO_WRITE : COH_IO_READ,
					 .lba = b,
					 .nblocks = 1,
					 .buf = a->buf,
					 .cb = tk_aio_done,
					 .cb_arg = a };
		r = coh_node_submit(c->n, &a->io);
		if (r) /* never accepted: no callback; the operation failed, as a refusal */
			tk_aio_done(&a->io, r, a);
	}
	if (tk_aio_slot(c, qd, true) < 0)
		FAIL(c, "operations still in flight at the end of the workload");
	pthread_mutex_lock(&c->aio_lock);
	r = c->aio_err;
	pthread_mutex_unlock(&c->aio_lock);
	if (r == -EILSEQ)
		FAIL(c, "block %llu read back torn or corrupt", (unsigned long long)c->aio_err_blk);
	if (r)
		FAIL(c, "an operation on block %llu refused: %s",
		     (unsigned long long)c->aio_err_blk, coh_strerror(r));
out:
	return ret;
}

static int child_main(struct child *c)
{
	const struct tk_trial *t = c->t;
	struct tk_shared *sh = c->sh;
	int vi = tk_victim_of(t, c->id);
	const struct tk_victim *v = vi >= 0 ? &t->victims[vi] : NULL;
	bool paused = c->id == t->pause_node;
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_attr na = { .nodes = t->nodes,
				    .raid = { .level = t->raid_level == 1 ? COH_RAID1 : COH_RAID5,
					      .nelems = 3,
					      .chunk_blocks = 2 },
				    .elem_blocks = ELEM_BLOCKS,
				    .replicas = (int)t->replicas,
				    .log_bytes = (size_t)t->log_kib << 10,
				    .cache_blocks = 64,
				    .timeout_ms = tk_timeout_ms(t),
				    .fence = t->fence,
				    .fence_agent =
					t->fence == COH_FENCE_AGENT ? tk_fence_agent : NULL,
				    .fence_arg = c,
				    .queue_depth = TK_MAXQD };
	char paths[3][600];
	struct coh_fabric *fab = NULL;
	struct coh_node_stats st;
	uint64_t s = t->seed * 0x9e3779b97f4a7c15ull + c->id + 1, nblocks, v64;
	uint32_t i, refused = 0, lowest;
	uint8_t buf[BS];
	int ret = 0, r;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	if (v && v->point) {
		na.crash_point = v->point;
		na.crash_after = v->after;
	}
	r = coh_fabric_open(&fa, &fab);
	if (r)
		FAIL(c, "fabric open: %s", coh_strerror(r));
	c->fab = fab;
	if (t->cut) {
		if (pthread_create(&c->cutter, NULL, tk_cutter, c))
			FAIL(c, "cutter thread");
		c->cutter_started = true;
	}
	na.fab = fab;
	r = coh_node_open(&na, &c->n);
	if (r)
		FAIL(c, "node open: %s", coh_strerror(r));
	nblocks = coh_node_nblocks(c->n);
	if (pthread_create(&c->pub, NULL, tk_publisher, c))
		FAIL(c, "publisher thread");
	c->pub_started = true;
	r = tk_bar_wait(c, &sh->start);
	if (r == -ECANCELED)
		goto gave_up;
	if (r)
		FAIL(c, "start barrier timed out");
	atomic_store(&sh->phase[c->id], PH_WORKLOAD);

	if (t->qd > 1) {
		r = tk_workload_async(c, &s, nblocks);
		if (r) {
			ret = r;
			goto out;
		}
	}
	for (i = 0; t->qd <= 1 && i < t->ops; i++) {
		uint64_t b = tk_rnd(&s) % nblocks, val, t_resp;
		bool w = tk_rnd(&s) % 10 < 6, resumed;
		struct linz_op *op;
		struct tk_oprec *rec;

		if (v && !v->point && i == v->kill_at_op)
			kill(getpid(), SIGKILL);
		/* A paused node the others excluded tries a few operations, not the rest: each
		 * may wait out its bound before it is refused. */
		if (paused && refused > REFUSED_MAX)
			break;
		val = w ? (uint64_t)(c->id + 1) << 32 | (i + 1) : 0;
		op = tk_op_begin(c, b, val, w);
		rec = &sh->rec[c->id][atomic_load(&sh->nops[c->id]) - 1];
		if (w) {
			bench_fill_block(buf, BS, val);
			r = coh_node_write(c->n, b, 1, buf);
		} else {
			r = coh_node_read(c->n, b, 1, buf);
		}
		/* The value and the error first, the response time last: a node SIGKILLed
		 * between two of these stores must leave an operation without a response (pending),
		 * never a read of 0 that did not happen. */
		t_resp = bench_now_ns();
		rec->err = r;
		if (paused)
			rec->view = tk_view_now(c->n);
		if (!r && !w && bench_block_value(buf, BS, &op->value))
			rec->err = -EILSEQ; /* reported here; the checker need not see it */
		atomic_thread_fence(memory_order_seq_cst);
		op->resp = t_resp;
		if (rec->err == -EILSEQ)
			FAIL(c, "block %llu read back torn or corrupt", (unsigned long long)b);
		if (!r)
			continue;
		/* Not done: a write may or may not have taken effect (pending); a failed read
		 * tells nothing. After a pause the parent judges what the node got (it may have
		 * been excluded); otherwise a refusal while a majority lives is a failure. */
		resumed = tk_refusable(c);
		if (resumed) {
			refused++;
			continue;
		}
		if (r == -EROFS)
			FAIL(c, "%s of block %llu refused: %s", w ? "write" : "read",
			     (unsigned long long)b, coh_strerror(r));
	}
	if (v) /* its crash point never came: die between operations */
		tk_victim_end(c, vi);

	/* Every victim is dead and the survivors agree on a view of the nodes alive: the
	 * parent says go (or, to a paused node outside that view, leave). */
	atomic_store(&sh->phase[c->id], PH_SETTLING);
	r = tk_settle(c);
	if (r == -ECANCELED)
		goto gave_up;
	if (r < 0) {
		v64 = tk_view_now(c->n);
		FAIL(c,
		     "the survivors never agreed on a view of the live nodes (this node: epoch %u "
		     "members %#llx%s%s)",
		     VIEW_EPOCH(v64), (unsigned long long)(v64 & VIEW_MEMBERS),
		     v64 & VIEW_QUORUM ? " quorum" : " no quorum",
		     v64 & VIEW_SETTLED ? " settled" : " changing");
	}
	if (!r) {
		if (!paused)
			FAIL(c, "told to leave: the others serve a view without this node");
		atomic_store(&sh->phase[c->id], PH_LEFT);
		goto out;
	}
	atomic_store(&sh->phase[c->id], PH_FINAL);
	r = coh_node_flush(c->n);
	if (r)
		FAIL(c, "flush: %s", coh_strerror(r));
	r = tk_bar_wait(c, &sh->fin);
	if (r == -ECANCELED)
		goto gave_up;
	if (r)
		FAIL(c, "barrier after the flush timed out");
	/* Every block from every survivor: each read joins the history. */
	for (i = 0; i < nblocks; i++) {
		struct linz_op *op = tk_op_begin(c, i, 0, false);

		struct tk_oprec *frec = &sh->rec[c->id][atomic_load(&sh->nops[c->id]) - 1];
		uint64_t t_fin;
		int torn;

		r = coh_node_read(c->n, i, 1, buf);
		t_fin = bench_now_ns();
		frec->err = r;
		torn = !r && bench_block_value(buf, BS, &op->value);
		if (torn)
			frec->err = -EILSEQ;
		atomic_thread_fence(memory_order_seq_cst); /* as above: the response last */
		op->resp = t_fin;
		if (r)
			FAIL(c, "final read of block %u: %s", i, coh_strerror(r));
		if (torn)
			FAIL(c, "block %u torn or corrupt after takeover", i);
	}
	r = tk_bar_wait(c, &sh->fin);
	if (r == -ECANCELED)
		goto gave_up;
	if (r)
		FAIL(c, "barrier after the reads timed out");
	r = coh_node_stats(c->n, &st);
	if (r)
		FAIL(c, "stats: %s", coh_strerror(r));
	sh->takeovers[c->id] = st.takeovers;
	sh->replayed[c->id] = st.replayed_blocks;
	sh->repaired[c->id] = st.repaired_stripes;
	sh->backpressure[c->id] = st.log_backpressure;
	sh->takeover_ns[c->id] = st.last_takeover_ns;
	sh->view_ns[c->id] = st.last_view_ns;
	sh->epoch[c->id] = st.epoch;
	lowest = (uint32_t)__builtin_ctz(atomic_load(&sh->go_mask));
	if (c->id == lowest) {
		uint64_t bad = 0;

		r = coh_node_check(c->n, &bad);
		if (r)
			FAIL(c, "scrub: %s", coh_strerror(r));
		if (bad)
			FAIL(c, "%llu stripes with parity not matching data",
			     (unsigned long long)bad);
	}
	r = tk_bar_wait(c, &sh->fin);
	if (r == -ECANCELED)
		goto gave_up;
	if (r)
		FAIL(c, "barrier before close timed out");
	goto out;
gave_up:
	/* Another node failed (its reason is the trial's): not a failure of this one, but it
	 * did not finish either. */
	snprintf(sh->why[c->id], sizeof(sh->why[0]), "gave up: another node failed");
	ret = 2;
out:
	tk_pub_stop(c);
	r = coh_node_close(&c->n);
	if (r && !ret && !paused)
		fprintf(stderr, "takeover node %u: close: %s\n", c->id, coh_strerror(r));
	coh_fabric_close(&fab);
	atomic_store(&sh->phase[c->id], PH_DONE);
	return ret;
}

/*
 * tk_setup - a fresh directory (@dir, a mkdtemp template), a zeroed area of @len bytes shared
 * with the node processes to come, and the cluster address for @nodes nodes: the directory on
 * shm, fresh loopback addresses otherwise. Returns the area, or NULL with nothing left behind.
 */
static void *tk_setup(char *dir, size_t len, uint32_t nodes, char *cluster, size_t clen)
{
	void *sh;

	if (!mkdtemp(dir))
		return NULL;
	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_remove_tree(dir);
		return NULL;
	}
	memset(sh, 0, len);
	if (strcmp(conf_provider(), "shm")) {
		if (conf_cluster_new(cluster, clen, nodes)) {
			fprintf(stderr, "takeover: no cluster address for provider %s\n",
				conf_provider());
			munmap(sh, len);
			bench_remove_tree(dir);
			return NULL;
		}
	} else {
		snprintf(cluster, clen, "%s", dir);
	}
	return sh;
}

/* tk_abort - a fork failed after @started nodes: kill and reap them, undo tk_setup. */
static int tk_abort(const pid_t *pids, uint32_t started, void *sh, size_t len, const char *dir)
{
	while (started--) {
		kill(pids[started], SIGKILL);
		waitpid(pids[started], NULL, 0);
	}
	munmap(sh, len);
	bench_remove_tree(dir);
	return 1;
}

/* tk_child_start - in a new node process: die with the parent (a test killed by its timeout
 * must not leave nodes behind), bound this process, run the node. Each node is a process group
 * of its own, with its parent outside it: a stopped node in the parent's group, once that group
 * has no member with a parent outside it (a test started by a shell of another session), is an
 * orphaned stopped job, and the kernel sends it SIGHUP and SIGCONT when a member exits (the soak
 * saw paused nodes die of SIGHUP). */
static void tk_child_start(struct child *c, uint32_t child_s, pid_t parent)
{
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	alarm(child_s);
	c->deadline_ns = bench_now_ns() + (uint64_t)(child_s - 3) * 1000000000ull;
	pthread_mutex_init(&c->aio_lock, NULL);
	pthread_cond_init(&c->aio_cond, NULL);
	c->aio_free = ~0ull;
	_exit(child_main(c));
}

/* The parent's side of a trial: who is alive, where the pause is, whether the survivors go. */
enum tk_pause_state {
	PS_NONE = 0,
	PS_WAIT,    /* until the node has done its share of operations */
	PS_STOPPED, /* SIGSTOP sent */
	PS_DONE,    /* SIGCONT sent (or the node ended first) */
};

struct tk_sup {
	const struct tk_trial *t;
	struct tk_shared *sh;
	pid_t pids[MAXN];
	int status[MAXN];
	uint32_t live;	 /* not yet reaped */
	uint32_t vmask;	 /* victims */
	uint32_t killed; /* by the harness, at its bound */
	enum tk_pause_state ps;
	uint64_t stop_ns, paused_ns, deadline;
	bool leave_sent;
	int failed;
};

/* tk_end_ok - whether node @i ended as it may: a victim by SIGKILL, the paused node by SIGKILL
 * (its fence) or exit 0, any other by exit 0. */
static bool tk_end_ok(const struct tk_sup *s, uint32_t i)
{
	int st = s->status[i];
	bool sigkill = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	     exit0 = WIFEXITED(st) && !WEXITSTATUS(st);

	if (s->vmask >> i & 1)
		return sigkill;
	return exit0 || (i == s->t->pause_node && sigkill);
}

/* tk_reap - reap the nodes that ended; one that ended as it may not fails the trial, and the
 * others stop waiting for anything (the abort word). */
static void tk_reap(struct tk_sup *s)
{
	uint32_t i;

	for (i = 0; i < s->t->nodes; i++) {
		if (!(s->live >> i & 1) ||
		    waitpid(s->pids[i], &s->status[i], WNOHANG) != s->pids[i])
			continue;
		s->live &= ~(1u << i);
		if (!tk_end_ok(s, i))
			atomic_store(&s->sh->abort, 1);
	}
}

/* tk_dump - what each node was doing, for a trial that did not end in time. */
static void tk_dump(const struct tk_sup *s)
{
	uint32_t i;

	for (i = 0; i < s->t->nodes; i++) {
		uint64_t v = atomic_load(&s->sh->view[i]);

		fprintf(
		    stderr,
		    "takeover:   node %u: %s, phase %u, %u ops, view epoch %u members %#llx%s%s%s%s\n",
		    i, s->live >> i & 1 ? "alive" : "ended", atomic_load(&s->sh->phase[i]),
		    atomic_load(&s->sh->nops[i]), VIEW_EPOCH(v),
		    (unsigned long long)(v & VIEW_MEMBERS), v & VIEW_QUORUM ? " quorum" : "",
		    v & VIEW_SETTLED ? " settled" : "", s->vmask >> i & 1 ? " (victim)" : "",
		    i == s->t->pause_node ? " (paused node)" : "");
	}
}

static void tk_resume(struct tk_sup *s, uint32_t excl_epoch)
{
	uint64_t now = bench_now_ns();

	atomic_store(&s->sh->excl_epoch, excl_epoch);
	atomic_store(&s->sh->resume_ns, now);
	atomic_store(&s->sh->resumed, 1);
	if (s->t->cut)
		atomic_store(&s->sh->cut_mask, 0);
	/* Not to a node reaped already (its fence killed it): its pid may be another's now. */
	else if (s->live >> s->t->pause_node & 1)
		kill(s->pids[s->t->pause_node], SIGCONT);
	s->paused_ns = now - s->stop_ns;
	s->ps = PS_DONE;
}

/*
 * tk_pause_step - stop the paused node once it has done its share of operations (or finished
 * its workload); resume it after its time, or once every survivor serves a settled view without
 * it. The others' progress, not a sleep, says when: the failure detector excludes a node silent
 * for 2 timeouts, the view change fences it, and that can take a while on a busy machine, so the
 * wait is bounded generously and a node still not excluded then is a failure.
 */
static void tk_pause_step(struct tk_sup *s)
{
	const struct tk_trial *t = s->t;
	uint32_t p = t->pause_node, i, n = 0, emin = UINT32_MAX;
	uint64_t now = bench_now_ns(), bound;

	switch (s->ps) {
	case PS_WAIT:
		if (!(s->live >> p & 1)) {
			s->ps = PS_DONE;
			break;
		}
		if (atomic_load(&s->sh->nops[p]) >= t->pause_at_op ||
		    atomic_load(&s->sh->phase[p]) >= PH_SETTLING) {
			if (t->cut)
				atomic_store(&s->sh->cut_mask, 1ull << p);
			else
				kill(s->pids[p], SIGSTOP);
			s->stop_ns = now;
			s->ps = PS_STOPPED;
		}
		break;
	case PS_STOPPED:
		if (t->pause_ms) {
			if (now - s->stop_ns >= (uint64_t)t->pause_ms * 1000000ull)
				tk_resume(s, 0);
			break;
		}
		for (i = 0; i < t->nodes; i++) {
			uint64_t v = atomic_load(&s->sh->view[i]);

			if (i == p || (s->vmask >> i & 1) || !(s->live >> i & 1))
				continue;
			if (!(v & VIEW_SETTLED) || (v >> p & 1)) {
				n = 0;
				break;
			}
			n++;
			if (VIEW_EPOCH(v) < emin)
				emin = VIEW_EPOCH(v);
		}
		if (n) {
			tk_resume(s, emin);
			break;
		}
		bound = (10ull * tk_timeout_ms(t) + 10000ull) * 1000000ull;
		if (now - s->stop_ns > bound) {
			fprintf(stderr,
				"takeover: node %u %s for %llu ms, and the others never served "
				"a view without it\n",
				p, t->cut ? "cut off" : "stopped",
				(unsigned long long)((now - s->stop_ns) / 1000000ull));
			tk_dump(s);
			s->failed = 1;
			atomic_store(&s->sh->abort, 1);
			tk_resume(s, 0);
		}
		break;
	default:
		break;
	}
}

/* tk_agree - whether every node of @nodes publishes the same settled view, and whether that
 * view's members are exactly @nodes. */
static bool tk_agree(const struct tk_sup *s, uint32_t nodes)
{
	uint64_t v0 = 0;
	uint32_t i;

	for (i = 0; i < s->t->nodes; i++) {
		uint64_t v = atomic_load(&s->sh->view[i]);

		if (!(nodes >> i & 1))
			continue;
		if (!(v & VIEW_SETTLED) || (v0 && v != v0))
			return false;
		v0 = v;
	}
	return v0 && (v0 & VIEW_MEMBERS) == nodes;
}

/*
 * tk_settle_step - once every victim is dead and every live node is done with its workload: if
 * the live nodes agree on a view of exactly themselves, they go on together (the final phase's
 * barrier counts them, never a node outside that view); if the others agree on a view without
 * the paused node, it is told to leave first (it closes and exits, and then they go on).
 */
static void tk_settle_step(struct tk_sup *s)
{
	const struct tk_trial *t = s->t;
	uint32_t p = t->pause_node, i;

	if (atomic_load(&s->sh->go) || s->ps == PS_WAIT || s->ps == PS_STOPPED ||
	    (s->live & s->vmask))
		return;
	for (i = 0; i < t->nodes; i++) {
		if ((s->live >> i & 1) && atomic_load(&s->sh->phase[i]) != PH_SETTLING)
			return;
	}
	if (tk_agree(s, s->live)) {
		tk_bar_init(&s->sh->fin, (uint32_t)__builtin_popcount(s->live));
		atomic_store(&s->sh->go_mask, s->live);
		atomic_store(&s->sh->go, 1);
		return;
	}
	if (p < t->nodes && (s->live >> p & 1) && !s->leave_sent &&
	    tk_agree(s, s->live & ~(1u << p))) {
		atomic_store(&s->sh->leave[p], 1);
		s->leave_sent = true;
	}
}

/* tk_kill_reap - SIGKILL node @i and reap it: when this returns it is certainly dead, and no
 * other process's pid can be hit by a later kill. */
static void tk_kill_reap(struct tk_sup *s, uint32_t i)
{
	kill(s->pids[i], SIGKILL);
	waitpid(s->pids[i], &s->status[i], 0);
	s->live &= ~(1u << i);
}

/* tk_fence_step - the fence agent's requests (tk_fence_agent): kill and reap each node asked
 * for that still runs; one reaped already is fenced already. */
static void tk_fence_step(struct tk_sup *s)
{
	uint32_t req = atomic_exchange(&s->sh->fence_req, 0), i;

	for (i = 0; i < s->t->nodes; i++) {
		if (!(req >> i & 1))
			continue;
		if (s->live >> i & 1) {
			tk_kill_reap(s, i);
			if (!tk_end_ok(s, i))
				atomic_store(&s->sh->abort, 1);
		}
		atomic_fetch_or(&s->sh->fence_done, 1u << i);
	}
}

/* tk_supervise - run the trial's parent side until every node has ended, at most its bound;
 * then kill and reap whatever is left. */
static void tk_supervise(struct tk_sup *s)
{
	uint32_t i;

	for (;;) {
		tk_reap(s);
		if (!s->live)
			break;
		if (bench_now_ns() > s->deadline) {
			fprintf(stderr, "takeover: the trial did not end within its bound\n");
			tk_dump(s);
			s->failed = 1;
			break;
		}
		tk_fence_step(s);
		tk_pause_step(s);
		tk_settle_step(s);
		tk_nap_us(200);
	}
	for (i = 0; i < s->t->nodes; i++) {
		if (s->live >> i & 1) {
			tk_kill_reap(s, i);
			s->killed |= 1u << i;
		}
	}
}

static const char *tk_end_word(int st)
{
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
		return "hung (its alarm, the bound of its process, went off): signal";
	return WIFSIGNALED(st) ? "died of signal" : "exited";
}

static int tk_end_code(int st)
{
	return WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st);
}

/* tk_judge_ends - each node's end: victims killed, the paused node fenced or exited 0, the rest
 * exited 0. */
static void tk_judge_ends(struct tk_sup *s, struct tk_result *res)
{
	const struct tk_trial *t = s->t;
	uint32_t i, go_mask = atomic_load(&s->sh->go_mask);

	res->victim_died = 1;
	for (i = 0; i < t->nodes; i++) {
		int st = s->status[i];
		bool sigkill = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;

		if (s->killed >> i & 1) {
			fprintf(stderr, "takeover: node %u killed at the trial's bound: %s\n", i,
				s->sh->why[i]);
			s->failed = 1;
			if (s->vmask >> i & 1)
				res->victim_died = 0;
		} else if (s->vmask >> i & 1) {
			if (!sigkill) {
				fprintf(stderr,
					"takeover: victim %u was not killed: it %s %d: %s\n", i,
					tk_end_word(st), tk_end_code(st), s->sh->why[i]);
				res->victim_died = 0;
				s->failed = 1;
			}
		} else if (i == t->pause_node) {
			if (sigkill) {
				res->pause_end = TK_PAUSE_FENCED;
			} else if (WIFEXITED(st) && !WEXITSTATUS(st)) {
				res->pause_end =
				    go_mask >> i & 1 ? TK_PAUSE_MEMBER : TK_PAUSE_EXCLUDED;
			} else {
				fprintf(stderr, "takeover: paused node %u %s %d: %s\n", i,
					tk_end_word(st), tk_end_code(st), s->sh->why[i]);
				s->failed = 1;
			}
		} else if (!tk_end_ok(s, i)) {
			fprintf(stderr, "takeover: node %u %s %d: %s\n", i, tk_end_word(st),
				tk_end_code(st), s->sh->why[i]);
			s->failed = 1;
		}
	}
}

/*
 * tk_judge_paused - what the paused node got for the operations it began after it was resumed,
 * when the others had excluded it by then: a refusal (-EROFS, or -ETIMEDOUT while it had not
 * learnt of its exclusion yet), never data, until a view of a later epoch admitted it again.
 */
static void tk_judge_paused(struct tk_sup *s, struct tk_result *res)
{
	struct tk_shared *sh = s->sh;
	uint32_t p = s->t->pause_node, E = atomic_load(&sh->excl_epoch), j, n;
	uint64_t resume = atomic_load(&sh->resume_ns);

	if (p >= s->t->nodes || !atomic_load(&sh->resumed))
		return;
	n = atomic_load(&sh->nops[p]);
	for (j = 0; j < n && j < MAXOPS; j++) {
		const struct linz_op *op = &sh->ops[p][j];
		const struct tk_oprec *rec = &sh->rec[p][j];
		uint64_t v = rec->view;

		if (op->inv < resume || !op->resp)
			continue;
		/* Resumed before the others excluded it (a short pause): the history judges its
		 * answers, as any member's. */
		if (!E) {
			res->paused_refused += rec->err != 0;
			continue;
		}
		/* Admitted again: a member with a majority in a view newer than the one that
		 * excluded it. From then on it is a member like any other. */
		if ((v & VIEW_QUORUM) && (v >> p & 1) && VIEW_EPOCH(v) > E)
			continue;
		if (!rec->err) {
			fprintf(
			    stderr,
			    "takeover: paused node %u, excluded in epoch %u, %s block %llu "
			    "(value %llx) after it was resumed, in its view of epoch %u members "
			    "%#llx%s\n",
			    p, E, op->is_write ? "had a write acknowledged to" : "read",
			    (unsigned long long)op->block, (unsigned long long)op->value,
			    VIEW_EPOCH(v), (unsigned long long)(v & VIEW_MEMBERS),
			    v & VIEW_QUORUM ? " quorum" : "");
			s->failed = 1;
		} else if (rec->err != -EROFS && rec->err != -ETIMEDOUT) {
			fprintf(
			    stderr,
			    "takeover: paused node %u, excluded in epoch %u: its %s of block %llu "
			    "after it was resumed returned %s, not -EROFS or -ETIMEDOUT\n",
			    p, E, op->is_write ? "write" : "read", (unsigned long long)op->block,
			    coh_strerror(rec->err));
			s->failed = 1;
		} else {
			res->paused_refused++;
		}
	}
}

/* tk_history - every node's operations for the checker: an unanswered or failed write is
 * pending (it may or may not have taken effect); an unanswered or failed read tells nothing. */
static size_t tk_history(const struct tk_sup *s, struct linz_op *all, struct tk_result *res)
{
	size_t nall = 0;
	uint32_t i, j, n;

	for (i = 0; i < s->t->nodes; i++) {
		n = atomic_load(&s->sh->nops[i]);
		for (j = 0; j < n && j < MAXOPS; j++) {
			struct linz_op op = s->sh->ops[i][j];
			bool failed = !op.resp || s->sh->rec[i][j].err;

			if (s->sh->rec[i][j].err)
				res->failed_ops++;
			if (failed && !op.is_write)
				continue;
			if (failed)
				op.resp = UINT64_MAX;
			if (op.is_write && op.resp == UINT64_MAX)
				res->pending_writes++;
			else if (op.is_write)
				res->acked_writes++;
			else
				res->reads++;
			all[nall++] = op;
		}
	}
	return nall;
}

/* tk_dump_history - every operation of every node, in order (COHORT_TAKEOVER_DUMP=1 asks for it
 * when a history is not linearizable, to read beside the checker's reason). */
static void tk_dump_history(const struct tk_sup *s)
{
	uint32_t i, j, n;

	for (i = 0; i < s->t->nodes; i++) {
		n = atomic_load(&s->sh->nops[i]);
		for (j = 0; j < n && j < MAXOPS; j++) {
			const struct linz_op *op = &s->sh->ops[i][j];

			fprintf(stderr,
				"takeover: history: node %u op %u %s block %llu value %llx "
				"[%llu, %llu] %s\n",
				i, j, op->is_write ? "write" : "read",
				(unsigned long long)op->block, (unsigned long long)op->value,
				(unsigned long long)op->inv, (unsigned long long)op->resp,
				op->resp ? coh_strerror(s->sh->rec[i][j].err) : "unanswered");
		}
	}
}

static int tk_by_resp(const void *a, const void *b)
{
	const struct linz_op *x = a, *y = b;

	return x->resp < y->resp ? -1 : x->resp > y->resp;
}

/*
 * tk_transfers - the fewest exclusive lock transfers any resource (a stripe: 4 blocks of RAID-5,
 * 2 of RAID-1, so 4 resources) saw, as the history shows them: an acknowledged write whose
 * previous operation on the resource, by completion, was another node's. Each such write took
 * the resource exclusively from someone else, which moves its version on, so this is about a
 * lower bound of the version's steps (a long run is meant to wrap a narrow one many times).
 * Sorts @all (@n operations, failed ones already pending or left out).
 */
static uint64_t tk_transfers(const struct tk_trial *t, struct linz_op *all, size_t n)
{
	uint32_t rb = t->raid_level == 1 ? 2 : 4, last[4], r;
	uint64_t cnt[4] = { 0 }, min = UINT64_MAX;
	size_t i;

	for (r = 0; r < 4; r++)
		last[r] = TK_NONE;
	qsort(all, n, sizeof(*all), tk_by_resp);
	for (i = 0; i < n; i++) {
		if (all[i].resp == UINT64_MAX)
			continue;
		r = (uint32_t)(all[i].block / rb) % 4;
		if (all[i].is_write && last[r] != TK_NONE && last[r] != all[i].node)
			cnt[r]++;
		last[r] = all[i].node;
	}
	for (r = 0; r < 4; r++)
		min = cnt[r] < min ? cnt[r] : min;
	return min;
}

int tk_run(const struct tk_trial *t, struct tk_result *res)
{
	char dir[] = "/dev/shm/cohort-takeover-XXXXXX", cluster[512];
	struct tk_sup s = { .t = t };
	struct linz_op *all = NULL;
	uint32_t i, child_s, go_mask;
	uint64_t t0 = bench_now_ns();
	pid_t parent = getpid();
	size_t nall;

	memset(res, 0, sizeof(*res));
	if (t->nodes < 3 || t->nodes > MAXN || t->ops + 64 > MAXOPS || t->nvictims > TK_MAXV)
		return 1;
	for (i = 0; i < t->nvictims; i++) {
		if (t->victims[i].node >= t->nodes || (s.vmask >> t->victims[i].node & 1) ||
		    t->victims[i].node == t->pause_node)
			return 1;
		s.vmask |= 1u << t->victims[i].node;
	}
	s.sh = tk_setup(dir, sizeof(*s.sh), t->nodes, cluster, sizeof(cluster));
	if (!s.sh)
		return 1;
	tk_bar_init(&s.sh->start, t->nodes);
	child_s = tk_child_s(t);
	s.ps = t->pause_node < t->nodes ? PS_WAIT : PS_NONE;
	fflush(NULL);
	for (i = 0; i < t->nodes; i++) {
		s.pids[i] = fork();
		if (s.pids[i] == 0) {
			struct child c = {
				.t = t, .sh = s.sh, .id = i, .dir = dir, .cluster = cluster
			};

			tk_child_start(&c, child_s, parent);
		}
		if (s.pids[i] < 0)
			return tk_abort(s.pids, i, s.sh, sizeof(*s.sh), dir);
		s.live |= 1u << i;
	}
	s.deadline = bench_now_ns() + (uint64_t)(child_s + 10) * 1000000000ull;
	tk_supervise(&s);
	res->trial_ns = bench_now_ns() - t0;
	res->paused_ms = s.paused_ns / 1000000ull;
	res->died_at_end = atomic_load(&s.sh->died_at_end);
	tk_judge_ends(&s, res);
	tk_judge_paused(&s, res);
	go_mask = atomic_load(&s.sh->go) ? atomic_load(&s.sh->go_mask) : 0;
	res->survivors = go_mask;
	for (i = 0; i < t->nodes; i++) {
		if (!(go_mask >> i & 1))
			continue;
		res->takeovers += s.sh->takeovers[i];
		res->replayed_blocks += s.sh->replayed[i];
		res->repaired_stripes += s.sh->repaired[i];
		res->backpressure += s.sh->backpressure[i];
		if (s.sh->takeover_ns[i] > res->takeover_ns && s.sh->takeovers[i])
			res->takeover_ns = s.sh->takeover_ns[i];
		if (s.sh->view_ns[i] > res->view_ns)
			res->view_ns = s.sh->view_ns[i];
		res->epoch = s.sh->epoch[i];
	}
	all = calloc((size_t)t->nodes * MAXOPS, sizeof(*all));
	if (!all) {
		s.failed = 1;
	} else {
		nall = tk_history(&s, all, res);
		/* A trial that failed already is still checked: a lost write says more than the
		 * hang it may have caused. */
		if (linz_check(all, nall, stderr)) {
			fprintf(stderr,
				"takeover: the history across the crash is not linearizable\n");
			s.failed = 1;
			if (getenv("COHORT_TAKEOVER_DUMP"))
				tk_dump_history(&s);
		}
		res->transfers = tk_transfers(t, all, nall);
	}
	res->fence_calls = atomic_load(&s.sh->fence_calls);
	free(all);
	munmap(s.sh, sizeof(*s.sh));
	bench_remove_tree(dir);
	return s.failed;
}

/*
 * The hold trial (tk_hold_run): node 0 writes block 0 and dies; node 1, the only holder of its
 * log, wins its locks and holds its takeover open in the takeover hook until node 2 says so.
 * Meanwhile node 2 reads block 0 (which must wait) and does I/O on other resources, including a
 * lock transfer from node 1 (which must not).
 */
struct hold_shared {
	struct bench_sbar start, written, after;
	_Atomic uint32_t holding, released, read_done, read_early;
	uint64_t v0, read_value;
	int read_ret;
	char why[3][256];
};

struct hold_child {
	struct hold_shared *sh;
	struct coh_node *n;
	uint32_t id;
};

static void hold_hook(void *arg, uint32_t dead)
{
	struct hold_child *hc = arg;
	uint64_t until = bench_now_ns() + 20000000000ull;
	struct timespec nap = { 0, 1000000 };

	(void)dead;
	atomic_store(&hc->sh->holding, hc->id + 1);
	while (!atomic_load(&hc->sh->released) && bench_now_ns() < until)
		nanosleep(&nap, NULL);
}

static void *hold_reader(void *arg)
{
	struct hold_child *hc = arg;
	uint8_t buf[BS];

	hc->sh->read_ret = coh_node_read(hc->n, 0, 1, buf);
	/* Block 0 was the dead node's: its read must not finish before the takeover has. */
	atomic_store(&hc->sh->read_early, !atomic_load(&hc->sh->released));
	if (!hc->sh->read_ret && bench_block_value(buf, BS, &hc->sh->read_value))
		hc->sh->read_ret = -EILSEQ;
	atomic_store(&hc->sh->read_done, 1);
	return NULL;
}

#define HFAIL(...)                                                                                 \
	do {                                                                                       \
		snprintf(sh->why[id], sizeof(sh->why[0]), __VA_ARGS__);                            \
		fprintf(stderr, "hold node %u: %s\n", id, sh->why[id]);                            \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static int hold_child_main(struct hold_shared *sh, uint32_t id, const char *dir,
			   const char *cluster)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = id,
				      .cluster = cluster };
	struct coh_node_attr na = { .nodes = 3,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = ELEM_BLOCKS,
				    .cache_blocks = 64,
				    .timeout_ms = 3000,
				    .takeover_hook = hold_hook };
	struct hold_child hc = { .sh = sh, .id = id };
	struct timespec nap = { 0, 1000000 };
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_node_stats st;
	char paths[3][600];
	uint8_t buf[BS];
	pthread_t reader;
	uint64_t until, v, b;
	int ret = 0, r;
	uint32_t i;

	na.takeover_arg = &hc;
	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", dir, i);
		na.elem_paths[i] = paths[i];
	}
	r = coh_fabric_open(&fa, &fab);
	if (r)
		HFAIL("fabric open: %s", coh_strerror(r));
	na.fab = fab;
	r = coh_node_open(&na, &n);
	if (r)
		HFAIL("node open: %s", coh_strerror(r));
	hc.n = n;
	if (bench_sbar_wait(&sh->start, 30000))
		HFAIL("start barrier timed out");
	if (id == 0) {
		/* Acknowledged here, not destaged: only node 1's copy of the log has it. */
		bench_fill_block(buf, BS, sh->v0);
		r = coh_node_write(n, 0, 1, buf);
		if (r)
			HFAIL("write of block 0: %s", coh_strerror(r));
		if (bench_sbar_wait(&sh->written, 30000))
			HFAIL("barrier after the write timed out");
		kill(getpid(), SIGKILL);
	}
	if (bench_sbar_wait(&sh->written, 30000))
		HFAIL("barrier after the write timed out");
	if (id == 2) {
		until = bench_now_ns() + 20000000000ull;
		while (atomic_load(&sh->holding) != 2 && bench_now_ns() < until)
			nanosleep(&nap, NULL);
		if (atomic_load(&sh->holding) != 2)
			HFAIL("node 1 never held node 0's takeover (holding %u)",
			      atomic_load(&sh->holding));
		if (pthread_create(&reader, NULL, hold_reader, &hc))
			HFAIL("reader thread");
		/* Wait until the read has met the dead node's resource and is waiting. */
		until = bench_now_ns() + 20000000000ull;
		do {
			nanosleep(&nap, NULL);
			coh_node_stats(n, &st);
		} while (!st.dead_waits && !atomic_load(&sh->read_done) && bench_now_ns() < until);
		/* Other resources, while the takeover is held: block 4 (resource 1, homed on
		 * node 1, and written by node 1's lock transfer to us), block 8, a read of 9. */
		for (b = 4; b <= 8 && !ret; b += 4) {
			bench_fill_block(buf, BS, (3ull << 32) | b);
			r = coh_node_write(n, b, 1, buf);
			if (r)
				HFAIL("write of block %llu during the takeover: %s",
				      (unsigned long long)b, coh_strerror(r));
		}
		r = coh_node_read(n, 9, 1, buf);
		if (r)
			HFAIL("read of block 9 during the takeover: %s", coh_strerror(r));
		if (atomic_load(&sh->read_done))
			HFAIL("the read of the dead node's block finished while its takeover was "
			      "held (%s)",
			      coh_strerror(sh->read_ret));
		atomic_store(&sh->released, 1);
		pthread_join(reader, NULL);
		if (sh->read_ret)
			HFAIL("read of block 0 after the takeover: %s", coh_strerror(sh->read_ret));
		if (atomic_load(&sh->read_early))
			HFAIL("the read of block 0 finished before the takeover");
		if (sh->read_value != sh->v0)
			HFAIL("block 0 read %llx, acknowledged %llx",
			      (unsigned long long)sh->read_value, (unsigned long long)sh->v0);
	}
	r = coh_node_wait_epoch(n, 2, 30000);
	if (r)
		HFAIL("no new epoch: %s", coh_strerror(r));
	if (bench_sbar_wait(&sh->after, 30000))
		HFAIL("barrier after the takeover timed out");
	for (b = 0; b <= 8; b += 4) {
		uint64_t want = b ? (3ull << 32) | b : sh->v0;

		r = coh_node_read(n, b, 1, buf);
		if (r || bench_block_value(buf, BS, &v) || v != want)
			HFAIL("block %llu after the takeover: %s, %llx not %llx",
			      (unsigned long long)b, coh_strerror(r), (unsigned long long)v,
			      (unsigned long long)want);
	}
	coh_node_stats(n, &st);
	if (id == 1 && st.takeovers != 1)
		HFAIL("node 1 took over %llu times, not once", (unsigned long long)st.takeovers);
	/* Node 0 held one resource, its own home's, and its log names it: the takeover takes
	 * that one, not every word of node 0's home nobody claimed (a third of the volume). */
	if (id == 1 && st.locks_taken != 1)
		HFAIL("node 1's takeover took %llu locks, not the 1 node 0's log names",
		      (unsigned long long)st.locks_taken);
	if (bench_sbar_wait(&sh->after, 30000))
		HFAIL("barrier before close timed out");
out:
	r = coh_node_close(&n);
	if (r && !ret)
		fprintf(stderr, "hold node %u: close: %s\n", id, coh_strerror(r));
	coh_fabric_close(&fab);
	return ret;
}

int tk_hold_run(void)
{
	char dir[] = "/dev/shm/cohort-hold-XXXXXX", cluster[512];
	struct hold_shared *sh;
	pid_t pids[3];
	uint32_t i;
	int failed = 0;

	sh = tk_setup(dir, sizeof(*sh), 3, cluster, sizeof(cluster));
	if (!sh)
		return 1;
	sh->v0 = 1ull << 32 | 1;
	bench_sbar_init(&sh->start, 3);
	bench_sbar_init(&sh->written, 3);
	bench_sbar_init(&sh->after, 2);
	fflush(NULL);
	for (i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			alarm(CHILD_TIMEOUT_S);
			_exit(hold_child_main(sh, i, dir, cluster));
		}
		if (pids[i] < 0)
			return tk_abort(pids, i, sh, sizeof(*sh), dir);
	}
	for (i = 0; i < 3; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, CHILD_TIMEOUT_S + 10)) {
			failed = 1;
		} else if (i == 0) {
			failed |= !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		} else if (WIFSIGNALED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "hold: node %u %s %d\n", i,
				WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			failed = 1;
		}
	}
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}
