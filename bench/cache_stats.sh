#!/usr/bin/env bash
# Distributed cache statistics (issue 6 item 3): aggregation time for N simulated instances on a
# private redis-server, against one PING and one raw HGETALL of the same records in the same run
# (conduit-cache-stats-bench; see bench/cache_stats_bench.cpp for what each line measures).
# Prints each repetition's table; bench/results/*-cache-stats.md quotes them.
#
#   bench/cache_stats.sh [BUILD_DIR]        (default build/release)
#
# Knobs: CS_REPS=3 CS_INSTANCES=1000 CS_RUNS=300 CS_BUCKETS=24 CS_PIN=1 (redis-server on CPU 0,
# the bench on CPU 1) CS_QUIET_WAIT=60 (s before each repetition).
# Needs: conduit-cache-stats-bench in BUILD_DIR (-DCONDUIT_BUILD_BENCH=ON); redis-server, redis-cli.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-build/release}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
REPS="${CS_REPS:-3}"
INSTANCES="${CS_INSTANCES:-1000}"
RUNS="${CS_RUNS:-300}"
BUCKETS="${CS_BUCKETS:-24}"
PIN="${CS_PIN:-1}"
QUIET_WAIT="${CS_QUIET_WAIT:-60}"
QUIET_PCT=25
QUIET_DISK_PCT=10
QUIET_WAITED=0
BUSY_RUNS=0
CLK_TCK="$(getconf CLK_TCK)"
DISK="$(df --output=source "${TMPDIR:-/tmp}" 2>/dev/null | tail -1)"
DISK="${DISK#/dev/}"

log() { printf '[cache-stats %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -x "$BUILD/conduit-cache-stats-bench" ]] || die "$BUILD/conduit-cache-stats-bench missing"
for c in redis-server redis-cli; do
    command -v "$c" >/dev/null || die "$c not installed"
done

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$TMP"
}
trap cleanup EXIT

REDIS_PIN=()
BENCH_PIN=()
if [[ "$PIN" == 1 ]]; then
    REDIS_PIN=(taskset -c 0)
    BENCH_PIN=(taskset -c 1)
fi
REDIS_PORT="$(free_port)"
start_bg redis "${REDIS_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$TMP"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start"

echo "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, $(redis-server --version | cut -d' ' -f1-3)"
echo "command: $(quote_cmd "${BENCH_PIN[@]}" "$BUILD/conduit-cache-stats-bench" --redis "redis://127.0.0.1:PORT/0" --instances "$INSTANCES" --runs "$RUNS" --buckets "$BUCKETS")"
for rep in $(seq 1 "$REPS"); do
    wait_quiet
    echo
    echo "## repetition $rep (load average $(cut -d' ' -f1-3 /proc/loadavg); machine $LAST_QUIET_PCT % of a core busy before)"
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    "${BENCH_PIN[@]}" "$BUILD/conduit-cache-stats-bench" --redis "redis://127.0.0.1:$REDIS_PORT/0" \
        --instances "$INSTANCES" --runs "$RUNS" --buckets "$BUCKETS" --prefix "rep$rep:"
    # Redis' own time per command in this repetition (the private server sees only the bench):
    # evalsha = the push script (fill + steady pushes), hgetall = records/global reads.
    redis-cli -p "$REDIS_PORT" info commandstats |
        awk -F'[:,=]' '/^cmdstat_(evalsha|eval|hgetall|exec|multi|time|ping)/ {
            printf "redis %s: %s calls, %s us per call\n", substr($1, 9), $3, $7 }'
done
echo
echo "quiet waits: ${QUIET_WAITED} s; repetitions started on a busy machine: $BUSY_RUNS"
