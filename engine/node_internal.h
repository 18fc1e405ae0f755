/*
 * node_internal.h - the node object shared by node.c (I/O, the volume, the write hook) and
 * membership.c (the control plane, view changes, takeover), and the control message codec.
 */
#ifndef COHORT_ENGINE_NODE_INTERNAL_H
#define COHORT_ENGINE_NODE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cohort/cache.h"
#include "cohort/node.h"
#include "cohort/node_hooks.h"
#include "cohort/store.h"
#include "rlog.h"

#define NODE_MAX 32u

/*
 * struct node_state - what a node keeps across its restarts (state.c): the last view it prepared
 * (zeroed the dead logs for, or recovered into) and committed, its own log's generation and
 * peers, and whether it left cleanly (everything it acknowledged destaged).
 */
struct node_state {
	uint32_t prepared_epoch, prepared_members;
	uint32_t committed_epoch, committed_members;
	uint32_t log_gen, log_peers;
	uint32_t elem_missing; /* the group's elements this node has found missing, for good */
	bool clean;
};

struct memb;  /* membership.c */
struct lease; /* lease.c */

/* Stripe updates a lease lapse stopped part-way, held for repair: at most the step slots. */
#define NODE_PEND_MAX 8u

struct coh_node {
	struct coh_fabric *fab;
	uint32_t me, nodes, bsize, k, cache_blocks, timeout_ms, stripe_blocks, nelems;
	size_t log_bytes;
	uint64_t vol_blocks;
	char log_dir[256];
	uint32_t crash_point, crash_after;
	atomic_uint crash_count;
	uint32_t lease_ms, fence, open_timeout_ms;
	int (*fence_agent)(void *arg, uint32_t node); /* coh_node_attr.fence_agent, fence_arg */
	void *fence_arg;
	_Atomic uint64_t agent_fenced, agent_failed; /* the fence agent's answers (membership) */
	bool force_open;
	struct coh_node_hooks hooks; /* engine tier (node_hooks.h); zero: none */
	/*
	 * The lease (lease.c): @lease_end_ms (CLOCK_MONOTONIC) is when this node stops serving
	 * unless a majority renews it; the cache reads it (coh_cache_attr.lease). @lease_members
	 * is whom the lease thread asks and answers: the view's members not known gone. Both are
	 * read and written with __atomic builtins.
	 */
	uint64_t lease_end_ms;
	uint32_t lease_members;
	struct lease *lease;
	struct node_state st;	 /* as last persisted (state.c); membership thread and open/close */
	_Atomic bool recovering; /* open's recovery replays without a lease: nobody serves yet */
	/* The log is moving to new peers (vc_relog) and the cache hands no lock on until the new
	 * generation is on record (node_hold_locks): set and cleared by the view change, under
	 * the I/O lock; read by the service thread. */
	_Atomic bool relog_hold;
	_Atomic uint32_t batched; /* destaged ranges whose batch has not retired them (vol_batch) */
	_Atomic bool batch_wanted; /* a request was refused for them: the batch commits at once */
	/* An element went missing here and some member has not said it marked it missing too
	 * (memb_elems): no lock leaves this node meanwhile (node_hold_locks), or that member could
	 * read, from the element, data a degraded write here no longer put there. @elem_gen counts
	 * the raid's on_missing calls, so that the clearing never hides a later one. */
	_Atomic bool elem_unacked;
	atomic_uint elem_gen;

	struct coh_store *elems[COH_RAID_MAX_ELEMS];
	struct coh_raid *raid;
	struct coh_store *vol;	       /* the group, with logged stepped destages */
	struct rlog_writer w;	       /* this node's log, on its peers */
	struct coh_mr *host[NODE_MAX]; /* the log regions this node hosts, by writer */
	uint32_t log_persistence;
	struct coh_cache *cache; /* this epoch's; NULL while a view changes or when fenced */

	/*
	 * @io: operations hold it shared (each on its own lane of the cache); the directory
	 * steps of view changes, formations and the leave hold it exclusive (writers first). @state_lock guards the view and the counters below it;
	 * @changing says a view change is under way (coh_node_wait_epoch waits for its end);
	 * @progress counts its steps (changed under @state_lock, read with __atomic builtins
	 * without it), so that an operation that met a dead node waits on @view_cond for the next
	 * one before it tries again. Lock order (docs/concurrency.md):
	 * eng.lock (alone), io, the cache's lock, the store's (stripe locks, the log writer's),
	 * state_lock.
	 */
	pthread_rwlock_t io;
	pthread_mutex_t state_lock;
	pthread_cond_t view_cond;
	uint32_t epoch, members;
	bool quorum, changing;
	bool forming; /* a formation runs: I/O waits (-EAGAIN) rather than failing (-EROFS) */
	/* coh_node_stop_cluster: serves nothing more, forms nothing more. Set under state_lock,
	 * with an atomic store, so that the I/O path's retry loop and coh_node_read_cached may
	 * read it without the lock. */
	bool stopped;
	uint64_t progress;
	void (*takeover_hook)(void *arg, uint32_t dead);
	void *takeover_arg;
	uint64_t formations_failed;
	uint64_t view_changes, takeovers, locks_taken, replayed_blocks, repaired_stripes,
	    corrupt_records, torn_records, last_takeover_ns, last_view_ns, last_view_hold_ns;
	uint64_t recoveries, recovered_blocks, stale_records, last_recovery_ns;
	uint32_t recovered_writers;
	uint64_t io_since,
	    hold_max; /* membership thread: when it took @io; this change's longest */
	atomic_ulong reads, writes, destages, dead_waits;
	/* operations waiting for @io, and how many have taken it (node_step_pause) */
	atomic_uint io_wanted;
	atomic_ulong io_taken;

	/* Stripe updates stopped part-way when this node's lease ran out (a pause): the data may
	 * be written and the parity not, and this node may not write the group until its lease is
	 * renewed. Each keeps its step slot live on the peers, so that survivors that exclude this
	 * node repair the stripe; if they do not, the next destage here repairs it first and then
	 * ends the slot (node.c, vol_repair_pending). Under @state_lock. */
	struct {
		uint64_t s0, s1;
		uint32_t slot; /* RLOG_STEP_SLOTS: none (k = 0) */
	} pend[NODE_PEND_MAX];
	uint32_t npend;

	struct memb *m;

	/* Background destage (bgdestage.c): its thread, and the log's use (bytes) above which it
	 * starts and down to which it goes. @lock (alone; taken inside the log writer's lock by
	 * the kick) guards only the wait on @cond; the flags and counters are atomics. */
	struct {
		pthread_mutex_t lock;
		pthread_cond_t cond;
		pthread_t thread;
		uint64_t high, low;
		bool inited, on, started;
		bool draining; /* the destage thread's own: a round has not reached @low yet */
		atomic_bool stop, kicked;
		atomic_uint reclaiming; /* writers in the full log's reclaim (node.c) */
		atomic_ulong rounds, blocks;
	} bg;

	/* The operation engine (io.c): operations submitted and not yet completed, a FIFO of
	 * those not yet started, the one each thread runs (@running[@nthreads] is the manual
	 * engine's), and the threads. Under @eng.lock, which nests nothing and is never held
	 * across an operation or a callback; @threads and @started_threads are the opener's. */
	struct {
		pthread_mutex_t lock;
		pthread_cond_t cond;
		struct coh_io *head, *tail;
		struct coh_io *running[COH_CACHE_MAX_LANES];
		uint32_t depth, inflight, nthreads, started_threads, sleepers;
		uint32_t nrunning, nblocked; /* running operations; their threads asleep */
		bool blocked[COH_CACHE_MAX_LANES];
		bool stopping, manual, started, spinner;
		pthread_t threads[COH_CACHE_MAX_LANES];
		struct io_thread_arg {
			struct coh_node *n;
			uint32_t w;
		} targ[COH_CACHE_MAX_LANES];
		atomic_uint queued; /* the FIFO's length, for the idle thread's spin */
		atomic_ulong submitted, completed, refused;
		/* Latency from submit to callback of successful reads and writes (compare-and-
		 * writes count as writes): coh_lat_bucket's histogram. */
		atomic_ulong lat[2][COH_LAT_BUCKETS];
	} eng;
};

uint64_t node_now_ns(void);
void node_realtime_in(int ms, struct timespec *ts);
/* io.c: the operation engine; io_start after the node serves, io_stop before it leaves
 * (operations not yet started complete with -ESHUTDOWN). */
int io_init(struct coh_node *n, uint32_t depth, uint32_t threads, bool manual);
/* io_lanes - the lanes the node's cache needs: one per engine thread, and lane 0. */
uint32_t io_lanes(const struct coh_node *n);
int io_start(struct coh_node *n);
/* bgdestage.c: the background destage. node_bg_init after the log writer's init (-EINVAL: bad
 * watermarks), node_bg_start once the node serves, node_bg_stop before it leaves, node_bg_fini
 * (stops too) when it is freed. */
int node_bg_init(struct coh_node *n, uint32_t high_pct, uint32_t low_pct);
int node_bg_start(struct coh_node *n);
void node_bg_stop(struct coh_node *n);
void node_bg_fini(struct coh_node *n);
void io_stop(struct coh_node *n);
void io_fini(struct coh_node *n);
bool io_on_engine_thread(struct coh_node *n);
/* io_point - a crash point reached on a thread executing an operation advances its state. */
void io_point(uint32_t pt);
void node_crash_point(struct coh_node *n, uint32_t pt);
uint32_t node_log_peers(uint32_t nodes, uint32_t members, uint32_t w, uint32_t k);
int node_cache_open(struct coh_node *n);
/* node_cache_flush - coh_cache_flush of @n's cache with its destages batched: one flush of the
 * elements and one retirement per 64 blocks (node.c, vol_batch). 0 or -errno; -ENOSPC without
 * a cache. */
int node_cache_flush(struct coh_node *n);
/* node_cache_writeback - coh_cache_writeback of @lbas on @n's cache, batched the same way. */
int node_cache_writeback(struct coh_node *n, const uint64_t *lbas, uint32_t m, uint32_t *written);
int node_wait_serving(struct coh_node *n, uint32_t ms);

/* membership.c */
int membership_init(struct coh_node *n);
void membership_stop(struct coh_node *n);
/* membership_leave - the orderly leave (memb_leave) on the membership thread; bounded. */
int membership_leave(struct coh_node *n);
void membership_fini(struct coh_node *n);
/* replay_log - apply the live records of writer @d's region; exported for tests. */
int node_replay(struct coh_node *n, uint32_t d, const uint8_t *region, size_t len);
/* node_point - a named step (enum coh_crash_point): the crash-test facility and the engine-tier
 * point hook. Returns the hook's answer (nonzero: drop the message a send point names). */
int node_point(struct coh_node *n, uint32_t pt, uint64_t detail);

/* state.c: load (*found false: no file, a node that never ran) and store the node's state in
 * log_dir; without a log_dir nothing persists. The codec is pure (fuzzed). */
void node_state_encode(const struct node_state *s, uint32_t node, uint32_t nodes, uint8_t *b);
int node_state_decode(const uint8_t *b, size_t len, uint32_t node, uint32_t nodes,
		      struct node_state *s);
int node_state_load(struct coh_node *n, struct node_state *s, bool *found);
int node_state_store(struct coh_node *n, const struct node_state *s);
/* node_persist - store @prepared (and, with @commit, committed) view E/P with the log's current
 * generation and peers. Returns 0 or the store's error. */
int node_persist(struct coh_node *n, uint32_t E, uint32_t P, bool commit);

/* lease.c */
int lease_init(struct coh_node *n);
/* lease_connect - endpoints to the nodes of @members (new incarnations get new ones), with the
 * thread stopped; lease_start/lease_stop run and stop the thread (again and again). */
int lease_connect(struct coh_node *n, uint32_t members);
int lease_start(struct coh_node *n);
void lease_stop(struct coh_node *n);
void lease_fini(struct coh_node *n);
void lease_drop(struct coh_node *n);
uint32_t lease_suspects(struct coh_node *n);
/* lease_fenced - members that answered from a view of their own without quorum, since the last
 * call (they fenced themselves). */
uint32_t lease_fenced(struct coh_node *n);
uint32_t lease_excluded(struct coh_node *n);
uint64_t lease_outwait_ns(struct coh_node *n, uint32_t gone);
/* node_lease_ok - this node may serve now (its lease runs past the present). */
bool node_lease_ok(struct coh_node *n);

/* node_step_pause - a view change step (membership thread, @io held) lets a waiting operation
 * have @io, then takes it again (coh_cache_attr.step_pause). */
void node_step_pause(void *arg);

/* Control messages: 96 bytes on the control and lease channels. */
#define CTL_MSG_SIZE 96u
#define CTL_MAGIC 0x4c54434fu /* "OCTL" */

enum ctl_type {
	CTL_DESC = 1,	     /* @desc: the region the sender hosts for the receiver's log */
	CTL_VIEW = 2,	     /* a proposed view (@epoch, @members); the sender's last committed view
			    (@cepoch, @cmembers) */
	CTL_FLUSHED = 3,     /* the sender has claimed its holdings in the rebuilt words for @epoch;
			    @aux: the dead writers whose log it holds a copy of */
	CTL_READY = 4,	     /* the sender's takeovers for @epoch are done, the store flushed */
	CTL_BYE = 5,	     /* the sender is leaving, its log empty */
	CTL_CLEARED = 6,     /* the sender has cleared the words it will rebuild for @epoch */
	CTL_CDESC = 7,	     /* re-keyed for @epoch: the sender's cache region @idx is now @desc */
	CTL_ZEROED = 8,	     /* the sender has zeroed its copies of the dead logs for @epoch */
	CTL_LEASE = 9,	     /* lease channel: renew round @aux (sender's view @epoch) */
	CTL_LEASE_ACK = 10,  /* lease channel: round @aux renewed */
	CTL_LEASE_NACK = 11, /* lease channel: not a member of my view (@epoch, @members) */
	CTL_STATE = 12,	     /* at open: the sender's prepared view (@epoch, @members), committed
				view (@cepoch, @cmembers) and own log generation (@aux); after its
				CTL_COPYs */
	CTL_COPY = 13,	     /* at open: the sender hosts a copy of writer @cepoch's log,
				generation @epoch, @aux live records */
	CTL_RECOVERED = 14,  /* at open: the sender's replays for recovery @epoch are done */
	CTL_RZEROED = 15,    /* at open: the sender has zeroed the copies it hosts, for @epoch */
	CTL_HELLO = 16,	     /* after a connection: the view the sender serves (@epoch, @members),
				epoch 0 when none; after its CTL_COPYs and CTL_STATE */
	CTL_JOIN = 17,	     /* a node that serves nothing asks to be admitted */
	CTL_FORM = 18,	     /* a formation of view (@epoch, @members) proposed or echoed */
	CTL_DRAIN = 19,	     /* the sender leaves: destage what you hold (@epoch: its view) */
	CTL_DRAINED = 20,    /* the sender destaged everything it held, for @epoch */
	CTL_ELEM = 21,	     /* the redundancy group's elements the sender finds missing (@aux) */
	CTL_ELEM_ACK = 22,   /* the sender has marked @aux missing too */
	CTL_QUIESCED = 23,   /* the sender has stopped serving for formation @epoch (destaged
				what it held) and makes its endpoints for it now */
	CTL_TYPE_MAX = 23,
};

struct ctl_msg {
	uint8_t type, idx;
	uint16_t from;
	uint32_t epoch, members;
	uint32_t cepoch, cmembers;
	uint32_t aux;
	struct coh_mr_desc desc;
};

void ctl_encode(const struct ctl_msg *m, uint8_t *buf);

/* ctl_tag / ctl_set_tag - a 32-bit tag carried where a message that has no descriptor would
 * have one (CTL_STATE: the exchange it belongs to). */
/* node_majority - @set (a bitmap of nodes) is more than half the configured nodes: a view with
 * quorum, a lease round that counts. */
static inline bool node_majority(const struct coh_node *n, uint32_t set)
{
	return (uint32_t)__builtin_popcount(set) * 2 > n->nodes;
}

static inline uint32_t ctl_tag(const struct ctl_msg *m)
{
	return (uint32_t)m->desc.bytes[0] | (uint32_t)m->desc.bytes[1] << 8 |
	       (uint32_t)m->desc.bytes[2] << 16 | (uint32_t)m->desc.bytes[3] << 24;
}

static inline void ctl_set_tag(struct ctl_msg *m, uint32_t tag)
{
	m->desc.bytes[0] = (uint8_t)tag;
	m->desc.bytes[1] = (uint8_t)(tag >> 8);
	m->desc.bytes[2] = (uint8_t)(tag >> 16);
	m->desc.bytes[3] = (uint8_t)(tag >> 24);
}
/* ctl_word / ctl_set_word - 32-bit word @i (1 .. 3) of a descriptor's place, for messages that
 * carry none (CTL_STATE: word 1, the elements the sender finds missing). Word 0 is the tag. */
static inline uint32_t ctl_word(const struct ctl_msg *m, uint32_t i)
{
	const uint8_t *b = m->desc.bytes + 4 * i;

	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline void ctl_set_word(struct ctl_msg *m, uint32_t i, uint32_t v)
{
	uint8_t *b = m->desc.bytes + 4 * i;

	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

/* Returns 0 or -EPROTO (bad magic, type, sender, member set, or checksum). */
int ctl_decode(const uint8_t *buf, uint32_t len, uint32_t nodes, struct ctl_msg *m);

#endif /* COHORT_ENGINE_NODE_INTERNAL_H */
