/*
 * powerloss.c - the two halves of the rig's power-loss test (scripts/rig-powerloss.sh): a
 * whole cluster in one guest loses its power mid-workload, and a fresh guest on the same disk
 * and NVDIMM images recovers and verifies every acknowledged write.
 *
 *   powerloss run    --dir D --elems E0,E1,E2 --journal J [--nodes N] [--log-kib K]
 *   powerloss verify --dir D --elems E0,E1,E2 --journal J [--nodes N] [--log-kib K]
 *
 * run: N node processes (the provider and cluster from COHORT_TEST_PROVIDER and friends, as for
 * every test: conf.h), a RAID-5 group on the three elements (block devices or files), logs in
 * D/logs, k = 1. Node i writes blocks b with b % N == i, chosen at random among the first
 * 3/4 of the volume, each with a distinct value, one at a time, until it is killed (bounded:
 * PL_RUN_S). Before each write it appends an INTENT record to its journal J.<i>, after it an
 * ACK (or FAIL) record; the journal is on a file system that outlives the guest (the rig's
 * uncached 9p share), written with O_DSYNC. The log is small, so destages (eviction, back-
 * pressure) run all along: a power loss finds blocks in every state.
 * verify: the same cluster opens on the same files (recovery runs), then node i reads every
 * block of its own and checks it against its journal: the last acknowledged value, or a value
 * whose write was under way (an INTENT with no ACK after it, or a FAIL); a block never
 * acknowledged may also still be zero. Node 0 then checks every stripe's parity. Exit status 0
 * only if every block and every stripe is right; what was found is printed either way.
 * What it leaves out: reads in the first life (the lifecycle suite checks linearizability with
 * reads on shm and rdma; this checks what survives a real power loss).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "conf.h"

#define PL_BS 4096u
#define PL_MAXN 5u
#define PL_RUN_S 900
/* Below the rig's guest bound (COHORT_VM_TIMEOUT, 600 s by default, which also covers the boot
 * and the first life), so that a verify that hangs is reported here, with the step each node
 * was at and its log, rather than by the guest being killed with nothing said. */
#define PL_VERIFY_S 240
#define PL_MAGIC 0x4c52574fu /* "OWRL" */

enum pl_kind {
	PL_INTENT = 1,
	PL_ACK = 2,
	PL_FAIL = 3
};

struct pl_rec {
	uint32_t magic, kind;
	uint64_t block, value, sum;
};

struct pl_opts {
	const char *dir, *journal;
	const char *elems[3];
	uint32_t nodes, log_kib;
	uint64_t elem_blocks;
	bool verify;
};

struct pl_shared {
	struct bench_sbar start, end;
	char cluster[512];
	uint64_t acked[PL_MAXN], checked[PL_MAXN], recovered[PL_MAXN], bad_records[PL_MAXN];
	char why[PL_MAXN][256];
	char step[PL_MAXN][64]; /* where each node is: said when one does not finish in time */
};

/* What a node's journal says of one block. */
struct pl_block {
	uint64_t acked;	   /* the last acknowledged value; 0: none */
	uint64_t maybe[4]; /* values whose write was under way after it */
	uint32_t nmaybe;
	bool overflow; /* more under way than kept: anything written by this node goes */
};

static uint64_t pl_sum(const struct pl_rec *r)
{
	return (r->magic * 0x9e3779b97f4a7c15ull ^ r->kind) * 31 +
	       r->block * 0xff51afd7ed558ccdull + r->value * 0xc4ceb9fe1a85ec53ull;
}

static int pl_append(int fd, uint32_t kind, uint64_t block, uint64_t value)
{
	struct pl_rec r = { .magic = PL_MAGIC, .kind = kind, .block = block, .value = value };

	r.sum = pl_sum(&r);
	return write(fd, &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : -EIO;
}

#define PLSTEP(sh, id, ...) snprintf((sh)->step[id], sizeof((sh)->step[0]), __VA_ARGS__)

#define PLFAIL(sh, id, ...)                                                                        \
	do {                                                                                       \
		snprintf((sh)->why[id], sizeof((sh)->why[0]), __VA_ARGS__);                        \
		fprintf(stderr, "powerloss node %u: %s\n", id, (sh)->why[id]);                     \
		ret = 1;                                                                           \
		goto out;                                                                          \
	} while (0)

static uint64_t pl_rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* pl_read - node @id's journal, whole, into *@all (*@len bytes; malloc'd, NULL when there is
 * none). 0 or -errno. Read before the node opens, and past short reads and interruptions: the
 * journal is on a 9p share, where a read may return less than asked without being at the end,
 * and a journal read short would make written blocks look never written. It must come to the
 * size the file has. */
static int pl_read(const char *path, uint8_t **all, size_t *len)
{
	struct stat sb;
	size_t got = 0;
	uint32_t tries = 0;
	int ret = 0, fd = open(path, O_RDONLY | O_CLOEXEC);

	*all = NULL;
	*len = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &sb) || !(*all = malloc((size_t)sb.st_size + 1))) {
		ret = -errno;
		goto out;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t k = read(fd, *all + got, (size_t)sb.st_size - got);

		/* A transient error of the share (interrupted, no memory for its buffer) is tried
		 * again, a bounded number of times. */
		if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == ENOMEM) &&
		    ++tries < 100)
			continue;
		if (k <= 0) {
			ret =
			    k < 0 ? -errno : -EIO; /* shorter than its size: say so, do not guess */
			goto out;
		}
		got += (size_t)k;
	}
	*len = got;
out:
	close(fd);
	if (ret) {
		free(*all);
		*all = NULL;
	}
	return ret;
}

/* pl_parse - the journal's @len bytes into @blocks (the volume's @nblocks). Returns the number
 * of records taken. A torn or corrupt record ends the journal (it was the last one being written
 * when the power went; what it said did not happen as far as anyone knows). */
static long pl_parse(const uint8_t *all, size_t len, struct pl_block *blocks, uint64_t nblocks,
		     uint64_t *acks)
{
	struct pl_rec r;
	size_t at;
	long n = 0;

	*acks = 0;
	for (at = 0; at + sizeof(r) <= len; at += sizeof(r)) {
		struct pl_block *b;

		memcpy(&r, all + at, sizeof(r));
		if (r.magic != PL_MAGIC || r.sum != pl_sum(&r) || r.block >= nblocks ||
		    r.kind < PL_INTENT || r.kind > PL_FAIL)
			break;
		b = &blocks[r.block];
		if (r.kind == PL_ACK) {
			b->acked = r.value;
			b->nmaybe = 0;
			b->overflow = false;
			(*acks)++;
		} else if (r.kind == PL_INTENT) {
			if (b->nmaybe < 4)
				b->maybe[b->nmaybe++] = r.value;
			else
				b->overflow = true;
		}
		/* FAIL: the INTENT before it stays a maybe (a failed write may have landed). */
		n++;
	}
	return n;
}

static int pl_node(const struct pl_opts *o, struct pl_shared *sh, uint32_t id)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = id,
				      .cluster = sh->cluster };
	struct coh_node_attr na = { .nodes = o->nodes,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 4 },
				    .elem_blocks = o->elem_blocks,
				    .replicas = 1,
				    .log_bytes = (size_t)o->log_kib << 10,
				    .cache_blocks = 512,
				    .timeout_ms = 5000,
				    .open_timeout_ms = 120000,
				    .log_dir = NULL };
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct pl_block *blocks = NULL;
	char logs[600], jpath[600];
	uint64_t nblocks, used, s, i, acks = 0;
	uint8_t *jall = NULL;
	size_t jbytes = 0;
	uint8_t buf[PL_BS];
	int ret = 0, r, jfd = -1;

	snprintf(logs, sizeof(logs), "%s/logs", o->dir);
	snprintf(jpath, sizeof(jpath), "%s.%u", o->journal, id);
	na.log_dir = logs;
	for (i = 0; i < 3; i++)
		na.elem_paths[i] = o->elems[i];
	if (o->verify && (r = pl_read(jpath, &jall, &jbytes)))
		PLFAIL(sh, id, "journal %.200s: %s", jpath, strerror(-r));
	if ((r = coh_fabric_open(&fa, &fab)))
		PLFAIL(sh, id, "fabric open: %s", coh_strerror(r));
	na.fab = fab;
	PLSTEP(sh, id, "opening the node (recovery)");
	if ((r = coh_node_open(&na, &n)))
		PLFAIL(sh, id, "node open: %s", coh_strerror(r));
	nblocks = coh_node_nblocks(n);
	used = nblocks * 3 / 4;
	PLSTEP(sh, id, "open, waiting for the others to open");
	if (bench_sbar_wait(&sh->start, PL_VERIFY_S * 1000))
		PLFAIL(sh, id, "start barrier timed out");
	if (o->verify) {
		struct coh_node_stats st;
		long nrec;

		if ((r = coh_node_stats(n, &st)))
			PLFAIL(sh, id, "stats: %s", coh_strerror(r));
		sh->recovered[id] = st.recovered_blocks;
		sh->bad_records[id] = st.corrupt_records + st.torn_records;
		blocks = calloc(nblocks, sizeof(*blocks));
		if (!blocks)
			PLFAIL(sh, id, "out of memory");
		nrec = pl_parse(jall, jbytes, blocks, nblocks, &acks);
		sh->acked[id] = acks;
		for (i = id; i < used; i += o->nodes) {
			const struct pl_block *b = &blocks[i];
			uint64_t v;
			uint32_t m;
			bool ok;

			PLSTEP(sh, id, "reading block %llu", (unsigned long long)i);
			if ((r = coh_node_read(n, i, 1, buf)))
				PLFAIL(sh, id, "read of block %llu: %s", (unsigned long long)i,
				       coh_strerror(r));
			if (bench_block_value(buf, PL_BS, &v))
				PLFAIL(sh, id, "block %llu is torn or corrupt",
				       (unsigned long long)i);
			ok = v == b->acked;
			for (m = 0; m < b->nmaybe; m++)
				ok |= v == b->maybe[m];
			if (b->overflow && v >> 32 == id + 1ull)
				ok = true;
			if (!ok)
				PLFAIL(
				    sh, id,
				    "block %llu holds %#llx; acknowledged last: %#llx, under way: "
				    "%u values: an acknowledged write was lost (journal: %ld "
				    "records of %llu bytes, %llu blocks)",
				    (unsigned long long)i, (unsigned long long)v,
				    (unsigned long long)b->acked, b->nmaybe, nrec,
				    (unsigned long long)jbytes, (unsigned long long)nblocks);
			sh->checked[id]++;
		}
		if (bench_sbar_wait(&sh->end, PL_VERIFY_S * 1000))
			PLFAIL(sh, id, "barrier after the reads timed out");
		if (id == 0) {
			uint64_t bad = 0;

			PLSTEP(sh, id, "checking every stripe's parity");
			r = coh_node_check(n, &bad);
			if (r || bad)
				PLFAIL(sh, id, "scrub: %s, %llu stripes with parity not matching",
				       coh_strerror(r), (unsigned long long)bad);
		}
		if (bench_sbar_wait(&sh->end, PL_VERIFY_S * 1000))
			PLFAIL(sh, id, "barrier before the close timed out");
		goto out;
	}
	/* run: write until the power goes (the host kills the guest), bounded. */
	jfd = open(jpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_DSYNC | O_CLOEXEC, 0644);
	if (jfd < 0)
		PLFAIL(sh, id, "journal %.200s: %s", jpath, strerror(errno));
	s = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull + id + 1;
	{
		uint64_t until = bench_now_ns() + (uint64_t)PL_RUN_S * 1000000000ull;

		for (i = 1; bench_now_ns() < until; i++) {
			uint64_t b = pl_rnd(&s) % (used / o->nodes) * o->nodes + id,
				 v = (uint64_t)(id + 1) << 32 | (i & 0xffffffffu);

			bench_fill_block(buf, PL_BS, v);
			if (pl_append(jfd, PL_INTENT, b, v))
				PLFAIL(sh, id, "journal write: %s", strerror(errno));
			r = coh_node_write(n, b, 1, buf);
			if (pl_append(jfd, r ? PL_FAIL : PL_ACK, b, v))
				PLFAIL(sh, id, "journal write: %s", strerror(errno));
			if (!r)
				sh->acked[id]++;
		}
	}
	PLFAIL(sh, id, "ran %d s without losing its power", PL_RUN_S);
out:
	free(blocks);
	free(jall);
	if (jfd >= 0)
		close(jfd);
	PLSTEP(sh, id, "closing the node (destage, leave)");
	r = coh_node_close(&n);
	if (r && !ret)
		fprintf(stderr, "powerloss node %u: close: %s\n", id, coh_strerror(r));
	coh_fabric_close(&fab);
	return ret;
}

/*
 * pl_reap_verify - wait for the verifying nodes, at most @timeout_s; the first that fails stops
 * the others (SIGKILL), so that they are not left waiting at a barrier for one that will never
 * come. @st[i] gets each one's status; @killed[i] says whether it was stopped here.
 */
static void pl_reap_verify(const pid_t *pids, uint32_t n, int timeout_s, int *st, bool *killed)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_s * 1000000000ull;
	struct pollfd pfd[PL_MAXN];
	uint32_t i, left = 0;
	bool stop = false;

	for (i = 0; i < n; i++) {
		killed[i] = false;
		st[i] = 0;
		pfd[i].fd = pids[i] > 0 ? (int)syscall(SYS_pidfd_open, pids[i], 0) : -1;
		pfd[i].events = POLLIN;
		left += pfd[i].fd >= 0;
	}
	while (left && !stop) {
		uint64_t now = bench_now_ns();

		if (now >= deadline ||
		    (poll(pfd, n, (int)((deadline - now) / 1000000ull) + 1) < 0 && errno != EINTR))
			break;
		for (i = 0; i < n; i++) {
			if (pfd[i].fd < 0 || !(pfd[i].revents & POLLIN))
				continue;
			waitpid(pids[i], &st[i], 0);
			close(pfd[i].fd);
			pfd[i].fd = -1;
			left--;
			if (!WIFEXITED(st[i]) || WEXITSTATUS(st[i]))
				stop = true;
		}
	}
	for (i = 0; i < n; i++) {
		if (pfd[i].fd < 0)
			continue;
		kill(pids[i], SIGKILL);
		killed[i] = true;
		waitpid(pids[i], &st[i], 0);
		close(pfd[i].fd);
	}
}

static int pl_usage(void)
{
	fprintf(stderr, "usage: powerloss run|verify --dir D --elems E0,E1,E2 --journal J "
			"[--nodes 3] [--log-kib 1024] [--elem-blocks 4096]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "dir", 1, NULL, 'd' },     { "elems", 1, NULL, 'e' },
		{ "journal", 1, NULL, 'j' }, { "nodes", 1, NULL, 'n' },
		{ "log-kib", 1, NULL, 'l' }, { "elem-blocks", 1, NULL, 'b' },
		{ NULL, 0, NULL, 0 }
	};
	struct pl_opts o = { .nodes = 3, .log_kib = 1024, .elem_blocks = 4096 };
	struct pl_shared *sh;
	pid_t pids[PL_MAXN];
	int sts[PL_MAXN] = { 0 };
	bool killed[PL_MAXN] = { false };
	char *elems = NULL, *save = NULL, *tok, logs[600];
	uint32_t i, ne = 0;
	uint64_t acked = 0, checked = 0, recovered = 0, bad = 0;
	int c, failed = 0;

	if (argc < 2)
		return pl_usage();
	if (!strcmp(argv[1], "verify"))
		o.verify = true;
	else if (strcmp(argv[1], "run"))
		return pl_usage();
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o.dir = optarg;
			break;
		case 'e':
			elems = optarg;
			break;
		case 'j':
			o.journal = optarg;
			break;
		case 'n':
			o.nodes = (uint32_t)atoi(optarg);
			break;
		case 'l':
			o.log_kib = (uint32_t)atoi(optarg);
			break;
		case 'b':
			o.elem_blocks = strtoull(optarg, NULL, 0);
			break;
		default:
			return pl_usage();
		}
	}
	for (tok = elems ? strtok_r(elems, ",", &save) : NULL; tok && ne < 3;
	     tok = strtok_r(NULL, ",", &save))
		o.elems[ne++] = tok;
	if (!o.dir || !o.journal || ne != 3 || o.nodes < 3 || o.nodes > PL_MAXN || !o.log_kib ||
	    !o.elem_blocks)
		return pl_usage();
	snprintf(logs, sizeof(logs), "%s/logs", o.dir);
	if (mkdir(logs, 0700) && errno != EEXIST) {
		fprintf(stderr, "powerloss: %s: %s\n", logs, strerror(errno));
		return 1;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 1;
	memset(sh, 0, sizeof(*sh));
	bench_sbar_init(&sh->start, o.nodes);
	bench_sbar_init(&sh->end, o.nodes);
	if (conf_cluster_new(sh->cluster, sizeof(sh->cluster), o.nodes)) {
		fprintf(stderr, "powerloss: cannot make a cluster address\n");
		return 1;
	}
	fflush(NULL);
	for (i = 0; i < o.nodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			alarm(o.verify ? PL_VERIFY_S : PL_RUN_S + 60);
			_exit(pl_node(&o, sh, i));
		}
	}
	if (o.verify)
		pl_reap_verify(pids, o.nodes, PL_VERIFY_S + 20, sts, killed);
	for (i = 0; i < o.nodes; i++) {
		int st = 0;

		if (o.verify)
			st = sts[i];
		if (pids[i] < 0 || (!o.verify && bench_wait_child(pids[i], &st, PL_RUN_S + 120)) ||
		    !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "powerloss: node %u failed: %s (%s %d; last step: %s)\n", i,
				pids[i] < 0	? "fork"
				: sh->why[i][0] ? sh->why[i]
				: killed[i]	? "stopped after another node failed"
						: "no reason given",
				WIFSIGNALED(st) ? "killed by signal" : "exit status",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
				sh->step[i][0] ? sh->step[i] : "starting");
			failed = 1;
		}
		acked += sh->acked[i];
		checked += sh->checked[i];
		recovered += sh->recovered[i];
		bad += sh->bad_records[i];
	}
	if (o.verify)
		printf(
		    "powerloss verify: %s: %llu acknowledged writes in the journals, %llu blocks "
		    "checked, %llu blocks recovered from the logs, %llu bad records left out\n",
		    failed ? "FAILED"
			   : "every acknowledged write is there, every stripe "
			     "consistent",
		    (unsigned long long)acked, (unsigned long long)checked,
		    (unsigned long long)recovered, (unsigned long long)bad);
	if (o.verify && !failed && !acked) {
		fprintf(stderr, "powerloss verify: the journals hold no acknowledged write: the "
				"first life did nothing to check\n");
		failed = 1;
	}
	return failed;
}
