/*
 * scsi_engine.c - the SCSI logical unit (engine/scsi/lu.c) on a real three-node cluster, on the
 * engine tests' harness (engine_harness.c): a unit on each node with the same volume id, as each
 * controller exports it, submitting through coh_node_submit in pieces of 4 blocks.
 *
 * What it checks: every unit reports the same VPD 80h page and the same 83h designators but for
 * the node's own port and group; a WRITE through node 0's unit is read back at once through every
 * other node's (into an iovec of odd pieces); on every node the last block reads and a READ past
 * the end is LBA OUT OF RANGE; COMPARE AND WRITE raced from every unit against the same old
 * block, round after round: exactly one succeeds and each other gets MISCOMPARE with INFORMATION
 * the offset at which the winner's data first differs from the old. Persistent reservations: each
 * unit serves its own host (one initiator per node) and the volume's table sits after its last
 * block; a reservation taken through node 0 refuses node 1's writes, two nodes register at once
 * (their COMPARE AND WRITEs race on the table through the coherent cache) and both keys are
 * there, a preempt through node 1 holds on node 0 and node 2, CLEAR frees every node.
 *
 * Leaves out: failures (a node killed mid-command: the engine's own tests), the TCMU front end.
 * Every wait is bounded: the harness's barriers and alarm, each command (sse_exec).
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cohort/scsi.h"
#include "engine_harness.h"
#include "scsi_shim.h"
#include "scsi_wait.h"

#define SSE_NODES 3u
#define SSE_ROUNDS 24u
#define SSE_CAW_LBA 20u /* of 32 */
#define SSE_WRITE_LBA 3u
#define SSE_WRITE_BLOCKS 10u				/* three pieces of at most 4 */
#define SSE_PR_BLOCKS (COH_SCSI_PR_TABLE_BYTES / EN_BS) /* the table, after the unit's blocks */

/* The unit's block path: the node. */
static int sse_submit(void *ctx, struct coh_io *io)
{
	return coh_node_submit(ctx, io);
}

/* sse_exec - run @cdb with the @iovcnt pieces of @iov on @lu and wait (bounded) for its answer in
 * @cmd. Its status, or -1 when it was not answered exactly once. */
static int sse_exec(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len,
		    const struct iovec *iov, uint32_t iovcnt, struct coh_scsi_cmd *cmd)
{
	struct sw_wait w;

	/* Not answered: the command may still complete into @cmd and @w, so the child must not
	 * go on. */
	if (sw_exec(lu, cmd, cdb, cdb_len, iov, iovcnt, EN_WAIT_MS, &w))
		_exit(3);
	return atomic_load(&w.calls) == 1 ? cmd->status : -1;
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

/* sse_offset - where node @id's write data of round @r first differs from the old block (within
 * the block for every node and round: at most 9 + 61 * 23 + 2000). */
static uint32_t sse_offset(uint32_t id, uint32_t r)
{
	return 9 + 61 * r + 1000 * id;
}

/* The identity pages, a write read back through the other nodes, a read past the end. */
static int sse_identity_and_data(struct en_child *c, struct coh_scsi_lu *lu)
{
	static uint8_t buf[SSE_WRITE_BLOCKS * EN_BS], back[SSE_WRITE_BLOCKS * EN_BS];
	uint8_t cdb[16], inq[6] = { 0x12, 1, 0x80, 0, 64, 0 };
	struct coh_scsi_cmd cmd;
	struct iovec iov[3];
	uint64_t end = coh_node_nblocks(c->n) - SSE_PR_BLOCKS;
	uint32_t i;
	int st;

	if (sse_exec1(lu, inq, 6, c->sh->vpd80[c->id], 64, &cmd) != COH_SCSI_GOOD)
		EFAIL(c, "INQUIRY VPD 80h");
	inq[2] = 0x83;
	inq[4] = 128;
	if (sse_exec1(lu, inq, 6, c->sh->vpd83[c->id], 128, &cmd) != COH_SCSI_GOOD)
		EFAIL(c, "INQUIRY VPD 83h");
	for (i = 0; i < SSE_WRITE_BLOCKS; i++)
		bench_fill_block(buf + (size_t)i * EN_BS, EN_BS, 0x5c5e00000100ull + i);
	if (c->id == 0) {
		sse_rw16(cdb, 0x8a, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec1(lu, cdb, 16, buf, sizeof(buf), &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "WRITE(16) of %u blocks: status %d", SSE_WRITE_BLOCKS, st);
	}
	if (en_bar(c, 0))
		EFAIL(c, "barrier after the write");
	if (c->id != 0) {
		/* Odd pieces: the unit reads into a bounce buffer and scatters. */
		iov[0] = (struct iovec){ back, 1000 };
		iov[1] = (struct iovec){ back + 1000, 3 * EN_BS };
		iov[2] = (struct iovec){ back + 1000 + 3 * EN_BS, sizeof(back) - 1000 - 3 * EN_BS };
		sse_rw16(cdb, 0x88, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec(lu, cdb, 16, iov, 3, &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "READ(16): status %d", st);
		if (cmd.data_len != sizeof(back) || memcmp(back, buf, sizeof(buf))) {
			for (i = 0; i < SSE_WRITE_BLOCKS && !memcmp(back + (size_t)i * EN_BS,
								    buf + (size_t)i * EN_BS, EN_BS);
			     i++)
				;
			EFAIL(c,
			      "READ(16) through node %u does not return node 0's write: %u bytes, "
			      "block %u differs first (it holds %02x%02x%02x%02x...)",
			      c->id, cmd.data_len, i, back[i * EN_BS], back[i * EN_BS + 1],
			      back[i * EN_BS + 2], back[i * EN_BS + 3]);
		}
	}
	/* The last block is readable; one past it is LBA OUT OF RANGE, before the engine. */
	sse_rw16(cdb, 0x88, end - 1, 1);
	if ((st = sse_exec1(lu, cdb, 16, back, EN_BS, &cmd)) != COH_SCSI_GOOD)
		EFAIL(c, "READ(16) of the last block: status %d", st);
	sse_rw16(cdb, 0x88, end - 1, 2);
	st = sse_exec1(lu, cdb, 16, back, 2 * EN_BS, &cmd);
	if (st != COH_SCSI_CHECK_CONDITION || (cmd.sense[2] & 0xf) != 0x5 ||
	    cmd.sense[12] != 0x21 || cmd.sense[13] != 0)
		EFAIL(c, "READ(16) past the end: status %d, sense %x/%02x/%02x", st,
		      cmd.sense[2] & 0xf, cmd.sense[12], cmd.sense[13]);
	return 0;
}

/* WRITE SAME through node 0, read through the last node; UNMAP through node 1, zeros read
 * through the others (LBPRZ): the fill commands, whose pieces all write one block's pattern,
 * across the cluster. */
static int sse_same_and_unmap(struct en_child *c, struct coh_scsi_lu *lu)
{
	static uint8_t one[EN_BS], back[SSE_WRITE_BLOCKS * EN_BS], zero[EN_BS];
	uint8_t cdb[16], list[24] = { 0, 22, 0, 16 };
	struct coh_scsi_cmd cmd;
	uint32_t i;
	int st;

	bench_fill_block(one, EN_BS, 0x5a3e000000000001ull);
	if (en_bar(c, 4)) /* the reads of the write before are done */
		EFAIL(c, "barrier before WRITE SAME");
	if (c->id == 0) {
		sse_rw16(cdb, 0x93, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec1(lu, cdb, 16, one, EN_BS, &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "WRITE SAME(16): status %d", st);
	}
	if (en_bar(c, 5))
		EFAIL(c, "barrier after WRITE SAME");
	if (c->id == c->nodes - 1) {
		sse_rw16(cdb, 0x88, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec1(lu, cdb, 16, back, sizeof(back), &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "READ(16) after WRITE SAME: status %d", st);
		for (i = 0; i < SSE_WRITE_BLOCKS; i++) {
			if (memcmp(back + (size_t)i * EN_BS, one, EN_BS))
				EFAIL(c, "block %u of node 0's WRITE SAME differs", i);
		}
	}
	if (en_bar(c, 6))
		EFAIL(c, "barrier after the read");
	if (c->id == 1) {
		/* UNMAP: one block descriptor (LBA, count) after the 8-byte header. */
		memset(cdb, 0, sizeof(cdb));
		cdb[0] = 0x42;
		cdb[8] = sizeof(list);
		for (i = 0; i < 8; i++)
			list[8 + i] = (uint8_t)((uint64_t)SSE_WRITE_LBA >> (56 - 8 * i));
		list[19] = SSE_WRITE_BLOCKS;
		if ((st = sse_exec1(lu, cdb, 10, list, sizeof(list), &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "UNMAP: status %d", st);
	}
	if (en_bar(c, 4))
		EFAIL(c, "barrier after UNMAP");
	if (c->id != 1) {
		sse_rw16(cdb, 0x88, SSE_WRITE_LBA, SSE_WRITE_BLOCKS);
		if ((st = sse_exec1(lu, cdb, 16, back, sizeof(back), &cmd)) != COH_SCSI_GOOD)
			EFAIL(c, "READ(16) after UNMAP: status %d", st);
		for (i = 0; i < SSE_WRITE_BLOCKS; i++) {
			if (memcmp(back + (size_t)i * EN_BS, zero, EN_BS))
				EFAIL(c, "block %u unmapped through node 1 does not read as zeros",
				      i);
		}
	}
	return 0;
}

/* COMPARE AND WRITE from every unit against the same old block: one winner per round, and each
 * loser's INFORMATION is where the winner's data begins to differ from the old. */
static int sse_caw_race(struct en_child *c, struct coh_scsi_lu *lu)
{
	static uint8_t buf[2 * EN_BS], old[EN_BS];
	struct coh_scsi_cmd cmd;
	uint8_t cdb[16];
	uint32_t r, off, info, w;
	int st;

	for (r = 0; r < SSE_ROUNDS; r++) {
		bench_fill_block(old, EN_BS, 0xca5e00000000ull | r);
		if (c->id == 0) {
			sse_rw16(cdb, 0x8a, SSE_CAW_LBA, 1);
			if (sse_exec1(lu, cdb, 16, old, EN_BS, &cmd) != COH_SCSI_GOOD)
				EFAIL(c, "round %u: WRITE of the old block", r);
		}
		if (en_bar(c, 1))
			EFAIL(c, "round %u: barrier before", r);
		/* Compare: the old block; write: the old block with every byte from this node's
		 * offset on changed. */
		memcpy(buf, old, EN_BS);
		memcpy(buf + EN_BS, old, EN_BS);
		for (off = sse_offset(c->id, r); off < EN_BS; off++)
			buf[EN_BS + off] = (uint8_t)~old[off];
		memset(cdb, 0, sizeof(cdb));
		cdb[0] = 0x89;
		cdb[9] = SSE_CAW_LBA;
		cdb[13] = 1;
		st = sse_exec1(lu, cdb, 16, buf, sizeof(buf), &cmd);
		if (st == COH_SCSI_GOOD) {
			atomic_fetch_add(&c->sh->scsi_won[r], 1);
			atomic_store(&c->sh->scsi_winner[r], c->id + 1);
		} else if (st != COH_SCSI_CHECK_CONDITION || (cmd.sense[2] & 0xf) != 0xe ||
			   cmd.sense[12] != 0x1d || cmd.sense[13] != 0 || !(cmd.sense[0] & 0x80)) {
			EFAIL(c, "round %u: COMPARE AND WRITE: status %d, sense %x/%02x/%02x", r,
			      st, cmd.sense[2] & 0xf, cmd.sense[12], cmd.sense[13]);
		}
		if (en_bar(c, 2))
			EFAIL(c, "round %u: barrier after", r);
		if (atomic_load(&c->sh->scsi_won[r]) != 1)
			EFAIL(c, "round %u: %u COMPARE AND WRITEs succeeded against the same data",
			      r, atomic_load(&c->sh->scsi_won[r]));
		w = atomic_load(&c->sh->scsi_winner[r]) - 1;
		info = (uint32_t)cmd.sense[3] << 24 | (uint32_t)cmd.sense[4] << 16 |
		       (uint32_t)cmd.sense[5] << 8 | cmd.sense[6];
		if (st != COH_SCSI_GOOD && info != sse_offset(w, r))
			EFAIL(c, "round %u: MISCOMPARE at %u, node %u's data differs at %u", r,
			      info, w, sse_offset(w, r));
	}
	return 0;
}

/* sse_pr_out - PERSISTENT RESERVE OUT @sa, @type, with @key and @sa_key: its status. */
static int sse_pr_out(struct coh_scsi_lu *lu, uint8_t sa, uint8_t type, uint64_t key,
		      uint64_t sa_key)
{
	uint8_t cdb[10] = { 0x5f, sa, type, 0, 0, 0, 0, 0, 24, 0 }, p[24] = { 0 };
	struct coh_scsi_cmd cmd;
	uint32_t i;

	for (i = 0; i < 8; i++) {
		p[i] = (uint8_t)(key >> (56 - 8 * i));
		p[8 + i] = (uint8_t)(sa_key >> (56 - 8 * i));
	}
	return sse_exec1(lu, cdb, 10, p, sizeof(p), &cmd);
}

/* sse_pr_keys - READ KEYS into @keys (at most 8): how many, or -1. */
static int sse_pr_keys(struct coh_scsi_lu *lu, uint64_t *keys, uint8_t *type, uint64_t *holder)
{
	uint8_t cdb[10] = { 0x5e, 0, 0, 0, 0, 0, 0, 0, 255, 0 }, b[255];
	struct coh_scsi_cmd cmd;
	uint32_t n, i, j;

	if (sse_exec1(lu, cdb, 10, b, sizeof(b), &cmd) != COH_SCSI_GOOD || cmd.data_len < 8)
		return -1;
	n = ((uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7]) / 8;
	for (i = 0; i < n && i < 8; i++)
		for (keys[i] = 0, j = 0; j < 8; j++)
			keys[i] = keys[i] << 8 | b[8 + 8 * i + j];
	cdb[1] = 1; /* READ RESERVATION */
	if (sse_exec1(lu, cdb, 10, b, sizeof(b), &cmd) != COH_SCSI_GOOD)
		return -1;
	*type = cmd.data_len >= 24 ? b[21] : 0;
	for (*holder = 0, j = 0; j < 8 && cmd.data_len >= 24; j++)
		*holder = *holder << 8 | b[8 + j];
	return (int)n;
}

/* sse_rw_status - a one-block WRITE (@write) or READ at this node's own LBA: its status. */
static int sse_rw_status(struct en_child *c, struct coh_scsi_lu *lu, bool write)
{
	static uint8_t blk[EN_BS];
	struct coh_scsi_cmd cmd;
	uint8_t cdb[16];

	sse_rw16(cdb, write ? 0x8a : 0x88, 26 + c->id, 1);
	return sse_exec1(lu, cdb, 16, blk, EN_BS, &cmd);
}

/* Persistent reservations across the cluster (keys 0xa0 + node id). */
static int sse_reservations(struct en_child *c, struct coh_scsi_lu *lu)
{
	uint64_t keys[8], holder;
	uint8_t type;
	int n, st;

	if (en_bar(c, 1))
		EFAIL(c, "barrier before the reservations");
	if (c->id == 0 && ((st = sse_pr_out(lu, 0, 0, 0, 0xa0)) != COH_SCSI_GOOD ||
			   (st = sse_pr_out(lu, 1, 1, 0xa0, 0)) != COH_SCSI_GOOD))
		EFAIL(c, "REGISTER and RESERVE (write exclusive): status %d", st);
	if (en_bar(c, 2))
		EFAIL(c, "barrier after the reservation");
	n = sse_pr_keys(lu, keys, &type, &holder);
	if (n != 1 || keys[0] != 0xa0 || type != 1 || holder != 0xa0)
		EFAIL(c, "node %u sees %d keys (first %#llx), type %u held by %#llx", c->id, n,
		      n > 0 ? (unsigned long long)keys[0] : 0ull, type, (unsigned long long)holder);
	if ((st = sse_rw_status(c, lu, true)) != (c->id ? COH_SCSI_RESERVATION_CONFLICT : 0))
		EFAIL(c, "WRITE under node 0's write-exclusive reservation: status %d", st);
	if ((st = sse_rw_status(c, lu, false)) != COH_SCSI_GOOD)
		EFAIL(c, "READ under a write-exclusive reservation: status %d", st);
	if (en_bar(c, 1))
		EFAIL(c, "barrier before the registrations");
	/* Nodes 1 and 2 register at once: their changes race on the table. */
	if (c->id && (st = sse_pr_out(lu, 0, 0, 0, 0xa0 + c->id)) != COH_SCSI_GOOD)
		EFAIL(c, "REGISTER: status %d", st);
	if (en_bar(c, 2))
		EFAIL(c, "barrier after the registrations");
	if ((n = sse_pr_keys(lu, keys, &type, &holder)) != (int)c->nodes)
		EFAIL(c, "%d keys after %u nodes registered", n, c->nodes);
	if (en_bar(c, 1))
		EFAIL(c, "barrier before the preempt");
	if (c->id == 1 && (st = sse_pr_out(lu, 4, 3, 0xa1, 0xa0)) != COH_SCSI_GOOD)
		EFAIL(c, "PREEMPT node 0 (exclusive access): status %d", st);
	if (en_bar(c, 2))
		EFAIL(c, "barrier after the preempt");
	n = sse_pr_keys(lu, keys, &type, &holder);
	if (n != (int)c->nodes - 1 || type != 3 || holder != 0xa1)
		EFAIL(c, "after the preempt: %d keys, type %u held by %#llx", n, type,
		      (unsigned long long)holder);
	st = sse_rw_status(c, lu, false);
	if (st != (c->id == 1 ? COH_SCSI_GOOD : COH_SCSI_RESERVATION_CONFLICT))
		EFAIL(c, "READ under node 1's exclusive-access reservation: status %d", st);
	if (en_bar(c, 1))
		EFAIL(c, "barrier before CLEAR");
	if (c->id == 2 && (st = sse_pr_out(lu, 3, 0, 0xa2, 0)) != COH_SCSI_GOOD)
		EFAIL(c, "CLEAR: status %d", st);
	if (en_bar(c, 2))
		EFAIL(c, "barrier after CLEAR");
	if ((st = sse_rw_status(c, lu, true)) != COH_SCSI_GOOD)
		EFAIL(c, "WRITE after CLEAR: status %d", st);
	return 0;
}

/* sse_node - one controller: its unit over the node, the checks, the unit gone before the node
 * closes (the harness closes it). */
static int sse_node(struct en_child *c)
{
	char who[64];
	struct coh_scsi_lu_attr la = { .attr_size = sizeof(la),
				       .block_size = coh_node_block_size(c->n),
				       .nblocks = coh_node_nblocks(c->n) - SSE_PR_BLOCKS,
				       .volume_id = { 0xc0, 0x40, 0x77, 0x5c, 0x51, 0, 0, 0, 0, 0,
						      0, 0, 0, 0, 0, 0x02 },
				       .volume_name = "scsi_engine",
				       .tpg_id = (uint16_t)(c->id + 1),
				       .rel_port_id = (uint16_t)(c->id + 1),
				       .tpg_count = (uint16_t)c->nodes,
				       .max_xfer_blocks = 4,
				       .submit = sse_submit,
				       .submit_ctx = c->n,
				       .pr_lba = coh_node_nblocks(c->n) - SSE_PR_BLOCKS,
				       .pr_blocks = SSE_PR_BLOCKS,
				       .initiator = who };
	struct coh_scsi_lu *lu;
	int r;

	snprintf(who, sizeof(who), "iqn.2026-12.org.cohort:host-%u", c->id);
	if ((r = coh_scsi_lu_new(&la, &lu)))
		EFAIL(c, "unit: %s", coh_strerror(r));
	r = sse_identity_and_data(c, lu) || sse_same_and_unmap(c, lu) || sse_caw_race(c, lu) ||
	    sse_reservations(c, lu);
	if (!r && en_bar(c, 3))
		r = 1;
	coh_scsi_lu_delete(lu);
	return r;
}

/* sse_judge - every node reports one disk: the same 80h page, the same 83h designators before
 * the node's own relative port and port group (the last 16 bytes), and those per node. */
static int sse_judge(struct en_shared *sh, uint32_t nodes)
{
	uint32_t len = ((uint32_t)sh->vpd83[0][2] << 8 | sh->vpd83[0][3]) + 4, i;

	if (len < 16 + 20 || len > sizeof(sh->vpd83[0])) {
		fprintf(stderr, "scsi_engine: VPD 83h of %u bytes\n", len);
		return 1;
	}
	for (i = 1; i < nodes; i++) {
		if (memcmp(sh->vpd83[0], sh->vpd83[i], 4) ||
		    memcmp(sh->vpd80[0], sh->vpd80[i], 36) ||
		    memcmp(sh->vpd83[0], sh->vpd83[i], len - 16)) {
			fprintf(stderr, "scsi_engine: node %u reports another identity\n", i);
			return 1;
		}
	}
	/* The relative port designator's identifier: the node's id + 1. */
	for (i = 0; i < nodes; i++) {
		if (sh->vpd83[i][len - 16 + 7] != i + 1) {
			fprintf(stderr, "scsi_engine: node %u's relative port is not its own\n", i);
			return 1;
		}
	}
	return 0;
}

int sse_every_node_one_disk(void)
{
	return en_run("scsi_engine", SSE_NODES, 1, 16, NULL, sse_node, sse_judge);
}
