#!/usr/bin/env bash
# Builds and runs every test: C++ unit + integration (Release), Node e2e against the real
# binaries, the crash tests, then the unit tests again under ASan+UBSan. Exits non-zero on any
# failure. RabbitMQ is started on loopback (scripts/engines.sh, installed if missing) for the
# queue contract suite and the RabbitMQ-mode crash test.
# Set CONDUIT_SKIP_ASAN=1 to skip the sanitizer pass (e.g. for a quick local run), and
# CONDUIT_SKIP_ENGINES=1 to run without RabbitMQ (its tests then report themselves skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true CCACHE_MAXSIZE=5G

step() { printf '\n==== %s ====\n' "$*"; }

if [ "${CONDUIT_SKIP_ENGINES:-0}" != "1" ]; then
  step "engines (RabbitMQ, Redis and PostgreSQL on loopback)"
  eval "$(./scripts/engines.sh start rabbitmq | grep '^export ')"
  eval "$(./scripts/engines.sh start redis | grep '^export ')"
  # CONDUIT_TEST_PG: the Store contract suite and the e2e smoke against PostgreSQL.
  eval "$(./scripts/engines.sh start postgres | grep '^export ')"
  # The broker-restart contract test restarts this broker (~10 s).
  export CONDUIT_TEST_AMQP_RESTART="$PWD/scripts/engines.sh stop rabbitmq && $PWD/scripts/engines.sh start rabbitmq"
  # The Redis Backplane restart test restarts Redis (~1 s).
  export CONDUIT_TEST_REDIS_RESTART="$PWD/scripts/engines.sh stop redis && $PWD/scripts/engines.sh start redis"
fi

step "configure + build (release)"
cmake --preset release >/dev/null
cmake --build --preset release

step "deployment artefacts vs the binary (deploy/, docs/operations.md)"
./scripts/check-deploy.sh build/release

step "e2e (node, official openai client)"
./scripts/e2e.sh build/release

step "crash tests (500 tasks, kill -9, restart; embedded and RabbitMQ queues)"
./scripts/crash-test.sh build/release all

if [ "${CONDUIT_SKIP_ENGINES:-0}" != "1" ]; then
  # Its own PostgreSQL/Redis/RabbitMQ (other ports, node name), which it stops and restarts.
  step "chaos test (3 instances: kill -9, Redis down 10 s, RabbitMQ restart; ~3 min)"
  ./scripts/chaos-test.sh build/release
fi

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
