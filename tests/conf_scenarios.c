/*
 * conf_scenarios.c - the fabric conformance scenarios. Each runs in every node process of a
 * cluster made by conf_run() and checks behaviour a peer can observe: ordering, atomicity,
 * visibility, access control, queue limits, sizes, failure reporting. The same scenarios run on
 * every provider; nothing here knows which one it is on, except where a provider documents a
 * different limit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "conf_scenarios.h"

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(uint8_t *p, size_t len, uint64_t seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(rnd(&seed) >> 24);
}

/* Every node connects to every other and to itself, and sees them up. */
int sc_connect(struct conf_node *cn)
{
	struct coh_fabric_info info;
	uint32_t i;

	CONF_CHECK(coh_fabric_query(cn->fab, &info) == 0, "query");
	CONF_CHECK(!strcmp(info.provider, cn->provider), "provider %s", info.provider);
	CONF_CHECK(info.node_id == cn->id, "node id");
	for (i = 0; i < cn->n; i++) {
		CONF_CHECK(coh_ep_is_up(cn->ep[i]), "ep to %u down", i);
		CONF_CHECK(coh_ep_peer(cn->ep[i]) == i, "peer id");
	}
	return 0;
}

/*
 * Node 0 writes a fresh pattern into node 1's region and, without waiting for the WRITE to
 * complete, sends its sequence number; node 1 checks that the whole pattern is there when the
 * SEND arrives. Sizes vary so that both small and multi-page writes are covered.
 */
int sc_write_send_order(struct conf_node *cn)
{
	enum {
		ROUNDS = 500,
		REGION = 256 * 1024
	};
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct coh_rmr *rmr = NULL;
	struct coh_mr *mr, *src;
	uint32_t r, ack;
	int ret;

	if (cn->n < 2)
		return 1;
	CONF_CHECK(
	    coh_mr_new(cn->fab, REGION, COH_ACCESS_REMOTE_WRITE | COH_ACCESS_LOCAL_WRITE, &mr) == 0,
	    "mr_new");
	CONF_CHECK(coh_mr_new(cn->fab, REGION + 64, COH_ACCESS_LOCAL_WRITE, &src) == 0, "src");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	if (cn->id == 0) {
		CONF_CHECK(coh_rmr_import(cn->ep[1], &descs[1], &rmr) == 0, "import");
		for (r = 1; r <= ROUNDS; r++) {
			size_t len = 8 + (size_t)(r * 7919u) % (REGION - 8);
			uint8_t *p = coh_mr_addr(src);
			struct coh_wc wc;

			fill(p, len, r);
			memcpy(p + REGION, &r, sizeof(r));
			memcpy(p + REGION + 4, &len, sizeof(len));
			CONF_CHECK(coh_ep_post_write(cn->ep[1], src, 0, rmr, 0, len, r) == 0, "w");
			CONF_CHECK(coh_ep_post_send(cn->ep[1], src, REGION, 12, r) == 0, "send");
			CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 &&
				       wc.opcode == COH_WC_WRITE && wc.wr_id == r,
				   "write completion %d", wc.status);
			CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 &&
				       wc.opcode == COH_WC_SEND,
				   "send completion");
			CONF_CHECK(conf_recv(cn, 1, &ack, NULL, CONF_TIMEOUT_MS) == 0 && ack == r,
				   "ack %u", r);
		}
		coh_rmr_delete(&rmr);
	} else if (cn->id == 1) {
		uint8_t *expect = malloc(REGION);

		CONF_CHECK(expect, "malloc");
		for (r = 1; r <= ROUNDS; r++) {
			struct coh_wc wc;
			uint32_t seq;
			size_t len;

			CONF_CHECK(coh_ep_post_recv(cn->ep[0], src, REGION, 64, r) == 0, "recv");
			ret = conf_wait1(cn, &wc);
			CONF_CHECK(ret == 0 && wc.status == 0 && wc.opcode == COH_WC_RECV &&
				       wc.byte_len == 12,
				   "recv completion %d/%d", ret, wc.status);
			memcpy(&seq, (uint8_t *)coh_mr_addr(src) + REGION, 4);
			memcpy(&len, (uint8_t *)coh_mr_addr(src) + REGION + 4, 8);
			CONF_CHECK(seq == r, "sequence %u, expected %u", seq, r);
			fill(expect, len, r);
			CONF_CHECK(memcmp(expect, coh_mr_addr(mr), len) == 0,
				   "round %u: data written before the SEND is not all there", r);
			/* Let the writer go on only now, or it would overwrite what we check. */
			CONF_CHECK(conf_send(cn, 0, &r, sizeof(r)) == 0, "ack");
		}
		free(expect);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&src);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * Every node, node 0 included (through its loopback endpoint), does FAA(+1) and CAS increments
 * on counters at node 0, concurrently. Each FAA result is recorded by writing a mark into a
 * per-value slot at node 0: a duplicated result leaves a slot empty. Totals must be exact.
 */
int sc_atomics(struct conf_node *cn)
{
	enum {
		PER_NODE = 2000
	};
	struct coh_mr_desc descs[CONF_MAX_NODES];
	uint32_t total = PER_NODE * cn->n, i;
	struct coh_mr *mr, *res;
	struct coh_rmr *rmr;
	struct coh_ep *ep = cn->ep[0];
	size_t region = 64 + total;

	CONF_CHECK(coh_mr_new(cn->fab, region,
			      COH_ACCESS_REMOTE_ATOMIC | COH_ACCESS_REMOTE_WRITE |
				  COH_ACCESS_REMOTE_READ | COH_ACCESS_LOCAL_WRITE,
			      &mr) == 0,
		   "mr");
	CONF_CHECK(coh_mr_new(cn->fab, 64, COH_ACCESS_LOCAL_WRITE, &res) == 0, "res");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	CONF_CHECK(coh_rmr_import(ep, &descs[0], &rmr) == 0, "import");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	for (i = 0; i < PER_NODE; i++) {
		uint64_t old, cur, mark = cn->id + 1;
		struct coh_wc wc;
		int tries;

		CONF_CHECK(coh_ep_post_faa(ep, res, 0, rmr, 0, 1, i) == 0, "faa");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.opcode == COH_WC_FAA,
			   "faa completion");
		memcpy(&old, coh_mr_addr(res), 8);
		CONF_CHECK(old < total, "faa returned %llu", (unsigned long long)old);
		memcpy((uint8_t *)coh_mr_addr(res) + 8, &mark, 1);
		CONF_CHECK(coh_ep_write_sync(ep, res, 8, rmr, 64 + old, 1) == 0, "mark");
		/* CAS increment; contention makes some attempts fail, bounded. */
		CONF_CHECK(coh_ep_read_sync(ep, res, 16, rmr, 8, 8) == 0, "read");
		memcpy(&cur, (uint8_t *)coh_mr_addr(res) + 16, 8);
		for (tries = 0; tries < 100000; tries++) {
			CONF_CHECK(coh_ep_cas_sync(ep, rmr, 8, cur, cur + 1, &old) == 0, "cas");
			if (old == cur)
				break;
			cur = old;
		}
		CONF_CHECK(tries < 100000, "cas starved");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	if (cn->id == 0) {
		uint64_t faa, cas;
		uint8_t *marks = (uint8_t *)coh_mr_addr(mr) + 64;

		/* Read through the fabric: the counters are fabric-atomic words. */
		CONF_CHECK(coh_ep_read_sync(ep, res, 0, rmr, 0, 16) == 0, "read back");
		memcpy(&faa, coh_mr_addr(res), 8);
		memcpy(&cas, (uint8_t *)coh_mr_addr(res) + 8, 8);
		CONF_CHECK(faa == total, "faa total %llu != %u", (unsigned long long)faa, total);
		CONF_CHECK(cas == total, "cas total %llu != %u", (unsigned long long)cas, total);
		for (i = 0; i < total; i++)
			CONF_CHECK(marks[i] != 0, "faa value %u was never returned", i);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_rmr_delete(&rmr);
	coh_mr_delete(&res);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * Node 0 keeps writing generations into node 1's region (every 8-byte word of a write holds its
 * generation); node 2 keeps reading it. A read may mix generations, but every word must be one
 * that was written, no word may go backwards between successive reads, and after the writer's
 * last WRITE completed and it said so, a read sees the last generation everywhere.
 */
int sc_read_concurrent(struct conf_node *cn)
{
	enum {
		WORDS = 2048,
		GENS = 400
	};
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct coh_mr *mr, *buf;
	struct coh_rmr *rmr = NULL;
	uint64_t g;

	if (cn->n < 3)
		return 1;
	CONF_CHECK(
	    coh_mr_new(cn->fab, WORDS * 8,
		       COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_WRITE | COH_ACCESS_LOCAL_WRITE,
		       &mr) == 0,
	    "mr");
	CONF_CHECK(coh_mr_new(cn->fab, WORDS * 8, COH_ACCESS_LOCAL_WRITE, &buf) == 0, "buf");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	if (cn->id == 0) {
		uint64_t *w = coh_mr_addr(buf);
		uint32_t i;

		CONF_CHECK(coh_rmr_import(cn->ep[1], &descs[1], &rmr) == 0, "import");
		for (g = 1; g <= GENS; g++) {
			for (i = 0; i < WORDS; i++)
				w[i] = g;
			CONF_CHECK(coh_ep_write_sync(cn->ep[1], buf, 0, rmr, 0, WORDS * 8) == 0,
				   "write gen %llu", (unsigned long long)g);
		}
		g = GENS;
		CONF_CHECK(conf_send(cn, 2, &g, sizeof(g)) == 0, "done");
	} else if (cn->id == 2) {
		uint64_t *w = coh_mr_addr(buf), *last = calloc(WORDS, 8), done = 0;
		uint32_t i, reads = 0, len;
		bool finished = false;

		CONF_CHECK(last, "calloc");
		CONF_CHECK(coh_rmr_import(cn->ep[1], &descs[1], &rmr) == 0, "import");
		while (reads < 100000) {
			CONF_CHECK(coh_ep_read_sync(cn->ep[1], buf, 0, rmr, 0, WORDS * 8) == 0,
				   "read");
			reads++;
			for (i = 0; i < WORDS; i++) {
				CONF_CHECK(w[i] <= GENS, "word %u holds %llx, never written", i,
					   (unsigned long long)w[i]);
				CONF_CHECK(w[i] >= last[i], "word %u went back from %llu to %llu",
					   i, (unsigned long long)last[i],
					   (unsigned long long)w[i]);
				last[i] = w[i];
			}
			if (finished)
				break;
			if (conf_recv(cn, 0, &done, &len, 0) == 0)
				finished = true; /* one more read, which must see the end */
		}
		CONF_CHECK(finished, "writer never finished");
		for (i = 0; i < WORDS; i++)
			CONF_CHECK(w[i] == GENS, "word %u is %llu after the last write", i,
				   (unsigned long long)w[i]);
		free(last);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_rmr_delete(&rmr);
	coh_mr_delete(&buf);
	coh_mr_delete(&mr);
	return 0;
}

static int expect_status(struct conf_node *cn, int posted, int status, const char *what)
{
	struct coh_wc wc;

	CONF_CHECK(posted == 0, "%s: post returned %d", what, posted);
	CONF_CHECK(conf_wait1(cn, &wc) == 0, "%s: no completion", what);
	CONF_CHECK(wc.status == status, "%s: status %d (%s), expected %d", what, wc.status,
		   coh_strerror(wc.status), status);
	return 0;
}

#define EXPECT(cn, call, st, what)                                                                 \
	do {                                                                                       \
		if (expect_status((cn), (call), (st), (what)))                                     \
			return 1;                                                                  \
	} while (0)

/*
 * Node 1 exports regions with one right each; node 0 tries every operation against each. Wrong
 * rights and out-of-bounds ranges complete with -EACCES and leave the endpoint usable; local
 * mistakes are refused at post time; a rekey or delete revokes old descriptors.
 */
int sc_access(struct conf_node *cn)
{
	enum {
		LEN = 8192
	};
	struct coh_mr_desc dro[CONF_MAX_NODES], dwo[CONF_MAX_NODES], dat[CONF_MAX_NODES];
	struct coh_mr *ro, *wo, *at, *loc, *noloc;
	uint8_t token = 1;

	if (cn->n < 2)
		return 1;
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_REMOTE_READ, &ro) == 0, "ro");
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_REMOTE_WRITE, &wo) == 0, "wo");
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_REMOTE_ATOMIC, &at) == 0, "at");
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	CONF_CHECK(coh_mr_new(cn->fab, LEN, 0, &noloc) == 0, "noloc");
	CONF_CHECK(conf_exchange(cn, ro, dro) == 0 && conf_exchange(cn, wo, dwo) == 0 &&
		       conf_exchange(cn, at, dat) == 0,
		   "exchange");
	if (cn->id == 0) {
		struct coh_ep *ep = cn->ep[1];
		struct coh_rmr *rro, *rwo, *rat, *tmp = NULL;
		struct coh_mr_desc bad;
		uint32_t len;

		CONF_CHECK(coh_rmr_import(ep, &dro[1], &rro) == 0, "import ro");
		CONF_CHECK(coh_rmr_import(ep, &dwo[1], &rwo) == 0, "import wo");
		CONF_CHECK(coh_rmr_import(ep, &dat[1], &rat) == 0, "import at");
		/* Descriptors are validated. */
		bad = dro[1];
		bad.bytes[0] ^= 0xff;
		CONF_CHECK(coh_rmr_import(ep, &bad, &tmp) == -EPROTO && !tmp, "bad magic");
		CONF_CHECK(coh_rmr_import(cn->ep[0], &dro[1], &tmp) == -EINVAL, "wrong peer");

		/* Rights. */
		EXPECT(cn, coh_ep_post_write(ep, loc, 0, rro, 0, 8, 1), -EACCES, "write to ro");
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, rwo, 0, 8, 2), -EACCES, "read from wo");
		EXPECT(cn, coh_ep_post_cas(ep, loc, 0, rro, 0, 0, 1, 3), -EACCES, "cas on ro");
		EXPECT(cn, coh_ep_post_faa(ep, loc, 0, rwo, 0, 1, 4), -EACCES, "faa on wo");
		EXPECT(cn, coh_ep_post_flush(ep, rwo, 0, 8, 5), -EACCES, "flush without right");
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, rat, 0, 8, 6), -EACCES, "read from at");
		/* Bounds. */
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, rro, LEN, 8, 7), -EACCES, "read past end");
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, rro, LEN - 4, 8, 8), -EACCES,
		       "read across end");
		EXPECT(cn, coh_ep_post_write(ep, loc, 0, rwo, LEN - 8, 16, 9), -EACCES,
		       "write across end");
		EXPECT(cn, coh_ep_post_faa(ep, loc, 0, rat, LEN, 1, 10), -EACCES, "faa past end");
		/* The endpoint still works. */
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, rro, LEN - 8, 8, 11), 0, "valid read");
		EXPECT(cn, coh_ep_post_write(ep, loc, 0, rwo, 0, LEN, 12), 0, "valid write");
		EXPECT(cn, coh_ep_post_faa(ep, loc, 0, rat, 8, 5, 13), 0, "valid faa");
		/* Local mistakes are refused at post time and produce no completion. */
		CONF_CHECK(coh_ep_post_read(ep, loc, LEN - 4, rro, 0, 8, 14) == -EINVAL, "loff");
		CONF_CHECK(coh_ep_post_read(ep, noloc, 0, rro, 0, 8, 15) == -EINVAL, "no lw");
		CONF_CHECK(coh_ep_post_cas(ep, loc, 0, rat, 4, 0, 1, 16) == -EINVAL, "unaligned");
		CONF_CHECK(coh_ep_post_write(ep, loc, 0, rwo, 0, 0, 17) == -EINVAL, "zero length");
		{
			struct coh_wc wc;

			CONF_CHECK(coh_cq_wait(cn->data_cq, &wc, 1, 0) == -EAGAIN,
				   "a refused post produced a completion");
		}
		CONF_CHECK(coh_ep_post_send(ep, loc, 0, 65537, 18) == -EINVAL, "send > max msg");
		/* Revocation: node 1 rekeys ro and deletes wo, then tells us. */
		CONF_CHECK(conf_send(cn, 1, &token, 1) == 0, "go");
		CONF_CHECK(conf_recv(cn, 1, &token, &len, CONF_TIMEOUT_MS) == 0, "rekeyed");
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, rro, 0, 8, 20), -EACCES, "old key");
		EXPECT(cn, coh_ep_post_write(ep, loc, 0, rwo, 0, 8, 21), -EACCES, "deleted");
		CONF_CHECK(conf_recv(cn, 1, &dro[1], &len, CONF_TIMEOUT_MS) == 0, "new desc");
		CONF_CHECK(coh_rmr_import(ep, &dro[1], &tmp) == 0, "import rekeyed");
		EXPECT(cn, coh_ep_post_read(ep, loc, 0, tmp, 0, 8, 22), 0, "new key");
		coh_rmr_delete(&tmp);
		coh_rmr_delete(&rro);
		coh_rmr_delete(&rwo);
		coh_rmr_delete(&rat);
	} else if (cn->id == 1) {
		struct coh_mr_desc d;
		uint32_t len;

		CONF_CHECK(conf_recv(cn, 0, &token, &len, CONF_TIMEOUT_MS) == 0, "go");
		CONF_CHECK(coh_mr_rekey(ro) == 0, "rekey");
		CONF_CHECK(coh_mr_rekey(loc) == -EINVAL, "rekey local-only");
		CONF_CHECK(coh_mr_delete(&wo) == 0 && !wo, "delete");
		CONF_CHECK(conf_send(cn, 0, &token, 1) == 0, "rekeyed");
		CONF_CHECK(coh_mr_export(ro, &d) == 0, "export");
		CONF_CHECK(coh_mr_export(loc, &d) == -EINVAL, "export local-only");
		CONF_CHECK(coh_mr_export(ro, &d) == 0, "export");
		CONF_CHECK(conf_send(cn, 0, &d, sizeof(d)) == 0, "send desc");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&noloc);
	coh_mr_delete(&loc);
	coh_mr_delete(&at);
	coh_mr_delete(&wo);
	coh_mr_delete(&ro);
	return 0;
}

/*
 * Node 0 posts as many operations as its endpoint allows without polling, sees -EAGAIN beyond,
 * then takes every completion exactly once. Node 1 pre-posts receives and node 0 sends a burst
 * larger than any internal ring, which must arrive complete and in order.
 */
int sc_many_outstanding(struct conf_node *cn)
{
	enum {
		WR = 1024,
		MSGS = 500,
		RECVS = 512
	};
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct coh_mr *mr, *loc;
	struct coh_rmr *rmr = NULL;
	struct coh_wc wc[64];
	uint32_t i;

	if (cn->n < 2)
		return 1;
	CONF_CHECK(coh_mr_new(cn->fab, 1 << 20, COH_ACCESS_REMOTE_WRITE | COH_ACCESS_LOCAL_WRITE,
			      &mr) == 0,
		   "mr");
	CONF_CHECK(coh_mr_new(cn->fab, 1 << 20, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	if (cn->id == 0) {
		static uint8_t seen[WR];
		uint32_t got = 0;

		CONF_CHECK(coh_rmr_import(cn->ep[1], &descs[1], &rmr) == 0, "import");
		for (i = 0; i < WR; i++)
			CONF_CHECK(coh_ep_post_write(cn->ep[1], loc, i * 64, rmr, i * 64, 64, i) ==
				       0,
				   "post %u", i);
		CONF_CHECK(coh_ep_post_write(cn->ep[1], loc, 0, rmr, 0, 64, WR) == -EAGAIN,
			   "queue limit not enforced");
		while (got < WR) {
			int n = coh_cq_wait(cn->data_cq, wc, 64, CONF_TIMEOUT_MS);

			CONF_CHECK(n > 0, "wait: %d after %u", n, got);
			for (int k = 0; k < n; k++) {
				CONF_CHECK(wc[k].status == 0 && wc[k].wr_id < WR &&
					       !seen[wc[k].wr_id],
					   "completion %llu status %d",
					   (unsigned long long)wc[k].wr_id, wc[k].status);
				seen[wc[k].wr_id] = 1;
			}
			got += (uint32_t)n;
		}
		CONF_CHECK(coh_cq_poll(cn->data_cq, wc, 64) == 0, "extra completions");
		coh_rmr_delete(&rmr);
	} else if (cn->id == 1) {
		for (i = 0; i < RECVS; i++)
			CONF_CHECK(coh_ep_post_recv(cn->ep[0], loc, i * 16, 16, i) == 0, "recv %u",
				   i);
		CONF_CHECK(coh_ep_post_recv(cn->ep[0], loc, 0, 16, 0) == -EAGAIN,
			   "receive limit not enforced");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "receives posted");
	if (cn->id == 0) {
		uint32_t done = 0;

		/* A burst far larger than any ring: the sender keeps posting as room frees. */
		for (i = 0; i < MSGS; i++) {
			memcpy((uint8_t *)coh_mr_addr(loc) + i * 16, &i, 4);
			while (coh_ep_post_send(cn->ep[1], loc, i * 16, 16, i) == -EAGAIN) {
				int n = coh_cq_wait(cn->data_cq, wc, 64, CONF_TIMEOUT_MS);

				CONF_CHECK(n > 0, "send completions %d", n);
				for (int k = 0; k < n; k++)
					CONF_CHECK(wc[k].status == 0, "send %d", wc[k].status);
				done += (uint32_t)n;
			}
		}
		while (done < MSGS) {
			int n = coh_cq_wait(cn->data_cq, wc, 64, CONF_TIMEOUT_MS);

			CONF_CHECK(n > 0, "send completions %d at %u", n, done);
			for (int k = 0; k < n; k++)
				CONF_CHECK(wc[k].status == 0, "send %d", wc[k].status);
			done += (uint32_t)n;
		}
	} else if (cn->id == 1) {
		uint32_t next = 0, posted = RECVS;

		while (next < MSGS) {
			int n = coh_cq_wait(cn->data_cq, wc, 64, CONF_TIMEOUT_MS);

			CONF_CHECK(n > 0, "recv wait %d at %u", n, next);
			for (int k = 0; k < n; k++) {
				uint32_t v;

				CONF_CHECK(wc[k].status == 0 && wc[k].opcode == COH_WC_RECV &&
					       wc[k].byte_len == 16 && wc[k].wr_id == next % RECVS,
					   "recv %u: status %d wr_id %llu", next, wc[k].status,
					   (unsigned long long)wc[k].wr_id);
				memcpy(&v, (uint8_t *)coh_mr_addr(loc) + wc[k].wr_id * 16, 4);
				CONF_CHECK(v == next, "message %u arrived as %u", next, v);
				next++;
				if (posted < MSGS) {
					CONF_CHECK(coh_ep_post_recv(cn->ep[0], loc,
								    wc[k].wr_id * 16, 16,
								    wc[k].wr_id) == 0,
						   "repost");
					posted++;
				}
			}
		}
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&loc);
	coh_mr_delete(&mr);
	return 0;
}

/* Transfers from 1 byte to 1 MiB, odd sizes and offsets included, round-trip through node 1's
 * memory (WRITE then READ back) and as SENDs up to the endpoint's message size. */
int sc_sizes(struct conf_node *cn)
{
	static const size_t sizes[] = { 1,    3,    8,	  16,	 64,	100,	4095,
					4096, 4097, 8192, 65536, 65537, 262144, 1 << 20 };
	enum {
		LEN = (1 << 20) + 64
	};
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct coh_mr *mr, *src, *dst;
	struct coh_rmr *rmr = NULL;
	size_t i;

	if (cn->n < 2)
		return 1;
	CONF_CHECK(
	    coh_mr_new(cn->fab, LEN,
		       COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_WRITE | COH_ACCESS_LOCAL_WRITE,
		       &mr) == 0,
	    "mr");
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_LOCAL_WRITE, &src) == 0, "src");
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_LOCAL_WRITE, &dst) == 0, "dst");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	if (cn->id == 0) {
		CONF_CHECK(coh_rmr_import(cn->ep[1], &descs[1], &rmr) == 0, "import");
		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			size_t len = sizes[i], roff = i % 2 ? 24 + i : 0, loff = i % 3;

			fill((uint8_t *)coh_mr_addr(src) + loff, len, i + 100);
			memset(coh_mr_addr(dst), 0, LEN);
			CONF_CHECK(coh_ep_write_sync(cn->ep[1], src, loff, rmr, roff, len) == 0,
				   "write %zu", len);
			CONF_CHECK(coh_ep_read_sync(cn->ep[1], dst, 7, rmr, roff, len) == 0,
				   "read %zu", len);
			CONF_CHECK(memcmp((uint8_t *)coh_mr_addr(src) + loff,
					  (uint8_t *)coh_mr_addr(dst) + 7, len) == 0,
				   "size %zu came back different", len);
			if (len <= 65536) {
				CONF_CHECK(coh_ep_send_sync(cn->ep[1], src, loff, len) == 0,
					   "send %zu", len);
			}
		}
		coh_rmr_delete(&rmr);
	} else if (cn->id == 1) {
		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			size_t len = sizes[i], loff = i % 3;
			struct coh_wc wc;

			if (len > 65536)
				continue;
			fill((uint8_t *)coh_mr_addr(src) + loff, len, i + 100);
			CONF_CHECK(coh_ep_post_recv(cn->ep[0], dst, 0, 65536, i) == 0, "recv");
			CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.byte_len == len,
				   "recv %zu: status %d len %u", len, wc.status, wc.byte_len);
			CONF_CHECK(
			    memcmp(coh_mr_addr(dst), (uint8_t *)coh_mr_addr(src) + loff, len) == 0,
			    "message of %zu differs", len);
		}
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&dst);
	coh_mr_delete(&src);
	coh_mr_delete(&mr);
	return 0;
}

/* WRITE then FLUSH completes; FLUSH is refused without the right; the blocking helpers refuse
 * to run while other operations are outstanding on their queue. */
/* A message larger than the posted buffer completes that buffer with -EMSGSIZE and is not
 * written past its end. What follows depends on the transport (RC breaks the connection), so
 * only the receiver's view is checked, and the endpoint pair is not reused afterwards. */
int sc_recv_too_small(struct conf_node *cn)
{
	struct coh_mr *loc;

	if (cn->n < 2)
		return 1;
	CONF_CHECK(coh_mr_new(cn->fab, 4096, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	if (cn->id == 1) {
		struct coh_wc wc;
		uint8_t *p = coh_mr_addr(loc);

		memset(p, 0xee, 4096);
		CONF_CHECK(coh_ep_post_recv(cn->ep[0], loc, 0, 16, 99) == 0, "recv");
		CONF_CHECK(conf_barrier(cn) == 0, "posted");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 99 && wc.status == -EMSGSIZE,
			   "oversized message: status %d", wc.status);
		CONF_CHECK(p[16] == 0xee, "receive wrote past its buffer");
	} else if (cn->id == 0) {
		struct coh_wc wc;

		memset(coh_mr_addr(loc), 0x11, 4096);
		CONF_CHECK(conf_barrier(cn) == 0, "posted");
		CONF_CHECK(coh_ep_post_send(cn->ep[1], loc, 0, 32, 1) == 0, "send");
		/* The sender's status is transport-specific (shm: 0; RC: an error). */
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 1, "send completion");
	} else {
		CONF_CHECK(conf_barrier(cn) == 0, "posted");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&loc);
	return 0;
}

int sc_flush_and_sync(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES], dnf[CONF_MAX_NODES];
	struct coh_mr *mr, *nf, *loc;
	struct coh_rmr *rmr = NULL, *rnf = NULL;
	struct coh_fabric_info info;

	CONF_CHECK(coh_fabric_query(cn->fab, &info) == 0, "query");
	CONF_CHECK(
	    coh_mr_new(cn->fab, 65536,
		       COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_FLUSH | COH_ACCESS_REMOTE_READ,
		       &mr) == 0,
	    "mr");
	CONF_CHECK(coh_mr_new(cn->fab, 4096, COH_ACCESS_REMOTE_WRITE, &nf) == 0, "nf");
	CONF_CHECK(coh_mr_new(cn->fab, 65536, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0 && conf_exchange(cn, nf, dnf) == 0, "x");
	if (cn->id == 0 && cn->n > 1) {
		struct coh_ep *ep = cn->ep[1];
		struct coh_wc wc;
		uint64_t old;

		CONF_CHECK(coh_rmr_import(ep, &descs[1], &rmr) == 0, "import");
		CONF_CHECK(coh_rmr_import(ep, &dnf[1], &rnf) == 0, "import");
		fill(coh_mr_addr(loc), 65536, 7);
		CONF_CHECK(coh_ep_post_write(ep, loc, 0, rmr, 0, 65536, 1) == 0, "write");
		CONF_CHECK(coh_ep_post_flush(ep, rmr, 0, 65536, 2) == 0, "flush");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.wr_id == 1, "w");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.wr_id == 2 &&
			       wc.opcode == COH_WC_FLUSH,
			   "flush completion %d", wc.status);
		CONF_CHECK(coh_ep_flush_sync(ep, rmr, 100, 1000) == 0, "flush_sync");
		CONF_CHECK(coh_ep_flush_sync(ep, rnf, 0, 8) == -EACCES, "flush without right");
		/* Blocking helpers and outstanding work. */
		CONF_CHECK(coh_ep_post_write(ep, loc, 0, rmr, 0, 8, 3) == 0, "write");
		CONF_CHECK(coh_ep_flush_sync(ep, rmr, 0, 8) == -EBUSY, "sync while busy");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 3, "drain");
		CONF_CHECK(coh_ep_faa_sync(ep, rmr, 0, 1, &old) == -EACCES, "faa on non-atomic");
		CONF_CHECK(coh_ep_faa_sync(ep, rmr, 0, 1, NULL) == -EINVAL, "null result");
		coh_rmr_delete(&rnf);
		coh_rmr_delete(&rmr);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&loc);
	coh_mr_delete(&nf);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * A cut network (coh_fabric_partition; shm only, rdma says -EOPNOTSUPP and the scenario ends
 * there). Node 0 cuts node 1 off and writes to its region: the write is held, and performed when
 * the cut heals. Cut again, two writes are held until the first runs out of retries: it fails
 * with -ETIMEDOUT, the second with -ECONNRESET, and neither reached node 1's memory. Once healed,
 * a write goes through; node 1 checks what its memory holds.
 */
int sc_partition(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct coh_mr *mr, *loc;
	uint64_t *mem, *lp;
	uint8_t msg[8];
	uint32_t len = sizeof(msg);
	int r;

	CONF_CHECK(
	    coh_mr_new(cn->fab, 4096, COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ, &mr) == 0,
	    "mr");
	CONF_CHECK(coh_mr_new(cn->fab, 4096, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	mem = (uint64_t *)coh_mr_addr(mr);
	lp = (uint64_t *)coh_mr_addr(loc);
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	r = coh_fabric_partition(cn->fab, 0);
	if (r == -EOPNOTSUPP) {
		CONF_CHECK(strcmp(cn->provider, "shm") != 0, "shm must support a cut");
		goto out;
	}
	CONF_CHECK(r == 0, "partition: %d", r);
	if (cn->id == 0) {
		struct coh_ep *ep = cn->ep[1];
		struct coh_rmr *rmr;
		struct coh_wc wc;

		CONF_CHECK(coh_rmr_import(ep, &descs[1], &rmr) == 0, "import");
		/* Held while cut, performed once healed, with what the buffer holds then. */
		CONF_CHECK(coh_fabric_partition(cn->fab, 1ull << 1) == 0, "cut");
		lp[0] = 0x1111;
		CONF_CHECK(coh_ep_post_write(ep, loc, 0, rmr, 0, 8, 1) == 0, "write 1");
		CONF_CHECK(coh_cq_poll(cn->data_cq, &wc, 1) == 0,
			   "a write completed across the cut");
		lp[0] = 0xaaaa;
		CONF_CHECK(coh_fabric_partition(cn->fab, 0) == 0, "heal");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 1 && wc.status == 0,
			   "write 1 after the heal: %d", wc.status);
		/* Run out of retries: the oldest times out, the rest are flushed, none performed. */
		CONF_CHECK(coh_fabric_partition(cn->fab, 1ull << 1 | 1ull << 5) == 0, "cut again");
		lp[1] = 0x2222;
		lp[2] = 0x3333;
		CONF_CHECK(coh_ep_post_write(ep, loc, 8, rmr, 0, 8, 2) == 0, "write 2");
		CONF_CHECK(coh_ep_post_write(ep, loc, 16, rmr, 8, 8, 3) == 0, "write 3");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 2 && wc.status == -ETIMEDOUT,
			   "write 2 across a lasting cut: %d", wc.status);
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 3 && wc.status == -ECONNRESET,
			   "write 3 behind it: %d", wc.status);
		CONF_CHECK(coh_fabric_partition(cn->fab, 0) == 0, "heal again");
		lp[3] = 0x4444;
		CONF_CHECK(coh_ep_post_write(ep, loc, 24, rmr, 16, 8, 4) == 0, "write 4");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.wr_id == 4 && wc.status == 0,
			   "write 4 after the heal: %d", wc.status);
		coh_rmr_delete(&rmr);
		CONF_CHECK(conf_send(cn, 1, "done", 5) == 0, "send");
	} else if (cn->id == 1) {
		CONF_CHECK(conf_recv(cn, 0, msg, &len, CONF_TIMEOUT_MS) == 0, "recv");
		CONF_CHECK(mem[0] == 0xaaaa && mem[1] == 0 && mem[2] == 0x4444,
			   "memory %#llx %#llx %#llx, expected 0xaaaa 0 0x4444",
			   (unsigned long long)mem[0], (unsigned long long)mem[1],
			   (unsigned long long)mem[2]);
	}
out:
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&loc);
	coh_mr_delete(&mr);
	return 0;
}

/*
 * Node 2 takes traffic from nodes 0 and 1 and kills itself with SIGKILL in the middle of it.
 * The survivors must get error completions for operations to it, flushed receives, one
 * PEER_DOWN event each, all within bounded time, and keep working with each other.
 */
int sc_peer_killed(struct conf_node *cn)
{
	struct coh_mr_desc descs[CONF_MAX_NODES];
	struct coh_rmr *rmr[CONF_MAX_NODES] = { 0 };
	struct coh_mr *mr, *loc;
	uint32_t i;

	if (cn->n < 3)
		return 1;
	CONF_CHECK(
	    coh_mr_new(cn->fab, 65536, COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ, &mr) == 0,
	    "mr");
	CONF_CHECK(coh_mr_new(cn->fab, 65536, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	CONF_CHECK(conf_exchange(cn, mr, descs) == 0, "exchange");
	for (i = 0; i < cn->n; i++)
		CONF_CHECK(coh_rmr_import(cn->ep[i], &descs[i], &rmr[i]) == 0, "import %u", i);
	if (cn->id == 2) {
		struct coh_wc wc;
		uint32_t got = 0;

		for (i = 0; i < 32; i++)
			CONF_CHECK(coh_ep_post_recv(cn->ep[i % 2], loc, i * 64, 64, i) == 0, "r");
		CONF_CHECK(conf_barrier(cn) == 0, "start");
		/* Die once traffic is flowing, with receives still posted. */
		while (got < 20) {
			CONF_CHECK(conf_wait1(cn, &wc) == 0, "traffic");
			got++;
		}
		raise(SIGKILL);
		return 1;
	} else {
		uint32_t other = 1 - cn->id, ops = 0, errors = 0;
		struct coh_event ev;
		struct coh_wc wc[32];
		bool down = false, recv_flushed = false;
		int ret;

		CONF_CHECK(coh_ep_post_recv(cn->ep[2], loc, 0, 64, 1000) == 0, "recv from victim");
		CONF_CHECK(conf_barrier(cn) == 0, "start");
		/* Keep posting to the victim until it is seen dead; bounded by count. */
		while (!down && ops < 2000000) {
			CONF_CHECK(coh_ep_post_write(cn->ep[2], loc, 64, rmr[2], 64, 64, ops) ==
					   0 ||
				       !coh_ep_is_up(cn->ep[2]),
				   "post write");
			if (ops % 4 == 0)
				coh_ep_post_send(cn->ep[2], loc, 64, 32, ops);
			ops++;
			ret = coh_cq_wait(cn->data_cq, wc, 32, CONF_TIMEOUT_MS);
			CONF_CHECK(ret > 0, "no completion while the victim dies: %d", ret);
			for (int k = 0; k < ret; k++) {
				if (wc[k].opcode == COH_WC_RECV) {
					CONF_CHECK(wc[k].status == -ECONNRESET, "recv status %d",
						   wc[k].status);
					recv_flushed = true;
				}
				if (wc[k].status) {
					CONF_CHECK(wc[k].peer == 2, "error from node %u",
						   wc[k].peer);
					CONF_CHECK(wc[k].status == -ECONNRESET ||
						       wc[k].status == -ETIMEDOUT ||
						       wc[k].status == -EIO,
						   "status %d", wc[k].status);
					errors++;
					down = true;
				}
			}
		}
		CONF_CHECK(down, "victim never reported down after %u operations", ops);
		CONF_CHECK(coh_fabric_event_get(cn->fab, &ev, CONF_TIMEOUT_MS) == 0,
			   "no PEER_DOWN event");
		CONF_CHECK(ev.type == COH_EVENT_PEER_DOWN && ev.peer == 2, "event %u for %u",
			   ev.type, ev.peer);
		CONF_CHECK(!coh_ep_is_up(cn->ep[2]), "endpoint to the dead node still up");
		/* Drain: the posted receive from the victim must be flushed, every outstanding
		 * operation must complete, and further posts fail in their completion. */
		{
			uint64_t spins = 0;

			CONF_CHECK(coh_ep_post_read(cn->ep[2], loc, 0, rmr[2], 0, 8, 77) == 0,
				   "post to the dead");
			for (;;) {
				ret = coh_cq_wait(cn->data_cq, wc, 32, 200);
				if (ret == -ETIMEDOUT)
					break;
				CONF_CHECK(ret > 0 && spins++ < 100000, "drain %d", ret);
				for (int k = 0; k < ret; k++) {
					if (wc[k].opcode == COH_WC_RECV) {
						CONF_CHECK(wc[k].status == -ECONNRESET,
							   "recv status %d", wc[k].status);
						recv_flushed = true;
					}
					if (wc[k].wr_id == 77)
						CONF_CHECK(wc[k].status != 0, "read from the dead");
				}
			}
			CONF_CHECK(recv_flushed, "receive from the dead node not flushed");
		}
		/* The survivors still talk. */
		CONF_CHECK(coh_ep_write_sync(cn->ep[other], loc, 0, rmr[other], 0, 64) == 0,
			   "survivor write");
		CONF_CHECK(conf_send(cn, other, &errors, 4) == 0, "survivor send");
		CONF_CHECK(conf_recv(cn, other, &errors, NULL, CONF_TIMEOUT_MS) == 0, "recv");
		for (i = 0; i < cn->n; i++)
			coh_rmr_delete(&rmr[i]);
	}
	/* Tear down what points at the dead node; the harness's final barrier needs node 2, so
	 * the survivors finish by themselves. */
	coh_ep_delete(&cn->ep[2]);
	coh_ep_delete(&cn->ctl[2]);
	cn->n = 2;
	coh_mr_delete(&loc);
	coh_mr_delete(&mr);
	return 0;
}

/* A node that closes its fabric cleanly is reported down, with the incarnation it had, and a
 * second process cannot take a node id that is alive. */
int sc_clean_leave(struct conf_node *cn)
{
	if (cn->n < 2)
		return 1;
	if (cn->id == 1) {
		coh_ep_delete(&cn->ep[0]);
		coh_ep_delete(&cn->ep[1]);
		coh_ep_delete(&cn->ctl[0]);
		coh_mr_delete(&cn->ctl_mr);
		coh_cq_delete(&cn->ctl_cq);
		coh_cq_delete(&cn->data_cq);
		CONF_CHECK(coh_fabric_close(&cn->fab) == 0, "close");
		_exit(0);
	}
	if (cn->id == 0) {
		/* Connected before node 1 left: the life the event names. */
		uint64_t inc = coh_ep_peer_incarnation(cn->ep[1]);
		struct coh_event ev;

		CONF_CHECK(inc != 0, "an endpoint that is up names no incarnation of its peer");
		CONF_CHECK(coh_fabric_event_get(cn->fab, &ev, CONF_TIMEOUT_MS) == 0,
			   "no event for a node that left");
		CONF_CHECK(ev.type == COH_EVENT_PEER_DOWN && ev.peer == 1, "event");
		CONF_CHECK(ev.incarnation == inc,
			   "the event's incarnation is not the one the endpoint was connected to");
		CONF_CHECK(coh_fabric_event_get(cn->fab, &ev, 0) == -EAGAIN, "duplicate event");
		CONF_CHECK(!coh_ep_is_up(cn->ep[1]), "still up");
		coh_ep_delete(&cn->ep[1]);
		coh_ep_delete(&cn->ctl[1]);
		cn->n = 1;
	}
	return 0;
}

/* What the owner of a persistent region tells the writer: where it is and what it promises;
 * PMEM_SKIP instead of a mode when the provider cannot make one on this host's backing. */
struct pmem_offer {
	struct coh_mr_desc desc;
	uint32_t persist;
};
#define PMEM_SKIP 0xffffffffu

/* pmem_offer_send - export @mr to node 1, with a receive posted for its "written" message. */
static int pmem_offer_send(struct conf_node *cn, struct coh_mr *mr, struct coh_mr *loc)
{
	struct pmem_offer offer;

	CONF_CHECK(coh_mr_persistence(mr) != COH_PERSIST_NONE, "persistent region in mode NONE");
	CONF_CHECK(coh_ep_post_recv(cn->ep[1], loc, 0, 64, 1) == 0, "recv");
	CONF_CHECK(coh_mr_export(mr, &offer.desc) == 0, "export");
	offer.persist = coh_mr_persistence(mr);
	CONF_CHECK(conf_send(cn, 1, &offer, sizeof(offer)) == 0, "offer");
	return 0;
}

/* pmem_offer_take - import node 0's offer; the importer must see the owner's mode. *@rmrp
 * stays NULL when node 0 skips. */
static int pmem_offer_take(struct conf_node *cn, struct coh_rmr **rmrp)
{
	struct pmem_offer offer;
	uint32_t len;

	CONF_CHECK(conf_recv(cn, 0, &offer, &len, CONF_TIMEOUT_MS) == 0 && len == sizeof(offer),
		   "offer");
	if (offer.persist == PMEM_SKIP)
		return 0;
	CONF_CHECK(coh_rmr_import(cn->ep[0], &offer.desc, rmrp) == 0, "import");
	CONF_CHECK(coh_rmr_persistence(*rmrp) == (enum coh_persist)offer.persist,
		   "importer sees mode %d, owner exported %u", coh_rmr_persistence(*rmrp),
		   offer.persist);
	return 0;
}

/* pmem_write_flush_send - WRITE @seed's pattern over the whole region, FLUSH it, then SEND. */
static int pmem_write_flush_send(struct conf_node *cn, struct coh_rmr *rmr, struct coh_mr *loc,
				 size_t len, uint64_t seed)
{
	struct coh_wc wc;

	fill(coh_mr_addr(loc), len, seed);
	CONF_CHECK(coh_ep_post_write(cn->ep[0], loc, 0, rmr, 0, len, 1) == 0, "write");
	CONF_CHECK(coh_ep_post_flush(cn->ep[0], rmr, 0, len, 2) == 0, "flush");
	CONF_CHECK(coh_ep_post_send(cn->ep[0], loc, 0, 8, 3) == 0, "send");
	CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.wr_id == 1, "write %d",
		   wc.status);
	CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.wr_id == 2 &&
		       wc.opcode == COH_WC_FLUSH,
		   "flush %d", wc.status);
	CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.wr_id == 3, "send %d",
		   wc.status);
	return 0;
}

/* pmem_check - the region holds @seed's pattern, as seen through the owner's own mapping. */
static int pmem_check(struct conf_node *cn, struct coh_mr *mr, size_t len, uint64_t seed)
{
	uint8_t *expect = malloc(len);
	bool same;

	CONF_CHECK(expect, "malloc");
	fill(expect, len, seed);
	same = memcmp(expect, coh_mr_addr(mr), len) == 0;
	free(expect);
	CONF_CHECK(same, "the region does not hold pattern %llu", (unsigned long long)seed);
	return 0;
}

/*
 * Persistent regions. Node 0 makes one in the provider's default place (path NULL); node 1
 * imports it, sees the owner's persistence mode, WRITEs a pattern, FLUSHes and SENDs; when the
 * message arrives node 0 finds the pattern in its own mapping. Then the same on a path node 0
 * names, which it deletes and makes again on the same path: the bytes are still there, in its
 * mapping and, through the new descriptor, for node 1's READ. The path is in $COHORT_PMEM_DIR
 * (default /dev/shm), which the rdma provider also uses for path NULL.
 */
int sc_pmem_region(struct conf_node *cn)
{
	enum {
		LEN = 65536 + 100
	};
	uint32_t rights =
	    COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_FLUSH;
	const char *dir = getenv("COHORT_PMEM_DIR");
	struct coh_mr *mr = NULL, *loc;
	struct coh_rmr *rmr = NULL;
	struct coh_wc wc;
	char path[256];
	uint8_t token = 1;

	if (cn->n < 2)
		return 1;
	CONF_CHECK(coh_mr_new(cn->fab, LEN, COH_ACCESS_LOCAL_WRITE, &loc) == 0, "loc");
	snprintf(path, sizeof(path), "%s/cohort-conf-pmem-%d", dir && dir[0] ? dir : "/dev/shm",
		 (int)getpid());
	if (cn->id == 0) {
		int ret = coh_mr_new_pmem(cn->fab, NULL, LEN, rights, &mr);

		/* rdma cannot register every backing: not a file of a DAX file system, which is
		 * what $COHORT_PMEM_DIR is in the VM rig's fsdax mode (docs/fabric.md). */
		if (ret == -EOPNOTSUPP || ret == -EFAULT) {
			struct pmem_offer skip = { .persist = PMEM_SKIP };

			fprintf(stderr,
				"node 0: %s cannot register a persistent region in %s: %s; "
				"skipped\n",
				cn->provider, dir && dir[0] ? dir : "/dev/shm", strerror(-ret));
			CONF_CHECK(conf_send(cn, 1, &skip, sizeof(skip)) == 0, "skip");
			goto out;
		}
		CONF_CHECK(ret == 0, "pmem, no path: %d", ret);
		CONF_CHECK(pmem_offer_send(cn, mr, loc) == 0, "offer 1");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.opcode == COH_WC_RECV,
			   "written 1");
		CONF_CHECK(pmem_check(cn, mr, LEN, 11) == 0, "pattern 1");
		CONF_CHECK(coh_mr_delete(&mr) == 0, "delete 1");

		unlink(path);
		CONF_CHECK(coh_mr_new_pmem(cn->fab, path, LEN, rights, &mr) == 0, "pmem %s", path);
		CONF_CHECK(pmem_offer_send(cn, mr, loc) == 0, "offer 2");
		CONF_CHECK(conf_wait1(cn, &wc) == 0 && wc.status == 0 && wc.opcode == COH_WC_RECV,
			   "written 2");
		CONF_CHECK(coh_mr_delete(&mr) == 0, "delete 2");
		CONF_CHECK(coh_mr_new_pmem(cn->fab, path, LEN, rights, &mr) == 0, "pmem again");
		CONF_CHECK(pmem_check(cn, mr, LEN, 12) == 0, "pattern 2 after delete and create");
		CONF_CHECK(pmem_offer_send(cn, mr, loc) == 0, "offer 3");
		CONF_CHECK(conf_recv(cn, 1, &token, NULL, CONF_TIMEOUT_MS) == 0, "read back");
		CONF_CHECK(coh_mr_delete(&mr) == 0, "delete 3");
		CONF_CHECK(unlink(path) == 0, "the file at the path is kept by delete");
	} else if (cn->id == 1) {
		CONF_CHECK(pmem_offer_take(cn, &rmr) == 0, "take 1");
		if (!rmr)
			goto out;
		CONF_CHECK(pmem_write_flush_send(cn, rmr, loc, LEN, 11) == 0, "write 1");
		coh_rmr_delete(&rmr);

		CONF_CHECK(pmem_offer_take(cn, &rmr) == 0, "take 2");
		CONF_CHECK(pmem_write_flush_send(cn, rmr, loc, LEN, 12) == 0, "write 2");
		coh_rmr_delete(&rmr);

		CONF_CHECK(pmem_offer_take(cn, &rmr) == 0, "take 3");
		memset(coh_mr_addr(loc), 0, LEN);
		CONF_CHECK(coh_ep_read_sync(cn->ep[0], loc, 0, rmr, 0, LEN) == 0, "read");
		CONF_CHECK(pmem_check(cn, loc, LEN, 12) == 0, "read back after delete and create");
		coh_rmr_delete(&rmr);
		CONF_CHECK(conf_send(cn, 0, &token, 1) == 0, "read back");
	}
out:
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_mr_delete(&loc);
	return 0;
}

/* coh_cq_wake: a wait on an idle queue, with a bound far beyond the test's, returns -EINTR when
 * another thread wakes it; a wake before a wait ends that wait at once; one wake ends one wait. */
struct wake_arg {
	struct coh_cq *cq;
	_Atomic int ret;
	_Atomic int started;
};

static void *wake_waiter(void *p)
{
	struct wake_arg *a = p;
	struct coh_wc wc;

	atomic_store(&a->started, 1);
	atomic_store(&a->ret, coh_cq_wait(a->cq, &wc, 1, 60000));
	return NULL;
}

int sc_cq_wake(struct conf_node *cn)
{
	struct coh_cq *cq = NULL;
	struct coh_wc wc;
	int round;

	if (cn->id != 0)
		return 0;
	CONF_CHECK(coh_cq_wake(NULL) == -EINVAL, "wake NULL");
	CONF_CHECK(coh_cq_new(cn->fab, 16, &cq) == 0, "cq");
	CONF_CHECK(coh_cq_wake(cq) == 0, "wake");
	CONF_CHECK(coh_cq_wait(cq, &wc, 1, 0) == -EINTR, "a wake before the wait");
	CONF_CHECK(coh_cq_wait(cq, &wc, 1, 0) == -EAGAIN, "one wake ended two waits");
	for (round = 0; round < 20; round++) {
		struct wake_arg a = { .cq = cq, .ret = 1 };
		pthread_t t;

		CONF_CHECK(pthread_create(&t, NULL, wake_waiter, &a) == 0, "thread");
		while (!atomic_load(&a.started))
			sched_yield();
		/* Whether the waiter is still spinning, asleep, or not yet in the wait, the wake
		 * ends it: -ETIMEDOUT (after a minute) would be the failure. */
		CONF_CHECK(coh_cq_wake(cq) == 0, "wake %d", round);
		pthread_join(t, NULL);
		CONF_CHECK(atomic_load(&a.ret) == -EINTR, "round %d: the wait returned %d", round,
			   atomic_load(&a.ret));
	}
	coh_cq_delete(&cq);
	return 0;
}
