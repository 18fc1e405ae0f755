/*
 * cohortd.c - the Cohort daemon: one controller node. Reads and validates its config (conf.c)
 * before anything starts; opens the fabric and the node (recovery at open, or a rejoin, before
 * anything is served); records its exports (exports.c); answers cohortctl on its control socket
 * (control.c); and logs one line per event to stderr. SIGTERM or SIGINT: a clean leave (the node
 * destages and closes), exit 0. SIGHUP: re-read the config; only [export] sections may change,
 * anything else is refused with an error naming it and the running config is kept. A cluster
 * stop (cohortctl stop, from this node or another) ends every daemon with exit 0. A node the
 * others excluded while it lived (paused, cut off) leaves with exit 3, for its supervisor to
 * start it again: a new incarnation rejoins, the excluded one never serves again. With
 * [cluster] fence = agent, the node's view changes run fence_agent for a node they exclude
 * without proof of its death (cd_fence_agent).
 *
 * Threads: the main thread owns the node's life and takes signals synchronously (sigtimedwait:
 * no handler runs inside the engine), sampling the node's counters every second for the rates;
 * the control thread answers requests (docs/operations.md, "Threads"). @lock in struct cohortd
 * guards the samples and the config pointer the control thread reads.
 *
 * Exports go to the TCMU front end (frontend.c) unless [daemon] frontend = none; before the node
 * leaves, the units answer ALUA unavailable for a second so hosts move to other paths.
 *
 * A routed config ([group NAME] sections, docs/routing.md) opens one engine per group, each on a
 * fabric of its own (this node a member of every group's cluster, an AMF of some), and a router
 * over them and the cluster's fabric; every unit submits through the router. The status and the
 * rates are the first group's engine's; "map" shows the mapping table and the router's counters.
 *
 * Leaves out: LIO fabrics and LUNs (scripts/lio.sh), daemonising (systemd runs it in the
 * foreground), volumes as separate address spaces in the engine (the table is the daemon's: a
 * volume is a range of the group's blocks, which the SCSI unit offsets by first_lba).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cohort/router.h"
#include "daemon.h"

#define CD_TICK_MS 200		   /* how often the main thread looks at the node */
#define CD_SAMPLE_NS 1000000000ull /* the rates' interval */
#define CD_STOP_TIMEOUT_MS 30000   /* coh_node_stop_cluster's bound */
#define CD_EXIT_EXCLUDED 3	   /* excluded while alive: restart me (docs/operations.md) */

struct cohortd {
	const char *conf_path;
	int node_override;
	struct coh_fabric *fab; /* the cluster's: the node's, or in a routed config the router's */
	struct coh_node *node;	/* the first group's engine (@gnode[0]) */
	/* A routed config: each group's fabric and engine, the table and the router. */
	uint32_t ngroups;
	struct coh_fabric *gfab[DAEMON_MAX_GROUPS];
	struct coh_node *gnode[DAEMON_MAX_GROUPS];
	struct coh_map *map;
	struct coh_route *router;
	char map_path[DAEMON_PATH_MAX + 40]; /* where the router keeps the table */
	struct daemon_tcmu *tcmu;	     /* NULL: [daemon] frontend = none */
	struct daemon_exports *exports;
	struct daemon_ctl *ctl;
	_Atomic bool stop_requested; /* cohortctl stop succeeded here */
	pthread_mutex_t lock;	     /* guards the fields below */
	struct daemon_conf *conf;
	struct coh_node_stats prev, cur; /* the last two samples, @prev_ns and @cur_ns apart */
	uint64_t prev_ns, cur_ns;
	/* What the fence agent runs with, copied at open (a reload may replace @conf; [cluster]
	 * cannot change while running): read by the engine's membership thread. */
	char fence_agent[DAEMON_PATH_MAX + 1];
	char cluster[DAEMON_NAME_MAX + 1];
	uint32_t fence_timeout_ms;
};

/* cd_now_ns - the monotonic clock. */
static uint64_t cd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

extern char **environ;

/* cd_wait_child - reap @pid within @timeout_ms: 0 with its wait status, -ETIMEDOUT (still
 * running), or -errno. Waits on its pidfd; without one (a kernel before 5.3), looks every 10 ms. */
static int cd_wait_child(pid_t pid, uint32_t timeout_ms, int *st)
{
	uint64_t until = cd_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), ret = 0;

	for (;;) {
		uint64_t now = cd_now_ns();
		pid_t r = waitpid(pid, st, WNOHANG);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		if (now >= until) {
			ret = -ETIMEDOUT;
			break;
		}
		if (pidfd >= 0) {
			struct pollfd pf = { .fd = pidfd, .events = POLLIN };

			(void)poll(&pf, 1, (int)((until - now) / 1000000ull) + 1);
		} else {
			struct timespec nap = { .tv_nsec = 10000000 };

			nanosleep(&nap, NULL);
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	return ret;
}

/*
 * cd_fence_agent - [cluster] fence = agent (coh_node_attr.fence_agent): run fence_agent with
 * sh -c, COHORT_FENCE_NODE and COHORT_FENCE_CLUSTER in its environment, on the engine's
 * membership thread. 0 only if it exits 0 within the timeout (the node is off: a STONITH
 * agent's answer); a command still running then is killed, and counts as failed.
 */
static int cd_fence_agent(void *arg, uint32_t node)
{
	struct cohortd *d = arg;
	uint32_t timeout_ms = d->fence_timeout_ms;
	char env_node[32], env_cluster[sizeof(d->cluster) + 32];
	char *argv[] = { "sh", "-c", d->fence_agent, NULL };
	posix_spawnattr_t sa;
	size_t nenv = 0, i;
	sigset_t none;
	char **envp;
	int ret, st;
	pid_t pid;

	while (environ[nenv])
		nenv++;
	envp = calloc(nenv + 3, sizeof(*envp));
	if (!envp)
		return -ENOMEM;
	snprintf(env_node, sizeof(env_node), "COHORT_FENCE_NODE=%u", node);
	snprintf(env_cluster, sizeof(env_cluster), "COHORT_FENCE_CLUSTER=%s", d->cluster);
	for (i = 0; i < nenv; i++)
		envp[i] = environ[i];
	envp[nenv] = env_node;
	envp[nenv + 1] = env_cluster;
	/* The daemon blocks its signals for sigtimedwait: the agent gets none blocked. */
	sigemptyset(&none);
	ret = -posix_spawnattr_init(&sa);
	if (!ret)
		ret = -posix_spawnattr_setsigmask(&sa, &none);
	if (!ret)
		ret = -posix_spawnattr_setflags(&sa, POSIX_SPAWN_SETSIGMASK);
	if (!ret)
		ret = -posix_spawn(&pid, "/bin/sh", NULL, &sa, argv, envp);
	posix_spawnattr_destroy(&sa);
	free(envp);
	if (ret) {
		daemon_log("fence", "node %u: cannot run the agent: %s", node, strerror(-ret));
		return ret;
	}
	daemon_log("fence", "node %u: running the agent (pid %d, at most %u ms): %s", node,
		   (int)pid, timeout_ms, d->fence_agent);
	ret = cd_wait_child(pid, timeout_ms, &st);
	if (ret == -ETIMEDOUT) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		daemon_log("fence",
			   "node %u: the agent did not finish within %u ms: killed, "
			   "counted as failed",
			   node, timeout_ms);
		return ret;
	}
	if (ret) {
		daemon_log("fence", "node %u: waiting for the agent: %s", node, strerror(-ret));
		return ret;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		daemon_log("fence", "node %u: fenced (the agent exited 0)", node);
		return 0;
	}
	if (WIFEXITED(st))
		daemon_log("fence", "node %u: the agent failed (exit %d)", node, WEXITSTATUS(st));
	else
		daemon_log("fence", "node %u: the agent failed (signal %d)", node,
			   WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return -EIO;
}

/* cd_members - "0,1,2" from a member bitmap. */
static void cd_members(uint32_t members, char *out, size_t len)
{
	size_t n = 0;
	uint32_t i;

	out[0] = '\0';
	for (i = 0; i < 32 && n < len; i++) {
		if (members & (1u << i))
			n += (size_t)snprintf(out + n, len - n, "%s%u", n ? "," : "", i);
	}
}

static json_t *cd_nodes_json(uint32_t mask);

/* cd_groups_status - a routed config's groups, each its own cluster (status shows the first
 * one's view as the node's and these beside it); NULL when not routed. *@degraded is set when
 * any group is degraded or lacks a quorum. */
static json_t *cd_groups_status(struct cohortd *d, bool *degraded)
{
	struct coh_node_stats *st;
	json_t *a;
	uint32_t g;

	if (d->ngroups < 2 || !(st = malloc(sizeof(*st))))
		return NULL;
	a = json_array();
	for (g = 0; g < d->ngroups; g++) {
		bool ok = !coh_node_stats(d->gnode[g], st);
		bool deg = !ok || !st->quorum || st->degraded || st->elements_missing;

		*degraded |= deg;
		json_array_append_new(
		    a, json_pack("{s:s, s:I, s:o, s:b, s:b, s:b, s:b, s:I}", "name",
				 d->conf->groups[g].name, "epoch", (json_int_t)(ok ? st->epoch : 0),
				 "members", cd_nodes_json(ok ? st->members : 0), "quorum",
				 ok && st->quorum, "degraded", deg, "view_changing",
				 ok && st->view_changing, "amf_here",
				 (d->conf->groups[g].amfs >> d->conf->node) & 1, "recovered_blocks",
				 (json_int_t)(ok ? st->recovered_blocks : 0)));
	}
	free(st);
	return a;
}

/* cd_status - the "status" answer: what coh_node_stats exposes about the cluster, and
 * @groups (cd_groups_status; taken over) when routed. */
static json_t *cd_status(struct cohortd *d, const struct daemon_conf *c,
			 const struct coh_node_stats *st, json_t *groups, bool groups_degraded)
{
	json_t *nodes = json_array(), *r;
	uint32_t i;

	for (i = 0; i < c->nodes; i++) {
		bool member = st->members & (1u << i);
		const char *role = member ? "member" : "dead";

		/* This node knows what it is doing itself; of the others, only whether they are
		 * members of its view. */
		if (i == c->node && st->log_moving)
			role = "member, log moving";
		else if (i == c->node && st->view_changing)
			role = "member, view change";
		json_array_append_new(nodes,
				      json_pack("{s:I, s:s, s:I, s:b}", "id", (json_int_t)i, "role",
						role, "log_copies", (json_int_t)st->log_copies[i],
						"this", i == c->node));
	}
	r = json_pack(
	    "{s:b, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:b, s:I, s:o, s:{s:I, s:I, s:I, "
	    "s:I, s:I}, s:b, s:b, s:b, s:I, s:[s, s]}",
	    "ok", 1, "cluster", c->cluster, "node", (json_int_t)c->node, "nodes",
	    (json_int_t)c->nodes, "epoch", (json_int_t)st->epoch, "members",
	    (json_int_t)__builtin_popcount(st->members), "quorum", st->quorum, "degraded",
	    st->degraded || st->elements_missing || groups_degraded, "stopped", st->stopped,
	    "log_copies_wanted", (json_int_t)st->log_copies_wanted, "roles", nodes, "recovery",
	    "recoveries", (json_int_t)st->recoveries, "recovered_blocks",
	    (json_int_t)st->recovered_blocks, "recovered_writers",
	    (json_int_t)st->recovered_writers, "stale_records", (json_int_t)st->stale_records,
	    "last_recovery_ns", (json_int_t)st->last_recovery_ns, "view_changing",
	    st->view_changing, "log_moving", st->log_moving, "abandon_pending", st->abandon_pending,
	    "elements_missing", (json_int_t)st->elements_missing, "not_exposed",
	    "another node's role beyond member or not (leaving, moving its log)",
	    "resync as a count (a log is not copied to a new peer: the writer destages, then "
	    "starts the log afresh there; log_moving says it is under way)");
	(void)d;
	/* A routed config: the view above is the first group's; each group's is here. */
	if (r && groups)
		json_object_set_new(r, "groups", groups);
	else
		json_decref(groups);
	return r;
}

/* cd_volumes_routed - the "volumes" answer of a routed config: the live mapping table (it changes
 * online: cohortctl map add/grow/remove), not the config's volumes. Control thread (d->map). */
static json_t *cd_volumes_routed(struct cohortd *d)
{
	struct coh_map *m = d->map;
	json_t *a = json_array();
	uint32_t i;
	char id[33];

	coh_route_map(d->router, m);
	for (i = 0; i < m->nvolumes; i++) {
		const struct coh_map_volume *v = &m->volumes[i];
		bool logical = v->kind == COH_MAP_LOGICAL;

		daemon_volume_id_hex(v->id, id);
		json_array_append_new(
		    a, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "name", v->name, "id", id,
				 "kind", logical ? "logical" : "virtual", "group",
				 logical ? m->groups[v->group].name : "", "first_block",
				 (json_int_t)(logical ? v->first_block : 0), "blocks",
				 (json_int_t)v->blocks, "bytes",
				 (json_int_t)(v->blocks * d->conf->block_size)));
	}
	return json_pack("{s:b, s:I, s:I, s:I, s:o}", "ok", 1, "block_size",
			 (json_int_t)d->conf->block_size, "groups", (json_int_t)m->ngroups,
			 "version", (json_int_t)m->version, "volumes", a);
}

/* cd_volumes - the "volumes" answer: the config's volumes on its one group. */
static json_t *cd_volumes(const struct daemon_conf *c)
{
	json_t *a = json_array();
	uint32_t i;
	char id[33];

	for (i = 0; i < c->nvolumes; i++) {
		const struct daemon_volume *v = &c->volumes[i];

		daemon_volume_id_hex(v->id, id);
		json_array_append_new(
		    a,
		    json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "name", v->name, "id", id,
			      "kind", v->kind == COH_MAP_VIRTUAL ? "virtual" : "logical", "group",
			      v->kind == COH_MAP_VIRTUAL    ? ""
			      : c->groups[v->group].name[0] ? c->groups[v->group].name
							    : "default",
			      "first_block", (json_int_t)v->first_block, "blocks",
			      (json_int_t)v->blocks, "bytes",
			      (json_int_t)(v->blocks * c->block_size)));
	}
	return json_pack("{s:b, s:I, s:I, s:o}", "ok", 1, "block_size", (json_int_t)c->block_size,
			 "capacity_blocks", (json_int_t)c->groups[0].capacity_blocks, "volumes", a);
}

/* cd_nodes_json - a node mask as an array of ids. */
static json_t *cd_nodes_json(uint32_t mask)
{
	json_t *a = json_array();
	uint32_t i;

	for (i = 0; i < 32; i++) {
		if (mask & (1u << i))
			json_array_append_new(a, json_integer(i));
	}
	return a;
}

/* cd_map - the "map" answer: the mapping table (groups with their AMFs and this node's engine
 * of each, volumes with where they lie), and the router's counters. */
static json_t *cd_map(struct cohortd *d)
{
	struct coh_map *m = d->map;
	struct coh_route_stats rs;
	struct coh_fwd_stats fs = { 0 };
	struct coh_fwd *fwd;
	struct coh_node_stats *st;
	json_t *groups = json_array(), *vols = json_array(), *comps, *res;
	uint32_t i, k;
	char id[33];

	if (!m) {
		json_decref(groups);
		json_decref(vols);
		return NULL;
	}
	coh_route_map(d->router, m); /* the table as it is now: it changes online */
	st = malloc(sizeof(*st));
	for (i = 0; i < m->ngroups; i++) {
		const struct coh_map_group *g = &m->groups[i];
		bool ok = st && !coh_node_stats(d->gnode[i], st);

		json_array_append_new(
		    groups,
		    json_pack("{s:s, s:o, s:I, s:I, s:b, s:I, s:o, s:b}", "name", g->name, "amfs",
			      cd_nodes_json(g->amfs), "preferred", (json_int_t)g->preferred,
			      "blocks", (json_int_t)g->blocks, "amf_here",
			      (g->amfs >> d->conf->node) & 1, "epoch",
			      (json_int_t)(ok ? st->epoch : 0), "members",
			      cd_nodes_json(ok ? st->members : 0), "quorum", ok && st->quorum));
	}
	free(st);
	for (i = 0; i < m->nvolumes; i++) {
		const struct coh_map_volume *v = &m->volumes[i];
		json_t *o;

		daemon_volume_id_hex(v->id, id);
		if (v->kind == COH_MAP_LOGICAL) {
			o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "name", v->name, "id", id,
				      "kind", "logical", "group", m->groups[v->group].name,
				      "first_block", (json_int_t)v->first_block, "blocks",
				      (json_int_t)v->blocks);
		} else {
			comps = json_array();
			for (k = 0; k < v->ncomp; k++)
				json_array_append_new(comps,
						      json_string(m->volumes[v->comp[k]].name));
			o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:I}", "name", v->name, "id",
				      id, "kind", "virtual", "layout",
				      v->layout == COH_MAP_STRIPE ? "stripe" : "concat",
				      "chunk_blocks", (json_int_t)v->stripe_blocks, "components",
				      comps, "blocks", (json_int_t)v->blocks);
		}
		json_array_append_new(vols, o);
	}
	coh_route_stats(d->router, &rs);
	fwd = coh_route_forwarder(d->router);
	coh_fwd_stats(fwd, &fs);
	res = json_pack(
	    "{s:b, s:I, s:I, s:I, s:s, s:I, s:I, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
	    "s:{s:o, s:I, s:I, s:I, s:I}}",
	    "ok", 1, "version", (json_int_t)m->version, "changes", (json_int_t)rs.map_changes,
	    "conflicts", (json_int_t)rs.map_conflicts, "kept_in", d->map_path, "node",
	    (json_int_t)d->conf->node, "block_size", (json_int_t)m->block_size, "groups", groups,
	    "volumes", vols, "routing", "local", (json_int_t)rs.local, "forwarded",
	    (json_int_t)rs.forwarded, "to_holder", (json_int_t)rs.to_holder, "read_cached",
	    (json_int_t)rs.read_cached, "components", (json_int_t)rs.components, "rerouted",
	    (json_int_t)rs.rerouted, "waited_views", (json_int_t)rs.waited_views, "refused_fenced",
	    (json_int_t)rs.refused_fenced, "coord_held", (json_int_t)rs.coord_held,
	    "executed_for_others", (json_int_t)rs.executed_for_others, "forwarder", "connected",
	    cd_nodes_json(coh_fwd_up(fwd) & ~(1u << d->conf->node)), "peer_downs",
	    (json_int_t)fs.peer_downs, "reconnects", (json_int_t)fs.reconnects, "timeouts",
	    (json_int_t)fs.timeouts, "abandoned", (json_int_t)fs.abandoned);
	/* A conflict (docs/routing.md, "Two tables of one version"): with whom, and what it
	 * refused. */
	if (res) {
		json_object_set_new(res, "conflict_with", cd_nodes_json(rs.conflict_peers));
		/* changes asked of this one while it ran another (their askers asked again) */
		json_object_set_new(res, "changes_busy", json_integer((json_int_t)rs.changes_busy));
		json_object_set_new(json_object_get(res, "routing"), "refused_conflict",
				    json_integer((json_int_t)rs.refused_conflict));
	}
	return res;
}

/* cd_map_change - the "map-change" request: a volume added, grown or removed online, made
 * cluster-wide by the configuration controller (coh_route_map_change; bounded). */
static json_t *cd_map_change(struct cohortd *d, json_t *req, char *err, size_t errlen)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	struct coh_map *m;
	uint64_t version;
	int ret, tries;

	if (!d->router) {
		snprintf(err, errlen,
			 "no mapping table: this config has one unnamed [group] (no routing)");
		return NULL;
	}
	m = malloc(sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* -ESTALE: another change was made between the read and the ask (another asker's, or an
	 * interrupted one finished); the edit is made again on the new table, a few times. */
	for (tries = 0, ret = -ESTALE; ret == -ESTALE && tries < 4; tries++) {
		err[0] = 0;
		ret = coh_route_map(d->router, m);
		if (!ret)
			ret = daemon_map_edit(d->conf->cluster, req, m, err, errlen);
		if (!ret) {
			ret = coh_route_map_change(d->router, m, err, errlen);
			if (ret && !err[0])
				snprintf(err, errlen, "%s", coh_strerror(ret));
		}
	}
	version = m->version;
	free(m);
	if (ret) {
		daemon_log("route", "map %s refused: %s", op ? op : "", err);
		return NULL;
	}
	daemon_log("route", "map %s %s: table version %" PRIu64, op,
		   json_string_value(json_object_get(req, "name")), version);
	return json_pack("{s:b, s:I}", "ok", 1, "version", (json_int_t)version);
}

/* cd_lat - percentiles of one latency histogram, in ns. */
static json_t *cd_lat(const uint64_t *hist)
{
	return json_pack("{s:I, s:I, s:I}", "p50", (json_int_t)coh_lat_percentile(hist, 0.5), "p99",
			 (json_int_t)coh_lat_percentile(hist, 0.99), "p999",
			 (json_int_t)coh_lat_percentile(hist, 0.999));
}

/* cd_stats - the "stats" answer: counters, rates over the last interval, latency, cache. */
static json_t *cd_stats(struct cohortd *d)
{
	struct coh_node_stats *prev, *cur;
	double secs, rr = 0, wr = 0, hit = -1;
	json_t *r = NULL;

	prev = malloc(sizeof(*prev));
	cur = malloc(sizeof(*cur));
	if (!prev || !cur)
		goto out;
	/* The rates come from the main thread's last two samples (about a second apart); the
	 * counters are read now, so that what a client just did is counted in the answer. */
	pthread_mutex_lock(&d->lock);
	*prev = d->prev;
	*cur = d->cur;
	secs = d->prev_ns ? (double)(d->cur_ns - d->prev_ns) / 1e9 : 0;
	pthread_mutex_unlock(&d->lock);
	if (secs > 0) {
		rr = (double)(cur->reads - prev->reads) / secs;
		wr = (double)(cur->writes - prev->writes) / secs;
	}
	if (coh_node_stats(d->node, cur))
		goto out;
	if (cur->cache_valid && cur->cache_hits + cur->cache_misses)
		hit = (double)cur->cache_hits / (double)(cur->cache_hits + cur->cache_misses);
	r = json_pack(
	    "{s:b, s:I, s:I, s:f, s:f, s:f, s:f, s:{s:o, s:o}, s:{s:b, s:I, s:I, s:I, "
	    "s:o}, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, "
	    "s:I, s:I, s:I}, s:[s]}",
	    "ok", 1, "reads", (json_int_t)cur->reads, "writes", (json_int_t)cur->writes,
	    "interval_s", secs, "read_iops", rr, "write_iops", wr, "iops", rr + wr, "latency_ns",
	    "read", cd_lat(cur->lat_read), "write", cd_lat(cur->lat_write), "cache", "valid",
	    cur->cache_valid, "hits", (json_int_t)cur->cache_hits, "misses",
	    (json_int_t)cur->cache_misses, "peer_fetches", (json_int_t)cur->cache_peer_fetches,
	    /* null: no block read in this view (or a view change held the cache) */
	    "hit_rate", hit >= 0 ? json_real(hit) : json_null(), "lock_requests",
	    (json_int_t)cur->lock_requests, "lock_transfers", (json_int_t)cur->lock_transfers,
	    "grants_lost", (json_int_t)cur->lock_grants_lost, "replies_dropped",
	    (json_int_t)cur->lock_replies_dropped, "view_changes", (json_int_t)cur->view_changes,
	    "takeovers", (json_int_t)cur->takeovers, "locks_taken", (json_int_t)cur->locks_taken,
	    "formations_failed", (json_int_t)cur->formations_failed, "fence_agent_fenced",
	    (json_int_t)cur->fence_agent_fenced, "fence_agent_failed",
	    (json_int_t)cur->fence_agent_failed, "destages", (json_int_t)cur->destages,
	    "io_inflight", (json_int_t)cur->io_inflight, "io_refused", (json_int_t)cur->io_refused,
	    "log", "used", (json_int_t)cur->log_used, "size", (json_int_t)cur->log_size,
	    "full_waits", (json_int_t)cur->log_backpressure, "bg_destages",
	    (json_int_t)cur->log_bg_destages, "bg_blocks", (json_int_t)cur->log_bg_blocks,
	    "not_exposed",
	    d->ngroups > 1 ? "the other groups' engines (these are the first group's; forwarded "
			     "and routed commands are in cohortctl map)"
			   : "forwarded commands (a config without routing forwards none)");
out:
	free(prev);
	free(cur);
	return r;
}

/*
 * cd_stop_groups - the ordered stop of every group's cluster (one, unless routed), each tried
 * even when another failed. A group's -EAGAIN (a view change or a log move under way: soon
 * again) is tried again until CD_STOP_TIMEOUT_MS has passed. Returns 0 or the first error.
 */
static int cd_stop_groups(struct cohortd *d)
{
	struct timespec nap = { .tv_nsec = 100000000L };
	uint64_t until = cd_now_ns() + CD_STOP_TIMEOUT_MS * 1000000ull;
	const char *name;
	int ret, first = 0;
	uint32_t g;

	for (g = 0; g < d->ngroups; g++) {
		name = d->conf->groups[g].name[0] ? d->conf->groups[g].name : "default";
		for (;;) {
			ret = coh_node_stop_cluster(d->gnode[g], CD_STOP_TIMEOUT_MS);
			if (ret != -EAGAIN || cd_now_ns() >= until)
				break;
			/* The destage met log records it could not retire yet (a log peer changed
			 * with the last view): they stay in the log copies either way. */
			daemon_log("cluster", "group %s: ordered stop: %s: asking again", name,
				   coh_strerror(ret));
			nanosleep(&nap, NULL);
		}
		if (ret)
			daemon_log("cluster", "group %s: ordered stop: %s", name,
				   coh_strerror(ret));
		if (ret && !first)
			first = ret;
	}
	return first;
}

/* cd_request - the control thread's handler (daemon_ctl_fn). */
static json_t *cd_request(void *arg, const char *cmd, json_t *req, char *err, size_t errlen)
{
	struct cohortd *d = arg;
	struct coh_node_stats *st;
	json_t *r = NULL, *groups = NULL;
	bool groups_degraded = false;
	int ret;

	(void)req;
	if (!strcmp(cmd, "volumes") && d->map)
		return cd_volumes_routed(d);
	if (!strcmp(cmd, "status") || !strcmp(cmd, "volumes")) {
		st = malloc(sizeof(*st));
		if (!st) {
			snprintf(err, errlen, "out of memory");
			return NULL;
		}
		ret = coh_node_stats(d->node, st);
		if (cmd[0] == 's')
			groups = cd_groups_status(d, &groups_degraded);
		pthread_mutex_lock(&d->lock);
		if (ret)
			snprintf(err, errlen, "node stats: %s", coh_strerror(ret));
		else if (cmd[0] == 's')
			r = cd_status(d, d->conf, st, groups, groups_degraded);
		else
			r = cd_volumes(d->conf);
		pthread_mutex_unlock(&d->lock);
		if (ret)
			json_decref(groups);
		free(st);
		return r;
	}
	if (!strcmp(cmd, "exports"))
		return json_pack("{s:b, s:s, s:o}", "ok", 1, "front_end",
				 d->tcmu ? daemon_tcmu_ops.name : "none", "exports",
				 daemon_exports_json(d->exports));
	if (!strcmp(cmd, "stats"))
		return cd_stats(d);
	if (!strcmp(cmd, "map-change"))
		return cd_map_change(d, req, err, errlen);
	if (!strcmp(cmd, "map")) {
		r = cd_map(d);
		if (!r)
			snprintf(
			    err, errlen,
			    "no mapping table: this config has one unnamed [group] (no routing)");
		return r;
	}
	if (!strcmp(cmd, "stop")) {
		daemon_log("cluster", "ordered stop asked on the control socket");
		ret = cd_stop_groups(d);
		if (ret) {
			daemon_log("cluster", "ordered stop: %s", coh_strerror(ret));
			snprintf(err, errlen, "cluster stop: %s", coh_strerror(ret));
			/* -ETIMEDOUT: the members that answered stopped; this node leaves too, and
			 * the rest is in log copies the next start replays. */
			if (ret != -ETIMEDOUT)
				return NULL;
		}
		atomic_store(&d->stop_requested, true);
		return json_pack("{s:b, s:s}", "ok", ret ? 0 : 1, ret ? "error" : "result",
				 ret ? err : "every member destaged and stopped");
	}
	snprintf(
	    err, errlen,
	    "unknown command \"%.64s\" (status, volumes, map, map-change, exports, stats, stop)",
	    cmd);
	return NULL;
}

/* cd_sample - take a sample of the counters; log view changes. */
static void cd_sample(struct cohortd *d, struct coh_node_stats *st, uint32_t *epoch,
		      uint32_t *members)
{
	uint64_t now = cd_now_ns();
	char m[128];

	if (coh_node_stats(d->node, st))
		return;
	if (st->epoch != *epoch || st->members != *members) {
		cd_members(st->members, m, sizeof(m));
		daemon_log("view", "epoch %u, members %s (%u of %u), quorum %s%s", st->epoch, m,
			   __builtin_popcount(st->members), d->conf->nodes,
			   st->quorum ? "yes" : "no", st->degraded ? ", degraded" : "");
		*epoch = st->epoch;
		*members = st->members;
	}
	pthread_mutex_lock(&d->lock);
	if (now - d->cur_ns >= CD_SAMPLE_NS) {
		d->prev = d->cur;
		d->prev_ns = d->cur_ns;
		d->cur = *st;
		d->cur_ns = now;
	}
	pthread_mutex_unlock(&d->lock);
}

/* cd_follow_table - a routed config: once the router has adopted another table (@changes: its
 * count when last looked), the exports follow it (a grown volume's unit grows). Main thread. */
static void cd_follow_table(struct cohortd *d, uint64_t *changes)
{
	struct coh_route_stats rs;

	if (!d->router || !d->tcmu)
		return;
	coh_route_stats(d->router, &rs);
	if (rs.map_changes == *changes)
		return;
	*changes = rs.map_changes;
	daemon_tcmu_follow(d->tcmu);
}

/* cd_reload - SIGHUP: a new config whose only changes are exports is applied; else refused. */
static void cd_reload(struct cohortd *d)
{
	char err[DAEMON_ERR_MAX], what[2 * DAEMON_ERR_MAX];
	struct daemon_conf *c = NULL, *old;
	int failed;

	daemon_log("config", "SIGHUP: reading %s", d->conf_path);
	if (daemon_conf_load(d->conf_path, d->node_override, &c, err, sizeof(err))) {
		daemon_log("config", "reload refused, the running config stays: %s", err);
		return;
	}
	if (daemon_conf_core_diff(d->conf, c, what, sizeof(what))) {
		daemon_log("config",
			   "reload refused, the running config stays: only [export] sections may "
			   "change while running, and %s",
			   what);
		daemon_conf_delete(&c);
		return;
	}
	failed = daemon_exports_apply(d->exports, c);
	pthread_mutex_lock(&d->lock);
	old = d->conf;
	d->conf = c;
	pthread_mutex_unlock(&d->lock);
	daemon_conf_delete(&old);
	daemon_log("config", "reloaded: %u exports%s", c->nexports,
		   failed ? " (some failed: see above)" : "");
}

/* cd_serve - the main loop: signals, samples, the cluster's stop. Returns how it ended. */
/* cd_minority_ns - how long a node that served may stay out of the majority before it leaves to be
 * restarted: ten failure-detector timeouts, at least 20 s; 0 (never) with k = 0. */
static uint64_t cd_minority_ns(const struct daemon_conf *c)
{
	uint64_t ms = 10ull * (c->timeout_ms ? c->timeout_ms : 2000);

	if (c->replicas == COH_NODE_REPLICAS_NONE || c->replicas == 0)
		return 0;
	return (ms < 20000 ? 20000 : ms) * 1000000ull;
}

/* cd_other_groups - a routed config: the other groups' engines stopped or excluded count as the
 * first one's (this daemon leaves if any of its engines must). */
static void cd_other_groups(struct cohortd *d, struct coh_node_stats *st)
{
	struct coh_node_stats *o;
	uint32_t g;

	if (d->ngroups < 2 || !(o = malloc(sizeof(*o))))
		return;
	for (g = 1; g < d->ngroups; g++) {
		if (coh_node_stats(d->gnode[g], o))
			continue;
		st->stopped |= o->stopped;
		if (o->excluded_epoch && !st->excluded_epoch)
			st->excluded_epoch = o->excluded_epoch;
		st->quorum &= o->quorum;
	}
	free(o);
}

static int cd_serve(struct cohortd *d, const sigset_t *sigs)
{
	struct timespec tick = { .tv_sec = 0, .tv_nsec = CD_TICK_MS * 1000000L };
	uint32_t epoch = 0, members = 0;
	uint64_t minority_since = 0, minority_ns = cd_minority_ns(d->conf), changes = 0;
	bool served = false;
	struct coh_node_stats *st;
	int sig;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	for (;;) {
		sig = sigtimedwait(sigs, NULL, &tick);
		if (sig == SIGTERM || sig == SIGINT) {
			daemon_log("node", "%s: leaving the cluster", strsignal(sig));
			break;
		}
		if (sig == SIGHUP)
			cd_reload(d);
		cd_sample(d, st, &epoch, &members);
		cd_other_groups(d, st);
		cd_follow_table(d, &changes);
		if (atomic_load(&d->stop_requested)) {
			daemon_log("cluster", "stopped (by this node's request): leaving");
			break;
		}
		if (st->stopped) {
			daemon_log("cluster", "stopped by another node: leaving");
			break;
		}
		/* Out of the majority after serving, for long: on rdma an excluded node may never
		 * hear that it was (its connections are gone), and a minority node of this
		 * incarnation is never taken back either. With k >= 1 what it acknowledged is in
		 * its peers' logs, so a restart loses nothing; with k = 0 it holds the only copy of
		 * what it has not destaged, and waits instead. */
		served |= st->quorum;
		minority_since = st->quorum || !served ? 0
				 : minority_since      ? minority_since
						       : cd_now_ns();
		if (minority_since && minority_ns && cd_now_ns() - minority_since > minority_ns) {
			daemon_log(
			    "node",
			    "out of the majority for %llu s (epoch %u): leaving, to be restarted "
			    "(exit %d); a restart rejoins once a majority serves",
			    (unsigned long long)(minority_ns / 1000000000ull), st->epoch,
			    CD_EXIT_EXCLUDED);
			free(st);
			return CD_EXIT_EXCLUDED;
		}
		if (st->excluded_epoch) {
			/* Paused or cut off past the failure detector: the others went on, and this
			 * incarnation serves nothing again. A restart is a new one, which rejoins. */
			daemon_log(
			    "node",
			    "excluded from the cluster in epoch %u: leaving, to be restarted "
			    "(exit %d); a restart rejoins",
			    st->excluded_epoch, CD_EXIT_EXCLUDED);
			free(st);
			return CD_EXIT_EXCLUDED;
		}
	}
	free(st);
	return 0;
}

/* cd_open_group - group @g's engine over @fab; checked against the config's arithmetic. */
static int cd_open_group(struct cohortd *d, uint32_t g, struct coh_fabric *fab)
{
	const struct daemon_conf *c = d->conf;
	const struct daemon_group *gr = &c->groups[g];
	const char *name = gr->name[0] ? gr->name : "default";
	struct coh_node_attr na;
	uint64_t t0 = cd_now_ns();
	int ret;

	if (gr->log_dir[0] && mkdir(gr->log_dir, 0700) && errno != EEXIST) {
		ret = -errno;
		daemon_log("log", "%s: cannot create: %s", gr->log_dir, strerror(errno));
		return ret;
	}
	daemon_conf_node_attr(c, g, fab, &na);
	if (c->fence == COH_FENCE_AGENT) {
		na.fence_agent = cd_fence_agent;
		na.fence_arg = d;
	}
	daemon_log("node",
		   "group %s: opening: recovery or rejoin, then serving (%u nodes, raid%u over %u "
		   "elements%s)",
		   name, c->nodes, gr->raid, gr->nelems,
		   !c->routed		       ? ""
		   : (gr->amfs >> c->node) & 1 ? ", an AMF here"
					       : ", no AMF here");
	ret = coh_node_open(&na, &d->gnode[g]);
	if (ret) {
		daemon_log("node", "group %s: cannot open: %s", name, coh_strerror(ret));
		return ret;
	}
	daemon_log("node", "group %s: serving after %.1f s: %" PRIu64 " blocks of %u bytes", name,
		   (double)(cd_now_ns() - t0) / 1e9, coh_node_nblocks(d->gnode[g]),
		   coh_node_block_size(d->gnode[g]));
	if (coh_node_nblocks(d->gnode[g]) < gr->capacity_blocks) {
		/* The config's arithmetic and the engine's disagree: refuse rather than serve a
		 * volume past the end. */
		daemon_log("node",
			   "group %s: the group has %" PRIu64
			   " blocks, the config counted %" PRIu64,
			   name, coh_node_nblocks(d->gnode[g]), gr->capacity_blocks);
		coh_node_close(&d->gnode[g]);
		return -ENOSPC;
	}
	return 0;
}

/* cd_engine_submit - the router's group engine: the node's asynchronous engine. */
static int cd_engine_submit(void *arg, struct coh_io *io)
{
	return coh_node_submit(arg, io);
}

/* cd_engine_read_cached - the router's read of a block the engine has at hand (no wait). */
static int cd_engine_read_cached(void *arg, uint64_t lba, void *buf)
{
	return coh_node_read_cached(arg, lba, buf);
}

/* cd_close_engines - the router, then every group's engine and fabric (a routed config), or the
 * node. Returns 0 when every engine closed cleanly, else the first error. */
static int cd_close_engines(struct cohortd *d)
{
	uint32_t g;
	int ret, first = 0;

	coh_route_delete(&d->router);
	for (g = d->ngroups; g-- > 0;) {
		ret = coh_node_close(&d->gnode[g]);
		if (ret) {
			daemon_log("node",
				   "close: %s (what it held is in log copies the next start "
				   "replays)",
				   coh_strerror(ret));
			first = first ? first : ret;
		}
		if (d->gfab[g]) {
			int fret = coh_fabric_close(&d->gfab[g]);

			if (fret)
				daemon_log("fabric", "close: %s", coh_strerror(fret));
		}
	}
	d->ngroups = 0;
	d->node = NULL;
	free(d->map);
	d->map = NULL;
	return first;
}

/* cd_group_view - the router's group_view: group @g's members as this node's engine of it has
 * them (every node is a member of every group's cluster). */
static uint32_t cd_group_view(void *arg, uint32_t g)
{
	struct cohortd *d = arg;

	if (g >= d->ngroups || !d->gnode[g])
		return UINT32_MAX; /* unknown: nobody counts as excluded */
	return coh_node_members(d->gnode[g]);
}

/* cd_group_holders - the router's group_holders: who holds group @g's block's lock, as this
 * node's engine of the group reads the directory. */
static int cd_group_holders(void *arg, uint32_t g, uint64_t gblock, uint32_t *owner,
			    uint32_t *sharers)
{
	struct cohortd *d = arg;

	if (g >= d->ngroups)
		return -EINVAL;
	return coh_node_lock_holders(d->gnode[g], gblock, owner, sharers);
}

/* cd_open_router - a routed config: every group's fabric and engine, then the router. */
static int cd_open_router(struct cohortd *d)
{
	const struct daemon_conf *c = d->conf;
	struct coh_route_attr ra = { .attr_size = sizeof(ra) };
	struct coh_fabric_attr fa;
	uint32_t g;
	int ret;

	d->map = malloc(sizeof(*d->map));
	if (!d->map)
		return -ENOMEM;
	daemon_conf_map(c, d->map);
	for (g = 0; g < c->ngroups; g++) {
		daemon_conf_group_fabric_attr(c, g, &fa);
		ret = coh_fabric_open(&fa, &d->gfab[g]);
		if (ret) {
			daemon_log("fabric", "group %s: %s at %s: cannot open: %s",
				   c->groups[g].name, c->provider, c->groups[g].address,
				   coh_strerror(ret));
			goto err_close;
		}
		d->ngroups = g + 1;
		ret = cd_open_group(d, g, d->gfab[g]);
		if (ret)
			goto err_close;
		if ((c->groups[g].amfs >> c->node) & 1) {
			ra.group_submit[g] = cd_engine_submit;
			ra.group_read_cached[g] = cd_engine_read_cached;
			ra.group_arg[g] = d->gnode[g];
		}
	}
	d->node = d->gnode[0];
	ra.map = d->map;
	ra.fab = d->fab;
	/* The table is kept beside the groups' log directories, named for the node (the nodes of
	 * an shm cluster share the directory): changes made online outlive every restart (the
	 * config's volumes are only its first version). */
	snprintf(d->map_path, sizeof(d->map_path), "%s/routing-node%u.map", c->log_dir, c->node);
	ra.map_path = d->map_path;
	/* rdma cannot prove a death: a component cut off from its target is routed again once
	 * the group's view has excluded the target (fenced, its log taken over). */
	ra.group_view = cd_group_view;
	ra.view_arg = d;
	/* A host that uses every path sends a block's commands to several controllers: each goes
	 * to the AMF that holds its lock, so the AMFs do not take it from each other. */
	ra.group_holders = cd_group_holders;
	ret = coh_route_new(&ra, &d->router);
	if (ret) {
		daemon_log("route", "cannot start the router (%s): %s", d->map_path,
			   coh_strerror(ret));
		goto err_close;
	}
	coh_route_map(d->router, d->map);
	daemon_log("route", "router up: %u groups, %u volumes, table version %" PRIu64,
		   d->map->ngroups, d->map->nvolumes, d->map->version);
	return 0;

err_close:
	cd_close_engines(d);
	return ret;
}

/* cd_open - the fabric and the engines; the volumes checked against the groups they made. */
static int cd_open(struct cohortd *d)
{
	const struct daemon_conf *c = d->conf;
	struct coh_fabric_attr fa;
	char id[33];
	uint32_t i;
	int ret;

	/* The log directory is the daemon's own (the engine maps files in it): made if missing. */
	if (c->log_dir[0] && mkdir(c->log_dir, 0700) && errno != EEXIST) {
		ret = -errno;
		daemon_log("log", "%s: cannot create: %s", c->log_dir, strerror(errno));
		return ret;
	}
	daemon_conf_fabric_attr(c, &fa);
	ret = coh_fabric_open(&fa, &d->fab);
	if (ret) {
		daemon_log("fabric", "%s at %s: cannot open: %s", c->provider, c->address,
			   coh_strerror(ret));
		return ret;
	}
	daemon_log("fabric", "%s at %s: open (authenticated by %s)", c->provider, c->address,
		   c->secret_path);
	if (c->fence == COH_FENCE_AGENT) {
		snprintf(d->fence_agent, sizeof(d->fence_agent), "%s", c->fence_agent);
		snprintf(d->cluster, sizeof(d->cluster), "%s", c->cluster);
		d->fence_timeout_ms = c->timeout_ms ? c->timeout_ms : COH_FABRIC_DEFAULT_TIMEOUT_MS;
	}
	if (c->routed) {
		ret = cd_open_router(d);
	} else {
		ret = cd_open_group(d, 0, d->fab);
		if (!ret) {
			d->ngroups = 1;
			d->node = d->gnode[0];
		}
	}
	if (ret)
		goto err_close_fabric;
	for (i = 0; i < c->nvolumes; i++) {
		const struct daemon_volume *v = &c->volumes[i];

		daemon_volume_id_hex(v->id, id);
		if (v->kind == COH_MAP_VIRTUAL)
			daemon_log("volume",
				   "%s: virtual, %" PRIu64 " blocks over %u volumes, id %s",
				   v->name, v->blocks, v->ncomp, id);
		else
			daemon_log("volume", "%s: %s%sblocks %" PRIu64 " .. %" PRIu64 ", id %s",
				   v->name, c->groups[v->group].name,
				   c->groups[v->group].name[0] ? " " : "", v->first_block,
				   v->first_block + v->blocks - 1, id);
	}
	return 0;

err_close_fabric:
	coh_fabric_close(&d->fab);
	return ret;
}

/* cd_usage - the command line. */
static void cd_usage(FILE *f)
{
	fprintf(f, "usage: cohortd -c FILE [--node N] [--check]\n"
		   "  -c, --config FILE  the config (docs/operations.md)\n"
		   "  -n, --node N       this node's id, instead of [cluster] node\n"
		   "      --check        validate, print the resolved config, exit 0 or 1\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
					      { "node", required_argument, NULL, 'n' },
					      { "check", no_argument, NULL, 'k' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	struct cohortd d = { .node_override = -1 };
	char err[DAEMON_ERR_MAX], *end;
	bool check = false;
	sigset_t sigs;
	int opt, ret, status = 1;
	long v;

	while ((opt = getopt_long(argc, argv, "c:n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			d.conf_path = optarg;
			break;
		case 'n':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || !*optarg || v < 0 || v > 31) {
				fprintf(stderr, "cohortd: --node %s: want a node id, 0 to 31\n",
					optarg);
				return 2;
			}
			d.node_override = (int)v;
			break;
		case 'k':
			check = true;
			break;
		case 'h':
			cd_usage(stdout);
			return 0;
		default:
			cd_usage(stderr);
			return 2;
		}
	}
	if (!d.conf_path || optind != argc) {
		cd_usage(stderr);
		return 2;
	}
	ret = daemon_conf_load(d.conf_path, d.node_override, &d.conf, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "cohortd: %s\n", err);
		return 1;
	}
	if (check) {
		daemon_conf_print(d.conf, false, stdout);
		daemon_conf_delete(&d.conf);
		return 0;
	}
	daemon_log_set_node((int)d.conf->node);
	/* Signals are taken by the main thread with sigtimedwait: blocked before any thread
	 * starts (the fabric's and the engine's inherit the mask), so none is interrupted by one
	 * and no handler runs inside the engine. A SIGTERM during the open waits for it. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&d.lock, NULL);
	daemon_log("config", "%s: cluster %s, node %u of %u, %u volumes, %u exports", d.conf_path,
		   d.conf->cluster, d.conf->node, d.conf->nodes, d.conf->nvolumes,
		   d.conf->nexports);
	ret = cd_open(&d);
	if (ret)
		goto out_free_conf;
	if (d.conf->frontend_tcmu) {
		ret =
		    daemon_tcmu_new(d.node, d.conf->node, d.conf->nodes, d.conf->configfs, &d.tcmu);
		if (!ret && d.router)
			ret = daemon_tcmu_set_router(d.tcmu, d.router, d.map);
		if (ret) {
			daemon_log("export", "cannot start the TCMU front end: %s",
				   coh_strerror(ret));
			goto out_close_node;
		}
	}
	ret = daemon_exports_new(d.tcmu ? &daemon_tcmu_ops : NULL, d.tcmu, &d.exports);
	if (ret) {
		daemon_log("export", "cannot make the export table: %s", coh_strerror(ret));
		goto out_delete_tcmu;
	}
	daemon_exports_apply(d.exports, d.conf);
	ret = daemon_ctl_open(d.conf->control, cd_request, &d, &d.ctl, err, sizeof(err));
	if (ret) {
		daemon_log("control", "%s", err);
		goto out_delete_exports;
	}
	daemon_log("control", "listening on %s", d.conf->control);
	ret = cd_serve(&d, &sigs);
	status = ret == CD_EXIT_EXCLUDED ? CD_EXIT_EXCLUDED : ret ? 1 : 0;
	daemon_ctl_close(&d.ctl);
out_delete_exports:
	if (d.tcmu)
		daemon_tcmu_quiesce(d.tcmu);
	daemon_exports_delete(&d.exports);
out_delete_tcmu:
	daemon_tcmu_delete(&d.tcmu);
out_close_node:
	ret = cd_close_engines(&d);
	if (ret) {
		if (status != CD_EXIT_EXCLUDED)
			status = 1;
	} else {
		daemon_log("node", "closed cleanly");
	}
	ret = coh_fabric_close(&d.fab);
	if (ret)
		daemon_log("fabric", "close: %s", coh_strerror(ret));
out_free_conf:
	pthread_mutex_destroy(&d.lock);
	daemon_conf_delete(&d.conf);
	return status;
}
