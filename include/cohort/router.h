/*
 * router.h - any controller serves any volume (issue 16): a command submitted at a controller
 * goes to the engines that hold its data, by the mapping table (route.h), this controller's own
 * engines and its forwarder (forward.h).
 *
 * - A command on a logical volume runs on this controller's engine for the volume's group when
 *   it is an AMF of the group; otherwise it is forwarded to the target coh_map_target picks, and
 *   its status relayed.
 * - A command on a virtual volume runs at the volume's coordinator, the lowest live controller
 *   (forwarded there whole when that is another one). The coordinator gets the command a grant
 *   on its range from its coordination table (conflict detection: overlapping commands on a
 *   virtual volume apply one after the other, from whichever controller they came), splits it
 *   into component commands, runs each on its group's AMF (here or forwarded) in parallel, and
 *   answers with the aggregate status (the error of the lowest failing block, and the blocks
 *   done whole before it).
 * - A forwarded command whose target the fabric proves dead is routed again (the next live
 *   AMF, or the next coordinator), a bounded number of times. The new target's engine waits for
 *   the takeover of the dead one before it serves the blocks, so a retried write lands after
 *   whatever of the dead one's log the takeover replays. A broken connection the fabric cannot
 *   prove a death (rdma, forward.h: -ECONNABORTED) fails the command, unless the caller gives
 *   the groups' views (group_view): then it waits, bounded, until the target's group's view
 *   (a coordinator: every group's) excludes it, and is routed again; and every controller
 *   refuses commands from a controller a group has excluded.
 *
 * Consumer tier. Threads: coh_route_submit from any thread; completions run on an engine's or
 * the forwarder's thread. The group engines are given as submit functions (coh_node_submit on a
 * node whose blocks are the group's).
 *
 * - A compare-and-write (COH_IO_COMPARE_WRITE, @buf the compare data then the write data) runs
 *   on one group's engine, atomic across the cluster as the engine's is: its range must lie in
 *   one component (a logical volume, or one chunk of a stripe; -EINVAL otherwise), and 2 x
 *   @nblocks at most the forwarder's max_blocks. A miscompare is -EILSEQ with the byte offset
 *   in coh_map_status.miscompare. Routed again after a proven death like a write: if the dead
 *   target had done it, the retry miscompares against its own write data.
 *
 * Leaves out: a command on a virtual volume
 * longer than the forwarder's max_blocks (it is applied whole only up to that length: -EINVAL),
 * changes of groups online (only volumes are added, grown and deleted), a coordinator's death
 * while it holds a grant (its components may have been applied in part: the retry at the next
 * coordinator writes the whole command again). A table change is Paxos over the next version
 * (docs/routing.md, "Online changes"); two tables of one version that come from outside it (a
 * table file restored or copied) are refused where they meet (-ENOTUNIQ), and the volumes they
 * disagree on are refused meanwhile (-ENOTUNIQ from coh_route_submit).
 */
#ifndef COHORT_ROUTER_H
#define COHORT_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "cohort/forward.h"
#include "cohort/node.h"
#include "cohort/route.h"

#ifdef __cplusplus
extern "C" {
#endif

struct coh_route;

/** A command on a volume of the mapping table. */
struct coh_route_io {
	uint32_t type;	  /* COH_IO_READ, _WRITE, _FLUSH or _COMPARE_WRITE (enum coh_io_type) */
	uint32_t volume;  /* its index in the table; a flush flushes every group */
	uint64_t lba;	  /* in the volume */
	uint32_t nblocks; /* 0 for a flush */
	void *buf;
	/* Called exactly once: @st->status 0 or -errno; on an error @st->fail_block and @st->good
	 * (the blocks done whole before it). */
	void (*done)(struct coh_route_io *rio, const struct coh_map_status *st);
	void *arg;
	void *priv; /* the router's */
	/* Optional: the volume's id (route.h). When not all zero the command is on the volume
	 * with this id, @volume only a hint, and a volume deleted by a table change gets -ENXIO
	 * instead of another volume that took its index. */
	uint8_t volume_id[COH_MAP_ID_BYTES];
};

struct coh_route_attr {
	size_t attr_size;	   /* sizeof(struct coh_route_attr) */
	const struct coh_map *map; /* checked and copied */
	struct coh_fabric *fab;	   /* node ids are controllers; the forwarder's fabric */
	struct coh_fwd_attr fwd;   /* the forwarder's options; fab, nodes, block_size, execute
				     * are set by the router */
	/* This controller's engine for group g, when it is an AMF of g: submit @io (its @lba is the
	 * group's block) with the engine's contract (coh_node_submit's). */
	int (*group_submit[COH_MAP_MAX_GROUPS])(void *arg, struct coh_io *io);
	void *group_arg[COH_MAP_MAX_GROUPS];
	/* Optional, beside group_submit[g]: read the group's block @lba at once if the engine can
	 * without waiting (coh_node_read_cached, with group_arg[g]), else -EAGAIN. A one-block read
	 * forwarded here is answered with it on the forwarder's thread, no engine thread woken (a
	 * hand-off less on the forwarded read's path); anything else is submitted. */
	int (*group_read_cached[COH_MAP_MAX_GROUPS])(void *arg, uint64_t lba, void *buf);
	uint32_t retries;	   /* routes again after a target's death; 0: 4 */
	uint32_t coord_timeout_ms; /* a held command's bound; 0: 30 s */
	uint32_t max_ops;	   /* router commands in flight, submitted and forwarded; 0: 256 */
	/* Where this controller keeps the table (coh_map_save's two-slot file), or NULL (not
	 * kept: a restart starts from @map again). At the start the newer of @map and the kept
	 * table is used (the kept one must have @map's controllers, block size and groups), and
	 * every table adopted later is kept there before it is used. */
	const char *map_path;
	/* Optional: group @g's current view on this controller (its members, a mask: the group
	 * engine's coh_node_stats members), with @view_arg; every controller must be a member of
	 * every group's cluster (as cohortd runs them). With it, a command whose target's
	 * connection broke without proof of its death (-ECONNABORTED: rdma) waits until the
	 * group's view no longer has the target (a coordinator: every group's; excluded, so
	 * fenced, and its log taken over: what it did is in the survivors' hands), then is routed
	 * again, like a proven death's; past @reroute_wait_ms it fails with -ECONNABORTED as
	 * without it. And a command from a controller that a group it touches has excluded is
	 * refused (-EACCES), so nothing the excluded one sends late lands after a retry. */
	uint32_t (*group_view)(void *view_arg, uint32_t g);
	void *view_arg;
	uint32_t reroute_wait_ms; /* 0: 8 s (below a host's command timeout) */
	/* Optional: who holds the lock of group @g's block @gblock now, as this controller's
	 * engine of the group reads its directory (coh_node_lock_holders, with @view_arg; this
	 * controller a member of the group's cluster). With it, a command this controller is not
	 * an AMF for goes to the AMF that holds the lock of its first block (exclusive, or shared
	 * when no one holds it exclusive; the preferred AMF first among sharers), so the AMFs do
	 * not take the lock from each other (no lock ping-pong); without it, or when no live AMF
	 * holds it, to the group's preferred AMF. Asked only when the group has two live AMFs or
	 * more, and not on the forwarder's thread (a coordinator's components of a forwarded command:
	 * that thread must not wait). Returns 0 or -errno (then the preferred AMF). */
	int (*group_holders)(void *view_arg, uint32_t g, uint64_t gblock, uint32_t *owner,
			     uint32_t *sharers);
};

/**
 * coh_route_new - start a router (and its forwarder: every controller calls it; bounded).
 * Returns 0, -EINVAL (attributes, a table that does not pass coh_map_check, an engine missing
 * for a group this controller is an AMF of), or the forwarder's error.
 */
int coh_route_new(const struct coh_route_attr *attr, struct coh_route **rp);

/** coh_route_delete - stop: the forwarder first (commands it sent end with -ESHUTDOWN). */
void coh_route_delete(struct coh_route **rp);

/**
 * coh_route_submit - run @rio. 0: accepted, its callback will run exactly once. -EINVAL (a bad
 * command, a volume that does not exist, a range past its end; a compare-and-write across
 * components, or longer than half of max_blocks); -ENXIO (a volume a change deleted);
 * -ENOTUNIQ (a volume two tables of one version disagree on: fenced); -EBUSY (max_ops in
 * flight); -ESHUTDOWN.
 */
int coh_route_submit(struct coh_route *r, struct coh_route_io *rio);

/**
 * coh_route_map_change - make @next the cluster's table, online (any controller may ask; the
 * configuration controller, the lowest live one, connected and in every group's view, makes it):
 * @next->version must be the current version + 1 and coh_map_compatible with the current table
 * (coh_map_add, coh_map_grow and coh_map_remove make such a table). Commands already running finish
 * under the table they started with; those after run under @next; a command forwarded across the
 * switch is matched by its volume's id, and one whose volume or range the two tables do not share
 * gets -ESTALE (the host tries again). Returns 0 once a majority of the controllers keep @next
 * (each in its map_path before it uses it); -ESTALE (not the next version), -EINVAL (@next may not
 * replace the table: @err says why), -EAGAIN (no majority up, or a controller has a newer table:
 * ask again), -EBUSY (another change ran) or -EREMOTE (the controllers disagreed on whose role it
 * is), each throughout a forwarder timeout (asked again until then, backing off), -ETIMEDOUT or the
 * forwarder's error; @err says what happened. Waits, bounded by a few forwarder timeouts: call it
 * from a thread of the caller's, not from a completion.
 */
int coh_route_map_change(struct coh_route *r, const struct coh_map *next, char *err, size_t errlen);

/** coh_route_map - a copy of this controller's current table. */
int coh_route_map(struct coh_route *r, struct coh_map *out);

/** Counters. */
struct coh_route_stats {
	uint64_t local, forwarded, components, rerouted, coord_held, executed_for_others;
	uint64_t map_version;	   /* the current table's */
	uint64_t map_changes;	   /* tables adopted since the start */
	uint64_t map_conflicts;	   /* tables of this version that were not this one (refused) */
	uint64_t waited_views;	   /* components that waited for a view to exclude their target */
	uint64_t refused_fenced;   /* commands refused: their origin out of a group's view */
	uint64_t to_holder;	   /* forwarded to an AMF that held the lock, not the preferred */
	uint64_t read_cached;	   /* forwarded reads answered from the cache on the forwarder's
				    thread (group_read_cached) */
	uint64_t refused_conflict; /* commands refused (-ENOTUNIQ) on a volume a conflict fences */
	uint32_t conflict_peers;   /* peers whose table this one conflicts with, now (a mask) */
	uint64_t changes_busy;	   /* changes asked here, as the configuration controller, while
				      another ran (-EBUSY; the asker asks again) */
};
void coh_route_stats(struct coh_route *r, struct coh_route_stats *st);

/** coh_route_forwarder - the router's forwarder (its counters, coh_fwd_up). */
struct coh_fwd *coh_route_forwarder(struct coh_route *r);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_ROUTER_H */
