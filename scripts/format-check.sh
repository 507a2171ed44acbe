#!/usr/bin/env bash
# clang-format check of C++ sources changed against the given base (default: all tracked files).
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-}"
if [ -n "$base" ]; then
  files=$(git diff --name-only --diff-filter=ACMR "$base" -- '*.cpp' '*.hpp' || true)
else
  files=$(git ls-files '*.cpp' '*.hpp')
fi
bad=0
for f in $files; do
  [ -f "$f" ] || continue
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f"; bad=1
  fi
done
[ "$bad" -eq 0 ] && echo "format: ok"
exit "$bad"
