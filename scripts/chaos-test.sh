#!/usr/bin/env bash
# Chaos test of a three-instance cluster (issue 6): PRIVATE PostgreSQL, Redis and RabbitMQ (their
# own state directory, ports and RabbitMQ node name, so the shared engines other runs use are never
# touched), three `conduit` instances, steady chat + async-task + hub load, then kill -9 of an
# instance, Redis stopped for 10 s and a RabbitMQ restart. See tests/chaos/chaos.test.mjs for what
# is checked and the CHAOS_* knobs.
#
#   scripts/chaos-test.sh [build-dir]        (default build/release)
#
# Environment: CHAOS_ENGINES_DIR (/tmp/conduit-chaos-engines), CHAOS_REDIS_PORT (6471),
# CHAOS_AMQP_PORT (5771), CHAOS_PG_PORT (5571), CHAOS_EPMD_PORT (4371), CHAOS_RMQ_NODE
# (chaos@localhost); CHAOS_KEEP_ENGINES=1 leaves the engines running afterwards (faster reruns).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build/release}"
BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
for bin in conduit conduit-mock-provider; do
  [ -x "$BUILD_DIR/$bin" ] || { echo "chaos-test: $BUILD_DIR/$bin is missing (build it first)" >&2; exit 2; }
done
command -v node >/dev/null || { echo "chaos-test: node (>= 20) is required" >&2; exit 2; }
command -v psql >/dev/null || { echo "chaos-test: psql is required (apt-get install postgresql-client)" >&2; exit 2; }
[ -d tests/e2e/node_modules/@microsoft/signalr ] ||
  { echo "chaos-test: run 'npm ci' in tests/e2e first (@microsoft/signalr)" >&2; exit 2; }

export CONDUIT_ENGINES_DIR="${CHAOS_ENGINES_DIR:-/tmp/conduit-chaos-engines}"
export CONDUIT_REDIS_PORT="${CHAOS_REDIS_PORT:-6471}"
export CONDUIT_AMQP_PORT="${CHAOS_AMQP_PORT:-5771}"
export CONDUIT_PG_PORT="${CHAOS_PG_PORT:-5571}"
export CONDUIT_EPMD_PORT="${CHAOS_EPMD_PORT:-4371}"
export CONDUIT_RMQ_NODE="${CHAOS_RMQ_NODE:-chaos@localhost}"
if [ "$CONDUIT_ENGINES_DIR" = /tmp/conduit-engines ] || [ "$CONDUIT_REDIS_PORT" = 6390 ] ||
  [ "$CONDUIT_AMQP_PORT" = 5699 ] || [ "$CONDUIT_RMQ_NODE" = conduit@localhost ]; then
  echo "chaos-test: refusing to use the shared engines' directory, ports or node name" >&2
  exit 2
fi

stop_engines() {
  if [ "${CHAOS_KEEP_ENGINES:-0}" != 1 ]; then
    scripts/engines.sh stop all >/dev/null 2>&1 || true
  fi
}
trap stop_engines EXIT

eval "$(scripts/engines.sh start all | grep ^export)"
# 3,000 hub sessions: one descriptor each in the client process and in the instances.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export CONDUIT_BUILD_DIR="$BUILD_DIR" CHAOS_PRIVATE_ENGINES=1
node --test-reporter=spec tests/chaos/chaos.test.mjs
