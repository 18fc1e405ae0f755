/*
 * engine_harness.c - the multi-node harness of engine_harness.h: a shared area mapped before the
 * fork, a cluster directory (shm) or a cluster from conf.c (rdma), one process per node with its
 * fabric and node, a bounded wait for each, and the judge over what they left. It leaves out
 * what the nodes do (the scenarios: engine_io.c, bgdestage.c, scsi_engine.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "engine_harness.h"

/* en_open - node @c->id's fabric and node, with @tmpl's hooks (NULL: none) and @o's attributes
 * (NULL: the defaults). */
static int en_open(struct en_child *c, uint32_t k, uint32_t depth, const struct en_opts *o,
		   const struct coh_node_hooks *tmpl)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_hooks hooks;
	struct coh_node_attr na = { .nodes = c->nodes,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = EN_ELEM_BLOCKS,
				    .replicas = (int)k,
				    .log_bytes = 256u << 10,
				    .cache_blocks = 64,
				    .timeout_ms = 5000,
				    .queue_depth = depth };
	char paths[3][600];
	uint32_t i;
	int ret;

	if (o && o->elem_blocks)
		na.elem_blocks = o->elem_blocks;
	if (o && o->log_bytes)
		na.log_bytes = o->log_bytes;
	if (o && o->cache_blocks)
		na.cache_blocks = o->cache_blocks;
	if (o && o->destage_high)
		na.destage_high = o->destage_high;
	if (tmpl) {
		hooks = *tmpl;
		hooks.arg = c;
		hooks.manual_engine = tmpl->manual_engine && c->id == 0;
		na.hooks = &hooks;
	}
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

int en_bar(struct en_child *c, uint32_t i)
{
	return bench_sbar_wait(&c->sh->bar[i], EN_WAIT_MS);
}

int en_run(const char *name, uint32_t nodes, uint32_t k, uint32_t depth,
	   const struct coh_node_hooks *hooks, int (*fn)(struct en_child *c),
	   int (*judge)(struct en_shared *sh, uint32_t nodes))
{
	return en_run_opts(name, nodes, k, depth, NULL, hooks, fn, judge);
}

int en_run_opts(const char *name, uint32_t nodes, uint32_t k, uint32_t depth,
		const struct en_opts *o, const struct coh_node_hooks *hooks,
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
			r = en_open(&c, k, depth, o, hooks);
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
