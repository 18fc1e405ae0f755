#!/usr/bin/env bash
# bench-rxe.sh - Cohort's rdma provider beside perftest on the same soft-RoCE device: boots the
# VM rig once and runs ib_write_lat, ib_read_lat, ib_atomic_lat (FAA and CAS), ib_send_lat and
# cohort-bench fabric --provider rdma for the same sizes and iteration counts, then prints one
# table with each p50 and p99 and the ratio Cohort/perftest at p50. Then, on the same device,
# cohort-bench cache (4 node processes) and cohort-bench replication (3 node processes: the
# engine's acknowledged writes with k = 0, 1, 2 log copies beside WRITE + FLUSH, and takeover
# times over COHORT_BENCH_KILLS SIGKILLs, default 5 here).
#   scripts/bench-rxe.sh [ITERS]        default 1000 iterations per size
#   COHORT_RXE_PARTS="perftest cache repl"   the parts to run (default: all three)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${COHORT_BUILD_DIR:-$top/build}
iters=${1:-1000}
sizes="8 64 512 4096"
parts=" ${COHORT_RXE_PARTS:-perftest cache repl} "

if [ "${2:-}" = "--in-guest" ]; then
	dev=$COHORT_RXE_DEV
	ip=$COHORT_RXE_IP
	out=$(mktemp -d)
	if [[ $parts == *" perftest "* ]]; then
	# perftest prints: #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
	pt() {
		local tool=$1 name=$2 size=$3
		shift 3
		timeout 120 "$tool" -d "$dev" -F -s "$size" -n "$iters" "$@" >/dev/null 2>&1 &
		local srv=$!
		local line=""
		for try in 1 2 3 4 5 6 7 8 9 10; do
			sleep 0.5
			line=$(timeout 120 "$tool" -d "$dev" -F -s "$size" -n "$iters" "$@" "$ip" 2>/dev/null |
				awk -v s="$size" '$1 == s && NF >= 9 {print $5, $8}') && [ -n "$line" ] && break
		done
		wait "$srv" 2>/dev/null || true
		[ -n "$line" ] && echo "$name $size $line" >> "$out/perftest"
	}
	for s in $sizes; do
		pt ib_write_lat write "$s"
		pt ib_read_lat read "$s"
		pt ib_send_lat send "$s"
	done
	pt ib_atomic_lat faa 8 -A FETCH_AND_ADD
	pt ib_atomic_lat cas 8 -A CMP_AND_SWAP
	# Cohort twice: busy-polling exactly as perftest does, and yielding every 64 spins of its
	# memory polling (COHORT_BENCH_YIELD), which keeps rxe's deferred kernel work from waiting
	# for a scheduler tick when two pollers fill both vCPUs.
	for y in 0 64; do
		COHORT_BENCH_YIELD=$y timeout 600 "$build/bin/cohort-bench" fabric --provider rdma \
			--cluster "$ip:$((18601 + y)),$ip:$((18602 + y))" --iters "$iters" --warmup 100 \
			--min-size 8 --max-size 4096 --ops write,read,cas,faa,send --csv > "$out/cohort$y"
	done
	echo "Cohort (rdma provider) beside perftest on $dev ($(uname -r), TCG guest), $iters iterations per size; microseconds"
	echo
	echo "| op | size | perftest p50 | perftest p99 | Cohort p50 | Cohort p99 | ratio p50 | Cohort yielding p50 | ratio p50 |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	awk -F'[ ,]' 'FILENAME ~ /perftest$/ { pt[$1 " " $2] = $3 " " $4; next }
		FILENAME ~ /cohort64$/ && FNR > 1 { y[$2 " " $4] = $7 / 1000; next }
		FILENAME ~ /cohort0$/ && FNR > 1 && $3 == "rdma" {
			key = $2 " " $4
			if (!(key in pt)) next
			row[++n] = key; c50[key] = $7 / 1000; c99[key] = $8 / 1000
		}
		END {
			for (i = 1; i <= n; i++) {
				k = row[i]; split(pt[k], p, " "); split(k, ks, " ")
				printf "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", ks[1], ks[2],
					p[1], p[2], c50[k], c99[k], c50[k] / p[1], y[k], y[k] / p[1]
			}
		}' "$out/perftest" "$out/cohort64" "$out/cohort0"
	echo
	fi
	if [[ $parts == *" cache "* ]]; then
	echo "cohort-bench cache --provider rdma on $dev: the cache beside the raw fabric operations"
	echo "it is built from (microseconds; net/op = fabric operations per cache operation)"
	echo
	timeout 900 "$build/bin/cohort-bench" cache --provider rdma --iters "$((iters / 2))" \
		--cluster "$ip:18611,$ip:18612,$ip:18613,$ip:18614" | sed 's/^/    /'
	echo
	fi
	if [[ $parts == *" repl "* ]]; then
	echo "cohort-bench replication --provider rdma on $dev: acknowledged 4 KiB writes with k log"
	echo "copies beside WRITE + FLUSH, and takeover over SIGKILLs (microseconds)"
	echo
	COHORT_BENCH_KILLS=${COHORT_BENCH_KILLS:-5} timeout 1200 "$build/bin/cohort-bench" \
		replication --provider rdma --iters "$((iters / 2))" --warmup 50 \
		--cluster "$ip:18621,$ip:18622,$ip:18623" | sed 's/^/    /'
	fi
	rm -rf "$out"
	exit 0
fi

[ -x "$build/bin/cohort-bench" ] || "$top/scripts/setup.sh"
exec "$top/scripts/vm.sh" "$top/scripts/bench-rxe.sh" "$iters" --in-guest
