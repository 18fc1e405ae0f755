#!/usr/bin/env bash
# bench-plot.sh - turn `cohort-bench engine --csv` output into PNG plots (gnuplot): for each
# operation (read, write, mix), operations per second and p50 latency against the queue depth,
# one line per node count and sharing. Installs gnuplot (Debian gnuplot-nox) when it is missing.
#   scripts/bench-plot.sh engine.csv [outdir]     (outdir: docs/, the default)
# Files: <outdir>/engine-iops.png, <outdir>/engine-p50.png.
#
# The rate comes from the engine_rate rows (wall time per operation of all nodes together), the
# latency from the engine rows' p50.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
csv=${1:?usage: bench-plot.sh engine.csv [outdir]}
out=${2:-$top/docs}
[ -r "$csv" ] || { echo "bench-plot: cannot read $csv" >&2; exit 2; }
head -1 "$csv" | grep -q '^suite,op,provider,size,samples,min_ns,p50_ns,p99_ns,p999_ns,max_ns$' ||
	{ echo "bench-plot: $csv is not cohort-bench CSV" >&2; exit 2; }
if ! command -v gnuplot >/dev/null; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
	$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends gnuplot-nox
fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One data file per (op, nodes, sharing): "depth kiops p50_us", sorted by depth.
awk -F, -v dir="$tmp" '
	($1 == "engine" || $1 == "engine_rate") && $2 ~ /^(read|write|mix)_qd[0-9]+_n[0-9]/ {
		if ($1 == "engine") { p50[$2] = $7 / 1000.0 } else { per[$2] = $7 }
	}
	END {
		for (r in p50) {
			if (!(r in per) || per[r] <= 0) continue
			split(r, f, "_")
			op = f[1]; qd = substr(f[2], 3) + 0; n = substr(f[3], 2) + 0
			series = op "_n" n (f[4] != "" ? "_" f[4] : "")
			printf "%d %.3f %.3f\n", qd, 1e6 / per[r], p50[r] >> (dir "/" series ".dat")
			seen[series] = 1
		}
		for (s in seen) print s > (dir "/series")
	}' "$csv"
[ -s "$tmp/series" ] || { echo "bench-plot: no engine rows in $csv" >&2; exit 1; }
for f in "$tmp"/*.dat; do sort -n -o "$f" "$f"; done

plot_cmd() { # $1: operation, $2: column (2 kIOPS, 3 p50)
	local first=1 cmd="" s
	for s in $(grep "^${1}_" "$tmp/series" | sort); do
		[ $first = 1 ] || cmd+=", "
		first=0
		cmd+="'$tmp/$s.dat' using 1:$2 with linespoints title '${s//_/ }'"
	done
	echo "${cmd:-NaN notitle}"
}

gnuplot <<GP
set terminal pngcairo size 1000,1400 noenhanced
set logscale x 2
set logscale y 10
set xtics (1, 4, 16, 32, 64)
set xrange [0.8:80]
set xlabel "operations in flight per node"
set grid
set key outside right
set output "$out/engine-iops.png"
set multiplot layout 3,1 title "cohort-bench engine: rate against queue depth (4 KiB, k = 1, $(nproc) cores)"
set ylabel "k operations / s, all nodes"
set title "read"
plot $(plot_cmd read 2)
set title "write"
plot $(plot_cmd write 2)
set title "70/30 mix"
plot $(plot_cmd mix 2)
unset multiplot
set output "$out/engine-p50.png"
set multiplot layout 3,1 title "cohort-bench engine: p50 latency against queue depth (4 KiB, k = 1, $(nproc) cores)"
set ylabel "p50, us"
set title "read"
plot $(plot_cmd read 3)
set title "write"
plot $(plot_cmd write 3)
set title "70/30 mix"
plot $(plot_cmd mix 3)
unset multiplot
GP
echo "bench-plot: wrote $out/engine-iops.png and $out/engine-p50.png"
