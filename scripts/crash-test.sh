#!/usr/bin/env bash
# Crash test of the async task engine (issue 3): 500 image/video tasks with webhooks, kill -9 of
# the gateway during the submission, mid-run and during the recovery, restarts on the same data
# directory; then every task must be terminal (completed), none lost, no attempt started twice
# upstream, every terminal webhook delivered with a valid signature. See tests/crash/crash.test.mjs
# for what is checked and the CRASH_* knobs.
#
#   scripts/crash-test.sh [build-dir] [embedded|rabbitmq|all]     (defaults: build/release, all)
#
# The rabbitmq mode needs a broker: `eval "$(scripts/engines.sh start rabbitmq | grep ^export)"`
# sets CONDUIT_TEST_AMQP; without it that mode is skipped with a message. Each run uses a fresh
# vhost (created and deleted with rabbitmqctl as in scripts/engines.sh; override the command with
# CRASH_RABBITMQCTL). Logs and a JSON report of a failed run are kept (path printed).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build/release}"
MODE="${2:-all}"
BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
for bin in conduit conduit-mock-provider; do
  [ -x "$BUILD_DIR/$bin" ] || { echo "crash-test: $BUILD_DIR/$bin is missing (build it first)" >&2; exit 2; }
done
command -v node >/dev/null || { echo "crash-test: node (>= 20) is required" >&2; exit 2; }

case "$MODE" in
  embedded) MODES=embedded ;;
  rabbitmq) MODES=rabbitmq ;;
  all) MODES=embedded,rabbitmq ;;
  *) echo "usage: $0 [build-dir] [embedded|rabbitmq|all]" >&2; exit 2 ;;
esac
if [[ "$MODES" == *rabbitmq* && -z "${CONDUIT_TEST_AMQP:-}" ]]; then
  echo "crash-test: rabbitmq mode SKIPPED: CONDUIT_TEST_AMQP is unset" \
    "(eval \"\$(scripts/engines.sh start rabbitmq | grep ^export)\" first)" >&2
fi

export CONDUIT_BUILD_DIR="$BUILD_DIR" CRASH_MODES="$MODES"
exec node --test-reporter=spec tests/crash/crash.test.mjs
