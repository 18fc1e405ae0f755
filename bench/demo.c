/*
 * demo.c - cohort-demo: Cohort's engine doing its job on one host. A cluster of 3 (up to 5) node
 * processes over the shm provider shares a RAID-5 volume on 3 element files; each node runs a
 * mix of 70% reads (anywhere) and 30% writes (half to a half of the volume every node writes,
 * half to stripes of its own) of 4 KiB blocks with content that identifies the write, and every
 * write is acknowledged only once it is in the log of k = 1 peer (--replicas). Half way through,
 * the parent SIGKILLs node 1. The survivors' operations wait for the view change and go on; one
 * survivor replays node 1's log. At the end every survivor destages, reads every block back, and
 * the parent checks each block against the history of acknowledged writes, including those of
 * the dead node. Then the second life (unless --no-restart): the parent SIGKILLs the survivors
 * too, with acknowledged writes still in their caches and logs (a whole-cluster crash); starts
 * them again on the same element files and log directory, where they recover every acknowledged
 * write the logs hold before serving; then starts node 1 again, which rejoins the cluster. Every
 * node runs a shorter mix, destages, reads every block back, and the parent checks each block
 * against the writes of both lives; one node scrubs the parity.
 *
 * What counts as correct for a block: the value of a write w such that no acknowledged write to
 * that block began after w was acknowledged (a write not acknowledged, like the one node 1 was
 * doing when it died, never ends, so it may or may not be there). The initial zero block is
 * correct only if no write to the block was acknowledged. Reads during the run are checked for
 * torn or foreign content. What the demo does not check: the linearizability of the reads
 * during the run (tests/takeover.c does, on smaller histories).
 *
 * The parent shows progress from a shared area the nodes update; it never touches the cluster.
 * Every wait is bounded, every child has an alarm, and the cluster directory is removed at the
 * end. Exit status: 0 when everything checked out, 1 when something did not (said why), 2 for
 * bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/node.h"

#define BS 4096u
#define MAXN 5u
#define VICTIM 1u
#define NELEMS 3u
#define ELEM_BLOCKS 256u
#define CHUNK_BLOCKS 2u
#define STRIPE_BLOCKS ((NELEMS - 1) * CHUNK_BLOCKS) /* RAID-5: the data chunks of a stripe */
#define OPS_DEFAULT 10000u
#define OPS_MAX 200000u
#define QD_DEFAULT 16u /* operations in flight per node (--qd) */
#define QD_MAX 64u
#define ENGINE_TIMEOUT_MS 3000u
#define PHASE_MS 60000	    /* bound for each phase a node waits for */
#define CHILD_ALARM_S 110u  /* a node that outlives this is stuck */
#define RUN_DEADLINE_S 100u /* the parent gives up on a life */
#define TAIL_WRITES 64u	    /* before the whole-cluster crash, to own stripes: live log */
#define TORN UINT64_MAX	    /* a final read whose content did not match its value */

enum wstate {
	W_INFLIGHT = 0,
	W_ACKED = 1,
	W_FAILED = 2,
};

/* One write as the workload saw it: invoked at @inv, acknowledged at @ack (W_ACKED). */
struct wrec {
	uint64_t block, value, inv, ack;
	uint32_t state;
};

enum phase {
	P_START = 0,
	P_RUN,
	P_WORKLOAD_DONE,
	P_VERIFY,
	P_CRASH_READY, /* life 1 checked, waiting for the whole-cluster kill */
	P_DONE,
};

/* A barrier in shared memory for forked processes, bounded: a dead party fails the others. */
struct dnode {
	_Atomic uint64_t ops;	  /* operations done, for the progress line */
	_Atomic uint32_t epoch;	  /* as last seen by the node */
	_Atomic uint32_t phase;	  /* enum phase */
	_Atomic uint32_t nwrites; /* records in this node's wrec array, the one in flight too */
	uint32_t nreads, nwlat;	  /* latency samples */
	uint64_t io_errors;	  /* operations that returned an error */
	uint64_t bad_reads;	  /* reads with torn or foreign content during the run */
	uint64_t bad_stripes;	  /* the scrub's count (the scrubbing node only) */
	bool scrubbed;
	struct coh_node_stats st; /* at the end */
	char why[256];		  /* the reason this node failed */
};

struct dshared {
	struct bench_sbar start, survivors, all2;
	_Atomic uint32_t go_verify; /* the parent: the kill is done (or there is none) */
	uint32_t killed;
	_Atomic uint32_t life;	      /* 1, or 2 after the whole-cluster crash */
	uint64_t opened_ns[MAXN];     /* life 2: from the start of the process to serving */
	uint64_t reads_done_ns[MAXN]; /* life 1: when each survivor's final reads were done */
	struct dnode node[MAXN];
	/* Then, for each node: ops write records, ops read and ops write latencies; then, for
	 * each node, the value it read back from every block. */
};

struct demo {
	uint32_t nodes, ops, ops2, k, qd;
	uint64_t seed;
	bool kill, restart;
	char dir[64];
	struct dshared *sh;
	size_t sh_len;
	uint64_t nblocks;
	struct wrec *w[MAXN];
	uint64_t *rlat[MAXN], *wlat[MAXN], *final[MAXN], *final2[MAXN];
};

/* sleep_ms - a short sleep between two looks at the shared area. */
static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* rnd - xorshift64: each node's workload from its seed. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * write_block - where a node writes: half of its writes go to the shared half of the volume,
 * where every node writes (contention, lock transfers), half to stripes of its own in the other
 * half, which no other node writes. The own stripes are what makes the check strong: after
 * node 1 dies nobody overwrites its last acknowledged writes there, so each must be found, and
 * those not yet destaged when it died can only come back from its log.
 */
static uint64_t own_block(const struct demo *d, uint32_t id, uint64_t *s);

static uint64_t write_block(const struct demo *d, uint32_t id, uint64_t *s)
{
	uint64_t shared = d->nblocks / STRIPE_BLOCKS / 2;

	if (rnd(s) % 2)
		return rnd(s) % (shared * STRIPE_BLOCKS);
	return own_block(d, id, s);
}

/* own_block - a block of a stripe only node @id writes. */
static uint64_t own_block(const struct demo *d, uint32_t id, uint64_t *s)
{
	uint64_t shared = d->nblocks / STRIPE_BLOCKS / 2, own, stripe;

	/* Own stripes: shared + id, shared + id + nodes, ... below the end of the volume. */
	own = (d->nblocks / STRIPE_BLOCKS - shared - id + d->nodes - 1) / d->nodes;
	stripe = shared + id + (rnd(s) % own) * d->nodes;
	return stripe * STRIPE_BLOCKS + rnd(s) % STRIPE_BLOCKS;
}

/* A value names its writer and the operation: node << 32 | (index + 1); never 0. */
static bool plausible(const struct demo *d, uint64_t v)
{
	return !v ||
	       ((v >> 32) < d->nodes && (v & 0xffffffffu) && (v & 0xffffffffu) <= d->ops + d->ops2);
}

struct child {
	struct demo *d;
	struct dnode *me;
	uint32_t id;
	struct coh_fabric *fab;
	struct coh_node *n;
	/* the operations in flight (workload) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t free; /* slots of @ops not in flight */
	int refused;   /* -EROFS seen by a callback */
	struct dop *ops;
};

#define FAIL(c, ...)                                                                               \
	do {                                                                                       \
		snprintf((c)->me->why, sizeof((c)->me->why), __VA_ARGS__);                         \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

/* note_epoch - publish this node's epoch for the progress line. */
static void note_epoch(struct child *c)
{
	struct coh_node_stats st;

	if (!coh_node_stats(c->n, &st))
		atomic_store(&c->me->epoch, st.epoch);
}

/* One operation of the workload in flight (up to --qd of them per node). */
struct dop {
	struct coh_io io;
	struct child *c;
	struct wrec *rec; /* a write's record; NULL for a read */
	uint64_t block, t0;
	uint8_t buf[BS];
};

/* dop_done - an operation's completion, on the node's engine thread: the write's record (the
 * acknowledgement time last), or the read's check, then the slot back. */
static void dop_done(struct coh_io *io, int status, void *arg)
{
	struct dop *o = arg;
	struct child *c = o->c;
	struct demo *d = c->d;
	uint64_t t1 = bench_now_ns(), v;

	(void)io;
	if (status) {
		c->me->io_errors++;
		fprintf(stderr, "cohort-demo: node %u: %s of block %llu: %s\n", c->id,
			o->rec ? "write" : "read", (unsigned long long)o->block,
			coh_strerror(status));
		if (o->rec)
			o->rec->state = W_FAILED;
		if (status == -EROFS && !c->refused)
			c->refused = status;
	} else if (o->rec) {
		o->rec->ack = t1;
		atomic_thread_fence(memory_order_release);
		o->rec->state = W_ACKED;
		d->wlat[c->id][c->me->nwlat++] = t1 - o->t0;
	} else {
		d->rlat[c->id][c->me->nreads++] = t1 - o->t0;
		if (bench_block_value(o->buf, BS, &v) || !plausible(d, v)) {
			c->me->bad_reads++;
			fprintf(stderr,
				"cohort-demo: node %u: block %llu read torn or foreign (value "
				"%#llx)\n",
				c->id, (unsigned long long)o->block, (unsigned long long)v);
		}
	}
	pthread_mutex_lock(&c->lock);
	c->free |= 1ull << (o - c->ops);
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* dop_slot - a free slot (with @all: wait until every one is free), bounded by PHASE_MS;
 * -1 when none came. */
static int dop_slot(struct child *c, bool all)
{
	uint64_t mask = c->d->qd >= 64 ? ~0ull : (1ull << c->d->qd) - 1;
	uint64_t until = bench_now_ns() + (uint64_t)PHASE_MS * 1000000ull;
	int slot = -1;

	pthread_mutex_lock(&c->lock);
	while (!(all ? (c->free & mask) == mask : (c->free & mask) != 0) &&
	       bench_now_ns() < until) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
	}
	if (all ? (c->free & mask) == mask : (c->free & mask) != 0) {
		slot = __builtin_ctzll(c->free & mask);
		if (!all)
			c->free &= ~(1ull << slot);
	}
	pthread_mutex_unlock(&c->lock);
	return slot;
}

/* workload - the node's share of the mix (life 1: @d->ops operations; life 2: @d->ops2 more),
 * submitted with up to --qd in flight; every write recorded before it is submitted. */
static int workload(struct child *c, uint32_t life)
{
	struct demo *d = c->d;
	uint64_t s = (d->seed + life) * 0x9e3779b97f4a7c15ull ^ (c->id + 1) * 0xbf58476d1ce4e5b9ull;
	struct wrec *w = d->w[c->id];
	uint32_t i, from = life == 1 ? 0 : d->ops + TAIL_WRITES,
		    to = life == 1 ? d->ops : d->ops + d->ops2;
	int ret = 0, r;

	if (!s)
		s = 1;
	for (i = from; i < to && !c->refused; i++) {
		uint64_t b = rnd(&s) % d->nblocks, v;
		int slot = dop_slot(c, false);
		struct dop *o;

		if (slot < 0)
			FAIL(c, "no operation completed in %u ms", PHASE_MS);
		o = &c->ops[slot];
		o->c = c;
		o->rec = NULL;
		if (rnd(&s) % 10 < 3) {
			struct wrec *rec = &w[atomic_load(&c->me->nwrites)];

			b = write_block(d, c->id, &s);
			v = (uint64_t)c->id << 32 | (i + 1);
			bench_fill_block(o->buf, BS, v);
			rec->block = b;
			rec->value = v;
			rec->state = W_INFLIGHT;
			rec->inv = bench_now_ns();
			o->rec = rec;
			/* Published before the write is submitted, so that a write cut short by a
			 * SIGKILL is still seen (as in flight). */
			atomic_fetch_add(&c->me->nwrites, 1);
		}
		o->block = b;
		o->io = (struct coh_io){ .io_size = sizeof(o->io),
					 .type = o->rec ? COH_IO_WRITE : COH_IO_READ,
					 .lba = b,
					 .nblocks = 1,
					 .buf = o->buf,
					 .cb = dop_done,
					 .cb_arg = o };
		o->t0 = bench_now_ns();
		r = coh_node_submit(c->n, &o->io);
		if (r) /* not accepted, so no callback: it failed as a refused operation */
			dop_done(&o->io, r, o);
		atomic_store(&c->me->ops, i + 1);
		/* The epoch for the progress line: cheap, but not every operation's business. */
		if (i % 64 == 0)
			note_epoch(c);
	}
	if (dop_slot(c, true) < 0)
		FAIL(c, "operations still in flight after %u ms", PHASE_MS);
	if (c->refused)
		FAIL(c, "an operation was refused: %s", coh_strerror(c->refused));
out:
	return ret;
}

/* finish - after the workload: the new view, destage, read everything back, scrub. */
static int finish(struct child *c)
{
	struct demo *d = c->d;
	struct dshared *sh = d->sh;
	uint64_t deadline = bench_now_ns() + (uint64_t)PHASE_MS * 1000000ull, b, v;
	uint8_t buf[BS];
	int ret = 0, r;

	atomic_store(&c->me->phase, P_WORKLOAD_DONE);
	while (!atomic_load(&sh->go_verify)) {
		if (bench_now_ns() >= deadline)
			FAIL(c, "the parent never said to go on");
		sleep_ms(2);
	}
	if (sh->killed) {
		r = coh_node_wait_epoch(c->n, 2, PHASE_MS);
		if (r)
			FAIL(c, "no new epoch after node %u died: %s", VICTIM, coh_strerror(r));
	}
	note_epoch(c);
	atomic_store(&c->me->phase, P_VERIFY);
	if (bench_sbar_wait(&sh->survivors, PHASE_MS))
		FAIL(c, "barrier after the workload timed out");
	/* With a second life to come, the survivors keep what they hold dirty: the whole-cluster
	 * crash must find acknowledged writes that only the logs have. */
	if (!d->restart) {
		r = coh_node_flush(c->n);
		if (r)
			FAIL(c, "flush: %s", coh_strerror(r));
	}
	if (bench_sbar_wait(&sh->survivors, PHASE_MS))
		FAIL(c, "barrier after the flush timed out");
	for (b = 0; b < d->nblocks; b++) {
		r = coh_node_read(c->n, b, 1, buf);
		if (r)
			FAIL(c, "final read of block %llu: %s", (unsigned long long)b,
			     coh_strerror(r));
		d->final[c->id][b] = bench_block_value(buf, BS, &v) ? TORN : v;
	}
	/* Before the barrier: every write after it began after every survivor's reads. */
	sh->reads_done_ns[c->id] = bench_now_ns();
	if (bench_sbar_wait(&sh->survivors, PHASE_MS))
		FAIL(c, "barrier after the reads timed out");
	if (d->restart) {
		/* Writes to stripes of its own that no one reads now, so that they stay in the
		 * cache and the log: the crash must find acknowledged writes only a log has. */
		uint64_t s = d->seed * 31 + c->id + 1;
		uint32_t j;

		for (j = 0; j < TAIL_WRITES; j++) {
			struct wrec *rec = &d->w[c->id][atomic_load(&c->me->nwrites)];

			rec->block = own_block(d, c->id, &s);
			rec->value = (uint64_t)c->id << 32 | (d->ops + j + 1);
			rec->state = W_INFLIGHT;
			rec->inv = bench_now_ns();
			atomic_fetch_add(&c->me->nwrites, 1);
			bench_fill_block(buf, BS, rec->value);
			r = coh_node_write(c->n, rec->block, 1, buf);
			if (r)
				FAIL(c, "write of block %llu: %s", (unsigned long long)rec->block,
				     coh_strerror(r));
			rec->ack = bench_now_ns();
			rec->state = W_ACKED;
		}
	}
	r = coh_node_stats(c->n, &c->me->st);
	if (r)
		FAIL(c, "stats: %s", coh_strerror(r));
	if (d->restart) {
		/* Checked; now the parent kills the whole cluster. Bounded. */
		atomic_store(&c->me->phase, P_CRASH_READY);
		deadline = bench_now_ns() + (uint64_t)PHASE_MS * 1000000ull;
		while (bench_now_ns() < deadline)
			sleep_ms(10);
		FAIL(c, "the parent never killed the cluster");
	}
	/* The lowest survivor scrubs, with every write destaged and none in flight. */
	if (c->id == 0) {
		r = coh_node_check(c->n, &c->me->bad_stripes);
		if (r)
			FAIL(c, "parity scrub: %s", coh_strerror(r));
		c->me->scrubbed = true;
	}
	if (bench_sbar_wait(&sh->survivors, PHASE_MS))
		FAIL(c, "barrier before close timed out");
out:
	return ret;
}

/* finish2 - the second life's end: every node destages, reads every block back; node 0 scrubs. */
static int finish2(struct child *c)
{
	struct demo *d = c->d;
	struct dshared *sh = d->sh;
	uint8_t buf[BS];
	uint64_t b, v;
	int ret = 0, r;

	atomic_store(&c->me->phase, P_VERIFY);
	if (bench_sbar_wait(&sh->all2, PHASE_MS))
		FAIL(c, "barrier after the second workload timed out");
	if ((r = coh_node_flush(c->n)))
		FAIL(c, "flush: %s", coh_strerror(r));
	if (bench_sbar_wait(&sh->all2, PHASE_MS))
		FAIL(c, "barrier after the flush timed out");
	for (b = 0; b < d->nblocks; b++) {
		if ((r = coh_node_read(c->n, b, 1, buf)))
			FAIL(c, "final read of block %llu: %s", (unsigned long long)b,
			     coh_strerror(r));
		d->final2[c->id][b] = bench_block_value(buf, BS, &v) ? TORN : v;
	}
	if (bench_sbar_wait(&sh->all2, PHASE_MS))
		FAIL(c, "barrier after the reads timed out");
	if ((r = coh_node_stats(c->n, &c->me->st)))
		FAIL(c, "stats: %s", coh_strerror(r));
	if (c->id == 0) {
		if ((r = coh_node_check(c->n, &c->me->bad_stripes)))
			FAIL(c, "parity scrub: %s", coh_strerror(r));
		c->me->scrubbed = true;
	}
	if (bench_sbar_wait(&sh->all2, PHASE_MS))
		FAIL(c, "barrier before close timed out");
out:
	return ret;
}

/* child_main - one node process: open, run the workload, check, close. Returns the exit code. */
static int child_main(struct demo *d, uint32_t id, uint32_t life)
{
	struct child c = { .d = d, .me = &d->sh->node[id], .id = id };
	struct coh_fabric_attr fa = { .provider = "shm", .node_id = id, .cluster = d->dir };
	struct coh_node_attr na = {
		.nodes = d->nodes,
		.raid = { .level = COH_RAID5, .nelems = NELEMS, .chunk_blocks = CHUNK_BLOCKS },
		.elem_blocks = ELEM_BLOCKS,
		.replicas = d->k ? (int)d->k : COH_NODE_REPLICAS_NONE,
		.timeout_ms = ENGINE_TIMEOUT_MS,
		.open_timeout_ms = PHASE_MS,
		.queue_depth = QD_MAX
	};
	char paths[NELEMS][128], logs[128];
	uint64_t t0 = bench_now_ns();
	uint32_t i;
	int ret = 0, r;

	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	c.free = ~0ull;
	c.ops = calloc(QD_MAX, sizeof(*c.ops));
	if (!c.ops) {
		snprintf(c.me->why, sizeof(c.me->why), "out of memory");
		return 1;
	}

	/* The logs in files of their own, kept for the second life (on tmpfs here: they outlive
	 * the processes, which is what this demo kills). */
	snprintf(logs, sizeof(logs), "%s/logs", d->dir);
	na.log_dir = logs;

	for (i = 0; i < NELEMS; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", d->dir, i);
		na.elem_paths[i] = paths[i];
	}
	r = coh_fabric_open(&fa, &c.fab);
	if (r)
		FAIL(&c, "fabric open: %s", coh_strerror(r));
	na.fab = c.fab;
	r = coh_node_open(&na, &c.n);
	if (r)
		FAIL(&c, "node open: %s", coh_strerror(r));
	if (coh_node_nblocks(c.n) != d->nblocks)
		FAIL(&c, "volume of %llu blocks, %llu expected",
		     (unsigned long long)coh_node_nblocks(c.n), (unsigned long long)d->nblocks);
	note_epoch(&c);
	if (life == 2) {
		d->sh->opened_ns[id] = bench_now_ns() - t0;
		if ((r = coh_node_stats(c.n, &c.me->st)))
			FAIL(&c, "stats: %s", coh_strerror(r));
		atomic_store(&c.me->phase, P_RUN);
		if (bench_sbar_wait(&d->sh->all2, PHASE_MS))
			FAIL(&c, "start barrier of the second life timed out");
		ret = workload(&c, 2);
		if (!ret)
			ret = finish2(&c);
		goto out;
	}
	if (bench_sbar_wait(&d->sh->start, PHASE_MS))
		FAIL(&c, "start barrier timed out");
	atomic_store(&c.me->phase, P_RUN);
	ret = workload(&c, 1);
	if (!ret)
		ret = finish(&c);
out:
	r = coh_node_close(&c.n);
	if (r && !ret)
		FAIL(&c, "close: %s", coh_strerror(r));
	coh_fabric_close(&c.fab);
	free(c.ops); /* after the close: a callback may run until then */
	c.ops = NULL;
	atomic_store(&c.me->phase, P_DONE);
	return ret;
}

/* The parent's side. */

/* setup - the shared area: counters, histories, latencies and what each node reads back. */
static int setup(struct demo *d)
{
	size_t per = (size_t)(d->ops + d->ops2) * (sizeof(struct wrec) + 2 * sizeof(uint64_t));
	uint8_t *p;
	uint32_t i;

	/* RAID-5: whole stripes of (elements - 1) data chunks. */
	d->nblocks = (uint64_t)ELEM_BLOCKS / CHUNK_BLOCKS * (NELEMS - 1) * CHUNK_BLOCKS;
	d->sh_len = sizeof(*d->sh) + d->nodes * (per + 2 * d->nblocks * sizeof(uint64_t));
	d->sh = mmap(NULL, d->sh_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (d->sh == MAP_FAILED)
		return -errno;
	p = (uint8_t *)(d->sh + 1);
	for (i = 0; i < d->nodes; i++) {
		d->w[i] = (struct wrec *)p;
		p += (size_t)(d->ops + d->ops2) * sizeof(struct wrec);
		d->rlat[i] = (uint64_t *)p;
		p += (size_t)(d->ops + d->ops2) * sizeof(uint64_t);
		d->wlat[i] = (uint64_t *)p;
		p += (size_t)(d->ops + d->ops2) * sizeof(uint64_t);
	}
	for (i = 0; i < d->nodes; i++) {
		d->final[i] = (uint64_t *)p;
		p += d->nblocks * sizeof(uint64_t);
		d->final2[i] = (uint64_t *)p;
		p += d->nblocks * sizeof(uint64_t);
	}
	bench_sbar_init(&d->sh->start, d->nodes);
	bench_sbar_init(&d->sh->all2, d->nodes);
	atomic_store(&d->sh->life, 1);
	bench_sbar_init(&d->sh->survivors, d->kill ? d->nodes - 1 : d->nodes);
	return 0;
}

struct progress {
	bool tty;
	uint64_t last_ns;
	uint32_t epoch[MAXN];
	int width;
};

/* show - the progress line: per node, operations done and epoch; one line, redrawn in place on
 * a terminal, a line every two seconds otherwise. */
static void show(struct demo *d, struct progress *pr, const bool *dead, bool force)
{
	char line[256];
	uint64_t now = bench_now_ns();
	int len = 0;
	uint32_t i;

	if (!force && now - pr->last_ns < (pr->tty ? 100000000ull : 2000000000ull))
		return;
	pr->last_ns = now;
	for (i = 0; i < d->nodes && len < (int)sizeof(line) - 48; i++) {
		struct dnode *n = &d->sh->node[i];

		if (atomic_load(&n->phase) == P_START && !dead[i])
			len += snprintf(line + len, sizeof(line) - (size_t)len,
					"%snode %u: opening", i ? "  " : "", i);
		else
			len += snprintf(line + len, sizeof(line) - (size_t)len,
					"%snode %u: %6llu/%u e%u%s", i ? "  " : "", i,
					(unsigned long long)atomic_load(&n->ops),
					atomic_load(&d->sh->life) == 2 ? d->ops + d->ops2 : d->ops,
					atomic_load(&n->epoch), dead[i] ? " KILLED" : "");
	}
	if (pr->tty) {
		printf("\r%-*s", pr->width, line);
		pr->width = len;
	} else {
		printf("%s\n", line);
	}
	fflush(stdout);
}

/* event - a line of its own, above the progress line. */
static void event(struct progress *pr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(struct progress *pr, const char *fmt, ...)
{
	va_list ap;

	if (pr->tty)
		printf("\r%-*s\r", pr->width, "");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	pr->last_ns = 0;
}

static volatile sig_atomic_t interrupted;

/* on_signal - SIGINT/SIGTERM in the parent: stop the run, still cleaning up. */
static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* run - fork the nodes, watch them, kill the victim half way. Returns 0 when every node did
 * what it should. */
static int run(struct demo *d)
{
	struct progress pr = { .tty = isatty(STDOUT_FILENO) };
	uint64_t t0 = bench_now_ns(), deadline = t0 + RUN_DEADLINE_S * 1000000000ull;
	pid_t pids[MAXN];
	bool reaped[MAXN] = { false }, dead[MAXN] = { false };
	uint32_t i, left = d->nodes;
	double kill_at_s;
	int failed = 0, st;

	fflush(NULL);
	for (i = 0; i < d->nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			alarm(CHILD_ALARM_S);
			_exit(child_main(d, i, 1));
		}
		if (pids[i] < 0) {
			fprintf(stderr, "cohort-demo: fork: %s\n", strerror(errno));
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			return -1;
		}
	}
	if (!d->kill)
		atomic_store(&d->sh->go_verify, 1);
	while (left) {
		if (interrupted) {
			event(&pr, "cohort-demo: interrupted");
			failed = 1;
			break;
		}
		if (bench_now_ns() >= deadline) {
			event(&pr, "cohort-demo: the run did not finish in %u s: stopping it",
			      RUN_DEADLINE_S);
			failed = 1;
			break;
		}
		if (d->kill && !d->sh->killed &&
		    atomic_load(&d->sh->node[VICTIM].ops) >= d->ops / 2) {
			kill(pids[VICTIM], SIGKILL);
			kill_at_s = (bench_now_ns() - t0) / 1e9;
			waitpid(pids[VICTIM], &st, 0);
			reaped[VICTIM] = dead[VICTIM] = true;
			left--;
			d->sh->killed = 1;
			atomic_store(&d->sh->go_verify, 1);
			event(&pr, "  %.2f s: node %u SIGKILLed after %llu of its %u operations",
			      kill_at_s, VICTIM,
			      (unsigned long long)atomic_load(&d->sh->node[VICTIM].ops), d->ops);
		}
		for (i = 0; i < d->nodes; i++) {
			uint32_t e = atomic_load(&d->sh->node[i].epoch);
			pid_t r;

			if (!dead[i] && e != pr.epoch[i] && pr.epoch[i]) {
				event(&pr, "  %.2f s: node %u is in epoch %u",
				      (bench_now_ns() - t0) / 1e9, i, e);
			}
			pr.epoch[i] = e;
			if (reaped[i])
				continue;
			r = waitpid(pids[i], &st, WNOHANG);
			if (r != pids[i])
				continue;
			reaped[i] = true;
			left--;
			if (!WIFEXITED(st) || WEXITSTATUS(st)) {
				event(&pr, "cohort-demo: node %u %s %d: %s", i,
				      WIFSIGNALED(st) ? "died of signal" : "exited",
				      WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
				      d->sh->node[i].why[0] ? d->sh->node[i].why : "(no reason)");
				failed = 1;
			}
		}
		if (failed)
			break;
		if (d->restart && atomic_load(&d->sh->go_verify)) {
			uint32_t ready = 0;

			for (i = 0; i < d->nodes; i++)
				ready +=
				    dead[i] || atomic_load(&d->sh->node[i].phase) == P_CRASH_READY;
			if (ready == d->nodes)
				break; /* life 1 checked: the whole-cluster crash comes next */
		}
		show(d, &pr, dead, false);
		sleep_ms(5);
	}
	show(d, &pr, dead, true);
	if (pr.tty)
		printf("\n");
	for (i = 0; i < d->nodes; i++) {
		if (reaped[i])
			continue;
		kill(pids[i], SIGKILL);
		waitpid(pids[i], &st, 0);
		if (d->sh->node[i].why[0])
			fprintf(stderr, "cohort-demo: node %u: %s\n", i, d->sh->node[i].why);
	}
	if (!failed && d->restart)
		printf("  %.2f s: the whole cluster SIGKILLed\n", (bench_now_ns() - t0) / 1e9);
	if (d->kill && !d->sh->killed) {
		fprintf(stderr, "cohort-demo: node %u never reached half its operations\n", VICTIM);
		failed = 1;
	}
	return failed ? -1 : 0;
}

/* start2 - fork node @id of the second life. */
static pid_t start2(struct demo *d, uint32_t id)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		alarm(CHILD_ALARM_S);
		_exit(child_main(d, id, 2));
	}
	return pid;
}

/*
 * run2 - the second life: the nodes that were up at the crash start again on the same files (and
 * recover), then node 1, killed first, starts again and rejoins; all of them run @d->ops2 more
 * operations and the end checks. Returns 0 when every node did what it should.
 */
static int run2(struct demo *d)
{
	struct progress pr = { .tty = isatty(STDOUT_FILENO) };
	uint64_t t0 = bench_now_ns(), deadline = t0 + RUN_DEADLINE_S * 1000000000ull;
	pid_t pids[MAXN] = { 0 };
	bool reaped[MAXN] = { false }, none[MAXN] = { false }, rejoined = false;
	uint32_t i, left = 0, late = d->kill ? VICTIM : MAXN;
	int failed = 0, st;

	atomic_store(&d->sh->life, 2);
	for (i = 0; i < d->nodes; i++) {
		struct dnode *n = &d->sh->node[i];

		atomic_store(&n->phase, P_START);
		n->why[0] = '\0';
		n->scrubbed = false;
		n->bad_stripes = 0;
		memset(&n->st, 0, sizeof(n->st));
	}
	printf("\nLife 2: %s start again on the same element files and logs\n",
	       d->kill ? "the nodes that were up" : "every node");
	for (i = 0; i < d->nodes; i++) {
		if (i == late)
			continue;
		if ((pids[i] = start2(d, i)) < 0)
			failed = 1;
		else
			left++;
	}
	while (left && !failed) {
		bool opened = true;

		if (interrupted || bench_now_ns() >= deadline) {
			event(&pr, "cohort-demo: %s",
			      interrupted ? "interrupted" : "life 2 timed out");
			failed = 1;
			break;
		}
		for (i = 0; i < d->nodes; i++) {
			if (!pids[i] || reaped[i])
				continue;
			if (atomic_load(&d->sh->node[i].phase) == P_START)
				opened = false;
			if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				reaped[i] = true;
				left--;
				if (!WIFEXITED(st) || WEXITSTATUS(st)) {
					event(&pr, "cohort-demo: node %u %s %d: %s", i,
					      WIFSIGNALED(st) ? "died of signal" : "exited",
					      WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
					      d->sh->node[i].why[0] ? d->sh->node[i].why
								    : "(no reason)");
					failed = 1;
				}
			}
		}
		if (opened && late < MAXN && !pids[late]) {
			uint64_t blocks = 0, ns = 0;
			uint32_t writers = 0;

			for (i = 0; i < d->nodes; i++) {
				const struct coh_node_stats *s = &d->sh->node[i].st;

				if (i == late)
					continue;
				blocks += s->recovered_blocks;
				writers |= s->recovered_writers;
				ns = s->last_recovery_ns > ns ? s->last_recovery_ns : ns;
			}
			event(
			    &pr,
			    "  %.2f s: serving in epoch %u (after a timeout_ms of waiting for node "
			    "%u, without it);\n         the recovery replayed %llu blocks from the "
			    "logs of writers %#x in %.1f ms",
			    (bench_now_ns() - t0) / 1e9, d->sh->node[late == 0 ? 1 : 0].st.epoch,
			    late, (unsigned long long)blocks, writers, ns / 1e6);
			event(&pr, "  %.2f s: node %u, killed first in life 1, starts again",
			      (bench_now_ns() - t0) / 1e9, late);
			if ((pids[late] = start2(d, late)) < 0) {
				failed = 1;
				break;
			}
			left++;
		} else if (late < MAXN && pids[late] && !rejoined &&
			   atomic_load(&d->sh->node[late].phase) != P_START) {
			event(&pr,
			      "  %.2f s: node %u rejoined: serving in epoch %u, %.1f ms after "
			      "it started",
			      (bench_now_ns() - t0) / 1e9, late, d->sh->node[late].st.epoch,
			      d->sh->opened_ns[late] / 1e6);
			rejoined = true;
		}
		show(d, &pr, none, false);
		sleep_ms(5);
	}
	show(d, &pr, none, true);
	if (pr.tty)
		printf("\n");
	for (i = 0; i < d->nodes; i++) {
		if (!pids[i] || pids[i] < 0 || reaped[i])
			continue;
		kill(pids[i], SIGKILL);
		waitpid(pids[i], &st, 0);
		if (d->sh->node[i].why[0])
			fprintf(stderr, "cohort-demo: node %u: %s\n", i, d->sh->node[i].why);
	}
	return failed ? -1 : 0;
}

/* cmp_wrec - qsort() order of write records: by block. */
static int cmp_wrec(const void *a, const void *b)
{
	const struct wrec *x = *(const struct wrec *const *)a, *y = *(const struct wrec *const *)b;

	return x->block < y->block ? -1 : x->block > y->block;
}

/* print_lat - one latency line from @n samples (sorted here). */
static void print_lat(const char *what, uint64_t *s, size_t n)
{
	struct bench_row row = { .samples = 0 };

	bench_stats(s, (uint32_t)n, &row);
	printf("  %-6s %8zu ops   p50 %9.1f us   p99 %9.1f us   p99.9 %9.1f us   max %9.1f us\n",
	       what, n, row.p50 / 1e3, row.p99 / 1e3, row.p999 / 1e3, row.max / 1e3);
}

/*
 * verify - every survivor's final value of every block against the writes to it; fills @vs.
 * A value that should not be there is "lost" when it is that of an older write (or the initial
 * zero block), "corrupt" when it is torn or was never written to that block. Returns 0 or
 * -ENOMEM.
 */
struct vstats {
	uint64_t acked, victim_acked, victim_inflight, victim_final;
	uint64_t lost, corrupt; /* (block, survivor) pairs */
};

static int verify(struct demo *d, struct vstats *vs, uint64_t *const *final, bool skip_victim,
		  uint64_t cutoff)
{
	uint32_t first_survivor = skip_victim && VICTIM == 0 ? 1 : 0, i, k;
	uint64_t total = 0, b, j = 0;
	struct wrec **all;

	memset(vs, 0, sizeof(*vs));
	for (i = 0; i < d->nodes; i++)
		total += atomic_load(&d->sh->node[i].nwrites);
	all = calloc(total ? total : 1, sizeof(*all));
	if (!all)
		return -ENOMEM;
	for (i = 0; i < d->nodes; i++) {
		bool victim = d->kill && i == VICTIM;

		for (k = 0; k < atomic_load(&d->sh->node[i].nwrites); k++) {
			struct wrec *w = &d->w[i][k];

			if (w->inv > cutoff)
				continue; /* after the reads checked here */
			all[j++] = w;
			if (w->state == W_ACKED) {
				vs->acked++;
				vs->victim_acked += victim;
			} else {
				vs->victim_inflight += victim;
			}
		}
	}
	total = j;
	qsort(all, total, sizeof(*all), cmp_wrec);
	j = 0;
	for (b = 0; b < d->nblocks; b++) {
		uint64_t first, n, newest_inv = 0;
		bool any_acked = false;

		first = j;
		while (j < total && all[j]->block == b)
			j++;
		n = j - first;
		for (k = 0; k < n; k++) {
			if (all[first + k]->state == W_ACKED) {
				any_acked = true;
				if (all[first + k]->inv > newest_inv)
					newest_inv = all[first + k]->inv;
			}
		}
		for (i = 0; i < d->nodes; i++) {
			uint64_t v = final[i][b];
			const struct wrec *match = NULL;
			bool ok = !any_acked && v == 0, known = v == 0;

			if (skip_victim && i == VICTIM)
				continue;
			/* Acceptable: a write that no acknowledged write began after the end of;
			 * one never acknowledged has no end. */
			for (k = 0; !ok && v != TORN && k < n; k++) {
				const struct wrec *w = all[first + k];

				if (w->value != v)
					continue;
				known = true;
				ok = w->state != W_ACKED || w->ack >= newest_inv;
				if (ok)
					match = w;
			}
			if (!ok) {
				if (vs->lost + vs->corrupt < 10)
					fprintf(
					    stderr,
					    "cohort-demo: block %llu on node %u holds %s %#llx, "
					    "not the last acknowledged write to it\n",
					    (unsigned long long)b, i,
					    known ? "the older value" : "corrupt content, value",
					    (unsigned long long)v);
				if (known)
					vs->lost++;
				else
					vs->corrupt++;
			}
			/* Data that only the dead node's log could have brought back. */
			if (i == first_survivor && match && match->state == W_ACKED && d->kill &&
			    (match->value >> 32) == VICTIM)
				vs->victim_final++;
		}
	}
	free(all);
	return 0;
}

/* usage - the options. */
static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: cohort-demo [options]\n"
	    "A cluster of node processes on this host (shm provider) over a RAID-5 volume on 3\n"
	    "element files, each write replicated to k peers; each node runs 70%% reads and 30%%\n"
	    "writes of 4 KiB blocks; node 1 is SIGKILLed half way; the survivors take over, and\n"
	    "every block is checked against the acknowledged writes at the end.\n"
	    "options:\n"
	    "  --ops N      operations per node (default %u, at most %u)\n"
	    "  --nodes N    3 to 5 nodes (default 3)\n"
	    "  --seed S     the workload's seed (default 1)\n"
	    "  --no-kill    kill no node\n"
	    "  --no-restart end after the first life (no whole-cluster crash, restart and rejoin)\n"
	    "  --replicas K log copies of each write, 0 to 2 (default 1). With 0, the dead node's\n"
	    "               acknowledged writes not yet destaged are lost, and the check says so.\n"
	    "  --qd D       operations each node keeps in flight (coh_node_submit), 1 to 64\n"
	    "               (default 16)\n"
	    "Exit status 0: every check passed; 1: a check failed (the reason is printed).\n",
	    OPS_DEFAULT, OPS_MAX);
}

/* parse_u64 - a whole decimal (or 0x) number, or -EINVAL. */
static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || end == s || *end ? -EINVAL : 0;
}

/* print_latencies - read and write latency over every node's operations. */
static void print_latencies(const struct demo *d)
{
	uint64_t *lat, nlat;
	uint32_t i;
	int w;

	printf("Latency, all nodes (the view change is in the tail):\n");
	for (w = 0; w < 2; w++) {
		nlat = 0;
		for (i = 0; i < d->nodes; i++)
			nlat += w ? d->sh->node[i].nwlat : d->sh->node[i].nreads;
		lat = malloc((nlat ? nlat : 1) * sizeof(*lat));
		if (!lat)
			return;
		nlat = 0;
		for (i = 0; i < d->nodes; i++) {
			uint32_t n = w ? d->sh->node[i].nwlat : d->sh->node[i].nreads;

			memcpy(lat + nlat, w ? d->wlat[i] : d->rlat[i], n * sizeof(*lat));
			nlat += n;
		}
		print_lat(w ? "write" : "read", lat, nlat);
		free(lat);
	}
}

/* verdict_failed - whether a life's checks failed (a lost or corrupt block, an I/O error, a torn
 * read, parity bad or not checked); if so, print why under @what. */
static bool verdict_failed(const char *what, const char *who, const struct vstats *vs,
			   uint64_t io_errors, uint64_t bad_reads, const struct dnode *scrubber)
{
	if (!vs->lost && !vs->corrupt && !io_errors && !bad_reads && scrubber &&
	    !scrubber->bad_stripes)
		return false;
	printf("%s: FAILED: %llu acknowledged writes, %llu lost, %llu corrupt (block x %s), %llu "
	       "I/O errors, %llu torn reads, %s\n",
	       what, (unsigned long long)vs->acked, (unsigned long long)vs->lost,
	       (unsigned long long)vs->corrupt, who, (unsigned long long)io_errors,
	       (unsigned long long)bad_reads,
	       !scrubber	       ? "parity not checked"
	       : scrubber->bad_stripes ? "PARITY BAD"
				       : "parity OK");
	return true;
}

/* summary - what happened, and the verdict. Returns 0 when every check passed. */
static int summary(struct demo *d, bool run_failed, double t_run)
{
	uint64_t io_errors = 0, bad_reads = 0;
	const struct dnode *scrubber = NULL;
	int winner = -1, failed = run_failed;
	uint32_t i, epoch = 0;
	uint64_t dead_waits = 0;
	struct vstats vs;

	printf("\nOperations per node in %.1f s:", t_run);
	for (i = 0; i < d->nodes; i++) {
		const struct dnode *n = &d->sh->node[i];

		printf("%s node %u: %llu%s", i ? "," : "", i,
		       (unsigned long long)atomic_load(&n->ops),
		       d->kill && i == VICTIM ? " (killed)" : "");
		io_errors += n->io_errors;
		bad_reads += n->bad_reads;
		if (d->kill && i == VICTIM)
			continue;
		if (n->st.takeovers)
			winner = (int)i;
		dead_waits += n->st.dead_waits;
		epoch = n->st.epoch;
		if (n->scrubbed)
			scrubber = n;
	}
	printf("\n");
	print_latencies(d);
	if (d->kill && winner >= 0) {
		const struct coh_node_stats *st = &d->sh->node[winner].st;

		printf("Takeover: node %d replayed node %u's log (%llu blocks, %llu stripes "
		       "repaired) %.2f ms after the failure event;\n"
		       "  the view change committed %.2f ms after it (node %u's resources free "
		       "again); epoch %u\n"
		       "  meanwhile other I/O went on: %llu operations waited for the dead node;\n"
		       "  the view change held node %d's I/O for at most %.3f ms at a time\n",
		       winner, VICTIM, (unsigned long long)st->replayed_blocks,
		       (unsigned long long)st->repaired_stripes, st->last_takeover_ns / 1e6,
		       st->last_view_ns / 1e6, VICTIM, epoch, (unsigned long long)dead_waits,
		       winner, st->last_view_hold_ns / 1e6);
		/* An operation that waits on the dead node is bounded by the engine's timeout;
		 * a view change as long as that means one ran into it. */
		if (st->last_view_ns >= (uint64_t)ENGINE_TIMEOUT_MS * 800000ull)
			printf(
			    "  (about the engine's timeout_ms of %u ms: a survivor's operation that "
			    "waited on the dead node\n   ran until it timed out, and the view "
			    "change waited for it; docs/benchmarks.md, section 5)\n",
			    ENGINE_TIMEOUT_MS);
	} else if (d->kill && !d->k) {
		printf("Takeover: none (k = 0: no log to replay); epoch %u\n", epoch);
	} else if (d->kill && !run_failed) {
		printf("Takeover: no survivor reports one\n");
		failed = 1;
	} else if (!d->kill) {
		printf("Epoch: %u (no failure)\n", epoch);
	}
	if (run_failed) {
		printf("verification: not done, the run failed (see above)\n");
		goto out;
	}
	uint64_t cutoff = d->restart ? 0 : UINT64_MAX;

	for (i = 0; d->restart && i < d->nodes; i++)
		cutoff = d->sh->reads_done_ns[i] > cutoff ? d->sh->reads_done_ns[i] : cutoff;
	if (verify(d, &vs, d->final, d->kill, cutoff)) {
		printf("verification: out of memory\n");
		return 1;
	}
	if (d->kill)
		printf(
		    "Node %u: %llu acknowledged writes, %llu in flight when it died; %llu blocks "
		    "end with its acknowledged data\n",
		    VICTIM, (unsigned long long)vs.victim_acked,
		    (unsigned long long)vs.victim_inflight, (unsigned long long)vs.victim_final);
	if (d->restart && !(vs.lost || vs.corrupt || io_errors || bad_reads)) {
		printf("verification (life 1): %llu acknowledged writes, 0 lost (parity is checked "
		       "at the end of life 2)\n",
		       (unsigned long long)vs.acked);
	} else if (verdict_failed("verification", "survivor", &vs, io_errors, bad_reads,
				  scrubber)) {
		failed = 1;
	} else {
		printf("verification: %llu acknowledged writes, 0 lost, parity OK\n",
		       (unsigned long long)vs.acked);
	}
out:
	if (failed)
		printf("reproduce: cohort-demo --seed %llu --ops %u --nodes %u --replicas %u --qd "
		       "%u%s%s\n",
		       (unsigned long long)d->seed, d->ops, d->nodes, d->k, d->qd,
		       d->kill ? "" : " --no-kill", d->restart ? "" : " --no-restart");
	return failed;
}

/* summary2 - the second life, and the verdict over both. Returns 0 when every check passed. */
static int summary2(struct demo *d, bool run_failed, double t_run)
{
	const struct dnode *scrubber = NULL;
	uint64_t io_errors = 0, bad_reads = 0;
	struct vstats vs;
	uint32_t i;
	int failed = run_failed;

	printf("\nOperations per node in life 2 (%.1f s):", t_run);
	for (i = 0; i < d->nodes; i++) {
		const struct dnode *n = &d->sh->node[i];

		printf("%s node %u: %llu", i ? "," : "", i,
		       (unsigned long long)(atomic_load(&n->ops) - d->ops - TAIL_WRITES));
		io_errors += n->io_errors;
		bad_reads += n->bad_reads;
		if (n->scrubbed)
			scrubber = n;
	}
	printf("\n");
	if (run_failed) {
		printf("verification (both lives): not done, life 2 failed (see above)\n");
		goto out;
	}
	if (verify(d, &vs, d->final2, false, UINT64_MAX)) {
		printf("verification: out of memory\n");
		return 1;
	}
	if (verdict_failed("verification (both lives)", "node", &vs, io_errors, bad_reads,
			   scrubber)) {
		failed = 1;
	} else {
		printf("verification (both lives, every block on every node): %llu acknowledged "
		       "writes, 0 lost, parity OK\n",
		       (unsigned long long)vs.acked);
	}
out:
	if (failed)
		printf("reproduce: cohort-demo --seed %llu --ops %u --nodes %u --replicas %u --qd "
		       "%u%s\n",
		       (unsigned long long)d->seed, d->ops, d->nodes, d->k, d->qd,
		       d->kill ? "" : " --no-kill");
	return failed;
}

/* main - the options, the run and the verdict. */
int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ops", required_argument, NULL, 'o' },
		{ "nodes", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "no-kill", no_argument, NULL, 'k' },
		{ "no-restart", no_argument, NULL, 'R' },
		{ "replicas", required_argument, NULL, 'r' },
		{ "qd", required_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct demo d = { .nodes = 3,
			  .ops = OPS_DEFAULT,
			  .k = 1,
			  .qd = QD_DEFAULT,
			  .seed = 1,
			  .kill = true,
			  .restart = true };
	uint64_t v, t0;
	int c, failed;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (parse_u64(optarg, &v) || v < 10 || v > OPS_MAX)
				goto bad;
			d.ops = (uint32_t)v;
			break;
		case 'n':
			if (parse_u64(optarg, &v) || v < 3 || v > MAXN)
				goto bad;
			d.nodes = (uint32_t)v;
			break;
		case 's':
			if (parse_u64(optarg, &v))
				goto bad;
			d.seed = v;
			break;
		case 'k':
			d.kill = false;
			break;
		case 'R':
			d.restart = false;
			break;
		case 'r':
			if (parse_u64(optarg, &v) || v > 2)
				goto bad;
			d.k = (uint32_t)v;
			break;
		case 'q':
			if (parse_u64(optarg, &v) || !v || v > QD_MAX)
				goto bad;
			d.qd = (uint32_t)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	/* Without logs (k = 0) a whole-cluster crash loses what was not destaged, by design. */
	if (!d.k)
		d.restart = false;
	d.ops2 = d.restart ? (d.ops / 4 > 10 ? d.ops / 4 : 10) + TAIL_WRITES : 0;
	snprintf(d.dir, sizeof(d.dir), "/dev/shm/cohort-demo-XXXXXX");
	if (!mkdtemp(d.dir)) {
		fprintf(stderr, "cohort-demo: %s: %s\n", d.dir, strerror(errno));
		return 1;
	}
	{
		char logs[128];

		snprintf(logs, sizeof(logs), "%s/logs", d.dir);
		if (mkdir(logs, 0700)) {
			fprintf(stderr, "cohort-demo: %s: %s\n", logs, strerror(errno));
			bench_remove_tree(d.dir);
			return 1;
		}
	}
	if (setup(&d)) {
		fprintf(stderr, "cohort-demo: shared area: %s\n", strerror(errno));
		bench_remove_tree(d.dir);
		return 1;
	}
	printf("Cohort demo: %u node processes on this host (shm provider, cluster %s)\n"
	       "  volume: RAID-5 over %u element files of %u blocks, chunk %u blocks: %llu blocks "
	       "of 4 KiB\n"
	       "  each write logged on k = %u peer%s before it is acknowledged%s\n"
	       "  workload: %u operations per node, 70%% reads / 30%% writes, %u in flight per "
	       "node, seed %llu\n"
	       "  %s\n\n",
	       d.nodes, d.dir, NELEMS, ELEM_BLOCKS, CHUNK_BLOCKS, (unsigned long long)d.nblocks,
	       d.k, d.k == 1 ? "" : "s", d.k ? "" : " (none: --replicas 0)", d.ops, d.qd,
	       (unsigned long long)d.seed,
	       d.kill ? "node 1 is SIGKILLed half way through its operations"
		      : "no node is killed (--no-kill)");
	/* Interrupted, the parent still stops the nodes and removes the cluster directory. */
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	t0 = bench_now_ns();
	failed = run(&d);
	failed = summary(&d, failed != 0, (bench_now_ns() - t0) / 1e9);
	if (!failed && d.restart) {
		uint64_t live = 0;
		uint32_t i;

		for (i = 0; i < d.nodes; i++)
			live += d.kill && i == VICTIM ? 0 : d.sh->node[i].st.log_live;
		printf("\nThe whole cluster was SIGKILLed with %llu acknowledged writes not yet "
		       "destaged (live log records)\n",
		       (unsigned long long)live);
		t0 = bench_now_ns();
		failed = run2(&d);
		failed = summary2(&d, failed != 0, (bench_now_ns() - t0) / 1e9);
	}
	bench_remove_tree(d.dir);
	munmap(d.sh, d.sh_len);
	return failed ? 1 : 0;
bad:
	fprintf(stderr, "cohort-demo: bad value '%s'\n", optarg);
	usage(stderr);
	return 2;
}
