/*
 * scsi_engine.c - the SCSI logical unit (engine/scsi/lu.c) on a real two-node cluster: node
 * processes forked after mapping a shared area, each with its fabric (shm in a fresh cluster
 * directory, or rdma in the VM rig) and its node over element files there, and a unit on each
 * with the same volume id, submitting through coh_node_submit in pieces of 4 blocks.
 *
 * What it checks: both units report the same VPD 80h page and the same 83h designators but for
 * the node's own port and group; a WRITE through node 0's unit is read back at once through node
 * 1's (into an iovec of odd pieces); a READ past the end is LBA OUT OF RANGE; COMPARE AND WRITE
 * raced from both units against the same old block, round after round: exactly one succeeds and
 * the other gets MISCOMPARE with INFORMATION the offset at which the winner's data first differs
 * from the old.
 *
 * Leaves out: failures (a node killed mid-command: the engine's own tests), the TCMU front end.
 * Every wait is bounded: the barriers, each command (sse_exec), an alarm in every child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cohort/fabric.h"
#include "cohort/node.h"
#include "cohort/scsi.h"
#include "conf.h"
#include "scsi_shim.h"

#define SSE_NODES 2u
#define SSE_BS 4096u
#define SSE_ELEM_BLOCKS 64u /* RAID-5 over 3 elements, chunk 2: 128 blocks */
#define SSE_WAIT_MS 30000
#define SSE_CHILD_S 120
#define SSE_ROUNDS 24u
#define SSE_CAW_LBA 40u
#define SSE_WRITE_LBA 3u
#define SSE_WRITE_BLOCKS 10u /* three pieces of at most 4 */

struct sse_shared {
	struct bench_sbar bar[4];
	uint8_t vpd80[SSE_NODES][64], vpd83[SSE_NODES][128];
	_Atomic uint32_t won[SSE_ROUNDS];    /* successes per round */
	_Atomic uint32_t winner[SSE_ROUNDS]; /* the node that won, + 1 */
	char why[SSE_NODES][256];
};

struct sse_child {
	struct sse_shared *sh;
	uint32_t id;
	const char *dir, *cluster;
	struct coh_fabric *fab;
	struct coh_node *n;
	struct coh_scsi_lu *lu;
};

#define SSE_FAIL(c, ...)                                                                           \
	do {                                                                                       \
		snprintf((c)->sh->why[(c)->id], sizeof((c)->sh->why[0]), __VA_ARGS__);             \
		fprintf(stderr, "scsi_engine node %u: %s\n", (c)->id, (c)->sh->why[(c)->id]);      \
		return 1;                                                                          \
	} while (0)

/* The unit's block path: the node. */
static int sse_submit(void *ctx, struct coh_io *io)
{
	return coh_node_submit(ctx, io);
}

struct sse_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t calls;
};

static void sse_done(struct coh_scsi_cmd *cmd, void *arg)
{
	struct sse_wait *w = arg;

	(void)cmd;
	pthread_mutex_lock(&w->lock);
	w->calls++;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* sse_exec - run @cdb with the @iovcnt pieces of @iov on @lu and wait (bounded) for its answer in
 * @cmd. Its status, or -1 when it was not answered exactly once in time. */
static int sse_exec(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len,
		    const struct iovec *iov, uint32_t iovcnt, struct coh_scsi_cmd *cmd)
{
	struct sse_wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	struct timespec until;
	int ret = 0;

	memset(cmd, 0, sizeof(*cmd));
	cmd->cmd_size = sizeof(*cmd);
	cmd->cdb = cdb;
	cmd->cdb_len = cdb_len;
	cmd->iov = iov;
	cmd->iov_cnt = iovcnt;
	cmd->done = sse_done;
	cmd->done_arg = &w;
	coh_scsi_cmd_exec(lu, cmd);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SSE_WAIT_MS / 1000;
	pthread_mutex_lock(&w.lock);
	while (!w.calls && !ret)
		ret = pthread_cond_timedwait(&w.cond, &w.lock, &until);
	pthread_mutex_unlock(&w.lock);
	/* Not answered: the command may still complete into @cmd, so the child must not go on. */
	if (ret)
		_exit(3);
	return w.calls == 1 ? cmd->status : -1;
}

static int sse_exec1(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len, void *buf,
		     size_t len, struct coh_scsi_cmd *cmd)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };

	return sse_exec(lu, cdb, cdb_len, &iov, len ? 1 : 0, cmd);
}

static void sse_rw16(uint8_t *c, uint8_t op, uint64_t lba, uint32_t n)
{
	uint32_t i;

	memset(c, 0, 16);
	c[0] = op;
	for (i = 0; i < 8; i++)
		c[2 + i] = (uint8_t)(lba >> (56 - 8 * i));
	for (i = 0; i < 4; i++)
		c[10 + i] = (uint8_t)(n >> (24 - 8 * i));
}

/* sse_offset - where node @id's write data of round @r first differs from the old block. */
static uint32_t sse_offset(uint32_t id, uint32_t r)
{
	return 9 + 131 * r + 1000 * id;
}

static int sse_open(struct sse_child *c)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .node_id = c->id,
				      .cluster = c->cluster };
	struct coh_node_attr na = { .nodes = SSE_NODES,
				    .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 2 },
				    .elem_blocks = SSE_ELEM_BLOCKS,
				    .replicas = 1,
				    .log_bytes = 256u << 10,
				    .cache_blocks = 64,
				    .timeout_ms = 5000 };
	struct coh_scsi_lu_attr la = { .attr_size = sizeof(la),
				       .volume_id = { 0xc0, 0x40, 0x77, 0x5c, 0x51, 0, 0, 0, 0, 0,
						      0, 0, 0, 0, 0, 0x02 },
				       .volume_name = "scsi_engine",
				       .tpg_id = (uint16_t)(c->id + 1),
				       .rel_port_id = (uint16_t)(c->id + 1),
				       .tpg_count = SSE_NODES,
				       .max_xfer_blocks = 4,
				       .submit = sse_submit };
	char paths[3][600];
	uint32_t i;
	int ret;

	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", c->dir, i);
		na.elem_paths[i] = paths[i];
	}
	ret = coh_fabric_open(&fa, &c->fab);
	if (ret)
		goto out;
	na.fab = c->fab;
	ret = coh_node_open(&na, &c->n);
	if (ret)
		goto close_fabric;
	la.block_size = coh_node_block_size(c->n);
	la.nblocks = coh_node_nblocks(c->n);
	la.submit_ctx = c->n;
	ret = coh_scsi_lu_new(&la, &c->lu);
	if (ret)
		goto close_node;
	return 0;

close_node:
	coh_node_close(&c->n);
close_fabric:
	coh_fabric_close(&c->fab);
out:
	return ret;
}

static int sse_bar(struct sse_child *c, uint32_t i)
{
	return bench_sbar_wait(&c->sh->bar[i], SSE_WAIT_MS);
}

/* The identity pages, a write read back through the other node, a read past the end. */
static int sse_identity_and_data(struct sse_child *c)
{
	static uint8_t buf[SSE_WRITE_BLOCKS * SSE_BS], back[SSE_WRITE_BLOCKS * SSE_BS];
	uint8_t cdb[16], inq[6] = { 0x12, 1, 0x80, 0, 64, 0 };
	struct coh_scsi_cmd cmd;
	struct iovec iov[3];
	uint64_t end = coh_node_nblocks(c->n);
	uint32_t i;
	int st;

	if (sse_exec1(c->lu, inq, 6, c->sh->vpd80[c->id], 64, &cmd) != COH_SCSI_GOOD)
		SSE_FAIL(c, "INQUIRY VPD 80h");
	inq[2] = 0x83;
	inq[4] = 128;
	if (sse_exec1(c->lu, inq, 6, c->sh->vpd83[c->id], 128, &cmd) != COH_SCSI_GOOD)
		SSE_FAIL(c, "INQUIRY VPD 83h");
	for (i = 0; i < SSE_WRITE_BLOCKS; i++)
		bench_fill_block(buf + (size_t)i * SSE_BS, SSE_BS, 0x5c5e00000100ull + i);
	if (c->id == 0) {
		sse_rw16(cdb, 0x8a, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec1(c->lu, cdb, 16, buf, sizeof(buf), &cmd)) != COH_SCSI_GOOD)
			SSE_FAIL(c, "WRITE(16) of %u blocks: status %d", SSE_WRITE_BLOCKS, st);
	}
	if (sse_bar(c, 0))
		SSE_FAIL(c, "barrier after the write");
	if (c->id == 1) {
		/* Odd pieces: the unit reads into a bounce buffer and scatters. */
		iov[0] = (struct iovec){ back, 1000 };
		iov[1] = (struct iovec){ back + 1000, 3 * SSE_BS };
		iov[2] =
		    (struct iovec){ back + 1000 + 3 * SSE_BS, sizeof(back) - 1000 - 3 * SSE_BS };
		sse_rw16(cdb, 0x88, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec(c->lu, cdb, 16, iov, 3, &cmd)) != COH_SCSI_GOOD)
			SSE_FAIL(c, "READ(16): status %d", st);
		if (cmd.data_len != sizeof(back) || memcmp(back, buf, sizeof(buf)))
			SSE_FAIL(c, "READ(16) through node 1 does not return node 0's write");
	}
	/* The last block is readable; one past it is LBA OUT OF RANGE, before the engine. */
	sse_rw16(cdb, 0x88, end - 1, 1);
	if ((st = sse_exec1(c->lu, cdb, 16, back, SSE_BS, &cmd)) != COH_SCSI_GOOD)
		SSE_FAIL(c, "READ(16) of the last block: status %d", st);
	sse_rw16(cdb, 0x88, end - 1, 2);
	st = sse_exec1(c->lu, cdb, 16, back, 2 * SSE_BS, &cmd);
	if (st != COH_SCSI_CHECK_CONDITION || (cmd.sense[2] & 0xf) != 0x5 ||
	    cmd.sense[12] != 0x21 || cmd.sense[13] != 0)
		SSE_FAIL(c, "READ(16) past the end: status %d, sense %x/%02x/%02x", st,
			 cmd.sense[2] & 0xf, cmd.sense[12], cmd.sense[13]);
	return 0;
}

/* COMPARE AND WRITE from both units against the same old block: one winner per round, and the
 * loser's INFORMATION is where the winner's data begins to differ from the old. */
static int sse_caw_race(struct sse_child *c)
{
	static uint8_t buf[2 * SSE_BS], old[SSE_BS];
	struct coh_scsi_cmd cmd;
	uint8_t cdb[16];
	uint32_t r, off, info, w;
	int st;

	for (r = 0; r < SSE_ROUNDS; r++) {
		bench_fill_block(old, SSE_BS, 0xca5e00000000ull | r);
		if (c->id == 0) {
			sse_rw16(cdb, 0x8a, SSE_CAW_LBA, 1);
			if (sse_exec1(c->lu, cdb, 16, old, SSE_BS, &cmd) != COH_SCSI_GOOD)
				SSE_FAIL(c, "round %u: WRITE of the old block", r);
		}
		if (sse_bar(c, 1))
			SSE_FAIL(c, "round %u: barrier before", r);
		/* Compare: the old block; write: the old block with every byte from this node's
		 * offset on changed. */
		memcpy(buf, old, SSE_BS);
		memcpy(buf + SSE_BS, old, SSE_BS);
		for (off = sse_offset(c->id, r); off < SSE_BS; off++)
			buf[SSE_BS + off] = (uint8_t)~old[off];
		memset(cdb, 0, sizeof(cdb));
		cdb[0] = 0x89;
		cdb[9] = SSE_CAW_LBA;
		cdb[13] = 1;
		st = sse_exec1(c->lu, cdb, 16, buf, sizeof(buf), &cmd);
		if (st == COH_SCSI_GOOD) {
			atomic_fetch_add(&c->sh->won[r], 1);
			atomic_store(&c->sh->winner[r], c->id + 1);
		} else if (st != COH_SCSI_CHECK_CONDITION || (cmd.sense[2] & 0xf) != 0xe ||
			   cmd.sense[12] != 0x1d || cmd.sense[13] != 0 || !(cmd.sense[0] & 0x80)) {
			SSE_FAIL(c, "round %u: COMPARE AND WRITE: status %d, sense %x/%02x/%02x", r,
				 st, cmd.sense[2] & 0xf, cmd.sense[12], cmd.sense[13]);
		}
		if (sse_bar(c, 2))
			SSE_FAIL(c, "round %u: barrier after", r);
		if (atomic_load(&c->sh->won[r]) != 1)
			SSE_FAIL(c,
				 "round %u: %u COMPARE AND WRITEs succeeded against the same data",
				 r, atomic_load(&c->sh->won[r]));
		w = atomic_load(&c->sh->winner[r]) - 1;
		info = (uint32_t)cmd.sense[3] << 24 | (uint32_t)cmd.sense[4] << 16 |
		       (uint32_t)cmd.sense[5] << 8 | cmd.sense[6];
		if (st != COH_SCSI_GOOD && info != sse_offset(w, r))
			SSE_FAIL(c, "round %u: MISCOMPARE at %u, node %u's data differs at %u", r,
				 info, w, sse_offset(w, r));
	}
	return 0;
}

static int sse_child_main(struct sse_child *c)
{
	int r = sse_open(c);

	if (r) {
		snprintf(c->sh->why[c->id], sizeof(c->sh->why[0]), "open: %s", coh_strerror(r));
		return 1;
	}
	r = sse_identity_and_data(c) || sse_caw_race(c);
	if (!r && sse_bar(c, 3))
		r = 1;
	coh_scsi_lu_delete(c->lu);
	if (coh_node_close(&c->n) && !r)
		r = 1;
	coh_fabric_close(&c->fab);
	return r;
}

/* sse_judge - both nodes report one disk: the same 80h page, the same 83h designators before
 * the node's own relative port and port group (the last 16 bytes), and those per node. */
static int sse_judge(struct sse_shared *sh)
{
	uint32_t len = ((uint32_t)sh->vpd83[0][2] << 8 | sh->vpd83[0][3]) + 4;

	if (len < 16 + 20 || len > sizeof(sh->vpd83[0]) || memcmp(sh->vpd83[0], sh->vpd83[1], 4) ||
	    memcmp(sh->vpd80[0], sh->vpd80[1], 36) ||
	    memcmp(sh->vpd83[0], sh->vpd83[1], len - 16)) {
		fprintf(stderr, "scsi_engine: the nodes report different identities\n");
		return 1;
	}
	/* The relative port designator's identifier: 1 on node 0, 2 on node 1. */
	if (sh->vpd83[0][len - 16 + 7] != 1 || sh->vpd83[1][len - 16 + 7] != 2) {
		fprintf(stderr, "scsi_engine: the relative ports are not the nodes' own\n");
		return 1;
	}
	return 0;
}

int sse_two_controllers(void)
{
	char dir[] = "/dev/shm/cohort-scsi-XXXXXX", cluster[512];
	struct sse_shared *sh;
	pid_t pids[SSE_NODES];
	int failed = 0;
	uint32_t i;

	if (!mkdtemp(dir))
		return 1;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_remove_tree(dir);
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	for (i = 0; i < 4; i++)
		bench_sbar_init(&sh->bar[i], SSE_NODES);
	if (strcmp(conf_provider(), "shm")) {
		if (conf_cluster_new(cluster, sizeof(cluster), SSE_NODES)) {
			munmap(sh, sizeof(*sh));
			bench_remove_tree(dir);
			return 1;
		}
	} else {
		snprintf(cluster, sizeof(cluster), "%s", dir);
	}
	fflush(NULL);
	for (i = 0; i < SSE_NODES; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct sse_child c = { .sh = sh, .id = i, .dir = dir, .cluster = cluster };

			alarm(SSE_CHILD_S);
			_exit(sse_child_main(&c));
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
	for (i = 0; i < SSE_NODES; i++) {
		int st = 0;

		if (bench_wait_child(pids[i], &st, SSE_CHILD_S + 10) || WIFSIGNALED(st) ||
		    WEXITSTATUS(st)) {
			fprintf(stderr, "scsi_engine: node %u ended badly (%s %d): %s\n", i,
				WIFSIGNALED(st) ? "signal" : "exit",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), sh->why[i]);
			failed = 1;
		}
	}
	if (!failed)
		failed = sse_judge(sh);
	munmap(sh, sizeof(*sh));
	bench_remove_tree(dir);
	return failed;
}
