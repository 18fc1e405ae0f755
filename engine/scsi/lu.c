/*
 * lu.c - the SCSI logical unit (scsi.h): parses each CDB against the SBC-3/SPC-4 tables, answers
 * the commands about the unit (INQUIRY and its VPD pages, READ CAPACITY, MODE SENSE/SELECT, REPORT
 * TARGET PORT GROUPS, TEST UNIT READY, REQUEST SENSE) from its attributes, and turns media
 * commands (READ, WRITE, WRITE SAME, UNMAP, VERIFY, COMPARE AND WRITE, SYNCHRONIZE CACHE) into
 * struct coh_io operations on the block path, in pieces of at most @max_xfer_blocks, one after
 * the other. docs/scsi.md has the command table, the identity and the sense map.
 *
 * A media command's pieces are driven by their completions: the callback of one submits the next
 * (lu_pump). A block path that completes inside its submit (a test's) would recurse once per
 * piece, so the submitter and the callback decide through @cmd->sync which of them goes on.
 *
 * Persistent reservations, when the unit has a table (lu_pr_start; the rules are pr.c's): a
 * command a reservation can refuse reads the table first.
 *
 * Leaves out: REPORT LUNS (the kernel's), SPC-2 RESERVE/RELEASE, task management, descriptor-format
 * sense, protection information, variable-length CDBs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/scsi.h"
#include "be.h"
#include "pr.h"

#define LU_XFER_DEFAULT 256u	    /* blocks per engine operation when the attributes say 0 */
#define LU_CAW_MAX 16u		    /* VPD B0 MAXIMUM COMPARE AND WRITE LENGTH, blocks */
#define LU_UNMAP_DESC_MAX 256u	    /* VPD B0 MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT */
#define LU_UNMAP_LBA_MAX (1u << 20) /* VPD B0 MAXIMUM UNMAP LBA COUNT (per command) */
#define LU_WS_MAX (1u << 20)	    /* VPD B0 MAXIMUM WRITE SAME LENGTH */
#define LU_DATA_MAX 1024u	    /* the longest answer built here */
#define LU_REVISION "0.1 " /* PRODUCT REVISION LEVEL: the project's version (CMakeLists.txt) */

/* Sense keys and the ASC/ASCQ pairs used (SPC-4 tables 49 and 51). */
enum {
	SK_NO_SENSE = 0x0,
	SK_NOT_READY = 0x2,
	SK_MEDIUM_ERROR = 0x3,
	SK_ILLEGAL_REQUEST = 0x5,
	SK_MISCOMPARE = 0xe,
};
#define ASC_INVALID_OPCODE 0x2000
#define ASC_LBA_OUT_OF_RANGE 0x2100
#define ASC_INVALID_FIELD_CDB 0x2400
#define ASC_PARAM_LIST_LENGTH 0x1a00
#define ASC_INVALID_FIELD_PARAM 0x2600
#define ASC_SAVING_NOT_SUPPORTED 0x3900
#define ASC_MISCOMPARE_VERIFY 0x1d00
#define ASC_UNRECOVERED_READ 0x1100
#define ASC_WRITE_ERROR 0x0c00
#define ASC_ALUA_TRANSITION 0x040a
#define ASC_ALUA_UNAVAILABLE 0x040c
#define ASC_INVALID_RELEASE 0x2604
#define ASC_NO_REGISTRATION_ROOM 0x5504
#define ASC_LU_NOT_SUPPORTED 0x2500

#define LU_PR_TRIES 32u /* PERSISTENT RESERVE OUT's rounds against other controllers' changes */

enum lu_job {
	J_READ = 1,
	J_WRITE,
	J_FILL,
	J_VERIFY,
	J_VERIFY_CMP,
	J_CAW
};

struct coh_scsi_lu {
	struct coh_scsi_lu_attr a;
	char name[65];
	char initiator[PR_NAME_MAX + 1];
	struct pr_nexus nexus; /* who this unit serves: reservations are kept per nexus */
	_Atomic uint32_t state;
	/* the capacity: @a's at first, grown online (coh_scsi_lu_grow) while commands run */
	_Atomic uint64_t nblocks;
};

/* lu_nblocks - the unit's capacity now. */
static uint64_t lu_nblocks(const struct coh_scsi_lu *lu)
{
	return atomic_load_explicit(&lu->nblocks, memory_order_acquire);
}

/* lu_sense - CHECK CONDITION with fixed-format sense: @key, @asc (ASC << 8 | ASCQ), the
 * INFORMATION field when @info_valid, and a field pointer (@field >= 0: byte @field of the CDB,
 * or of the parameter list when !@in_cdb). */
static void lu_sense(struct coh_scsi_cmd *cmd, uint8_t key, uint16_t asc, bool info_valid,
		     uint32_t info, int field, bool in_cdb)
{
	uint8_t *s = cmd->sense;

	memset(s, 0, 18);
	s[0] = 0x70 | (info_valid ? 0x80 : 0);
	s[2] = key;
	if (info_valid)
		be_put32(s + 3, info);
	s[7] = 10;
	s[12] = (uint8_t)(asc >> 8);
	s[13] = (uint8_t)asc;
	if (field >= 0) {
		s[15] = 0x80 | (in_cdb ? 0x40 : 0);
		be_put16(s + 16, (uint32_t)field);
	}
	cmd->sense_len = 18;
	cmd->status = COH_SCSI_CHECK_CONDITION;
}

static void lu_bad_cdb(struct coh_scsi_cmd *cmd, int field)
{
	lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB, false, 0, field, true);
}

void coh_scsi_sense_from_errno(struct coh_scsi_cmd *cmd, int err, bool is_write)
{
	cmd->sense_len = 0;
	switch (err) {
	case 0:
		cmd->status = COH_SCSI_GOOD;
		break;
	case -EBUSY: /* the engine's queue depth: the initiator retries */
		cmd->status = COH_SCSI_TASK_SET_FULL;
		break;
	case -ENOMEM:
	case -ENOSPC: /* the log had no room within the bound (back-pressure): later */
		cmd->status = COH_SCSI_BUSY;
		break;
	case -EROFS:	 /* no quorum: this node must not serve */
	case -ESHUTDOWN: /* leaving, or the cluster stopped */
	case -EACCES:	 /* fenced */
	case -ENOTCONN:	 /* not (yet) a member */
	case -EHOSTDOWN: /* ... */
	case -ENOTUNIQ:	 /* a routed volume two tables disagree on: fenced (router.h) */
		lu_sense(cmd, SK_NOT_READY, ASC_ALUA_UNAVAILABLE, false, 0, -1, false);
		break;
	case -EAGAIN:	  /* a view change or a formation: soon again */
	case -ETIMEDOUT:  /* an operation's bound ran out waiting for a view change */
	case -ECONNRESET: /* a peer died mid-operation: the view change takes over */
	case -ECONNREFUSED:
	case -EPIPE:
	case -ETIME: /* the engine turns these into -ETIMEDOUT or -EROFS; a caller may not */
	/* A routed unit (router.h): a forwarded command's target was cut off before its status
	 * came, or runs another table's version, or no AMF of the group is alive. */
	case -ECONNABORTED:
	case -ESTALE:
	case -EHOSTUNREACH:
		lu_sense(cmd, SK_NOT_READY, ASC_ALUA_TRANSITION, false, 0, -1, false);
		break;
	case -ENXIO: /* a routed unit whose volume a table change deleted (router.h) */
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_LU_NOT_SUPPORTED, false, 0, -1, false);
		break;
	case -EOPNOTSUPP: /* an operation the unit's block path does not do */
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE, false, 0, -1, false);
		break;
	case -EINVAL:
	case -ERANGE:
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB, false, 0, -1, false);
		break;
	default: /* -EIO and anything unexpected: the medium failed this command */
		lu_sense(cmd, SK_MEDIUM_ERROR, is_write ? ASC_WRITE_ERROR : ASC_UNRECOVERED_READ,
			 false, 0, -1, false);
		break;
	}
}

/* lu_not_active - true, with the state's sense, when the unit does not serve media commands. */
static bool lu_not_active(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	uint32_t st = atomic_load(&lu->state);

	if (st == COH_SCSI_LU_ACTIVE)
		return false;
	lu_sense(cmd, SK_NOT_READY,
		 st == COH_SCSI_LU_TRANSITIONING ? ASC_ALUA_TRANSITION : ASC_ALUA_UNAVAILABLE,
		 false, 0, -1, false);
	return true;
}

static uint64_t lu_iov_len(const struct coh_scsi_cmd *cmd)
{
	uint64_t t = 0;
	uint32_t i;

	for (i = 0; i < cmd->iov_cnt; i++)
		t += cmd->iov[i].iov_len;
	return t;
}

/* lu_copy_out - @len bytes of @src into the Data-In buffer (as much as fits): data_len. */
static void lu_copy_out(struct coh_scsi_cmd *cmd, const uint8_t *src, uint64_t len)
{
	uint64_t off = 0;
	uint32_t i;

	for (i = 0; i < cmd->iov_cnt && off < len; i++) {
		uint64_t n = cmd->iov[i].iov_len;

		if (n > len - off)
			n = len - off;
		if (n)
			memcpy(cmd->iov[i].iov_base, src + off, n);
		off += n;
	}
	cmd->data_len = (uint32_t)off;
}

/* lu_copy_in - the first @len bytes of the Data-Out buffer into @dst; false if it is shorter. */
static bool lu_copy_in(const struct coh_scsi_cmd *cmd, uint8_t *dst, uint64_t len)
{
	uint64_t off = 0;
	uint32_t i;

	for (i = 0; i < cmd->iov_cnt && off < len; i++) {
		uint64_t n = cmd->iov[i].iov_len;

		if (n > len - off)
			n = len - off;
		if (n)
			memcpy(dst + off, cmd->iov[i].iov_base, n);
		off += n;
	}
	return off == len;
}

static void lu_done(struct coh_scsi_cmd *cmd)
{
	free(cmd->bounce);
	cmd->bounce = NULL;
	free(cmd->pat);
	cmd->pat = NULL;
	if (cmd->ext != cmd->ext1)
		free(cmd->ext);
	cmd->ext = NULL;
	free(cmd->pr_buf);
	cmd->pr_buf = NULL;
	cmd->done(cmd, cmd->done_arg);
}

/* Answer with @len bytes of @buf truncated to the allocation length @alloc. */
static void lu_answer(struct coh_scsi_cmd *cmd, const uint8_t *buf, uint32_t len, uint32_t alloc)
{
	lu_copy_out(cmd, buf, len < alloc ? len : alloc);
	cmd->status = COH_SCSI_GOOD;
}

/* INQUIRY */

static uint32_t lu_serial(const struct coh_scsi_lu *lu, char out[33])
{
	uint32_t i;

	for (i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", lu->a.volume_id[i]);
	return 32;
}

/* lu_naa - the NAA 6 designator as LIO lays it out (spc_gen_naa_6h_vendor_specific): NAA 6, IEEE
 * company id 0x001405, then the serial's hex digits as nibbles. Same volume, same bytes on every
 * node. */
static void lu_naa(const struct coh_scsi_lu *lu, uint8_t out[16])
{
	static const uint8_t head[7] = { 6, 0, 0, 1, 4, 0, 5 };
	char serial[33];
	uint32_t i;

	lu_serial(lu, serial);
	memset(out, 0, 16);
	for (i = 0; i < 32; i++) {
		uint8_t v;

		if (i < 7)
			v = head[i];
		else {
			char ch = serial[i - 7];

			v = (uint8_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
		}
		out[i / 2] |= (uint8_t)(i % 2 ? v : v << 4);
	}
}

static uint32_t lu_vpd(struct coh_scsi_lu *lu, uint8_t page, uint8_t *b)
{
	char serial[33];
	uint32_t n;

	memset(b, 0, LU_DATA_MAX);
	b[1] = page;
	switch (page) {
	case 0x00:
		b[4] = 0x00, b[5] = 0x80, b[6] = 0x83, b[7] = 0xb0, b[8] = 0xb1, b[9] = 0xb2;
		be_put16(b + 2, 6);
		return 10;
	case 0x80:
		lu_serial(lu, serial);
		memcpy(b + 4, serial, 32);
		be_put16(b + 2, 32);
		return 36;
	case 0x83:
		n = 4;
		/* The logical unit's NAA: what hosts and dm-multipath key on. */
		b[n] = 0x01, b[n + 1] = 0x03, b[n + 3] = 16;
		lu_naa(lu, b + n + 4);
		n += 20;
		/* T10 vendor id: vendor, then the serial. */
		lu_serial(lu, serial);
		b[n] = 0x02, b[n + 1] = 0x01, b[n + 3] = 40;
		memcpy(b + n + 4, "COHORT  ", 8);
		memcpy(b + n + 12, serial, 32);
		n += 44;
		/* This node's target port and its group (association: target port). */
		b[n] = 0x01, b[n + 1] = 0x14, b[n + 3] = 4;
		be_put16(b + n + 6, lu->a.rel_port_id);
		n += 8;
		b[n] = 0x01, b[n + 1] = 0x15, b[n + 3] = 4;
		be_put16(b + n + 6, lu->a.tpg_id);
		n += 8;
		be_put16(b + 2, n - 4);
		return n;
	case 0xb0:
		be_put16(b + 2, 0x3c);
		b[4] = 0x01; /* WSNZ: WRITE SAME of 0 blocks is refused */
		/* what lu_caw takes: one engine operation, at most a piece */
		b[5] = (uint8_t)(lu->a.max_xfer_blocks < LU_CAW_MAX ? lu->a.max_xfer_blocks
								    : LU_CAW_MAX);
		be_put16(b + 6, 1);
		be_put32(b + 8, lu->a.max_xfer_blocks);
		be_put32(b + 12, lu->a.max_xfer_blocks);
		be_put32(b + 20, LU_UNMAP_LBA_MAX);
		be_put32(b + 24, LU_UNMAP_DESC_MAX);
		be_put32(b + 28, 1);
		be_put64(b + 36, LU_WS_MAX);
		return 0x40;
	case 0xb1:
		be_put16(b + 2, 0x3c);
		be_put16(b + 4, 1); /* non-rotating */
		return 0x40;
	case 0xb2:
		be_put16(b + 2, 4);
		b[5] = 0x80 | 0x40 | 0x20 | 0x04; /* LBPU, LBPWS, LBPWS10, LBPRZ */
		return 8;
	}
	return 0;
}

static void lu_inquiry(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;
	uint8_t b[LU_DATA_MAX];
	uint32_t alloc = be_get16(c + 3), n;

	if (c[1] & 0xfe)
		return lu_bad_cdb(cmd, 1);
	if (!(c[1] & 1)) {
		if (c[2])
			return lu_bad_cdb(cmd, 2);
		memset(b, 0, 66);
		b[2] = 0x06; /* SPC-4 */
		b[3] = 0x12; /* HISUP, response data format 2 */
		b[4] = 66 - 5;
		b[5] = 0x10; /* TPGS 01b: implicit ALUA */
		b[6] = 0x10; /* MULTIP: a port on every controller */
		b[7] = 0x02; /* CMDQUE */
		memcpy(b + 8, "COHORT  ", 8);
		memcpy(b + 16, "COHORT VOLUME   ", 16);
		memcpy(b + 32, LU_REVISION, 4);
		be_put16(b + 58, 0x0460); /* SPC-4 */
		be_put16(b + 60, 0x04c0); /* SBC-3 */
		return lu_answer(cmd, b, 66, alloc);
	}
	n = lu_vpd(lu, c[2], b);
	if (!n)
		return lu_bad_cdb(cmd, 2);
	lu_answer(cmd, b, n, alloc);
}

/* MODE SENSE / SELECT: the caching page (08h: no volatile cache, WCE 0) and the control page
 * (0Ah), current values only; nothing is changeable. */

static uint32_t lu_page(uint8_t code, bool changeable, uint8_t *p)
{
	if (code == 0x08) {
		memset(p, 0, 20);
		p[0] = 0x08, p[1] = 0x12;
		return 20;
	}
	if (code == 0x0a) {
		memset(p, 0, 12);
		p[0] = 0x0a, p[1] = 0x0a;
		if (!changeable) {
			p[3] = 0x10; /* QUEUE ALGORITHM MODIFIER 1: unrestricted reordering */
			be_put16(p + 8, 0xffff); /* busy timeout: unlimited */
		}
		return 12;
	}
	return 0;
}

static void lu_mode_sense(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, bool ten)
{
	const uint8_t *c = cmd->cdb;
	bool dbd = c[1] & 0x08, llbaa = ten && (c[1] & 0x10);
	uint8_t pc = c[2] >> 6, code = c[2] & 0x3f, sub = c[3], b[LU_DATA_MAX];
	uint32_t alloc = ten ? be_get16(c + 7) : c[4], hdr = ten ? 8 : 4, n, bd = 0;

	if (pc == 3)
		return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED, false, 0, 2,
				true);
	if (sub && !(code == 0x3f && sub == 0xff))
		return lu_bad_cdb(cmd, 3);
	memset(b, 0, sizeof(b));
	n = hdr;
	if (!dbd) {
		bd = llbaa ? 16 : 8;
		if (llbaa) {
			be_put64(b + n, lu_nblocks(lu));
			be_put32(b + n + 12, lu->a.block_size);
		} else {
			be_put32(b + n, lu_nblocks(lu) > 0xffffffffull ? 0xffffffffu
								       : (uint32_t)lu_nblocks(lu));
			be_put32(b + n + 4, lu->a.block_size & 0xffffff);
		}
		n += bd;
	}
	if (code == 0x08 || code == 0x3f)
		n += lu_page(0x08, pc == 1, b + n);
	if (code == 0x0a || code == 0x3f)
		n += lu_page(0x0a, pc == 1, b + n);
	if (code != 0x08 && code != 0x0a && code != 0x3f)
		return lu_bad_cdb(cmd, 2);
	if (ten) {
		be_put16(b, n - 2);
		b[3] = 0x10; /* DPOFUA */
		b[4] = llbaa && bd ? 1 : 0;
		be_put16(b + 6, bd);
	} else {
		b[0] = (uint8_t)(n - 1);
		b[2] = 0x10;
		b[3] = (uint8_t)bd;
	}
	lu_answer(cmd, b, n, alloc);
}

/* lu_mode_select_bd - are the @len bytes of block descriptors (@longlba: 16 bytes each, else
 * 8) the unit's as they are? NUMBER OF LOGICAL BLOCKS may be 0 (no change) or the capacity (as
 * MODE SENSE gave it); the block length must be the unit's: neither can be changed. */
static bool lu_mode_select_bd(const struct coh_scsi_lu *lu, const uint8_t *d, uint32_t len,
			      bool longlba)
{
	uint32_t one = longlba ? 16 : 8, i;

	if (len % one)
		return false;
	for (i = 0; i < len; i += one, d += one) {
		uint64_t blocks = longlba ? be_get64(d) : be_get32(d);
		uint64_t shown =
		    longlba || lu_nblocks(lu) <= 0xffffffffull ? lu_nblocks(lu) : 0xffffffffull;
		uint32_t bsize = longlba ? be_get32(d + 12) : be_get32(d + 4) & 0xffffff;

		if ((blocks && blocks != shown) || bsize != lu->a.block_size)
			return false;
	}
	return true;
}

static void lu_mode_select(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, bool ten)
{
	const uint8_t *c = cmd->cdb;
	uint32_t len = ten ? be_get16(c + 7) : c[4], hdr = ten ? 8 : 4, off, bd;
	uint8_t p[LU_DATA_MAX], cur[32];

	if (c[1] & 0x01)
		return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED, false, 0, 1,
				true);
	if (!len) {
		cmd->status = COH_SCSI_GOOD;
		return;
	}
	if (len > sizeof(p) || len < hdr || !lu_copy_in(cmd, p, len))
		return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0, -1,
				false);
	bd = ten ? be_get16(p + 6) : p[3];
	off = hdr + bd;
	if (off > len)
		return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0, -1,
				false);
	if (!lu_mode_select_bd(lu, p + hdr, bd, ten && (p[4] & 1)))
		return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM, false, 0,
				(int)hdr, false);
	while (off < len) {
		uint32_t n, plen;

		if (len - off < 2)
			return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0,
					-1, false);
		plen = (uint32_t)p[off + 1] + 2;
		n = lu_page(p[off] & 0x3f, false, cur);
		if (!n || plen != n || off + plen > len)
			return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM, false, 0,
					(int)off, false);
		/* Only the current values are accepted (the PS bit aside): nothing can change. */
		if ((p[off] & 0x7f) != cur[0] || memcmp(p + off + 1, cur + 1, n - 1))
			return lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM, false, 0,
					(int)off, false);
		off += plen;
	}
	cmd->status = COH_SCSI_GOOD;
}

/* REPORT TARGET PORT GROUPS: a group per controller, each one port; every group active/optimized,
 * this node's as its state says. */
static void lu_rtpg(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;
	uint32_t alloc = be_get32(c + 6), n, g, groups = lu->a.tpg_count ? lu->a.tpg_count : 1;
	bool ext = (c[1] >> 5) == 1;
	uint32_t st = atomic_load(&lu->state);
	uint8_t b[LU_DATA_MAX];

	if ((c[1] >> 5) > 1)
		return lu_bad_cdb(cmd, 1);
	memset(b, 0, sizeof(b));
	n = ext ? 8 : 4;
	if (ext)
		b[4] = 0x10;
	for (g = 1; g <= groups && n + 12 <= sizeof(b); g++) {
		bool mine = g == lu->a.tpg_id;
		uint8_t state = 0x0; /* active/optimized */

		if (mine && st == COH_SCSI_LU_TRANSITIONING)
			state = 0x0f;
		else if (mine && st == COH_SCSI_LU_UNAVAILABLE)
			state = 0x03;
		b[n] = 0x80 | state;	       /* PREF: every path is as good */
		b[n + 1] = 0x80 | 0x08 | 0x01; /* T_SUP, U_SUP, AO_SUP */
		be_put16(b + n + 2, g);
		b[n + 7] = 1;
		be_put16(b + n + 10, mine ? lu->a.rel_port_id : g);
		n += 12;
	}
	be_put32(b, n - 4);
	lu_answer(cmd, b, n, alloc);
}

static void lu_read_capacity(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, bool sixteen)
{
	uint64_t last = lu_nblocks(lu) - 1;
	uint8_t b[32];

	/* PMI 0 asks for the last LBA, and SBC-3 wants the LBA field zero with it. */
	if (!(cmd->cdb[sixteen ? 14 : 8] & 1) &&
	    (sixteen ? be_get64(cmd->cdb + 2) : be_get32(cmd->cdb + 2)))
		return lu_bad_cdb(cmd, 2);
	memset(b, 0, sizeof(b));
	if (!sixteen) {
		be_put32(b, last > 0xfffffffeull ? 0xffffffffu : (uint32_t)last);
		be_put32(b + 4, lu->a.block_size);
		return lu_answer(cmd, b, 8, 8);
	}
	be_put64(b, last);
	be_put32(b + 8, lu->a.block_size);
	b[14] = 0x80 | 0x40; /* LBPME, LBPRZ: UNMAP is supported and reads back zeros */
	lu_answer(cmd, b, 32, be_get32(cmd->cdb + 10));
}

/* Media commands. */

static void lu_pump(struct coh_scsi_cmd *cmd);

/* lu_finish - the job's end: GOOD with the data copied out, or its error's sense. */
static void lu_finish(struct coh_scsi_cmd *cmd)
{
	uint32_t job = cmd->op_state;

	if (cmd->err) {
		if (cmd->status != COH_SCSI_CHECK_CONDITION)
			coh_scsi_sense_from_errno(
			    cmd, cmd->err, job != J_READ && job != J_VERIFY && job != J_VERIFY_CMP);
	} else {
		cmd->status = COH_SCSI_GOOD;
		if (job == J_READ && cmd->data == cmd->bounce)
			lu_copy_out(cmd, cmd->data, cmd->data_len_total);
		else if (job == J_READ)
			cmd->data_len = (uint32_t)cmd->data_len_total;
	}
	lu_done(cmd);
}

/* lu_piece_done - a piece completed: advance, and go on unless its submitter does. */
static void lu_piece_done(struct coh_io *io, int status, void *arg)
{
	struct coh_scsi_cmd *cmd = arg;
	struct coh_scsi_lu *lu = cmd->lu;
	uint32_t bs = lu->a.block_size;

	if (status == -EILSEQ && cmd->op_state == J_CAW) {
		lu_sense(cmd, SK_MISCOMPARE, ASC_MISCOMPARE_VERIFY, true, io->miscompare, -1,
			 false);
		cmd->err = status;
	} else if (status) {
		cmd->err = status;
	} else if (cmd->op_state == J_VERIFY_CMP) {
		const uint8_t *want = cmd->data + (uint64_t)cmd->done_blocks * bs;
		uint64_t i, len = (uint64_t)cmd->chunk * bs;

		for (i = 0; i < len && cmd->bounce && ((uint8_t *)cmd->bounce)[i] == want[i]; i++)
			;
		if (i < len) {
			lu_sense(cmd, SK_MISCOMPARE, ASC_MISCOMPARE_VERIFY, true,
				 (uint32_t)((uint64_t)cmd->done_blocks * bs + i), -1, false);
			cmd->err = -EILSEQ;
		}
	}
	cmd->done_blocks += cmd->chunk;
	if (__atomic_exchange_n(&cmd->sync, 2, __ATOMIC_ACQ_REL) == 1)
		return; /* its submitter is still in the submit call: it goes on */
	lu_pump(cmd);
}

/* lu_pump - submit the next piece, until one completes elsewhere or the job is over. */
static void lu_pump(struct coh_scsi_cmd *cmd)
{
	struct coh_scsi_lu *lu = cmd->lu;
	uint32_t bs = lu->a.block_size, max = lu->a.max_xfer_blocks;
	int ret;

	for (;;) {
		uint64_t lba, left;
		uint8_t *buf;

		while (!cmd->err && cmd->i_ext < cmd->n_ext &&
		       cmd->done_blocks >= cmd->ext[2 * cmd->i_ext + 1]) {
			cmd->i_ext++;
			if (cmd->op_state == J_FILL && cmd->i_ext < cmd->n_ext)
				cmd->done_blocks = 0;
		}
		if (cmd->err || cmd->i_ext >= cmd->n_ext)
			return lu_finish(cmd);
		lba = cmd->ext[2 * cmd->i_ext] + cmd->done_blocks;
		left = cmd->ext[2 * cmd->i_ext + 1] - cmd->done_blocks;
		cmd->chunk = (uint32_t)(left < max ? left : max);
		switch (cmd->op_state) {
		case J_FILL:
			buf = cmd->pat;
			break;
		case J_VERIFY:
		case J_VERIFY_CMP:
			buf = cmd->bounce; /* a piece's worth, read and looked at */
			break;
		case J_CAW:
			cmd->chunk = (uint32_t)left; /* one operation: atomic as a whole */
			buf = cmd->data;
			break;
		default:
			buf = cmd->data + (uint64_t)cmd->done_blocks * bs;
			break;
		}
		cmd->io =
		    (struct coh_io){ .io_size = sizeof(cmd->io),
				     .type = cmd->op_state == J_READ || cmd->op_state == J_VERIFY ||
						     cmd->op_state == J_VERIFY_CMP
						 ? COH_IO_READ
					     : cmd->op_state == J_CAW ? COH_IO_COMPARE_WRITE
								      : COH_IO_WRITE,
				     .lba = lu->a.first_lba + lba,
				     .nblocks = cmd->chunk,
				     .buf = buf,
				     .cb = lu_piece_done,
				     .cb_arg = cmd };
		__atomic_store_n(&cmd->sync, 1, __ATOMIC_RELEASE);
		ret = lu->a.submit(lu->a.submit_ctx, &cmd->io);
		if (ret) {
			__atomic_store_n(&cmd->sync, 0, __ATOMIC_RELEASE);
			cmd->err = ret;
			return lu_finish(cmd);
		}
		if (__atomic_exchange_n(&cmd->sync, 0, __ATOMIC_ACQ_REL) != 2)
			return; /* it completes on another thread, which goes on */
	}
}

/* lu_parse_rw - LBA and length of READ/WRITE/VERIFY/SYNC/WRITE SAME CDBs. */
static void lu_parse_rw(const uint8_t *c, uint64_t *lba, uint32_t *n)
{
	switch (c[0]) {
	case 0x08: /* READ(6) */
	case 0x0a:
		*lba = (uint64_t)(c[1] & 0x1f) << 16 | be_get16(c + 2);
		*n = c[4] ? c[4] : 256;
		break;
	case 0xa8: /* (12) */
	case 0xaa:
	case 0xaf:
		*lba = be_get32(c + 2);
		*n = be_get32(c + 6);
		break;
	case 0x88: /* (16) */
	case 0x8a:
	case 0x8f:
	case 0x91:
	case 0x93:
		*lba = be_get64(c + 2);
		*n = be_get32(c + 10);
		break;
	default: /* (10) */
		*lba = be_get32(c + 2);
		*n = be_get16(c + 7);
		break;
	}
}

/* lu_range - is [@lba, @lba + @n) inside the unit? Else LBA OUT OF RANGE. */
static bool lu_range(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, uint64_t lba, uint64_t n)
{
	uint64_t cap = lu_nblocks(lu);

	if (lba <= cap && n <= cap - lba)
		return true;
	lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE, false, 0, -1, false);
	return false;
}

/* lu_start - a media job of one extent or cmd->ext's; its data is @bytes of the buffer. */
static void lu_start(struct coh_scsi_cmd *cmd, uint32_t job, uint64_t lba, uint64_t n)
{
	cmd->op_state = job;
	cmd->done_blocks = 0;
	cmd->i_ext = 0;
	cmd->err = 0;
	if (!cmd->ext) {
		cmd->ext = cmd->ext1;
		cmd->ext1[0] = lba;
		cmd->ext1[1] = n;
		cmd->n_ext = 1;
	}
	lu_pump(cmd);
}

/* lu_data - the command's @len bytes of data, contiguous: the iovec's piece when it is one,
 * else a bounce buffer (filled from Data-Out when @in). false: answered (no memory, or the
 * buffer is shorter than the CDB says). */
static bool lu_data(struct coh_scsi_cmd *cmd, uint64_t len, bool in)
{
	cmd->data_len_total = len;
	if (lu_iov_len(cmd) < len) {
		lu_bad_cdb(cmd, -1);
		return false;
	}
	if (cmd->iov_cnt >= 1 && cmd->iov[0].iov_len >= len) {
		cmd->data = cmd->iov[0].iov_base;
		return true;
	}
	cmd->bounce = malloc(len ? len : 1);
	if (!cmd->bounce) {
		cmd->status = COH_SCSI_BUSY;
		return false;
	}
	cmd->data = cmd->bounce;
	if (in)
		lu_copy_in(cmd, cmd->data, len);
	return true;
}

static void lu_rw(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, bool write)
{
	uint32_t bs = lu->a.block_size, n;
	uint64_t lba, have;

	lu_parse_rw(cmd->cdb, &lba, &n);
	if (!lu_range(lu, cmd, lba, n))
		return lu_done(cmd);
	have = lu_iov_len(cmd);
	if (!write && have < (uint64_t)n * bs) {
		/* The initiator's buffer is shorter than the CDB's transfer (LIO passes such a READ
		 * on with the overflow as its residual): the blocks that reach into the buffer are
		 * read, and what fits is returned, GOOD. A WRITE's never comes (LIO refuses it). */
		n = (uint32_t)((have + bs - 1) / bs);
		if (n && have % bs) {
			cmd->data_len_total = (uint64_t)n * bs;
			cmd->bounce = malloc(cmd->data_len_total);
			if (!cmd->bounce) {
				cmd->status = COH_SCSI_BUSY;
				return lu_done(cmd);
			}
			cmd->data = cmd->bounce;
			return lu_start(cmd, J_READ, lba, n);
		}
	}
	if (!n) {
		cmd->status = COH_SCSI_GOOD;
		return lu_done(cmd);
	}
	if (!lu_data(cmd, (uint64_t)n * bs, write))
		return lu_done(cmd);
	lu_start(cmd, write ? J_WRITE : J_READ, lba, n);
}

static void lu_write_same(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;
	bool unmap = c[1] & 0x08, ndob = c[0] == 0x93 && (c[1] & 0x01);
	uint32_t bs = lu->a.block_size, n, piece, i;
	uint64_t lba;

	lu_parse_rw(c, &lba, &n);
	if (!n || n > LU_WS_MAX) {
		lu_bad_cdb(cmd, c[0] == 0x93 ? 10 : 7);
		return lu_done(cmd);
	}
	if (!lu_range(lu, cmd, lba, n))
		return lu_done(cmd);
	piece = n < lu->a.max_xfer_blocks ? n : lu->a.max_xfer_blocks;
	cmd->pat = calloc(piece, bs);
	if (!cmd->pat) {
		cmd->status = COH_SCSI_BUSY;
		return lu_done(cmd);
	}
	/* UNMAP reads back zeros (LBPRZ): the block is written with them. */
	if (!unmap && !ndob) {
		if (!lu_copy_in(cmd, cmd->pat, bs)) {
			lu_bad_cdb(cmd, -1);
			return lu_done(cmd);
		}
		for (i = 1; i < piece; i++)
			memcpy(cmd->pat + (size_t)i * bs, cmd->pat, bs);
	}
	lu_start(cmd, J_FILL, lba, n);
}

static void lu_unmap(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	uint32_t len = be_get16(cmd->cdb + 7), nd, i, piece = 0;
	uint8_t hdr[8], *p;
	uint64_t total = 0;

	if (cmd->cdb[1] & 0x01) /* ANCHOR: no anchored state here */
	{
		lu_bad_cdb(cmd, 1);
		return lu_done(cmd);
	}
	if (!len) {
		cmd->status = COH_SCSI_GOOD;
		return lu_done(cmd);
	}
	if (len < 8 || !lu_copy_in(cmd, hdr, 8)) {
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0, -1, false);
		return lu_done(cmd);
	}
	nd = be_get16(hdr + 2) / 16;
	if ((uint64_t)8 + (uint64_t)nd * 16 > len || be_get16(hdr + 2) % 16) {
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0, -1, false);
		return lu_done(cmd);
	}
	if (nd > LU_UNMAP_DESC_MAX) {
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM, false, 0, 2, false);
		return lu_done(cmd);
	}
	if (!nd) {
		cmd->status = COH_SCSI_GOOD;
		return lu_done(cmd);
	}
	p = malloc(8 + (size_t)nd * 16);
	cmd->ext = calloc(nd, 2 * sizeof(uint64_t));
	if (!p || !cmd->ext) {
		free(p);
		cmd->status = COH_SCSI_BUSY;
		return lu_done(cmd);
	}
	lu_copy_in(cmd, p, 8 + (size_t)nd * 16);
	for (i = 0; i < nd; i++) {
		const uint8_t *d = p + 8 + 16 * i;

		cmd->ext[2 * i] = be_get64(d);
		cmd->ext[2 * i + 1] = be_get32(d + 8);
		total += cmd->ext[2 * i + 1];
		if (!lu_range(lu, cmd, cmd->ext[2 * i], cmd->ext[2 * i + 1]) ||
		    total > LU_UNMAP_LBA_MAX) {
			if (total > LU_UNMAP_LBA_MAX)
				lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM, false, 0,
					 (int)(16 + 16 * i), false);
			free(p);
			return lu_done(cmd);
		}
		if (cmd->ext[2 * i + 1] > piece)
			piece = (uint32_t)cmd->ext[2 * i + 1];
	}
	free(p);
	cmd->n_ext = nd;
	if (piece > lu->a.max_xfer_blocks)
		piece = lu->a.max_xfer_blocks;
	cmd->pat = calloc(piece ? piece : 1, lu->a.block_size);
	if (!cmd->pat) {
		cmd->status = COH_SCSI_BUSY;
		return lu_done(cmd);
	}
	lu_start(cmd, J_FILL, 0, 0);
}

static void lu_verify(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	uint32_t bytchk = (cmd->cdb[1] >> 1) & 3, n, piece;
	uint64_t lba;

	lu_parse_rw(cmd->cdb, &lba, &n);
	if (bytchk > 1) /* 11b (one block against all) and 10b are not supported */
	{
		lu_bad_cdb(cmd, 1);
		return lu_done(cmd);
	}
	if (!lu_range(lu, cmd, lba, n))
		return lu_done(cmd);
	if (!n) {
		cmd->status = COH_SCSI_GOOD;
		return lu_done(cmd);
	}
	if (bytchk) {
		/* The Data-Out, contiguous: lu_data's bounce if need be; the reads go elsewhere. */
		if (!lu_data(cmd, (uint64_t)n * lu->a.block_size, true))
			return lu_done(cmd);
		if (cmd->data == cmd->bounce) {
			cmd->pat = cmd->bounce; /* freed at the end under its other name */
			cmd->data = cmd->pat;
			cmd->bounce = NULL;
		}
	}
	piece = n < lu->a.max_xfer_blocks ? n : lu->a.max_xfer_blocks;
	cmd->bounce = malloc((size_t)piece * lu->a.block_size);
	if (!cmd->bounce) {
		cmd->status = COH_SCSI_BUSY;
		return lu_done(cmd);
	}
	lu_start(cmd, bytchk ? J_VERIFY_CMP : J_VERIFY, lba, n);
}

static void lu_caw(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;
	uint64_t lba = be_get64(c + 2);
	uint32_t n = c[13];

	if (n > LU_CAW_MAX || n > lu->a.max_xfer_blocks) {
		lu_bad_cdb(cmd, 13);
		return lu_done(cmd);
	}
	if (!lu_range(lu, cmd, lba, n))
		return lu_done(cmd);
	if (!n) {
		cmd->status = COH_SCSI_GOOD;
		return lu_done(cmd);
	}
	/* Compare data, then write data: the layout COH_IO_COMPARE_WRITE takes. */
	if (!lu_data(cmd, 2ull * n * lu->a.block_size, true))
		return lu_done(cmd);
	lu_start(cmd, J_CAW, lba, n);
}

static void lu_sync_cache(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	uint64_t lba;
	uint32_t n;

	/* No volatile cache: an acknowledged write is in the logs of k peers already. */
	lu_parse_rw(cmd->cdb, &lba, &n);
	if (lu_range(lu, cmd, lba, n))
		cmd->status = COH_SCSI_GOOD;
}

/* Bits of a CDB byte that must be zero: reserved ones (SBC-3 and SPC-4, each command's table),
 * and fields of features the unit does not have: RDPROTECT/WRPROTECT/VRPROTECT (no protection
 * information: with PROTECT=0 in INQUIRY, SBC-3 makes a non-zero value INVALID FIELD IN CDB),
 * WRITE SAME's ANCHOR and LBDATA/PBDATA. Group numbers and obsolete bits a host still sets (DPO,
 * FUA, SYNC_NV, IMMED) are not refused. */
static const struct {
	uint8_t op;
	uint8_t bad[15]; /* by byte of the CDB */
} lu_reserved[] = {
	{ 0x00, { 0, 0xff, 0xff, 0xff, 0xff } },	     /* TEST UNIT READY */
	{ 0x03, { 0, 0xfe, 0xff, 0xff } },		     /* REQUEST SENSE */
	{ 0x08, { 0, 0xe0 } },				     /* READ(6) */
	{ 0x0a, { 0, 0xe0 } },				     /* WRITE(6) */
	{ 0x12, { 0, 0xfe } },				     /* INQUIRY */
	{ 0x15, { 0, 0xee, 0xff, 0xff } },		     /* MODE SELECT(6) */
	{ 0x1a, { 0, 0xf7 } },				     /* MODE SENSE(6) */
	{ 0x25, { 0, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xfe } }, /* READ CAPACITY(10) */
	{ 0x28, { 0, 0xe0, 0, 0, 0, 0, 0xe0 } },	     /* READ(10) */
	{ 0x2a, { 0, 0xe0, 0, 0, 0, 0, 0xe0 } },	     /* WRITE(10) */
	{ 0x2f, { 0, 0xe9, 0, 0, 0, 0, 0xe0 } },	     /* VERIFY(10) */
	{ 0x35, { 0, 0xf9, 0, 0, 0, 0, 0xe0 } },	     /* SYNCHRONIZE CACHE(10) */
	{ 0x41, { 0, 0xf7, 0, 0, 0, 0, 0xe0 } },	     /* WRITE SAME(10) */
	{ 0x42, { 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xe0 } }, /* UNMAP */
	{ 0x55, { 0, 0xee, 0xff, 0xff, 0xff, 0xff, 0xff } }, /* MODE SELECT(10) */
	{ 0x5a, { 0, 0xe7, 0, 0, 0xff, 0xff, 0xff } },	     /* MODE SENSE(10) */
	{ 0x5e, { 0, 0xe0, 0xff, 0xff, 0xff, 0xff, 0xff } }, /* PERSISTENT RESERVE IN */
	{ 0x5f, { 0, 0xe0, 0, 0xff, 0xff } },		     /* PERSISTENT RESERVE OUT */
	{ 0x88, { 0, 0xe0 } },				     /* READ(16) */
	{ 0x89, { 0, 0xe5, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0, 0xe0 } }, /* CAW */
	{ 0x8a, { 0, 0xe0 } },							  /* WRITE(16) */
	{ 0x8f, { 0, 0xe9 } },							  /* VERIFY(16) */
	{ 0x91, { 0, 0xf9 } },					      /* SYNCHRONIZE CACHE(16) */
	{ 0x93, { 0, 0xf6 } },					      /* WRITE SAME(16) */
	{ 0x9e, { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe } }, /* READ CAPACITY(16) */
	{ 0xa3, { 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff } }, /* RTPG */
	{ 0xa8, { 0, 0xe0 } },					      /* READ(12) */
	{ 0xaa, { 0, 0xe0 } },					      /* WRITE(12) */
};

/* lu_check_reserved - false, with INVALID FIELD IN CDB and the field pointer at the highest bit
 * set where it must not be, when @c has one. */
static bool lu_check_reserved(struct coh_scsi_cmd *cmd, const uint8_t *c, uint32_t len)
{
	size_t i;
	uint32_t j;

	for (i = 0; i < sizeof(lu_reserved) / sizeof(lu_reserved[0]); i++) {
		if (lu_reserved[i].op != c[0])
			continue;
		for (j = 1; j < len && j < sizeof(lu_reserved[i].bad); j++) {
			uint8_t b = c[j] & lu_reserved[i].bad[j];

			if (!b)
				continue;
			lu_bad_cdb(cmd, (int)j);
			/* BPV, and the bit pointer: the highest offending bit */
			cmd->sense[15] |= 0x08 | (uint8_t)(31 - __builtin_clz(b));
			return false;
		}
		break;
	}
	return true;
}

/* The length each CDB group has (SPC-4 4.2.5.1); 0: not parsed here. */
static uint32_t lu_cdb_len(uint8_t op)
{
	static const uint8_t len[8] = { 6, 10, 10, 0, 16, 12, 0, 0 };

	return len[op >> 5];
}

/* lu_is_media - does @op read or change the medium (and so need an active unit)? */
static bool lu_is_media(uint8_t op)
{
	switch (op) {
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88: /* READ */
	case 0x0a:
	case 0x2a:
	case 0xaa:
	case 0x8a: /* WRITE */
	case 0x41:
	case 0x93: /* WRITE SAME */
	case 0x42: /* UNMAP */
	case 0x2f:
	case 0x8f: /* VERIFY */
	case 0x89: /* COMPARE AND WRITE */
	case 0x35:
	case 0x91: /* SYNCHRONIZE CACHE */
	case 0x5e:
	case 0x5f: /* PERSISTENT RESERVE IN/OUT: the table is on the medium */
		return true;
	}
	return false;
}

/* Persistent reservations: every command that a reservation can refuse, and PERSISTENT RESERVE
 * IN and OUT, first read the volume's table (through the coherent cache: a hit unless another
 * controller changed it). A PERSISTENT RESERVE OUT writes its result back with COMPARE AND WRITE
 * against the image it read, and reads again when another controller's change came first. */

static void lu_dispatch(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd);
static void lu_pr_read_done(struct coh_io *io, int status, void *arg);

/* lu_pr_needed - does @op read the reservation table first? */
static bool lu_pr_needed(uint8_t op)
{
	return lu_is_media(op) || op == 0x15 || op == 0x55 || op == 0x1a || op == 0x5a;
}

static uint32_t lu_pr_bytes(const struct coh_scsi_lu *lu)
{
	return lu->a.pr_blocks * lu->a.block_size;
}

/* lu_pr_table - the decoded table, after the two images in pr_buf. */
static struct pr_table *lu_pr_table(struct coh_scsi_cmd *cmd)
{
	return (struct pr_table *)(void *)(cmd->pr_buf + 2 * (size_t)lu_pr_bytes(cmd->lu));
}

/* lu_pr_submit - submit cmd->io on the table (@type; @cb); answered on failure. */
static void lu_pr_submit(struct coh_scsi_cmd *cmd, uint32_t type, coh_io_cb cb)
{
	struct coh_scsi_lu *lu = cmd->lu;
	int ret;

	cmd->io = (struct coh_io){ .io_size = sizeof(cmd->io),
				   .type = type,
				   .lba = lu->a.pr_lba,
				   .nblocks = lu->a.pr_blocks,
				   .buf = cmd->pr_buf,
				   .cb = cb,
				   .cb_arg = cmd };
	ret = lu->a.submit(lu->a.submit_ctx, &cmd->io);
	if (ret) {
		coh_scsi_sense_from_errno(cmd, ret, cmd->cdb[0] == 0x5f);
		lu_done(cmd);
	}
}

static void lu_pr_start(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;

	if (c[0] == 0x5f) {
		/* The basic parameter list is 24 bytes; with SPEC_I_PT (refused) it is longer. */
		if (be_get32(c + 5) != 24) {
			lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0, -1,
				 false);
			return lu_done(cmd);
		}
		if (!lu_copy_in(cmd, cmd->pr_param, 24)) {
			lu_bad_cdb(cmd, 5);
			return lu_done(cmd);
		}
	}
	cmd->pr_buf = malloc(2 * (size_t)lu_pr_bytes(lu) + sizeof(struct pr_table));
	if (!cmd->pr_buf) {
		cmd->status = COH_SCSI_BUSY;
		return lu_done(cmd);
	}
	lu_pr_submit(cmd, COH_IO_READ, lu_pr_read_done);
}

static void lu_pr_caw_done(struct coh_io *io, int status, void *arg)
{
	struct coh_scsi_cmd *cmd = arg;

	(void)io;
	if (status == -EILSEQ && ++cmd->pr_try < LU_PR_TRIES)
		/* Another controller changed the table since we read it: again, on the new one. */
		return lu_pr_submit(cmd, COH_IO_READ, lu_pr_read_done);
	if (status == -EILSEQ)
		cmd->status = COH_SCSI_BUSY; /* lost every round: the initiator retries */
	else
		coh_scsi_sense_from_errno(cmd, status, true);
	lu_done(cmd);
}

/* lu_pr_out - PERSISTENT RESERVE OUT on the table just read. */
static void lu_pr_out(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, struct pr_table *t)
{
	uint32_t bytes = lu_pr_bytes(lu);
	int field;

	switch (pr_out(t, &lu->nexus, cmd->cdb, cmd->pr_param, 24, &field)) {
	case PR_OK:
		cmd->status = COH_SCSI_GOOD;
		break;
	case PR_CHANGED:
		pr_encode(t, cmd->pr_buf + bytes, bytes);
		return lu_pr_submit(cmd, COH_IO_COMPARE_WRITE, lu_pr_caw_done);
	case PR_CONFLICT:
		cmd->status = COH_SCSI_RESERVATION_CONFLICT;
		break;
	case PR_BAD_CDB:
		lu_bad_cdb(cmd, field);
		break;
	case PR_BAD_PARAM:
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM, false, 0, field, false);
		break;
	case PR_BAD_LENGTH:
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH, false, 0, -1, false);
		break;
	case PR_BAD_RELEASE:
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_RELEASE, false, 0, -1, false);
		break;
	case PR_NO_ROOM:
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_NO_REGISTRATION_ROOM, false, 0, -1, false);
		break;
	}
	lu_done(cmd);
}

static void lu_pr_read_done(struct coh_io *io, int status, void *arg)
{
	struct coh_scsi_cmd *cmd = arg;
	struct coh_scsi_lu *lu = cmd->lu;
	struct pr_table *t = lu_pr_table(cmd);
	uint32_t bytes = lu_pr_bytes(lu);
	int len;

	(void)io;
	if (!status)
		status = pr_decode(cmd->pr_buf, bytes, t);
	if (status) {
		/* A table that does not decode is refused, never taken for an empty one (the
		 * table's read failed: UNRECOVERED READ ERROR whatever the command). */
		coh_scsi_sense_from_errno(cmd, status, false);
		return lu_done(cmd);
	}
	switch (cmd->cdb[0]) {
	case 0x5e:
		len = pr_in(t, cmd->cdb[1] & 0x1f, cmd->pr_buf + bytes, bytes);
		if (len < 0)
			lu_bad_cdb(cmd, 1);
		else
			lu_answer(cmd, cmd->pr_buf + bytes, (uint32_t)len, be_get16(cmd->cdb + 7));
		return lu_done(cmd);
	case 0x5f:
		return lu_pr_out(lu, cmd, t);
	}
	if (pr_conflict(t, &lu->nexus, cmd->cdb[0])) {
		cmd->status = COH_SCSI_RESERVATION_CONFLICT;
		return lu_done(cmd);
	}
	free(cmd->pr_buf);
	cmd->pr_buf = NULL;
	lu_dispatch(lu, cmd);
}

int coh_scsi_lu_new(const struct coh_scsi_lu_attr *attr, struct coh_scsi_lu **lup)
{
	struct coh_scsi_lu *lu;
	uint32_t bs;

	if (!attr || !lup || attr->attr_size < sizeof(*attr) || !attr->submit)
		return -EINVAL;
	bs = attr->block_size;
	if (bs < 512 || bs > 65536 || (bs & (bs - 1)) || !attr->nblocks ||
	    (attr->volume_name && strlen(attr->volume_name) > 64))
		return -EINVAL;
	if (attr->pr_blocks) {
		uint64_t pr_bytes = (uint64_t)attr->pr_blocks * bs;
		uint32_t max = attr->max_xfer_blocks ? attr->max_xfer_blocks : LU_XFER_DEFAULT;

		/* The table is one COMPARE AND WRITE, outside the unit's blocks. */
		if (pr_bytes < PR_BYTES || pr_bytes > 16 * PR_BYTES || attr->pr_blocks > max ||
		    !attr->initiator || !attr->initiator[0] ||
		    strlen(attr->initiator) > PR_NAME_MAX ||
		    (attr->pr_lba < attr->first_lba + attr->nblocks &&
		     attr->first_lba < attr->pr_lba + attr->pr_blocks))
			return -EINVAL;
	}
	lu = calloc(1, sizeof(*lu));
	if (!lu)
		return -ENOMEM;
	lu->a = *attr;
	if (!lu->a.max_xfer_blocks)
		lu->a.max_xfer_blocks = LU_XFER_DEFAULT;
	if (attr->pr_blocks)
		snprintf(lu->initiator, sizeof(lu->initiator), "%s", attr->initiator);
	lu->a.initiator = lu->initiator;
	lu->nexus = (struct pr_nexus){ .initiator = lu->initiator, .rel_port = attr->rel_port_id };
	if (attr->volume_name)
		snprintf(lu->name, sizeof(lu->name), "%s", attr->volume_name);
	lu->a.volume_name = lu->name;
	atomic_init(&lu->state, COH_SCSI_LU_ACTIVE);
	atomic_init(&lu->nblocks, attr->nblocks);
	*lup = lu;
	return 0;
}

void coh_scsi_lu_delete(struct coh_scsi_lu *lu)
{
	free(lu);
}

int coh_scsi_lu_grow(struct coh_scsi_lu *lu, uint64_t nblocks)
{
	uint64_t cur;

	if (!lu || nblocks > UINT64_MAX / 65536)
		return -EINVAL;
	/* A unit with a reservation table keeps it in the blocks right after its own. */
	if (lu->a.pr_blocks)
		return -EBUSY;
	cur = lu_nblocks(lu);
	if (nblocks < cur)
		return -EINVAL;
	atomic_store_explicit(&lu->nblocks, nblocks, memory_order_release);
	return 0;
}

uint64_t coh_scsi_lu_nblocks(struct coh_scsi_lu *lu)
{
	return lu ? lu_nblocks(lu) : 0;
}

void coh_scsi_lu_set_state(struct coh_scsi_lu *lu, uint32_t state)
{
	if (lu && state <= COH_SCSI_LU_UNAVAILABLE)
		atomic_store(&lu->state, state);
}

void coh_scsi_cmd_exec(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;
	uint32_t need;

	/* A caller built with an older, shorter struct: its public fields are the same, the unit's
	 * own are not there to use. */
	if (cmd->cmd_size < sizeof(*cmd)) {
		cmd->data_len = 0;
		lu_bad_cdb(cmd, -1);
		cmd->done(cmd, cmd->done_arg);
		return;
	}
	cmd->lu = lu;
	cmd->status = COH_SCSI_GOOD;
	cmd->sense_len = 0;
	cmd->data_len = 0;
	cmd->bounce = NULL;
	cmd->pat = NULL;
	cmd->ext = NULL;
	cmd->n_ext = 0;
	cmd->err = 0;
	cmd->pr_buf = NULL;
	cmd->pr_try = 0;
	if (!c || !cmd->cdb_len || cmd->cdb_len > COH_SCSI_CDB_MAX || (cmd->iov_cnt && !cmd->iov)) {
		lu_bad_cdb(cmd, 0);
		return lu_done(cmd);
	}
	need = lu_cdb_len(c[0]);
	if (!need) {
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE, false, 0, 0, true);
		return lu_done(cmd);
	}
	if (cmd->cdb_len < need) {
		lu_bad_cdb(cmd, (int)cmd->cdb_len - 1);
		return lu_done(cmd);
	}
	if (c[need - 1] & 0x04) { /* NACA: not supported */
		lu_bad_cdb(cmd, (int)need - 1);
		return lu_done(cmd);
	}
	if (!lu_check_reserved(cmd, c, need))
		return lu_done(cmd);
	/* Media commands on a unit that does not serve: its state's sense, without the engine. */
	if (lu_is_media(c[0]) && lu_not_active(lu, cmd))
		return lu_done(cmd);
	if (lu->a.pr_blocks && lu_pr_needed(c[0]))
		return lu_pr_start(lu, cmd);
	lu_dispatch(lu, cmd);
}

/* lu_dispatch - run a command that passed the checks (and its reservation's). */
static void lu_dispatch(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;

	switch (c[0]) {
	case 0x12:
		lu_inquiry(lu, cmd);
		break;
	case 0x00: /* TEST UNIT READY */
		lu_not_active(lu, cmd);
		break;
	case 0x03: { /* REQUEST SENSE: nothing pending, but the state's readiness */
		struct coh_scsi_cmd tmp = { .cmd_size = sizeof(tmp) };

		if (c[1] & 0x01) { /* DESC: descriptor format is not supported */
			lu_bad_cdb(cmd, 1);
			break;
		}
		if (!lu_not_active(lu, &tmp))
			lu_sense(&tmp, SK_NO_SENSE, 0, false, 0, -1, false);
		lu_answer(cmd, tmp.sense, 18, c[4]);
		break;
	}
	case 0x25:
		lu_read_capacity(lu, cmd, false);
		break;
	case 0x9e:
		if ((c[1] & 0x1f) == 0x10)
			lu_read_capacity(lu, cmd, true);
		else
			lu_bad_cdb(cmd, 1);
		break;
	case 0xa3:
		if ((c[1] & 0x1f) == 0x0a)
			lu_rtpg(lu, cmd);
		else
			lu_bad_cdb(cmd, 1);
		break;
	case 0x1a:
	case 0x5a:
		lu_mode_sense(lu, cmd, c[0] == 0x5a);
		break;
	case 0x15:
	case 0x55:
		lu_mode_select(lu, cmd, c[0] == 0x55);
		break;
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88:
	case 0x0a:
	case 0x2a:
	case 0xaa:
	case 0x8a:
		lu_rw(lu, cmd, c[0] & 0x02);
		return;
	case 0x41:
	case 0x93:
		lu_write_same(lu, cmd);
		return;
	case 0x42:
		lu_unmap(lu, cmd);
		return;
	case 0x2f:
	case 0x8f:
		lu_verify(lu, cmd);
		return;
	case 0x89:
		lu_caw(lu, cmd);
		return;
	case 0x35:
	case 0x91:
		lu_sync_cache(lu, cmd);
		break;
	default:
		lu_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE, false, 0, 0, true);
		break;
	}
	lu_done(cmd);
}
