/*
 * cache_internal.h - the coherent cache's private declarations, shared by cache.c (setup,
 * transport, messages) and coherence.c (the protocol, reads and writes). Included only by those
 * files and their tests. docs/coherence.md describes the protocol these implement.
 */
#ifndef COHORT_CACHE_INTERNAL_H
#define COHORT_CACHE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "cohort/cache.h"
#include "cohort/log.h"

/*
 * The directory word of a resource, at its home node (the first live member at or after
 * resource % nodes, so that a death moves only the dead home's words), at offset resource * 8:
 *   bits 0-31 sharers, 32-37 exclusive owner, 38 exclusive, 40-63 version.
 * Bit 39 marks an exclusive claim in a word being rebuilt after its home died (view.c).
 * It is changed only with fabric CAS, by every node including the home (through its loopback
 * endpoint), because fabric atomics are not atomic with the CPU's own.
 */
#define DIR_X (1ull << 38)
#define DIR_CLAIM_X (1ull << 39)
/* The version field is 24 bits; a test build narrows it (cmake -DCOHORT_VER_BITS=8) so that
 * a wrap takes seconds, not hours. */
#ifndef COHORT_VER_BITS
#define COHORT_VER_BITS 24
#endif
#if COHORT_VER_BITS < 4 || COHORT_VER_BITS > 24
#error "COHORT_VER_BITS must be 4 .. 24"
#endif
#define DIR_VER_MASK ((1u << COHORT_VER_BITS) - 1)

static inline uint32_t dir_sharers(uint64_t w)
{
	return (uint32_t)w;
}

static inline uint32_t dir_owner(uint64_t w)
{
	return (uint32_t)(w >> 32) & 0x3f;
}

static inline bool dir_excl(uint64_t w)
{
	return w & DIR_X;
}

static inline uint32_t dir_ver(uint64_t w)
{
	return (uint32_t)(w >> 40) & DIR_VER_MASK;
}

static inline uint64_t dir_make(bool excl, uint32_t owner, uint32_t sharers, uint32_t ver)
{
	return (excl ? DIR_X | (uint64_t)(owner & 0x3f) << 32 : 0) | sharers |
	       (uint64_t)(ver & DIR_VER_MASK) << 40;
}

/* ver_after - @a is a later version than @b, modulo the 24-bit wrap. */
static inline bool ver_after(uint32_t a, uint32_t b)
{
	uint32_t d = (a - b) & DIR_VER_MASK;

	return d != 0 && d < (DIR_VER_MASK >> 1);
}

/* Lock messages: 32 bytes, little-endian, checked on receipt (cmsg_decode is fuzzed). */
#define CMSG_MAGIC 0x4d43u /* "CM" */
#define CMSG_SIZE 32u
#define NODE_NONE 0xffffffffu

enum cmsg_type {
	CMSG_REQ = 1,	/* requester wants @mode on @resource */
	CMSG_GRANT = 2, /* you hold @mode at @version; @holder has a valid copy */
	CMSG_RETRY = 3, /* I do not hold it: read the directory again */
};

enum cache_mode {
	MODE_S = 1,
	MODE_X = 2,
};

struct cmsg {
	uint8_t type;
	uint8_t mode;
	uint8_t lane; /* the requester's application context, where its answer goes */
	uint32_t requester;
	uint64_t resource;
	uint32_t version;
	uint32_t holder;
	uint32_t holder_v;
	uint64_t seq;
};

void cmsg_encode(const struct cmsg *m, uint8_t *buf);
/* Returns 0 or -EPROTO; @nodes and @nres bound the fields. */
int cmsg_decode(const uint8_t *buf, uint32_t len, uint32_t nodes, uint64_t nres, struct cmsg *m);

/* Local state of a resource. */
enum res_level {
	L_I = 0,
	L_S = 1,
	L_X = 2,
};

struct req {
	struct cmsg m;
	struct req *next;
};

/* svc_out - one message the service thread sends once it has dropped the cache lock: an answer
 * to @m's requester (a grant or RETRY, built by serve) or, with @fwd, @m itself forwarded to
 * node @to's service thread (a waiter handed over with the resource). */
struct svc_out {
	struct cmsg m;
	uint32_t to;
	bool fwd;
};

/*
 * struct res_state - this node's view of one resource; guarded by coh_cache.lock.
 *
 * A tenure is one unbroken stretch during which this node holds the resource (S or X). Blocks of
 * the resource cached here are valid only while the tenure lasts, and only if filled during it
 * under version @lv or @cv (the version whose content was current when the tenure began). Every
 * tenure that begins from L_I starts with the resource's slots emptied (@fresh), so that no slot
 * of an earlier tenure is ever taken as current, by this node or by a peer that READs it, however
 * far the version has moved meanwhile (24 bits wrap; COHORT_VER_BITS narrows them in a test
 * build). The same holds for invalidations: @inv_base is the value of this node's invalidation
 * word when the tenure's sharer bit was about to be set, and the copy is invalidated once the
 * word differs; no version is compared across a gap of unknown length.
 */
struct res_state {
	uint8_t level;
	bool pinned;	  /* an operation of this node is using it: requests wait */
	uint8_t claim;	  /* 1 + the lane acquiring or using it (others wait); 0: none */
	uint16_t wb;	  /* its blocks being written back with the lock dropped (slot_clean):
			     it is handed on only once they are done */
	bool seen;	  /* @dir_guess comes from this resource's own word */
	bool tk;	  /* taken over from a dead node: held until the view change commits */
	bool srv;	  /* the service thread is handing it on with the lock dropped (serve):
			     this node's lanes wait, as for a pin, until the word has moved */
	bool fresh;	  /* no slot of this resource holds a block of an earlier tenure */
	uint16_t mine_at; /* acq_lost_grant: when the word was first seen naming this node while no
			     grant had come (cache_now_ms() / 16, never 0); 0: not seen */
	uint32_t owed;	  /* sharers whose invalidation failed: retried before the next use */
	uint32_t vfloor;  /* a grant at this version or before is old news (cache_apply_grant) */
	uint32_t obs_gen; /* c->fence_gen when @dir_guess and @vfloor were last observed fresh */
	uint32_t lv, cv;
	uint32_t holder;	 /* a node whose cache has the current content, or NODE_NONE */
	uint32_t holder_v;	 /* the version of that content */
	uint64_t inv_base;	 /* this node's invalidation word when the tenure began */
	uint64_t dir_guess;	 /* the directory word as last seen */
	struct req *head, *tail; /* requests waiting for the pin to drop, in arrival order */
};

/* Slots: direct-mapped by block address, in a region peers may READ. A slot is filled by
 * clearing @tag, writing the data, then the header with @tag last; a peer accepts a slot only if
 * tag, version and CRC all match, so a read that races a refill is refused, not misread. */
#define SLOT_HDR 64u
struct slot_hdr {
	_Atomic uint64_t tag; /* lba + 1; 0 when empty or being filled */
	uint32_t rv;
	uint32_t crc;
	uint32_t dirty; /* local bookkeeping, never trusted from a peer */
	uint64_t seq;	/* local: the write_hook sequence of the dirty data (slot_destage) */
	uint32_t wb;	/* local: a write-back reads the block from here, the lock dropped:
			   nothing changes the slot until it is over (slot_clean) */
};

/*
 * Endpoints. Each application context (a lane: coh_cache_attr.lanes) and the service thread owns
 * its own, so each is a separate serialisation domain. For a pair a < b the channels are, for
 * lane 0:
 *   10 a.app <-> b.app   one-sided (directory CAS, slot READ, invalidation WRITE)
 *   11 a.app <-> b.svc   a's requests to b; b's grants and retries to a
 *   12 a.svc <-> b.app   the reverse
 *   13 a.svc <-> b.svc   one-sided for the service thread, and forwarded requests
 * and for lane L > 0 the same three application channels at 14 + 3 (L - 1), +1, +2; plus
 * loopbacks on the one-sided channels for the node's own directory words. The numbers are offsets
 * from the channel base of the cache's attributes (10 by default): coh_cache_channels(lanes) of
 * them in all.
 */
enum {
	CH_APP = 10,
	CH_APP_SVC = 11,
	CH_SVC_APP = 12,
	CH_SVC = 13,
	CH_LANE1 = 14,
};

/* lane_ch - the channel @ch (CH_APP, CH_APP_SVC or CH_SVC_APP) of lane @l. */
static inline uint32_t lane_ch(uint32_t l, uint32_t ch)
{
	return l ? CH_LANE1 + 3 * (l - 1) + (ch - CH_APP) : ch;
}

#define XP_RECVS 16u
#define XP_WRID_NODE (1ull << 62) /* wr_id of a send-side operation aimed at node (low bits) */
#define XP_INBOX 256u
/* The service thread's longest sleep: it is woken by the fabric (messages, coh_cq_wake), so this
 * bounds only a wake that went missing. */
#define SVC_IDLE_MS 200

/* struct xport - one thread's endpoints and message buffers. Owned by that thread. */
struct xport {
	struct coh_cache *c;
	/* A lane's: held by the thread using it for the length of an operation (the public entry
	 * points), so that another lane can take in grants that arrived here while it is idle
	 * (lanes_drain). */
	pthread_mutex_t mu;
	uint32_t
	    lane; /* its number, carried in its requests (cmsg.lane); the service thread's: 0 */
	struct coh_cq *cq;
	struct coh_ep *one[COH_CACHE_MAX_NODES];    /* one-sided, incl. loopback */
	struct coh_ep *to_svc[COH_CACHE_MAX_NODES]; /* where requests to node n go */
	struct coh_rmr *dir[COH_CACHE_MAX_NODES];
	struct coh_rmr *inv[COH_CACHE_MAX_NODES];
	struct coh_rmr *slots[COH_CACHE_MAX_NODES];
	struct coh_mr *buf; /* recv slots, a send buffer, a bounce block */
	size_t bounce_off;
	struct coh_ep *recv_eps[(COH_CACHE_MAX_LANES + 1) * COH_CACHE_MAX_NODES];
	uint32_t n_recv_eps;
	uint32_t outstanding;
	uint32_t wr_failed; /* nodes whose XP_WRID_NODE operation completed with an error */
	struct cmsg inbox[XP_INBOX];
	uint32_t in_head, in_count;
};

/* CACHE_STAT - count @v into coh_cache_stats field @f of @c (any thread, any lock). */
#define CACHE_STAT(c, f, v) __atomic_add_fetch(&(c)->stats.f, (uint64_t)(v), __ATOMIC_RELAXED)

/*
 * struct coh_cache - one node's cache. @lock guards @res and the slots' contents; the
 * application context holds it while it touches local state and drops it while it waits on the
 * network. Lock order (docs/concurrency.md): the engine's io lock, then @lock, then the store's
 * locks, which the lanes and the service thread reach with @lock dropped (slot_clean,
 * serve_writeback), but for a write whose own blocks share a slot (slot_evict, under it). The
 * service thread drops @lock across its network waits too (serve). @svc_kick tells the service thread that a pin dropped; whoever sets it wakes
 * the thread with coh_cq_wake on its completion queue.
 */
struct coh_cache {
	struct coh_fabric *fab;
	struct coh_store *store;
	uint32_t me, nodes, bsize, res_blocks, nslots, stride, timeout_ms;
	uint64_t nblocks, nres;
	uint32_t members, nmemb, ch_base;
	int (*write_hook)(void *arg, uint64_t lba, uint32_t nblocks, const void *buf,
			  uint64_t *seq);
	int (*destage)(void *arg, uint64_t lba, uint32_t nblocks, const void *buf, uint64_t seq);
	void (*write_undo)(void *arg, uint64_t lba, uint32_t nblocks, uint64_t seq);
	void (*step_pause)(void *arg);
	int (*point)(void *arg, uint32_t pt, uint64_t detail);
	const uint64_t *lease;	       /* coh_cache_attr.lease */
	bool (*hold_locks)(void *arg); /* coh_cache_attr.hold_locks */
	void *hook_arg;
	uint32_t memb[COH_CACHE_MAX_NODES]; /* member ids, ascending */
	/* Node failure (view.c): @dead are fenced (nothing is sent to them, their requests are
	 * dropped, waits on them end); @fence_gen counts fences, so that a wait that began before
	 * one knows to re-drive; @home_of[b] is the home of resources with r % nodes == b, switched
	 * to the survivors when a view change commits. */
	_Atomic uint32_t dead;
	/* Peers that a reply of the service thread could not reach (its SEND timed out: a
	 * partition, or a peer that takes nothing), and since when (cache_now_ms). For a timeout
	 * after that, replies to it are not sent: each would hold the cache lock for a transport
	 * timeout (about 0.8 s on rdma) while every lane waits. A message from the peer, or a
	 * reply that went, clears it. Set by the service thread; cleared by any poller. */
	_Atomic uint32_t unreach;
	_Atomic uint64_t unreach_ms[32];
	atomic_uint fence_gen;
	_Atomic bool
	    yield; /* another thread wants the application thread's place (coh_cache_yield) */
	uint32_t home_of[COH_CACHE_MAX_NODES];
	/* The directory region: the words of resources with r % nodes == b (bucket b, one home's)
	 * together, @bucket_words of them per bucket (res_dir_off), then one arbitration word per
	 * node (arb_off): @dir_words in all. A view change READs only the buckets it needs. */
	uint64_t dir_words, bucket_words;

	struct coh_mr *dir_mr, *inv_mr, *slots_mr;
	struct coh_mr *img_mr; /* view.c: a copy of one bucket's words, made on first use */
	uint8_t *slots;
	/* Invalidation words: @inv_mask + 1 of them (a power of two), resource r's at
	 * r & @inv_mask (inv_word). Sized by the cache, not the volume (cache_inv_words): two
	 * resources that share a word only make each other's shared copies look invalidated
	 * (one more CAS and fetch), never a stale copy look current. A writer finds a peer's mask
	 * from the length of the peer's region (inv_off_at). */
	_Atomic uint64_t *inv;
	uint64_t inv_mask;

	pthread_mutex_t lock;
	pthread_cond_t kick_cond;
	/* Every resource's state, in one array whose pages the kernel provides on first write
	 * (calloc of that size maps fresh zero pages): a resource never used costs no memory.
	 * @res_used has a bit per RES_GROUP resources, set by res_of before any access: a group
	 * whose bit is clear holds only all-zero states (L_I, nothing queued, owed or taken), so
	 * that the walks over every resource (the fence, the claim, the commit, the close) visit
	 * only used groups (res_next_used) and cost what this node used, not the volume. */
	struct res_state *res;
	_Atomic uint64_t *res_used;
	/* Counted with CACHE_STAT (relaxed atomic adds) and read field by field by coh_cache_stats,
	 * without @lock: a stats call must not wait for a service thread that holds @lock across a
	 * network wait. The net_* and replies_dropped counters are the atomics below. */
	struct coh_cache_stats stats;
	atomic_ulong net_atomic, net_read, net_write, net_send, replies_dropped;
	atomic_ulong next_seq;
	atomic_ulong inv_count;	 /* invalidations written: the tokens' sequence */
	uint32_t lease_slack_ms; /* the coarse clock's tick, so that a lease is never overrun */
	uint64_t wb_failures;	 /* write-backs that failed while serving a request */
	uint64_t last_word; /* the last directory word this node saw, as a guess for unseen ones */
	bool svc_kick;
	/* Directory descriptors imported by a view change (coh_cache_import) for the service
	 * thread, which owns its endpoints and swaps them in itself. */
	struct coh_mr_desc svc_desc[COH_CACHE_MAX_NODES][2]; /* directory, invalidation words */
	uint32_t svc_desc_pending;
	uint64_t *kick; /* resources whose pin dropped with requests waiting */
	uint32_t n_kick, cap_kick;
	/* The service thread's outbox: the answers and forwards that serve() decided under @lock,
	 * sent by svc_flush once @lock is dropped (a send waits for the network). Service thread
	 * only. */
	struct svc_out *out;
	uint32_t n_out, cap_out;
	/* Messages posted to the outbox and sent (or skipped: a dead receiver) since the open,
	 * under @lock; @out_cond says @out_done moved. The fence waits for what was posted before
	 * it: a grant is made under @lock and must have reached its receiver before the claims
	 * (view.c, drain_grants). */
	uint64_t out_posted, out_done;
	pthread_cond_t out_cond;
	/* A hand-over is between its CAS (sent with @lock dropped) and its new state, and how many
	 * such CASes have ended, under @lock: the fence waits for the one it finds (@out_cond). */
	bool svc_cas;
	uint64_t cas_gen;

	/* The application contexts (lanes) and the service thread's. A lane is used by one thread
	 * at a time (the engine's lane lock; coh_cache_lane_bind says which one a thread uses).
	 * @to_lane[n][l] is where the service thread's answers to node n's lane l go. */
	struct xport lane[COH_CACHE_MAX_LANES], svc;
	uint32_t nlanes;
	struct coh_ep *to_lane[COH_CACHE_MAX_NODES][COH_CACHE_MAX_LANES];
	pthread_cond_t claim_cond; /* a claim dropped (res_state.claimed); @claim_waiters wait */
	uint32_t claim_waiters;
	pthread_cond_t wb_cond; /* a write-back with the lock dropped ended (slot_hdr.wb) */
	uint32_t wb_waiters;
	/* Grants for a resource another lane has claimed, which arrived on this lane (an answer to
	 * a request given up earlier): left for the claiming lane, which takes them in where it
	 * waits or when it lets the resource go, so that each resource's grants are taken in by
	 * the one lane working on it, as the model's one process per (node, resource) does. */
#define CACHE_DEFER_MAX 64u
	struct cmsg deferred[CACHE_DEFER_MAX];
	uint32_t n_deferred;
	pthread_t svc_thread;
	_Atomic bool stop;
	FILE *trace; /* debugging: COHORT_CACHE_TRACE=dir */
};

#include <stdio.h>
#define CTRACE(c, fmt, ...)                                                                        \
	do {                                                                                       \
		if ((c)->trace) {                                                                  \
			struct timespec ts_;                                                       \
			clock_gettime(CLOCK_MONOTONIC, &ts_);                                      \
			fprintf((c)->trace, "%llu n%u " fmt "\n",                                  \
				(unsigned long long)ts_.tv_sec * 1000000000ull +                   \
				    (unsigned long long)ts_.tv_nsec,                               \
				(c)->me, ##__VA_ARGS__);                                           \
		}                                                                                  \
	} while (0)

#define RES_GROUP 64u

/* res_of - resource @r's state, its group marked used. Every access to a state goes through it
 * (the walks included: they visit only marked groups). Any thread; the mark is a relaxed atomic
 * made before the access, ordered for a walk by the cache lock both take or by the state's own
 * synchronisation. */
static inline struct res_state *res_of(struct coh_cache *c, uint64_t r)
{
	_Atomic uint64_t *w = &c->res_used[r / RES_GROUP / 64];
	uint64_t bit = 1ull << (r / RES_GROUP % 64);

	if (!(atomic_load_explicit(w, memory_order_relaxed) & bit))
		atomic_fetch_or_explicit(w, bit, memory_order_relaxed);
	return &c->res[r];
}

/* res_next_used - the first resource at or after @r in a used group (res_of), or @c->nres.
 * A walk: for (r = res_next_used(c, 0); r < c->nres; r = res_next_used(c, r + 1)). */
static inline uint64_t res_next_used(const struct coh_cache *c, uint64_t r)
{
	uint64_t g = r / RES_GROUP, ngroups = (c->nres + RES_GROUP - 1) / RES_GROUP, wi, w;

	if (r >= c->nres)
		return c->nres;
	wi = g / 64;
	w = atomic_load_explicit(&c->res_used[wi], memory_order_relaxed) & (~0ull << (g % 64));
	if (w & (1ull << (g % 64)))
		return r;
	for (;;) {
		if (w) {
			g = wi * 64 + (uint64_t)__builtin_ctzll(w);
			return g < ngroups ? g * RES_GROUP : c->nres;
		}
		if (++wi * 64 >= ngroups)
			return c->nres;
		w = atomic_load_explicit(&c->res_used[wi], memory_order_relaxed);
	}
}

static inline uint32_t res_home(const struct coh_cache *c, uint64_t r)
{
	return __atomic_load_n(&c->home_of[r % c->nodes], __ATOMIC_ACQUIRE);
}

/* res_dir_off - where @r's directory word is in its home's region: in its bucket (r % nodes),
 * at r / nodes. The same offset on every node, so that a word whose home dies is rebuilt where
 * the members already look for it. */
static inline uint64_t res_dir_off(const struct coh_cache *c, uint64_t r)
{
	return ((r % c->nodes) * c->bucket_words + r / c->nodes) * 8;
}

/* arb_off - where the word on which the takeover of node @d is arbitrated is (view.c). */
static inline uint64_t arb_off(const struct coh_cache *c, uint32_t d)
{
	return (c->nodes * c->bucket_words + d) * 8;
}

static inline bool node_dead(const struct coh_cache *c, uint32_t n)
{
	return n < 32 && (atomic_load_explicit(&c->dead, memory_order_acquire) >> n & 1);
}

/* home_in - the home of @r among @members: the first member at or after r % nodes. */
static inline uint32_t home_in(const struct coh_cache *c, uint32_t members, uint64_t r)
{
	uint32_t b = (uint32_t)(r % c->nodes), i;

	for (i = 0; i < c->nodes; i++) {
		uint32_t n = (b + i) % c->nodes;

		if (members >> n & 1)
			return n;
	}
	return b;
}

static inline bool is_member(const struct coh_cache *c, uint32_t n)
{
	return n < c->nodes && (c->members >> n & 1);
}

static inline struct slot_hdr *slot_of(const struct coh_cache *c, uint64_t lba)
{
	return (struct slot_hdr *)(c->slots + (lba % c->nslots) * c->stride);
}

static inline uint64_t slot_off(const struct coh_cache *c, uint64_t lba)
{
	return (lba % c->nslots) * c->stride;
}

/*
 * An invalidation writes a value never written before by anyone: the writer's id and its own
 * count of invalidations (never zero). A reader compares the word with the value it had when its
 * tenure began (res_state.inv_base), so neither a wrapped version nor an invalidation aimed at
 * an earlier tenure can make a copy look current.
 */
static inline uint64_t inv_token(uint32_t writer, uint64_t count)
{
	return count << 6 | (writer & 0x3f);
}

/* cache_now_ms - the clock every deadline here is kept on. The coarse clock: deadlines are
 * milliseconds to seconds, so its tick (1-4 ms) is noise, and it costs a few nanoseconds where
 * the precise one costs 45 ns in a VM, paid several times on every operation, hits included. */
static inline uint64_t cache_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* cache_take_idle_lanes - take in the grants that reached lanes no operation uses now (their
 * operations gave up before the grant came), and kick the requests queued for them. Service
 * thread; no lock held. */
void cache_take_idle_lanes(struct coh_cache *c);
/* cache_drain_all - take in every lane's grants (a view change step, no lane in use). */
void cache_drain_all(struct coh_cache *c);
/* lanes_drain - take in the grants that arrived on the idle lanes other than @self. */
void lanes_drain(struct coh_cache *c, struct xport *self);
/* lane_enter / lane_exit - the calling thread's lane, held for an operation. */
struct xport *lane_enter(struct coh_cache *c);
void lane_exit(struct xport *x);
/* app_x - the application context of the calling thread (coh_cache_lane_bind; lane 0 if it
 * bound none for @c). */
struct xport *app_x(struct coh_cache *c);

/* cache.c: transport */
int xp_cas(struct xport *x, uint64_t r, uint64_t expect, uint64_t swap, uint64_t *old);
int xp_cas_at(struct xport *x, uint32_t node, uint64_t off, uint64_t expect, uint64_t swap,
	      uint64_t *old);
#define XP_CAS_BATCH 8u /* the endpoints' send queue depth */
int xp_cas_many(struct xport *x, uint32_t node, uint32_t n, const uint64_t *off,
		const uint64_t *expect, const uint64_t *swap, uint64_t *old);
int xp_send(struct xport *x, struct coh_ep *ep, const struct cmsg *m);
int xp_poll(struct xport *x, int timeout_ms);
int xp_wait_sends(struct xport *x);
int xp_ready(struct xport *x);
bool xp_take(struct xport *x, struct cmsg *m);

/* coherence.c */
void svc_handle(struct coh_cache *c, const struct cmsg *m);
void svc_serve_queued(struct coh_cache *c);
int cache_writeback_all(struct coh_cache *c);
int cache_release_all(struct coh_cache *c);
void cache_kick(struct coh_cache *c, uint64_t r);
/* cache_hold_word - hold @r exclusively as the directory word @word says, with no copy of an
 * earlier tenure (view.c). Lock held. */
void cache_hold_word(struct coh_cache *c, uint64_t r, uint64_t word);
bool cache_apply_grant(struct coh_cache *c, const struct cmsg *m, bool current);
void cache_set_floor(struct coh_cache *c, struct res_state *st, uint32_t v);
void cache_new_tenure(struct coh_cache *c, uint64_t r);
bool cache_lease_ok(const struct coh_cache *c);
void cache_realtime_in(int ms, struct timespec *ts);

/* inv_word - this node's invalidation word for @r. */
static inline _Atomic uint64_t *inv_word(const struct coh_cache *c, uint64_t r)
{
	return &c->inv[r & c->inv_mask];
}

/* inv_off_at - the offset of @r's invalidation word in the region @rmr of a peer: its length is
 * a power of two of words (cache_inv_words on that node). */
static inline uint64_t inv_off_at(const struct coh_rmr *rmr, uint64_t r)
{
	uint64_t words = coh_rmr_len(rmr) / 8;

	return (r & (words ? words - 1 : 0)) * 8;
}

/* cache_point - a named step of the protocol (enum coh_cache_point): the attribute's hook. */
static inline int cache_point(struct coh_cache *c, uint32_t pt, uint64_t detail)
{
	return c->point ? c->point(c->hook_arg, pt, detail) : 0;
}
/* cache_take_grants - wait up to @wait_ms for a message, then take in every grant that has
 * arrived (others are dropped: their requests are over). Application thread's endpoints. */
void cache_take_grants(struct coh_cache *c, int wait_ms);
/* same_seq - a message answers request @b: they carry the same low 32 bits of its seq. */
static inline bool same_seq(uint64_t a, uint64_t b)
{
	return (uint32_t)a == (uint32_t)b;
}
bool cache_invalidated(const struct coh_cache *c, uint64_t r);
/* cache_pay_all_owed - every invalidation this node owes, again (application thread's place).
 * Returns 0, or -EAGAIN while one still fails. */
int cache_pay_all_owed(struct coh_cache *c);

#endif /* COHORT_CACHE_INTERNAL_H */
