/*
 * io.c - the operation engine. An operation (struct coh_io, node.h) is an object with a state
 * (enum coh_io_state): submitted with a completion callback, queued, run by one of the node's
 * engine threads, and completed exactly once. Each engine thread runs one operation at a time on
 * its own lane of the cache (its own endpoints), so that as many operations as there are threads
 * wait on the network at once. Operations whose resources overlap run in submission order: one
 * is not started while an earlier one that overlaps it is queued or running (io_pop). The
 * synchronous calls (coh_node_read/write/flush) run the same steps, io_exec, on the caller's
 * thread, on lane 0.
 *
 * io_exec is one operation against the cache: when it meets a dead node it has let go of
 * everything (nothing was acknowledged; a write that may have been partly applied is written
 * whole again), so it waits for the view change to take a step, or a few ms (the step may be
 * another node's, such as the winner taking the dead node's locks), and tries again, within four
 * timeouts. Its state follows the crash points the cache and the write hook reach on its thread
 * (io_point), so traces, crash points and coh_io_state() name the same steps.
 *
 * What it leaves out: an operation still holds its thread while it waits on the network (the
 * cache's steps are calls that block, bounded); docs/concurrency.md says what is left to make
 * the steps completions.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/log.h"
#include "node_internal.h"

#define IO_DEPTH_DEFAULT 128u
#define IO_DEPTH_MAX 4096u
#define IO_THREADS_DEFAULT 4u
#define IO_THREADS_MAX (COH_CACHE_MAX_LANES - 1)
#define IO_SPIN_NS 20000ull /* as the fabric's waits spin (verbs/fabric.c, CQ_SPIN_NS) */

static inline void io_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* The operation this thread executes, and its node: the points it reaches are its steps. The
 * lane of the cache the thread uses: an engine thread's own, else 0. */
static __thread struct coh_io *io_cur;
static __thread struct coh_node *io_cur_node;
static __thread uint32_t io_lane;

static const char *const io_state_names[COH_IO_STATE_MAX] = {
	[COH_IO_IDLE] = "idle",		  [COH_IO_QUEUED] = "queued",
	[COH_IO_ACQUIRE] = "acquire",	  [COH_IO_INVALIDATE] = "invalidate",
	[COH_IO_FETCH] = "fetch",	  [COH_IO_LOG] = "log",
	[COH_IO_INSTALL] = "install",	  [COH_IO_DESTAGE] = "destage",
	[COH_IO_WAIT_VIEW] = "wait_view", [COH_IO_COMPLETE] = "complete",
};

const char *coh_io_state_name(uint32_t state)
{
	return state < COH_IO_STATE_MAX ? io_state_names[state] : "?";
}

uint32_t coh_io_state(const struct coh_io *io)
{
	return io ? __atomic_load_n(&io->state, __ATOMIC_ACQUIRE) : COH_IO_IDLE;
}

const struct coh_io *coh_node_current_io(void)
{
	return io_cur;
}

/* io_set_state - the single transition function: every state change goes through here. */
static void io_set_state(struct coh_node *n, struct coh_io *io, uint32_t s)
{
	if (__atomic_load_n(&io->state, __ATOMIC_RELAXED) == s)
		return;
	__atomic_store_n(&io->state, s, __ATOMIC_RELEASE);
	COH_LOG_DBG("node %u: io %p %s", n->me, (void *)io, coh_io_state_name(s));
	if (n->hooks.io_state)
		n->hooks.io_state(n->hooks.arg, io, s);
}

void io_point(uint32_t pt)
{
	uint32_t s;

	if (!io_cur)
		return;
	switch (pt) {
	case COH_CRASH_XCAS:
		s = COH_IO_INVALIDATE;
		break;
	case COH_CRASH_SCAS:
		s = COH_IO_FETCH;
		break;
	case COH_CRASH_BEFORE_REPLICATION:
		s = COH_IO_LOG;
		break;
	case COH_CRASH_REPLICATED:
		s = COH_IO_INSTALL;
		break;
	default:
		return;
	}
	io_set_state(io_cur_node, io_cur, s);
}

static bool io_transient(int ret)
{
	return ret == -EAGAIN || ret == -ECONNRESET || ret == -ETIMEDOUT || ret == -EPIPE ||
	       ret == -ENOTCONN || ret == -ECONNREFUSED || ret == -EACCES || ret == -ESHUTDOWN;
}

/* io_begin - take the I/O lock (shared: operations run side by side; a view change step takes
 * it exclusive) with a cache to work on, and bind this thread's lane of it. -EROFS when this
 * node is fenced. */
static int io_begin(struct coh_node *n)
{
	/* A view change step that pauses between batches looks for us (node_step_pause). */
	atomic_fetch_add(&n->io_wanted, 1);
	pthread_rwlock_rdlock(&n->io);
	atomic_fetch_sub(&n->io_wanted, 1);
	atomic_fetch_add(&n->io_taken, 1);
	if (n->cache) {
		(void)coh_cache_lane_bind(n->cache, io_lane);
	} else {
		bool quorum, forming, stopped;

		pthread_rwlock_unlock(&n->io);
		pthread_mutex_lock(&n->state_lock);
		quorum = n->quorum;
		forming = n->forming;
		stopped = n->stopped;
		pthread_mutex_unlock(&n->state_lock);
		/* A formation (a node joining) stops I/O for a while: wait for it. */
		if (stopped)
			return -ESHUTDOWN;
		return forming ? -EAGAIN : quorum ? -ETIMEDOUT : -EROFS;
	}
	return 0;
}

/* io_wait_progress - wait, up to @ms, for the view change to move past step @seen. */
static void io_wait_progress(struct coh_node *n, uint64_t seen, int ms)
{
	struct timespec until;

	node_realtime_in(ms, &until);
	pthread_mutex_lock(&n->state_lock);
	while (__atomic_load_n(&n->progress, __ATOMIC_ACQUIRE) == seen &&
	       pthread_cond_timedwait(&n->view_cond, &n->state_lock, &until) == 0)
		;
	pthread_mutex_unlock(&n->state_lock);
}

/* io_run - one attempt of @io against the cache, with @io held. */
static int io_run(struct coh_node *n, struct coh_io *io)
{
	struct coh_cache *c = n->cache;
	uint8_t *b = io->buf;

	switch (io->type) {
	case COH_IO_READ:
		return coh_cache_read(c, io->lba, io->nblocks, b);
	case COH_IO_WRITE:
		return coh_cache_write(c, io->lba, io->nblocks, b);
	case COH_IO_COMPARE_WRITE:
		return coh_cache_compare_write(c, io->lba, io->nblocks, b,
					       b + (size_t)io->nblocks * n->bsize, &io->miscompare);
	case COH_IO_FLUSH:
		io_set_state(n, io, COH_IO_DESTAGE);
		return node_cache_flush(n);
	}
	return -EINVAL;
}

/* io_exec - run @io to its end on this thread (see the top of the file). */
static int io_exec(struct coh_node *n, struct coh_io *io)
{
	struct coh_io *saved = io_cur;
	struct coh_node *saved_node = io_cur_node;
	uint64_t deadline = 0, seen;
	int ret = 0, tries = 0;

	io_cur = io;
	io_cur_node = n;
	for (;;) {
		/* The view change's step counter, read before the attempt: a failure waits for
		 * the next step (io_wait_progress). */
		seen = __atomic_load_n(&n->progress, __ATOMIC_ACQUIRE);
		io_set_state(n, io, COH_IO_ACQUIRE);
		ret = io_begin(n);
		if (!ret) {
			ret = io_run(n, io);
			pthread_rwlock_unlock(&n->io);
		}
		if (!io_transient(ret) || __atomic_load_n(&n->stopped, __ATOMIC_ACQUIRE))
			break;
		/* The bound runs from the first failure (an attempt is bounded by itself): the
		 * clock is read only on this path, not on every operation. */
		if (!deadline)
			deadline = node_now_ns() + (uint64_t)n->timeout_ms * 4 * 1000000ull;
		else if (node_now_ns() >= deadline)
			break;
		if (!tries++) {
			atomic_fetch_add(&n->dead_waits, 1);
			if (io->type == COH_IO_FLUSH)
				COH_LOG_INFO("node %u: %s on the flush; again when the view change "
					     "moves on",
					     n->me, coh_strerror(ret));
			else
				COH_LOG_INFO("node %u: %s on blocks %llu+%u; again when the view "
					     "change moves on",
					     n->me, coh_strerror(ret), (unsigned long long)io->lba,
					     io->nblocks);
		}
		io_set_state(n, io, COH_IO_WAIT_VIEW);
		io_wait_progress(n, seen, 5);
	}
	/* -ETIME: a write that was applied after this node's lease ran out; its outcome is
	 * unknown to the caller, as after a timeout, and it is never applied a second time. A
	 * fabric error that outlasted the bound (a peer that fenced this node answers with an
	 * access error) is no answer either: -EROFS once this node knows it is out of the
	 * majority, else -ETIMEDOUT. */
	if (ret == -ETIME || (io_transient(ret) && ret != -ESHUTDOWN)) {
		bool quorum;

		pthread_mutex_lock(&n->state_lock);
		quorum = n->quorum;
		pthread_mutex_unlock(&n->state_lock);
		ret = quorum || ret == -ETIME ? -ETIMEDOUT : -EROFS;
	}
	if (!ret && io->type == COH_IO_READ)
		atomic_fetch_add(&n->reads, 1);
	else if (!ret && (io->type == COH_IO_WRITE || io->type == COH_IO_COMPARE_WRITE))
		atomic_fetch_add(&n->writes, 1);
	io_cur = saved;
	io_cur_node = saved_node;
	return ret;
}

/* io_check - a request the engine can run: 0 or -EINVAL. */
static int io_check(const struct coh_node *n, const struct coh_io *io)
{
	if (io->io_size < sizeof(struct coh_io))
		return -EINVAL;
	switch (io->type) {
	case COH_IO_READ:
	case COH_IO_WRITE:
	case COH_IO_COMPARE_WRITE:
		if (!io->buf || !io->nblocks || io->lba >= n->vol_blocks ||
		    io->nblocks > n->vol_blocks - io->lba)
			return -EINVAL;
		return 0;
	case COH_IO_FLUSH:
		return io->lba || io->nblocks ? -EINVAL : 0;
	}
	return -EINVAL;
}

/* io_lat_bucket - the histogram bucket of @ns: 4 per power of two from 64 ns (bucket 0 takes
 * everything shorter, the last everything longer than its range). */
static uint32_t io_lat_bucket(uint64_t ns)
{
	uint32_t o, b;

	if (ns < 64)
		return 0;
	o = 63u - (uint32_t)__builtin_clzll(ns);
	b = (o - 6) * 4 + (uint32_t)(ns >> (o - 2) & 3);
	return b < COH_LAT_BUCKETS ? b : COH_LAT_BUCKETS - 1;
}

uint64_t coh_lat_percentile(const uint64_t *hist, double q)
{
	uint64_t total = 0, want, seen = 0;
	uint32_t b;

	if (!hist)
		return 0;
	for (b = 0; b < COH_LAT_BUCKETS; b++)
		total += hist[b];
	if (!total)
		return 0;
	q = q < 0 ? 0 : q > 1 ? 1 : q;
	want = (uint64_t)(q * (double)total + 0.5);
	if (!want)
		want = 1;
	for (b = 0; b < COH_LAT_BUCKETS; b++) {
		seen += hist[b];
		if (seen >= want)
			break;
	}
	if (b >= COH_LAT_BUCKETS - 1)
		b = COH_LAT_BUCKETS - 1;
	/* Bucket b covers [(4 + s) << (o - 2), (5 + s) << (o - 2)) with o = 6 + b / 4. */
	return (uint64_t)(5 + b % 4) << (6 + b / 4 - 2);
}

/* io_complete - the end of a submitted operation: its callback, exactly once. The slot in the
 * queue depth is given back first, so that the callback can submit again. */
static void io_complete(struct coh_node *n, struct coh_io *io, int status)
{
	coh_io_cb cb = io->cb;
	void *arg = io->cb_arg;

	if (!status && io->type != COH_IO_FLUSH)
		atomic_fetch_add_explicit(&n->eng.lat[io->type != COH_IO_READ]
						     [io_lat_bucket(node_now_ns() - io->submit_ns)],
					  1, memory_order_relaxed);
	io_set_state(n, io, COH_IO_COMPLETE);
	pthread_mutex_lock(&n->eng.lock);
	n->eng.inflight--;
	pthread_mutex_unlock(&n->eng.lock);
	atomic_fetch_add(&n->eng.completed, 1);
	__atomic_store_n(&io->state, COH_IO_IDLE, __ATOMIC_RELEASE);
	cb(io, status, arg);
}

/* io_range - the resources @io touches (a flush: all of them). */
static void io_range(const struct coh_node *n, const struct coh_io *io, uint64_t *r0, uint64_t *r1)
{
	uint32_t rb = n->stripe_blocks ? n->stripe_blocks : 1;

	if (io->type == COH_IO_FLUSH) {
		*r0 = 0;
		*r1 = UINT64_MAX;
		return;
	}
	*r0 = io->lba / rb;
	*r1 = (io->lba + io->nblocks - 1) / rb;
}

static bool io_overlap(const struct coh_node *n, const struct coh_io *a, const struct coh_io *b)
{
	uint64_t a0, a1, b0, b1;

	io_range(n, a, &a0, &a1);
	io_range(n, b, &b0, &b1);
	return a0 <= b1 && b0 <= a1;
}

/* How far io_pop looks past operations that must wait: a bound on its cost per call. */
#define IO_SCAN_MAX 64u

/*
 * io_pop - the oldest queued operation that may start: none that overlaps it is running, nor
 * queued before it (so operations on one resource keep their order, and none sees another half
 * done). NULL when there is none. Under eng.lock.
 */
static struct coh_io *io_pop(struct coh_node *n)
{
	struct coh_io *io, *prev = NULL, *e;
	uint32_t w, seen = 0;

	for (io = n->eng.head; io && seen < IO_SCAN_MAX; prev = io, io = io->next, seen++) {
		bool wait = false;

		for (w = 0; w < n->eng.nthreads + 1 && !wait; w++)
			wait = n->eng.running[w] && io_overlap(n, io, n->eng.running[w]);
		for (e = n->eng.head; e != io && !wait; e = e->next)
			wait = io_overlap(n, io, e);
		if (wait)
			continue;
		atomic_fetch_sub_explicit(&n->eng.queued, 1, memory_order_relaxed);
		if (prev)
			prev->next = io->next;
		else
			n->eng.head = io->next;
		if (n->eng.tail == io)
			n->eng.tail = prev;
		io->next = NULL;
		return io;
	}
	return NULL;
}

/* io_run_one - run @io on engine thread @w (eng.running[w] says so meanwhile) and complete it. */
static void io_run_one(struct coh_node *n, uint32_t w, struct coh_io *io)
{
	int ret = io_exec(n, io);

	/* No longer running before the callback: it may submit an operation that overlaps. An
	 * operation that waited for this one is taken by this thread when it looks again. The
	 * thread counts as busy (eng.nrunning) until it looks, which its caller does in the same
	 * hold of eng.lock: what is submitted meanwhile (by its callback, say) is its own next
	 * operation, with no other thread woken for it. Returns with eng.lock held. */
	pthread_mutex_lock(&n->eng.lock);
	n->eng.running[w] = NULL;
	pthread_mutex_unlock(&n->eng.lock);
	io_complete(n, io, ret);
	pthread_mutex_lock(&n->eng.lock);
	n->eng.nrunning--;
}

/* io_wake_one - wake a sleeping engine thread if there is work and no thread to take it: none
 * spins, and every one running an operation is asleep on the network. Under eng.lock. */
static void io_wake_one(struct coh_node *n)
{
	if (n->eng.head && n->eng.sleepers && !n->eng.spinner && n->eng.nblocked >= n->eng.nrunning)
		pthread_cond_signal(&n->eng.cond);
}

/*
 * io_sleeping - the sleep hook of an engine thread (coh_thread_sleep_hook_set): its operation
 * is about to sleep on the network (it spun first), or woke. One thread runs while there is work
 * it can do; another is started only when every running one sleeps. On a few cores, threads
 * started for every operation would cost more in switches than the waits they cover (a wait on
 * shm is about a microsecond, a switch several), while on a slow fabric each sleep is a long one
 * that another thread fills.
 */
static void io_sleeping(void *arg, bool sleeping)
{
	struct io_thread_arg *a = arg;
	struct coh_node *n = a->n;

	pthread_mutex_lock(&n->eng.lock);
	if (sleeping != n->eng.blocked[a->w]) {
		n->eng.blocked[a->w] = sleeping;
		if (sleeping) {
			n->eng.nblocked++;
			io_wake_one(n);
		} else {
			n->eng.nblocked--;
		}
	}
	pthread_mutex_unlock(&n->eng.lock);
}

static void *io_main(void *arg)
{
	struct io_thread_arg *a = arg;
	struct coh_node *n = a->n;
	uint32_t w = a->w;

	/* Lane 0 is the synchronous calls' and the view change's. */
	io_lane = w + 1;
	coh_thread_sleep_hook_set(io_sleeping, a);
	pthread_mutex_lock(&n->eng.lock);
	while (!n->eng.stopping) {
		/* One thread runs operations while it can: another that is not asleep on the
		 * network takes none (see io_sleeping), and sleeps until woken for them. */
		bool other = n->eng.nrunning > n->eng.nblocked;
		struct coh_io *io = other ? NULL : io_pop(n);

		if (!io) {
			struct timespec until;
			uint64_t spin_end = node_now_ns() + IO_SPIN_NS;
			uint64_t q = atomic_load_explicit(&n->eng.queued, memory_order_acquire);

			/* Idle: one thread looks for a while before sleeping, so that an operation
			 * submitted right after the last one completed costs no wake-up (a futex
			 * wake and a context switch are several us, more than a write). The others
			 * sleep at once: on a few cores, spinners would take the time of the
			 * threads with work. A queue that holds only operations that must wait
			 * for running ones is not looked at again before one of those ends. */
			if (!n->eng.spinner && !q && !other) {
				n->eng.spinner = true;
				pthread_mutex_unlock(&n->eng.lock);
				while (
				    !atomic_load_explicit(&n->eng.queued, memory_order_acquire) &&
				    node_now_ns() < spin_end)
					io_relax();
				pthread_mutex_lock(&n->eng.lock);
				n->eng.spinner = false;
				if (n->eng.head || n->eng.stopping)
					continue;
			}
			/* Woken by a submit, an operation's end or the stop; the bound only keeps
			 * the wait from being unbounded. */
			node_realtime_in(1000, &until);
			n->eng.sleepers++;
			pthread_cond_timedwait(&n->eng.cond, &n->eng.lock, &until);
			n->eng.sleepers--;
			continue;
		}
		n->eng.running[w] = io;
		n->eng.nrunning++;
		pthread_mutex_unlock(&n->eng.lock);
		io_run_one(n, w, io);
	}
	pthread_mutex_unlock(&n->eng.lock);
	return NULL;
}

int coh_node_submit(struct coh_node *n, struct coh_io *io)
{
	int ret;

	if (!n || !io || !io->cb)
		return -EINVAL;
	ret = io_check(n, io);
	if (ret)
		return ret;
	pthread_mutex_lock(&n->eng.lock);
	if (n->eng.stopping || !n->eng.started) {
		pthread_mutex_unlock(&n->eng.lock);
		return -ESHUTDOWN;
	}
	if (n->eng.inflight >= n->eng.depth) {
		pthread_mutex_unlock(&n->eng.lock);
		atomic_fetch_add(&n->eng.refused, 1);
		return -EBUSY;
	}
	n->eng.inflight++;
	io->next = NULL;
	io->miscompare = 0;
	io->submit_ns = node_now_ns();
	/* Under the lock, so that the hook sees QUEUED before the engine thread moves it on. */
	io_set_state(n, io, COH_IO_QUEUED);
	if (n->eng.tail)
		n->eng.tail->next = io;
	else
		n->eng.head = io;
	n->eng.tail = io;
	atomic_fetch_add_explicit(&n->eng.queued, 1, memory_order_release);
	/* A spinning thread sees it without a wake-up (a futex wake and a context switch cost
	 * more than a hit), and a running one takes it when its operation ends; a sleeping one is
	 * woken only when no thread can (io_sleeping). */
	io_wake_one(n);
	pthread_mutex_unlock(&n->eng.lock);
	atomic_fetch_add(&n->eng.submitted, 1);
	return 0;
}

int coh_node_engine_poll(struct coh_node *n, uint32_t max)
{
	uint32_t ran = 0;

	if (!n || !n->eng.manual)
		return -EINVAL;
	while (ran < max) {
		struct coh_io *io;

		pthread_mutex_lock(&n->eng.lock);
		io = io_pop(n);
		if (io) {
			n->eng.running[n->eng.nthreads] = io;
			n->eng.nrunning++;
		}
		pthread_mutex_unlock(&n->eng.lock);
		if (!io)
			break;
		io_run_one(n, n->eng.nthreads, io);
		pthread_mutex_unlock(&n->eng.lock);
		ran++;
	}
	return (int)ran;
}

int io_init(struct coh_node *n, uint32_t depth, uint32_t threads, bool manual)
{
	if (depth > IO_DEPTH_MAX || threads > IO_THREADS_MAX)
		return -EINVAL;
	pthread_mutex_init(&n->eng.lock, NULL);
	pthread_cond_init(&n->eng.cond, NULL);
	n->eng.depth = depth ? depth : IO_DEPTH_DEFAULT;
	n->eng.nthreads = threads ? threads : IO_THREADS_DEFAULT;
	n->eng.manual = manual;
	return 0;
}

uint32_t io_lanes(const struct coh_node *n)
{
	return n->eng.nthreads + 1;
}

int io_start(struct coh_node *n)
{
	uint32_t w;
	int ret = 0;

	for (w = 0; !n->eng.manual && w < n->eng.nthreads; w++) {
		n->eng.targ[w] = (struct io_thread_arg){ .n = n, .w = w };
		ret = -pthread_create(&n->eng.threads[w], NULL, io_main, &n->eng.targ[w]);
		if (ret)
			break;
		n->eng.started_threads = w + 1;
	}
	pthread_mutex_lock(&n->eng.lock);
	if (ret)
		n->eng.stopping = true;
	else
		n->eng.started = true;
	pthread_cond_broadcast(&n->eng.cond);
	pthread_mutex_unlock(&n->eng.lock);
	if (ret) {
		for (w = 0; w < n->eng.started_threads; w++)
			pthread_join(n->eng.threads[w], NULL);
		n->eng.started_threads = 0;
	}
	return ret;
}

bool io_on_engine_thread(struct coh_node *n)
{
	uint32_t w;

	for (w = 0; w < n->eng.started_threads; w++) {
		if (pthread_equal(pthread_self(), n->eng.threads[w]))
			return true;
	}
	return false;
}

void io_stop(struct coh_node *n)
{
	struct coh_io *left, *io;
	uint32_t w;

	pthread_mutex_lock(&n->eng.lock);
	if (n->eng.stopping || !n->eng.started) {
		n->eng.stopping = true;
		pthread_mutex_unlock(&n->eng.lock);
		return;
	}
	n->eng.stopping = true;
	left = n->eng.head;
	n->eng.head = n->eng.tail = NULL;
	atomic_store(&n->eng.queued, 0);
	pthread_cond_broadcast(&n->eng.cond);
	pthread_mutex_unlock(&n->eng.lock);
	/* The operations the threads run end by themselves (bounded); those not started never
	 * do. */
	for (w = 0; w < n->eng.started_threads; w++)
		pthread_join(n->eng.threads[w], NULL);
	n->eng.started_threads = 0;
	while ((io = left)) {
		left = io->next;
		io->next = NULL;
		io_complete(n, io, -ESHUTDOWN);
	}
}

void io_fini(struct coh_node *n)
{
	io_stop(n);
	pthread_cond_destroy(&n->eng.cond);
	pthread_mutex_destroy(&n->eng.lock);
}

/* The synchronous calls: the same steps on the caller's thread, outside the queue depth. */

static int io_sync(struct coh_node *n, uint32_t type, uint64_t lba, uint32_t nblocks, void *buf)
{
	struct coh_io io = {
		.io_size = sizeof(io), .type = type, .lba = lba, .nblocks = nblocks, .buf = buf
	};
	int ret;

	if (!n)
		return -EINVAL;
	ret = io_check(n, &io);
	if (ret)
		return ret;
	ret = io_exec(n, &io);
	io_set_state(n, &io, COH_IO_COMPLETE);
	return ret;
}

int coh_node_read(struct coh_node *n, uint64_t lba, uint32_t nblocks, void *buf)
{
	return io_sync(n, COH_IO_READ, lba, nblocks, buf);
}

int coh_node_write(struct coh_node *n, uint64_t lba, uint32_t nblocks, const void *buf)
{
	return io_sync(n, COH_IO_WRITE, lba, nblocks, (void *)buf);
}

/* A flush meets a view change as a write does, and waits it out the same way. */
int coh_node_flush(struct coh_node *n)
{
	return io_sync(n, COH_IO_FLUSH, 0, 0, NULL);
}
