/*
 * shm_internal.h - shared declarations of the shm provider (shm.c: nodes, liveness, queues;
 * shm_mr.c: regions; shm_ep.c: endpoints, message rings, operations). Included only by those
 * files and their tests.
 *
 * A cluster is a directory. Its files, all created 0600:
 *   node-<id>.ctl             one page per node: current incarnation, pid, the wake-up doorbell
 *   node-<id>-<inc>.lock      held (OFD write lock, bytes 0-1) by that incarnation while it lives
 *   mr-<id>-<inc>-<region>    a region: one header page, then the data; for a persistent region
 *                             on a path of the caller's, a symbolic link to that file or device
 *   ep-<lo>.<inc>-<hi>.<inc>-<chan>   an endpoint: header page, then one message ring per direction
 * Everything a peer reads from these files is validated before use: a peer's memory is input.
 */
#ifndef COHORT_SHM_INTERNAL_H
#define COHORT_SHM_INTERNAL_H

#include <stdalign.h>
#include <stdatomic.h>

#include "verbs_internal.h"

#define SHM_PAGE 4096u
#define SHM_CTL_MAGIC 0x4c54434f48434853ull /* "SHCHOCTL" */
#define SHM_MR_MAGIC 0x524d4f48434853ull    /* "SHCHOMR" */
#define SHM_EP_MAGIC 0x50454f48434853ull    /* "SHCHOEP" */
#define SHM_VERSION 2u			    /* 2: endpoint files carry the handshake's proofs */
#define SHM_RING_SLOTS 64u
#define SHM_MAX_MSG (1u << 20)

/* A node holds bytes 0-1 of its lock file; peers probe byte 1 (byte 0 is kept free for tools
 * that want to wait on the node with a blocking lock). */
#define SHM_LOCK_WAIT_BYTE 0
#define SHM_LOCK_ALIVE_BYTE 1
/* The monitor re-probes every peer at least this often (ms), pidfd or not. */
#define SHM_MONITOR_PERIOD_MS 100
/* A cut (coh_fabric_partition) fails a held operation after this: rdma's retries (RDMA_ACK_TIMEOUT,
 * RDMA_RETRY_COUNT) give up in about 0.8 s. */
#define SHM_CUT_RETRY_MS 800u

/* struct shm_ctl - node-<id>.ctl. Written by its node; peers read it and ring the doorbell. */
struct shm_ctl {
	uint64_t magic;
	uint32_t version;
	uint32_t node;
	_Atomic uint64_t incarnation; /* of the live (or last) process; 0 before the first */
	_Atomic int32_t pid;
	_Atomic uint32_t ready;		       /* 1 while the incarnation is open */
	alignas(64) _Atomic uint32_t doorbell; /* futex word: bumped on anything worth waking for */
	_Atomic uint32_t waiters;	       /* threads asleep on the doorbell */
};

/* struct shm_mr_hdr - first page of a region file. @rkey is 0 once the region is deleted.
 * @persist is the enum coh_persist the owner exported, which importers check against the
 * descriptor's. */
struct shm_mr_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t node;
	uint64_t incarnation;
	uint32_t region;
	uint32_t access;
	uint64_t len;
	_Atomic uint32_t rkey;
	uint32_t persist;
};

/* struct shm_ring - one direction of an endpoint. Single producer (@tail), single consumer
 * (@head), on separate cache lines. Slots follow the header. */
struct shm_ring {
	alignas(64) _Atomic uint64_t tail;
	alignas(64) _Atomic uint64_t head;
};

/* struct shm_slot - one message; @len is written by the peer and checked before use. */
struct shm_slot {
	uint32_t len;
	uint32_t rsvd;
	uint8_t data[];
};

/* struct shm_ep_hdr - first page of an endpoint file. @present[side]: 0 absent, 1 joined,
 * 2 refused (attributes disagree), 3 left, 4 denied (the other side did not prove the cluster
 * secret); side 0 is the lower node id. @auth[side]: 1 when that side has no secret, 2 when it
 * has one, and then @proof[side] is its MAC over the endpoint's name and side (written before
 * present[side] and @auth_set[side]). */
struct shm_ep_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t slots;
	uint32_t slot_size;
	uint32_t rsvd;
	_Atomic uint32_t present[2];
	uint32_t auth[2];
	uint8_t proof[2][32];
	_Atomic uint32_t auth_set[2]; /* @auth and @proof of that side are written */
};

/*
 * struct shm_peer - this node's view of one peer. @up_inc is the incarnation while the peer is
 * known alive and 0 once the monitor saw it go; endpoints compare it with the incarnation they
 * connected to, which makes "is my peer up?" one atomic load. The rest is guarded by
 * shm_fabric.lock.
 */
struct shm_peer {
	_Atomic uint64_t up_inc;
	uint64_t incarnation;
	struct shm_ctl *ctl; /* the peer's ctl page: doorbell, ready flag */
	int lock_fd;	     /* the peer's lock file, probed for liveness */
	int pidfd;	     /* readable when the peer's process exits; -1 if unavailable */
	uint32_t id;
};

/*
 * struct shm_fabric - a node on the shm provider. @lock guards @peers (except their up_inc),
 * @mon_stop, @next_region and @eps_open; it is never held while waiting on a peer. Lock order: fab->lock,
 * then base.ev_lock.
 */
struct shm_fabric {
	struct coh_fabric base;
	char *dir;
	int dir_fd;
	bool tmpfs;
	uint64_t incarnation;
	int ctl_fd;
	struct shm_ctl *ctl;
	int lock_fd;
	pthread_mutex_t lock;
	pthread_t monitor;
	int mon_fd; /* eventfd: wakes the monitor (new peer, stop) */
	bool mon_stop;
	uint32_t next_region;
	uint32_t rkey_seed;
	struct shm_peer peers[COH_FABRIC_MAX_NODES];
	uint8_t eps_open[COH_FABRIC_MAX_NODES][COH_EP_MAX_CHANNEL + 1];
	uint32_t latency_ns;	/* coh_fabric_attr.shm_latency_ns */
	_Atomic uint64_t cut;	/* coh_fabric_partition: peers cut off, by bit */
	struct shm_rmap *rmaps; /* peers' regions mapped here, under @lock */
};

/* struct shm_mr - a region. Remotely accessible ones live in a file (@hdr, then the data);
 * local-only ones made by coh_mr_new are anonymous memory (@anon); coh_mr_reg ones have neither.
 * Persistent ones (@pmem) are a libpmem2 mapping (@pm, whose first page is @hdr) of a file that
 * @name, in the cluster directory, is or links to. Read-only after creation. */
struct shm_mr {
	struct coh_mr base;
	struct shm_mr_hdr *hdr;
	void *anon;
	size_t map_len;
	char name[64];
	bool pmem;
	struct pmem_map pm;
};

/* struct shm_rmr - an imported region, mapped with the protection its rights allow; with
 * libpmem2 (@pm) when it is persistent, so that FLUSH can persist through this mapping. */
/* struct shm_rmap - one mapping of a peer's region, shared by every import of it in this
 * process with the same access (an RDMA import is a key, not memory: n lanes importing a region
 * must not map and populate it n times). Under shm_fabric.lock. */
struct shm_rmap {
	char name[64];
	int prot;
	void *map;
	size_t len;
	uint32_t refs;
	struct shm_rmap *next;
};

struct shm_rmr {
	struct coh_rmr base;
	struct shm_mr_hdr *hdr;
	uint8_t *data;
	size_t map_len;
	bool pmem;
	struct pmem_map pm;
	struct shm_rmap *rmap; /* the shared mapping (not pmem) */
	struct shm_fabric *sf;
};

struct shm_ep;

/* struct shm_cqe - a completion plus the endpoint whose outstanding count it releases. */
struct shm_cqe {
	struct coh_wc wc;
	struct shm_ep *ep;
	uint64_t ready_ns; /* coh_fabric_attr.shm_latency_ns: not returned before; 0: at once */
};

/* struct shm_cq - a process-local ring of completions, and the endpoints that feed it, which
 * polling drives forward. Owned by one serialisation domain. */
struct shm_cq {
	struct coh_cq base;
	struct shm_fabric *fab;
	struct shm_cqe *ring;
	uint32_t cap, head, count;
	struct shm_ep **eps;
	uint32_t n_eps, cap_eps;
};

/* shm.c */
static inline struct shm_fabric *to_shm_fabric(struct coh_fabric *fab)
{
	return container_of(fab, struct shm_fabric, base);
}

void shm_doorbell_ring(struct shm_ctl *ctl);
int shm_doorbell_sleep(struct shm_ctl *ctl, uint32_t seen, int timeout_ms);
int shm_peer_attach(struct shm_fabric *sf, uint32_t peer, int timeout_ms, struct shm_peer **pp);
int shm_file_map(int dir_fd, const char *name, size_t len, bool create, int prot, void **mapp,
		 bool *created);
void shm_cq_push(struct shm_cq *cq, struct shm_ep *ep, const struct coh_wc *wc);
int shm_cq_attach(struct shm_cq *cq, struct shm_ep *ep);
void shm_cq_detach(struct shm_cq *cq, struct shm_ep *ep);
uint32_t shm_random32(void);

/* shm_mr.c */
int shm_mr_new(struct coh_fabric *fab, size_t len, uint32_t access, struct coh_mr **mrp);
int shm_mr_new_pmem(struct coh_fabric *fab, const char *path, size_t len, uint32_t access,
		    struct coh_mr **mrp);
int shm_mr_reg(struct coh_fabric *fab, void *buf, size_t len, uint32_t access, struct coh_mr **mrp);
int shm_mr_delete(struct coh_mr *mr);
int shm_mr_rekey(struct coh_mr *mr);
int shm_mr_persist(struct coh_mr *mr, size_t off, size_t len);

/* shm_ep.c */
int shm_ep_new(struct coh_fabric *fab, const struct coh_ep_attr *attr, struct coh_ep **epp);
int shm_ep_delete(struct coh_ep *ep);
bool shm_ep_is_up(const struct coh_ep *ep);
uint64_t shm_ep_peer_inc(const struct coh_ep *ep);
int shm_rmr_import(struct coh_ep *ep, const struct coh_mr_fields *f, struct coh_rmr **rmrp);
int shm_rmr_delete(struct coh_rmr *rmr);
int shm_post(struct coh_ep *ep, const struct coh_op *op);
int shm_post_recv(struct coh_ep *ep, struct coh_mr *mr, size_t off, size_t len, uint64_t wr_id);
void shm_ep_progress(struct shm_ep *ep);
void shm_ep_completed(struct shm_ep *ep, uint32_t opcode);
bool shm_slot_len_ok(uint32_t len, uint32_t slot_size);

#endif /* COHORT_SHM_INTERNAL_H */
