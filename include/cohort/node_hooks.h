/*
 * node_hooks.h - the engine tier of the node API: hooks through which tests and tracing watch a
 * node's named steps, stop it at one, or lose one of its messages. A front end or an application
 * never needs this header (include/cohort/node.h is theirs); the crash trials and the scenario
 * tests of each protocol race do.
 *
 * The points are enum coh_crash_point (node.h): the write path, the coherence protocol's steps
 * and the view change's. A node reaches a point on whatever thread does that step (an
 * application thread, the cache's service thread, the membership thread).
 */
#ifndef COHORT_NODE_HOOKS_H
#define COHORT_NODE_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/node.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Points that are about one control message rather than a step: @detail is the message type
 * (enum of the control channel: 3 FLUSHED, 4 READY, 6 CLEARED, 8 ZEROED, 7 re-keyed descriptor)
 * << 8 | the peer it is for. A hook that returns COH_POINT_DROP there loses that message (as a
 * partition or a death part-way through a broadcast would).
 */
#define COH_POINT_CTL_SEND 64u
#define COH_POINT_DROP 1

/**
 * struct coh_node_hooks - engine-tier hooks of a node (coh_node_attr.hooks).
 * @hooks_size: sizeof(struct coh_node_hooks) as the caller was built with, so that the struct
 *              can grow
 * @point: called at every point (enum coh_crash_point, or COH_POINT_CTL_SEND) with a detail
 *         (the resource for the coherence points, the epoch for the view change's, the message
 *         for COH_POINT_CTL_SEND). It may block (a test holds a node at a step) or kill the
 *         process. Returns 0, or COH_POINT_DROP at COH_POINT_CTL_SEND.
 * @arg: passed to @point and @io_state
 * @io_state: if set, called at every state change of an operation (enum coh_io_state), on the
 *            thread that makes it, before the callback for COH_IO_COMPLETE
 * @manual_engine: start no engine thread: submitted operations wait until coh_node_engine_poll
 *                 runs them, on the caller's thread (a test drives the engine step by step)
 */
struct coh_node_hooks {
	size_t hooks_size;
	int (*point)(void *arg, uint32_t point, uint64_t detail);
	void *arg;
	void (*io_state)(void *arg, const struct coh_io *io, uint32_t state);
	bool manual_engine;
};

/**
 * coh_node_engine_poll - with @manual_engine: run up to @max queued operations to completion,
 * callbacks included, on this thread, oldest first. Returns how many ran, or -EINVAL (not a
 * manual engine).
 */
int coh_node_engine_poll(struct coh_node *n, uint32_t max);

/** coh_node_current_io - the operation this thread is executing for a node, or NULL (for a
 * point hook that wants to know whose step it is). */
const struct coh_io *coh_node_current_io(void);

/**
 * coh_node_fail_element - element @idx of the redundancy group is missing for this node from now
 * on, as an I/O error on it would make it (a test's way to fail one node's path to an element).
 * The node tells the others, and hands no lock on until each has marked it missing too. Returns
 * 0 or -EINVAL.
 */
int coh_node_fail_element(struct coh_node *n, uint32_t idx);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_NODE_HOOKS_H */
