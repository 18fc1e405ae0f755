# cohortd-cluster.sh - sourced by the rig's host-path scripts (rig-frontend.sh, bench-frontend.sh):
# a cluster of cohortd processes on this host over the shm provider, from one config file, and
# cohortctl against them. Every wait is bounded.
#
#   cc_init DIR NODES ELEMENT_SIZE [PROVIDER]
#                                    the secret, the directories, and the config's [cluster] and
#                                    [group] sections (RAID-5 over three element files, 64K
#                                    chunk) in $CC_CONF; the caller appends the rest with
#                                    cat >>"$CC_CONF" ([log] dir = DIR/log is made for it).
#                                    PROVIDER: shm (the default: DIR/cluster), or rdma (node N
#                                    at $COHORT_RXE_IP:17500+N, the rig's rxe address). Fencing
#                                    is by lease on both, as rdma's is: on shm "auto" would
#                                    SIGKILL a paused node, and the rig pauses one to see it
#                                    fence itself
#   cc_vol0 LOG CACHE LANES SIZE DEVICE [KEY=VALUE...]
#                                    append the usual rest: [log] (DIR/log, LOG bytes, k = 1),
#                                    [cache] (CACHE blocks, LANES), [volume vol0] of SIZE and
#                                    [export vol0] as user_1/DEVICE, with any further export keys
#   cc_guest NAME SCRIPT             on the host: check that cohortd and cohortctl are built,
#                                    then run SCRIPT --in-guest in the VM rig (scripts/vm.sh);
#                                    returns only if they are not built
#   cc_start ID                      cohortd --node ID in the background; its log is
#                                    DIR/node<ID>.log, its pid ${cc_pids[ID]}
#   cc_wait_ready ID COUNT           until its log has COUNT "control: listening" lines (one per
#                                    start), at most 180 s; 1 if it exits first
#   cc_stop ID SIGNAL                signal it (0: only wait) and reap it within 120 s (then
#                                    SIGKILL); its exit status
#   cc_ctl ID ARGS...                cohortctl -c $CC_CONF --node ID ARGS, bounded
#   cc_export_state ID EXPORT        the export's state in cohortctl exports
#
# Needs $top (the repository), $build (the build directory) and, in the guest, jq. Leaves out: LIO (scripts/lio.sh).

CC_DIR=
CC_CONF=
cc_pids=()

cc_init() {
	CC_DIR=$1
	CC_CONF=$CC_DIR/cohort.conf
	local nodes=$2 esize=$3 provider=${4:-shm} address i
	address=$CC_DIR/cluster
	if [ "$provider" = rdma ]; then
		address=
		for ((i = 0; i < nodes; i++)); do address+="${address:+,}${COHORT_RXE_IP:?no rxe address}:$((17500 + i))"; done
	fi
	head -c 32 /dev/urandom >"$CC_DIR/secret"
	chmod 0600 "$CC_DIR/secret"
	mkdir -p "$CC_DIR/cluster" "$CC_DIR/log" "$CC_DIR/run"
	chmod 0700 "$CC_DIR/run"
	cat >"$CC_CONF" <<-EOF
		[cluster]
		name = rig
		nodes = $nodes
		provider = $provider
		address = $address
		secret = $CC_DIR/secret
		timeout_ms = 2000
		fence = lease

		[group]
		raid = raid5
		element0 = $CC_DIR/elem0
		element1 = $CC_DIR/elem1
		element2 = $CC_DIR/elem2
		element_size = $esize
		chunk = 64K

		[daemon]
		control = $CC_DIR/run/rig-%n.sock
	EOF
}

cc_vol0() {
	local kv
	cat >>"$CC_CONF" <<-EOF

		[log]
		dir = $CC_DIR/log
		bytes = $1
		replicas = 1

		[cache]
		blocks = $2
		lanes = $3

		[volume vol0]
		size = $4

		[export vol0]
		volume = vol0
		device = $5
		hba = 1
	EOF
	shift 5
	for kv in "$@"; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}" >>"$CC_CONF"; done
}

cc_guest() {
	[ -x "$build/bin/cohortd" ] && [ -x "$build/bin/cohortctl" ] || {
		echo "$1: $build/bin/cohortd or cohortctl not built (run scripts/setup.sh)" >&2
		return 1
	}
	COHORT_VM_TIMEOUT=${COHORT_VM_TIMEOUT:-900} COHORT_VM_MODULES="${COHORT_VM_MODULES:-} sd_mod" \
		exec "$top/scripts/vm.sh" "$2" --in-guest
}

cc_start() {
	local i=$1
	"$build/bin/cohortd" -c "$CC_CONF" --node "$i" >>"$CC_DIR/node$i.log" 2>&1 &
	cc_pids[i]=$!
}

cc_wait_ready() {
	local i=$1 want=$2 t n
	for ((t = 0; t < 1800; t++)); do
		n=$(grep -c 'control: listening on' "$CC_DIR/node$i.log" 2>/dev/null)
		[ "${n:-0}" -ge "$want" ] && return 0
		if ! kill -0 "${cc_pids[i]}" 2>/dev/null; then
			echo "cohortd node $i exited: $(tail -n 5 "$CC_DIR/node$i.log")" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "cohortd node $i not ready within 180 s: $(tail -n 5 "$CC_DIR/node$i.log")" >&2
	return 1
}

cc_stop() {
	local i=$1 sig=$2 t rc
	[ -n "${cc_pids[i]:-}" ] || return 0
	kill -"$sig" "${cc_pids[i]}" 2>/dev/null || true
	for ((t = 0; t < 1200; t++)); do
		kill -0 "${cc_pids[i]}" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "${cc_pids[i]}" 2>/dev/null; then
		echo "cohortd node $i did not exit within 120 s (signal $sig); killing it" >&2
		kill -KILL "${cc_pids[i]}" 2>/dev/null
	fi
	wait "${cc_pids[i]}"
	rc=$?
	cc_pids[i]=
	return $rc
}

cc_ctl() {
	local i=$1
	shift
	timeout 70 "$build/bin/cohortctl" -c "$CC_CONF" --node "$i" "$@"
}

cc_export_state() {
	cc_ctl "$1" --json exports | jq -r --arg e "$2" '.exports[] | select(.name == $e) | .state'
}
