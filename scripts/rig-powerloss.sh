#!/usr/bin/env bash
# rig-powerloss.sh - a real power loss (issue 13): a qemu guest runs a whole 3-node cluster that
# writes, with its logs on the guest's NVDIMM (/dev/pmem0, ext4 -o dax: the DAX path) and its
# RAID-5 elements on three virtio disks backed by host files; the host SIGKILLs qemu mid-workload
# (memory, caches and kernel gone at once). A fresh guest then boots on the same NVDIMM and disk
# images, the cluster recovers, and every block is checked against the journal of acknowledged
# writes the first guest kept on an uncached 9p share (tests/powerloss.c).
# The cluster runs on the shm provider: the kernel refuses to pin pages of a DAX file system for
# RDMA, and logs that the rdma provider writes into a page-cache file are not durable against a
# power loss (docs/recovery.md, "What an acknowledgement means"; this test shows it: run it with
# COHORT_POWERLOSS_PROVIDERS=rdma, which puts the logs on ext4 without DAX, and it loses writes).
#
#   scripts/rig-powerloss.sh              build if needed, run (about 30 s)
#   COHORT_POWERLOSS_PROVIDERS=shm        which runs (shm, rdma)
#   COHORT_POWERLOSS_ACKS=N                kill after about N acknowledged writes (default: a random
#                                          number from 300 to 1500, printed)
# Exit status non-zero if any run fails. Bounded: each guest by COHORT_VM_TIMEOUT (default 600 s),
# the wait for the workload by 300 s.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}

if [ "${1:-}" = "--in-guest" ]; then
	# Inside the guest: $2 run|verify, $3 the work dir (the uncached share).
	mode=$2 work=$3
	[ -n "${COHORT_VM_DISK_DEVS:-}" ] || { echo "powerloss: no virtio disks in the guest" >&2; exit 1; }
	if [ "$COHORT_TEST_PROVIDER" = shm ]; then
		logdir=${COHORT_PMEM_DIR:-}
		[ -n "$logdir" ] || { echo "powerloss: no DAX file system on /dev/pmem0" >&2; exit 1; }
		grep -q " $logdir .*dax" /proc/mounts || { echo "powerloss: $logdir is not mounted -o dax" >&2; exit 1; }
	else
		logdir=/run/cohort-pmem-nodax
		mkdir -p "$logdir"
		if ! grep -q " $logdir " /proc/mounts; then
			[ "$(blkid -o value -s TYPE /dev/pmem0 2>/dev/null)" = ext4 ] || mkfs.ext4 -q -F -b 4096 /dev/pmem0
			mount /dev/pmem0 "$logdir"
		fi
	fi
	echo "powerloss: $mode on $COHORT_TEST_PROVIDER, logs in $logdir ($(grep " $logdir " /proc/mounts | cut -d' ' -f1,3,4)), elements $COHORT_VM_DISK_DEVS"
	exec "$build/bin/powerloss" "$mode" --dir "$logdir" --elems "$COHORT_VM_DISK_DEVS" \
		--journal "$work/journal" --elem-blocks 4096 --log-kib 1024
fi

[ -x "$build/bin/powerloss" ] || "$top/scripts/setup.sh"
[ -x "$build/bin/powerloss" ] || { echo "rig-powerloss: build/bin/powerloss was not built" >&2; exit 1; }

fail=0
# acks JOURNAL... - acknowledged writes in the journals so far.
source "$top/scripts/journal-acks.sh"

one() {
	local provider=$1 work mode pmem_mode target pid waited=0 rc
	work=$(mktemp -d "${XDG_CACHE_HOME:-/var/tmp}/cohort-powerloss.XXXXXX")
	for e in 0 1 2; do truncate -s 24M "$work/elem$e"; done
	truncate -s 256M "$work/pmem.img"
	mkdir "$work/share"
	# The shm run puts its logs on DAX; the rdma run on the same device without DAX.
	pmem_mode=fsdax
	[ "$provider" = shm ] || pmem_mode=raw
	target=${COHORT_POWERLOSS_ACKS:-$((300 + RANDOM % 1200))}
	echo "=== powerloss ($provider): life 1 writes; qemu is killed after about $target acknowledged writes (work dir $work)"
	(
		export COHORT_TEST_PROVIDER=$provider COHORT_VM_SHARE=$work/share \
			COHORT_VM_DISKS="$work/elem0 $work/elem1 $work/elem2" \
			COHORT_VM_PMEM_FILE=$work/pmem.img COHORT_VM_PMEM_MODE=$pmem_mode \
			COHORT_VM_PIDFILE=$work/qemu.pid COHORT_VM_LIO=0 COHORT_VM_QUIET=1 \
			COHORT_VM_TIMEOUT=${COHORT_VM_TIMEOUT:-600}
		exec "$top/scripts/vm.sh" "$top/scripts/rig-powerloss.sh" --in-guest run "$work/share"
	) >"$work/life1.log" 2>&1 &
	pid=$!
	while [ "$(acks "$work"/share/journal.*)" -lt "$target" ]; do
		if ! kill -0 "$pid" 2>/dev/null || [ "$waited" -ge 3000 ]; then
			echo "powerloss ($provider): life 1 ended or stalled before $target acknowledged writes:" >&2
			kill -9 "$(cat "$work/qemu.pid" 2>/dev/null)" 2>/dev/null || true
			wait "$pid" || true
			tail -n 30 "$work/life1.log" >&2
			fail=1
			return
		fi
		sleep 0.1 # polling a file the guest writes, bounded by the count above
		waited=$((waited + 1))
	done
	kill -9 "$(cat "$work/qemu.pid")"
	wait "$pid" || true
	echo "powerloss ($provider): power lost with $(acks "$work"/share/journal.*) acknowledged writes in the journals"
	echo "=== powerloss ($provider): life 2 boots a fresh guest on the same images, recovers, verifies"
	rc=0
	COHORT_TEST_PROVIDER=$provider COHORT_VM_SHARE=$work/share \
		COHORT_VM_DISKS="$work/elem0 $work/elem1 $work/elem2" \
		COHORT_VM_PMEM_FILE=$work/pmem.img COHORT_VM_PMEM_MODE=$pmem_mode COHORT_VM_LIO=0 \
		COHORT_VM_TIMEOUT=${COHORT_VM_TIMEOUT:-600} \
		"$top/scripts/vm.sh" "$top/scripts/rig-powerloss.sh" --in-guest verify "$work/share" || rc=$?
	if [ "$rc" = 0 ]; then
		echo "=== powerloss ($provider): PASS"
		rm -rf "$work"
	else
		echo "=== powerloss ($provider): FAIL (status $rc); kept $work" >&2
		fail=1
	fi
}

for p in ${COHORT_POWERLOSS_PROVIDERS:-shm}; do
	one "$p"
done
exit $fail
