/*
 * pmem.c - the files behind persistent regions (coh_mr_new_pmem), for both providers: opening or
 * creating a regular file or a device DAX, sizing it, mapping it shared with libpmem2, finding
 * out what persisting a range of it guarantees, and persisting a range.
 *
 * libpmem2 is asked for page granularity at most, so that any file maps. It then reports what it
 * got: page granularity for a file in the page cache (persisting is msync), cache-line
 * granularity for a file on a DAX file system (mapped with MAP_SYNC) or a device DAX (persisting
 * is a CPU cache write-back and a fence), byte granularity for either on a platform whose CPU
 * caches are in the persistence domain (eADR; persisting is a fence). The owner holds an
 * exclusive flock on the file while its region lives, so that two regions never share a file.
 *
 * What this file leaves out: region headers, names and registration (the providers' business),
 * and libpmem2's bad-block and unsafe-shutdown facilities: a log kept in such a region checks
 * its own records when it is read back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libpmem2.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "verbs_internal.h"

/* pmem_errno - a libpmem2 result as a negative errno. libpmem2 returns either the negative errno
 * of a system call it made or one of its own PMEM2_E_* codes, which lie far below any errno. */
static int pmem_errno(int ret)
{
	if (ret > PMEM2_E_UNKNOWN)
		return ret;
	switch (ret) {
	case PMEM2_E_MAP_RANGE:
	case PMEM2_E_SOURCE_EMPTY:
	case PMEM2_E_LENGTH_OUT_OF_RANGE:
		return -ENOSPC;
	case PMEM2_E_INVALID_FILE_TYPE:
		return -ENODEV;
	case PMEM2_E_NO_ACCESS:
		return -EACCES;
	case PMEM2_E_NOSUPP:
	case PMEM2_E_GRANULARITY_NOT_SUPPORTED:
	case PMEM2_E_SOURCE_TYPE_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

/*
 * pmem_fail - report that @what failed on @path. The owner's failures are errors of the caller's
 * making (a wrong path, a full device) and are logged as such; an importer's mean that the peer
 * deleted its region, which the caller reports as -EACCES, so they are only debug messages.
 * libpmem2's own message is added for its failures: it keeps the last one per thread.
 */
static void pmem_fail(bool owner, const char *path, const char *what, int ret, bool from_pmem2)
{
	if (owner)
		COH_LOG_ERR("persistent region on %s: %s: %s%s%s", path, what, strerror(-ret),
			    from_pmem2 ? "; libpmem2: " : "", from_pmem2 ? pmem2_errormsg() : "");
	else
		COH_LOG_DBG("persistent region on %s: %s: %s", path, what, strerror(-ret));
}

/*
 * pmem_open - open @path; for the owner, create it if it is missing. O_EXCL tells a file this call
 * created (which a failure must remove again) from one that an earlier life of the region left,
 * whose contents are the point. Returns the descriptor or a negative errno.
 */
static int pmem_open(int dir_fd, const char *path, bool owner, bool rdonly, bool *created)
{
	int mode = (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	int fd, tries;

	*created = false;
	/* Two rounds at most: another creator may make the file between our two opens. */
	for (tries = 0; tries < 2; tries++) {
		fd = openat(dir_fd, path, mode);
		if (fd >= 0)
			return fd;
		if (errno != ENOENT || !owner)
			return -errno;
		fd = openat(dir_fd, path, mode | O_CREAT | O_EXCL, 0600);
		if (fd >= 0) {
			*created = true;
			return fd;
		}
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/*
 * pmem_size_file - make the regular file @fd cover @len bytes, keeping what it holds (a longer
 * file stays as long). The blocks are allocated now (posix_fallocate, not ftruncate), so that a
 * full file system fails here with -ENOSPC rather than with SIGBUS at the first store into a hole.
 */
static int pmem_size_file(int fd, size_t len)
{
	return -posix_fallocate(fd, 0, (off_t)len);
}

/**
 * pmem_map_open - map @len bytes (rounded up to the source's alignment) of @path, resolved from
 * @dir_fd, shared, with libpmem2.
 * @flags: PMEM_MAP_CREATE for the region's owner: create the file if missing, extend it to cover
 *         the mapping, and hold it exclusively (-EBUSY if another region does); otherwise the
 *         file must exist and be large enough (-ENOENT, -ENOSPC). PMEM_MAP_RDONLY maps read-only.
 * @pm: filled on success
 *
 * A regular file and a device DAX are accepted (-EINVAL for any other type, -ENODEV for a
 * character device that is not device DAX); a device DAX must already be large enough
 * (-ENOSPC). Returns 0 or a negative errno; the owner's failures are logged.
 */
int pmem_map_open(int dir_fd, const char *path, size_t len, unsigned int flags, struct pmem_map *pm)
{
	bool owner = flags & PMEM_MAP_CREATE, rdonly = flags & PMEM_MAP_RDONLY, created;
	struct pmem2_source *src;
	struct pmem2_config *cfg;
	struct pmem2_map *map;
	size_t align, size, map_len;
	enum pmem2_granularity g;
	struct stat st;
	int fd, ret;

	fd = pmem_open(dir_fd, path, owner, rdonly, &created);
	if (fd < 0) {
		pmem_fail(owner, path, "open", fd, false);
		return fd;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		pmem_fail(owner, path, "fstat", ret, false);
		goto err_close;
	}
	/* libpmem2 refuses these too, but its message would not say what is accepted. */
	if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode)) {
		ret = -EINVAL;
		if (owner)
			COH_LOG_ERR("persistent region on %s: not a regular file or a device DAX",
				    path);
		goto err_close;
	}
	ret = pmem2_source_from_fd(&src, fd);
	if (ret) {
		ret = pmem_errno(ret);
		/* libpmem2 leaves its message unset for a character device it does not know. */
		pmem_fail(owner, path, S_ISCHR(st.st_mode) ? "not a device DAX" : "source", ret,
			  !S_ISCHR(st.st_mode));
		goto err_close;
	}
	/* Before the file is touched: a second region on it would overwrite the first's data. */
	if (owner && flock(fd, LOCK_EX | LOCK_NB) < 0) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		pmem_fail(owner, path, "another region uses it", ret, false);
		goto err_delete_source;
	}
	ret = pmem2_source_alignment(src, &align);
	if (ret) {
		ret = pmem_errno(ret);
		pmem_fail(owner, path, "alignment", ret, true);
		goto err_delete_source;
	}
	/* A device DAX maps in units of its alignment (often 2 MiB); a file in pages. */
	map_len = (len + align - 1) / align * align;
	if (S_ISCHR(st.st_mode)) {
		ret = pmem2_source_size(src, &size);
		if (ret) {
			ret = pmem_errno(ret);
			pmem_fail(owner, path, "size", ret, true);
			goto err_delete_source;
		}
		if (size < map_len) {
			ret = -ENOSPC;
			if (owner)
				COH_LOG_ERR("persistent region on %s: %zu bytes, %zu needed", path,
					    size, map_len);
			goto err_delete_source;
		}
	} else if (owner) {
		ret = pmem_size_file(fd, map_len);
		if (ret) {
			pmem_fail(owner, path, "allocate", ret, false);
			goto err_delete_source;
		}
	}
	ret = pmem2_config_new(&cfg);
	if (ret) {
		ret = pmem_errno(ret);
		pmem_fail(owner, path, "config", ret, true);
		goto err_delete_source;
	}
	/* The coarsest granularity is the weakest requirement: anything maps, and the mapping
	 * then says which one it has. */
	ret = pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE);
	if (!ret)
		ret = pmem2_config_set_length(cfg, map_len);
	if (!ret && rdonly)
		ret = pmem2_config_set_protection(cfg, PMEM2_PROT_READ);
	if (!ret)
		ret = pmem2_map_new(&map, cfg, src);
	if (ret) {
		ret = pmem_errno(ret);
		pmem_fail(owner, path, "map", ret, true);
		goto err_delete_config;
	}
	pmem2_config_delete(&cfg);
	pmem2_source_delete(&src);
#ifdef MADV_POPULATE_WRITE
	/* Fault the mapping in now, as shm's MAP_POPULATE and an RDMA registration do, so that
	 * the first operation on the region does not pay for page faults. Best effort: kernels
	 * before 5.14 do not know the advice. */
	madvise(pmem2_map_get_address(map), map_len,
		rdonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE);
#endif
	g = pmem2_map_get_store_granularity(map);
	pm->map = map;
	pm->fd = fd;
	pm->addr = pmem2_map_get_address(map);
	pm->len = map_len;
	pm->persist = g == PMEM2_GRANULARITY_PAGE ? COH_PERSIST_FILE : COH_PERSIST_PMEM;
	pm->eadr = g == PMEM2_GRANULARITY_BYTE;
	pm->created = created;
	pm->persist_fn = pmem2_get_persist_fn(map);
	if (owner)
		COH_LOG_INFO("persistent region on %s: %zu bytes, %s granularity", path, map_len,
			     g == PMEM2_GRANULARITY_PAGE	 ? "page"
			     : g == PMEM2_GRANULARITY_CACHE_LINE ? "cache-line"
								 : "byte");
	return 0;

err_delete_config:
	pmem2_config_delete(&cfg);
err_delete_source:
	pmem2_source_delete(&src);
err_close:
	/* Closing the only descriptor also drops the flock: nothing is mapped yet. */
	close(fd);
	if (created)
		unlinkat(dir_fd, path, 0);
	return ret;
}

/**
 * pmem_map_close - unmap and close. The flock goes with the last reference to the open file,
 * which the mapping holds too, so unmapping comes first. Returns 0 or a negative errno.
 */
int pmem_map_close(struct pmem_map *pm)
{
	int ret = 0, r;

	if (pm->map) {
		r = pmem2_map_delete(&pm->map);
		if (r) {
			ret = pmem_errno(r);
			COH_LOG_ERR("persistent region: unmap: %s", pmem2_errormsg());
		}
	}
	if (pm->fd >= 0)
		close(pm->fd);
	pm->fd = -1;
	return ret;
}

/**
 * pmem_persist - make @addr..+@len of the mapping persistent, as far as @pm->persist says.
 * Returns 0, or the errno of a failed write-back (page granularity only).
 */
int pmem_persist(const struct pmem_map *pm, const void *addr, size_t len)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), start;

	if (pm->persist == COH_PERSIST_PMEM) {
		pm->persist_fn(addr, len);
		return 0;
	}
	/* libpmem2's persist function for page granularity is msync too, but it returns nothing,
	 * and a write-back that failed (an I/O error) must fail the FLUSH. */
	start = (uintptr_t)addr & ~(page - 1);
	if (msync((void *)start, (uintptr_t)addr + len - start, MS_SYNC) < 0)
		return -errno;
	return 0;
}
