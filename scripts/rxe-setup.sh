#!/usr/bin/env bash
# rxe-setup.sh NETDEV [NAME] - create a soft-RoCE (rxe) device NAME (default rxe0) on NETDEV.
#
# For real hosts running a Cohort cluster over Ethernet, and used inside the VM rig (scripts/vm.sh).
# Loads rdma_rxe, ib_uverbs and rdma_ucm, creates NAME on NETDEV unless it already exists there
# (idempotent), waits (bounded) for the port to become ACTIVE, verifies it with `rdma link show`
# and `ibv_devinfo` (the verbs view: the ibv_devices listing plus port state), and prints the GID
# table entry for NETDEV's IPv4 address (the RoCE v2 GID that rdma_cm resolves to).
#
# Exit status: 0 ready; 1 error (message on stderr); 2 usage.
# Env: RXE_SETUP_WAIT seconds to wait for ACTIVE and for the GID (default 10).
# (Sticks to shell builtins where it can: it also runs inside the TCG guest, where execs are slow.)
set -euo pipefail

prog=rxe-setup
die() {
	echo "$prog: error: $*" >&2
	exit 1
}
warn() { echo "$prog: warning: $*" >&2; }
nap() { if [ -e /dev/fd/0 ]; then read -rt "$1" <> <(:) || :; else sleep "$1"; fi; }

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
	echo "usage: $0 NETDEV [NAME]   (NAME defaults to rxe0)" >&2
	exit 2
fi
netdev=$1
name=${2:-rxe0}
wait_s=${RXE_SETUP_WAIT:-10}
[[ $wait_s =~ ^[0-9]+$ ]] || die "RXE_SETUP_WAIT must be an integer"
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad device name '$name'"

[ -e "/sys/class/net/$netdev" ] ||
	die "no network device '$netdev' (list them with: ip -br link)"
command -v rdma >/dev/null || die "'rdma' not found; install iproute2"
[ "$EUID" -eq 0 ] || die "must run as root (modprobe, rdma link add)"

# ---- modules ----
for m in rdma_rxe ib_uverbs rdma_ucm; do
	[ -d "/sys/module/$m" ] && continue
	if ! out=$(modprobe "$m" 2>&1); then
		die "cannot load kernel module $m: ${out:-modprobe failed}
  This kernel ($(uname -r)) may lack CONFIG_RDMA_RXE / CONFIG_INFINIBAND_USER_ACCESS, or may not
  allow module loading. On such a machine use the VM rig: scripts/vm.sh"
	fi
done

# ---- device ----
# `rdma link show` lines: "link rxe0/1 state ACTIVE physical_state LINK_UP netdev veth0"
links=$(rdma link show 2>/dev/null || true)
link_netdev() { # $1 = device name -> its netdev, from $links
	local f w prev
	while read -ra f; do
		[[ ${f[1]:-} == "$1"/* ]] || continue
		prev=
		for w in "${f[@]}"; do
			if [ "$prev" = netdev ]; then
				echo "$w"
				return 0
			fi
			prev=$w
		done
	done <<<"$links"
	return 1
}
links_on_netdev() { # device names bound to $netdev
	local l
	while read -r l; do
		[[ " $l " == *" netdev $netdev "* ]] || continue
		l=${l#link }
		echo "${l%%/*}"
	done <<<"$links"
}

if [ -d "/sys/class/infiniband/$name" ]; then
	cur=$(link_netdev "$name" || true)
	[ "$cur" = "$netdev" ] || die "RDMA device $name exists but is bound to '${cur:-?}', not $netdev"
	echo "$prog: $name already exists on $netdev"
else
	other=$(links_on_netdev)
	[ -z "$other" ] || die "$netdev already carries RDMA device ${other//$'\n'/ }; use that name instead of $name"
	read -r state <"/sys/class/net/$netdev/operstate" || state=unknown
	[ "$state" = up ] || [ "$state" = unknown ] ||
		warn "$netdev is $state; the rxe port stays DOWN until it is up (ip link set $netdev up)"
	rdma link add "$name" type rxe netdev "$netdev" ||
		die "rdma link add $name type rxe netdev $netdev failed (see dmesg)"
	echo "$prog: created $name on $netdev"
fi

# ---- wait for ACTIVE (bounded) ----
statef=/sys/class/infiniband/$name/ports/1/state
pstate=
for ((i = 0; i < wait_s * 10; i++)); do
	read -r pstate <"$statef" 2>/dev/null || pstate=
	[[ $pstate == *ACTIVE* ]] && break
	nap 0.1
done
rdma link show "$name/1" || true
[[ $pstate == *ACTIVE* ]] ||
	die "$name port 1 is not ACTIVE after ${wait_s}s (${pstate:-no state}); is $netdev up with carrier?"

# ---- verbs-level check ----
if command -v ibv_devinfo >/dev/null; then
	info=$(ibv_devinfo -d "$name" 2>&1) ||
		die "ibv_devinfo -d $name failed (rxe provider missing? install rdma-core / ibverbs-providers): $info"
	[[ $info == *PORT_ACTIVE* ]] || die "ibv_devinfo -d $name does not report PORT_ACTIVE"
	echo "$prog: ibv_devinfo: $name port 1 PORT_ACTIVE"
else
	warn "ibv_devinfo not found (install ibverbs-utils); skipped the verbs-level check"
fi

# ---- GID of the netdev's IPv4 address ----
ip4=
while read -r _ _ fam addr _; do
	[ "$fam" = inet ] && {
		ip4=${addr%%/*}
		break
	}
done <<<"$(ip -4 -o addr show dev "$netdev" 2>/dev/null)"
if [ -z "$ip4" ]; then
	warn "$netdev has no IPv4 address; RoCE v2 peers (and rdma_cm) need one"
	exit 0
fi
IFS=. read -r a b c d <<<"$ip4"
want=$(printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' "$a" "$b" "$c" "$d")
gdir=/sys/class/infiniband/$name/ports/1
found=
for ((i = 0; i < wait_s * 10; i++)); do
	for g in "$gdir"/gids/*; do
		read -r gid <"$g" 2>/dev/null || continue
		[ "$gid" = "$want" ] || continue
		idx=${g##*/}
		read -r type <"$gdir/gid_attrs/types/$idx" 2>/dev/null || type='?'
		found="$name port 1 GID index $idx: $want ($type, $netdev, $ip4)"
		break
	done
	[ -n "$found" ] && break
	nap 0.1
done
[ -n "$found" ] || die "no GID for $ip4 in $name's GID table after ${wait_s}s"
echo "$prog: $found"
