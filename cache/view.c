/*
 * view.c - the cache's part of a view change after nodes die, done while the cache stays open
 * and I/O to every resource the dead did not hold goes on. The engine runs the steps on every
 * survivor, in order, with a barrier after each of the first three:
 *
 *   fence      the dead are marked: nothing is sent to them, their queued and future requests
 *              are dropped, waits that depended on them end with -EAGAIN, and the grants the
 *              service thread made before it have been sent;
 *   clear      each survivor zeroes the words it will be home to in place of a dead home (the
 *              next live member after it), at the same offsets;
 *   claim      each survivor takes in the grants that reached it, then adds what it holds of
 *              those resources to the new words: its sharer bit for a shared copy, its bit and
 *              DIR_CLAIM_X for an exclusive one, and the newest version it knows, so that no
 *              old copy anywhere looks current again;
 *   take over  for each dead node, the candidates (the survivors that hold a copy of its log)
 *              race one CAS on an arbitration word at the lowest survivor. The winner CASes
 *              every word the dead node owned exclusively to itself, turns each rebuilt word
 *              nobody claimed and that the dead node's log names (the caller's list) into an
 *              exclusive one of its own, and keeps all of them pinned (requests for them
 *              queue) while the engine replays the dead node's log; a rebuilt word nobody
 *              claimed and the log does not name stays free;
 *   commit     the new homes take effect everywhere and the winner's pins drop; the queued
 *              requests are served in order; a grant a dead node made but never sent is
 *              adopted by its receiver.
 *
 * The claims and the winner's CASes go out XP_CAS_BATCH at a time, and between batches a step
 * lets a waiting operation run (coh_cache_attr.step_pause). A cache trace (COHORT_CACHE_TRACE,
 * docs/coherence.md) records each of these steps per resource.
 *
 * Why the rebuilt words are right: a dead node's live log records and destage steps name only
 * resources it held exclusively, and an exclusive holder's copy is the only current one; so a
 * resource some survivor still holds was not the dead node's, and one nobody holds that the log
 * names is given to the winner until the replay has put the dead node's data in the store. One
 * nobody holds that the log does not name has its content in the store already (the dead node
 * held it clean, or not at all) and no valid copy anywhere (a survivor with one claimed it): it
 * is left free, as if nobody had used it. So the takeover's work is proportional to what the
 * dead node held and logged, not to the volume (a 1 TiB volume has 16 M words, a third of them
 * on each home). Every step can be run again (a second death during the view change restarts
 * it) with the same effect.
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

int coh_cache_fence(struct coh_cache *c, uint32_t dead)
{
	uint64_t r, posted = 0, deadline, cas_gen;
	bool cas, posted_set = false;
	int ret = 0;

	if (!c || (dead >> c->me & 1) || (c->nodes < 32 && dead >> c->nodes))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	atomic_fetch_or(&c->dead, dead & c->members);
	CTRACE(c, "fence dead %x", dead);
	/* Requests the dead left queued here would hand a lock to a node that cannot use it. */
	for (r = res_next_used(c, 0); r < c->nres; r = res_next_used(c, r + 1)) {
		struct res_state *st = res_of(c, r);
		struct req **pp = &st->head, *q;

		/* Nothing queued (and so no tail): only read, so that the state of a resource
		 * not in use stays on a page never written. */
		if (!*pp)
			continue;
		st->tail = NULL;
		while ((q = *pp)) {
			if (node_dead(c, q->m.requester)) {
				*pp = q->next;
				free(q);
			} else {
				st->tail = q;
				pp = &q->next;
			}
		}
	}
	atomic_fetch_add(&c->fence_gen, 1);
	pthread_cond_broadcast(&c->kick_cond);
	/* The grants the service thread made before this leave once it has dropped the lock
	 * (svc_flush), and a hand-over may be between its CAS (sent with the lock dropped) and
	 * its new state: the first must be in their receivers' queues, and the second must have
	 * its state and its grant, before anyone claims (drain_grants). Each is a bounded wait;
	 * a send to a node fenced now is skipped, and a hand-over to one is refused. */
	deadline = cache_now_ms() + 4ull * c->timeout_ms;
	cas_gen = c->cas_gen;
	cas = c->svc_cas;
	for (;;) {
		struct timespec ts;

		if (cas && c->cas_gen != cas_gen)
			cas = false;
		if (!cas) {
			if (!posted_set) {
				posted = c->out_posted;
				posted_set = true;
			}
			if (c->out_done >= posted)
				break;
		}
		if (cache_now_ms() >= deadline) {
			COH_LOG_WARN("node %u: fence: the service thread's hand-over is not done "
				     "or its answers not sent; the view change is tried again",
				     c->me);
			ret = -EAGAIN;
			break;
		}
		cache_realtime_in(1, &ts);
		pthread_cond_timedwait(&c->out_cond, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void coh_cache_yield(struct coh_cache *c, bool on)
{
	if (c)
		atomic_store(&c->yield, on);
}

/* vx_enter / vx_exit - the steps below use lane 0's endpoints and completion queue (the
 * application thread's place), from the view change's thread; the service thread takes in the
 * grants of lanes it finds idle (lanes_take: a trylock of the lane's lock). Holding lane 0's lock
 * keeps it off that queue meanwhile: two threads on one queue raced (TSAN, in the takeover
 * trials: shm_cq_push against shm_cq_poll). */
static void vx_enter(struct coh_cache *c)
{
	pthread_mutex_lock(&c->lane[0].mu);
}

static void vx_exit(struct coh_cache *c)
{
	pthread_mutex_unlock(&c->lane[0].mu);
}

int coh_cache_rebuild_clear(struct coh_cache *c)
{
	_Atomic uint64_t *dir;
	uint32_t h;
	uint64_t r, b;
	int ret;

	if (!c)
		return -EINVAL;
	dir = coh_mr_addr(c->dir_mr);
	/* Nobody uses these words until the commit: every node sends requests for them to the
	 * dead home until then, and fails. A barrier follows before anyone claims. */
	for (b = 0; b < c->nodes && b < c->nres; b++) {
		if (!rebuilt(c, b, &h) || h != c->me)
			continue;
		/* Bucket b: the words with b's home, together (res_dir_off). */
		for (r = 0; r < c->bucket_words; r++)
			atomic_store_explicit(&dir[b * c->bucket_words + r], 0,
					      memory_order_relaxed);
	}
	atomic_thread_fence(memory_order_release);
	/* Invalidations this node owes (they failed, e.g. on a region re-keyed by this view
	 * change) land before the CLEARED barrier, so that no sharer they were aimed at still
	 * claims its copy beside this node's exclusive claim. */
	vx_enter(c);
	ret = cache_pay_all_owed(c);
	vx_exit(c);
	return ret;
}

/*
 * drain_grants - take in the grants that have reached this node. A grant is state in flight: its
 * giver has already let the resource go. The fence made every grant for a word being rebuilt
 * reach us before the claims: the fence marks the homes dead under the cache lock (the service
 * thread looks under it before each hand-over's CAS, so nothing rebuilt is handed on after it),
 * waits for a hand-over between its CAS and its new state, then until every answer posted
 * before that has been sent (svc_flush); and a completed send is in the receiver's queue (shm
 * copies it into the ring; RC completes it on the receiver's acknowledgement). The barrier after
 * the fence orders the rest.
 */
static void drain_grants(struct coh_cache *c)
{
	/* Every lane's: a grant reaches the lane that asked, and any of them may have. */
	cache_drain_all(c);
}

/* let_io_in - between two batches of a step's network work, let the caller run a waiting operation
 * (coh_cache_attr.step_pause): on rdma each batch is a round trip, and a step holds the
 * application thread's place for all of them. What the steps touch is frozen meanwhile: the
 * rebuilt words (their home is dead, so operations on them return -EAGAIN), the words naming a
 * dead owner, and the taken ones (held). Lane 0 is let go too: the operation may be on it. */
static void let_io_in(struct coh_cache *c)
{
	if (c->step_pause) {
		vx_exit(c);
		c->step_pause(c->hook_arg);
		vx_enter(c);
	}
}

/* view_room - make room in the array *@arr of *@cap elements of @size bytes for an element at
 * index @n: doubled when full. Returns 0 or -ENOMEM (the array is kept). */
static int view_room(void *arr, uint64_t *cap, uint64_t n, size_t size)
{
	uint64_t want;
	void *p, *q;

	if (n < *cap)
		return 0;
	want = *cap ? *cap * 2 : 64;
	memcpy(&p, arr, sizeof(p)); /* *@arr is a pointer of another type */
	q = realloc(p, want * size);
	if (!q)
		return -ENOMEM;
	memcpy(arr, &q, sizeof(q));
	*cap = want;
	return 0;
}

/* A claim being merged into a rebuilt word: what this node adds, and the word as last seen. */
struct claim {
	uint64_t r, bits, cur;
	uint32_t home, v;
};

/* claim_merge - @cl's word with this node's claim merged in: bits or-ed; the version is the
 * first claim's. Every claimant holds a valid copy of the same tenure, so all claim the same
 * version; comparing versions would be wrong across a wrap (a cleared word reads 0). */
static uint64_t claim_merge(const struct claim *cl)
{
	uint32_t v = cl->cur ? dir_ver(cl->cur) : cl->v;

	return (cl->cur & ~((uint64_t)DIR_VER_MASK << 40)) | cl->bits | (uint64_t)v << 40;
}

/*
 * cas_rounds - merge every claim of @cl into its word with CAS, XP_CAS_BATCH at a time per home,
 * in rounds: a CAS that meets another node's claim learns the word and goes again in the next
 * round. The claims of the other survivors are bounded (one per survivor and word), so the rounds
 * are too; 64 is far beyond them.
 */
static int cas_rounds(struct coh_cache *c, struct claim *cl, uint64_t n)
{
	uint64_t off[XP_CAS_BATCH], expect[XP_CAS_BATCH], swap[XP_CAS_BATCH], old[XP_CAS_BATCH];
	uint64_t idx[XP_CAS_BATCH], i, left = n;
	uint32_t round, nb, j;
	int ret;

	for (round = 0; round < 64 && left; round++) {
		for (i = 0, nb = 0; i <= n; i++) {
			bool flush =
			    i == n || nb == XP_CAS_BATCH || (nb && cl[i].home != cl[idx[0]].home);

			if (flush && nb) {
				ret = xp_cas_many(&c->lane[0], cl[idx[0]].home, nb, off, expect,
						  swap, old);
				if (ret)
					return ret;
				for (j = 0; j < nb; j++) {
					struct claim *x = &cl[idx[j]];

					CTRACE(c, "claim r%llu at n%u cas %llx->%llx old %llx",
					       (unsigned long long)x->r, x->home,
					       (unsigned long long)expect[j],
					       (unsigned long long)swap[j],
					       (unsigned long long)old[j]);
					/* Merged (done), or the word as another node left it. */
					x->cur = old[j] == expect[j] ? swap[j] : old[j];
				}
				nb = 0;
				let_io_in(c);
			}
			if (i == n || claim_merge(&cl[i]) == cl[i].cur)
				continue;
			idx[nb] = i;
			off[nb] = res_dir_off(c, cl[i].r);
			expect[nb] = cl[i].cur;
			swap[nb] = claim_merge(&cl[i]);
			nb++;
		}
		/* Those whose word already holds the claim are done without a CAS. */
		for (i = 0, left = 0; i < n; i++)
			left += claim_merge(&cl[i]) != cl[i].cur;
	}
	return left ? -EAGAIN : 0;
}

int coh_cache_rebuild_claim(struct coh_cache *c)
{
	struct claim *cl = NULL;
	uint64_t r, n = 0, cap = 0;
	uint32_t h;
	int ret;

	if (!c)
		return -EINVAL;
	/* What a live node handed us before the fence is ours to claim: its giver claims no more. */
	drain_grants(c);
	/* Only a used resource can be held here (res_of): the walk and the claims follow what
	 * this node uses, not the volume. */
	for (r = res_next_used(c, 0); r < c->nres; r = res_next_used(c, r + 1)) {
		struct res_state *st = res_of(c, r);
		uint64_t bits = 0;

		if (!rebuilt(c, r, &h))
			continue;
		if (view_room(&cl, &cap, n, sizeof(*cl))) {
			free(cl);
			return -ENOMEM;
		}
		pthread_mutex_lock(&c->lock);
		if (st->level == L_S && cache_invalidated(c, r))
			st->level = L_I;
		if (st->level == L_X)
			bits = DIR_CLAIM_X | 1u << c->me;
		else if (st->level == L_S)
			bits = 1u << c->me;
		CTRACE(c, "claim r%llu level %u lv %u cv %u bits %llx", (unsigned long long)r,
		       st->level, st->lv, st->cv, (unsigned long long)bits);
		/* Only a holder claims, with its tenure's version: a holder's version is the
		 * word's (nobody can move it while a copy is valid), where a version this node
		 * merely remembers may be from the far side of a wrap. Old copies cannot look
		 * current again whatever the rebuilt word's version: every tenure begins with
		 * its slots emptied and its invalidation word's value noted (res_state). */
		if (bits)
			cl[n++] = (struct claim){ .r = r, .bits = bits, .home = h, .v = st->lv };
		pthread_mutex_unlock(&c->lock);
	}
	vx_enter(c);
	ret = cas_rounds(c, cl, n);
	vx_exit(c);
	free(cl);
	return ret;
}

/* read_dir - READ bucket @b's directory words (the resources with r % nodes == @b, as
 * res_dir_off lays them out) from home @h into the image buffer, kept from one view change to
 * the next, and point @w at them: r's word is (*w)[r / nodes]. */
static int read_dir(struct coh_cache *c, uint32_t h, uint32_t b, const uint64_t **w)
{
	struct xport *x = &c->lane[0];
	int ret;

	if (!c->img_mr) {
		ret = coh_mr_new(c->fab, c->bucket_words * 8, COH_ACCESS_LOCAL_WRITE, &c->img_mr);
		if (ret)
			return ret;
	}
	ret = xp_ready(x);
	if (!ret)
		ret = coh_ep_post_read(x->one[h], c->img_mr, 0, x->dir[h], res_dir_off(c, b),
				       c->bucket_words * 8, 0);
	if (ret)
		return ret;
	x->outstanding++;
	ret = xp_wait_sends(x);
	*w = coh_mr_addr(c->img_mr);
	return ret;
}

/* cache_hold_word - hold the resource exclusively as the directory word @word says, with no copy
 * of it anywhere but the store (its giver wrote back first, or the replay will): a new tenure,
 * so the slots of earlier ones go. A grant still on its way to us for this tenure is old news.
 * Lock held. */
void cache_hold_word(struct coh_cache *c, uint64_t r, uint64_t word)
{
	struct res_state *st = res_of(c, r);

	if (st->level != L_X)
		cache_new_tenure(c, r);
	st->level = L_X;
	st->lv = st->cv = dir_ver(word);
	cache_set_floor(c, st, dir_ver(word));
	st->holder = NODE_NONE;
	st->holder_v = 0;
	st->seen = true;
	st->fresh = false;
	st->dir_guess = word;
	st->mine_at = 0;
}

/* take - make @r exclusively ours for the takeover, the word now @word. */
static void take(struct coh_cache *c, uint64_t r, uint64_t word)
{
	struct res_state *st = res_of(c, r);

	pthread_mutex_lock(&c->lock);
	CTRACE(c, "take r%llu word %llx (was level %u lv %u)", (unsigned long long)r,
	       (unsigned long long)word, st->level, st->lv);
	if (st->level == L_X) {
		/* Held here and claimed: the tenure goes on, and its dirty blocks (filled under
		 * @lv) are the newest content, whatever version the rebuilt word carries. */
		if (st->lv != dir_ver(word)) {
			st->cv = st->lv;
			st->lv = dir_ver(word);
		}
		cache_set_floor(c, st, dir_ver(word));
		st->dir_guess = word;
	} else {
		/* Not held here before: the store has the content once the replay is done. */
		cache_hold_word(c, r, word);
	}
	st->tk = true;
	pthread_mutex_unlock(&c->lock);
}

/* arbitrate - the race for @d's locks among @candidates: one CAS at the lowest survivor. */
static int arbitrate(struct coh_cache *c, uint32_t d, uint32_t candidates, uint32_t round,
		     bool *won)
{
	uint32_t live = live_members(c), judge = (uint32_t)__builtin_ctz(live);
	uint64_t off = arb_off(c, d), mine = (uint64_t)round << 8 | (c->me + 1), cur = 0;
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
		ret = xp_cas_at(&c->lane[0], judge, off, seen, mine, &cur);
		if (ret)
			return ret;
		if (cur == seen) {
			*won = true;
			return 0;
		}
	}
	return -EAGAIN;
}

/* The two kinds of word the winner takes, as picked from a home's image (take_words). */
enum pick {
	PICK_OWNED,   /* on a live home, naming the dead node as exclusive owner */
	PICK_REBUILT, /* the dead home's, rebuilt on this home from the survivors' claims */
};

/* The resources the dead node's log names (coh_cache_take_over's @need), walked in step with the
 * ascending resources of a scan: NULL names every one. */
struct need {
	const uint64_t *r;
	uint64_t n, at;
};

/* need_has - whether @nd names @r; the calls of one scan come with @r ascending. */
static bool need_has(struct need *nd, uint64_t r)
{
	if (!nd->r)
		return true;
	if (nd->at && nd->r[nd->at - 1] >= r)
		nd->at = 0; /* a new scan */
	while (nd->at < nd->n && nd->r[nd->at] < r)
		nd->at++;
	return nd->at < nd->n && nd->r[nd->at] == r;
}

/* pick_word - whether the word @cur of @r (on home @h) is one of @kind for dead node @d, and
 * what it becomes. */
static bool pick_word(struct coh_cache *c, enum pick kind, uint32_t d, uint32_t h, uint64_t r,
		      uint64_t cur, struct need *nd, uint64_t *want)
{
	uint32_t to;

	if (kind == PICK_OWNED) {
		if (res_home(c, r) != h || !dir_excl(cur) || dir_owner(cur) != d)
			return false;
		*want = dir_make(true, c->me, 0, dir_ver(cur) + 1);
		return true;
	}
	if (res_home(c, r) != d || !rebuilt(c, r, &to) || to != h)
		return false;
	/* An exclusive claim stands, shared claims make a shared word, and a word nobody
	 * claimed may be one the dead node held, so it is ours until the replay is done. */
	if (cur & DIR_CLAIM_X)
		*want = dir_make(true, (uint32_t)__builtin_ctz(dir_sharers(cur)), 0, dir_ver(cur));
	else if (dir_sharers(cur))
		*want = dir_make(false, 0, dir_sharers(cur), dir_ver(cur));
	else if (!dir_excl(cur) && !need_has(nd, r))
		return false; /* nothing of the dead node's to replay: it stays free */
	else if (dir_excl(cur) && dir_owner(cur) == c->me)
		*want = cur; /* ours from an earlier round of this view change */
	else
		*want = dir_make(true, c->me, 0, dir_ver(cur) + 1);
	return true;
}

/*
 * take_words - READ bucket @b's words from its home @h, CAS each word of @kind from what the READ
 * showed to what it becomes, XP_CAS_BATCH at a time, and hold those that are now this node's (take). Nobody else
 * changes these words meanwhile: a word naming the dead node as owner changes only by its owner,
 * and the rebuilt ones only here, after every claim (barrier FLUSHED). A word that changed anyway
 * makes the view change start again.
 */
/* The resources a takeover made this node's, for their invalidation (inval_taken). */
struct taken {
	uint64_t *r;
	uint64_t n, cap;
};

static int taken_add(struct taken *t, uint64_t r)
{
	if (view_room(&t->r, &t->cap, t->n, sizeof(*t->r)))
		return -ENOMEM;
	t->r[t->n++] = r;
	return 0;
}

static int take_words(struct coh_cache *c, enum pick kind, uint32_t d, uint32_t h, uint32_t b,
		      struct need *nd, struct taken *t)
{
	uint64_t off[XP_CAS_BATCH], expect[XP_CAS_BATCH], swap[XP_CAS_BATCH], old[XP_CAS_BATCH],
	    rs[XP_CAS_BATCH], r, want;
	const uint64_t *w;
	uint32_t nb = 0, j;
	int ret = read_dir(c, h, b, &w);

	/* The resources of bucket @b, ascending: b, b + nodes, ... */
	for (r = b; !ret && r < c->nres + c->nodes; r += c->nodes) {
		if (r < c->nres && pick_word(c, kind, d, h, r, w[r / c->nodes], nd, &want)) {
			rs[nb] = r;
			off[nb] = res_dir_off(c, r);
			expect[nb] = w[r / c->nodes];
			swap[nb] = want;
			nb++;
		}
		if (!nb || (r < c->nres && nb < XP_CAS_BATCH))
			continue;
		ret = xp_cas_many(&c->lane[0], h, nb, off, expect, swap, old);
		for (j = 0; !ret && j < nb; j++) {
			if (old[j] != expect[j]) {
				COH_LOG_WARN("node %u: takeover of node %u: resource %llu changed "
					     "under it (%llx, not %llx); again",
					     c->me, d, (unsigned long long)rs[j],
					     (unsigned long long)old[j],
					     (unsigned long long)expect[j]);
				ret = -EAGAIN;
			} else if (dir_excl(swap[j]) && dir_owner(swap[j]) == c->me) {
				take(c, rs[j], swap[j]);
				ret = taken_add(t, rs[j]);
			}
		}
		nb = 0;
		if (!ret)
			let_io_in(c);
	}
	return ret;
}

/*
 * inval_taken - write the invalidation word of every live member for each resource in @t. The
 * dead node may have made a word exclusive and died before it invalidated the sharers it took it
 * from (or owed one an invalidation that failed); its word no longer says who they were, and a
 * grant from the winner later involves no invalidation. So the winner invalidates every possible
 * copy before the commit lets anyone use the resource. Batches of XP_CAS_BATCH per member.
 */
static int inval_taken(struct coh_cache *c, const struct taken *t)
{
	struct xport *x = &c->lane[0];
	uint64_t val = inv_token(c->me, atomic_fetch_add(&c->inv_count, 1) + 1), i;
	uint32_t live = live_members(c), m, nb;
	int ret = xp_ready(x), r2;

	if (ret)
		return ret;
	memcpy((uint8_t *)coh_mr_addr(x->buf) + x->bounce_off, &val, sizeof(val));
	for (m = 0; m < c->nodes && !ret; m++) {
		if (m == c->me || !(live >> m & 1))
			continue;
		for (i = 0; i < t->n && !ret;) {
			for (nb = 0; nb < XP_CAS_BATCH && i < t->n && !ret; nb++, i++) {
				ret = coh_ep_post_write(x->one[m], x->buf, x->bounce_off, x->inv[m],
							inv_off_at(x->inv[m], t->r[i]), 8, m);
				if (!ret)
					x->outstanding++;
			}
			r2 = xp_wait_sends(x);
			if (!ret)
				ret = r2;
			atomic_fetch_add(&c->net_write, nb);
			CTRACE(c, "takeover invalidates %u resources at n%u: %d", nb, m, ret);
		}
	}
	return ret;
}

int coh_cache_take_over(struct coh_cache *c, uint32_t d, uint32_t candidates, uint32_t round,
			const uint64_t *need, uint64_t nneed, bool *won, uint64_t *taken)
{
	struct need nd = { .r = need, .n = nneed };
	struct taken t = { 0 };
	uint32_t live, h, b;
	uint64_t r;
	int ret;

	if (!c || !won || !taken || d >= c->nodes || !node_dead(c, d) || !round || (nneed && !need))
		return -EINVAL;
	for (r = 1; r < nneed; r++) {
		if (need[r] <= need[r - 1])
			return -EINVAL; /* need_has walks it in order */
	}
	*taken = 0;
	vx_enter(c);
	ret = arbitrate(c, d, candidates & live_members(c), round, won);
	if (ret || !*won) {
		vx_exit(c);
		return ret;
	}
	live = live_members(c);
	/* The words on live homes that name the dead node as exclusive owner, then the dead
	 * home's words rebuilt on the next members: bucket by bucket (a home's words are the
	 * buckets r % nodes it is home to), so that only those are read. */
	for (b = 0; b < c->nodes && b < c->nres && !ret; b++) {
		h = res_home(c, b);
		if (live >> h & 1)
			ret = take_words(c, PICK_OWNED, d, h, b, &nd, &t);
	}
	for (b = 0; b < c->nodes && b < c->nres && !ret; b++) {
		if (res_home(c, b) == d && rebuilt(c, b, &h))
			ret = take_words(c, PICK_REBUILT, d, h, b, &nd, &t);
	}
	if (!ret)
		ret = inval_taken(c, &t);
	vx_exit(c);
	if (!ret)
		*taken = t.n;
	free(t.r);
	return ret;
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
	uint32_t live = live_members(c), h, b;
	uint64_t r;
	int ret = 0;

	drain_grants(c);
	vx_enter(c);
	for (b = 0; b < c->nodes && b < c->nres && !ret; b++) {
		const uint64_t *w;

		h = res_home(c, b);
		if (!(live >> h & 1))
			continue;
		ret = read_dir(c, h, b, &w);
		if (ret && (!c->lane[0].one[h] || !coh_ep_is_up(c->lane[0].one[h]))) {
			/* A home that died since the fence: the next view change rebuilds its
			 * words, with their claims; nothing here is adopted from it. */
			ret = 0;
			continue;
		}
		if (ret)
			break;
		for (r = b; r < c->nres && !ret; r += c->nodes) {
			uint64_t cur, word = w[r / c->nodes];
			struct res_state *st;

			if (!dir_excl(word) || dir_owner(word) != c->me)
				continue;
			st = res_of(c, r); /* only now: res_of marks its group used */
			/* The READ is not atomic with what our service thread does meanwhile (it
			 * may have handed the resource on since), so the word is looked at again
			 * by CAS with the lock held: only the owner changes an exclusive word, and
			 * the service thread cannot serve without the lock. One round trip per lost
			 * grant, which is rare. */
			pthread_mutex_lock(&c->lock);
			if (st->level == L_X) {
				pthread_mutex_unlock(&c->lock);
				continue;
			}
			ret = xp_cas_at(&c->lane[0], h, res_dir_off(c, r), word, word, &cur);
			if (ret && (!c->lane[0].one[h] || !coh_ep_is_up(c->lane[0].one[h]))) {
				pthread_mutex_unlock(&c->lock);
				ret = 0;
				break;
			}
			if (!ret && dir_excl(cur) && dir_owner(cur) == c->me) {
				COH_LOG_INFO("node %u: resource %llu: taking the exclusive grant a "
					     "dead node made",
					     c->me, (unsigned long long)r);
				CTRACE(c, "adopt_lost r%llu word %llx (was level %u lv %u)",
				       (unsigned long long)r, (unsigned long long)cur, st->level,
				       st->lv);
				cache_hold_word(c, r, cur);
				if (st->head)
					cache_kick(c, r);
			}
			pthread_mutex_unlock(&c->lock);
		}
		let_io_in(c);
	}
	vx_exit(c);
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
	for (r = res_next_used(c, 0); r < c->nres; r = res_next_used(c, r + 1)) {
		struct res_state *st = res_of(c, r);

		if (!st->tk)
			continue;
		st->tk = false;
		if (st->head)
			cache_kick(c, r);
	}
	pthread_cond_broadcast(&c->kick_cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int coh_cache_adopt_lost(struct coh_cache *c)
{
	return c ? adopt_lost(c) : -EINVAL;
}
