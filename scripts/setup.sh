#!/usr/bin/env bash
# setup.sh - install the Debian packages Cohort builds and tests with, then configure and build.
#
# Idempotent: packages already present are skipped (apt-get is not even called when nothing is
# missing), and the CMake build is incremental. Set COHORT_SETUP_NO_BUILD=1 to install only.
# Extra CMake arguments may be passed through COHORT_CMAKE_ARGS.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pkgs=(
	build-essential cmake pkg-config ninja-build clang clang-format libclang-rt-14-dev
	libibverbs-dev librdmacm-dev rdma-core ibverbs-utils
	libpmem2-dev libhwloc-dev liburing-dev libisal-dev libssl-dev
	libgtest-dev spin
	linux-libc-dev sg3-utils fio multipath-tools
	libinih-dev libjansson-dev
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	export DEBIAN_FRONTEND=noninteractive
	# Another apt client (a parallel setup, unattended upgrades) may hold the lock; wait for it.
	$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
	$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${COHORT_SETUP_NO_BUILD:-0}" = 1 ]; then
	exit 0
fi

build=${COHORT_BUILD_DIR:-$top/build}
# shellcheck disable=SC2086
cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${COHORT_BUILD_TYPE:-RelWithDebInfo} \
	${COHORT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
