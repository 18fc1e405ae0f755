/*
 * io.c - the operation engine. An operation (struct coh_io, node.h) is an object with a state
 * (enum coh_io_state): submitted with a completion callback, queued, run by the node's engine
 * thread, and completed exactly once. The synchronous calls (coh_node_read/write/flush) run the
 * same steps, io_exec, on the caller's thread.
 *
 * io_exec is one operation against the cache: when it meets a dead node it has let go of
 * everything (nothing was acknowledged; a write that may have been partly applied is written
 * whole again), so it waits for the view change to take a step, or a few ms (the step may be
 * another node's, such as the winner taking the dead node's locks), and tries again, within four
 * timeouts. Its state follows the crash points the cache and the write hook reach on its thread
 * (io_point), so traces, crash points and coh_io_state() name the same steps.
 *
 * What it leaves out: running several operations of one node at once. The cache has one
 * application context (its endpoints, the node's @io lock), so the engine thread runs one
 * operation at a time and the queue absorbs the rest; docs/concurrency.md says what the engine
 * needs before it runs more.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/log.h"
#include "node_internal.h"

#define IO_DEPTH_DEFAULT 128u
#define IO_DEPTH_MAX 4096u
#define IO_SPIN_NS 20000ull /* as the fabric's waits spin (verbs/fabric.c, CQ_SPIN_NS) */

static inline void io_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* The operation this thread executes, and its node: the points it reaches are its steps. */
static __thread struct coh_io *io_cur;
static __thread struct coh_node *io_cur_node;

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

/* io_begin - take the I/O lock with a cache to work on. -EROFS when this node is fenced. */
static int io_begin(struct coh_node *n)
{
	/* A view change step that pauses between batches looks for us (node_step_pause). */
	atomic_fetch_add(&n->io_wanted, 1);
	pthread_mutex_lock(&n->io);
	atomic_fetch_sub(&n->io_wanted, 1);
	atomic_fetch_add(&n->io_taken, 1);
	if (!n->cache) {
		bool quorum, forming;

		pthread_mutex_unlock(&n->io);
		pthread_mutex_lock(&n->state_lock);
		quorum = n->quorum;
		forming = n->forming;
		pthread_mutex_unlock(&n->state_lock);
		/* A formation (a node joining) stops I/O for a while: wait for it. */
		if (n->stopped)
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
		return coh_cache_flush(c);
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
			pthread_mutex_unlock(&n->io);
		}
		if (!io_transient(ret) || n->stopped)
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

/* io_complete - the end of a submitted operation: its callback, exactly once. The slot in the
 * queue depth is given back first, so that the callback can submit again. */
static void io_complete(struct coh_node *n, struct coh_io *io, int status)
{
	coh_io_cb cb = io->cb;
	void *arg = io->cb_arg;

	io_set_state(n, io, COH_IO_COMPLETE);
	pthread_mutex_lock(&n->eng.lock);
	n->eng.inflight--;
	pthread_mutex_unlock(&n->eng.lock);
	atomic_fetch_add(&n->eng.completed, 1);
	__atomic_store_n(&io->state, COH_IO_IDLE, __ATOMIC_RELEASE);
	cb(io, status, arg);
}

/* io_pop - the oldest queued operation, or NULL. Under eng.lock. */
static struct coh_io *io_pop(struct coh_node *n)
{
	struct coh_io *io = n->eng.head;

	if (io) {
		atomic_fetch_sub_explicit(&n->eng.queued, 1, memory_order_relaxed);
		n->eng.head = io->next;
		if (!n->eng.head)
			n->eng.tail = NULL;
		io->next = NULL;
	}
	return io;
}

static void *io_main(void *arg)
{
	struct coh_node *n = arg;

	pthread_mutex_lock(&n->eng.lock);
	while (!n->eng.stopping) {
		struct coh_io *io = io_pop(n);

		if (!io) {
			struct timespec until;
			uint64_t spin_end = node_now_ns() + IO_SPIN_NS;

			/* Idle: look for a while before sleeping, so that an operation submitted
			 * right after the last one completed costs no wake-up (a futex wake and a
			 * context switch are several us, more than a write). */
			pthread_mutex_unlock(&n->eng.lock);
			while (!atomic_load_explicit(&n->eng.queued, memory_order_acquire) &&
			       node_now_ns() < spin_end)
				io_relax();
			pthread_mutex_lock(&n->eng.lock);
			if (n->eng.head || n->eng.stopping)
				continue;
			/* Woken by a submit or by the stop; the bound only keeps the wait from
			 * being unbounded. */
			node_realtime_in(1000, &until);
			pthread_cond_timedwait(&n->eng.cond, &n->eng.lock, &until);
			continue;
		}
		pthread_mutex_unlock(&n->eng.lock);
		io_complete(n, io, io_exec(n, io));
		pthread_mutex_lock(&n->eng.lock);
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
	pthread_cond_signal(&n->eng.cond);
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
		pthread_mutex_unlock(&n->eng.lock);
		if (!io)
			break;
		io_complete(n, io, io_exec(n, io));
		ran++;
	}
	return (int)ran;
}

int io_init(struct coh_node *n, uint32_t depth, bool manual)
{
	if (depth > IO_DEPTH_MAX)
		return -EINVAL;
	pthread_mutex_init(&n->eng.lock, NULL);
	pthread_cond_init(&n->eng.cond, NULL);
	n->eng.depth = depth ? depth : IO_DEPTH_DEFAULT;
	n->eng.manual = manual;
	return 0;
}

int io_start(struct coh_node *n)
{
	int ret = 0;

	if (!n->eng.manual) {
		ret = -pthread_create(&n->eng.thread, NULL, io_main, n);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&n->eng.lock);
	n->eng.started = true;
	pthread_mutex_unlock(&n->eng.lock);
	return 0;
}

bool io_on_engine_thread(struct coh_node *n)
{
	return n->eng.started && !n->eng.manual && pthread_equal(pthread_self(), n->eng.thread);
}

void io_stop(struct coh_node *n)
{
	struct coh_io *left, *io;
	bool joined;

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
	joined = !n->eng.manual;
	pthread_mutex_unlock(&n->eng.lock);
	/* The operation the thread runs ends by itself (bounded); those not started never do. */
	if (joined)
		pthread_join(n->eng.thread, NULL);
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
