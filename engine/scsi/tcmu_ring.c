/*
 * tcmu_ring.c - the TCMU command ring in memory: the mailbox check, the entry parser, and
 * out-of-order completion (tcmu_ring.h). The layout is the kernel's (<linux/target_core_user.h>,
 * queue_cmd_ring() in drivers/target/target_core_user.c): a mailbox at offset 0, the command ring
 * at cmdr_off, the data area after it; every CDB and iovec address in an entry is an offset from
 * the start of the mapping.
 *
 * Everything read from the ring is validated before it is used: the kernel wrote it, but a
 * pointer made from an unchecked offset would be a wild pointer in this process, and the fuzzer
 * (tests/fuzz_tcmu.c) feeds this parser arbitrary bytes. A command whose CDB or buffers do not
 * lie where they must is answered with CHECK CONDITION; an entry header that makes the rest of
 * the ring unreadable stops the ring (-EPROTO).
 *
 * Leaves out: the uio fd and its notification, configfs, threads (engine/scsi/tcmu.c).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "tcmu_ring.h"

/* <linux/uio.h>, which the TCMU header includes, defines struct iovec as <sys/uio.h> does;
 * the kernel's gets another name here (the same layout). */
#define iovec tcmu_kernel_iovec
#include <linux/target_core_user.h>
#undef iovec

/* The smallest CMD entry the kernel writes: big enough for the response that overlays it. */
#define TRING_CMD_MIN sizeof(struct tcmu_cmd_entry)
#define TRING_REQ_IOV offsetof(struct tcmu_cmd_entry, req.iov)
#define TRING_IOV_SIZE sizeof(struct iovec)

static uint32_t *tring_head_word(const struct tcmu_ring *r)
{
	return (uint32_t *)(r->base + offsetof(struct tcmu_mailbox, cmd_head));
}

static uint32_t *tring_tail_word(const struct tcmu_ring *r)
{
	return (uint32_t *)(r->base + offsetof(struct tcmu_mailbox, cmd_tail));
}

static uint8_t *tring_at(const struct tcmu_ring *r, uint32_t off)
{
	return r->base + r->cmdr_off + off;
}

static uint32_t tring_len_op(const struct tcmu_ring *r, uint32_t off)
{
	uint32_t v;

	memcpy(&v, tring_at(r, off) + offsetof(struct tcmu_cmd_entry_hdr, len_op), sizeof(v));
	return v;
}

int tcmu_ring_init(struct tcmu_ring *r, void *base, size_t map_size)
{
	struct tcmu_mailbox mb;

	memset(r, 0, sizeof(*r));
	if (map_size < sizeof(mb))
		return -EINVAL;
	memcpy(&mb, base, sizeof(mb));
	if (mb.version != TCMU_MAILBOX_VERSION || !(mb.flags & TCMU_MAILBOX_FLAG_CAP_OOOC))
		return -EPROTO;
	/* The ring must lie inside the mapping, after the mailbox, in 8-byte entries. */
	if (mb.cmdr_off < sizeof(mb) || mb.cmdr_size < TRING_CMD_MIN || mb.cmdr_size % 8 ||
	    (uint64_t)mb.cmdr_off + mb.cmdr_size > map_size)
		return -EINVAL;
	r->base = base;
	r->map_size = map_size;
	r->cmdr_off = mb.cmdr_off;
	r->cmdr_size = mb.cmdr_size;
	r->data_off = (size_t)mb.cmdr_off + mb.cmdr_size;
	r->tail = __atomic_load_n(tring_tail_word(r), __ATOMIC_ACQUIRE) % r->cmdr_size;
	r->tail &= ~7u;
	r->next = r->tail;
	pthread_mutex_init(&r->lock, NULL);
	return 0;
}

void tcmu_ring_fini(struct tcmu_ring *r)
{
	if (r->base)
		pthread_mutex_destroy(&r->lock);
	r->base = NULL;
}

static uint32_t tring_head(const struct tcmu_ring *r)
{
	return __atomic_load_n(tring_head_word(r), __ATOMIC_ACQUIRE) % r->cmdr_size;
}

bool tcmu_ring_pending(struct tcmu_ring *r)
{
	return tring_head(r) != r->next;
}

uint32_t tcmu_ring_cdb_len(const uint8_t *cdb, uint32_t avail)
{
	/* SPC-4 4.2.5.1: the operation code's group gives the length (Linux COMMAND_SIZE);
	 * variable-length CDBs carry theirs in byte 7. */
	static const uint8_t group_len[8] = { 6, 10, 10, 12, 16, 12, 10, 10 };

	if (!avail)
		return 0;
	if (cdb[0] == 0x7f)
		return avail >= 8 ? 8u + cdb[7] : 0;
	return group_len[cdb[0] >> 5];
}

/* tring_parse_cmd - the body of a CMD entry of @len bytes at @off; marks @e bad when its CDB or
 * buffers are not where they must be. */
static void tring_parse_cmd(const struct tcmu_ring *r, uint32_t off, uint32_t len,
			    struct tcmu_ring_entry *e)
{
	const uint8_t *ent = tring_at(r, off);
	uint64_t entry_map = (uint64_t)r->cmdr_off + off; /* the entry's offset in the mapping */
	uint32_t iov_cnt, bidi_cnt, i, cdb_avail;
	uint64_t cdb_off, iov_end;

	memcpy(&iov_cnt, ent + offsetof(struct tcmu_cmd_entry, req.iov_cnt), sizeof(iov_cnt));
	memcpy(&bidi_cnt, ent + offsetof(struct tcmu_cmd_entry, req.iov_bidi_cnt),
	       sizeof(bidi_cnt));
	memcpy(&cdb_off, ent + offsetof(struct tcmu_cmd_entry, req.cdb_off), sizeof(cdb_off));
	e->bad = true;
	/* The iovecs (Data-Out, then any BIDI Data-In) follow the request header inside the
	 * entry; the CDB follows them, also inside the entry. */
	iov_end = TRING_REQ_IOV + ((uint64_t)iov_cnt + bidi_cnt) * TRING_IOV_SIZE;
	if (iov_end > len || iov_cnt > TCMU_RING_IOV_MAX)
		return;
	if (cdb_off < entry_map + iov_end || cdb_off >= entry_map + len)
		return;
	cdb_avail = (uint32_t)(entry_map + len - cdb_off);
	e->cdb_len = tcmu_ring_cdb_len(r->base + cdb_off, cdb_avail);
	if (!e->cdb_len || e->cdb_len > cdb_avail || e->cdb_len > TCMU_RING_CDB_MAX) {
		e->cdb_len = 0;
		return;
	}
	memcpy(e->cdb, r->base + cdb_off, e->cdb_len);
	for (i = 0; i < iov_cnt; i++) {
		uint64_t b, l;
		const uint8_t *p = ent + TRING_REQ_IOV + (size_t)i * TRING_IOV_SIZE;

		memcpy(&b, p + offsetof(struct iovec, iov_base), sizeof(b));
		memcpy(&l, p + offsetof(struct iovec, iov_len), sizeof(l));
		/* A buffer lies wholly inside the data area: never the mailbox or the ring. */
		if (b < r->data_off || b > r->map_size || l > r->map_size - b) {
			e->cdb_len = 0;
			return;
		}
		e->iov[i].iov_base = r->base + b;
		e->iov[i].iov_len = (size_t)l;
	}
	e->iov_cnt = iov_cnt;
	e->bad = false;
}

int tcmu_ring_parse(const struct tcmu_ring *r, uint32_t off, uint32_t avail,
		    struct tcmu_ring_entry *e)
{
	uint32_t len_op, len, op;

	e->kind = TCMU_RING_PAD;
	e->off = off;
	e->len = 0;
	e->cmd_id = 0;
	e->bad = false;
	e->cdb_len = 0;
	e->iov_cnt = 0;
	if (off % 8 || off >= r->cmdr_size || avail < sizeof(struct tcmu_cmd_entry_hdr) ||
	    avail > r->cmdr_size || r->cmdr_size - off < sizeof(struct tcmu_cmd_entry_hdr))
		return -EPROTO;
	len_op = tring_len_op(r, off);
	len = tcmu_hdr_get_len(len_op);
	op = tcmu_hdr_get_op(len_op);
	/* Entries never wrap: a PAD fills the ring's end. One that does not fit what the kernel
	 * queued leaves nothing after it to be found. */
	if (len < sizeof(struct tcmu_cmd_entry_hdr) || len > avail || len > r->cmdr_size - off)
		return -EPROTO;
	e->len = len;
	if (op == TCMU_OP_PAD)
		return 1;
	if (op == TCMU_OP_TMR) {
		e->kind = TCMU_RING_TMR;
		return 1;
	}
	/* Anything else is a command slot to the kernel (tcmu_handle_completions() skips only
	 * PAD and TMR), so it must be answered; one too short for the response that overlays it
	 * cannot be, without writing over the next entry. */
	if (len < TRING_CMD_MIN)
		return -EPROTO;
	e->kind = TCMU_RING_CMD;
	memcpy(&e->cmd_id, tring_at(r, off) + offsetof(struct tcmu_cmd_entry_hdr, cmd_id),
	       sizeof(e->cmd_id));
	if (op != TCMU_OP_CMD) {
		e->bad = true;
		return 1;
	}
	tring_parse_cmd(r, off, len, e);
	return 1;
}

int tcmu_ring_next(struct tcmu_ring *r, struct tcmu_ring_entry *e)
{
	uint32_t head = tring_head(r), avail;
	int ret;

	if (head % 8)
		return -EPROTO;
	avail = (head + r->cmdr_size - r->next) % r->cmdr_size;
	if (!avail)
		return 0;
	ret = tcmu_ring_parse(r, r->next, avail, e);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&r->lock);
	r->next = (r->next + e->len) % r->cmdr_size;
	if (e->kind == TCMU_RING_CMD)
		r->open++;
	pthread_mutex_unlock(&r->lock);
	return 1;
}

/* tring_skip_locked - move @pos over PAD and TMR entries already parsed. */
static uint32_t tring_skip_locked(const struct tcmu_ring *r, uint32_t pos)
{
	while (pos != r->next) {
		uint32_t len_op = tring_len_op(r, pos);
		uint32_t op = tcmu_hdr_get_op(len_op);

		if (op != TCMU_OP_PAD && op != TCMU_OP_TMR)
			break;
		pos = (pos + tcmu_hdr_get_len(len_op)) % r->cmdr_size;
	}
	return pos;
}

static void tring_publish_locked(struct tcmu_ring *r, uint32_t pos)
{
	r->tail = pos;
	/* The responses written before this store are what the kernel reads after it. */
	__atomic_store_n(tring_tail_word(r), pos, __ATOMIC_RELEASE);
}

bool tcmu_ring_skip(struct tcmu_ring *r)
{
	uint32_t pos;
	bool moved;

	pthread_mutex_lock(&r->lock);
	pos = tring_skip_locked(r, r->tail);
	moved = pos != r->tail;
	if (moved)
		tring_publish_locked(r, pos);
	pthread_mutex_unlock(&r->lock);
	return moved;
}

bool tcmu_ring_complete(struct tcmu_ring *r, uint16_t cmd_id, uint8_t status, const uint8_t *sense,
			uint32_t sense_len, uint32_t read_len)
{
	uint8_t *slot;
	uint8_t uflags = 0, pad[TCMU_SENSE_BUFFERSIZE];
	uint32_t pos;

	pthread_mutex_lock(&r->lock);
	/* The oldest open slot: every slot before it was answered and the tail moved past it, so
	 * it is the first CMD at or after the tail. Its own request was copied out when it was
	 * parsed, so it may carry any command's answer ("stealing", tcmu-design.rst). */
	pos = tring_skip_locked(r, r->tail);
	if (pos == r->next || !r->open) {
		pthread_mutex_unlock(&r->lock);
		return false;
	}
	slot = tring_at(r, pos);
	memcpy(slot + offsetof(struct tcmu_cmd_entry_hdr, cmd_id), &cmd_id, sizeof(cmd_id));
	if (read_len != UINT32_MAX) {
		uflags = TCMU_UFLAG_READ_LEN;
		memcpy(slot + offsetof(struct tcmu_cmd_entry, rsp.read_len), &read_len,
		       sizeof(read_len));
	}
	slot[offsetof(struct tcmu_cmd_entry_hdr, uflags)] = uflags;
	slot[offsetof(struct tcmu_cmd_entry, rsp.scsi_status)] = status;
	if (sense && sense_len) {
		memset(pad, 0, sizeof(pad));
		memcpy(pad, sense, sense_len < sizeof(pad) ? sense_len : sizeof(pad));
		memcpy(slot + offsetof(struct tcmu_cmd_entry, rsp.sense_buffer), pad, sizeof(pad));
	}
	pos = (pos + tcmu_hdr_get_len(tring_len_op(r, pos))) % r->cmdr_size;
	r->open--;
	tring_publish_locked(r, tring_skip_locked(r, pos));
	pthread_mutex_unlock(&r->lock);
	return true;
}
