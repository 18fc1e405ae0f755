/*
 * store.c - the backing-store interface and its file implementation.
 *
 * coh_store_* check ranges and dispatch to an implementation. The file store keeps one io_uring
 * per store, guarded by a mutex (I/O from the application thread and the cache's service thread
 * is serialised; a store is not the cache's fast path). Buffered I/O is used, so node processes
 * on one host share the page cache and see each other's writes at once; flush is an fsync. A
 * gated store (coh_store_set_write_gate: a shared element a lease guards) writes with pwrite in
 * the caller's thread instead of the ring (file_write_gated says why).
 * What this file leaves out: O_DIRECT, and queue depths above one per call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cohort/log.h"
#include "cohort/store.h"

struct coh_store {
	const struct coh_store_ops *ops;
	void *ctx;
	uint32_t block_size;
	uint64_t nblocks;
};

int coh_store_new(const struct coh_store_ops *ops, void *ctx, uint32_t block_size, uint64_t nblocks,
		  struct coh_store **storep)
{
	struct coh_store *s;

	if (!ops || !ops->read || !ops->write || !ops->flush || !storep || !nblocks ||
	    block_size < 512 || block_size > (1u << 20) || (block_size & (block_size - 1)))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ops = ops;
	s->ctx = ctx;
	s->block_size = block_size;
	s->nblocks = nblocks;
	*storep = s;
	return 0;
}

int coh_store_delete(struct coh_store **storep)
{
	struct coh_store *s;

	if (!storep || !*storep)
		return 0;
	s = *storep;
	*storep = NULL;
	if (s->ops->close)
		s->ops->close(s->ctx);
	free(s);
	return 0;
}

static bool range_ok(const struct coh_store *s, uint64_t lba, uint32_t n)
{
	return n && lba < s->nblocks && n <= s->nblocks - lba;
}

int coh_store_read(struct coh_store *s, uint64_t lba, uint32_t nblocks, void *buf)
{
	if (!s || !buf || !range_ok(s, lba, nblocks))
		return -EINVAL;
	return s->ops->read(s->ctx, lba, nblocks, buf);
}

int coh_store_write(struct coh_store *s, uint64_t lba, uint32_t nblocks, const void *buf)
{
	if (!s || !buf || !range_ok(s, lba, nblocks))
		return -EINVAL;
	return s->ops->write(s->ctx, lba, nblocks, buf);
}

int coh_store_flush(struct coh_store *s)
{
	return s ? s->ops->flush(s->ctx) : -EINVAL;
}

uint32_t coh_store_block_size(const struct coh_store *s)
{
	return s ? s->block_size : 0;
}

uint64_t coh_store_nblocks(const struct coh_store *s)
{
	return s ? s->nblocks : 0;
}

/* The file store. */

/* struct file_store - @lock guards @ring. @gate (coh_store_set_write_gate) is set before the store
 * is shared and only read afterwards. */
struct file_store {
	int fd;
	uint32_t block_size;
	pthread_mutex_t lock;
	struct io_uring ring;
	int (*gate)(void *arg);
	void *gate_arg;
};

/* How many times file_io issues an operation again that the kernel ended with EINTR or EAGAIN. */
#define FILE_IO_RETRIES 100

/* file_io - one read, write or fsync through the ring, resubmitting after short transfers. */
static int file_io(struct file_store *fs, int op, uint64_t off, void *buf, size_t len)
{
	size_t done = 0;
	int ret = 0, retries = 0;

	pthread_mutex_lock(&fs->lock);
	do {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&fs->ring);
		struct io_uring_cqe *cqe;

		if (!sqe) {
			ret = -EBUSY;
			break;
		}
		if (op == 0)
			io_uring_prep_read(sqe, fs->fd, (char *)buf + done, (unsigned)(len - done),
					   off + done);
		else if (op == 1)
			io_uring_prep_write(sqe, fs->fd, (char *)buf + done, (unsigned)(len - done),
					    off + done);
		else
			io_uring_prep_fsync(sqe, fs->fd, 0);
		ret = io_uring_submit(&fs->ring);
		if (ret < 0)
			break;
		/* A signal (a SIGSTOP/SIGCONT pause, a child's exit) interrupts the wait, not the
		 * operation: it is still in flight, and leaving it there would hand its completion
		 * to the next caller. Wait for it again. */
		do
			ret = io_uring_wait_cqe(&fs->ring, &cqe);
		while (ret == -EINTR);
		if (ret < 0)
			break;
		ret = cqe->res;
		io_uring_cqe_seen(&fs->ring, cqe);
		/* An operation the kernel itself ended early by a signal is simply issued again
		 * (a bounded number of times). So is one it cancelled: an io-wq worker that a
		 * signal made exit (a SIGSTOP/SIGCONT pause) cancels the work it held. Counted a
		 * failure, it made the element missing for good, for a pause (the rdma takeover
		 * trial with a paused node, in the rig). The same bytes at the same place again. */
		if ((ret == -EINTR || ret == -EAGAIN || ret == -ECANCELED) &&
		    ++retries < FILE_IO_RETRIES)
			continue;
		if (ret < 0)
			break;
		if (op == 2)
			break;
		if (ret == 0) {
			/* Reading past the end of a sparse file cannot happen (its size was
			 * checked), so zero bytes means the file shrank under us. */
			ret = -EIO;
			break;
		}
		done += (size_t)ret;
		ret = 0;
	} while (op == 2 || done < len);
	pthread_mutex_unlock(&fs->lock);
	if (ret < 0)
		COH_LOG_ERR("store I/O (op %d, offset %llu, %zu bytes): %s", op,
			    (unsigned long long)off, len, strerror(-ret));
	return ret < 0 ? ret : 0;
}

static int file_read(void *ctx, uint64_t lba, uint32_t n, void *buf)
{
	struct file_store *fs = ctx;

	return file_io(fs, 0, lba * fs->block_size, buf, (size_t)n * fs->block_size);
}

/*
 * file_write_gated - a gated store's write (coh_store_set_write_gate), by the caller's own thread:
 * pwrite, not the ring. A write the ring hands to an io-wq worker is done by that worker, which
 * stops with its process at a SIGSTOP and goes on after it, or is cancelled and issued again
 * here: either way it lands after the pause, past the caller's check that it may write. A
 * pwrite to a file is done by the time its thread can stop. What is issued again (after a
 * signal or a short transfer) asks the gate first.
 */
static int file_write_gated(struct file_store *fs, uint64_t off, const uint8_t *buf, size_t len)
{
	size_t done = 0;
	int retries = 0;

	while (done < len) {
		ssize_t r;

		if ((done || retries) && fs->gate(fs->gate_arg)) {
			COH_LOG_WARN(
			    "store write at offset %llu (%zu of %zu bytes done) interrupted "
			    "and not issued again: its writer may no longer write",
			    (unsigned long long)off, done, len);
			return -EAGAIN;
		}
		r = pwrite(fs->fd, buf + done, len - done, (off_t)(off + done));
		if (r < 0 && (errno == EINTR || errno == EAGAIN) && ++retries < FILE_IO_RETRIES)
			continue;
		if (r < 0) {
			int err = errno;

			COH_LOG_ERR("store write (offset %llu, %zu bytes): %s",
				    (unsigned long long)off, len, strerror(err));
			return err == EAGAIN ? -EIO : -err;
		}
		if (r == 0) {
			COH_LOG_ERR("store write (offset %llu, %zu bytes): no progress",
				    (unsigned long long)off, len);
			return -EIO;
		}
		done += (size_t)r;
	}
	return 0;
}

static int file_write(void *ctx, uint64_t lba, uint32_t n, const void *buf)
{
	struct file_store *fs = ctx;

	if (fs->gate)
		return file_write_gated(fs, lba * fs->block_size, buf, (size_t)n * fs->block_size);
	return file_io(fs, 1, lba * fs->block_size, (void *)buf, (size_t)n * fs->block_size);
}

static int file_flush(void *ctx)
{
	return file_io(ctx, 2, 0, NULL, 0);
}

static void file_close(void *ctx)
{
	struct file_store *fs = ctx;

	io_uring_queue_exit(&fs->ring);
	pthread_mutex_destroy(&fs->lock);
	close(fs->fd);
	free(fs);
}

static const struct coh_store_ops file_store_ops = {
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.close = file_close,
};

int coh_store_open_file(const char *path, uint32_t block_size, uint64_t nblocks, bool create,
			struct coh_store **storep)
{
	struct file_store *fs;
	struct stat st;
	uint64_t bytes;
	bool created;
	int ret;

	if (!path || !storep || !nblocks || block_size < 512 || (block_size & (block_size - 1)) ||
	    nblocks > UINT64_MAX / block_size)
		return -EINVAL;
	bytes = nblocks * block_size;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->block_size = block_size;
	fs->fd = create ? open(path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600) : -1;
	created = fs->fd >= 0;
	if (!created)
		fs->fd = open(path, O_RDWR | O_CLOEXEC);
	if (fs->fd < 0) {
		ret = -errno;
		COH_LOG_ERR("store %s: %s", path, strerror(errno));
		goto err_free;
	}
	if (fstat(fs->fd, &st) < 0) {
		ret = -errno;
		goto err_close;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < bytes) {
		/* Only a file that holds nothing yet is grown: a shorter one that holds data was
		 * cut (or is not ours), and growing it would serve zeros for what it lost. */
		if (!create || (!created && st.st_size) || ftruncate(fs->fd, (off_t)bytes) < 0) {
			ret = create && (created || !st.st_size) ? -errno : -ENOSPC;
			COH_LOG_ERR(
			    "store %s is %llu bytes, smaller than the %llu it must be: refused",
			    path, (unsigned long long)st.st_size, (unsigned long long)bytes);
			goto err_close;
		}
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t dev_bytes = 0;

		if (ioctl(fs->fd, BLKGETSIZE64, &dev_bytes) < 0) {
			ret = -errno;
			COH_LOG_ERR("store %s: size of the block device: %s", path,
				    strerror(errno));
			goto err_close;
		}
		if (dev_bytes < bytes) {
			ret = -ENOSPC;
			COH_LOG_ERR(
			    "store %s: the device has %llu bytes, fewer than the %llu it must "
			    "have: refused",
			    path, (unsigned long long)dev_bytes, (unsigned long long)bytes);
			goto err_close;
		}
	}
	ret = -pthread_mutex_init(&fs->lock, NULL);
	if (ret)
		goto err_close;
	ret = io_uring_queue_init(8, &fs->ring, 0);
	if (ret < 0)
		goto err_mutex;
	ret = coh_store_new(&file_store_ops, fs, block_size, nblocks, storep);
	if (ret)
		goto err_ring;
	return 0;

err_ring:
	io_uring_queue_exit(&fs->ring);
err_mutex:
	pthread_mutex_destroy(&fs->lock);
err_close:
	close(fs->fd);
err_free:
	free(fs);
	return ret;
}

int coh_store_set_write_gate(struct coh_store *s, int (*gate)(void *arg), void *arg)
{
	struct file_store *fs;

	if (!s)
		return -EINVAL;
	if (s->ops != &file_store_ops)
		return -EOPNOTSUPP;
	fs = s->ctx;
	fs->gate = gate;
	fs->gate_arg = arg;
	return 0;
}
