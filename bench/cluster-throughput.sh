#!/usr/bin/env bash
# Cluster chat throughput (issue 6): POST /v1/chat/completions through nginx → 3 Conduit
# instances against nginx → 1 instance, in the same run, with 1 instance direct (no nginx) as the
# reference that shows nginx's cost, and nginx → the mock provider directly (nginx's own ceiling
# on this box). All instances share one private Redis (counters, backplane) and run on copies
# of one seeded store; the upstream is conduit-mock-provider (instant answers). Besides req/s and
# latency, it reports where the CPU goes: CPU µs per request of every component (Conduit
# instances, nginx, mock, Redis, load generator) and of the rest of the machine.
# Writes bench/results/<UTC date>-cluster-throughput.md (CT_OUT_NAME) and prints it.
#
#   bench/cluster-throughput.sh [BIN_DIR]   (default build/snap: conduit, conduit-loadgen,
#                                            conduit-mock-provider)
#
# Targets: direct1, nginx1, nginx3 (a generated minimal nginx config: round robin, upstream
# keep-alive), nginx3d (the deployment template deploy/nginx/conduit.conf rendered by its
# render.sh, access log off), nginxmock.
# Knobs (environment): CT_TARGETS="direct1 nginx1 nginx3 nginx3d nginxmock" CT_REPS=3 CT_DURATION=10
# CT_WARMUP=2 CT_CONNECTIONS=64 CT_LG_THREADS=1 CT_THREADS=1 (conduit --threads per instance)
# CT_NGINX_WORKERS=auto CT_MOCK_THREADS=1 CT_QUIET_WAIT=60 CT_QUIET_PCT=25 CT_OUT_DIR CT_OUT_NAME
# CT_KEEP=0 CT_NGINX_CONF=<template> (use this nginx config instead of the generated one; see
# render_nginx) CT_QUICK=1 (smoke run: 1 rep, 2 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_ARG="${1:-build/snap}"
BIN="$BIN_ARG"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"

if [[ "${CT_QUICK:-0}" == 1 ]]; then
    D_REPS=1 D_DURATION=2 D_WARMUP=1
else
    D_REPS=3 D_DURATION=10 D_WARMUP=2
fi
TARGETS="${CT_TARGETS:-direct1 nginx1 nginx3 nginx3d nginxmock}"
REPS="${CT_REPS:-$D_REPS}"
DURATION="${CT_DURATION:-$D_DURATION}"
WARMUP="${CT_WARMUP:-$D_WARMUP}"
CONNECTIONS="${CT_CONNECTIONS:-64}"
LG_THREADS="${CT_LG_THREADS:-1}"
THREADS="${CT_THREADS:-1}"
NGINX_WORKERS="${CT_NGINX_WORKERS:-auto}"
MOCK_THREADS="${CT_MOCK_THREADS:-1}"
QUIET_WAIT="${CT_QUIET_WAIT:-60}"
QUIET_PCT="${CT_QUIET_PCT:-25}"
QUIET_DISK_PCT="${CT_QUIET_DISK_PCT:-10}"
OUT_DIR="${CT_OUT_DIR:-$ROOT/bench/results}"
OUT_NAME="${CT_OUT_NAME:-$(date -u +%Y-%m-%d)-cluster-throughput.md}"
KEEP="${CT_KEEP:-0}"
MASTER_KEY="bench-master-key-0123456789abcdef"
UPSTREAM_KEY="bench-upstream-key"
BODY='{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"Say something about clusters."}]}'
NINST=3

log() { printf '[cluster-throughput %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in jq curl sqlite3 redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install jq curl sqlite3 redis-server nginx)"
done
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX_BIN" ]] || die "nginx is required (apt-get install nginx)"
for b in conduit conduit-loadgen conduit-mock-provider; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b not found"
done
"$BIN/conduit-loadgen" --self-test 2>/dev/null || die "conduit-loadgen --self-test failed"

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
CLK_TCK="$(getconf CLK_TCK)"
DISK="$(df --output=source "${TMPDIR:-/tmp}" 2>/dev/null | tail -1)"
DISK="${DISK##*/}"
QUIET_WAITED=0
BUSY_RUNS=0
LAST_QUIET_PCT=0

TMP="$(mktemp -d /tmp/conduit-cluster-throughput.XXXXXX)"
chmod 755 "$TMP"
PIDS=()
COMMANDS="$TMP/commands.txt"
: >"$COMMANDS"
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

cleanup() {
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

note_cmd() { printf '# %s\n%s\n' "$1" "$(shift; quote_cmd "$@")" >>"$COMMANDS"; }

cpu_ns() { # PID → CPU ns, all threads
    local t s=0 v
    for t in /proc/"$1"/task/*/schedstat; do
        read -r v _ <"$t" 2>/dev/null || continue
        s=$((s + v))
    done
    echo "$s"
}
sum_cpu_ns() {
    local p s=0
    for p in "$@"; do s=$((s + $(cpu_ns "$p"))); done
    echo "$s"
}
machine_busy_ns() { awk -v hz="$CLK_TCK" '$1 == "cpu" {printf "%.0f", ($2 + $3 + $4 + $7 + $8 + $9) * 1e9 / hz; exit}' /proc/stat; }
rss_kb() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# Processes: mock, Redis, 3 Conduit instances, three nginx instances.
# ---------------------------------------------------------------------------------------------
run_all() {
MOCK_PORT="$(free_port)"
cmd=("$BIN/conduit-mock-provider" --listen "127.0.0.1:$MOCK_PORT" --threads "$MOCK_THREADS"
    --require-key "$UPSTREAM_KEY" --log-level warn)
note_cmd mock "${cmd[@]}"
start_bg mock "${cmd[@]}"
MOCK_PID=$LAST_PID
wait_http "http://127.0.0.1:$MOCK_PORT/mock/stats" 10 || die "mock did not start"

REDIS_PORT="$(free_port)"
cmd=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP")
note_cmd redis "${cmd[@]}"
start_bg redis "${cmd[@]}"
REDIS_PID=$LAST_PID
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis-server did not start"

CONDUIT_PIDS=()
CONDUIT_PORTS=()
start_conduit() { # INDEX
    local i="$1" port attempt
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        cmd=(env CONDUIT_MASTER_KEY="$MASTER_KEY" "$BIN/conduit" serve --listen "127.0.0.1:$port"
            --threads "$THREADS" --data-dir "$TMP/data-$i" --log-level warn
            --redis-url "redis://127.0.0.1:$REDIS_PORT/0")
        start_bg "conduit-$i" "${cmd[@]}"
        wait_http "http://127.0.0.1:$port/health/live" 30 && break
        stop_pid "$LAST_PID"
        forget_pid "$LAST_PID"
        grep -q 'Address already in use' "$TMP/conduit-$i.err" && ((attempt < 5)) && continue
        die "conduit $i did not start: $(tail -20 "$TMP/conduit-$i.err")"
    done
    note_cmd "conduit $i" "${cmd[@]}"
    CONDUIT_PIDS+=("$LAST_PID")
    CONDUIT_PORTS+=("$port")
}
admin() { # PATH JSON
    curl -fsS -X POST "http://127.0.0.1:${CONDUIT_PORTS[0]}$1" -H "X-API-Key: $MASTER_KEY" \
        -H 'Content-Type: application/json' -d "$2" || die "admin POST $1 failed"
}
start_conduit 1
provider="$(admin /api/ProviderCredentials "$(jq -nc --arg url "http://127.0.0.1:$MOCK_PORT/v1" \
    --arg key "$UPSTREAM_KEY" '{providerType: "openai-compatible", providerName: "mock", baseUrl: $url, apiKey: $key}')" | jq -r .id)"
mapping="$(admin /api/ModelProviderMapping "$(jq -nc --argjson p "$provider" \
    '{modelAlias: "bench-model", providerModelId: "mock-bench", providerId: $p}')" | jq -r .id)"
admin /api/ModelCosts "$(jq -nc --argjson m "$mapping" '{costName: "bench",
    modelProviderMappingIds: [$m], inputCostPerMillionTokens: 1, outputCostPerMillionTokens: 2}')" >/dev/null
group="$(admin /api/VirtualKeyGroups '{"groupName":"bench","initialBalance":1000000}' | jq -r .id)"
KEY="$(admin /api/VirtualKeys "$(jq -nc --argjson g "$group" '{keyName: "bench", virtualKeyGroupId: $g}')" | jq -r .virtualKey)"
[[ "$KEY" == condt_* ]] || die "no virtual key created"
# The other instances run on copies of the seeded store (the embedded queue locks a data dir).
for i in $(seq 2 "$NINST"); do
    mkdir -p "$TMP/data-$i"
    sqlite3 "$TMP/data-1/conduit.db" ".backup '$TMP/data-$i/conduit.db'" || die "store copy failed"
    # The key that encrypts the stored provider credentials (generated in the first data dir).
    cp -p "$TMP/data-1/encryption.key" "$TMP/data-$i/encryption.key"
    start_conduit "$i"
done
chat_ok() { # URL KEY
    local code=""
    for _ in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" \
            -H 'Content-Type: application/json' -d "$BODY" "$1")" || true
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    die "chat through $1 answered $code"
}

# nginx: the generated minimal reverse-proxy config (round robin over the upstreams, upstream
# keep-alive, no buffering, access log off), or CT_NGINX_CONF with @UPSTREAMS@ / @LISTEN@ /
# @DIR@ replaced.
declare -gA NGINX_PID NGINX_PORT
render_nginx() { # DIR PORT SERVER-LINES [deploy ADDRESSES...]
    local dir="$1" port="$2" servers="$3"
    if [[ "${4:-}" == deploy ]]; then
        # The deployment template (deploy/nginx/conduit.conf, rendered by its render.sh for the
        # http {} context) inside a minimal main config. render.sh --access-log off writes
        # `access_log off conduit;`, which nginx refuses: the sed drops the format name.
        shift 4
        cat <<EOF
worker_processes $NGINX_WORKERS;
$([[ "$(id -u)" == 0 ]] && echo "user root;")
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 8192;
}
http {
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$("$ROOT/deploy/nginx/render.sh" --listen "127.0.0.1:$port" --access-log off "$@" |
    sed 's/access_log off conduit;/access_log off;/')
}
EOF
        return
    fi
    if [[ -n "${CT_NGINX_CONF:-}" ]]; then
        sed -e "s#@UPSTREAMS@#$servers#" -e "s#@LISTEN@#127.0.0.1:$port#" -e "s#@DIR@#$dir#g" \
            "$CT_NGINX_CONF"
        return
    fi
    cat <<EOF
worker_processes $NGINX_WORKERS;
$([[ "$(id -u)" == 0 ]] && echo "user root;")
daemon off;
master_process on;
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
    upstream backend {
$servers
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        client_max_body_size 32m;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }
    }
}
EOF
}
start_nginx() { # NAME [--deploy] PORTS...
    local name="$1" dir="$TMP/$1" port servers="" p deploy=()
    shift
    if [[ "$1" == --deploy ]]; then
        shift
        deploy=(deploy)
        for p in "$@"; do deploy+=("127.0.0.1:$p"); done
    fi
    for p in "$@"; do servers+="        server 127.0.0.1:$p;"$'\n'; done
    port="$(free_port)"
    mkdir -p "$dir"
    render_nginx "$dir" "$port" "$servers" "${deploy[@]}" >"$dir/nginx.conf" || die "nginx config for $name failed"
    start_bg "$name" "$NGINX_BIN" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
    NGINX_PID[$name]=$LAST_PID
    NGINX_PORT[$name]=$port
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    note_cmd "nginx ($name)" "$NGINX_BIN" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
}
nginx_pids() { # NAME → master + workers
    echo "${NGINX_PID[$1]}"
    pgrep -P "${NGINX_PID[$1]}" || true
}

declare -gA URL
for t in $TARGETS; do
    case "$t" in
        direct1) URL[$t]="http://127.0.0.1:${CONDUIT_PORTS[0]}/v1/chat/completions" ;;
        nginx1)
            start_nginx nginx1 "${CONDUIT_PORTS[0]}"
            URL[$t]="http://127.0.0.1:${NGINX_PORT[nginx1]}/v1/chat/completions"
            ;;
        nginx3)
            start_nginx nginx3 "${CONDUIT_PORTS[@]}"
            URL[$t]="http://127.0.0.1:${NGINX_PORT[nginx3]}/v1/chat/completions"
            ;;
        nginx3d)
            [[ -x "$ROOT/deploy/nginx/render.sh" ]] || die "deploy/nginx/render.sh not found (target nginx3d)"
            start_nginx nginx3d --deploy "${CONDUIT_PORTS[@]}"
            URL[$t]="http://127.0.0.1:${NGINX_PORT[nginx3d]}/v1/chat/completions"
            ;;
        nginxmock)
            start_nginx nginxmock "$MOCK_PORT"
            URL[$t]="http://127.0.0.1:${NGINX_PORT[nginxmock]}/v1/chat/completions"
            ;;
        *) die "unknown target $t" ;;
    esac
    if [[ "$t" == nginxmock ]]; then chat_ok "${URL[$t]}" "$UPSTREAM_KEY"; else chat_ok "${URL[$t]}" "$KEY"; fi
done
# nginx → 3 instances: every instance answers (round robin), so each must have the config.
for p in "${CONDUIT_PORTS[@]}"; do
    chat_ok "http://127.0.0.1:$p/v1/chat/completions" "$KEY"
done
NGINX_WORKER_COUNT=0
for n in "${!NGINX_PID[@]}"; do
    NGINX_WORKER_COUNT=$(($(nginx_pids "$n" | wc -l) - 1))
    break
done

# ---------------------------------------------------------------------------------------------
# One measurement: warm-up run (unmeasured), then the measured closed-loop run with the CPU of
# every component read before and after it.
# ---------------------------------------------------------------------------------------------
measure() { # TARGET REP
    local t="$1" rep="$2" out="$TMP/lg-$1-$2.json" nginx=() inst=() lg
    local key_hdr=("-H" "Authorization: Bearer $KEY")
    [[ "$t" == nginxmock ]] && key_hdr=("-H" "Authorization: Bearer $UPSTREAM_KEY")
    case "$t" in
        direct1 | nginx1) inst=("${CONDUIT_PIDS[0]}") ;;
        nginx3 | nginx3d) inst=("${CONDUIT_PIDS[@]}") ;;
    esac
    [[ "$t" == nginx* ]] && mapfile -t nginx < <(nginx_pids "$t")
    lg=("$BIN/conduit-loadgen" --url "${URL[$t]}" --body "$BODY" "${key_hdr[@]}"
        --connections "$CONNECTIONS" --threads "$LG_THREADS")
    wait_quiet
    local quiet=$LAST_QUIET_PCT
    "${lg[@]}" --duration "$WARMUP" >/dev/null 2>&1 || die "$t: warm-up failed"
    local c_i0 c_n0 c_m0 c_r0 c_all0 c_i1 c_n1 c_m1 c_r1 c_all1
    c_i0="$(sum_cpu_ns "${inst[@]}")"
    c_n0="$(sum_cpu_ns "${nginx[@]}")"
    c_m0="$(cpu_ns "$MOCK_PID")"
    c_r0="$(cpu_ns "$REDIS_PID")"
    c_all0="$(machine_busy_ns)"
    "${lg[@]}" --duration "$DURATION" >"$out" 2>"$out.err" || die "$t: load generator failed: $(cat "$out.err")"
    c_i1="$(sum_cpu_ns "${inst[@]}")"
    c_n1="$(sum_cpu_ns "${nginx[@]}")"
    c_m1="$(cpu_ns "$MOCK_PID")"
    c_r1="$(cpu_ns "$REDIS_PID")"
    c_all1="$(machine_busy_ns)"
    ((rep == 1)) && note_cmd "load generator ($t; once with --duration $WARMUP first, unmeasured)" \
        "${lg[@]//$KEY/\$KEY}" --duration "$DURATION"
    jq -c --arg t "$t" --argjson rep "$rep" --argjson quiet "$quiet" --arg load1 "$(cut -d' ' -f1 /proc/loadavg)" \
        --argjson inst "$((c_i1 - c_i0))" --argjson ngx "$((c_n1 - c_n0))" --argjson mock "$((c_m1 - c_m0))" \
        --argjson redis "$((c_r1 - c_r0))" --argjson all "$((c_all1 - c_all0))" --argjson dur "$DURATION" '
        (.requests) as $n | (.client_cpu_s * 1e9) as $lg
        | {target: $t, rep: $rep, requests: $n, rps: .rps, errors: .errors.total,
           p50_us: .latency_us.p50, p99_us: .latency_us.p99,
           cpu_us_per_req: {conduit: ($inst / 1000 / $n), nginx: ($ngx / 1000 / $n),
               mock: ($mock / 1000 / $n), redis: ($redis / 1000 / $n), loadgen: ($lg / 1000 / $n),
               other: (($all - $inst - $ngx - $mock - $redis - $lg) / 1000 / $n),
               machine: ($all / 1000 / $n)},
           cores_busy: {conduit: ($inst / 1e9 / $dur), nginx: ($ngx / 1e9 / $dur), mock: ($mock / 1e9 / $dur),
               redis: ($redis / 1e9 / $dur), loadgen: ($lg / 1e9 / $dur),
               other: (($all - $inst - $ngx - $mock - $redis - $lg) / 1e9 / $dur), machine: ($all / 1e9 / $dur)},
           quiet_pct: $quiet, load1: $load1}' "$out" >>"$RESULTS"
    log "$t rep $rep: $(tail -1 "$RESULTS" | jq -r '"\(.rps | floor) req/s, p50 \(.p50_us) us, p99 \(.p99_us) us, errors \(.errors); Conduit \(.cpu_us_per_req.conduit * 10 | round / 10) us/req, nginx \(.cpu_us_per_req.nginx * 10 | round / 10) us/req; machine \(.cores_busy.machine * 100 | round) % of a core"')"
}

STARTED="$(date -u '+%Y-%m-%d %H:%M:%S')"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T0=$SECONDS
log "targets: $TARGETS; $REPS repetition(s) of $DURATION s, $CONNECTIONS connections"
for rep in $(seq 1 "$REPS"); do
    for t in $TARGETS; do
        measure "$t" "$rep"
    done
done
T_LOAD=$((SECONDS - T0))
RUN_END="$(date -u '+%Y-%m-%d %H:%M:%S')"
RSS_TEXT="Conduit instances $(for p in "${CONDUIT_PIDS[@]}"; do printf '%s ' "$(($(rss_kb "$p") / 1024)) MB"; done)"
    declare -p T_LOAD RUN_END STARTED LOADAVG_START QUIET_WAITED BUSY_RUNS COMMIT RSS_TEXT NGINX_WORKER_COUNT >"$TMP/run-facts.sh"
}

if [[ -n "${CT_REPORT_ONLY:-}" ]]; then
    # Re-render the report from a kept run (CT_KEEP=1): CT_REPORT_ONLY=<its tmp dir>.
    cp "$CT_REPORT_ONLY/results.jsonl" "$RESULTS"
    cp "$CT_REPORT_ONLY/commands.txt" "$COMMANDS"
    declare -A NGINX_PID=()
    for n in nginx3 nginx3d; do
        [[ -f "$CT_REPORT_ONLY/$n/nginx.conf" ]] || continue
        mkdir -p "$TMP/$n"
        cp "$CT_REPORT_ONLY/$n/nginx.conf" "$TMP/$n/nginx.conf"
        NGINX_PID[$n]=0
    done
    # shellcheck disable=SC1091
    . "$CT_REPORT_ONLY/run-facts.sh"
else
    run_all
fi

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
med() { # TARGET JQ-PATH → median over reps
    jq -s -r --arg t "$1" "[.[] | select(.target == \$t) | $2] | sort |
        if length == 0 then \"nan\" elif length % 2 == 1 then .[(length - 1) / 2]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$RESULTS"
}
f0() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.0f", v }'; }
f1() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f", v }'; }
f2() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.2f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "–"; else printf "%.2f", a / b }'; }
name() {
    case "$1" in
        direct1) echo "1 instance, direct (no nginx)" ;;
        nginx1) echo "nginx → 1 instance" ;;
        nginx3) echo "nginx → 3 instances" ;;
        nginx3d) echo "nginx with deploy/nginx/conduit.conf → 3 instances" ;;
        nginxmock) echo "nginx → mock (no Conduit)" ;;
    esac
}
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$OUT_NAME"
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
{
    echo "# Chat throughput: nginx → 3 Conduit instances vs 1, $(date -u +%Y-%m-%d)"
    echo
    echo "Generated by \`bench/cluster-throughput.sh $BIN_ARG\` from $STARTED to $RUN_END UTC (load phase $T_LOAD s)$([[ "${CT_QUICK:-0}" == 1 ]] && echo "; **quick mode (smoke run)**")."
    echo
    echo "## Set-up"
    echo
    echo "- Machine: $(nproc) × $CPU_MODEL, $(uname -sr); shared with other helpers (load average at start $LOADAVG_START). Nothing pinned: every process below shares both cores."
    echo "- Binaries: \`$BIN_ARG\`; work tree at commit $COMMIT when the run started. nginx $("$NGINX_BIN" -v 2>&1 | sed 's#.*/##'), $([[ -n "${CT_NGINX_CONF:-}" ]] && echo "config from \`$CT_NGINX_CONF\`" || echo "**generated minimal config** (below; round robin, upstream keep-alive 128, \`proxy_buffering off\`, access log off)"), \`worker_processes $NGINX_WORKERS\` ($NGINX_WORKER_COUNT workers)."
    echo "- $NINST Conduit instances, each \`--threads $THREADS\`, \`--log-level warn\`, sharing one private \`redis-server\` (\`--redis-url\`: counters, backplane); instance 1 seeded through the admin API (provider → mock, mapping \`bench-model\` with a cost, a group with a balance, one virtual key: key auth, balance check, cost and spend accounting and the request log are on), instances 2–3 on \`sqlite3 .backup\` copies of its store (the embedded store/queue locks a data dir). All three run in every measurement; only the targeted ones get load."
    echo "- Upstream: \`conduit-mock-provider --threads $MOCK_THREADS\` (instant answers, ~1 KB body)."
    echo "- Load: \`conduit-loadgen\`, closed loop, $CONNECTIONS keep-alive connections, $LG_THREADS thread(s), \`POST /v1/chat/completions\` (\`max_tokens\` 64), $WARMUP s unmeasured warm-up then $DURATION s measured; $REPS repetitions, targets interleaved within each; **medians**. Before each measurement the script waited ≤ $QUIET_WAIT s for < $QUIET_PCT % of a core busy: $QUIET_WAITED s waited, $BUSY_RUNS measurement(s) started busy anyway."
    echo "- CPU: per process from \`/proc/PID/task/*/schedstat\` over the measured run (nginx: master + workers; Conduit: the instances getting load); load generator: its own \`getrusage\`; \"other\" = the machine's busy time (\`/proc/stat\`) minus all of these (other helpers' work, kernel threads, softirq not charged to a process)."
    echo
    echo "## Summary (medians of $REPS)"
    echo
    row target "req/s" "× 1 instance direct" "p50 ms" "p99 ms" "errors (all runs)" "cores busy: Conduit / nginx / mock / Redis / loadgen / other = machine" "stack CPU µs per request (all but other)" "req/s if the stack had the $(nproc) cores alone"
    row --- ---: ---: ---: ---: ---: ---: ---: ---:
    base="$(med direct1 .rps)"
    for t in $TARGETS; do
        row "$(name "$t")" "$(f0 "$(med "$t" .rps)")" "$(ratio "$(med "$t" .rps)" "$base")" \
            "$(f2 "$(awk -v v="$(med "$t" .p50_us)" 'BEGIN { print v / 1000 }')")" \
            "$(f2 "$(awk -v v="$(med "$t" .p99_us)" 'BEGIN { print v / 1000 }')")" \
            "$(jq -s -r --arg t "$t" '[.[] | select(.target == $t) | .errors] | add' "$RESULTS")" \
            "$(f2 "$(med "$t" .cores_busy.conduit)") / $(f2 "$(med "$t" .cores_busy.nginx)") / $(f2 "$(med "$t" .cores_busy.mock)") / $(f2 "$(med "$t" .cores_busy.redis)") / $(f2 "$(med "$t" .cores_busy.loadgen)") / $(f2 "$(med "$t" .cores_busy.other)") = $(f2 "$(med "$t" .cores_busy.machine)")" \
            "$(f1 "$(med "$t" '(.cpu_us_per_req | .conduit + .nginx + .mock + .redis + .loadgen)')")" \
            "$(f0 "$(awk -v u="$(med "$t" '(.cpu_us_per_req | .conduit + .nginx + .mock + .redis + .loadgen)')" -v c="$(nproc)" 'BEGIN { if (u == "nan") print "nan"; else print c * 1e6 / u }')")"
    done
    echo
    echo "\"stack CPU\" = the CPU all the processes of the set-up (Conduit, nginx, mock, Redis, load generator) spent per request; \"req/s if the stack had the cores alone\" = $(nproc) cores ÷ that: what this set-up would reach without the other helpers' work (\"other\"), which took a large share of the machine in this run. Under contention the scheduler shares the cores between runnable threads, so a set-up with more busy processes (3 instances) also gets a larger share of a contended machine."
    echo
    echo "## CPU per request (µs, medians)"
    echo
    row target Conduit nginx mock Redis "load generator" other "machine total"
    row --- ---: ---: ---: ---: ---: ---: ---:
    for t in $TARGETS; do
        row "$(name "$t")" "$(f1 "$(med "$t" .cpu_us_per_req.conduit)")" "$(f1 "$(med "$t" .cpu_us_per_req.nginx)")" \
            "$(f1 "$(med "$t" .cpu_us_per_req.mock)")" "$(f1 "$(med "$t" .cpu_us_per_req.redis)")" \
            "$(f1 "$(med "$t" .cpu_us_per_req.loadgen)")" "$(f1 "$(med "$t" .cpu_us_per_req.other)")" \
            "$(f1 "$(med "$t" .cpu_us_per_req.machine)")"
    done
    echo
    echo "## Runs"
    echo
    row target rep "req/s" "p50 / p99 ms" errors "Conduit / nginx / mock / Redis / loadgen / other µs per request" "machine cores busy" "busy before %"
    row --- ---: ---: ---: ---: ---: ---: ---:
    jq -s -r 'def r1: (. * 10 | round / 10 | tostring); def r2: (. * 100 | round / 100 | tostring);
        .[] | [.target, (.rep | tostring), (.rps | floor | tostring),
        "\(.p50_us / 1000 | r2) / \(.p99_us / 1000 | r2)", (.errors | tostring),
        (.cpu_us_per_req | "\(.conduit | r1) / \(.nginx | r1) / \(.mock | r1) / \(.redis | r1) / \(.loadgen | r1) / \(.other | r1)"),
        (.cores_busy.machine | r2), (.quiet_pct | tostring)] | "| " + join(" | ") + " |"' "$RESULTS"
    echo
    echo "Idle RSS after the run: $RSS_TEXT."
    echo
    echo "## Commands"
    echo
    echo '```'
    cat "$COMMANDS"
    echo '```'
    for n in "${!NGINX_PID[@]}"; do
        if [[ "$n" == nginx3d ]]; then
            echo
            echo "nginx configuration of nginx3d (deploy/nginx/conduit.conf rendered by deploy/nginx/render.sh inside a minimal main config):"
            echo
            echo '```nginx'
            cat "$TMP/$n/nginx.conf"
            echo '```'
        fi
        if [[ "$n" == nginx3 ]]; then
            echo
            echo "nginx configuration (nginx → 3 instances; the others differ only in the upstream servers and the port):"
            echo
            echo '```nginx'
            cat "$TMP/$n/nginx.conf"
            echo '```'
        fi
    done
    echo
    echo "Raw per-run JSON:"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
} >"$REPORT"
cat "$REPORT"
log "report: $REPORT"
