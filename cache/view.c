/*
 * view.c - the cache's part of a view change after nodes die, done while the cache stays open
 * and I/O to every resource the dead did not hold goes on. The engine runs the steps on every
 * survivor, in order, with a barrier after each of the first three:
 *
 *   fence      the dead are marked: nothing is sent to them, their queued and future requests
 *              are dropped, and waits that depended on them end with -EAGAIN;
 *   clear      each survivor zeroes the words it will be home to in place of a dead home (the
 *              next live member after it), at the same offsets;
 *   claim      each survivor adds what it holds of those resources to the new words: its
 *              sharer bit for a shared copy, its bit and DIR_CLAIM_X for an exclusive one, and
 *              the newest version it knows, so that no old copy anywhere looks current again;
 *   take over  for each dead node, the candidates (the survivors that hold a copy of its log)
 *              race one CAS on an arbitration word at the lowest survivor. The winner CASes
 *              every word the dead node owned exclusively to itself, turns each rebuilt word
 *              nobody claimed into an exclusive one of its own, and keeps all of them pinned
 *              (requests for them queue) while the engine replays the dead node's log;
 *   commit     the new homes take effect everywhere and the winner's pins drop; the queued
 *              requests are served in order.
 *
 * Why the rebuilt words are right: a dead node's live log records and destage steps name only
 * resources it held exclusively, and an exclusive holder's copy is the only current one; so a
 * resource some survivor still holds was not the dead node's, and one nobody holds is given to
 * the winner until the replay has put the dead node's data in the store. Every step can be run
 * again (a second death during the view change restarts it) with the same effect.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache_internal.h"

static uint32_t live_members(const struct coh_cache *c)
{
	return c->members & ~atomic_load(&c->dead);
}

/* rebuilt - @r's home is dead and the view change has not committed: it moves to @new_home. */
static bool rebuilt(const struct coh_cache *c, uint64_t r, uint32_t *new_home)
{
	if (!node_dead(c, res_home(c, r)))
		return false;
	*new_home = home_in(c, live_members(c), r);
	return true;
}

static uint32_t ver_max(uint32_t a, uint32_t b)
{
	return ver_after(a, b) ? a : b;
}

int coh_cache_fence(struct coh_cache *c, uint32_t dead)
{
	uint64_t r;

	if (!c || (dead >> c->me & 1) || (c->nodes < 32 && dead >> c->nodes))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	atomic_fetch_or(&c->dead, dead & c->members);
	CTRACE(c, "fence dead %x", dead);
	/* Requests the dead left queued here would hand a lock to a node that cannot use it. */
	for (r = 0; r < c->nres; r++) {
		struct req **pp = &c->res[r].head, *q;

		c->res[r].tail = NULL;
		while ((q = *pp)) {
			if (node_dead(c, q->m.requester)) {
				*pp = q->next;
				free(q);
			} else {
				c->res[r].tail = q;
				pp = &q->next;
			}
		}
	}
	atomic_fetch_add(&c->fence_gen, 1);
	pthread_cond_broadcast(&c->kick_cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void coh_cache_yield(struct coh_cache *c, bool on)
{
	if (c)
		atomic_store(&c->yield, on);
}

int coh_cache_rebuild_clear(struct coh_cache *c)
{
	_Atomic uint64_t *dir;
	uint32_t h;
	uint64_t r;

	if (!c)
		return -EINVAL;
	dir = coh_mr_addr(c->dir_mr);
	/* Nobody uses these words until the commit: every node sends requests for them to the
	 * dead home until then, and fails. A barrier follows before anyone claims. */
	for (r = 0; r < c->nres; r++) {
		if (rebuilt(c, r, &h) && h == c->me)
			atomic_store(&dir[r], 0);
	}
	return 0;
}

/*
 * drain_grants - take in the grants that have reached this node. A grant is state in flight: its
 * giver has already let the resource go. The fence made every grant for a word being rebuilt
 * reach us before the claims: the service thread serves under the cache lock and sends before it
 * lets go, the fence takes that lock after marking the homes dead (so nothing rebuilt is served
 * after it), and a completed send is in the receiver's queue (shm copies it into the ring; RC
 * completes it on the receiver's acknowledgement). The barrier after the fence orders the rest.
 */
static void drain_grants(struct coh_cache *c)
{
	struct xport *x = &c->app;
	struct cmsg m;

	while (xp_poll(x, 0) > 0)
		;
	while (xp_take(x, &m)) {
		if (m.type == CMSG_GRANT) {
			pthread_mutex_lock(&c->lock);
			cache_apply_grant(c, &m);
			pthread_mutex_unlock(&c->lock);
		}
	}
}

int coh_cache_rebuild_claim(struct coh_cache *c)
{
	uint32_t h, tries;
	uint64_t r;
	int ret;

	if (!c)
		return -EINVAL;
	/* What a live node handed us before the fence is ours to claim: its giver claims no more. */
	drain_grants(c);
	for (r = 0; r < c->nres; r++) {
		struct res_state *st = &c->res[r];
		uint64_t bits = 0, cur, want, inv;
		uint32_t v = 0;
		bool known;

		if (!rebuilt(c, r, &h))
			continue;
		pthread_mutex_lock(&c->lock);
		if (st->level == L_S && cache_invalidated(c, r))
			st->level = L_I;
		if (st->level == L_X)
			bits = DIR_CLAIM_X | 1u << c->me;
		else if (st->level == L_S)
			bits = 1u << c->me;
		known = st->seen || st->level != L_I;
		if (known)
			v = ver_max(st->lv, st->cv);
		inv = atomic_load(&c->inv[r]);
		if (inv & INV_FLAG) {
			v = known ? ver_max(v, (uint32_t)inv & DIR_VER_MASK)
				  : (uint32_t)inv & DIR_VER_MASK;
			known = true;
		}
		pthread_mutex_unlock(&c->lock);
		if (!bits && !known)
			continue;
		/* Merge into whatever the others put there: bits are or-ed, versions maxed. */
		cur = 0;
		for (tries = 0; tries < 64; tries++) {
			uint64_t old;

			want = (cur & ~((uint64_t)DIR_VER_MASK << 40)) | bits |
			       (uint64_t)ver_max(dir_ver(cur), v) << 40;
			if (want == cur)
				break;
			ret = xp_cas_at(&c->app, h, res_dir_off(c, r), cur, want, &old);
			CTRACE(c, "claim r%llu at n%u level %u lv %u cv %u cas %llx->%llx old %llx",
			       (unsigned long long)r, h, st->level, st->lv, st->cv,
			       (unsigned long long)cur, (unsigned long long)want,
			       (unsigned long long)old);
			if (ret)
				return ret;
			if (old == cur)
				break;
			cur = old;
		}
		if (tries == 64)
			return -EAGAIN;
	}
	return 0;
}

/* read_dir - READ the directory words of home @h (nres words) into the image buffer, kept from
 * one view change to the next, and point @w at them. */
static int read_dir(struct coh_cache *c, uint32_t h, const uint64_t **w)
{
	struct xport *x = &c->app;
	int ret;

	if (!c->img_mr) {
		ret = coh_mr_new(c->fab, c->nres * 8, COH_ACCESS_LOCAL_WRITE, &c->img_mr);
		if (ret)
			return ret;
	}
	ret = coh_ep_post_read(x->one[h], c->img_mr, 0, x->dir[h], 0, c->nres * 8, 0);
	if (ret)
		return ret;
	x->outstanding++;
	ret = xp_wait_sends(x);
	*w = coh_mr_addr(c->img_mr);
	return ret;
}

/* take - make @r exclusively ours for the takeover, the word now @word at version @v. */
static void take(struct coh_cache *c, uint64_t r, uint64_t word)
{
	struct res_state *st = &c->res[r];

	pthread_mutex_lock(&c->lock);
	CTRACE(c, "take r%llu word %llx (was level %u lv %u)", (unsigned long long)r,
	       (unsigned long long)word, st->level, st->lv);
	if (st->level != L_X || st->lv != dir_ver(word)) {
		/* Not held here before: the store has the content once the replay is done. (One we
		 * held and claimed keeps its state: its dirty blocks are this tenure's.) */
		st->level = L_X;
		st->lv = st->cv = dir_ver(word);
		st->holder = NODE_NONE;
		st->holder_v = 0;
	}
	st->seen = true;
	st->dir_guess = word;
	st->tk = true;
	pthread_mutex_unlock(&c->lock);
}

/* arbitrate - the race for @d's locks among @candidates: one CAS at the lowest survivor. */
static int arbitrate(struct coh_cache *c, uint32_t d, uint32_t candidates, uint32_t round,
		     bool *won)
{
	uint32_t live = live_members(c), judge = (uint32_t)__builtin_ctz(live);
	uint64_t off = (c->nres + d) * 8, mine = (uint64_t)round << 8 | (c->me + 1), cur = 0;
	int ret, tries;

	*won = false;
	if (!(candidates >> c->me & 1))
		return 0;
	for (tries = 0; tries < 8; tries++) {
		uint64_t seen = cur;

		/* An entry from an earlier round (one that did not finish) is stale. */
		if (seen && (seen >> 8) >= round) {
			*won = seen == mine;
			return 0;
		}
		ret = xp_cas_at(&c->app, judge, off, seen, mine, &cur);
		if (ret)
			return ret;
		if (cur == seen) {
			*won = true;
			return 0;
		}
	}
	return -EAGAIN;
}

int coh_cache_take_over(struct coh_cache *c, uint32_t d, uint32_t candidates, uint32_t round,
			bool *won, uint64_t *taken)
{
	struct xport *x = &c->app;
	uint32_t live, h;
	uint64_t r, count = 0;
	int ret;

	if (!c || !won || !taken || d >= c->nodes || !node_dead(c, d) || !round)
		return -EINVAL;
	*taken = 0;
	ret = arbitrate(c, d, candidates & live_members(c), round, won);
	if (ret || !*won)
		return ret;
	live = live_members(c);

	/* The words on live homes that name the dead node as exclusive owner: read each home's
	 * region, then CAS each such word over to this node. Nobody else changes them: only an
	 * exclusive owner changes an exclusive word. */
	for (h = 0; h < c->nodes && !ret; h++) {
		const uint64_t *w;

		if (!(live >> h & 1))
			continue;
		ret = read_dir(c, h, &w);
		if (ret)
			break;
		for (r = 0; r < c->nres && !ret; r++) {
			uint64_t want, old;

			if (res_home(c, r) != h || !dir_excl(w[r]) || dir_owner(w[r]) != d)
				continue;
			want = dir_make(true, c->me, 0, dir_ver(w[r]) + 1);
			ret = xp_cas_at(x, h, res_dir_off(c, r), w[r], want, &old);
			if (!ret && old == w[r]) {
				take(c, r, want);
				count++;
			} else if (!ret) {
				COH_LOG_ERR("node %u: takeover of node %u: resource %llu changed "
					    "under it (%llx)",
					    c->me, d, (unsigned long long)r,
					    (unsigned long long)old);
			}
		}
	}
	if (ret)
		return ret;

	/* The dead node's own words, rebuilt from the claims: an exclusive claim stands, shared
	 * claims make a shared word, and a word nobody claimed may be one the dead node held, so
	 * it is ours until the replay is done. */
	for (r = 0; r < c->nres; r++) {
		uint64_t cur = 0, want, old;

		if (res_home(c, r) != d || !rebuilt(c, r, &h))
			continue;
		ret = xp_cas_at(x, h, res_dir_off(c, r), 0, 0, &cur);
		if (ret)
			return ret;
		if (cur & DIR_CLAIM_X)
			want = dir_make(true, (uint32_t)__builtin_ctz(dir_sharers(cur)), 0,
					dir_ver(cur));
		else if (dir_sharers(cur))
			want = dir_make(false, 0, dir_sharers(cur), dir_ver(cur));
		else if (dir_excl(cur) && dir_owner(cur) == c->me)
			want = cur; /* ours from an earlier round of this view change */
		else
			want = dir_make(true, c->me, 0, dir_ver(cur) + 1);
		if (want != cur) {
			ret = xp_cas_at(x, h, res_dir_off(c, r), cur, want, &old);
			if (ret)
				return ret;
			if (old != cur)
				return -EAGAIN;
		}
		if (dir_excl(want) && dir_owner(want) == c->me) {
			take(c, r, want);
			count++;
		}
	}
	*taken = count;
	return 0;
}

/*
 * adopt_lost - words that name this node as exclusive owner while it does not hold the resource:
 * a node that died had made the word so (handing the resource over) and died before its grant
 * was sent. The grant never comes; the resource is ours, and the store has its content (the
 * giver wrote back before its CAS). Without this the resource would stay with nobody, and
 * requests for it would queue here until they time out. Grants already here are taken first.
 */
static int adopt_lost(struct coh_cache *c)
{
	uint32_t live = live_members(c), h;
	uint64_t r;
	int ret = 0;

	drain_grants(c);
	for (h = 0; h < c->nodes && !ret; h++) {
		const uint64_t *w;

		if (!(live >> h & 1))
			continue;
		ret = read_dir(c, h, &w);
		if (ret)
			break;
		pthread_mutex_lock(&c->lock);
		for (r = 0; r < c->nres && !ret; r++) {
			struct res_state *st = &c->res[r];

			/* The READ and this check are not atomic: our service thread may have
			 * handed the resource on since. Then the word's version is the one we had
			 * (a handover leaves our version where it was). */
			if (res_home(c, r) != h || !dir_excl(w[r]) || dir_owner(w[r]) != c->me ||
			    st->level == L_X || (st->seen && dir_ver(w[r]) == st->lv))
				continue;
			COH_LOG_INFO("node %u: resource %llu: taking the exclusive grant a dead "
				     "node made",
				     c->me, (unsigned long long)r);
			CTRACE(c, "adopt_lost r%llu word %llx (was level %u lv %u)",
			       (unsigned long long)r, (unsigned long long)w[r], st->level, st->lv);
			st->level = L_X;
			st->lv = st->cv = dir_ver(w[r]);
			st->holder = NODE_NONE;
			st->holder_v = 0;
			st->seen = true;
			st->dir_guess = w[r];
			if (st->head)
				cache_kick(c, r);
		}
		pthread_mutex_unlock(&c->lock);
	}
	return ret;
}

int coh_cache_view_commit(struct coh_cache *c)
{
	uint32_t live, n;
	uint64_t r;

	if (!c)
		return -EINVAL;
	live = live_members(c);
	CTRACE(c, "commit live %x", live);
	pthread_mutex_lock(&c->lock);
	for (n = 0; n < c->nodes; n++)
		__atomic_store_n(&c->home_of[n], home_in(c, live, n), __ATOMIC_RELEASE);
	for (r = 0; r < c->nres; r++) {
		struct res_state *st = &c->res[r];

		if (!st->tk)
			continue;
		st->tk = false;
		if (st->head)
			cache_kick(c, r);
	}
	pthread_cond_broadcast(&c->kick_cond);
	pthread_mutex_unlock(&c->lock);
	return adopt_lost(c);
}
