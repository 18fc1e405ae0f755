/*
 * races.c - the scenarios of races.h. A small harness forks the node processes after mapping a
 * shared area; each opens its fabric (shm in a fresh cluster directory, or rdma in the VM rig)
 * and its engine node over element files there, with the engine-tier point hook
 * (node_hooks.h) wired to the shared area, so that a scenario can hold a node at a named step
 * until another has reached one, kill it there, or lose one of its control messages. The parent
 * can pause (SIGSTOP) and resume nodes while they run. Every wait is bounded: the hook's holds,
 * the flags, the barriers, and an alarm in every child.
 *
 * What it leaves out: random schedules (tests/takeover.c does those); here every interleaving
 * that matters is forced.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "cohort/node_hooks.h"
#include "conf.h"
#include "races.h"

#define RC_MAXN 5u
#define RC_BS 4096u
#define RC_ELEM_BLOCKS 16u /* RAID-5 over 3 elements, chunk 2: 8 resources of 4 blocks */
#define RC_POINTS (COH_POINT_CTL_SEND + 1)
#define RC_WAIT_MS 30000
#define RC_CHILD_S 60
#define RC_PROBE_CH 250u

enum rc_end {
	RC_EXIT0 = 0, /* the node must finish its script and exit 0 */
	RC_KILLED,    /* the node must end by SIGKILL (its own, or its fence) */
	RC_PARENT,    /* the scenario's parent part reaps and judges it */
};

struct rc_shared {
	struct bench_sbar bar[8];
	/* The hook's rules and what it saw, by node and point. */
	_Atomic uint32_t at[RC_MAXN][RC_POINTS];
	_Atomic uint32_t die[RC_MAXN][RC_POINTS];  /* die the n-th time (n >= 1) */
	_Atomic uint32_t hold[RC_MAXN][RC_POINTS]; /* hold the first time until released */
	_Atomic uint32_t until_node[RC_MAXN][RC_POINTS], until_pt[RC_MAXN][RC_POINTS];
	/* a slow step: the @stall_at-th time (n >= 1) the node takes @stall_ms longer there */
	_Atomic uint32_t stall_at[RC_MAXN][RC_POINTS], stall_ms[RC_MAXN][RC_POINTS];
	_Atomic uint32_t drop_type[RC_MAXN], drop_to[RC_MAXN];
	_Atomic uint32_t flag[16];
	_Atomic uint64_t val[16];
	char why[RC_MAXN][256];
};

struct rc_scenario;

struct rc_child {
	struct rc_shared *sh;
	const struct rc_scenario *sc;
	uint32_t id, nodes;
	const char *dir, *cluster;
	struct coh_fabric *fab;
	struct coh_node *n;
	struct coh_cq *probe_cq;
	struct coh_ep *probe[RC_MAXN];
};

struct rc_scenario {
	const char *name;
	uint32_t nodes, k, fence, timeout_ms;
	enum rc_end end[RC_MAXN];
	int (*node)(struct rc_child *c);
	int (*parent)(struct rc_shared *sh, const pid_t *pids);
	void (*setup)(struct rc_shared *sh);
	/* A second life, when set: every node opened again on the same files (a whole-cluster
	 * restart, no hook rules) once the first life is over; each must exit 0. */
	int (*node2)(struct rc_child *c);
};

#define RFAIL(c, ...)                                                                              \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "%s node %u: %s\n", __func__, (c)->id, (c)->sh->why[(c)->id]);     \
		return 1;                                                                          \
	} while (0)

static void rc_nap(void)
{
	struct timespec t = { 0, 1000000 };

	nanosleep(&t, NULL);
}

/* rc_wait_flag - until flag @i is at least @v, at most RC_WAIT_MS. */
static int rc_wait_flag(struct rc_shared *sh, uint32_t i, uint32_t v)
{
	uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;

	while (atomic_load(&sh->flag[i]) < v) {
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		rc_nap();
	}
	return 0;
}

static int rc_wait_at(struct rc_shared *sh, uint32_t node, uint32_t pt, uint32_t times)
{
	uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;

	while (atomic_load(&sh->at[node][pt]) < times) {
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		rc_nap();
	}
	return 0;
}

/* rc_hook - the point hook: count, then die, hold or drop as the scenario's rules say. */
static int rc_hook(void *arg, uint32_t pt, uint64_t detail)
{
	struct rc_child *c = arg;
	struct rc_shared *sh = c->sh;
	uint64_t until;
	uint32_t n, die;

	if (pt >= RC_POINTS)
		return 0;
	if (pt == COH_POINT_CTL_SEND) {
		uint32_t type = (uint32_t)(detail >> 8), peer = (uint32_t)detail & 0xff;

		if (atomic_load(&sh->drop_type[c->id]) == type &&
		    (atomic_load(&sh->drop_to[c->id]) >> peer & 1))
			return COH_POINT_DROP;
		return 0;
	}
	n = atomic_fetch_add(&sh->at[c->id][pt], 1) + 1;
	die = atomic_load(&sh->die[c->id][pt]);
	/* A hold comes before a death at the same point: a node can be made to die at a step
	 * only once another node has reached one. */
	if (n == 1 && atomic_load(&sh->hold[c->id][pt])) {
		uint32_t on = atomic_load(&sh->until_node[c->id][pt]),
			 op = atomic_load(&sh->until_pt[c->id][pt]),
			 rounds = atomic_load(&sh->at[on][COH_CRASH_VIEW_AGREED]);

		until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;
		while (atomic_load(&sh->hold[c->id][pt]) && bench_now_ns() < until) {
			if (op && atomic_load(&sh->at[on][op]))
				break;
			/* The node waited for started a new round of the view change (a death it
			 * met restarted it): the step waited for will not come in this one, and
			 * holding on would only get this node excluded for its silence. */
			if (op && atomic_load(&sh->at[on][COH_CRASH_VIEW_AGREED]) > rounds)
				break;
			rc_nap();
		}
	}
	if (atomic_load(&sh->stall_at[c->id][pt]) == n) {
		uint32_t ms = atomic_load(&sh->stall_ms[c->id][pt]);
		struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000 };

		/* The fault itself (this node is slow at this step), not a wait for anything. */
		nanosleep(&t, NULL);
	}
	if (die && n >= die)
		kill(getpid(), SIGKILL);
	return 0;
}

/* rc_open - this child's fabric, its probe endpoints (@probes: not when it opens again, a new
 * incarnation the others make no probes for) and its node. */
static int rc_open(struct rc_child *c, const struct rc_scenario *sc, bool probes)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_hooks hooks = { .hooks_size = sizeof(hooks), .point = rc_hook, .arg = c };
	struct coh_node_attr na = { .nodes = sc->nodes,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = RC_ELEM_BLOCKS,
				    .replicas = (int)sc->k,
				    .log_bytes = 64u << 10,
				    .cache_blocks = 64,
				    .timeout_ms = sc->timeout_ms,
				    /* Five nodes on soft-RoCE under TCG took more than the default
				     * (ten timeouts) to connect, form and admit the last one. */
				    .open_timeout_ms = 60000,
				    .fence = sc->fence,
				    .hooks = &hooks };
	char paths[3][600], logs[600];
	uint32_t i;
	int ret;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	/* In the scenario's directory: a second life opens them again. */
	snprintf(logs, sizeof(logs), "%s/logs", c->dir);
	na.log_dir = logs;
	ret = coh_fabric_open(&fa, &c->fab);
	if (ret) {
		fprintf(stderr, "node %u: fabric: %s\n", c->id, coh_strerror(ret));
		return ret;
	}
	/* Probe endpoints: they fail as soon as this node's fabric knows a peer is down, which is
	 * when every other endpoint to it fails too. */
	ret = coh_cq_new(c->fab, 64, &c->probe_cq);
	for (i = 0; !ret && probes && i < sc->nodes; i++) {
		struct coh_ep_attr a = { .peer = i,
					 .channel = RC_PROBE_CH,
					 .send_cq = c->probe_cq,
					 .recv_cq = c->probe_cq,
					 .max_send_wr = 1,
					 .max_recv_wr = 1 };

		if (i != c->id)
			ret = coh_ep_new(c->fab, &a, &c->probe[i]);
	}
	if (ret)
		fprintf(stderr, "node %u: probe endpoints: %s\n", c->id, coh_strerror(ret));
	na.fab = c->fab;
	if (!ret)
		ret = coh_node_open(&na, &c->n);
	return ret;
}

static void rc_close(struct rc_child *c)
{
	uint32_t i;

	coh_node_close(&c->n);
	for (i = 0; i < RC_MAXN; i++)
		coh_ep_delete(&c->probe[i]);
	coh_cq_delete(&c->probe_cq);
	coh_fabric_close(&c->fab);
}

/* rc_wait_down - until this node's fabric knows @peer is down (bounded). */
static int rc_wait_down(struct rc_child *c, uint32_t peer)
{
	uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;

	while (c->probe[peer] && coh_ep_is_up(c->probe[peer])) {
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		rc_nap();
	}
	return 0;
}

/* rc_wait_view - until this node serves a committed view without the nodes of @without. */
static int rc_wait_view(struct rc_child *c, uint32_t without)
{
	uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;
	struct coh_node_stats st;

	for (;;) {
		if (coh_node_stats(c->n, &st))
			return -EIO;
		if (!(st.members & without) && st.quorum &&
		    coh_node_wait_epoch(c->n, st.epoch, 100) == 0)
			return 0;
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		rc_nap();
	}
}

/* rc_wait_members - until this node serves a view of exactly @members (bounded); @st is the
 * last stats read. */
static int rc_wait_members(struct rc_child *c, uint32_t members, struct coh_node_stats *st)
{
	uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;

	for (;;) {
		if (coh_node_stats(c->n, st))
			return -EIO;
		if (st->members == members && st->quorum)
			return 0;
		if (bench_now_ns() > until)
			return -ETIMEDOUT;
		rc_nap();
	}
}

static int rc_write(struct rc_child *c, uint64_t b, uint64_t v)
{
	uint8_t buf[RC_BS];

	bench_fill_block(buf, RC_BS, v);
	return coh_node_write(c->n, b, 1, buf);
}

static int rc_read(struct rc_child *c, uint64_t b, uint64_t *v)
{
	uint8_t buf[RC_BS];
	int ret = coh_node_read(c->n, b, 1, buf);

	if (!ret && bench_block_value(buf, RC_BS, v))
		ret = -EILSEQ;
	return ret;
}

static int rc_bar(struct rc_child *c, uint32_t i)
{
	return bench_sbar_wait(&c->sh->bar[i], RC_WAIT_MS);
}

/* rc_life - one life of a scenario: fork the nodes, each running @node, the parent's part (first
 * life only), reap, judge each node's end by @end. Returns 0 or 1. */
static int rc_life(const struct rc_scenario *sc, struct rc_shared *sh, const char *dir,
		   const char *cluster, int (*node)(struct rc_child *c), const enum rc_end *end)
{
	pid_t pids[RC_MAXN];
	int failed = 0, r;
	uint32_t i;

	fflush(NULL);
	for (i = 0; i < sc->nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct rc_child c = { .sh = sh,
					      .sc = sc,
					      .id = i,
					      .nodes = sc->nodes,
					      .dir = dir,
					      .cluster = cluster };

			alarm(RC_CHILD_S);
			r = rc_open(&c, sc, true);
			if (r) {
				fprintf(stderr, "%s node %u: open: %s\n", sc->name, i,
					coh_strerror(r));
				_exit(1);
			}
			r = node(&c);
			rc_close(&c);
			_exit(r);
		}
		if (pids[i] < 0) {
			while (i--) {
				kill(pids[i], SIGKILL);
				waitpid(pids[i], NULL, 0);
			}
			return 1;
		}
	}
	if (node == sc->node && sc->parent && sc->parent(sh, pids)) {
		fprintf(stderr, "%s: the parent's part failed\n", sc->name);
		failed = 1;
	}
	for (i = 0; i < sc->nodes; i++) {
		int st = 0;

		if (end[i] == RC_PARENT)
			continue;
		if (bench_wait_child(pids[i], &st, RC_CHILD_S + 10)) {
			fprintf(stderr, "%s: node %u did not end\n", sc->name, i);
			failed = 1;
			continue;
		}
		if (end[i] == RC_KILLED && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
			fprintf(stderr, "%s: node %u should have been killed; it %s %d\n", sc->name,
				i, WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			failed = 1;
		} else if (end[i] == RC_EXIT0 && (WIFSIGNALED(st) || WEXITSTATUS(st))) {
			fprintf(stderr, "%s: node %u %s %d: %s\n", sc->name, i,
				WIFSIGNALED(st) ? "died of signal" : "exited",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), sh->why[i]);
			failed = 1;
		}
	}
	return failed;
}

/* rc_run - one scenario: a shared area and a cluster directory, then its life or lives. */
static int rc_run(const struct rc_scenario *sc)
{
	char dir[] = "/dev/shm/cohort-races-XXXXXX", cluster[512];
	struct rc_shared *sh;
	int failed;

	if (!mkdtemp(dir))
		return 1;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_remove_tree(dir);
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	snprintf(cluster, sizeof(cluster), "%s/logs", dir);
	if (mkdir(cluster, 0700)) {
		munmap(sh, sizeof(*sh));
		bench_remove_tree(dir);
		return 1;
	}
	if (strcmp(conf_provider(), "shm")) {
		if (conf_cluster_new(cluster, sizeof(cluster), sc->nodes)) {
			munmap(sh, sizeof(*sh));
			bench_remove_tree(dir);
			return 1;
		}
	} else {
		snprintf(cluster, sizeof(cluster), "%s", dir);
	}
	if (sc->setup)
		sc->setup(sh);
	failed = rc_life(sc, sh, dir, cluster, sc->node, sc->end);
	if (!failed && sc->node2) {
		enum rc_end end[RC_MAXN] = { RC_EXIT0 };

		/* The restart: no rule of the first life's hook applies. */
		memset((void *)sh->die, 0, sizeof(sh->die));
		memset((void *)sh->hold, 0, sizeof(sh->hold));
		memset((void *)sh->drop_type, 0, sizeof(sh->drop_type));
		bench_sbar_init(&sh->bar[7], sc->nodes);
		failed = rc_life(sc, sh, dir, cluster, sc->node2, end);
	}
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}

/*
 * 1. A paused member. Five nodes, k = 1. Node 0 writes block 0 (resource 0) and node 4 reads
 * it, so node 4 holds it shared. The parent stops node 4 and kills node 3. The survivors exclude
 * node 4 for its silence, commit a view of {0, 1, 2}, and node 0 writes block 0 again, skipping
 * node 4's invalidation. Then node 4 is resumed. With COH_FENCE_AUTO on shm the survivors have
 * killed it; with COH_FENCE_LEASE it is alive, and must neither return its old copy of block 0
 * nor get a write acknowledged (its attempt on resource 2, homed on node 2, also tries a CAS on
 * a live home's word), and afterwards the survivors use resource 2 as usual.
 */
enum {
	PM_READY = 0,
	PM_WRITTEN,
	PM_RESUMED,
	PM_N4_DONE
};
#define PM_V0 0x1000000001ull
#define PM_V1 0x1000000002ull
#define PM_V2 0x1000000003ull

static int pm_node(struct rc_child *c)
{
	struct rc_shared *sh = c->sh;
	uint64_t v = 0;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	if (c->id == 0 && (r = rc_write(c, 0, PM_V0)))
		RFAIL(c, "first write: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 4) {
		r = rc_read(c, 0, &v);
		if (r || v != PM_V0)
			RFAIL(c, "first read: %s, %llx", coh_strerror(r), (unsigned long long)v);
	}
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	if (c->id == 0)
		atomic_store(&sh->flag[PM_READY], 1);
	if (c->id == 3) {
		rc_wait_flag(sh, PM_WRITTEN, 1);
		RFAIL(c, "node 3 was not killed");
	}
	if (c->id == 4) {
		if (rc_wait_flag(sh, PM_RESUMED, 1))
			RFAIL(c, "never resumed");
		/* Excluded while stopped: its old copy of block 0 must not come back. */
		r = rc_read(c, 0, &v);
		atomic_store(&sh->val[0], r ? 0 : v);
		if (!r && v != PM_V1)
			RFAIL(c,
			      "read block 0 after its exclusion: %llx (acknowledged since: %llx)",
			      (unsigned long long)v, (unsigned long long)PM_V1);
		r = rc_write(c, 8, 0x4000000001ull);
		if (!r)
			RFAIL(c, "a write was acknowledged after its exclusion");
		/* It knows, and says so, for its owner to restart it: the view that excluded it. */
		{
			uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;
			struct coh_node_stats st;

			while (!coh_node_stats(c->n, &st) && !st.excluded_epoch &&
			       bench_now_ns() < until)
				rc_nap();
			if (!st.excluded_epoch)
				RFAIL(c, "its stats do not say it was excluded");
		}
		atomic_store(&sh->flag[PM_N4_DONE], 1);
		return 0;
	}
	/* Survivors 0, 1, 2. */
	if ((r = rc_wait_view(c, 1u << 3 | 1u << 4)))
		RFAIL(c, "no view without nodes 3 and 4: %s", coh_strerror(r));
	if (c->id == 0) {
		if ((r = rc_write(c, 0, PM_V1)))
			RFAIL(c, "write after the view change: %s", coh_strerror(r));
		atomic_store(&sh->flag[PM_WRITTEN], 1);
	}
	if (rc_wait_flag(sh, PM_N4_DONE, 1))
		RFAIL(c, "node 4 never finished");
	/* Resource 2, whose word node 4 may have tried: the survivors use it as usual. */
	if (c->id == 1 && (r = rc_write(c, 8, PM_V2)))
		RFAIL(c, "write of block 8 after node 4 came back: %s", coh_strerror(r));
	if (bench_sbar_wait(&sh->bar[3], RC_WAIT_MS))
		RFAIL(c, "barrier 3");
	if ((r = rc_read(c, 8, &v)) || v != PM_V2)
		RFAIL(c, "block 8: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if ((r = rc_read(c, 0, &v)) || v != PM_V1)
		RFAIL(c, "block 0: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if (bench_sbar_wait(&sh->bar[4], RC_WAIT_MS))
		RFAIL(c, "barrier 4");
	return 0;
}

/* pm_parent - stop node 4, kill node 3, resume node 4 once the survivors wrote; then reap node
 * 4: fenced by SIGKILL (COH_FENCE_AUTO), or done with its part and exited 0 (COH_FENCE_LEASE). */
static int pm_parent(struct rc_shared *sh, const pid_t *pids)
{
	bool killed, lease = atomic_load(&sh->val[1]) != 0;
	uint64_t until;
	int st = 0, ret;

	if (rc_wait_flag(sh, PM_READY, 1))
		return 1;
	kill(pids[4], SIGSTOP);
	kill(pids[3], SIGKILL);
	if (rc_wait_flag(sh, PM_WRITTEN, 1))
		return 1;
	kill(pids[4], SIGCONT);
	atomic_store(&sh->flag[PM_RESUMED], 1);
	until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;
	while ((ret = (int)waitpid(pids[4], &st, WNOHANG)) == 0 && bench_now_ns() < until) {
		/* The survivors go on once node 4 is done or dead. */
		if (!lease)
			atomic_store(&sh->flag[PM_N4_DONE], 1);
		rc_nap();
	}
	if (ret != pids[4]) {
		kill(pids[4], SIGKILL);
		waitpid(pids[4], NULL, 0);
		fprintf(stderr, "paused_member: node 4 did not end\n");
		return 1;
	}
	atomic_store(&sh->flag[PM_N4_DONE], 1);
	killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
	if (lease ? (WIFSIGNALED(st) || WEXITSTATUS(st)) : !killed) {
		fprintf(stderr, "paused_member: node 4 %s %d, expected %s: %s\n",
			WIFSIGNALED(st) ? "died of signal" : "exited",
			WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
			lease ? "to finish its part" : "to be fenced by SIGKILL", sh->why[4]);
		return 1;
	}
	return 0;
}

static void pm_setup(struct rc_shared *sh)
{
	/* Only shm can kill a peer: on rdma COH_FENCE_AUTO falls back to the lease, and node 4
	 * lives on to find itself excluded. */
	if (strcmp(conf_provider(), "shm"))
		atomic_store(&sh->val[1], 1);
	bench_sbar_init(&sh->bar[0], 5);
	bench_sbar_init(&sh->bar[1], 5);
	bench_sbar_init(&sh->bar[2], 5);
	bench_sbar_init(&sh->bar[3], 3);
	bench_sbar_init(&sh->bar[4], 3);
}

static void pm_setup_lease(struct rc_shared *sh)
{
	pm_setup(sh);
	atomic_store(&sh->val[1], 1);
}

int rc_paused_member(uint32_t fence)
{
	struct rc_scenario sc = { .name = "paused_member",
				  .nodes = 5,
				  .k = 1,
				  .fence = fence,
				  .timeout_ms = 1000,
				  .end = { RC_EXIT0, RC_EXIT0, RC_EXIT0, RC_KILLED, RC_PARENT },
				  .node = pm_node,
				  .parent = pm_parent,
				  .setup = fence == COH_FENCE_LEASE ? pm_setup_lease : pm_setup };

	return rc_run(&sc);
}

/*
 * 2. A writer dies between its exclusive CAS and its invalidations. Four nodes, k = 1. Node 1
 * writes block 4 (resource 1, homed on node 1); nodes 0 and 3 read it, so nodes 0, 1 and 3 share
 * it. Node 2 writes it: its CAS makes the word exclusive, and it dies at COH_CRASH_XCAS, before
 * invalidating anyone. Node 3 (node 2's log peer) wins its locks. Node 0 then writes block 4 by a
 * grant from node 3, which invalidates nobody; nodes 1 and 3 must read node 0's value.
 */
#define WD_A 0x2000000001ull
#define WD_B 0x2000000002ull

static int wd_node(struct rc_child *c)
{
	uint64_t v = 0;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	if (c->id == 1 && (r = rc_write(c, 4, WD_A)))
		RFAIL(c, "first write: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if ((c->id == 0 || c->id == 3) && ((r = rc_read(c, 4, &v)) || v != WD_A))
		RFAIL(c, "shared read: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	if (c->id == 2) {
		rc_write(c, 4, 0x2000000099ull);
		RFAIL(c, "node 2 did not die at its exclusive CAS");
	}
	if ((r = rc_wait_view(c, 1u << 2)))
		RFAIL(c, "no view without node 2: %s", coh_strerror(r));
	if (c->id == 0 && (r = rc_write(c, 4, WD_B)))
		RFAIL(c, "write after the takeover: %s", coh_strerror(r));
	if (rc_bar(c, 3))
		RFAIL(c, "barrier 3");
	if ((r = rc_read(c, 4, &v)) || v != WD_B)
		RFAIL(c, "block 4 after node 0's write: %s, %llx (acknowledged: %llx)",
		      coh_strerror(r), (unsigned long long)v, (unsigned long long)WD_B);
	if (rc_bar(c, 4))
		RFAIL(c, "barrier 4");
	return 0;
}

static void wd_setup(struct rc_shared *sh)
{
	bench_sbar_init(&sh->bar[0], 4);
	bench_sbar_init(&sh->bar[1], 4);
	bench_sbar_init(&sh->bar[2], 4);
	bench_sbar_init(&sh->bar[3], 3);
	bench_sbar_init(&sh->bar[4], 3);
	atomic_store(&sh->die[2][COH_CRASH_XCAS], 1);
}

int rc_writer_dies_before_invalidating(void)
{
	struct rc_scenario sc = { .name = "writer_dies_before_invalidating",
				  .nodes = 4,
				  .k = 1,
				  .timeout_ms = 2000,
				  .end = { RC_EXIT0, RC_EXIT0, RC_KILLED, RC_EXIT0 },
				  .node = wd_node,
				  .setup = wd_setup };

	return rc_run(&sc);
}

/*
 * 3. A writer that moved its log. Five nodes, k = 1: node 0's log is on node 1. Node 1 dies;
 * node 0 destages and moves its log to node 2, and is held there (COH_CRASH_VIEW_RELOGGED)
 * while it writes block 8 (resource 2, homed on node 2): acknowledged, its only copy on node 2.
 * Then node 0 dies before the view change commits anywhere. The survivors must replay it from
 * node 2's copy, though the view they started from put node 0's log on node 1.
 */
#define ML_A 0x3000000001ull
#define ML_B 0x3000000002ull

static int ml_node(struct rc_child *c)
{
	struct rc_shared *sh = c->sh;
	uint64_t v = 0;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	if (c->id == 0 && (r = rc_write(c, 8, ML_A)))
		RFAIL(c, "first write: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 1)
		kill(getpid(), SIGKILL);
	if (c->id == 0) {
		if (rc_wait_at(sh, 0, COH_CRASH_VIEW_RELOGGED, 1))
			RFAIL(c, "never moved its log");
		if ((r = rc_write(c, 8, ML_B)))
			RFAIL(c, "write after the log moved: %s", coh_strerror(r));
		kill(getpid(), SIGKILL);
	}
	if ((r = rc_wait_view(c, 1u << 0 | 1u << 1)))
		RFAIL(c, "no view without nodes 0 and 1: %s", coh_strerror(r));
	if ((r = rc_read(c, 8, &v)) || v != ML_B)
		RFAIL(c, "block 8: %s, %llx (acknowledged: %llx)", coh_strerror(r),
		      (unsigned long long)v, (unsigned long long)ML_B);
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	return 0;
}

static void ml_setup(struct rc_shared *sh)
{
	bench_sbar_init(&sh->bar[0], 5);
	bench_sbar_init(&sh->bar[1], 5);
	bench_sbar_init(&sh->bar[2], 3);
	atomic_store(&sh->hold[0][COH_CRASH_VIEW_RELOGGED], 1);
}

int rc_writer_moved_its_log(void)
{
	struct rc_scenario sc = { .name = "writer_moved_its_log",
				  .nodes = 5,
				  .k = 1,
				  .timeout_ms = 2000,
				  .end = { RC_KILLED, RC_KILLED, RC_EXIT0, RC_EXIT0, RC_EXIT0 },
				  .node = ml_node,
				  .setup = ml_setup };

	return rc_run(&sc);
}

/*
 * 4. A death during a log move. Five nodes, k = 2: node 2's log is on nodes 3 and 4. Node 3
 * dies; node 2 destages and is held before it starts its log on nodes 4 and 0
 * (COH_CRASH_VIEW_RELOG) until node 4 has died too and node 2's fabric knows it. The move
 * fails. Three nodes of five live: node 2 must not leave, and all three serve I/O.
 */
#define DM_A 0x4000000001ull

static int dm_node(struct rc_child *c)
{
	struct rc_shared *sh = c->sh;
	uint64_t v = 0;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	if (c->id == 2 && (r = rc_write(c, 8, DM_A)))
		RFAIL(c, "first write: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 3)
		kill(getpid(), SIGKILL);
	if (c->id == 4) {
		rc_wait_flag(sh, 0, 1);
		kill(getpid(), SIGKILL);
	}
	if (c->id == 2) {
		if (rc_wait_at(sh, 2, COH_CRASH_VIEW_RELOG, 1))
			RFAIL(c, "never moved its log");
		atomic_store(&sh->flag[0], 1);
		if (rc_wait_down(c, 4))
			RFAIL(c, "node 4's death not seen");
		atomic_store(&sh->hold[2][COH_CRASH_VIEW_RELOG], 0);
	}
	if ((r = rc_wait_view(c, 1u << 3 | 1u << 4)))
		RFAIL(c, "no view without nodes 3 and 4: %s", coh_strerror(r));
	if ((r = rc_write(c, 12 + c->id, DM_A + 1 + c->id)))
		RFAIL(c, "write after the view change: %s", coh_strerror(r));
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	if ((r = rc_read(c, 8, &v)) || v != DM_A)
		RFAIL(c, "block 8: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if ((r = rc_read(c, 12 + (c->id + 1) % 3, &v)) || v != DM_A + 1 + (c->id + 1) % 3)
		RFAIL(c, "another node's block: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if (rc_bar(c, 3))
		RFAIL(c, "barrier 3");
	return 0;
}

static void dm_setup(struct rc_shared *sh)
{
	bench_sbar_init(&sh->bar[0], 5);
	bench_sbar_init(&sh->bar[1], 5);
	bench_sbar_init(&sh->bar[2], 3);
	bench_sbar_init(&sh->bar[3], 3);
	atomic_store(&sh->hold[2][COH_CRASH_VIEW_RELOG], 1);
}

int rc_death_during_log_move(void)
{
	struct rc_scenario sc = { .name = "death_during_log_move",
				  .nodes = 5,
				  .k = 2,
				  .timeout_ms = 2000,
				  .end = { RC_EXIT0, RC_EXIT0, RC_EXIT0, RC_KILLED, RC_KILLED },
				  .node = dm_node,
				  .setup = dm_setup };

	return rc_run(&sc);
}

/*
 * 5. A view change that commits on one survivor only. Five nodes, k = 2: node 3's log is on
 * nodes 4 and 0. Node 3 writes blocks 12-15 (resource 3, homed on node 3) and dies. Node 0 is
 * held after the claims until node 4 has won node 3's locks, so node 4 replays. Node 2 then
 * loses its last barrier message to nodes 0 and 1 and dies: with @commit_somewhere, its ZEROED
 * (nodes 2 and 4 commit; node 2 dies at its commit), else its READY (nobody commits; node 2 is
 * held there until node 4 has won, as node 0 is: on a slow host node 2 could otherwise die while
 * node 4 still arbitrates, which restarts node 4's round, and the scenario is another). Each
 * hold ends early if the node it waits for starts a new round (rc_hook). Node 4
 * writes blocks 12-15 as soon as it can. The survivors 0, 1 and 4 must end with node 4's values
 * (node 3's log replayed again would bring back the old ones) and one owner at a time (nodes 0
 * and 4 write and read each other's blocks).
 */
#define PC_A 0x5000000000ull
#define PC_B 0x5100000000ull
#define PC_C 0x5200000001ull
#define PC_D 0x5200000002ull
#define PC_CTL_READY 4u
#define PC_CTL_ZEROED 8u

static int pc_node(struct rc_child *c)
{
	struct rc_shared *sh = c->sh;
	uint64_t v = 0, b;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	for (b = 12; c->id == 3 && b < 16; b++) {
		if ((r = rc_write(c, b, PC_A + b)))
			RFAIL(c, "write of block %llu: %s", (unsigned long long)b, coh_strerror(r));
	}
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 3)
		kill(getpid(), SIGKILL);
	if (c->id == 2) {
		rc_wait_flag(sh, 0, 1);
		RFAIL(c, "node 2 was not killed");
	}
	if (c->id == 4) {
		/* Committed here first (or not at all): write resource 3 as soon as it is free. */
		if (atomic_load(&sh->val[1]) && rc_wait_at(sh, 4, COH_CRASH_VIEW_COMMITTED, 1))
			RFAIL(c, "never committed");
		for (b = 12; b < 16; b++) {
			if ((r = rc_write(c, b, PC_B + b)))
				RFAIL(c, "write of block %llu: %s", (unsigned long long)b,
				      coh_strerror(r));
		}
	}
	if ((r = rc_wait_view(c, 1u << 2 | 1u << 3)))
		RFAIL(c, "no view without nodes 2 and 3: %s", coh_strerror(r));
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	for (b = 12; b < 16; b++) {
		if ((r = rc_read(c, b, &v)) || v != PC_B + b)
			RFAIL(c, "block %llu: %s, %llx (acknowledged: %llx)", (unsigned long long)b,
			      coh_strerror(r), (unsigned long long)v,
			      (unsigned long long)(PC_B + b));
	}
	if (rc_bar(c, 3))
		RFAIL(c, "barrier 3");
	/* One owner at a time: each writes a block the other then reads. */
	if (c->id == 0 && (r = rc_write(c, 12, PC_C)))
		RFAIL(c, "write of block 12: %s", coh_strerror(r));
	if (c->id == 4 && (r = rc_write(c, 13, PC_D)))
		RFAIL(c, "write of block 13: %s", coh_strerror(r));
	if (rc_bar(c, 4))
		RFAIL(c, "barrier 4");
	if ((r = rc_read(c, 12, &v)) || v != PC_C)
		RFAIL(c, "block 12: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if ((r = rc_read(c, 13, &v)) || v != PC_D)
		RFAIL(c, "block 13: %s, %llx", coh_strerror(r), (unsigned long long)v);
	if (rc_bar(c, 5))
		RFAIL(c, "barrier 5");
	if ((r = coh_node_flush(c->n)))
		RFAIL(c, "flush: %s", coh_strerror(r));
	if (rc_bar(c, 6))
		RFAIL(c, "barrier 6");
	if (c->id == 0) {
		uint64_t bad = 0;

		if ((r = coh_node_check(c->n, &bad)) || bad)
			RFAIL(c, "scrub: %s, %llu stripes bad", coh_strerror(r),
			      (unsigned long long)bad);
	}
	if (rc_bar(c, 7))
		RFAIL(c, "barrier 7");
	return 0;
}

static void pc_setup_common(struct rc_shared *sh)
{
	uint32_t i;

	bench_sbar_init(&sh->bar[0], 5);
	bench_sbar_init(&sh->bar[1], 5);
	for (i = 2; i < 8; i++)
		bench_sbar_init(&sh->bar[i], 3);
	/* Node 0 lets node 4 win node 3's locks. */
	atomic_store(&sh->hold[0][COH_CRASH_VIEW_CLAIMED], 1);
	atomic_store(&sh->until_node[0][COH_CRASH_VIEW_CLAIMED], 4);
	atomic_store(&sh->until_pt[0][COH_CRASH_VIEW_CLAIMED], COH_CRASH_VIEW_TAKEN);
	atomic_store(&sh->drop_to[2], 1u << 0 | 1u << 1);
}

static void pc_setup_commit(struct rc_shared *sh)
{
	pc_setup_common(sh);
	atomic_store(&sh->val[1], 1);
	atomic_store(&sh->drop_type[2], PC_CTL_ZEROED);
	atomic_store(&sh->die[2][COH_CRASH_VIEW_COMMITTED], 1);
}

static void pc_setup_nocommit(struct rc_shared *sh)
{
	pc_setup_common(sh);
	atomic_store(&sh->drop_type[2], PC_CTL_READY);
	atomic_store(&sh->die[2][COH_CRASH_VIEW_READY], 1);
	/* Not before node 4 holds node 3's locks: a death while node 4 still arbitrates (a slow
	 * host) restarts its round, and the scenario is then another one. */
	atomic_store(&sh->hold[2][COH_CRASH_VIEW_READY], 1);
	atomic_store(&sh->until_node[2][COH_CRASH_VIEW_READY], 4);
	atomic_store(&sh->until_pt[2][COH_CRASH_VIEW_READY], COH_CRASH_VIEW_TAKEN);
}

int rc_partial_commit(int commit_somewhere)
{
	struct rc_scenario sc = { .name = "partial_commit",
				  .nodes = 5,
				  .k = 2,
				  .timeout_ms = 2000,
				  .end = { RC_EXIT0, RC_EXIT0, RC_KILLED, RC_KILLED, RC_EXIT0 },
				  .node = pc_node,
				  .setup = commit_somewhere ? pc_setup_commit : pc_setup_nocommit };

	return rc_run(&sc);
}

/*
 * 6. A log move that lets a lock go too soon, then a whole-cluster crash. Three nodes, k = 1:
 * node 1's log is on node 2. Node 1 writes block 0 (resource 0, homed on node 0): its record is
 * on node 2 only. Node 2 dies; node 1 destages (its retirement reaches no peer: node 2 is gone)
 * and is held before its log starts on node 0 (COH_CRASH_VIEW_RELOG). Node 0 writes block 0
 * meanwhile; if that is not acknowledged, node 1 is let go and node 0 writes again until it is.
 * Node 0 destages it, and the whole cluster is killed (node 1 still held, if it was never let
 * go) and restarted on the same files. Node 2's copy of node 1's log still holds
 * the first write as live: had node 1 handed the lock on before its new log generation was on
 * record, the restart would replay it over node 0's acknowledged write (it did, about one whole-
 * cluster crash trial in a hundred). Every node of the second life must read node 0's value.
 */
#define LM_A 0x6000000001ull
#define LM_B 0x6000000002ull
enum {
	LM_ACKED = 0
};

static int lm_node(struct rc_child *c)
{
	struct rc_shared *sh = c->sh;
	uint32_t i;
	int r = -EAGAIN;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	if (c->id == 1 && (r = rc_write(c, 0, LM_A)))
		RFAIL(c, "first write: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 2)
		kill(getpid(), SIGKILL);
	if (c->id == 0) {
		if (rc_wait_at(sh, 1, COH_CRASH_VIEW_RELOG, 1))
			RFAIL(c, "node 1 never moved its log");
		/* While node 1's log moves. Acknowledged, it must not be lost: the cluster dies
		 * with node 1 still held there, before any view without node 2 is prepared. */
		r = rc_write(c, 0, LM_B);
		if (r) {
			/* Not acknowledged (the lock stays with node 1 until its log has moved):
			 * node 1 let go, then until acknowledged (-EAGAIN while the view
			 * change goes on). */
			atomic_store(&sh->hold[1][COH_CRASH_VIEW_RELOG], 0);
			for (i = 0; r && i < 50; i++)
				r = rc_write(c, 0, LM_B);
		}
		if (r)
			RFAIL(c, "write after the log move: %s", coh_strerror(r));
		if ((r = coh_node_flush(c->n)))
			RFAIL(c, "flush: %s", coh_strerror(r));
		atomic_store(&sh->flag[LM_ACKED], 1);
	}
	/* The parent kills the whole cluster. */
	rc_wait_flag(sh, 15, 1);
	RFAIL(c, "not killed");
}

static int lm_parent(struct rc_shared *sh, const pid_t *pids)
{
	int ret = rc_wait_flag(sh, LM_ACKED, 1);

	kill(pids[0], SIGKILL);
	kill(pids[1], SIGKILL);
	return ret;
}

static int lm_node2(struct rc_child *c)
{
	uint64_t v = 0;
	int r;

	if (rc_bar(c, 7))
		RFAIL(c, "second life's barrier");
	if ((r = rc_read(c, 0, &v)) || v != LM_B)
		RFAIL(c, "block 0 after the restart: %s, %llx (acknowledged: %llx)",
		      coh_strerror(r), (unsigned long long)v, (unsigned long long)LM_B);
	if (rc_bar(c, 7))
		RFAIL(c, "barrier before close");
	return 0;
}

static void lm_setup(struct rc_shared *sh)
{
	bench_sbar_init(&sh->bar[0], 3);
	bench_sbar_init(&sh->bar[1], 3);
	atomic_store(&sh->hold[1][COH_CRASH_VIEW_RELOG], 1);
}

int rc_log_move_then_cluster_crash(void)
{
	struct rc_scenario sc = { .name = "log_move_then_cluster_crash",
				  .nodes = 3,
				  .k = 1,
				  .timeout_ms = 2000,
				  .end = { RC_KILLED, RC_KILLED, RC_KILLED },
				  .node = lm_node,
				  .parent = lm_parent,
				  .setup = lm_setup,
				  .node2 = lm_node2 };

	return rc_run(&sc);
}

/*
 * 7. An element missing for one node only (its path to it failed, or one I/O error). Three nodes,
 * k = 1. Node 0 writes blocks 0-7 (two stripes: element 1 holds data in at least one), then loses
 * element 1 (coh_node_fail_element), writes them again, now around element 1, and leaves (its
 * close destages and gives its locks back). Nodes 1 and 2, whose own path to element 1 is fine,
 * then read the blocks from the group, and must read the new values: they mark element 1
 * missing too before node 0 gives a lock back (read from element 1, a block written around it is
 * the old one). Then the cluster opens again: element 1 stays missing (each node's state file
 * says so), and every node reads the new values again.
 */
#define EM_A 0x7000000000ull
#define EM_B 0x7100000000ull

static int em_node(struct rc_child *c)
{
	uint64_t b, v = 0;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	for (b = 0; c->id == 0 && b < 8; b++) {
		if ((r = rc_write(c, b, EM_A + b)))
			RFAIL(c, "first write of %llu: %s", (unsigned long long)b, coh_strerror(r));
	}
	if (c->id == 0 && (r = coh_node_fail_element(c->n, 1)))
		RFAIL(c, "fail element 1: %s", coh_strerror(r));
	for (b = 0; c->id == 0 && b < 8; b++) {
		if ((r = rc_write(c, b, EM_B + b)))
			RFAIL(c, "write of %llu around element 1: %s", (unsigned long long)b,
			      coh_strerror(r));
	}
	if (c->id == 0 && (r = coh_node_close(&c->n)))
		RFAIL(c, "close: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 0)
		return 0;
	if ((r = rc_wait_view(c, 1u << 0)))
		RFAIL(c, "no view without node 0: %s", coh_strerror(r));
	for (b = 0; b < 8; b++) {
		if ((r = rc_read(c, b, &v)) || v != EM_B + b)
			RFAIL(c, "block %llu: %s, %llx (acknowledged: %llx)", (unsigned long long)b,
			      coh_strerror(r), (unsigned long long)v,
			      (unsigned long long)(EM_B + b));
	}
	{
		struct coh_node_stats st;

		if (coh_node_stats(c->n, &st) || st.elements_missing != 1u << 1)
			RFAIL(c, "elements missing here: %#x, not element 1", st.elements_missing);
	}
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	return 0;
}

static int em_node2(struct rc_child *c)
{
	uint64_t b, v = 0;
	int r;

	if (rc_bar(c, 7))
		RFAIL(c, "second life's barrier");
	for (b = 0; b < 8; b++) {
		if ((r = rc_read(c, b, &v)) || v != EM_B + b)
			RFAIL(c, "block %llu after the restart: %s, %llx (acknowledged: %llx)",
			      (unsigned long long)b, coh_strerror(r), (unsigned long long)v,
			      (unsigned long long)(EM_B + b));
	}
	if (rc_bar(c, 7))
		RFAIL(c, "barrier before close");
	return 0;
}

static void em_setup(struct rc_shared *sh)
{
	bench_sbar_init(&sh->bar[0], 3);
	bench_sbar_init(&sh->bar[1], 3);
	bench_sbar_init(&sh->bar[2], 2);
}

int rc_element_missing_on_one_node(void)
{
	struct rc_scenario sc = { .name = "element_missing_on_one_node",
				  .nodes = 3,
				  .k = 1,
				  .timeout_ms = 2000,
				  .end = { RC_EXIT0, RC_EXIT0, RC_EXIT0 },
				  .node = em_node,
				  .setup = em_setup,
				  .node2 = em_node2 };

	return rc_run(&sc);
}

/*
 * 8. A join while a member is slow to stop serving. Three nodes, k = 1. Nodes 0 and 1 write
 * blocks 0-7 (dirty in their caches); node 2 leaves and, once the others serve without it, opens
 * again: a join, a formation of all three. Node 0 is slow to start it (its destage takes one
 * and a half timeouts: a stall at COH_CRASH_FORM_AGREED, its second formation). Node 2, with
 * nothing to destage, and node 1 must wait for it (CTL_QUIESCED) rather than time out on their
 * endpoints to it: without that wait the formation failed, and on soft-RoCE the next failed the
 * same way. No formation may fail, and every node reads what was written.
 */
#define JS_A 0x8000000000ull

static int js_node(struct rc_child *c)
{
	struct coh_node_stats st;
	uint64_t b, v = 0;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	for (b = 4 * c->id; c->id < 2 && b < 4 * c->id + 4; b++) {
		if ((r = rc_write(c, b, JS_A + b)))
			RFAIL(c, "write of %llu: %s", (unsigned long long)b, coh_strerror(r));
	}
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 2)
		rc_close(c);
	else if ((r = rc_wait_view(c, 1u << 2)))
		RFAIL(c, "no view without node 2: %s", coh_strerror(r));
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	if (c->id == 2 && (r = rc_open(c, c->sc, false)))
		RFAIL(c, "open again (a join): %s", coh_strerror(r));
	if (rc_bar(c, 3))
		RFAIL(c, "barrier after the join");
	/* Node 2's open returns once its own formation is done; the others may still be finishing
	 * theirs (committing, opening the cache), which is not serving yet: wait for it. */
	if ((r = rc_wait_members(c, 7u, &st)))
		RFAIL(c, "after the join: %s, members %#x, quorum %d", coh_strerror(r), st.members,
		      st.quorum);
	if (st.formations_failed)
		RFAIL(c,
		      "%llu formations failed (the join waits for the slow member, it does not "
		      "time out on it)",
		      (unsigned long long)st.formations_failed);
	for (b = 0; b < 8; b++) {
		if ((r = rc_read(c, b, &v)) || v != JS_A + b)
			RFAIL(c, "block %llu: %s, %llx (acknowledged: %llx)", (unsigned long long)b,
			      coh_strerror(r), (unsigned long long)v,
			      (unsigned long long)(JS_A + b));
	}
	if (rc_bar(c, 4))
		RFAIL(c, "barrier before close");
	return 0;
}

static void js_setup(struct rc_shared *sh)
{
	uint32_t i;

	for (i = 0; i < 5; i++)
		bench_sbar_init(&sh->bar[i], 3);
	/* Its first formation is the cluster's start; the second is the join. */
	atomic_store(&sh->stall_at[0][COH_CRASH_FORM_AGREED], 2);
	atomic_store(&sh->stall_ms[0][COH_CRASH_FORM_AGREED], 3000);
}

int rc_join_while_a_member_is_slow(void)
{
	struct rc_scenario sc = { .name = "join_while_a_member_is_slow",
				  .nodes = 3,
				  .k = 1,
				  .timeout_ms = 2000,
				  .end = { RC_EXIT0, RC_EXIT0, RC_EXIT0 },
				  .node = js_node,
				  .setup = js_setup };

	return rc_run(&sc);
}

/*
 * 9. A compare-and-write whose node dies inside it, at @point: while it asks for the block's
 * lock (COH_CRASH_REQ), once granted (COH_CRASH_GRANTED), before replicating
 * (COH_CRASH_BEFORE_REPLICATION), once replicated (COH_CRASH_REPLICATED), or once installed
 * and not acknowledged (COH_CRASH_INSTALLED). Three nodes, k = 1. Node 0 writes block 5; node 1
 * compares it against that value and dies at @point. Nodes 0 and 2 then read block 5: it holds
 * either the old value or node 1's, whole (a replicated one may be replayed; it was never
 * acknowledged). Both compare-and-write against what they read: exactly one succeeds, and the
 * block holds the winner's value; the loser gets a miscompare. Nothing hangs on the dead node's
 * half-done step.
 */
#define CD_A 0x9000000000ull
#define CD_DEAD 0x9000000001ull
#define CD_BLOCK 5u

static uint32_t cd_point;

struct rc_cw {
	_Atomic int done, status;
};

static void rc_cw_done(struct coh_io *io, int status, void *arg)
{
	struct rc_cw *w = arg;

	(void)io;
	atomic_store(&w->status, status);
	atomic_store(&w->done, 1);
}

/* rc_compare_write - one compare-and-write of block @b, expecting @expect and writing @value,
 * waited for (bounded). Returns 0, -EILSEQ on a miscompare, or another -errno. */
static int rc_compare_write(struct rc_child *c, uint64_t b, uint64_t expect, uint64_t value)
{
	static uint8_t buf[2 * RC_BS];
	static struct rc_cw w;
	static struct coh_io io;
	uint64_t until = bench_now_ns() + (uint64_t)RC_WAIT_MS * 1000000ull;
	int r;

	bench_fill_block(buf, RC_BS, expect);
	bench_fill_block(buf + RC_BS, RC_BS, value);
	atomic_store(&w.done, 0);
	io = (struct coh_io){ .io_size = sizeof(io),
			      .type = COH_IO_COMPARE_WRITE,
			      .lba = b,
			      .nblocks = 1,
			      .buf = buf,
			      .cb = rc_cw_done,
			      .cb_arg = &w };
	if ((r = coh_node_submit(c->n, &io)))
		return r;
	while (!atomic_load(&w.done)) {
		if (bench_now_ns() > until)
			return -ETIMEDOUT; /* @io stays the engine's: static, it outlives this */
		rc_nap();
	}
	return atomic_load(&w.status);
}

static int cd_node(struct rc_child *c)
{
	struct rc_shared *sh = c->sh;
	uint64_t v = 0, mine = CD_A + 0x100 + c->id, won;
	int r;

	if (rc_bar(c, 0))
		RFAIL(c, "start barrier");
	if (c->id == 0 && (r = rc_write(c, CD_BLOCK, CD_A)))
		RFAIL(c, "first write: %s", coh_strerror(r));
	if (rc_bar(c, 1))
		RFAIL(c, "barrier 1");
	if (c->id == 1) {
		r = rc_compare_write(c, CD_BLOCK, CD_A, CD_DEAD);
		RFAIL(c, "node 1 did not die at point %u (its compare-and-write: %s)", cd_point,
		      coh_strerror(r));
	}
	if ((r = rc_wait_view(c, 1u << 1)))
		RFAIL(c, "no view without node 1: %s", coh_strerror(r));
	if ((r = rc_read(c, CD_BLOCK, &v)) || (v != CD_A && v != CD_DEAD))
		RFAIL(c,
		      "block %u after node 1 died at point %u: %s, %llx (old %llx, node 1's %llx)",
		      CD_BLOCK, cd_point, coh_strerror(r), (unsigned long long)v,
		      (unsigned long long)CD_A, (unsigned long long)CD_DEAD);
	if (rc_bar(c, 2))
		RFAIL(c, "barrier 2");
	r = rc_compare_write(c, CD_BLOCK, v, mine);
	if (r && r != -EILSEQ)
		RFAIL(c, "compare-and-write against %llx: %s", (unsigned long long)v,
		      coh_strerror(r));
	if (!r) {
		atomic_fetch_add(&sh->flag[0], 1);
		atomic_store(&sh->val[0], mine);
	}
	if (rc_bar(c, 3))
		RFAIL(c, "barrier 3");
	if (atomic_load(&sh->flag[0]) != 1)
		RFAIL(c, "%u compare-and-writes against the same data succeeded (point %u)",
		      atomic_load(&sh->flag[0]), cd_point);
	won = atomic_load(&sh->val[0]);
	if ((r = rc_read(c, CD_BLOCK, &v)) || v != won)
		RFAIL(c, "block %u: %s, %llx (the winner wrote %llx)", CD_BLOCK, coh_strerror(r),
		      (unsigned long long)v, (unsigned long long)won);
	if (rc_bar(c, 4))
		RFAIL(c, "barrier 4");
	return 0;
}

static void cd_setup(struct rc_shared *sh)
{
	bench_sbar_init(&sh->bar[0], 3);
	bench_sbar_init(&sh->bar[1], 3);
	bench_sbar_init(&sh->bar[2], 2);
	bench_sbar_init(&sh->bar[3], 2);
	bench_sbar_init(&sh->bar[4], 2);
	atomic_store(&sh->die[1][cd_point], 1);
}

int rc_compare_write_dies_at(uint32_t point)
{
	struct rc_scenario sc = { .name = "compare_write_dies",
				  .nodes = 3,
				  .k = 1,
				  .timeout_ms = 2000,
				  .end = { RC_EXIT0, RC_KILLED, RC_EXIT0 },
				  .node = cd_node,
				  .setup = cd_setup };

	if (point >= RC_POINTS)
		return 1;
	cd_point = point;
	return rc_run(&sc);
}
