/*
 * rejoin.pml - Promela model of a view that grows again: node 2 is excluded (it died, or it
 * paused), the survivors' view change takes it out (view.pml), and then node 2 restarts as a
 * new incarnation and is admitted in a formation of a new epoch (engine/formation.c,
 * engine/recovery.c): the members quiesce (destage what they hold, let their caches go), the
 * formation's recovery discards the log copies the joiner kept from its earlier life, the cache
 * is opened anew over the three nodes (fresh directory words, new keys), and the joiner serves
 * with an empty cache and is home of its directory word again. The old incarnation may go on
 * taking steps throughout, also after its replacement was admitted (a paused node that resumes).
 *
 * Read docs/coherence.md, "The failure model (view change)" and its subsection "Rejoin: a view
 * that grows", first. This model keeps view.pml's view change (exclusion, lease, re-keying,
 * rebuild, takeover with replay, zeroing, commit; without its bug-5 variants) and its
 * abstractions, and adds the rejoin after it.
 *
 * Configuration (spin -DNAME=VALUE):
 *   H     home of the resource's directory word: 0 (a survivor) or 2 (node 2: the word is rebuilt
 *         on node 0 by the view change, and the joiner is its home again after the rejoin)
 *                                                                       (default 0)
 *   OPS   operations of each survivor's application process, over all epochs  (default 2)
 *   OPSX  operations of node 2's old incarnation                              (default 1)
 *   OPSJ  operations of node 2's new incarnation, the joiner                 (default 2)
 *
 * Indices: 0 and 1 are the survivors (the members), 2 (XN) is node 2's old incarnation and 3
 * (JN) its new one. Both are node 2; they are apart here because the old one's state (its cache,
 * its lease, its keys) must not leak into the new one's, which is what is checked. Directory
 * words of the first two epochs name 0, 1 and 2; the word of the grown view names 0, 1 and 3.
 *
 * Variants (each breaks one rule of the rejoin; scripts/spin-check.sh checks that each is caught):
 *   BUG_KEEP_CACHE   the joiner serves from the cache of its earlier life (its level, data and
 *                    invalidation token carried over) instead of an empty one
 *   BUG_NO_QUIESCE   the view grows in place: the members keep their caches and locks and
 *                    destage nothing before the cache is opened anew over the grown view
 *   BUG_REPLAY_STALE the formation's recovery replays the copies of the members' logs that the
 *                    joiner kept from the view it was excluded from, instead of discarding them
 *   BUG_STALE_LEASE  the members renew node 2's lease without telling its incarnations apart:
 *                    the old incarnation has a lease again once the new one is admitted
 *   NO_MONITOR       switch the invariant monitor off (end-to-end checks only)
 */

#ifndef H
#define H 0
#endif
#ifndef OPS
#define OPS 2
#endif
#ifndef OPSX
#define OPSX 1
#endif
#ifndef OPSJ
#define OPSJ 2
#endif
#if H != 0 && H != 2
#error "H must be 0 or 2"
#endif

#define XN 2            /* node 2's old incarnation, the one the others exclude */
#define JN 3            /* node 2's new incarnation, the joiner */
#define NH 0            /* home of the rebuilt word while node 2 is out */
#if H == XN
#define HJ JN           /* after the rejoin node 2 (its new incarnation) is home again */
#else
#define HJ H
#endif

/* ---- directory word ----------------------------------------------------------------
 * S bits 0-3, O bits 4-5, X bit 6, and bit 7 = DIR_CLAIM_X (a rebuilt word's exclusive claim).
 * As in view.pml: no version, a CAS reads and swaps in one step, invalidations are tokens. */
#define SOF(w)          ((w) & 15)
#define OOF(w)          (((w) >> 4) & 3)
#define XOF(w)          (((w) >> 6) & 1)
#define COF(w)          (((w) >> 7) & 1)
#define BIT(n)          (1 << (n))
#define MKX(o)          (((o) << 4) | 64)
#define CLAIMX(n)       (BIT(n) | 128)

#define LI 0
#define LS 1
#define LX 2

/* ---- shared state ------------------------------------------------------------------ */
byte  D;                /* the word at home H in the first view (and node 2's old incarnation's
			 * word for ever: it never learns of the later views) */
#if H == XN
byte  DN;               /* the word rebuilt at NH while node 2 is out */
#endif
byte  DJ;               /* the word of the grown view, at HJ: the cache opened anew */
byte  L[4];             /* local state of each node: LI, LS, LX */
byte  inv[4];           /* invalidation word of each node */
byte  i0[4];            /* the token inv held when the node's current tenure began */
byte  cval[4];          /* the node's cached block */
byte  store;            /* the backing store (the RAID group) */
bool  busy[4];          /* an operation holds the node's I/O lock (and the pin) */
bool  tk[4];            /* taken over, held until the commit (survivors only) */
bool  fenced[4];        /* survivor s has fenced node 2's old incarnation (re-keyed) */
bool  cm[2];            /* survivor s has committed the view without node 2 */
byte  lg[2];            /* node 2's (old incarnation's) live record in the copy survivor s hosts */
byte  lh[2];            /* survivor w's live record in the copy of w's log that node 2 hosts:
			 * written while w has not fenced node 2; the file outlives the incarnation */
bool  qz[4];            /* member s has quiesced for the formation (destaged, cache let go) */
bool  grown;            /* the formation has committed: the view is {0, 1, node 2 (JN)} */
bool  leased = true;    /* the old incarnation's lease is valid */
bool  excl;             /* the survivors have excluded node 2 */

/* ---- ghosts ------------------------------------------------------------------------ */
byte  wcount;           /* source of fresh data values */
byte  acked;            /* value of the latest acknowledged write */

/* ---- fencing ------------------------------------------------------------------------- */
#define LEASE(n)        ((n) != XN || leased)
/* n's fabric operation on a region of node s works: the survivors re-key theirs at the fence,
 * and the formation opens every region anew (the joiner's included) under new keys, which only
 * the members of the grown view get */
#define CANREACH(n, s)  ((n) != XN || !fenced[s])

/* ---- which directory word a node uses --------------------------------------------------
 * WSEL(n): 0 = D, 1 = DN, 2 = none (the home is dead and n has not committed the view without
 * it: wait), 3 = DJ (the grown view). The old incarnation uses D for ever. */
#if H == XN
#define WH(n)           ((((n) == XN) || !fenced[n]) -> 0 : (cm[n] -> 1 : 2))
#else
#define WH(n)           0
#endif
#define WSEL(n)         (((n) == JN || (grown && (n) != XN)) -> 3 : WH(n))
#if H == XN
#define CURW(n)         ((WSEL(n) == 3) -> DJ : ((WSEL(n) == 1) -> DN : D))
#define WHOME(n)        ((WSEL(n) == 3) -> HJ : ((WSEL(n) == 1) -> NH : H))
#define SETW(n, v)      if :: WSEL(n) == 3 -> DJ = (v) :: WSEL(n) == 1 -> DN = (v) :: else -> D = (v) fi
#else
#define CURW(n)         ((WSEL(n) == 3) -> DJ : D)
#define WHOME(n)        ((WSEL(n) == 3) -> HJ : H)
#define SETW(n, v)      if :: WSEL(n) == 3 -> DJ = (v) :: else -> D = (v) fi
#endif
#define HASW(n)         (WSEL(n) != 2)

/* ---- invariants ------------------------------------------------------------------------
 * As in view.pml, over the four incarnations: a holder counts while it can act. */
#define HOLDX(n)        (L[n] == LX && LEASE(n))
#define ACTX(n)         (HOLDX(n) && !tk[n])
#define READS(n)        (L[n] == LS && inv[n] == i0[n] && LEASE(n))
#define PAIR_OK(a, b)   (!(HOLDX(a) && HOLDX(b)) && !(ACTX(a) && READS(b)))
#define PAIRS_OK(a, b)  (PAIR_OK(a, b) && PAIR_OK(b, a))
#define MUTEX_INV       (PAIRS_OK(0, 1) && PAIRS_OK(0, 2) && PAIRS_OK(0, 3) && \
			 PAIRS_OK(1, 2) && PAIRS_OK(1, 3) && PAIRS_OK(2, 3))

#ifndef NO_MONITOR
active proctype Monitor()
{
	bool mutual_exclusion = true;
end:	do
	:: atomic { !MUTEX_INV -> mutual_exclusion = false; assert(mutual_exclusion) }
	od
}
#endif

/* ---- application: one per incarnation -------------------------------------------------
 * view.pml's, with: a member's operations wait from its quiesce until the formation commits
 * (n->forming); the joiner runs only once admitted; a member's log has a copy on node 2 until
 * the member fences it. */

#define RDY(n)          (!busy[n] && !tk[n] && (!qz[n] || grown))

#define SERVEABLE(o, n) (RDY(o) && L[o] == LX && LEASE(o) && WSEL(o) == WSEL(n) && \
			 ((o) != XN || !fenced[n]) && ((n) != XN || !fenced[o]))

/* retire o's records where they are (its write-back destaged them) */
#define RETIRE(o)       if \
			:: (o) == XN -> \
				if :: CANREACH(XN, 0) -> lg[0] = 0 :: else fi; \
				if :: CANREACH(XN, 1) -> lg[1] = 0 :: else fi \
			:: (o) < 2 && !fenced[o] -> lh[o] = 0 \
			:: else \
			fi

/* append o's write of value v to its log copies (view.pml: node 2 on both survivors; here also
 * a survivor's on node 2 while it has not fenced node 2); ok = 0 if one failed */
#define APPEND(o, v)    if \
			:: (o) == XN -> \
				if :: CANREACH(XN, 0) -> lg[0] = (v) :: else -> ok = 0 fi; \
				if :: CANREACH(XN, 1) -> lg[1] = (v) :: else -> ok = 0 fi \
			:: (o) < 2 && !fenced[o] -> lh[o] = (v) \
			:: else \
			fi

#define XSTUCK(n)       ((n) == XN && \
			 ((!XOF(D) && !CANREACH(XN, H)) || \
			  (XOF(D) && OOF(D) != XN && fenced[OOF(D)])))

#define NOSEQ 255
#define NOPS(n)         (((n) == XN) -> OPSX : (((n) == JN) -> OPSJ : OPS))

proctype App(byte n)
{
	byte k, ret, i1, o, olds, start;
	bit ok;

	do
	:: k == NOPS(n) -> break
	:: k < NOPS(n) ->
		k++;
		if
		:: true ->      /* ================= READ ================= */
rd:			do
			:: atomic { RDY(n) && L[n] == LX ->
				busy[n] = true; start = acked; ret = cval[n]; i1 = NOSEQ } -> break
			:: atomic { RDY(n) && L[n] == LS && inv[n] == i0[n] ->
				busy[n] = true; start = acked; ret = cval[n]; i1 = inv[n] } -> break
			:: atomic { RDY(n) && L[n] == LS && inv[n] != i0[n] -> L[n] = LI }
			:: atomic { RDY(n) && L[n] == LI && HASW(n) && !XOF(CURW(n)) &&
				    CANREACH(n, WHOME(n)) ->
				busy[n] = true; start = acked;
				SETW(n, CURW(n) | BIT(n));
				L[n] = LS; i0[n] = inv[n]; ret = store; cval[n] = ret; i1 = NOSEQ } -> break
			:: atomic { RDY(n) && L[n] == LI && HASW(n) && XOF(CURW(n)) &&
				    OOF(CURW(n)) != n && SERVEABLE(OOF(CURW(n)), n) ->
				busy[n] = true; start = acked; o = OOF(CURW(n));
				store = cval[o]; RETIRE(o);
				SETW(n, BIT(o) | BIT(n));
				L[o] = LS;
				L[n] = LS; i0[n] = inv[n]; ret = store; cval[n] = ret; i1 = NOSEQ; o = 0 } -> break
			:: atomic { RDY(n) && L[n] == LI && XSTUCK(n) -> goto stop }
			od;
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
			:: atomic { RDY(n) && L[n] == LX -> busy[n] = true } -> break
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
					atomic {
						if
						:: !fenced[n] -> inv[XN]++
						:: else
						fi;
						olds = olds & ~BIT(XN)
					}
				:: (olds & BIT(JN)) != 0 ->
					atomic { inv[JN]++; olds = olds & ~BIT(JN) }
				od;
				break
			:: atomic { RDY(n) && L[n] != LX && HASW(n) && XOF(CURW(n)) &&
				    OOF(CURW(n)) != n && SERVEABLE(OOF(CURW(n)), n) ->
				busy[n] = true; o = OOF(CURW(n));
				store = cval[o]; RETIRE(o);
				SETW(n, MKX(n));
				L[o] = LI;
				L[n] = LX; i0[n] = inv[n]; o = 0 } -> break
			:: atomic { RDY(n) && L[n] != LX && XSTUCK(n) -> goto stop }
			od;
			atomic {
				if :: L[n] != LX -> L[n] = LX; i0[n] = inv[n] :: else fi;
				wcount++; cval[n] = wcount; ok = 1;
				APPEND(n, wcount);
				if :: !ok || !LEASE(n) -> goto stop :: else fi;
				assert(!HASW(n) || (XOF(CURW(n)) && OOF(CURW(n)) == n));
				acked = cval[n];
				busy[n] = false; olds = 0; ok = 0
			}
		fi
	od;
	goto done;
stop:	/* the old incarnation only: excluded, it serves nothing more (-EROFS) */
	assert(n == XN);
	busy[n] = false;
done:	skip
}

/* ---- the view change (view.pml), run by the survivors 0 and 1 ------------------------- */

#define CLAIM(s)        if \
			:: L[s] == LS && inv[s] != i0[s] -> L[s] = LI \
			:: else \
			fi; \
			if \
			:: L[s] == LX -> DN = DN | CLAIMX(s) \
			:: L[s] == LS -> DN = DN | BIT(s) \
			:: else \
			fi

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

inline takeover(w)
{
	atomic {
		!busy[w] ->
		taken = 0; nt = 0;
		PICK(w);
		if
		:: taken ->
			if
			:: L[w] != LX -> L[w] = LX; i0[w] = inv[w]; nt = 1
			:: else
			fi;
			tk[w] = true
		:: else
		fi
	}
	if
	:: taken -> atomic { inv[1 - (w)]++ }
	:: else
	fi;
	atomic {
		if
		:: lg[w] != 0 -> assert(lg[w] >= acked); store = lg[w]
		:: else
		fi;
		if :: nt -> cval[w] = store :: else fi;
		taken = 0; nt = 0
	}
}

#define COMMIT(s)       tk[s] = false; cm[s] = true

/* ---- the rejoin ---------------------------------------------------------------------------
 * quiesce (form_quiesce) at member s: destage what it holds (with its lease), let the cache go
 * (its place in the word released), and hold its I/O until the formation commits */
#ifdef BUG_NO_QUIESCE
#define QUIESCE(s)      qz[s] = true
#else
#define QUIESCE(s)      if \
			:: L[s] == LX -> store = cval[s]; RETIRE(s) \
			:: else \
			fi; \
			L[s] = LI; \
			SETW(s, (XOF(CURW(s)) && OOF(CURW(s)) == (s)) -> 0 : (CURW(s) & ~BIT(s))); \
			qz[s] = true
#endif

#ifdef BUG_REPLAY_STALE
/* recovery replays survivor w's copy on node 2, which is outside V* (the view it prepared) */
#define RECOVER_COPY(w) if \
			:: lh[w] != 0 -> assert(lh[w] >= acked); store = lh[w] \
			:: else \
			fi
#else
/* a copy on a node outside V* is stale: discarded, never replayed */
#define RECOVER_COPY(w) skip
#endif

proctype VC()
{
	byte w, c;
	bit taken, nt;

	/* the survivors exclude node 2 (it died, or paused, or was cut off): its lease runs out */
end:	atomic { !excl -> excl = true; leased = false };
	/* fence at each survivor, in either order; the first outwaits the lease */
	if
	:: atomic { !busy[0] -> fenced[0] = true };
	   atomic { !busy[1] -> fenced[1] = true }
	:: atomic { !busy[1] -> fenced[1] = true };
	   atomic { !busy[0] -> fenced[0] = true }
	fi;
#if H == XN
	atomic { !busy[0] -> CLAIM(0) };
	atomic { !busy[1] -> CLAIM(1) };
#endif
	if
	:: w = 0
	:: w = 1
	fi;
	takeover(w);
	atomic { lg[0] = 0; lg[1] = 0 };
	if
	:: atomic { !busy[0] -> COMMIT(0); c = 0 }
	:: atomic { !busy[1] -> COMMIT(1); c = 1 }
	fi;
	c = 1 - c;
	atomic { !busy[c] -> COMMIT(c) };
	w = 0; c = 0;

	/* node 2 restarts as a new incarnation and asks to join (CTL_JOIN); the leader, serving
	 * and not in a view change, proposes (E, {0, 1, 2}) and every node agrees. That may
	 * happen at any later moment, or never. Each member quiesces, in either order. */
end_join:
	if
	:: atomic { !busy[0] -> QUIESCE(0) };
	   atomic { !busy[1] -> QUIESCE(1) }
	:: atomic { !busy[1] -> QUIESCE(1) };
	   atomic { !busy[0] -> QUIESCE(0) }
	fi;
	/* recover (V* is the view {0, 1}: node 2's copies are stale), zero every copy, set up (new
	 * keys, a new lease for the new incarnation, the cache opened anew over {0, 1, 2} with
	 * empty words: the joiner home of its own again), commit: the joiner serves */
	atomic {
		RECOVER_COPY(0);
		RECOVER_COPY(1);
		lh[0] = 0; lh[1] = 0; lg[0] = 0; lg[1] = 0;
		DJ = 0;
#ifdef BUG_KEEP_CACHE
		L[JN] = L[XN]; cval[JN] = cval[XN]; inv[JN] = inv[XN]; i0[JN] = i0[XN];
#endif
#ifdef BUG_STALE_LEASE
		leased = true;
#endif
		grown = true;
		run App(JN)
	}
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
