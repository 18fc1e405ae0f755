/*
 * bench.c - cohort-bench's entry point, option parsing, statistics and output. Each suite
 * (bench_fabric.c, ...) measures and hands rows here, so that every suite prints the same way.
 * Percentiles are nearest-rank over all samples; nothing is averaged away.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

void bench_print_header(bool csv)
{
	if (csv)
		printf("suite,op,provider,size,samples,min_ns,p50_ns,p99_ns,p999_ns,max_ns\n");
	else
		printf("%-8s %-18s %-8s %8s %8s %9s %9s %9s %9s %10s %9s %7s\n", "suite", "op",
		       "provider", "size", "samples", "min(us)", "p50(us)", "p99(us)", "p99.9(us)",
		       "max(us)", "Mop/s", "net/op");
	fflush(stdout);
}

void bench_print_row(const struct bench_row *r, bool csv)
{
	if (csv) {
		printf("%s,%s,%s,%zu,%u,%llu,%llu,%llu,%llu,%llu\n", r->suite, r->op, r->provider,
		       r->size, r->samples, (unsigned long long)r->min, (unsigned long long)r->p50,
		       (unsigned long long)r->p99, (unsigned long long)r->p999,
		       (unsigned long long)r->max);
	} else {
		char rate[16] = "-", net[16] = "-";

		if (r->rate_mops > 0)
			snprintf(rate, sizeof(rate), "%.3f", r->rate_mops);
		if (r->has_net)
			snprintf(net, sizeof(net), "%.2f", r->net_per_op);
		printf("%-8s %-18s %-8s %8zu %8u %9.3f %9.3f %9.3f %9.3f %10.3f %9s %7s\n",
		       r->suite, r->op, r->provider, r->size, r->samples, r->min / 1e3,
		       r->p50 / 1e3, r->p99 / 1e3, r->p999 / 1e3, r->max / 1e3, rate, net);
	}
	fflush(stdout);
}

bool bench_op_selected(const struct bench_opts *o, const char *op)
{
	const char *p = o->ops;
	size_t n = strlen(op);

	if (!p)
		return true;
	while (p && *p) {
		if (!strncmp(p, op, n) && (p[n] == ',' || p[n] == '\0'))
			return true;
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return false;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: cohort-bench SUITE [options]\n"
	    "suites:\n"
	    "  fabric    one-sided WRITE/READ/CAS/FAA and SEND latency and message rate between\n"
	    "            two nodes, beside the host's floor (memcpy, cache-line ping-pong)\n"
	    "  cache     coherent cache: hits, misses served by a peer or the store, held and\n"
	    "            transferred writes, beside the raw fabric CAS and READ they are built\n"
	    "            from; throughput of a 70/30 mix on 1-4 nodes\n"
	    "  replication  the engine (3 nodes on this host; rdma: --cluster with 3 addresses):\n"
	    "            acknowledged 4 KiB write latency with\n"
	    "            k = 0, 1, 2 log copies beside the raw WRITE + FLUSH to 1 and 2 peers; takeover\n"
	    "            and view change times over SIGKILLs of a node (min(--iters, 20) kills, or\n"
	    "            COHORT_BENCH_KILLS); rows are of suite \"repl\"\n"
	    "  engine    the operation engine (coh_node_submit) on 3 nodes, k = 1: 4 KiB reads,\n"
	    "            writes and a 70/30 mix with 1, 4, 16, 32, 64 in flight per node on 1-3\n"
	    "            nodes, on sets of their own (_disj) or one set (_shared); per-operation\n"
	    "            latency, Mop/s of all nodes; beside the WRITE + FLUSH and memcpy floors;\n"
	    "            then open, view change and restart against a 1 GiB, 64 GiB and 1 TiB volume\n"
	    "  routing   the router on 3 controllers (shm): group ga on 0-1, gb on 1-2; 4 KiB reads\n"
	    "            and writes on ga's volume from an AMF (local_*) and from controller 2\n"
	    "            (forwarded_*), QD 1 and 32; 64 KiB writes on one group and on a volume\n"
	    "            striped over both, QD 32; beside a 64-byte fabric round trip\n"
	    "options:\n"
	    "  --provider NAME   shm (default) or rdma\n"
	    "  --cluster SPEC    shm: directory (default: a fresh one in /dev/shm);\n"
	    "                    rdma: ip:port,ip:port (required)\n"
	    "  --node N          run only node N (for a cluster across hosts); default: fork both\n"
	    "  --iters N         samples per row (default 10000)\n"
	    "  --warmup N        unmeasured iterations first (default 1000)\n"
	    "  --min-size B      smallest size (default 8)\n"
	    "  --max-size B      largest size (default 65536)\n"
	    "  --ops LIST        comma-separated subset of the rows (fabric: write,read,cas,faa,send,\n"
	    "                    memcpy,pingpong; cache: fabric_cas,read_hit,read_miss_peer,...,mix;\n"
	    "                    replication: fabric_write_flush_1,write_k1,...,takeover,view_change;\n"
	    "                    engine: fabric_write_flush_1,memcpy_4k,read_sync,write_sync,\n"
	    "                    read_qd1_n1,...,mix_qd64_n3_shared,open_1g,view_change_64g,restart_1t)\n"
	    "  --lanes N         engine: engine threads per node, 1-7 (default: the node's, 4)\n"
	    "  --set N           engine: blocks in each node's set, 1-160 (default 64)\n"
	    "  --log-kib N       engine: each node's log region in KiB (default 16384)\n"
	    "  --cache-blocks N  engine: cache blocks per node (default: the node's, 1024)\n"
	    "  --destage-high P  engine: background destage from P percent of the log (the\n"
	    "                    node's default is off; 100: off, only a full log destages)\n"
	    "  --shm-latency-us N  cache, engine, shm: hold every completion back N us (an emulated\n"
	    "                    fabric round trip, as on RDMA: 2-5 us; rxe: 20-150 us); default 0\n"
	    "  --csv             CSV instead of a table\n");
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	if (*end == 'k' || *end == 'K')
		v <<= 10, end++;
	else if (*end == 'm' || *end == 'M')
		v <<= 20, end++;
	if (*end || v == 0 || v > (1ull << 30))
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "provider", required_argument, NULL, 'p' },
		{ "cluster", required_argument, NULL, 'c' },
		{ "node", required_argument, NULL, 'n' },
		{ "iters", required_argument, NULL, 'i' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "min-size", required_argument, NULL, 's' },
		{ "max-size", required_argument, NULL, 'S' },
		{ "ops", required_argument, NULL, 'o' },
		{ "csv", no_argument, NULL, 'C' },
		{ "lanes", required_argument, NULL, 'L' },
		{ "shm-latency-us", required_argument, NULL, 'Y' },
		{ "set", required_argument, NULL, 'E' },
		{ "log-kib", required_argument, NULL, 'K' },
		{ "cache-blocks", required_argument, NULL, 'B' },
		{ "destage-high", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_opts o = { .provider = "shm",
				.node = -1,
				.iters = 10000,
				.warmup = 1000,
				.min_size = 8,
				.max_size = 65536 };
	const char *suite;
	size_t v;
	int c;

	if (argc < 2 || argv[1][0] == '-') {
		usage(argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
		return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
	}
	suite = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			o.provider = optarg;
			break;
		case 'c':
			o.cluster = optarg;
			break;
		case 'n':
			if (parse_size(optarg, &v) && strcmp(optarg, "0"))
				goto bad;
			o.node = strcmp(optarg, "0") ? (int)v : 0;
			break;
		case 'i':
			if (parse_size(optarg, &v) || v > 100000000)
				goto bad;
			o.iters = (uint32_t)v;
			break;
		case 'w':
			if (strcmp(optarg, "0") && (parse_size(optarg, &v) || v > 100000000))
				goto bad;
			o.warmup = strcmp(optarg, "0") ? (uint32_t)v : 0;
			break;
		case 's':
			if (parse_size(optarg, &o.min_size))
				goto bad;
			break;
		case 'S':
			if (parse_size(optarg, &o.max_size))
				goto bad;
			break;
		case 'o':
			o.ops = optarg;
			break;
		case 'C':
			o.csv = true;
			break;
		case 'L':
			if (parse_size(optarg, &v) || v > 7)
				goto bad;
			o.lanes = (uint32_t)v;
			break;
		case 'Y':
			if (strcmp(optarg, "0") && (parse_size(optarg, &v) || v > 1000000))
				goto bad;
			o.latency_ns = strcmp(optarg, "0") ? (uint32_t)v * 1000u : 0;
			break;
		case 'E':
			if (parse_size(optarg, &v) || v > 160)
				goto bad;
			o.set_blocks = (uint32_t)v;
			break;
		case 'K':
			if (parse_size(optarg, &v) || v < 64 || v > 1u << 20)
				goto bad;
			o.log_kib = (uint32_t)v;
			break;
		case 'B':
			if (parse_size(optarg, &v) || v > 1u << 24)
				goto bad;
			o.cache_blocks = (uint32_t)v;
			break;
		case 'D':
			if (parse_size(optarg, &v) || v > 100)
				goto bad;
			o.destage_high = (uint32_t)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || o.min_size > o.max_size) {
		fprintf(stderr, "cohort-bench: bad arguments\n");
		usage(stderr);
		return 2;
	}
	if (!strcmp(suite, "fabric"))
		return bench_fabric(&o) ? 1 : 0;
	if (!strcmp(suite, "cache"))
		return bench_cache(&o) ? 1 : 0;
	if (!strcmp(suite, "replication"))
		return bench_replication(&o) ? 1 : 0;
	if (!strcmp(suite, "engine"))
		return bench_engine(&o) ? 1 : 0;
	if (!strcmp(suite, "routing"))
		return bench_routing(&o) ? 1 : 0;
	fprintf(stderr, "cohort-bench: unknown suite '%s'\n", suite);
	usage(stderr);
	return 2;
bad:
	fprintf(stderr, "cohort-bench: bad value '%s'\n", optarg);
	return 2;
}
