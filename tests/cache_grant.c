/*
 * cache_grant.c - the rule by which a node takes a lock grant in, checked on the cache's local
 * state alone: a grant for a version the node already had is old news and changes nothing. Such
 * grants arrive after a view change, when a resource reached its new owner by adoption (its
 * granter died) or through an earlier copy of a request sent twice; taking one in after the
 * node had passed the resource on would make two exclusive holders. A node far behind (the
 * version wrapped while it was not looking) must still take its next real grant, and a late copy
 * of a request, served after the node let the resource go, is a new tenure to take.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cache/cache_internal.h"
#include "cache_scenarios.h"

/* grant - the answer to a request this node sends now. */
static struct cmsg grant(struct coh_cache *c, uint8_t mode, uint64_t r, uint32_t version,
			 uint32_t from)
{
	return (struct cmsg){ .type = CMSG_GRANT,
			      .mode = mode,
			      .requester = 1,
			      .resource = r,
			      .version = version,
			      .holder = from,
			      .holder_v = version - 1,
			      .seq = ++c->next_seq };
}

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			snprintf(why, len, "%s:%d: %s", __FILE__, __LINE__, #cond);                \
			ret = -1;                                                                  \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

int cache_unit_stale_grants(char *why, size_t len)
{
	struct coh_cache c = { .me = 1, .nodes = 3, .nres = 2 };
	struct cmsg m, late;
	int ret = 0;

	c.res = calloc(c.nres, sizeof(*c.res));
	if (!c.res)
		return -1;
	/* A first grant on a resource never seen is taken. */
	m = grant(&c, MODE_X, 0, 5, 0);
	CHECK(cache_apply_grant(&c, &m, true));
	CHECK(c.res[0].level == L_X && c.res[0].lv == 5 && c.res[0].holder == 0);

	/* Its duplicate, while held: ignored, even as the answer to the current request. */
	CHECK(!cache_apply_grant(&c, &m, true));
	CHECK(c.res[0].level == L_X && c.res[0].lv == 5);

	/* Passed on (the service thread's handover leaves lv), then the duplicate arrives. */
	c.res[0].level = L_I;
	CHECK(!cache_apply_grant(&c, &m, false));
	CHECK(c.res[0].level == L_I);

	/* A late shared grant at the version we had exclusively: also old. */
	m = grant(&c, MODE_S, 0, 5, 2);
	CHECK(!cache_apply_grant(&c, &m, false));
	CHECK(c.res[0].level == L_I);

	/* A later one is taken, shared or exclusive. */
	m = grant(&c, MODE_S, 0, 6, 2);
	CHECK(cache_apply_grant(&c, &m, true));
	CHECK(c.res[0].level == L_S && c.res[0].lv == 6 && c.res[0].holder == 2);
	m = grant(&c, MODE_X, 0, 7, 2);
	CHECK(cache_apply_grant(&c, &m, true));
	CHECK(c.res[0].level == L_X && c.res[0].lv == 7);

	/* Across the 24-bit wrap, later is later. */
	c.res[1].seen = true;
	c.res[1].lv = c.res[1].vfloor = DIR_VER_MASK;
	m = grant(&c, MODE_X, 1, 0, 0);
	CHECK(cache_apply_grant(&c, &m, true));
	CHECK(c.res[1].level == L_X && c.res[1].lv == 0);
	m = grant(&c, MODE_X, 1, DIR_VER_MASK, 0);
	CHECK(!cache_apply_grant(&c, &m, false));

	/* Adopted at 7 while the grant of 7 was still on its way, handed on, then asked for
	 * again and granted shared at 8: the grant of 7 arrives last. Its version is neither the
	 * one held nor the last one had, but it is not later than what the node has had. */
	c.res[0] = (struct res_state){ 0 };
	late = grant(&c, MODE_X, 0, 7, 2); /* the request, and the grant still on its way */
	c.res[0].level = L_X;		   /* adopted (view.c, adopt_lost) */
	c.res[0].lv = c.res[0].cv = c.res[0].vfloor = 7;
	c.res[0].seen = true;
	c.res[0].level = L_I; /* handed on */
	m = grant(&c, MODE_S, 0, 8, 2);
	CHECK(cache_apply_grant(&c, &m, true));
	CHECK(c.res[0].level == L_S && c.res[0].lv == 8);
	CHECK(!cache_apply_grant(&c, &late, false));
	CHECK(c.res[0].level == L_S && c.res[0].lv == 8);

	/* An older copy of a request, served after the node had let the resource go: a new
	 * tenure (its giver made the word so), taken although it answers no current request. */
	c.res[0].level = L_I; /* handed on at 9 */
	m = grant(&c, MODE_X, 0, 10, 0);
	CHECK(cache_apply_grant(&c, &m, false));
	CHECK(c.res[0].level == L_X && c.res[0].lv == 10);

	/* A node that let the resource go long ago may be more than half the version space
	 * behind, where "later" wraps into "earlier": the answer to its request is still taken. */
	c.res[1].level = L_I;
	c.res[1].lv = c.res[1].vfloor = 10;
	m = grant(&c, MODE_S, 1, 10 + (DIR_VER_MASK >> 1) + 5, 0);
	CHECK(!ver_after(m.version, 10));
	CHECK(cache_apply_grant(&c, &m, true));
	CHECK(c.res[1].level == L_S);
out:
	free(c.res);
	return ret;
}
