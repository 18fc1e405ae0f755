#!/usr/bin/env bash
# lio.sh - wire a TCMU backstore (made by coh_tcmu_dev_new: tcmu_serve, cohortd) to an LIO fabric
# through configfs alone. targetcli cannot create user backstores without tcmu-runner's D-Bus
# handler (shared/docs/TCMU.md §4), and needs none of this.
#
#   lio.sh loop <backstore dir> <naa.WWN>   tcm_loop target + nexus + LUN 0 linked to the
#                                           backstore; prints the new /dev/sdX (bounded wait)
#   lio.sh iscsi <backstore dir> <iqn>      iSCSI target on 127.0.0.1:3260, LUN 0, demo-mode ACLs
#                                           (any initiator, no authentication: test rigs only)
#   lio.sh clean                            tear down every target this script made (recorded in
#                                           $COHORT_LIO_STATE, default /run/cohort-lio.list)
#
# <backstore dir> is core/user_<hba>/<name>, absolute or relative to /sys/kernel/config/target/core.
# Leaves out: the backstore itself (its process creates and removes it), ACLs per initiator, CHAP.
# Every configfs write is checked; errors name the file. Exit status: 0, or 1 with a message.
set -euo pipefail

cfs=/sys/kernel/config/target
state=${COHORT_LIO_STATE:-/run/cohort-lio.list}
wait_s=${COHORT_LIO_WAIT:-30}

die() {
	echo "lio.sh: $*" >&2
	exit 1
}
put() { # put <value> <file>
	local v=$1 f=$2
	printf '%s' "$v" >"$f" 2>/dev/null || die "write '$v' to $f failed"
}
mk() { [ -d "$1" ] || mkdir "$1" 2>/dev/null || die "mkdir $1 failed"; }
record() { echo "$*" >>"$state"; }

backstore() {
	local b=$1
	case "$b" in /*) ;; *) b=$cfs/core/$b ;; esac
	[ -d "$b" ] || die "no backstore $b (is its server running?)"
	[ "$(cat "$b/enable" 2>/dev/null)" = 1 ] || die "backstore $b is not enabled"
	echo "$b"
}

modules() {
	local m
	for m in "$@"; do
		[ -d "/sys/module/$m" ] || modprobe "$m" 2>/dev/null || die "modprobe $m failed"
	done
	if [ ! -d "$cfs" ]; then
		grep -q ' /sys/kernel/config ' /proc/mounts ||
			mount -t configfs none /sys/kernel/config || die "mount configfs failed"
	fi
	[ -d "$cfs" ] || die "$cfs missing (target_core_mod not loaded?)"
}

# The /dev/sdX behind a tcm_loop TPG: its address file says host:channel:target.
loop_disk() {
	local tpg=$1 addr i d
	for ((i = 0; i < wait_s * 10; i++)); do
		addr=$(cat "$tpg/address" 2>/dev/null || true)
		if [ -n "$addr" ]; then
			for d in /sys/bus/scsi/devices/"$addr":0/block/*; do
				if [ -e "$d" ] && [ -b "/dev/${d##*/}" ]; then
					echo "/dev/${d##*/}"
					return 0
				fi
			done
		fi
		sleep 0.1
	done
	die "no disk appeared for $tpg (address '${addr:-?}') within ${wait_s}s (sd_mod loaded?)"
}

cmd_loop() {
	local b wwn=$2 init t
	[[ $wwn =~ ^naa\.[0-9a-fA-F]{16}$ ]] || die "loop: '$wwn' is not naa.<16 hex digits>"
	modules target_core_user tcm_loop sd_mod
	b=$(backstore "$1")
	# The nexus's initiator name must have the target's prefix; another first digit makes it
	# distinct from the target's.
	init=naa.${wwn:4:1}
	if [ "$init" = naa.6 ]; then init=naa.5; else init=naa.6; fi
	init=$init${wwn:5}
	t=$cfs/loopback/$wwn
	[ ! -d "$t" ] || die "loop: $t exists already"
	mk "$cfs/loopback"
	mk "$t"
	record "loop $wwn"
	mk "$t/tpgt_1"
	put "$init" "$t/tpgt_1/nexus"
	mk "$t/tpgt_1/lun/lun_0"
	ln -s "$b" "$t/tpgt_1/lun/lun_0/cohort" 2>/dev/null || die "link $b into $t/tpgt_1/lun/lun_0 failed"
	loop_disk "$t/tpgt_1"
}

cmd_iscsi() {
	local b iqn=$2 t
	[[ $iqn =~ ^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]+(:[^[:space:]]+)?$ ]] || die "iscsi: '$iqn' is not an iqn"
	modules target_core_user iscsi_target_mod
	b=$(backstore "$1")
	t=$cfs/iscsi/$iqn
	[ ! -d "$t" ] || die "iscsi: $t exists already"
	mk "$cfs/iscsi"
	mk "$t"
	record "iscsi $iqn"
	mk "$t/tpgt_1"
	mk "$t/tpgt_1/lun/lun_0"
	ln -s "$b" "$t/tpgt_1/lun/lun_0/cohort" 2>/dev/null || die "link $b into $t/tpgt_1/lun/lun_0 failed"
	put 1 "$t/tpgt_1/attrib/generate_node_acls"
	put 1 "$t/tpgt_1/attrib/cache_dynamic_acls"
	put 0 "$t/tpgt_1/attrib/demo_mode_write_protect"
	put 0 "$t/tpgt_1/attrib/authentication"
	mk "$t/tpgt_1/np/127.0.0.1:3260"
	put 1 "$t/tpgt_1/enable"
	echo "iscsi://127.0.0.1:3260/$iqn/0"
}

# Undo in reverse: LUN links, LUNs, portals, nexus, TPGs, targets. Keeps going past errors, and
# says which remain.
cmd_clean() {
	local kind name t tpg l bad=0
	[ -f "$state" ] || return 0
	while read -r kind name; do
		case "$kind" in
		loop) t=$cfs/loopback/$name ;;
		iscsi) t=$cfs/iscsi/$name ;;
		*) continue ;;
		esac
		[ -d "$t" ] || continue
		for tpg in "$t"/tpgt_*; do
			[ -d "$tpg" ] || continue
			[ "$kind" != iscsi ] || printf 0 >"$tpg/enable" 2>/dev/null || true
			for l in "$tpg"/lun/lun_*/*; do
				[ -L "$l" ] && rm -f "$l"
			done
			for l in "$tpg"/lun/lun_*; do [ -d "$l" ] && rmdir "$l" 2>/dev/null; done
			for l in "$tpg"/np/*; do [ -d "$l" ] && rmdir "$l" 2>/dev/null; done
			[ "$kind" != loop ] || printf NULL >"$tpg/nexus" 2>/dev/null || true
			rmdir "$tpg" 2>/dev/null || true
		done
		if ! rmdir "$t" 2>/dev/null; then
			echo "lio.sh: clean: $t remains" >&2
			bad=1
		fi
	done < <(tac "$state")
	[ $bad = 1 ] || rm -f "$state"
	return $bad
}

case "${1:-}" in
loop)
	[ $# -eq 3 ] || die "usage: lio.sh loop <backstore dir> <naa.WWN>"
	cmd_loop "$2" "$3"
	;;
iscsi)
	[ $# -eq 3 ] || die "usage: lio.sh iscsi <backstore dir> <iqn>"
	cmd_iscsi "$2" "$3"
	;;
clean)
	[ $# -eq 1 ] || die "usage: lio.sh clean"
	cmd_clean
	;;
*)
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
	exit 2
	;;
esac
