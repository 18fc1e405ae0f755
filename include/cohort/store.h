/*
 * store.h - the backing store under a cache: a volume of fixed-size blocks that every node can
 * read and write. It is an interface (struct coh_store_ops), so that a redundancy group can sit
 * behind it later; this file also provides one implementation for a file or block device shared
 * by all nodes, with I/O through liburing.
 *
 * Thread safety: every coh_store_* call may be made from any thread; implementations serialise
 * internally. Errors are negative errnos; a short transfer is retried, never reported as success.
 */
#ifndef COHORT_STORE_H
#define COHORT_STORE_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct coh_store;

/**
 * struct coh_store_ops - what a backing store implements. @ctx is the pointer given to
 * coh_store_new(). Ranges have been checked against the store's size before these are called.
 */
struct coh_store_ops {
	int (*read)(void *ctx, uint64_t lba, uint32_t nblocks, void *buf);
	int (*write)(void *ctx, uint64_t lba, uint32_t nblocks, const void *buf);
	int (*flush)(void *ctx);
	void (*close)(void *ctx);
};

/**
 * coh_store_new - wrap an implementation. @block_size is a power of two, 512 .. 1 MiB;
 * @nblocks > 0. On success the store owns @ctx and calls ops->close(ctx) when deleted.
 * Returns 0, -EINVAL or -ENOMEM.
 */
int coh_store_new(const struct coh_store_ops *ops, void *ctx, uint32_t block_size, uint64_t nblocks,
		  struct coh_store **storep);

/**
 * coh_store_open_file - a store on a file or block device, with liburing I/O.
 * @create: create the file (sparse, @nblocks * @block_size bytes) if it does not exist, or grow
 *          an existing empty one; an existing file with data must be at least that large (a
 *          shorter one lost data: -ENOSPC, and nothing is changed)
 * Returns 0, -EINVAL, -ENOSPC (file too small), -ENOMEM, or open/io_uring's errno.
 */
int coh_store_open_file(const char *path, uint32_t block_size, uint64_t nblocks, bool create,
			struct coh_store **storep);

/**
 * coh_store_set_write_gate - for a file store whose writes a caller guards by a check (a
 * clustered user's lease: docs/recovery.md, "Fencing"), so that no write lands after a pause
 * past that check. The store then writes in the caller's own thread (pwrite; an io_uring worker
 * can hold a write across its process's SIGSTOP), and @gate is asked, with @arg, before a write
 * the kernel interrupted or cut short is issued again: anything but 0 ends the write with
 * -EAGAIN, part of it possibly done. The first issue is the caller's to check. @gate NULL
 * undoes it. Set it before the store is shared.
 * Returns 0, -EINVAL, or -EOPNOTSUPP for a store that is not a file store.
 */
int coh_store_set_write_gate(struct coh_store *s, int (*gate)(void *arg), void *arg);

/** coh_store_delete - close and free. @storep may point to NULL; set to NULL on return. */
int coh_store_delete(struct coh_store **storep);

/** coh_store_read - read @nblocks blocks at @lba. -EINVAL outside the store. */
int coh_store_read(struct coh_store *s, uint64_t lba, uint32_t nblocks, void *buf);
/** coh_store_write - write @nblocks blocks at @lba. -EINVAL outside the store. */
int coh_store_write(struct coh_store *s, uint64_t lba, uint32_t nblocks, const void *buf);
/** coh_store_flush - make completed writes durable (fsync for the file store). */
int coh_store_flush(struct coh_store *s);
uint32_t coh_store_block_size(const struct coh_store *s);
uint64_t coh_store_nblocks(const struct coh_store *s);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_STORE_H */
