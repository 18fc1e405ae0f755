/*
 * coherence.pml - Promela model of Cohort's cache-coherence protocol (cache/).
 *
 * Read docs/coherence.md first: it describes the protocol this file models, the
 * properties checked, and how to run the checks (scripts/spin-check.sh).
 *
 * Configuration (override with spin -DNAME=VALUE):
 *   N     nodes, 2..3                       (default 2)
 *   R     resources, 1..2                   (default 1)
 *   OPS   operations per application process (default 2; safety runs)
 *   OPS1  operations per application process of resource 1 (default OPS)
 *   LIVE  liveness variant: every application issues operations forever, the data
 *         values and their ghosts are dropped, and versions wrap modulo VMOD with
 *         wrap-safe comparisons (the monitor checks that the wrap is never ambiguous).
 *         Checked with the LTL property `progress` (pan -a -f: weak fairness).
 *         N=2 only: with three nodes a sharer can sit idle while the other two move the
 *         version on without bound, and the window assertion (rightly) fires.
 *
 * Variants (for demonstrating that the checks can fail; never the default):
 *   ORIG_SOURCE     a read miss takes the data from a peer's slot without checking the
 *                   version the slot was filled under (the design as first written;
 *                   spin finds a stale read, see docs/coherence.md "Protocol issue 1")
 *   NO_YIELD        an owner may start a new local operation on a resource while requests
 *                   for it are queued (lazy release starves requesters; LIVE finds it)
 *   BUG_NO_INVAL    a writer that takes X by CAS does not invalidate the old sharers
 *   BUG_EARLY_ACK   a writer acknowledges before its invalidations have landed
 *   BUG_HOME_LOCAL  the home node updates its own directory word with a CPU
 *                   load/compare/store instead of a fabric CAS through loopback
 *   BUG_RETRY_STALE after RETRY a requester restarts from its stale view of the directory
 *                   word instead of the current one (a livelock; pan -l finds it)
 *   BUG_NO_SEQLOCK  a read hit does not re-load inv[r] after copying (expected to pass:
 *                   see the doc for why)
 *
 * The model has one application process per (node, resource), so two operations on the
 * same resource at the same node never overlap (the "pin"), and one service process per
 * node that serves REQ_S/REQ_X for all resources of that node.
 */

#ifndef N
#define N 2
#endif
#ifndef R
#define R 1
#endif
#ifndef OPS
#define OPS 2
#endif
#ifndef OPS1
#define OPS1 OPS        /* operations per application process of resource 1 */
#endif
#if N < 2 || N > 3
#error "N must be 2 or 3"
#endif
#if R < 1 || R > 2
#error "R must be 1 or 2"
#endif
#if defined(LIVE) && N != 2
#error "LIVE needs N=2 (see above)"
#endif

/* ---- directory word -------------------------------------------------------------
 * The real word is 64 bits: S bits 0-31, O bits 32-37, X bit 38, V bits 40-63.
 * The model packs the same fields into 15 bits of a short:
 *   S bits 0-3, O bits 4-6, X bit 7, V bits 8-14.
 */
#define SOF(w)          ((w) & 15)
#define OOF(w)          (((w) >> 4) & 7)
#define XOF(w)          (((w) >> 7) & 1)
#define VOF(w)          (((w) >> 8) & 127)
#define MKW(s, o, x, v) ((s) | ((o) << 4) | ((x) << 7) | ((v) << 8))
#define BIT(n)          (1 << (n))

#ifdef LIVE
#define VMOD 16
#define VN(v)     (((v) + 1) % VMOD)
#define VLE(a, b) (((((b) - (a)) + VMOD) % VMOD) < VMOD / 2)     /* a <= b, wrap-safe */
#define VDIST(a, b) ((((a) - (b)) + VMOD) % VMOD)
#else
#define VN(v)     ((v) + 1)
#define VLE(a, b) ((a) <= (b))
#endif

/* local states */
#define LI 0
#define LS 1
#define LX 2

#define IX(n, r) ((n) * R + (r))        /* (node, resource) -> index */
#define HOME(r)  ((r) % N)

#define STORE 255                       /* "source = backing store" */

mtype = { REQ_S, REQ_X, GRANT_S, GRANT_X, RETRY };

/* ---- shared state ------------------------------------------------------------- */
short D[R];             /* directory word of r, at node HOME(r); changed only by CAS */
byte  inv[N * R];       /* inv word of (n, r), exported by n, written by peers */
byte  L[N * R];         /* local state of (n, r): LI, LS, LX */
byte  lv[N * R];        /* version under which (n, r) was granted */
byte  cval[N * R];      /* the cached block of (n, r): its data ... */
byte  ctag[N * R];      /* ... and the version it was filled under (slot header) */
byte  store[R];         /* backing store */
bool  busy[N * R];      /* (n, r) is pinned: an operation or a request is in progress */

/* requests: lnk[a*N+b] carries REQ_S/REQ_X (and forwards) from node a to node b's
 * service: one RC connection per ordered pair, FIFO and reliable */
chan lnk[N * N] = [N * R] of { mtype, byte, byte };     /* type, resource, requester */
/* replies to the application process (n, r): GRANT_S/GRANT_X(version, holder), RETRY */
chan rep[N * R] = [1] of { mtype, byte, byte };
/* per-(node, resource) FIFO of requests waiting while the resource is pinned */
chan q[N * R] = [N] of { mtype, byte };                 /* type, requester */

/* ---- ghosts ------------------------------------------------------------------- */
bool invph[R];          /* a writer has CASed D[r] to X and its invalidations may be in flight */
#ifndef LIVE
byte wcount;            /* source of fresh data values */
byte acked[R];          /* value of the latest acknowledged write of r */
#else
bool pend[N * R];       /* application (n, r) has an operation in progress */
#endif

/* ---- invariants (checked in every reachable state by Monitor) ------------------- */
/* a node's S copy that a read hit would accept */
#define VALIDS(n, r) (L[IX(n, r)] == LS && VLE(inv[IX(n, r)], lv[IX(n, r)]))

/* mutual exclusion: if a holds X, no other node holds X or an S copy that reads would
 * accept.  (A node whose invalidation has landed may still be in S: it is harmless,
 * its next read hit sees inv > lv and misses.) */
#define PAIR_OK(a, b, r) (!(L[IX(a, r)] == LX && (L[IX(b, r)] == LX || VALIDS(b, r))))

/* directory consistency of one node:
 *  - L = X  =>  D says X, owner n, same version, and n has finished invalidating;
 *  - an acceptable S copy  =>  either D is shared at the same version and lists n, or a
 *    writer has taken X at the next version and is still invalidating (has not
 *    acknowledged: the write is not yet visible to anyone). */
#define NODE_OK(n, r) \
	((L[IX(n, r)] != LX || (XOF(D[r]) && OOF(D[r]) == (n) && VOF(D[r]) == lv[IX(n, r)] && !invph[r])) && \
	 (!VALIDS(n, r) || \
	  (!XOF(D[r]) && (SOF(D[r]) & BIT(n)) != 0 && VOF(D[r]) == lv[IX(n, r)]) || \
	  (XOF(D[r]) && invph[r] && VOF(D[r]) == VN(lv[IX(n, r)]))))

#define DIR_OK(r) (!XOF(D[r]) || SOF(D[r]) == 0)       /* X => S == 0 */

#if N > 2
#define MUTEX_R(r) (PAIR_OK(0, 1, r) && PAIR_OK(1, 0, r) && PAIR_OK(0, 2, r) && \
		    PAIR_OK(2, 0, r) && PAIR_OK(1, 2, r) && PAIR_OK(2, 1, r))
#define CONS_R(r)  (NODE_OK(0, r) && NODE_OK(1, r) && NODE_OK(2, r))
#else
#define MUTEX_R(r) (PAIR_OK(0, 1, r) && PAIR_OK(1, 0, r))
#define CONS_R(r)  (NODE_OK(0, r) && NODE_OK(1, r))
#endif

#ifdef LIVE
/* the modular versions are exact while every live version is within VMOD/2 of D.V */
#define WRAP_N(n, r) (VDIST(VOF(D[r]), lv[IX(n, r)]) < VMOD / 2 && \
		      VDIST(VOF(D[r]), inv[IX(n, r)]) < VMOD / 2)
#if N > 2
#define WRAP_R(r) (WRAP_N(0, r) && WRAP_N(1, r) && WRAP_N(2, r))
#else
#define WRAP_R(r) (WRAP_N(0, r) && WRAP_N(1, r))
#endif
#else
#define WRAP_R(r) true
#endif

#if R > 1
#define DIR_INV   (DIR_OK(0) && DIR_OK(1))
#define MUTEX_INV (MUTEX_R(0) && MUTEX_R(1))
#define CONS_INV  (CONS_R(0) && CONS_R(1))
#define WRAP_INV  (WRAP_R(0) && WRAP_R(1))
#else
#define DIR_INV   DIR_OK(0)
#define MUTEX_INV MUTEX_R(0)
#define CONS_INV  CONS_R(0)
#define WRAP_INV  WRAP_R(0)
#endif

#ifndef NO_MONITOR
active proctype Monitor()
{
end:	do
	:: atomic { !DIR_INV -> assert(DIR_INV) }       /* directory word: X => S == 0 */
	:: atomic { !MUTEX_INV -> assert(MUTEX_INV) }   /* single writer / no readable S beside X */
	:: atomic { !CONS_INV -> assert(CONS_INV) }     /* local states agree with the directory */
	:: atomic { !WRAP_INV -> assert(WRAP_INV) }     /* LIVE only: version wrap is exact */
	od
}
#endif

/* ---- the directory CAS -------------------------------------------------------
 * Every node, the home included, changes D[r] only with a fabric CAS (the home through
 * its loopback connection), which is one atomic step.  On failure the CAS returns the
 * current value, which becomes the caller's `seen`.  BUG_HOME_LOCAL makes the home
 * node do a CPU load, compare and store instead: a CPU store is not atomic with respect
 * to the NIC's atomics, so a remote CAS can fall between the load and the store. */
#ifdef BUG_HOME_LOCAL
#define CAS(r, expect, desired, ok, onok)                                     \
	if                                                                        \
	:: n == HOME(r) ->                                                        \
		if                                                                    \
		:: D[r] == expect -> D[r] = desired; ok = 1; onok                     \
		:: D[r] != expect -> expect = D[r]; ok = 0                            \
		fi                                                                    \
	:: n != HOME(r) ->                                                        \
		atomic {                                                              \
			if                                                                \
			:: D[r] == expect -> D[r] = desired; ok = 1; onok                 \
			:: else -> expect = D[r]; ok = 0                                  \
			fi                                                                \
		}                                                                     \
	fi
#else
#define CAS(r, expect, desired, ok, onok)                                     \
	atomic {                                                                  \
		if                                                                    \
		:: D[r] == expect -> D[r] = desired; ok = 1; onok                     \
		:: else -> expect = D[r]; ok = 0                                      \
		fi                                                                    \
	}
#endif

/* fetch D[r] (a CAS that cannot succeed, or FAA 0; an 8-byte READ is not atomic with
 * respect to atomics on every HCA) */
#define FETCH(r, w) w = D[r]

/* after RETRY the requester restarts from the current directory word (RETRY carries
 * the word the owner saw, or the requester fetches it).  BUG_RETRY_STALE restarts from
 * the stale word instead, which names the same former owner again: a livelock. */
#ifdef BUG_RETRY_STALE
#define REFRESH(r, w) skip
#else
#define REFRESH(r, w) FETCH(r, w)
#endif

/* ---- application: one per (node, resource) -------------------------------------- */

/* Granularity.  Steps that only touch the node's own pinned state (its L, lv and slot,
 * which nobody else writes while the resource is pinned) are merged with the preceding
 * or following step that talks to the fabric; every fabric operation (CAS, READ,
 * WRITE, SEND, the arrival of a reply) stays a step of its own.  docs/coherence.md
 * ("What the model checks") argues why the merges lose no behaviour. */

/* pin (n, r) for an operation.  An operation may not start while requests for r are
 * queued at n (they are served first); NO_YIELD removes that rule. */
#ifdef NO_YIELD
#define PIN_GUARD (!busy[i])
#else
#define PIN_GUARD (!busy[i] && empty(q[i]))
#endif

#ifndef LIVE
#define START   start = acked[r]
/* a read returns: it must not be older than the latest write acknowledged before it
 * started (no stale read); then unpin */
#define RDONE   assert(ret >= start); busy[i] = false; \
		ret = 0; i1 = 0; tag = 0; olds = 0; v = 0; h = 0; s = 0; start = 0
/* a write installs a fresh value (dirty, under the version it holds X in) ... */
#define INSTALL assert(L[i] == LX && XOF(D[r]) && OOF(D[r]) == n && VOF(D[r]) == lv[i]); \
		wcount++; cval[i] = wcount; ctag[i] = lv[i]; PRESENT
/* ... and is acknowledged */
#define ACK     acked[r] = cval[i]
#else
#define START   skip
#define RDONE   busy[i] = false; pend[i] = false; \
		ret = 0; i1 = 0; tag = 0; olds = 0; v = 0; h = 0; s = 0
#define INSTALL assert(L[i] == LX && XOF(D[r]) && OOF(D[r]) == n && VOF(D[r]) == lv[i]); \
		ctag[i] = lv[i]
#define ACK     skip
#endif
#ifdef LIVE
#define WDONE   busy[i] = false; pend[i] = false; v = 0; h = 0; olds = 0
#else
#define WDONE   busy[i] = false; v = 0; h = 0; olds = 0
#endif

/* choose the data source among the old sharers `olds` (any one), else the store */
#if N > 2
#define PICK_SOURCE                                   \
	if                                                \
	:: (olds & BIT(0)) != 0 -> s = 0                  \
	:: (olds & BIT(1)) != 0 -> s = 1                  \
	:: (olds & BIT(2)) != 0 -> s = 2                  \
	:: olds == 0 -> s = STORE                         \
	fi
#else
#define PICK_SOURCE                                   \
	if                                                \
	:: (olds & BIT(0)) != 0 -> s = 0                  \
	:: (olds & BIT(1)) != 0 -> s = 1                  \
	:: olds == 0 -> s = STORE                         \
	fi
#endif

/* Fill the local slot of (n, r) for version v from source src (a node or STORE) and
 * complete the read.  A peer's slot is read with one one-sided READ of its header (the
 * version it was filled under) and its data.  Unless ORIG_SOURCE, a slot filled under a
 * version older than v is refused and the block is read from the store instead. */
#ifdef ORIG_SOURCE
/* as first written: the peer is trusted to "hold the block" if its slot holds the
 * block at all (a presence bit), whatever version it was filled under */
bool cpres[N * R];
#define SLOT_OK (cpres[IX(src, r)])
#define PRESENT cpres[i] = true
#else
#define PRESENT skip
#endif
#ifndef ORIG_SOURCE
#ifdef LIVE
#define SLOT_OK (true)          /* LIVE has no data: the source does not matter */
#else
#define SLOT_OK (VLE(v, tag))
#endif
#endif

/* LIVE only: keep inv[i] within the version window.  Whenever (n, r) is granted under
 * version v, an inv[i] that does not show an invalidation (inv <= v) is replaced by v,
 * which behaves identically (hits test inv <= lv and lv only grows); one that does
 * (inv == v + 1: the GRANT_S arrived after the writer's invalidation) is kept. */
#ifdef LIVE
#define CANON_INV if :: inv[i] != VN(v) -> inv[i] = v :: else -> skip fi
#else
#define CANON_INV skip
#endif
inline fill(src)
{
	atomic {
		if
		:: src == STORE -> ret = store[r]; cval[i] = ret; ctag[i] = v; PRESENT; RDONE
		:: else ->
			ret = cval[IX(src, r)]; tag = ctag[IX(src, r)];
			if
			:: SLOT_OK -> cval[i] = ret; ctag[i] = v; PRESENT; RDONE
			:: else -> ok = 0
			fi
		fi
	}
	if
	:: busy[i] && !ok -> atomic { ret = store[r]; cval[i] = ret; ctag[i] = v; PRESENT; RDONE }
	:: else -> skip
	fi
}

proctype App(byte n; byte r)
{
	byte i = IX(n, r);
	short seen = 0;         /* last value of D[r] seen by this node (initially 0) */
	byte olds, v, h, s, tag, ret, i1;
	bit ok, hit;
	mtype t;
#ifndef LIVE
	byte k = 0;
	byte start;
#endif

	do
#ifndef LIVE
	:: k == (r == 0 -> OPS : OPS1) -> break
	:: k < (r == 0 -> OPS : OPS1) ->
		k++;
#else
	:: true ->
		pend[i] = true;
#endif
		if
		:: true ->      /* ================= READ ================= */
			atomic {
				PIN_GUARD -> busy[i] = true; START;
				/* 1. hit: zero network operations */
				if
				:: L[i] == LX -> ret = cval[i]; RDONE; hit = 1
				:: L[i] == LS && VLE(inv[i], lv[i]) ->
					i1 = inv[i];                /* seqlock: load inv, then copy */
					ret = cval[i]
				:: L[i] == LS && !VLE(inv[i], lv[i]) ->
					L[i] = LI                   /* invalidated: miss */
				:: L[i] == LI -> skip
				fi
			}
			if
			:: hit -> hit = 0
			:: !hit ->
				if
				:: L[i] == LS ->
#ifdef BUG_NO_SEQLOCK
					atomic { RDONE; hit = 1 }
#else
					/* load inv again after the copy */
					atomic {
						if
						:: inv[i] == i1 -> RDONE; hit = 1
						:: else -> L[i] = LI    /* invalidated meanwhile: discard */
						fi
					}
#endif
				:: else -> skip
				fi;
				if
				:: hit -> hit = 0
				:: !hit ->
					/* 2. miss */
					do
					:: !XOF(seen) ->
						/* join the sharers: same word, S |= {n}, V unchanged; on
						 * success L := S, lv := V; the old sharers are the sources */
						CAS(r, seen, seen | BIT(n), ok,
						    olds = SOF(seen); v = VOF(seen); L[i] = LS; lv[i] = v; CANON_INV;
						    seen = seen | BIT(n); assert((olds & BIT(n)) == 0);
						    PICK_SOURCE);
						if
						:: ok -> fill(s); break
						:: else -> skip         /* retry with the returned value */
						fi
					:: XOF(seen) && OOF(seen) != n ->
						lnk[n * N + OOF(seen)]!REQ_S, r, n;
						atomic {
							rep[i]?t, v, h;
							if
							:: t == GRANT_S -> L[i] = LS; lv[i] = v; CANON_INV; ok = 1
							:: t == RETRY -> ok = 0
							fi
						}
						if
						:: ok -> fill(h); break
						:: else -> REFRESH(r, seen) /* restart from the current word */
						fi
					:: XOF(seen) && OOF(seen) == n ->
						FETCH(r, seen)          /* stale view of ourselves as owner */
					od
				fi
			fi

		:: true ->      /* ================= WRITE ================= */
			atomic {
				PIN_GUARD -> busy[i] = true;
				if
				:: L[i] == LX ->                /* lazy release: lock still held */
					INSTALL; ACK; WDONE; hit = 1
				:: else -> skip
				fi
			}
			if
			:: hit -> hit = 0
			:: !hit ->
				do
				:: !XOF(seen) ->
					CAS(r, seen, MKW(0, n, 1, VN(VOF(seen))), ok,
					    olds = SOF(seen) & ~BIT(n); v = VN(VOF(seen));
					    seen = MKW(0, n, 1, v); invph[r] = true);
					if
					:: ok ->
#ifdef BUG_EARLY_ACK
						/* install and acknowledge first, invalidate afterwards */
						atomic {
							L[i] = LX; lv[i] = v; invph[r] = false; INSTALL; ACK;
							L[i] = LI; invph[r] = true
						}
#endif
#ifndef BUG_NO_INVAL
						/* one-sided WRITE inv_s[r] := V+1 to every old sharer; they
						 * land in any order; wait for every completion */
						do
						:: (olds & BIT(0)) != 0 -> inv[IX(0, r)] = v; olds = olds & ~BIT(0)
						:: (olds & BIT(1)) != 0 -> inv[IX(1, r)] = v; olds = olds & ~BIT(1)
#if N > 2
						:: (olds & BIT(2)) != 0 -> inv[IX(2, r)] = v; olds = olds & ~BIT(2)
#endif
						:: olds == 0 -> break
						od;
#endif
						/* only now: L := X, install the data, acknowledge */
						atomic {
							L[i] = LX; lv[i] = v; invph[r] = false; CANON_INV;
#ifndef BUG_EARLY_ACK
							INSTALL; ACK;
#endif
							WDONE
						}
						break
					:: else -> skip
					fi
				:: XOF(seen) && OOF(seen) != n ->
					atomic {
						L[i] = LI;              /* drop our own S copy, if any */
						lnk[n * N + OOF(seen)]!REQ_X, r, n
					}
					atomic {
						rep[i]?t, v, h;
						if
						:: t == GRANT_X ->
							L[i] = LX; lv[i] = v; seen = MKW(0, n, 1, v); CANON_INV;
							INSTALL; ACK; WDONE; ok = 1
						:: t == RETRY -> ok = 0
						fi
					}
					if
					:: ok -> break
					:: else -> REFRESH(r, seen)
					fi
				:: XOF(seen) && OOF(seen) == n ->
					FETCH(r, seen)
				od
			fi
		fi
	od
}

/* ---- service: one per node, serves REQ_S/REQ_X for every resource -----------------
 * The handling of one request is one atomic step: once the service has pinned (me, r)
 * nothing at me can change, and what it reads elsewhere (D[r]) it could equally have
 * read at the moment the message arrived, had the message arrived later. */

/* serve request (t, from) for resource r at node me; (me, r) is pinned by us */
inline serve()
{
	if
	:: L[i] != LX ->
		/* no longer the owner: forward to the owner D names, or RETRY */
		FETCH(r, dw);
		if
		:: XOF(dw) ->
			assert(OOF(dw) != me && OOF(dw) != from);
			assert(nfull(lnk[me * N + OOF(dw)]));
			lnk[me * N + OOF(dw)]!t, r, from
		:: else ->
			rep[IX(from, r)]!RETRY, 0, 0
		fi
	:: else ->
		store[r] = cval[i];                     /* write back dirty blocks */
		/* CAS D[r] (X, me, 0, V) -> ...: it cannot fail, only the owner changes an
		 * X word */
		dw = D[r];
		assert(XOF(dw) && OOF(dw) == me && SOF(dw) == 0 && VOF(dw) == lv[i]);
		if
		:: t == REQ_S ->
			D[r] = MKW(BIT(me) | BIT(from), 0, 0, VOF(dw));
			L[i] = LS;                          /* lv stays V */
			rep[IX(from, r)]!GRANT_S, VOF(dw), me
		:: t == REQ_X ->
			D[r] = MKW(0, from, 1, VN(VOF(dw)));
			L[i] = LI;
			rep[IX(from, r)]!GRANT_X, VN(VOF(dw)), me;
			/* hand the waiters over to the new owner, in FIFO order */
			do
			:: q[i]?t2, f2 ->
				assert(f2 != from && nfull(lnk[me * N + from]));
				lnk[me * N + from]!t2, r, f2
			:: empty(q[i]) -> break
			od
		fi
	fi;
	busy[i] = false; dw = 0; t2 = 0; f2 = 0
}

/* a request arrives: serve it now, or queue it behind the pin / earlier requests */
inline arrive()
{
	i = IX(me, r);
	if
	:: !busy[i] && empty(q[i]) -> busy[i] = true; serve()
	:: busy[i] || nempty(q[i]) -> assert(nfull(q[i])); q[i]!t, from
	fi;
	t = 0; r = 0; from = 0; i = 0
}

proctype Service(byte me)
{
	mtype t, t2;
	byte r, from, f2, i;
	short dw;

end:	do
	:: atomic { lnk[0 * N + me]?t, r, from -> arrive() }
	:: atomic { lnk[1 * N + me]?t, r, from -> arrive() }
#if N > 2
	:: atomic { lnk[2 * N + me]?t, r, from -> arrive() }
#endif
	/* the resource was unpinned: serve the head of its queue */
	:: atomic {
		(!busy[IX(me, 0)] && nempty(q[IX(me, 0)])) ->
		r = 0; i = IX(me, 0); busy[i] = true; q[i]?t, from; serve();
		t = 0; r = 0; from = 0; i = 0
	   }
#if R > 1
	:: atomic {
		(!busy[IX(me, 1)] && nempty(q[IX(me, 1)])) ->
		r = 1; i = IX(me, 1); busy[i] = true; q[i]?t, from; serve();
		t = 0; r = 0; from = 0; i = 0
	   }
#endif
	od
}

init
{
	byte n, r;
	atomic {
		n = 0;
		do
		:: n < N ->
			run Service(n);
			r = 0;
			do
			:: r < R -> run App(n, r); r++
			:: r == R -> break
			od;
			n++
		:: n == N -> break
		od;
		n = 0; r = 0
	}
}

#ifdef LIVE
/* every operation, once invoked, completes (hence every request is eventually granted):
 * checked under weak fairness (pan -a -f) */
#define DONE(n, r) [] (pend[IX(n, r)] -> <> !pend[IX(n, r)])
ltl progress {
#if R > 1
	DONE(0, 0) && DONE(1, 0) && DONE(0, 1) && DONE(1, 1)
#else
	DONE(0, 0) && DONE(1, 0)
#endif
}
#endif
