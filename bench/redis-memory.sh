#!/usr/bin/env bash
# Redis memory per item of what Conduit keeps there, for engine sizing (docs/operations.md):
# a hub connection's pub/sub channel subscription (hubs/<hub>:conn:<id>, one per hub session on
# an instance with --redis-url), a rate-limit window (rl:vk:<id>:rpm, a GCRA timestamp with a
# TTL), a balance/budget counter (bal:grp:<id>, an integer). Names and value shapes as the code
# writes them (src/realtime/hub_server.cpp, src/gateway/rate_gate.cpp, src/gateway/budget_gate.cpp,
# src/bus/redis/redis_counters.cpp), under the default prefix "conduit:".
#
#   bench/redis-memory.sh [N_CHANNELS] [N_KEYS]      (defaults 20000 and 100000)
#
# Runs a private redis-server (no persistence) on a free loopback port; used_memory is read
# before and after each batch, and the difference divided by the batch size. Prints a Markdown
# table.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N_CH="${1:-20000}"
N_KEYS="${2:-100000}"
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=$(free_port)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
cli() { redis-cli -p "$PORT" "$@"; }
used() { cli info memory | awk -F: '$1 == "used_memory" {print $2+0}'; }
rand22() { head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

echo "| item | count | used_memory before → after (bytes) | bytes per item |"
echo "| --- | ---: | ---: | ---: |"
row_out() { # NAME COUNT BEFORE AFTER
  echo "| $1 | $2 | $3 → $4 | $(( ($4 - $3) / $2 )) |"
}

# 1. Channel subscriptions, all held by one subscriber connection (as one instance holds them).
python3 - "$N_CH" >"$TMP/channels" <<'PY'
import base64, os, sys
n = int(sys.argv[1])
print(" ".join("conduit:hubs/tasks:conn:" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
               for _ in range(n)))
PY
before=$(used)
# shellcheck disable=SC2046
redis-cli -p "$PORT" subscribe $(cat "$TMP/channels") >/dev/null &
PIDS+=($!)
for _ in $(seq 200); do
  [ "$(cli info clients | awk -F: '$1 == "pubsub_clients" {print $2+0}')" = 1 ] &&
    [ "$(cli pubsub channels 'conduit:hubs/tasks:conn:*' | wc -l)" -ge "$N_CH" ] && break
  sleep 0.1
done
after=$(used)
row_out "hub connection channel subscription (conduit:hubs/tasks:conn:<22 chars>)" "$N_CH" "$before" "$after"

# 2. Rate-limit windows: SET key <TAT µs> PX <ms> (what the GCRA script writes).
now_us=$(( $(date +%s) * 1000000 ))
before=$(used)
awk -v n="$N_KEYS" -v t="$now_us" 'BEGIN { for (i = 1; i <= n; i++)
  printf "SET conduit:rl:vk:%d:rpm %d PX 600000\r\n", 100000 + i, t + i }' | cli --pipe >/dev/null
after=$(used)
row_out "rate-limit window (conduit:rl:vk:<id>:rpm, TTL)" "$N_KEYS" "$before" "$after"

# 3. Balance counters: integer micro-units with a TTL (BudgetGate ttl 10 min).
before=$(used)
awk -v n="$N_KEYS" 'BEGIN { for (i = 1; i <= n; i++)
  printf "SET conduit:bal:grp:%d %d PX 600000\r\n", 100000 + i, 250000000 + i }' | cli --pipe >/dev/null
after=$(used)
row_out "balance counter (conduit:bal:grp:<id>, TTL)" "$N_KEYS" "$before" "$after"

echo
echo "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2), $(date -u '+%Y-%m-%d %H:%M UTC')"
