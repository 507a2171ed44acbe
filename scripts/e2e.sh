#!/usr/bin/env bash
# Runs the Node end-to-end suites (official npm clients, lock file committed) against the real
# binaries in the given build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build/release}"
BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
cd tests/e2e
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
CONDUIT_BIN="$BUILD_DIR/conduit" MOCK_BIN="$BUILD_DIR/conduit-mock-provider" \
  node --test --test-concurrency=1 --test-reporter=spec ./*.test.mjs
