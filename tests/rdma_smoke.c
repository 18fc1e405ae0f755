/*
 * rdma_smoke.c - a standalone smoke test of the rdma fabric provider on a real (or soft-RoCE)
 * device: `rdma_smoke ip:port,ip:port[,ip:port]` forks one process per cluster entry (2 or 3),
 * each opening node i's fabric, and checks end to end:
 *   - endpoints to every node including itself (loopback), -EEXIST, -ETIMEDOUT, and -EINVAL when
 *     the two sides disagree on max_msg_size;
 *   - descriptors exchanged by SEND/RECV; WRITE then SEND ordering; READ; FLUSH;
 *   - CAS and FAA totals under contention from every node on one word of node 0;
 *   - bounds and rights violations completing with -EACCES without breaking the endpoint;
 *   - rekey: the old descriptor fails with -EACCES, the connection is re-established and the new
 *     descriptor works;
 *   - with 3 nodes, node 1 SIGKILLs itself mid-traffic: the survivors get error completions and
 *     a PEER_DOWN event for it within the timeout, and still reach each other.
 * Node 0 also prints rough WRITE/READ/FAA latencies to node 1.
 *
 * Every wait is bounded; each child has alarm() as a last resort. Exit status 0 when every node
 * passed; otherwise the failures are printed. This is not the conformance suite (tests/), which
 * covers the API contract on both providers; it is the quick check that the device path works.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cohort/fabric.h"

#define MAXN 3
#define RSLOTS 8
#define MSGSZ 256
#define DATA_LEN 65536
#define RO_LEN 4096
#define RK_LEN 4096
#define OFF_A 0	      /* 4 KiB per writer: ordering test */
#define OFF_CNT 16384 /* FAA counter on node 0 */
#define OFF_CAS 16392 /* CAS counter on node 0 */
#define OFF_D 20480   /* 256 B per writer: flush test */
#define OFF_G 24576   /* kill test traffic */
#define OFF_LAT 28672 /* latency test */
#define ATOMIC_ROUNDS 100
/* The kill test's victim: node 0 is the active side towards it and node 2 the passive side, so
 * both ways of noticing a dead peer (reconnect refused, probe unanswered) are exercised. */
#define VICTIM 1u
#define WAIT_MS 15000
#define CHILD_ALARM_S 300
#define PARENT_WAIT_S 330

enum msg_type {
	MSG_DESC = 1,
	MSG_WROTE,
	MSG_REKEYED,
};

struct msg {
	uint32_t type;
	uint32_t from;
	uint32_t arg;
	uint32_t pad;
	struct coh_mr_desc desc[3];
};

/* Barriers and the abort flag, shared by the node processes. */
struct shared {
	atomic_int bar[32];
	atomic_int abort;
};

struct node {
	uint32_t id, n;
	struct shared *sh;
	struct coh_fabric *fab;
	struct coh_cq *cq;
	struct coh_ep *ep[MAXN];
	struct coh_mr *data, *ro, *rk, *lbuf, *rbuf, *sbuf;
	struct coh_rmr *rdata[MAXN], *rro[MAXN], *rrk[MAXN];
	struct msg inbox[MAXN][RSLOTS * 2];
	int in_head[MAXN], in_count[MAXN];
	struct coh_wc done[512];
	int ndone;
	uint64_t next_wr;
	int fails;
};

/* now_ms - monotonic milliseconds. */
static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* now_ns - monotonic nanoseconds. */
static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* say - print one line prefixed with the node id. */
static void say(const struct node *nd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "[node %u] ", nd->id);
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	printf("%s\n", buf);
	fflush(stdout);
}

/* check - count and report a failed expectation. */
#define check(nd, cond, fmt, ...)                                                                  \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			(nd)->fails++;                                                             \
			say((nd), "FAIL line %d: " fmt, __LINE__, ##__VA_ARGS__);                  \
		}                                                                                  \
	} while (0)

/* barrier - wait (bounded) until @count nodes reached barrier @k. */
static int barrier(struct node *nd, int k, int count)
{
	uint64_t deadline = now_ms() + 60000;

	atomic_fetch_add(&nd->sh->bar[k], 1);
	while (atomic_load(&nd->sh->bar[k]) < count && !atomic_load(&nd->sh->abort)) {
		if (now_ms() > deadline) {
			nd->fails++;
			say(nd, "FAIL barrier %d timed out", k);
			return -ETIMEDOUT;
		}
		usleep(500);
	}
	return 0;
}

/* post_recv - (re)post receive slot @slot of the buffer area of @peer. */
static int post_recv(struct node *nd, uint32_t peer, uint32_t slot)
{
	return coh_ep_post_recv(nd->ep[peer], nd->rbuf, ((size_t)peer * RSLOTS + slot) * MSGSZ,
				MSGSZ, (uint64_t)peer << 8 | slot);
}

/* pump - take completions (waiting at most @timeout_ms): messages go to the inboxes (and their
 * buffer is posted again), send-side completions to nd->done. */
static int pump(struct node *nd, int timeout_ms)
{
	struct coh_wc wc[16];
	int n, i;

	n = timeout_ms ? coh_cq_wait(nd->cq, wc, 16, timeout_ms) : coh_cq_poll(nd->cq, wc, 16);
	if (n <= 0)
		return n;
	for (i = 0; i < n; i++) {
		uint32_t peer = (uint32_t)(wc[i].wr_id >> 8), slot = wc[i].wr_id & 0xff;

		if (wc[i].opcode != COH_WC_RECV) {
			if (nd->ndone < (int)(sizeof(nd->done) / sizeof(nd->done[0])))
				nd->done[nd->ndone++] = wc[i];
			continue;
		}
		if (wc[i].status) {
			/* Flushed receives of a dead peer are expected in the kill test. */
			continue;
		}
		if (peer < nd->n && nd->in_count[peer] < RSLOTS * 2) {
			int at = (nd->in_head[peer] + nd->in_count[peer]++) % (RSLOTS * 2);

			memcpy(&nd->inbox[peer][at],
			       (char *)coh_mr_addr(nd->rbuf) +
				   ((size_t)peer * RSLOTS + slot) * MSGSZ,
			       sizeof(struct msg));
		}
		if (post_recv(nd, peer, slot))
			say(nd, "cannot re-post a receive to node %u", peer);
	}
	return n;
}

/* wait_done - wait for the send-side completion of @wr_id; returns its status or -ETIMEDOUT. */
static int wait_done(struct node *nd, uint64_t wr_id, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	int i;

	for (;;) {
		for (i = 0; i < nd->ndone; i++) {
			if (nd->done[i].wr_id == wr_id) {
				int st = nd->done[i].status;

				nd->done[i] = nd->done[--nd->ndone];
				return st;
			}
		}
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		pump(nd, 10);
	}
}

/* wait_msg - wait for the next message from @peer. */
static int wait_msg(struct node *nd, uint32_t peer, struct msg *m, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	while (!nd->in_count[peer]) {
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		pump(nd, 10);
	}
	*m = nd->inbox[peer][nd->in_head[peer]];
	nd->in_head[peer] = (nd->in_head[peer] + 1) % (RSLOTS * 2);
	nd->in_count[peer]--;
	return 0;
}

/* send_msg - send @m to @peer and wait for its completion. */
static int send_msg(struct node *nd, uint32_t peer, const struct msg *m)
{
	uint64_t id = ++nd->next_wr;
	int ret;

	memcpy((char *)coh_mr_addr(nd->sbuf) + (size_t)peer * MSGSZ, m, sizeof(*m));
	ret = coh_ep_post_send(nd->ep[peer], nd->sbuf, (size_t)peer * MSGSZ, sizeof(*m), id);
	return ret ? ret : wait_done(nd, id, WAIT_MS);
}

/* op - post one operation with a fresh wr_id and wait for it; returns the completion status. */
static int op(struct node *nd, int code, uint32_t peer, size_t loff, struct coh_rmr *rmr,
	      uint64_t roff, size_t len, uint64_t a, uint64_t b)
{
	struct coh_ep *ep = nd->ep[peer];
	uint64_t id = ++nd->next_wr;
	int ret;

	switch (code) {
	case COH_WC_WRITE:
		ret = coh_ep_post_write(ep, nd->lbuf, loff, rmr, roff, len, id);
		break;
	case COH_WC_READ:
		ret = coh_ep_post_read(ep, nd->lbuf, loff, rmr, roff, len, id);
		break;
	case COH_WC_CAS:
		ret = coh_ep_post_cas(ep, nd->lbuf, loff, rmr, roff, a, b, id);
		break;
	case COH_WC_FAA:
		ret = coh_ep_post_faa(ep, nd->lbuf, loff, rmr, roff, a, id);
		break;
	default:
		ret = coh_ep_post_flush(ep, rmr, roff, len, id);
		break;
	}
	return ret ? ret : wait_done(nd, id, WAIT_MS);
}

/* pattern - the byte a writer puts at @k for @reader. */
static uint8_t pattern(uint32_t writer, uint32_t reader, size_t k)
{
	return (uint8_t)(writer * 31 + reader * 7 + k + 1);
}

/* lbuf_u64 - the 64-bit word at @off of the local scratch buffer. */
static uint64_t lbuf_u64(struct node *nd, size_t off)
{
	uint64_t v;

	memcpy(&v, (char *)coh_mr_addr(nd->lbuf) + off, sizeof(v));
	return v;
}

/* setup - open the fabric, make the regions and the endpoints, post receives. */
static int setup(struct node *nd, const char *cluster)
{
	struct coh_fabric_attr fa = { .provider = "rdma", .cluster = cluster, .node_id = nd->id };
	struct coh_fabric_info info;
	struct coh_ep_attr ea = { 0 };
	struct coh_ep *dup;
	uint32_t j, s;
	int ret;

	ret = coh_fabric_open(&fa, &nd->fab);
	if (ret) {
		say(nd, "FAIL coh_fabric_open: %s", coh_strerror(ret));
		return ret;
	}
	coh_fabric_query(nd->fab, &info);
	say(nd, "device %s numa %d native_flush %d persistent %d max_inline %u max_msg %u",
	    info.device, info.numa_node, info.native_flush, info.persistent, info.max_inline,
	    info.max_msg_size);
	if ((ret = coh_cq_new(nd->fab, 1024, &nd->cq)) ||
	    (ret = coh_mr_new(nd->fab, DATA_LEN, COH_ACCESS_ALL, &nd->data)) ||
	    (ret = coh_mr_new(nd->fab, RO_LEN, COH_ACCESS_REMOTE_READ, &nd->ro)) ||
	    (ret = coh_mr_new(nd->fab, RK_LEN, COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_WRITE,
			      &nd->rk)) ||
	    (ret = coh_mr_new(nd->fab, DATA_LEN, COH_ACCESS_LOCAL_WRITE, &nd->lbuf)) ||
	    (ret = coh_mr_new(nd->fab, (size_t)MAXN * RSLOTS * MSGSZ, COH_ACCESS_LOCAL_WRITE,
			      &nd->rbuf)) ||
	    (ret = coh_mr_new(nd->fab, (size_t)MAXN * MSGSZ, 0, &nd->sbuf))) {
		say(nd, "FAIL making queues and regions: %s", coh_strerror(ret));
		return ret;
	}
	for (s = 0; s < RO_LEN; s++)
		((uint8_t *)coh_mr_addr(nd->ro))[s] = pattern(nd->id, 99, s);
	ea.send_cq = nd->cq;
	ea.recv_cq = nd->cq;
	ea.max_send_wr = 32;
	ea.max_recv_wr = RSLOTS;
	/* In increasing peer order on every node, so that no two nodes wait for each other. */
	for (j = 0; j < nd->n; j++) {
		uint64_t t0 = now_ms();

		ea.peer = j;
		ret = coh_ep_new(nd->fab, &ea, &nd->ep[j]);
		if (ret) {
			say(nd, "FAIL coh_ep_new to node %u: %s", j, coh_strerror(ret));
			return ret;
		}
		say(nd, "endpoint to node %u up in %" PRIu64 " ms", j, now_ms() - t0);
		for (s = 0; s < RSLOTS; s++) {
			ret = post_recv(nd, j, s);
			check(nd, !ret, "post_recv: %s", coh_strerror(ret));
		}
	}
	ea.peer = nd->id;
	ret = coh_ep_new(nd->fab, &ea, &dup);
	check(nd, ret == -EEXIST, "duplicate endpoint gave %s", coh_strerror(ret));
	return 0;
}

/* test_ep_errors - message size mismatch and a peer that never shows up (nodes 0 and 1). */
static void test_ep_errors(struct node *nd)
{
	struct coh_ep_attr ea = { .send_cq = nd->cq,
				  .recv_cq = nd->cq,
				  .max_send_wr = 4,
				  .max_recv_wr = 4,
				  .timeout_ms = 3000 };
	struct coh_ep *ep;
	int ret;

	if (nd->id > 1)
		return;
	ea.peer = 1 - nd->id;
	ea.channel = 5;
	ea.max_msg_size = nd->id ? 8192 : 4096;
	ret = coh_ep_new(nd->fab, &ea, &ep);
	check(nd, ret == -EINVAL, "message size mismatch gave %s", coh_strerror(ret));
	if (!ret)
		coh_ep_delete(&ep);
	if (nd->id == 0) {
		ea.channel = 9;
		ea.max_msg_size = 0;
		ea.timeout_ms = 500;
		ret = coh_ep_new(nd->fab, &ea, &ep);
		check(nd, ret == -ETIMEDOUT, "absent peer gave %s", coh_strerror(ret));
		if (!ret)
			coh_ep_delete(&ep);
	}
	say(nd, "endpoint errors done");
}

/* test_exchange - send our descriptors to everyone, import theirs. */
static void test_exchange(struct node *nd)
{
	struct msg m = { .type = MSG_DESC, .from = nd->id };
	uint32_t j;
	int ret;

	coh_mr_export(nd->data, &m.desc[0]);
	coh_mr_export(nd->ro, &m.desc[1]);
	coh_mr_export(nd->rk, &m.desc[2]);
	for (j = 0; j < nd->n; j++) {
		ret = send_msg(nd, j, &m);
		check(nd, !ret, "sending descriptors to %u: %s", j, coh_strerror(ret));
	}
	for (j = 0; j < nd->n; j++) {
		struct msg r;

		ret = wait_msg(nd, j, &r, WAIT_MS);
		check(nd, !ret && r.type == MSG_DESC && r.from == j, "descriptors from %u: %s", j,
		      coh_strerror(ret));
		if (ret)
			continue;
		ret = coh_rmr_import(nd->ep[j], &r.desc[0], &nd->rdata[j]);
		check(nd, !ret, "import data of %u: %s", j, coh_strerror(ret));
		ret = coh_rmr_import(nd->ep[j], &r.desc[1], &nd->rro[j]);
		check(nd, !ret, "import ro of %u: %s", j, coh_strerror(ret));
		ret = coh_rmr_import(nd->ep[j], &r.desc[2], &nd->rrk[j]);
		check(nd, !ret, "import rk of %u: %s", j, coh_strerror(ret));
	}
	say(nd, "descriptors exchanged");
}

/* test_order_read - WRITE then SEND to everyone; the data must be there when the SEND arrives.
 * Then READ back what we wrote. */
static void test_order_read(struct node *nd)
{
	uint8_t *lb = coh_mr_addr(nd->lbuf), *mine = coh_mr_addr(nd->data);
	struct msg m = { .type = MSG_WROTE, .from = nd->id };
	uint64_t wid, sid;
	uint32_t j;
	size_t k;
	int ret;

	for (j = 0; j < nd->n; j++) {
		for (k = 0; k < 4096; k++)
			lb[j * 4096 + k] = pattern(nd->id, j, k);
		wid = ++nd->next_wr;
		ret = coh_ep_post_write(nd->ep[j], nd->lbuf, j * 4096, nd->rdata[j],
					OFF_A + nd->id * 4096, 4096, wid);
		check(nd, !ret, "post write: %s", coh_strerror(ret));
		memcpy((char *)coh_mr_addr(nd->sbuf) + j * MSGSZ, &m, sizeof(m));
		sid = ++nd->next_wr;
		ret = coh_ep_post_send(nd->ep[j], nd->sbuf, j * MSGSZ, sizeof(m), sid);
		check(nd, !ret, "post send: %s", coh_strerror(ret));
		ret = wait_done(nd, wid, WAIT_MS);
		check(nd, !ret, "write to %u: %s", j, coh_strerror(ret));
		ret = wait_done(nd, sid, WAIT_MS);
		check(nd, !ret, "send to %u: %s", j, coh_strerror(ret));
	}
	for (j = 0; j < nd->n; j++) {
		struct msg r;
		size_t bad = 0;

		ret = wait_msg(nd, j, &r, WAIT_MS);
		check(nd, !ret && r.type == MSG_WROTE, "WROTE from %u: %s", j, coh_strerror(ret));
		for (k = 0; k < 4096; k++)
			bad += mine[OFF_A + j * 4096 + k] != pattern(j, nd->id, k);
		check(nd, !bad, "%zu bytes from %u not visible when its SEND arrived", bad, j);
	}
	for (j = 0; j < nd->n; j++) {
		size_t bad = 0;

		memset(lb + 32768, 0, 4096);
		ret =
		    op(nd, COH_WC_READ, j, 32768, nd->rdata[j], OFF_A + nd->id * 4096, 4096, 0, 0);
		check(nd, !ret, "read from %u: %s", j, coh_strerror(ret));
		for (k = 0; k < 4096; k++)
			bad += lb[32768 + k] != pattern(nd->id, j, k);
		check(nd, !bad, "read back from %u: %zu bytes differ", j, bad);
	}
	say(nd, "write/send ordering and read done");
}

/* test_latency - rough WRITE/READ/FAA round trips from node 0 to node 1, busy-polled. */
static void test_latency(struct node *nd)
{
	static const char *const names[] = { "write 8B", "read 8B", "faa", "write 4KiB" };
	static const int codes[] = { COH_WC_WRITE, COH_WC_READ, COH_WC_FAA, COH_WC_WRITE };
	static const size_t lens[] = { 8, 8, 8, 4096 };
	const int rounds = 200;
	struct coh_wc wc;
	uint64_t t0, id;
	int t, r, ret = 0, n;

	if (nd->id != 0 || nd->n < 2)
		return;
	for (t = 0; t < 4; t++) {
		t0 = now_ns();
		for (r = 0; r < rounds && !ret; r++) {
			id = ++nd->next_wr;
			if (codes[t] == COH_WC_FAA)
				ret = coh_ep_post_faa(nd->ep[1], nd->lbuf, 0, nd->rdata[1], OFF_LAT,
						      1, id);
			else if (codes[t] == COH_WC_READ)
				ret = coh_ep_post_read(nd->ep[1], nd->lbuf, 0, nd->rdata[1],
						       OFF_LAT, lens[t], id);
			else
				ret = coh_ep_post_write(nd->ep[1], nd->lbuf, 0, nd->rdata[1],
							OFF_LAT, lens[t], id);
			do
				n = coh_cq_poll(nd->cq, &wc, 1);
			while (!n);
			if (n < 0 || wc.wr_id != id || wc.status)
				ret = n < 0 ? n : wc.status ? wc.status : -EPROTO;
		}
		check(nd, !ret, "latency %s: %s", names[t], coh_strerror(ret));
		say(nd, "latency to node 1: %-10s %7.1f us (busy-polled, %d rounds)", names[t],
		    (double)(now_ns() - t0) / 1000.0 / rounds, rounds);
	}
}

/* test_atomics - every node adds ATOMIC_ROUNDS with FAA and with CAS to node 0's counters. */
static void test_atomics(struct node *nd)
{
	uint64_t expect, prev = 0, e = 0, got;
	int r, tries = 0, done = 0, ret;

	for (r = 0; r < ATOMIC_ROUNDS; r++) {
		ret = op(nd, COH_WC_FAA, 0, 0, nd->rdata[0], OFF_CNT, 8, 1, 0);
		check(nd, !ret, "faa: %s", coh_strerror(ret));
		if (ret)
			return;
		got = lbuf_u64(nd, 0);
		check(nd, r == 0 || got > prev,
		      "faa old values not increasing: %" PRIu64 " after %" PRIu64, got, prev);
		prev = got;
	}
	while (done < ATOMIC_ROUNDS && tries++ < ATOMIC_ROUNDS * 50) {
		ret = op(nd, COH_WC_CAS, 0, 8, nd->rdata[0], OFF_CAS, 8, e, e + 1);
		check(nd, !ret, "cas: %s", coh_strerror(ret));
		if (ret)
			return;
		got = lbuf_u64(nd, 8);
		if (got == e) {
			done++;
			e++;
		} else {
			e = got;
		}
	}
	check(nd, done == ATOMIC_ROUNDS, "cas: only %d increments in %d tries", done, tries);
	barrier(nd, 5, (int)nd->n);
	expect = (uint64_t)nd->n * ATOMIC_ROUNDS;
	ret = op(nd, COH_WC_READ, 0, 16, nd->rdata[0], OFF_CNT, 16, 0, 0);
	check(nd, !ret, "reading the counters: %s", coh_strerror(ret));
	check(nd, lbuf_u64(nd, 16) == expect, "faa total %" PRIu64 ", expected %" PRIu64,
	      lbuf_u64(nd, 16), expect);
	check(nd, lbuf_u64(nd, 24) == expect, "cas total %" PRIu64 ", expected %" PRIu64,
	      lbuf_u64(nd, 24), expect);
	say(nd, "atomics done: totals %" PRIu64 "/%" PRIu64 " (cas tries %d)", lbuf_u64(nd, 16),
	    lbuf_u64(nd, 24), tries);
}

/* test_flush_violations - FLUSH, and operations outside bounds or rights: -EACCES, endpoint up. */
static void test_flush_violations(struct node *nd)
{
	uint8_t *lb = coh_mr_addr(nd->lbuf);
	uint32_t j;
	size_t k, bad;
	int ret;

	for (j = 0; j < nd->n; j++) {
		memset(lb, (int)(0x40 + nd->id), 256);
		ret = op(nd, COH_WC_WRITE, j, 0, nd->rdata[j], OFF_D + nd->id * 256, 256, 0, 0);
		check(nd, !ret, "write before flush to %u: %s", j, coh_strerror(ret));
		ret = op(nd, COH_WC_FLUSH, j, 0, nd->rdata[j], OFF_D + nd->id * 256, 256, 0, 0);
		check(nd, !ret, "flush to %u: %s", j, coh_strerror(ret));
		ret = op(nd, COH_WC_FLUSH, j, 0, nd->rro[j], 0, 64, 0, 0);
		check(nd, ret == -EACCES, "flush without the right on %u: %s", j,
		      coh_strerror(ret));
		ret = op(nd, COH_WC_WRITE, j, 0, nd->rdata[j], DATA_LEN - 4, 8, 0, 0);
		check(nd, ret == -EACCES, "write past the end on %u: %s", j, coh_strerror(ret));
		ret = op(nd, COH_WC_READ, j, 0, nd->rdata[j], DATA_LEN, 8, 0, 0);
		check(nd, ret == -EACCES, "read past the end on %u: %s", j, coh_strerror(ret));
		ret = op(nd, COH_WC_WRITE, j, 0, nd->rro[j], 0, 8, 0, 0);
		check(nd, ret == -EACCES, "write to read-only on %u: %s", j, coh_strerror(ret));
		ret = op(nd, COH_WC_CAS, j, 0, nd->rro[j], 0, 8, 0, 1);
		check(nd, ret == -EACCES, "cas on read-only on %u: %s", j, coh_strerror(ret));
		ret = op(nd, COH_WC_READ, j, 4096, nd->rro[j], 0, 256, 0, 0);
		check(nd, !ret, "read of read-only on %u: %s", j, coh_strerror(ret));
		for (k = 0, bad = 0; k < 256; k++)
			bad += lb[4096 + k] != pattern(j, 99, k);
		check(nd, !bad, "read-only region of %u: %zu bytes differ", j, bad);
		ret = op(nd, COH_WC_READ, j, 8192, nd->rdata[j], OFF_D + nd->id * 256, 256, 0, 0);
		check(nd, !ret && lb[8192] == 0x40 + nd->id && lb[8192 + 255] == 0x40 + nd->id,
		      "after violations, read from %u: %s", j, coh_strerror(ret));
		check(nd, coh_ep_is_up(nd->ep[j]), "endpoint to %u went down", j);
	}
	say(nd, "flush and access violations done");
}

/* retry_op - repeat an operation while it fails with -ECONNRESET (re-establishment). */
static int retry_op(struct node *nd, int code, uint32_t peer, size_t loff, struct coh_rmr *rmr,
		    uint64_t roff, size_t len)
{
	uint64_t deadline = now_ms() + WAIT_MS;
	int ret, tries = 0;

	do {
		ret = op(nd, code, peer, loff, rmr, roff, len, 0, 0);
		if (ret != -ECONNRESET)
			break;
		tries++;
		usleep(5000);
	} while (now_ms() < deadline);
	if (tries)
		say(nd, "  (%d operations to %u completed -ECONNRESET while re-establishing)",
		    tries, peer);
	return ret;
}

/* test_rekey - node 0 rekeys its rk region: old descriptors fail, new ones work. */
static void test_rekey(struct node *nd)
{
	struct coh_mr_desc fresh;
	struct msg m = { .type = MSG_REKEYED, .from = nd->id };
	uint8_t *lb = coh_mr_addr(nd->lbuf);
	uint64_t t0, deadline;
	uint32_t j;
	int ret;

	barrier(nd, 6, (int)nd->n);
	if (nd->id == 0) {
		ret = coh_mr_rekey(nd->rk);
		check(nd, !ret, "rekey: %s", coh_strerror(ret));
	}
	barrier(nd, 7, (int)nd->n);
	memset(lb, 0x5a, 64);
	t0 = now_ms();
	ret = op(nd, COH_WC_WRITE, 0, 0, nd->rrk[0], 0, 64, 0, 0);
	check(nd, ret == -EACCES, "write with a revoked key gave %s", coh_strerror(ret));
	barrier(nd, 8, (int)nd->n);
	if (nd->id == 0) {
		coh_mr_export(nd->rk, &m.desc[0]);
		for (j = 0; j < nd->n; j++) {
			/* The connection may be re-establishing after the revoked key broke it. */
			deadline = now_ms() + WAIT_MS;
			while ((ret = send_msg(nd, j, &m)) == -ECONNRESET && now_ms() < deadline)
				usleep(5000);
			check(nd, !ret, "sending the new key to %u: %s", j, coh_strerror(ret));
		}
	}
	ret = wait_msg(nd, 0, &m, WAIT_MS);
	check(nd, !ret && m.type == MSG_REKEYED, "new key from node 0: %s", coh_strerror(ret));
	fresh = m.desc[0];
	coh_rmr_delete(&nd->rrk[0]);
	ret = coh_rmr_import(nd->ep[0], &fresh, &nd->rrk[0]);
	check(nd, !ret, "import the new key: %s", coh_strerror(ret));
	if (ret)
		return;
	ret = retry_op(nd, COH_WC_WRITE, 0, 0, nd->rrk[0], 64 * (nd->id + 1), 64);
	check(nd, !ret, "write with the new key: %s", coh_strerror(ret));
	ret = retry_op(nd, COH_WC_READ, 0, 128, nd->rrk[0], 64 * (nd->id + 1), 64);
	check(nd, !ret && lb[128] == 0x5a && lb[191] == 0x5a, "read with the new key: %s",
	      coh_strerror(ret));
	check(nd, coh_ep_is_up(nd->ep[0]), "endpoint to node 0 is down after rekey");
	say(nd, "rekey done in %" PRIu64 " ms", now_ms() - t0);
	barrier(nd, 9, (int)nd->n);
}

/* test_kill - node VICTIM dies mid-traffic; the others must see it within the timeout. */
static void test_kill(struct node *nd)
{
	uint32_t victim = VICTIM, j;
	uint64_t t0, deadline, first_err = 0, ev_at = 0;
	int outstanding = 0, ret, i, err_status = 0, sent = 0;
	bool got_event = false;
	struct coh_event ev;

	if (nd->n < 3)
		return;

	barrier(nd, 10, (int)nd->n);
	if (nd->id == victim) {
		for (i = 0; i < 20; i++) {
			for (j = 0; j < nd->n; j++) {
				if (j != victim)
					op(nd, COH_WC_WRITE, j, 0, nd->rdata[j], OFF_G, 64, 0, 0);
			}
		}
		say(nd, "killing myself mid-traffic");
		raise(SIGKILL);
	}
	t0 = now_ms();
	deadline = t0 + WAIT_MS + 5000;
	while (now_ms() < deadline && (!got_event || !first_err || outstanding)) {
		if (outstanding < 4 && !first_err) {
			ret = coh_ep_post_write(nd->ep[victim], nd->lbuf, 0, nd->rdata[victim],
						OFF_G, 64, 0xdead0000ull + (uint64_t)sent);
			if (!ret) {
				outstanding++;
				sent++;
			}
		}
		pump(nd, outstanding ? 1 : 0);
		for (i = 0; i < nd->ndone;) {
			if ((nd->done[i].wr_id >> 16) != 0xdead) {
				i++;
				continue;
			}
			outstanding--;
			if (nd->done[i].status && !first_err) {
				first_err = now_ms();
				err_status = nd->done[i].status;
			}
			nd->done[i] = nd->done[--nd->ndone];
		}
		if (!got_event && !coh_fabric_event_get(nd->fab, &ev, 0)) {
			check(nd,
			      ev.type == COH_EVENT_PEER_DOWN && ev.peer == victim && ev.incarnation,
			      "unexpected event type %u peer %u", ev.type, ev.peer);
			got_event = true;
			ev_at = now_ms();
		}
		if (!outstanding)
			usleep(200);
	}
	check(nd, got_event, "no PEER_DOWN for node %u", victim);
	check(nd, first_err, "no error completion from node %u", victim);
	check(nd, !outstanding, "%d operations to node %u never completed", outstanding, victim);
	say(nd,
	    "after %d writes: error completion (%s) after %" PRIu64 " ms, PEER_DOWN after %" PRIu64
	    " ms",
	    sent, coh_strerror(err_status), first_err ? first_err - t0 : 0, ev_at ? ev_at - t0 : 0);
	check(nd, !coh_ep_is_up(nd->ep[victim]), "endpoint to the dead node still up");
	ret = op(nd, COH_WC_WRITE, victim, 0, nd->rdata[victim], OFF_G, 64, 0, 0);
	check(nd, ret == -ECONNRESET, "post to the dead node gave %s", coh_strerror(ret));
	for (j = 0; j < nd->n; j++) {
		if (j == victim)
			continue;
		ret = op(nd, COH_WC_READ, j, 0, nd->rdata[j], OFF_A, 64, 0, 0);
		check(nd, !ret, "survivor %u unreachable after the kill: %s", j, coh_strerror(ret));
	}
	ret = coh_fabric_event_get(nd->fab, &ev, 0);
	check(nd, ret == -EAGAIN, "a second event: type %u peer %u", ev.type, ev.peer);
	barrier(nd, 11, (int)nd->n - 1);
}

/* teardown - delete everything in reverse order and close. */
static void teardown(struct node *nd)
{
	uint32_t j;
	int ret;

	for (j = 0; j < nd->n; j++) {
		coh_rmr_delete(&nd->rdata[j]);
		coh_rmr_delete(&nd->rro[j]);
		coh_rmr_delete(&nd->rrk[j]);
		ret = coh_ep_delete(&nd->ep[j]);
		check(nd, !ret, "ep_delete %u: %s", j, coh_strerror(ret));
	}
	coh_mr_delete(&nd->sbuf);
	coh_mr_delete(&nd->rbuf);
	coh_mr_delete(&nd->lbuf);
	coh_mr_delete(&nd->rk);
	coh_mr_delete(&nd->ro);
	coh_mr_delete(&nd->data);
	ret = coh_cq_delete(&nd->cq);
	check(nd, !ret, "cq_delete: %s", coh_strerror(ret));
	ret = coh_fabric_close(&nd->fab);
	check(nd, !ret, "fabric_close: %s", coh_strerror(ret));
}

/* The phases, in order; a barrier follows each of the first four. */
static void (*const phases[])(struct node *nd) = {
	test_ep_errors, test_exchange,	       test_order_read, test_latency,
	test_atomics,	test_flush_violations, test_rekey,	test_kill,
};

/* node_main - one node's whole run; returns its exit status. */
static int node_main(uint32_t id, uint32_t n, struct shared *sh, const char *cluster)
{
	struct node *nd = calloc(1, sizeof(*nd));
	uint64_t t0 = now_ms();
	size_t t;
	int fails;

	if (!nd)
		return 2;
	alarm(CHILD_ALARM_S);
	nd->id = id;
	nd->n = n;
	nd->sh = sh;
	if (setup(nd, cluster)) {
		atomic_store(&sh->abort, 1);
		return 1;
	}
	barrier(nd, 0, (int)n);
	for (t = 0; t < sizeof(phases) / sizeof(phases[0]); t++) {
		phases[t](nd);
		/* A failed phase would only cascade: stop every node quickly. */
		if (nd->fails)
			atomic_store(&sh->abort, 1);
		if (atomic_load(&sh->abort))
			break;
		if (t < 4)
			barrier(nd, (int)t + 1, (int)n);
	}
	teardown(nd);
	say(nd, "%s: %d failures in %" PRIu64 " ms", nd->fails ? "FAILED" : "passed", nd->fails,
	    now_ms() - t0);
	fails = nd->fails;
	free(nd);
	return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
	pid_t pids[MAXN];
	struct shared *sh;
	uint32_t n = 1, i;
	const char *p;
	int status, bad = 0, left;
	uint64_t deadline;

	if (argc != 2) {
		fprintf(stderr, "usage: %s ip:port,ip:port[,ip:port]\n", argv[0]);
		return 2;
	}
	for (p = argv[1]; *p; p++)
		n += *p == ',';
	if (n < 2 || n > MAXN) {
		fprintf(stderr, "rdma_smoke: need 2 or 3 cluster entries, got %u\n", n);
		return 2;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			return 2;
		}
		if (!pids[i])
			_exit(node_main(i, n, sh, argv[1]));
	}
	deadline = now_ms() + PARENT_WAIT_S * 1000ull;
	for (left = (int)n; left > 0;) {
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid <= 0) {
			if (now_ms() > deadline) {
				fprintf(stderr,
					"rdma_smoke: nodes still running after %d s; killing\n",
					PARENT_WAIT_S);
				for (i = 0; i < n; i++)
					kill(pids[i], SIGKILL);
				deadline = UINT64_MAX;
				bad++;
			}
			usleep(20000);
			continue;
		}
		left--;
		for (i = 0; i < n && pids[i] != pid; i++)
			;
		if (n == 3 && i == VICTIM && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
			continue; /* the victim of the kill test */
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "rdma_smoke: node %u failed (%s %d)\n", i,
				WIFEXITED(status) ? "exit" : "signal",
				WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			bad++;
		}
	}
	printf("rdma_smoke: %s\n", bad ? "FAILED" : "all nodes passed");
	return bad ? 1 : 0;
}
