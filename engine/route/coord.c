/*
 * coord.c - conflict detection (route.h; seed 000 claims 17-18): a table of reserved address
 * ranges, the coordination structures, and a conflict table of held requests.
 *
 * A request is granted when no reserved range and no held request overlaps it: it then reserves
 * its own range, found or allocated in one step. Otherwise it is entered in the conflict table,
 * in arrival order, and held. A release searches the conflict table: each held request that now
 * overlaps neither a reserved range nor an earlier held request is granted and notified; if none
 * is, the range is simply released. Two properties follow:
 *
 * - No deadlock: a request asks for its whole range at once and holds nothing while it waits,
 *   and a held request waits only for reserved ranges and for requests that arrived before it.
 * - No starvation: a request that overlaps a held one waits behind it even when its own range
 *   is free, so a stream of small requests cannot keep a large one waiting.
 *
 * The callbacks run after the table's lock is dropped, on the thread that released, expired or
 * deleted, so a callback may call back into the table.
 *
 * Leaves out: a table shared by several controllers (docs/routing.md); searches are linear in
 * the ranges reserved and held, which are a volume's commands in flight.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/route.h"

#define COORD_MAX 65536u

enum coord_state {
	COORD_IDLE = 0,
	COORD_HELD = 1,	   /* in the conflict table */
	COORD_GRANTED = 2, /* its range reserved */
};

struct coh_coord {
	pthread_mutex_t lock; /* everything below */
	uint32_t max_granted, max_held;
	struct coh_coord_req *granted; /* reserved ranges, newest first */
	struct coh_coord_req *held;    /* the conflict table, oldest first */
	struct coh_coord_req **held_tail;
	struct coh_coord_stats st;
};

int coh_coord_new(uint32_t max_granted, uint32_t max_held, struct coh_coord **cp)
{
	struct coh_coord *c;

	if (!cp || !max_granted || !max_held || max_granted > COORD_MAX || max_held > COORD_MAX)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->max_granted = max_granted;
	c->max_held = max_held;
	c->held_tail = &c->held;
	*cp = c;
	return 0;
}

static bool coord_overlap(const struct coh_coord_req *a, const struct coh_coord_req *b)
{
	return a->lba < b->lba + b->nblocks && b->lba < a->lba + a->nblocks;
}

/* coord_reserved - a reserved range overlapping @r, or NULL. */
static struct coh_coord_req *coord_reserved(struct coh_coord *c, const struct coh_coord_req *r)
{
	struct coh_coord_req *g;

	for (g = c->granted; g; g = g->next)
		if (coord_overlap(g, r))
			return g;
	return NULL;
}

/* coord_grant - reserve @r's range (the caller checked it is free). */
static void coord_grant(struct coh_coord *c, struct coh_coord_req *r)
{
	r->state = COORD_GRANTED;
	r->next = c->granted;
	c->granted = r;
	c->st.granted_now++;
	c->st.grants++;
}

/* coord_scan - grant, in arrival order, each held request that overlaps neither a reserved
 * range nor an earlier request still held; chain those granted on *@wake. */
static void coord_scan(struct coh_coord *c, struct coh_coord_req **wake)
{
	struct coh_coord_req **pp = &c->held, *r, *e;
	bool blocked;

	while ((r = *pp)) {
		blocked = c->st.granted_now >= c->max_granted || coord_reserved(c, r);
		for (e = c->held; !blocked && e != r; e = e->next)
			blocked = coord_overlap(e, r);
		if (blocked) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		if (c->held_tail == &r->next)
			c->held_tail = pp;
		c->st.held_now--;
		coord_grant(c, r);
		r->wake = *wake;
		*wake = r;
	}
}

/* coord_notify - run the callbacks chained on @wake (no lock held): oldest grant first. */
static void coord_notify(struct coh_coord_req *wake, int status)
{
	struct coh_coord_req *r, *rev = NULL;

	while (wake) {
		r = wake;
		wake = r->wake;
		r->wake = rev;
		rev = r;
	}
	while (rev) {
		r = rev;
		rev = r->wake;
		r->wake = NULL;
		r->granted(r, status);
	}
}

int coh_coord_request(struct coh_coord *c, struct coh_coord_req *req, uint64_t deadline_ns)
{
	struct coh_coord_req *e;
	bool conflict;
	int ret;

	if (!c || !req || !req->nblocks || !req->granted || req->lba + req->nblocks < req->lba)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (req->state != COORD_IDLE) {
		ret = -EINVAL;
		goto out;
	}
	conflict = coord_reserved(c, req) != NULL;
	for (e = c->held; !conflict && e; e = e->next)
		conflict = coord_overlap(e, req);
	if (!conflict && c->st.granted_now < c->max_granted) {
		req->wake = NULL;
		coord_grant(c, req);
		ret = 0;
		goto out;
	}
	if (c->st.held_now >= c->max_held) {
		ret = -EBUSY;
		goto out;
	}
	req->state = COORD_HELD;
	req->deadline_ns = deadline_ns;
	req->next = NULL;
	req->wake = NULL;
	*c->held_tail = req;
	c->held_tail = &req->next;
	c->st.held_now++;
	c->st.holds++;
	ret = -EINPROGRESS;
out:
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int coh_coord_release(struct coh_coord *c, struct coh_coord_req *req)
{
	struct coh_coord_req **pp, *wake = NULL;

	if (!c || !req)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	for (pp = &c->granted; *pp && *pp != req; pp = &(*pp)->next)
		;
	if (!*pp || req->state != COORD_GRANTED) {
		pthread_mutex_unlock(&c->lock);
		return -EINVAL;
	}
	*pp = req->next;
	req->next = NULL;
	req->state = COORD_IDLE;
	c->st.granted_now--;
	coord_scan(c, &wake);
	pthread_mutex_unlock(&c->lock);
	coord_notify(wake, 0);
	return 0;
}

uint32_t coh_coord_expire(struct coh_coord *c, uint64_t now_ns)
{
	struct coh_coord_req **pp, *r, *gone = NULL, *wake = NULL;
	uint32_t n = 0;

	if (!c)
		return 0;
	pthread_mutex_lock(&c->lock);
	pp = &c->held;
	while ((r = *pp)) {
		if (r->deadline_ns > now_ns) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		if (c->held_tail == &r->next)
			c->held_tail = pp;
		r->next = NULL;
		r->state = COORD_IDLE;
		c->st.held_now--;
		c->st.expired++;
		r->wake = gone;
		gone = r;
		n++;
	}
	if (n)
		coord_scan(c, &wake);
	pthread_mutex_unlock(&c->lock);
	coord_notify(gone, -ETIMEDOUT);
	coord_notify(wake, 0);
	return n;
}

void coh_coord_stats(struct coh_coord *c, struct coh_coord_stats *st)
{
	if (!c || !st)
		return;
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	pthread_mutex_unlock(&c->lock);
}

void coh_coord_delete(struct coh_coord **cp)
{
	struct coh_coord_req *r, *gone = NULL;
	struct coh_coord *c;

	if (!cp || !*cp)
		return;
	c = *cp;
	*cp = NULL;
	pthread_mutex_lock(&c->lock);
	while ((r = c->held)) {
		c->held = r->next;
		r->next = NULL;
		r->state = COORD_IDLE;
		r->wake = gone;
		gone = r;
	}
	/* Granted requests are the callers': they are forgotten, not called. */
	for (r = c->granted; r; r = c->granted) {
		c->granted = r->next;
		r->next = NULL;
		r->state = COORD_IDLE;
	}
	pthread_mutex_unlock(&c->lock);
	coord_notify(gone, -ESHUTDOWN);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
