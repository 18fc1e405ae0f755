#!/usr/bin/env bash
# bench-frontend.sh - the host path's latency and IOPS, beside LIO's own ramdisk in the same run:
# fio (libaio, direct, 4 KiB random reads and writes at queue depth 1 and 32) through tcm_loop on
#   lio_ramdisk   the kernel's rd_mcp backstore: LIO and tcm_loop with no userspace at all (the
#                 floor of any TCMU backstore on this kernel)
#   cohort_1c     a Cohort volume of a 3-node shm cluster of cohortd, through one controller's
#                 TCMU backstore and tcm_loop path; each write replicated into one peer's log
#                 (k = 1) before it is acknowledged
#   cohort_3c     the same volume through all three controllers: a dm-multipath device over
#                 their three paths (multibus)
#   cohort_1c_pr  a second volume of the cluster with reservations = cluster, through node 0's
#                 device for one initiator (its tcm_loop nexus): every command reads the
#                 reservation table first (no reservation is held, so none is refused); beside
#                 cohort_1c, the cost of cluster-wide reservations
# inside the VM rig's guest (scripts/vm.sh: the Debian 6.1 kernel under qemu TCG, 2 vCPUs). The
# two run one after the other on the same guest, so they share its noise.
#
#   scripts/bench-frontend.sh [--csv] [--runtime S]   (default 10 s per job)
#
# Output: a table (IOPS and latency percentiles, submission to completion, from fio's lat histogram), or with
# --csv the project's bench format: suite,op,provider,size,samples,min_ns,p50_ns,p99_ns,p999_ns,
# max_ns. The latest tables are in docs/benchmarks.md, "The host path".
set -uo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}

if [ "${1:-}" != "--in-guest" ]; then
	csv=0
	runtime=10
	while [ $# -gt 0 ]; do
		case "$1" in
		--csv) csv=1 ;;
		--runtime)
			runtime=${2:-}
			shift
			;;
		*)
			echo "usage: $0 [--csv] [--runtime S]" >&2
			exit 2
			;;
		esac
		shift
	done
	[[ $runtime =~ ^[1-9][0-9]{0,2}$ ]] || {
		echo "bench-frontend: --runtime wants 1..999 seconds" >&2
		exit 2
	}
	[ -x "$build/bin/cohortd" ] || "$top/scripts/setup.sh"
	[ -x "$build/bin/cohortd" ] || {
		echo "bench-frontend: $build/bin/cohortd not built" >&2
		exit 1
	}
	COHORT_VM_TIMEOUT=${COHORT_VM_TIMEOUT:-1200} COHORT_VM_MODULES="${COHORT_VM_MODULES:-} sd_mod" \
		COHORT_VM_ENV="${COHORT_VM_ENV:-} BENCH_CSV BENCH_RUNTIME" BENCH_CSV=$csv \
		BENCH_RUNTIME=$runtime exec "$top/scripts/vm.sh" "$top/scripts/bench-frontend.sh" --in-guest
fi

runtime=${BENCH_RUNTIME:-10}
csv=${BENCH_CSV:-0}
lio=$top/scripts/lio.sh
# shellcheck source=cohortd-cluster.sh
. "$top/scripts/cohortd-cluster.sh"
# shellcheck source=lio-multipath.sh
. "$top/scripts/lio-multipath.sh"
cfs=/sys/kernel/config/target/core
W=$(mktemp -d /tmp/cohort-bf.XXXXXX)
export COHORT_LIO_STATE=$W/lio.list
rows=()

die() {
	echo "bench-frontend: $*" >&2
	exit 1
}
cleanup() {
	local p
	mpath_down
	timeout 60 "$lio" clean >/dev/null 2>&1 || true
	for p in 0 1 2; do cc_stop $p TERM >/dev/null 2>&1; done
	rmdir "$cfs/rd_mcp_9/ram0" "$cfs/rd_mcp_9" 2>/dev/null || true
	for p in 0 1 2; do rmdir "$cfs/user_1/bench-$p" "$cfs/user_1/benchpr-$p" 2>/dev/null; done
	rm -rf "$W"
}
trap cleanup EXIT

# job <name> <disk>: the four fio jobs on <disk>, one row each (fio's JSON, read with python3).
job() {
	local name=$1 disk=$2 rw qd out
	for rw in randread randwrite; do
		for qd in 1 32; do
			out=$W/$name-$rw-$qd.json
			timeout $((runtime + 120)) fio --name=b --filename="$disk" --direct=1 \
				--ioengine=libaio --rw=$rw --bs=4k --iodepth=$qd --size=32m \
				--time_based --lat_percentiles=1 --runtime="$runtime" --ramp_time=1 --output-format=json \
				>"$out" 2>"$W/fio.err" || die "fio $rw qd$qd on $name: $(tail -n 3 "$W/fio.err")"
			rows+=("$(python3 - "$out" "$name" "$rw" "$qd" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["read"] if sys.argv[3] == "randread" else j["write"]
c = d["lat_ns"]
p = c.get("percentile", {})
def pct(k):
    return int(p.get(k, 0))
op = "%s_%s_qd%s" % (sys.argv[2], sys.argv[3][4:], sys.argv[4])
print("frontend,%s,tcmu,4096,%d,%d,%d,%d,%d,%d,%.0f" % (op, d["total_ios"], c["min"],
      pct("50.000000"), pct("99.000000"), pct("99.900000"), c["max"], d["iops"]))
EOF
)") || die "reading fio's output failed"
		done
	done
}

# The floor: LIO's ramdisk through tcm_loop.
for m in target_core_mod target_core_user tcm_loop sd_mod; do
	[ -d /sys/module/$m ] || timeout 60 modprobe $m || die "modprobe $m"
done
mkdir -p "$cfs/rd_mcp_9/ram0" || die "mkdir rd_mcp_9/ram0"
echo rd_pages=16384 >"$cfs/rd_mcp_9/ram0/control" || die "rd_mcp control"
echo 1 >"$cfs/rd_mcp_9/ram0/enable" || die "rd_mcp enable"
disk=$(timeout 60 "$lio" loop rd_mcp_9/ram0 naa.5001405b0000a001) || die "lio.sh loop (ramdisk)"
job lio_ramdisk "$disk"

# Cohort: a 3-node shm cluster, every node exporting the volume.
for m in dm_multipath dm_round_robin dm_service_time; do
	[ -d /sys/module/$m ] || timeout 60 modprobe $m || die "modprobe $m"
done
cc_init "$W" 3 64M
cc_vol0 4M 1024 4 96M bench-%n
cat >>"$CC_CONF" <<EOF

[volume volpr]
size = 32M
reservations = cluster

[export pr]
volume = volpr
device = benchpr-%n
hba = 1
initiator = naa.5001405b0000a0a1
EOF
paths=()
for i in 0 1 2; do cc_start $i; done
for i in 0 1 2; do cc_wait_ready $i 1 || die "cohortd node $i did not start"; done
for i in 0 1 2; do
	paths[i]=$(timeout 60 "$lio" loop user_1/bench-$i naa.5001405b0000a01$i) || die "lio.sh loop (cohort $i)"
done
job cohort_1c "${paths[0]}"
mpath_up "$W" "${paths[0]}" 3 || die "dm-multipath"
job cohort_3c "/dev/mapper/$MPATH_MAP"
# After the map (multipath -v2 runs once, so it does not take this disk too).
prdisk=$(timeout 60 "$lio" loop user_1/benchpr-0 naa.5001405b0000a020 naa.5001405b0000a0a1) ||
	die "lio.sh loop (cohort, reservations)"
job cohort_1c_pr "$prdisk"

# What each controller saw (the engine's own latency, cache and lock counters), before the table.
for i in 0 1 2; do
	echo "controller $i:" >&2
	cc_ctl $i stats >&2 || true
done

if [ "$csv" = 1 ]; then
	echo "suite,op,provider,size,samples,min_ns,p50_ns,p99_ns,p999_ns,max_ns"
	for r in "${rows[@]}"; do echo "${r%,*}"; done
else
	printf '%-28s %8s %10s %10s %10s %10s\n' op IOPS p50_us p99_us p99.9_us max_us
	for r in "${rows[@]}"; do
		IFS=, read -r _ op _ _ _ _ p50 p99 p999 max iops <<<"$r"
		awk -v op="$op" -v iops="$iops" -v a="$p50" -v b="$p99" -v c="$p999" -v d="$max" \
			'BEGIN { printf "%-28s %8s %10.1f %10.1f %10.1f %10.1f\n", op, iops, a / 1000, b / 1000, c / 1000, d / 1000 }'
	done
	echo "(guest: $(nproc) vCPUs, qemu TCG; fio libaio direct 4 KiB, ${runtime} s per job after 1 s ramp)"
fi
