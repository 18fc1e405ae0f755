/*
 * cohortctl.c - the control tool: sends one request to a cohortd's control socket and shows the
 * answer, as a table for people or (--json) the daemon's JSON object for programs. The socket is
 * given (-s) or found in the config (-c FILE [--node N]: [daemon] control, or its default).
 * Commands: status, volumes, map, exports, stats, stop. Exit status: 0 done; 1 the daemon answered
 * with an error, or none could be reached (no daemon, permission denied, daemon busy); 2 usage.
 *
 * Leaves out: changing exports (edit the config and SIGHUP the daemon), talking to several
 * daemons at once (run it once per node).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define CTL_TIMEOUT_MS 5000	  /* a request's bound */
#define CTL_STOP_TIMEOUT_MS 60000 /* stop: the daemon waits up to 30 s for the members */
/* a table change: the router's bound is three forwarder timeouts (4 x the fabric's) and 5 s */
#define CTL_CHANGE_TIMEOUT_MS 135000

/* ctl_int - an integer member, 0 when absent. */
static long long ctl_int(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* ctl_str - a string member, "?" when absent. */
static const char *ctl_str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "?";
}

/* ctl_yes - a boolean member as yes/no. */
static const char *ctl_yes(json_t *o, const char *key)
{
	return json_is_true(json_object_get(o, key)) ? "yes" : "no";
}

/* ctl_ns - a latency in ns, for people. */
static void ctl_ns(long long ns, char *out, size_t len)
{
	if (!ns)
		snprintf(out, len, "-");
	else if (ns < 10000)
		snprintf(out, len, "%lld ns", ns);
	else if (ns < 10000000)
		snprintf(out, len, "%.1f us", (double)ns / 1e3);
	else
		snprintf(out, len, "%.1f ms", (double)ns / 1e6);
}

/* ctl_not_exposed - the list of what the engine does not report yet. */
static void ctl_not_exposed(json_t *r)
{
	json_t *a = json_object_get(r, "not_exposed"), *v;
	size_t i;

	json_array_foreach(a, i, v)
	{
		printf("%s%s", i ? "; " : "not exposed by the engine yet: ", json_string_value(v));
	}
	if (json_array_size(a))
		printf("\n");
}

static void ctl_nodes(json_t *a, char *out, size_t len);

/* ctl_show_status - like `ceph -s` and `drbdadm status`: the cluster line, then each node. */
static void ctl_show_status(json_t *r)
{
	json_t *roles = json_object_get(r, "roles"), *n, *rec = json_object_get(r, "recovery");
	size_t i;

	printf("cluster %s: node %lld of %lld\n", ctl_str(r, "cluster"), ctl_int(r, "node"),
	       ctl_int(r, "nodes"));
	printf("  view:     epoch %lld, %lld of %lld members, quorum %s%s\n", ctl_int(r, "epoch"),
	       ctl_int(r, "members"), ctl_int(r, "nodes"), ctl_yes(r, "quorum"),
	       json_is_true(json_object_get(r, "stopped")) ? ", stopped" : "");
	printf("  health:   %s (log copies wanted per writer: %lld)\n",
	       json_is_true(json_object_get(r, "degraded")) ? "DEGRADED" : "ok",
	       ctl_int(r, "log_copies_wanted"));
	if (ctl_int(r, "elements_missing"))
		printf("  elements: missing %#llx (bit i: element i; a rebuild is not done)\n",
		       (unsigned long long)ctl_int(r, "elements_missing"));
	printf("  recovery: %lld at open, %lld blocks replayed, %lld writers, %lld stale records\n",
	       ctl_int(rec, "recoveries"), ctl_int(rec, "recovered_blocks"),
	       ctl_int(rec, "recovered_writers"), ctl_int(rec, "stale_records"));
	if (json_is_true(json_object_get(r, "abandon_pending")))
		printf("  log:      a failed write's records may be live on a peer: no lock "
		       "handed on until they are marked\n");
	/* A routed config: each redundancy group is a cluster of its own (the view above is the
	 * first one's). */
	if (json_object_get(r, "groups")) {
		json_t *g;
		char members[64];

		printf("\n  %-16s %6s %-12s %-7s %-10s %s\n", "GROUP", "EPOCH", "MEMBERS", "QUORUM",
		       "HEALTH", "AMF HERE");
		json_array_foreach(json_object_get(r, "groups"), i, g)
		{
			ctl_nodes(json_object_get(g, "members"), members, sizeof(members));
			printf("  %-16s %6lld %-12s %-7s %-10s %s\n", ctl_str(g, "name"),
			       ctl_int(g, "epoch"), members, ctl_yes(g, "quorum"),
			       json_is_true(json_object_get(g, "degraded"))	   ? "DEGRADED"
			       : json_is_true(json_object_get(g, "view_changing")) ? "changing"
										   : "ok",
			       ctl_yes(g, "amf_here"));
		}
	}
	printf("\n  %-5s %-20s %s\n", "NODE", "ROLE", "LOG COPIES");
	json_array_foreach(roles, i, n)
	{
		printf("  %-5lld %-20s %lld%s\n", ctl_int(n, "id"), ctl_str(n, "role"),
		       ctl_int(n, "log_copies"),
		       json_is_true(json_object_get(n, "this")) ? "   (this node)" : "");
	}
	ctl_not_exposed(r);
}

/* ctl_show_volumes - the mapping table. */
static void ctl_show_volumes(json_t *r)
{
	json_t *vols = json_object_get(r, "volumes"), *v;
	size_t i;

	bool routed = json_object_get(r, "version") != NULL;

	if (routed)
		printf("%-20s %-32s %-8s %-10s %12s %12s %14s\n", "VOLUME", "ID", "KIND", "GROUP",
		       "FIRST BLOCK", "BLOCKS", "BYTES");
	else
		printf("%-20s %-32s %12s %12s %14s\n", "VOLUME", "ID", "FIRST BLOCK", "BLOCKS",
		       "BYTES");
	json_array_foreach(vols, i, v)
	{
		if (routed)
			printf("%-20s %-32s %-8s %-10s %12lld %12lld %14lld\n", ctl_str(v, "name"),
			       ctl_str(v, "id"), ctl_str(v, "kind"),
			       ctl_str(v, "group")[0] ? ctl_str(v, "group") : "-",
			       ctl_int(v, "first_block"), ctl_int(v, "blocks"),
			       ctl_int(v, "bytes"));
		else
			printf("%-20s %-32s %12lld %12lld %14lld\n", ctl_str(v, "name"),
			       ctl_str(v, "id"), ctl_int(v, "first_block"), ctl_int(v, "blocks"),
			       ctl_int(v, "bytes"));
	}
	if (routed)
		printf(
		    "(%zu volumes; block size %lld; mapping table version %lld over %lld groups: "
		    "cohortctl map shows where each one is)\n",
		    json_array_size(vols), ctl_int(r, "block_size"), ctl_int(r, "version"),
		    ctl_int(r, "groups"));
	else
		printf("(%zu volumes; block size %lld; the group has %lld blocks)\n",
		       json_array_size(vols), ctl_int(r, "block_size"),
		       ctl_int(r, "capacity_blocks"));
}

/* ctl_nodes - a JSON array of node ids as "0,1". */
static void ctl_nodes(json_t *a, char *out, size_t len)
{
	json_t *x;
	size_t i, n = 0;

	out[0] = '\0';
	json_array_foreach(a, i, x)
	{
		if (n < len)
			n += (size_t)snprintf(out + n, len - n, "%s%lld", n ? "," : "",
					      (long long)json_integer_value(x));
	}
	if (!n)
		snprintf(out, len, "-");
}

/* ctl_show_map - the mapping table: groups, then volumes, then the router's counters. */
static void ctl_show_map(json_t *r)
{
	json_t *gs = json_object_get(r, "groups"), *vs = json_object_get(r, "volumes"), *x, *c;
	json_t *rt = json_object_get(r, "routing");
	char amfs[64], members[64], where[96];
	size_t i, k, n;

	printf("mapping table version %lld, node %lld, block size %lld; kept in %s (%lld changes "
	       "adopted since the start, %lld conflicts)\n",
	       ctl_int(r, "version"), ctl_int(r, "node"), ctl_int(r, "block_size"),
	       ctl_str(r, "kept_in"), ctl_int(r, "changes"), ctl_int(r, "conflicts"));
	if (json_array_size(json_object_get(r, "conflict_with"))) {
		ctl_nodes(json_object_get(r, "conflict_with"), amfs, sizeof(amfs));
		printf("CONFLICT: node(s) %s run another table of this version or another history "
		       "of changes; the volumes the tables disagree on are fenced here (%lld "
		       "commands refused). docs/routing.md, \"Two tables of one version\"\n",
		       amfs, ctl_int(rt, "refused_conflict"));
	}
	printf("%-16s %-12s %9s %12s %-8s %6s %-12s %s\n", "GROUP", "AMFS", "PREFERRED", "BLOCKS",
	       "AMF HERE", "EPOCH", "MEMBERS", "QUORUM");
	json_array_foreach(gs, i, x)
	{
		ctl_nodes(json_object_get(x, "amfs"), amfs, sizeof(amfs));
		ctl_nodes(json_object_get(x, "members"), members, sizeof(members));
		printf("%-16s %-12s %9lld %12lld %-8s %6lld %-12s %s\n", ctl_str(x, "name"), amfs,
		       ctl_int(x, "preferred"), ctl_int(x, "blocks"), ctl_yes(x, "amf_here"),
		       ctl_int(x, "epoch"), members, ctl_yes(x, "quorum"));
	}
	printf("\n%-16s %-8s %-32s %12s %s\n", "VOLUME", "KIND", "ID", "BLOCKS", "WHERE");
	json_array_foreach(vs, i, x)
	{
		if (!strcmp(ctl_str(x, "kind"), "logical")) {
			snprintf(where, sizeof(where), "group %s from block %lld",
				 ctl_str(x, "group"), ctl_int(x, "first_block"));
		} else {
			n = (size_t)snprintf(where, sizeof(where), "%s", ctl_str(x, "layout"));
			if (!strcmp(ctl_str(x, "layout"), "stripe") && n < sizeof(where))
				n += (size_t)snprintf(where + n, sizeof(where) - n,
						      " (%lld blocks)", ctl_int(x, "chunk_blocks"));
			json_array_foreach(json_object_get(x, "components"), k, c)
			{
				if (n < sizeof(where))
					n += (size_t)snprintf(where + n, sizeof(where) - n, "%s%s",
							      k ? "," : " over ",
							      json_string_value(c));
			}
		}
		printf("%-16s %-8s %-32s %12lld %s\n", ctl_str(x, "name"), ctl_str(x, "kind"),
		       ctl_str(x, "id"), ctl_int(x, "blocks"), where);
	}
	printf("\nrouted here: %lld local, %lld forwarded (%lld to the AMF holding the lock, not "
	       "the preferred), %lld split into components, %lld routed again (%lld waited for a "
	       "view to exclude their target), %lld held by conflicts; %lld executed for other "
	       "controllers (%lld reads answered from the cache at once)\n",
	       ctl_int(rt, "local"), ctl_int(rt, "forwarded"), ctl_int(rt, "to_holder"),
	       ctl_int(rt, "components"), ctl_int(rt, "rerouted"), ctl_int(rt, "waited_views"),
	       ctl_int(rt, "coord_held"), ctl_int(rt, "executed_for_others"),
	       ctl_int(rt, "read_cached"));
	x = json_object_get(r, "forwarder");
	ctl_nodes(json_object_get(x, "connected"), members, sizeof(members));
	printf("forwarder: connected to %s; %lld connections broke, %lld made again, %lld commands "
	       "timed out, %lld abandoned (their target fenced)\n",
	       members, ctl_int(x, "peer_downs"), ctl_int(x, "reconnects"), ctl_int(x, "timeouts"),
	       ctl_int(x, "abandoned"));
}

/* ctl_show_exports - each export and its state. */
static void ctl_show_exports(json_t *r)
{
	json_t *xs = json_object_get(r, "exports"), *x;
	char dev[96];
	size_t i;

	printf("%-20s %-20s %-24s %s\n", "EXPORT", "VOLUME", "DEVICE", "STATE");
	json_array_foreach(xs, i, x)
	{
		snprintf(dev, sizeof(dev), "user_%lld/%s", ctl_int(x, "hba"), ctl_str(x, "device"));
		printf("%-20s %-20s %-24s %s\n", ctl_str(x, "name"), ctl_str(x, "volume"), dev,
		       ctl_str(x, "state"));
		/* A device that serves one initiator (the volume's reservations are cluster-wide). */
		if (json_string_length(json_object_get(x, "initiator")))
			printf("%-20s serves %s only\n", "", ctl_str(x, "initiator"));
	}
	printf("(%zu exports; front end: %s)\n", json_array_size(xs), ctl_str(r, "front_end"));
}

/* ctl_show_stats - counters, rates, latency, cache. */
static void ctl_show_stats(json_t *r)
{
	json_t *lat = json_object_get(r, "latency_ns"), *c = json_object_get(r, "cache");
	const char *names[] = { "read", "write" };
	char a[32], b[32], d[32];
	json_t *hr = json_object_get(c, "hit_rate");
	double hit = json_is_real(hr) ? json_real_value(hr) : -1;
	int i;

	printf("io:      %lld reads, %lld writes; %.0f IOPS (%.0f reads/s, %.0f writes/s over "
	       "the last %.1f s)\n",
	       ctl_int(r, "reads"), ctl_int(r, "writes"),
	       json_real_value(json_object_get(r, "iops")),
	       json_real_value(json_object_get(r, "read_iops")),
	       json_real_value(json_object_get(r, "write_iops")),
	       json_real_value(json_object_get(r, "interval_s")));
	for (i = 0; i < 2; i++) {
		json_t *l = json_object_get(lat, names[i]);

		ctl_ns(ctl_int(l, "p50"), a, sizeof(a));
		ctl_ns(ctl_int(l, "p99"), b, sizeof(b));
		ctl_ns(ctl_int(l, "p999"), d, sizeof(d));
		printf("latency: %-5s p50 %s, p99 %s, p99.9 %s\n", names[i], a, b, d);
	}
	if (hit >= 0)
		printf("cache:   hit rate %.1f%% (%lld hits, %lld misses, %lld from peers; this "
		       "view)\n",
		       hit * 100, ctl_int(c, "hits"), ctl_int(c, "misses"),
		       ctl_int(c, "peer_fetches"));
	else
		printf("cache:   hit rate n/a (no reads in this view, or a view change held the "
		       "cache)\n");
	printf("locks:   %lld requests, %lld transfers, %lld grants lost, %lld replies dropped\n",
	       ctl_int(r, "lock_requests"), ctl_int(r, "lock_transfers"), ctl_int(r, "grants_lost"),
	       ctl_int(r, "replies_dropped"));
	printf("cluster: %lld view changes (%lld formations failed), %lld takeovers (%lld locks), "
	       "%lld destages\n",
	       ctl_int(r, "view_changes"), ctl_int(r, "formations_failed"), ctl_int(r, "takeovers"),
	       ctl_int(r, "locks_taken"), ctl_int(r, "destages"));
	if (ctl_int(r, "fence_agent_fenced") || ctl_int(r, "fence_agent_failed"))
		printf("fence:   the agent fenced %lld nodes, failed %lld times (the lease was "
		       "outwaited instead)\n",
		       ctl_int(r, "fence_agent_fenced"), ctl_int(r, "fence_agent_failed"));
	{
		json_t *lg = json_object_get(r, "log");

		printf("log:     %lld of %lld KiB used; writers waited for a full log %lld times; "
		       "%lld background destage rounds (%lld blocks)\n",
		       ctl_int(lg, "used") / 1024, ctl_int(lg, "size") / 1024,
		       ctl_int(lg, "full_waits"), ctl_int(lg, "bg_destages"),
		       ctl_int(lg, "bg_blocks"));
	}
	ctl_not_exposed(r);
}

/* ctl_usage - the command line. */
static void ctl_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: cohortctl [-s SOCKET | -c FILE [--node N]] [--json] COMMAND\n"
	    "  status   the view: epoch, members, quorum, each node's role, log copies\n"
	    "  volumes  the volume table: name, id, first block, size\n"
	    "  map      a routed config's mapping table: groups with their AMFs, logical\n"
	    "           and virtual volumes, the router's counters\n"
	    "  map add NAME GROUP FIRST_BLOCK BLOCKS | map grow NAME BLOCKS | map remove NAME\n"
	    "  map add-virtual NAME concat VOL[,VOL...] | NAME stripe CHUNK_BLOCKS VOL[,VOL...]\n"
	    "           change the table online, on every controller (a logical volume made,\n"
	    "           grown or deleted; a virtual volume made over logical volumes in no\n"
	    "           other, or deleted; docs/routing.md)\n"
	    "  exports  the exports and their state\n"
	    "  stats    I/O counters, IOPS, latency, cache, locks, view changes\n"
	    "  stop     an ordered stop of the whole cluster (every daemon exits)\n");
}

/* ctl_count - @s as a count of blocks (decimal, 0 .. 2^48); -1 if it is not one. */
static long long ctl_count(const char *s)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	return errno || *end || !*s || v < 0 || v > (1ll << 48) ? -1 : v;
}

/* ctl_map_change - the request of "map add|grow|remove ..." (@n words at @w), or NULL with a
 * message. */
static json_t *ctl_map_change(int n, char **w)
{
	long long a = -1, b = -1;

	if (n == 5 && !strcmp(w[0], "add")) {
		a = ctl_count(w[3]);
		b = ctl_count(w[4]);
		if (a >= 0 && b > 0)
			return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "cmd", "map-change",
					 "op", "add", "name", w[1], "group", w[2], "first_block",
					 (json_int_t)a, "blocks", (json_int_t)b);
	} else if (n == 3 && !strcmp(w[0], "grow")) {
		b = ctl_count(w[2]);
		if (b > 0)
			return json_pack("{s:s, s:s, s:s, s:I}", "cmd", "map-change", "op", "grow",
					 "name", w[1], "blocks", (json_int_t)b);
	} else if (n == 2 && !strcmp(w[0], "remove")) {
		return json_pack("{s:s, s:s, s:s}", "cmd", "map-change", "op", "remove", "name",
				 w[1]);
	} else if (!strcmp(w[0], "add-virtual") &&
		   ((n == 4 && !strcmp(w[2], "concat")) || (n == 5 && !strcmp(w[2], "stripe")))) {
		json_t *vols = json_array();
		char *list = strdup(w[n - 1]), *save = NULL, *tok;

		a = n == 5 ? ctl_count(w[3]) : 0;
		for (tok = list ? strtok_r(list, ",", &save) : NULL; tok;
		     tok = strtok_r(NULL, ",", &save))
			json_array_append_new(vols, json_string(tok));
		free(list);
		if (json_array_size(vols) && (n == 4 || a > 0))
			return json_pack("{s:s, s:s, s:s, s:s, s:I, s:o}", "cmd", "map-change",
					 "op", "add-virtual", "name", w[1], "layout", w[2],
					 "chunk_blocks", (json_int_t)a, "volumes", vols);
		json_decref(vols);
	}
	fprintf(stderr,
		"cohortctl: map %s: want add NAME GROUP FIRST_BLOCK BLOCKS, add-virtual NAME "
		"concat VOL[,VOL...], add-virtual NAME stripe CHUNK_BLOCKS VOL[,VOL...], grow NAME "
		"BLOCKS or remove NAME (block counts in decimal)\n",
		n ? w[0] : "");
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "config", required_argument, NULL, 'c' },
					      { "node", required_argument, NULL, 'n' },
					      { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	static const char *const cmds[] = {
		"status", "volumes", "map", "exports", "stats", "stop"
	};
	const char *sock = NULL, *conf_path = NULL, *cmd;
	struct daemon_conf *conf = NULL;
	char err[DAEMON_ERR_MAX], path[DAEMON_PATH_MAX + 1], *end;
	json_t *req, *resp = NULL;
	int opt, node = -1, ret, status;
	bool json = false;
	size_t i;
	long v;

	while ((opt = getopt_long(argc, argv, "s:c:n:jh", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			sock = optarg;
			break;
		case 'c':
			conf_path = optarg;
			break;
		case 'n':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || !*optarg || v < 0 || v > 31) {
				fprintf(stderr, "cohortctl: --node %s: want a node id, 0 to 31\n",
					optarg);
				return 2;
			}
			node = (int)v;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		default:
			ctl_usage(stderr);
			return 2;
		}
	}
	if (optind >= argc || (!sock == !conf_path)) {
		ctl_usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (!strcmp(cmd, "map") && optind + 1 < argc) {
		req = ctl_map_change(argc - optind - 1, argv + optind + 1);
		if (!req)
			return 2;
		cmd = "map-change";
	} else if (optind != argc - 1) {
		ctl_usage(stderr);
		return 2;
	} else {
		req = NULL;
	}
	for (i = 0; !req && i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmd, cmds[i]))
			break;
	}
	if (!req && i == sizeof(cmds) / sizeof(cmds[0])) {
		fprintf(stderr, "cohortctl: unknown command \"%s\"\n", cmd);
		ctl_usage(stderr);
		return 2;
	}
	if (conf_path) {
		ret = daemon_conf_load(conf_path, node, &conf, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "cohortctl: %s\n", err);
			json_decref(req);
			return 1;
		}
		snprintf(path, sizeof(path), "%s", conf->control);
		daemon_conf_delete(&conf);
		sock = path;
	}
	if (!req)
		req = json_pack("{s:s}", "cmd", cmd);
	if (!req) {
		fprintf(stderr, "cohortctl: out of memory\n");
		return 1;
	}
	ret = daemon_ctl_request(sock, req,
				 !strcmp(cmd, "stop")	      ? CTL_STOP_TIMEOUT_MS
				 : !strcmp(cmd, "map-change") ? CTL_CHANGE_TIMEOUT_MS
							      : CTL_TIMEOUT_MS,
				 &resp, err, sizeof(err));
	json_decref(req);
	if (ret) {
		fprintf(stderr, "cohortctl: %s\n", err);
		return 1;
	}
	status = json_is_true(json_object_get(resp, "ok")) ? 0 : 1;
	if (json) {
		json_dumpf(resp, stdout, JSON_INDENT(2));
		printf("\n");
	} else if (status) {
		fprintf(stderr, "cohortctl: %s: %s\n", cmd, ctl_str(resp, "error"));
	} else if (!strcmp(cmd, "status")) {
		ctl_show_status(resp);
	} else if (!strcmp(cmd, "volumes")) {
		ctl_show_volumes(resp);
	} else if (!strcmp(cmd, "map")) {
		ctl_show_map(resp);
	} else if (!strcmp(cmd, "map-change")) {
		printf("table version %lld on the cluster\n",
		       (long long)json_integer_value(json_object_get(resp, "version")));
	} else if (!strcmp(cmd, "exports")) {
		ctl_show_exports(resp);
	} else if (!strcmp(cmd, "stats")) {
		ctl_show_stats(resp);
	} else {
		printf("cluster stopped: %s\n", ctl_str(resp, "result"));
	}
	json_decref(resp);
	return status;
}
