/*
 * forward.c - forwarded commands (forward.h): the forwarder's thread, its slots, its messages.
 *
 * Each forwarder has one registered data region: for each peer, @slots staging areas where this
 * controller, as the origin, puts a write's data for the target to READ and takes a read's data
 * the target WROTE; then, for each peer, @slots areas where it, as the target, holds a command's
 * data while it executes. A slot is the unit of flow control: an origin has at most @slots
 * commands at a peer, so the peer's receives and areas never run out.
 *
 * A command's life, on the origin: FREE -> RESERVED (coh_fwd_submit took the slot and staged
 * the data) -> BUSY (the request is sent) -> FREE when its status comes, or QUARANTINE when it
 * timed out (FREE again once the late status comes, or the peer is down). On the target: FREE ->
 * FETCH (a write's data being read from the origin) -> EXEC (the executor has it) -> ANSWER
 * (completed, its answer to be sent) -> FREE once sent. Slot states change under @lock; the
 * fabric (every post and poll) is the forwarder thread's alone; callbacks and the executor are
 * called with no lock held.
 *
 * A connection that breaks is made again in reconnect rounds, which both sides must be in at once
 * (a shm handshake needs both present; rdma holds an early request only on the passive side). The
 * rounds are FWD_ROUND_MS long and numbered by the wall clock, the same on every controller of one
 * host and, within the window, of an NTP-synced cluster; in round k a controller tries only its
 * partner (k - me) mod n' (n' the node count made odd: a round-robin tournament, every pair meets
 * once in n' rounds), when that partner is down, for FWD_RECONNECT_WINDOW_MS. Trying each down
 * peer in turn instead let two controllers that started together, with a third away, miss each
 * other for minutes: each was in its try at the dead one when the other tried it, and their
 * rounds kept that phase. On rdma a round's try connects only when the handshake finishes within
 * it (on hardware, well under a millisecond); on a slow host (TCG) it does not, since the
 * passive side's held request is matched only while the active side's try lasts. So a
 * controller that starts makes every endpoint at once with the fabric's whole timeout (a
 * cluster's first start, or a restart the peers' rounds meet), and if one is missing, each apart
 * with the whole timeout: a long try on one side is what meets the other's there. Then the
 * rounds. Each connection has a generation, in every
 * work request's id and in every target slot: a completion of an older connection is ignored,
 * and a command an older incarnation sent is never answered to a newer one (its slot and gen
 * could be the newer one's: the answer would complete another command with its data).
 *
 * Leaves out: what forward.h says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cohort/forward.h"
#include "cohort/log.h"
#include "fwd_wire.h"
#include "le.h"

#define FWD_MAGIC0 'C'
#define FWD_MAGIC1 'F'
#define FWD_WIRE_VERSION 1u
#define FWD_MAX_SLOTS 256u
#define FWD_POLL_MS 20 /* the thread's wait for completions: deadlines are checked this often */
#define FWD_ERRNO_MAX 4095
#define FWD_ROUND_MS 100	   /* a reconnect round (a down partner is tried in each) */
#define FWD_RECONNECT_WINDOW_MS 30 /* each try's bound (the thread forwards nothing meanwhile) */

/* wr_id: kind << 56 | the connection's generation << 48 | peer << 32 | index */
enum fwd_wr {
	FWD_WR_RECV = 1,   /* index: the receive buffer */
	FWD_WR_REQ = 2,	   /* index: the origin slot */
	FWD_WR_STATUS = 3, /* index: the target slot */
	FWD_WR_HELLO = 4,
	FWD_WR_FETCH = 5, /* index: the target slot */
	FWD_WR_PUT = 6,	  /* index: the target slot */
};

enum fwd_ostate {
	OS_FREE,
	OS_RESERVED,
	OS_BUSY,
	OS_QUARANTINE
};
enum fwd_tstate {
	TS_FREE,
	TS_FETCH,
	TS_EXEC,
	TS_ANSWER
};

struct fwd_oslot {
	uint32_t state, gen;
	struct coh_fwd_cmd *cmd;
	uint64_t deadline_ns;
};

struct fwd_tslot {
	struct coh_fwd *f;
	uint32_t state, gen, origin, slot;
	uint8_t cgen; /* the origin's connection it came on */
	int status;
	uint32_t done;
	struct coh_fwd_cmd cmd; /* what the executor sees */
	struct fwd_tslot *next; /* answers to send */
};

struct coh_fwd {
	struct coh_fwd_attr a;
	uint32_t me, nrecv;
	bool down_proven;	   /* the fabric's PEER_DOWN proves a death (coh_fabric_info) */
	size_t area;		   /* bytes of one slot's data area */
	struct coh_cq *cq;	   /* the thread's */
	struct coh_mr *data, *msg; /* the regions */
	struct coh_ep *ep[COH_FWD_MAX_NODES];
	struct coh_rmr *rmr[COH_FWD_MAX_NODES]; /* each peer's data region, from its hello */
	uint8_t cgen[COH_FWD_MAX_NODES];	/* each peer's connection generation (thread's) */
	uint64_t round;				/* the last reconnect round run (thread's) */
	pthread_t thread;
	_Atomic bool stop;
	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;
	bool started, go; /* the connect is done; the caller has the forwarder */
	int start_ret;
	uint32_t up;	      /* peers whose connection is up */
	uint32_t fresh;	      /* of those, the ones peer_up is still owed for */
	uint32_t gone;	      /* peers whose connection broke, peer_down owed */
	struct fwd_oslot *os; /* [peer * slots + slot] */
	struct fwd_tslot *ts; /* [origin * slots + slot] */
	struct coh_fwd_cmd *submitted, **submitted_tail;
	struct fwd_tslot *answers;
	uint32_t executing; /* target slots in EXEC */
	struct coh_fwd_stats st;
};

static uint64_t fwd_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

void fwd_msg_encode(const struct fwd_msg *m, uint8_t *b)
{
	memset(b, 0, COH_FWD_MSG_BYTES);
	b[0] = FWD_MAGIC0;
	b[1] = FWD_MAGIC1;
	b[2] = FWD_WIRE_VERSION;
	b[3] = (uint8_t)m->kind;
	if (m->kind == FWD_HELLO) {
		memcpy(b + 16, m->desc.bytes, COH_MR_DESC_SIZE);
		return;
	}
	le_put16(b + 4, m->slot);
	le_put32(b + 8, m->gen);
	if (m->kind == FWD_REQ) {
		b[6] = (uint8_t)m->op;
		le_put32(b + 12, m->nblocks);
		le_put64(b + 16, m->lba);
		le_put64(b + 24, m->map_version);
		le_put32(b + 32, m->volume);
		memcpy(b + 36, m->volume_id, COH_MAP_ID_BYTES_WIRE);
	} else {
		le_put32(b + 12, (uint32_t)m->status);
		le_put32(b + 16, m->done);
	}
}

int fwd_msg_decode(const uint8_t *b, size_t len, struct fwd_msg *m)
{
	memset(m, 0, sizeof(*m));
	if (!b || len != COH_FWD_MSG_BYTES || b[0] != FWD_MAGIC0 || b[1] != FWD_MAGIC1 ||
	    b[2] != FWD_WIRE_VERSION || b[7])
		return -EPROTO;
	m->kind = b[3];
	switch (m->kind) {
	case FWD_HELLO:
		if (!le_zero(b + 4, 12))
			return -EPROTO;
		memcpy(m->desc.bytes, b + 16, COH_MR_DESC_SIZE);
		return 0;
	case FWD_REQ:
		m->slot = le_get16(b + 4);
		m->op = b[6];
		m->gen = le_get32(b + 8);
		m->nblocks = le_get32(b + 12);
		m->lba = le_get64(b + 16);
		m->map_version = le_get64(b + 24);
		m->volume = le_get32(b + 32);
		memcpy(m->volume_id, b + 36, COH_MAP_ID_BYTES_WIRE);
		if (!le_zero(b + 52, 12) || m->op < COH_FWD_READ || m->op > COH_FWD_MAP ||
		    (m->op == COH_FWD_FLUSH) != (m->nblocks == 0))
			return -EPROTO;
		return 0;
	case FWD_STATUS:
		m->slot = le_get16(b + 4);
		m->gen = le_get32(b + 8);
		m->status = (int32_t)le_get32(b + 12);
		m->done = le_get32(b + 16);
		if (b[6] || !le_zero(b + 20, 44) || m->status > 0 || m->status < -FWD_ERRNO_MAX)
			return -EPROTO;
		return 0;
	}
	return -EPROTO;
}

/* fwd_data_blocks - the blocks a command's data takes: a compare-and-write's are twice its
 * length (the compare data, then the write data). */
static uint32_t fwd_data_blocks(uint32_t op, uint32_t nblocks)
{
	return op == COH_FWD_CAW ? 2 * nblocks : nblocks;
}

/* fwd_data_out - the origin's data goes to the target (it READs it before executing). */
static bool fwd_data_out(uint32_t op)
{
	return op == COH_FWD_WRITE || op == COH_FWD_CAW || op == COH_FWD_MAP;
}

static uint64_t fwd_wr(const struct coh_fwd *f, uint32_t kind, uint32_t peer, uint32_t idx)
{
	return (uint64_t)kind << 56 | (uint64_t)f->cgen[peer] << 48 | (uint64_t)peer << 32 | idx;
}

/* Offsets in the regions. */
static size_t fwd_staging(const struct coh_fwd *f, uint32_t peer, uint32_t slot)
{
	return ((size_t)peer * f->a.slots + slot) * f->area;
}

static size_t fwd_bounce(const struct coh_fwd *f, uint32_t origin, uint32_t slot)
{
	return ((size_t)f->a.nodes * f->a.slots + (size_t)origin * f->a.slots + slot) * f->area;
}

static size_t fwd_recv_off(const struct coh_fwd *f, uint32_t peer, uint32_t i)
{
	return ((size_t)peer * f->nrecv + i) * COH_FWD_MSG_BYTES;
}

/* the send buffers, after the receive buffers: requests, statuses, hellos */
static size_t fwd_send_off(const struct coh_fwd *f, uint32_t kind, uint32_t peer, uint32_t slot)
{
	size_t base = (size_t)f->a.nodes * f->nrecv;
	size_t per = (size_t)f->a.nodes * f->a.slots;

	if (kind == FWD_WR_REQ)
		return (base + (size_t)peer * f->a.slots + slot) * COH_FWD_MSG_BYTES;
	if (kind == FWD_WR_STATUS)
		return (base + per + (size_t)peer * f->a.slots + slot) * COH_FWD_MSG_BYTES;
	return (base + 2 * per + peer) * COH_FWD_MSG_BYTES;
}

static uint8_t *fwd_msg_at(struct coh_fwd *f, size_t off)
{
	return (uint8_t *)coh_mr_addr(f->msg) + off;
}

/* fwd_send - post message @m to @peer from send buffer @off. */
static int fwd_send(struct coh_fwd *f, uint32_t peer, const struct fwd_msg *m, size_t off,
		    uint64_t wr)
{
	fwd_msg_encode(m, fwd_msg_at(f, off));
	return coh_ep_post_send(f->ep[peer], f->msg, off, COH_FWD_MSG_BYTES, wr);
}

/* fwd_bad_msg - count a message refused (malformed, or fitting no slot). */
static void fwd_bad_msg(struct coh_fwd *f)
{
	pthread_mutex_lock(&f->lock);
	f->st.bad_msgs++;
	pthread_mutex_unlock(&f->lock);
}

/* fwd_peer_down - @peer's connection broke: fail what was sent there, free what waited on it.
 * Forwarder thread. */
static void fwd_peer_down(struct coh_fwd *f, uint32_t peer)
{
	struct coh_fwd_cmd *fail = NULL, *cmd;
	uint32_t s;

	pthread_mutex_lock(&f->lock);
	if (!(f->up & (1u << peer))) {
		pthread_mutex_unlock(&f->lock);
		return;
	}
	f->up &= ~(1u << peer);
	f->gone |= 1u << peer;
	f->st.peer_downs++;
	for (s = 0; s < f->a.slots; s++) {
		struct fwd_oslot *o = &f->os[peer * f->a.slots + s];
		struct fwd_tslot *t = &f->ts[peer * f->a.slots + s];

		if (o->state == OS_BUSY) {
			o->cmd->next = fail;
			fail = o->cmd;
		}
		if (o->state != OS_RESERVED) { /* a reserved one fails where it is posted */
			o->state = OS_FREE;
			o->cmd = NULL;
			o->gen++;
		}
		if (t->state == TS_FETCH || t->state == TS_ANSWER)
			t->state = TS_FREE; /* an executing one is freed when it completes */
	}
	pthread_mutex_unlock(&f->lock);
	COH_LOG_WARN("forward: node %u: the connection to node %u is down", f->me, peer);
	/* Only a death the fabric proves (shm) lets the caller send the command elsewhere: on
	 * rdma a broken connection may be a cut, and a target that is still alive may yet execute
	 * what it received (its outcome is unknown: -ECONNABORTED). */
	while ((cmd = fail)) {
		fail = cmd->next;
		cmd->done(cmd, f->down_proven ? -ECONNRESET : -ECONNABORTED, 0);
	}
}

/* fwd_origin_fail - complete @cmd, reserved in its slot and not sent, with @status. */
static void fwd_origin_fail(struct coh_fwd *f, struct coh_fwd_cmd *cmd, int status)
{
	struct fwd_oslot *o = &f->os[cmd->peer * f->a.slots + cmd->slot];

	pthread_mutex_lock(&f->lock);
	o->state = OS_FREE;
	o->cmd = NULL;
	o->gen++;
	pthread_mutex_unlock(&f->lock);
	cmd->done(cmd, status, 0);
}

/* fwd_post_request - send a reserved command's request. Forwarder thread. */
static void fwd_post_request(struct coh_fwd *f, struct coh_fwd_cmd *cmd, uint64_t now)
{
	struct fwd_oslot *o = &f->os[cmd->peer * f->a.slots + cmd->slot];
	struct fwd_msg m = {
		.kind = FWD_REQ,
		.slot = cmd->slot,
		.op = cmd->op,
		.gen = cmd->gen,
		.nblocks = cmd->nblocks,
		.volume = cmd->volume,
		.lba = cmd->lba,
		.map_version = cmd->map_version,
	};
	bool up;

	memcpy(m.volume_id, cmd->volume_id, sizeof(m.volume_id));
	int ret;

	pthread_mutex_lock(&f->lock);
	up = f->up & (1u << cmd->peer);
	if (up) {
		o->state = OS_BUSY;
		o->deadline_ns = now + (uint64_t)f->a.timeout_ms * 1000000ull;
		f->st.forwarded++;
	}
	pthread_mutex_unlock(&f->lock);
	if (!up) {
		fwd_origin_fail(f, cmd, -EHOSTDOWN); /* nothing was sent */
		return;
	}
	ret = fwd_send(f, cmd->peer, &m, fwd_send_off(f, FWD_WR_REQ, cmd->peer, cmd->slot),
		       fwd_wr(f, FWD_WR_REQ, cmd->peer, cmd->slot));
	if (ret) /* the queue is sized for every slot: only a broken connection refuses */
		fwd_peer_down(f, cmd->peer);
}

/* fwd_answer - send target slot @t's status (after a read's data). Forwarder thread. */
static void fwd_answer(struct coh_fwd *f, struct fwd_tslot *t)
{
	uint32_t idx = t->origin * f->a.slots + t->slot;
	struct fwd_msg m = {
		.kind = FWD_STATUS,
		.slot = t->slot,
		.gen = t->gen,
		.status = t->status,
		.done = t->done,
	};
	bool up;
	int ret = 0;

	pthread_mutex_lock(&f->lock);
	/* A command of an older connection is not answered on a newer one. */
	up = f->up & (1u << t->origin) && t->cgen == f->cgen[t->origin];
	t->state = TS_FREE;
	pthread_mutex_unlock(&f->lock);
	if (!up)
		return;
	if (t->cmd.op == COH_FWD_READ && !t->status)
		ret = coh_ep_post_write(
		    f->ep[t->origin], f->data, fwd_bounce(f, t->origin, t->slot), f->rmr[t->origin],
		    fwd_staging(f, f->me, t->slot), (size_t)t->cmd.nblocks * f->a.block_size,
		    fwd_wr(f, FWD_WR_PUT, t->origin, idx));
	if (!ret)
		ret = fwd_send(f, t->origin, &m, fwd_send_off(f, FWD_WR_STATUS, t->origin, t->slot),
			       fwd_wr(f, FWD_WR_STATUS, t->origin, idx));
	if (ret)
		fwd_peer_down(f, t->origin);
}

/* fwd_execute - hand target slot @t to the executor. Forwarder thread. */
static void fwd_execute(struct coh_fwd *f, struct fwd_tslot *t)
{
	pthread_mutex_lock(&f->lock);
	t->state = TS_EXEC;
	f->executing++;
	f->st.executed++;
	pthread_mutex_unlock(&f->lock);
	f->a.execute(f->a.exec_arg, &t->cmd);
}

/* fwd_refuse - answer a request with @status without executing it. Forwarder thread. */
static void fwd_refuse(struct coh_fwd *f, struct fwd_tslot *t, int status)
{
	t->status = status;
	t->done = 0;
	fwd_answer(f, t);
}

/* fwd_on_request - a request from @peer. Forwarder thread. */
static void fwd_on_request(struct coh_fwd *f, uint32_t peer, const struct fwd_msg *m)
{
	struct fwd_tslot *t;
	size_t bytes;
	bool free_slot, older;

	if (m->slot >= f->a.slots) {
		fwd_bad_msg(f);
		return;
	}
	t = &f->ts[peer * f->a.slots + m->slot];
	pthread_mutex_lock(&f->lock);
	free_slot = t->state == TS_FREE;
	older = !free_slot && t->cgen != f->cgen[peer];
	if (free_slot) {
		t->state = TS_FETCH;
		t->gen = m->gen;
		t->cgen = f->cgen[peer];
	} else if (!older) {
		f->st.bad_msgs++; /* the origin reused a slot it had not got back */
	}
	pthread_mutex_unlock(&f->lock);
	if (older) {
		/* The slot still runs a command of the peer's former incarnation, whose answer
		 * will be dropped: this one is refused at once (-EBUSY), from the slot's status
		 * buffer, which that answer will never use. */
		struct fwd_msg busy = {
			.kind = FWD_STATUS, .slot = m->slot, .gen = m->gen, .status = -EBUSY
		};

		if (fwd_send(f, peer, &busy, fwd_send_off(f, FWD_WR_STATUS, peer, m->slot),
			     fwd_wr(f, FWD_WR_STATUS, peer, peer * f->a.slots + m->slot)))
			fwd_peer_down(f, peer);
		return;
	}
	if (!free_slot)
		return;
	memset(&t->cmd, 0, sizeof(t->cmd));
	t->cmd.op = m->op;
	t->cmd.volume = m->volume;
	memcpy(t->cmd.volume_id, m->volume_id, sizeof(t->cmd.volume_id));
	t->cmd.map_version = m->map_version;
	t->cmd.lba = m->lba;
	t->cmd.nblocks = m->nblocks;
	t->cmd.origin = peer;
	t->cmd.buf = (uint8_t *)coh_mr_addr(f->data) + fwd_bounce(f, peer, m->slot);
	if (fwd_data_blocks(m->op, m->nblocks) > f->a.max_blocks || !f->rmr[peer]) {
		fwd_refuse(
		    f, t, fwd_data_blocks(m->op, m->nblocks) > f->a.max_blocks ? -EINVAL : -EPROTO);
		return;
	}
	if (!fwd_data_out(m->op)) {
		fwd_execute(f, t);
		return;
	}
	bytes = (size_t)fwd_data_blocks(m->op, m->nblocks) * f->a.block_size;
	if (coh_ep_post_read(f->ep[peer], f->data, fwd_bounce(f, peer, m->slot), f->rmr[peer],
			     fwd_staging(f, f->me, m->slot), bytes,
			     fwd_wr(f, FWD_WR_FETCH, peer, peer * f->a.slots + m->slot)))
		fwd_peer_down(f, peer);
}

/* fwd_on_status - a status from @peer for one of this controller's commands. */
static void fwd_on_status(struct coh_fwd *f, uint32_t peer, const struct fwd_msg *m)
{
	struct fwd_oslot *o;
	struct coh_fwd_cmd *cmd = NULL;

	if (m->slot >= f->a.slots) {
		fwd_bad_msg(f);
		return;
	}
	o = &f->os[peer * f->a.slots + m->slot];
	pthread_mutex_lock(&f->lock);
	if (o->gen != m->gen || (o->state != OS_BUSY && o->state != OS_QUARANTINE)) {
		f->st.bad_msgs++;
	} else if (o->state == OS_QUARANTINE) {
		f->st.late++;
		o->state = OS_FREE;
		o->gen++;
	} else {
		cmd = o->cmd;
	}
	pthread_mutex_unlock(&f->lock);
	if (!cmd)
		return;
	/* The slot stays BUSY while its data is copied out, so no submit can take it. */
	if (cmd->op == COH_FWD_READ && !m->status)
		memcpy(cmd->buf, (uint8_t *)coh_mr_addr(f->data) + fwd_staging(f, peer, m->slot),
		       (size_t)cmd->nblocks * f->a.block_size);
	pthread_mutex_lock(&f->lock);
	o->state = OS_FREE;
	o->cmd = NULL;
	o->gen++;
	pthread_mutex_unlock(&f->lock);
	cmd->done(cmd, m->status, m->status ? m->done : 0);
}

/* fwd_on_recv - a message arrived in receive buffer @i of @peer's. */
static void fwd_on_recv(struct coh_fwd *f, uint32_t peer, uint32_t i, uint32_t len)
{
	size_t off = fwd_recv_off(f, peer, i);
	struct fwd_msg m;
	int ret;

	ret = fwd_msg_decode(fwd_msg_at(f, off), len, &m);
	/* The buffer is free again once decoded. */
	if (coh_ep_post_recv(f->ep[peer], f->msg, off, COH_FWD_MSG_BYTES,
			     fwd_wr(f, FWD_WR_RECV, peer, i))) {
		fwd_peer_down(f, peer);
		return;
	}
	if (ret) {
		fwd_bad_msg(f);
		COH_LOG_WARN("forward: node %u: a malformed message from node %u (%u bytes)", f->me,
			     peer, len);
		return;
	}
	if (m.kind == FWD_HELLO) {
		if (f->rmr[peer] || coh_rmr_import(f->ep[peer], &m.desc, &f->rmr[peer])) {
			fwd_bad_msg(f);
		}
	} else if (m.kind == FWD_REQ) {
		fwd_on_request(f, peer, &m);
	} else {
		fwd_on_status(f, peer, &m);
	}
}

/* fwd_on_wc - one completion. */
static void fwd_on_wc(struct coh_fwd *f, const struct coh_wc *wc)
{
	uint32_t kind = (uint32_t)(wc->wr_id >> 56), peer = (uint32_t)(wc->wr_id >> 32) & 0xffff;
	uint32_t idx = (uint32_t)wc->wr_id, cgen = (uint32_t)(wc->wr_id >> 48) & 0xff;
	struct fwd_tslot *t;
	bool fetched;

	if (peer >= f->a.nodes || cgen != f->cgen[peer])
		return; /* an older connection's (flushed when it broke) */
	if (wc->status) {
		fwd_peer_down(f, peer);
		return;
	}
	switch (kind) {
	case FWD_WR_RECV:
		fwd_on_recv(f, peer, idx, wc->byte_len);
		break;
	case FWD_WR_FETCH:
		if (idx >= f->a.nodes * f->a.slots)
			break;
		t = &f->ts[idx];
		pthread_mutex_lock(&f->lock);
		fetched = t->state == TS_FETCH; /* else the origin went down meanwhile */
		pthread_mutex_unlock(&f->lock);
		if (fetched)
			fwd_execute(f, t);
		break;
	default: /* sends and a read's data: nothing to do once they are done */
		break;
	}
}

/* fwd_quarantine - busy slot @o gives up its command (pushed on *@fail, to be completed with
 * no lock held) and is out of use until the late status, or the peer's end (forward.h). Under
 * the forwarder's lock. */
static void fwd_quarantine(struct fwd_oslot *o, struct coh_fwd_cmd **fail)
{
	o->state = OS_QUARANTINE;
	o->cmd->next = *fail;
	*fail = o->cmd;
	o->cmd = NULL;
}

/* fwd_deadlines - time out the commands whose targets have not answered. */
static void fwd_deadlines(struct coh_fwd *f, uint64_t now)
{
	struct coh_fwd_cmd *fail = NULL, *cmd;
	uint32_t i, n = f->a.nodes * f->a.slots;

	pthread_mutex_lock(&f->lock);
	for (i = 0; i < n; i++) {
		struct fwd_oslot *o = &f->os[i];

		if (o->state != OS_BUSY || o->deadline_ns > now)
			continue;
		fwd_quarantine(o, &fail);
		f->st.timeouts++;
	}
	pthread_mutex_unlock(&f->lock);
	while ((cmd = fail)) {
		fail = cmd->next;
		COH_LOG_WARN("forward: node %u: a command to node %u timed out", f->me, cmd->peer);
		cmd->done(cmd, -ETIMEDOUT, 0);
	}
}

uint32_t coh_fwd_abandon(struct coh_fwd *f, uint32_t peer)
{
	struct coh_fwd_cmd *fail = NULL, *cmd;
	uint32_t s, n = 0;

	if (!f || peer >= f->a.nodes)
		return 0;
	pthread_mutex_lock(&f->lock);
	for (s = 0; s < f->a.slots; s++) {
		struct fwd_oslot *o = &f->os[peer * f->a.slots + s];

		if (o->state != OS_BUSY)
			continue;
		fwd_quarantine(o, &fail);
		f->st.abandoned++;
		n++;
	}
	pthread_mutex_unlock(&f->lock);
	if (n)
		COH_LOG_WARN("forward: node %u: %u commands to node %u abandoned: it is fenced",
			     f->me, n, peer);
	while ((cmd = fail)) {
		fail = cmd->next;
		cmd->done(cmd, -ECONNABORTED, 0);
	}
	return n;
}

/* fwd_ep_attr - the endpoint to @peer. */
static void fwd_ep_attr(const struct coh_fwd *f, uint32_t peer, struct coh_ep_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->peer = peer;
	a->channel = f->a.channel;
	a->send_cq = f->cq;
	a->recv_cq = f->cq;
	a->max_send_wr = 4 * f->a.slots + 2;
	a->max_recv_wr = f->nrecv;
	a->max_msg_size = COH_FWD_MSG_BYTES;
}

/* fwd_start_peer - a new connection to @peer (f->ep[peer]): its receives, then the hello; up
 * when both are posted, else the endpoint goes. Forwarder thread. */
static void fwd_start_peer(struct coh_fwd *f, uint32_t p, const struct fwd_msg *hello)
{
	int ret = 0;

	for (uint32_t r = 0; r < f->nrecv && !ret; r++)
		ret = coh_ep_post_recv(f->ep[p], f->msg, fwd_recv_off(f, p, r), COH_FWD_MSG_BYTES,
				       fwd_wr(f, FWD_WR_RECV, p, r));
	if (!ret)
		ret = fwd_send(f, p, hello, fwd_send_off(f, FWD_WR_HELLO, p, 0),
			       fwd_wr(f, FWD_WR_HELLO, p, 0));
	if (ret) {
		COH_LOG_WARN("forward: node %u: node %u: %s: tried again later", f->me, p,
			     coh_strerror(ret));
		coh_ep_delete(&f->ep[p]);
		return;
	}
	pthread_mutex_lock(&f->lock);
	f->up |= 1u << p;
	f->fresh |= 1u << p;
	pthread_mutex_unlock(&f->lock);
}

/* fwd_connect - the endpoints, the receives and the hellos. Forwarder thread. */
static int fwd_connect(struct coh_fwd *f)
{
	struct coh_ep_attr attrs[COH_FWD_MAX_NODES];
	struct coh_ep *eps[COH_FWD_MAX_NODES];
	uint32_t peers[COH_FWD_MAX_NODES], n = 0, p, i;
	struct fwd_msg hello = { .kind = FWD_HELLO };
	int ret;

	for (p = 0; p < f->a.nodes; p++) {
		if (!(f->a.peers & (1u << p)))
			continue;
		fwd_ep_attr(f, p, &attrs[n]);
		peers[n++] = p;
	}
	if (!n)
		return 0;
	ret = coh_mr_export(f->data, &hello.desc);
	if (ret)
		return ret;
	/* Every peer at once (a cluster's first start, or a restart: the peers' rounds meet it);
	 * when one is missing (dead, or restarting with this one), each apart with the whole
	 * timeout, and those that do not answer are left to the reconnect rounds. The tries
	 * apart are what connects two controllers that start together on rdma under a slow host:
	 * a request held on the passive side meets its try there or its first round after, while
	 * the active side still waits (the rounds' short tries alone never met in the VM rig). */
	if (!coh_ep_new_many(f->a.fab, attrs, n, eps)) {
		for (i = 0; i < n; i++) {
			f->ep[peers[i]] = eps[i];
			fwd_start_peer(f, peers[i], &hello);
		}
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (!coh_ep_new(f->a.fab, &attrs[i], &f->ep[peers[i]]))
			fwd_start_peer(f, peers[i], &hello);
		else
			COH_LOG_WARN("forward: node %u: node %u does not answer: tried again later",
				     f->me, peers[i]);
	}
	return 0;
}

/* fwd_realtime_ms - the wall clock, which numbers the reconnect rounds alike on every node. */
static uint64_t fwd_realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* fwd_partner - this controller's partner in reconnect round @k, or @me (it sits out): the
 * round-robin tournament over the node count made odd, so each pair meets every n' rounds. */
static uint32_t fwd_partner(uint32_t nodes, uint32_t me, uint64_t k)
{
	uint32_t n = nodes | 1u;

	return (uint32_t)((k % n + n - me) % n);
}

/* fwd_round_wait_ms - how long the thread may wait for completions: FWD_POLL_MS, or less, so
 * that it starts the next reconnect round on time (its partner starts it then). */
static int fwd_round_wait_ms(void)
{
	uint64_t now = fwd_realtime_ms(), next = (now / FWD_ROUND_MS + 1) * FWD_ROUND_MS;

	return next - now >= FWD_POLL_MS ? FWD_POLL_MS : (int)(next - now) + 1;
}

/* fwd_reconnect - once per reconnect round: a look at the peers that seem up (a connection the
 * fabric says is down is taken down here) and a try at this round's partner if it is down.
 * Called on every turn of the thread's loop; the rest of the round it returns at once (the
 * loop turns per batch of completions). Forwarder thread. */
static void fwd_reconnect(struct coh_fwd *f)
{
	struct fwd_msg hello = { .kind = FWD_HELLO };
	uint64_t k = fwd_realtime_ms() / FWD_ROUND_MS;
	struct coh_ep_attr a;
	uint32_t p, up;

	if (k == f->round)
		return;
	f->round = k;
	pthread_mutex_lock(&f->lock);
	up = f->up;
	pthread_mutex_unlock(&f->lock);
	for (p = 0; p < f->a.nodes; p++)
		if ((up & (1u << p)) && f->ep[p] && !coh_ep_is_up(f->ep[p]))
			fwd_peer_down(f, p);
	p = fwd_partner(f->a.nodes, f->me, k);
	if (p == f->me || p >= f->a.nodes || !(f->a.peers & (1u << p)) || (up & (1u << p)) ||
	    atomic_load(&f->stop) || coh_mr_export(f->data, &hello.desc))
		return;
	coh_rmr_delete(&f->rmr[p]);
	coh_ep_delete(&f->ep[p]);
	fwd_ep_attr(f, p, &a);
	a.timeout_ms = FWD_RECONNECT_WINDOW_MS;
	if (coh_ep_new(f->a.fab, &a, &f->ep[p]))
		return;
	f->cgen[p]++;
	fwd_start_peer(f, p, &hello);
	pthread_mutex_lock(&f->lock);
	up = f->up & (1u << p);
	if (up)
		f->st.reconnects++;
	pthread_mutex_unlock(&f->lock);
	if (up)
		COH_LOG_INFO("forward: node %u: connected to node %u again", f->me, p);
}

/* fwd_tell - call @fn (peer_up or peer_down, may be NULL) for each peer in @peers, with no
 * lock held. Forwarder thread. */
static void fwd_tell(struct coh_fwd *f, uint32_t peers, void (*fn)(void *arg, uint32_t peer))
{
	while (peers && fn) {
		uint32_t p = (uint32_t)__builtin_ctz(peers);

		peers &= peers - 1;
		fn(f->a.exec_arg, p);
	}
}

static void *fwd_main(void *arg)
{
	struct coh_fwd *f = arg;
	struct coh_wc wc[32];
	struct coh_fwd_cmd *sub, *cmd;
	struct fwd_tslot *ans, *t;
	uint64_t now, last = 0;
	uint32_t fresh, gone;
	int n, i, ret;

	ret = fwd_connect(f);
	pthread_mutex_lock(&f->lock);
	f->start_ret = ret;
	f->started = true;
	pthread_cond_broadcast(&f->cond);
	/* Nothing is executed before coh_fwd_new has handed the forwarder to its caller: an
	 * executor may use it (the router submits components through it). Bounded: the caller
	 * says go as soon as it has seen the start. */
	while (!ret && !f->go)
		pthread_cond_wait(&f->cond, &f->lock);
	pthread_mutex_unlock(&f->lock);
	if (ret)
		return NULL;
	while (!atomic_load(&f->stop)) {
		n = coh_cq_wait(f->cq, wc, 32, fwd_round_wait_ms());
		for (i = 0; i < n; i++)
			fwd_on_wc(f, &wc[i]);
		pthread_mutex_lock(&f->lock);
		sub = f->submitted;
		f->submitted = NULL;
		f->submitted_tail = &f->submitted;
		ans = f->answers;
		f->answers = NULL;
		fresh = f->fresh & f->up;
		f->fresh = 0;
		gone = f->gone;
		f->gone = 0;
		pthread_mutex_unlock(&f->lock);
		fwd_tell(f, gone, f->a.peer_down);
		/* After the hello, which the peer reads first on this connection: whatever the
		 * callback sends reaches a peer that has this controller's region. */
		fwd_tell(f, fresh, f->a.peer_up);
		now = fwd_now_ns();
		while ((cmd = sub)) {
			sub = cmd->next;
			fwd_post_request(f, cmd, now);
		}
		while ((t = ans)) {
			ans = t->next;
			fwd_answer(f, t);
		}
		if (now - last >= FWD_POLL_MS * 1000000ull) {
			fwd_deadlines(f, now);
			last = now;
			if (f->a.tick)
				f->a.tick(f->a.exec_arg);
		}
		fwd_reconnect(f);
	}
	/* Stopping: what this controller forwarded ends with -ESHUTDOWN. */
	pthread_mutex_lock(&f->lock);
	sub = f->submitted;
	f->submitted = NULL;
	f->submitted_tail = &f->submitted;
	for (i = 0; i < (int)(f->a.nodes * f->a.slots); i++) {
		struct fwd_oslot *o = &f->os[i];

		if (o->state == OS_BUSY) {
			o->cmd->next = sub;
			sub = o->cmd;
		}
		if (o->state == OS_BUSY || o->state == OS_RESERVED)
			o->state = OS_FREE;
	}
	pthread_mutex_unlock(&f->lock);
	while ((cmd = sub)) {
		sub = cmd->next;
		cmd->done(cmd, -ESHUTDOWN, 0);
	}
	return NULL;
}

static int fwd_attr_check(const struct coh_fwd_attr *a, uint32_t me)
{
	uint32_t all;

	if (!a || a->attr_size < offsetof(struct coh_fwd_attr, exec_arg) + sizeof(void *) ||
	    !a->fab || !a->execute || a->nodes < 1 || a->nodes > COH_FWD_MAX_NODES ||
	    me >= a->nodes || a->block_size < 512 || a->block_size > 65536 ||
	    (a->block_size & (a->block_size - 1)) || a->slots > FWD_MAX_SLOTS || a->channel > 255 ||
	    a->max_blocks > 65536)
		return -EINVAL;
	all = a->nodes == 32 ? UINT32_MAX : (1u << a->nodes) - 1;
	if ((a->peers & ~all) || (a->peers & (1u << me)))
		return -EINVAL;
	return 0;
}

int coh_fwd_new(const struct coh_fwd_attr *attr, struct coh_fwd **fp)
{
	struct coh_fwd *f;
	size_t data, msgs;
	uint32_t me, i;
	int ret;

	if (!attr || !fp || !attr->fab)
		return -EINVAL;
	me = coh_fabric_node_id(attr->fab);
	ret = fwd_attr_check(attr, me);
	if (ret)
		return ret;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	memcpy(&f->a, attr, sizeof(f->a) < attr->attr_size ? sizeof(f->a) : attr->attr_size);
	f->a.attr_size = sizeof(f->a);
	f->me = me;
	{
		struct coh_fabric_info info;

		f->down_proven = !coh_fabric_query(f->a.fab, &info) && info.peer_down_proven;
	}
	if (!f->a.peers)
		f->a.peers = (f->a.nodes == 32 ? UINT32_MAX : (1u << f->a.nodes) - 1) & ~(1u << me);
	if (!f->a.channel)
		f->a.channel = COH_FWD_CHANNEL;
	if (!f->a.max_blocks)
		f->a.max_blocks = COH_FWD_DEFAULT_MAX_BLOCKS;
	if (!f->a.slots)
		f->a.slots = COH_FWD_DEFAULT_SLOTS;
	if (!f->a.timeout_ms)
		f->a.timeout_ms = 4 * COH_FABRIC_DEFAULT_TIMEOUT_MS;
	f->nrecv = 2 * f->a.slots + 1; /* requests and statuses of every slot, and the hello */
	f->area = (size_t)f->a.max_blocks * f->a.block_size;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->submitted_tail = &f->submitted;
	f->os = calloc((size_t)f->a.nodes * f->a.slots, sizeof(*f->os));
	f->ts = calloc((size_t)f->a.nodes * f->a.slots, sizeof(*f->ts));
	if (!f->os || !f->ts) {
		ret = -ENOMEM;
		goto err_free;
	}
	for (i = 0; i < f->a.nodes * f->a.slots; i++) {
		f->ts[i].f = f;
		f->ts[i].origin = i / f->a.slots;
		f->ts[i].slot = i % f->a.slots;
	}
	data = 2 * (size_t)f->a.nodes * f->a.slots * f->area;
	msgs = ((size_t)f->a.nodes * f->nrecv + 2 * (size_t)f->a.nodes * f->a.slots + f->a.nodes) *
	       COH_FWD_MSG_BYTES;
	ret = coh_mr_new(f->a.fab, data,
			 COH_ACCESS_LOCAL_WRITE | COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_WRITE,
			 &f->data);
	if (ret)
		goto err_free;
	ret = coh_mr_new(f->a.fab, msgs, COH_ACCESS_LOCAL_WRITE, &f->msg);
	if (ret)
		goto err_data;
	ret = coh_cq_new(
	    f->a.fab,
	    (uint32_t)__builtin_popcount(f->a.peers) * (4 * f->a.slots + 2 + f->nrecv) + 1, &f->cq);
	if (ret)
		goto err_msg;
	ret = -pthread_create(&f->thread, NULL, fwd_main, f);
	if (ret)
		goto err_cq;
	pthread_mutex_lock(&f->lock);
	while (!f->started)
		pthread_cond_wait(&f->cond, &f->lock); /* bounded: the connect's own timeout */
	ret = f->start_ret;
	pthread_mutex_unlock(&f->lock);
	if (ret) {
		pthread_join(f->thread, NULL);
		goto err_eps;
	}
	*fp = f;
	pthread_mutex_lock(&f->lock);
	f->go = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;

err_eps:
	for (i = 0; i < f->a.nodes; i++) {
		coh_rmr_delete(&f->rmr[i]);
		coh_ep_delete(&f->ep[i]);
	}
err_cq:
	coh_cq_delete(&f->cq);
err_msg:
	coh_mr_delete(&f->msg);
err_data:
	coh_mr_delete(&f->data);
err_free:
	free(f->os);
	free(f->ts);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
	return ret;
}

void coh_fwd_delete(struct coh_fwd **fp)
{
	struct coh_fwd *f;
	struct timespec until;
	uint32_t i;
	bool idle;

	if (!fp || !*fp)
		return;
	f = *fp;
	*fp = NULL;
	atomic_store(&f->stop, true);
	coh_cq_wake(f->cq);
	pthread_join(f->thread, NULL);
	/* The executor still has commands: wait for their completions, which no longer answer. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 4 * (time_t)(f->a.timeout_ms / 1000 + 1);
	pthread_mutex_lock(&f->lock);
	while (f->executing && !pthread_cond_timedwait(&f->cond, &f->lock, &until))
		;
	idle = !f->executing;
	pthread_mutex_unlock(&f->lock);
	if (!idle) {
		/* Freeing would let a late completion write into freed memory: keep it. */
		COH_LOG_ERR("forward: node %u: %u commands never completed; the forwarder is left "
			    "allocated",
			    f->me, f->executing);
		return;
	}
	for (i = 0; i < f->a.nodes; i++) {
		coh_rmr_delete(&f->rmr[i]);
		coh_ep_delete(&f->ep[i]);
	}
	coh_cq_delete(&f->cq);
	coh_mr_delete(&f->msg);
	coh_mr_delete(&f->data);
	free(f->os);
	free(f->ts);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

int coh_fwd_submit(struct coh_fwd *f, uint32_t target, struct coh_fwd_cmd *cmd)
{
	struct fwd_oslot *o = NULL;
	uint32_t s;
	int ret = 0;

	if (!f || !cmd || !cmd->done || target >= f->a.nodes || target == f->me ||
	    !(f->a.peers & (1u << target)) || cmd->op < COH_FWD_READ || cmd->op > COH_FWD_MAP ||
	    (cmd->op == COH_FWD_FLUSH
		 ? cmd->nblocks != 0
		 : !cmd->nblocks || fwd_data_blocks(cmd->op, cmd->nblocks) > f->a.max_blocks ||
		       !cmd->buf))
		return -EINVAL;
	pthread_mutex_lock(&f->lock);
	if (atomic_load(&f->stop))
		ret = -ESHUTDOWN;
	else if (!(f->up & (1u << target)))
		ret = -EHOSTDOWN;
	for (s = 0; !ret && s < f->a.slots; s++) {
		if (f->os[target * f->a.slots + s].state == OS_FREE) {
			o = &f->os[target * f->a.slots + s];
			break;
		}
	}
	if (!ret && !o)
		ret = -EBUSY;
	if (!ret) {
		o->state = OS_RESERVED;
		o->cmd = cmd;
		cmd->peer = target;
		cmd->slot = s;
		cmd->gen = o->gen;
	}
	pthread_mutex_unlock(&f->lock);
	if (ret)
		return ret;
	if (fwd_data_out(cmd->op))
		memcpy((uint8_t *)coh_mr_addr(f->data) + fwd_staging(f, target, s), cmd->buf,
		       (size_t)fwd_data_blocks(cmd->op, cmd->nblocks) * f->a.block_size);
	pthread_mutex_lock(&f->lock);
	if (atomic_load(&f->stop)) {
		/* The thread may have made its last pass: nothing would send or fail it. */
		o->state = OS_FREE;
		o->cmd = NULL;
		o->gen++;
		ret = -ESHUTDOWN;
	} else {
		cmd->next = NULL;
		*f->submitted_tail = cmd;
		f->submitted_tail = &cmd->next;
	}
	pthread_mutex_unlock(&f->lock);
	if (!ret)
		coh_cq_wake(f->cq);
	return ret;
}

void coh_fwd_complete(struct coh_fwd_cmd *cmd, int status, uint32_t blocks_done)
{
	struct fwd_tslot *t;
	struct coh_fwd *f;

	if (!cmd)
		return;
	t = (struct fwd_tslot *)((uint8_t *)cmd - offsetof(struct fwd_tslot, cmd));
	f = t->f;
	pthread_mutex_lock(&f->lock);
	if (t->state != TS_EXEC) {
		pthread_mutex_unlock(&f->lock);
		COH_LOG_ERR("forward: node %u: a command completed twice, or not executing", f->me);
		return;
	}
	f->executing--;
	t->status = status > 0 || status < -FWD_ERRNO_MAX ? -EIO : status;
	t->done = status ? blocks_done : 0;
	if (f->up & (1u << t->origin) && !atomic_load(&f->stop)) {
		t->state = TS_ANSWER;
		t->next = f->answers;
		f->answers = t;
	} else {
		t->state = TS_FREE;
	}
	pthread_cond_broadcast(&f->cond);
	/* Under the lock: coh_fwd_delete may free the forwarder once it sees @executing at 0. */
	coh_cq_wake(f->cq);
	pthread_mutex_unlock(&f->lock);
}

bool coh_fwd_on_thread(struct coh_fwd *f)
{
	return f && pthread_equal(pthread_self(), f->thread);
}

uint32_t coh_fwd_up(struct coh_fwd *f)
{
	uint32_t up;

	if (!f)
		return 0;
	pthread_mutex_lock(&f->lock);
	up = f->up | 1u << f->me;
	pthread_mutex_unlock(&f->lock);
	return up;
}

void coh_fwd_stats(struct coh_fwd *f, struct coh_fwd_stats *st)
{
	if (!f || !st)
		return;
	pthread_mutex_lock(&f->lock);
	*st = f->st;
	pthread_mutex_unlock(&f->lock);
}
