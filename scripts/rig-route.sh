#!/usr/bin/env bash
# rig-route.sh - routing's rig suite (issue 16): a Linux host in the VM rig reaches volumes of two
# redundancy groups through any of three controllers, over LIO, TCMU and cohortd's router, on the
# real 6.1 kernel. The config is docs/examples/cohort-routed-shm.conf (paths moved): group ga
# cabled to nodes 0-1, gb to nodes 1-2, logical volumes on each, a virtual volume vs striped
# over sa (ga) and sb (gb) in 64 KiB chunks.
#
#   scripts/rig-route.sh              boot a guest (scripts/vm.sh) and run the steps there
#   scripts/rig-route.sh --in-guest   the steps, inside the guest (scripts/rig-test.sh calls
#                                     this in its own boot, once per provider)
#   COHORT_FE_PROVIDER=shm|rdma       the fabric: shm (the default) or rdma over the guest's rxe0
#
# Steps, in order (a line and PASS/FAIL for each; exit non-zero on any failure):
#   a. modules; three cohortd from the routed config, each exporting vs, lb and sb as TCMU
#      backstores; tcm_loop LUNs: vs through every node (V0, V1, V2), lb through nodes 0 and 1
#      (L0, L1: node 0 is no AMF of gb), sb through node 1 (S1); cohortctl map on every node
#   b. identity: vs has one serial on every path, the volume id cohortctl map shows; READ
#      CAPACITY(16) is each volume's size (vs the sum of its components); READ(16) past the end
#      gets ILLEGAL REQUEST, LBA OUT OF RANGE; COMPARE AND WRITE on vs (in a chunk of group gb,
#      through node 0) and on lb (forwarded by node 0) succeeds with the right compare data,
#      reads back through another node at once, and MISCOMPAREs there with stale data; across
#      two chunks of vs (two groups) it is refused with ILLEGAL REQUEST; a READ(16) of 2 blocks
#      into a 4 KiB buffer returns the first block, GOOD (LIO reports the residual)
#   c. fio --verify=crc32c (direct, QD 16, 4 KiB random writes over 4 MiB of vs) through V0, then
#      verified through V2 and V1 and compared with dd; vs's second 64 KiB chunk is sb's first
#      (read through S1: the stripe lands on group gb); fio verify on lb through L0 (every command
#      forwarded) and through L1; node 0's router counts forwarded and component commands, and
#      another node counts commands it executed for others
#   d. node 2 (gb's preferred AMF) SIGKILLed while fio writes and verifies through V0: fio
#      completes (gb's components go to node 1 after the takeover); both groups' views are
#      nodes 0 and 1; step c's data still verifies through V1 and lb's through L0
#      (it is paused first until node 0 forwards nothing more, so that commands are in flight
#      there: they must be routed again, on shm at once, on rdma once gb's view excludes it)
#   e. node 2 started again: it rejoins both groups, every forwarder connects to it again, its
#      backstores are reattached; step c's data verifies through it, and what fio writes
#      through it verifies through node 0
#   f. the mapping table changed online while fio writes and verifies vs through node 0: a
#      volume nv added on group gb through node 2 and grown through node 1 (cohortctl map), fio
#      completes; every node has the new table; [export nv] added and SIGHUP: nv attached on
#      nodes 0 and 2 with its grown size and a serial of its own; fio verify writes it through
#      node 0 (no AMF of gb: forwarded) and verifies it through node 2. Then nv is grown again
#      with no SIGHUP: both paths report the new size (READ CAPACITY; the block device after a
#      rescan), and its new blocks written through node 0 verify through node 2
#   g. cohortctl stop: every daemon exits 0
# Every command is bounded with timeout. Uses $COHORT_BUILD_DIR/bin/cohortd and cohortctl.
set -uo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}

# shellcheck source=cohortd-cluster.sh
. "$top/scripts/cohortd-cluster.sh"
if [ "${1:-}" != "--in-guest" ]; then
	cc_guest rig-route "$top/scripts/rig-route.sh"
	exit 1
fi

NODES=3
HBA=2
PROVIDER=${COHORT_FE_PROVIDER:-shm}
lio=$top/scripts/lio.sh
W=$(mktemp -d /tmp/cohort-route.XXXXXX)
export COHORT_LIO_STATE=$W/lio.list
cd "$W" || exit 1 # fio leaves its files here
declare -A disk
nloop=0
fail=0

say() { echo "=== route: $*"; }
bad() {
	echo "route: $*" >&2
	return 1
}
step() {
	local name=$1 start=$SECONDS
	shift
	say "$name"
	if "$@"; then
		say "$name: PASS ($((SECONDS - start)) s)"
		return 0
	fi
	say "$name: FAIL ($((SECONDS - start)) s)"
	fail=1
	return 1
}

cleanup() {
	local i v
	timeout 60 "$lio" clean || echo "route: lio.sh clean left something" >&2
	for ((i = 0; i < NODES; i++)); do cc_stop "$i" TERM || true; done
	for ((i = 0; i < NODES; i++)); do
		for v in vs lb sb nv; do
			rmdir "/sys/kernel/config/target/core/user_$HBA/route-$v-$i" 2>/dev/null || true
		done
	done
	if [ $fail = 1 ]; then
		for ((i = 0; i < NODES; i++)); do
			echo "--- node $i log (tail)"
			tail -n 30 "$W/node$i.log" 2>/dev/null
		done
	fi
	rm -rf "$W"
}
trap cleanup EXIT

# ---------------------------------------------------------------- a
# route_conf: the example with its paths moved into $W, this provider's addresses, no [export]
# sections of its own (they follow, on hba $HBA), control sockets in $W/run.
route_conf() {
	local address=$W/cluster i
	if [ "$PROVIDER" = rdma ]; then
		address=
		for ((i = 0; i < NODES; i++)); do address+="${address:+,}${COHORT_RXE_IP:?no rxe address}:$((17500 + i))"; done
	fi
	head -c 32 /dev/urandom >"$W/secret"
	chmod 0600 "$W/secret"
	mkdir -p "$W/data" "$W/run"
	chmod 0700 "$W/run"
	CC_DIR=$W
	CC_CONF=$W/cohort.conf
	sed -e '/^\[export /,$d' \
		-e "s|^provider = shm|provider = $PROVIDER|" \
		-e "s|^address = /dev/shm/cohort-demo.*|address = $address|" \
		-e "s|/etc/cohort/secret|$W/secret|" \
		-e "s|/var/lib/cohort|$W/data|" \
		"$top/docs/examples/cohort-routed-shm.conf" >"$CC_CONF"
	# fence = lease on both providers, as cohortd-cluster.sh has it
	sed -i -e 's/^timeout_ms = 2000/timeout_ms = 2000\nfence = lease/' "$CC_CONF"
	for v in vs lb sb; do
		printf '\n[export %s]\nvolume = %s\ndevice = route-%s-%%n\nhba = %s\ncmd_time_out = 10\n' \
			"$v" "$v" "$v" "$HBA" >>"$CC_CONF"
	done
	printf '\n[daemon]\ncontrol = %s/run/route-%%n.sock\n' "$W" >>"$CC_CONF"
}
# loop <name> <node> <volume>: a tcm_loop LUN over node's backstore of the volume.
loop() {
	local d
	nloop=$((nloop + 1))
	d=$(timeout 60 "$lio" loop "user_$HBA/route-$3-$2" "naa.5001405c0e0b$(printf '%02x%02x' "$2" "$nloop")") ||
		bad "lio.sh loop for $3 on node $2 failed" || return 1
	disk[$1]=$d
}
step_setup() {
	local i m st v
	for m in target_core_user tcm_loop sd_mod; do
		[ -d "/sys/module/$m" ] || timeout 60 modprobe "$m" || bad "modprobe $m" || return 1
	done
	route_conf
	timeout 30 "$build/bin/cohortd" -c "$CC_CONF" --node 0 --check >"$W/check.log" 2>&1 ||
		bad "cohortd --check: $(cat "$W/check.log")" || return 1
	for ((i = 0; i < NODES; i++)); do cc_start "$i"; done
	for ((i = 0; i < NODES; i++)); do cc_wait_ready "$i" 1 || return 1; done
	for ((i = 0; i < NODES; i++)); do
		for v in vs lb sb; do
			st=$(cc_export_state "$i" "$v")
			[[ $st == "attached "* ]] || bad "node $i: export $v: $st" || return 1
		done
	done
	loop V0 0 vs && loop V1 1 vs && loop V2 2 vs && loop L0 0 lb && loop L1 1 lb && loop S1 1 sb || return 1
	cc_ctl 0 map
	echo "route: V0=${disk[V0]} V1=${disk[V1]} V2=${disk[V2]} L0=${disk[L0]} L1=${disk[L1]} S1=${disk[S1]}"
}

# ---------------------------------------------------------------- b
serial_of() { timeout 30 sg_inq -p 0x80 "$1" | sed -n 's/.*[Ss]erial [Nn]umber: *//p' | tr -d ' '; }
last_lba() { timeout 30 sg_readcap -l "$1" | sed -n 's/.*Last LBA=\([0-9]*\).*/\1/p' | head -n1; }
step_identity() {
	local id s k out lba rc a2 b2 v
	id=$(cc_ctl 0 --json map | jq -r '.volumes[] | select(.name == "vs") | .id')
	[ -n "$id" ] || bad "cohortctl map has no vs" || return 1
	for k in V0 V1 V2; do
		s=$(serial_of "${disk[$k]}")
		[ "${s,,}" = "$id" ] || bad "$k: serial $s is not vs's id $id" || return 1
	done
	s=$(serial_of "${disk[L0]}")
	[ "${s,,}" != "$id" ] || bad "lb has vs's serial" || return 1
	[ "$(last_lba "${disk[V0]}")" = 8191 ] || bad "vs: last LBA $(last_lba "${disk[V0]}"), not 8191 (2 x 16 MiB)" || return 1
	[ "$(last_lba "${disk[L1]}")" = 2047 ] || bad "lb: last LBA $(last_lba "${disk[L1]}"), not 2047 (8 MiB)" || return 1
	echo "route: vs has serial $id on every path, 8192 blocks; lb 2048 blocks"
	lba=$(printf '%016x' 8192 | sed 's/../& /g')
	out=$(timeout 30 sg_raw -r 4096 "${disk[V1]}" 88 00 $lba 00 00 00 01 00 00 2>&1)
	grep -qi 'illegal request' <<<"$out" && grep -qiE 'out of range|21h|0x21' <<<"$out" ||
		bad "READ(16) past vs's end: $out" || return 1
	echo "route: READ(16) past the end: LBA out of range"
	# COMPARE AND WRITE at LBA 20 of vs (its second chunk: group gb, whose preferred AMF is node
	# 2) through node 0, and at LBA 5 of lb through node 0 (forwarded): right compare data,
	# then stale compare data through another node
	local k lbad
	for k in "V0 V2 vs 20" "L0 L1 lb 5"; do
		read -r a2 b2 v lbad <<<"$k"
		head -c 4096 /dev/urandom >"$W/old"
		head -c 4096 /dev/urandom >"$W/new"
		cat "$W/old" "$W/new" >"$W/caw"
		timeout 30 dd if="$W/old" of="${disk[$a2]}" bs=4096 seek="$lbad" oflag=direct conv=notrunc status=none ||
			bad "dd write at LBA $lbad of $v" || return 1
		timeout 30 sg_compare_and_write --in="$W/caw" --lba="$lbad" --num=1 --xferlen=8192 "${disk[$a2]}" ||
			bad "COMPARE AND WRITE on $v through $a2 with the right data failed" || return 1
		cmp -s <(timeout 30 dd if="${disk[$b2]}" bs=4096 skip="$lbad" count=1 iflag=direct status=none) "$W/new" ||
			bad "$b2 does not read what COMPARE AND WRITE wrote through $a2" || return 1
		out=$(timeout 30 sg_compare_and_write --in="$W/caw" --lba="$lbad" --num=1 --xferlen=8192 "${disk[$b2]}" 2>&1)
		rc=$?
		[ $rc = 14 ] || bad "COMPARE AND WRITE on $v with stale data through $b2: status $rc, not 14 (MISCOMPARE): $out" || return 1
		cmp -s <(timeout 30 dd if="${disk[$a2]}" bs=4096 skip="$lbad" count=1 iflag=direct status=none) "$W/new" ||
			bad "a miscompare on $v changed the data" || return 1
		cp "$W/new" "$W/new.$v"
		echo "route: COMPARE AND WRITE on $v: success through $a2, MISCOMPARE through $b2"
	done
	# READ(16) of 2 blocks into a 4 KiB buffer (LIO passes the overflow on as the residual): the
	# unit returns the first block, GOOD
	lba=$(printf '%016x' 20 | sed 's/../& /g')
	timeout 30 sg_raw -r 4096 -o "$W/short" "${disk[V1]}" 88 00 $lba 00 00 00 02 00 00 >"$W/short.log" 2>&1 ||
		bad "READ(16) of 2 blocks into 4 KiB: $(cat "$W/short.log")" || return 1
	cmp -s "$W/short" "$W/new.vs" || bad "READ(16) into a short buffer: not the block's data: $(cat "$W/short.log")" || return 1
	echo "route: READ(16) of 2 blocks into a 4 KiB buffer: GOOD, the first block"
	# across two chunks of vs (two groups): refused, nothing written
	head -c 16384 /dev/zero >"$W/caw2"
	out=$(timeout 30 sg_compare_and_write --in="$W/caw2" --lba=15 --num=2 --xferlen=16384 "${disk[V1]}" 2>&1)
	rc=$?
	[ $rc != 0 ] && grep -qi 'illegal request' <<<"$out" ||
		bad "COMPARE AND WRITE across two chunks of vs: status $rc: $out" || return 1
	echo "route: COMPARE AND WRITE across two chunks of vs (two groups): ILLEGAL REQUEST"
}

# ---------------------------------------------------------------- c
fio_job() { # fio_job <dev> <size> <extra args...>
	local dev=$1 size=$2
	shift 2
	timeout 300 fio --name=route --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 \
		--rw=randwrite --bs=4k --size="$size" --verify=crc32c --verify_fatal=1 \
		--randrepeat=1 --randseed=4711 --verify_state_save=0 --output="$W/fio.log" "$@"
}
step_io() {
	local a o c0 c1
	fio_job "${disk[V0]}" 4m --do_verify=1 || bad "fio on vs through V0: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[V2]}" 4m --verify_only || bad "fio --verify_only on vs through V2: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[V1]}" 4m --verify_only || bad "fio --verify_only on vs through V1: $(tail -n 20 "$W/fio.log")" || return 1
	cmp <(timeout 60 dd if="${disk[V0]}" bs=1M count=4 iflag=direct status=none) \
		<(timeout 60 dd if="${disk[V2]}" bs=1M count=4 iflag=direct status=none) ||
		bad "V0 and V2 read different data" || return 1
	# the stripe: vs's chunk 1 (64 KiB from 64 KiB) is sb's chunk 0
	cmp <(timeout 60 dd if="${disk[V1]}" bs=64k skip=1 count=1 iflag=direct status=none) \
		<(timeout 60 dd if="${disk[S1]}" bs=64k count=1 iflag=direct status=none) ||
		bad "vs's second chunk is not sb's first" || return 1
	echo "route: vs written through node 0, verified through nodes 2 and 1; its chunk 1 is sb's chunk 0"
	# 1 MiB at once through node 2: the unit's 128-block pieces each span eight chunks of both
	# groups, split by the coordinator (node 0) into one component command per group
	c0=$(cc_ctl 0 --json map | jq .routing.components)
	head -c 1048576 /dev/urandom >"$W/mib"
	timeout 60 dd if="$W/mib" of="${disk[V2]}" bs=1M seek=8 oflag=direct conv=notrunc status=none ||
		bad "dd of 1 MiB through V2" || return 1
	cmp "$W/mib" <(timeout 60 dd if="${disk[V0]}" bs=1M skip=8 count=1 iflag=direct status=none) ||
		bad "V0 does not read the MiB written through V2" || return 1
	c1=$(cc_ctl 0 --json map | jq .routing.components)
	[ $((c1 - c0)) -ge 4 ] || bad "the coordinator split $((c1 - c0)) commands of the MiB, not at least 4" || return 1
	echo "route: 1 MiB through node 2 read back through node 0; the coordinator split $((c1 - c0)) commands into components"
	fio_job "${disk[L0]}" 4m --do_verify=1 || bad "fio on lb through L0: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[L1]}" 4m --verify_only || bad "fio --verify_only on lb through L1: $(tail -n 20 "$W/fio.log")" || return 1
	a=$(cc_ctl 0 --json map) || bad "cohortctl map on node 0: $a" || return 1
	jq -e '.routing.forwarded >= 2048' <<<"$a" >/dev/null ||
		bad "node 0's router did not count lb's commands as forwarded: $(jq -c .routing <<<"$a")" || return 1
	o=$(($(cc_ctl 1 --json map | jq .routing.executed_for_others) + $(cc_ctl 2 --json map | jq .routing.executed_for_others)))
	[ "$o" -ge 1024 ] || bad "nodes 1 and 2 executed $o commands for others" || return 1
	echo "route: lb written through node 0 (no AMF of gb) and verified through node 1; node 0 routed $(jq -c .routing <<<"$a"); nodes 1 and 2 executed $o for others"
}

# ---------------------------------------------------------------- d
step_kill() {
	local fpid rc t m n r0 r1
	timeout 300 fio --name=route-k --filename="${disk[V0]}" --direct=1 --ioengine=libaio --iodepth=16 \
		--rw=randwrite --bs=4k --offset=16m --size=8m --verify=crc32c --verify_fatal=1 \
		--verify_backlog=64 --verify_state_save=0 --runtime=20 --time_based --output="$W/fio-k.log" &
	fpid=$!
	# mid-run: once node 0's router has sent 500 more commands (bounded at 60 s)
	m=$(cc_ctl 0 --json map | jq '.routing.forwarded + .routing.components')
	for ((t = 0; t < 600; t++)); do
		[ $(($(cc_ctl 0 --json map | jq '.routing.forwarded + .routing.components') - m)) -ge 500 ] && break
		sleep 0.1
	done
	# Paused first (meant to be shorter than the failure detector), until node 0 forwards
	# nothing more: fio's commands then wait on gb's components at node 2, and the kill finds
	# them in flight. Counted from before the pause: should the pause outlast node 2's lease,
	# its groups exclude it and node 0 routes them again then (abandoned: docs/routing.md).
	r0=$(cc_ctl 0 --json map | jq .routing.rerouted)
	kill -STOP "${cc_pids[2]}"
	m=-1
	for ((t = 0; t < 20; t++)); do
		n=$(cc_ctl 0 --json map | jq .routing.forwarded)
		[ "$n" = "$m" ] && break
		m=$n
		sleep 0.2
	done
	kill -KILL "${cc_pids[2]}"
	wait "${cc_pids[2]}" 2>/dev/null
	cc_pids[2]=
	echo "route: node 2's cohortd SIGKILLed during fio on vs through node 0"
	wait $fpid
	rc=$?
	[ $rc = 0 ] || bad "fio on vs across node 2's death: status $rc: $(tail -n 20 "$W/fio-k.log")" || return 1
	for ((t = 0; t < 600; t++)); do
		m=$(cc_ctl 0 --json map | jq -c '[.groups[].members]')
		[ "$m" = '[[0,1],[0,1]]' ] && break
		sleep 0.1
	done
	[ "$m" = '[[0,1],[0,1]]' ] || bad "the groups' views after node 2's death: $m" || return 1
	fio_job "${disk[V1]}" 4m --verify_only || bad "vs's data through V1 after the death: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[L0]}" 4m --verify_only || bad "lb's data through L0 after the death: $(tail -n 20 "$W/fio.log")" || return 1
	cc_ctl 0 map
	# what became of the commands in flight to node 2: routed again to node 1, on shm at once
	# (the death is proven), on rdma once gb's view excluded node 2 (router.h group_view)
	r1=$(cc_ctl 0 --json map | jq .routing.rerouted)
	echo "route: node 0 after the death: $(cc_ctl 0 --json map | jq -c .routing); kernel: $(dmesg | grep -ciE 'sense key|asymmetric access') sense lines"
	[ $((r1 - r0)) -ge 1 ] ||
		bad "no command in flight at node 2 was routed again ($r0 before, $r1 after)" || return 1
	echo "route: fio completed and verified across node 2's death; both groups are nodes 0 and 1; earlier data verifies"
}

# ---------------------------------------------------------------- e
# connected <node>: the peers node's forwarder is connected to, as "0,1".
connected() { cc_ctl "$1" --json map 2>/dev/null | jq -r '.forwarder.connected | map(tostring) | join(",")'; }
step_restart() {
	local t st
	cc_start 2
	cc_wait_ready 2 2 || return 1
	for ((t = 0; t < 600; t++)); do
		[ "$(cc_ctl 0 --json map | jq -c '[.groups[].members]')" = '[[0,1,2],[0,1,2]]' ] &&
			[ "$(connected 0)" = 1,2 ] && [ "$(connected 1)" = 0,2 ] && [ "$(connected 2)" = 0,1 ] && break
		sleep 0.1
	done
	[ "$(connected 2)" = 0,1 ] && [ "$(connected 0)" = 1,2 ] ||
		bad "after node 2's restart: forwarders connected 0: $(connected 0), 1: $(connected 1), 2: $(connected 2)" || return 1
	st=$(cc_export_state 2 vs)
	[[ $st == "attached "*"(reattached)" ]] || bad "node 2 did not reattach vs: $st" || return 1
	# through node 2 again: vs (forwarded whole to the coordinator, node 0) and its own group gb
	fio_job "${disk[V2]}" 4m --verify_only || bad "vs's data through V2 after the restart: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[V2]}" 4m --do_verify=1 --randseed=815 ||
		bad "fio on vs through V2 after the restart: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[V0]}" 4m --verify_only --randseed=815 ||
		bad "V0 does not verify what V2 wrote: $(tail -n 20 "$W/fio.log")" || return 1
	echo "route: node 2 back: both groups 3 members, every forwarder connected again, vs reattached; fio through node 2 verifies through node 0"
}

# ---------------------------------------------------------------- f
step_online() {
	local fpid rc i t k out st s0 s2 id
	timeout 300 fio --name=route-m --filename="${disk[V0]}" --direct=1 --ioengine=libaio --iodepth=16 \
		--rw=randwrite --bs=4k --offset=16m --size=4m --verify=crc32c --verify_fatal=1 \
		--verify_backlog=64 --verify_state_save=0 --runtime=10 --time_based --output="$W/fio-m.log" &
	fpid=$!
	# gb holds lb (blocks 0-2047) and sb (2048-6143) of its 8192
	out=$(cc_ctl 2 map add nv gb 6144 512 2>&1)
	[ "$out" = "table version 2 on the cluster" ] || bad "map add nv through node 2: $out" || return 1
	out=$(cc_ctl 1 map grow nv 1024 2>&1)
	[ "$out" = "table version 3 on the cluster" ] || bad "map grow nv through node 1: $out" || return 1
	out=$(cc_ctl 0 map remove sb 2>&1) && bad "map remove sb (a component of vs) was not refused" && return 1
	grep -q 'a component of virtual volume vs' <<<"$out" || bad "map remove sb: $out" || return 1
	wait $fpid
	rc=$?
	[ $rc = 0 ] || bad "fio on vs across the table changes: status $rc: $(tail -n 20 "$W/fio-m.log")" || return 1
	for i in 0 1 2; do
		out=$(cc_ctl "$i" --json map | jq -c '[.version, (.volumes[] | select(.name == "nv") | .blocks)]')
		[ "$out" = "[3,1024]" ] || bad "node $i's table: $out, not version 3 with nv of 1024 blocks" || return 1
	done
	echo "route: nv added and grown online during fio on vs (fio verified); every node at version 3"
	printf '\n[export nv]\nvolume = nv\ndevice = route-nv-%%n\nhba = %s\ncmd_time_out = 10\n' "$HBA" >>"$CC_CONF"
	for i in 0 1 2; do
		kill -HUP "${cc_pids[i]}" || bad "SIGHUP node $i" || return 1
	done
	for i in 0 2; do
		for ((t = 0; t < 600; t++)); do
			st=$(cc_export_state "$i" nv)
			[[ $st == "attached "* ]] && break
			sleep 0.1
		done
		[[ $st == "attached "*"(created)" ]] || bad "node $i: export nv: $st" || return 1
	done
	loop N0 0 nv && loop N2 2 nv || return 1
	[ "$(last_lba "${disk[N0]}")" = 1023 ] || bad "nv: last LBA $(last_lba "${disk[N0]}"), not 1023" || return 1
	id=$(cc_ctl 0 --json map | jq -r '.volumes[] | select(.name == "nv") | .id')
	s0=$(serial_of "${disk[N0]}")
	s2=$(serial_of "${disk[N2]}")
	[ "${s0,,}" = "$id" ] && [ "${s2,,}" = "$id" ] || bad "nv's serial: $s0 through node 0, $s2 through node 2, id $id" || return 1
	fio_job "${disk[N0]}" 4m --do_verify=1 --randseed=919 || bad "fio on nv through node 0: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[N2]}" 4m --verify_only --randseed=919 || bad "nv through node 2 does not verify: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[V1]}" 4m --verify_only || bad "vs's data after the changes: $(tail -n 20 "$W/fio.log")" || return 1
	echo "route: nv exported by SIGHUP (1024 blocks, serial $s0 on both paths); written through node 0, verified through node 2"
	# Grown again while exported, with no SIGHUP: every node's unit follows the table, the host
	# sees the size at its next READ CAPACITY, and its block device after a rescan.
	out=$(cc_ctl 2 map grow nv 2048 2>&1)
	[ "$out" = "table version 4 on the cluster" ] || bad "map grow nv to 2048 through node 2: $out" || return 1
	for k in N0 N2; do
		for ((t = 0; t < 100; t++)); do
			[ "$(last_lba "${disk[$k]}")" = 2047 ] && break
			sleep 0.1 # the daemons look at the router's table every 200 ms; bounded: 10 s
		done
		[ "$(last_lba "${disk[$k]}")" = 2047 ] || bad "nv through $k after the grow: last LBA $(last_lba "${disk[$k]}"), not 2047" || return 1
		echo 1 >"/sys/block/${disk[$k]#/dev/}/device/rescan" || bad "rescan of ${disk[$k]}" || return 1
		out=$(blockdev --getsize64 "${disk[$k]}")
		[ "$out" = $((2048 * 4096)) ] || bad "nv through $k after a rescan: $out bytes, not $((2048 * 4096))" || return 1
	done
	grep -q 'export.*nv: grown from 1024 to 2048 blocks' "$W/node0.log" || bad "node 0 did not log nv's growth" || return 1
	fio_job "${disk[N0]}" 4m --offset=4m --do_verify=1 --randseed=920 || bad "fio on nv's new blocks through node 0: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[N2]}" 4m --offset=4m --verify_only --randseed=920 || bad "nv's new blocks through node 2 do not verify: $(tail -n 20 "$W/fio.log")" || return 1
	fio_job "${disk[N2]}" 4m --verify_only --randseed=919 || bad "nv's first blocks after the grow: $(tail -n 20 "$W/fio.log")" || return 1
	echo "route: nv grown to 2048 blocks online with no SIGHUP: both paths report it (READ CAPACITY, and the block device after a rescan); its new blocks written through node 0 verify through node 2, its old ones still verify"
}

# ---------------------------------------------------------------- g
step_stop() {
	local i out
	out=$(cc_ctl 0 stop 2>&1) || bad "cohortctl stop: $out" || return 1
	echo "route: $out"
	for i in 0 1 2; do
		cc_stop "$i" 0 || bad "node $i: exit status $? after the cluster stop" || return 1
	done
}

step "a. three cohortd ($PROVIDER) with two groups and a virtual volume; tcm_loop LUNs" step_setup || exit 1
step "b. identity, capacity, out-of-range sense, COMPARE AND WRITE across controllers" step_identity
step "c. fio verify on the virtual volume and on a forwarded volume across controllers" step_io
step "d. node 2 SIGKILLed during fio through node 0; data verifies after" step_kill
step "e. node 2 started again: rejoins, reconnects, reattaches, serves" step_restart
step "f. the table changed online during fio; the new volume exported and served" step_online
step "g. cohortctl stop: every daemon exits 0" step_stop
if [ $fail = 0 ]; then say "PASS"; else say "FAIL"; fi
exit $fail
