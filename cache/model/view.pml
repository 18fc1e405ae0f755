/*
 * view.pml - Promela model of Cohort's view change (cache/view.c, engine/viewchange.c): a node
 * excluded because it died or paused, the lease that fences it, the re-keying of the regions,
 * the directory rebuild, the takeover (the winner takes the excluded node's exclusive locks,
 * invalidates every live copy of what it took, and replays the excluded node's logged writes
 * into the store), the zeroing of the dead log, and a commit that only some survivors reach.
 *
 * Read docs/coherence.md, "The failure model (view change)", first: it says what is modelled,
 * what is abstracted, the properties, and how to run the checks (scripts/spin-check.sh).
 * coherence.pml models the protocol without failures, in more detail (request channels,
 * queues, forwards, peer-slot sources, versions); this model keeps the protocol's states and
 * fabric operations but serves a request in the step that sends it (see "Abstractions" below),
 * so that the view change fits in a tractable state space.
 *
 * Configuration (spin -DNAME=VALUE):
 *   H     home of the resource's directory word: 0 (a survivor) or 2 (the excluded node, so
 *         the word is rebuilt on node 0 from the survivors' claims)      (default 0)
 *   OPS   operations of each survivor's application process           (default 2)
 *   OPSX  operations of the excluded node's application process       (default OPS)
 *
 * Nodes 0, 1, 2; node 2 (XN) is the one the others exclude, at any moment, or never. After its
 * exclusion it may keep taking steps (a paused node that resumes) or not (a dead one): the
 * search covers both. Nodes 0 and 1 survive; both host a copy of node 2's log (k = 2), so
 * either may win the takeover.
 *
 * Variants (each removes one fix; scripts/spin-check.sh checks that each is caught):
 *   BUG_NO_LEASE         no lease: the excluded node completes reads and acknowledges writes
 *                        whenever it runs, and the survivors fence it without waiting (issue 12
 *                        bug 1: a paused member serves a stale copy)
 *   BUG_NO_OUTWAIT       the excluded node checks its lease, but the survivors fence it without
 *                        waiting for that lease to run out (it runs out at any later moment)
 *   BUG_NO_REKEY         the survivors' regions are not re-keyed at the fence: the excluded
 *                        node's CAS, WRITE and log appends to them still land (bug 1, second half)
 *   BUG_TAKE_NO_INVAL    the takeover winner does not invalidate the live members' copies of
 *                        the words it took (bug 2)
 *   BUG_NO_CATCHUP       a survivor that missed the last barrier of a round another survivor
 *                        committed redoes the round instead of committing that view first
 *                        (bug 5, part a)
 *   BUG_ZERO_AFTER_COMMIT  each survivor zeroes its copy of the dead log at its own commit, and
 *                        nobody waits for the others' zeroing (barrier ZEROED) before
 *                        committing (bug 5, part b)
 *   BUG_NO_REPLAY        the winner does not replay the dead node's log
 *   NO_MONITOR           switch the invariant monitor off (end-to-end checks only: stale read,
 *                        replay over newer data, deadlock)
 */

#ifndef H
#define H 0
#endif
#ifndef OPS
#define OPS 2
#endif
#ifndef OPSX
#define OPSX OPS
#endif
#if H != 0 && H != 2
#error "H must be 0 or 2"
#endif

#define XN 2            /* the node that is excluded */
#define NH 0            /* new home of a word whose home is XN: the first live member after it */

/* ---- directory word ----------------------------------------------------------------
 * S bits 0-2, O bits 3-4, X bit 5, and bit 6 = DIR_CLAIM_X (a rebuilt word's exclusive
 * claim).  No version: every CAS here reads the word and swaps it in one atomic step (the
 * look and the CAS merged), so the version's job, ruling out ABA between them, does not
 * arise; invalidations use unique tokens, as in the C code, not versions. */
#define SOF(w)          ((w) & 7)
#define OOF(w)          (((w) >> 3) & 3)
#define XOF(w)          (((w) >> 5) & 1)
#define COF(w)          (((w) >> 6) & 1)
#define BIT(n)          (1 << (n))
#define MKX(o)          (((o) << 3) | 32)
#define CLAIMX(n)       (BIT(n) | 64)

#define LI 0
#define LS 1
#define LX 2

/* ---- shared state ------------------------------------------------------------------ */
byte  D;                /* the word at home H */
#if H == XN
byte  DN;               /* the word rebuilt at the new home NH (claims, then the winner) */
#endif
byte  L[3];             /* local state of each node: LI, LS, LX */
byte  inv[3];           /* invalidation word of each node (peers WRITE a new token into it) */
byte  i0[3];            /* the token inv held when the node's current tenure began */
byte  cval[3];          /* the node's cached block */
byte  store;            /* the backing store (shared storage: no fabric key guards it) */
bool  busy[3];          /* an operation holds the node's I/O lock (and the pin) */
bool  tk[3];            /* the resource was taken over here: held until the commit */
bool  fenced[3];        /* survivor s has fenced XN: its regions are re-keyed, it sends and
			 * invalidates nothing more to XN, and drops XN's requests */
bool  cm[3];            /* survivor s has committed the view without XN */
byte  lg[3];            /* XN's live log record in the copy survivor s hosts: the value of its
			 * latest logged write not yet destaged, 0 = none */
bool  leased = true;    /* XN's lease is valid */
bool  excl;             /* the survivors have excluded XN */

/* ---- ghosts ------------------------------------------------------------------------ */
byte  wcount;           /* source of fresh data values */
byte  acked;            /* value of the latest acknowledged write */

/* ---- fencing -------------------------------------------------------------------------
 * LEASE(n): n may complete a read (checked after the copy) or acknowledge a write, and its
 * service may write back and grant.  Only XN can lose it: the survivors keep a majority. */
#define LEASE(n)        ((n) != XN || leased)
/* CANREACH(n, s): n's fabric operation (CAS, WRITE, log append) on a region of node s
 * works.  The survivors re-key their regions at the fence; XN never re-keys its own. */
#ifdef BUG_NO_REKEY
#define CANREACH(n, s)  true
#else
#define CANREACH(n, s)  ((n) != XN || !fenced[s])
#endif

/* ---- which directory word a node uses ------------------------------------------------
 * WH(n): 0 = D, 1 = DN, 2 = none: the home is dead and n has not committed the new view
 * (an operation that needs the word gets -EAGAIN and waits for the view change). XN never
 * learns of the new view and goes on using D. */
#if H == XN
#define WH(n)           ((((n) == XN) || !fenced[n]) -> 0 : (cm[n] -> 1 : 2))
#define CURW(n)         ((WH(n) == 1) -> DN : D)
#define WHOME(n)        ((WH(n) == 1) -> NH : H)
#define SETW(n, v)      if :: WH(n) == 1 -> DN = (v) :: else -> D = (v) fi
#else
#define WH(n)           0
#define CURW(n)         D
#define WHOME(n)        H
#define SETW(n, v)      D = (v)
#endif
#define HASW(n)         (WH(n) != 2)

/* ---- invariants ------------------------------------------------------------------------
 * A holder counts only while it can act: XN without its lease completes nothing (its local
 * state may still say X or S).  A resource taken over (tk) is held but not usable until the
 * commit: the winner has taken the word but may not have invalidated the old copies yet. */
#define HOLDX(n)        (L[n] == LX && LEASE(n))
#define ACTX(n)         (HOLDX(n) && !tk[n])
#define READS(n)        (L[n] == LS && inv[n] == i0[n] && LEASE(n))
#define PAIR_OK(a, b)   (!(HOLDX(a) && HOLDX(b)) && !(ACTX(a) && READS(b)))
#define MUTEX_INV       (PAIR_OK(0, 1) && PAIR_OK(1, 0) && PAIR_OK(0, 2) && \
			 PAIR_OK(2, 0) && PAIR_OK(1, 2) && PAIR_OK(2, 1))

#ifndef NO_MONITOR
active proctype Monitor()
{
	bool mutual_exclusion = true;   /* named, so that a violation reads as such */
end:	do
	:: atomic { !MUTEX_INV -> mutual_exclusion = false; assert(mutual_exclusion) }
	od
}
#endif

/* ---- application: one per node ---------------------------------------------------------
 * Abstractions (docs/coherence.md says why they lose nothing the properties need):
 *  - a CAS reads the word and swaps it in one step;
 *  - a request is served in the step that sends it, when the owner's service could serve
 *    it (not pinned, not taken over, holds X, has its lease, and neither side fenced the
 *    other); otherwise the requester waits, as a queued request or an -EAGAIN does. (The
 *    code sends the grant after it drops the cache lock, but the fence waits until every
 *    grant made before it has been sent: to the claims, a grant is in flight or received,
 *    as here.)
 *  - a miss reads the block from the store (coherence.pml checks the peer-slot source): the
 *    store is current whenever the word is not exclusive, and a GRANT_S holder writes back
 *    before it grants;
 *  - operations that wait (on a dead owner, a dead home's word, a taken resource) give up
 *    the node's I/O lock while they wait, as coh_cache_yield makes them.
 */

#define RDY(n)          (!busy[n] && !tk[n])

/* the owner o's service can serve n's request now */
#define SERVEABLE(o, n) (!busy[o] && !tk[o] && L[o] == LX && LEASE(o) && WH(o) == WH(n) && \
			 ((o) != XN || !fenced[n]) && ((n) != XN || !fenced[o]))

/* retire XN's records where they are (its write-back destaged them); the lease check before
 * the write-back means the copies are reachable, except in BUG_NO_LEASE */
#define RETIRE(o)       if \
			:: (o) == XN -> \
				if :: CANREACH(XN, 0) -> lg[0] = 0 :: else fi; \
				if :: CANREACH(XN, 1) -> lg[1] = 0 :: else fi \
			:: else \
			fi

/* XN's operation meets a region re-keyed by the fence, or a survivor that drops its requests:
 * it fails, and XN (which learns it was excluded) stops serving */
#define XSTUCK(n)       ((n) == XN && \
			 ((!XOF(D) && !CANREACH(XN, H)) || \
			  (XOF(D) && OOF(D) != XN && fenced[OOF(D)])))

#define NOSEQ 255

proctype App(byte n)
{
	byte k, ret, i1, o, olds, start;
	bit ok;

	do
	:: k == ((n == XN) -> OPSX : OPS) -> break
	:: k < ((n == XN) -> OPSX : OPS) ->
		k++;
		if
		:: true ->      /* ================= READ ================= */
rd:			do
			/* a hit: copy (an S copy only while no invalidation has landed) */
			:: atomic { RDY(n) && L[n] == LX ->
				busy[n] = true; start = acked; ret = cval[n]; i1 = NOSEQ } -> break
			:: atomic { RDY(n) && L[n] == LS && inv[n] == i0[n] ->
				busy[n] = true; start = acked; ret = cval[n]; i1 = inv[n] } -> break
			:: atomic { RDY(n) && L[n] == LS && inv[n] != i0[n] -> L[n] = LI }
			/* a miss, the word not exclusive: join the sharers, read the store */
			:: atomic { RDY(n) && L[n] == LI && HASW(n) && !XOF(CURW(n)) &&
				    CANREACH(n, WHOME(n)) ->
				busy[n] = true; start = acked;
				SETW(n, CURW(n) | BIT(n));
				L[n] = LS; i0[n] = inv[n]; ret = store; cval[n] = ret; i1 = NOSEQ } -> break
			/* a miss, the word exclusive at o: REQ_S, served by o (write back,
			 * downgrade, GRANT_S); the block comes from the store o just wrote */
			:: atomic { RDY(n) && L[n] == LI && HASW(n) && XOF(CURW(n)) &&
				    OOF(CURW(n)) != n && SERVEABLE(OOF(CURW(n)), n) ->
				busy[n] = true; start = acked; o = OOF(CURW(n));
				store = cval[o]; RETIRE(o);
				SETW(n, BIT(o) | BIT(n));
				L[o] = LS;
				L[n] = LS; i0[n] = inv[n]; ret = store; cval[n] = ret; i1 = NOSEQ; o = 0 } -> break
			:: atomic { RDY(n) && L[n] == LI && XSTUCK(n) -> goto stop }
			od;
			/* after the copy: the seqlock's second load of inv (S hits), then the lease */
			atomic {
				if
				:: i1 != NOSEQ && inv[n] != i1 ->
					L[n] = LI; busy[n] = false; ret = 0; i1 = 0; start = 0; goto rd
				:: else ->
					if :: !LEASE(n) -> goto stop :: else fi;
					assert(ret >= start);           /* no stale read */
					busy[n] = false; ret = 0; i1 = 0; start = 0
				fi
			}

		:: true ->      /* ================= WRITE ================= */
			do
			:: atomic { RDY(n) && L[n] == LX -> busy[n] = true } -> break    /* lazy release */
			/* the word not exclusive: CAS it to (X, n), then invalidate the old sharers */
			:: atomic { RDY(n) && L[n] != LX && HASW(n) && !XOF(CURW(n)) &&
				    CANREACH(n, WHOME(n)) ->
				busy[n] = true; olds = SOF(CURW(n)) & ~BIT(n);
				SETW(n, MKX(n)); L[n] = LI } ->
				do
				:: olds == 0 -> break
				:: (olds & BIT(0)) != 0 ->
					atomic {
						if
						:: !CANREACH(n, 0) -> goto stop
						:: else -> inv[0]++; olds = olds & ~BIT(0)
						fi
					}
				:: (olds & BIT(1)) != 0 ->
					atomic {
						if
						:: !CANREACH(n, 1) -> goto stop
						:: else -> inv[1]++; olds = olds & ~BIT(1)
						fi
					}
				:: (olds & BIT(XN)) != 0 ->
					/* a writer skips a node it has fenced: no longer a member */
					atomic {
						if
						:: !fenced[n] -> inv[XN]++
						:: else
						fi;
						olds = olds & ~BIT(XN)
					}
				od;
				break           /* only now L := X (below, with the install) */
			/* the word exclusive at o: REQ_X, served by o (write back, CAS to (X, n),
			 * GRANT_X) */
			:: atomic { RDY(n) && L[n] != LX && HASW(n) && XOF(CURW(n)) &&
				    OOF(CURW(n)) != n && SERVEABLE(OOF(CURW(n)), n) ->
				busy[n] = true; o = OOF(CURW(n));
				store = cval[o]; RETIRE(o);
				SETW(n, MKX(n));
				L[o] = LI;
				L[n] = LX; i0[n] = inv[n]; o = 0 } -> break
			:: atomic { RDY(n) && L[n] != LX && XSTUCK(n) -> goto stop }
			od;
			/* (after the invalidations: L := X), install a fresh value, log it (XN: on
			 * both survivors' copies of its log), check the lease, acknowledge */
			atomic {
				if :: L[n] != LX -> L[n] = LX; i0[n] = inv[n] :: else fi;
				wcount++; cval[n] = wcount; ok = 1;
				if
				:: n == XN ->
					if :: CANREACH(XN, 0) -> lg[0] = wcount :: else -> ok = 0 fi;
					if :: CANREACH(XN, 1) -> lg[1] = wcount :: else -> ok = 0 fi
				:: else
				fi;
				if :: !ok || !LEASE(n) -> goto stop :: else fi;
				/* an acknowledging writer is the owner its word names */
				assert(!HASW(n) || (XOF(CURW(n)) && OOF(CURW(n)) == n));
				acked = cval[n];
				busy[n] = false; olds = 0; ok = 0
			}
		fi
	od;
	goto done;
stop:	/* XN only: excluded, it serves nothing more (-EROFS) */
	assert(n == XN);
	busy[n] = false;
done:	skip
}

/* ---- the view change, run by the survivors 0 and 1 ------------------------------------
 * One process plays both survivors: each step of a survivor is one atomic step under that
 * survivor's I/O lock (!busy[s]), and the barriers between the steps order them as in
 * engine/viewchange.c.  Where the two survivors' steps could interleave differently and
 * someone could tell, both orders are explored. */

/* claim: what survivor s holds of the rebuilt resource (an invalidated S copy is dropped) */
#define CLAIM(s)        if \
			:: L[s] == LS && inv[s] != i0[s] -> L[s] = LI \
			:: else \
			fi; \
			if \
			:: L[s] == LX -> DN = DN | CLAIMX(s) \
			:: L[s] == LS -> DN = DN | BIT(s) \
			:: else \
			fi

/* take over (coh_cache_take_over, winner w): the words naming XN as exclusive owner on a
 * live home, or the rebuilt word: an exclusive claim stands, shared claims make a shared
 * word, a word nobody claimed (or not as this round left it) becomes w's */
/* NAMED(w): whether w's copy of XN's log names the resource (a live record); the takeover
 * takes a rebuilt word nobody claimed only then (coh_cache_take_over's list): one the log does
 * not name has its content in the store and no valid copy anywhere, and stays free. */
#ifdef TAKE_NONE
#define NAMED(w)        0       /* a variant: every unclaimed word left free, even a named one */
#else
#define NAMED(w)        lg[w]
#endif
#if H == XN
#define PICK(w)         if \
			:: COF(DN) -> DN = MKX((SOF(DN) & 1) -> 0 : 1) \
			:: !COF(DN) && !XOF(DN) && SOF(DN) != 0 -> skip \
			:: !COF(DN) && XOF(DN) && OOF(DN) == (w) -> taken = 1 \
			:: DN == 0 && NAMED(w) == 0 -> skip \
			:: else -> DN = MKX(w); taken = 1 \
			fi
#else
#define PICK(w)         if \
			:: XOF(D) && OOF(D) == XN -> D = MKX(w); taken = 1 \
			:: else \
			fi
#endif

#ifdef BUG_TAKE_NO_INVAL
#define TAKE_INVAL(w)   skip
#else
/* write the invalidation word of every live member but w (the other survivor) */
#define TAKE_INVAL(w)   atomic { inv[1 - (w)]++ }
#endif

#ifdef BUG_NO_REPLAY
#define REPLAY(w)       skip
#else
/* replay XN's live record from w's copy into the store: never over a value acknowledged
 * after it */
#define REPLAY(w)       if \
			:: lg[w] != 0 -> assert(lg[w] >= acked); store = lg[w] \
			:: else \
			fi
#endif

inline takeover(w)
{
	atomic {
		!busy[w] ->
		taken = 0; nt = 0;
		PICK(w);
		if
		:: taken ->
			if
			:: L[w] != LX -> L[w] = LX; i0[w] = inv[w]; nt = 1    /* a new tenure */
			:: else
			fi;
			tk[w] = true
		:: else
		fi
	}
	if
	:: taken -> TAKE_INVAL(w)
	:: else
	fi;
	atomic {
		REPLAY(w);
		if :: nt -> cval[w] = store :: else fi;     /* the block, read after the replay */
		taken = 0; nt = 0
	}
}

#ifdef BUG_ZERO_AFTER_COMMIT
#define ZERO_AT_COMMIT(s) lg[s] = 0
#else
#define ZERO_AT_COMMIT(s) skip
#endif
/* commit at s: the rebuilt word takes effect, the taken lock is let go */
#define COMMIT(s)       tk[s] = false; cm[s] = true; ZERO_AT_COMMIT(s)

#if defined(BUG_NO_LEASE) || defined(BUG_NO_OUTWAIT)
#define OUTWAITED       true
#else
#define OUTWAITED       (!leased)
#endif

#ifdef BUG_NO_OUTWAIT
/* XN's lease runs out at some moment after its exclusion, which nobody waits for */
active proctype Lease()
{
end:	excl -> leased = false
}
#endif

proctype VC()
{
	byte w, c;
	bit taken, nt;

	/* the survivors exclude XN: it went silent (paused, cut off, or dead); nobody renews
	 * its lease any more, and it runs out */
end:	atomic {
		!excl -> excl = true;
#if !defined(BUG_NO_LEASE) && !defined(BUG_NO_OUTWAIT)
		leased = false
#endif
	};
	/* agree; fence: outwait XN's lease, re-key the regions, fence XN in the cache (each
	 * survivor; the descriptor exchange is a barrier) */
	if
	:: atomic { !busy[0] && OUTWAITED -> fenced[0] = true };
	   atomic { !busy[1] -> fenced[1] = true }
	:: atomic { !busy[1] && OUTWAITED -> fenced[1] = true };
	   atomic { !busy[0] -> fenced[0] = true }
	fi;
#if H == XN
	/* rebuild the dead home's word on NH: clear (DN is still 0), barrier CLEARED, each
	 * survivor claims, barrier FLUSHED */
	atomic { !busy[0] -> CLAIM(0) };
	atomic { !busy[1] -> CLAIM(1) };
#endif
	/* arbitrate: either survivor may win (both host a copy of XN's log) */
	if
	:: w = 0
	:: w = 1
	fi;
	takeover(w);
	/* barrier READY; every copy of XN's log is zeroed; barrier ZEROED */
#ifndef BUG_ZERO_AFTER_COMMIT
	atomic { lg[0] = 0; lg[1] = 0 };
#endif
	/* commit: one survivor first; then the other commits too (or, having missed the last
	 * barrier, restarts and catches up: it commits the view the first committed, which is
	 * the same step) */
	if
	:: atomic { !busy[0] -> COMMIT(0); c = 0 }
	:: atomic { !busy[1] -> COMMIT(1); c = 1 }
	fi;
	c = 1 - c;
	if
	:: atomic { !busy[c] -> COMMIT(c) }
#ifdef BUG_NO_CATCHUP
	:: /* c missed the last barrier and redoes the round from its own committed view, in
	    * which XN is still unfinished; the committer has nothing to rebuild or take */
#if H == XN
	   atomic { !busy[c] -> if :: c == NH -> DN = 0 :: else fi };    /* clear */
	   atomic { !busy[c] -> CLAIM(c) };                               /* claim */
#endif
	   takeover(c);    /* c is the only candidate left for XN's locks */
#ifndef BUG_ZERO_AFTER_COMMIT
	   atomic { lg[c] = 0 };
#endif
	   atomic { !busy[c] -> COMMIT(c) }
#endif
	fi;
	w = 0; c = 0
}

init
{
	atomic {
		run App(0);
		run App(1);
		run App(XN);
		run VC()
	}
}
