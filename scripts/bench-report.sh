#!/usr/bin/env bash
# bench-report.sh - run cohort-bench fabric on the shm provider and print a Markdown section for
# docs/benchmarks.md: the machine, the exact command, the table, and each operation's p50 beside
# its same-run floor (a cross-process cache-line ping-pong for the two-sided ping-pong tests, and
# memcpy of the same size for one-sided transfers).
#   scripts/bench-report.sh [cohort-bench options...]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench="$top/build/bin/cohort-bench"
[ -x "$bench" ] || "$top/scripts/setup.sh"
args=(fabric --provider shm --iters 20000 "$@")
csv=$(mktemp)
trap 'rm -f "$csv"' EXIT
"$bench" "${args[@]}" --csv > "$csv"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "### \`cohort-bench ${args[*]}\`"
echo
echo "Machine: $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r)," \
	"$(date -u +%Y-%m-%d). Nanoseconds."
echo
echo "| op | provider | size | samples | min | p50 | p99 | p99.9 | max |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
tail -n +2 "$csv" | awk -F, '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $2,$3,$4,$5,$6,$7,$8,$9,$10}'
echo
echo "Each operation's p50 beside its floor measured in the same run:"
echo
echo "| op | size | p50 | floor | floor p50 | ratio |"
echo "| --- | ---: | ---: | --- | ---: | ---: |"
tail -n +2 "$csv" | awk -F, '
	$3 == "host" && $2 == "memcpy" { mc[$4] = $7 }
	$3 == "host" && $2 == "pingpong" { pp = $7 }
	$3 != "host" { op[++n] = $2; sz[n] = $4; p50[n] = $7 }
	END {
		for (i = 1; i <= n; i++) {
			if (op[i] == "write" || op[i] == "send") { f = "ping-pong (half RTT)"; v = pp }
			else { f = "memcpy " sz[i] " B"; v = mc[sz[i]] }
			if (v > 0) printf "| %s | %s | %s | %s | %s | %.1f |\n", op[i], sz[i], p50[i], f, v, p50[i] / v
		}
	}'
