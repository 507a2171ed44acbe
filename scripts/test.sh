#!/usr/bin/env bash
# Builds and runs every test: C++ unit + integration (Release), Node e2e against the real
# binaries, then the unit tests again under ASan+UBSan. Exits non-zero on any failure.
# Set CONDUIT_SKIP_ASAN=1 to skip the sanitizer pass (e.g. for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true CCACHE_MAXSIZE=5G

step() { printf '\n==== %s ====\n' "$*"; }

step "configure + build (release)"
cmake --preset release >/dev/null
cmake --build --preset release

step "e2e (node, official openai client)"
./scripts/e2e.sh build/release

if [ "${CONDUIT_SKIP_ASAN:-0}" != "1" ]; then
  step "configure + build (asan)"
  cmake --preset asan >/dev/null
  cmake --build --preset asan --target conduit_unit_tests conduit-loadgen
  step "unit tests under ASan+UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --preset asan -L unit --output-on-failure
fi

# Last, so its summary line ("100% tests passed, 0 tests failed out of N") closes the log.
step "C++ unit + integration tests (release)"
ctest --preset release --output-on-failure
