#!/usr/bin/env bash
# demo.sh - install what is needed, build, and run Cohort's main job as it stands: a two-node
# cluster on this host over the shm provider, measuring the fabric's latency and message rate
# beside the host's own floor (memcpy and a cross-process cache-line ping-pong), as a table.
#
# Extra arguments go to cohort-bench, e.g. scripts/demo.sh --csv or --iters 100000.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$top/scripts/setup.sh"
echo
echo "Cohort fabric benchmark: 2 node processes on the shm provider ($(nproc) cores)"
echo
exec "$top/build/bin/cohort-bench" fabric --provider shm --iters 20000 "$@"
