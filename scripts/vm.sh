#!/usr/bin/env bash
# vm.sh CMD... - run a shell command inside a throw-away qemu guest (stock Debian kernel, TCG) that
# has soft-RoCE (rxe0), LIO/TCMU modules and an emulated NVDIMM, with the host's `/` as its root.
#
# The host kernel here has no rxe/IB/LIO modules and cannot load modules, so the tests that need
# them run in a guest. The arguments are joined with spaces (like ssh) and run by bash in the
# guest, in the same cwd as on the host, with stdout/stderr streamed to vm.sh's stdout/stderr.
# vm.sh exits with the command's status; 124 on timeout; 125 when the rig itself fails.
#
#   scripts/vm.sh 'ibv_devinfo -d $COHORT_RXE_DEV'
#   scripts/vm.sh build/bin/some_test --gtest_brief=1
#
# The guest exports COHORT_RXE_DEV=rxe0, COHORT_RXE_IP=10.77.0.1 (on veth0, exists only inside the
# VM), COHORT_PMEM_DEV=/dev/pmem0 (when it appeared) and COHORT_IN_VM=1; host COHORT_* variables
# (except COHORT_VM_*) and those named in COHORT_VM_ENV are forwarded. stdin is /dev/null.
#
# Env knobs (see docs/rig.md):
#   COHORT_VM_TIMEOUT=1200   overall bound in seconds (boot + command); then qemu is killed, exit 124
#   COHORT_VM_BOOT_TIMEOUT=120  bound for the guest's init to start (it marks the run dir); past it
#                            the guest is taken for hung in its boot under TCG (nothing of the
#                            command ran), killed and booted again, COHORT_VM_BOOT_TRIES=3 in all
#   COHORT_VM_VERBOSE=1      show the guest console (kernel + init) and setup step output on stderr
#   COHORT_VM_QUIET=1        no "vm: ..." notes on stderr (errors still shown)
#   COHORT_VM_CPUS=2 COHORT_VM_MEM=3G
#   COHORT_VM_PMEM=0         no NVDIMM;  COHORT_VM_PMEM_SIZE=256M
#   COHORT_VM_PMEM_FILE=F    back the NVDIMM with F (kept, flock'ed) instead of a per-run file
#   COHORT_VM_PMEM_MODE=raw  raw: /dev/pmem0 without DAX; fsdax: ext4 -o dax at /run/cohort-pmem
#                            (COHORT_PMEM_DIR); devdax: /dev/dax0.0 (COHORT_PMEM_DAX)
#   COHORT_VM_LIO=0          skip loading configfs/LIO/TCMU modules
#   COHORT_VM_MODULES="..."  more modules to load during setup (e.g. sd_mod iscsi_target_mod)
#   COHORT_VM_ENV="A B"      extra host variables to forward
#   COHORT_VM_SHARE=DIR      share host directory DIR uncached (9p cache=none) at the same path in the
#                            guest: what the guest writes there is on the host when write() returns,
#                            so it outlives a killed guest (not under /tmp or /run)
#   COHORT_VM_DISKS="F1 F2"  attach host files as virtio disks (/dev/vda, ...; the guest exports
#                            COHORT_VM_DISK_DEVS, comma-separated); a guest flush reaches F's host file
#   COHORT_VM_PIDFILE=F      qemu writes its pid to F (kill -9 it: a power loss)
#   COHORT_VM_9P_CACHE=loose 9p cache mode for the host's / in the guest (none: coherent, slower)
#   COHORT_VM_APPEND=...     extra guest kernel command line
#   COHORT_VM_KERNEL=VER     kernel version to boot (default: newest /boot/vmlinuz-* with modules)
#   COHORT_VM_PVH=0          boot the compressed bzImage instead of the extracted vmlinux
#   COHORT_VM_KEEP=1         keep the run dir (console.log, setup.log, ...) and print its path
#   COHORT_VM_TRACE=1        xtrace of the guest setup into <run dir>/trace.log (with KEEP)
#   COHORT_VM_NO_INSTALL=1   do not apt-get install missing packages
#   XDG_CACHE_HOME           cache root (default /var/tmp); the rig uses $XDG_CACHE_HOME/cohort-vm
set -euo pipefail

# Everything runs from main(), which bash parses completely before running it: editing this file
# while a vm.sh is running cannot derail that run.

note() { [ "${COHORT_VM_QUIET:-0}" = 1 ] || echo "vm: $*" >&2; }
die() {
	echo "vm: error: $*" >&2
	exit 125
}

# ---------------------------------------------------------------- packages
ensure_packages() {
	local p missing=()
	local pkgs=(qemu-system-x86 linux-image-amd64 busybox-static rdma-core ibverbs-utils perftest
		libibverbs-dev librdmacm-dev fio libiscsi-bin iproute2 kmod cpio ndctl sg3-utils
		multipath-tools jq dmsetup procps)
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	mkdir -p "$cache"
	note "installing ${missing[*]} (log: $cache/apt.log)"
	export DEBIAN_FRONTEND=noninteractive
	{
		apt-get -o DPkg::Lock::Timeout=600 update -qq &&
			apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
	} >"$cache/apt.log" 2>&1 || {
		tail -n 20 "$cache/apt.log" >&2
		die "apt-get install failed (full log: $cache/apt.log)"
	}
}

# ---------------------------------------------------------------- initramfs
# A static busybox, /init (scripts/vm/init), /sbin/modprobe (scripts/vm/modprobe) and the virtio /
# 9p modules of the guest kernel in dependency order.
build_initramfs() {
	local tmp m src dst a
	tmp=$(mktemp -d "$cache/.initramfs.XXXXXX")
	mkdir -p "$tmp"/{bin,sbin,dev,proc,sys,newroot,lib/modules}
	cp /bin/busybox "$tmp/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sf busybox "$tmp/bin/$a"
	done
	mknod -m 600 "$tmp/dev/console" c 5 1
	mknod -m 666 "$tmp/dev/null" c 1 3
	install -m 755 "$vmdir/init" "$tmp/init"
	install -m 755 "$vmdir/modprobe" "$tmp/sbin/modprobe"
	modprobe -S "$kver" --show-depends -a virtio_pci 9pnet_virtio 9p |
		awk '$1 == "insmod" && !seen[$2]++ {print $2}' >"$tmp/.paths"
	if [ ! -s "$tmp/.paths" ]; then
		rm -rf "$tmp"
		die "modprobe --show-depends found no virtio/9p modules for $kver"
	fi
	: >"$tmp/modules.order"
	while read -r src; do
		m=$(basename "$src")
		m=${m%.xz}
		m=${m%.zst}
		m=${m%.gz}
		dst=$tmp/lib/modules/$m
		case "$src" in
		*.xz) xz -dc "$src" >"$dst" ;;
		*.zst) zstd -qdc "$src" >"$dst" ;;
		*.gz) gzip -dc "$src" >"$dst" ;;
		*) cp "$src" "$dst" ;;
		esac
		echo "$m" >>"$tmp/modules.order"
	done <"$tmp/.paths"
	rm -f "$tmp/.paths"
	(cd "$tmp" && find . -mindepth 1 | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp.$$"
	mv -f "$initrd.tmp.$$" "$initrd"
	rm -rf "$tmp"
}

# ---------------------------------------------------------------- PVH vmlinux
# The bzImage decompresses itself (xz, ~8 MB) inside the guest, which costs ~4 s under TCG.
# qemu boots the uncompressed ELF vmlinux directly through its PVH entry point (CONFIG_PVH=y).
extract_vmlinux() {
	local magic off tmp=$vmlinux.tmp.$$
	for magic in '\xfd7zXZ\x00:xz -dc --single-stream' '\x28\xb5\x2f\xfd:zstd -qdc' '\x1f\x8b\x08:gzip -dc'; do
		off=$(LC_ALL=C grep -obUaP "${magic%%:*}" "$kernel" | head -n1 | cut -d: -f1)
		[ -n "$off" ] || continue
		tail -c +$((off + 1)) "$kernel" | ${magic#*:} >"$tmp" 2>/dev/null || true
		if [ "$(head -c 4 "$tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
			mv -f "$tmp" "$vmlinux"
			return 0
		fi
	done
	rm -f "$tmp"
	return 1
}
has_pvh() {
	if command -v readelf >/dev/null; then
		readelf -n "$vmlinux" 2>/dev/null | grep -q -E 'Xen.*(0x00000012|PHYS32_ENTRY)'
	else
		grep -q '^CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null
	fi
}

# Build what is missing, under a lock so parallel runs build once. Superseded images are removed
# only when more than an hour old, so a run that already picked one can still boot it.
prepare_boot_files() {
	local f
	if [ -s "$initrd" ] && { [ "$pvh" != 1 ] || [ -e "$vmlinux" ] || [ -e "$vmlinux.nopvh" ]; }; then
		return 0
	fi
	exec 8>"$cache/.build.lock"
	flock -w 300 8 || die "timed out waiting for $cache/.build.lock"
	if [ ! -s "$initrd" ]; then
		note "building initramfs for $kver"
		build_initramfs
		find "$cache" -maxdepth 1 -name "initramfs-$kver-*.cpio.gz" ! -path "$initrd" -mmin +60 -delete
	fi
	if [ "$pvh" = 1 ] && [ ! -e "$vmlinux" ] && [ ! -e "$vmlinux.nopvh" ]; then
		find "$cache" -maxdepth 1 -name "vmlinux-$kver-*" -mmin +60 -delete
		if extract_vmlinux && has_pvh; then
			note "extracted $vmlinux for PVH boot"
		else
			note "cannot use PVH boot for $kver; booting the bzImage"
			rm -f "$vmlinux"
			: >"$vmlinux.nopvh"
		fi
	fi
	exec 8>&-
}

# shellcheck disable=SC2317 # invoked through trap
cleanup() {
	local i
	trap - EXIT INT TERM
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
		# timeout(1) forwards TERM to qemu and SIGKILLs it 10 s later if needed.
		kill -TERM "$qpid" 2>/dev/null || true
		for i in $(seq 150); do
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	for i in "${tails[@]}"; do kill "$i" 2>/dev/null || true; done
	[ -n "$run" ] || return 0
	if [ "${COHORT_VM_KEEP:-0}" = 1 ]; then
		echo "vm: run dir kept: $run" >&2
	else
		rm -rf "$run"
	fi
}

main() {
	if [ $# -eq 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
		exit 2
	fi

	top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	vmdir=$top/scripts/vm
	timeout_s=${COHORT_VM_TIMEOUT:-1200}
	boot_s=${COHORT_VM_BOOT_TIMEOUT:-120}
	boot_tries=${COHORT_VM_BOOT_TRIES:-3}
	verbose=${COHORT_VM_VERBOSE:-0}
	quiet=${COHORT_VM_QUIET:-0}
	cpus=${COHORT_VM_CPUS:-2}
	mem=${COHORT_VM_MEM:-3G}
	pmem_on=${COHORT_VM_PMEM:-1}
	pmem_size=${COHORT_VM_PMEM_SIZE:-256M}
	pmem_file=${COHORT_VM_PMEM_FILE:-}
	share=${COHORT_VM_SHARE:-}
	disks=${COHORT_VM_DISKS:-}
	pvh=${COHORT_VM_PVH:-1}
	p9cache=${COHORT_VM_9P_CACHE:-loose}
	cache=${XDG_CACHE_HOME:-/var/tmp}/cohort-vm
	run=
	qpid=
	tails=()
	[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "COHORT_VM_TIMEOUT must be a positive integer (seconds)"
	[[ $boot_s =~ ^[1-9][0-9]*$ ]] || die "COHORT_VM_BOOT_TIMEOUT must be a positive integer (seconds)"
	[[ $boot_tries =~ ^[1-9][0-9]*$ ]] || die "COHORT_VM_BOOT_TRIES must be a positive integer"
	[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "COHORT_VM_CPUS must be a positive integer"
	[[ $p9cache =~ ^(none|loose|mmap|fscache)$ ]] || die "COHORT_VM_9P_CACHE must be none, loose, mmap or fscache"
	if [ -n "$share" ]; then
		[ -d "$share" ] || die "COHORT_VM_SHARE: $share is not a directory"
		share=$(cd "$share" && pwd)
		case "$share" in *[[:space:],]* | /tmp | /tmp/* | /run | /run/*)
			die "COHORT_VM_SHARE: $share must have no spaces or commas and not be under /tmp or /run" ;;
		esac
	fi
	local dk
	for dk in $disks; do
		[ -f "$dk" ] || die "COHORT_VM_DISKS: $dk is not a file"
		case "$dk" in *,*) die "COHORT_VM_DISKS: $dk: no commas in disk paths" ;; esac
	done
	[ "$(id -u)" -eq 0 ] || die "must run as root (9p passthrough of / and the initramfs device nodes need it)"

	[ "${COHORT_VM_NO_INSTALL:-0}" = 1 ] || ensure_packages
	qemu_bin=$(command -v qemu-system-x86_64 || true)
	[ -n "$qemu_bin" ] || die "qemu-system-x86_64 not found (package qemu-system-x86)"
	[ -x /bin/busybox ] || die "/bin/busybox not found (package busybox-static)"

	# ------------------------------------------------------------ kernel
	# The newest Debian kernel in /boot that has its modules in /lib/modules (never `uname -r`:
	# the host runs a custom kernel without rxe/IB/LIO).
	kver=${COHORT_VM_KERNEL:-}
	if [ -z "$kver" ]; then
		kver=$(for f in /boot/vmlinuz-*; do
			v=${f#/boot/vmlinuz-}
			if [ -e "$f" ] && [ -f "/lib/modules/$v/modules.dep" ]; then echo "$v"; fi
		done | sort -V | tail -n1)
	fi
	[ -n "$kver" ] || die "no /boot/vmlinuz-* with a matching /lib/modules/<ver>/modules.dep (package linux-image-amd64)"
	kernel=/boot/vmlinuz-$kver
	[ -r "$kernel" ] || die "kernel $kernel missing or unreadable (package linux-image-amd64)"
	[ -f "/lib/modules/$kver/modules.dep" ] || die "/lib/modules/$kver/modules.dep missing (run depmod $kver)"

	# ------------------------------------------------------------ cached boot files
	mkdir -p "$cache/runs"
	local key
	key=$({
		echo "$kver"
		dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || sha256sum /bin/busybox
		for f in "$vmdir"/*; do
			echo "$f"
			cat "$f"
		done
	} | sha256sum | cut -c1-16)
	initrd=$cache/initramfs-$kver-$key.cpio.gz
	vmlinux=$cache/vmlinux-$kver-$(stat -c %s-%Y "$kernel")
	prepare_boot_files
	boot_kernel=$kernel
	if [ "$pvh" = 1 ] && [ -s "$vmlinux" ]; then boot_kernel=$vmlinux; fi

	# ------------------------------------------------------------ run dir
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	run=$(mktemp -d "$cache/runs/run.XXXXXX")
	case "$run" in *[[:space:]]*) die "run dir '$run' contains whitespace; set XDG_CACHE_HOME to a path without spaces" ;; esac
	cp "$vmdir/guest.sh" "$run/guest.sh"
	cp "$top/scripts/rxe-setup.sh" "$run/rxe-setup.sh"
	printf '%s\n' "$*" >"$run/cmd.sh"
	local f
	for f in out err vm.log console.log setup.log; do : >"$run/$f"; done

	# tmpfs mounts the guest must skip because the cwd or the run dir lives there on the host.
	local d notmpfs=
	for d in /tmp /run; do
		case "$PWD/" in "$d"/*) notmpfs="$notmpfs,$d" ;; esac
		case "$run/" in "$d"/*) notmpfs="$notmpfs,$d" ;; esac
	done
	notmpfs=${notmpfs#,}

	local v
	{
		printf 'COHORT_VM_CWD=%q\n' "$PWD"
		printf 'COHORT_VM_%s=%q\n' QUIET "$quiet" VERBOSE "$verbose" PMEM "$pmem_on" \
			LIO "${COHORT_VM_LIO:-1}" TRACE "${COHORT_VM_TRACE:-0}" PMEM_MODE "${COHORT_VM_PMEM_MODE:-raw}" \
			MODULES "${COHORT_VM_MODULES:-}" NDISKS "$(echo $disks | wc -w)"
		for v in $(compgen -e); do
			case "$v" in
			COHORT_VM_*) ;;
			COHORT_*) printf 'export %s=%q\n' "$v" "${!v}" ;;
			esac
		done
		for v in ${COHORT_VM_ENV:-}; do
			[[ $v =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "COHORT_VM_ENV: bad variable name '$v'"
			[ -z "${!v+x}" ] || printf 'export %s=%q\n' "$v" "${!v}"
		done
	} >"$run/env"

	# ------------------------------------------------------------ NVDIMM
	local pmem_args=() machine=pc
	if [ "$pmem_on" = 1 ]; then
		if [ -n "$pmem_file" ]; then
			exec 9>"$pmem_file.lock"
			flock -w 60 9 || die "NVDIMM file $pmem_file is in use by another vm.sh (lock $pmem_file.lock)"
			[ -e "$pmem_file" ] || truncate -s "$pmem_size" "$pmem_file"
			pmem_size=$(stat -c %s "$pmem_file")
		else
			pmem_file=$run/pmem.img
			truncate -s "$pmem_size" "$pmem_file"
		fi
		machine=$machine,nvdimm=on
		# shellcheck disable=SC2054 # the commas are qemu's
		pmem_args=(-object "memory-backend-file,id=mem1,share=on,mem-path=$pmem_file,size=$pmem_size"
			-device nvdimm,id=nv1,memdev=mem1)
	fi

	# ------------------------------------------------------------ boot
	# tsc=reliable: qemu's TCG TSC is the host's, so let the guest use it (vDSO clock_gettime)
	# instead of the HPET, whose every read is an emulated MMIO. mitigations=off: a test VM.
	local append="console=ttyS0 panic=-1 tsc=reliable mitigations=off"
	append="$append cohort.run=$run cohort.verbose=$verbose cohort.cache=$p9cache"
	[ -z "$notmpfs" ] || append="$append cohort.notmpfs=$notmpfs"
	[ -z "$share" ] || append="$append cohort.share=$share"
	[ "$verbose" = 1 ] || append="$append quiet loglevel=3"
	append="$append ${COHORT_VM_APPEND:-}"
	# -accel tcg (never KVM: the Debian kernel hangs after "Probing EDD" under -enable-kvm here).
	# shellcheck disable=SC2054 # the commas are qemu's
	local qemu=("$qemu_bin" -name cohort-vm
		-machine "$machine" -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem,slots=2,maxmem=8G"
		"${pmem_args[@]}"
		-kernel "$boot_kernel" -initrd "$initrd" -append "$append"
		-fsdev local,id=h,path=/,security_model=passthrough,multidevs=remap
		-device virtio-9p-pci,fsdev=h,mount_tag=hostroot
		-fsdev "local,id=r,path=$run,security_model=passthrough"
		-device virtio-9p-pci,fsdev=r,mount_tag=cohortrun
		-nic none -nographic -no-reboot)
	if [ -n "$share" ]; then
		# shellcheck disable=SC2054 # the commas are qemu's
		qemu+=(-fsdev "local,id=s,path=$share,security_model=passthrough"
			-device virtio-9p-pci,fsdev=s,mount_tag=cohortshare)
	fi
	for dk in $disks; do
		qemu+=(-drive "file=$dk,format=raw,if=virtio,cache=writeback")
	done
	[ -z "${COHORT_VM_PIDFILE:-}" ] || qemu+=(-pidfile "$COHORT_VM_PIDFILE")
	[ "$verbose" != 1 ] || echo "vm: ${qemu[*]}" >&2

	local t_start t_end wall wall_s qrc=0 t rc ready cmd_ms attempt=1 booted
	t_start=$(date +%s%N)
	# A guest that never reaches its init (seen under TCG: the console stops at "Booting from
	# ROM" and both vCPUs spin) ran nothing of the command: it is killed and booted again.
	# Once its init has mounted the run dir (it marks it there), the command's bounds apply.
	while :; do
		rm -f "$run/booted"
		timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null >"$run/console.log" 2>&1 &
		qpid=$!
		booted=0
		for ((t = 0; t < boot_s * 5; t++)); do
			[ -e "$run/booted" ] && booted=1 && break
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.2 # polling for the guest's mark, bounded by the count
		done
		if [ $booted = 1 ] || ! kill -0 "$qpid" 2>/dev/null || [ $attempt -ge "$boot_tries" ]; then
			break
		fi
		echo "vm: the guest did not reach its init within ${boot_s}s (a boot hang under TCG;" \
			"nothing of the command ran): booting it again (attempt $((attempt + 1)) of $boot_tries)" >&2
		kill "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
		attempt=$((attempt + 1))
	done
	# The guest writes these over the uncached 9p share; stream them while it runs.
	tail -n +1 -s 0.2 -f --pid="$qpid" "$run/out" &
	tails+=($!)
	tail -n +1 -s 0.2 -f --pid="$qpid" "$run/err" >&2 &
	tails+=($!)
	tail -n +1 -s 0.2 -f --pid="$qpid" "$run/vm.log" >&2 &
	tails+=($!)
	if [ "$verbose" = 1 ]; then
		tail -n +1 -s 0.2 -f --pid="$qpid" "$run/console.log" >&2 &
		tails+=($!)
	fi

	wait "$qpid" || qrc=$?
	qpid=
	for t in "${tails[@]}"; do wait "$t" 2>/dev/null || true; done
	tails=()
	t_end=$(date +%s%N)
	wall=$(((t_end - t_start) / 1000000))
	wall_s=$((wall / 1000)).$(printf '%03d' $((wall % 1000)))

	if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
		echo "vm: error: timed out after ${timeout_s}s (COHORT_VM_TIMEOUT); qemu was killed" >&2
		if [ "$verbose" != 1 ]; then
			echo "vm: last console lines:" >&2
			tail -n 15 "$run/console.log" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >&2
		fi
		exit 124
	fi
	if [ ! -s "$run/rc" ]; then
		echo "vm: error: the guest did not report an exit status (qemu exited $qrc after ${wall_s}s)" >&2
		if [ "$verbose" != 1 ]; then
			echo "vm: last console lines (COHORT_VM_VERBOSE=1 shows all):" >&2
			tail -n 30 "$run/console.log" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >&2
		fi
		exit 125
	fi
	rc=$(cat "$run/rc")
	[[ $rc =~ ^[0-9]+$ ]] || die "bad exit status '$rc' from the guest"
	ready='?' cmd_ms=0
	# shellcheck disable=SC1091
	[ -f "$run/times" ] && . "$run/times"
	note "exit $rc; guest ready at ${ready}s uptime, command $((cmd_ms / 1000)).$(printf '%03d' $((cmd_ms % 1000)))s, wall ${wall_s}s ($kver, TCG, $cpus vCPU)"
	exit "$rc"
}

main "$@"
