/*
 * membership_internal.h - what the membership thread (membership.c: transport, events, agreement,
 * the log regions a node hosts) and the view change it runs (viewchange.c: the steps after a
 * death) share. Internal to the engine.
 */
#ifndef COHORT_ENGINE_MEMBERSHIP_INTERNAL_H
#define COHORT_ENGINE_MEMBERSHIP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "node_internal.h"

#define CH_CTL 240u
#define CH_LOG 241u
#define CTL_RECVS 16u

/*
 * struct memb - a node's membership state. Owned by the membership thread (and open/close),
 * except @stop.
 */
struct memb {
	struct coh_cq *cq;
	struct coh_ep *ep[NODE_MAX];
	struct coh_mr *buf; /* receive slots per peer, then one send slot */
	pthread_t thread;
	bool started;
	_Atomic bool stop;
	/* what each peer said last */
	uint32_t view_epoch[NODE_MAX], view_members[NODE_MAX];
	uint32_t view_cepoch[NODE_MAX], view_cmembers[NODE_MAX]; /* its last committed view */
	uint32_t flushed[NODE_MAX], ready[NODE_MAX], cleared[NODE_MAX], zeroed[NODE_MAX];
	uint32_t hosts_of[NODE_MAX]; /* with FLUSHED: the dead writers whose log it holds */
	uint32_t quiesced[NODE_MAX]; /* the formation epoch it last said CTL_QUIESCED for */
	uint32_t desc_epoch[NODE_MAX];
	struct coh_mr_desc desc[NODE_MAX];
	uint32_t cdesc_epoch[NODE_MAX][COH_CACHE_DESCS];
	struct coh_mr_desc cdesc[NODE_MAX][COH_CACHE_DESCS];
	uint32_t dead;	 /* peers known gone (events, goodbyes, silence) */
	uint32_t bye;	 /* of which said goodbye (an orderly leave, not a failure) */
	uint32_t proven; /* of which are known to have stopped (their process is gone, or a bye) */
	uint32_t replayed; /* dead nodes whose takeover finished in a round of this view change */
	bool peer_down_proven; /* the fabric's PEER_DOWN says the process is gone */
	/* What each node said at open (recovery.c): its CTL_STATE, and its CTL_COPYs by writer. */
	struct node_state said[NODE_MAX];
	uint32_t said_state; /* bitmap: CTL_STATE received */
	uint32_t copy_gen[NODE_MAX][NODE_MAX], copy_live[NODE_MAX][NODE_MAX];
	uint32_t copy_bad[NODE_MAX][NODE_MAX]; /* records found corrupt in it */
	uint32_t copies[NODE_MAX]; /* by node: the writers it hosts a copy of (its last STATE's) */
	uint32_t copies_next[NODE_MAX]; /* COPYs received since its last STATE */
	uint32_t said_tag[NODE_MAX]; /* the exchange its last STATE belongs to (formation epoch) */
	uint32_t recovered[NODE_MAX], rzeroed[NODE_MAX]; /* the recovery's barriers, by epoch */
	uint64_t down_ns;
	/*
	 * Connections (membership.c): @conn has a live control endpoint, by peer. A configured node
	 * without one is tried again at @next_try_ns: often while this node forms a cluster, now
	 * and then while it serves (a node that restarts must find a way in).
	 */
	uint32_t conn;
	uint16_t conn_gen[NODE_MAX]; /* in each receive's wr_id: a completion of an endpoint since
					replaced is left alone */
	uint64_t next_try_ns[NODE_MAX];
	uint8_t conn_slow[NODE_MAX]; /* handshakes to each peer that timed out in a row: each
					doubles the next one's wait (memb_connect_wait) */
	uint64_t waiting_log_ns;     /* when "waiting for nodes ..." was last logged */
	uint64_t jitter;	     /* xorshift state of memb_jitter */
	uint64_t forming_since_ns;
	/* What each peer said of itself (CTL_HELLO, after its STATE and COPYs): the view it serves,
	 * epoch 0 when it serves none. */
	uint32_t hello_epoch[NODE_MAX], hello_members[NODE_MAX];
	uint32_t hello_seen;
	uint32_t joiners;      /* connected non-members that asked to be admitted (CTL_JOIN) */
	uint64_t join_sent_ns; /* when this node last asked every serving node it knows */
	uint32_t join_asked;   /* the serving nodes asked since then */
	/* Formation (formation.c): the proposal each node last made or echoed, and this node's. */
	uint32_t form_epoch[NODE_MAX], form_members[NODE_MAX];
	uint32_t form_cur_epoch, form_cur_members;
	uint64_t form_since_ns;
	/* Draining (node.c, coh_node_close): the epoch each node said it drained for. */
	uint32_t drained[NODE_MAX];
	uint32_t drain_asked, drain_epoch[NODE_MAX]; /* who asked this node to drain, for when */
	_Atomic bool leave_req; /* coh_node_close: leave (memb_leave), then stop */
	_Atomic bool stop_req;	/* coh_node_stop_cluster */
	bool stop_done;		/* under state_lock */
	int stop_ret;
	uint32_t drain_stop; /* of drain_asked: stop serving too (a cluster stop) */
	bool left;	     /* under the node's state_lock: memb_leave is done */
	int leave_ret;
	/* Missing elements (memb_elems): the set each node said it has (CTL_ELEM) and the set it
	 * acknowledged having taken from this node (CTL_ELEM_ACK), who asked since the last pass,
	 * and when this node may tell each again. */
	uint32_t elem_said[NODE_MAX], elem_acked[NODE_MAX];
	uint32_t elem_asked;
	uint64_t elem_next_ms[NODE_MAX];
};

/* membership.c */
void memb_send(struct coh_node *n, uint32_t p, struct ctl_msg *m);
/* memb_elems_take - mark missing here every element of @set (what node @from has missing). */
void memb_elems_take(struct coh_node *n, uint32_t from, uint32_t set);
void memb_broadcast(struct coh_node *n, uint32_t to, uint8_t type, uint32_t epoch,
		    uint32_t members);
void memb_set_lease_members(struct coh_node *n, uint32_t members);
void memb_pump(struct coh_node *n, int timeout_ms);
/* memb_wait_until - pump until @done says so, a member of @members dies (-EAGAIN), a newer view
 * is proposed (-EAGAIN), or the bound passes (-ETIMEDOUT). */
int memb_wait_until(struct coh_node *n, uint32_t epoch, uint32_t members,
		    bool (*done)(struct coh_node *n, uint32_t epoch, uint32_t members),
		    uint64_t bound_ms);
uint32_t memb_others(const struct coh_node *n, uint32_t members);
bool memb_all_reached(struct coh_node *n, const uint32_t *said, uint32_t epoch, uint32_t members,
		      bool exact);
int memb_agree(struct coh_node *n, uint32_t *epoch, uint32_t *members);

/* membership.c: connections and what the peers said of themselves. */
int memb_connect(struct coh_node *n, uint32_t p, int timeout_ms);
int memb_stop_cluster(struct coh_node *n, int timeout_ms);
void memb_hello(struct coh_node *n, uint32_t to);
/* memb_hello_stopped - tell every connected node that this one serves nothing now (a HELLO
 * with its epoch and no members). A node that heard it serve (the HELLO after a formation)
 * takes it for a serving cluster and asks it to admit it rather than form one with it: two
 * survivors of a lost majority, still connected, would each wait for the other to admit them,
 * for ever (the test lifecycle.majority_lost_and_regained). Membership thread. */
void memb_hello_stopped(struct coh_node *n);
void memb_forget(struct coh_node *n, uint32_t p);

/* recovery.c: recovery over the nodes of @members, into epoch @E; *stale_out: live records left
 * out as stale. memb_tell sends this node's STATE and COPYs to @to. rec_wait_for says which
 * absent nodes a formation of @present must wait for (see formation.c), and why in @why. */
int memb_recover(struct coh_node *n, uint32_t members, uint32_t E);
void memb_tell(struct coh_node *n, uint32_t to);
uint32_t rec_wait_for(struct coh_node *n, uint32_t present, char *why, size_t len);

/* formation.c */
void form_step(struct coh_node *n);

/* viewchange.c */
void view_change(struct coh_node *n);
void view_stop_serving(struct coh_node *n, uint32_t E, uint32_t P);
/* view_stop_excluded - a member refused this node's lease from a view without it: say so, and
 * stop serving for good in that view (lease_excluded). */
void view_stop_excluded(struct coh_node *n);

#endif /* COHORT_ENGINE_MEMBERSHIP_INTERNAL_H */
