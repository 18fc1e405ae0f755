/*
 * raid.h - redundancy groups: RAID-1 (mirror) and RAID-5 (rotating parity) over storage elements,
 * each element a struct coh_store. A group presents one volume of blocks; its stripe is the
 * resource (lock unit) of the coherent cache laid on it, so that one node at a time updates a
 * stripe's data and parity. docs/raid.md describes the layout, degraded mode and the stepped
 * update that a replicated write-back destage uses.
 *
 * What is guaranteed: a write that returns 0 has reached every present element of every stripe it
 * touched (durable after coh_raid_flush), and the parity of those stripes was updated to match if
 * it matched before; a read returns the last data written, reconstructed when an element is
 * missing. What is not: atomicity of a stripe update against a crash (the write hole;
 * coh_raid_stripe_repair closes it when every element is present), rebuild of a replaced element,
 * and RAID-6.
 *
 * Thread safety: every call except coh_raid_new and coh_raid_delete may be made from any thread,
 * concurrently. Updates of one stripe are serialised inside the group, so two never interleave
 * within a process; across processes the cluster's lock on the stripe does that. Errors are
 * negative errnos.
 */
#ifndef COHORT_RAID_H
#define COHORT_RAID_H

#include <stdbool.h>
#include <stdint.h>

#include "cohort/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define COH_RAID_MAX_ELEMS 16
/* One chunk on one element is at most this many bytes (chunk_blocks * block size). */
#define COH_RAID_MAX_CHUNK_BYTES (1u << 20)

enum coh_raid_level {
	COH_RAID1 = 1,
	COH_RAID5 = 5,
};

struct coh_raid;

/**
 * struct coh_raid_attr - how to assemble a redundancy group.
 * @level: COH_RAID1 or COH_RAID5
 * @nelems: number of elements: RAID-1 2..16, RAID-5 3..16
 * @elems: the elements, in group order (the order is the layout: keep it across openings). NULL
 *         marks a missing element: the group opens degraded. Not owned; each must outlive the
 *         group, and one store may appear only once.
 * @chunk_blocks: blocks per chunk (the strip unit on one element); 0 means 1. At most
 *                COH_RAID_MAX_CHUNK_BYTES worth, and at most one element's size.
 * @on_missing: if set, called with @arg and the new bitmap each time an element becomes missing
 *              (an I/O error, or coh_raid_fail_element), on the thread that found it, before
 *              any operation goes on without the element. It must not block: a clustered user
 *              tells the others (each node that shares the elements must stop using the
 *              element too, or it reads data that degraded writes no longer put there).
 * @may_write: if set, asked with @arg right before each write to an element; anything but 0
 *             stops the operation with -EAGAIN, and no element is marked failed for it. A
 *             clustered user gates on its lease there: checked once per step, a lease lets a
 *             node stopped in the middle of a step's writes (a pause) finish them after the
 *             others have taken its stripes over; checked before each write, only the few
 *             instructions between the check and the write remain (docs/recovery.md).
 */
struct coh_raid_attr {
	enum coh_raid_level level;
	uint32_t nelems;
	struct coh_store *elems[COH_RAID_MAX_ELEMS];
	uint32_t chunk_blocks;
	void (*on_missing)(void *arg, uint32_t missing);
	void *arg;
	int (*may_write)(void *arg);
};

/**
 * enum coh_raid_step - the steps of one stripe's update, in order; see coh_raid_write_stepped().
 * @COH_RAID_STEP_READ_OLD: read the old data of the blocks written and the old parity (RAID-5
 *                          partial-stripe update only)
 * @COH_RAID_STEP_WRITE_DATA: write the new data (RAID-1: to every present mirror)
 * @COH_RAID_STEP_WRITE_PARITY: write the new parity (RAID-5 with its parity element present)
 * @COH_RAID_STEP_DONE: the stripe is updated
 */
enum coh_raid_step {
	COH_RAID_STEP_READ_OLD = 1,
	COH_RAID_STEP_WRITE_DATA = 2,
	COH_RAID_STEP_WRITE_PARITY = 3,
	COH_RAID_STEP_DONE = 4,
};

/**
 * coh_raid_hook_fn - called before each step of a stripe's update takes effect.
 * @arg: the pointer given to coh_raid_write_stepped()
 * @stripe: the stripe being updated
 * @step: the step about to be taken
 *
 * Called on the writing thread with the stripe's internal lock held: it must not call into the
 * same group for the same stripe. Returns 0 to go on; anything else aborts the write there and is
 * returned by coh_raid_write_stepped().
 */
typedef int (*coh_raid_hook_fn)(void *arg, uint64_t stripe, enum coh_raid_step step);

/**
 * coh_raid_new - assemble a group over its elements.
 * @a: the attributes (copied)
 * @rp: receives the group; untouched on failure
 *
 * Every present element must have the same block size; the group uses as many blocks of each as
 * the smallest present element has (a missing element is assumed to be at least that large).
 * Returns 0, -EINVAL (NULL pointer, unknown level, element count out of range, block sizes that
 * differ, an element given twice, chunk too large, RAID-5 with more than one element missing,
 * RAID-1 with none present) or -ENOMEM.
 */
int coh_raid_new(const struct coh_raid_attr *a, struct coh_raid **rp);

/**
 * coh_raid_delete - free a group. Does not close or flush its elements. @rp may point to NULL;
 * set to NULL on return. No call on the group may be in progress. Returns 0.
 */
int coh_raid_delete(struct coh_raid **rp);

/** coh_raid_block_size - the group's block size (its elements'); 0 for NULL. */
uint32_t coh_raid_block_size(const struct coh_raid *r);

/**
 * coh_raid_nblocks - usable data blocks: RAID-1 the smallest element's size, RAID-5 the whole
 * stripes that fit in the smallest element times the data blocks of a stripe. 0 for NULL.
 */
uint64_t coh_raid_nblocks(const struct coh_raid *r);

/**
 * coh_raid_stripe_blocks - data blocks per stripe: RAID-5 (nelems - 1) * chunk_blocks, RAID-1
 * chunk_blocks. The stripe is the lock unit (resource) of a cache on the group. 0 for NULL.
 */
uint32_t coh_raid_stripe_blocks(const struct coh_raid *r);

/**
 * coh_raid_nstripes - number of stripes (RAID-1: the last one may be short). 0 for NULL.
 */
uint64_t coh_raid_nstripes(const struct coh_raid *r);

/**
 * coh_raid_stripe_of - the stripe holding data block @lba: lba / coh_raid_stripe_blocks().
 * UINT64_MAX for NULL or an @lba beyond the group.
 */
uint64_t coh_raid_stripe_of(const struct coh_raid *r, uint64_t lba);

/**
 * coh_raid_read - read @n blocks at @lba into @buf (any alignment). Data of a missing element is
 * reconstructed: RAID-5 as the XOR of the stripe's other elements, RAID-1 from any present
 * mirror. An element whose read fails is marked failed and the read goes on degraded.
 * Returns 0, -EINVAL (NULL, @n == 0, range beyond the group), -ENOMEM, or -EIO when the data
 * cannot be had (RAID-5 with two elements missing, RAID-1 with none).
 */
int coh_raid_read(struct coh_raid *r, uint64_t lba, uint32_t n, void *buf);

/**
 * coh_raid_write - write @n blocks at @lba from @buf (any alignment):
 * coh_raid_write_stepped() without a hook.
 */
int coh_raid_write(struct coh_raid *r, uint64_t lba, uint32_t n, const void *buf);

/**
 * coh_raid_write_stepped - write @n blocks at @lba, one stripe at a time, in ascending stripe
 * order, calling @hook before each step of each stripe's update.
 * @hook: may be NULL
 * @arg: passed to @hook
 *
 * The steps of one stripe: RAID-5 partial stripe READ_OLD, WRITE_DATA, WRITE_PARITY, DONE
 * (read-modify-write: new parity = old parity ^ old data ^ new data); RAID-5 full stripe
 * WRITE_DATA, WRITE_PARITY, DONE (parity from the new data); RAID-1 WRITE_DATA, DONE. Degraded:
 * with the parity element missing there is no READ_OLD and no WRITE_PARITY; with the element of
 * a block written missing, READ_OLD reads the rest of the stripe instead, so that the missing
 * block reconstructs to the new data. A step that has no effect is still announced. An element
 * whose I/O fails is marked failed and the update goes on degraded.
 *
 * Returns 0; the hook's nonzero value (stripes before the current one are updated, the current
 * one is left as the steps before the abort made it); -EINVAL, -ENOMEM; or -EIO when the update
 * cannot be completed (a second element failure in RAID-5, every mirror failed in RAID-1).
 */
int coh_raid_write_stepped(struct coh_raid *r, uint64_t lba, uint32_t n, const void *buf,
			   coh_raid_hook_fn hook, void *arg);

/**
 * coh_raid_stripe_repair - finish an interrupted update of @stripe: RAID-5 recomputes the parity
 * from the data blocks, RAID-1 copies the first present mirror over the others. Idempotent:
 * callable any number of times, after an abort at any step. A survivor that holds the new data
 * in its log first rewrites the data (coh_raid_write of it is itself idempotent), then calls
 * this. With a RAID-5 element missing the stripe is left as it is and 0 returned: with the
 * parity missing there is nothing to recompute, and with a data element missing its intended
 * content cannot be known (the write hole, docs/raid.md).
 * Returns 0, -EINVAL (NULL, @stripe out of range), -ENOMEM, or -EIO (too many elements failed).
 */
int coh_raid_stripe_repair(struct coh_raid *r, uint64_t stripe);

/**
 * coh_raid_stripe_check - consistency of @stripe, for tests and scrubbing. Sets *@ok to whether
 * the parity matches the data (RAID-5) or every present mirror holds the same blocks (RAID-1).
 * Missing elements are skipped, so a degraded RAID-5 stripe is always ok. Changes nothing.
 * Returns 0, -EINVAL, -ENOMEM or -EIO (too many elements failed).
 */
int coh_raid_stripe_check(struct coh_raid *r, uint64_t stripe, bool *ok);

/**
 * coh_raid_flush - flush every present element. An element whose flush fails is marked failed.
 * Returns 0, -EINVAL, or -EIO when too many elements failed to leave the data redundant enough
 * to be read (RAID-5 two, RAID-1 all).
 */
int coh_raid_flush(struct coh_raid *r);

/**
 * coh_raid_store_new - a store view of the group, so that a cache can be laid on it: reads and
 * writes go to coh_raid_read/coh_raid_write, flush to coh_raid_flush. The store does not own
 * the group, which must outlive it; free it with coh_store_delete().
 * Returns 0, -EINVAL or -ENOMEM; *@sp untouched on failure.
 */
int coh_raid_store_new(struct coh_raid *r, struct coh_store **sp);

/**
 * coh_raid_fail_element - mark element @idx missing from now on (an element's I/O error does the
 * same). Operations already under way may still use it. There is no way back in this group: a
 * replaced element needs a rebuild, which this module does not do. Failing an element that is
 * already missing is a no-op. Returns 0 or -EINVAL.
 */
int coh_raid_fail_element(struct coh_raid *r, uint32_t idx);

/** coh_raid_missing - bitmap of the missing elements (bit i = element i). 0 for NULL. */
uint32_t coh_raid_missing(const struct coh_raid *r);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_RAID_H */
