/*
 * cache.h - Cohort's coherent block cache: every node of a cluster caches blocks of one shared
 * volume in DRAM, and the caches stay coherent with write-invalidate over the fabric.
 *
 * The lock unit is the resource (resource_size bytes, default 64 KiB); each has a 64-bit
 * directory word at a home node (resource mod nodes), changed only with fabric atomics, that
 * holds the exclusive owner, the sharers and a version. Locks are released lazily: a node keeps
 * a resource until another node asks for it, so a read of a resource it holds and a write of a
 * resource it holds exclusively cost no network operation. Taking a resource exclusively
 * invalidates the sharers' copies (only when there are sharers) before the write is
 * acknowledged; a read miss takes the block from a peer's cache when one has it, else from the
 * store. docs/coherence.md describes the protocol.
 *
 * Threads: a cache has coh_cache_attr.lanes application contexts (lanes), each with its own
 * endpoints. Several threads may call coh_cache_read/write/compare_write/flush at once, each
 * bound to its own lane (coh_cache_lane_bind; the caller makes sure no two threads use one lane
 * at a time: the engine's lane locks). Operations on the same resource from different lanes take
 * turns inside the cache; operations on different resources proceed in parallel. The cache runs
 * its own service thread, which answers other nodes' requests and sleeps on the fabric
 * (docs/concurrency.md).
 */
#ifndef COHORT_CACHE_H
#define COHORT_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "cohort/fabric.h"
#include "cohort/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A sharer set is 32 bits of the directory word. */
#define COH_CACHE_MAX_NODES 32u
/* Application contexts of one cache (coh_cache_attr.lanes). */
#define COH_CACHE_MAX_LANES 8u

struct coh_cache;

/*
 * The states of the protocol's steps, as the point hook (coh_cache_attr.point) names them: the
 * engine turns them into crash points (COH_CRASH_CACHE + point - 1), traces name them, and tests
 * stop a node at any of them. @detail is the resource.
 */
enum coh_cache_point {
	COH_CACHE_PT_XCAS = 1,	 /* a writer's exclusive CAS done; the sharers not invalidated */
	COH_CACHE_PT_INVAL,	 /* the sharers invalidated; the write hook not yet called */
	COH_CACHE_PT_SCAS,	 /* a reader's shared CAS done; the block not yet fetched */
	COH_CACHE_PT_REQ,	 /* a lock request sent to the holder; no answer yet */
	COH_CACHE_PT_GRANTED,	 /* a grant taken in; the operation not yet done */
	COH_CACHE_PT_SERVE_WB,	 /* service: dirty blocks written back (the cache lock dropped);
				    the directory unchanged */
	COH_CACHE_PT_SERVE_CAS,	 /* service: the directory changed; the grant not yet sent */
	COH_CACHE_PT_SERVE_SENT, /* service: the grant sent; the waiters not yet handed over */
	COH_CACHE_PT_INSTALLED,	 /* a write's data installed; not yet acknowledged */
	COH_CACHE_PT_MAX,
};

/**
 * struct coh_cache_attr - how to open a node's cache.
 * @fab: the node's fabric (not owned; must outlive the cache)
 * @nodes: cluster size; nodes 0 .. @nodes-1 all open the cache, each exactly once
 * @store: the shared backing store (not owned); its block size is the cache's block size
 * @resource_blocks: blocks per resource (the lock unit); 0 means 64 KiB worth
 * @cache_blocks: capacity of this node's cache in blocks; 0 means 1024
 * @timeout_ms: bound for any wait (open's handshake, a lock request); 0 means the fabric's
 * @members: bitmap of the nodes that take part (each opens the cache; directory words are spread
 *           over them); 0 means all of 0 .. @nodes-1. After a node dies the cache stays open
 *           and the view change steps below take it out.
 * @channel_base: first of the coh_cache_channels(@lanes) fabric channels the cache uses (0 means
 *                10; the last must be at most 255). Each reopening uses its own, so that a
 *                dead incarnation's endpoints never meet the new ones.
 * @write_hook: if set, called by coh_cache_write with every resource of the range held
 *              exclusive, after the other copies are invalidated and before the data is put in
 *              the cache; a nonzero return fails the write with that status, nothing installed.
 *              The engine replicates the write here. It may call coh_cache_flush(). It sets
 *              *@seq to a number that is larger than any earlier write's of the same blocks
 *              (the engine: the log sequence of the write's last record); the cache keeps it
 *              with the blocks and passes it to @destage.
 * @destage: if set, the cache writes a dirty block back with it instead of coh_store_write(),
 *           passing the @seq its data was written with: the engine retires only the log
 *           records that the data covers (a later write of the block may be replicated and not
 *           yet installed, on another lane; its record must stay).
 * @step_pause: if set, called by coh_cache_rebuild_claim, coh_cache_take_over and
 *              coh_cache_view_commit between their batches of network work. They run in the
 *              application thread's place; a caller that serialises them with its operations
 *              can let a waiting operation run here, and must hold its serialisation again when
 *              it returns. Nothing these steps have done is undone by an operation meanwhile.
 * @point: if set, called at each named step of the protocol (enum coh_cache_point) with the
 *         resource as @detail, on the thread doing the step; the engine makes crash points of
 *         them. Engine tier: tests only, returns 0.
 * @lease: if set, the end of this node's lease (CLOCK_MONOTONIC, ms), kept by the engine: no
 *         read returns data, no write is acknowledged and no request is served (no write-back)
 *         unless the lease is valid when it finishes, so that a node the others have excluded
 *         and no longer invalidate stops by itself (docs/recovery.md, "Fencing"). Such an
 *         operation returns -EAGAIN.
 * @hold_locks: if set, asked by the service thread before it hands a resource on or shares it:
 *              while it returns true, every request is answered RETRY and the requester asks
 *              again within its own deadline. The engine holds them while a record that a
 *              recovery could still replay may be live on a peer its retirement did not reach
 *              (its log moving to new peers; a failed append's mark not landed): a lock handed
 *              on then would let another node's write be lost under that record at a
 *              whole-cluster restart. It may wait on the fabric, bounded; cache lock not held
 *              (the service thread asks it before and after a hand-over's write-back).
 * @write_undo: if set, called (resources held, cache lock not) for each block of a write that
 *              @write_hook accepted but that could not be put in the cache (the slot's other
 *              dirty block could not be written back); the write fails. The engine marks the
 *              block's records abandoned: they describe data no copy holds, and a replay of
 *              them after another node's write of the block would put them over it.
 * @hook_arg: passed to @write_hook, @destage, @step_pause, @point, @hold_locks and @write_undo
 * @lanes: application contexts, 1 .. COH_CACHE_MAX_LANES; 0 means 1. Each has its own endpoints
 *         to every peer and its own completion queue, so that operations on different lanes
 *         wait on the network at the same time.
 */
struct coh_cache_attr {
	struct coh_fabric *fab;
	uint32_t nodes;
	struct coh_store *store;
	uint32_t resource_blocks;
	uint32_t cache_blocks;
	uint32_t timeout_ms;
	uint32_t members;
	uint32_t channel_base;
	int (*write_hook)(void *arg, uint64_t lba, uint32_t nblocks, const void *buf,
			  uint64_t *seq);
	int (*destage)(void *arg, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t seq);
	void (*step_pause)(void *arg);
	int (*point)(void *arg, uint32_t pt, uint64_t detail);
	const uint64_t *lease; /* read with __atomic_load_n */
	void *hook_arg;
	uint32_t lanes;
	bool (*hold_locks)(void *arg);
	void (*write_undo)(void *arg, uint64_t lba, uint32_t nblocks, uint64_t seq);
};

/* coh_cache_channels - how many fabric channels a cache with @lanes lanes uses (0 means 1). */
static inline uint32_t coh_cache_channels(uint32_t lanes)
{
	return 4 + 3 * ((lanes ? lanes : 1) - 1);
}

/**
 * coh_cache_lane_bind - the calling thread's operations on @c use lane @lane from now on (a
 * thread that never binds uses lane 0). The caller makes sure that no two threads use one lane
 * at a time. Returns 0 or -EINVAL.
 */
int coh_cache_lane_bind(struct coh_cache *c, uint32_t lane);

/**
 * struct coh_cache_stats - this node's counters since open.
 */
struct coh_cache_stats {
	uint64_t reads, writes;		    /* block reads and writes served */
	uint64_t hits, misses;		    /* block reads found / not found valid locally */
	uint64_t peer_fetches;		    /* misses served from a peer's cache */
	uint64_t store_reads, store_writes; /* blocks read from / written back to the store */
	uint64_t inval_sent;		    /* invalidations written to sharers */
	uint64_t inval_seen;	 /* invalidations of this node's copies found on access */
	uint64_t lock_requests;	 /* requests sent to a holder */
	uint64_t lock_transfers; /* grants this node gave to others */
	uint64_t lock_queued;	 /* requests that waited here, in arrival order, for a resource
				    this node was using */
	uint64_t net_atomic, net_read, net_write, net_send; /* fabric operations issued */
	uint64_t replies_dropped; /* replies not sent to a peer a reply had just failed to reach */
	uint64_t grants_lost;	  /* exclusive grants whose message never came, taken as the
				     directory word said (a giver that lives; not adopt_lost) */
	uint64_t cas_batched;	  /* directory CASes of a range sent together (acq_batch) */
};

/**
 * coh_cache_open - open this node's cache; every node of the cluster calls it (collective).
 * Connects to every node, exchanges region descriptors, and starts the service thread. Waits at
 * most the timeout for the others. Returns 0, -EINVAL, -ETIMEDOUT, -ENOMEM or a fabric error.
 */
int coh_cache_open(const struct coh_cache_attr *attr, struct coh_cache **cachep);

/**
 * coh_cache_close - write back dirty blocks, stop, and free. Every node should close (peers
 * that still ask for resources this node held get -ECONNRESET). @cachep may point to NULL.
 */
int coh_cache_close(struct coh_cache **cachep);

/**
 * coh_cache_abandon - stop and free without writing anything back or releasing anything: for a
 * node fenced out of the cluster, whose dirty data its peers recover from their copies of its
 * log and which must not touch the shared store any more. @cachep may point to NULL.
 */
int coh_cache_abandon(struct coh_cache **cachep);

/**
 * coh_cache_read - read @nblocks blocks at @lba into @buf (any alignment), coherently: the
 * result reflects every write acknowledged anywhere before this call began.
 * Returns 0; -EINVAL (range); -ETIMEDOUT (a holder did not answer); -ECONNRESET (a holder or
 * home is down); or a store error.
 */
int coh_cache_read(struct coh_cache *c, uint64_t lba, uint32_t nblocks, void *buf);

/**
 * coh_cache_read_cached - coh_cache_read of one block when this node can serve it alone: it
 * holds the resource (exclusive, or shared and not invalidated), the block is valid here, and
 * its lease holds. Returns 0 with the block in @buf, -EAGAIN (take the full path; @buf's content
 * is undefined) or -EINVAL. Never waits (the cache's lock only tried: it is held across a store
 * write at times) and needs no lane: any thread.
 */
int coh_cache_read_cached(struct coh_cache *c, uint64_t lba, void *buf);

/**
 * coh_cache_write - write @nblocks blocks at @lba from @buf. When it returns 0 the data is in
 * this node's cache, every other node's copy is invalidated, and any later read anywhere returns
 * it. (Durability is the store's after coh_cache_flush(); replication comes in the engine.)
 * -ETIME: the write was applied, but this node's lease ran out meanwhile, so it is not
 * acknowledged; its outcome is unknown, and writing it again could put it after a later write.
 */
int coh_cache_write(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const void *buf);

/**
 * coh_cache_compare_write - compare @nblocks blocks at @lba with @cmp and, only if they are all
 * equal, write @buf there, as one step of the protocol: the resources are held exclusive from
 * before the compare until the data is installed, so no other node's write comes between, and
 * two nodes can never both succeed against the same old data. Returns what coh_cache_write
 * returns, or -EILSEQ on a miscompare (nothing written; *@miscompare is the byte offset of the
 * first difference).
 */
int coh_cache_compare_write(struct coh_cache *c, uint64_t lba, uint32_t nblocks, const void *cmp,
			    const void *buf, uint32_t *miscompare);

/**
 * coh_cache_lock_holders - who holds the lock of @lba's resource, as its directory word says now:
 * *@owner the exclusive owner (COH_CACHE_NO_NODE when it is not held exclusive) and *@sharers a
 * bitmap of the nodes sharing it. A hint (a router's choice of the node to send a command to):
 * it may be out of date as soon as it is read, and it costs at most one 8-byte READ of the home's
 * word (none when this node is the home). Any thread that may use the cache; it never waits for a
 * lane in use (-EBUSY). Returns 0, -EINVAL, -EBUSY, -ECONNRESET (the home is down) or a fabric
 * error.
 */
#define COH_CACHE_NO_NODE 0xffffffffu
int coh_cache_lock_holders(struct coh_cache *c, uint64_t lba, uint32_t *owner, uint32_t *sharers);

/** coh_cache_flush - write every dirty block back to the store and flush the store. */
int coh_cache_flush(struct coh_cache *c);

/**
 * coh_cache_writeback - write back those of the @n blocks @lbas that this cache holds dirty now,
 * each as a flush does (through the destage hook, with the cache lock dropped while it is
 * written; writers of the same slot wait for it), then flush the store if any was written.
 * Blocks not held dirty, or being written back by another thread, are skipped. *@written (if not
 * NULL) is how many were written. For the engine's background destage; any thread that may use
 * the cache (the engine holds its I/O lock shared). Returns 0, -EINVAL, -ETIMEDOUT, -EAGAIN (a
 * view change asked for the place, coh_cache_yield: it stops between two blocks), or the destage
 * hook's or the store's error (the blocks before it stay written).
 */
int coh_cache_writeback(struct coh_cache *c, const uint64_t *lbas, uint32_t n, uint32_t *written);

/*
 * Node failure. The engine's view change calls these on every survivor, in this order, with a
 * barrier among the survivors after each of the first three; the cache stays open throughout,
 * and operations on resources the dead did not hold go on. An operation that needs a dead node
 * returns -EAGAIN until the commit. cache/view.c and docs/recovery.md describe the steps.
 *
 * coh_cache_fence - @dead (a bitmap) are gone: send them nothing, drop their requests, end the
 *   waits that depended on them, and wait (bounded) until every answer the service thread made
 *   before it has been sent. Any thread but the service thread. Cumulative.
 * coh_cache_rebuild_clear - zero the directory words this node will be home to in place of a
 *   dead home.
 * coh_cache_rebuild_claim - add what this node holds of those resources to their new words.
 * coh_cache_take_over - arbitrate for dead node @d's locks among @candidates (a bitmap; those
 *   that can finish its work) in round @round (an epoch, the same on every survivor, growing
 *   from one attempt to the next). *@won says whether this node won; if it did, every lock @d
 *   held, and every rebuilt word nobody claimed whose resource is among the @nneed of @need
 *   (ascending: the resources @d's log copy here names, which the winner's replay writes; NULL
 *   for every one), is now this node's, held (requests for them queue) until the commit, and
 *   *@taken counts them. A rebuilt word nobody claimed and @need leaves out stays free.
 * coh_cache_view_commit - the rebuilt words take effect, and the taken locks are let go (local:
 *   no network operation).
 * coh_cache_adopt_lost - after a commit: words that name this node as exclusive owner without
 *   its having the grant (a dead node made the word so and died before sending it) are adopted.
 * All but fence use the application thread's endpoints: call them where an operation could be
 * called. coh_cache_yield(c, true), from another thread, makes the operation in progress give up
 * its waits soon with -EAGAIN, so that a view change step can have its place (a reply it waits
 * for may depend on that step); coh_cache_yield(c, false) once the step has it.
 * They return 0, -EINVAL, -EAGAIN (a race lost to a newer round: restart the view change) or a
 * fabric error.
 */
int coh_cache_fence(struct coh_cache *c, uint32_t dead);

/*
 * Re-keying, on every view change after the fence: coh_cache_rekey revokes every descriptor of
 * this node's regions (directory words, invalidation words, slots), so that a node that is no
 * longer a member, paused or cut off, can no longer CAS, READ or WRITE any of them, and gives the
 * new ones (COH_CACHE_DESCS of them) to pass to the other members; each member passes them to
 * coh_cache_import. Until a member has imported them, its operations on this node's regions fail
 * with -EACCES and are tried again. Application thread's place, as the steps below.
 */
#define COH_CACHE_DESCS 3
int coh_cache_rekey(struct coh_cache *c, struct coh_mr_desc descs[COH_CACHE_DESCS]);
int coh_cache_import(struct coh_cache *c, uint32_t peer,
		     const struct coh_mr_desc descs[COH_CACHE_DESCS]);
void coh_cache_yield(struct coh_cache *c, bool on);
int coh_cache_rebuild_clear(struct coh_cache *c);
int coh_cache_rebuild_claim(struct coh_cache *c);
int coh_cache_take_over(struct coh_cache *c, uint32_t d, uint32_t candidates, uint32_t round,
			const uint64_t *need, uint64_t nneed, bool *won, uint64_t *taken);
int coh_cache_view_commit(struct coh_cache *c);
int coh_cache_adopt_lost(struct coh_cache *c);

/** coh_cache_stats - copy this node's counters. */
int coh_cache_stats(const struct coh_cache *c, struct coh_cache_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_CACHE_H */
