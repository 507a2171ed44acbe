#!/usr/bin/env bash
# Real-time hub benchmark (issue 4): concurrent SignalR sessions on /hubs/notifications, server
# memory per session, connect rate and broadcast fan-out latency (SystemAnnouncement sent through
# the admin API, received by every session), on one instance, on two instances sharing Redis, and
# over SSE + long polling; with, in the same run, a trivial WebSocket broadcast server
# (conduit-ws-ref-server) holding the same number of WebSockets as the reference for the load
# generator's own cost. Writes bench/results/<UTC date>-hubs.md and prints it. See bench/README.md.
#
#   bench/hubs.sh [BUILD_DIR]        (default build/release; configured with
#                                     -DCONDUIT_BUILD_BENCH=ON for conduit-ws-ref-server)
#
# Knobs (environment): HUBS_QUICK=0 (1 = smoke run: 1 repetition, 1,000 WebSockets, 100 + 100
# SSE/long polling, 5 broadcasts) HUBS_REPS=3 HUBS_SESSIONS=10000 HUBS_PROCS=2 HUBS_SSE=1000
# HUBS_LP=1000 HUBS_BROADCASTS=20 HUBS_INTERVAL_MS=200 HUBS_RAMP_RATE=0 (sessions/s per load
# generator; 0 = as fast as HUBS_MAX_PENDING connecting sessions allow) HUBS_MAX_PENDING=128
# HUBS_THREADS=0 (Conduit --threads; 0 = one per core) HUBS_SCENARIOS="ref single redis ssepoll"
# HUBS_REDIS_URL=redis://127.0.0.1:6390/0 HUBS_ANNOUNCE_PATH=/api/notifications/announcements
# HUBS_TARGET=SystemAnnouncement HUBS_ANNOUNCE_BODY="" (template with %STAMP%, for another
# trigger) HUBS_SETTLE_S=2 HUBS_QUIET_WAIT=120 HUBS_QUIET_PCT=25 HUBS_OUT_DIR=bench/results
# HUBS_OUT_NAME=<UTC date>-hubs.md HUBS_KEEP=0 HUBS_CONDUIT_ARGS="" (extra `conduit serve` flags).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_ARG="${1:-build/release}"
BUILD="$BUILD_ARG"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"

QUICK="${HUBS_QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    Q_REPS=1 Q_SESSIONS=1000 Q_SSE=100 Q_LP=100 Q_BROADCASTS=5
else
    Q_REPS=3 Q_SESSIONS=10000 Q_SSE=1000 Q_LP=1000 Q_BROADCASTS=20
fi
REPS="${HUBS_REPS:-$Q_REPS}"
SESSIONS="${HUBS_SESSIONS:-$Q_SESSIONS}"
PROCS="${HUBS_PROCS:-2}"
NSSE="${HUBS_SSE:-$Q_SSE}"
NLP="${HUBS_LP:-$Q_LP}"
BROADCASTS="${HUBS_BROADCASTS:-$Q_BROADCASTS}"
INTERVAL_MS="${HUBS_INTERVAL_MS:-200}"
RAMP_RATE="${HUBS_RAMP_RATE:-0}"
MAX_PENDING="${HUBS_MAX_PENDING:-128}"
THREADS="${HUBS_THREADS:-0}"
SCENARIOS="${HUBS_SCENARIOS:-ref single redis ssepoll}"
REDIS_URL="${HUBS_REDIS_URL:-redis://127.0.0.1:6390/0}"
ANNOUNCE_PATH="${HUBS_ANNOUNCE_PATH:-/api/notifications/announcements}"
TARGET="${HUBS_TARGET:-SystemAnnouncement}"
ANNOUNCE_BODY="${HUBS_ANNOUNCE_BODY:-}"
SETTLE_S="${HUBS_SETTLE_S:-2}"
QUIET_WAIT="${HUBS_QUIET_WAIT:-120}"
QUIET_PCT="${HUBS_QUIET_PCT:-25}"
QUIET_DISK_PCT="${HUBS_QUIET_DISK_PCT:-10}"
OUT_DIR="${HUBS_OUT_DIR:-$ROOT/bench/results}"
OUT_NAME="${HUBS_OUT_NAME:-$(date -u +%Y-%m-%d)-hubs.md}"
KEEP="${HUBS_KEEP:-0}"
CONDUIT_ARGS="${HUBS_CONDUIT_ARGS:-}"
MASTER_KEY="bench-master-key-0123456789abcdef"
HUB_PATH=/hubs/notifications
# Sessions stay up until every one got every broadcast, or this long after the broadcasts.
HOLD_S=$(((BROADCASTS * INTERVAL_MS) / 1000 + 30))

CONDUIT_BIN="$BUILD/conduit"
LOADGEN_BIN="$BUILD/conduit-loadgen"
REF_BIN="$BUILD/conduit-ws-ref-server"

log() { printf '[hubs %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in jq curl sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install jq curl sqlite3)"
done
# What the binaries were built from (the work tree may hold others' uncommitted changes).
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY_FILES="$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
DIRTY_SRC="$(git -C "$ROOT" status --porcelain --untracked-files=no -- src 2>/dev/null | awk '{print $2}' | paste -sd ' ')"
if [[ -f "$BUILD/CMakeCache.txt" ]]; then
    if ! grep -q '^CONDUIT_BUILD_BENCH:BOOL=ON' "$BUILD/CMakeCache.txt"; then
        die "$BUILD is not configured with -DCONDUIT_BUILD_BENCH=ON (needed for conduit-ws-ref-server)"
    fi
    if [[ "${HUBS_NO_BUILD:-0}" != 1 ]]; then
        cmake --build "$BUILD" -j "${HUBS_BUILD_JOBS:-1}" --target conduit conduit-loadgen \
            conduit-ws-ref-server >/dev/null || die "build failed"
    fi
fi
for b in "$CONDUIT_BIN" "$LOADGEN_BIN" "$REF_BIN"; do
    [[ -x "$b" ]] || die "$b not found: build it (cmake --build $BUILD)"
done
"$LOADGEN_BIN" --self-test 2>/dev/null || die "conduit-loadgen --self-test failed"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
# One descriptor per WebSocket session per load generator (plus a few); the server needs one per
# session too.
PER_PROC=$(((SESSIONS + PROCS - 1) / PROCS))
((PER_PROC + 64 <= NOFILE)) || die "$PER_PROC sessions per load generator exceed the open-files limit $NOFILE: raise HUBS_PROCS"
((SESSIONS + 256 <= NOFILE)) || log "warning: $SESSIONS sessions on one server exceed its open-files limit $NOFILE"

if [[ " $SCENARIOS " == *" redis "* ]]; then
    rhost="${REDIS_URL#redis://}"
    rhost="${rhost%%/*}"
    if ! (exec 3<>"/dev/tcp/${rhost%:*}/${rhost##*:}") 2>/dev/null; then
        die "no Redis at $rhost: run scripts/engines.sh start redis, or drop 'redis' from HUBS_SCENARIOS"
    fi
fi
CLK_TCK="$(getconf CLK_TCK)"

TMP="$(mktemp -d /tmp/conduit-hubs-bench.XXXXXX)"
chmod 755 "$TMP"
RUN_DIR="$TMP/runs"
mkdir -p "$RUN_DIR"
PIDS=()
COMMANDS="$TMP/commands.txt"
: >"$COMMANDS"
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"


cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
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

DISK="$(df --output=source "${TMPDIR:-/tmp}" 2>/dev/null | tail -1)"
DISK="${DISK##*/}"

# The machine is shared: before a measurement, wait (bounded) until other work quiets down:
# CPU busy < QUIET_PCT % of a core and the data disk busy < QUIET_DISK_PCT % over a second.
QUIET_WAITED=0
BUSY_RUNS=0
LAST_QUIET_PCT=0

# ---------------------------------------------------------------------------------------------
# Servers: Conduit instances (fresh data dir per repetition; a second instance shares it) and the
# reference server.
# ---------------------------------------------------------------------------------------------
SERVER_PIDS=()
SERVER_URLS=()
KEY=""

admin() { # URL METHOD PATH [JSON]
    curl -sf -X "$2" -H "X-API-Key: $MASTER_KEY" -H 'Content-Type: application/json' \
        ${4:+-d "$4"} "$1$3" || die "admin $2 $3 failed: ${4:-}"
}

start_conduit() { # NAME DATA_DIR [extra serve args...] → appends to SERVER_PIDS/SERVER_URLS
    local name="$1" data="$2"
    shift 2
    local extra=("$@")
    conduit_cmd() { # PORT → STARTED_CMD (sees data and extra: bash scopes are dynamic)
        STARTED_CMD=(env CONDUIT_MASTER_KEY="$MASTER_KEY" CONDUIT_HUB_MAX_CONNECTIONS_PER_KEY=1000000
            "$CONDUIT_BIN" serve --listen "127.0.0.1:$1" --threads "$THREADS"
            --data-dir "$data" --log-level warn "${extra[@]}")
        # shellcheck disable=SC2206
        STARTED_CMD+=($CONDUIT_ARGS)
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

wait_key() { # URL: the configuration is applied within about a second
    local code=""
    for _ in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $KEY" \
            "$1$HUB_PATH/negotiate?negotiateVersion=1")" || true
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    die "negotiate with the bench key on $1 answered $code"
}

start_ref() {
    local cmd=("$REF_BIN" --listen 127.0.0.1:0)
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
}

# ---------------------------------------------------------------------------------------------
# One measurement: load generators (one per entry of SPEC: "URL TRANSPORT SESSIONS") connect
# their sessions; once all are settled, the broadcasts are sent; the generators end when every
# live session received every broadcast (or HOLD_S later).
# ---------------------------------------------------------------------------------------------
run_measurement() { # SCENARIO REP TRIGGER_URL SPEC...
    local scenario="$1" rep="$2" trigger="$3" label spec url transport n i=0 cmd pid
    shift 3
    label="$scenario-$rep"
    local lg_pids=() ready=() samples_by_t=() rss0=() rss1=() rss2=() c0=() c1=() p
    wait_quiet
    local quiet_pct=$LAST_QUIET_PCT
    local load1
    load1="$(cut -d' ' -f1 /proc/loadavg)"
    for p in "${SERVER_PIDS[@]}"; do
        rss0+=("$(rss_kb "$p")")
    done
    local t_start
    t_start="$(date +%s%3N)"
    for spec in "$@"; do
        read -r url transport n <<<"$spec"
        cmd=("$LOADGEN_BIN" hub --url "$url$HUB_PATH" --transport "$transport" --sessions "$n"
            --ramp-rate "$RAMP_RATE" --max-pending "$MAX_PENDING" --target "$TARGET"
            --hold "$HOLD_S" --expect "$BROADCASTS" --samples-file "$RUN_DIR/$label-$i.samples"
            --ready-file "$RUN_DIR/$label-$i.ready")
        if [[ "$scenario" != ref ]]; then
            cmd+=(--header "Authorization: Bearer $KEY")
        fi
        note_cmd "load generator ($scenario, $transport)" "${cmd[@]//$KEY/\$KEY}"
        start_bg "lg-$label-$i" "${cmd[@]}"
        lg_pids+=("$LAST_PID")
        ready+=("$RUN_DIR/$label-$i.ready")
        i=$((i + 1))
    done
    # Wait until every generator has settled its sessions (connected or failed).
    local deadline=$((SECONDS + 180)) all f
    while :; do
        all=1
        for f in "${ready[@]}"; do
            [[ -f "$f" ]] || all=0
        done
        ((all == 1)) && break
        ((SECONDS < deadline)) || die "$label: sessions did not settle within 180 s"
        sleep 0.1
    done
    local t_ready
    t_ready="$(date +%s%3N)"
    sleep "$SETTLE_S"
    for p in "${SERVER_PIDS[@]}"; do
        rss1+=("$(rss_kb "$p")")
        c0+=("$(cpu_ticks "$p")")
    done
    # The broadcasts (through the first server).
    local acmd=("$LOADGEN_BIN" hub-announce --count "$BROADCASTS" --interval-ms "$INTERVAL_MS")
    if [[ "$scenario" == ref ]]; then
        acmd+=(--url "$trigger/broadcast")
    else
        acmd+=(--url "$trigger$ANNOUNCE_PATH" --header "X-API-Key: $MASTER_KEY")
    fi
    if [[ -n "$ANNOUNCE_BODY" && "$scenario" != ref ]]; then
        acmd+=(--body "$ANNOUNCE_BODY")
    fi
    note_cmd "broadcasts ($scenario)" "${acmd[@]//$MASTER_KEY/\$MASTER_KEY}"
    "${acmd[@]}" >"$RUN_DIR/$label.announce.json" 2>"$RUN_DIR/$label.announce.err" ||
        log "$label: broadcast trigger failed: $(jq -r .error "$RUN_DIR/$label.announce.json" 2>/dev/null)"
    for pid in "${lg_pids[@]}"; do
        wait "$pid" || true
        forget_pid "$pid"
    done
    for p in "${SERVER_PIDS[@]}"; do
        rss2+=("$(rss_kb "$p")")
        c1+=("$(cpu_ticks "$p")")
    done

    # Merge: all sessions, and per transport.
    local all_samples=() j=0 tr
    declare -A by_transport=()
    for spec in "$@"; do
        read -r url transport n <<<"$spec"
        all_samples+=("$RUN_DIR/$label-$j.samples")
        by_transport[$transport]+="$RUN_DIR/$label-$j.samples "
        j=$((j + 1))
    done
    "$LOADGEN_BIN" hub-merge "${all_samples[@]}" >"$RUN_DIR/$label.merge.json"
    local lg_json="[]" tr_json="{}"
    lg_json="$(for j in $(seq 0 $((i - 1))); do cat "$TMP/lg-$label-$j.out"; done | jq -s -c .)"
    for tr in "${!by_transport[@]}"; do
        # shellcheck disable=SC2086
        tr_json="$(jq -c --arg t "$tr" --argjson m "$("$LOADGEN_BIN" hub-merge ${by_transport[$tr]})" \
            '. + {($t): $m}' <<<"$tr_json")"
    done
    local rss_json
    rss_json="$(jq -nc --argjson a "[$(IFS=,; echo "${rss0[*]}")]" --argjson b "[$(IFS=,; echo "${rss1[*]}")]" \
        --argjson c "[$(IFS=,; echo "${rss2[*]}")]" '{before: $a, connected: $b, after: $c}')"
    local cpu_ms=0 k
    for k in "${!c0[@]}"; do
        cpu_ms=$((cpu_ms + (c1[k] - c0[k]) * 1000 / CLK_TCK))
    done
    jq -nc --arg scenario "$scenario" --argjson rep "$rep" --argjson lg "$lg_json" \
        --argjson merged "$(cat "$RUN_DIR/$label.merge.json")" --argjson per "$tr_json" \
        --argjson rss "$rss_json" --argjson announce "$(cat "$RUN_DIR/$label.announce.json" 2>/dev/null || echo '{}')" \
        --argjson broadcasts "$BROADCASTS" --argjson cpu_ms "$cpu_ms" --argjson quiet "$quiet_pct" \
        --arg load1 "$load1" --argjson ready_ms "$((t_ready - t_start))" '
        ($lg | map(.connected) | add) as $connected
        | ($lg | map(.sessions) | add) as $sessions
        | {scenario: $scenario, rep: $rep, sessions: $sessions, connected: $connected,
           failed: ($lg | map(.failed) | add), dropped: ($lg | map(.dropped) | add),
           errors: ($lg | map(.errors) | add | unique),
           connect_rate: (if ($lg | map(.ramp_s) | max) > 0 then $connected / ($lg | map(.ramp_s) | max) else null end),
           connect_p50_ms: (($lg | map(.connect_us.p50) | max) / 1000),
           connect_p99_ms: (($lg | map(.connect_us.p99) | max) / 1000),
           ready_ms: $ready_ms,
           rss_before_kb: ($rss.before | add), rss_connected_kb: ($rss.connected | add),
           rss_after_kb: ($rss.after | add), rss: $rss,
           per_session_bytes: (if $connected > 0 then (($rss.connected | add) - ($rss.before | add)) * 1024 / $connected else null end),
           per_session_after_bytes: (if $connected > 0 then (($rss.after | add) - ($rss.before | add)) * 1024 / $connected else null end),
           broadcasts_ok: ($announce.ok // 0), announce_error: ($announce.error // ""),
           announce_response_p50_ms: (($announce.response_p50_us // 0) / 1000),
           expected: ($connected * $broadcasts), delivered: $merged.latency_us.count,
           # No delivery, no latency (null, not 0).
           lat_p50_ms: $merged.latency_us.p50, lat_p90_ms: $merged.latency_us.p90,
           lat_p99_ms: $merged.latency_us.p99, lat_max_ms: $merged.latency_us.max,
           user_p50_ms: $merged.user_latency_us.p50, user_p99_ms: $merged.user_latency_us.p99,
           bcast_p99_median_ms: $merged.broadcast_p99_median_us,
           bcast_p99_worst_ms: $merged.broadcast_p99_worst_us,
           per_transport: ($per | with_entries(.value = {count: .value.latency_us.count,
               p50_ms: (.value.latency_us.p50 / 1000), p99_ms: (.value.latency_us.p99 / 1000),
               max_ms: (.value.latency_us.max / 1000)})),
           server_cpu_ms: $cpu_ms,
           server_cpu_us_per_delivery: (if $merged.latency_us.count > 0 then $cpu_ms * 1000 / $merged.latency_us.count else null end),
           lg_cpu_s: ($lg | map(.client_cpu_s) | add), lg_rss_kb: ($lg | map(.client_maxrss_kb) | add),
           pings: ($lg | map(.pings_answered) | add), quiet_pct: $quiet, load1: $load1}
        | . as $r
        | reduce ("lat_p50_ms", "lat_p90_ms", "lat_p99_ms", "lat_max_ms", "user_p50_ms", "user_p99_ms",
                  "bcast_p99_median_ms", "bcast_p99_worst_ms") as $f
            ($r; .[$f] = (if $r.delivered > 0 then $r[$f] / 1000 else null end))' >>"$RESULTS"
    log "$label: $(tail -1 "$RESULTS" | jq -r '"\(.connected)/\(.sessions) up (\(.failed) failed, \(.dropped) dropped), \(.connect_rate | floor)/s; RSS +\(.per_session_bytes // 0 | floor) B/session; delivered \(.delivered)/\(.expected); p50 \(.lat_p50_ms) ms p99 \(.lat_p99_ms) ms"')"
}

split_spec() { # URL TRANSPORT TOTAL PROCS → one spec line per process
    local base=$(($3 / $4)) extra=$(($3 % $4)) k n
    for k in $(seq 1 "$4"); do
        n=$base
        ((k <= extra)) && n=$((n + 1))
        echo "$1 $2 $n"
    done
}

run_scenario() { # SCENARIO REP
    local scenario="$1" rep="$2" data specs=()
    data="$TMP/data-$scenario-$rep"
    case "$scenario" in
        ref)
            start_ref
            mapfile -t specs < <(split_spec "${SERVER_URLS[0]}" ws "$SESSIONS" "$PROCS")
            run_measurement ref "$rep" "${SERVER_URLS[0]}" "${specs[@]}"
            ;;
        single)
            start_conduit "conduit-single-$rep" "$data"
            seed_key "${SERVER_URLS[0]}"
            wait_key "${SERVER_URLS[0]}"
            mapfile -t specs < <(split_spec "${SERVER_URLS[0]}" ws "$SESSIONS" "$PROCS")
            run_measurement single "$rep" "${SERVER_URLS[0]}" "${specs[@]}"
            ;;
        redis)
            start_conduit "conduit-redis-a-$rep" "$data" --redis-url "$REDIS_URL"
            seed_key "${SERVER_URLS[0]}"
            wait_key "${SERVER_URLS[0]}"
            # The embedded work queue (queue.db) locks its data dir, so the second instance gets
            # its own dir holding a copy of the store taken after seeding (same keys).
            mkdir -p "$data-b"
            sqlite3 "$data/conduit.db" ".backup '$data-b/conduit.db'" || die "store copy failed"
            start_conduit "conduit-redis-b-$rep" "$data-b" --redis-url "$REDIS_URL"
            wait_key "${SERVER_URLS[1]}"
            # Half of the sessions on each instance (one load generator each when PROCS=2).
            local half=$((PROCS / 2 > 0 ? PROCS / 2 : 1))
            mapfile -t specs < <(split_spec "${SERVER_URLS[0]}" ws $((SESSIONS / 2)) "$half"
                split_spec "${SERVER_URLS[1]}" ws $((SESSIONS - SESSIONS / 2)) "$half")
            run_measurement redis "$rep" "${SERVER_URLS[0]}" "${specs[@]}"
            ;;
        ssepoll)
            start_conduit "conduit-ssepoll-$rep" "$data"
            seed_key "${SERVER_URLS[0]}"
            wait_key "${SERVER_URLS[0]}"
            run_measurement ssepoll "$rep" "${SERVER_URLS[0]}" "${SERVER_URLS[0]} sse $NSSE" \
                "${SERVER_URLS[0]} lp $NLP"
            ;;
        *) die "unknown scenario $scenario" ;;
    esac
    stop_servers
}

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T0=$SECONDS
if [[ -n "${HUBS_REPORT_ONLY:-}" ]]; then
    # Re-render the report from a kept run (HUBS_KEEP=1): HUBS_REPORT_ONLY=<its tmp dir>.
    cp "$HUBS_REPORT_ONLY/results.jsonl" "$RESULTS"
    cp "$HUBS_REPORT_ONLY/commands.txt" "$COMMANDS"
    [[ -f "$HUBS_REPORT_ONLY/run-facts.sh" ]] && . "$HUBS_REPORT_ONLY/run-facts.sh"
else
    log "scenarios: $SCENARIOS; $REPS repetition(s); $SESSIONS WebSocket sessions over $PROCS load generator(s); $NSSE SSE + $NLP long polling; $BROADCASTS broadcasts ${INTERVAL_MS} ms apart"
    for rep in $(seq 1 "$REPS"); do
        for scenario in $SCENARIOS; do
            run_scenario "$scenario" "$rep"
        done
    done
    T_LOAD=$((SECONDS - T0))
    RUN_END="$(date -u '+%Y-%m-%d %H:%M:%S')"
    # What the report needs besides results.jsonl, for a re-render.
    declare -p T_LOAD RUN_END LOADAVG_START QUIET_WAITED BUSY_RUNS COMMIT DIRTY_FILES DIRTY_SRC \
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
medt() { # SCENARIO TRANSPORT FIELD → median over repetitions of per_transport[T][F]
    jq -s -r --arg s "$1" --arg t "$2" --arg f "$3" '
        [.[] | select(.scenario == $s) | .per_transport[$t][$f] | select(. != null)] | sort |
        if length == 0 then "nan"
        elif length % 2 == 1 then .[(length - 1) / 2]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end' "$RESULTS"
}
each() { # SCENARIO FIELD → "a / b / c"
    jq -s -r --arg s "$1" --arg f "$2" '
        [.[] | select(.scenario == $s) | .[$f]
         | if . == null then "–" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end]
        | join(" / ")' "$RESULTS"
}
total() { # SCENARIO FIELD → sum over repetitions
    jq -s -r --arg s "$1" --arg f "$2" '[.[] | select(.scenario == $s) | .[$f] // 0] | add // 0' "$RESULTS"
}
has() { jq -s -e --arg s "$1" 'any(.[]; .scenario == $s)' "$RESULTS" >/dev/null; }
fmt0() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "–"; else printf "%.2f", a / b }'; }
at_most() { # VALUE LIMIT
    awk -v v="$1" -v t="$2" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else if (v + 0 <= t + 0) print "**PASS**"; else print "**FAIL**" }'
}
fanout_verdict() { # SCENARIO P99 LIMIT: within the limit and every broadcast reached every session
    if [[ "$(total "$1" delivered)" != "$(total "$1" expected)" ]]; then
        [[ "$(total "$1" delivered)" == 0 ]] && echo "n/a (nothing delivered)" || echo "**FAIL** (not all delivered)"
        return
    fi
    at_most "$2" "$3"
}
complete_text() { # SCENARIO → "all N" or "x of y"
    local d e
    d="$(total "$1" delivered)"
    e="$(total "$1" expected)"
    if [[ "$d" == "$e" ]]; then echo "all $d"; else echo "$d of $e"; fi
}

mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$OUT_NAME"
DIRTY=""
if ((DIRTY_FILES > 0)); then
    DIRTY=" + uncommitted changes in $DIRTY_FILES tracked file(s) (other helpers' work in progress"
    if [[ -n "$DIRTY_SRC" ]]; then
        DIRTY+="; under src/: \`$DIRTY_SRC\`"
    else
        DIRTY+="; none under src/"
    fi
    DIRTY+=")"
fi
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
MEM_GB="$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
REDIS_VERSION=""
if [[ " $SCENARIOS " == *" redis "* ]] && command -v redis-cli >/dev/null 2>&1; then
    rhost="${REDIS_URL#redis://}"
    rhost="${rhost%%/*}"
    REDIS_VERSION="$(redis-cli -h "${rhost%:*}" -p "${rhost##*:}" info server 2>/dev/null |
        sed -n 's/^redis_version:\(.*\)\r$/\1/p')"
fi
SCEN_NAME() {
    case "$1" in
        ref) echo "reference server, $SESSIONS WebSockets" ;;
        single) echo "Conduit, 1 instance, $SESSIONS WebSockets" ;;
        redis) echo "Conduit, 2 instances + Redis, $SESSIONS WebSockets" ;;
        ssepoll) echo "Conduit, 1 instance, $NSSE SSE + $NLP long polling" ;;
    esac
}

{
    echo "# Real-time hub benchmark, $(date -u +%Y-%m-%d)"
    echo
    echo "Generated by \`bench/hubs.sh\` at ${RUN_END:-$(date -u '+%Y-%m-%d %H:%M:%S')} UTC (load phase $T_LOAD s)$([[ "$QUICK" == 1 ]] && echo "; **quick mode (smoke run)**")$([[ -n "${HUBS_REPORT_ONLY:-}" ]] && echo "; report re-rendered at $(date -u '+%H:%M:%S') UTC from the kept run")."
    echo
    echo "## Machine and set-up"
    echo
    echo "- CPUs: $(nproc) × $CPU_MODEL; memory $MEM_GB GiB; kernel $(uname -sr); open files per process $NOFILE"
    echo "- Built from commit $COMMIT$DIRTY at the start of the run; binaries from \`$BUILD_ARG\`"
    echo "- Unpinned: Conduit (\`--threads $THREADS\`$([[ "$THREADS" == 0 ]] && echo ", one event loop per core")), the load generators and the trigger share both cores, as the reference server does in its runs. Everything on loopback."
    echo "- Conduit: embedded SQLite store in a fresh temp data dir per repetition, \`--log-level warn\`, \`CONDUIT_HUB_MAX_CONNECTIONS_PER_KEY=1000000\` (one virtual key for all sessions), hub defaults otherwise (ping 15 s, client timeout 30 s). Two-instance runs: both \`--redis-url $REDIS_URL\`$([[ -n "$REDIS_VERSION" ]] && echo " (Redis $REDIS_VERSION, shared with other helpers' tests)"); the second instance runs on a copy of the first one's store taken after seeding (\`sqlite3 .backup\`: same keys), because the embedded work queue locks its data dir; half of the sessions on each, broadcasts sent through the first."
    echo "- Sessions: \`conduit-loadgen hub\` ($PROCS processes for the WebSocket runs, one thread each, epoll): negotiate with the virtual key (\`Authorization: Bearer\`), then the transport with the connection token, JSON handshake; pings answered; $([[ "$RAMP_RATE" == 0 ]] && echo "no pacing: up to $MAX_PENDING sessions connecting at once per process" || echo "$RAMP_RATE sessions/s per process, at most $MAX_PENDING connecting at once")."
    echo "- Broadcasts: $BROADCASTS × \`POST $ANNOUNCE_PATH\` (admin key) ${INTERVAL_MS} ms apart by \`conduit-loadgen hub-announce\`; each message carries \`bench:<CLOCK_REALTIME ns>\` taken just before the request is written; every session records $TARGET arrival − stamp. **Fan-out latency** uses the kernel's receive timestamp of the bytes (\`SO_TIMESTAMPNS\`), so it excludes the time the load generator itself takes to get to a socket; the \"user\" figure (when the generator parsed the record) is shown too. The reference server (one thread, epoll) answers negotiate with a canned response, the handshake with \`{}\`, and gets the same trigger request at \`POST /broadcast\`, so the load generators run the same code path against it."
    echo "- Memory: server VmRSS before the sessions (after start-up and seeding), once all sessions are up (+ ${SETTLE_S} s), and after the broadcasts; per-session cost = (connected − before) ÷ sessions connected. Two-instance rows add both instances."
    echo "- Repetitions: $REPS; **medians** shown, individual runs in the detail table. Load average at start: $LOADAVG_START. The machine is shared: before each measurement the script waited for it to be quiet (< $QUIET_PCT % of a core busy and the disk \`$DISK\` < $QUIET_DISK_PCT % busy over 1 s, at most $QUIET_WAIT s): $QUIET_WAITED s of waiting in all; $BUSY_RUNS measurement(s) started on a busy machine anyway."
    echo
    echo "## Summary (medians of $REPS)"
    echo
    row "scenario" "sessions up (all runs)" "connect rate /s" "server RSS per session" "server RSS total, sessions up" "fan-out p50 ms" "fan-out p99 ms" "max ms" "worst broadcast p99 ms" "delivered (all runs)"
    row --- ---: ---: ---: ---: ---: ---: ---: ---: ---:
    for s in $SCENARIOS; do
        has "$s" || continue
        row "$(SCEN_NAME "$s")" "$(total "$s" connected) of $(total "$s" sessions)" \
            "$(fmt0 "$(med "$s" connect_rate)")" \
            "$(fmt1 "$(awk -v b="$(med "$s" per_session_bytes)" 'BEGIN { if (b == "nan") print "nan"; else print b / 1024 }')") KB" \
            "$(fmt1 "$(awk -v k="$(med "$s" rss_connected_kb)" 'BEGIN { if (k == "nan") print "nan"; else print k / 1024 }')") MB" \
            "$(fmt1 "$(med "$s" lat_p50_ms)")" "$(fmt1 "$(med "$s" lat_p99_ms)")" "$(fmt1 "$(med "$s" lat_max_ms)")" \
            "$(fmt1 "$(med "$s" bcast_p99_worst_ms)")" "$(complete_text "$s")"
    done
    echo
    if has ref && has single; then
        echo "Same-run ratios, Conduit (1 instance) ÷ reference server, same session count and load generators: connect rate $(ratio "$(med single connect_rate)" "$(med ref connect_rate)"), RSS per session $(ratio "$(med single per_session_bytes)" "$(med ref per_session_bytes)"), fan-out p50 $(ratio "$(med single lat_p50_ms)" "$(med ref lat_p50_ms)") and p99 $(ratio "$(med single lat_p99_ms)" "$(med ref lat_p99_ms)")."
        echo
    fi
    echo "## Targets (from the issue)"
    echo
    row "target" "measured (median of $REPS)" "verdict"
    row --- ---: ---
    if has single; then
        v="$(med single per_session_bytes)"
        row "$SESSIONS WebSocket sessions on one instance: ≤ 10 KB per session" "$(fmt1 "$(awk -v b="$v" 'BEGIN { if (b == "nan") print "nan"; else print b / 1024 }')") KB" "$(at_most "$v" 10240)"
        v="$(med single rss_connected_kb)"
        d="$(awk -v a="$v" -v b="$(med single rss_before_kb)" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else print (a - b) / 1024 }')"
        row "… ≤ 100 MB in total (growth with the sessions up)" "$(fmt1 "$d") MB (RSS $(fmt1 "$(awk -v k="$v" 'BEGIN { print k / 1024 }')") MB)" "$(at_most "$d" 100)"
        row "… the seed's bar: < 2 GB per instance at 10K sessions" "$(fmt1 "$(awk -v k="$v" 'BEGIN { print k / 1024 }')") MB" "$(at_most "$(awk -v k="$v" 'BEGIN { print k / 1024 }')" 2048)"
        ok="$(awk -v a="$(total single connected)" -v b="$(total single sessions)" 'BEGIN { print (a == b) ? "**PASS**" : "**FAIL**" }')"
        row "… every session connects" "$(total single connected) of $(total single sessions)" "$ok"
        v="$(med single lat_p99_ms)"
        row "broadcast fan-out p99 to all $SESSIONS ≤ 20 ms (one instance)" "$(fmt1 "$v") ms (p50 $(fmt1 "$(med single lat_p50_ms)") ms; $(complete_text single) delivered)" "$(fanout_verdict single "$v" 20)"
    fi
    if has redis; then
        v="$(med redis lat_p99_ms)"
        row "fan-out p99 ≤ 50 ms across two instances via Redis" "$(fmt1 "$v") ms (p50 $(fmt1 "$(med redis lat_p50_ms)") ms; $(complete_text redis) delivered)" "$(fanout_verdict redis "$v" 50)"
    fi
    if has ssepoll; then
        ok="$(awk -v a="$(total ssepoll connected)" -v b="$(total ssepoll sessions)" -v d="$(total ssepoll delivered)" -v e="$(total ssepoll expected)" 'BEGIN { print (a == b && d == e) ? "**PASS**" : "**FAIL**" }')"
        row "$NSSE SSE + $NLP long-polling sessions side by side: all connect, every broadcast delivered" "$(total ssepoll connected) of $(total ssepoll sessions) up; $(complete_text ssepoll) delivered; SSE p99 $(fmt1 "$(medt ssepoll sse p99_ms)") ms, long polling p99 $(fmt1 "$(medt ssepoll lp p99_ms)") ms" "$ok"
    fi
    echo
    echo "## Runs"
    echo
    row "scenario" "rep" "up / failed / dropped" "connect /s" "connect p50 / p99 ms" "RSS before → up → after MB" "B/session (up / after)" "fan-out p50 / p90 / p99 / max ms" "user p99 ms" "broadcast p99 median / worst ms" "delivered" "server CPU µs/delivery" "loadgen CPU s / RSS MB" "busy before %"
    row --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
    jq -s -r 'def r1: if . == null then "–" else (. * 10 | round / 10 | tostring) end;
        .[] | [.scenario, (.rep | tostring),
        "\(.connected) / \(.failed) / \(.dropped)",
        (.connect_rate // 0 | floor | tostring),
        "\(.connect_p50_ms * 10 | round / 10) / \(.connect_p99_ms * 10 | round / 10)",
        "\(.rss_before_kb / 1024 * 10 | round / 10) → \(.rss_connected_kb / 1024 * 10 | round / 10) → \(.rss_after_kb / 1024 * 10 | round / 10)",
        "\(.per_session_bytes // 0 | floor) / \(.per_session_after_bytes // 0 | floor)",
        "\(.lat_p50_ms | r1) / \(.lat_p90_ms | r1) / \(.lat_p99_ms | r1) / \(.lat_max_ms | r1)",
        (.user_p99_ms | r1),
        "\(.bcast_p99_median_ms | r1) / \(.bcast_p99_worst_ms | r1)",
        "\(.delivered) / \(.expected)",
        (.server_cpu_us_per_delivery // 0 | . * 10 | round / 10 | tostring),
        "\(.lg_cpu_s * 10 | round / 10) / \(.lg_rss_kb / 1024 * 10 | round / 10)",
        (.quiet_pct | tostring)] | "| " + join(" | ") + " |"' "$RESULTS"
    echo
    if has ssepoll; then
        echo "SSE and long polling separately (medians): SSE p50 / p99 / max $(fmt1 "$(medt ssepoll sse p50_ms)") / $(fmt1 "$(medt ssepoll sse p99_ms)") / $(fmt1 "$(medt ssepoll sse max_ms)") ms; long polling $(fmt1 "$(medt ssepoll lp p50_ms)") / $(fmt1 "$(medt ssepoll lp p99_ms)") / $(fmt1 "$(medt ssepoll lp max_ms)") ms (a long-polling session is without a held poll between a response and its next poll, so a broadcast may wait for that round trip)."
        echo
    fi
    errs="$(jq -s -r '[.[] | .errors[]] | unique | .[]' "$RESULTS" | head -10)"
    trig="$(jq -s -r '[.[] | select(.announce_error != "") | "\(.scenario)-\(.rep): \(.announce_error)"] | .[]' "$RESULTS" | head -5)"
    if [[ -n "$errs" || -n "$trig" ]]; then
        echo "Errors seen (first distinct texts):"
        echo
        [[ -n "$errs" ]] && sed 's/^/- session: `/; s/$/`/' <<<"$errs"
        [[ -n "$trig" ]] && sed 's/^/- trigger: `/; s/$/`/' <<<"$trig"
        echo
    fi
    echo "Columns: \"connect /s\" = sessions up ÷ the longest load generator's time from its first connect to its last handshake response (all generators start together); \"connect p50 / p99\" = per-session time from connect() to the handshake response (worst generator); \"delivered\" = $TARGET invocations received with a stamp ÷ (sessions up × broadcasts); \"server CPU µs/delivery\" = server CPU (all threads; both instances in the Redis rows) during the broadcast phase ÷ deliveries; \"busy before\" = machine CPU use (% of one core) in the quiet-wait second before the run."
    echo
    echo "## Commands"
    echo
    echo '```'
    cat "$COMMANDS"
    echo '```'
} >"$REPORT"
cat "$REPORT"
log "report: $REPORT"
