#!/usr/bin/env bash
# Redis pub/sub cost per message, for bench/scaling_model.py: a private redis-server holding
# CHANNELS subscribed channels (as the hub backplane does: one per hub connection), spread over
# SUBSCRIBERS subscriber connections (one per gateway instance), measured with redis-benchmark:
#   1. targeted: PUBLISH to a random one of the channels (a message to one connection): one
#      subscriber gets it;
#   2. broadcast: PUBLISH to one channel every subscriber connection holds (the hubs' `all`).
# Redis CPU (all threads, /proc/PID/task/*/schedstat) per PUBLISH, and per delivered copy.
# Prints one JSON line per case (to paste into a results file) and a summary on stderr.
#
#   bench/redis_pubsub_cost.sh        knobs: RP_CHANNELS=100000 RP_SUBSCRIBERS=8 RP_N=200000
#                                     RP_PIPELINE=16 RP_CLIENTS=8
set -euo pipefail
CHANNELS="${RP_CHANNELS:-100000}"
SUBSCRIBERS="${RP_SUBSCRIBERS:-8}"
N="${RP_N:-200000}"
PIPELINE="${RP_PIPELINE:-16}"
CLIENTS="${RP_CLIENTS:-8}"
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done
TMP="$(mktemp -d /tmp/conduit-redis-pubsub.XXXXXX)"
PIDS=()
cleanup() {
    local k
    for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do kill "${PIDS[$k]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
PORT=$((10000 + RANDOM % 20000))
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
RPID=$!
PIDS+=("$RPID")
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
cpu_ns() {
    local t s=0 v
    for t in /proc/"$1"/task/*/schedstat; do read -r v _ <"$t"; s=$((s + v)); done
    echo "$s"
}
# Subscriber connections: each subscribes to its share of conn:<12 digits> channels (the names
# redis-benchmark's __rand_int__ produces) and to `all`, then discards what it receives.
cat >"$TMP/sub.py" <<'EOF'
import socket, sys
port, first, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
def cmd(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
batch = 1000
for i in range(first, first + count, batch):
    s.sendall(cmd(["SUBSCRIBE"] + ["conn:%012d" % j for j in range(i, min(i + batch, first + count))]))
s.sendall(cmd(["SUBSCRIBE", "all"]))
open(sys.argv[4], "w").write("sent\n")
while s.recv(1 << 20):
    pass
EOF
per=$(((CHANNELS + SUBSCRIBERS - 1) / SUBSCRIBERS))
for i in $(seq 0 $((SUBSCRIBERS - 1))); do
    python3 "$TMP/sub.py" "$PORT" $((i * per)) "$per" "$TMP/sub-$i.sent" &
    PIDS+=($!)
done
for _ in $(seq 600); do
    n="$(redis-cli -p "$PORT" info stats | tr -d '\r' | sed -n 's/^pubsub_channels:\(.*\)/\1/p')"
    ((n >= CHANNELS + 1)) && break
    sleep 0.1
done
# A targeted message has exactly one receiver, a broadcast one per subscriber connection.
[[ "$(redis-cli -p "$PORT" publish conn:000000000007 x)" == 1 ]] || { echo "targeted PUBLISH did not reach one subscriber" >&2; exit 1; }
[[ "$(redis-cli -p "$PORT" publish all x)" == "$SUBSCRIBERS" ]] || { echo "broadcast PUBLISH did not reach $SUBSCRIBERS subscribers" >&2; exit 1; }
used="$(redis-cli -p "$PORT" info memory | tr -d '\r' | sed -n 's/^used_memory:\(.*\)/\1/p')"
run() { # NAME CHANNEL-ARG
    local c0 c1
    c0="$(cpu_ns "$RPID")"
    redis-benchmark -p "$PORT" -n "$N" -c "$CLIENTS" -P "$PIPELINE" -r "$per" -q publish "$2" x >"$TMP/$1.txt" 2>&1
    c1="$(cpu_ns "$RPID")"
    echo $((c1 - c0))
}
t_ns="$(run targeted 'conn:__rand_int__')"
b_ns="$(run broadcast all)"
redis_version="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
# __rand_int__ with -r R gives 0..R-1: the channels of the first subscriber (0..per-1), so every
# targeted PUBLISH has exactly one receiver.
jq -nc --argjson ch "$CHANNELS" --argjson subs "$SUBSCRIBERS" --argjson n "$N" --argjson t "$t_ns" \
    --argjson b "$b_ns" --argjson used "$used" --arg v "$redis_version" --argjson p "$PIPELINE" --argjson c "$CLIENTS" \
    --arg tq "$(tr '\r' '\n' <"$TMP/targeted.txt" | grep -a 'requests per second' | tail -1 | sed 's/^ *//')" \
    --arg bq "$(tr '\r' '\n' <"$TMP/broadcast.txt" | grep -a 'requests per second' | tail -1 | sed 's/^ *//')" \
    '{probe: "redis_pubsub", redis: $v, channels: $ch, subscriber_connections: $subs, publishes: $n,
      pipeline: $p, clients: $c, used_memory_with_channels: $used,
      targeted_us_per_publish: ($t / 1000 / $n), targeted_rate: $tq,
      broadcast_us_per_publish: ($b / 1000 / $n), broadcast_us_per_copy: ($b / 1000 / $n / $subs), broadcast_rate: $bq}'
