#!/usr/bin/env bash
# soak-takeover.sh - thousands of randomized crash trials of the engine: the takeover suite's
# randomized test with more trials and a seed of your choice, in batches. Its mix: one death at
# any crash point, two and three deaths (the later ones during the view changes), a node paused
# past the failure detector (or briefly) with or without a death (on shm half of them a network
# cut instead, the node running on: tk_trial.cut), and, on a narrow build, long runs on 8-bit
# directory versions. The soak goes on through failures: each failing trial is
# printed with the variables that run it alone, its batch's log is kept, and the last lines give
# the trials and failures of each kind. Beside each batch run the cluster's whole life (issue 13,
# tests/lifecycle.c): whole-cluster SIGKILLs at random moments and crash points, restarted on the
# same files ("restart"), and rounds of kill, restart and rejoin of one node or two ("rejoin").
#
# Usage: scripts/soak-takeover.sh [trials (default 2000)] [first seed (default random)]
#   COHORT_SOAK_LIFECYCLE=P  whole-cluster trials, P per 100 crash trials (default 20)
#   COHORT_SOAK_REJOIN=P     rejoin trials (2-4 rounds each), P per 100 (default 5)
#   COHORT_SOAK_NARROW=1   the same trials on a narrow build too (build-narrow,
#                          -DCOHORT_VER_BITS=8; configured here if missing), batch by batch
#   COHORT_SOAK_STOP=1     stop at the first failing trial
#   COHORT_SOAK_BATCH=N    trials per batch (default 100)
#   COHORT_SOAK_LOGS=DIR   where failing batches' logs go (default /tmp/cohort-soak-<seed>)
#   COHORT_TAKEOVER_KINDS  only some kinds: one,two,three,pause,long
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
trials=${1:-2000}
seed=${2:-$RANDOM}
batch=${COHORT_SOAK_BATCH:-100}
logs=${COHORT_SOAK_LOGS:-/tmp/cohort-soak-$seed}
kinds=(one two three pause long)
builds=(build)

mkdir -p "$logs"
lc_share=${COHORT_SOAK_LIFECYCLE:-20}
rj_share=${COHORT_SOAK_REJOIN:-5}
# build DIR - bring DIR's takeover_test and lifecycle_test up to date (quiet unless it fails).
build() {
	if ! cmake --build "$top/$1" --target takeover_test lifecycle_test >"$logs/build.log" 2>&1; then
		tail -30 "$logs/build.log"
		echo "soak: building $1 failed" >&2
		exit 1
	fi
}
[ -x "$top/build/bin/takeover_test" ] || "$top/scripts/setup.sh"
build build
if [ "${COHORT_SOAK_NARROW:-0}" = 1 ]; then
	if [ ! -f "$top/build-narrow/CMakeCache.txt" ]; then
		cmake -S "$top" -B "$top/build-narrow" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
			-DCOHORT_VER_BITS=8 >/dev/null
	fi
	build build-narrow
	builds+=(build-narrow)
fi
rm -f "$logs/build.log"

declare -A ran failed
for b in "${builds[@]}"; do
	for k in "${kinds[@]}"; do
		ran[$b.$k]=0
		failed[$b.$k]=0
	done
	ran[$b.crashed]=0
	for k in restart rejoin; do
		ran[$b.$k]=0
		failed[$b.$k]=0
	done
done

# lifecycle BUILD KIND N SEED - N lifecycle trials of KIND (restart, rejoin) from SEED; they stop at
# the first failure, so the count run is that trial's. Prints the batch's line.
lifecycle() {
	local b=$1 k=$2 n=$3 sd=$4 out rc=0 t0=$SECONDS filter var at
	[ "$n" -gt 0 ] || return 0
	out="$logs/$b-$k-seed$sd.log"
	if [ "$k" = restart ]; then
		filter=lifecycle.whole_cluster_crash__randomized var=COHORT_LIFECYCLE_TRIALS
	else
		filter=lifecycle.rejoin__randomized var=COHORT_LIFECYCLE_REJOIN_TRIALS
	fi
	env "$var=$n" COHORT_LIFECYCLE_SEED="$sd" "$top/$b/bin/lifecycle_test" \
		--gtest_filter="$filter" --gtest_brief=1 >"$out" 2>&1 || rc=$?
	if [ "$rc" = 0 ]; then
		ran[$b.$k]=$((${ran[$b.$k]} + n))
		echo "=== $b $k $n trials (COHORT_LIFECYCLE_SEED=$sd): 0 failed ($((SECONDS - t0)) s)"
		rm -f "$out"
		return 0
	fi
	# The failing trial's number, from its trace ("trial I seed ..."); the whole batch if none.
	at=$(sed -n 's/.*trial \([0-9]*\) seed.*/\1/p' "$out" | tail -1)
	ran[$b.$k]=$((${ran[$b.$k]} + ${at:-$((n - 1))} + 1))
	failed[$b.$k]=$((${failed[$b.$k]} + 1))
	echo "=== $b $k $n trials (COHORT_LIFECYCLE_SEED=$sd): trial ${at:-?} failed" \
		"($((SECONDS - t0)) s); log: $out"
	grep -A3 'Failure' "$out" | head -8 | sed 's/^/    /' || true
	[ "${COHORT_SOAK_STOP:-0}" = 1 ] && stop=1
	return 0
}
max_failures=1000000
[ "${COHORT_SOAK_STOP:-0}" = 1 ] && max_failures=1
stop=0
start=$SECONDS

done_=0
while [ "$done_" -lt "$trials" ] && [ "$stop" = 0 ]; do
	n=$((trials - done_ < batch ? trials - done_ : batch))
	for b in "${builds[@]}"; do
		[ "$stop" = 0 ] || break
		out="$logs/$b-seed$seed.log"
		t0=$SECONDS
		rc=0
		COHORT_TAKEOVER_TRIALS=$n COHORT_TAKEOVER_SEED=$seed \
			COHORT_TAKEOVER_MAX_FAILURES=$max_failures \
			"$top/$b/bin/takeover_test" --gtest_filter='takeover.randomized_trials' \
			--gtest_brief=1 >"$out" 2>&1 || rc=$?
		mix=$(grep '^takeover-mix' "$out" || true)
		line="=== $b trials $done_..$((done_ + n - 1)) (COHORT_TAKEOVER_SEED=$seed):"
		bf=0
		for k in "${kinds[@]}"; do
			# kind=trials/failed/mean-ms
			f=$(sed -n "s/.* $k=\([0-9]*\)\/\([0-9]*\)\/\([0-9]*\)ms.*/\1 \2 \3/p" <<<"$mix")
			read -r kr kf km <<<"${f:-0 0 0}"
			ran[$b.$k]=$((${ran[$b.$k]} + kr))
			failed[$b.$k]=$((${failed[$b.$k]} + kf))
			bf=$((bf + kf))
			[ "$kr" = 0 ] || line+=" $k $kr/$kf (${km} ms)"
		done
		if [ -z "$mix" ]; then
			# The test itself died (no summary line): the whole batch counts as failed.
			ran[$b.crashed]=$((${ran[$b.crashed]} + 1))
			line+=" the test ended without its summary (exit $rc)"
			bf=1
		fi
		echo "$line; $bf failed ($((SECONDS - t0)) s)"
		grep '^takeover-failed' "$out" | sed 's/^/    /' || true
		if [ "$bf" = 0 ] && [ "$rc" = 0 ]; then
			rm -f "$out"
		else
			echo "    log: $out"
			[ "${COHORT_SOAK_STOP:-0}" = 1 ] && stop=1
		fi
		[ "$stop" = 0 ] || break
		lifecycle "$b" restart $(((n * lc_share + 99) / 100)) "$seed"
		[ "$stop" = 0 ] || break
		lifecycle "$b" rejoin $(((n * rj_share + 99) / 100)) "$seed"
	done
	done_=$((done_ + n))
	seed=$((seed + n))
done

status=0
for b in "${builds[@]}"; do
	total=0
	tf=0
	line=""
	for k in "${kinds[@]}"; do
		total=$((total + ${ran[$b.$k]}))
		tf=$((tf + ${failed[$b.$k]}))
		line+=" $k ${ran[$b.$k]}/${failed[$b.$k]}"
	done
	[ "${ran[$b.crashed]}" = 0 ] || line+=" crashed-batches ${ran[$b.crashed]}"
	echo "soak $b: $total crash trials, $tf failed (kind trials/failed):$line"
	lf=$((${failed[$b.restart]} + ${failed[$b.rejoin]}))
	echo "soak $b: $((${ran[$b.restart]} + ${ran[$b.rejoin]})) lifecycle trials, $lf failed:" \
		"restart ${ran[$b.restart]}/${failed[$b.restart]} rejoin ${ran[$b.rejoin]}/${failed[$b.rejoin]}"
	if [ "$tf" != 0 ] || [ "$lf" != 0 ] || [ "${ran[$b.crashed]}" != 0 ]; then
		status=1
	fi
done
echo "soak: $((SECONDS - start)) s; failing batches' logs in $logs"
rmdir "$logs" 2>/dev/null || true
exit $status
