#!/usr/bin/env bash
# rig-test.sh - the VM rig suites (ctest label "rig"): boots the soft-RoCE guest once
# (scripts/vm.sh) and runs inside it, on the rdma provider over rxe:
#   the fabric conformance suite (the same binary as on shm), the rdma provider's smoke test
#   (including a SIGKILLed peer), the coherent cache suite, the operation engine (issue 14:
#   submit and complete, compare-and-write raced across nodes, 64 in flight per node
#   linearizable), the engine's crash trials (every
#   crash point, a full log, RAID-1 and k=2, and randomized trials, on rdma), the forced
#   races of issue 12 (a paused member fenced by its lease, deaths inside the view change), and
#   the cluster's whole life (issue 13: whole-cluster crashes and restarts, rolling shutdowns,
#   restart and rejoin), the SCSI unit on a 3-node cluster, the forwarder's and the router's
#   tests (issue 16: a killed target's commands routed again once its view excludes it, the
#   table changed online), and the host path twice, on shm and on
#   rdma (scripts/rig-frontend.sh: three cohortd exporting one volume through TCMU and LIO,
#   sg3_utils, fio across paths, controllers killed and restarted, dm-multipath, iSCSI, SIGHUP),
#   routing across two groups on each provider (scripts/rig-route.sh: a virtual volume and a
#   forwarded one through LIO, a controller killed and restarted), and the host-path demo
#   (scripts/demo-lio.sh).
#   Then, in guests of their own, a real power loss (scripts/rig-powerloss.sh), and an element
#   that fails every I/O under a writing cluster, on shm and on rdma (scripts/rig-eio.sh).
# Every suite has its own bound; vm.sh bounds the whole run. Exit status: non-zero if any fails.
#   scripts/rig-test.sh                 build if needed, then run
#   COHORT_CACHE_SEEDS=N                seeds for the cache linearizability test (default 2)
#   COHORT_RIG_TAKEOVER_TRIALS=N        randomized crash trials on rdma (default 10)
#   COHORT_RIG_LIFECYCLE_TRIALS=N       randomized whole-cluster trials on rdma (default 20)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}

if [ "${1:-}" = "--in-guest" ]; then
	# Inside the guest: COHORT_RXE_IP and COHORT_RXE_DEV come from vm.sh.
	fail=0
	suite() {
		local name=$1 limit=$2
		shift 2
		echo "=== rig: $name"
		local start=$SECONDS
		if timeout "$limit" "$@"; then
			echo "=== rig: $name: PASS ($((SECONDS - start)) s)"
		else
			echo "=== rig: $name: FAIL (status $?, $((SECONDS - start)) s)"
			fail=1
		fi
	}
	export COHORT_TEST_PROVIDER=rdma
	suite "fabric conformance (rdma on $COHORT_RXE_DEV)" 600 \
		"$build/bin/fabric_conformance_test" --gtest_brief=1
	suite "rdma smoke (3 nodes, SIGKILL)" 300 "$build/bin/rdma_smoke" \
		"$COHORT_RXE_IP:17471,$COHORT_RXE_IP:17472,$COHORT_RXE_IP:17473"
	COHORT_CACHE_SEEDS=${COHORT_CACHE_SEEDS:-2} suite "coherent cache (rdma)" 900 \
		"$build/bin/cache_test" --gtest_brief=1
	suite "operation engine (rdma)" 600 "$build/bin/engine_test" --gtest_brief=1
	COHORT_TAKEOVER_TRIALS=${COHORT_RIG_TAKEOVER_TRIALS:-10} suite "takeover (rdma)" 1200 \
		"$build/bin/takeover_test" --gtest_brief=1
	suite "races of issue 12 (rdma)" 900 "$build/bin/races_test" --gtest_brief=1
	COHORT_LIFECYCLE_TRIALS=${COHORT_RIG_LIFECYCLE_TRIALS:-20} suite "lifecycle (rdma)" 1200 \
		"$build/bin/lifecycle_test" --gtest_brief=1
	suite "SCSI units on a cluster (rdma)" 300 "$build/bin/scsi_test" --gtest_brief=1 \
		--gtest_filter='scsi_engine.*'
	# Forwarding and the router's own tests (issue 16) on three controller processes over
	# rdma: a cut connection is not a proven death there (the real-engine tests are shm's).
	suite "forwarder (rdma)" 300 "$build/bin/fwd_test" --gtest_brief=1
	suite "router (rdma)" 600 "$build/bin/router_test" --gtest_brief=1
	# The host path (issue 15): three cohortd, LIO, TCMU, tcm_loop, sg3_utils, fio,
	# dm-multipath, iSCSI; on each provider.
	COHORT_FE_PROVIDER=shm COHORT_BUILD_DIR=$build suite "host path on shm (cohortd, TCMU, LIO, multipath)" 900 \
		"$top/scripts/rig-frontend.sh" --in-guest
	COHORT_FE_PROVIDER=rdma COHORT_BUILD_DIR=$build suite "host path on rdma (cohortd, TCMU, LIO, multipath)" 900 \
		"$top/scripts/rig-frontend.sh" --in-guest
	# Routing (issue 16): two groups, a virtual volume, forwarding, a death and a restart,
	# through LIO; on each provider.
	COHORT_FE_PROVIDER=shm COHORT_BUILD_DIR=$build suite "routing on shm (two groups, cohortd, TCMU, LIO)" 600 \
		"$top/scripts/rig-route.sh" --in-guest
	COHORT_FE_PROVIDER=rdma COHORT_BUILD_DIR=$build suite "routing on rdma (two groups, cohortd, TCMU, LIO)" 600 \
		"$top/scripts/rig-route.sh" --in-guest
	COHORT_BUILD_DIR=$build suite "scripts/demo.sh --lio" 600 "$top/scripts/demo-lio.sh" --in-guest
	exit $fail
fi

if [ ! -x "$build/bin/rdma_smoke" ] || [ ! -x "$build/bin/cache_test" ] ||
	[ ! -x "$build/bin/engine_test" ] ||
	[ ! -x "$build/bin/takeover_test" ] || [ ! -x "$build/bin/races_test" ] ||
	[ ! -x "$build/bin/lifecycle_test" ] || [ ! -x "$build/bin/powerloss" ] ||
	[ ! -x "$build/bin/cohortd" ] || [ ! -x "$build/bin/cohortctl" ] || [ ! -x "$build/bin/scsi_test" ]; then
	"$top/scripts/setup.sh"
fi
[ -x "$build/bin/rdma_smoke" ] || { echo "rig-test: the rdma provider was not built" >&2; exit 1; }
# The whole run's bound: boot, and each suite's own limit is shorter than this (ctest: 3300).
rc=0
COHORT_VM_TIMEOUT=${COHORT_VM_TIMEOUT:-2700} \
	COHORT_VM_ENV="${COHORT_VM_ENV:-} COHORT_CACHE_SEEDS COHORT_RIG_TAKEOVER_TRIALS COHORT_RIG_LIFECYCLE_TRIALS" \
	"$top/scripts/vm.sh" "$top/scripts/rig-test.sh" --in-guest || rc=$?
# A power loss: two guests of its own (the first killed), bounded by their own timeouts.
COHORT_VM_TIMEOUT=600 "$top/scripts/rig-powerloss.sh" || rc=1
# An element that fails under load (device-mapper's error target), then a crash: a guest per run.
COHORT_VM_TIMEOUT=600 COHORT_EIO_PROVIDERS="shm rdma" "$top/scripts/rig-eio.sh" || rc=1
exit $rc
