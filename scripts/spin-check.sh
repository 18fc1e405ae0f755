#!/usr/bin/env bash
# spin-check.sh - model-check the cache-coherence protocol (cache/model/coherence.pml), its
# view change (cache/model/view.pml) and the rejoin after it (cache/model/rejoin.pml) with spin;
# non-zero on any error, assertion violation, incomplete search or missed mutant.
#
#   scripts/spin-check.sh               every check below (4-6 minutes on 2 cores)
#   scripts/spin-check.sh --no-mutants  skip the mutants
#   scripts/spin-check.sh --list        print the checks and exit
#
# The checks (docs/coherence.md, "What the model checks"):
#   safety    exhaustive search (-DSAFETY) for assertion violations (no stale read, mutual
#             exclusion, directory invariants) and invalid end states (deadlock, and -q:
#             every message consumed) for (N=2,R=1), (N=3,R=1), (N=2,R=2)
#   nolivelock  non-progress-cycle search (-DNP, pan -l) in the bounded configurations:
#             there is no cycle at all, so every operation completes in every schedule
#   liveness  LTL `progress` (every invoked operation completes) under weak fairness,
#             with unboundedly many operations (-DLIVE), N=2, R=1
#   view-*    the view change (view.pml): a node excluded (dead, or paused and resumed later),
#             the lease, re-keying, directory rebuild, takeover with replay, a partial commit;
#             exhaustive safety (mutual exclusion, no stale read, no replay over newer data,
#             no deadlock) with the resource's home on a survivor (H=0) or on the excluded
#             node (H=2), and a non-progress-cycle search
#   rejoin-*  the rejoin (rejoin.pml): after that view change node 2 restarts as a new
#             incarnation and is admitted in a formation (members quiesce and destage, the
#             joiner's stale log copies are discarded, the cache opens anew, the joiner
#             starts empty and is home again) while its old incarnation may resume at any
#             moment; exhaustive safety (the same properties) with H=0 and H=2
#   mutant    the same searches on deliberately broken variants of the protocol; each
#             must produce its violation, otherwise the check is reported as FAIL
#
# Environment:
#   COHORT_SPIN_TIMEOUT=secs   per-run timeout (default 600)
#   COHORT_SPIN_MEMLIM=MB      per-run memory limit of the verifier (default 4096)
#   COHORT_SPIN_DEEP=1         also the larger runs: safety N=2,R=2,OPS=2 (about 45 M states,
#                              2-3 minutes, about 3 GB), the view change with 3 operations per
#                              process (H=2: 37 M states, under a minute, 2.3 GB) and its
#                              non-progress search with H=0; the rejoin with H=2 and 3
#                              operations for the joiner (30 M states, 40 s, 1.7 GB) or 2 for
#                              the old incarnation (33 M states, 38 s, 1.8 GB), and its
#                              non-progress search (H=2: 23 M states, 51 s, 2 GB)
#   COHORT_SPIN_KEEP=1         keep the work directory (it is always kept after a failure)
#   COHORT_SPIN_MODEL=path     check another copy of the model (e.g. one with a bug put in)
#   COHORT_SPIN_VIEW_MODEL=path  the same for the view-change model
#   COHORT_SPIN_REJOIN_MODEL=path  the same for the rejoin model
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${COHORT_SPIN_MODEL:-$top/cache/model/coherence.pml}
vmodel=${COHORT_SPIN_VIEW_MODEL:-$top/cache/model/view.pml}
rmodel=${COHORT_SPIN_REJOIN_MODEL:-$top/cache/model/rejoin.pml}
tmo=${COHORT_SPIN_TIMEOUT:-600}
memlim=${COHORT_SPIN_MEMLIM:-4096}
mutants=1
list=0
for a in "$@"; do
	case $a in
	--no-mutants) mutants=0 ;;
	--list) list=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "spin-check: unknown argument: $a" >&2
		exit 2
		;;
	esac
done

for m in "$model" "$vmodel" "$rmodel"; do
	[ -f "$m" ] || {
		echo "spin-check: no model at $m" >&2
		exit 2
	}
done

# ---- tools -------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if [ "$list" = 0 ]; then
	missing=()
	command -v spin >/dev/null 2>&1 || installed spin || missing+=(spin)
	command -v gcc >/dev/null 2>&1 || installed gcc || missing+=(gcc)
	if [ ${#missing[@]} -gt 0 ]; then
		sudo=()
		[ "$(id -u)" -eq 0 ] || sudo=(sudo)
		echo "spin-check: installing ${missing[*]}"
		apt=("${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600)
		if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}"; then
			"${apt[@]}" update
			DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}"
		fi
	fi
	command -v spin >/dev/null 2>&1 || {
		echo "spin-check: spin not found" >&2
		exit 2
	}
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-spin.XXXXXX")
keep=${COHORT_SPIN_KEEP:-0}
cleanup() {
	if [ "$keep" = 1 ]; then
		echo "spin-check: work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

summary=()
npass=0
nfail=0

# check NAME KIND EXPECT "SPIN -D flags" "extra cc flags" "pan flags"
#   KIND    safety | np | ltl  (how pan.c is compiled)
#   EXPECT  pass, or an extended regex that the verifier's report must match (a mutant)
# The model checked is $cur (coherence.pml, view.pml for the view-* checks, rejoin.pml for the
# rejoin-* checks).
cur=$model
check() {
	local name=$1 kind=$2 expect=$3 sdefs=$4 ccx=$5 panargs=$6 pml
	pml=$(basename "$cur")
	if [ "$list" = 1 ]; then
		printf '%-26s %-6s spin %-40s pan %-18s %s\n' "$name" "$kind" "$sdefs" "$panargs" "$pml"
		return 0
	fi
	local d=$work/$name cc=(-O2 -w "-DMEMLIM=$memlim")
	mkdir -p "$d"
	cp "$cur" "$d/$pml"
	case $kind in
	safety) cc+=(-DSAFETY -DCOLLAPSE) ;;
	np) cc+=(-DNP -DCOLLAPSE) ;;
	ltl) cc+=(-DNFAIR=3 -DCOLLAPSE) ;;
	esac
	# shellcheck disable=SC2206
	cc+=($ccx)
	echo "=== $name: spin $sdefs; pan $panargs"
	local t0 t1 rc=0 verdict detail
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	if ! (cd "$d" && timeout "$tmo" spin -a $sdefs "$pml" >spin.out 2>&1 &&
		timeout "$tmo" gcc "${cc[@]}" -o pan pan.c >cc.out 2>&1); then
		t1=$(date +%s.%N)
		cat "$d/spin.out" "$d/cc.out" 2>/dev/null | tail -20
		summary+=("FAIL  $name: spin/gcc failed")
		nfail=$((nfail + 1))
		keep=1
		return 0
	fi
	# shellcheck disable=SC2086
	(cd "$d" && timeout "$tmo" ./pan $panargs >pan.out 2>&1) || rc=$?
	t1=$(date +%s.%N)
	local out=$d/pan.out
	local states depth errors secs search mem
	states=$(awk '/states, stored/ {print $1; exit}' "$out")
	depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | head -1)
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | head -1)
	search=$(sed -n 's/^pan: elapsed time \([0-9.e+]*\).*/\1/p' "$out" | tail -1)
	mem=$(awk '/total actual memory usage/ {printf "%.0f", $1; exit}' "$out")
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
	detail="states=${states:-?} depth=${depth:-?} errors=${errors:-?} search=${search:-?}s total=${secs}s mem=${mem:-?}MB"
	local problem=""
	[ "$rc" = 124 ] && problem="timeout after ${tmo}s"
	grep -q 'max search depth too small' "$out" && problem="search depth too small"
	grep -qiE 'out of memory|pan: error|memory limit' "$out" && problem="verifier error: $(grep -iE 'out of memory|pan: error|memory limit' "$out" | head -1)"
	if [ "$expect" = pass ]; then
		if [ -z "$problem" ] && [ "$rc" = 0 ] && [ "${errors:-x}" = 0 ]; then
			verdict=PASS
		else
			verdict=FAIL
			[ -n "$problem" ] || problem=$(grep -m1 -E 'assertion violated|acceptance cycle|non-progress cycle|invalid end state|error' "$out" || echo "exit $rc")
			# shellcheck disable=SC2086
			(cd "$d" && spin -t -p -g $sdefs "$pml" >trail.txt 2>&1) || true
			echo "--- $name: $problem"
			echo "--- trail (last 40 lines of $d/trail.txt):"
			tail -40 "$d/trail.txt" || true
			keep=1
		fi
	else
		# a mutant: the verifier must report the expected violation
		if [ -z "$problem" ] && [ "${errors:-0}" != 0 ] && grep -qE "$expect" "$out"; then
			verdict=PASS
			problem="caught: $(grep -m1 -oE "$expect" "$out")"
		else
			verdict=FAIL
			[ -n "$problem" ] || problem="NOT caught (expected /$expect/)"
			keep=1
		fi
	fi
	echo "$verdict $detail${problem:+ ($problem)}"
	summary+=("$(printf '%s  %-26s %s%s' "$verdict" "$name" "$detail" "${problem:+  [$problem]}")")
	if [ "$verdict" = PASS ]; then npass=$((npass + 1)); else nfail=$((nfail + 1)); fi
	return 0
}

M="-m1000000"
# ---- the protocol ------------------------------------------------------------------
check safety-N2-R1-ops4 safety pass "-DN=2 -DR=1 -DOPS=4" "" "$M -q"
check safety-N3-R1-ops2 safety pass "-DN=3 -DR=1 -DOPS=2" "" "$M -q"
check safety-N2-R2-ops2x1 safety pass "-DN=2 -DR=2 -DOPS=2 -DOPS1=1" "" "$M -q"
if [ "${COHORT_SPIN_DEEP:-0}" = 1 ]; then
	check safety-N2-R2-ops2 safety pass "-DN=2 -DR=2 -DOPS=2" "" "$M -q -w26"
fi
check nolivelock-N3-R1-ops2 np pass "-DN=3 -DR=1 -DOPS=2" "" "$M -l"
check nolivelock-N2-R2-ops2x1 np pass "-DN=2 -DR=2 -DOPS=2 -DOPS1=1" "" "$M -l"
check liveness-N2-R1-unbounded ltl pass "-DN=2 -DR=1 -DLIVE" "" "$M -a -f"

# ---- the view change (view.pml): node 2 is excluded at any moment (or never) and may go on
# taking steps afterwards; H is the resource's home (0: a survivor, 2: the excluded node, so
# the word is rebuilt); OPS/OPSX are the operations of each survivor / of the excluded node
cur=$vmodel
check view-safety-H0-ops3x2 safety pass "-DH=0 -DOPS=3 -DOPSX=2" "" "$M -q"
check view-safety-H0-ops2x3 safety pass "-DH=0 -DOPS=2 -DOPSX=3" "" "$M -q"
check view-safety-H2-ops3x2 safety pass "-DH=2 -DOPS=3 -DOPSX=2" "" "$M -q"
check view-safety-H2-ops2x3 safety pass "-DH=2 -DOPS=2 -DOPSX=3" "" "$M -q"
# the takeover leaves the rebuilt words nobody claimed free unless the winner's log copy names
# them (NAMED); safety holds even with every one left free (TAKE_NONE): nobody uses a rebuilt
# word before the commit, which comes after the replay
check view-safety-H2-take-none safety pass "-DH=2 -DOPS=3 -DOPSX=2 -DTAKE_NONE" "" "$M -q"
if [ "${COHORT_SPIN_DEEP:-0}" = 1 ]; then
	check view-safety-H2-ops3x3 safety pass "-DH=2 -DOPS=3 -DOPSX=3" "" "$M -q -w26"
	check view-nolivelock-H0-ops2 np pass "-DH=0 -DOPS=2" "" "$M -l"
fi
check view-nolivelock-H2-ops2 np pass "-DH=2 -DOPS=2" "" "$M -l"

# ---- the rejoin (rejoin.pml): the view change above, then node 2's new incarnation admitted
# in a formation (at any later moment, or never) while its old one may still take steps;
# OPS/OPSX/OPSJ are the operations of each survivor / of the old incarnation / of the joiner
cur=$rmodel
check rejoin-safety-H0-ops2x2x2 safety pass "-DH=0 -DOPS=2 -DOPSX=2 -DOPSJ=2" "" "$M -q"
check rejoin-safety-H2-ops2x1x2 safety pass "-DH=2 -DOPS=2 -DOPSX=1 -DOPSJ=2" "" "$M -q"
if [ "${COHORT_SPIN_DEEP:-0}" = 1 ]; then
	check rejoin-safety-H2-ops2x1x3 safety pass "-DH=2 -DOPS=2 -DOPSX=1 -DOPSJ=3" "" "$M -q"
	check rejoin-safety-H2-ops2x2x2 safety pass "-DH=2 -DOPS=2 -DOPSX=2 -DOPSJ=2" "" "$M -q"
	check rejoin-nolivelock-H2-ops2 np pass "-DH=2 -DOPS=2 -DOPSX=1 -DOPSJ=2" "" "$M -l"
fi
cur=$model

# ---- mutants: each must be caught ----------------------------------------------------
if [ "$mutants" = 1 ]; then
	# the read-miss data source as first specified (peer slot trusted without its version)
	check mutant-orig-source safety 'assertion violated \(ret>=start\)' "-DN=3 -DOPS=2 -DORIG_SOURCE" "" "$M -q"
	# writer skips the invalidation / acknowledges before it lands (stale-read check only)
	check mutant-no-inval safety 'assertion violated \(ret>=start\)' "-DN=2 -DBUG_NO_INVAL -DNO_MONITOR" "" "$M -q"
	check mutant-early-ack safety 'assertion violated \(ret>=start\)' "-DN=2 -DBUG_EARLY_ACK -DNO_MONITOR" "" "$M -q"
	# the same skipped invalidation, caught by the mutual-exclusion invariant
	check mutant-no-inval-mutex safety 'assertion violated' "-DN=2 -DBUG_NO_INVAL" "" "$M -q"
	# home node updates its own directory word with CPU load/store, not a loopback CAS
	check mutant-home-local safety 'assertion violated' "-DN=2 -DBUG_HOME_LOCAL" "" "$M -q"
	# RETRY without refreshing the directory word: livelock
	check mutant-retry-stale np 'non-progress cycle' "-DN=2 -DBUG_RETRY_STALE" "" "$M -l"
	# an owner keeps starting local operations while requests are queued: starvation
	check mutant-no-yield ltl 'acceptance cycle' "-DN=2 -DLIVE -DNO_YIELD" "" "$M -a -f"

	# ---- the view change (issue 12): each mutant takes one fix out of view.pml
	cur=$vmodel
	# bug 1: no lease; a paused, excluded node reads its old copy after a survivor's write
	# skipped invalidating it (caught by the invariant, and end to end with it off)
	check mutant-view-no-lease safety 'assertion violated mutual_exclusion' "-DH=0 -DBUG_NO_LEASE" "" "$M -q"
	check mutant-view-no-lease-e2e safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_NO_LEASE -DNO_MONITOR" "" "$M -q"
	# bug 1: the node checks its lease, but the survivors fence it before the lease runs out
	check mutant-view-no-outwait safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_NO_OUTWAIT -DNO_MONITOR" "" "$M -q"
	# bug 1: no re-keying; the excluded node CASes a live home's word to itself after the
	# takeover, and the survivors wait forever for a node nobody hears from
	check mutant-view-no-rekey safety 'invalid end state' "-DH=0 -DBUG_NO_REKEY" "" "$M -q"
	# bug 2: the winner takes the word of a writer that died before invalidating, and does
	# not invalidate the live members; an old sharer reads its copy after a later write
	check mutant-view-take-noinv safety 'assertion violated mutual_exclusion' "-DH=0 -DBUG_TAKE_NO_INVAL" "" "$M -q"
	check mutant-view-take-noinv-e2e safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_TAKE_NO_INVAL -DNO_MONITOR" "" "$M -q"
	# bug 5: a survivor that missed the last barrier redoes a round the other committed:
	# it clears the word the committer uses, and takes it where its log copy names it (two
	# exclusive holders) or leaves it free (the committer acknowledges a write its word no
	# longer says it owns: the writer's assertion) ...
	check mutant-view-no-catchup safety 'assertion violated' "-DH=2 -DBUG_NO_CATCHUP" "" "$M -q"
	# ... and, with the dead log zeroed only at each node's own commit, replays it over the
	# committer's newer acknowledged write
	check mutant-view-partial-commit safety 'assertion violated \(lg\[.\]>=acked\)' "-DH=0 -DBUG_NO_CATCHUP -DBUG_ZERO_AFTER_COMMIT" "" "$M -q"
	# the winner does not replay the dead node's log: its acknowledged write is lost
	check mutant-view-no-replay safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_NO_REPLAY" "" "$M -q"

	# ---- the rejoin: each mutant breaks one rule of the formation that admits node 2 again
	cur=$rmodel
	# the joiner serves from the cache of its earlier life: its old S copy, which the
	# survivors stopped invalidating when they fenced it, beside a member's X (and a stale hit)
	check rejoin-mutant-keep-cache safety 'assertion violated mutual_exclusion' "-DH=0 -DBUG_KEEP_CACHE" "" "$M -q"
	check rejoin-mutant-keep-cache-e2e safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_KEEP_CACHE -DNO_MONITOR" "" "$M -q"
	# the view grows in place: the members keep their caches and destage nothing; the fresh
	# word lets the joiner take X beside a member's, and its miss reads a store that lacks the
	# member's acknowledged write
	check rejoin-mutant-no-quiesce safety 'assertion violated mutual_exclusion' "-DH=0 -DBUG_NO_QUIESCE" "" "$M -q"
	check rejoin-mutant-no-quiesce-e2e safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_NO_QUIESCE -DNO_MONITOR" "" "$M -q"
	# the formation's recovery replays a member's log copy that node 2 kept from the view it
	# was excluded from, over that member's newer acknowledged (and destaged) write
	check rejoin-mutant-replay-stale safety 'assertion violated \(lh\[.\]>=acked\)' "-DH=0 -DBUG_REPLAY_STALE" "" "$M -q"
	# node 2's lease is renewed for whichever incarnation asks: the old one, resumed after the
	# new one was admitted, reads its old copy (a survivor wrote without invalidating it)
	check rejoin-mutant-stale-lease safety 'assertion violated mutual_exclusion' "-DH=0 -DBUG_STALE_LEASE" "" "$M -q"
	check rejoin-mutant-stale-lease-e2e safety 'assertion violated \(ret>=start\)' "-DH=0 -DBUG_STALE_LEASE -DNO_MONITOR -DOPSX=2" "" "$M -q"
	cur=$model
fi

[ "$list" = 1 ] && exit 0
echo
echo "=== spin-check summary ($(spin -V 2>/dev/null | head -1))"
for s in "${summary[@]}"; do echo "$s"; done
echo "spin-check: $npass passed, $nfail failed"
[ "$nfail" = 0 ]
