#!/usr/bin/env bash
# Cluster hub benchmark (issue 6): 100,000 concurrent SignalR WebSocket sessions on
# /hubs/notifications spread over several Conduit instances sharing one Redis backplane (as many
# instances as the open-files limit per process requires), one load generator process per
# instance. Measures gateway and Redis memory per session, connect rate and time, the CPU the
# gateways and Redis spend per delivered message, and the fan-out latency of a SystemAnnouncement
# POSTed to ONE instance and reaching every session on every instance through Redis. In the same
# run, as references: the same fan-out with 10,000 sessions on one instance (same Redis set-up),
# and 10,000 WebSockets on the trivial broadcast server (conduit-ws-ref-server).
# Writes bench/results/<UTC date>-100k-sessions.md (CS_OUT_NAME) and prints it.
#
#   bench/cluster-sessions.sh [BIN_DIR]     (default build/snap: conduit, conduit-loadgen,
#                                            conduit-ws-ref-server)
#
# Knobs (environment): CS_SCENARIOS="ref one cluster" CS_REPS=3 CS_SESSIONS=100000
# CS_INSTANCES=0 (0 = the fewest that both the open-files limit and the ephemeral ports of one
# source address allow; see below) CS_SMALL_SESSIONS=10000 (ref, one) CS_CLIENT_TIMEOUT_MS=600000
# CS_BROADCASTS=10 CS_INTERVAL_MS=3000 (cluster) CS_SMALL_INTERVAL_MS=1000 (ref, one)
# CS_THREADS=1 (conduit --threads per instance) CS_MAX_PENDING=128 (connecting sessions per load
# generator) CS_IDLE_S=15 (window with all sessions up and no broadcast: idle CPU, one keep-alive
# period) CS_QUIET_WAIT=120 CS_QUIET_PCT=25 CS_OUT_DIR=bench/results CS_OUT_NAME CS_KEEP=0
# CS_QUICK=1 (smoke run: 1 rep, 3,000 sessions over 3 instances, 1,000 small, 3 broadcasts).
# A private redis-server (free port, no persistence) is started per measurement, so other tests
# sharing the machine's Redis neither disturb nor are disturbed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_ARG="${1:-build/snap}"
BIN="$BIN_ARG"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"

if [[ "${CS_QUICK:-0}" == 1 ]]; then
    D_REPS=1 D_SESSIONS=3000 D_INSTANCES=3 D_SMALL=1000 D_BROADCASTS=3 D_IDLE=2
else
    D_REPS=3 D_SESSIONS=100000 D_INSTANCES=0 D_SMALL=10000 D_BROADCASTS=10 D_IDLE=15
fi
SCENARIOS="${CS_SCENARIOS:-ref one cluster}"
REPS="${CS_REPS:-$D_REPS}"
SESSIONS="${CS_SESSIONS:-$D_SESSIONS}"
INSTANCES="${CS_INSTANCES:-$D_INSTANCES}"
SMALL="${CS_SMALL_SESSIONS:-$D_SMALL}"
BROADCASTS="${CS_BROADCASTS:-$D_BROADCASTS}"
INTERVAL_MS="${CS_INTERVAL_MS:-3000}"
SMALL_INTERVAL_MS="${CS_SMALL_INTERVAL_MS:-1000}"
THREADS="${CS_THREADS:-1}"
MAX_PENDING="${CS_MAX_PENDING:-128}"
IDLE_S="${CS_IDLE_S:-$D_IDLE}"
# conduit-loadgen only answers the server's pings and the server pings a connection only after
# 15 s without sending it anything: with a broadcast every few seconds neither side pings, and
# the default 30 s client timeout closed ~6 % of the sessions in a first run. Real SignalR
# clients ping every 15 s on their own; the bench raises the timeout instead.
CLIENT_TIMEOUT_MS="${CS_CLIENT_TIMEOUT_MS:-600000}"
QUIET_WAIT="${CS_QUIET_WAIT:-120}"
QUIET_PCT="${CS_QUIET_PCT:-25}"
QUIET_DISK_PCT="${CS_QUIET_DISK_PCT:-10}"
OUT_DIR="${CS_OUT_DIR:-$ROOT/bench/results}"
OUT_NAME="${CS_OUT_NAME:-$(date -u +%Y-%m-%d)-100k-sessions.md}"
KEEP="${CS_KEEP:-0}"
MASTER_KEY="bench-master-key-0123456789abcdef"
HUB_PATH=/hubs/notifications
ANNOUNCE_PATH=/api/notifications/announcements

log() { printf '[cluster-sessions %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in jq curl sqlite3 redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install jq curl sqlite3 redis-server)"
done
for b in conduit conduit-loadgen conduit-ws-ref-server; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b not found"
done
((BROADCASTS >= 2)) || die "CS_BROADCASTS must be at least 2 (the last one ends the sessions)"
"$BIN/conduit-loadgen" --self-test 2>/dev/null || die "conduit-loadgen --self-test failed"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
# A gateway needs one descriptor per session plus its own (listener, Redis, SQLite, queue,
# eventfds, …): keep 512 spare. The load generators need one per session too (one per instance).
PER_INSTANCE_MAX=$((NOFILE - 512))
PORT_LO="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)"
PORT_HI="$(awk '{print $2}' /proc/sys/net/ipv4/ip_local_port_range)"
# Every session is one TCP connection from an ephemeral port of 127.0.0.1 to its instance's
# port. connect() picks its port among those of one parity first (Linux ≥ 4.6 keeps the other
# half for bind()): once one destination holds about half of the range, every further connect()
# to it scans the whole half in __inet_hash_connect (seen in a first run: 6 × 16,667 sessions
# stalled at ~14,500 per instance, 100 % system CPU). So a destination gets at most 90 % of half
# the range; this box's sysctls are not changed (shared machine).
PER_DEST_MAX=$(((PORT_HI - PORT_LO + 1) / 2 * 9 / 10))
NEED_FILES=$(((SESSIONS + PER_INSTANCE_MAX - 1) / PER_INSTANCE_MAX))
NEED_PORTS=$(((SESSIONS + PER_DEST_MAX - 1) / PER_DEST_MAX))
if ((INSTANCES == 0)); then
    INSTANCES=$((NEED_FILES > NEED_PORTS ? NEED_FILES : NEED_PORTS))
fi
PER_INSTANCE=$(((SESSIONS + INSTANCES - 1) / INSTANCES))
((PER_INSTANCE <= PER_INSTANCE_MAX)) || die "$PER_INSTANCE sessions per instance exceed the open-files limit $NOFILE: raise CS_INSTANCES"
((PER_INSTANCE <= PER_DEST_MAX)) || log "warning: $PER_INSTANCE sessions per instance exceed $PER_DEST_MAX (90 % of half the ephemeral port range): connects will slow down"

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
CLK_TCK="$(getconf CLK_TCK)"
DISK="$(df --output=source "${TMPDIR:-/tmp}" 2>/dev/null | tail -1)"
DISK="${DISK##*/}"
QUIET_WAITED=0
BUSY_RUNS=0
LAST_QUIET_PCT=0

TMP="$(mktemp -d /tmp/conduit-cluster-sessions.XXXXXX)"
chmod 755 "$TMP"
RUN_DIR="$TMP/runs"
mkdir -p "$RUN_DIR"
PIDS=()
COMMANDS="$TMP/commands.txt"
: >"$COMMANDS"
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

cleanup() {
    # Newest first: load generators (they hold the client ends), then the servers, then Redis.
    local k
    for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do
        stop_pid "${PIDS[$k]}"
    done
    if [[ "$KEEP" == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NOTED=" "
note_cmd() { # LABEL COMMAND... (once per label)
    local label="$1"
    shift
    [[ "$NOTED" == *" $label "* ]] && return 0
    NOTED+="$label "
    printf '# %s\n%s\n' "$label" "$(quote_cmd "$@")" >>"$COMMANDS"
}

rss_kb() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU time of a process in ns, all threads (scheduler statistics: ns resolution, unlike the
# 10 ms ticks of /proc/PID/stat).
cpu_ns() {
    local t s=0 v
    for t in /proc/"$1"/task/*/schedstat; do
        read -r v _ <"$t" 2>/dev/null || continue
        s=$((s + v))
    done
    echo "$s"
}
sum_cpu_ns() { # PID... → sum
    local p s=0
    for p in "$@"; do s=$((s + $(cpu_ns "$p"))); done
    echo "$s"
}
sum_rss_kb() {
    local p s=0
    for p in "$@"; do s=$((s + $(rss_kb "$p"))); done
    echo "$s"
}
tcp_mem_pages() { awk '$1 == "TCP:" {for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
slab_kb() { awk '$1 == "Slab:" {print $2}' /proc/meminfo; }
redis_info() { # PORT FIELD → value of FIELD in INFO all
    redis-cli -p "$1" info all 2>/dev/null | tr -d '\r' | awk -F: -v f="$2" '$1 == f {print $2}'
}
redis_cmd_usec() { # PORT COMMAND → usec spent in the command (INFO commandstats), 0 if never
    redis-cli -p "$1" info commandstats 2>/dev/null | tr -d '\r' |
        sed -n "s/^cmdstat_$2:.*,usec=\([0-9]*\),.*/\1/p" | head -1 | grep . || echo 0
}
redis_cmd_calls() {
    redis-cli -p "$1" info commandstats 2>/dev/null | tr -d '\r' |
        sed -n "s/^cmdstat_$2:calls=\([0-9]*\),.*/\1/p" | head -1 | grep . || echo 0
}

# ---------------------------------------------------------------------------------------------
# Servers.
# ---------------------------------------------------------------------------------------------
SERVER_PIDS=()
SERVER_URLS=()
REDIS_PID=""
REDIS_PORT=""
KEY=""

admin() { # URL METHOD PATH [JSON]
    curl -sf -X "$2" -H "X-API-Key: $MASTER_KEY" -H 'Content-Type: application/json' \
        ${4:+-d "$4"} "$1$3" || die "admin $2 $3 failed: ${4:-}"
}

start_redis() {
    local attempt
    for attempt in 1 2 3 4 5; do
        REDIS_PORT="$(free_port)"
        local cmd=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
            --dir "$TMP" --maxclients 10000)
        start_bg "redis-$REDIS_PORT" "${cmd[@]}"
        REDIS_PID=$LAST_PID
        for _ in $(seq 50); do
            redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && {
                note_cmd redis "${cmd[@]}"
                return 0
            }
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop_pid "$REDIS_PID"
        forget_pid "$REDIS_PID"
    done
    die "redis-server did not start"
}

stop_redis() {
    [[ -n "$REDIS_PID" ]] || return 0
    stop_pid "$REDIS_PID"
    forget_pid "$REDIS_PID"
    REDIS_PID=""
}

start_conduit() { # NAME DATA_DIR [extra serve args...] → appends to SERVER_PIDS/SERVER_URLS
    local name="$1" data="$2"
    shift 2
    local extra=("$@")
    conduit_cmd() { # PORT → STARTED_CMD (sees data and extra: bash scopes are dynamic)
        STARTED_CMD=(env CONDUIT_MASTER_KEY="$MASTER_KEY" CONDUIT_HUB_MAX_CONNECTIONS_PER_KEY=1000000
            "$BIN/conduit" serve --listen "127.0.0.1:$1" --threads "$THREADS"
            --data-dir "$data" --log-level warn "${extra[@]}")
    }
    start_on_free_port "$name" conduit_cmd
    note_cmd "conduit ($name)" "${STARTED_CMD[@]}"
    SERVER_PIDS+=("$LAST_PID")
    SERVER_URLS+=("$STARTED_URL")
}

seed_key() { # URL → KEY (one virtual key; the per-key hub limit is raised instead of many keys)
    local group key
    group="$(admin "$1" POST /api/VirtualKeyGroups '{"groupName":"bench","initialBalance":1000}' |
        jq -r .id)"
    key="$(admin "$1" POST /api/VirtualKeys "$(jq -nc --argjson g "$group" \
        '{keyName: "hub-bench", virtualKeyGroupId: $g}')" | jq -r .virtualKey)"
    [[ "$key" == condt_* ]] || die "no virtual key created"
    KEY="$key"
}

wait_key() { # URL
    local code=""
    for _ in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $KEY" \
            "$1$HUB_PATH/negotiate?negotiateVersion=1")" || true
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    die "negotiate with the bench key on $1 answered $code"
}

# N Conduit instances on one private Redis: the first is seeded through its admin API; the
# others start on copies of its SQLite store taken after seeding (the embedded work queue locks
# its data dir, so every instance has its own dir; the hub backplane is Redis for all).
start_cluster() { # LABEL N
    local label="$1" n="$2" i data="$TMP/data-$1"
    start_redis
    start_conduit "conduit-$label-1" "$data-1" --redis-url "redis://127.0.0.1:$REDIS_PORT/0" \
        --hub-client-timeout-ms "$CLIENT_TIMEOUT_MS"
    seed_key "${SERVER_URLS[0]}"
    wait_key "${SERVER_URLS[0]}"
    for i in $(seq 2 "$n"); do
        mkdir -p "$data-$i"
        sqlite3 "$data-1/conduit.db" ".backup '$data-$i/conduit.db'" || die "store copy failed"
        start_conduit "conduit-$label-$i" "$data-$i" --redis-url "redis://127.0.0.1:$REDIS_PORT/0" \
            --hub-client-timeout-ms "$CLIENT_TIMEOUT_MS"
        wait_key "${SERVER_URLS[$((i - 1))]}"
    done
}

start_ref() {
    local cmd=("$BIN/conduit-ws-ref-server" --listen 127.0.0.1:0)
    note_cmd "reference server" "${cmd[@]}"
    start_bg ref "${cmd[@]}"
    SERVER_PIDS+=("$LAST_PID")
    SERVER_URLS+=("$(listening_url ref)")
}

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        stop_pid "$pid"
        forget_pid "$pid"
    done
    SERVER_PIDS=()
    SERVER_URLS=()
    stop_redis
}

# ---------------------------------------------------------------------------------------------
# One measurement: one load generator per server (N sessions each), all started together;
# once every session is settled: an idle window (IDLE_S, no broadcast), then the broadcasts
# through the first server; the generators end when every live session got every broadcast.
# ---------------------------------------------------------------------------------------------
run_measurement() { # SCENARIO REP INTERVAL_MS SESSIONS_PER_SERVER...
    local scenario="$1" rep="$2" interval="$3" label="$1-$2" i=0 n cmd pid f
    shift 3
    local hold=$(((BROADCASTS * interval) / 1000 + 90))
    local lg_pids=() ready=()
    wait_quiet
    local quiet_pct=$LAST_QUIET_PCT load1
    load1="$(cut -d' ' -f1 /proc/loadavg)"
    local have_redis=0
    [[ -n "$REDIS_PID" ]] && have_redis=1
    # Before: servers up and seeded, no session.
    local rss0 r_rss0=0 r_mem0=0 tcp0 slab0 cpu0 r_cpu0=0 sub_us0=0 sub_calls0=0
    rss0="$(sum_rss_kb "${SERVER_PIDS[@]}")"
    tcp0="$(tcp_mem_pages)"
    slab0="$(slab_kb)"
    cpu0="$(sum_cpu_ns "${SERVER_PIDS[@]}")"
    if ((have_redis)); then
        r_rss0="$(rss_kb "$REDIS_PID")"
        r_mem0="$(redis_info "$REDIS_PORT" used_memory)"
        r_cpu0="$(cpu_ns "$REDIS_PID")"
        sub_us0="$(redis_cmd_usec "$REDIS_PORT" subscribe)"
        sub_calls0="$(redis_cmd_calls "$REDIS_PORT" subscribe)"
    fi
    local t_start
    t_start="$(date +%s%3N)"
    for n in "$@"; do
        local url="${SERVER_URLS[$i]}"
        cmd=("$BIN/conduit-loadgen" hub --url "$url$HUB_PATH" --transport ws --sessions "$n"
            --ramp-rate 0 --max-pending "$MAX_PENDING" --target SystemAnnouncement
            --connect-timeout-ms 60000 --hold "$hold" --expect "$BROADCASTS"
            --samples-file "$RUN_DIR/$label-$i.samples" --ready-file "$RUN_DIR/$label-$i.ready")
        [[ "$scenario" != ref ]] && cmd+=(--header "Authorization: Bearer $KEY")
        note_cmd "load generator ($scenario, one per server)" "${cmd[@]//$KEY/\$KEY}"
        start_bg "lg-$label-$i" "${cmd[@]}"
        lg_pids+=("$LAST_PID")
        ready+=("$RUN_DIR/$label-$i.ready")
        i=$((i + 1))
    done
    local deadline=$((SECONDS + 300)) all
    while :; do
        all=1
        for f in "${ready[@]}"; do
            [[ -f "$f" ]] || all=0
        done
        ((all == 1)) && break
        ((SECONDS < deadline)) || die "$label: sessions did not settle within 300 s"
        sleep 0.1
    done
    local t_ready
    t_ready="$(date +%s%3N)"
    # Connect phase: CPU of the servers and Redis; the SUBSCRIBEs may trail the handshakes a
    # little, so Redis is read after a short settle.
    sleep 2
    local cpu1 r_cpu1=0 sub_us1=0 sub_calls1=0 channels=0
    cpu1="$(sum_cpu_ns "${SERVER_PIDS[@]}")"
    if ((have_redis)); then
        r_cpu1="$(cpu_ns "$REDIS_PID")"
        sub_us1="$(redis_cmd_usec "$REDIS_PORT" subscribe)"
        sub_calls1="$(redis_cmd_calls "$REDIS_PORT" subscribe)"
        channels="$(redis_info "$REDIS_PORT" pubsub_channels)"
    fi
    # Idle window: every session up, keep-alive pings only.
    local lg_idle0 lg_idle1
    lg_idle0="$(sum_cpu_ns "${lg_pids[@]}")"
    sleep "$IDLE_S"
    lg_idle1="$(sum_cpu_ns "${lg_pids[@]}")"
    local rss1 r_rss1=0 r_mem1=0 tcp1 slab1 cpu2 r_cpu2=0 pub_us0=0 lg_cpu_idle0 lg_cpu_idle1
    cpu2="$(sum_cpu_ns "${SERVER_PIDS[@]}")"
    rss1="$(sum_rss_kb "${SERVER_PIDS[@]}")"
    tcp1="$(tcp_mem_pages)"
    slab1="$(slab_kb)"
    local per_rss=()
    for pid in "${SERVER_PIDS[@]}"; do per_rss+=("$(rss_kb "$pid")"); done
    if ((have_redis)); then
        r_rss1="$(rss_kb "$REDIS_PID")"
        r_mem1="$(redis_info "$REDIS_PORT" used_memory)"
        r_cpu2="$(cpu_ns "$REDIS_PID")"
        pub_us0="$(redis_cmd_usec "$REDIS_PORT" publish)"
    fi
    local lg_cpu0 t_b0 t_b1
    lg_cpu0="$(sum_cpu_ns "${lg_pids[@]}")"
    t_b0="$(date +%s%3N)"
    # The broadcasts, through the first server: BROADCASTS - 1 measured ones (CPU per delivery),
    # then, once their deliveries are in and the counters read, the last one, after which the
    # load generators end (every live session got BROADCASTS) and close their sessions: the
    # teardown is outside the measured phase. Latencies count all BROADCASTS.
    local acmd=("$BIN/conduit-loadgen" hub-announce --interval-ms "$interval")
    if [[ "$scenario" == ref ]]; then
        acmd+=(--url "${SERVER_URLS[0]}/broadcast")
    else
        acmd+=(--url "${SERVER_URLS[0]}$ANNOUNCE_PATH" --header "X-API-Key: $MASTER_KEY")
    fi
    note_cmd "broadcasts ($scenario; then once more with --count 1)" "${acmd[@]//$MASTER_KEY/\$MASTER_KEY}" --count $((BROADCASTS - 1))
    "${acmd[@]}" --count $((BROADCASTS - 1)) >"$RUN_DIR/$label.announce.json" 2>"$RUN_DIR/$label.announce.err" ||
        log "$label: broadcast trigger failed: $(jq -r .error "$RUN_DIR/$label.announce.json" 2>/dev/null)"
    # The last measured broadcast is delivered when the generators' CPU falls back to their idle
    # rate (timers, keep-alives; measured in the idle window) + 2 ms per 0.5 s, bounded by one
    # interval + 30 s.
    local prev cur idle_half
    idle_half=$(((lg_idle1 - lg_idle0) / (2 * IDLE_S) + 2000000))
    prev="$(sum_cpu_ns "${lg_pids[@]}")"
    deadline=$((SECONDS + interval / 1000 + 30))
    while ((SECONDS < deadline)); do
        sleep 0.5
        cur="$(sum_cpu_ns "${lg_pids[@]}")"
        ((cur - prev < idle_half)) && break
        prev=$cur
    done
    local cpu3 rss2 r_cpu3=0 pub_us1=0 pub_calls=0 lg_cpu1
    cpu3="$(sum_cpu_ns "${SERVER_PIDS[@]}")"
    t_b1="$(date +%s%3N)"
    rss2="$(sum_rss_kb "${SERVER_PIDS[@]}")"
    lg_cpu1="$(sum_cpu_ns "${lg_pids[@]}")"
    if ((have_redis)); then
        r_cpu3="$(cpu_ns "$REDIS_PID")"
        pub_us1="$(redis_cmd_usec "$REDIS_PORT" publish)"
        pub_calls="$(redis_cmd_calls "$REDIS_PORT" publish)"
    fi
    sleep "$(awk -v i="$interval" 'BEGIN { print i / 1000 }')"
    "${acmd[@]}" --count 1 >"$RUN_DIR/$label.announce2.json" 2>>"$RUN_DIR/$label.announce.err" ||
        log "$label: last broadcast failed: $(jq -r .error "$RUN_DIR/$label.announce2.json" 2>/dev/null)"
    for pid in "${lg_pids[@]}"; do
        wait "$pid" || true
        forget_pid "$pid"
    done

    local samples=()
    for j in $(seq 0 $((i - 1))); do samples+=("$RUN_DIR/$label-$j.samples"); done
    "$BIN/conduit-loadgen" hub-merge "${samples[@]}" >"$RUN_DIR/$label.merge.json"
    local lg_json
    lg_json="$(for j in $(seq 0 $((i - 1))); do cat "$TMP/lg-$label-$j.out"; done | jq -s -c .)"
    jq -nc --arg scenario "$scenario" --argjson rep "$rep" --argjson servers "${#SERVER_PIDS[@]}" \
        --argjson lg "$lg_json" --argjson merged "$(cat "$RUN_DIR/$label.merge.json")" \
        --argjson announce "$(cat "$RUN_DIR/$label.announce.json" "$RUN_DIR/$label.announce2.json" 2>/dev/null | jq -s -c '{ok: (map(.ok // 0) | add), error: (map(.error // "" | select(. != "")) | join("; ")), response_p50_us: .[0].response_p50_us}' || echo '{}')" \
        --argjson broadcasts "$BROADCASTS" --argjson interval "$interval" \
        --argjson quiet "$quiet_pct" --arg load1 "$load1" \
        --argjson ready_ms "$((t_ready - t_start))" --argjson idle_s "$IDLE_S" \
        --argjson bcast_ms "$((t_b1 - t_b0))" \
        --argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson rss2 "$rss2" \
        --argjson per_rss "[$(IFS=,; echo "${per_rss[*]}")]" \
        --argjson r_rss0 "$r_rss0" --argjson r_rss1 "$r_rss1" \
        --argjson r_mem0 "${r_mem0:-0}" --argjson r_mem1 "${r_mem1:-0}" \
        --argjson tcp0 "$tcp0" --argjson tcp1 "$tcp1" --argjson slab0 "$slab0" --argjson slab1 "$slab1" \
        --argjson cpu0 "$cpu0" --argjson cpu1 "$cpu1" --argjson cpu2 "$cpu2" --argjson cpu3 "$cpu3" \
        --argjson r_cpu0 "$r_cpu0" --argjson r_cpu1 "$r_cpu1" --argjson r_cpu2 "$r_cpu2" --argjson r_cpu3 "$r_cpu3" \
        --argjson sub_us "$((sub_us1 - sub_us0))" --argjson sub_calls "$((sub_calls1 - sub_calls0))" \
        --argjson pub_us "$((pub_us1 - pub_us0))" --argjson pub_calls "$pub_calls" \
        --argjson channels "${channels:-0}" \
        --argjson lg_cpu_bcast_ns "$((lg_cpu1 - lg_cpu0))" '
        ($lg | map(.connected) | add) as $connected
        | $merged.latency_us.count as $delivered
        | {scenario: $scenario, rep: $rep, servers: $servers,
           sessions: ($lg | map(.sessions) | add), connected: $connected,
           failed: ($lg | map(.failed) | add), dropped: ($lg | map(.dropped) | add),
           errors: ($lg | map(.errors) | add | unique),
           ready_ms: $ready_ms,
           connect_rate: ($connected / ($ready_ms / 1000)),
           connect_p50_ms: (($lg | map(.connect_us.p50) | max) / 1000),
           connect_p99_ms: (($lg | map(.connect_us.p99) | max) / 1000),
           connect_max_ms: (($lg | map(.connect_us.max) | max) / 1000),
           rss_before_kb: $rss0, rss_up_kb: $rss1, rss_after_kb: $rss2, rss_per_server_kb: $per_rss,
           per_session_bytes: (if $connected > 0 then ($rss1 - $rss0) * 1024 / $connected else null end),
           redis_rss_before_kb: $r_rss0, redis_rss_up_kb: $r_rss1,
           redis_used_before: $r_mem0, redis_used_up: $r_mem1,
           redis_bytes_per_session: (if $connected > 0 and $r_mem1 > 0 then ($r_mem1 - $r_mem0) / $connected else null end),
           redis_rss_bytes_per_session: (if $connected > 0 and $r_rss1 > 0 then ($r_rss1 - $r_rss0) * 1024 / $connected else null end),
           redis_channels: $channels,
           tcp_mem_bytes_per_session: (($tcp1 - $tcp0) * 4096 / ($connected + 0.000001)),
           slab_bytes_per_session: (($slab1 - $slab0) * 1024 / ($connected + 0.000001)),
           server_cpu_connect_us_per_session: (if $connected > 0 then ($cpu1 - $cpu0) / 1000 / $connected else null end),
           redis_cpu_connect_us_per_session: (if $connected > 0 then ($r_cpu1 - $r_cpu0) / 1000 / $connected else null end),
           redis_subscribe_calls: $sub_calls, redis_subscribe_usec: $sub_us,
           redis_subscribe_us_per_session: (if $connected > 0 then $sub_us / $connected else null end),
           server_idle_cpu_pct: (($cpu2 - $cpu1) / 1e7 / $idle_s),
           server_idle_us_per_session_s: (if $connected > 0 then ($cpu2 - $cpu1) / 1000 / $idle_s / $connected else null end),
           redis_idle_cpu_pct: (($r_cpu2 - $r_cpu1) / 1e7 / $idle_s),
           broadcasts: $broadcasts, interval_ms: $interval,
           broadcasts_ok: ($announce.ok // 0), announce_error: ($announce.error // ""),
           announce_response_p50_ms: (($announce.response_p50_us // 0) / 1000),
           expected: ($connected * $broadcasts), delivered: $delivered,
           lat_p50_ms: ($merged.latency_us.p50 / 1000), lat_p90_ms: ($merged.latency_us.p90 / 1000),
           lat_p99_ms: ($merged.latency_us.p99 / 1000), lat_max_ms: ($merged.latency_us.max / 1000),
           user_p99_ms: ($merged.user_latency_us.p99 / 1000),
           bcast_p99_median_ms: ($merged.broadcast_p99_median_us / 1000),
           bcast_p99_worst_ms: ($merged.broadcast_p99_worst_us / 1000),
           bcast_max_median_ms: ([$merged.broadcasts[].max] | sort | .[(length - 1) / 2 | floor] / 1000),
           per_server_p50_p99_ms: ($lg | map([(.latency_us.p50 / 1000), (.latency_us.p99 / 1000)])),
           server_cpu_bcast_ms: (($cpu3 - $cpu2) / 1e6),
           measured_deliveries: ($connected * ($broadcasts - 1)), bcast_phase_ms: $bcast_ms,
           # The same CPU less what the servers burn with the sessions idle (keep-alives,
           # timers), at the idle window rate, over the phase.
           server_cpu_us_per_delivery_net: (if $connected > 0 then (($cpu3 - $cpu2) - ($cpu2 - $cpu1) / $idle_s * $bcast_ms / 1000) / 1000 / ($connected * ($broadcasts - 1)) else null end),
           server_cpu_us_per_delivery: (if $connected > 0 then ($cpu3 - $cpu2) / 1000 / ($connected * ($broadcasts - 1)) else null end),
           redis_cpu_bcast_ms: (($r_cpu3 - $r_cpu2) / 1e6),
           redis_publish_calls: $pub_calls, redis_publish_usec: $pub_us,
           lg_cpu_us_per_message: (if $connected > 0 then $lg_cpu_bcast_ns / 1000 / ($connected * ($broadcasts - 1)) else null end),
           lg_cpu_s: ($lg | map(.client_cpu_s) | add), lg_rss_kb: ($lg | map(.client_maxrss_kb) | add),
           pings: ($lg | map(.pings_answered) | add), quiet_pct: $quiet, load1: $load1}' >>"$RESULTS"
    log "$label: $(tail -1 "$RESULTS" | jq -r '"\(.connected)/\(.sessions) up (\(.failed) failed, \(.dropped) dropped) in \(.ready_ms) ms; RSS +\(.per_session_bytes // 0 | floor) B/session, Redis +\(.redis_bytes_per_session // 0 | floor) B/session; delivered \(.delivered)/\(.expected); p50 \(.lat_p50_ms) ms p99 \(.lat_p99_ms) ms; \(.server_cpu_us_per_delivery) us/delivery"')"
}

split_even() { # TOTAL N → N numbers
    local base=$(($1 / $2)) extra=$(($1 % $2)) k
    for k in $(seq 1 "$2"); do
        if ((k <= extra)); then echo $((base + 1)); else echo "$base"; fi
    done
}

run_scenario() { # SCENARIO REP
    local scenario="$1" rep="$2" counts=()
    case "$scenario" in
        ref)
            start_ref
            run_measurement ref "$rep" "$SMALL_INTERVAL_MS" "$SMALL"
            ;;
        one)
            start_cluster "one-$rep" 1
            run_measurement one "$rep" "$SMALL_INTERVAL_MS" "$SMALL"
            ;;
        cluster)
            start_cluster "cluster-$rep" "$INSTANCES"
            mapfile -t counts < <(split_even "$SESSIONS" "$INSTANCES")
            run_measurement cluster "$rep" "$INTERVAL_MS" "${counts[@]}"
            ;;
        *) die "unknown scenario $scenario" ;;
    esac
    stop_servers
}

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED="$(date -u '+%Y-%m-%d %H:%M:%S')"
T0=$SECONDS
if [[ -n "${CS_REPORT_ONLY:-}" ]]; then
    # Re-render the report from a kept run (CS_KEEP=1): CS_REPORT_ONLY=<its tmp dir>.
    cp "$CS_REPORT_ONLY/results.jsonl" "$RESULTS"
    cp "$CS_REPORT_ONLY/commands.txt" "$COMMANDS"
    # shellcheck disable=SC1091
    . "$CS_REPORT_ONLY/run-facts.sh"
else
    log "scenarios: $SCENARIOS; $REPS repetition(s); cluster: $SESSIONS sessions on $INSTANCES instances; ref/one: $SMALL sessions; $BROADCASTS broadcasts"
    for rep in $(seq 1 "$REPS"); do
        for scenario in $SCENARIOS; do
            run_scenario "$scenario" "$rep"
        done
    done
    T_LOAD=$((SECONDS - T0))
    RUN_END="$(date -u '+%Y-%m-%d %H:%M:%S')"
    declare -p T_LOAD RUN_END STARTED LOADAVG_START QUIET_WAITED BUSY_RUNS COMMIT INSTANCES \
        >"$TMP/run-facts.sh"
fi

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
med() { # SCENARIO FIELD → median over repetitions ("nan" if none)
    jq -s -r --arg s "$1" --arg f "$2" '
        [.[] | select(.scenario == $s) | .[$f] | select(. != null)] | sort |
        if length == 0 then "nan"
        elif length % 2 == 1 then .[(length - 1) / 2]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end' "$RESULTS"
}
total() { jq -s -r --arg s "$1" --arg f "$2" '[.[] | select(.scenario == $s) | .[$f] // 0] | add // 0' "$RESULTS"; }
has() { jq -s -e --arg s "$1" 'any(.[]; .scenario == $s)' "$RESULTS" >/dev/null; }
f0() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.0f", v }'; }
f1() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f", v }'; }
f2() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.2f", v }'; }
kb() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.2f KB", v / 1024 }'; }
mb() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f MB", v / 1024 }'; }
delivered_text() {
    local d e
    d="$(total "$1" delivered)"
    e="$(total "$1" expected)"
    if [[ "$d" == "$e" ]]; then echo "all $d"; else echo "$d of $e"; fi
}
scen_name() {
    case "$1" in
        ref) echo "reference server, $SMALL WebSockets" ;;
        one) echo "Conduit, 1 instance + Redis, $SMALL WebSockets" ;;
        cluster) echo "Conduit, $INSTANCES instances + Redis, $SESSIONS WebSockets" ;;
    esac
}

mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$OUT_NAME"
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
MEM_GB="$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
REDIS_VERSION="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
{
    echo "# 100K hub sessions on a Conduit cluster, $(date -u +%Y-%m-%d)"
    echo
    echo "Generated by \`bench/cluster-sessions.sh $BIN_ARG\` from $STARTED to ${RUN_END:-?} UTC (load phase $T_LOAD s)$([[ "${CS_QUICK:-0}" == 1 ]] && echo "; **quick mode (smoke run)**")$([[ -n "${CS_REPORT_ONLY:-}" ]] && echo "; report re-rendered from the kept run")."
    echo
    echo "## Machine and set-up"
    echo
    echo "- CPUs: $(nproc) × $CPU_MODEL; memory $MEM_GB GiB; kernel $(uname -sr); open files per process $NOFILE; ephemeral ports $PORT_LO–$PORT_HI; somaxconn $(cat /proc/sys/net/core/somaxconn)."
    echo "- Binaries: \`$BIN_ARG\`; work tree at commit $COMMIT when the run started."
    echo "- Cluster: $INSTANCES Conduit instances, $PER_INSTANCE sessions each: the open-files limit alone needs $NEED_FILES (≤ $PER_INSTANCE_MAX sessions each); the load generators' single source address needs $NEED_PORTS (≤ $PER_DEST_MAX connections per destination port: 90 % of the half of the ephemeral range that \`connect()\` searches first — beyond it every connect scans the whole half in the kernel; a first attempt with 6 instances stalled at ~14,500 sessions each with both cores in system time), each \`--threads $THREADS\`, \`--log-level warn\`, \`CONDUIT_HUB_MAX_CONNECTIONS_PER_KEY=1000000\` (one virtual key for all sessions), \`--hub-client-timeout-ms $CLIENT_TIMEOUT_MS\` (the load generator only answers the server's pings, and the server does not ping a connection it sent a broadcast to within 15 s: with the default 30 s a first run lost ~6 % of the sessions to client timeouts during the broadcasts), other hub settings default (keep-alive 15 s), all on one **private** \`redis-server\` $REDIS_VERSION (free port, no persistence, started per measurement) as the backplane. Instance 1 is seeded through its admin API; the others run on \`sqlite3 .backup\` copies of its store (same key) because the embedded store/queue locks its data dir."
    echo "- Sessions: one \`conduit-loadgen hub\` process per instance (one thread, epoll; ≤ $PER_INSTANCE sessions, one descriptor each), all started together, no pacing, ≤ $MAX_PENDING connecting at once per process: negotiate (\`Authorization: Bearer\`), WebSocket with the connection token, JSON handshake; pings answered."
    echo "- Broadcasts: $BROADCASTS × \`POST $ANNOUNCE_PATH\` to **instance 1 only**, $INTERVAL_MS ms apart for the cluster ($SMALL_INTERVAL_MS ms for the 10K references: one broadcast's deliveries must not overlap the next's); the message carries \`bench:<CLOCK_REALTIME ns>\`; every session records SystemAnnouncement arrival − stamp using the kernel receive timestamp (\`SO_TIMESTAMPNS\`). Instance 1 delivers to its own sessions directly and PUBLISHes once; Redis sends the message to every instance's subscriber connection."
    echo "- Memory: VmRSS summed over the servers before the sessions and after all are up + the idle window; Redis \`used_memory\` (allocator) and RSS likewise; kernel socket memory from \`/proc/net/sockstat\` (TCP mem pages, both ends of every loopback connection) and \`Slab\` from \`/proc/meminfo\` (machine-wide)."
    echo "- CPU: per process from \`/proc/PID/task/*/schedstat\` (ns), servers summed: connect phase (first connect → all settled + 2 s), idle window ($IDLE_S s, sessions up, no broadcast), broadcast phase (the first $((BROADCASTS - 1)) broadcasts: first trigger → load generators' CPU still for 0.5 s after the last; the last broadcast, after which the generators close their sessions, is outside it, so the teardown is not counted). Redis \`SUBSCRIBE\`/\`PUBLISH\` time from \`INFO commandstats\`."
    echo "- Repetitions: $REPS, interleaved (each rep runs every scenario in turn); **medians** shown. Load average at start: $LOADAVG_START. The machine is shared with other helpers' builds and tests: before each measurement the script waited (≤ $QUIET_WAIT s) until < $QUIET_PCT % of a core and < $QUIET_DISK_PCT % of the disk were busy: $QUIET_WAITED s waited in all, $BUSY_RUNS measurement(s) started busy anyway (\"busy before\" column)."
    echo
    echo "## Summary (medians of $REPS)"
    echo
    row "scenario" "sessions up (all runs)" "connect: all up in s / rate per s / p99 ms" "server RSS total, sessions up" "server RSS per session" "Redis used_memory per session" "fan-out p50 ms" "fan-out p99 ms" "last delivery of a broadcast ms (median)" "delivered (all runs)" "server CPU µs / delivery" "Redis CPU ms / broadcast"
    row --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
    for s in $SCENARIOS; do
        has "$s" || continue
        row "$(scen_name "$s")" "$(total "$s" connected) of $(total "$s" sessions)" \
            "$(f1 "$(awk -v v="$(med "$s" ready_ms)" 'BEGIN { print v / 1000 }')") / $(f0 "$(med "$s" connect_rate)") / $(f1 "$(med "$s" connect_p99_ms)")" \
            "$(mb "$(med "$s" rss_up_kb)")" "$(kb "$(med "$s" per_session_bytes)")" \
            "$([[ $s == ref ]] && echo – || kb "$(med "$s" redis_bytes_per_session)")" \
            "$(f1 "$(med "$s" lat_p50_ms)")" "$(f1 "$(med "$s" lat_p99_ms)")" "$(f1 "$(med "$s" bcast_max_median_ms)")" \
            "$(delivered_text "$s")" "$(f2 "$(med "$s" server_cpu_us_per_delivery)")" \
            "$([[ $s == ref ]] && echo – || f2 "$(awk -v v="$(med "$s" redis_cpu_bcast_ms)" -v b="$BROADCASTS" 'BEGIN { print v / b }')")"
    done
    echo
    echo "## Costs per session and per message (medians; inputs of docs/scaling-to-1m.md)"
    echo
    row "scenario" "server CPU per connect µs" "Redis CPU per connect µs" "Redis SUBSCRIBE µs per session (commandstats)" "Redis channels with sessions up" "Redis RSS per session" "kernel slab per session (machine-wide, both ends)" "server idle CPU µs per session per s" "server idle CPU % of a core" "load generator CPU µs / message" "load generator RSS MB (all)"
    row --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
    for s in $SCENARIOS; do
        has "$s" || continue
        row "$(scen_name "$s")" "$(f1 "$(med "$s" server_cpu_connect_us_per_session)")" \
            "$([[ $s == ref ]] && echo – || f2 "$(med "$s" redis_cpu_connect_us_per_session)")" \
            "$([[ $s == ref ]] && echo – || f2 "$(med "$s" redis_subscribe_us_per_session)")" \
            "$([[ $s == ref ]] && echo – || f0 "$(med "$s" redis_channels)")" \
            "$([[ $s == ref ]] && echo – || kb "$(med "$s" redis_rss_bytes_per_session)")" \
            "$(kb "$(med "$s" slab_bytes_per_session)")" \
            "$(f2 "$(med "$s" server_idle_us_per_session_s)")" "$(f1 "$(med "$s" server_idle_cpu_pct)")" \
            "$(f2 "$(med "$s" lg_cpu_us_per_message)")" "$(f1 "$(awk -v v="$(med "$s" lg_rss_kb)" 'BEGIN { print v / 1024 }')")"
    done
    echo
    echo "## Runs"
    echo
    row "scenario" "rep" "up / failed / dropped" "all up s" "connect p50 / p99 / max ms" "server RSS before → up → after MB" "per server RSS up MB" "B/session" "Redis used before → up MB" "fan-out p50 / p90 / p99 / max ms" "per-broadcast p99 median / worst ms" "per instance p50/p99 ms" "delivered" "server CPU ms in broadcasts" "µs/delivery" "Redis CPU ms in broadcasts / PUBLISH calls / µs" "busy before %"
    row --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
    jq -s -r 'def r1: if . == null then "–" else (. * 10 | round / 10 | tostring) end;
        .[] | [.scenario, (.rep | tostring),
        "\(.connected) / \(.failed) / \(.dropped)",
        (.ready_ms / 1000 | r1),
        "\(.connect_p50_ms | r1) / \(.connect_p99_ms | r1) / \(.connect_max_ms | r1)",
        "\(.rss_before_kb / 1024 | r1) → \(.rss_up_kb / 1024 | r1) → \(.rss_after_kb / 1024 | r1)",
        (.rss_per_server_kb | map(. / 1024 | r1) | join(", ")),
        (.per_session_bytes // 0 | floor | tostring),
        "\(.redis_used_before / 1048576 | r1) → \(.redis_used_up / 1048576 | r1)",
        "\(.lat_p50_ms | r1) / \(.lat_p90_ms | r1) / \(.lat_p99_ms | r1) / \(.lat_max_ms | r1)",
        "\(.bcast_p99_median_ms | r1) / \(.bcast_p99_worst_ms | r1)",
        (.per_server_p50_p99_ms | map("\(.[0] | r1)/\(.[1] | r1)") | join(", ")),
        "\(.delivered) / \(.expected)",
        (.server_cpu_bcast_ms | r1),
        (.server_cpu_us_per_delivery | if . == null then "–" else (. * 100 | round / 100 | tostring) end),
        "\(.redis_cpu_bcast_ms | r1) / \(.redis_publish_calls) / \(.redis_publish_usec)",
        (.quiet_pct | tostring)] | "| " + join(" | ") + " |"' "$RESULTS"
    echo
    errs="$(jq -s -r '[.[] | .errors[]] | unique | .[]' "$RESULTS" | head -10)"
    trig="$(jq -s -r '[.[] | select(.announce_error != "") | "\(.scenario)-\(.rep): \(.announce_error)"] | .[]' "$RESULTS" | head -5)"
    if [[ -n "$errs" || -n "$trig" ]]; then
        echo "Errors seen (first distinct texts):"
        echo
        [[ -n "$errs" ]] && sed 's/^/- session: `/; s/$/`/' <<<"$errs"
        [[ -n "$trig" ]] && sed 's/^/- trigger: `/; s/$/`/' <<<"$trig"
        echo
    fi
    echo "Columns: \"all up\" = first connect → every load generator settled; \"rate\" = sessions ÷ that time; \"connect p50/p99/max\" = per-session connect() → handshake response (worst generator); \"last delivery of a broadcast\" = per broadcast, the latest arrival among all sessions, median over the broadcasts; \"per instance\" = fan-out latency of the sessions of each instance (instance 1 first: it got the trigger); \"µs/delivery\" = server CPU (all instances) in the broadcast phase ÷ (sessions × $((BROADCASTS - 1))) (includes the keep-alive traffic of that phase); \"busy before\" = machine CPU (% of one core) in the quiet-wait second before the run."
    echo
    echo "## Commands"
    echo
    echo '```'
    cat "$COMMANDS"
    echo '```'
    echo
    echo "Raw per-run JSON (one line per measurement):"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
} >"$REPORT"
cat "$REPORT"
log "report: $REPORT"
