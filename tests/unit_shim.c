/*
 * unit_shim.c - C wrappers that let the googletest unit tests reach the fabric's internals
 * (descriptor codec, cluster address parsing, event raising, the shm ring checks, the name of
 * the next shm region) and that corrupt an shm endpoint's ring the way a misbehaving peer could.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit_shim.h"
#include "verbs/shm_internal.h"

int shim_desc_decode(const uint8_t *bytes, struct shim_fields *out)
{
	struct coh_mr_desc d;
	struct coh_mr_fields f;
	int ret;

	memcpy(d.bytes, bytes, COH_MR_DESC_SIZE);
	ret = mr_desc_decode(&d, &f);
	if (!ret && out) {
		out->provider = f.provider;
		out->node = f.node;
		out->region = f.region;
		out->rkey = f.rkey;
		out->access = f.access;
		out->addr = f.addr;
		out->len = f.len;
		out->incarnation = f.incarnation;
		out->persist = f.persist;
	}
	return ret;
}

void shim_desc_encode(const struct shim_fields *in, uint8_t *bytes)
{
	struct coh_mr_fields f = { .provider = in->provider,
				   .node = in->node,
				   .region = in->region,
				   .rkey = in->rkey,
				   .access = in->access,
				   .addr = in->addr,
				   .len = in->len,
				   .incarnation = in->incarnation,
				   .persist = in->persist };
	struct coh_mr_desc d;

	mr_desc_encode(&f, &d);
	memcpy(bytes, d.bytes, COH_MR_DESC_SIZE);
}

int shim_cluster_addr(const char *cluster, uint32_t node, char *host, size_t hostlen,
		      uint16_t *port)
{
	return cluster_addr_parse(cluster, node, host, hostlen, port);
}

void shim_peer_down(struct coh_fabric *fab, uint32_t peer, uint64_t inc)
{
	fabric_peer_down(fab, peer, inc);
}

bool shim_slot_len_ok(uint32_t len, uint32_t slot_size)
{
	return shm_slot_len_ok(len, slot_size);
}

/* map_ep_file - map the one endpoint file of channel @channel in @dir. */
static void *map_ep_file(const char *dir, uint32_t channel, size_t *len)
{
	struct dirent *de;
	void *map = NULL;
	DIR *d;

	d = opendir(dir);
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		unsigned int a, b, ch;
		unsigned long long ia, ib;
		char path[4096];
		struct stat st;
		int fd;

		if (sscanf(de->d_name, "ep-%u.%llu-%u.%llu-%u", &a, &ia, &b, &ib, &ch) != 5 ||
		    ch != channel || a == b)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = open(path, O_RDWR);
		if (fd < 0 || fstat(fd, &st) < 0)
			break;
		map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		*len = (size_t)st.st_size;
		break;
	}
	closedir(d);
	return map == MAP_FAILED ? NULL : map;
}

/* Ring 0 carries messages from the lower node id to the higher. */
int shim_corrupt_ring(const char *dir, uint32_t channel, int what)
{
	struct shm_ep_hdr *hdr;
	struct shm_ring *ring;
	struct shm_slot *slot;
	uint32_t stride;
	size_t len;
	uint64_t head;

	hdr = map_ep_file(dir, channel, &len);
	if (!hdr)
		return -1;
	ring = (struct shm_ring *)((uint8_t *)hdr + SHM_PAGE);
	stride = (uint32_t)((sizeof(struct shm_slot) + hdr->slot_size + 63) & ~63u);
	head = atomic_load(&ring->head);
	slot = (struct shm_slot *)((uint8_t *)ring + 128 + (head % hdr->slots) * stride);
	if (what == SHIM_CORRUPT_LEN)
		slot->len = 0xffffffffu;
	else
		atomic_store(&ring->tail, head + 100000);
	munmap(hdr, len);
	return 0;
}

void shim_shm_next_mr_name(struct coh_fabric *fab, char *buf, size_t len)
{
	struct shm_fabric *sf = to_shm_fabric(fab);

	pthread_mutex_lock(&sf->lock);
	snprintf(buf, len, "mr-%u-%" PRIu64 "-%u", fab->node_id, sf->incarnation,
		 sf->next_region + 1);
	pthread_mutex_unlock(&sf->lock);
}
