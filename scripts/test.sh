#!/usr/bin/env bash
# test.sh - install what is needed, build, and run every test suite; non-zero on any failure.
#
#   scripts/test.sh            release build: unit, fabric (shm conformance), cache, takeover (200
#                              randomized crash trials, every crash point, the forced races of
#                              issue 12), then a build with 8-bit directory versions (wraps every
#                              256 handovers) running the cache and takeover suites, then the
#                              sanitizer builds (ASAN+UBSAN, TSAN) of the same suites (takeover
#                              with fewer trials), bounded libFuzzer runs, then the VM rig suites
#   COHORT_TAKEOVER_TRIALS=N   randomized crash trials in the release run (default 200);
#                              scripts/soak-takeover.sh runs thousands
#   COHORT_LIFECYCLE_TRIALS=N  randomized whole-cluster crash-and-restart trials (default 200)
#   COHORT_TEST_FAST=1         only the release build's suites
#   COHORT_TEST_NO_RIG=1       skip the VM rig (rdma provider on soft-RoCE)
#   COHORT_TEST_NO_SAN=1       skip the sanitizer build
#
# Every suite is bounded: ctest has per-test timeouts, and the rig has its own overall timeout.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
jobs=$(nproc)
fail=0
summary=()

details=()
steplog=$(mktemp /tmp/cohort-test-step.XXXXXX)
trap 'rm -f "$steplog"' EXIT

# run NAME CMD... - one step; a failing step's telling lines (failed tests, sanitizer reports,
# assertion messages) are kept for the end, where a CI log that shows only its tail still has them.
run() {
	local name=$1
	shift
	local start=$SECONDS rc=0
	echo "=== $name"
	"$@" 2>&1 | tee "$steplog" || rc=${PIPESTATUS[0]}
	if [ "$rc" = 0 ]; then
		summary+=("PASS  $name ($((SECONDS - start)) s)")
	else
		summary+=("FAIL  $name ($((SECONDS - start)) s)")
		details+=("--- $name (status $rc):")
		# (|| true: a pattern found nowhere fails the pipeline, and under set -e that would
		# end this script here, before its summary.)
		details+=("$(grep -aE '^\[  FAILED  \] [a-z_]+\.|: Failure$|ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error|=== (rig:|eio|powerloss) .*FAIL|[0-9]+ - .* \((Failed|Timeout|SEGFAULT|Subprocess aborted|Child aborted|Exception)\)|^vm: error' "$steplog" |
			awk '!seen[$0]++' | head -n 8 | cut -c1-200 || true)")
		# What the failing test said just before its assertion: the scenario's own reason.
		details+=("$(grep -aB6 ': Failure$' "$steplog" | grep -avE '^(\[|--$|.*: Failure$|Expected|  Actual|Which is|Value of)' |
			grep -avE 'cohort\[[0-9]*\] (info|debug)' | awk '!seen[$0]++' | tail -n 10 | cut -c1-200 || true)")
		fail=1
	fi
}

COHORT_CMAKE_ARGS="-DCOHORT_WERROR=ON ${COHORT_CMAKE_ARGS:-}" scripts/setup.sh

run "format" scripts/check-format.sh
if [ -x scripts/spin-check.sh ]; then
	run "spin model of the coherence protocol" scripts/spin-check.sh
fi
run "ctest unit+fabric+cache+frontend (release)" \
	ctest --test-dir build -L 'unit|fabric|cache|frontend' --output-on-failure -j "$jobs"
run "ctest takeover (release, ${COHORT_TAKEOVER_TRIALS:-200} randomized crash trials, ${COHORT_LIFECYCLE_TRIALS:-200} whole-cluster trials)" \
	env COHORT_TAKEOVER_TRIALS="${COHORT_TAKEOVER_TRIALS:-200}" \
	COHORT_LIFECYCLE_TRIALS="${COHORT_LIFECYCLE_TRIALS:-200}" \
	COHORT_LIFECYCLE_REJOIN_TRIALS="${COHORT_LIFECYCLE_REJOIN_TRIALS:-20}" \
	ctest --test-dir build -L takeover --output-on-failure

if [ "${COHORT_TEST_FAST:-0}" != 1 ]; then
	run "build (8-bit directory versions)" bash -c "cmake -S . -B build-narrow -G Ninja \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOHORT_VER_BITS=8 -DCOHORT_WERROR=ON >/dev/null && \
		cmake --build build-narrow -j $jobs --target cache_test takeover_test races_test \
		lifecycle_test"
	run "cache, takeover, races, lifecycle (8-bit versions, ${COHORT_TAKEOVER_TRIALS:-200} trials)" \
		env COHORT_TAKEOVER_TRIALS="${COHORT_TAKEOVER_TRIALS:-200}" COHORT_LIFECYCLE_TRIALS=50 \
		bash -c "build-narrow/bin/cache_test --gtest_brief=1 && build-narrow/bin/races_test \
		--gtest_brief=1 && build-narrow/bin/takeover_test --gtest_brief=1 && \
		build-narrow/bin/lifecycle_test --gtest_brief=1"
	if [ "${COHORT_TEST_NO_SAN:-0}" != 1 ]; then
		run "build (ASAN+UBSAN)" bash -c "cmake -S . -B build-asan -G Ninja \
			-DCMAKE_BUILD_TYPE=Debug -DCOHORT_ASAN=ON -DCOHORT_UBSAN=ON -DCOHORT_WERROR=ON \
			>/dev/null && cmake --build build-asan -j $jobs"
		run "ctest unit+fabric+cache (ASAN+UBSAN)" \
			ctest --test-dir build-asan -L 'unit|fabric|cache' --output-on-failure -j "$jobs"
		run "takeover, races, lifecycle (ASAN+UBSAN, 10 randomized trials each)" \
			env COHORT_TAKEOVER_TRIALS=10 COHORT_LIFECYCLE_TRIALS=10 bash -c \
			"build-asan/bin/takeover_test && build-asan/bin/races_test --gtest_brief=1 && \
			build-asan/bin/lifecycle_test --gtest_brief=1"
		run "build (TSAN)" bash -c "cmake -S . -B build-tsan -G Ninja \
			-DCMAKE_BUILD_TYPE=Debug -DCOHORT_TSAN=ON -DCOHORT_WERROR=ON \
			>/dev/null && cmake --build build-tsan -j $jobs"
		run "ctest unit+fabric+cache (TSAN)" \
			ctest --test-dir build-tsan -L 'unit|fabric|cache' --output-on-failure -j "$jobs"
		run "takeover, races, lifecycle (TSAN, 10 randomized trials each)" \
			env COHORT_TAKEOVER_TRIALS=10 COHORT_LIFECYCLE_TRIALS=10 \
			TSAN_OPTIONS=halt_on_error=1 bash -c \
			"build-tsan/bin/takeover_test --gtest_brief=1 && build-tsan/bin/races_test \
			--gtest_brief=1 && build-tsan/bin/lifecycle_test --gtest_brief=1"
		if command -v clang >/dev/null; then
			run "libFuzzer (clang, bounded)" bash -c "CC=clang CXX=clang++ cmake -S . \
				-B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOHORT_FUZZ=ON \
				>/dev/null && cmake --build build-fuzz -j $jobs --target fuzz_wire \
				fuzz_engine fuzz_tcmu fuzz_scsi fuzz_conf fuzz_ctl fuzz_route fuzz_fwd && ctest --test-dir build-fuzz \
				-R 'fuzz_wire_libfuzzer|fuzz_engine_libfuzzer|fuzz_tcmu_libfuzzer|fuzz_scsi_libfuzzer|fuzz_conf_libfuzzer|fuzz_ctl_libfuzzer|fuzz_route_libfuzzer|fuzz_fwd_libfuzzer' --output-on-failure"
		fi
	fi
	if [ "${COHORT_TEST_NO_RIG:-0}" != 1 ] && [ -x scripts/rig-test.sh ]; then
		run "VM rig (rdma on soft-RoCE)" scripts/rig-test.sh
	fi
fi

echo
# What failed, then the summary: a log cut to its tail still shows both.
if [ ${#details[@]} -gt 0 ]; then
	echo "=== what failed"
	printf '%s\n' "${details[@]}"
	echo
fi
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $fail
