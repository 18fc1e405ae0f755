/*
 * rlog.h - the replication log: how a writer's acknowledged-but-not-destaged writes and the
 * state of its multi-step destages live in regions on its peers, and how a survivor reads them
 * back. Internal to the engine.
 *
 * Each node hosts one region per other node (the writer). A region is a 64-byte header and a
 * ring of records. A record is a 64-byte header (checksummed with CRC32C together with its
 * payload, except for the state word, which the writer flips in place to retire it) and a payload
 * padded to 64 bytes. The writer appends with one-sided WRITEs and makes them persistent with the
 * fabric FLUSH before it acknowledges; the host's CPU never takes part. All integers are
 * little-endian.
 */
#ifndef COHORT_ENGINE_RLOG_H
#define COHORT_ENGINE_RLOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/fabric.h"

#define RLOG_ALIGN 64u
#define RLOG_HDR 64u			   /* region header */
#define RLOG_REGION_MAGIC 0x474f4c52u	   /* "RLOG" */
#define RLOG_REC_MAGIC 0x43455252u	   /* "RREC" */
#define RLOG_RETIRED 0x4445524954455221ull /* "!RETIRED": its destage is done */
#define RLOG_ABANDONED                                                                             \
	0x4e4f444e41424121ull /* "!ABANDON": an append that failed, never
						acknowledged; supersedes nothing */
#define RLOG_MAX_PAYLOAD (1u << 20)
#define RLOG_STEP_MAGIC 0x50455453u /* "STEP" */
#define RLOG_STEP_SLOTS 8u
/* The region: header, step slots, then the ring of records. */
#define RLOG_RING (RLOG_HDR + RLOG_STEP_SLOTS * RLOG_ALIGN)

enum rlog_type {
	RLOG_DATA = 1, /* one block of an acknowledged write: addr = lba */
	/* 2 is not used: destage steps live in the step slots, outside the ring. */
	RLOG_WRAP = 3, /* the rest of the ring is unused; continue at the start */
};

/* struct rlog_rec - a decoded record header. */
struct rlog_rec {
	uint64_t lsn;
	uint32_t epoch;
	uint16_t writer;
	uint8_t type, step;
	uint64_t addr;
	uint32_t len; /* payload bytes */
	uint32_t gen;
	uint64_t state; /* 0 live, RLOG_RETIRED, RLOG_ABANDONED */
};

static inline uint32_t rlog_rec_size(uint32_t payload)
{
	return RLOG_ALIGN + (payload + RLOG_ALIGN - 1) / RLOG_ALIGN * RLOG_ALIGN;
}

/* Codec (pure; fuzzed). encode writes rlog_rec_size(r->len) bytes. decode checks magic, fields,
 * that the payload fits in @avail, and the CRC. Returns 0, -ENODATA (no record: zero or foreign
 * bytes), -EPROTO (a field out of range) or -EBADMSG (checksum mismatch: torn or corrupt). */
void rlog_rec_encode(uint8_t *dst, const struct rlog_rec *r, const void *payload);
int rlog_rec_decode(const uint8_t *src, size_t avail, struct rlog_rec *r);
void rlog_region_hdr_encode(uint8_t *dst, uint16_t writer, uint32_t gen, uint64_t tail_off,
			    uint64_t tail_lsn);
int rlog_region_hdr_decode(const uint8_t *src, uint16_t *writer, uint32_t *gen, uint64_t *tail_off,
			   uint64_t *tail_lsn);

/* struct rlog_scan_stats - what a scan found. */
struct rlog_scan_stats {
	uint64_t live;	     /* valid live records that are the newest of their block: visited */
	uint64_t superseded; /* valid live records with a newer record of their block after them */
	uint64_t retired, abandoned; /* valid records in those states */
	uint64_t corrupt; /* records skipped for a bad checksum with valid ones after them */
	uint64_t torn;	  /* an invalid record where the log ends (never acknowledged) */
};

typedef int (*rlog_visit_fn)(void *arg, const struct rlog_rec *r, const uint8_t *payload);

/*
 * rlog_scan - visit the live records of a region in log order, from its tail, leaving out each
 * one that a newer valid record of the same block supersedes (live or retired, not abandoned: a
 * rewrite does not retire what it supersedes; rlog.c, "Supersession"). A record that
 * fails its checksum is never visited. If a valid record with the next sequence number exists
 * further on, the bad one was corrupted in place: it is counted, logged, and skipped; otherwise
 * it is where the log ends (a torn append that was never acknowledged). Bounded by the region's
 * size. Returns 0, the visitor's nonzero return, -ENOMEM, or -EPROTO for a region header that is
 * not this writer's.
 */
int rlog_scan(const uint8_t *region, size_t len, uint16_t writer, rlog_visit_fn fn, void *arg,
	      struct rlog_scan_stats *st);

/* The writer's side. */

#define RLOG_MAX_PEERS 32u

struct rlog_live; /* lba -> newest live DATA record */

/* Called without the writer's lock when the log is full: destage to make room. */
typedef int (*rlog_reclaim_fn)(void *arg);
/* Called at instrumented points (engine crash tests). */
typedef void (*rlog_point_fn)(void *arg, int point);
/* The owner's background destage is wanted: the log's use passed @rlog_writer.kick_above
 * (called with the writer's lock held, so it only signals). */
typedef void (*rlog_kick_fn)(void *arg);

#define RLOG_ABANDON_MAX 256u
#define RLOG_KEPT_MAX 256u

/* A destaged range whose records are to be retired: blocks [lba, lba + n), data up to @upto. */
struct rlog_range {
	uint64_t lba, upto;
	uint32_t n;
};

/* RLOG_STAT - add @v to counter @f of a struct rlog_writer @w (under its lock; read without). */
#define RLOG_STAT(w, f, v) __atomic_add_fetch(&(w)->f, (uint64_t)(v), __ATOMIC_RELAXED)

struct rlog_writer {
	pthread_mutex_t lock;
	struct coh_fabric *fab;
	uint32_t me, bsize, timeout_ms;
	size_t region_len;
	struct coh_cq *cq;
	struct coh_ep *ep[RLOG_MAX_PEERS];
	struct coh_rmr *rmr[RLOG_MAX_PEERS];
	uint32_t peers; /* bitmap: where appends go now */
	uint32_t k;	/* copies wanted */
	struct coh_mr *stage;
	size_t stage_len;
	uint32_t epoch, gen;
	uint32_t step_busy; /* step slots in use */
	uint64_t step_seq;
	/* ring state */
	uint64_t head_off, next_lsn, tail_off, tail_lsn;
	uint64_t used; /* bytes between tail and head, wrap padding included */
	/* records not yet past the tail, oldest first: offset, size, lsn, retired */
	struct rlog_ent {
		uint64_t off, lsn, lba;
		uint64_t prev; /* the LSN of the record of the same block this one superseded */
		uint32_t size;
		bool retired; /* done here: the tail may pass it */
		bool sup;     /* done because superseded; still live on the peers */
		bool data;
	} * ents;
	uint32_t ent_cap, ent_head, ent_count;
	struct rlog_live *live;
	rlog_reclaim_fn reclaim;
	rlog_point_fn point;
	/* Background destage (node_bgdestage.c): @kick is called after an append that leaves
	 * more than @kick_above bytes used; both set by the owner before any append, 0/NULL for
	 * none. */
	rlog_kick_fn kick;
	uint64_t kick_above;
	void *arg;
	/* counters. appended, retired, superseded, backpressure, group_commits, group_writes and
	 * used change under @lock with RLOG_STAT (relaxed atomics), so that coh_node_stats reads
	 * them without @lock, which a round's leader holds across its network waits. */
	uint64_t appended, retired, superseded, bytes, backpressure, peer_errors;
	uint64_t batch_seq; /* the last batch's sequence (its operations' wr_id) */
	/* Group commit (rlog_append_data): writes queued for the next round, whether a caller leads
	 * one now; under @gc_lock, which nests inside @lock (a leader holds @lock across its round
	 * and takes @gc_lock briefly), and alone for those that wait. */
	pthread_mutex_t gc_lock;
	pthread_cond_t gc_cond;
	struct rlog_gc *gc_head;
	uint32_t gc_queued; /* writes on @gc_head */
	bool gc_leader;
	uint64_t group_commits, group_writes; /* rounds that carried several writes; their writes */
	uint64_t stale; /* completions of batches whose wait had timed out, discarded */
	/* Peers a round timed out on, and when (batch_skip in rlog.c): rounds post nothing to
	 * them for a timeout. Under @lock. */
	uint32_t unreach;
	uint64_t unreach_ms[RLOG_MAX_PEERS];
	/* Records of failed appends whose ABANDONED mark did not reach every peer (a peer slow or
	 * gone): one may still be live on a peer, where a replay would put an unacknowledged
	 * write back over a later one, so the owner hands no lock on until the marks land
	 * (rlog_abandon_retry) or the log starts a new generation. @abandon_lost: more than fit. */
	uint64_t abandon_lsns[RLOG_ABANDON_MAX];
	uint32_t abandon_n;
	bool abandon_lost;
	bool abandon_any; /* either of the above: __atomic_*_n, read without the lock */
	/* Retirements a batched destage could not finish (rlog_retire_keep): the data is in the
	 * store, maybe not flushed, and the records live; kept until rlog_retire_kept retires them
	 * or the log starts a new generation. @kept_lost: more than fit. */
	struct rlog_range kept[RLOG_KEPT_MAX];
	uint32_t kept_n;
	bool kept_lost;
	bool kept_any;		    /* either of the above: __atomic_*_n, read without the lock */
	pthread_mutex_t kept_retry; /* one rlog_retire_kept at a time */
};

int rlog_writer_init(struct rlog_writer *w, struct coh_fabric *fab, uint32_t bsize,
		     size_t region_len, uint32_t timeout_ms, rlog_reclaim_fn reclaim,
		     rlog_point_fn point, void *arg);
void rlog_writer_fini(struct rlog_writer *w);
/* Start afresh (every earlier record destaged or replayed): new peers, epoch, generation. The
 * regions on the peers are expected zeroed by their hosts. */
int rlog_writer_reset(struct rlog_writer *w, uint32_t peers, uint32_t k, uint32_t epoch);
/* Append one DATA record per block and make them persistent on every current peer. Returns 0
 * once all are persistent on at least min(k, live peers) peers (*@last, if not NULL, is then the
 * LSN of the last record), -ENOSPC if the log cannot hold them even when empty, -ETIMEDOUT when
 * room did not appear in time, or a fabric error. Concurrent calls share round trips (group
 * commit). */
int rlog_append_data(struct rlog_writer *w, uint64_t lba, uint32_t n, const void *buf,
		     uint64_t *last);
/*
 * Destage steps: a destage takes a step slot, puts the state of each step there (persistent on
 * the peers) before the step takes effect, and clears it when done.
 */
int rlog_step_begin(struct rlog_writer *w, uint32_t *slot);
int rlog_step_put(struct rlog_writer *w, uint32_t slot, uint64_t stripe, uint8_t step);
int rlog_step_end(struct rlog_writer *w, uint32_t slot);
/* rlog_step_forget - the slot is free again here, without writing the peers (their copies were
 * taken over or restarted). */
void rlog_step_forget(struct rlog_writer *w, uint32_t slot);
int rlog_step_decode(const uint8_t *b, uint16_t *writer, uint32_t *gen, uint64_t *stripe,
		     uint8_t *step);
/* Visit the step slots of a region that name a destage in progress. */
int rlog_scan_steps(const uint8_t *region, size_t len, uint16_t writer,
		    int (*fn)(void *arg, uint64_t stripe, uint8_t step), void *arg);
/* Retire the newest live DATA record of each block in [lba, lba + n), after the destage that
 * makes them redundant, and with it the older records of those blocks it superseded that are
 * still past the tail (so that a corrupt newest record cannot bring an older one back); in one
 * round trip per 64 records, persistent on the peers when it returns 0. A block whose newest
 * record is later than @upto (the LSN of the data destaged) is left as it is: that record is a
 * later write's. UINT64_MAX: the newest, whatever it is. */
int rlog_retire(struct rlog_writer *w, uint64_t lba, uint32_t n, uint64_t upto);
/* rlog_retire_many - rlog_retire of @nr ranges at once: their records in as few round trips as
 * they fit (64 records each). The caller flushed the store that holds their data. 0, or the
 * error (then none of them left the live set; retried, the retirements already done are
 * skipped). */
int rlog_retire_many(struct rlog_writer *w, const struct rlog_range *r, uint32_t nr);
/* rlog_retire_keep - ranges a batched destage wrote to the store but could not retire (its flush
 * or its retirement failed): kept until rlog_retire_kept retires them or the log starts a new
 * generation. rlog_retire_kept_any - whether some are kept; cheap. rlog_retire_kept - @flush
 * (the store's), then retire every range kept before it began: 0 when none is left, else the
 * error (-ENOSPC: more were kept than fit; only a new generation ends that). While any are kept
 * the owner hands no lock on: a record live over data that another node may overwrite would be
 * replayed over it after this node's death. */
void rlog_retire_keep(struct rlog_writer *w, const struct rlog_range *r, uint32_t nr);
bool rlog_retire_kept_any(struct rlog_writer *w);
int rlog_retire_kept(struct rlog_writer *w, int (*flush)(void *arg), void *arg);
/* Live DATA records (acknowledged, not destaged). */
uint64_t rlog_live_count(struct rlog_writer *w);
/* rlog_abandon_pending - whether some failed append's records may still be live on a peer (their
 * ABANDONED mark did not land everywhere); cheap. rlog_abandon_retry - mark them again on the
 * current peers: 0 when none is left pending, else the error (-ENOSPC: more were lost track of
 * than the writer keeps; only a new generation ends that). Bounded by the writer's timeout. */
bool rlog_abandon_pending(struct rlog_writer *w);
int rlog_abandon_retry(struct rlog_writer *w);
/* rlog_abandon_write - a write appended (its last record @last) but not installed, for blocks
 * [lba, lba + n): its records there, and the older records of those blocks they superseded, are
 * marked ABANDONED on the peers (kept pending where the mark does not land, as a failed
 * append's), and the blocks leave the live set. The caller still holds the blocks' resources,
 * so the newest record of each is this write's; and the blocks' older data is in the store (the
 * cache evicted it, which is why the write could not go in). Returns 0, or the mark's error
 * (the records are then pending). */
int rlog_abandon_write(struct rlog_writer *w, uint64_t lba, uint32_t n, uint64_t last);
/* rlog_used - bytes between the tail and the head now (what the ring cannot take); *@cap, if not
 * NULL, the ring's size. */
uint64_t rlog_used(struct rlog_writer *w, uint64_t *cap);
/* rlog_oldest_live - the blocks of the oldest live DATA records (those that keep the tail where
 * it is), oldest first, at most @max of them into @lbas; how many. A block appears once. */
uint32_t rlog_oldest_live(struct rlog_writer *w, uint64_t *lbas, uint32_t max);

#endif /* COHORT_ENGINE_RLOG_H */
