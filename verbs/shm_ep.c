/*
 * shm_ep.c - the shm provider's endpoints: the connection handshake, the two message rings of an
 * endpoint, and the operations.
 *
 * One-sided operations are performed by the initiator at post time, on its own mapping of the
 * target's region file: a WRITE is a memcpy into the peer's memory, a CAS is a CPU compare-and-
 * swap on it. The target's CPU takes no part, as with RDMA. A SEND is copied into a slot of the
 * ring towards the peer; the peer's polling moves it into a posted receive buffer. If the ring is
 * full, the SEND and every operation posted after it wait in a local FIFO, so operations on an
 * endpoint are always performed in the order they were posted. Each operation's access rights,
 * key and bounds are checked against the target's region header before any byte moves.
 *
 * A cut (coh_fabric_partition, a test's fault) holds what is posted to a cut peer in that FIFO
 * too, as a transport retransmits, and fails it after the rdma provider's retry time.
 *
 * What this file leaves out: retransmission and reordering (memory does not lose or reorder
 * stores within one initiator), and any trust in the peer: ring indices and message lengths read
 * from shared memory are checked before use.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm_internal.h"

#define EP_LEFT 3u	  /* present[] value of a side that deleted its endpoint */
#define EP_REFUSED 2u	  /* present[] value of a side that could not accept the file */
#define EP_DENIED 4u	  /* present[] value of a side that found the other's proof wrong */
#define EP_AUTH_NONE 1u	  /* auth[]: that side has no cluster secret */
#define EP_AUTH_SECRET 2u /* auth[]: it has one, and proof[] is its MAC */
#define RING_HDR 128u	  /* sizeof(struct shm_ring), rounded to cache lines */
#define HANDSHAKE_NAP_MS 50

struct shm_recv {
	struct coh_mr *mr;
	size_t off, len;
	uint64_t wr_id;
};

/*
 * struct shm_ep - an endpoint. Owned by its serialisation domain; only @hdr->present and the
 * rings are shared with the peer, and only @peer->up_inc with the monitor thread.
 */
struct shm_ep {
	struct coh_ep base;
	struct shm_fabric *fab;
	struct shm_peer *peer; /* NULL for a loopback endpoint */
	uint64_t peer_inc;
	uint32_t side; /* 0 if this node has the lower id (or loopback) */
	/* The peer's ctl page, mapped for this endpoint alone: the fabric's own mapping goes when a
	 * new incarnation of the peer attaches, and an endpoint to the old one may outlive that. */
	struct shm_ctl *peer_ctl;
	bool own_ctl;
	struct shm_cq *send_cq, *recv_cq;
	bool broken; /* the peer corrupted the ring: treat as down */

	char name[96];
	int fd;
	struct shm_ep_hdr *hdr;
	size_t map_len;
	struct shm_ring *tx, *rx;
	uint8_t *tx_slots, *rx_slots;
	uint32_t slots, slot_size, stride;

	struct coh_op *pend; /* FIFO of operations waiting behind a SEND, or a cut */
	uint64_t *pend_ns;   /* when each was posted: a cut fails it SHM_CUT_RETRY_MS after */
	uint32_t pend_head, pend_count;
	struct shm_recv *recvs; /* posted receives, in order */
	uint32_t recv_head, recv_count;
	uint32_t send_out, recv_out; /* posted and not yet taken from their queue */
};

static size_t ring_bytes(uint32_t slots, uint32_t stride)
{
	return RING_HDR + (size_t)slots * stride;
}

static size_t ep_file_len(uint32_t slots, uint32_t stride)
{
	size_t len = SHM_PAGE + 2 * ring_bytes(slots, stride);

	return (len + SHM_PAGE - 1) & ~(size_t)(SHM_PAGE - 1);
}

/* shm_slot_len_ok - a message length read from the peer's slot is usable. */
bool shm_slot_len_ok(uint32_t len, uint32_t slot_size)
{
	return len >= 1 && len <= slot_size;
}

/* ep_cut - the network to the peer is cut (coh_fabric_partition). */
static bool ep_cut(const struct shm_ep *ep)
{
	return ep->peer &&
	       (atomic_load_explicit(&ep->fab->cut, memory_order_relaxed) >> ep->base.attr.peer &
		1);
}

static bool ep_up(const struct shm_ep *ep)
{
	if (ep->broken)
		return false;
	if (!ep->peer)
		return true;
	if (atomic_load_explicit(&ep->peer->up_inc, memory_order_acquire) != ep->peer_inc)
		return false;
	/* A peer that closed its fabric says so at once; the monitor reports it a little later. */
	if (!atomic_load_explicit(&ep->peer_ctl->ready, memory_order_relaxed))
		return false;
	return atomic_load_explicit(&ep->hdr->present[1 - ep->side], memory_order_relaxed) == 1;
}

bool shm_ep_is_up(const struct coh_ep *base)
{
	return ep_up(container_of(base, struct shm_ep, base));
}

/* shm_ep_peer_inc - set once by shm_ep_new, before the endpoint is handed out. */
uint64_t shm_ep_peer_inc(const struct coh_ep *base)
{
	return container_of(base, const struct shm_ep, base)->peer_inc;
}

/* unlink_if_same - unlink @name only if it is still the file we mapped; a peer may already have
 * replaced it with a fresh one of the same name. */
static void unlink_if_same(int dir_fd, const char *name, int fd)
{
	struct stat a, b;

	if (fstat(fd, &a) == 0 && fstatat(dir_fd, name, &b, 0) == 0 && a.st_ino == b.st_ino &&
	    a.st_dev == b.st_dev)
		unlinkat(dir_fd, name, 0);
}

/* ep_map - map the endpoint file, replacing a stale one left by an earlier endpoint on the same
 * channel between the same two incarnations. */
static int ep_map(struct shm_ep *ep)
{
	int dir_fd = ep->fab->dir_fd, tries, ret = -EBUSY;
	uint32_t s = ep->side;

	ep->map_len = ep_file_len(ep->slots, ep->stride);
	for (tries = 0; tries < 3; tries++) {
		struct stat st;
		void *map;

		ep->fd = openat(dir_fd, ep->name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (ep->fd < 0)
			return -errno;
		if (fstat(ep->fd, &st) < 0) {
			ret = -errno;
			goto err_close;
		}
		/* Both sides compute the same size from the same attributes; a file of another
		 * size means the peer asked for another message size. */
		if (st.st_size == 0 && ftruncate(ep->fd, (off_t)ep->map_len) < 0) {
			ret = -errno;
			goto err_close;
		}
		if (st.st_size != 0 && (size_t)st.st_size != ep->map_len) {
			COH_LOG_ERR("node %u: endpoint %s has another message size than %u",
				    ep->fab->base.node_id, ep->name, ep->slot_size);
			ret = -EINVAL;
			goto err_close;
		}
		map = mmap(NULL, ep->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, ep->fd, 0);
		if (map == MAP_FAILED) {
			ret = -errno;
			goto err_close;
		}
		ep->hdr = map;
		if (atomic_load(&ep->hdr->present[s]) == 0 &&
		    atomic_load(&ep->hdr->present[1 - s]) <= 1)
			return 0;
		/* Left over from an endpoint that was deleted: start afresh. */
		munmap(map, ep->map_len);
		ep->hdr = NULL;
		unlink_if_same(dir_fd, ep->name, ep->fd);
		close(ep->fd);
	}
	return ret;

err_close:
	close(ep->fd);
	return ret;
}

static void ep_layout(struct shm_ep *ep)
{
	uint8_t *base = (uint8_t *)ep->hdr + SHM_PAGE;
	uint8_t *ring0 = base, *ring1 = base + ring_bytes(ep->slots, ep->stride);
	uint8_t *tx = ep->side == 0 ? ring0 : ring1, *rx = ep->side == 0 ? ring1 : ring0;

	if (!ep->peer)
		rx = tx; /* loopback: one ring, to ourselves */
	ep->tx = (struct shm_ring *)tx;
	ep->rx = (struct shm_ring *)rx;
	ep->tx_slots = tx + RING_HDR;
	ep->rx_slots = rx + RING_HDR;
}

/* ep_proof - the MAC with which @side proves the cluster secret for this endpoint: over its
 * name, which holds both ends' incarnations and the channel, so it is good for this one only. */
static int ep_proof(struct shm_ep *ep, uint32_t side, uint8_t out[VERBS_MAC_LEN])
{
	struct verbs_mac_part parts[2] = { { ep->name, strlen(ep->name) },
					   { &side, sizeof(side) } };

	return verbs_mac(&ep->fab->base, "cohort-shm-ep", parts, 2, out);
}

/* ep_check_proof - does the other side know the same cluster secret as this one (or do both
 * have none)? 0, or -EACCES with the reason logged. */
static int ep_check_proof(struct shm_ep *ep)
{
	uint32_t other = 1 - ep->side, me = ep->fab->base.node_id;
	bool mine = ep->fab->base.secret_len != 0, theirs = ep->hdr->auth[other] == EP_AUTH_SECRET;
	uint8_t want[VERBS_MAC_LEN];

	if (!mine && !theirs)
		return 0;
	if (mine != theirs) {
		COH_LOG_ERR("node %u: refused node %u: %s", me, ep->peer_ctl->node,
			    mine ? "it has no cluster secret and this node has one"
				 : "it has a cluster secret and this node has none");
		return -EACCES;
	}
	if (ep_proof(ep, other, want) ||
	    !verbs_mac_equal(want, ep->hdr->proof[other], sizeof(want))) {
		COH_LOG_ERR("node %u: refused node %u: it does not prove this cluster's secret", me,
			    ep->peer_ctl->node);
		return -EACCES;
	}
	return 0;
}

/* ep_handshake - announce ourselves (with our proof of the cluster secret) and wait, bounded, for
 * the peer to do the same; then check its proof. */
static int ep_handshake(struct shm_ep *ep, uint32_t timeout_ms)
{
	uint64_t deadline = verbs_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct shm_ctl *ctl = ep->fab->ctl;
	uint32_t other = 1 - ep->side;
	int ret;

	ep->hdr->auth[ep->side] = ep->fab->base.secret_len ? EP_AUTH_SECRET : EP_AUTH_NONE;
	if (ep->peer && ep->fab->base.secret_len) {
		ret = ep_proof(ep, ep->side, ep->hdr->proof[ep->side]);
		if (ret)
			return ret;
	}
	atomic_store(&ep->hdr->auth_set[ep->side], 1);
	atomic_store(&ep->hdr->present[ep->side], 1);
	if (!ep->peer)
		return 0;
	shm_doorbell_ring(ep->peer_ctl);
	for (;;) {
		uint32_t v = atomic_load(&ep->hdr->present[other]), seen;
		uint64_t now;
		int nap;

		/* Across a cut the peer's half of the handshake never arrives. */
		if (v == 1 && !ep_cut(ep)) {
			ret = ep_check_proof(ep);
			if (ret) {
				atomic_store(&ep->hdr->present[ep->side], EP_DENIED);
				shm_doorbell_ring(ep->peer_ctl);
			}
			return ret;
		}
		if (v == EP_DENIED) {
			COH_LOG_ERR(
			    "node %u: node %u refused this node: the cluster secrets differ",
			    ep->fab->base.node_id, ep->peer_ctl->node);
			return -EACCES;
		}
		if (v == EP_REFUSED)
			return -EINVAL;
		/* It left at once: perhaps because our proof failed its check (it wrote DENIED,
		 * then LEFT as it deleted the endpoint). Its own record says whether it would have
		 * failed ours, the same check both ways. */
		if (v == EP_LEFT && atomic_load(&ep->hdr->auth_set[other]) && ep_check_proof(ep))
			return -EACCES;
		if (v == EP_LEFT || atomic_load(&ep->peer->up_inc) != ep->peer_inc)
			return -ECONNRESET;
		now = verbs_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		nap = (int)((deadline - now) / 1000000) + 1;
		if (nap > HANDSHAKE_NAP_MS)
			nap = HANDSHAKE_NAP_MS;
		seen = atomic_load(&ctl->doorbell);
		atomic_fetch_add(&ctl->waiters, 1);
		if (atomic_load(&ep->hdr->present[other]) == 0)
			shm_doorbell_sleep(ctl, seen, nap);
		atomic_fetch_sub(&ctl->waiters, 1);
	}
}

static void ep_leave(struct shm_ep *ep)
{
	atomic_store(&ep->hdr->present[ep->side], EP_LEFT);
	if (!ep->peer || atomic_load(&ep->hdr->present[1 - ep->side]) != 1)
		unlink_if_same(ep->fab->dir_fd, ep->name, ep->fd);
	if (ep->peer_ctl)
		shm_doorbell_ring(ep->peer_ctl);
}

int shm_ep_new(struct coh_fabric *fab, const struct coh_ep_attr *attr, struct coh_ep **epp)
{
	struct shm_fabric *sf = to_shm_fabric(fab);
	uint32_t me = fab->node_id, lo, hi;
	uint64_t lo_inc, hi_inc;
	struct shm_ep *ep;
	int ret;

	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->pend = calloc(attr->max_send_wr, sizeof(*ep->pend));
	ep->pend_ns = calloc(attr->max_send_wr, sizeof(*ep->pend_ns));
	ep->recvs = calloc(attr->max_recv_wr, sizeof(*ep->recvs));
	if (!ep->pend || !ep->pend_ns || !ep->recvs) {
		ret = -ENOMEM;
		goto err_free;
	}
	ep->fab = sf;
	ep->fd = -1;
	ep->send_cq = container_of(attr->send_cq, struct shm_cq, base);
	ep->recv_cq = container_of(attr->recv_cq, struct shm_cq, base);
	ep->slots = SHM_RING_SLOTS;
	ep->slot_size = attr->max_msg_size;
	ep->stride = (uint32_t)((sizeof(struct shm_slot) + attr->max_msg_size + 63) & ~63u);

	pthread_mutex_lock(&sf->lock);
	if (sf->eps_open[attr->peer][attr->channel]) {
		pthread_mutex_unlock(&sf->lock);
		ret = -EEXIST;
		goto err_free;
	}
	sf->eps_open[attr->peer][attr->channel] = 1;
	pthread_mutex_unlock(&sf->lock);

	if (attr->peer == me) {
		ep->peer_inc = sf->incarnation;
		ep->peer_ctl = sf->ctl;
	} else {
		ret = shm_peer_attach(sf, attr->peer, (int)attr->timeout_ms, &ep->peer);
		if (ret)
			goto err_release_channel;
		char ctl_name[64];
		void *map;

		ep->peer_inc = ep->peer->incarnation;
		snprintf(ctl_name, sizeof(ctl_name), "node-%u.ctl", attr->peer);
		ret = shm_file_map(sf->dir_fd, ctl_name, SHM_PAGE, false, PROT_READ | PROT_WRITE,
				   &map, NULL);
		if (ret)
			goto err_release_channel;
		ep->peer_ctl = map;
		ep->own_ctl = true;
		if (atomic_load(&ep->peer->up_inc) != ep->peer_inc) {
			ret = -ECONNRESET;
			goto err_release_channel;
		}
	}
	ep->side = me <= attr->peer ? 0 : 1;
	lo = ep->side == 0 ? me : attr->peer;
	hi = ep->side == 0 ? attr->peer : me;
	lo_inc = ep->side == 0 ? sf->incarnation : ep->peer_inc;
	hi_inc = ep->side == 0 ? ep->peer_inc : sf->incarnation;
	snprintf(ep->name, sizeof(ep->name), "ep-%u.%" PRIu64 "-%u.%" PRIu64 "-%u", lo, lo_inc, hi,
		 hi_inc, attr->channel);

	ret = ep_map(ep);
	if (ret)
		goto err_release_channel;
	/* Both sides write the same values, so there is no race over who initialises. */
	ep->hdr->version = SHM_VERSION;
	ep->hdr->slots = ep->slots;
	ep->hdr->slot_size = ep->slot_size;
	ep->hdr->magic = SHM_EP_MAGIC;
	ep_layout(ep);
	ret = shm_cq_attach(ep->send_cq, ep);
	if (ret)
		goto err_leave;
	ret = shm_cq_attach(ep->recv_cq, ep);
	if (ret)
		goto err_detach_send;
	ret = ep_handshake(ep, attr->timeout_ms);
	if (ret) {
		/* A timeout is the caller's to judge (see rdma_ep_new); anything else is odd. */
		if (ret == -ETIMEDOUT)
			COH_LOG_INFO("node %u: endpoint to %u (channel %u): %s", me, attr->peer,
				     attr->channel, strerror(-ret));
		else
			COH_LOG_WARN("node %u: endpoint to %u (channel %u): %s", me, attr->peer,
				     attr->channel, strerror(-ret));
		goto err_detach_recv;
	}
	*epp = &ep->base;
	return 0;

err_detach_recv:
	shm_cq_detach(ep->recv_cq, ep);
err_detach_send:
	shm_cq_detach(ep->send_cq, ep);
err_leave:
	ep_leave(ep);
	munmap(ep->hdr, ep->map_len);
	close(ep->fd);
err_release_channel:
	if (ep->own_ctl)
		munmap(ep->peer_ctl, SHM_PAGE);
	pthread_mutex_lock(&sf->lock);
	sf->eps_open[attr->peer][attr->channel] = 0;
	pthread_mutex_unlock(&sf->lock);
err_free:
	free(ep->recvs);
	free(ep->pend);
	free(ep->pend_ns);
	free(ep);
	return ret;
}

int shm_ep_delete(struct coh_ep *base)
{
	struct shm_ep *ep = container_of(base, struct shm_ep, base);
	struct shm_fabric *sf = ep->fab;
	int ret = 0;

	shm_cq_detach(ep->send_cq, ep);
	shm_cq_detach(ep->recv_cq, ep);
	ep_leave(ep);
	if (munmap(ep->hdr, ep->map_len) < 0)
		ret = -errno;
	if (ep->own_ctl && munmap(ep->peer_ctl, SHM_PAGE) < 0 && !ret)
		ret = -errno;
	close(ep->fd);
	pthread_mutex_lock(&sf->lock);
	sf->eps_open[base->attr.peer][base->attr.channel] = 0;
	pthread_mutex_unlock(&sf->lock);
	free(ep->recvs);
	free(ep->pend);
	free(ep->pend_ns);
	free(ep);
	return ret;
}

/* Remote regions. */

/* rmap_get - the shared mapping of peer region @name with @prot, made on first use. */
static int rmap_get(struct shm_fabric *sf, const char *name, size_t len, int prot,
		    struct shm_rmap **out)
{
	struct shm_rmap *m;
	int ret = 0;

	pthread_mutex_lock(&sf->lock);
	for (m = sf->rmaps; m; m = m->next) {
		if (m->prot == prot && m->len == len && !strcmp(m->name, name))
			break;
	}
	if (!m) {
		m = calloc(1, sizeof(*m));
		if (!m) {
			ret = -ENOMEM;
			goto out;
		}
		ret = shm_file_map(sf->dir_fd, name, len, false, prot, &m->map, NULL);
		if (ret) {
			free(m);
			m = NULL;
			goto out;
		}
		snprintf(m->name, sizeof(m->name), "%s", name);
		m->prot = prot;
		m->len = len;
		m->next = sf->rmaps;
		sf->rmaps = m;
	}
	m->refs++;
out:
	pthread_mutex_unlock(&sf->lock);
	*out = m;
	return ret;
}

static int rmap_put(struct shm_fabric *sf, struct shm_rmap *m)
{
	struct shm_rmap **pp;
	int ret = 0;

	pthread_mutex_lock(&sf->lock);
	if (--m->refs == 0) {
		for (pp = &sf->rmaps; *pp && *pp != m; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = m->next;
		ret = munmap(m->map, m->len) < 0 ? -errno : 0;
		free(m);
	}
	pthread_mutex_unlock(&sf->lock);
	return ret;
}

int shm_rmr_import(struct coh_ep *base, const struct coh_mr_fields *f, struct coh_rmr **rmrp)
{
	struct shm_ep *ep = container_of(base, struct shm_ep, base);
	uint32_t writable = COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_ATOMIC;
	int prot = PROT_READ | ((f->access & writable) ? PROT_WRITE : 0);
	struct shm_rmr *rmr;
	struct shm_mr_hdr *hdr;
	char name[64];
	void *map;
	int ret;

	if (f->incarnation != ep->peer_inc)
		return -EACCES;
	rmr = calloc(1, sizeof(*rmr));
	if (!rmr)
		return -ENOMEM;
	snprintf(name, sizeof(name), "mr-%u-%" PRIu64 "-%u", f->node, f->incarnation, f->region);
	if (f->persist != COH_PERSIST_NONE) {
		/* A persistent region may be a device DAX, whose size its inode does not tell, and
		 * FLUSH must persist through this mapping: map it with libpmem2, as its owner did. */
		ret = pmem_map_open(ep->fab->dir_fd, name, SHM_PAGE + f->len,
				    (prot & PROT_WRITE) ? 0 : PMEM_MAP_RDONLY, &rmr->pm);
		if (ret) {
			/* Gone, or smaller than the descriptor claims: either way, no access. */
			ret = ret == -ENOENT || ret == -ENOSPC ? -EACCES : ret;
			goto err_free;
		}
		rmr->pmem = true;
		rmr->map_len = rmr->pm.len;
		map = rmr->pm.addr;
	} else {
		rmr->map_len = SHM_PAGE + ((f->len + SHM_PAGE - 1) & ~(uint64_t)(SHM_PAGE - 1));
		ret = rmap_get(ep->fab, name, rmr->map_len, prot, &rmr->rmap);
		if (ret) {
			/* Gone, or not the size the descriptor claims: either way, no access. */
			ret = ret == -ENOENT || ret == -EPROTO ? -EACCES : ret;
			goto err_free;
		}
		map = rmr->rmap->map;
		rmr->sf = ep->fab;
	}
	hdr = map;
	if (hdr->magic != SHM_MR_MAGIC || hdr->version != SHM_VERSION || hdr->node != f->node ||
	    hdr->incarnation != f->incarnation || hdr->region != f->region || hdr->len != f->len ||
	    hdr->persist != f->persist || (f->access & ~hdr->access) ||
	    atomic_load(&hdr->rkey) != f->rkey) {
		ret = -EACCES;
		goto err_unmap;
	}
	rmr->hdr = hdr;
	rmr->data = (uint8_t *)map + SHM_PAGE;
	rmr->base.ep = base;
	rmr->base.f = *f;
	*rmrp = &rmr->base;
	return 0;

err_unmap:
	if (rmr->pmem)
		pmem_map_close(&rmr->pm);
	else
		rmap_put(ep->fab, rmr->rmap);
err_free:
	free(rmr);
	return ret;
}

int shm_rmr_delete(struct coh_rmr *base)
{
	struct shm_rmr *rmr = container_of(base, struct shm_rmr, base);
	int ret;

	if (rmr->pmem)
		ret = pmem_map_close(&rmr->pm);
	else
		ret = rmap_put(rmr->sf, rmr->rmap);
	free(rmr);
	return ret;
}

/* Operations. */

static uint32_t op_right(enum coh_op_code code)
{
	switch (code) {
	case COH_OP_WRITE:
		return COH_ACCESS_REMOTE_WRITE;
	case COH_OP_READ:
		return COH_ACCESS_REMOTE_READ;
	case COH_OP_CAS:
	case COH_OP_FAA:
		return COH_ACCESS_REMOTE_ATOMIC;
	case COH_OP_FLUSH:
		return COH_ACCESS_REMOTE_FLUSH;
	default:
		return 0;
	}
}

/* word_wise - a READ or WRITE of a region that takes atomics (a directory) goes word by word
 * with atomic loads and stores: a NIC's READ is atomic per aligned 8 bytes against its atomics,
 * and so is this one (another thread of this process may CAS the same words, through the one
 * mapping the imports share). */
static bool word_wise(const struct shm_rmr *rmr, const void *remote, const void *local,
		      uint64_t len)
{
	return (rmr->base.f.access & COH_ACCESS_REMOTE_ATOMIC) &&
	       !(((uintptr_t)remote | (uintptr_t)local | len) & 7);
}

static void words_load(void *dst, const void *src, uint64_t len)
{
	uint64_t *d = dst, i;
	const uint64_t *sp = src;

	for (i = 0; i < len / 8; i++)
		d[i] = __atomic_load_n(&sp[i], __ATOMIC_RELAXED);
}

static void words_store(void *dst, const void *src, uint64_t len)
{
	uint64_t *d = dst, i;
	const uint64_t *sp = src;

	for (i = 0; i < len / 8; i++)
		__atomic_store_n(&d[i], sp[i], __ATOMIC_RELAXED);
}

/* remote_op - perform a one-sided operation on the peer's memory; returns its status. */
static int remote_op(struct shm_ep *ep, const struct coh_op *op)
{
	struct shm_rmr *rmr = container_of(op->rmr, struct shm_rmr, base);
	uint8_t *local = op->lmr ? (uint8_t *)op->lmr->addr + op->loff : NULL;
	uint8_t *remote;
	uint64_t old;

	/* The key is re-read on every operation so that rekey and delete revoke at once. */
	if (atomic_load_explicit(&rmr->hdr->rkey, memory_order_acquire) != rmr->base.f.rkey)
		return -EACCES;
	if (!(rmr->base.f.access & op_right(op->code)))
		return -EACCES;
	if (op->roff > rmr->base.f.len || op->len > rmr->base.f.len - op->roff)
		return -EACCES;
	remote = rmr->data + op->roff;
	/* Everything this endpoint did before is visible before anything this operation does:
	 * that is the ordering RC gives, and what WRITE-then-SEND relies on. */
	atomic_thread_fence(memory_order_release);
	switch (op->code) {
	case COH_OP_WRITE:
		if (word_wise(rmr, remote, local, op->len))
			words_store(remote, local, op->len);
		else
			memcpy(remote, local, op->len);
		break;
	case COH_OP_READ:
		if (word_wise(rmr, remote, local, op->len))
			words_load(local, remote, op->len);
		else
			memcpy(local, remote, op->len);
		break;
	case COH_OP_CAS:
		old = op->compare;
		__atomic_compare_exchange_n((uint64_t *)remote, &old, op->swap, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		memcpy(local, &old, sizeof(old));
		break;
	case COH_OP_FAA:
		old = __atomic_fetch_add((uint64_t *)remote, op->compare, __ATOMIC_SEQ_CST);
		memcpy(local, &old, sizeof(old));
		break;
	case COH_OP_FLUSH:
		atomic_thread_fence(memory_order_seq_cst);
		if (rmr->pmem) {
			/* A persistent region is persisted wherever it lives, through this
			 * mapping: msync for a file in the page cache (a cheap no-op on tmpfs),
			 * a CPU cache write-back for DAX memory, where msync would not do (a
			 * device DAX has no fsync). Cache lines are physical, so writing them back
			 * through this mapping covers stores made through any mapping. */
			if (pmem_persist(&rmr->pm, remote, op->len))
				return -EIO;
		} else if (!ep->fab->tmpfs) {
			uintptr_t start = (uintptr_t)remote & ~(uintptr_t)(SHM_PAGE - 1);

			if (msync((void *)start, (uintptr_t)remote + op->len - start, MS_SYNC) < 0)
				return -EIO;
		}
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

/* ring_put - copy a message into the ring towards the peer; -EAGAIN when it is full. */
static int ring_put(struct shm_ep *ep, const struct coh_op *op)
{
	uint64_t tail = atomic_load_explicit(&ep->tx->tail, memory_order_relaxed);
	uint64_t head = atomic_load_explicit(&ep->tx->head, memory_order_acquire);
	struct shm_slot *slot;

	if (tail - head >= ep->slots)
		return -EAGAIN;
	slot = (struct shm_slot *)(ep->tx_slots + (tail % ep->slots) * ep->stride);
	slot->len = (uint32_t)op->len;
	memcpy(slot->data, (uint8_t *)op->lmr->addr + op->loff, op->len);
	atomic_store_explicit(&ep->tx->tail, tail + 1, memory_order_release);
	shm_doorbell_ring(ep->peer_ctl);
	return 0;
}

/* exec - perform one operation and queue its completion; -EAGAIN if a SEND found no room or
 * the peer is cut off (the operation waits in the FIFO). */
static int exec(struct shm_ep *ep, const struct coh_op *op)
{
	struct coh_wc wc = { .wr_id = op->wr_id, .opcode = op->code, .peer = ep->base.attr.peer };

	if (ep_cut(ep))
		return -EAGAIN;
	if (!ep_up(ep))
		wc.status = -ECONNRESET;
	else if (op->code == COH_OP_SEND)
		wc.status = ring_put(ep, op);
	else
		wc.status = remote_op(ep, op);
	if (wc.status == -EAGAIN)
		return -EAGAIN;
	shm_cq_push(ep->send_cq, ep, &wc);
	return 0;
}

int shm_post(struct coh_ep *base, const struct coh_op *op)
{
	struct shm_ep *ep = container_of(base, struct shm_ep, base);

	if (ep->send_out >= base->attr.max_send_wr)
		return -EAGAIN;
	ep->send_out++;
	if (!ep->pend_count && exec(ep, op) == 0)
		return 0;
	ep->pend[(ep->pend_head + ep->pend_count) % base->attr.max_send_wr] = *op;
	ep->pend_ns[(ep->pend_head + ep->pend_count) % base->attr.max_send_wr] = verbs_now_ns();
	ep->pend_count++;
	return 0;
}

int shm_post_recv(struct coh_ep *base, struct coh_mr *mr, size_t off, size_t len, uint64_t wr_id)
{
	struct shm_ep *ep = container_of(base, struct shm_ep, base);
	struct shm_recv *r;

	if (ep->recv_out >= base->attr.max_recv_wr)
		return -EAGAIN;
	r = &ep->recvs[(ep->recv_head + ep->recv_count) % base->attr.max_recv_wr];
	r->mr = mr;
	r->off = off;
	r->len = len;
	r->wr_id = wr_id;
	ep->recv_count++;
	ep->recv_out++;
	return 0;
}

static void recv_complete(struct shm_ep *ep, int status, uint32_t len)
{
	struct shm_recv *r = &ep->recvs[ep->recv_head];
	struct coh_wc wc = { .wr_id = r->wr_id,
			     .status = status,
			     .opcode = COH_WC_RECV,
			     .byte_len = len,
			     .peer = ep->base.attr.peer };

	ep->recv_head = (ep->recv_head + 1) % ep->base.attr.max_recv_wr;
	ep->recv_count--;
	shm_cq_push(ep->recv_cq, ep, &wc);
}

/* deliver - move arrived messages into posted receive buffers, in order. */
static void deliver(struct shm_ep *ep)
{
	while (ep->recv_count && !ep->broken) {
		uint64_t head = atomic_load_explicit(&ep->rx->head, memory_order_relaxed);
		uint64_t tail = atomic_load_explicit(&ep->rx->tail, memory_order_acquire);
		struct shm_recv *r = &ep->recvs[ep->recv_head];
		struct shm_slot *slot;
		uint32_t len;

		if (tail == head)
			return;
		if (tail - head > ep->slots) {
			COH_LOG_ERR("node %u: peer %u corrupted its ring (head %" PRIu64
				    ", tail %" PRIu64 "); endpoint down",
				    ep->fab->base.node_id, ep->base.attr.peer, head, tail);
			ep->broken = true;
			return;
		}
		slot = (struct shm_slot *)(ep->rx_slots + (head % ep->slots) * ep->stride);
		len = *(volatile uint32_t *)&slot->len;
		if (!shm_slot_len_ok(len, ep->slot_size)) {
			COH_LOG_WARN("node %u: malformed message from %u (length %u)",
				     ep->fab->base.node_id, ep->base.attr.peer, len);
			recv_complete(ep, -EPROTO, 0);
		} else if (len > r->len) {
			recv_complete(ep, -EMSGSIZE, len);
		} else {
			memcpy((uint8_t *)r->mr->addr + r->off, slot->data, len);
			recv_complete(ep, 0, len);
		}
		atomic_store(&ep->rx->head, head + 1);
		/* The sender may be waiting for room: wake it if the ring was full. */
		if (atomic_load(&ep->rx->tail) - head >= ep->slots)
			shm_doorbell_ring(ep->peer_ctl);
	}
}

/* flush - complete everything waiting on a dead endpoint with -ECONNRESET; with @first, the
 * oldest with that status instead. Receives stay posted unless the endpoint is dead. */
static void flush_sends(struct shm_ep *ep, int first)
{
	while (ep->pend_count) {
		struct coh_op *op = &ep->pend[ep->pend_head];
		struct coh_wc wc = { .wr_id = op->wr_id,
				     .status = first ? first : -ECONNRESET,
				     .opcode = op->code,
				     .peer = ep->base.attr.peer };

		shm_cq_push(ep->send_cq, ep, &wc);
		ep->pend_head = (ep->pend_head + 1) % ep->base.attr.max_send_wr;
		ep->pend_count--;
		first = 0;
	}
}

static void flush(struct shm_ep *ep)
{
	flush_sends(ep, 0);
	while (ep->recv_count)
		recv_complete(ep, -ECONNRESET, 0);
}

/* shm_ep_progress - deliver arrivals, retry waiting operations, flush if the peer is gone.
 * Messages the peer sent before it died are still delivered. */
void shm_ep_progress(struct shm_ep *ep)
{
	deliver(ep);
	while (ep->pend_count) {
		if (exec(ep, &ep->pend[ep->pend_head]) == -EAGAIN)
			break;
		ep->pend_head = (ep->pend_head + 1) % ep->base.attr.max_send_wr;
		ep->pend_count--;
	}
	/* Liveness costs a few loads of shared lines: look only when there is something to flush.
	 * The peer may have put its last messages in the ring between the deliver() above and
	 * leaving; having now seen it gone, those messages are visible (it published the ring
	 * before it published its departure), so deliver them before flushing what is left. */
	if ((ep->pend_count || ep->recv_count) && !ep_up(ep)) {
		deliver(ep);
		flush(ep);
		return;
	}
	/* A cut: the oldest held operation ran out of retries, so the queue pair is in error and
	 * everything posted so far fails with it; what is posted next waits again. */
	if (ep->pend_count && ep_cut(ep) &&
	    verbs_now_ns() - ep->pend_ns[ep->pend_head] >= SHM_CUT_RETRY_MS * 1000000ull) {
		COH_LOG_WARN("node %u: operations to node %u timed out (the network is cut)",
			     ep->fab->base.node_id, ep->base.attr.peer);
		flush_sends(ep, -ETIMEDOUT);
	}
}

/* shm_ep_completed - a completion of @ep's was taken from its queue: release its slot. */
void shm_ep_completed(struct shm_ep *ep, uint32_t opcode)
{
	if (opcode == COH_WC_RECV)
		ep->recv_out--;
	else
		ep->send_out--;
}
