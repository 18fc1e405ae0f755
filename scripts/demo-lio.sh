#!/usr/bin/env bash
# demo-lio.sh - the host path, shown (scripts/demo.sh --lio): in the VM rig's guest (the Debian
# 6.1 kernel under qemu, with LIO and TCMU), three cohortd controllers export one Cohort volume,
# each through its own TCMU backstore and tcm_loop LUN; dm-multipath makes one device of the
# three paths; fio writes it with crc32c verification and a progress line, while controller 1 is
# SIGKILLed and restarted (it reattaches to its backstore and its path comes back); then the data
# is verified through every controller alone, and a summary says what happened. Exits non-zero
# when a check fails.
#
#   scripts/demo-lio.sh             (scripts/demo.sh --lio builds first, then runs this)
#   COHORT_DEMO_MB=N                how much of the volume fio writes (default 32, at most 48)
#
# Every command and wait is bounded.
set -uo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}

# shellcheck source=cohortd-cluster.sh
. "$top/scripts/cohortd-cluster.sh"
if [ "${1:-}" != "--in-guest" ]; then
	cc_guest demo-lio "$top/scripts/demo-lio.sh"
	exit 1
fi

NODES=3
MB=${COHORT_DEMO_MB:-32}
[[ $MB =~ ^[1-9][0-9]?$ ]] && [ "$MB" -le 48 ] || {
	echo "demo-lio: COHORT_DEMO_MB wants 1..48" >&2
	exit 2
}
lio=$top/scripts/lio.sh
W=$(mktemp -d /tmp/cohort-demo.XXXXXX)
export COHORT_LIO_STATE=$W/lio.list
cd "$W" || exit 1
# shellcheck source=lio-multipath.sh
. "$top/scripts/lio-multipath.sh"
disks=()
fail=0

say() { printf '\n== %s\n' "$*"; }
die() {
	echo "demo-lio: $*" >&2
	fail=1
	exit 1
}
cleanup() {
	local i
	mpath_down
	timeout 60 "$lio" clean >/dev/null 2>&1 || echo "demo-lio: lio.sh clean left something" >&2
	for ((i = 0; i < NODES; i++)); do cc_stop "$i" TERM >/dev/null 2>&1; done
	for ((i = 0; i < NODES; i++)); do rmdir "/sys/kernel/config/target/core/user_1/demo-$i" 2>/dev/null; done
	if [ $fail = 1 ]; then
		for ((i = 0; i < NODES; i++)); do
			echo "--- controller $i log (tail)"
			tail -n 15 "$W/node$i.log" 2>/dev/null
		done
	fi
	rm -rf "$W"
}
trap cleanup EXIT
# fio_verify <disk> <log> <extra...>: the demo's one job: 4 KiB random writes over $MB MiB, QD 16,
# crc32c in every block; the same seed every time, so that --verify_only checks a later copy.
fio_verify() {
	local disk=$1 log=$2
	shift 2
	timeout 600 fio --name=demo --filename="$disk" --direct=1 --ioengine=libaio --iodepth=16 \
		--rw=randwrite --bs=4k --size="${MB}m" --verify=crc32c --verify_fatal=1 \
		--randrepeat=1 --randseed=2026 --verify_state_save=0 --output="$log" "$@"
}
writes() { # writes <id>: the controller's acknowledged writes so far
	cc_ctl "$1" --json stats 2>/dev/null | jq -r '.writes // 0'
}

say "1. Three controllers export one volume"
for m in target_core_user tcm_loop sd_mod dm_multipath dm_round_robin; do
	[ -d "/sys/module/$m" ] || timeout 60 modprobe "$m" || die "modprobe $m"
done
cc_init "$W" $NODES 32M
cc_vol0 8M 2048 2 48M demo-%n
for ((i = 0; i < NODES; i++)); do cc_start $i; done
for ((i = 0; i < NODES; i++)); do cc_wait_ready $i 1 || die "controller $i did not start"; done
for ((i = 0; i < NODES; i++)); do
	disks[i]=$(timeout 60 "$lio" loop "user_1/demo-$i" "naa.5001405d0000000$((i + 1))") ||
		die "lio.sh loop for controller $i"
done
cc_ctl 0 status
cc_ctl 0 volumes
echo "paths: controller 0 ${disks[0]}, controller 1 ${disks[1]}, controller 2 ${disks[2]}"

say "2. One multipath device over the three controllers"
mpath_up "$W" "${disks[0]}" $NODES || die "dm-multipath"
dev=/dev/mapper/$MPATH_MAP
cat "$W/mpll"

say "3. fio writes $MB MiB through $dev (crc32c in every block); controller 1 is killed and restarted"
fio_verify "$dev" "$W/fio.json" --do_verify=1 --verify_backlog=256 --output-format=json \
	--eta=always --eta-newline=3 &
fpid=$!
# Kill when fio is well under way: a quarter of its writes acknowledged (bounded at 120 s).
want=$((MB * 256 / 4))
for ((t = 0; t < 1200; t++)); do
	n=0
	for ((i = 0; i < NODES; i++)); do n=$((n + $(writes $i))); done
	[ "$n" -ge "$want" ] && break
	kill -0 $fpid 2>/dev/null || break
	sleep 0.1
done
printf '\n>> %s writes acknowledged: SIGKILL controller 1\n' "$n"
kill -KILL "${cc_pids[1]}"
wait "${cc_pids[1]}" 2>/dev/null
cc_pids[1]=
killed_at=$SECONDS
cc_start 1
cc_wait_ready 1 2 || die "controller 1 did not come back"
printf '\n>> controller 1 back after %s s: %s\n' $((SECONDS - killed_at)) "$(cc_export_state 1 vol0)"
mpath -r >/dev/null 2>&1
printf '\n>> dm-multipath: %s of %s paths active\n' "$(mpath_active)" $NODES
wait $fpid || die "fio through $dev: $(tail -n 25 "$W/fio.json")"
echo

say "4. Verification through each controller alone"
for ((i = 0; i < NODES; i++)); do
	fio_verify "${disks[i]}" "$W/verify$i.log" --verify_only ||
		die "controller $i does not return what was written: $(tail -n 20 "$W/verify$i.log")"
	echo "controller $i (${disks[i]}): every block's crc32c matches"
done

say "Summary"
jq -r '.jobs[0] | "fio through the multipath device: \(.write.total_ios) writes, \(.write.iops | floor) IOPS, completion latency p50 \(.write.clat_ns.percentile["50.000000"] / 1000 | floor) us, p99 \(.write.clat_ns.percentile["99.000000"] / 1000 | floor) us; \(.read.total_ios) blocks read back and verified"' "$W/fio.json"
echo "a controller SIGKILLed mid-run, restarted and reattached; $(mpath_active) of $NODES paths active at the end"
echo "verified: through the multipath device (fio's own pass), and through each of the $NODES controllers alone"
for ((i = 0; i < NODES; i++)); do
	cc_ctl $i --json stats | jq -r --arg i "$i" '"controller \($i): \(.writes) writes, \(.reads) reads since its start; write p50 \(.latency_ns.write.p50 / 1000 | floor) us, p99 \(.latency_ns.write.p99 / 1000 | floor) us; \(.lock_transfers) lock transfers"'
done
cc_ctl 0 status | head -n 3
echo "PASS"
