/*
 * verbs_internal.h - the contract between the fabric's common layer (fabric.c) and its providers
 * (shm.c, rdma.c). Included only by verbs/ and its tests.
 *
 * The common layer owns argument checking, descriptor encoding, fabric events, the completion
 * stash used by the blocking helpers, and per-queue accounting. A provider fills a
 * `static const struct coh_fabric_ops` and embeds the common objects below as the first member
 * of its own (struct shm_ep { struct coh_ep base; ... }), allocating them itself.
 *
 * By the time an ops function is called, its arguments have been checked: objects are non-NULL
 * and belong to the same fabric, local ranges lie inside their regions, lengths are within
 * limits, and queue depths have been reserved. Remote checks (bounds, rights, keys) are the
 * provider's, and their failures are completions, never return values.
 */
#ifndef COHORT_VERBS_INTERNAL_H
#define COHORT_VERBS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "cohort/fabric.h"
#include "cohort/log.h"

#define COH_MR_DESC_MAGIC 0x4d43u /* "CM" */
#define COH_MR_DESC_VERSION 1u

enum coh_provider_id {
	COH_PROVIDER_SHM = 1,
	COH_PROVIDER_RDMA = 2,
};

/* Defaults for endpoint attributes left 0. */
#define COH_EP_DEFAULT_WR 64u
#define COH_EP_DEFAULT_MSG 4096u
#define COH_EP_MAX_WR 16384u
#define COH_EP_MAX_CHANNEL 255u
#define COH_CQ_MAX_DEPTH 65536u

/* One operation, as the common layer hands it to a provider. */
enum coh_op_code {
	COH_OP_WRITE = COH_WC_WRITE,
	COH_OP_READ = COH_WC_READ,
	COH_OP_CAS = COH_WC_CAS,
	COH_OP_FAA = COH_WC_FAA,
	COH_OP_FLUSH = COH_WC_FLUSH,
	COH_OP_SEND = COH_WC_SEND,
};

struct coh_op {
	enum coh_op_code code;
	struct coh_mr *lmr; /* NULL for FLUSH */
	size_t loff;
	struct coh_rmr *rmr; /* NULL for SEND */
	uint64_t roff;
	size_t len;	  /* 8 for atomics */
	uint64_t compare; /* CAS compare, FAA addend */
	uint64_t swap;	  /* CAS swap */
	uint64_t wr_id;
};

/* A descriptor's fields, decoded and checked for form (not for meaning) by the common layer. */
struct coh_mr_fields {
	uint8_t provider;
	uint32_t node;
	uint32_t region;
	uint32_t rkey;
	uint32_t access;
	uint64_t addr;
	uint64_t len;
	uint64_t incarnation;
	uint8_t persist; /* enum coh_persist */
};

struct coh_fabric_ops {
	const char *name;
	enum coh_provider_id id;

	/* Allocate the provider's fabric, call fabric_base_init() on it, and connect to the
	 * cluster. On failure everything is undone. */
	int (*fabric_open)(const struct coh_fabric_attr *attr, struct coh_fabric **fabp);
	/* Leave the cluster and free the fabric (the common layer has checked for leftovers). */
	int (*fabric_close)(struct coh_fabric *fab);
	void (*fabric_query)(const struct coh_fabric *fab, struct coh_fabric_info *info);
	/* Stop @peer's current incarnation (coh_fabric_fence_peer); NULL: not possible. */
	int (*fence_peer)(struct coh_fabric *fab, uint32_t peer);
	/* Cut this node off from the peers of @peers (coh_fabric_partition); NULL: not possible. */
	int (*partition)(struct coh_fabric *fab, uint64_t peers);

	/* Fill base.{fab,addr,len,access} (coh_mr_base_init) plus rkey/region/remote_addr. */
	int (*mr_new)(struct coh_fabric *fab, size_t len, uint32_t access, struct coh_mr **mrp);
	int (*mr_reg)(struct coh_fabric *fab, void *buf, size_t len, uint32_t access,
		      struct coh_mr **mrp);
	/* As mr_new, on a pmem_map of @path (NULL: the provider's default place), and set
	 * base.persist. */
	int (*mr_new_pmem)(struct coh_fabric *fab, const char *path, size_t len, uint32_t access,
			   struct coh_mr **mrp);
	int (*mr_delete)(struct coh_mr *mr);
	int (*mr_rekey)(struct coh_mr *mr);
	/* Persist local stores to a persistent region (NULL or 0 for others). */
	int (*mr_persist)(struct coh_mr *mr, size_t off, size_t len);

	int (*cq_new)(struct coh_fabric *fab, uint32_t depth, struct coh_cq **cqp);
	int (*cq_delete)(struct coh_cq *cq);
	/* Return 0..max completions; never block. */
	int (*cq_poll)(struct coh_cq *cq, struct coh_wc *wc, int max);
	/* Sleep until something may have arrived for @cq or @timeout_ms passed (never longer).
	 * Spurious returns are fine; the common layer loops. Returns 0 or -ETIMEDOUT. */
	int (*cq_sleep)(struct coh_cq *cq, int timeout_ms);
	/* Make a cq_sleep on @cq (any thread) return now; one that starts after this and sees
	 * cq->woken set must not sleep either. Never blocks. */
	void (*cq_wake)(struct coh_cq *cq);

	/* The attribute has defaults applied and depths reserved on the queues. */
	int (*ep_new)(struct coh_fabric *fab, const struct coh_ep_attr *attr, struct coh_ep **epp);
	/* optional: @n endpoints connected at the same time, all or nothing (else one by one) */
	int (*ep_new_many)(struct coh_fabric *fab, const struct coh_ep_attr *attrs, uint32_t n,
			   struct coh_ep **eps);
	int (*ep_delete)(struct coh_ep *ep);
	bool (*ep_is_up)(const struct coh_ep *ep);
	uint64_t (*ep_peer_inc)(const struct coh_ep *ep);

	/* @f has been checked: f->provider matches and f->node is the endpoint's peer. */
	int (*rmr_import)(struct coh_ep *ep, const struct coh_mr_fields *f, struct coh_rmr **rmrp);
	int (*rmr_delete)(struct coh_rmr *rmr);

	int (*post)(struct coh_ep *ep, const struct coh_op *op);
	int (*post_recv)(struct coh_ep *ep, struct coh_mr *mr, size_t off, size_t len,
			 uint64_t wr_id);
};

extern const struct coh_fabric_ops shm_ops;
#ifdef COHORT_HAVE_RDMA
extern const struct coh_fabric_ops rdma_ops;
#endif

/*
 * struct coh_fabric - common part of a node's fabric.
 * @ev_lock guards @ev_pending, @ev_incarnation and writes to @ev_fd. Everything else is set at
 * open and read-only after. Counters of live objects are atomics.
 */
struct coh_fabric {
	const struct coh_fabric_ops *ops;
	uint32_t node_id;
	uint32_t timeout_ms;

	pthread_mutex_t ev_lock;
	uint64_t ev_pending;			       /* bit per peer: PEER_DOWN not yet taken */
	uint64_t ev_incarnation[COH_FABRIC_MAX_NODES]; /* incarnation each pending bit is for */
	int ev_fd;				       /* eventfd: readable while ev_pending != 0 */

	atomic_uint n_mr, n_cq, n_ep;

	/* The cluster secret (coh_fabric_attr.secret), or none (@secret_len 0). */
	uint8_t secret[COH_FABRIC_SECRET_MAX];
	uint32_t secret_len;
};

#define VERBS_MAC_LEN 32u /* HMAC-SHA256 */

/* struct verbs_mac_part - one piece of what a handshake MAC covers. */
struct verbs_mac_part {
	const void *p;
	size_t len;
};

/* verbs_mac - HMAC-SHA256 with the fabric's secret over @parts in order, prefixed by @label
 * (which says what the MAC is for, so that one kind cannot stand in for another). Returns 0, or
 * -EACCES when the fabric has no secret. */
int verbs_mac(const struct coh_fabric *fab, const char *label, const struct verbs_mac_part *parts,
	      size_t n, uint8_t out[VERBS_MAC_LEN]);
/* verbs_mac_equal - compare MACs in constant time (the first @len bytes). */
bool verbs_mac_equal(const uint8_t *a, const uint8_t *b, size_t len);

/* struct coh_mr - common part of a region. Read-only after creation except @rkey (rekey). */
struct coh_mr {
	struct coh_fabric *fab;
	void *addr;
	size_t len;
	uint32_t access;
	uint32_t region;      /* provider's region id, exported */
	uint32_t rkey;	      /* current key, exported */
	uint64_t remote_addr; /* address peers name in operations (rdma: the VA; shm: 0) */
	uint64_t incarnation; /* the owner's incarnation, exported */
	/* What a FLUSH to it guarantees, exported; set by mr_new_pmem, else NONE (0). */
	enum coh_persist persist;
};

/* struct coh_rmr - common part of an imported region; read-only after import. */
struct coh_rmr {
	struct coh_ep *ep;
	struct coh_mr_fields f;
};

/*
 * struct coh_cq - common part of a completion queue. Owned by one serialisation domain, so no
 * lock: @stash holds completions a blocking helper took out of the provider but did not own;
 * @reserved is the depth the attached endpoints reserved; @send_pending counts send-side
 * operations posted to endpoints using this queue and not yet taken.
 */
struct coh_cq {
	struct coh_fabric *fab;
	_Atomic bool woken; /* coh_cq_wake: the next wait that finds nothing returns -EINTR */
	uint32_t depth;
	uint32_t reserved;
	uint32_t send_pending;
	uint32_t n_ep;
	struct coh_wc *stash;
	uint32_t stash_head, stash_count;
};

/*
 * struct coh_ep - common part of an endpoint. Owned by one serialisation domain. @scratch is an
 * 8-byte LOCAL_WRITE region for the atomic sync helpers' results. The provider counts its own
 * outstanding operations and returns -EAGAIN from post (post_recv) when attr.max_send_wr
 * (max_recv_wr) of them have not yet been taken from their queue.
 */
struct coh_ep {
	struct coh_fabric *fab;
	struct coh_ep_attr attr; /* with defaults applied */
	struct coh_mr *scratch;
	uint32_t n_rmr;
};

/* fabric.c helpers for providers. */

/* Initialise the common part; undo with fabric_base_fini(). */
int fabric_base_init(struct coh_fabric *fab, const struct coh_fabric_ops *ops,
		     const struct coh_fabric_attr *attr);
void fabric_base_fini(struct coh_fabric *fab);

/* Report that @peer (in @incarnation) is down. Thread-safe; async-signal-unsafe. */
void fabric_peer_down(struct coh_fabric *fab, uint32_t peer, uint64_t incarnation);

/* Decode and check the form of a descriptor. Returns 0 or -EPROTO. Pure: fuzzed. */
int mr_desc_decode(const struct coh_mr_desc *desc, struct coh_mr_fields *f);
void mr_desc_encode(const struct coh_mr_fields *f, struct coh_mr_desc *desc);

/*
 * pmem.c: persistent regions' files, mapped with libpmem2 for both providers. Only pmem.c
 * includes <libpmem2.h>.
 *
 * Layout of such a file: PMEM_HDR_LEN bytes that belong to the provider (shm: the region
 * header peers check; rdma: unused), then the region's bytes. The same file therefore holds the
 * same data at the same offsets whichever provider wrote it.
 */
#define PMEM_HDR_LEN 4096u

struct pmem2_map;

/*
 * struct pmem_map - a file or device DAX mapped shared with libpmem2. Read-only after
 * pmem_map_open(). @persist is what pmem_persist() gives on this host: COH_PERSIST_FILE for
 * page granularity (msync), COH_PERSIST_PMEM for cache-line or byte granularity (CPU cache
 * write-back). @eadr is byte granularity: the CPU caches are in the persistence domain, so bytes
 * that reached them, from the CPU or by DMA, are persistent without any flush.
 */
struct pmem_map {
	struct pmem2_map *map;
	int fd;
	void *addr;
	size_t len; /* mapped bytes: what was asked, rounded up to the source's alignment */
	enum coh_persist persist;
	bool eadr;
	bool created; /* pmem_map_open() created the file */
	void (*persist_fn)(const void *ptr, size_t size);
};

/* pmem_map_open() flags. */
#define PMEM_MAP_CREATE (1u << 0) /* the owner: create or extend the file, hold it exclusively */
#define PMEM_MAP_RDONLY (1u << 1) /* map read-only (an importer without a write right) */

int pmem_map_open(int dir_fd, const char *path, size_t len, unsigned int flags,
		  struct pmem_map *pm);
int pmem_map_close(struct pmem_map *pm);
int pmem_persist(const struct pmem_map *pm, const void *addr, size_t len);

/* Monotonic clock in nanoseconds. */
uint64_t verbs_now_ns(void);

/* Parse "ip:port,ip:port,..." and return entry @node into @host (NUL-terminated) and @port.
 * Returns 0, -EINVAL (malformed) or -ENOENT (fewer entries). Pure: unit-tested. */
int cluster_addr_parse(const char *cluster, uint32_t node, char *host, size_t hostlen,
		       uint16_t *port);

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif /* COHORT_VERBS_INTERNAL_H */
