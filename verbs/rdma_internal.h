/*
 * rdma_internal.h - the objects of the "rdma" fabric provider (libibverbs + librdmacm), shared by
 * its four files: rdma.c (fabric, memory regions, completion queues, the ops table), rdma_cm.c
 * (the CM thread and the connection protocol), rdma_ep.c (endpoints and the state of their
 * connections) and rdma_io.c (posting, completion handling, software completions).
 *
 * Included only by those files. docs/rdma.md describes the behaviour; this header records who
 * may touch what.
 *
 * Threads: every rdma_cm call and every queue pair creation or destruction runs on the fabric's
 * CM thread (or in fabric_open/close, when it does not run): librdmacm updates an id while it
 * returns that id's events, so an id must not be used by two threads at once. User threads post,
 * poll, register memory, and wait on rdma_fabric.cond for the CM thread.
 *
 * Locks, in the order they nest (never take an earlier one while holding a later one):
 *   1. rdma_fabric.lock - the endpoint list, every field the CM thread's state machine uses, the
 *      pending connection requests, probes and the graveyard.
 *   2. rdma_ep.lock     - what the posting path needs: the endpoint's work-request slots, which
 *      connection is current, and writes to rdma_ep.state.
 *   3. rdma_cq.sw_lock  - a completion queue's software completion list.
 *   4. coh_fabric.ev_lock (fabric.c, through fabric_peer_down()).
 * The current connections (rdma_ep.act/pas) change only with both 1 and 2 held, so either lock
 * is enough to read them.
 */
#ifndef COHORT_RDMA_INTERNAL_H
#define COHORT_RDMA_INTERNAL_H

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "verbs_internal.h"

/* Largest SEND an endpoint may be configured for. */
#define RDMA_MAX_MSG (1u << 20)
/* Inline SEND size asked of the device; the QP caps say what it grants. */
#define RDMA_WANT_INLINE 256u
/* Outstanding READs and atomics per QP, each way (clipped to the device). */
#define RDMA_RD_ATOM 16
/*
 * Transport retries: an unanswered packet is resent after 4.096 us * 2^15 = 134 ms, 5 times, so
 * a silent peer fails outstanding operations with -ETIMEDOUT in about 0.8 s, well inside the
 * default 10 s control timeout, while TCG stalls of tens of ms cause no false failures.
 */
#define RDMA_ACK_TIMEOUT 15
#define RDMA_RETRY_COUNT 5
/* Receiver not ready: retry forever (7), so a SEND waits for the peer to post a receive. */
#define RDMA_RNR_RETRY 7
/* Address and route resolution bound, per attempt. */
#define RDMA_RESOLVE_MS 2000
/* Connection requests held for an endpoint the local node has not made yet. */
#define RDMA_MAX_PENDING 64u
/* First retry delay of a refused active connect, doubled up to RDMA_BACKOFF_MAX_MS. */
#define RDMA_BACKOFF_MS 20u
#define RDMA_BACKOFF_MAX_MS 500u
/* How soon the passive side of a broken connection asks the peer again whether it still has the
 * endpoint, after it said it had. */
#define RDMA_REPROBE_MS 100u
/* A first handshake under way when ep_new's wait ends is given this long more (rdma_ep_finish). */
#define RDMA_MIDWAY_GRACE_MS 500u
/* fabric_close waits this long at most for peers to acknowledge its goodbye. */
#define RDMA_BYE_MS 2000u
/* ep_delete waits this long at most for the CM thread to destroy the endpoint's queue pairs. */
#define RDMA_TEARDOWN_MS 5000u
/* The CM thread wakes at least this often to run its timers. */
#define RDMA_TICK_MS 1000

/* Connection private data: see rdma_cm.c for the layout. 56 bytes fit an RC connect request. */
/* 56: the most a CONNECT_REQUEST carries over rdma_cm's IP port space (92 bytes of IB CM REQ
 * private data less its 36-byte header; rdma_connect(3)). Bytes 40-55 authenticate it. */
#define RDMA_PDATA_LEN 56u
#define RDMA_PDATA_MAGIC 0x52484f43u /* "COHR" */
#define RDMA_PDATA_VERSION 2u	     /* 2: the cluster secret's MAC */
#define RDMA_PDATA_MAC_OFF 44u
#define RDMA_PDATA_MAC_LEN 8u /* HMAC-SHA256, truncated (RFC 2104 section 5) */
#define RDMA_AUTH_SKEW_S 300u /* a request's clock may be this far from the receiver's */

enum rdma_pdata_type {
	RDMA_MSG_CONNECT = 1, /* request: make (or replace) the connection of an endpoint */
	RDMA_MSG_ACCEPT,      /* accept: the answer to CONNECT */
	RDMA_MSG_REFUSE,      /* reject: CONNECT refused, @reason says why */
	RDMA_MSG_PROBE,	      /* request: are you alive, do you still have this endpoint? */
	RDMA_MSG_PROBE_REPLY, /* reject: the answer to PROBE */
	RDMA_MSG_BYE,	      /* request: this incarnation is leaving */
	RDMA_MSG_BYE_REPLY,   /* reject: the answer to BYE */
};

#define RDMA_PDATA_F_REPLACE 0x1u /* CONNECT: the sender had this endpoint up before */
#define RDMA_PDATA_F_HAS_EP 0x1u  /* PROBE_REPLY: the endpoint exists and is not down */
#define RDMA_PDATA_F_AUTH 0x80u	  /* any: the sender has a cluster secret; bytes 40-51 prove it */

/* struct rdma_pdata - private data of a connection message, decoded. */
struct rdma_pdata {
	uint8_t type;
	uint8_t flags;
	uint8_t channel;
	uint32_t node;	     /* sender */
	uint32_t target;     /* intended receiver */
	uint64_t inc;	     /* sender's incarnation */
	uint64_t target_inc; /* receiver's incarnation as the sender knows it; 0 when unknown */
	uint32_t max_msg;
	int32_t reason; /* REFUSE: a positive errno */
	uint32_t ts;	/* seconds of the sender's clock, when authenticated */
	uint8_t mac[RDMA_PDATA_MAC_LEN];
};

/* What an rdma_cm_id's context points to: the first member of a connection or a probe. */
enum rdma_ctx_kind {
	RDMA_CTX_CONN = 1,
	RDMA_CTX_PROBE,
};

struct rdma_ctx {
	enum rdma_ctx_kind kind;
	struct rdma_ctx *next_dead; /* on rdma_fabric.graveyard */
};

enum rdma_role {
	RDMA_ROLE_ACTIVE = 1,
	RDMA_ROLE_PASSIVE,
};

/*
 * struct rdma_conn - one RC queue pair and its rdma_cm_id.
 * @owner: the endpoint it was made for, kept (for teardown) after it is disowned
 * @ep: the endpoint while it owns it; NULL once it is in the graveyard or being torn down
 * @dead: set (under rdma_fabric.lock) when its owner let go: CM events for it are ignored
 * @established: the CM reported ESTABLISHED
 * @outstanding: work requests posted on it whose completion has not been taken (rdma_ep.lock);
 *               a retired connection is destroyed only when this is 0, so that no slot points
 *               to a freed connection
 * @rposted: how many of those are receives (rdma_ep.lock)
 */
struct rdma_conn {
	struct rdma_ctx ctx;
	struct rdma_ep *owner;
	struct rdma_ep *ep;
	struct rdma_cm_id *id;
	struct ibv_qp *qp;
	struct ibv_qp_ex *qpx;
	enum rdma_role role;
	bool established;
	bool dead;
	uint32_t outstanding;
	uint32_t rposted;
	struct rdma_conn *next;		      /* on rdma_ep.retired */
	uint8_t sent_mac[RDMA_PDATA_MAC_LEN]; /* active: of the CONNECT, which the accept covers */
};

/*
 * struct rdma_probe - a short-lived connect request that is always rejected: PROBE asks a peer
 * whether it is alive and still has an endpoint; BYE tells it that this incarnation leaves.
 * Guarded by rdma_fabric.lock.
 */
struct rdma_probe {
	struct rdma_ctx ctx;
	struct rdma_probe *next;
	struct rdma_cm_id *id;
	uint8_t type;
	uint32_t peer;
	uint32_t channel;
	uint64_t peer_inc;
	uint64_t deadline;
	bool done;
	uint8_t sent_mac[RDMA_PDATA_MAC_LEN]; /* of the request: the answer's MAC covers it */
};

/* A connection request held until the local node makes the matching endpoint. */
struct rdma_pending {
	struct rdma_cm_id *id;
	struct rdma_pdata req;
	uint8_t resp_res, init_depth;
	uint64_t expires;
};

enum rdma_ep_state {
	RDMA_EP_CONNECTING = 1, /* ep_new is waiting for the first connection */
	RDMA_EP_UP,
	RDMA_EP_RECONNECTING, /* a connection failed; its replacement is being made */
	RDMA_EP_DOWN,	      /* failed for good: everything completes with -ECONNRESET */
};

/* What the CM thread does for an endpoint. */
enum rdma_phase {
	RDMA_PH_IDLE = 0,  /* nothing scheduled */
	RDMA_PH_CONNECT,   /* an active attempt (rdma_ep.attempt) is in flight */
	RDMA_PH_BACKOFF,   /* the next active attempt starts at rdma_ep.retry_at */
	RDMA_PH_WAIT_PEER, /* passive: waiting for the peer to connect (again) */
};

enum rdma_slot_state {
	RDMA_SLOT_FREE = 0,
	RDMA_SLOT_POSTED, /* on @conn's queue pair */
	RDMA_SLOT_PARKED, /* waiting for the replacement connection */
	RDMA_SLOT_HELD,	  /* failed with a remote access error; reported once re-establishment
			   * tells a revoked key (-EACCES) from a dying peer (-ECONNRESET) */
	RDMA_SLOT_DONE,	  /* its completion is on a software list, not yet taken */
};

/*
 * struct rdma_slot - one outstanding work request; the verbs wr_id points to it. There are
 * max_send_wr (max_recv_wr) of them per endpoint, which is how -EAGAIN is enforced. It keeps the
 * whole operation, so that one posted while the connection is being replaced (or a receive
 * flushed from the failed connection) can be posted again on the new one, in posting order
 * (@seq). Guarded by rdma_ep.lock.
 */
struct rdma_slot {
	struct rdma_ep *ep;
	struct rdma_conn *conn;
	uint64_t wr_id;
	uint64_t seq;
	uint8_t opcode;	    /* enum coh_wc_opcode */
	uint8_t state;	    /* enum rdma_slot_state */
	struct rdma_mr *mr; /* local region; NULL for FLUSH */
	uint64_t laddr;
	uint32_t len;
	uint32_t rkey;
	uint64_t raddr;
	uint64_t compare, swap;
};

/*
 * struct rdma_ep - an endpoint: one RC connection to a peer, or two (active and passive) to the
 * node itself for a loopback endpoint, where sends go out on the active QP and arrive on the
 * passive one.
 *
 * Set at creation, read-only after: @fab, @attr, @scq, @rcq, @peer_addr, @loopback, @need_act,
 * @need_pas.
 * rdma_fabric.lock: @next, @phase, @attempt, @peer_inc, @retry_at, @backoff_ms, @deadline,
 *                   @ever_up, @result, @dying.
 * rdma_fabric.lock and rdma_ep.lock: @retired.
 * rdma_fabric.lock and rdma_ep.lock to write, either to read: @act, @pas, @conn_gen.
 * rdma_ep.lock: the slots, free stacks and @seq.
 * Atomic: @state (written under rdma_ep.lock), @kick.
 */
struct rdma_ep {
	struct coh_ep base;
	struct rdma_fabric *fab;
	struct coh_ep_attr attr;
	struct rdma_cq *scq, *rcq;
	struct sockaddr_storage peer_addr;
	bool loopback, need_act, need_pas;

	struct rdma_ep *next;
	enum rdma_phase phase;
	struct rdma_conn *attempt;
	struct rdma_conn *retired;
	uint64_t peer_inc;
	uint64_t retry_at;
	uint32_t backoff_ms;
	uint64_t deadline; /* re-establishment gives up (peer down) at this time; 0: none */
	uint64_t probe_at; /* passive side: ask the peer again at this time; 0: none */
	bool ever_up;
	int result;	/* first connection's outcome, for ep_new */
	uint32_t dying; /* ep_delete: connections the CM thread has still to destroy */

	struct rdma_conn *act, *pas;
	uint32_t conn_gen;

	pthread_mutex_t lock;
	struct rdma_slot *sslots, *rslots;
	uint32_t *sfree, *rfree;
	uint32_t nsfree, nrfree;
	uint64_t seq;

	atomic_int state;
	atomic_uint kick; /* conn_gen + 1 of connections the poller saw fail; 0: none */
};

/* struct rdma_mr - a registered region. @mr changes on rekey (the owner's thread). A persistent
 * region (@pmem) registers part of a libpmem2 mapping (@pm); @unlink_path is its file when the
 * provider chose the name (NULL path), which delete removes. */
struct rdma_mr {
	struct coh_mr base;
	struct ibv_mr *mr;
	bool owned;
	size_t map_len;
	bool pmem;
	struct pmem_map pm;
	char *unlink_path;
};

struct rdma_rmr {
	struct coh_rmr base;
};

/* A software completion: @slot is freed when it is taken (NULL once its endpoint is gone). */
struct rdma_swc {
	struct coh_wc wc;
	struct rdma_slot *slot;
};

/*
 * struct rdma_cq - a completion queue. The verbs CQ and @armed belong to the queue's
 * serialisation domain. The software list (completions made without the device: access and
 * bounds violations, posts to a failed endpoint) is guarded by @sw_lock, because the CM thread
 * adds to it too; @sw_pending mirrors its count for a lock-free check, and @wake_fd wakes a
 * sleeper when another thread adds.
 */
struct rdma_cq {
	struct coh_cq base;
	struct rdma_fabric *fab;
	struct ibv_comp_channel *ch;
	struct ibv_cq *cq;
	uint32_t hw_depth;
	bool armed;
	int wake_fd;
	pthread_mutex_t sw_lock;
	struct rdma_swc *sw;
	uint32_t sw_cap, sw_head, sw_count;
	atomic_uint sw_pending;
};

/*
 * struct rdma_fabric - a node's rdma fabric.
 * Read-only after open: everything down to @numa_node.
 * @lock (with @cond, signalled on every endpoint state change and probe completion) guards the
 * rest except the atomics.
 */
struct rdma_fabric {
	struct coh_fabric base;
	char *cluster;
	struct sockaddr_storage addr;
	struct rdma_event_channel *ech;
	struct rdma_cm_id *listen_id;
	struct ibv_context *verbs;
	struct ibv_pd *pd;
	struct ibv_mr *sink_mr; /* target of emulated FLUSH reads */
	uint64_t sink[8];
	uint64_t incarnation;
	bool native_flush;
	uint32_t max_inline, max_cqe, max_qp_wr;
	uint8_t rd_atom, init_rd_atom;
	int numa_node;
	char device[64];
	int wake_fd; /* eventfd: wakes the CM thread */
	pthread_t cm_thread;
	bool cm_started;
	atomic_bool stop;
	atomic_uint next_region;
	atomic_uint next_pmem; /* names persistent regions' files in the default place */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rdma_ep *eps;
	struct rdma_pending pending[RDMA_MAX_PENDING];
	uint32_t n_pending;
	struct rdma_probe *probes;
	struct rdma_ctx *graveyard; /* connections and probes to destroy, by the CM thread */
	uint64_t known;		    /* peers connected in this incarnation, told BYE at close */
	int bye;		    /* 1: fabric_close asks for the goodbye; 2: it was sent */
	uint64_t peer_inc[COH_FABRIC_MAX_NODES];    /* their incarnation */
	uint64_t down_inc[COH_FABRIC_MAX_NODES];    /* incarnation already reported down */
	uint64_t auth_logged[COH_FABRIC_MAX_NODES]; /* incarnation refused for its secret, logged */
	uint64_t
	    auth_refused_ms[COH_FABRIC_MAX_NODES]; /* when; 0 once one of its requests passes */
};

/* rdma_ep_sq - the connection sends go out on (loopback: the active half). */
static inline struct rdma_conn *rdma_ep_sq(const struct rdma_ep *ep)
{
	return ep->loopback || ep->act ? ep->act : ep->pas;
}

/* rdma_ep_rq - the connection receives are posted on (loopback: the passive half). */
static inline struct rdma_conn *rdma_ep_rq(const struct rdma_ep *ep)
{
	return ep->loopback || !ep->act ? ep->pas : ep->act;
}

/* rdma.c */
extern const struct coh_fabric_ops rdma_ops;
void rdma_wake(struct rdma_fabric *fab);
uint64_t rdma_send_ops(const struct rdma_fabric *fab);
int rdma_peer_addr(struct rdma_fabric *fab, uint32_t node, struct sockaddr_storage *ss);

/* rdma_now_ms - monotonic milliseconds. */
static inline uint64_t rdma_now_ms(void)
{
	return verbs_now_ns() / 1000000ull;
}

/* How a connection attempt or a probe ended. */
enum rdma_outcome {
	RDMA_RETRY = 1, /* transient: try again while the deadline allows */
	RDMA_ALIVE,	/* probe: the peer is alive and still has the endpoint */
	RDMA_GONE,	/* the peer (this incarnation of it) is gone */
	RDMA_NO_EP,	/* the peer is alive but no longer has the endpoint */
	RDMA_FATAL,	/* the first connection cannot succeed (errno in the call) */
};

/* rdma_cm.c */
void *rdma_cm_main(void *arg);
void rdma_cm_goodbye(struct rdma_fabric *fab);
void rdma_cm_release(struct rdma_fabric *fab);
void rdma_probe_start(struct rdma_fabric *fab, uint8_t type, uint32_t peer, uint32_t channel,
		      uint64_t peer_inc, uint32_t timeout_ms);

/* rdma_ep.c */
int rdma_ep_new(struct coh_fabric *fab, const struct coh_ep_attr *attr, struct coh_ep **epp);
int rdma_ep_new_many(struct coh_fabric *fab, const struct coh_ep_attr *attrs, uint32_t n,
		     struct coh_ep **eps);
int rdma_ep_delete(struct coh_ep *ep);
bool rdma_ep_is_up(const struct coh_ep *ep);
uint64_t rdma_ep_peer_inc(const struct coh_ep *ep);
struct rdma_ep *rdma_find_ep(struct rdma_fabric *fab, uint32_t peer, uint32_t channel);
void rdma_bury(struct rdma_fabric *fab, struct rdma_ctx *ctx);
void rdma_conn_bury(struct rdma_fabric *fab, struct rdma_conn *c);
void rdma_id_bury(struct rdma_fabric *fab, struct rdma_cm_id *id);
void rdma_conn_release(struct rdma_conn *c);
void rdma_id_tune(struct rdma_fabric *fab, struct rdma_cm_id *id);
struct rdma_conn *rdma_conn_new(struct rdma_ep *ep, enum rdma_role role);
int rdma_conn_qp(struct rdma_fabric *fab, struct rdma_ep *ep, struct rdma_conn *c);
void rdma_conn_retire(struct rdma_ep *ep, struct rdma_conn *c);
void rdma_ep_fail_first(struct rdma_fabric *fab, struct rdma_ep *ep, int err);
void rdma_ep_down(struct rdma_fabric *fab, struct rdma_ep *ep, const char *why);
void rdma_peer_gone(struct rdma_fabric *fab, uint32_t peer, uint64_t inc, const char *why);
void rdma_attempt_start(struct rdma_fabric *fab, struct rdma_ep *ep);
void rdma_attempt_failed(struct rdma_fabric *fab, struct rdma_ep *ep, enum rdma_outcome outcome,
			 int err, const char *why);
/* rdma_conn_break - @why is logged; @orderly (the peer disconnected) at INFO, not WARN. */
void rdma_conn_break(struct rdma_fabric *fab, struct rdma_ep *ep, const char *why, bool orderly);
void rdma_ep_check_up(struct rdma_fabric *fab, struct rdma_ep *ep);

/* rdma_io.c */
int rdma_post(struct coh_ep *ep, const struct coh_op *op);
int rdma_post_recv(struct coh_ep *ep, struct coh_mr *mr, size_t off, size_t len, uint64_t wr_id);
int rdma_cq_poll(struct coh_cq *cq, struct coh_wc *wc, int max);
int rdma_cq_sleep(struct coh_cq *cq, int timeout_ms);
void rdma_cq_wake(struct coh_cq *cq);
int rdma_slots_init(struct rdma_ep *ep);
void rdma_slots_fini(struct rdma_ep *ep);
void rdma_ep_repost(struct rdma_ep *ep);
void rdma_ep_fail_parked(struct rdma_ep *ep);
void rdma_ep_release_held(struct rdma_ep *ep, int status);
void rdma_ep_drain(struct rdma_ep *ep);

#endif /* COHORT_RDMA_INTERNAL_H */
