#!/usr/bin/env bash
# demo.sh - install what is needed, build, and run Cohort's main job as it stands: cohort-demo, a
# three-node cluster on this host over the shm provider sharing a RAID-5 volume, each write
# replicated to one peer's log before it is acknowledged, a 70/30 read/write mix on every node,
# node 1 SIGKILLed half way through, the survivors taking over its log, and every block checked
# against the acknowledged writes (the dead node's included). Then the whole cluster is SIGKILLed
# with acknowledged writes only in the logs, restarted on the same files (it recovers them before
# serving), and node 1 is restarted so that it rejoins; every node runs more I/O, and every block
# is checked against both lives' acknowledged writes, with a parity scrub. Exits non-zero when a
# check fails.
#
# Extra arguments go to cohort-demo, e.g. scripts/demo.sh --nodes 5 --seed 7, --ops 20000, or
# --no-kill, --no-restart. The measured tables are cohort-bench's (docs/benchmarks.md).
#
# scripts/demo.sh --lio shows the host path instead, in the VM rig (scripts/demo-lio.sh): three
# cohortd controllers, one multipath device over them, fio with verification while a controller
# is killed and restarted, and a summary.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$top/scripts/setup.sh"
if [ "${1:-}" = "--lio" ]; then
	shift
	[ $# = 0 ] || {
		echo "demo: --lio takes no other argument" >&2
		exit 2
	}
	exec "$top/scripts/demo-lio.sh"
fi
echo
echo "Cohort demo on $(nproc) cores"
echo
exec "$top/build/bin/cohort-demo" "$@"
