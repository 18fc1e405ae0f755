# lio-multipath.sh - sourced by the rig's host-path scripts (rig-frontend.sh, demo-lio.sh):
# dm-multipath over the guest's Cohort paths without touching the host's /etc (the guest's / is
# the host's, over 9p). udevd and multipath run in a mount namespace whose /etc is an overlay with
# our config on top, so what they write (wwids, bindings) lands in DIR. multipath skips paths that
# udev has not seen, so the guest gets a udevd of its own (SYSTEMD_IGNORE_CHROOT: the guest runs
# chrooted into the host's /), asked to exit at the end. Every command is bounded.
#
#   mpath_up DIR DISK COUNT   a config for DISK's vendor (multibus, find_multipaths no, tur,
#                             bounded no_path_retry), udevd, and one map whose COUNT paths are all
#                             active ready; its name in $MPATH_MAP, its multipath -ll in
#                             DIR/mpll. 1 with a message on stderr otherwise
#   mpath ARGS...             multipath ARGS in the namespace (-r reloads, -ll lists)
#   mpath_active              how many paths multipath -ll shows active ready
#   mpath_down                flush the maps, stop udevd (only if mpath_up ran)

MPATH_DIR=
MPATH_MAP=

mpath_ns_run() {
	DM_DISABLE_UDEV=1 SYSTEMD_IGNORE_CHROOT=1 timeout 60 unshare -m bash -c '
		set -e
		mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/up,workdir=$1/wk" /etc
		shift
		exec "$@"' ns "$MPATH_DIR" "$@"
}

mpath() { mpath_ns_run multipath "$@"; }

mpath_active() {
	mpath -ll >"$MPATH_DIR/mpll" 2>&1 || true
	grep -cE 'active ready running' "$MPATH_DIR/mpll"
}

mpath_up() {
	local disk=$2 want=$3 vendor n
	MPATH_DIR=$1
	vendor=$(timeout 30 sg_inq "$disk" | sed -n 's/.*Vendor identification: *//p' | sed 's/ *$//')
	[ -n "$vendor" ] || {
		echo "multipath: no vendor in $disk's INQUIRY" >&2
		return 1
	}
	mkdir -p "$MPATH_DIR/up" "$MPATH_DIR/wk"
	cat >"$MPATH_DIR/up/multipath.conf" <<-EOF
		defaults {
			find_multipaths no
			user_friendly_names no
			path_grouping_policy multibus
			no_path_retry 12
			uid_attribute ""
		}
		blacklist {
			device {
				vendor ".*"
			}
		}
		blacklist_exceptions {
			device {
				vendor "$vendor"
			}
		}
		devices {
			device {
				vendor "$vendor"
				product ".*"
				path_grouping_policy multibus
				path_checker tur
				no_path_retry 12
			}
		}
	EOF
	mpath_ns_run /lib/systemd/systemd-udevd --daemon >"$MPATH_DIR/udevd.log" 2>&1 || {
		echo "multipath: udevd: $(cat "$MPATH_DIR/udevd.log")" >&2
		return 1
	}
	SYSTEMD_IGNORE_CHROOT=1 timeout 30 udevadm trigger --action=add --subsystem-match=block
	SYSTEMD_IGNORE_CHROOT=1 timeout 60 udevadm settle -t 50 || {
		echo "multipath: udevadm settle timed out" >&2
		return 1
	}
	mpath -v2 >"$MPATH_DIR/mp.log" 2>&1 || {
		echo "multipath: $(cat "$MPATH_DIR/mp.log")" >&2
		return 1
	}
	n=$(mpath_active)
	MPATH_MAP=$(dmsetup ls --target multipath | awk 'NR == 1 {print $1}')
	[ -n "$MPATH_MAP" ] && [ -b "/dev/mapper/$MPATH_MAP" ] || {
		echo "multipath: no map: $(cat "$MPATH_DIR/mpll")" >&2
		return 1
	}
	[ "$n" = "$want" ] || {
		echo "multipath: $n of $want paths active ready: $(cat "$MPATH_DIR/mpll")" >&2
		return 1
	}
}

mpath_down() {
	[ -n "$MPATH_DIR" ] || return 0
	mpath -F >/dev/null 2>&1 || true
	SYSTEMD_IGNORE_CHROOT=1 timeout 30 udevadm control --exit 2>/dev/null || true
	MPATH_DIR=
}
