#!/usr/bin/env bash
# rig-eio.sh - an element that starts failing every I/O while a whole cluster writes (real
# device-mapper in a qemu guest), then a crash of every node: no acknowledged write may be lost.
#
# In the guest, each RAID-5 element is a dm linear device over a virtio disk. A 3-node cluster
# (tests/powerloss.c, "run") writes with k = 1 and a small log, so destages run all along and
# every node's group reads and writes the elements. After some acknowledged writes, element 1's
# table is swapped for dm's `error` target: every I/O to it fails with EIO from then on, in the
# middle of whatever the nodes were doing (a read-modify-write, a replay, a parity update). The
# nodes must mark it missing, tell each other, and go on degraded. After as many acknowledged
# writes again, every node is SIGKILLed (a crash, the logs kept), and the same cluster opens again
# on the same elements, element 1 still failing ("verify"): recovery replays the logs onto the
# degraded group, and every block is checked against the journal of acknowledged writes.
#
#   scripts/rig-eio.sh                  build if needed, run (about 40 s)
#   COHORT_EIO_PROVIDERS="shm rdma"     which runs (default shm)
#   COHORT_EIO_ACKS=N                   acknowledged writes before the failure, and as many after
#                                       (default 300)
# Exit status non-zero if any run fails. Bounded: the guest by COHORT_VM_TIMEOUT (default 600 s),
# each wait for writes by 300 s.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}

# acks JOURNAL... - acknowledged writes in the journals so far.
source "$top/scripts/journal-acks.sh"

if [ "${1:-}" = "--in-guest" ]; then
	set +e
	want=${COHORT_EIO_ACKS:-300}
	[ -n "${COHORT_VM_DISK_DEVS:-}" ] || { echo "eio: no virtio disks in the guest" >&2; exit 1; }
	command -v dmsetup >/dev/null || { echo "eio: no dmsetup (package dmsetup)" >&2; exit 1; }
	dir=$(mktemp -d /dev/shm/cohort-eio.XXXXXX)
	IFS=, read -r -a devs <<<"$COHORT_VM_DISK_DEVS"
	elems=
	for i in 0 1 2; do
		sectors=$(blockdev --getsz "${devs[$i]}")
		table[$i]="0 $sectors linear ${devs[$i]} 0"
		dmsetup create "cohort-eio-$i" --table "${table[$i]}" || { echo "eio: dmsetup create failed" >&2; exit 1; }
		elems=${elems:+$elems,}/dev/mapper/cohort-eio-$i
	done
	# No udev in the guest: the device nodes are made here (else the store would create
	# regular files of those names, and nothing would fail).
	dmsetup mknodes
	for i in 0 1 2; do
		[ -b "/dev/mapper/cohort-eio-$i" ] || { echo "eio: /dev/mapper/cohort-eio-$i is not a block device" >&2; exit 1; }
	done
	cleanup() {
		pkill -9 -f "powerloss run --dir $dir" 2>/dev/null
		for i in 0 1 2; do dmsetup remove --retry "cohort-eio-$i" 2>/dev/null; done
		rm -rf "$dir"
	}
	trap cleanup EXIT
	# wait_acks N - until the journals hold N acknowledged writes; 1 when the writers stall
	# or end first (300 s).
	wait_acks() {
		local t=0
		while [ "$(acks "$dir"/journal.*)" -lt "$1" ]; do
			if ! kill -0 "$run" 2>/dev/null || [ $t -ge 3000 ]; then
				return 1
			fi
			sleep 0.1 # polling the journals the nodes write, bounded by the count above
			t=$((t + 1))
		done
	}
	echo "eio: $COHORT_TEST_PROVIDER, elements $elems over $COHORT_VM_DISK_DEVS, logs in $dir"
	"$build/bin/powerloss" run --dir "$dir" --elems "$elems" --journal "$dir/journal" \
		--elem-blocks 4096 --log-kib 1024 >"$dir/run.log" 2>&1 &
	run=$!
	disown "$run" # its SIGKILL below is the test, not news for this shell to report
	if ! wait_acks "$want"; then
		echo "eio: the cluster did not reach $want acknowledged writes before the failure" >&2
		tail -n 30 "$dir/run.log" >&2
		exit 1
	fi
	before=$(acks "$dir"/journal.*)
	# The element fails under the writers: suspend (in-flight I/O drains), swap the table for
	# one that fails every I/O, resume.
	sectors=$(blockdev --getsz "${devs[1]}")
	dmsetup suspend cohort-eio-1 && dmsetup load cohort-eio-1 --table "0 $sectors error" &&
		dmsetup resume cohort-eio-1 || { echo "eio: could not fail element 1" >&2; exit 1; }
	echo "eio: element 1 fails every I/O from now on ($before acknowledged writes so far)"
	if ! wait_acks $((before + want)); then
		echo "eio: the cluster stopped acknowledging writes after element 1 failed" \
			"($(acks "$dir"/journal.*) acknowledged):" >&2
		tail -n 30 "$dir/run.log" >&2
		exit 1
	fi
	pkill -9 -f "powerloss run --dir $dir"
	for t in $(seq 1 100); do
		pgrep -f "powerloss run --dir $dir" >/dev/null || break
		sleep 0.1 # the killed processes' exit, bounded by the count
	done
	seen=$(grep -c 'raid element 1 ' "$dir/run.log")
	echo "eio: every node killed with $(acks "$dir"/journal.*) acknowledged writes; $seen log" \
		"lines of the nodes' groups finding element 1 failed"
	grep -m 3 'raid element 1 ' "$dir/run.log"
	if [ "$seen" = 0 ]; then
		echo "eio: no node found element 1 failed: nothing was tested" >&2
		tail -n 20 "$dir/run.log" >&2
		exit 1
	fi
	echo "eio: the cluster opens again on the same elements (element 1 still failing) and verifies"
	# INFO lines too: a verify that fails says which node was where (powerloss bounds itself
	# below the guest's timeout), and its log says what the cluster was doing.
	COHORT_LOG_LEVEL=2 "$build/bin/powerloss" verify --dir "$dir" --elems "$elems" \
		--journal "$dir/journal" --elem-blocks 4096 --log-kib 1024 2>"$dir/verify.log"
	rc=$?
	[ $rc = 0 ] || tail -n 80 "$dir/verify.log" >&2
	exit $rc
fi

[ -x "$build/bin/powerloss" ] || "$top/scripts/setup.sh"
[ -x "$build/bin/powerloss" ] || { echo "rig-eio: build/bin/powerloss was not built" >&2; exit 1; }

fail=0
for p in ${COHORT_EIO_PROVIDERS:-shm}; do
	work=$(mktemp -d "${XDG_CACHE_HOME:-/var/tmp}/cohort-eio.XXXXXX")
	for e in 0 1 2; do truncate -s 24M "$work/elem$e"; done
	echo "=== eio ($p): element 1 fails under a writing cluster, then every node crashes"
	rc=0
	COHORT_TEST_PROVIDER=$p COHORT_VM_DISKS="$work/elem0 $work/elem1 $work/elem2" \
		COHORT_VM_LIO=0 COHORT_VM_PMEM=0 COHORT_VM_MODULES="dm_mod" \
		COHORT_VM_TIMEOUT=${COHORT_VM_TIMEOUT:-600} \
		"$top/scripts/vm.sh" "$top/scripts/rig-eio.sh" --in-guest || rc=$?
	rm -rf "$work"
	if [ "$rc" = 0 ]; then
		echo "=== eio ($p): PASS"
	else
		echo "=== eio ($p): FAIL (status $rc)" >&2
		fail=1
	fi
done
exit $fail
