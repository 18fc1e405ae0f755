/*
 * bench_fabric.c - cohort-bench fabric: latency and message rate of the fabric's operations
 * between two nodes, measured the way perftest measures them so that the numbers compare with
 * ib_*_lat on the same device:
 *   write  ping-pong: each side WRITEs into the other's buffer and polls the last 8 bytes;
 *          a sample is half the round trip (ib_write_lat)
 *   send   ping-pong with SEND/RECV; half the round trip (ib_send_lat)
 *   read, cas, faa   one operation posted and its completion polled (ib_read_lat, ib_atomic_lat)
 * Message rate is a separate pipelined run with 32 operations in flight.
 *
 * Beside them, in the same run, the host's floor: memcpy of the same sizes, and a cache line
 * bounced between two processes (half round trip), which is what any one-host fabric pays.
 * Node 0 measures and prints; node 1 serves. Both busy-poll, as perftest does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cohort/fabric.h"
#include "bench.h"

#define WINDOW 32u
#define SPIN_LIMIT_NS (10ull * 1000000000ull) /* a stuck peer ends the run, never hangs it */

enum bf_op {
	BF_WRITE = 1,
	BF_READ,
	BF_CAS,
	BF_FAA,
	BF_SEND,
	BF_RATE,
	BF_SEND_RATE,
	BF_QUIT
};

struct bf_msg {
	uint32_t op;
	uint32_t arg; /* for BF_RATE: the enum bf_op being rated */
	uint64_t size;
	uint64_t count;
};

struct bf {
	const struct bench_opts *o;
	struct coh_fabric *fab;
	struct coh_cq *cq, *ctl_cq;
	struct coh_ep *ep, *ctl;
	struct coh_mr *in, *out, *ctl_mr;
	struct coh_rmr *peer_in;
	uint32_t me, peer;
	size_t buf;
	uint32_t outstanding; /* send-side operations not yet reaped */
	uint32_t yield_every; /* COHORT_BENCH_YIELD, 0 = pure busy-polling (the default) */
};

static int ctl_send(struct bf *b, const struct bf_msg *m)
{
	memcpy(coh_mr_addr(b->ctl_mr), m, sizeof(*m));
	return coh_ep_send_sync(b->ctl, b->ctl_mr, 0, sizeof(*m));
}

static int ctl_recv(struct bf *b, struct bf_msg *m, int timeout_ms)
{
	struct coh_wc wc;
	int ret;

	ret = coh_ep_post_recv(b->ctl, b->ctl_mr, 256, sizeof(*m), 1);
	if (ret)
		return ret;
	do {
		ret = coh_cq_wait(b->ctl_cq, &wc, 1, timeout_ms);
	} while (ret == 1 && wc.opcode != COH_WC_RECV);
	if (ret < 0)
		return ret;
	if (wc.status)
		return wc.status;
	memcpy(m, (uint8_t *)coh_mr_addr(b->ctl_mr) + 256, sizeof(*m));
	return 0;
}

/* reap - take send-side completions without blocking; an error ends the run. */
static int reap(struct bf *b, uint32_t *recvs)
{
	struct coh_wc wc[16];
	int n, i;

	n = coh_cq_poll(b->cq, wc, 16);
	for (i = 0; i < n; i++) {
		if (wc[i].status) {
			fprintf(stderr, "cohort-bench: completion error: %s\n",
				coh_strerror(wc[i].status));
			return wc[i].status;
		}
		if (wc[i].opcode == COH_WC_RECV) {
			if (recvs)
				(*recvs)++;
		} else {
			b->outstanding--;
		}
	}
	return n < 0 ? n : 0;
}

/* wait_word - spin until the last 8 bytes of the in-buffer hold @v, reaping as we go. */
static int wait_word(struct bf *b, size_t size, uint64_t v)
{
	volatile uint64_t *w = (volatile uint64_t *)((uint8_t *)coh_mr_addr(b->in) + size - 8);
	uint64_t start = bench_now_ns();
	uint32_t spins = 0;
	int ret;

	while (*w != v) {
		if (b->outstanding && (ret = reap(b, NULL)))
			return ret;
		if (++spins % 4096 == 0 && bench_now_ns() - start > SPIN_LIMIT_NS)
			return -ETIMEDOUT;
		/* On a host with no spare core (a TCG guest), a poller that never yields can keep
		 * the kernel's deferred RDMA work (soft-RoCE runs in softirq/kthreads) off the CPU
		 * until the next tick. COHORT_BENCH_YIELD=N yields every N spins. */
		if (b->yield_every && spins % b->yield_every == 0)
			sched_yield();
	}
	return 0;
}

static int post_write(struct bf *b, size_t size, uint64_t v)
{
	int ret;

	memcpy((uint8_t *)coh_mr_addr(b->out) + size - 8, &v, 8);
	while (b->outstanding >= WINDOW) {
		ret = reap(b, NULL);
		if (ret)
			return ret;
	}
	ret = coh_ep_post_write(b->ep, b->out, 0, b->peer_in, 0, size, v);
	if (!ret)
		b->outstanding++;
	return ret;
}

/* wait_recv - spin until one receive completes, then re-post its buffer. */
static int wait_recv(struct bf *b)
{
	uint64_t start = bench_now_ns();
	uint32_t got = 0, spins = 0;
	int ret;

	while (!got) {
		ret = reap(b, &got);
		if (ret)
			return ret;
		if (++spins % 4096 == 0 && bench_now_ns() - start > SPIN_LIMIT_NS)
			return -ETIMEDOUT;
	}
	return coh_ep_post_recv(b->ep, b->in, 0, b->buf, 0);
}

static int post_send(struct bf *b, size_t size)
{
	int ret;

	while (b->outstanding >= WINDOW) {
		ret = reap(b, NULL);
		if (ret)
			return ret;
	}
	ret = coh_ep_post_send(b->ep, b->out, 0, size, 0);
	if (!ret)
		b->outstanding++;
	return ret;
}

static int drain(struct bf *b)
{
	uint64_t start = bench_now_ns();
	int ret;

	while (b->outstanding) {
		ret = reap(b, NULL);
		if (ret)
			return ret;
		if (bench_now_ns() - start > SPIN_LIMIT_NS)
			return -ETIMEDOUT;
	}
	return 0;
}

/* post_one - post one one-sided operation of kind @op. */
static int post_one(struct bf *b, enum bf_op op, size_t size, uint64_t i)
{
	int ret;

	switch (op) {
	case BF_WRITE:
		ret = coh_ep_post_write(b->ep, b->out, 0, b->peer_in, 0, size, i);
		break;
	case BF_READ:
		ret = coh_ep_post_read(b->ep, b->out, 0, b->peer_in, 0, size, i);
		break;
	case BF_CAS:
		ret = coh_ep_post_cas(b->ep, b->out, 0, b->peer_in, 0, i, i + 1, i);
		break;
	default:
		ret = coh_ep_post_faa(b->ep, b->out, 0, b->peer_in, 0, 1, i);
		break;
	}
	if (!ret)
		b->outstanding++;
	return ret;
}

/* Server side: follow the client's lead until it says quit. */
static int serve(struct bf *b)
{
	struct bf_msg m;
	uint64_t i;
	int ret;

	for (;;) {
		ret = ctl_recv(b, &m, 60000);
		if (ret)
			return ret;
		switch (m.op) {
		case BF_WRITE:
			for (i = 1; i <= m.count && !ret; i++) {
				ret = wait_word(b, m.size, i);
				if (!ret)
					ret = post_write(b, m.size, i);
			}
			break;
		case BF_SEND:
			for (i = 0; i < m.count && !ret; i++) {
				ret = wait_recv(b);
				if (!ret)
					ret = post_send(b, m.size);
			}
			break;
		case BF_SEND_RATE: {
			uint32_t got = 0;
			uint64_t start = bench_now_ns();

			/* Receives were posted before the client started streaming. */
			while (got < m.count && !ret) {
				uint32_t before = got;

				ret = reap(b, &got);
				for (; before < got && !ret; before++)
					ret = coh_ep_post_recv(b->ep, b->in, 0, b->buf, 0);
				if (bench_now_ns() - start > SPIN_LIMIT_NS)
					ret = -ETIMEDOUT;
			}
			break;
		}
		case BF_QUIT:
			return 0;
		default:
			break;
		}
		if (!ret)
			ret = drain(b);
		if (ret)
			return ret;
		/* Tell the client this phase is over on our side. */
		ret = ctl_send(b, &m);
		if (ret)
			return ret;
	}
}

static int phase(struct bf *b, uint32_t op, uint32_t arg, size_t size, uint64_t count)
{
	struct bf_msg m = { .op = op, .arg = arg, .size = size, .count = count };

	return ctl_send(b, &m);
}

static int phase_end(struct bf *b)
{
	struct bf_msg m;

	return ctl_recv(b, &m, 60000);
}

static void row_init(struct bench_row *r, const char *op, const char *provider, size_t size)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->suite, sizeof(r->suite), "fabric");
	snprintf(r->op, sizeof(r->op), "%s", op);
	snprintf(r->provider, sizeof(r->provider), "%s", provider);
	r->size = size;
}

/* measure_rate - Mop/s with WINDOW one-sided operations in flight. */
static int measure_rate(struct bf *b, enum bf_op op, size_t size, uint32_t n, double *mops)
{
	uint64_t posted = 0, start;
	int ret;

	start = bench_now_ns();
	while (posted < n) {
		while (b->outstanding >= WINDOW) {
			ret = reap(b, NULL);
			if (ret)
				return ret;
		}
		ret = post_one(b, op, size, posted++);
		if (ret)
			return ret;
	}
	ret = drain(b);
	if (ret)
		return ret;
	*mops = n / ((bench_now_ns() - start) / 1e3);
	return 0;
}

static int measure_send_rate(struct bf *b, size_t size, uint32_t n, double *mops)
{
	uint64_t start;
	uint32_t i;
	int ret;

	ret = phase(b, BF_SEND_RATE, 0, size, n);
	if (ret)
		return ret;
	start = bench_now_ns();
	for (i = 0; i < n; i++) {
		ret = post_send(b, size);
		if (ret)
			return ret;
	}
	ret = drain(b);
	if (ret)
		return ret;
	ret = phase_end(b);
	*mops = n / ((bench_now_ns() - start) / 1e3);
	return ret;
}

/* measure - one row: @op at @size. */
static int measure(struct bf *b, enum bf_op op, const char *name, size_t size, uint64_t *ns)
{
	const struct bench_opts *o = b->o;
	uint32_t n = o->warmup + o->iters, i, k = 0;
	struct bench_row row;
	double mops = 0;
	int ret;

	ret = phase(b, op, 0, size, n);
	if (ret)
		return ret;
	for (i = 1; i <= n && !ret; i++) {
		uint64_t t0 = bench_now_ns(), t1;

		switch (op) {
		case BF_WRITE:
			ret = post_write(b, size, i);
			if (!ret)
				ret = wait_word(b, size, i);
			break;
		case BF_SEND:
			ret = post_send(b, size);
			if (!ret)
				ret = wait_recv(b);
			break;
		default:
			ret = post_one(b, op, size, i);
			if (!ret)
				ret = drain(b);
			break;
		}
		t1 = bench_now_ns();
		if (i > o->warmup)
			ns[k++] = (op == BF_WRITE || op == BF_SEND) ? (t1 - t0) / 2 : t1 - t0;
	}
	if (!ret)
		ret = drain(b);
	if (!ret)
		ret = phase_end(b);
	if (ret)
		return ret;
	if (op == BF_SEND) {
		ret = measure_send_rate(b, size, o->iters, &mops);
	} else {
		ret = measure_rate(b, op, size, o->iters, &mops);
	}
	if (ret)
		return ret;
	row_init(&row, name, o->provider, size);
	bench_stats(ns, k, &row);
	row.rate_mops = mops;
	bench_print_row(&row, o->csv);
	return 0;
}

static int setup(struct bf *b, uint32_t me, const char *cluster)
{
	const struct bench_opts *o = b->o;
	struct coh_fabric_attr fa = { .provider = o->provider, .cluster = cluster, .node_id = me };
	struct coh_ep_attr ca = { .peer = 1 - me,
				  .channel = 0,
				  .max_send_wr = 4,
				  .max_recv_wr = 4,
				  .max_msg_size = 256 };
	struct coh_ep_attr da = { .peer = 1 - me,
				  .channel = 1,
				  .max_send_wr = 64,
				  .max_recv_wr = 512,
				  .max_msg_size = 0 };
	struct coh_mr_desc mine, theirs;
	struct coh_wc wc;
	uint32_t i;
	int ret;

	b->me = me;
	b->buf = o->max_size < 8 ? 8 : o->max_size;
	b->yield_every =
	    getenv("COHORT_BENCH_YIELD") ? (uint32_t)atoi(getenv("COHORT_BENCH_YIELD")) : 0;
	da.max_msg_size = (uint32_t)b->buf;
	ret = coh_fabric_open(&fa, &b->fab);
	if (ret)
		return ret;
	if ((ret = coh_cq_new(b->fab, 16, &b->ctl_cq)) || (ret = coh_cq_new(b->fab, 1024, &b->cq)))
		return ret;
	ca.send_cq = ca.recv_cq = b->ctl_cq;
	da.send_cq = da.recv_cq = b->cq;
	if ((ret = coh_mr_new(b->fab, 512, COH_ACCESS_LOCAL_WRITE, &b->ctl_mr)) ||
	    (ret = coh_mr_new(b->fab, b->buf,
			      COH_ACCESS_LOCAL_WRITE | COH_ACCESS_REMOTE_WRITE |
				  COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_ATOMIC,
			      &b->in)) ||
	    (ret = coh_mr_new(b->fab, b->buf, COH_ACCESS_LOCAL_WRITE, &b->out)))
		return ret;
	if ((ret = coh_ep_new(b->fab, &ca, &b->ctl)) || (ret = coh_ep_new(b->fab, &da, &b->ep)))
		return ret;
	/* Receives for the send tests, posted before anyone can send. */
	for (i = 0; i < 256; i++) {
		ret = coh_ep_post_recv(b->ep, b->in, 0, b->buf, 0);
		if (ret)
			return ret;
	}
	ret = coh_mr_export(b->in, &mine);
	if (ret)
		return ret;
	memcpy(coh_mr_addr(b->ctl_mr), &mine, sizeof(mine));
	ret = coh_ep_post_recv(b->ctl, b->ctl_mr, 256, sizeof(theirs), 0);
	if (!ret)
		ret = coh_ep_send_sync(b->ctl, b->ctl_mr, 0, sizeof(mine));
	if (ret)
		return ret;
	do {
		ret = coh_cq_wait(b->ctl_cq, &wc, 1, 10000);
	} while (ret == 1 && wc.opcode != COH_WC_RECV);
	if (ret < 0)
		return ret;
	memcpy(&theirs, (uint8_t *)coh_mr_addr(b->ctl_mr) + 256, sizeof(theirs));
	return coh_rmr_import(b->ep, &theirs, &b->peer_in);
}

static void teardown(struct bf *b)
{
	coh_rmr_delete(&b->peer_in);
	coh_ep_delete(&b->ep);
	coh_ep_delete(&b->ctl);
	coh_mr_delete(&b->out);
	coh_mr_delete(&b->in);
	coh_mr_delete(&b->ctl_mr);
	coh_cq_delete(&b->cq);
	coh_cq_delete(&b->ctl_cq);
	coh_fabric_close(&b->fab);
}

static int client(struct bf *b)
{
	static const struct {
		enum bf_op op;
		const char *name;
		bool sized;
	} ops[] = {
		{ BF_WRITE, "write", true }, { BF_READ, "read", true }, { BF_CAS, "cas", false },
		{ BF_FAA, "faa", false },    { BF_SEND, "send", true },
	};
	const struct bench_opts *o = b->o;
	uint64_t *ns;
	size_t i, size;
	int ret = 0;

	ns = calloc(o->iters + o->warmup + 1, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]) && !ret; i++) {
		if (!bench_op_selected(o, ops[i].name))
			continue;
		if (!ops[i].sized) {
			ret = measure(b, ops[i].op, ops[i].name, 8, ns);
			continue;
		}
		for (size = o->min_size < 8 ? 8 : o->min_size; size <= o->max_size && !ret;
		     size *= 2)
			ret = measure(b, ops[i].op, ops[i].name, size, ns);
	}
	free(ns);
	if (!ret)
		ret = phase(b, BF_QUIT, 0, 0, 0);
	return ret;
}

/* Baselines: the host's own floor, measured in this run. */

static void baseline_memcpy(const struct bench_opts *o)
{
	enum {
		BATCH = 64
	};
	uint32_t n = o->iters, i, j;
	uint8_t *src, *dst;
	uint64_t *ns;
	size_t size;

	src = malloc(o->max_size);
	dst = malloc(o->max_size);
	ns = calloc(n, sizeof(*ns));
	if (!src || !dst || !ns)
		goto out;
	memset(src, 1, o->max_size);
	memset(dst, 2, o->max_size);
	for (size = o->min_size < 8 ? 8 : o->min_size; size <= o->max_size; size *= 2) {
		struct bench_row row;

		for (i = 0; i < n; i++) {
			uint64_t t0 = bench_now_ns();

			/* One memcpy is shorter than the clock's resolution: time a batch. */
			for (j = 0; j < BATCH; j++) {
				memcpy(dst, src, size);
				__asm__ __volatile__("" : : "r"(dst) : "memory");
			}
			ns[i] = (bench_now_ns() - t0) / BATCH;
		}
		row_init(&row, "memcpy", "host", size);
		bench_stats(ns, n, &row);
		bench_print_row(&row, o->csv);
	}
out:
	free(ns);
	free(dst);
	free(src);
}

static void baseline_pingpong(const struct bench_opts *o)
{
	struct line {
		_Alignas(64) _Atomic uint64_t v;
	} * l;
	uint32_t n = o->iters + o->warmup, i;
	struct bench_row row;
	uint64_t *ns;
	pid_t pid;

	l = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ns = calloc(n, sizeof(*ns));
	if (l == MAP_FAILED || !ns)
		goto out;
	atomic_store(&l[0].v, 0);
	atomic_store(&l[1].v, 0);
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		uint64_t start = bench_now_ns();

		alarm(60);
		for (i = 1; i <= n; i++) {
			while (atomic_load_explicit(&l[0].v, memory_order_acquire) != i) {
				if (bench_now_ns() - start > SPIN_LIMIT_NS * 6)
					_exit(1);
			}
			atomic_store_explicit(&l[1].v, i, memory_order_release);
		}
		_exit(0);
	}
	for (i = 1; i <= n; i++) {
		uint64_t t0 = bench_now_ns(), spins = 0;

		atomic_store_explicit(&l[0].v, i, memory_order_release);
		while (atomic_load_explicit(&l[1].v, memory_order_acquire) != i) {
			if (++spins > (1ull << 34))
				break;
		}
		ns[i - 1] = (bench_now_ns() - t0) / 2;
	}
	waitpid(pid, NULL, 0);
	row_init(&row, "pingpong", "host", 64);
	bench_stats(ns + o->warmup, o->iters, &row);
	bench_print_row(&row, o->csv);
out:
	free(ns);
	if (l != MAP_FAILED)
		munmap(l, 4096);
}

int bench_fabric(const struct bench_opts *o)
{
	char dir[] = "/dev/shm/cohort-bench-XXXXXX";
	const char *cluster = o->cluster;
	struct bf b = { .o = o };
	pid_t server = -1;
	int ret, st;

	if (o->max_size < 8 || o->min_size > o->max_size) {
		fprintf(stderr, "cohort-bench fabric: sizes must be at least 8 bytes\n");
		return -EINVAL;
	}
	if (o->node > 1) {
		fprintf(stderr, "cohort-bench fabric: --node is 0 (measures) or 1 (serves)\n");
		return -EINVAL;
	}
	if (!cluster) {
		if (strcmp(o->provider, "shm")) {
			fprintf(stderr, "cohort-bench fabric: --cluster is required for %s\n",
				o->provider);
			return -EINVAL;
		}
		if (!mkdtemp(dir))
			return -errno;
		cluster = dir;
	}
	if (o->node == 1) {
		ret = setup(&b, 1, cluster);
		if (!ret)
			ret = serve(&b);
		teardown(&b);
		return ret;
	}
	bench_print_header(o->csv);
	if (o->node < 0) {
		if (bench_op_selected(o, "memcpy"))
			baseline_memcpy(o);
		if (bench_op_selected(o, "pingpong"))
			baseline_pingpong(o);
		fflush(stdout);
		server = fork();
		if (server < 0)
			return -errno;
		if (server == 0) {
			struct bf sb = { .o = o };

			alarm(3600);
			ret = setup(&sb, 1, cluster);
			if (!ret)
				ret = serve(&sb);
			if (ret)
				fprintf(stderr, "cohort-bench: server: %s\n", coh_strerror(ret));
			teardown(&sb);
			_exit(ret ? 1 : 0);
		}
	}
	ret = setup(&b, 0, cluster);
	if (!ret)
		ret = client(&b);
	if (ret)
		fprintf(stderr, "cohort-bench fabric: %s\n", coh_strerror(ret));
	teardown(&b);
	if (server > 0) {
		if (ret)
			kill(server, SIGKILL);
		if (waitpid(server, &st, 0) == server && (!WIFEXITED(st) || WEXITSTATUS(st)))
			ret = ret ? ret : -EIO;
	}
	if (cluster == dir)
		bench_remove_tree(dir);
	return ret;
}
