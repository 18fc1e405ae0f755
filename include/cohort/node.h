/*
 * node.h - a Cohort controller node: a coherent cache over a redundancy group shared by every
 * node, with each write replicated into the logs of k peers before it is acknowledged, and a
 * membership that turns node failures into new epochs in which a survivor finishes the dead
 * node's interrupted work.
 *
 * What an acknowledgement means: when coh_node_write() returns 0, the data is in this node's
 * cache and in the replication logs of min(k, live peers) peers, persistent to the degree the
 * logs' backing gives (see coh_node_stats.log_persistence and docs/recovery.md). If this node then
 * dies, a survivor writes that data to the redundancy group before any node reads it.
 *
 * Operations are objects (struct coh_io) submitted with a completion callback (coh_node_submit);
 * coh_node_read/write/flush are synchronous wrappers of the same steps. Any thread may submit or
 * call; docs/concurrency.md says which thread runs what. Inside, a node still executes one
 * operation at a time (the cache has one application context), so operations queue; the API is
 * the one the engine will keep when it runs several. The membership thread runs view changes;
 * I/O goes on during one, except to the resources the dead node held, which wait for its
 * takeover.
 */
#ifndef COHORT_NODE_H
#define COHORT_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/fabric.h"
#include "cohort/raid.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Latency histograms: 4 buckets per power of two from 64 ns to about 137 s (the last bucket
 * takes everything longer). */
#define COH_LAT_BUCKETS 128u

#define COH_NODE_REPLICAS_NONE (-1) /* k = 0: acknowledged writes die with their node */

/*
 * Crash points: a node given one in its attributes kills itself (SIGKILL) the @crash_after-th
 * time it reaches it. For crash tests; 0 disables. They name the states of an operation and of a
 * view change, and the same names appear in traces (COHORT_CACHE_TRACE) and in the engine-tier
 * point hook (node_hooks.h), which can also pause a node there or drop a message.
 */
enum coh_crash_point {
	COH_CRASH_NONE = 0,
	/* The write path and the destage (engine). */
	COH_CRASH_BEFORE_REPLICATION = 1, /* a write holds its locks; nothing logged */
	COH_CRASH_REPLICATED = 2,	  /* logged on the peers, not yet acknowledged */
	COH_CRASH_DESTAGE_READ_OLD = 3,	  /* a stripe update is about to read old data/parity */
	COH_CRASH_DESTAGE_DATA = 4,	  /* ... about to write data */
	COH_CRASH_DESTAGE_PARITY = 5,	  /* ... data written, parity not */
	COH_CRASH_DESTAGE_DONE = 6,	  /* ... stripe done, log records not yet retired */
	COH_CRASH_RECLAIM = 7,		  /* log reclaim: some records retired, not all */
	/* The coherence protocol (cache): COH_CRASH_CACHE + enum coh_cache_point - 1. */
	COH_CRASH_XCAS = 8,	   /* a writer's exclusive CAS done; sharers not invalidated */
	COH_CRASH_INVAL = 9,	   /* sharers invalidated; nothing replicated yet */
	COH_CRASH_SCAS = 10,	   /* a reader's shared CAS done; the block not yet fetched */
	COH_CRASH_REQ = 11,	   /* a lock request sent; no answer yet */
	COH_CRASH_GRANTED = 12,	   /* a grant taken in; the operation not yet done */
	COH_CRASH_SERVE_WB = 13,   /* service: dirty blocks written back; directory unchanged */
	COH_CRASH_SERVE_CAS = 14,  /* service: directory changed; the grant not yet sent */
	COH_CRASH_SERVE_SENT = 15, /* service: grant sent; the waiters not yet handed over */
	COH_CRASH_INSTALLED = 16,  /* a write's data installed in the cache; not acknowledged */
	/* The view change after a death (membership). */
	COH_CRASH_VIEW_AGREED = 17,    /* the new view agreed; nothing fenced yet */
	COH_CRASH_VIEW_FENCED = 18,    /* the dead fenced and regions re-keyed */
	COH_CRASH_VIEW_RELOG = 19,     /* log move: destaged, the log not yet on its new peers */
	COH_CRASH_VIEW_RELOGGED = 20,  /* log move done */
	COH_CRASH_VIEW_CLEARED = 21,   /* the dead homes' words cleared here */
	COH_CRASH_VIEW_CLAIMED = 22,   /* every survivor's claims are in; no takeover raced */
	COH_CRASH_VIEW_TAKEN = 23,     /* the winner holds the dead node's locks; no replay yet */
	COH_CRASH_VIEW_REPLAY = 24,    /* the winner has replayed part of the dead node's log */
	COH_CRASH_VIEW_READY = 25,     /* READY sent: this node's takeovers are done */
	COH_CRASH_VIEW_ZEROED = 26,    /* this node's copies of the dead logs zeroed */
	COH_CRASH_VIEW_COMMITTED = 27, /* the view committed here; maybe not everywhere */
	/* A formation: at open, after a whole-cluster crash, when a node rejoins (formation.c). */
	COH_CRASH_FORM_AGREED = 28,    /* the formation agreed; this node not yet quiesced */
	COH_CRASH_FORM_RECOVERED = 29, /* log copies replayed and zeroed; the view not yet set up */
	COH_CRASH_FORM_COMMITTED = 30, /* serving in the formed view */
	COH_CRASH_MAX = 31,
};
#define COH_CRASH_CACHE COH_CRASH_XCAS
#define COH_CRASH_WRITE_PATH_MAX COH_CRASH_XCAS /* points 1 .. 7: the engine's write path */
#define COH_CRASH_VIEW_FIRST COH_CRASH_VIEW_AGREED

/*
 * Fencing a node that the others exclude without proof that it died (a silent node, a broken
 * connection): COH_FENCE_AUTO kills it where the fabric can (shm: its process) and otherwise
 * relies on its lease; COH_FENCE_LEASE relies on the lease alone; COH_FENCE_AGENT asks the
 * caller's fence agent (coh_node_attr.fence_agent: power it off, kill it, cut its storage) and
 * relies on the lease only when the agent fails (docs/recovery.md, "Fencing").
 */
enum coh_fence {
	COH_FENCE_AUTO = 0,
	COH_FENCE_LEASE = 1,
	COH_FENCE_AGENT = 2,
};

struct coh_node_hooks; /* node_hooks.h */

/**
 * struct coh_node_attr - how to open a node.
 * @fab: this node's fabric (not owned)
 * @nodes: configured cluster size, 2 .. 32; every node opens with the same attributes
 * @raid: level, element count and chunk of the redundancy group (its elems are ignored)
 * @elem_paths: the element files or block devices, shared by every node; created if absent
 * @elem_blocks: blocks per element
 * @block_size: 0 means 4096
 * @replicas: copies of each write in peers' logs (k): 0 means 1; COH_NODE_REPLICAS_NONE for none
 * @log_bytes: each writer's log region on each host; 0 means 4 MiB
 * @log_dir: where a node keeps the log regions it hosts (mapped with libpmem2: a DAX file
 *           system gives power-fail persistence); NULL: the fabric provider's default place
 * @cache_blocks: cache capacity in blocks; 0 means 1024
 * @timeout_ms: bound for every wait (a lock, a peer, a view change); 0 means the fabric's
 * @crash_point, @crash_after: see enum coh_crash_point
 * @lease_ms: how long this node serves I/O (even a read hit) after its last contact with a
 *            majority; 0 means a quarter of @timeout_ms, within 100 .. 2000. The others wait
 *            out the lease of a node they exclude before they write over anything it may hold
 *            (docs/recovery.md, "Fencing"). Every node opens with the same value.
 * @fence: how the others fence this node when they exclude it without proof of its death (it
 *         went silent, or only its connections broke): enum coh_fence
 * @fence_agent: with COH_FENCE_AGENT (required then), called with @fence_arg and a node that
 *               this one's view change excludes without proof of its death, on the membership
 *               thread, before anything the node held is taken over. It returns 0 only once
 *               that node can no longer write the shared elements (powered off, its process
 *               killed, its storage access cut: a STONITH agent's success); then its lease is
 *               not outwaited. Anything else: the lease is outwaited, as with
 *               COH_FENCE_LEASE. It must return within @timeout_ms, and be idempotent: every
 *               survivor calls it for the same node.
 * @hooks: engine tier (node_hooks.h): the point hook of tests and tracing; NULL for none
 * @open_timeout_ms: how long coh_node_open waits for this node to serve: for a majority of the
 *                   nodes to start and recover, or for a running cluster to admit it; 0 means
 *                   ten times @timeout_ms
 * @force_open: form a cluster with a majority even when a node that may hold the only copy of
 *              some writer's acknowledged writes has not started; what may be lost is logged
 *              (docs/recovery.md, "Lifecycle"). Off by default: the cluster waits and says why.
 * @queue_depth: operations submitted (coh_node_submit) and not yet completed, at most; one more
 *               is refused with -EBUSY. 0 means 128; at most 4096.
 * @lanes: engine threads, each running one submitted operation at a time on its own lane of the
 *         cache (its own endpoints): how many operations wait on the network at once. 0 means
 *         4; at most COH_CACHE_MAX_LANES - 1 (the synchronous calls use one more lane). The
 *         same on every node: each lane has its own channels to every peer, and a node whose
 *         peers open other lanes fails to open its cache (-ETIMEDOUT).
 * @takeover_hook: if set, called on the membership thread of the survivor that wins a dead
 *                 node's locks, holding them, before it replays that node's log (tests use it
 *                 to hold a takeover open and show what I/O goes on meanwhile); @takeover_arg
 *                 is passed to it
 * @destage_high, @destage_low: background destage watermarks, in percent of this node's log
 *                region: once the log's use passes @destage_high, the node's destage thread
 *                writes back the blocks of the oldest live records until the use is at most
 *                @destage_low (docs/concurrency.md, "Background destage"). Off by default:
 *                @destage_high 0 or COH_NODE_DESTAGE_OFF (100) leaves only the full log's
 *                destage, all at once; 50 (with @destage_low 0: half of it) is the tested
 *                setting. @destage_low must be below @destage_high.
 */
struct coh_node_attr {
	struct coh_fabric *fab;
	uint32_t nodes;
	struct coh_raid_attr raid;
	const char *elem_paths[COH_RAID_MAX_ELEMS];
	uint64_t elem_blocks;
	uint32_t block_size;
	int replicas;
	size_t log_bytes;
	const char *log_dir;
	uint32_t cache_blocks;
	uint32_t timeout_ms;
	uint32_t crash_point, crash_after;
	uint32_t lease_ms;
	uint32_t fence;
	int (*fence_agent)(void *arg, uint32_t node);
	void *fence_arg;
	const struct coh_node_hooks *hooks;
	uint32_t open_timeout_ms;
	bool force_open;
	void (*takeover_hook)(void *arg, uint32_t dead);
	void *takeover_arg;
	uint32_t queue_depth;
	uint32_t lanes;
	uint32_t destage_high, destage_low;
};

#define COH_NODE_DESTAGE_OFF 100u /* coh_node_attr.destage_high: no background destage */

struct coh_node;

/**
 * struct coh_node_stats - counters and state.
 */
struct coh_node_stats {
	uint32_t epoch, members;  /* current view: number and member bitmap */
	bool quorum;		  /* this node sees a majority of the configured nodes */
	uint32_t log_persistence; /* enum coh_persist of the regions this node hosts */
	uint64_t reads, writes;	  /* operations completed */
	uint64_t log_appends, log_retired, log_backpressure, log_live;
	uint64_t destages;   /* stripe updates done */
	uint64_t dead_waits; /* operations that met a dead node and waited for the view change */
	uint64_t view_changes, takeovers; /* takeovers: dead nodes' logs replayed here */
	/* Locks those takeovers took: the dead nodes' exclusive ones, and the dead homes'
	 * resources nobody claimed that their logs named (docs/recovery.md, step 5). */
	uint64_t locks_taken;
	uint64_t replayed_blocks, repaired_stripes; /* by this node's takeovers */
	uint64_t corrupt_records, torn_records;	    /* found by this node's takeovers */
	uint64_t last_takeover_ns; /* from the failure event to the dead node's work done */
	uint64_t last_view_ns;	   /* from the failure event to I/O resuming */
	uint64_t
	    last_view_hold_ns; /* the longest one step of that view change held this node's I/O */
	/* Recovery at open (docs/recovery.md, "Lifecycle"): how many times, the blocks this node
	 * replayed from log copies kept by an earlier life, the writers whose logs were replayed
	 * (by any node), live records found stale and discarded, how long the last one took. */
	uint64_t recoveries, recovered_blocks, stale_records, last_recovery_ns;
	uint32_t recovered_writers;
	/* Redundancy: the copies each member writer's acknowledged writes have in the current view
	 * (min(k, members - 1) for every member; 0 for a node outside it), the copies wanted (k),
	 * and whether the cluster is degraded: a writer below k copies, or a configured node
	 * missing. docs/recovery.md, "What an acknowledgement means". */
	uint32_t log_copies[32];
	uint32_t log_copies_wanted;
	bool degraded;
	bool stopped; /* the cluster was stopped (coh_node_stop_cluster) */
	/* Nonzero: the view in which the others excluded this node while it lived (it was paused
	 * or cut off past the failure detector). It serves nothing from then on; closing it and
	 * opening it again (a restart, with a new incarnation) rejoins. docs/recovery.md,
	 * "Fencing". */
	uint32_t excluded_epoch;
	/* The operation engine: operations submitted, completed (callbacks run), refused with
	 * -EBUSY, and in flight now; log records superseded by a rewrite (never retired on the
	 * write path: docs/recovery.md, "The log"). */
	uint64_t io_submitted, io_completed, io_refused;
	uint32_t io_inflight;
	uint64_t log_superseded;
	/* Group commit: log rounds that carried several writes, and the writes they carried. */
	uint64_t log_group_rounds, log_group_writes;
	/* Latency from submit to callback of the operations that succeeded, as histograms
	 * (coh_lat_percentile reads them): reads, and writes with compare-and-writes. */
	uint64_t lat_read[COH_LAT_BUCKETS], lat_write[COH_LAT_BUCKETS];
	/* The cache of the current view (counted since it opened: a view change opens a new one):
	 * block reads found valid here and not, of those served by a peer's cache, lock requests
	 * sent to holders and grants given to others. @cache_valid is false when a view change
	 * held the cache at the moment of the call (the counters are then 0). */
	bool cache_valid;
	uint64_t cache_hits, cache_misses, cache_peer_fetches, lock_requests, lock_transfers;
	/* ... and what a network that loses messages cost the locks (docs/recovery.md,
	 * "Partitions"): grants whose message never came, taken as the directory word said, and
	 * replies not sent to a peer a reply had just timed out on. */
	uint64_t lock_grants_lost, lock_replies_dropped;
	/* Background destage (coh_node_attr.destage_high): rounds run (each from the high
	 * watermark towards the low one) and blocks they wrote back; the log's use now and its
	 * size, in bytes. A full log still counts in @log_backpressure (a writer waited for a
	 * destage of everything). */
	uint64_t log_bg_destages, log_bg_blocks;
	uint64_t log_used, log_size;
	/* What this node is doing for the cluster now: a view change is under way here; its log is
	 * moving to new peers (re-protection after a peer's death: it destages, starts the log on
	 * them, and hands no lock on until that is on record); a failed append's records may
	 * still be live on a peer (no lock handed on until they are marked). docs/recovery.md. */
	bool view_changing, log_moving, abandon_pending;
	/* The redundancy group's elements missing here (bit i: element i), for good: found by this
	 * node or told by another (a missing element is missing for the cluster). */
	uint32_t elements_missing;
	/* Formations (a start, a join) this node took part in that failed part way and were
	 * started again (docs/recovery.md, "Start"). */
	uint64_t formations_failed;
	/* COH_FENCE_AGENT: nodes this node's view changes had the fence agent fence, and the
	 * agent's failures (the lease was outwaited instead). */
	uint64_t fence_agent_fenced, fence_agent_failed;
};

/**
 * coh_lat_percentile - the latency in ns under which a fraction @q (0 to 1) of the operations
 * counted in @hist (COH_LAT_BUCKETS buckets) completed: the upper edge of the bucket it falls in,
 * so at most 25% high. 0 when @hist counts nothing.
 */
uint64_t coh_lat_percentile(const uint64_t *hist, double q);

/**
 * coh_node_open - open this node and return once it serves I/O. Opens the elements and the group,
 * maps the log regions this node hosts (what they hold is kept: recovery decides), connects to
 * the nodes that are up and starts the membership thread; then either joins a running cluster (a
 * new epoch admits it) or forms one with a majority of the configured nodes, recovering every
 * acknowledged write the logs hold before anything is served. Nodes start in any order. Returns
 * 0, -EINVAL (bad attributes), -ETIMEDOUT (no cluster to serve in within open_timeout_ms: too
 * few nodes up, or one that may hold the only copy of some writer's records is missing; the log
 * says which), -ENOSPC (an element file shorter than the group needs), -ENOMEM, or an element,
 * log, state-file or fabric error. docs/recovery.md, "Lifecycle".
 */
int coh_node_open(const struct coh_node_attr *attr, struct coh_node **nodep);

/**
 * coh_node_close - leave the cluster and free: destage what this node holds, ask the members to
 * destage theirs (its log copies on this node are going away), say goodbye and record a clean
 * leave; bounded. A 0 means everything this node acknowledged is in the redundancy group or in
 * log copies the next recovery replays. @nodep may point to NULL.
 */
int coh_node_close(struct coh_node **nodep);

/**
 * coh_node_read / coh_node_write - block I/O on the volume laid on the redundancy group.
 * Returns 0; -EINVAL (range); -EROFS when this node is not in a majority view (it serves no I/O,
 * so a minority cannot split the brain); -ETIMEDOUT; or an I/O error. An operation that meets a
 * failed node waits, bounded, for the part of the view change it needs, and is tried again.
 */
int coh_node_read(struct coh_node *n, uint64_t lba, uint32_t nblocks, void *buf);
int coh_node_write(struct coh_node *n, uint64_t lba, uint32_t nblocks, const void *buf);

/** coh_node_flush - destage every dirty block this node holds (retiring its log records). */
int coh_node_flush(struct coh_node *n);

/*
 * Asynchronous operations. The caller owns a struct coh_io, fills in its request and submits it;
 * the engine owns it from then until its callback is called, exactly once, with 0 or -errno as
 * the synchronous call would return. After the callback begins the caller owns it again (it may
 * submit it again from inside the callback). docs/concurrency.md has the threading rules.
 */
enum coh_io_type {
	COH_IO_READ = 1,	  /* @nblocks blocks at @lba into @buf */
	COH_IO_WRITE = 2,	  /* @nblocks blocks at @lba from @buf */
	COH_IO_FLUSH = 3,	  /* destage everything this node holds dirty; @lba, @nblocks 0 */
	COH_IO_COMPARE_WRITE = 4, /* if @nblocks blocks at @lba equal @buf's first @nblocks, write
				     its next @nblocks there, atomically across the cluster
				     (coh_cache_compare_write); -EILSEQ and @miscompare if not */
};

/*
 * The states an operation passes, in this order (some are skipped: a read hit goes from
 * COH_IO_ACQUIRE to COH_IO_COMPLETE). The crash points of the same steps (enum coh_crash_point)
 * advance them: COH_CRASH_XCAS ends ACQUIRE for a write, COH_CRASH_BEFORE_REPLICATION begins
 * LOG, COH_CRASH_REPLICATED begins INSTALL. An operation that meets a failed node goes to
 * WAIT_VIEW and back to ACQUIRE when the view change moves on.
 */
enum coh_io_state {
	COH_IO_IDLE = 0,   /* not submitted, or completed: the caller's */
	COH_IO_QUEUED,	   /* accepted; waiting for the engine */
	COH_IO_ACQUIRE,	   /* taking the resources (shared to read, exclusive to write) */
	COH_IO_INVALIDATE, /* exclusive held; the other copies being invalidated */
	COH_IO_FETCH,	   /* shared held; the blocks being read from a peer's cache or the store */
	COH_IO_LOG,	   /* a write being replicated to its log peers */
	COH_IO_INSTALL,	   /* replicated; the data going into the cache */
	COH_IO_DESTAGE,	   /* a flush writing dirty blocks back to the group */
	COH_IO_WAIT_VIEW,  /* met a failed node; waiting for the view change to move on */
	COH_IO_COMPLETE,   /* done; the callback runs */
	COH_IO_STATE_MAX,
};

struct coh_io;
typedef void (*coh_io_cb)(struct coh_io *io, int status, void *arg);

/**
 * struct coh_io - one operation.
 * @io_size: sizeof(struct coh_io) as the caller was built with; refused if smaller than the
 *           engine's
 * @type: enum coh_io_type
 * @lba, @nblocks, @buf: the request (see enum coh_io_type); @buf stays the caller's memory and
 *                       must stay valid until the callback
 * @cb, @cb_arg: the completion callback, and its argument
 * @miscompare: set by the engine: a COMPARE_WRITE's -EILSEQ, the byte offset of the first
 *              difference
 * The rest is the engine's: read @state with coh_io_state().
 */
struct coh_io {
	size_t io_size;
	uint32_t type;
	uint32_t nblocks;
	uint64_t lba;
	void *buf;
	coh_io_cb cb;
	void *cb_arg;
	uint32_t miscompare;
	uint32_t state;
	uint64_t submit_ns;
	struct coh_io *next;
};

/**
 * coh_node_submit - submit @io. Returns 0: accepted, and its callback will run exactly once, on
 * one of the node's engine threads (or inside coh_node_close, with -ESHUTDOWN, for an operation
 * that had not started). Operations whose blocks share a resource start in submission order;
 * others may run and complete in any order. Otherwise the callback never runs and nothing was done: -EINVAL (a bad request,
 * or a range outside the volume), -EBUSY (queue_depth operations are in flight: submit it again
 * after a completion), -ESHUTDOWN (the node is closing).
 */
int coh_node_submit(struct coh_node *n, struct coh_io *io);

/** coh_io_state - the state of @io now (enum coh_io_state); coh_io_state_name its name. */
uint32_t coh_io_state(const struct coh_io *io);
const char *coh_io_state_name(uint32_t state);

/** coh_node_nblocks - the volume's size in blocks; coh_node_block_size its block size. */
uint64_t coh_node_nblocks(const struct coh_node *n);
uint32_t coh_node_block_size(const struct coh_node *n);

/** coh_node_stats - copy the counters. */
int coh_node_stats(struct coh_node *n, struct coh_node_stats *st);

/**
 * coh_node_read_cached - read block @lba at once when this node's cache can serve it alone (see
 * coh_cache_read_cached): 0 with the block in @buf, or -EAGAIN (submit it: a miss, a lock held
 * elsewhere, a view change step, a stopped or fenced node; @buf's content is undefined), or
 * -EINVAL. Never waits, and needs no engine thread: for a thread that must not wait, which has a
 * read to answer (a forwarder executing a forwarded read). A read submitted before it and not yet
 * completed may be seen or not, as between any two operations in flight at once.
 */
int coh_node_read_cached(struct coh_node *n, uint64_t lba, void *buf);

/** coh_node_members - the members of this node's current view (a mask; cheap, any thread). */
uint32_t coh_node_members(struct coh_node *n);

/**
 * coh_node_lock_holders - which nodes hold the lock of block @lba's resource now: *@owner the
 * exclusive owner (COH_NODE_NO_HOLDER when none) and *@sharers a bitmap of its sharers. A hint for
 * choosing where to send a command on that block (a router: no lock ping-pong between the
 * controllers that can execute it); it may change at once. Never waits for a view change or for
 * an operation (-EAGAIN, -EBUSY); costs at most one 8-byte READ of the resource's directory
 * word. Returns 0, -EINVAL, -EAGAIN, -EBUSY, or a fabric error.
 */
#define COH_NODE_NO_HOLDER 0xffffffffu
int coh_node_lock_holders(struct coh_node *n, uint64_t lba, uint32_t *owner, uint32_t *sharers);

/**
 * coh_node_wait_epoch - wait, bounded by @timeout_ms, until this node's view has an epoch of at
 * least @epoch and I/O is open. Returns 0, -ETIMEDOUT or -EROFS (the view lacks a majority).
 */
int coh_node_wait_epoch(struct coh_node *n, uint32_t epoch, int timeout_ms);

/**
 * coh_node_stop_cluster - an ordered stop of the whole cluster, from any member: every member
 * destages everything it holds, stops serving (its operations return -ESHUTDOWN from then on)
 * and records that it stopped cleanly; returns once every member has, at most @timeout_ms. The
 * element files are then complete, and the next start has nothing to recover; each node still
 * calls coh_node_close. Returns 0, -ETIMEDOUT (some member did not answer: what it holds is in
 * its log copies, which the next start replays), -EROFS (this node serves nothing), -EINVAL.
 */
int coh_node_stop_cluster(struct coh_node *n, int timeout_ms);

/**
 * coh_node_check - scrub: check every stripe's parity (or mirrors) against its data. Call with
 * no writes in flight anywhere. Sets *bad to the number of inconsistent stripes.
 */
int coh_node_check(struct coh_node *n, uint64_t *bad);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_NODE_H */
