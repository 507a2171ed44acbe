#!/usr/bin/env bash
# Same-run gateway benchmark on one machine: the mock provider directly, nginx as a reverse proxy
# in front of it, and Conduit in front of it, at the same concurrency with the same request bytes.
# Writes bench/results/<UTC date>-gateway.md and prints it. See bench/README.md.
#
#   bench/run.sh [BUILD_DIR]            (default build/release)
#
# Knobs (environment): BENCH_CONNECTIONS=32 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_REPS=3
# BENCH_RATE=5000 BENCH_PIN=1 BENCH_SERVER_CPU=1 BENCH_CLIENT_CPU=0 BENCH_THREADS=1
# BENCH_MOCK_THREADS=1 BENCH_STREAM_CHUNKS=16 BENCH_TARGETS="mock nginx conduit"
# BENCH_SCENARIOS="chat-1k chat-10k stream" BENCH_NGINX_AUTO=1 BENCH_WRK=1 BENCH_OPEN=1
# BENCH_OUT_DIR=bench/results BENCH_KEEP=0 (keep the temp dir with raw JSON and logs)
# BENCH_CONDUIT_ARGS="" (extra flags for `conduit serve`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-build/release}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"

CONNECTIONS="${BENCH_CONNECTIONS:-32}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
REPS="${BENCH_REPS:-3}"
RATE="${BENCH_RATE:-5000}"
PIN="${BENCH_PIN:-1}"
SERVER_CPU="${BENCH_SERVER_CPU:-1}"
CLIENT_CPU="${BENCH_CLIENT_CPU:-0}"
THREADS="${BENCH_THREADS:-1}"
MOCK_THREADS="${BENCH_MOCK_THREADS:-1}"
STREAM_CHUNKS="${BENCH_STREAM_CHUNKS:-16}"
TARGETS="${BENCH_TARGETS:-mock nginx conduit}"
SCENARIOS="${BENCH_SCENARIOS:-chat-1k chat-10k stream}"
NGINX_AUTO="${BENCH_NGINX_AUTO:-1}"
RUN_WRK="${BENCH_WRK:-1}"
RUN_OPEN="${BENCH_OPEN:-1}"
OUT_DIR="${BENCH_OUT_DIR:-$ROOT/bench/results}"
KEEP="${BENCH_KEEP:-0}"
CONDUIT_ARGS="${BENCH_CONDUIT_ARGS:-}" # extra `conduit serve` flags (word-split)
MASTER_KEY="bench-master-key-0123456789abcdef"
UPSTREAM_KEY="sk-bench-upstream"
OVERHEAD_HEADER="X-Conduit-Overhead-Us"

MOCK_BIN="$BUILD/conduit-mock-provider"
CONDUIT_BIN="$BUILD/conduit"
LOADGEN_BIN="$BUILD/conduit-loadgen"

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Packages (idempotent): nginx, wrk, jq, curl.
# ---------------------------------------------------------------------------------------------
install_packages() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
    if ((${#missing[@]} > 0)); then
        log "installing ${missing[*]} (apt-get)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${missing[@]}" >/dev/null 2>&1; then
            apt-get update >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
        fi
    fi
}
install_packages
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"

[[ -x "$MOCK_BIN" ]] || die "$MOCK_BIN not found: build it (cmake --build $BUILD)"
if [[ -f "$BUILD/CMakeCache.txt" ]]; then
    # Cheap when up to date; the load generator depends on nothing but Threads.
    cmake --build "$BUILD" --target conduit-loadgen >/dev/null || die "cannot build conduit-loadgen"
fi
[[ -x "$LOADGEN_BIN" ]] || die "$LOADGEN_BIN not found"
SKIPPED_NOTE=""
if [[ " $TARGETS " == *" conduit "* && ! -x "$CONDUIT_BIN" ]]; then
    log "warning: $CONDUIT_BIN not found; skipping the conduit target"
    TARGETS="${TARGETS//conduit/}"
    SKIPPED_NOTE="Conduit was **not measured**: \`$CONDUIT_BIN\` was missing."
fi
"$LOADGEN_BIN" --self-test 2>/dev/null || die "conduit-loadgen --self-test failed"

NCPU="$(nproc)"
if [[ "$PIN" == 1 ]] && ((NCPU < 2)); then
    log "warning: fewer than 2 CPUs; running unpinned"
    PIN=0
fi
if [[ "$PIN" == 1 ]]; then
    SERVER_PIN=(taskset -c "$SERVER_CPU")
    CLIENT_PIN=(taskset -c "$CLIENT_CPU")
else
    SERVER_PIN=()
    CLIENT_PIN=()
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK="$(getconf CLK_TCK)"

TMP="$(mktemp -d /tmp/conduit-bench.XXXXXX)"
chmod 755 "$TMP"
RUN_DIR="$TMP/runs"
mkdir -p "$RUN_DIR"
PIDS=()
COMMANDS="$TMP/commands.txt"
: >"$COMMANDS"

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ "$KEEP" == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Quotes a command for the report (single quotes where needed).
quote_cmd() {
    local out="" a
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+="$a "
        else
            out+="'${a//\'/\'\\\'\'}' "
        fi
    done
    printf '%s' "${out% }"
}
note_cmd() { printf '%s\n' "$*" >>"$COMMANDS"; }

# Starts "$@" in the background with stdout/stderr in $TMP/<name>.{out,err}; PID in LAST_PID.
start_bg() {
    local name="$1"
    shift
    note_cmd "$(quote_cmd "$@")"
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# A TCP port nothing listens on (bash only: a refused connect means free).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

wait_http() { # URL TIMEOUT_S
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if curl -s -o /dev/null -m 1 "$1"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# The PID and its direct children (nginx master + workers), one per line.
pid_family() {
    echo "$1"
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '{
        pid = $1; sub(/.*\) /, ""); if ($2 == root) print pid }'
}

# utime + stime in clock ticks over the PID's family.
cpu_ticks() {
    local files=() p
    for p in $(pid_family "$1"); do
        files+=("/proc/$p/stat")
    done
    { cat "${files[@]}" 2>/dev/null || true; } |
        awk '{sub(/.*\) /, ""); t += $12 + $13} END {print t + 0}'
}

# Sum of a /proc/PID/status field (kB) over the PID's family.
mem_kb() { # PID FIELD
    local files=() p
    for p in $(pid_family "$1"); do
        files+=("/proc/$p/status")
    done
    { cat "${files[@]}" 2>/dev/null || true; } |
        awk -v f="$2:" '$1 == f {t += $2} END {print t + 0}'
}

# Busy ticks of the whole machine (all CPUs) from /proc/stat.
machine_busy_ticks() {
    awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat
}

median() {
    sort -g | awk '{a[NR] = $1} END {
        if (NR == 0) { print "nan" } else if (NR % 2) { print a[(NR + 1) / 2] }
        else { print (a[NR / 2] + a[NR / 2 + 1]) / 2 } }'
}

# ---------------------------------------------------------------------------------------------
# Mock provider (client core: it shares core CLIENT_CPU with the load generator).
# ---------------------------------------------------------------------------------------------
log "starting the mock provider"
start_bg mock "${CLIENT_PIN[@]}" "$MOCK_BIN" --listen 127.0.0.1:0 --threads "$MOCK_THREADS" \
    --response-bytes 1024 --stream-chunks "$STREAM_CHUNKS" --log-level warn
MOCK_PID=$LAST_PID
for _ in $(seq 1 100); do
    grep -q 'listening on' "$TMP/mock.out" 2>/dev/null && break
    sleep 0.05
done
MOCK_URL="$(sed -n 's#.*listening on \(http://[^ ]*\).*#\1#p' "$TMP/mock.out" | head -1)"
[[ -n "$MOCK_URL" ]] || die "mock provider did not start: $(cat "$TMP/mock.err")"
MOCK_PORT="${MOCK_URL##*:}"
log "mock at $MOCK_URL"

mock_config() { # JSON
    curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$MOCK_URL/mock/config" \
        >/dev/null || die "POST /mock/config $1 failed"
}

# ---------------------------------------------------------------------------------------------
# nginx: own instance, generated config, proxy_pass to the mock with upstream keep-alive.
# ---------------------------------------------------------------------------------------------
start_nginx() { # NAME WORKERS → NGINX_PID, NGINX_PORT
    local name="$1" workers="$2" dir="$TMP/$1" port
    port="$(free_port)"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
master_process on;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    start_bg "$name" "${SERVER_PIN[@]}" "$NGINX_BIN" -c "$dir/nginx.conf" -p "$dir" \
        -e "$dir/error.log"
    NGINX_PID=$LAST_PID
    NGINX_PORT=$port
    wait_http "http://127.0.0.1:$port/health" 10 ||
        die "nginx ($name) did not start: $(cat "$dir/error.log" "$TMP/$name.err" 2>/dev/null)"
    cp "$dir/nginx.conf" "$TMP/$name.conf"
}

declare -A URL PID IDLE_RSS
URL[mock]="$MOCK_URL/v1/chat/completions"
PID[mock]=$MOCK_PID

if [[ " $TARGETS " == *" nginx "* ]]; then
    log "starting nginx (worker_processes $THREADS)"
    start_nginx nginx "$THREADS"
    URL[nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    PID[nginx]=$NGINX_PID
    if [[ "$NGINX_AUTO" == 1 ]]; then
        log "starting nginx (worker_processes auto)"
        start_nginx nginx-auto auto
        URL[nginx-auto]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
        PID[nginx-auto]=$NGINX_PID
    fi
fi

# ---------------------------------------------------------------------------------------------
# Conduit: temp data dir, seeded through the admin API.
# ---------------------------------------------------------------------------------------------
VKEY="bench-no-conduit"
if [[ " $TARGETS " == *" conduit "* ]]; then
    CONDUIT_PORT="$(free_port)"
    log "starting conduit on port $CONDUIT_PORT (--threads $THREADS)"
    start_bg conduit env CONDUIT_MASTER_KEY="$MASTER_KEY" "${SERVER_PIN[@]}" "$CONDUIT_BIN" serve \
        --listen "127.0.0.1:$CONDUIT_PORT" --threads "$THREADS" --data-dir "$TMP/conduit-data" \
        --log-level warn $CONDUIT_ARGS
    PID[conduit]=$LAST_PID
    CONDUIT_URL="http://127.0.0.1:$CONDUIT_PORT"
    wait_http "$CONDUIT_URL/health/live" 20 ||
        die "conduit did not start: $(tail -20 "$TMP/conduit.err")"
    admin() { # PATH JSON
        curl -sf -X POST -H "X-API-Key: $MASTER_KEY" -H 'Content-Type: application/json' \
            -d "$2" "$CONDUIT_URL$1" || die "admin POST $1 failed: $2"
    }
    provider_id="$(admin /api/ProviderCredentials "$(jq -nc --arg url "$MOCK_URL/v1" \
        --arg key "$UPSTREAM_KEY" '{providerType: "openai-compatible", providerName: "bench-mock",
        baseUrl: $url, apiKey: $key}')" | jq -r .id)"
    mapping_id="$(admin /api/ModelProviderMapping "$(jq -nc --argjson p "$provider_id" \
        '{modelAlias: "bench-model", providerModelId: "mock-bench", providerId: $p}')" | jq -r .id)"
    admin /api/ModelCosts "$(jq -nc --argjson m "$mapping_id" '{costName: "bench",
        modelProviderMappingIds: [$m], inputCostPerMillionTokens: 1.0,
        outputCostPerMillionTokens: 2.0}')" >/dev/null
    group_id="$(admin /api/VirtualKeyGroups \
        '{"groupName":"bench","initialBalance":1000000}' | jq -r .id)"
    VKEY="$(admin /api/VirtualKeys "$(jq -nc --argjson g "$group_id" \
        '{keyName: "bench", virtualKeyGroupId: $g}')" | jq -r .virtualKey)"
    [[ "$VKEY" == condt_* ]] || die "no virtual key created (got '$VKEY')"
    URL[conduit]="$CONDUIT_URL/v1/chat/completions"
    log "seeded conduit: provider $provider_id, mapping $mapping_id, group $group_id"
fi

# Request bodies: the same bytes go to every target.
BODY_CHAT="$TMP/body-chat.json"
BODY_STREAM="$TMP/body-stream.json"
MESSAGES='[{"role":"system","content":"You are a helpful assistant."},'
MESSAGES+='{"role":"user","content":"Write a short greeting for the benchmark."}]'
printf '{"model":"bench-model","messages":%s,"max_tokens":4096}' "$MESSAGES" >"$BODY_CHAT"
printf '{"model":"bench-model","stream":true,"messages":%s,"max_tokens":4096}' "$MESSAGES" \
    >"$BODY_STREAM"

ACTIVE=()
for t in mock nginx nginx-auto conduit; do
    if [[ -n "${URL[$t]:-}" ]]; then
        ACTIVE+=("$t")
    fi
done

# Each target must answer 200 before measuring (the gateway applies config within 1 s).
for t in "${ACTIVE[@]}"; do
    ok=""
    for _ in $(seq 1 50); do
        code="$(curl -s -o "$TMP/check-$t.out" -w '%{http_code}' -H "Authorization: Bearer $VKEY" \
            -H 'Content-Type: application/json' --data-binary "@$BODY_CHAT" "${URL[$t]}")" || true
        if [[ "$code" == 200 ]]; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [[ -n "$ok" ]] || die "$t answered $code: $(head -c 500 "$TMP/check-$t.out")"
done
sleep 1
for t in "${ACTIVE[@]}"; do
    IDLE_RSS[$t]="$(mem_kb "${PID[$t]}" VmRSS)"
done
NGINX_AUTO_WORKERS=""
if [[ -n "${PID[nginx-auto]:-}" ]]; then
    NGINX_AUTO_WORKERS=$(($(pid_family "${PID[nginx-auto]}" | wc -l) - 1))
fi

# ---------------------------------------------------------------------------------------------
# Load runs.
# ---------------------------------------------------------------------------------------------
# Columns: 1 target 2 scenario 3 mode 4 rep 5 rps 6 p50 7 p99 8 p999 9 ttfb50 10 ttfb99
# 11 errors 12 server-cpu-us/req 13 server-cpu% 14 rss-kb 15-19 overhead p50 p90 p99 p999 max
# 20 send-lag-p99 21 sent 22 other-cpu%
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

run_load() { # TARGET SCENARIO MODE REP BODY [loadgen args...]
    local target="$1" scenario="$2" mode="$3" rep="$4" body="$5"
    shift 5
    local label="$target-$scenario-$mode-$rep" out t0 t1 w0 w1 cmd
    out="$RUN_DIR/$label.json"
    cmd=("${CLIENT_PIN[@]}" "$LOADGEN_BIN" --url "${URL[$target]}" --method POST
        --body-file "$body" --header "Authorization: Bearer $VKEY"
        --duration "$DURATION" --warmup "$WARMUP" "$@")
    if [[ "$target" == conduit ]]; then
        cmd+=(--record-header "$OVERHEAD_HEADER")
    fi
    if [[ "$rep" == 1 ]]; then
        note_cmd "$(quote_cmd "${cmd[@]}")"
    fi
    local m0 m1 b0 b1 mock_ticks=0
    t0="$(cpu_ticks "${PID[$target]}")"
    m0="$(cpu_ticks "$MOCK_PID")"
    b0="$(machine_busy_ticks)"
    w0="$(date +%s.%N)"
    "${cmd[@]}" >"$out" 2>"$RUN_DIR/$label.err" ||
        die "loadgen failed: $(cat "$RUN_DIR/$label.err")"
    w1="$(date +%s.%N)"
    b1="$(machine_busy_ticks)"
    m1="$(cpu_ticks "$MOCK_PID")"
    t1="$(cpu_ticks "${PID[$target]}")"
    if [[ "$target" != mock ]]; then
        mock_ticks=$((m1 - m0))
    fi
    local rss
    rss="$(mem_kb "${PID[$target]}" VmRSS)"
    jq -r --arg t "$target" --arg s "$scenario" --arg m "$mode" --arg r "$rep" \
        --argjson ticks "$((t1 - t0))" --argjson hz "$CLK_TCK" --argjson rss "$rss" \
        --argjson wall "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" \
        --argjson busy "$((b1 - b0))" --argjson mock "$mock_ticks" '
        def h(x): if . == null then "nan" else x end;
        ($ticks / $hz) as $cpu_s |
        [$t, $s, $m, $r, .rps, .latency_us.p50, .latency_us.p99, .latency_us.p999,
         .ttfb_us.p50, .ttfb_us.p99, .errors.total,
         (if .sent > 0 then $cpu_s * 1e6 / .sent else 0 end), (100 * $cpu_s / $wall), $rss,
         (.header_us | h(.p50)), (.header_us | h(.p90)), (.header_us | h(.p99)),
         (.header_us | h(.p999)), (.header_us | h(.max)), (.send_lag_us | h(.p99)), .sent,
         # CPU used by anything but the server, the mock and the load generator (% of one core)
         ([0, 100 * (($busy - $ticks - $mock) / $hz - (.client_cpu_s // 0)) / $wall] | max)]
        | @tsv' "$out" >>"$RESULTS"
    log "$(printf '%-10s %-9s %-6s rep %s: %s req/s, p50 %s us, p99 %s us, errors %s' \
        "$target" "$scenario" "$mode" "$rep" "$(jq -r .rps "$out")" \
        "$(jq -r .latency_us.p50 "$out")" "$(jq -r .latency_us.p99 "$out")" \
        "$(jq -r .errors.total "$out")")"
}

declare -A RESP_BYTES
scenario_setup() { # SCENARIO → BODY
    case "$1" in
        chat-1k)
            mock_config '{"response_bytes":1024,"latency_ms":0,"tokens_per_second":0}'
            BODY="$BODY_CHAT"
            ;;
        chat-10k)
            mock_config '{"response_bytes":10240,"latency_ms":0,"tokens_per_second":0}'
            BODY="$BODY_CHAT"
            ;;
        stream)
            mock_config "{\"response_bytes\":1024,\"latency_ms\":0,\"tokens_per_second\":0,
                \"stream_chunks\":$STREAM_CHUNKS}"
            BODY="$BODY_STREAM"
            ;;
        *) die "unknown scenario $1" ;;
    esac
    local t
    for t in "${ACTIVE[@]}"; do
        RESP_BYTES[$t:$1]="$(curl -s -o /dev/null -w '%{size_download}' \
            -H "Authorization: Bearer $VKEY" -H 'Content-Type: application/json' \
            --data-binary "@$BODY" "${URL[$t]}")"
    done
}

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$SECONDS
for scenario in $SCENARIOS; do
    scenario_setup "$scenario"
    for rep in $(seq 1 "$REPS"); do
        # Targets interleaved within a repetition, so slow drift hits all of them alike.
        for t in "${ACTIVE[@]}"; do
            if [[ "$t" == nginx-auto && "$scenario" != chat-1k ]]; then
                continue
            fi
            run_load "$t" "$scenario" closed "$rep" "$BODY" --connections "$CONNECTIONS"
        done
    done
done

if [[ "$RUN_OPEN" == 1 ]]; then
    scenario_setup chat-1k
    for rep in $(seq 1 "$REPS"); do
        for t in "${ACTIVE[@]}"; do
            [[ "$t" == nginx-auto ]] && continue
            run_load "$t" chat-1k open "$rep" "$BODY_CHAT" --connections "$CONNECTIONS" \
                --rate "$RATE"
        done
    done
fi

WRK_OUT="$TMP/wrk.txt"
: >"$WRK_OUT"
if [[ "$RUN_WRK" == 1 ]]; then
    scenario_setup chat-1k
    cat >"$TMP/wrk.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $VKEY"
wrk.body = [[$(cat "$BODY_CHAT")]]
EOF
    for t in "${ACTIVE[@]}"; do
        [[ "$t" == nginx-auto ]] && continue
        cmd=("${CLIENT_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency
            -s "$TMP/wrk.lua" "${URL[$t]}")
        note_cmd "$(quote_cmd "${cmd[@]}")"
        "${cmd[@]}" >"$TMP/wrk-$t.txt" 2>&1 || true
        rps="$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk-$t.txt")"
        p50="$(awk '$1 == "50%" {print $2}' "$TMP/wrk-$t.txt")"
        p99="$(awk '$1 == "99%" {print $2}' "$TMP/wrk-$t.txt")"
        printf '%s\t%s\t%s\t%s\n' "$t" "${rps:-?}" "${p50:-?}" "${p99:-?}" >>"$WRK_OUT"
        log "wrk $t: ${rps:-?} req/s, p50 ${p50:-?}, p99 ${p99:-?}"
    done
fi
T_LOAD=$((SECONDS - T_START))

PROM_OUT="$TMP/prometheus-overhead.txt"
: >"$PROM_OUT"
if [[ -n "${URL[conduit]:-}" ]]; then
    curl -s -m 5 "$CONDUIT_URL/metrics" | grep '^conduit_gateway_overhead_seconds' \
        >"$PROM_OUT" || true
fi

declare -A PEAK
for t in "${ACTIVE[@]}"; do
    PEAK[$t]="$(mem_kb "${PID[$t]}" VmHWM)"
done

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
# med TARGET SCENARIO MODE COLUMN: median over repetitions of a results.tsv column.
med() {
    awk -F'\t' -v t="$1" -v s="$2" -v m="$3" -v c="$4" \
        '$1 == t && $2 == s && $3 == m && $c != "nan" {print $c}' "$RESULTS" | median
}
# total / worst TARGET SCENARIO MODE COLUMN: sum / maximum over repetitions.
total() {
    awk -F'\t' -v t="$1" -v s="$2" -v m="$3" -v c="$4" \
        '$1 == t && $2 == s && $3 == m {n += $c} END {print n + 0}' "$RESULTS"
}
worst() {
    awk -F'\t' -v t="$1" -v s="$2" -v m="$3" -v c="$4" \
        '$1 == t && $2 == s && $3 == m && $c != "nan" && $c + 0 > x {x = $c + 0}
         END {print x + 0}' "$RESULTS"
}
fmt0() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f", v }'; }
mb() { awk -v v="$1" 'BEGIN { if (v == "" || v == 0) print "–"; else printf "%.1f", v / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v lim="$2" -v dir="$3" 'BEGIN {
    if (v == "nan" || v == "") { print "not measured"; exit }
    ok = (dir == "ge") ? (v + 0 >= lim + 0) : (v + 0 <= lim + 0)
    print ok ? "**PASS**" : "**FAIL**" }'; }
# A markdown table row from its cells.
row() {
    local out="|" c
    for c in "$@"; do
        out+=" $c |"
    done
    echo "$out"
}

DATE_UTC="$(date -u +%Y-%m-%d)"
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$DATE_UTC-gateway.md"
CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
MEM_TOTAL="$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]]; then
    GIT_REV+=" (work tree has uncommitted changes)"
fi
if [[ "$PIN" == 1 ]]; then
    PIN_TEXT="pinned: the server under test (nginx or Conduit) alone on CPU $SERVER_CPU; the mock
  provider and the load generator share CPU $CLIENT_CPU (\`taskset -c\`). The \`mock\` rows
  therefore measure the client core's ceiling (mock + load generator on one core, CPU $SERVER_CPU
  idle); a proxy row close to it is limited by the client side, not by the proxy."
else
    PIN_TEXT="unpinned: all processes float over all $NCPU CPUs (the whole-box shape of GoModel's
  benchmark)."
fi
NGINX_AUTO_TEXT=""
if [[ -n "$NGINX_AUTO_WORKERS" ]]; then
    NGINX_AUTO_TEXT="\`worker_processes auto\` (here $NGINX_AUTO_WORKERS workers, on the same CPU
  set) is shown for chat-1k only."
fi
HAS_CONDUIT=""
if [[ -n "${URL[conduit]:-}" ]]; then
    HAS_CONDUIT=1
fi

{
    cat <<EOF
# Gateway benchmark, $DATE_UTC

Generated by \`bench/run.sh\` at $(date -u +'%Y-%m-%d %H:%M:%S') UTC (load phase ${T_LOAD} s).

## Machine and set-up

- CPUs: $NCPU × $CPU_MODEL; memory $MEM_TOTAL; kernel $(uname -sr)
- Commit: $GIT_REV; binaries from \`${BUILD#"$ROOT"/}\`
- $("$NGINX_BIN" -v 2>&1 | head -1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)
- Pinning: $PIN_TEXT
- Conduit: \`--threads $THREADS\`, embedded SQLite store in a temp dir, \`--log-level warn\`,
  governance path on (virtual-key auth, group balance, costs, spend accounting, request log).
- nginx: \`worker_processes $THREADS\` is the reference for the ratios (Conduit's thread count,
  same core); upstream keep-alive 128, \`proxy_buffering off\` (streams pass through as they
  arrive), access log off. $NGINX_AUTO_TEXT
- Mock: \`--threads $MOCK_THREADS\`, 0 ms latency, unpaced streams of $STREAM_CHUNKS content chunks.
- Load: \`conduit-loadgen\`, 1 thread, $CONNECTIONS keep-alive connections, ${WARMUP} s warm-up +
  ${DURATION} s measured per run, $REPS repetitions with the targets interleaved; **medians** shown.
  Latency is client-observed, send → last byte; TTFB is send → first body byte (for SSE, the
  first chunk's data).
- Load average at start: $LOADAVG_START
EOF
    if [[ -n "$SKIPPED_NOTE" ]]; then
        echo "- $SKIPPED_NOTE"
    fi
    echo
    echo "## Closed loop, c=$CONNECTIONS (medians of $REPS)"
    echo
    row target scenario "resp. bytes" req/s "p50 µs" "p99 µs" "TTFB p50 µs" "× nginx" \
        "server CPU µs/req" "server CPU %" "RSS MB" errors "other CPU %"
    row --- --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
    for scenario in $SCENARIOS; do
        ref="$(med nginx "$scenario" closed 5)"
        for t in "${ACTIVE[@]}"; do
            rps="$(med "$t" "$scenario" closed 5)"
            if [[ "$rps" == nan ]]; then
                continue
            fi
            ttfb="–"
            if [[ "$scenario" == stream ]]; then
                ttfb="$(fmt0 "$(med "$t" "$scenario" closed 9)")"
            fi
            row "$t" "$scenario" "${RESP_BYTES[$t:$scenario]:-?}" "$(fmt0 "$rps")" \
                "$(fmt0 "$(med "$t" "$scenario" closed 6)")" \
                "$(fmt0 "$(med "$t" "$scenario" closed 7)")" "$ttfb" \
                "$(ratio "$rps" "$ref" | sed 's/^nan$/–/')" \
                "$(fmt1 "$(med "$t" "$scenario" closed 12)")" \
                "$(fmt0 "$(med "$t" "$scenario" closed 13)")" \
                "$(mb "$(med "$t" "$scenario" closed 14)")" \
                "$(total "$t" "$scenario" closed 11)" \
                "$(fmt0 "$(worst "$t" "$scenario" closed 22)")"
        done
    done
    cat <<EOF

"server CPU µs/req" is utime+stime of the server process (nginx: master + workers) over the whole
load run ÷ requests sent (warm-up included); "server CPU %" is that CPU time ÷ wall time (100 % =
one core). RSS is VmRSS after the scenario. For \`mock\` rows the server is the mock itself.
"× nginx" = req/s ÷ nginx (worker_processes $THREADS) req/s in the same scenario. "other CPU %" is
the worst repetition's CPU use by processes other than the server, the mock and the load
generator (/proc/stat, % of one core): more than a few % means the machine was not quiet and the
row is suspect. Errors are summed over the repetitions.

EOF
    if [[ -n "$HAS_CONDUIT" ]]; then
        echo "### Conduit server-side overhead under closed-loop load (\`$OVERHEAD_HEADER\`)"
        echo
        row scenario "p50 µs" "p90 µs" "p99 µs" "p99.9 µs" "max µs"
        row --- ---: ---: ---: ---: ---:
        for scenario in $SCENARIOS; do
            row "$scenario" "$(fmt0 "$(med conduit "$scenario" closed 15)")" \
                "$(fmt0 "$(med conduit "$scenario" closed 16)")" \
                "$(fmt0 "$(med conduit "$scenario" closed 17)")" \
                "$(fmt0 "$(med conduit "$scenario" closed 18)")" \
                "$(fmt0 "$(worst conduit "$scenario" closed 19)")"
        done
        cat <<EOF

Medians of $REPS runs (max: worst run). Overhead = the gateway's own time per request (handler
time minus the wait for the upstream) as Conduit reports it in the response header; compare it
with "server CPU µs/req" above, which counts everything the process spends per request.

EOF
    fi
    if [[ "$RUN_OPEN" == 1 ]]; then
        cat <<EOF
## Open loop at $RATE req/s (chat-1k, ${WARMUP} s warm-up + ${DURATION} s, medians of $REPS runs)

Requests go out at fixed intended send times; latency counts from the intended time (no
coordinated omission). "send lag" is intended → actual send inside the load generator.

EOF
        row target "achieved req/s" "p50 µs" "p99 µs" "p99.9 µs" \
            "client overhead p50 / p99 µs" "send lag p99 µs" "server CPU µs/req" "server CPU %" \
            errors "other CPU %"
        row --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
        base50="$(med mock chat-1k open 6)"
        base99="$(med mock chat-1k open 7)"
        for t in "${ACTIVE[@]}"; do
            rps="$(med "$t" chat-1k open 5)"
            if [[ "$rps" == nan ]]; then
                continue
            fi
            p50="$(med "$t" chat-1k open 6)"
            p99="$(med "$t" chat-1k open 7)"
            co="–"
            if [[ "$t" != mock && "$base50" != nan ]]; then
                co="$(awk -v a="$p50" -v b="$base50" -v c="$p99" -v d="$base99" \
                    'BEGIN {printf "%.0f / %.0f", a - b, c - d}')"
            fi
            row "$t" "$(fmt0 "$rps")" "$(fmt0 "$p50")" "$(fmt0 "$p99")" \
                "$(fmt0 "$(med "$t" chat-1k open 8)")" "$co" \
                "$(fmt0 "$(med "$t" chat-1k open 20)")" "$(fmt1 "$(med "$t" chat-1k open 12)")" \
                "$(fmt0 "$(med "$t" chat-1k open 13)")" "$(total "$t" chat-1k open 11)" \
                "$(fmt0 "$(worst "$t" chat-1k open 22)")"
        done
        cat <<EOF

Client overhead = target latency − mock-direct latency at the same rate (§2b, method 3). The load
generator and the mock share one core, and on a VM two processes sharing a core see wake-up
delays of milliseconds about 1 % of the time, so the client-side p99 at this rate mostly measures
the client core (see "send lag"; a negative p99 difference is that noise). The server-side header
below does not include it.

EOF
        if [[ -n "$HAS_CONDUIT" ]]; then
            echo "### Conduit server-side overhead at $RATE req/s (\`$OVERHEAD_HEADER\`)"
            echo
            row run samples "p50 µs" "p90 µs" "p99 µs" "p99.9 µs" "max µs" "mean µs"
            row --- ---: ---: ---: ---: ---: ---: ---:
            for f in "$RUN_DIR"/conduit-chat-1k-open-*.json; do
                r="${f##*-open-}"
                row "rep ${r%.json}" "$(jq -r '[.header_us | .count, .p50, .p90, .p99, .p999,
                    .max, .mean] | map(tostring) | join(" | ")' "$f")"
            done
            row "**median**" "" "**$(fmt0 "$(med conduit chat-1k open 15)")**" \
                "$(fmt0 "$(med conduit chat-1k open 16)")" \
                "**$(fmt0 "$(med conduit chat-1k open 17)")**" \
                "**$(fmt0 "$(med conduit chat-1k open 18)")**" \
                "$(fmt0 "$(med conduit chat-1k open 19)")" ""
            echo
        fi
    fi
    if [[ -s "$PROM_OUT" ]]; then
        echo "### Conduit's overhead histogram (\`/metrics\`, cumulative over the whole benchmark)"
        echo
        echo '```'
        cat "$PROM_OUT"
        echo '```'
        echo
    fi
    echo "## Memory"
    echo
    row target "RSS idle MB (after start-up and seeding)" "peak RSS MB (VmHWM at the end)"
    row --- ---: ---:
    for t in "${ACTIVE[@]}"; do
        row "$t" "$(mb "${IDLE_RSS[$t]}")" "$(mb "${PEAK[$t]}")"
    done
    echo
    echo "nginx figures are summed over master + workers."
    echo
    if [[ -n "$HAS_CONDUIT" ]]; then
        r1="$(ratio "$(med conduit chat-1k closed 5)" "$(med nginx chat-1k closed 5)")"
        ov99="nan"
        if [[ "$RUN_OPEN" == 1 ]]; then
            ov99="$(med conduit chat-1k open 17)"
        fi
        idle_mb="$(awk -v v="${IDLE_RSS[conduit]}" 'BEGIN {printf "%.1f", v / 1024}')"
        echo "## Targets (from the issue)"
        echo
        row target measured verdict
        row --- ---: ---
        row "throughput ≥ 0.8× nginx (chat-1k, closed loop)" "${r1}×" "$(verdict "$r1" 0.8 ge)"
        row "p99 server-side overhead ≤ 150 µs at $RATE req/s (median of $REPS runs)" \
            "$(fmt0 "$ov99") µs" "$(verdict "$ov99" 150 le)"
        row "idle RSS ≤ 20 MB" "${idle_mb} MB" "$(verdict "$idle_mb" 20 le)"
        echo
    fi
    if [[ -s "$WRK_OUT" ]]; then
        echo "## Cross-check with wrk (chat-1k, closed loop, c=$CONNECTIONS, ${DURATION} s, 1 run)"
        echo
        row target "wrk req/s" "wrk p50" "wrk p99" "conduit-loadgen req/s (median)"
        row --- ---: ---: ---: ---:
        while IFS=$'\t' read -r t rps p50 p99; do
            row "$t" "$rps" "$p50" "$p99" "$(fmt0 "$(med "$t" chat-1k closed 5)")"
        done <"$WRK_OUT"
        echo
    fi
    echo "## Commands"
    echo
    echo '```'
    echo "BENCH_PIN=$PIN BENCH_CONNECTIONS=$CONNECTIONS BENCH_DURATION=$DURATION \\"
    echo "  BENCH_WARMUP=$WARMUP BENCH_REPS=$REPS BENCH_RATE=$RATE BENCH_THREADS=$THREADS \\"
    echo "  bench/run.sh ${1:-build/release}"
    sed -e "s#$TMP#\$TMP#g" -e "s#$ROOT/##g" -e "s#$VKEY#\$VIRTUAL_KEY#g" "$COMMANDS"
    echo '```'
    echo
    echo "Bodies (\$TMP/body-chat.json; the stream body adds \`\"stream\":true\`):"
    echo
    echo '```json'
    cat "$BODY_CHAT"
    echo
    echo '```'
    if [[ -f "$TMP/nginx.conf" ]]; then
        echo
        echo "nginx configuration:"
        echo
        echo '```nginx'
        sed -e "s#$TMP#\$TMP#g" "$TMP/nginx.conf"
        echo '```'
    fi
} >"$REPORT"

cat "$REPORT"
log "report written to $REPORT"
