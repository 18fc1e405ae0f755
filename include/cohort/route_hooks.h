/*
 * route_hooks.h - the engine tier of the router (router.h is the consumer's): hooks through
 * which tests watch a table change's named steps and a command's, and stop a controller at one
 * (kill it there). A front end or an application never needs this header.
 */
#ifndef COHORT_ROUTE_HOOKS_H
#define COHORT_ROUTE_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include "cohort/router.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The points of a table change (struct route_change in router.c), at the configuration
 * controller, on whatever thread runs that step (the caller's or the forwarder's). */
enum coh_route_point {
	/* a step's message is about to go to a peer: @detail is the step (1 PREPARE, 2 ACCEPT,
	 * once called SYNC and PUSH; 3 COMMIT) << 32 | the peer. Returning COH_ROUTE_DROP loses
	 * it (as a death part-way through would). */
	COH_ROUTE_POINT_CHANGE_SEND = 1,
	/* every peer answered ACCEPT, a majority accepted; this controller is about to keep the
	 * new table: @detail is its version */
	COH_ROUTE_POINT_CHANGE_ADOPT = 2,
	/* a peer answered a step's offer (before it is counted): @detail as for SEND */
	COH_ROUTE_POINT_CHANGE_ANSWER = 3,
	/* The steps of a command, on the thread that takes it there. */
	/* target: a command forwarded here is about to run (nothing of it done yet): @detail is
	 * its origin << 32 | its operation (enum coh_fwd_op) */
	COH_ROUTE_POINT_CMD_RECEIVED = 4,
	/* target: a command forwarded here is done (applied, for a write), its status not yet
	 * answered: @detail is its origin << 32 | (uint32_t)its status */
	COH_ROUTE_POINT_CMD_EXECUTED = 5,
	/* a command split into components here (a coordinator's, or a flush): one component is
	 * done, the command not yet answered: @detail is the component << 32 | (uint32_t)its
	 * status */
	COH_ROUTE_POINT_COMPONENT_DONE = 6,
	/* A peer of the change, not the configuration controller: it has kept a table it
	 * accepted (phase 2) and not yet answered: @detail is its version. */
	COH_ROUTE_POINT_CHANGE_ACCEPTED = 7,
};

#define COH_ROUTE_DROP 1

/**
 * struct coh_route_hooks - @hooks_size: sizeof as the caller was built with (it can grow);
 * @point: called at every point with its detail; it may block or kill the process. Returns 0,
 * or COH_ROUTE_DROP at COH_ROUTE_POINT_CHANGE_SEND.
 */
struct coh_route_hooks {
	size_t hooks_size;
	int (*point)(void *arg, uint32_t point, uint64_t detail);
	void *arg;
};

/** coh_route_set_hooks - install @h (copied; NULL removes them), before any change or command
 * that should see them. */
int coh_route_set_hooks(struct coh_route *r, const struct coh_route_hooks *h);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_ROUTE_HOOKS_H */
