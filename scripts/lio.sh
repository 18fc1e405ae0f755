#!/usr/bin/env bash
# lio.sh - wire a TCMU backstore (made by coh_tcmu_dev_new in cohortd) to an LIO fabric
# through configfs alone. targetcli cannot create user backstores without tcmu-runner's D-Bus
# handler (shared/docs/TCMU.md §4), and needs none of this.
#
#   lio.sh loop <backstore dir> <naa.WWN> [<naa.INITIATOR>]
#                                           tcm_loop target + nexus + LUN 0 linked to the
#                                           backstore; prints the new /dev/sdX (bounded wait).
#                                           The nexus's initiator is <naa.INITIATOR> when given
#                                           (a backstore that serves one initiator, for
#                                           cluster-wide reservations: its [export] initiator),
#                                           else one derived from the WWN
#   lio.sh iscsi <backstore dir> <iqn>      iSCSI target on 127.0.0.1:3260, LUN 0, demo-mode ACLs
#                                           (any initiator, no authentication: test rigs only)
#   lio.sh iscsi-host <backstore dir> <iqn> <initiator>
#                                           the backstore as LUN 0 of <initiator> alone on iSCSI
#                                           target <iqn> (127.0.0.1:3260; made on first use, with
#                                           ACLs only): a new TPG LUN, and an ACL for <initiator>
#                                           mapping it as its LUN 0. Several calls with one <iqn>
#                                           give each host its own backstore behind the same
#                                           target and LUN number: the wiring cluster-wide
#                                           reservations need (one device per host)
#   lio.sh clean                            tear down every target this script made (recorded in
#                                           $COHORT_LIO_STATE, default /run/cohort-lio.list)
#
# <backstore dir> is core/user_<hba>/<name>, absolute or relative to /sys/kernel/config/target/core.
# Leaves out: the backstore itself (its process creates and removes it), CHAP.
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

# target <kind> <fabric dir> <name pattern> <what a name is> <backstore dir> <name> <module>... -
# the preamble of loop and iscsi: the name checked, the fabric's modules, the backstore ($b), a
# new target <fabric dir>/<name> ($t) recorded for clean, and its TPG 1. Sets b and t in the
# caller's scope.
target() {
	local kind=$1 dir=$2 re=$3 what=$4 store=$5 name=$6
	shift 6
	[[ $name =~ $re ]] || die "$kind: '$name' is not $what"
	modules "$@"
	b=$(backstore "$store")
	t=$cfs/$dir/$name
	[ ! -d "$t" ] || die "$kind: $t exists already"
	mk "$cfs/$dir"
	mk "$t"
	record "$kind $name"
	mk "$t/tpgt_1"
}

# lun0 - LUN 0 of $t's TPG 1, linked to the backstore $b.
lun0() {
	mk "$t/tpgt_1/lun/lun_0"
	ln -s "$b" "$t/tpgt_1/lun/lun_0/cohort" 2>/dev/null || die "link $b into $t/tpgt_1/lun/lun_0 failed"
}

cmd_loop() {
	local b t wwn=$2 init=${3:-}
	[ -z "$init" ] || [[ $init =~ ^naa\.[0-9a-fA-F]{16}$ ]] ||
		die "loop: initiator '$init' is not naa.<16 hex digits> (tcm_loop wants the target's prefix)"
	target loop loopback '^naa\.[0-9a-fA-F]{16}$' 'naa.<16 hex digits>' "$1" "$wwn" \
		target_core_user tcm_loop sd_mod
	# The nexus's initiator name must have the target's prefix; another first digit makes it
	# distinct from the target's.
	if [ -z "$init" ]; then
		init=naa.${wwn:4:1}
		if [ "$init" = naa.6 ]; then init=naa.5; else init=naa.6; fi
		init=$init${wwn:5}
	fi
	put "$init" "$t/tpgt_1/nexus"
	lun0
	loop_disk "$t/tpgt_1"
}

cmd_iscsi() {
	local b t iqn=$2
	target iscsi iscsi '^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]+(:[^[:space:]]+)?$' 'an iqn' "$1" "$iqn" \
		target_core_user iscsi_target_mod
	lun0
	put 1 "$t/tpgt_1/attrib/generate_node_acls"
	put 1 "$t/tpgt_1/attrib/cache_dynamic_acls"
	put 0 "$t/tpgt_1/attrib/demo_mode_write_protect"
	put 0 "$t/tpgt_1/attrib/authentication"
	mk "$t/tpgt_1/np/127.0.0.1:3260"
	put 1 "$t/tpgt_1/enable"
	echo "iscsi://127.0.0.1:3260/$iqn/0"
}

cmd_iscsi_host() {
	local b t iqn=$2 init=$3 n
	[[ $iqn =~ ^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]+(:[^[:space:]]+)?$ ]] || die "iscsi-host: '$iqn' is not an iqn"
	[[ $init =~ ^(iqn|eui|naa)\.[^[:space:],]+$ ]] || die "iscsi-host: '$init' is not an initiator name"
	modules target_core_user iscsi_target_mod
	b=$(backstore "$1")
	t=$cfs/iscsi/$iqn
	if [ ! -d "$t" ]; then
		mk "$cfs/iscsi"
		mk "$t"
		record "iscsi $iqn"
		mk "$t/tpgt_1"
		put 0 "$t/tpgt_1/attrib/generate_node_acls"
		put 0 "$t/tpgt_1/attrib/authentication"
		mk "$t/tpgt_1/np/127.0.0.1:3260"
	fi
	[ "$(cat "$t/tpgt_1/attrib/generate_node_acls")" = 0 ] ||
		die "iscsi-host: $iqn lets any initiator in (made by lio.sh iscsi?)"
	[ ! -d "$t/tpgt_1/acls/$init" ] || die "iscsi-host: $init has an ACL on $iqn already"
	for ((n = 0; n < 256; n++)); do [ -d "$t/tpgt_1/lun/lun_$n" ] || break; done
	[ $n -lt 256 ] || die "iscsi-host: no free LUN on $iqn"
	mk "$t/tpgt_1/lun/lun_$n"
	ln -s "$b" "$t/tpgt_1/lun/lun_$n/cohort" 2>/dev/null || die "link $b into $t/tpgt_1/lun/lun_$n failed"
	mk "$t/tpgt_1/acls/$init"
	mk "$t/tpgt_1/acls/$init/lun_0"
	ln -s "$t/tpgt_1/lun/lun_$n" "$t/tpgt_1/acls/$init/lun_0/map" 2>/dev/null ||
		die "map $t/tpgt_1/lun/lun_$n as $init's LUN 0 failed"
	[ "$(cat "$t/tpgt_1/enable")" = 1 ] || put 1 "$t/tpgt_1/enable"
	echo "iscsi://127.0.0.1:3260/$iqn/0"
}

# Undo in reverse: ACLs' mapped LUNs, ACLs, LUN links, LUNs, portals, nexus, TPGs, targets. Keeps going past errors, and
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
			for l in "$tpg"/acls/*/lun_*/*; do
				[ -L "$l" ] && rm -f "$l"
			done
			for l in "$tpg"/acls/*/lun_*; do [ -d "$l" ] && rmdir "$l" 2>/dev/null; done
			for l in "$tpg"/acls/*; do [ -d "$l" ] && rmdir "$l" 2>/dev/null; done
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
	[ $# -eq 3 ] || [ $# -eq 4 ] || die "usage: lio.sh loop <backstore dir> <naa.WWN> [<naa.INITIATOR>]"
	cmd_loop "$2" "$3" "${4:-}"
	;;
iscsi)
	[ $# -eq 3 ] || die "usage: lio.sh iscsi <backstore dir> <iqn>"
	cmd_iscsi "$2" "$3"
	;;
iscsi-host)
	[ $# -eq 4 ] || die "usage: lio.sh iscsi-host <backstore dir> <iqn> <initiator>"
	cmd_iscsi_host "$2" "$3" "$4"
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
