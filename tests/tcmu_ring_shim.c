/*
 * tcmu_ring_shim.c - a fake TCMU kernel side for tests/tcmu_ring_test.cc: a mapping in ordinary
 * memory laid out as the kernel lays out a device's (mailbox, command ring, data area), entries
 * queued the way queue_cmd_ring() queues them (a PAD to the ring's end when an entry would not
 * fit before it; base size max(offsetof(req.iov[n]), sizeof(struct tcmu_cmd_entry)); the CDB
 * right after it; iovec bases as offsets from the mapping), and completions reaped the way
 * tcmu_handle_completions() reaps them (from the last tail it saw to cmd_tail, skipping PAD and
 * TMR, looking commands up by the id in each slot).
 *
 * Leaves out: the data area's page allocator (buffers are handed out in order and reused when
 * the ring empties), the qfull queue and time-outs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/scsi/tcmu_ring.h"
#include "tcmu_ring_shim.h"

/* <linux/uio.h>, which the TCMU header includes, defines struct iovec as <sys/uio.h> does;
 * the kernel's gets another name here (the same layout). */
#define iovec tcmu_kernel_iovec
#include <linux/target_core_user.h>
#undef iovec

struct tcmu_fake {
	uint8_t *mem;
	size_t size;
	uint32_t cmdr_off, cmdr_size;
	uint32_t head, last_tail;
	size_t data_off, data_next;
	struct tcmu_ring ring;
};

/* The header's length and opcode (tcmu_hdr_set_len/op, without a pointer into a packed struct). */
static uint32_t tf_len_op(uint32_t op, uint32_t len)
{
	return (len & ~(uint32_t)TCMU_OP_MASK) | (op & TCMU_OP_MASK);
}

static struct tcmu_mailbox *tf_mb(struct tcmu_fake *f)
{
	return (struct tcmu_mailbox *)f->mem;
}

int tcmu_fake_new(uint32_t cmdr_size, uint32_t data_size, uint16_t version, uint16_t flags,
		  struct tcmu_fake **fp)
{
	struct tcmu_fake *f = calloc(1, sizeof(*f));
	struct tcmu_mailbox *mb;

	if (!f)
		return -ENOMEM;
	f->cmdr_off = 128;
	f->cmdr_size = cmdr_size;
	f->data_off = f->cmdr_off + cmdr_size;
	f->data_next = f->data_off;
	f->size = f->data_off + data_size;
	f->mem = aligned_alloc(4096, (f->size + 4095) & ~(size_t)4095);
	if (!f->mem) {
		free(f);
		return -ENOMEM;
	}
	memset(f->mem, 0, f->size);
	mb = tf_mb(f);
	mb->version = version;
	mb->flags = flags;
	mb->cmdr_off = f->cmdr_off;
	mb->cmdr_size = cmdr_size;
	*fp = f;
	return 0;
}

void tcmu_fake_delete(struct tcmu_fake *f)
{
	if (!f)
		return;
	tcmu_ring_fini(&f->ring);
	free(f->mem);
	free(f);
}

int tcmu_fake_ring_init(struct tcmu_fake *f)
{
	return tcmu_ring_init(&f->ring, f->mem, f->size);
}

struct tcmu_ring *tcmu_fake_ring(struct tcmu_fake *f)
{
	return &f->ring;
}

uint8_t *tcmu_fake_mem(struct tcmu_fake *f)
{
	return f->mem;
}

size_t tcmu_fake_size(struct tcmu_fake *f)
{
	return f->size;
}

uint32_t tcmu_fake_tail(struct tcmu_fake *f)
{
	return __atomic_load_n(&tf_mb(f)->cmd_tail, __ATOMIC_ACQUIRE);
}

uint32_t tcmu_fake_head(struct tcmu_fake *f)
{
	return f->head;
}

/* The kernel's free space: it keeps one byte free so that head == tail means empty. */
static uint32_t tf_free(struct tcmu_fake *f)
{
	return (f->last_tail + f->cmdr_size - f->head - 1) % f->cmdr_size;
}

/* tf_reserve - room for an entry of @len, with a PAD first when it would cross the ring's end;
 * returns the ring offset it goes at, or -ENOSPC. */
static int64_t tf_reserve(struct tcmu_fake *f, uint32_t len)
{
	uint32_t pad = 0;

	if (f->head + len > f->cmdr_size)
		pad = f->cmdr_size - f->head;
	if ((uint64_t)pad + len > tf_free(f))
		return -ENOSPC;
	if (pad) {
		struct tcmu_cmd_entry_hdr h = { 0 };

		h.len_op = tf_len_op(TCMU_OP_PAD, pad);
		memcpy(f->mem + f->cmdr_off + f->head, &h, sizeof(h));
		f->head = 0;
	}
	return f->head;
}

static void tf_publish(struct tcmu_fake *f, uint32_t off, uint32_t len)
{
	f->head = (off + len) % f->cmdr_size;
	__atomic_store_n(&tf_mb(f)->cmd_head, f->head, __ATOMIC_RELEASE);
}

int tcmu_fake_queue_cmd(struct tcmu_fake *f, uint16_t cmd_id, const uint8_t *cdb, uint32_t cdb_len,
			uint32_t data_len, uint32_t niov, size_t *data_at)
{
	size_t base =
	    offsetof(struct tcmu_cmd_entry, req.iov) + (size_t)niov * sizeof(struct iovec);
	uint32_t len, i;
	int64_t off;
	uint8_t *ent;
	struct tcmu_cmd_entry e;
	uint64_t cdb_off, piece;

	if (base < sizeof(struct tcmu_cmd_entry))
		base = sizeof(struct tcmu_cmd_entry);
	len = (uint32_t)((base + cdb_len + 7) & ~(size_t)7);
	if (f->data_next + data_len > f->size)
		return -ENOSPC;
	off = tf_reserve(f, len);
	if (off < 0)
		return (int)off;
	ent = f->mem + f->cmdr_off + off;
	memset(ent, 0, len);
	memset(&e, 0, sizeof(e));
	e.hdr.len_op = tf_len_op(TCMU_OP_CMD, len);
	e.hdr.cmd_id = cmd_id;
	e.req.iov_cnt = niov;
	cdb_off = f->cmdr_off + (uint64_t)off + base;
	e.req.cdb_off = cdb_off;
	memcpy(ent, &e, sizeof(e));
	memcpy(f->mem + cdb_off, cdb, cdb_len);
	*data_at = f->data_next;
	piece = niov ? data_len / niov : 0;
	for (i = 0; i < niov; i++) {
		struct iovec v;
		uint64_t l = i + 1 == niov ? data_len - piece * i : piece;

		v.iov_base = (void *)(uintptr_t)f->data_next;
		v.iov_len = l;
		memcpy(ent + offsetof(struct tcmu_cmd_entry, req.iov) + i * sizeof(v), &v,
		       sizeof(v));
		f->data_next += l;
	}
	tf_publish(f, (uint32_t)off, len);
	return (int)off;
}

int tcmu_fake_queue_raw(struct tcmu_fake *f, const void *entry, uint32_t len)
{
	int64_t off = tf_reserve(f, len);

	if (off < 0)
		return (int)off;
	memcpy(f->mem + f->cmdr_off + off, entry, len);
	tf_publish(f, (uint32_t)off, len);
	return (int)off;
}

int tcmu_fake_queue_tmr(struct tcmu_fake *f, uint8_t type)
{
	uint8_t buf[64] = { 0 };
	struct tcmu_tmr_entry t;
	uint32_t len = (uint32_t)((sizeof(t) + 7) & ~(size_t)7);

	memset(&t, 0, sizeof(t));
	t.hdr.len_op = tf_len_op(TCMU_OP_TMR, len);
	t.tmr_type = type;
	memcpy(buf, &t, sizeof(t));
	return tcmu_fake_queue_raw(f, buf, len);
}

int tcmu_fake_reap(struct tcmu_fake *f, struct tcmu_fake_done *out, int max)
{
	uint32_t tail = tcmu_fake_tail(f);
	int n = 0;

	while (f->last_tail != tail) {
		uint8_t *ent = f->mem + f->cmdr_off + f->last_tail;
		struct tcmu_cmd_entry e;

		memcpy(&e, ent, sizeof(e.hdr));
		if (tcmu_hdr_get_op(e.hdr.len_op) != TCMU_OP_PAD &&
		    tcmu_hdr_get_op(e.hdr.len_op) != TCMU_OP_TMR) {
			if (n == max)
				return -ENOSPC;
			memcpy(&e, ent, sizeof(e));
			out[n].cmd_id = e.hdr.cmd_id;
			out[n].status = e.rsp.scsi_status;
			out[n].read_len_set = !!(e.hdr.uflags & TCMU_UFLAG_READ_LEN);
			out[n].read_len = e.rsp.read_len;
			out[n].sense_key = (uint8_t)(e.rsp.sense_buffer[2] & 0x0f);
			out[n].asc = (uint8_t)e.rsp.sense_buffer[12];
			n++;
		}
		f->last_tail = (f->last_tail + tcmu_hdr_get_len(e.hdr.len_op)) % f->cmdr_size;
	}
	if (f->last_tail == f->head)
		f->data_next = f->data_off; /* all answered: the data area is free again */
	return n;
}

struct tf_thread {
	struct tcmu_fake *f;
	const uint16_t *ids;
	uint32_t n;
	uint32_t failed;
};

static void *tf_complete_main(void *arg)
{
	struct tf_thread *t = arg;
	uint32_t i;

	for (i = 0; i < t->n; i++)
		if (!tcmu_ring_complete(&t->f->ring, t->ids[i], 0, NULL, 0, UINT32_MAX))
			t->failed++;
	return NULL;
}

int tcmu_fake_complete_threads(struct tcmu_fake *f, const uint16_t *ids, uint32_t n,
			       uint32_t nthreads)
{
	pthread_t th[16];
	struct tf_thread t[16];
	uint32_t i, per, started = 0, failed = 0;

	if (!nthreads || nthreads > 16)
		return -EINVAL;
	per = (n + nthreads - 1) / nthreads;
	for (i = 0; i < nthreads; i++) {
		uint32_t from = i * per < n ? i * per : n;
		uint32_t to = from + per < n ? from + per : n;

		t[i] = (struct tf_thread){ .f = f, .ids = ids + from, .n = to - from };
		if (pthread_create(&th[i], NULL, tf_complete_main, &t[i]))
			break;
		started++;
	}
	for (i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		failed += t[i].failed;
	}
	if (started < nthreads)
		return -EAGAIN;
	return (int)failed;
}
