/*
 * raid.c - redundancy groups over storage elements: RAID-1 mirrors and RAID-5 with left-symmetric
 * rotating parity. Reads reconstruct a missing element's data; writes are the stepped stripe
 * update with its hook (docs/raid.md); one stripe can be repaired or checked; and a group can be
 * seen as a struct coh_store, so that the cache sits on it.
 *
 * Every public call works one stripe at a time under that stripe's lock, a rwlock picked by
 * hashing the stripe (reads and checks share it, updates and repairs hold it alone). A call never
 * holds two, so there is no lock order to keep. Which elements are missing is one atomic bitmap:
 * an element leaves when its I/O fails or coh_raid_fail_element() is called, and never comes back.
 * Parity is ISA-L's xor_gen over 4 KiB-aligned scratch allocated per stripe operation, sized to
 * the rows that operation touches.
 *
 * What this file leaves out: rebuild onto a replacement element, RAID-6, a journal against the
 * write hole (docs/raid.md says what the replicated log above the group must hold to be one), and
 * I/O to several elements at once (each element is read and written in turn).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/raid.h>

#include "cohort/log.h"
#include "cohort/raid.h"

#define RAID_NLOCKS 64
#define RAID_ALIGN 4096

/*
 * struct coh_raid - a redundancy group. Every field but @missing and @locks is set by
 * coh_raid_new() and only read afterwards. @missing only ever gains bits (atomically); an
 * element's store is NULL only if its bit was set at open. @locks[stripe % RAID_NLOCKS] guards
 * the stripe's blocks on the elements: shared for reads and checks, exclusive for updates and
 * repairs. No thread holds two of them at once.
 */
struct coh_raid {
	enum coh_raid_level level;
	uint32_t nelems;
	uint32_t ndata; /* data chunks per stripe: nelems - 1 (RAID-5), 1 (RAID-1) */
	uint32_t chunk; /* blocks per chunk */
	uint32_t block_size;
	uint64_t elem_blocks; /* blocks used on each element */
	uint64_t nblocks;
	uint64_t nstripes;
	struct coh_store *elems[COH_RAID_MAX_ELEMS];
	atomic_uint missing;
	pthread_rwlock_t locks[RAID_NLOCKS];
	void (*on_missing)(void *arg, uint32_t missing); /* coh_raid_attr.on_missing */
	void *on_missing_arg;
	int (*may_write)(void *arg); /* coh_raid_attr.may_write, with on_missing_arg */
};

/*
 * struct raid_span - what one call touches of one stripe. A row is a block offset within a chunk:
 * row x of stripe s is block s * chunk + x on every element. Data chunk d's touched rows are
 * [lo[d], hi[d]) (none when equal), and the caller's data for row lo[d] is at byte off[d] of its
 * buffer. [plo, phi) spans every touched row: the parity rows an update rewrites.
 */
struct raid_span {
	uint64_t stripe;
	uint32_t lo[COH_RAID_MAX_ELEMS];
	uint32_t hi[COH_RAID_MAX_ELEMS];
	size_t off[COH_RAID_MAX_ELEMS];
	uint32_t plo, phi;
	bool full; /* every row of every data chunk */
};

/* bit - the missing-bitmap bit of element @e. */
static unsigned int bit(uint32_t e)
{
	return 1u << e;
}

/* raid_lost - whether @miss leaves too few elements to have the data. */
static bool raid_lost(const struct coh_raid *r, unsigned int miss)
{
	if (r->level == COH_RAID5)
		return __builtin_popcount(miss) > 1;
	return miss == (1u << r->nelems) - 1;
}

/* missing_now - a snapshot of the missing bitmap. */
static unsigned int missing_now(struct coh_raid *r)
{
	return atomic_load_explicit(&r->missing, memory_order_acquire);
}

/* stripe_lock - the lock of @stripe. */
static pthread_rwlock_t *stripe_lock(struct coh_raid *r, uint64_t stripe)
{
	return &r->locks[stripe % RAID_NLOCKS];
}

/* parity_elem - the element holding @stripe's parity (left-symmetric: last element first). */
static uint32_t parity_elem(const struct coh_raid *r, uint64_t stripe)
{
	return r->nelems - 1 - (uint32_t)(stripe % r->nelems);
}

/* data_elem - the element holding data chunk @d of @stripe (RAID-5: the ones after parity). */
static uint32_t data_elem(const struct coh_raid *r, uint64_t stripe, uint32_t d)
{
	return (parity_elem(r, stripe) + 1 + d) % r->nelems;
}

/* stripe_rows - rows in @stripe: the chunk, except for RAID-1's short last stripe. */
static uint32_t stripe_rows(const struct coh_raid *r, uint64_t stripe)
{
	uint64_t left = r->elem_blocks - stripe * r->chunk;

	return left < r->chunk ? (uint32_t)left : r->chunk;
}

/* range_ok - whether [@lba, @lba + @n) is a non-empty range inside the group. */
static bool range_ok(const struct coh_raid *r, uint64_t lba, uint32_t n)
{
	return n && lba < r->nblocks && n <= r->nblocks - lba;
}

/* span_init - what [@lba, @lba + @n) touches of @stripe. */
static void span_init(const struct coh_raid *r, uint64_t stripe, uint64_t lba, uint32_t n,
		      struct raid_span *sp)
{
	uint64_t sb = (uint64_t)r->ndata * r->chunk;
	uint64_t s0 = stripe * sb;
	uint64_t w0 = (lba > s0 ? lba : s0) - s0;
	uint64_t w1 = (lba + n < s0 + sb ? lba + n : s0 + sb) - s0;
	uint32_t d;

	sp->stripe = stripe;
	sp->plo = r->chunk;
	sp->phi = 0;
	sp->full = w0 == 0 && w1 == sb;
	for (d = 0; d < r->ndata; d++) {
		uint64_t cl = (uint64_t)d * r->chunk;
		uint64_t lo = w0 > cl ? w0 : cl;
		uint64_t hi = w1 < cl + r->chunk ? w1 : cl + r->chunk;

		sp->lo[d] = sp->hi[d] = 0;
		sp->off[d] = 0;
		if (lo >= hi)
			continue;
		sp->lo[d] = (uint32_t)(lo - cl);
		sp->hi[d] = (uint32_t)(hi - cl);
		sp->off[d] = (size_t)(s0 + lo - lba) * r->block_size;
		if (sp->lo[d] < sp->plo)
			sp->plo = sp->lo[d];
		if (sp->hi[d] > sp->phi)
			sp->phi = sp->hi[d];
	}
}

/* touched - whether data chunk @d has rows in @sp. */
static bool touched(const struct raid_span *sp, uint32_t d)
{
	return sp->lo[d] < sp->hi[d];
}

/* elem_failed - mark element @e missing after its @what failed with @err; logs the first time. */
static void elem_failed(struct coh_raid *r, uint32_t e, const char *what, uint64_t blk, int err)
{
	unsigned int old = atomic_fetch_or_explicit(&r->missing, bit(e), memory_order_acq_rel);

	if (!(old & bit(e))) {
		COH_LOG_ERR("raid element %u failed (%s at block %llu: %s); missing now %#x", e,
			    what, (unsigned long long)blk, strerror(-err), old | bit(e));
		if (r->on_missing)
			r->on_missing(r->on_missing_arg, old | bit(e));
	}
}

/* elem_read - read from element @e; on error the element is marked failed. */
static int elem_read(struct coh_raid *r, uint32_t e, uint64_t blk, uint32_t n, void *buf)
{
	int ret = coh_store_read(r->elems[e], blk, n, buf);

	if (ret)
		elem_failed(r, e, "read", blk, ret);
	return ret;
}

/*
 * elem_write - write to element @e. -EAGAIN when the gate (coh_raid_attr.may_write) refuses: the
 * caller stops where it is, and nothing is marked. A store's -EAGAIN while the gate refuses is
 * the gate's too (a file store asks it before it issues an interrupted write again:
 * coh_store_set_write_gate). Any other error marks the element failed (a store's own -EAGAIN is
 * reported as -EIO, so that the gate's stays distinct).
 */
static int elem_write(struct coh_raid *r, uint32_t e, uint64_t blk, uint32_t n, const void *buf)
{
	int ret;

	if (r->may_write && r->may_write(r->on_missing_arg))
		return -EAGAIN;
	ret = coh_store_write(r->elems[e], blk, n, buf);
	if (ret == -EAGAIN && r->may_write && r->may_write(r->on_missing_arg))
		return -EAGAIN;
	if (ret) {
		elem_failed(r, e, "write", blk, ret);
		if (ret == -EAGAIN)
			ret = -EIO;
	}
	return ret;
}

/* scratch_new - @nslots slots of @slot bytes each, 4 KiB aligned (xor_gen needs 32 bytes). */
static int scratch_new(uint32_t nslots, size_t slot, uint8_t **scp)
{
	void *p;
	int ret;

	ret = posix_memalign(&p, RAID_ALIGN, nslots * slot);
	if (ret)
		return -ret;
	*scp = p;
	return 0;
}

/* slot_at - slot @i of scratch @sc. */
static uint8_t *slot_at(uint8_t *sc, size_t slot, uint32_t i)
{
	return sc + i * slot;
}

/*
 * raid_xor - v[nsrc] = XOR of v[0 .. nsrc-1], @len bytes each. Every length here is a whole
 * number of blocks (>= 512 bytes) and every buffer a scratch slot or a 32-byte-aligned caller's
 * buffer, as xor_gen requires; it is not known to accept fewer than two sources, so one is a copy.
 */
static int raid_xor(void **v, uint32_t nsrc, size_t len)
{
	if (nsrc == 1) {
		memcpy(v[1], v[0], len);
		return 0;
	}
	if (xor_gen((int)nsrc + 1, (int)len, v)) {
		COH_LOG_ERR("xor_gen refused %u sources of %zu bytes", nsrc, len);
		return -EIO;
	}
	return 0;
}

/* run_hook - the hook's verdict on @step of @stripe; 0 without a hook. */
static int run_hook(coh_raid_hook_fn hook, void *arg, uint64_t stripe, enum coh_raid_step step)
{
	return hook ? hook(arg, stripe, step) : 0;
}

/* RAID-5. */

/*
 * r5_reconstruct - rows [@lo, @hi) of data chunk @d of @stripe, whose element is missing, as the
 * XOR of the same rows of every other element, into @out. Returns 0, -ENOMEM, -EIO, or -EAGAIN
 * after another element failed (marked; the caller plans again).
 */
static int r5_reconstruct(struct coh_raid *r, uint64_t stripe, uint32_t d, uint32_t lo, uint32_t hi,
			  void *out)
{
	size_t slot = (size_t)(hi - lo) * r->block_size;
	uint32_t gone = data_elem(r, stripe, d);
	void *v[COH_RAID_MAX_ELEMS + 1];
	uint32_t e, k = 0;
	uint8_t *sc;
	int ret;

	ret = scratch_new(r->nelems, slot, &sc);
	if (ret)
		return ret;
	for (e = 0; e < r->nelems; e++) {
		if (e == gone)
			continue;
		v[k] = slot_at(sc, slot, k);
		if (elem_read(r, e, stripe * r->chunk + lo, hi - lo, v[k])) {
			ret = -EAGAIN;
			goto out_free;
		}
		k++;
	}
	v[k] = slot_at(sc, slot, k);
	ret = raid_xor(v, k, slot);
	if (!ret)
		memcpy(out, v[k], slot);
out_free:
	free(sc);
	return ret;
}

/* r5_read_stripe - the touched rows of @sp into @buf; the caller holds the stripe shared. */
static int r5_read_stripe(struct coh_raid *r, const struct raid_span *sp, uint8_t *buf)
{
	uint64_t base = sp->stripe * r->chunk;
	uint32_t attempt, d;
	int ret = -EIO;

	/* Each pass that ends in -EAGAIN has marked one more element missing, and a second one
	 * missing ends the loop, so it makes at most three passes. */
	for (attempt = 0; attempt <= r->nelems; attempt++) {
		unsigned int miss = missing_now(r);

		if (raid_lost(r, miss))
			return -EIO;
		ret = 0;
		for (d = 0; d < r->ndata && !ret; d++) {
			uint32_t e = data_elem(r, sp->stripe, d);

			if (!touched(sp, d))
				continue;
			if (miss & bit(e))
				ret = r5_reconstruct(r, sp->stripe, d, sp->lo[d], sp->hi[d],
						     buf + sp->off[d]);
			else if (elem_read(r, e, base + sp->lo[d], sp->hi[d] - sp->lo[d],
					   buf + sp->off[d]))
				ret = -EAGAIN;
		}
		if (ret != -EAGAIN)
			return ret;
	}
	return -EIO;
}

/*
 * r5_read_old - the READ_OLD step: rows [plo, phi) of the touched data chunks into slots 0 ..
 * ndata-1 and of the parity into slot ndata. When the element of a touched chunk (@mdata) is
 * missing, every other data chunk is read and the missing one reconstructed, so that the new
 * parity covers its new data. Returns 0, -EIO, or -EAGAIN after an element failed.
 */
static int r5_read_old(struct coh_raid *r, const struct raid_span *sp, uint8_t *sc, size_t slot,
		       int mdata)
{
	uint64_t blk = sp->stripe * r->chunk + sp->plo;
	uint32_t rows = sp->phi - sp->plo;
	bool rebuild = mdata >= 0 && touched(sp, (uint32_t)mdata);
	void *v[COH_RAID_MAX_ELEMS + 1];
	uint32_t d, k = 0;

	for (d = 0; d < r->ndata; d++) {
		if ((int)d == mdata || (!rebuild && !touched(sp, d)))
			continue;
		if (elem_read(r, data_elem(r, sp->stripe, d), blk, rows, slot_at(sc, slot, d)))
			return -EAGAIN;
		v[k++] = slot_at(sc, slot, d);
	}
	if (elem_read(r, parity_elem(r, sp->stripe), blk, rows, slot_at(sc, slot, r->ndata)))
		return -EAGAIN;
	if (!rebuild)
		return 0;
	v[k++] = slot_at(sc, slot, r->ndata);
	v[k] = slot_at(sc, slot, (uint32_t)mdata);
	return raid_xor(v, k, slot);
}

/*
 * r5_new_parity - the new parity of rows [plo, phi) into slot 2*ndata+1. A full stripe takes it
 * from the new data alone; otherwise new = old parity ^ old data ^ new data of each touched
 * chunk, where a chunk's new data (slot ndata+1+d) is its old rows with the touched ones replaced,
 * so that the untouched rows cancel.
 */
static int r5_new_parity(struct coh_raid *r, const struct raid_span *sp, const uint8_t *buf,
			 uint8_t *sc, size_t slot)
{
	uint32_t bs = r->block_size, nd = r->ndata;
	void *v[2 * COH_RAID_MAX_ELEMS + 1];
	uint32_t d, k = 0;

	if (sp->full) {
		for (d = 0; d < nd; d++) {
			const uint8_t *src = buf + sp->off[d];

			/* The caller's chunk is contiguous: use it in place when aligned. */
			if ((uintptr_t)src % 32 == 0) {
				v[k++] = (void *)src;
				continue;
			}
			memcpy(slot_at(sc, slot, nd + 1 + d), src, slot);
			v[k++] = slot_at(sc, slot, nd + 1 + d);
		}
	} else {
		v[k++] = slot_at(sc, slot, nd);
		for (d = 0; d < nd; d++) {
			uint8_t *old = slot_at(sc, slot, d), *new = slot_at(sc, slot, nd + 1 + d);

			if (!touched(sp, d))
				continue;
			memcpy(new, old, slot);
			memcpy(new + (size_t)(sp->lo[d] - sp->plo) * bs, buf + sp->off[d],
			       (size_t)(sp->hi[d] - sp->lo[d]) * bs);
			v[k++] = old;
			v[k++] = new;
		}
	}
	v[k] = slot_at(sc, slot, 2 * nd + 1);
	return raid_xor(v, k, slot);
}

/*
 * r5_write_stripe - one stripe's stepped update (coh_raid_write_stepped); the caller holds the
 * stripe exclusively. Scratch slots, each rows [plo, phi): 0 .. ndata-1 old data, ndata old
 * parity, ndata+1 .. 2*ndata new data, 2*ndata+1 new parity.
 */
static int r5_write_stripe(struct coh_raid *r, const struct raid_span *sp, const uint8_t *buf,
			   coh_raid_hook_fn hook, void *arg)
{
	uint32_t rows = sp->phi - sp->plo, pe = parity_elem(r, sp->stripe);
	size_t slot = (size_t)rows * r->block_size;
	uint64_t base = sp->stripe * r->chunk;
	bool announced = false, planned = false;
	unsigned int miss = 0;
	uint32_t attempt, d;
	uint8_t *sc;
	int ret;

	ret = scratch_new(2 * r->ndata + 2, slot, &sc);
	if (ret)
		return ret;
	/* Plan from the missing set and read the old contents. A read that fails marks its
	 * element missing and nothing has been written yet, so the stripe is planned again; a
	 * second element missing ends it, so there are at most three passes. READ_OLD is
	 * announced once however many passes read. */
	for (attempt = 0; attempt <= r->nelems && !planned; attempt++) {
		int mdata = -1;

		miss = missing_now(r);
		if (raid_lost(r, miss)) {
			ret = -EIO;
			goto out_free;
		}
		for (d = 0; d < r->ndata; d++)
			if (miss & bit(data_elem(r, sp->stripe, d)))
				mdata = (int)d;
		planned = true;
		if (sp->full || (miss & bit(pe)))
			continue;
		if (!announced) {
			announced = true;
			ret = run_hook(hook, arg, sp->stripe, COH_RAID_STEP_READ_OLD);
			if (ret)
				goto out_free;
		}
		ret = r5_read_old(r, sp, sc, slot, mdata);
		if (ret == -EAGAIN)
			planned = false;
		else if (ret)
			goto out_free;
	}
	if (!planned) {
		ret = -EIO;
		goto out_free;
	}
	if (!(miss & bit(pe))) {
		ret = r5_new_parity(r, sp, buf, sc, slot);
		if (ret)
			goto out_free;
	}

	ret = run_hook(hook, arg, sp->stripe, COH_RAID_STEP_WRITE_DATA);
	if (ret)
		goto out_free;
	for (d = 0; d < r->ndata; d++) {
		uint32_t e = data_elem(r, sp->stripe, d);

		if (!touched(sp, d) || (miss & bit(e)))
			continue;
		/* A data element that fails here is left behind: the parity about to be written
		 * already covers its new data, so it reconstructs to it. */
		ret = elem_write(r, e, base + sp->lo[d], sp->hi[d] - sp->lo[d], buf + sp->off[d]);
		if (ret == -EAGAIN)
			goto out_free;
		if (ret && raid_lost(r, missing_now(r))) {
			ret = -EIO;
			goto out_free;
		}
		ret = 0;
	}

	if (!(miss & bit(pe))) {
		ret = run_hook(hook, arg, sp->stripe, COH_RAID_STEP_WRITE_PARITY);
		if (ret)
			goto out_free;
		ret = elem_write(r, pe, base + sp->plo, rows, slot_at(sc, slot, 2 * r->ndata + 1));
		if (ret == -EAGAIN)
			goto out_free;
		if (ret && raid_lost(r, missing_now(r))) {
			ret = -EIO;
			goto out_free;
		}
	}
	ret = run_hook(hook, arg, sp->stripe, COH_RAID_STEP_DONE);
out_free:
	free(sc);
	return ret;
}

/*
 * r5_stripe_scan - every element's whole chunk of @stripe into slots 0 .. nelems-1 of @sc, the
 * data chunks first in order and the parity last (@with_parity) or not read. Returns 0 or
 * -EAGAIN after an element failed.
 */
static int r5_stripe_scan(struct coh_raid *r, uint64_t stripe, uint8_t *sc, size_t slot,
			  bool with_parity)
{
	uint64_t base = stripe * r->chunk;
	uint32_t d;

	for (d = 0; d < r->ndata; d++)
		if (elem_read(r, data_elem(r, stripe, d), base, r->chunk, slot_at(sc, slot, d)))
			return -EAGAIN;
	if (with_parity &&
	    elem_read(r, parity_elem(r, stripe), base, r->chunk, slot_at(sc, slot, r->ndata)))
		return -EAGAIN;
	return 0;
}

/* r5_check - whether @stripe's parity matches its data; the caller holds the stripe shared. */
static int r5_check(struct coh_raid *r, uint64_t stripe, uint8_t *sc, size_t slot, bool *ok)
{
	void *v[COH_RAID_MAX_ELEMS];
	uint32_t attempt, e;

	for (e = 0; e < r->nelems; e++)
		v[e] = slot_at(sc, slot, e);
	/* Bounded as in r5_read_stripe: a failed read adds a missing element. */
	for (attempt = 0; attempt <= r->nelems; attempt++) {
		unsigned int miss = missing_now(r);

		if (raid_lost(r, miss))
			return -EIO;
		if (miss) {
			/* Degraded: the missing element is whatever the others make it. */
			*ok = true;
			return 0;
		}
		if (r5_stripe_scan(r, stripe, sc, slot, true))
			continue;
		*ok = xor_check((int)r->nelems, (int)slot, v) == 0;
		return 0;
	}
	return -EIO;
}

/* r5_repair - recompute @stripe's parity from its data; the caller holds it exclusively. */
static int r5_repair(struct coh_raid *r, uint64_t stripe, uint8_t *sc, size_t slot)
{
	void *v[COH_RAID_MAX_ELEMS];
	uint32_t attempt, d;
	int ret;

	for (d = 0; d <= r->ndata; d++)
		v[d] = slot_at(sc, slot, d);
	for (attempt = 0; attempt <= r->nelems; attempt++) {
		unsigned int miss = missing_now(r);

		if (raid_lost(r, miss))
			return -EIO;
		/* Parity missing: nothing to recompute. A data element missing: its intended
		 * content is unknown, and recomputing would change what it reconstructs to. */
		if (miss)
			return 0;
		if (r5_stripe_scan(r, stripe, sc, slot, false))
			continue;
		ret = raid_xor(v, r->ndata, slot);
		if (ret)
			return ret;
		/* A parity element that fails here leaves the data, which is what counts. */
		ret =
		    elem_write(r, parity_elem(r, stripe), stripe * r->chunk, r->chunk, v[r->ndata]);
		if (ret == -EAGAIN)
			return ret;
		if (ret)
			return raid_lost(r, missing_now(r)) ? -EIO : 0;
		return 0;
	}
	return -EIO;
}

/* RAID-1. */

/* first_present - the lowest element not in @miss, or nelems if none. */
static uint32_t first_present(const struct coh_raid *r, unsigned int miss)
{
	uint32_t e;

	for (e = 0; e < r->nelems; e++)
		if (!(miss & bit(e)))
			break;
	return e;
}

/* r1_read_stripe - the touched rows of @sp from the first mirror that can read them. */
static int r1_read_stripe(struct coh_raid *r, const struct raid_span *sp, uint8_t *buf)
{
	uint32_t attempt;

	/* Each failed read marks one more mirror missing: at most nelems passes. */
	for (attempt = 0; attempt < r->nelems; attempt++) {
		uint32_t e = first_present(r, missing_now(r));

		if (e == r->nelems)
			return -EIO;
		if (!elem_read(r, e, sp->stripe * r->chunk + sp->lo[0], sp->hi[0] - sp->lo[0],
			       buf + sp->off[0]))
			return 0;
	}
	return -EIO;
}

/* r1_write_stripe - one stripe's stepped update: every present mirror. Exclusive holder. */
static int r1_write_stripe(struct coh_raid *r, const struct raid_span *sp, const uint8_t *buf,
			   coh_raid_hook_fn hook, void *arg)
{
	unsigned int miss;
	uint32_t e, written = 0;
	int ret;

	ret = run_hook(hook, arg, sp->stripe, COH_RAID_STEP_WRITE_DATA);
	if (ret)
		return ret;
	miss = missing_now(r);
	for (e = 0; e < r->nelems; e++) {
		if (miss & bit(e))
			continue;
		ret = elem_write(r, e, sp->stripe * r->chunk + sp->lo[0], sp->hi[0] - sp->lo[0],
				 buf + sp->off[0]);
		if (ret == -EAGAIN)
			return ret;
		if (!ret)
			written++;
	}
	if (!written)
		return -EIO;
	return run_hook(hook, arg, sp->stripe, COH_RAID_STEP_DONE);
}

/*
 * r1_check - whether every present mirror holds the same @rows of @stripe (slots 0 and 1 of
 * @sc); shared holder.
 */
static int r1_check(struct coh_raid *r, uint64_t stripe, uint32_t rows, uint8_t *sc, size_t slot,
		    bool *ok)
{
	uint64_t base = stripe * r->chunk;
	uint32_t attempt, e;

	for (attempt = 0; attempt < r->nelems; attempt++) {
		unsigned int miss = missing_now(r);
		uint32_t first = first_present(r, miss);
		bool failed = false;

		if (first == r->nelems)
			return -EIO;
		if (elem_read(r, first, base, rows, slot_at(sc, slot, 0)))
			continue;
		*ok = true;
		for (e = first + 1; e < r->nelems && !failed; e++) {
			if (miss & bit(e))
				continue;
			failed = elem_read(r, e, base, rows, slot_at(sc, slot, 1)) != 0;
			if (!failed && memcmp(slot_at(sc, slot, 0), slot_at(sc, slot, 1), slot))
				*ok = false;
		}
		if (!failed)
			return 0;
	}
	return -EIO;
}

/* r1_repair - copy the first present mirror's @rows of @stripe over the others. Exclusive. */
static int r1_repair(struct coh_raid *r, uint64_t stripe, uint32_t rows, uint8_t *sc)
{
	uint64_t base = stripe * r->chunk;
	uint32_t attempt, e;

	for (attempt = 0; attempt < r->nelems; attempt++) {
		unsigned int miss = missing_now(r);
		uint32_t first = first_present(r, miss);

		if (first == r->nelems)
			return -EIO;
		if (elem_read(r, first, base, rows, sc))
			continue;
		/* A mirror that fails to take the copy is marked missing; the source remains. */
		for (e = first + 1; e < r->nelems; e++)
			if (!(miss & bit(e)) && elem_write(r, e, base, rows, sc) == -EAGAIN)
				return -EAGAIN;
		return 0;
	}
	return -EIO;
}

/* The public API. */

int coh_raid_new(const struct coh_raid_attr *a, struct coh_raid **rp)
{
	uint64_t elem_blocks = UINT64_MAX;
	uint32_t i, j, chunk, bs = 0, present = 0;
	unsigned int miss = 0;
	struct coh_raid *r;
	int ret;

	if (!a || !rp)
		return -EINVAL;
	if (!(a->level == COH_RAID1 && a->nelems >= 2 && a->nelems <= COH_RAID_MAX_ELEMS) &&
	    !(a->level == COH_RAID5 && a->nelems >= 3 && a->nelems <= COH_RAID_MAX_ELEMS))
		return -EINVAL;
	chunk = a->chunk_blocks ? a->chunk_blocks : 1;
	for (i = 0; i < a->nelems; i++) {
		struct coh_store *s = a->elems[i];

		if (!s) {
			miss |= bit(i);
			continue;
		}
		for (j = 0; j < i; j++)
			if (a->elems[j] == s)
				return -EINVAL;
		if (present && coh_store_block_size(s) != bs)
			return -EINVAL;
		present++;
		bs = coh_store_block_size(s);
		if (coh_store_nblocks(s) < elem_blocks)
			elem_blocks = coh_store_nblocks(s);
	}
	if (!present || (a->level == COH_RAID5 && a->nelems - present > 1))
		return -EINVAL;
	/* The size limits keep every scratch length inside xor_gen's int and every product
	 * below inside 64 bits. */
	if ((uint64_t)chunk * bs > COH_RAID_MAX_CHUNK_BYTES || chunk > elem_blocks ||
	    elem_blocks > UINT64_MAX / COH_RAID_MAX_ELEMS)
		return -EINVAL;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (i = 0; i < RAID_NLOCKS; i++) {
		ret = -pthread_rwlock_init(&r->locks[i], NULL);
		if (ret)
			goto err_destroy_locks;
	}
	r->level = a->level;
	r->nelems = a->nelems;
	r->ndata = a->level == COH_RAID5 ? a->nelems - 1 : 1;
	r->chunk = chunk;
	r->block_size = bs;
	memcpy(r->elems, a->elems, a->nelems * sizeof(r->elems[0]));
	r->on_missing = a->on_missing;
	r->on_missing_arg = a->arg;
	r->may_write = a->may_write;
	atomic_init(&r->missing, miss);
	if (a->level == COH_RAID5) {
		r->nstripes = elem_blocks / chunk;
		r->elem_blocks = r->nstripes * chunk;
		r->nblocks = r->nstripes * r->ndata * chunk;
	} else {
		r->nstripes = (elem_blocks + chunk - 1) / chunk;
		r->elem_blocks = elem_blocks;
		r->nblocks = elem_blocks;
	}
	*rp = r;
	return 0;

err_destroy_locks:
	while (i--)
		pthread_rwlock_destroy(&r->locks[i]);
	free(r);
	return ret;
}

int coh_raid_delete(struct coh_raid **rp)
{
	struct coh_raid *r;
	uint32_t i;

	if (!rp || !*rp)
		return 0;
	r = *rp;
	*rp = NULL;
	for (i = 0; i < RAID_NLOCKS; i++)
		pthread_rwlock_destroy(&r->locks[i]);
	free(r);
	return 0;
}

uint32_t coh_raid_block_size(const struct coh_raid *r)
{
	return r ? r->block_size : 0;
}

uint64_t coh_raid_nblocks(const struct coh_raid *r)
{
	return r ? r->nblocks : 0;
}

uint32_t coh_raid_stripe_blocks(const struct coh_raid *r)
{
	return r ? r->ndata * r->chunk : 0;
}

uint64_t coh_raid_nstripes(const struct coh_raid *r)
{
	return r ? r->nstripes : 0;
}

uint64_t coh_raid_stripe_of(const struct coh_raid *r, uint64_t lba)
{
	if (!r || lba >= r->nblocks)
		return UINT64_MAX;
	return lba / ((uint64_t)r->ndata * r->chunk);
}

int coh_raid_read(struct coh_raid *r, uint64_t lba, uint32_t n, void *buf)
{
	uint64_t s, first, last, sb;
	struct raid_span sp;
	int ret = 0;

	if (!r || !buf || !range_ok(r, lba, n))
		return -EINVAL;
	sb = (uint64_t)r->ndata * r->chunk;
	first = lba / sb;
	last = (lba + n - 1) / sb;
	for (s = first; s <= last && !ret; s++) {
		span_init(r, s, lba, n, &sp);
		pthread_rwlock_rdlock(stripe_lock(r, s));
		if (r->level == COH_RAID5)
			ret = r5_read_stripe(r, &sp, buf);
		else
			ret = r1_read_stripe(r, &sp, buf);
		pthread_rwlock_unlock(stripe_lock(r, s));
	}
	return ret;
}

int coh_raid_write_stepped(struct coh_raid *r, uint64_t lba, uint32_t n, const void *buf,
			   coh_raid_hook_fn hook, void *arg)
{
	uint64_t s, first, last, sb;
	struct raid_span sp;
	int ret = 0;

	if (!r || !buf || !range_ok(r, lba, n))
		return -EINVAL;
	sb = (uint64_t)r->ndata * r->chunk;
	first = lba / sb;
	last = (lba + n - 1) / sb;
	/* Ascending stripe order, one stripe lock at a time: a survivor replaying the write
	 * knows that the stripes before an interrupted one are complete. */
	for (s = first; s <= last && !ret; s++) {
		span_init(r, s, lba, n, &sp);
		pthread_rwlock_wrlock(stripe_lock(r, s));
		if (r->level == COH_RAID5)
			ret = r5_write_stripe(r, &sp, buf, hook, arg);
		else
			ret = r1_write_stripe(r, &sp, buf, hook, arg);
		pthread_rwlock_unlock(stripe_lock(r, s));
	}
	return ret;
}

int coh_raid_write(struct coh_raid *r, uint64_t lba, uint32_t n, const void *buf)
{
	return coh_raid_write_stepped(r, lba, n, buf, NULL, NULL);
}

int coh_raid_stripe_repair(struct coh_raid *r, uint64_t stripe)
{
	uint32_t rows;
	size_t slot;
	uint8_t *sc;
	int ret;

	if (!r || stripe >= r->nstripes)
		return -EINVAL;
	rows = stripe_rows(r, stripe);
	slot = (size_t)rows * r->block_size;
	ret = scratch_new(r->level == COH_RAID5 ? r->nelems : 1, slot, &sc);
	if (ret)
		return ret;
	pthread_rwlock_wrlock(stripe_lock(r, stripe));
	if (r->level == COH_RAID5)
		ret = r5_repair(r, stripe, sc, slot);
	else
		ret = r1_repair(r, stripe, rows, sc);
	pthread_rwlock_unlock(stripe_lock(r, stripe));
	free(sc);
	return ret;
}

int coh_raid_stripe_check(struct coh_raid *r, uint64_t stripe, bool *ok)
{
	uint32_t rows;
	size_t slot;
	uint8_t *sc;
	int ret;

	if (!r || !ok || stripe >= r->nstripes)
		return -EINVAL;
	rows = stripe_rows(r, stripe);
	slot = (size_t)rows * r->block_size;
	ret = scratch_new(r->level == COH_RAID5 ? r->nelems : 2, slot, &sc);
	if (ret)
		return ret;
	pthread_rwlock_rdlock(stripe_lock(r, stripe));
	if (r->level == COH_RAID5)
		ret = r5_check(r, stripe, sc, slot, ok);
	else
		ret = r1_check(r, stripe, rows, sc, slot, ok);
	pthread_rwlock_unlock(stripe_lock(r, stripe));
	free(sc);
	return ret;
}

int coh_raid_flush(struct coh_raid *r)
{
	unsigned int miss;
	uint32_t e;
	int ret;

	if (!r)
		return -EINVAL;
	miss = missing_now(r);
	for (e = 0; e < r->nelems; e++) {
		if (miss & bit(e))
			continue;
		ret = coh_store_flush(r->elems[e]);
		if (ret)
			elem_failed(r, e, "flush", 0, ret);
	}
	return raid_lost(r, missing_now(r)) ? -EIO : 0;
}

int coh_raid_fail_element(struct coh_raid *r, uint32_t idx)
{
	unsigned int old;

	if (!r || idx >= r->nelems)
		return -EINVAL;
	old = atomic_fetch_or_explicit(&r->missing, bit(idx), memory_order_acq_rel);
	if (!(old & bit(idx))) {
		COH_LOG_WARN("raid element %u marked missing; missing now %#x", idx,
			     old | bit(idx));
		if (r->on_missing)
			r->on_missing(r->on_missing_arg, old | bit(idx));
	}
	return 0;
}

uint32_t coh_raid_missing(const struct coh_raid *r)
{
	/* The bitmap is only read here; the cast drops const for C11's atomic_load signature. */
	return r ? atomic_load_explicit((atomic_uint *)&r->missing, memory_order_acquire) : 0;
}

/* The store view. */

static int rstore_read(void *ctx, uint64_t lba, uint32_t n, void *buf)
{
	return coh_raid_read(ctx, lba, n, buf);
}

static int rstore_write(void *ctx, uint64_t lba, uint32_t n, const void *buf)
{
	return coh_raid_write(ctx, lba, n, buf);
}

static int rstore_flush(void *ctx)
{
	return coh_raid_flush(ctx);
}

/* No close: the store view does not own the group. */
static const struct coh_store_ops raid_store_ops = {
	.read = rstore_read,
	.write = rstore_write,
	.flush = rstore_flush,
};

int coh_raid_store_new(struct coh_raid *r, struct coh_store **sp)
{
	if (!r || !sp)
		return -EINVAL;
	return coh_store_new(&raid_store_ops, r, r->block_size, r->nblocks, sp);
}
