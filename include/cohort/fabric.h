/*
 * fabric.h - Cohort's fabric: registered memory, endpoints to peers, one-sided and two-sided
 * operations, completion queues and peer-failure events, behind one API with two providers.
 *
 * The "rdma" provider runs over libibverbs and librdmacm and is the product's transport. The
 * "shm" provider runs a whole cluster on one host, one process per node: its one-sided operations
 * are plain loads, stores and atomics that the initiator performs on a shared mapping of the
 * target's region, with no CPU on the target side, so code above this layer behaves the same on
 * both. docs/fabric.md states each provider's guarantees and limits.
 *
 * The model is that of RDMA verbs, reduced to what Cohort uses:
 *   - a fabric is one node's handle on the cluster;
 *   - a memory region (coh_mr) is local memory with explicit access rights; its descriptor
 *     (struct coh_mr_desc, a fixed wire format) is sent to peers, which import it as a remote
 *     region (coh_rmr) on an endpoint;
 *   - an endpoint (coh_ep) is a reliable connection to one peer (or to the node itself: a
 *     loopback endpoint, through which a node changes its own words that peers change with
 *     atomics, because fabric atomics are not atomic with respect to the CPU's);
 *   - operations are posted without blocking and report through a completion queue (coh_cq).
 *
 * Threads: a fabric's events may be read by any thread. An endpoint and the completion queues
 * attached to it form one serialisation domain: post to the endpoint and poll those queues from
 * one thread at a time (the caller serialises). Distinct domains may run on distinct threads.
 *
 * Errors: every call returns 0 (or a count) on success and a negative errno on failure; nothing
 * is reported through errno. Completions carry their own status, also a negative errno.
 */
#ifndef COHORT_FABRIC_H
#define COHORT_FABRIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Node ids are 0 .. COH_FABRIC_MAX_NODES-1, so a sharer set fits one 64-bit word. */
#define COH_FABRIC_MAX_NODES 64u

/* Default bound for blocking control operations (connect, sync helpers), in milliseconds. */
#define COH_FABRIC_DEFAULT_TIMEOUT_MS 10000u

/* Largest single transfer, for any operation. */
#define COH_FABRIC_MAX_XFER (1u << 30)

struct coh_fabric;
struct coh_mr;
struct coh_rmr;
struct coh_ep;
struct coh_cq;

/* Access rights of a memory region. Give each region the narrowest set it needs. */
enum coh_access {
	/* The fabric may write into it locally: RECV buffers and READ or atomic results. */
	COH_ACCESS_LOCAL_WRITE = 1u << 0,
	COH_ACCESS_REMOTE_READ = 1u << 1,
	COH_ACCESS_REMOTE_WRITE = 1u << 2,
	COH_ACCESS_REMOTE_ATOMIC = 1u << 3,
	/* A peer may make its writes to this region persistent (coh_ep_post_flush). */
	COH_ACCESS_REMOTE_FLUSH = 1u << 4,
};
#define COH_ACCESS_ALL 0x1fu
#define COH_ACCESS_REMOTE_MASK 0x1eu

/*
 * How durable the bytes of a region are once a FLUSH to them has completed (coh_ep_post_flush).
 * Each mode promises at least what the one before it does. docs/fabric.md, "Persistent regions",
 * gives the mode of each backing on each provider.
 */
enum coh_persist {
	/* Ordinary memory: the bytes are promised to survive the writer's crash only. */
	COH_PERSIST_NONE = 0,
	/*
	 * A file in the page cache (libpmem2 page granularity) or DAX memory without a persistent
	 * flush: the bytes survive the crash of any process, the owner's included, and the owner
	 * finds them again by creating the region on the same file. They survive the host's crash
	 * only where the FLUSH also writes the file back to stable storage: shm msyncs it, so on a
	 * disk file system they do; on tmpfs, and on rdma, they do not.
	 */
	COH_PERSIST_FILE = 1,
	/* DAX persistent memory (cache-line or byte granularity) reached by a persistent flush: the
	 * bytes survive power loss. */
	COH_PERSIST_PMEM = 2,
};

/**
 * struct coh_fabric_attr - how to open a node's fabric.
 * @provider: "shm" or "rdma"
 * @cluster: where the cluster lives. shm: a directory (created if missing) that holds the
 *           cluster's shared-memory files, e.g. "/dev/shm/cohort-demo". rdma: a comma-separated
 *           list "ip:port,ip:port,..." whose i-th entry is node i's listening address.
 * @node_id: this node's id, < COH_FABRIC_MAX_NODES; unique among live nodes of the cluster
 * @timeout_ms: bound for blocking control operations; 0 means COH_FABRIC_DEFAULT_TIMEOUT_MS
 */
struct coh_fabric_attr {
	const char *provider;
	const char *cluster;
	uint32_t node_id;
	uint32_t timeout_ms;
	/* shm only, for benchmarks: every completion is held back this long after the operation
	 * is done (a one-sided operation's round trip; a message's arrival), so that what a
	 * fabric's latency does to the layers above can be measured on one host. 0: none. */
	uint32_t shm_latency_ns;
	/* The cluster secret (DRBD's shared-secret, corosync's authkey): when set, every connection
	 * is made only between nodes that prove they know it (an HMAC-SHA256 over the handshake,
	 * both ways); a peer with another secret, or none, is refused with -EACCES on both sides.
	 * NULL: no authentication (tests, benchmarks); then peers with a secret refuse this node.
	 * Copied at open; 1 to COH_FABRIC_SECRET_MAX bytes. docs/fabric.md, "Authentication". */
	const void *secret;
	uint32_t secret_len;
};

#define COH_FABRIC_SECRET_MAX 256u

/**
 * struct coh_fabric_info - what a fabric can do.
 * @provider: the provider's name
 * @node_id: this node's id
 * @native_flush: true when FLUSH is a fabric operation (ibv_wr_flush); false when it is emulated
 *                (rdma: a READ after the WRITE; shm: a fence, plus msync when the cluster directory
 *                is on a real file system)
 * @persistent: true when a flushed coh_mr_new() region survives the loss of power of the target
 *              host, false when it only survives the crash of the writing process; regions of
 *              coh_mr_new_pmem() have their own mode (coh_rmr_persistence())
 * @max_msg_size: largest SEND an endpoint may be configured for
 * @max_inline: largest SEND that is copied at post time (the buffer is reusable on return)
 * @numa_node: the NUMA node of the device the fabric uses, where its threads are bound; -1 when
 *             unknown or not applicable (shm)
 * @device: the device's name ("rxe0"), or "shm"
 * @peer_down_proven: true when a COH_EVENT_PEER_DOWN proves that the peer's process is gone
 *                    (shm: the kernel released its lock); false when it may only mean that the
 *                    connection broke (rdma: a partitioned peer may still run)
 */
struct coh_fabric_info {
	const char *provider;
	uint32_t node_id;
	bool native_flush;
	bool persistent;
	uint32_t max_msg_size;
	uint32_t max_inline;
	int32_t numa_node;
	char device[64];
	bool peer_down_proven;
};

/**
 * coh_fabric_open - open this node's handle on a cluster.
 * @attr: provider, cluster and node id; not retained after the call
 * @fabp: on success, the new fabric; untouched on failure
 *
 * Returns 0, or -EINVAL (bad attribute), -ENOENT (unknown provider), -EPROTONOSUPPORT (provider
 * not built in), -EADDRINUSE (another live process is node @node_id), -ENOMEM, or the errno of a
 * failed system call. Any thread may call it. The caller owns the fabric and closes it with
 * coh_fabric_close() after deleting everything created from it.
 */
int coh_fabric_open(const struct coh_fabric_attr *attr, struct coh_fabric **fabp);

/**
 * coh_fabric_close - close a fabric and free it.
 * @fabp: the fabric; may point to NULL. Set to NULL on return.
 *
 * Peers see this node leave (a COH_EVENT_PEER_DOWN). Endpoints, regions and queues made from the
 * fabric must have been deleted first; if any remain, they are reported, the fabric is still
 * freed, and -EBUSY is returned.
 */
int coh_fabric_close(struct coh_fabric **fabp);

/** coh_fabric_query - fill @info with the fabric's capabilities. Returns 0 or -EINVAL. */
int coh_fabric_query(const struct coh_fabric *fab, struct coh_fabric_info *info);

/**
 * coh_fabric_fence_peer - stop @peer's current incarnation for good, because the cluster has
 * excluded it without proof that it died (it went silent). shm kills its process (through its
 * pidfd where there is one, so that a reused pid is never hit); its PEER_DOWN follows, as for any
 * death. rdma cannot reach another machine's process: -EOPNOTSUPP, and the caller relies on the
 * excluded node's lease (or on a fence agent outside Cohort). Returns 0 (or 0 when the peer is
 * already down), -EINVAL, -EOPNOTSUPP, or the errno of the kill. Any thread.
 */
int coh_fabric_fence_peer(struct coh_fabric *fab, uint32_t peer);

/**
 * coh_fabric_partition - fault injection for tests: from now on this node's traffic to and from
 * the peers in the bit mask @peers is lost, as if the network between them were cut, until a
 * later call leaves them out of the mask. What a real RC transport does under a cut is what the
 * caller sees:
 * - An operation or SEND posted to a cut peer is held, as its packets would be retransmitted. If
 *   the cut heals first, it is performed then, in order, reading its local buffer then (a
 *   retransmitted WRITE reads host memory again). If not, after the transport's retry time (the
 *   rdma provider's, about 0.8 s) it completes with -ETIMEDOUT without having been performed,
 *   and everything posted before that moment and still held completes with -ECONNRESET (the
 *   queue pair went to the error state; a reconnection would take the next posts).
 * - New endpoints to a cut peer do not connect (their handshake times out).
 * - No COH_EVENT_PEER_DOWN: the peer's process is alive, and on shm that event proves a death.
 *   The peer finds out only by the silence, as it would from a partition.
 * - coh_fabric_fence_peer still reaches the peer (a fence agent uses another path).
 * The cut is one-sided: a partition between A and B is both A's call and B's. shm only; rdma
 * returns -EOPNOTSUPP (the VM rig's nodes share one soft-RoCE device, which loops their packets
 * back inside the kernel, where no filter sees them). Returns 0, -EINVAL or -EOPNOTSUPP.
 */
int coh_fabric_partition(struct coh_fabric *fab, uint64_t peers);

/** coh_fabric_node_id - this node's id. */
uint32_t coh_fabric_node_id(const struct coh_fabric *fab);

/* Fabric events. */
enum coh_event_type {
	/*
	 * A peer left: its process died (shm: it released its node lock; rdma: its connection broke
	 * and could not be re-established) or it closed its fabric. Every endpoint to it has failed:
	 * operations posted to them complete with -ECONNRESET, and posted receives are flushed with
	 * -ECONNRESET. A peer that comes back is a new incarnation and needs new endpoints.
	 */
	COH_EVENT_PEER_DOWN = 1,
};

/**
 * struct coh_event - one fabric event.
 * @type: an enum coh_event_type
 * @peer: the node it concerns
 * @incarnation: which life of that node it concerns (increases each time the node id is opened)
 */
struct coh_event {
	uint32_t type;
	uint32_t peer;
	uint64_t incarnation;
};

/**
 * coh_fabric_event_get - take the next event, waiting at most @timeout_ms for one.
 * @timeout_ms: 0 polls; must not be negative
 *
 * Returns 0 with @ev filled, -ETIMEDOUT (or -EAGAIN when @timeout_ms is 0) when there is none, or
 * -EINVAL. Events for the same peer and incarnation are reported once. Any thread may call it.
 */
int coh_fabric_event_get(struct coh_fabric *fab, struct coh_event *ev, int timeout_ms);

/**
 * coh_fabric_event_fd - a file descriptor that polls readable while events are pending, for an
 * event loop. Owned by the fabric: do not read or close it; call coh_fabric_event_get().
 */
int coh_fabric_event_fd(const struct coh_fabric *fab);

/* Memory regions. */

/**
 * coh_mr_new - allocate and register a zeroed, page-aligned region that peers may access.
 * @fab: the fabric
 * @len: size in bytes, 1 .. COH_FABRIC_MAX_XFER
 * @access: enum coh_access bits
 * @mrp: on success, the region; untouched on failure
 *
 * This is the only way to make memory that peers can reach on every provider (shm must place it
 * in a shared file). Returns 0, -EINVAL, -ENOMEM, or a system call's errno. The caller owns the
 * region and deletes it with coh_mr_delete() before closing the fabric.
 */
int coh_mr_new(struct coh_fabric *fab, size_t len, uint32_t access, struct coh_mr **mrp);

/**
 * coh_mr_reg - register caller memory for local use: as the source of WRITE and SEND, or (with
 * COH_ACCESS_LOCAL_WRITE) as the target of READ, atomics and RECV.
 * @buf: the memory; the caller keeps ownership and must keep it valid until coh_mr_delete()
 *
 * Returns 0, -EINVAL, -ENOMEM, or -EOPNOTSUPP when remote access bits are asked for on a provider
 * that cannot expose caller memory to peers (shm); use coh_mr_new() for that.
 */
int coh_mr_reg(struct coh_fabric *fab, void *buf, size_t len, uint32_t access, struct coh_mr **mrp);

/**
 * coh_mr_new_pmem - a region peers can reach, mapped with libpmem2 from a file or a DAX device,
 * whose contents outlive the region.
 * @fab: the fabric
 * @path: a device DAX (/dev/daxN.M), a file on a DAX file system, or any other file; relative
 *        to the working directory. A missing file is created; a short one is extended to cover
 *        @len (the added bytes read as zero); an existing file's contents are kept, so a node
 *        that restarts and creates the region again on the same path finds what was written.
 *        The region's bytes start at offset 4096 of the file on every provider: the first page
 *        is Cohort's (shm keeps the region's header there). coh_mr_delete() leaves the file.
 *        NULL: a file in the provider's default place (shm: the cluster directory; rdma:
 *        $COHORT_PMEM_DIR, or /dev/shm), named after the node, its incarnation and a counter,
 *        which coh_mr_delete() removes.
 * @len: size in bytes, 1 .. COH_FABRIC_MAX_XFER
 * @access: enum coh_access bits, as for coh_mr_new()
 * @mrp: on success, the region; untouched on failure
 *
 * A file backs at most one region at a time, in any process. coh_mr_persistence() tells what a
 * completed FLUSH to the region guarantees. Returns 0; -EINVAL (a bad argument, @path empty, or
 * neither a regular file nor a character device); -ENOMEM; -ENOSPC (the device is smaller than
 * @len plus the header page, or the file system is full); -EBUSY (another region uses the file);
 * -ENODEV (a character device that is not device DAX); rdma: the errno of ibv_reg_mr(), e.g.
 * -EOPNOTSUPP or -EFAULT when the kernel will not pin the mapping for the device (a file on a
 * DAX file system; on recent kernels, a page-cache file of a disk file system); or the errno of
 * the failed open(2), fallocate or libpmem2 call. Failures are logged with the path and
 * libpmem2's message. The caller owns the region and deletes it with coh_mr_delete() before
 * closing the fabric. Any thread may call it.
 */
int coh_mr_new_pmem(struct coh_fabric *fab, const char *path, size_t len, uint32_t access,
		    struct coh_mr **mrp);

/**
 * coh_mr_persist - make this node's own stores to @mr+@off..+@len durable, as far as the region's
 * mode goes (coh_mr_persistence()): msync for a file in the page cache, a cache flush for DAX;
 * nothing for a region that is not persistent. For a host that changes a region peers write into
 * (zeroing a replayed log) and must not see the change undone by a crash. Returns 0, -EINVAL, or
 * the errno of the flush.
 */
int coh_mr_persist(struct coh_mr *mr, size_t off, size_t len);

/**
 * coh_mr_persistence - what a completed FLUSH to @mr guarantees: the mode coh_mr_new_pmem()
 * found, COH_PERSIST_NONE for coh_mr_new() and coh_mr_reg() regions (and for NULL).
 */
enum coh_persist coh_mr_persistence(const struct coh_mr *mr);

/**
 * coh_mr_delete - deregister a region and, if the fabric allocated it, free it.
 * @mrp: may point to NULL; set to NULL on return
 *
 * Peers that imported the region lose access: their later operations complete with -EACCES.
 * Operations that use it must have completed. Returns 0 or a teardown errno (the region is
 * freed regardless).
 */
int coh_mr_delete(struct coh_mr **mrp);

/** coh_mr_addr - the region's local address. */
void *coh_mr_addr(const struct coh_mr *mr);

/** coh_mr_len - the region's length in bytes. */
size_t coh_mr_len(const struct coh_mr *mr);

/**
 * coh_mr_rekey - revoke every descriptor exported so far. Peers' operations through remote
 * regions imported from old descriptors complete with -EACCES; export again to grant access.
 * Use it when membership changes so that a fenced node loses access. Returns 0, -EINVAL for a
 * region without remote access, or the provider's errno.
 */
int coh_mr_rekey(struct coh_mr *mr);

/* The wire form of a region's descriptor: fixed size, little-endian, versioned. */
#define COH_MR_DESC_SIZE 48u

struct coh_mr_desc {
	uint8_t bytes[COH_MR_DESC_SIZE];
};

/**
 * coh_mr_export - write the descriptor a peer needs to reach @mr.
 * Returns 0, or -EINVAL when @mr has no remote access bit.
 */
int coh_mr_export(const struct coh_mr *mr, struct coh_mr_desc *desc);

/**
 * coh_rmr_import - make a peer's exported region usable on @ep.
 * @ep: the endpoint to the region's owner
 * @desc: the descriptor as received; it is validated, never trusted
 * @rmrp: on success, the remote region; untouched on failure
 *
 * Returns 0; -EPROTO for a malformed descriptor (bad magic, version or fields); -EINVAL when the
 * descriptor is for another provider or another node than @ep's peer; -EACCES when the region no
 * longer exists or was rekeyed; -ENOMEM. The caller deletes it with coh_rmr_delete() before @ep.
 */
int coh_rmr_import(struct coh_ep *ep, const struct coh_mr_desc *desc, struct coh_rmr **rmrp);

/** coh_rmr_delete - forget a remote region. @rmrp may point to NULL; set to NULL on return. */
int coh_rmr_delete(struct coh_rmr **rmrp);

/** coh_rmr_len - the remote region's length in bytes. */
size_t coh_rmr_len(const struct coh_rmr *rmr);

/**
 * coh_rmr_persistence - what a completed FLUSH to @rmr guarantees, as its owner exported it
 * (coh_mr_persistence() on the owner's side); COH_PERSIST_NONE for NULL.
 */
enum coh_persist coh_rmr_persistence(const struct coh_rmr *rmr);

/* Completion queues. */

enum coh_wc_opcode {
	COH_WC_WRITE = 1,
	COH_WC_READ,
	COH_WC_CAS,
	COH_WC_FAA,
	COH_WC_FLUSH,
	COH_WC_SEND,
	COH_WC_RECV,
};

/**
 * struct coh_wc - one completion.
 * @wr_id: the caller's id from the post
 * @status: 0; -EACCES (remote access or bounds violation, unknown or revoked key); -ECONNRESET
 *          (the peer is down, or the operation was flushed); -EMSGSIZE (a RECV buffer too small
 *          for the message); -EPROTO (a malformed message from the peer); -ETIMEDOUT (transport
 *          retries exhausted); -EIO (other transport error)
 * @opcode: an enum coh_wc_opcode
 * @byte_len: bytes received, for COH_WC_RECV
 * @peer: the endpoint's peer
 */
struct coh_wc {
	uint64_t wr_id;
	int32_t status;
	uint32_t opcode;
	uint32_t byte_len;
	uint32_t peer;
};

/**
 * coh_cq_new - create a completion queue holding up to @depth completions (1 .. 65536).
 * Endpoints attached to it reserve their queue depths from it, so it can never overflow.
 * Returns 0, -EINVAL or -ENOMEM.
 */
int coh_cq_new(struct coh_fabric *fab, uint32_t depth, struct coh_cq **cqp);

/**
 * coh_cq_delete - free a completion queue. @cqp may point to NULL; set to NULL on return.
 * Returns -EBUSY (and still frees it) if endpoints are still attached.
 */
int coh_cq_delete(struct coh_cq **cqp);

/**
 * coh_cq_poll - take up to @max completions without blocking.
 * Returns the number taken (0 when none), or -EINVAL. On shm, polling also makes progress:
 * it delivers arrived messages into posted receive buffers.
 */
int coh_cq_poll(struct coh_cq *cq, struct coh_wc *wc, int max);

/**
 * coh_cq_wait - take up to @max completions, waiting at most @timeout_ms for the first.
 * @timeout_ms: must not be negative; 0 behaves as coh_cq_poll() but returns -EAGAIN when empty
 *
 * Busy-polls briefly, then sleeps until woken by an arrival, so an idle wait costs no CPU.
 * Returns the number taken (> 0), -ETIMEDOUT, -EINTR (coh_cq_wake), or -EINVAL.
 */
int coh_cq_wait(struct coh_cq *cq, struct coh_wc *wc, int max, int timeout_ms);

/**
 * coh_cq_wake - make a coh_cq_wait() on @cq return soon, from any thread: the one sleeping now,
 * or else the next one, returns -EINTR if it finds no completion (one wake ends one wait). For a
 * thread that sleeps on the fabric and also has work that no completion announces (the cache's
 * service thread). Returns 0 or -EINVAL.
 */
int coh_cq_wake(struct coh_cq *cq);

/**
 * coh_thread_sleep_hook_set - the calling thread's sleep hook: every coh_cq_wait on this thread
 * that has waited a few microseconds without a completion (longer than an operation on shm, less
 * than a round trip on a NIC) calls @fn(@arg, true), and @fn(@arg, false) when it ends, on this
 * thread. An engine that keeps one thread running while others wait uses
 * it to start another thread when one blocks (SPDK's and Go's schedulers do the same at their
 * blocking points). @fn must be quick and must not wait on the fabric. NULL clears it.
 * coh_thread_sleeping - call the hook for a wait outside the fabric (a condition variable) that
 * should count the same way; nothing when the thread has none.
 */
void coh_thread_sleep_hook_set(void (*fn)(void *arg, bool sleeping), void *arg);
void coh_thread_sleeping(bool sleeping);

/* Endpoints. */

/**
 * struct coh_ep_attr - an endpoint to one peer.
 * @peer: the peer's node id; the node's own id makes a loopback endpoint
 * @channel: tells apart several endpoints between the same two nodes (both sides use the same
 *           value); 0 .. 255
 * @send_cq: where WRITE, READ, CAS, FAA, FLUSH and SEND complete
 * @recv_cq: where RECV completes (may be @send_cq)
 * @max_send_wr: most send-side operations outstanding at once; 0 means 64
 * @max_recv_wr: most receives posted at once; 0 means 64
 * @max_msg_size: largest SEND in either direction; 0 means 4096. Both sides must agree.
 * @timeout_ms: bound for the connection handshake; 0 means the fabric's timeout
 */
struct coh_ep_attr {
	uint32_t peer;
	uint32_t channel;
	struct coh_cq *send_cq;
	struct coh_cq *recv_cq;
	uint32_t max_send_wr;
	uint32_t max_recv_wr;
	uint32_t max_msg_size;
	uint32_t timeout_ms;
};

/**
 * coh_ep_new - connect to a peer, waiting (bounded) until the peer makes the matching endpoint.
 * @epp: on success, the connected endpoint; untouched on failure
 *
 * Both nodes call it, naming each other, with the same channel and message size. Returns 0;
 * -EINVAL (bad attribute, or the peer asked for a different message size); -ENOSPC (a completion
 * queue cannot hold the endpoint's depth); -EEXIST (this channel to this peer is already open);
 * -ETIMEDOUT (the peer did not show up in time; on rdma a handshake under way at the end of
 * @timeout_ms is given up to 500 ms more, since cutting it off fails the peer's half too);
 * -ECONNREFUSED or -ECONNRESET (the peer is down);
 * -ENOMEM. Call it from the thread that will use the endpoint's domain.
 */
int coh_ep_new(struct coh_fabric *fab, const struct coh_ep_attr *attr, struct coh_ep **epp);

/**
 * coh_ep_new_many - @n endpoints, as coh_ep_new() each, whose connections are made at the same
 * time where the provider can (rdma: every handshake started, then each waited for, within its
 * own timeout from the call), so that a mesh connects in about the time of one endpoint. All or
 * nothing: on an error none is left open, and the first error is returned.
 */
int coh_ep_new_many(struct coh_fabric *fab, const struct coh_ep_attr *attrs, uint32_t n,
		    struct coh_ep **eps);

/**
 * coh_ep_delete - disconnect and free an endpoint. Remote regions imported on it must have been
 * deleted. Completions already in its queues stay there. @epp may point to NULL; set to NULL.
 */
int coh_ep_delete(struct coh_ep **epp);

/** coh_ep_peer - the endpoint's peer. */
uint32_t coh_ep_peer(const struct coh_ep *ep);

/** coh_ep_is_up - false once the peer is known to be down. */
bool coh_ep_is_up(const struct coh_ep *ep);

/**
 * coh_ep_peer_incarnation - which life of the peer the endpoint is connected to (the
 * @incarnation of a struct coh_event), or 0 before it first connected. A PEER_DOWN event for an
 * older incarnation than this one's is about a life that had ended before this endpoint was made.
 */
uint64_t coh_ep_peer_incarnation(const struct coh_ep *ep);

/*
 * Posting. Each call checks its local arguments and returns -EINVAL when they are wrong (a local
 * range outside the region, a region from another fabric, a missing LOCAL_WRITE right, a remote
 * region from another peer, an unaligned atomic); -EAGAIN when @max_send_wr (or @max_recv_wr)
 * operations are already outstanding. Otherwise it returns 0 and exactly one completion follows
 * (wr_id is the caller's). Remote problems are reported in the completion, not by the call.
 *
 * Ordering: operations on one endpoint are performed in the order posted; in particular, data
 * written with WRITE is visible at the peer when a SEND posted after it is received there.
 * The source buffer of a WRITE or SEND may be reused when its completion has been taken.
 */

/** coh_ep_post_write - copy @len bytes from @lmr+@loff into the peer's @rmr+@roff. */
int coh_ep_post_write(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		      uint64_t roff, size_t len, uint64_t wr_id);

/** coh_ep_post_read - copy @len bytes from the peer's @rmr+@roff into @lmr+@loff. */
int coh_ep_post_read(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		     uint64_t roff, size_t len, uint64_t wr_id);

/**
 * coh_ep_post_cas - atomically: old = *(u64 *)(rmr+roff); if (old == @compare) store @swap.
 * The old value is written to @lmr+@loff (8 bytes). @roff must be 8-byte aligned.
 */
int coh_ep_post_cas(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		    uint64_t roff, uint64_t compare, uint64_t swap, uint64_t wr_id);

/**
 * coh_ep_post_faa - atomically: old = *(u64 *)(rmr+roff); store old + @add. The old value is
 * written to @lmr+@loff (8 bytes). @roff must be 8-byte aligned.
 */
int coh_ep_post_faa(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		    uint64_t roff, uint64_t add, uint64_t wr_id);

/**
 * coh_ep_post_flush - the persistence point: when it completes, every WRITE to
 * @rmr+@roff..+@len that completed before it was posted is in the target's persistence domain
 * (coh_rmr_persistence() says what that domain survives). Needs REMOTE_FLUSH on the region.
 */
int coh_ep_post_flush(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, size_t len,
		      uint64_t wr_id);

/** coh_ep_post_send - send @len bytes (<= the endpoint's max_msg_size) from @lmr+@loff. */
int coh_ep_post_send(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, size_t len,
		     uint64_t wr_id);

/**
 * coh_ep_post_recv - post a receive buffer. Messages fill posted buffers in posting order; a
 * message that does not fit completes its buffer with -EMSGSIZE. @lmr needs LOCAL_WRITE.
 */
int coh_ep_post_recv(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, size_t len,
		     uint64_t wr_id);

/*
 * Blocking helpers for control paths. Each posts one operation and waits for its completion on
 * the endpoint's send queue, at most the fabric's timeout. They return the completion status,
 * -ETIMEDOUT, or a post error, and -EBUSY when other send-side operations are outstanding on that
 * queue (a helper never takes completions that belong to someone else; receive completions it
 * meets are kept for the next coh_cq_poll()). Atomic results go to *@old.
 */
int coh_ep_write_sync(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		      uint64_t roff, size_t len);
int coh_ep_read_sync(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		     uint64_t roff, size_t len);
int coh_ep_cas_sync(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, uint64_t compare,
		    uint64_t swap, uint64_t *old);
int coh_ep_faa_sync(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, uint64_t add,
		    uint64_t *old);
int coh_ep_flush_sync(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, size_t len);
int coh_ep_send_sync(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, size_t len);

/** coh_strerror - a short text for a Cohort status (a negative errno). Never NULL. */
const char *coh_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_FABRIC_H */
