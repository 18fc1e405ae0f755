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

/* ut_state_new / ut_state_delete - @c's per-resource state and its used-group bitmap, for
 * c->nres resources, as coh_cache_open makes them. */
static int ut_state_new(struct coh_cache *c)
{
	c->res = calloc(c->nres, sizeof(*c->res));
	c->res_used =
	    calloc((c->nres + RES_GROUP * 64 - 1) / (RES_GROUP * 64), sizeof(*c->res_used));
	return c->res && c->res_used ? 0 : -1;
}

static void ut_state_delete(struct coh_cache *c)
{
	free(c->res);
	free(c->res_used);
}

int cache_unit_stale_grants(char *why, size_t len)
{
	struct coh_cache c = { .me = 1, .nodes = 3, .nres = 2 };
	struct cmsg m, late;
	int ret = 0;

	if (ut_state_new(&c)) {
		ret = -1;
		goto out;
	}
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
	ut_state_delete(&c);
	return ret;
}

/*
 * cache_unit_res_walk - the walks over every resource (fence, claim, commit, close) visit only
 * the groups res_of marked: each resource of a marked group, in order, and none of another,
 * across bitmap words and at the volume's ragged end; a state reached by res_of is always in a
 * visited group.
 */
int cache_unit_res_walk(char *why, size_t len)
{
	/* Three bitmap words of groups, the last one partly used, the last group short. */
	struct coh_cache c = { .nres = RES_GROUP * 64 * 2 + RES_GROUP * 3 + 5 };
	static const uint64_t used[] = { 0, RES_GROUP - 1, RES_GROUP * 63 + 7, RES_GROUP * 64,
					 RES_GROUP * 64 * 2 + RES_GROUP * 3 + 4 };
	uint64_t r, i, visited = 0, want = 0;
	int ret = 0;

	if (ut_state_new(&c)) {
		ret = -1;
		goto out;
	}
	CHECK(res_next_used(&c, 0) == c.nres); /* nothing used: a walk visits nothing */
	for (i = 0; i < sizeof(used) / sizeof(used[0]); i++)
		res_of(&c, used[i])->owed = 1;
	/* Groups 0, 63, 64 and the last (short: 5 resources) are marked. */
	want = RES_GROUP * 3 + 5;
	for (r = res_next_used(&c, 0); r < c.nres; r = res_next_used(&c, r + 1)) {
		uint64_t g = r / RES_GROUP;

		CHECK(g == 0 || g == 63 || g == 64 || g == (c.nres - 1) / RES_GROUP);
		CHECK(visited < want); /* bounded, and nothing twice */
		visited++;
	}
	CHECK(visited == want);
	for (i = 0; i < sizeof(used) / sizeof(used[0]); i++)
		CHECK(res_next_used(&c, used[i]) == used[i]);
	CHECK(res_next_used(&c, RES_GROUP) == RES_GROUP * 63);
	CHECK(res_next_used(&c, RES_GROUP * 65) == (c.nres - 1) / RES_GROUP * RES_GROUP);
	CHECK(res_next_used(&c, c.nres) == c.nres);
out:
	ut_state_delete(&c);
	return ret;
}
