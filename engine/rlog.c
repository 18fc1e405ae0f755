/*
 * rlog.c - the replication log (layout in rlog.h): the record codec, the scan a survivor runs
 * over a dead writer's region, and the writer, which appends records to its peers' regions with
 * one-sided WRITEs, makes them persistent with FLUSH before it returns, retires them in place once
 * their blocks are destaged, and advances the tail so that the space is used again.
 *
 * A full log is back-pressure, never loss: the writer asks its owner to destage (which retires
 * records) and waits, bounded, for room. Records are retired only after the destage that makes
 * them redundant is complete, and a retirement is persistent on the peers before the caller goes
 * on (in particular, before a lock is handed to another node), so that a survivor never replays
 * a block over a newer write by someone else.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <isa-l/crc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cohort/log.h"
#include "node_internal.h" /* node_realtime_in */
#include "rlog.h"

/* Codec. Offsets in the 64-byte record header. */
enum {
	R_MAGIC = 0,
	R_CRC = 4,
	R_LSN = 8,
	R_EPOCH = 16,
	R_WRITER = 20,
	R_TYPE = 22,
	R_STEP = 23,
	R_ADDR = 24,
	R_LEN = 32,
	R_GEN = 36,
	R_CRC_END = 56, /* the CRC covers [R_LSN, R_CRC_END) and the payload */
	R_STATE = 56,
};

static void put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}
static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}
static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}
static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}
static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static uint32_t rec_crc(const uint8_t *hdr, const uint8_t *payload, uint32_t len)
{
	uint32_t crc = crc32_iscsi((unsigned char *)hdr + R_LSN, R_CRC_END - R_LSN, 0);

	return len ? crc32_iscsi((unsigned char *)payload, (int)len, crc) : crc;
}

void rlog_rec_encode(uint8_t *dst, const struct rlog_rec *r, const void *payload)
{
	uint32_t size = rlog_rec_size(r->len);

	memset(dst, 0, RLOG_ALIGN);
	put32(dst + R_MAGIC, RLOG_REC_MAGIC);
	put64(dst + R_LSN, r->lsn);
	put32(dst + R_EPOCH, r->epoch);
	put16(dst + R_WRITER, r->writer);
	dst[R_TYPE] = r->type;
	dst[R_STEP] = r->step;
	put64(dst + R_ADDR, r->addr);
	put32(dst + R_LEN, r->len);
	put32(dst + R_GEN, r->gen);
	put64(dst + R_STATE, r->state);
	if (r->len)
		memcpy(dst + RLOG_ALIGN, payload, r->len);
	if (size > RLOG_ALIGN + r->len)
		memset(dst + RLOG_ALIGN + r->len, 0, size - RLOG_ALIGN - r->len);
	put32(dst + R_CRC, rec_crc(dst, dst + RLOG_ALIGN, r->len));
}

int rlog_rec_decode(const uint8_t *src, size_t avail, struct rlog_rec *r)
{
	if (avail < RLOG_ALIGN || get32(src + R_MAGIC) != RLOG_REC_MAGIC)
		return -ENODATA;
	r->lsn = get64(src + R_LSN);
	r->epoch = get32(src + R_EPOCH);
	r->writer = get16(src + R_WRITER);
	r->type = src[R_TYPE];
	r->step = src[R_STEP];
	r->addr = get64(src + R_ADDR);
	r->len = get32(src + R_LEN);
	r->gen = get32(src + R_GEN);
	r->state = get64(src + R_STATE);
	if ((r->type != RLOG_DATA && r->type != RLOG_WRAP) || r->len > RLOG_MAX_PAYLOAD ||
	    rlog_rec_size(r->len) > avail || (r->type != RLOG_DATA && r->len) ||
	    (r->state && r->state != RLOG_RETIRED && r->state != RLOG_ABANDONED))
		return -EPROTO;
	if (get32(src + R_CRC) != rec_crc(src, src + RLOG_ALIGN, r->len))
		return -EBADMSG;
	return 0;
}

/* Region header: magic, writer, generation, tail offset and LSN, CRC of the first 32 bytes. */
void rlog_region_hdr_encode(uint8_t *dst, uint16_t writer, uint32_t gen, uint64_t tail_off,
			    uint64_t tail_lsn)
{
	memset(dst, 0, RLOG_HDR);
	put32(dst, RLOG_REGION_MAGIC);
	put16(dst + 4, writer);
	put32(dst + 8, gen);
	put64(dst + 16, tail_off);
	put64(dst + 24, tail_lsn);
	put32(dst + 32, crc32_iscsi(dst, 32, 0));
}

int rlog_region_hdr_decode(const uint8_t *src, uint16_t *writer, uint32_t *gen, uint64_t *tail_off,
			   uint64_t *tail_lsn)
{
	if (get32(src) != RLOG_REGION_MAGIC)
		return -ENODATA;
	if (get32(src + 32) != crc32_iscsi((unsigned char *)src, 32, 0))
		return -EBADMSG;
	*writer = get16(src + 4);
	*gen = get32(src + 8);
	*tail_off = get64(src + 16);
	*tail_lsn = get64(src + 24);
	return 0;
}

/* Scan. */

/* find_next - the valid record of this generation with the smallest LSN from @lsn on. */
static int find_next(const uint8_t *region, size_t len, uint32_t gen, uint64_t lsn,
		     uint64_t *off_out, struct rlog_rec *out)
{
	uint64_t off, best = UINT64_MAX;
	struct rlog_rec r;

	for (off = RLOG_RING; off + RLOG_ALIGN <= len; off += RLOG_ALIGN) {
		if (rlog_rec_decode(region + off, len - off, &r) || r.gen != gen || r.lsn < lsn ||
		    r.lsn >= best)
			continue;
		best = r.lsn;
		*off_out = off;
		*out = r;
	}
	return best == UINT64_MAX ? -ENOENT : 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i])
			return false;
	}
	return true;
}

/*
 * scan_walk - the records of the region in log order from the tail (@off, @expect) of generation
 * @gen: every valid DATA record goes to @each, whatever its state. Corrupt records are skipped
 * (logged unless @quiet) and counted, a torn end counted, in @st. Bounded by the region's size.
 */
static int scan_walk(const uint8_t *region, size_t len, uint16_t writer, uint32_t gen, uint64_t off,
		     uint64_t expect, bool quiet, rlog_visit_fn each, void *arg,
		     struct rlog_scan_stats *st)
{
	uint64_t steps, max_steps = len / RLOG_ALIGN + 2;
	int ret;

	for (steps = 0; steps < max_steps; steps++) {
		struct rlog_rec r;

		if (off + RLOG_ALIGN > len)
			off = RLOG_RING;
		ret = rlog_rec_decode(region + off, len - off, &r);
		if (!ret && (r.gen != gen || r.lsn != expect || r.writer != writer))
			ret = -ESTALE;
		if (ret) {
			uint64_t noff;
			struct rlog_rec n;

			if (find_next(region, len, gen, expect, &noff, &n) || noff == off) {
				/* The end of the log. An invalid record here was being written
				 * when the writer died: it was never acknowledged. */
				if (ret == -EBADMSG ||
				    (ret == -EPROTO && !all_zero(region + off, RLOG_ALIGN)))
					st->torn++;
				return 0;
			}
			if (n.lsn == expect) { /* it is elsewhere: go on from there */
				off = noff;
				continue;
			}
			if (!quiet)
				COH_LOG_ERR(
				    "rlog: writer %u: records %llu..%llu at offset %llu are "
				    "corrupt (%s); skipped, never replayed",
				    writer, (unsigned long long)expect,
				    (unsigned long long)(n.lsn - 1), (unsigned long long)off,
				    coh_strerror(ret));
			st->corrupt += n.lsn - expect;
			off = noff;
			expect = n.lsn;
			continue;
		}
		if (r.type == RLOG_WRAP) {
			off = RLOG_RING;
			expect++;
			continue;
		}
		ret = each(arg, &r, region + off + RLOG_ALIGN);
		if (ret)
			return ret;
		off += rlog_rec_size(r.len);
		expect++;
	}
	return 0;
}

/*
 * Supersession. A rewrite does not retire the record it supersedes (that would be a second
 * round trip on the write path): the scan resolves it by sequence. Of the valid records of a
 * block past the tail, only the newest counts; an older live one is superseded, whether the
 * newest is live (replayed instead) or retired (its destage wrote the block, maybe someone's
 * newer write since). An abandoned record (an append that failed and was never acknowledged)
 * supersedes nothing. The tail passes a superseded record only once its superseder is
 * persistent on the peers, so a superseded record past the tail always has its superseder
 * there too.
 */
struct scan_newest {
	struct scan_key {
		uint64_t lba, lsn;
	} * keys;
	size_t count, cap;
	struct rlog_scan_stats *st;
	rlog_visit_fn fn;
	void *arg;
};

static int scan_key_cmp(const void *a, const void *b)
{
	const struct scan_key *x = a, *y = b;

	if (x->lba != y->lba)
		return x->lba < y->lba ? -1 : 1;
	return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

static int scan_collect(void *arg, const struct rlog_rec *r, const uint8_t *payload)
{
	struct scan_newest *sn = arg;

	(void)payload;
	if (r->state == RLOG_ABANDONED || sn->count == sn->cap)
		return 0;
	sn->keys[sn->count].lba = r->addr;
	sn->keys[sn->count].lsn = r->lsn;
	sn->count++;
	return 0;
}

/* scan_newest_lsn - the newest LSN of block @lba among the collected records (0: none). */
static uint64_t scan_newest_lsn(const struct scan_newest *sn, uint64_t lba)
{
	size_t lo = 0, hi = sn->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (sn->keys[mid].lba < lba)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < sn->count && sn->keys[lo].lba == lba ? sn->keys[lo].lsn : 0;
}

static int scan_visit(void *arg, const struct rlog_rec *r, const uint8_t *payload)
{
	struct scan_newest *sn = arg;

	if (r->state == RLOG_RETIRED) {
		sn->st->retired++;
		return 0;
	}
	if (r->state == RLOG_ABANDONED) {
		sn->st->abandoned++;
		return 0;
	}
	if (scan_newest_lsn(sn, r->addr) > r->lsn) {
		sn->st->superseded++;
		return 0;
	}
	sn->st->live++;
	return sn->fn ? sn->fn(sn->arg, r, payload) : 0;
}

int rlog_scan(const uint8_t *region, size_t len, uint16_t writer, rlog_visit_fn fn, void *arg,
	      struct rlog_scan_stats *st)
{
	struct scan_newest sn = { .st = st, .fn = fn, .arg = arg };
	struct rlog_scan_stats first = { 0 };
	uint64_t off, expect;
	size_t i, j;
	uint32_t gen;
	uint16_t w;
	int ret;

	memset(st, 0, sizeof(*st));
	if (len < RLOG_RING + RLOG_ALIGN)
		return -EINVAL;
	ret = rlog_region_hdr_decode(region, &w, &gen, &off, &expect);
	if (ret == -ENODATA && all_zero(region, RLOG_HDR))
		return 0; /* never written */
	if (ret) {
		COH_LOG_ERR("rlog: region of writer %u: bad header (%s)", writer,
			    coh_strerror(ret));
		return -EPROTO;
	}
	if (w != writer || off < RLOG_RING || off >= len || off % RLOG_ALIGN) {
		COH_LOG_ERR("rlog: region of writer %u: header names writer %u, tail %llu", writer,
			    w, (unsigned long long)off);
		return -EPROTO;
	}
	/* Two walks over the same bytes: the newest record of each block, then the visits. */
	sn.cap = (len - RLOG_RING) / RLOG_ALIGN;
	sn.keys = malloc(sn.cap * sizeof(*sn.keys));
	if (!sn.keys)
		return -ENOMEM;
	ret = scan_walk(region, len, writer, gen, off, expect, true, scan_collect, &sn, &first);
	if (!ret) {
		qsort(sn.keys, sn.count, sizeof(*sn.keys), scan_key_cmp);
		/* Keep the newest of each block: the last of its run. */
		for (i = 0, j = 0; i < sn.count; i++) {
			if (i + 1 < sn.count && sn.keys[i + 1].lba == sn.keys[i].lba)
				continue;
			sn.keys[j++] = sn.keys[i];
		}
		sn.count = j;
		ret = scan_walk(region, len, writer, gen, off, expect, false, scan_visit, &sn, st);
	}
	free(sn.keys);
	return ret;
}

/* The live table: lba -> LSN of the newest live DATA record; open addressing, linear probing,
 * deletion by backward shift. Its size bounds the records the ring can hold. */
struct rlog_live {
	uint64_t cap, count;
	struct {
		uint64_t lba, lsn; /* lsn 0: empty */
	} e[];
};

static uint64_t live_hash(uint64_t lba, uint64_t cap)
{
	return (lba * 0x9e3779b97f4a7c15ull) >> 17 & (cap - 1);
}

static uint64_t *live_find(struct rlog_live *t, uint64_t lba)
{
	uint64_t i = live_hash(lba, t->cap), n;

	for (n = 0; n < t->cap && t->e[i].lsn; n++, i = (i + 1) & (t->cap - 1)) {
		if (t->e[i].lba == lba)
			return &t->e[i].lsn;
	}
	return NULL;
}

static int live_put(struct rlog_live *t, uint64_t lba, uint64_t lsn)
{
	uint64_t i = live_hash(lba, t->cap), n;

	for (n = 0; n < t->cap; n++, i = (i + 1) & (t->cap - 1)) {
		if (!t->e[i].lsn || t->e[i].lba == lba) {
			if (!t->e[i].lsn)
				t->count++;
			t->e[i].lba = lba;
			t->e[i].lsn = lsn;
			return 0;
		}
	}
	return -ENOSPC;
}

static void live_del(struct rlog_live *t, uint64_t lba)
{
	uint64_t i = live_hash(lba, t->cap), j, h, n;

	for (n = 0; n < t->cap && t->e[i].lsn; n++, i = (i + 1) & (t->cap - 1)) {
		if (t->e[i].lba == lba)
			break;
	}
	if (n == t->cap || !t->e[i].lsn)
		return;
	t->e[i].lsn = 0;
	t->count--;
	/* Backward shift: move later members of the cluster into the hole when their home is
	 * not between the hole and them. */
	for (j = (i + 1) & (t->cap - 1); t->e[j].lsn; j = (j + 1) & (t->cap - 1)) {
		h = live_hash(t->e[j].lba, t->cap);
		if (((j - h) & (t->cap - 1)) >= ((j - i) & (t->cap - 1))) {
			t->e[i] = t->e[j];
			t->e[j].lsn = 0;
			i = j;
		}
	}
}

/* The writer. */

#define STAGE_RECS 64u /* records staged per batch */

/* now_ms - the clock of the writer's deadlines: the coarse one, a few ns where the precise one
 * costs 45 ns in a VM, and read several times per append; its 1-4 ms tick is noise against
 * deadlines of seconds. */
static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int rlog_writer_init(struct rlog_writer *w, struct coh_fabric *fab, uint32_t bsize,
		     size_t region_len, uint32_t timeout_ms, rlog_reclaim_fn reclaim,
		     rlog_point_fn point, void *arg)
{
	uint64_t cap = 1;
	int ret;

	memset(w, 0, sizeof(*w));
	if (region_len < RLOG_RING + 4 * rlog_rec_size(bsize) || region_len % RLOG_ALIGN)
		return -EINVAL;
	w->fab = fab;
	w->me = coh_fabric_node_id(fab);
	w->bsize = bsize;
	w->region_len = region_len;
	w->timeout_ms = timeout_ms;
	w->reclaim = reclaim;
	w->point = point;
	w->arg = arg;
	w->ent_cap = (uint32_t)(region_len / RLOG_ALIGN);
	w->ents = calloc(w->ent_cap, sizeof(*w->ents));
	while (cap < 2ull * w->ent_cap)
		cap <<= 1;
	w->live = calloc(1, sizeof(*w->live) + cap * sizeof(w->live->e[0]));
	if (!w->ents || !w->live) {
		ret = -ENOMEM;
		goto err_free;
	}
	w->live->cap = cap;
	w->stage_len = (size_t)STAGE_RECS * rlog_rec_size(bsize) + 2 * RLOG_HDR;
	ret = coh_mr_new(fab, w->stage_len, COH_ACCESS_LOCAL_WRITE, &w->stage);
	if (ret)
		goto err_free;
	ret = coh_cq_new(fab, 4 * RLOG_MAX_PEERS * 64, &w->cq);
	if (ret)
		goto err_stage;
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->gc_lock, NULL);
	pthread_mutex_init(&w->kept_retry, NULL);
	pthread_cond_init(&w->gc_cond, NULL);
	w->next_lsn = w->tail_lsn = 1;
	w->head_off = w->tail_off = RLOG_RING;
	return 0;

err_stage:
	coh_mr_delete(&w->stage);
err_free:
	free(w->ents);
	free(w->live);
	return ret;
}

void rlog_writer_fini(struct rlog_writer *w)
{
	uint32_t p;

	if (!w->ents)
		return;
	for (p = 0; p < RLOG_MAX_PEERS; p++) {
		coh_rmr_delete(&w->rmr[p]);
		coh_ep_delete(&w->ep[p]);
	}
	coh_cq_delete(&w->cq);
	coh_mr_delete(&w->stage);
	free(w->ents);
	free(w->live);
	pthread_mutex_destroy(&w->lock);
	pthread_mutex_destroy(&w->gc_lock);
	pthread_mutex_destroy(&w->kept_retry);
	pthread_cond_destroy(&w->gc_cond);
	w->ents = NULL;
}

/* Posting to the peers. Each batch posts to every current peer and waits for every completion;
 * a peer whose operation fails is counted and left out of the rest of the batch. */

/* Each batch's operations carry its sequence number as wr_id: a wait that gave up (it timed
 * out) leaves its operations out, and their late completions must count neither as the next
 * batch's (a FLUSH posted before its WRITE completed covers nothing) nor against it. */
struct batch {
	uint32_t ok; /* peers still good */
	uint32_t posted;
	uint32_t timedout; /* peers an operation timed out on (the transport's retries) */
	uint64_t seq;
	int err;
	uint16_t out[RLOG_MAX_PEERS]; /* operations posted to each peer and not completed */
};

static int batch_wait(struct rlog_writer *w, struct batch *b)
{
	uint64_t deadline = now_ms() + w->timeout_ms;
	uint32_t p;

	while (b->posted) {
		struct coh_wc wc[16];
		int n, i;
		uint64_t now = now_ms();

		if (now >= deadline)
			goto timedout;
		n = coh_cq_wait(w->cq, wc, 16, (int)(deadline - now));
		if (n == -ETIMEDOUT)
			goto timedout;
		if (n < 0)
			return n;
		for (i = 0; i < n; i++) {
			if (wc[i].wr_id != b->seq) {
				/* Late: an operation of a batch whose wait timed out. */
				w->stale++;
				continue;
			}
			b->posted--;
			if (wc[i].peer < RLOG_MAX_PEERS && b->out[wc[i].peer])
				b->out[wc[i].peer]--;
			if (wc[i].status == -ETIMEDOUT && wc[i].peer < RLOG_MAX_PEERS)
				b->timedout |= 1u << wc[i].peer;
			if (wc[i].status) {
				if (b->ok >> wc[i].peer & 1)
					w->peer_errors++;
				b->ok &= ~(1u << wc[i].peer);
				if (!b->err)
					b->err = wc[i].status;
			}
		}
	}
	return 0;
timedout:
	for (p = 0; p < RLOG_MAX_PEERS; p++) {
		if (b->out[p])
			b->timedout |= 1u << p;
	}
	return -ETIMEDOUT;
}

static void batch_post(struct rlog_writer *w, struct batch *b, uint32_t p, int ret)
{
	if (ret) {
		b->ok &= ~(1u << p);
		if (!b->err)
			b->err = ret;
		w->peer_errors++;
	} else {
		b->posted++;
		b->out[p]++;
	}
}

/*
 * batch_skip - whether to post nothing to @p in this round: an operation to it timed out (the
 * transport gave up on it: a partition, or a peer that takes nothing) less than a timeout ago.
 * Each round to it would wait as long and fail the same way, with the log's lock held, and a
 * destage holds it across several rounds. After a timeout a round tries the peer again.
 */
static bool batch_skip(struct rlog_writer *w, uint32_t p)
{
	return (w->unreach >> p & 1) && now_ms() - w->unreach_ms[p] < w->timeout_ms;
}

/* batch_note - after a round: which peers timed out, which answered. */
static void batch_note(struct rlog_writer *w, const struct batch *b)
{
	uint32_t p;

	for (p = 0; p < RLOG_MAX_PEERS; p++) {
		if (b->timedout >> p & 1) {
			if (!(w->unreach >> p & 1))
				COH_LOG_WARN(
				    "node %u: log copy on node %u timed out; rounds skip it "
				    "for a timeout",
				    w->me, p);
			w->unreach |= 1u << p;
			w->unreach_ms[p] = now_ms();
		} else if (b->ok >> p & 1) {
			w->unreach &= ~(1u << p);
		}
	}
}

/* batch_end - enough copies? At least min(k, peers) of the peers must have taken it all. */
static int batch_end(struct rlog_writer *w, struct batch *b)
{
	uint32_t want = (uint32_t)__builtin_popcount(w->peers);

	if (want > w->k)
		want = w->k;
	if ((uint32_t)__builtin_popcount(b->ok) >= want)
		return 0;
	return b->err ? b->err : -EIO;
}

/* put_ranges - WRITE @n ranges of the stage to every peer, wait, then FLUSH them, wait. */
static int put_ranges(struct rlog_writer *w, const uint64_t *loff, const uint64_t *roff,
		      const uint32_t *len, uint32_t n)
{
	struct batch b = { .ok = w->peers, .seq = ++w->batch_seq };
	uint32_t p, i;
	int ret;

	if (!w->peers)
		return 0;
	for (p = 0; p < RLOG_MAX_PEERS; p++) {
		if (!(b.ok >> p & 1))
			continue;
		if (batch_skip(w, p)) {
			batch_post(w, &b, p, -ETIMEDOUT);
			continue;
		}
		for (i = 0; i < n && (b.ok >> p & 1); i++)
			batch_post(w, &b, p,
				   coh_ep_post_write(w->ep[p], w->stage, loff[i], w->rmr[p],
						     roff[i], len[i], b.seq));
	}
	ret = batch_wait(w, &b);
	if (ret) {
		batch_note(w, &b);
		return ret;
	}
	/* The contract of FLUSH covers WRITEs that completed before it was posted. */
	for (p = 0; p < RLOG_MAX_PEERS; p++) {
		if (!(b.ok >> p & 1))
			continue;
		for (i = 0; i < n && (b.ok >> p & 1); i++)
			batch_post(w, &b, p,
				   coh_ep_post_flush(w->ep[p], w->rmr[p], roff[i], len[i], b.seq));
	}
	ret = batch_wait(w, &b);
	batch_note(w, &b);
	if (ret)
		return ret;
	return batch_end(w, &b);
}

static uint64_t region_room(const struct rlog_writer *w)
{
	return w->region_len - RLOG_RING - w->used;
}

/* ent_of - the FIFO entry of a record still before the tail, by LSN. */
static struct rlog_ent *ent_of(struct rlog_writer *w, uint64_t lsn)
{
	uint64_t first;

	if (!w->ent_count)
		return NULL;
	first = w->ents[w->ent_head].lsn;
	if (lsn < first || lsn - first >= w->ent_count)
		return NULL;
	return &w->ents[(w->ent_head + (lsn - first)) % w->ent_cap];
}

static void ent_push(struct rlog_writer *w, uint64_t off, uint32_t size, uint64_t lsn, uint64_t lba,
		     bool data, bool retired)
{
	struct rlog_ent *e = &w->ents[(w->ent_head + w->ent_count) % w->ent_cap];

	e->off = off;
	e->size = size;
	e->lsn = lsn;
	e->lba = lba;
	e->prev = 0;
	e->data = data;
	e->retired = retired;
	e->sup = false;
	w->ent_count++;
	RLOG_STAT(w, used, size);
}

/* span - bytes @n records of @rsize take from the head, with the end of the ring a wrap wastes. */
static uint64_t span(const struct rlog_writer *w, uint32_t rsize, uint32_t n)
{
	uint64_t h = w->head_off, total = 0;
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (h + rsize > w->region_len) {
			total += w->region_len - h;
			h = RLOG_RING;
		}
		h += rsize;
		total += rsize;
	}
	return total;
}

/*
 * tail_prefix - the records at the head of the FIFO that are done here (retired, superseded,
 * wrap padding): how many, and where the tail goes past them (*@off, *@lsn).
 */
static uint32_t tail_prefix(const struct rlog_writer *w, uint64_t *off, uint64_t *lsn)
{
	uint32_t i;

	for (i = 0; i < w->ent_count && w->ents[(w->ent_head + i) % w->ent_cap].retired; i++)
		;
	if (i < w->ent_count) {
		const struct rlog_ent *e = &w->ents[(w->ent_head + i) % w->ent_cap];

		*off = e->off;
		*lsn = e->lsn;
	} else {
		*off = w->head_off;
		*lsn = w->next_lsn;
	}
	return i;
}

/* tail_pop - the region header naming the tail (*@off, *@lsn) is persistent on the peers: the
 * @np records before it are space again. */
static void tail_pop(struct rlog_writer *w, uint32_t np, uint64_t off, uint64_t lsn)
{
	while (np--) {
		__atomic_sub_fetch(&w->used, w->ents[w->ent_head].size, __ATOMIC_RELAXED);
		w->ent_head = (w->ent_head + 1) % w->ent_cap;
		w->ent_count--;
	}
	w->tail_off = off;
	w->tail_lsn = lsn;
}

/* tail_advance - write the region header past the done records at the FIFO's head, alone: a
 * full ring whose oldest records are superseded gets its space back without a destage. */
static int tail_advance(struct rlog_writer *w, uint32_t np, uint64_t off, uint64_t lsn)
{
	uint64_t loff = 0, roff = 0;
	uint32_t len = RLOG_HDR;
	int ret;

	rlog_region_hdr_encode(coh_mr_addr(w->stage), (uint16_t)w->me, w->gen, off, lsn);
	ret = put_ranges(w, &loff, &roff, &len, 1);
	if (!ret)
		tail_pop(w, np, off, lsn);
	return ret;
}

/*
 * append - stage @n DATA records, of blocks @lbas[i] with data @payloads[i], and put them on the
 * peers in one round trip; their LSNs go to @lsns. The caller holds the lock. Room is made first
 * (back-pressure) with the lock dropped while the owner destages.
 */
static int append(struct rlog_writer *w, uint32_t n, const uint64_t *lbas,
		  const uint8_t *const *payloads, uint64_t *lsns)
{
	uint32_t plen = w->bsize, rsize = rlog_rec_size(plen), i, nr = 0, np;
	uint64_t deadline = now_ms() + w->timeout_ms, loff[3], roff[3], toff, tlsn;
	uint8_t *st = coh_mr_addr(w->stage);
	uint32_t len[3];
	size_t so = 0;
	int ret;

	if (n > STAGE_RECS || !n)
		return -EINVAL;
	if ((uint64_t)rsize * n + rsize > w->region_len - RLOG_RING)
		return -ENOSPC; /* could never fit */
	while (region_room(w) < span(w, rsize, n)) {
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		if (!w->ent_count)
			return -ENOSPC; /* empty and still no room: cannot happen, see above */
		np = tail_prefix(w, &toff, &tlsn);
		if (np) {
			ret = tail_advance(w, np, toff, tlsn);
			if (ret)
				return ret;
			continue;
		}
		RLOG_STAT(w, backpressure, 1);
		pthread_mutex_unlock(&w->lock);
		ret = w->reclaim ? w->reclaim(w->arg) : -ENOSPC;
		pthread_mutex_lock(&w->lock);
		if (ret)
			return ret;
	}
	/* Once the ring is half used, the tail moves past what is done at the FIFO's head in the
	 * same round trip (those records' superseders are already persistent: rlog_append_data
	 * marks them only then). Not before: the header is one more WRITE and FLUSH per peer, and
	 * the walk to find the tail is paid once per half ring, not once per append. */
	np = 2 * w->used > w->region_len - RLOG_RING ? tail_prefix(w, &toff, &tlsn) : 0;
	loff[0] = 0;
	roff[0] = w->head_off;
	for (i = 0; i < n; i++) {
		struct rlog_rec r = { .epoch = w->epoch,
				      .writer = (uint16_t)w->me,
				      .type = RLOG_DATA,
				      .addr = lbas[i],
				      .len = plen,
				      .gen = w->gen };

		if (w->head_off + rsize > w->region_len) {
			/* Wrap. Where the rest of the ring holds a header, a WRAP record says so
			 * (a scan follows it); the rest counts as used until the tail passes. */
			uint32_t rest = (uint32_t)(w->region_len - w->head_off);

			if (rest) {
				struct rlog_rec wr = { .lsn = w->next_lsn++,
						       .epoch = w->epoch,
						       .writer = (uint16_t)w->me,
						       .type = RLOG_WRAP,
						       .gen = w->gen };

				rlog_rec_encode(st + so, &wr, NULL);
				so += RLOG_ALIGN;
				ent_push(w, w->head_off, rest, wr.lsn, 0, false, true);
			}
			if (so > loff[nr]) {
				len[nr] = (uint32_t)(so - loff[nr]);
				nr++;
			}
			w->head_off = RLOG_RING;
			loff[nr] = so;
			roff[nr] = w->head_off;
		}
		r.lsn = w->next_lsn++;
		lsns[i] = r.lsn;
		rlog_rec_encode(st + so, &r, payloads[i]);
		so += rsize;
		ent_push(w, w->head_off, rsize, r.lsn, r.addr, true, false);
		w->head_off += rsize;
	}
	len[nr] = (uint32_t)(so - loff[nr]);
	nr++;
	if (np) {
		rlog_region_hdr_encode(st + so, (uint16_t)w->me, w->gen, toff, tlsn);
		loff[nr] = so;
		roff[nr] = 0;
		len[nr++] = RLOG_HDR;
	}
	ret = put_ranges(w, loff, roff, len, nr);
	for (i = 0; i < n; i++)
		if (ret)
			return ret;
	if (np)
		tail_pop(w, np, toff, tlsn);
	RLOG_STAT(w, appended, n);
	w->bytes += so;
	/* Past the high watermark: the owner destages the oldest blocks in the background, so
	 * that a later append finds room instead of waiting for a full reclaim. */
	if (w->kick && w->kick_above && w->used > w->kick_above)
		w->kick(w->arg);
	return 0;
}

/* ent_on_peers - @e is still live on the peers: not retired, or retired here only because a
 * newer record superseded it (the scan resolves it by sequence; no mark was written). */
static bool ent_on_peers(const struct rlog_ent *e)
{
	return e && (!e->retired || e->sup);
}

/* retire_now - set the state word of the given records on the peers to @state (RLOG_RETIRED
 * after a destage, RLOG_ABANDONED for an append that failed), advance the tail over the done
 * records, and write the region header; all persistent when it returns 0. A retirement that
 * fails is undone here (RLOG_RETIRED): the records may still be live on a peer, so they stay
 * live here too, and the destage that asked fails and is done again. Marked done here regardless,
 * the retry would find nothing to retire, succeed, and the lock could move on with the records
 * live on a peer, where a replay after a crash puts them back over a later write (the lost write
 * of lifecycle.whole_cluster_crash__at_each_crash_point). An abandoned append stays done: it is
 * best effort, on the peers still up, and nothing else would ever let the tail pass it. */
static int retire_now(struct rlog_writer *w, const uint64_t *lsns, uint32_t n, uint64_t state)
{
	uint8_t *st = coh_mr_addr(w->stage);
	uint64_t loff[STAGE_RECS + 1], roff[STAGE_RECS + 1];
	uint32_t len[STAGE_RECS + 1], i, m = 0, half, np;
	struct rlog_ent *marked[STAGE_RECS];
	bool was_sup[STAGE_RECS];
	uint64_t toff, tlsn;
	size_t so = 0;
	int ret;

	for (i = 0; i < n && m < STAGE_RECS; i++) {
		struct rlog_ent *e = ent_of(w, lsns[i]);

		if (!ent_on_peers(e))
			continue;
		marked[m] = e;
		was_sup[m] = e->sup;
		e->retired = true;
		e->sup = false;
		put64(st + so, state);
		loff[m] = so;
		roff[m] = e->off + R_STATE;
		len[m++] = 8;
		so += 8;
	}
	/* Crash tests stop a node between the first half of a reclaim and the rest. */
	half = m / 2;
	ret = 0;
	if (half && w->point) {
		ret = put_ranges(w, loff, roff, len, half);
		if (!ret)
			w->point(w->arg, 0);
	} else {
		half = 0;
	}
	if (!ret) {
		uint32_t nr = m;

		np = tail_prefix(w, &toff, &tlsn);
		so = (so + RLOG_ALIGN - 1) / RLOG_ALIGN * RLOG_ALIGN;
		rlog_region_hdr_encode(st + so, (uint16_t)w->me, w->gen, toff, tlsn);
		loff[nr] = so;
		roff[nr] = 0;
		len[nr++] = RLOG_HDR;
		ret = put_ranges(w, loff + half, roff + half, len + half, nr - half);
		/* The space is the ring's again only once the header past it is on the peers (as
		 * in append): a failed put leaves the records counted, and the next header moves
		 * past them. */
		if (!ret)
			tail_pop(w, np, toff, tlsn);
	}
	if (ret && state == RLOG_RETIRED) {
		for (i = 0; i < m; i++) {
			marked[i]->retired = was_sup[i];
			marked[i]->sup = was_sup[i];
		}
	} else {
		RLOG_STAT(w, retired, m);
	}
	return ret;
}

int rlog_writer_reset(struct rlog_writer *w, uint32_t peers, uint32_t k, uint32_t epoch)
{
	uint64_t loff = 0, roff = 0;
	uint32_t len = RLOG_HDR;
	int ret;

	pthread_mutex_lock(&w->lock);
	w->peers = peers;
	w->unreach = 0;
	w->k = k;
	w->epoch = epoch;
	w->gen++;
	w->head_off = w->tail_off = RLOG_RING;
	w->next_lsn = w->tail_lsn = 1;
	__atomic_store_n(&w->used, 0, __ATOMIC_RELAXED);
	w->ent_head = w->ent_count = 0;
	/* A new generation: recovery takes it over every copy of the old one. */
	w->abandon_n = 0;
	w->abandon_lost = false;
	__atomic_store_n(&w->abandon_any, false, __ATOMIC_RELEASE);
	w->kept_n = 0;
	w->kept_lost = false;
	__atomic_store_n(&w->kept_any, false, __ATOMIC_RELEASE);
	memset(w->live->e, 0, w->live->cap * sizeof(w->live->e[0]));
	w->live->count = 0;
	rlog_region_hdr_encode(coh_mr_addr(w->stage), (uint16_t)w->me, w->gen, RLOG_RING, 1);
	ret = put_ranges(w, &loff, &roff, &len, 1);
	pthread_mutex_unlock(&w->lock);
	return ret;
}

/* abandon_keep - @n records of a failed append whose ABANDONED mark may not have landed on every
 * peer. Lock held. */
static void abandon_keep(struct rlog_writer *w, const uint64_t *lsns, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (w->abandon_n < RLOG_ABANDON_MAX)
			w->abandon_lsns[w->abandon_n++] = lsns[i];
		else
			w->abandon_lost = true;
	}
	__atomic_store_n(&w->abandon_any, true, __ATOMIC_RELEASE);
}

bool rlog_abandon_pending(struct rlog_writer *w)
{
	/* Without the lock: asked before every lock handover, while an append may hold it across
	 * a round trip. */
	return __atomic_load_n(&w->abandon_any, __ATOMIC_ACQUIRE);
}

int rlog_abandon_retry(struct rlog_writer *w)
{
	uint8_t *st = coh_mr_addr(w->stage);
	uint64_t loff[STAGE_RECS], roff[STAGE_RECS];
	uint32_t len[STAGE_RECS], i = 0, m;
	int ret = 0;

	pthread_mutex_lock(&w->lock);
	if (w->abandon_lost)
		ret = -ENOSPC;
	while (!ret && i < w->abandon_n) {
		for (m = 0; i < w->abandon_n && m < STAGE_RECS; i++) {
			const struct rlog_ent *e = ent_of(w, w->abandon_lsns[i]);

			/* Gone from the FIFO: the tail on the peers is past it, so no scan sees
			 * it. */
			if (!e)
				continue;
			put64(st + (size_t)m * 8, RLOG_ABANDONED);
			loff[m] = (uint64_t)m * 8;
			roff[m] = e->off + R_STATE;
			len[m++] = 8;
		}
		if (m)
			ret = put_ranges(w, loff, roff, len, m);
	}
	if (!ret) {
		w->abandon_n = 0;
		__atomic_store_n(&w->abandon_any, false, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&w->lock);
	return ret;
}

int rlog_abandon_write(struct rlog_writer *w, uint64_t lba, uint32_t n, uint64_t last)
{
	uint64_t lsns[STAGE_RECS], l;
	uint32_t i, m = 0;
	int ret = 0, r;

	pthread_mutex_lock(&w->lock);
	for (i = 0; i < n; i++) {
		uint64_t *cur = live_find(w->live, lba + i);
		struct rlog_ent *e = cur && *cur <= last ? ent_of(w, *cur) : NULL;

		if (!e || e->retired)
			continue;
		/* This write's record, then back along the records it superseded that are still
		 * past the tail, all marked: none of their data is only in the cache. The cache
		 * could not take the block because another block's dirty data held its slot; the
		 * block's older data had left that slot before, written back to the store by the
		 * eviction, whose retirement (rlog_retire) skipped those records as this write's
		 * was newer. Made live again here instead, they would stay live with nothing dirty
		 * to destage them, while the lock moves on: a replay after this node's death would
		 * put them over another node's later write. */
		for (l = e->lsn; l;) {
			struct rlog_ent *pe = ent_of(w, l);

			if (!pe || (l != e->lsn && !pe->sup))
				break;
			if (l != e->lsn)
				__atomic_sub_fetch(&w->superseded, 1, __ATOMIC_RELAXED);
			lsns[m++] = l;
			l = pe->prev;
			if (m == STAGE_RECS) {
				r = retire_now(w, lsns, m, RLOG_ABANDONED);
				if (r) {
					abandon_keep(w, lsns, m);
					ret = ret ? ret : r;
				}
				m = 0;
			}
		}
		live_del(w->live, lba + i);
	}
	r = m ? retire_now(w, lsns, m, RLOG_ABANDONED) : 0;
	if (r) {
		abandon_keep(w, lsns, m);
		ret = ret ? ret : r;
	}
	pthread_mutex_unlock(&w->lock);
	return ret;
}

/*
 * append_recs - append @n records (@lbas, @payloads) in rounds of at most STAGE_RECS, their LSNs
 * to @out; once all are persistent, mark the records they supersede. On a failure every record
 * appended is abandoned where it landed, and nothing is superseded: the caller fails every write
 * they belong to. Lock held.
 */
static int append_recs(struct rlog_writer *w, uint32_t n, const uint64_t *lbas,
		       const uint8_t *const *payloads, uint64_t *out)
{
	uint32_t done = 0, m, i;
	int ret = 0;

	while (done < n) {
		uint64_t first = w->next_lsn;

		m = n - done < STAGE_RECS ? n - done : STAGE_RECS;
		ret = append(w, m, lbas + done, payloads + done, out + done);
		if (!ret) {
			done += m;
			continue;
		}
		/* The records may be on the peers that are still up (a peer failed part way), for
		 * a write that will not be acknowledged or installed, and that no destage would
		 * retire: the lock could move on while they stay live, and a replay after this
		 * node's death would write them over a newer write. Retire them where they
		 * landed, this round's and the earlier rounds'. Where that fails too (the peer
		 * that failed, or a slow one), they are kept pending: the owner hands no lock on
		 * until they are marked (rlog_abandon_retry) or the log has a new generation. */
		if (w->next_lsn != first && retire_now(w, out + done, m, RLOG_ABANDONED))
			abandon_keep(w, out + done, m);
		while (done) {
			uint32_t k = done < STAGE_RECS ? done : STAGE_RECS;

			if (retire_now(w, out + done - k, k, RLOG_ABANDONED))
				abandon_keep(w, out + done - k, k);
			done -= k;
		}
		return ret;
	}
	/* The new records supersede older live ones of the same blocks. Those are not retired on
	 * the peers (a second round trip): a scan resolves them by sequence, and the tail passes
	 * them with a later append's header. Only now, with every new record persistent, are they
	 * done here. */
	for (i = 0; !ret && i < n; i++) {
		uint64_t *cur = live_find(w->live, lbas[i]);
		struct rlog_ent *e = cur ? ent_of(w, *cur) : NULL;

		if (e && !e->retired) {
			e->retired = true;
			e->sup = true;
			ent_of(w, out[i])->prev = e->lsn;
			RLOG_STAT(w, superseded, 1);
		}
		ret = live_put(w->live, lbas[i], out[i]);
	}
	return ret;
}

/*
 * Group commit. Each rlog_append_data queues its write (struct rlog_gc) on @gc_head; one caller
 * at a time is the leader: it takes the writer's lock, takes every queued write that fits one
 * stage (STAGE_RECS records), appends them all in one round trip (their records one after the
 * other in the ring, one WRITE and one FLUSH per peer), and completes them with its status. The
 * others wait on @gc_cond; whatever queued while a leader's round trip was out goes in the next
 * one. So concurrent writes from one node share log round trips, and a write alone pays one.
 * A write that is not taken within four timeouts gives up (-ETIMEDOUT); one taken is waited for,
 * since the leader reads its data (each round is bounded).
 */
struct rlog_gc {
	uint64_t lba, last; /* @last: the LSN of its last record */
	uint32_t n;
	const uint8_t *buf;
	int ret;
	bool taken, done;
	struct rlog_gc *next;
};

/* gc_lead - be the leader for one round: append the queued writes that fit, complete them. */
static void gc_lead(struct rlog_writer *w)
{
	static __thread uint64_t lbas[STAGE_RECS], lsns[STAGE_RECS];
	static __thread const uint8_t *pl[STAGE_RECS];
	struct rlog_gc *batch, *g, **tailp;
	uint32_t nrec = 0, nw = 0, i;
	int ret;

	pthread_mutex_lock(&w->lock);
	pthread_mutex_lock(&w->gc_lock);
	/* The first queued write always; more while they fit the stage. */
	batch = w->gc_head;
	tailp = &w->gc_head;
	while (*tailp && (!nrec || nrec + (*tailp)->n <= STAGE_RECS)) {
		g = *tailp;
		g->taken = true;
		nrec += g->n;
		nw++;
		tailp = &g->next;
	}
	w->gc_head = *tailp;
	w->gc_queued -= nw;
	*tailp = NULL;
	pthread_mutex_unlock(&w->gc_lock);

	if (nrec > STAGE_RECS) {
		/* One write larger than a stage: alone, in rounds. */
		uint64_t *l = malloc(sizeof(*l) * nrec), *o = malloc(sizeof(*o) * nrec);
		const uint8_t **p = malloc(sizeof(*p) * nrec);

		ret = l && p && o ? 0 : -ENOMEM;
		for (i = 0; !ret && i < nrec; i++) {
			l[i] = batch->lba + i;
			p[i] = batch->buf + (size_t)i * w->bsize;
		}
		if (!ret)
			ret = append_recs(w, nrec, l, p, o);
		if (!ret)
			batch->last = o[nrec - 1];
		free(l);
		free(p);
		free(o);
	} else {
		nrec = 0;
		for (g = batch; g; g = g->next) {
			for (i = 0; i < g->n; i++) {
				lbas[nrec] = g->lba + i;
				pl[nrec++] = g->buf + (size_t)i * w->bsize;
			}
		}
		ret = append_recs(w, nrec, lbas, pl, lsns);
		nrec = 0;
		for (g = batch; !ret && g; g = g->next) {
			nrec += g->n;
			g->last = lsns[nrec - 1];
		}
	}
	if (nw > 1) {
		RLOG_STAT(w, group_commits, 1);
		RLOG_STAT(w, group_writes, nw);
	}
	pthread_mutex_unlock(&w->lock);

	pthread_mutex_lock(&w->gc_lock);
	for (g = batch; g; g = g->next) {
		g->ret = ret;
		g->done = true;
	}
	w->gc_leader = false;
	pthread_cond_broadcast(&w->gc_cond);
	pthread_mutex_unlock(&w->gc_lock);
}

int rlog_append_data(struct rlog_writer *w, uint64_t lba, uint32_t n, const void *buf,
		     uint64_t *last)
{
	struct rlog_gc me = { .lba = lba, .n = n, .buf = buf }, **pp;
	uint64_t deadline = now_ms() + 4ull * w->timeout_ms;

	if (!n)
		return 0;
	pthread_mutex_lock(&w->gc_lock);
	for (pp = &w->gc_head; *pp; pp = &(*pp)->next)
		;
	*pp = &me;
	w->gc_queued++;
	while (!me.done) {
		struct timespec ts;

		if (!w->gc_leader) {
			w->gc_leader = true;
			pthread_mutex_unlock(&w->gc_lock);
			gc_lead(w);
			pthread_mutex_lock(&w->gc_lock);
			continue;
		}
		if (!me.taken && now_ms() >= deadline) {
			for (pp = &w->gc_head; *pp && *pp != &me; pp = &(*pp)->next)
				;
			if (*pp) {
				*pp = me.next;
				w->gc_queued--;
			}
			pthread_mutex_unlock(&w->gc_lock);
			return -ETIMEDOUT;
		}
		node_realtime_in(1, &ts);
		/* Asleep as on the network: the engine may start another thread meanwhile. */
		coh_thread_sleeping(true);
		pthread_cond_timedwait(&w->gc_cond, &w->gc_lock, &ts);
		coh_thread_sleeping(false);
	}
	pthread_mutex_unlock(&w->gc_lock);
	if (!me.ret && last)
		*last = me.last;
	return me.ret;
}

/*
 * Step slots. A destage's current step lives in a slot of its own at a fixed place in the
 * region, written in place, not in the ring: a destage is what frees the ring, so it must never
 * wait for room in it.
 */

static void step_encode(uint8_t *b, uint16_t writer, uint32_t gen, uint64_t seq, uint64_t stripe,
			uint8_t step)
{
	memset(b, 0, RLOG_ALIGN);
	put32(b, RLOG_STEP_MAGIC);
	put16(b + 8, writer);
	b[10] = step;
	put32(b + 12, gen);
	put64(b + 16, seq);
	put64(b + 24, stripe);
	put32(b + 4, crc32_iscsi(b + 8, 24, 0));
}

int rlog_step_decode(const uint8_t *b, uint16_t *writer, uint32_t *gen, uint64_t *stripe,
		     uint8_t *step)
{
	if (get32(b) != RLOG_STEP_MAGIC)
		return -ENODATA;
	if (get32(b + 4) != crc32_iscsi((unsigned char *)b + 8, 24, 0))
		return -EBADMSG;
	*writer = get16(b + 8);
	*step = b[10];
	*gen = get32(b + 12);
	*stripe = get64(b + 24);
	return 0;
}

int rlog_step_begin(struct rlog_writer *w, uint32_t *slot)
{
	uint32_t i;
	int ret = -EBUSY;

	pthread_mutex_lock(&w->lock);
	for (i = 0; i < RLOG_STEP_SLOTS; i++) {
		if (!(w->step_busy >> i & 1)) {
			w->step_busy |= 1u << i;
			*slot = i;
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&w->lock);
	return ret;
}

static int step_write(struct rlog_writer *w, uint32_t slot, bool clear, uint64_t stripe,
		      uint8_t step)
{
	uint8_t *st = coh_mr_addr(w->stage);
	uint64_t loff = 0, roff = RLOG_HDR + (uint64_t)slot * RLOG_ALIGN;
	uint32_t len = RLOG_ALIGN;
	int ret;

	pthread_mutex_lock(&w->lock);
	if (clear)
		memset(st, 0, RLOG_ALIGN);
	else
		step_encode(st, (uint16_t)w->me, w->gen, ++w->step_seq, stripe, step);
	ret = put_ranges(w, &loff, &roff, &len, 1);
	pthread_mutex_unlock(&w->lock);
	return ret;
}

int rlog_step_put(struct rlog_writer *w, uint32_t slot, uint64_t stripe, uint8_t step)
{
	return step_write(w, slot, false, stripe, step);
}

void rlog_step_forget(struct rlog_writer *w, uint32_t slot)
{
	pthread_mutex_lock(&w->lock);
	w->step_busy &= ~(1u << slot);
	pthread_mutex_unlock(&w->lock);
}

int rlog_step_end(struct rlog_writer *w, uint32_t slot)
{
	int ret = step_write(w, slot, true, 0, 0);

	pthread_mutex_lock(&w->lock);
	w->step_busy &= ~(1u << slot);
	pthread_mutex_unlock(&w->lock);
	return ret;
}

int rlog_scan_steps(const uint8_t *region, size_t len, uint16_t writer,
		    int (*fn)(void *arg, uint64_t stripe, uint8_t step), void *arg)
{
	uint16_t w, hw;
	uint32_t gen, hgen, i;
	uint64_t stripe, t0, t1;
	uint8_t step;
	int ret;

	if (len < RLOG_RING)
		return -EINVAL;
	if (rlog_region_hdr_decode(region, &hw, &hgen, &t0, &t1))
		return 0; /* never written */
	for (i = 0; i < RLOG_STEP_SLOTS; i++) {
		ret = rlog_step_decode(region + RLOG_HDR + (size_t)i * RLOG_ALIGN, &w, &gen,
				       &stripe, &step);
		if (ret == -ENODATA)
			continue;
		if (ret) {
			/* A torn slot write: the step it named had not started (its effect comes
			 * after the write completes); the data records still cover the blocks. */
			COH_LOG_WARN("rlog: writer %u: step slot %u unreadable (%s); ignored",
				     writer, i, coh_strerror(ret));
			continue;
		}
		if (w != writer || gen != hgen)
			continue;
		ret = fn(arg, stripe, step);
		if (ret)
			return ret;
	}
	return 0;
}

/* retire_ranges - rlog_retire of each of @nr ranges, their records in shared round trips.
 * Lock held. */
static int retire_ranges(struct rlog_writer *w, const struct rlog_range *rg, uint32_t nr)
{
	uint64_t lsns[STAGE_RECS];
	uint32_t i, j, m = 0;
	int ret = 0;

	for (j = 0; j < nr && !ret; j++) {
		for (i = 0; i < rg[j].n && !ret; i++) {
			uint64_t *cur = live_find(w->live, rg[j].lba + i), l;

			/* A record newer than the data destaged is a later write's, replicated
			 * and not yet in the cache (another lane): it stays, and so do the ones
			 * it superseded, which its own destage retires. */
			if (!cur || *cur > rg[j].upto)
				continue;
			/* The newest record, then back along what it superseded while that is
			 * still past the tail and live on the peers. */
			for (l = *cur; l && !ret;) {
				struct rlog_ent *e = ent_of(w, l);

				if (!ent_on_peers(e))
					break;
				lsns[m++] = l;
				l = e->prev;
				if (m == STAGE_RECS) {
					ret = retire_now(w, lsns, m, RLOG_RETIRED);
					m = 0;
				}
			}
		}
	}
	if (!ret && m)
		ret = retire_now(w, lsns, m, RLOG_RETIRED);
	/* The blocks leave the live set only once every retirement is persistent on the peers:
	 * after a failure they stay, and the destage that is done again retires them again. */
	for (j = 0; j < nr && !ret; j++) {
		for (i = 0; i < rg[j].n; i++) {
			uint64_t *cur = live_find(w->live, rg[j].lba + i);

			if (cur && *cur <= rg[j].upto)
				live_del(w->live, rg[j].lba + i);
		}
	}
	return ret;
}

int rlog_retire(struct rlog_writer *w, uint64_t lba, uint32_t n, uint64_t upto)
{
	struct rlog_range r = { .lba = lba, .upto = upto, .n = n };

	return rlog_retire_many(w, &r, 1);
}

int rlog_retire_many(struct rlog_writer *w, const struct rlog_range *r, uint32_t nr)
{
	int ret;

	pthread_mutex_lock(&w->lock);
	ret = retire_ranges(w, r, nr);
	pthread_mutex_unlock(&w->lock);
	return ret;
}

void rlog_retire_keep(struct rlog_writer *w, const struct rlog_range *r, uint32_t nr)
{
	uint32_t i;

	pthread_mutex_lock(&w->lock);
	for (i = 0; i < nr; i++) {
		if (w->kept_n < RLOG_KEPT_MAX)
			w->kept[w->kept_n++] = r[i];
		else
			w->kept_lost = true;
	}
	__atomic_store_n(&w->kept_any, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&w->lock);
}

bool rlog_retire_kept_any(struct rlog_writer *w)
{
	return __atomic_load_n(&w->kept_any, __ATOMIC_ACQUIRE);
}

int rlog_retire_kept(struct rlog_writer *w, int (*flush)(void *arg), void *arg)
{
	struct rlog_range snap[RLOG_KEPT_MAX];
	uint32_t n, gen;
	int ret;

	pthread_mutex_lock(&w->kept_retry);
	pthread_mutex_lock(&w->lock);
	ret = w->kept_lost ? -ENOSPC : 0;
	n = w->kept_n;
	gen = w->gen;
	memcpy(snap, w->kept, n * sizeof(snap[0]));
	pthread_mutex_unlock(&w->lock);
	/* The store first, without the log's lock (a destage holds the store's stripe locks while
	 * it takes the log's): only ranges kept before the flush began are retired after it. */
	if (!ret && n)
		ret = flush(arg);
	pthread_mutex_lock(&w->lock);
	if (!ret && n && w->gen == gen) {
		ret = retire_ranges(w, snap, n);
		if (!ret) {
			/* Only this function takes entries out (one call at a time): the first @n
			 * are the snapshot's. */
			memmove(w->kept, w->kept + n, (w->kept_n - n) * sizeof(w->kept[0]));
			w->kept_n -= n;
		}
	}
	if (!w->kept_n && !w->kept_lost)
		__atomic_store_n(&w->kept_any, false, __ATOMIC_RELEASE);
	ret = ret ? ret : (w->kept_n || w->kept_lost ? -EAGAIN : 0);
	pthread_mutex_unlock(&w->lock);
	pthread_mutex_unlock(&w->kept_retry);
	return ret;
}

uint64_t rlog_live_count(struct rlog_writer *w)
{
	uint64_t n;

	pthread_mutex_lock(&w->lock);
	n = w->live->count;
	pthread_mutex_unlock(&w->lock);
	return n;
}

uint64_t rlog_used(struct rlog_writer *w, uint64_t *cap)
{
	uint64_t used;

	pthread_mutex_lock(&w->lock);
	used = w->used;
	if (cap)
		*cap = w->region_len - RLOG_RING;
	pthread_mutex_unlock(&w->lock);
	return used;
}

uint32_t rlog_oldest_live(struct rlog_writer *w, uint64_t *lbas, uint32_t max)
{
	uint32_t i, m = 0, j;

	pthread_mutex_lock(&w->lock);
	for (i = 0; i < w->ent_count && m < max; i++) {
		const struct rlog_ent *e = &w->ents[(w->ent_head + i) % w->ent_cap];

		if (!e->data || e->retired)
			continue;
		/* A block rewritten while its older record stayed live is listed once: one
		 * destage of it retires both (rlog_retire walks back along what it superseded). */
		for (j = 0; j < m && lbas[j] != e->lba; j++)
			;
		if (j == m)
			lbas[m++] = e->lba;
	}
	pthread_mutex_unlock(&w->lock);
	return m;
}
