#!/usr/bin/env bash
# check-format.sh - fail if any C/C++ file in the tree differs from .clang-format's output.
# With --fix, reformat in place instead.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
files=$(git ls-files '*.c' '*.h' '*.cc' 2>/dev/null || true)
[ -n "$files" ] || exit 0
if [ "${1:-}" = "--fix" ]; then
	# shellcheck disable=SC2086
	clang-format -i $files
	exit 0
fi
bad=0
for f in $files; do
	if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
		echo "not formatted: $f (run scripts/check-format.sh --fix)"
		bad=1
	fi
done
exit $bad
