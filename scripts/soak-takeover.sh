#!/usr/bin/env bash
# soak-takeover.sh - thousands of randomized crash trials of the engine (the takeover suite's
# randomized test with more trials and a seed of your choice), in batches so that a failure
# names its seed. Usage: scripts/soak-takeover.sh [trials (default 2000)] [first seed].
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
trials=${1:-2000}
seed=${2:-$RANDOM}
batch=100
[ -x "$top/build/bin/takeover_test" ] || "$top/scripts/setup.sh"
done_=0
while [ "$done_" -lt "$trials" ]; do
	n=$((trials - done_ < batch ? trials - done_ : batch))
	echo "=== trials $done_..$((done_ + n - 1)) (COHORT_TAKEOVER_SEED=$seed)"
	COHORT_TAKEOVER_TRIALS=$n COHORT_TAKEOVER_SEED=$seed \
		"$top/build/bin/takeover_test" --gtest_filter='takeover.randomized_trials' \
		--gtest_brief=1
	done_=$((done_ + n))
	seed=$((seed + n))
done
echo "soak: $trials trials passed"
