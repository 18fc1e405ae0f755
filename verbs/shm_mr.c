/*
 * shm_mr.c - the shm provider's memory regions: regions peers can reach, which live in a file of
 * the cluster directory (a header page, then the data), local-only ones in anonymous memory,
 * registered caller memory, rekeying, and persistent regions.
 *
 * A persistent region (coh_mr_new_pmem) is a region file like any other, except that it is
 * mapped with libpmem2 (pmem.c) and may live outside the cluster directory: at a path the caller
 * names, on a DAX file system or a device DAX, where it outlives the region. Peers still find it
 * by the region's usual name, which is then a symbolic link to that path; importers map it with
 * libpmem2 as well and persist through their own mapping at FLUSH (shm_ep.c). The header is the
 * first page of the file or device, so importers check a persistent region exactly as any other.
 *
 * What this file leaves out: importing and operating on regions (shm_ep.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm_internal.h"

_Static_assert(SHM_PAGE == PMEM_HDR_LEN, "a persistent region's header is a region file's");

/* mr_name - give @mr a fresh region id and the file name peers will look it up by. */
static void mr_name(struct shm_fabric *sf, struct shm_mr *mr)
{
	pthread_mutex_lock(&sf->lock);
	mr->base.region = ++sf->next_region;
	pthread_mutex_unlock(&sf->lock);
	snprintf(mr->name, sizeof(mr->name), "mr-%u-%" PRIu64 "-%u", sf->base.node_id,
		 sf->incarnation, mr->base.region);
}

/*
 * mr_publish - fill @mr from its mapped header page and write the header, key last: the key is
 * what lets importers in. A persistent region's file still holds the header of its last life, so
 * that life's key is revoked before anything else changes, lest an importer of it pass the key
 * check against a half-written header.
 */
static void mr_publish(struct shm_fabric *sf, struct shm_mr *mr, size_t len, uint32_t access)
{
	struct shm_mr_hdr *hdr = mr->hdr;

	atomic_store(&hdr->rkey, 0);
	hdr->magic = SHM_MR_MAGIC;
	hdr->version = SHM_VERSION;
	hdr->node = sf->base.node_id;
	hdr->incarnation = sf->incarnation;
	hdr->region = mr->base.region;
	hdr->access = access;
	hdr->len = len;
	hdr->persist = (uint32_t)mr->base.persist;
	mr->base.fab = &sf->base;
	mr->base.addr = (uint8_t *)hdr + SHM_PAGE;
	mr->base.len = len;
	mr->base.access = access;
	mr->base.rkey = (sf->rkey_seed + mr->base.region * 0x9e3779b9u) | 1u;
	mr->base.remote_addr = 0;
	mr->base.incarnation = sf->incarnation;
	atomic_store(&hdr->rkey, mr->base.rkey);
}

int shm_mr_new(struct coh_fabric *fab, size_t len, uint32_t access, struct coh_mr **mrp)
{
	struct shm_fabric *sf = to_shm_fabric(fab);
	struct shm_mr *mr;
	void *map;
	int ret;

	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	mr->map_len = (len + SHM_PAGE - 1) & ~(size_t)(SHM_PAGE - 1);
	if (!(access & COH_ACCESS_REMOTE_MASK)) {
		/* Nobody else will map it, so it needs no file. */
		map = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (map == MAP_FAILED) {
			ret = -errno;
			goto err_free;
		}
		mr->anon = map;
		mr->base.fab = fab;
		mr->base.addr = map;
		mr->base.len = len;
		mr->base.access = access;
		*mrp = &mr->base;
		return 0;
	}
	mr_name(sf, mr);
	mr->map_len += SHM_PAGE;
	/* O_CREAT on a name nobody else uses: the region id is fresh in this incarnation. */
	ret = shm_file_map(sf->dir_fd, mr->name, mr->map_len, true, PROT_READ | PROT_WRITE, &map,
			   NULL);
	if (ret)
		goto err_free;
	mr->hdr = map;
	mr_publish(sf, mr, len, access);
	*mrp = &mr->base;
	return 0;

err_free:
	free(mr);
	return ret;
}

/*
 * shm_mr_new_pmem - a region in a libpmem2 mapping of @path, or, for a NULL @path, of a file in
 * the cluster directory under the region's usual name. For a named @path that usual name is a
 * symbolic link to it, which delete removes; the file at @path, and its data, stay.
 */
int shm_mr_new_pmem(struct coh_fabric *fab, const char *path, size_t len, uint32_t access,
		    struct coh_mr **mrp)
{
	struct shm_fabric *sf = to_shm_fabric(fab);
	struct shm_mr *mr;
	char *target;
	int ret;

	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	mr_name(sf, mr);
	if (path)
		ret = pmem_map_open(AT_FDCWD, path, SHM_PAGE + len, PMEM_MAP_CREATE, &mr->pm);
	else
		ret = pmem_map_open(sf->dir_fd, mr->name, SHM_PAGE + len, PMEM_MAP_CREATE, &mr->pm);
	if (ret)
		goto err_free;
	if (path) {
		/* Peers resolve the link from the cluster directory, not from our working
		 * directory, so it names the file absolutely. */
		target = realpath(path, NULL);
		if (!target) {
			ret = -errno;
			goto err_close_pmem;
		}
		ret = symlinkat(target, sf->dir_fd, mr->name) < 0 ? -errno : 0;
		if (ret)
			COH_LOG_ERR("node %u: cannot link %s/%s to %s: %s", fab->node_id, sf->dir,
				    mr->name, target, strerror(-ret));
		free(target);
		if (ret)
			goto err_close_pmem;
	}
	mr->pmem = true;
	mr->hdr = mr->pm.addr;
	mr->map_len = mr->pm.len;
	mr->base.persist = mr->pm.persist;
	mr_publish(sf, mr, len, access);
	*mrp = &mr->base;
	return 0;

err_close_pmem:
	pmem_map_close(&mr->pm);
	/* A file this call created holds nothing yet; one that existed keeps its data. */
	if (mr->pm.created)
		unlink(path);
err_free:
	free(mr);
	return ret;
}

int shm_mr_reg(struct coh_fabric *fab, void *buf, size_t len, uint32_t access, struct coh_mr **mrp)
{
	struct shm_mr *mr;

	/* A peer can only reach memory that lives in a shared file. */
	if (access & COH_ACCESS_REMOTE_MASK)
		return -EOPNOTSUPP;
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	mr->base.fab = fab;
	mr->base.addr = buf;
	mr->base.len = len;
	mr->base.access = access;
	*mrp = &mr->base;
	return 0;
}

int shm_mr_delete(struct coh_mr *base)
{
	struct shm_mr *mr = container_of(base, struct shm_mr, base);
	struct shm_fabric *sf = to_shm_fabric(base->fab);
	int ret = 0;

	if (mr->anon && munmap(mr->anon, mr->map_len) < 0)
		ret = -errno;
	if (mr->hdr) {
		/* Revoke before unmapping: importers check the key on every operation. */
		atomic_store(&mr->hdr->rkey, 0);
		if (mr->pmem)
			ret = pmem_map_close(&mr->pm);
		else if (munmap(mr->hdr, mr->map_len) < 0)
			ret = -errno;
		/* The region file, or the link to a persistent region's file. */
		if (unlinkat(sf->dir_fd, mr->name, 0) < 0 && !ret)
			ret = -errno;
	}
	free(mr);
	return ret;
}

int shm_mr_persist(struct coh_mr *base, size_t off, size_t len)
{
	struct shm_mr *mr = container_of(base, struct shm_mr, base);

	return mr->pmem ? pmem_persist(&mr->pm, (uint8_t *)base->addr + off, len) : 0;
}

int shm_mr_rekey(struct coh_mr *base)
{
	struct shm_mr *mr = container_of(base, struct shm_mr, base);
	uint32_t key;

	if (!mr->hdr)
		return -EINVAL;
	do {
		key = shm_random32() | 1u;
	} while (key == base->rkey);
	base->rkey = key;
	atomic_store(&mr->hdr->rkey, key);
	return 0;
}
