/*
 * scsi_shim.c - a SCSI unit over a mock block path for the unit tests: the blocks are memory,
 * operations complete inline or on the mock's thread, and failures are injected by count.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cohort/scsi.h"
#include "scsi_shim.h"
#include "scsi_wait.h"

#define SM_QUEUE 64
#define SM_WAIT_MS 10000 /* for one command (sm_run) */

#define SM_UNITS 3 /* sm_open_pr's units */

static struct {
	struct coh_scsi_lu *lu;
	struct coh_scsi_lu *units[SM_UNITS];
	uint8_t *mem;
	uint32_t bs;
	uint64_t nblocks;
	int mode;
	pthread_mutex_t lock;
	pthread_mutex_t exec_lock; /* held across one operation's effect on @mem */
	pthread_cond_t cond;
	pthread_t th;
	bool stop;
	struct coh_io *q[SM_QUEUE];
	uint32_t qn;
	bool busy; /* the mock's thread is completing an operation */
	int fail_err;
	uint32_t fail_skip; /* submits let through before the failures */
	uint32_t fail_n;
	bool fail_at_submit;
	atomic_ulong submits;
	struct coh_scsi_lu_attr attr;
} sm;

static int sm_exec(struct coh_io *io)
{
	uint8_t *at = sm.mem + io->lba * sm.bs;
	size_t len = (size_t)io->nblocks * sm.bs;
	uint8_t *b = io->buf;
	size_t i;

	if (io->lba + io->nblocks > sm.nblocks)
		return -EINVAL;
	if (!sm.mem)
		return -EIO;
	switch (io->type) {
	case COH_IO_READ:
		memcpy(b, at, len);
		return 0;
	case COH_IO_WRITE:
		memcpy(at, b, len);
		return 0;
	case COH_IO_COMPARE_WRITE:
		for (i = 0; i < len && at[i] == b[i]; i++)
			;
		if (i < len) {
			io->miscompare = (uint32_t)i;
			return -EILSEQ;
		}
		memcpy(at, b + len, len);
		return 0;
	}
	return -EINVAL;
}

static int sm_submit(void *ctx, struct coh_io *io)
{
	int fail = 0, ret;

	(void)ctx;
	atomic_fetch_add(&sm.submits, 1);
	pthread_mutex_lock(&sm.lock);
	if (sm.fail_skip)
		sm.fail_skip--;
	else if (sm.fail_n) {
		sm.fail_n--;
		fail = sm.fail_err;
		if (sm.fail_at_submit) {
			pthread_mutex_unlock(&sm.lock);
			return fail;
		}
	}
	if (sm.mode == SM_THREAD && sm.qn < SM_QUEUE) {
		io->state = (uint32_t)(fail ? -fail : 0); /* the mock's note of the failure */
		sm.q[sm.qn++] = io;
		pthread_cond_broadcast(&sm.cond);
		pthread_mutex_unlock(&sm.lock);
		return 0;
	}
	pthread_mutex_unlock(&sm.lock);
	/* One operation at a time, as the engine's COMPARE AND WRITE is atomic. */
	pthread_mutex_lock(&sm.exec_lock);
	ret = fail ? fail : sm_exec(io);
	pthread_mutex_unlock(&sm.exec_lock);
	io->cb(io, ret, io->cb_arg);
	return 0;
}

static void *sm_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sm.lock);
	while (!sm.stop) {
		struct coh_io *io;
		int fail, ret;

		if (!sm.qn) {
			pthread_cond_wait(&sm.cond, &sm.lock);
			continue;
		}
		io = sm.q[0];
		memmove(sm.q, sm.q + 1, --sm.qn * sizeof(sm.q[0]));
		fail = -(int)io->state;
		sm.busy = true;
		pthread_mutex_unlock(&sm.lock);
		pthread_mutex_lock(&sm.exec_lock);
		ret = fail ? fail : sm_exec(io);
		pthread_mutex_unlock(&sm.exec_lock);
		io->cb(io, ret, io->cb_arg);
		pthread_mutex_lock(&sm.lock);
		sm.busy = false;
		pthread_cond_broadcast(&sm.cond);
	}
	pthread_mutex_unlock(&sm.lock);
	return NULL;
}

/* sm_reset - the mock empty, for a unit of @nblocks blocks of @bs bytes (no memory yet). */
static void sm_reset(uint32_t bs, uint64_t nblocks, int mode)
{
	memset(&sm, 0, sizeof(sm));
	sm.bs = bs;
	sm.nblocks = nblocks;
	sm.mode = mode;
	pthread_mutex_init(&sm.lock, NULL);
	pthread_mutex_init(&sm.exec_lock, NULL);
	pthread_cond_init(&sm.cond, NULL);
	sm.attr = (struct coh_scsi_lu_attr){ .attr_size = sizeof(sm.attr),
					     .block_size = bs,
					     .nblocks = nblocks,
					     .tpg_id = 1,
					     .rel_port_id = 1,
					     .tpg_count = 1,
					     .submit = sm_submit };
}

int sm_open(uint32_t bs, uint64_t nblocks, uint32_t max_xfer, int mode)
{
	static const uint8_t id[16] = { 0xc0, 0x40, 0x77, 0, 0, 0, 0,	 0,
					0,    0,    0,	  0, 0, 0, 0xab, 0xcd };
	int ret;

	sm_reset(bs, nblocks, mode);
	sm.mem = calloc(nblocks, bs);
	if (!sm.mem)
		return -ENOMEM;
	memcpy(sm.attr.volume_id, id, sizeof(id));
	sm.attr.volume_name = "vol0";
	sm.attr.tpg_count = 3;
	sm.attr.max_xfer_blocks = max_xfer;
	ret = coh_scsi_lu_new(&sm.attr, &sm.lu);
	if (!ret && mode == SM_THREAD && pthread_create(&sm.th, NULL, sm_main, NULL))
		ret = -EAGAIN;
	return ret;
}

static int sm_run_lu(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len, void *buf,
		     uint32_t len, uint32_t pieces, struct sm_result *r);

int sm_open_pr(uint32_t bs, uint64_t nblocks, uint32_t pr_blocks, int mode)
{
	static const char *const who[SM_UNITS] = { SM_HOST_A, SM_HOST_B, SM_HOST_A };
	static const uint16_t port[SM_UNITS] = { 1, 2, 2 };
	uint32_t i;
	int ret;

	/* The table's blocks after the unit's, in the mock's memory. */
	ret = sm_open(bs, nblocks + pr_blocks, 0, mode);
	if (ret)
		return ret;
	coh_scsi_lu_delete(sm.lu);
	sm.lu = NULL;
	sm.attr.nblocks = nblocks;
	sm.attr.pr_lba = nblocks;
	sm.attr.pr_blocks = pr_blocks;
	for (i = 0; i < SM_UNITS; i++) {
		sm.attr.initiator = who[i];
		sm.attr.rel_port_id = port[i];
		ret = coh_scsi_lu_new(&sm.attr, &sm.units[i]);
		if (ret)
			return ret;
	}
	sm.lu = sm.units[0];
	return 0;
}

int sm_lu_new(const char *initiator, uint16_t rel_port, uint32_t pr_blocks, uint64_t pr_lba)
{
	struct coh_scsi_lu_attr a = sm.attr;
	struct coh_scsi_lu *lu = NULL;
	int ret;

	a.initiator = initiator;
	a.rel_port_id = rel_port;
	a.pr_blocks = pr_blocks;
	a.pr_lba = pr_lba;
	ret = coh_scsi_lu_new(&a, &lu);
	coh_scsi_lu_delete(lu);
	return ret;
}

int sm_run_as(const char *initiator, uint16_t rel_port, const uint8_t *cdb, uint32_t cdb_len,
	      void *buf, uint32_t len, struct sm_result *r)
{
	struct coh_scsi_lu_attr a = sm.attr;
	struct coh_scsi_lu *lu = NULL;
	int ret;

	a.initiator = initiator;
	a.rel_port_id = rel_port;
	ret = coh_scsi_lu_new(&a, &lu);
	if (ret)
		return ret;
	ret = sm_run_lu(lu, cdb, cdb_len, buf, len, 1, r);
	if (!ret) /* else the command may still complete into the unit: leave it */
		coh_scsi_lu_delete(lu);
	return ret;
}

int sm_open_virtual(uint32_t bs, uint64_t nblocks)
{
	sm_reset(bs, nblocks, SM_INLINE);
	return coh_scsi_lu_new(&sm.attr, &sm.lu);
}

static void sm_decode(const struct coh_scsi_cmd *cmd, struct sm_result *r)
{
	memset(r, 0, sizeof(*r));
	r->status = cmd->status;
	r->sense_len = cmd->sense_len;
	r->data_len = cmd->data_len;
	if (cmd->sense_len >= 18) {
		r->key = cmd->sense[2] & 0xf;
		r->asc = cmd->sense[12];
		r->ascq = cmd->sense[13];
		r->info_valid = cmd->sense[0] & 0x80;
		r->info = (uint32_t)cmd->sense[3] << 24 | (uint32_t)cmd->sense[4] << 16 |
			  (uint32_t)cmd->sense[5] << 8 | cmd->sense[6];
		memcpy(r->sks, cmd->sense + 15, 3);
	}
}

void sm_errno_sense(int err, bool is_write, struct sm_result *r)
{
	struct coh_scsi_cmd cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.cmd_size = sizeof(cmd);
	cmd.status = 0xff; /* so that a map that leaves it alone shows */
	coh_scsi_sense_from_errno(&cmd, err, is_write);
	sm_decode(&cmd, r);
}

void sm_close(void)
{
	if (sm.mode == SM_THREAD && sm.th) {
		pthread_mutex_lock(&sm.lock);
		sm.stop = true;
		pthread_cond_broadcast(&sm.cond);
		pthread_mutex_unlock(&sm.lock);
		pthread_join(sm.th, NULL);
	}
	coh_scsi_lu_delete(sm.lu);
	for (uint32_t i = 1; i < SM_UNITS; i++)
		coh_scsi_lu_delete(sm.units[i]);
	memset(sm.units, 0, sizeof(sm.units));
	free(sm.mem);
	sm.mem = NULL;
}

void sm_fail(int err, uint32_t n, bool at_submit)
{
	sm_fail_after(0, err, n, at_submit);
}

void sm_fail_after(uint32_t skip, int err, uint32_t n, bool at_submit)
{
	pthread_mutex_lock(&sm.lock);
	sm.fail_skip = skip;
	sm.fail_err = err;
	sm.fail_n = n;
	sm.fail_at_submit = at_submit;
	pthread_mutex_unlock(&sm.lock);
}

uint8_t *sm_mem(void)
{
	return sm.mem;
}

uint64_t sm_submits(void)
{
	return atomic_load(&sm.submits);
}

int sm_grow(uint64_t nblocks)
{
	struct coh_scsi_lu *lu = sm.lu ? sm.lu : sm.units[0];
	uint8_t *mem;

	if (!lu || nblocks <= sm.nblocks || !sm.mem) /* refused, or no memory to grow */
		return coh_scsi_lu_grow(lu, nblocks);
	mem = realloc(sm.mem, (size_t)nblocks * sm.bs);
	if (!mem)
		return -ENOMEM;
	memset(mem + (size_t)sm.nblocks * sm.bs, 0, (size_t)(nblocks - sm.nblocks) * sm.bs);
	pthread_mutex_lock(&sm.exec_lock);
	sm.mem = mem;
	sm.nblocks = nblocks;
	pthread_mutex_unlock(&sm.exec_lock);
	return coh_scsi_lu_grow(lu, nblocks);
}

void sm_set_state(uint32_t state)
{
	coh_scsi_lu_set_state(sm.lu, state);
}

void sm_set_tpg(uint16_t tpg_id, uint16_t rel_port, uint16_t count)
{
	coh_scsi_lu_delete(sm.lu);
	sm.attr.tpg_id = tpg_id;
	sm.attr.rel_port_id = rel_port;
	sm.attr.tpg_count = count;
	coh_scsi_lu_new(&sm.attr, &sm.lu);
}

static int sm_run_lu(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len, void *buf,
		     uint32_t len, uint32_t pieces, struct sm_result *r);

int sm_run(const uint8_t *cdb, uint32_t cdb_len, void *buf, uint32_t len, uint32_t pieces,
	   struct sm_result *r)
{
	return sm_run_lu(sm.lu, cdb, cdb_len, buf, len, pieces, r);
}

int sm_run_on(uint32_t unit, const uint8_t *cdb, uint32_t cdb_len, void *buf, uint32_t len,
	      struct sm_result *r)
{
	if (unit >= SM_UNITS || !sm.units[unit])
		return -EINVAL;
	return sm_run_lu(sm.units[unit], cdb, cdb_len, buf, len, 1, r);
}

static int sm_run_lu(struct coh_scsi_lu *lu, const uint8_t *cdb, uint32_t cdb_len, void *buf,
		     uint32_t len, uint32_t pieces, struct sm_result *r)
{
	/* One allocation for the command and its wait: left behind, both, if it never answers. */
	struct sm_pending {
		struct coh_scsi_cmd cmd;
		struct sw_wait w;
	} * run;
	struct iovec iov[8];
	uint32_t i, off = 0, n = pieces ? pieces : 1;
	int ret;

	if (n > 8)
		return -EINVAL;
	run = calloc(1, sizeof(*run));
	if (!run)
		return -ENOMEM;
	/* Pieces of odd sizes: the first ones short, the last the rest. */
	for (i = 0; i < n; i++) {
		uint32_t l = i + 1 < n ? (len - off) / 3 + 1 : len - off;

		if (l > len - off)
			l = len - off;
		iov[i].iov_base = (uint8_t *)buf + off;
		iov[i].iov_len = l;
		off += l;
	}
	ret = sw_exec(lu, &run->cmd, cdb, cdb_len, len ? iov : NULL, len ? n : 0, SM_WAIT_MS,
		      &run->w);
	if (ret) {
		/* The command may still complete: leak it rather than free what it uses. */
		return ret;
	}
	/* A second callback would come right after the first, from the mock's thread: wait
	 * (bounded, by the same deadline) until that thread is idle with nothing queued, then
	 * count. */
	if (sm.mode == SM_THREAD) {
		pthread_mutex_lock(&sm.lock);
		while ((sm.qn || sm.busy) && !ret)
			ret = pthread_cond_timedwait(&sm.cond, &sm.lock, &run->w.until);
		pthread_mutex_unlock(&sm.lock);
		if (ret)
			return -ETIMEDOUT;
	}
	sm_decode(&run->cmd, r);
	r->calls = atomic_load(&run->w.calls);
	free(run);
	return 0;
}

static void sm_short_done(struct coh_scsi_cmd *cmd, void *arg)
{
	(void)cmd;
	(*(uint32_t *)arg)++;
}

int sm_run_short(struct sm_result *r)
{
	static const uint8_t tur[6];
	struct coh_scsi_cmd *cmd = malloc(sizeof(*cmd));
	uint32_t calls = 0;
	size_t pub = offsetof(struct coh_scsi_cmd, lu), i;
	int ret = 0;

	if (!cmd)
		return -ENOMEM;
	memset(cmd, 0xa5, sizeof(*cmd));
	cmd->cmd_size = sizeof(*cmd) - 1;
	cmd->cdb = tur;
	cmd->cdb_len = sizeof(tur);
	cmd->iov = NULL;
	cmd->iov_cnt = 0;
	cmd->done = sm_short_done;
	cmd->done_arg = &calls;
	coh_scsi_cmd_exec(sm.lu, cmd);
	for (i = pub; i < sizeof(*cmd); i++)
		if (((const uint8_t *)cmd)[i] != 0xa5)
			ret = -EIO;
	sm_decode(cmd, r);
	r->calls = calls;
	free(cmd);
	return ret;
}
