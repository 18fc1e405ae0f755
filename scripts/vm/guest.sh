#!/bin/bash
# Stage 2 of the Cohort VM rig: runs inside the guest, chrooted into the host's `/` (over 9p).
# Started by scripts/vm/init as `bash <run dir>/guest.sh <run dir>` (the run dir holds a copy of
# this file). Sets up soft-RoCE (rxe0 on a veth pair), configfs/LIO modules and the NVDIMM, then
# runs <run dir>/cmd.sh in the host's cwd with stdout/stderr going to <run dir>/out and /err, and
# writes its exit status to <run dir>/rc. Setup notes go to <run dir>/vm.log ("vm: ..." lines).
# Returning from here lets init power the guest off.
#
# Every exec costs 0.1-0.3 s under TCG, so this file sticks to builtins where it can.
run=$1
exec </dev/null 3>>"$run/vm.log"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb SHELL=/bin/bash USER=root LOGNAME=root
unset LS_COLORS

# Written by scripts/vm.sh: COHORT_VM_CWD, COHORT_VM_{QUIET,VERBOSE,PMEM,PMEM_MODE,LIO,MODULES,TRACE},
# forwarded COHORT_* / COHORT_VM_ENV variables.
# shellcheck disable=SC1091
. "$run/env"
quiet=${COHORT_VM_QUIET:-0}
verbose=${COHORT_VM_VERBOSE:-0}

if [ "${COHORT_VM_TRACE:-0}" = 1 ]; then
	exec 4>>"$run/trace.log"
	BASH_XTRACEFD=4
	PS4='+ ${EPOCHREALTIME} '
	set -x
fi

log() { [ "$quiet" = 1 ] || echo "vm: $*" >&3; }
err() { echo "vm: ERROR: $*" >&3; }
# Run a setup step; its output lands in setup.log (and in vm.log when verbose).
step() {
	if [ "$verbose" = 1 ]; then
		"$@" 2>&1 | tee -a "$run/setup.log" >&3
		return "${PIPESTATUS[0]}"
	fi
	"$@" >>"$run/setup.log" 2>&1
}
# sleep without an exec
nap() { read -rt "$1" <> <(:) || :; }
mounted() {
	local mnt
	while read -r _ mnt _; do [ "$mnt" = "$1" ] && return 0; done </proc/mounts
	return 1
}

ulimit -l unlimited 2>/dev/null || err "cannot raise RLIMIT_MEMLOCK"
ulimit -c 0
echo cohort-vm >/proc/sys/kernel/hostname

# ---- configfs + LIO/TCMU modules (best effort, for later LIO work) ----
# Each module costs 0.4-2.5 s to load under TCG, so only these four by default; COHORT_VM_MODULES
# adds more (e.g. "sd_mod iscsi_target_mod" for tcm_loop LUNs as /dev/sdX and the iSCSI target).
lio_mods=(configfs target_core_mod target_core_user tcm_loop)
# shellcheck disable=SC2206 # word splitting wanted
extra_mods=(${COHORT_VM_MODULES:-})
lio_setup() {
	local bad='' m
	if ! step modprobe -a "${lio_mods[@]}"; then
		for m in "${lio_mods[@]}"; do
			[ -d "/sys/module/$m" ] || bad="$bad $m"
		done
	fi
	if ! mounted /sys/kernel/config; then
		step mount -t configfs none /sys/kernel/config || bad="$bad mount:configfs"
	fi
	if [ -n "$bad" ]; then
		err "LIO setup incomplete:$bad"
	else
		log "configfs at /sys/kernel/config; target_core_user, tcm_loop loaded"
	fi
}
extra_setup() {
	if step modprobe -a "${extra_mods[@]}"; then
		log "loaded ${extra_mods[*]}"
	else
		err "could not load all of: ${extra_mods[*]}"
	fi
}

# ---- emulated NVDIMM -> /dev/pmem0 (best effort) ----
# COHORT_VM_PMEM_MODE: raw (default; label-less namespace, /dev/pmem0 block device without DAX),
# fsdax (namespace converted, ext4 -o dax mounted at /run/cohort-pmem) or devdax (/dev/dax0.0).
# A namespace or file system already in the wanted mode (COHORT_VM_PMEM_FILE) is kept as is.
pmem_setup() {
	local i sectors=0 mode=${COHORT_VM_PMEM_MODE:-raw} ns
	# --ignore-install: ndctl's modprobe.d hook runs `ndctl load-keys` first (about 1 s here).
	step modprobe --ignore-install -a nfit libnvdimm nd_pmem || err "cannot load nfit/libnvdimm/nd_pmem"
	for ((i = 0; i < 50; i++)); do
		[ -b /dev/pmem0 ] && break
		nap 0.1
	done
	if [ ! -b /dev/pmem0 ]; then
		err "no /dev/pmem0 after loading nfit/nd_pmem"
		log "pmem0 absent"
		return
	fi
	read -r sectors </sys/block/pmem0/size
	log "pmem0 present (/dev/pmem0, $((sectors / 2048)) MiB)"
	[ "$mode" = raw ] && return
	ns=$(ndctl list -n namespace0.0 2>&1)
	if [[ $ns != *"\"mode\":\"$mode\""* ]]; then
		step modprobe -a dax_pmem device_dax
		step ndctl create-namespace --force --reconfig=namespace0.0 --mode="$mode" --map=mem ||
			{
				err "ndctl could not convert namespace0.0 to $mode (package ndctl)"
				return
			}
	fi
	case "$mode" in
	fsdax)
		for ((i = 0; i < 50; i++)); do
			[ -b /dev/pmem0 ] && break
			nap 0.1
		done
		if [ "$(blkid -o value -s TYPE /dev/pmem0 2>/dev/null)" != ext4 ]; then
			step mkfs.ext4 -q -F -b 4096 /dev/pmem0 || err "mkfs.ext4 /dev/pmem0 failed"
		fi
		mkdir -p /run/cohort-pmem
		if step mount -o dax /dev/pmem0 /run/cohort-pmem; then
			log "pmem0 fsdax: ext4 -o dax mounted at /run/cohort-pmem"
		else
			err "mount -o dax /dev/pmem0 failed"
		fi
		;;
	devdax)
		for ((i = 0; i < 50; i++)); do
			[ -c /dev/dax0.0 ] && break
			nap 0.1
		done
		if [ -c /dev/dax0.0 ]; then log "pmem devdax: /dev/dax0.0"; else err "no /dev/dax0.0"; fi
		;;
	*) err "unknown COHORT_VM_PMEM_MODE '$mode' (raw, fsdax, devdax)" ;;
	esac
}

# Setup is a chain of execs over 9p that leaves a vCPU idle, so LIO and pmem come up in the
# background while rxe is set up.
jobs_bg=()
if [ "${COHORT_VM_LIO:-1}" = 1 ]; then
	lio_setup &
	jobs_bg+=($!)
fi
if [ "${COHORT_VM_PMEM:-1}" = 1 ]; then
	pmem_setup &
	jobs_bg+=($!)
fi
if [ ${#extra_mods[@]} -gt 0 ]; then
	extra_setup &
	jobs_bg+=($!)
fi

# ---- soft-RoCE: rxe0 on veth0 (a fixed private address that exists only inside this VM) ----
rxe_ip=${COHORT_VM_RXE_IP:-10.77.0.1}
if step modprobe -a rdma_rxe ib_uverbs rdma_ucm veth &&
	step ip -batch - <<EOF &&
link set lo up
link add veth0 type veth peer name veth1
address add $rxe_ip/24 dev veth0
link set veth1 up
link set veth0 up
EOF
	step bash "$run/rxe-setup.sh" veth0 rxe0; then
	export COHORT_RXE_DEV=rxe0 COHORT_RXE_IP=$rxe_ip COHORT_RXE_NETDEV=veth0
	log "rxe0 ACTIVE on veth0 ($rxe_ip)"
else
	ip link set lo up 2>/dev/null
	err "soft-RoCE setup failed; COHORT_RXE_DEV is not set. Setup log:"
	while IFS= read -r line; do echo "vm:   $line" >&3; done <"$run/setup.log"
fi

for j in "${jobs_bg[@]}"; do wait "$j"; done
# ---- virtio disks (COHORT_VM_DISKS on the host) ----
if [ "${COHORT_VM_NDISKS:-0}" -gt 0 ]; then
	step modprobe virtio_blk || err "cannot load virtio_blk"
	devs= found=0
	for l in a b c d e f g h; do
		[ "$found" -ge "$COHORT_VM_NDISKS" ] && break
		for _ in $(seq 1 100); do
			[ -b "/dev/vd$l" ] && break
			nap 0.1
		done
		[ -b "/dev/vd$l" ] || { err "no /dev/vd$l"; break; }
		devs="$devs,/dev/vd$l"
		found=$((found + 1))
	done
	export COHORT_VM_DISK_DEVS=${devs#,}
	log "virtio disks: $COHORT_VM_DISK_DEVS"
fi
[ -b /dev/pmem0 ] && export COHORT_PMEM_DEV=/dev/pmem0
mounted /run/cohort-pmem && export COHORT_PMEM_DIR=/run/cohort-pmem
[ -c /dev/dax0.0 ] && export COHORT_PMEM_DAX=/dev/dax0.0

# ---- the command ----
set +x
export COHORT_IN_VM=1
read -r ready _ </proc/uptime
rc=125
cmd_ms=0
if cd "$COHORT_VM_CWD" 2>/dev/null; then
	t0=${EPOCHREALTIME/./}
	bash "$run/cmd.sh" >>"$run/out" 2>>"$run/err"
	rc=$?
	t1=${EPOCHREALTIME/./}
	cmd_ms=$(((t1 - t0) / 1000))
else
	err "cwd $COHORT_VM_CWD does not exist in the guest"
fi
printf 'ready=%s\ncmd_ms=%s\n' "$ready" "$cmd_ms" >"$run/times"
echo "$rc" >"$run/rc"
exit 0
