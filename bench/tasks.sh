#!/usr/bin/env bash
# Async task and webhook benchmark (issue 3): task submissions accepted (202) per second and tasks
# completed end to end per second against a 0 ms mock provider, with the embedded work queue and
# with RabbitMQ; webhook deliveries per second to a local receiver with their latency; and, in
# the same run, the raw WorkQueue publish/consume rate of each adapter (conduit-queue-bench) as
# the reference. Writes bench/results/<UTC date>-tasks.md and prints it. See bench/README.md.
#
#   bench/tasks.sh [BUILD_DIR]          (default build/release; configured with
#                                        -DCONDUIT_BUILD_BENCH=ON for the two bench tools)
#
# Knobs (environment): TASKS_REPS=3 TASKS_DURATION=10 TASKS_CONNECTIONS=32 TASKS_KEYS=32
# TASKS_RATE=1000 TASKS_WEBHOOK_RATE=500 TASKS_KIND=image TASKS_MODES="embedded rabbitmq"
# TASKS_SCENARIOS="capacity rate webhook drain" TASKS_PIN=1 TASKS_SERVER_CPU=1
# TASKS_CLIENT_CPU=0 TASKS_THREADS=1 TASKS_POLL_MS=50 TASKS_QUEUE_MESSAGES=20000
# TASKS_AMQP_HOST=127.0.0.1 TASKS_AMQP_PORT=5699 TASKS_AMQP_USER=guest TASKS_AMQP_PASSWORD=guest
# TASKS_MEDIA_DIR="" (default <data-dir>/media) TASKS_DRAIN_TIMEOUT=300
# TASKS_OUT_DIR=bench/results TASKS_OUT_NAME=<UTC date>-tasks.md TASKS_KEEP=0
# TASKS_CONDUIT_ARGS="" (extra `conduit serve` flags).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_ARG="${1:-build/release}"
BUILD="$BUILD_ARG"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"

REPS="${TASKS_REPS:-3}"
DURATION="${TASKS_DURATION:-10}"
CONNECTIONS="${TASKS_CONNECTIONS:-32}"
NKEYS="${TASKS_KEYS:-32}"
RATE="${TASKS_RATE:-1000}"
WEBHOOK_RATE="${TASKS_WEBHOOK_RATE:-500}"
KIND="${TASKS_KIND:-image}"
MODES="${TASKS_MODES:-embedded rabbitmq}"
SCENARIOS="${TASKS_SCENARIOS:-capacity rate webhook drain}"
PIN="${TASKS_PIN:-1}"
SERVER_CPU="${TASKS_SERVER_CPU:-1}"
CLIENT_CPU="${TASKS_CLIENT_CPU:-0}"
THREADS="${TASKS_THREADS:-1}"
POLL_MS="${TASKS_POLL_MS:-50}"
QUEUE_MESSAGES="${TASKS_QUEUE_MESSAGES:-20000}"
AMQP_HOST="${TASKS_AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${TASKS_AMQP_PORT:-5699}"
AMQP_USER="${TASKS_AMQP_USER:-guest}"
AMQP_PASSWORD="${TASKS_AMQP_PASSWORD:-guest}"
MEDIA_DIR="${TASKS_MEDIA_DIR:-}"
DRAIN_TIMEOUT="${TASKS_DRAIN_TIMEOUT:-300}"
QUIET_WAIT="${TASKS_QUIET_WAIT:-120}"
QUIET_PCT="${TASKS_QUIET_PCT:-25}"
QUIET_DISK_PCT="${TASKS_QUIET_DISK_PCT:-10}"
OUT_DIR="${TASKS_OUT_DIR:-$ROOT/bench/results}"
OUT_NAME="${TASKS_OUT_NAME:-$(date -u +%Y-%m-%d)-tasks.md}"
KEEP="${TASKS_KEEP:-0}"
CONDUIT_ARGS="${TASKS_CONDUIT_ARGS:-}"
MASTER_KEY="bench-master-key-0123456789abcdef"
# Held webhook deliveries (drain scenario) must not time out while the backlog builds up.
WEBHOOK_TIMEOUT_MS=600000

MOCK_BIN="$BUILD/conduit-mock-provider"
CONDUIT_BIN="$BUILD/conduit"
LOADGEN_BIN="$BUILD/conduit-loadgen"
QBENCH_BIN="$BUILD/conduit-queue-bench"
SINK_BIN="$BUILD/conduit-webhook-sink"

log() { printf '[tasks %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "$KIND" in
    image) SUBMIT_PATH=/v1/images/generations/async MODEL=dall-e-3 ;;
    video) SUBMIT_PATH=/v1/videos/generations/async MODEL=sora ;;
    *) die "TASKS_KIND must be image or video" ;;
esac

for tool in jq curl sqlite3 taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install jq curl sqlite3 util-linux)"
done
# What the binaries were built from (the work tree may hold others' uncommitted changes).
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY_FILES="$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
if [[ -f "$BUILD/CMakeCache.txt" ]]; then
    if ! grep -q '^CONDUIT_BUILD_BENCH:BOOL=ON' "$BUILD/CMakeCache.txt"; then
        die "$BUILD is not configured with -DCONDUIT_BUILD_BENCH=ON (needed for conduit-queue-bench and conduit-webhook-sink)"
    fi
    cmake --build "$BUILD" -j "${TASKS_BUILD_JOBS:-1}" --target conduit conduit-mock-provider conduit-loadgen \
        conduit-queue-bench conduit-webhook-sink >/dev/null || die "build failed"
fi
for b in "$MOCK_BIN" "$CONDUIT_BIN" "$LOADGEN_BIN" "$QBENCH_BIN" "$SINK_BIN"; do
    [[ -x "$b" ]] || die "$b not found: build it (cmake --build $BUILD)"
done
"$LOADGEN_BIN" --self-test 2>/dev/null || die "conduit-loadgen --self-test failed"

if [[ " $MODES " == *" rabbitmq "* ]]; then
    if ! (exec 3<>"/dev/tcp/$AMQP_HOST/$AMQP_PORT") 2>/dev/null; then
        die "no RabbitMQ at $AMQP_HOST:$AMQP_PORT: run scripts/engines.sh start rabbitmq, or set TASKS_MODES=embedded"
    fi
fi

if [[ "$PIN" == 1 ]] && (($(nproc) < 2)); then
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

TMP="$(mktemp -d /tmp/conduit-tasks-bench.XXXXXX)"
chmod 755 "$TMP"
RUN_DIR="$TMP/runs"
mkdir -p "$RUN_DIR"
PIDS=()
VHOSTS=()
MEDIA_DIRS=()
COMMANDS="$TMP/commands.txt"
: >"$COMMANDS"
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

# ---------------------------------------------------------------------------------------------
# RabbitMQ virtual hosts (one fresh vhost per run, deleted afterwards), as scripts/engines.sh
# reaches the broker's CLI.
# ---------------------------------------------------------------------------------------------
RMQ_NODE="conduit@localhost"
rmqctl() {
    local env=(HOME=/var/lib/rabbitmq RABBITMQ_NODENAME="$RMQ_NODE" ERL_EPMD_ADDRESS=127.0.0.1
        RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000))
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
    if [[ "$(id -un)" == rabbitmq ]]; then
        env "${env[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RMQ_NODE" "$@"
    elif [[ "$(id -u)" == 0 ]]; then
        runuser -u rabbitmq -- env "${env[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RMQ_NODE" "$@"
    else
        sudo -u rabbitmq -- env "${env[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RMQ_NODE" "$@"
    fi
}
vhost_create() { # NAME
    rmqctl add_vhost "$1" >/dev/null || die "rabbitmqctl add_vhost $1 failed"
    rmqctl set_permissions -p "$1" "$AMQP_USER" '.*' '.*' '.*' >/dev/null ||
        die "rabbitmqctl set_permissions on $1 failed"
    VHOSTS+=("$1")
}
vhost_delete() { # NAME
    rmqctl delete_vhost "$1" >/dev/null 2>&1 || log "warning: could not delete vhost $1"
    local keep=() v
    for v in "${VHOSTS[@]}"; do
        [[ "$v" == "$1" ]] || keep+=("$v")
    done
    VHOSTS=("${keep[@]}")
}
# The broker's PID, read afresh for each measurement (the shared broker may be restarted by
# others between runs); empty when unknown.
BROKER_PID_FILE="${CONDUIT_ENGINES_DIR:-/tmp/conduit-engines}/rabbitmq/rabbitmq.pid"
broker_pid() {
    local pid
    pid="$(cat "$BROKER_PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" && -r "/proc/$pid/stat" ]]; then
        echo "$pid"
    fi
}
if [[ " $MODES " == *" rabbitmq "* && -z "$(broker_pid)" ]]; then
    log "warning: broker PID unknown ($BROKER_PID_FILE); its CPU is not reported"
fi


cleanup() {
    local pid v
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    for v in "${VHOSTS[@]}"; do
        rmqctl delete_vhost "$v" >/dev/null 2>&1 || true
    done
    if [[ "$KEEP" == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
        for v in "${MEDIA_DIRS[@]}"; do
            rm -rf "$v"
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note_cmd() { # LABEL COMMAND...
    local label="$1"
    shift
    printf '# %s\n%s\n' "$label" "$(quote_cmd "$@")" >>"$COMMANDS"
}





now_ms() { date +%s%3N; }

# The disk holding the temp dir (data dirs: SQLite store, embedded queue, media).
DISK="$(df --output=source "${TMPDIR:-/tmp}" 2>/dev/null | tail -1)"
DISK="${DISK##*/}"

# The machine is shared: before a measurement, wait (bounded) until other work quiets down:
# CPU busy < QUIET_PCT % of a core and the data disk busy < QUIET_DISK_PCT % over a second.
QUIET_WAITED=0
BUSY_RUNS=0
rss_kb() { awk '$1 == "VmHWM:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# Long-lived helpers on the client core: the mock provider and the webhook receiver.
# ---------------------------------------------------------------------------------------------
log "starting the mock provider (0 ms jobs) and the webhook receiver"
MOCK_CMD=("${CLIENT_PIN[@]}" "$MOCK_BIN" --listen 127.0.0.1:0 --threads 1 --job-duration-ms 0
    --video-bytes 1024 --log-level warn)
note_cmd "mock provider (0 ms jobs; a finished job is returned by the submit itself)" "${MOCK_CMD[@]}"
start_bg mock "${MOCK_CMD[@]}"
MOCK_PID=$LAST_PID
MOCK_URL="$(listening_url mock)"
SINK_CMD=("${CLIENT_PIN[@]}" "$SINK_BIN" --listen 127.0.0.1:0)
note_cmd "webhook receiver" "${SINK_CMD[@]}"
start_bg sink "${SINK_CMD[@]}"
SINK_PID=$LAST_PID
SINK_URL="$(listening_url sink)"
log "mock at $MOCK_URL, receiver at $SINK_URL"

# ---------------------------------------------------------------------------------------------
# The raw queue reference: conduit-queue-bench on the server core, same message count.
# ---------------------------------------------------------------------------------------------
run_queue_bench() { # MODE REP
    local mode="$1" rep="$2" out="$RUN_DIR/queue-$1-$2.jsonl" vhost="" cmd b0 b1
    cmd=("${SERVER_PIN[@]}" "$QBENCH_BIN" --engine "$mode" --messages "$QUEUE_MESSAGES"
        --batch 1 --window "$CONNECTIONS" --partitions 30 --keys "$NKEYS" --body-bytes 100
        --concurrency 50 --prefetch 25 --loops "$THREADS" --phases "mixed,split")
    if [[ "$mode" == rabbitmq ]]; then
        vhost="conduit-tasks-bench-$$-q$rep"
        vhost_create "$vhost"
        cmd+=(--amqp "amqp://$AMQP_USER:$AMQP_PASSWORD@$AMQP_HOST:$AMQP_PORT/$vhost")
    else
        mkdir -p "$TMP/queue-bench-$rep"
        cmd+=(--dir "$TMP/queue-bench-$rep")
    fi
    if [[ "$rep" == 1 ]]; then
        note_cmd "raw queue reference ($mode)" "${cmd[@]}"
    fi
    wait_quiet
    local bpid
    bpid="$(broker_pid)"
    b0="$(cpu_ticks "$bpid")"
    "${cmd[@]}" >"$out" 2>"$out.err" || die "conduit-queue-bench $mode failed: $(cat "$out.err")"
    b1="$(cpu_ticks "$bpid")"
    ((b1 >= b0)) || b1=$b0 # restarted meanwhile
    # The former contract-test shape: batches of 50, 2,000 unconfirmed, 1,000 keys, 200 B.
    local bcmd=()
    local skip=0 a
    for a in "${cmd[@]}"; do
        if ((skip)); then
            skip=0
            continue
        fi
        case "$a" in
            --batch | --window | --keys | --body-bytes | --phases) skip=1 ;;
            *) bcmd+=("$a") ;;
        esac
    done
    bcmd+=(--batch 50 --window 2000 --keys 1000 --body-bytes 200 --phases mixed)
    if [[ "$rep" == 1 ]]; then
        note_cmd "raw queue reference ($mode, batched: the former contract-test shape)" "${bcmd[@]}"
    fi
    "${bcmd[@]}" >"$out.batched" 2>"$out.batched.err" ||
        die "conduit-queue-bench $mode (batched) failed: $(cat "$out.batched.err")"
    if [[ -n "$vhost" ]]; then
        vhost_delete "$vhost"
    fi
    rm -rf "$TMP/queue-bench-$rep"
    # Broker CPU of the mixed + split phases (2 × QUEUE_MESSAGES messages through the broker).
    jq -c --arg mode "$mode" --argjson rep "$rep" --argjson broker "$((b1 - b0))" \
        --argjson hz "$CLK_TCK" --argjson n "$QUEUE_MESSAGES" \
        '{kind: "queue", mode: $mode, rep: $rep, phase: .phase, publish_per_s, consume_per_s,
          e2e_per_s, confirm_ms_p50, confirm_ms_p99, cpu_us_per_msg,
          broker_us_per_msg: (1e6 * $broker / $hz / (2 * $n))}' "$out" >>"$RESULTS"
    jq -c --arg mode "$mode" --argjson rep "$rep" \
        '{kind: "queue", mode: $mode, rep: $rep, phase: "mixed-batched", publish_per_s,
          e2e_per_s, confirm_ms_p50, confirm_ms_p99, cpu_us_per_msg}' "$out.batched" >>"$RESULTS"
    log "queue $mode rep $rep: $(jq -r '"\(.phase): pub \(.publish_per_s // "-")/s e2e \(.e2e_per_s // "-")/s cons \(.consume_per_s // "-")/s"' "$out" | paste -sd ' ')"
}

# ---------------------------------------------------------------------------------------------
# One Conduit instance per (mode, rep): fresh data dir (and vhost), seeded through the admin API.
# ---------------------------------------------------------------------------------------------
CONDUIT_PID=""
CONDUIT_URL=""
DATA=""
VHOST=""
KEYS_FILE=""

admin() { # METHOD PATH [JSON]
    curl -sf -X "$1" -H "X-API-Key: $MASTER_KEY" -H 'Content-Type: application/json' \
        ${3:+-d "$3"} "$CONDUIT_URL$2" || die "admin $1 $2 failed: ${3:-}"
}

start_conduit() { # MODE REP
    local mode="$1" rep="$2" port cmd attempt
    DATA="$TMP/data-$mode-$rep"
    VHOST=""
    if [[ "$mode" == rabbitmq ]]; then
        VHOST="conduit-tasks-bench-$$-$rep"
        vhost_create "$VHOST"
    fi
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        CONDUIT_URL="http://127.0.0.1:$port"
        cmd=(env CONDUIT_MASTER_KEY="$MASTER_KEY" "${SERVER_PIN[@]}" "$CONDUIT_BIN" serve
            --listen "127.0.0.1:$port" --threads "$THREADS" --data-dir "$DATA" --log-level warn
            --task-poll-interval-ms "$POLL_MS" --webhook-timeout-ms "$WEBHOOK_TIMEOUT_MS")
        if [[ -n "$MEDIA_DIR" ]]; then
            cmd+=(--media-dir "$MEDIA_DIR/$mode-$rep")
        fi
        if [[ "$mode" == rabbitmq ]]; then
            cmd+=(--rabbitmq-host "$AMQP_HOST" --rabbitmq-port "$AMQP_PORT"
                --rabbitmq-username "$AMQP_USER" --rabbitmq-password "$AMQP_PASSWORD"
                --rabbitmq-vhost "$VHOST")
        fi
        # shellcheck disable=SC2206
        cmd+=($CONDUIT_ARGS)
        start_bg "conduit-$mode-$rep" "${cmd[@]}"
        CONDUIT_PID=$LAST_PID
        if wait_http "$CONDUIT_URL/health/live" 30; then
            break
        fi
        stop_pid "$CONDUIT_PID"
        forget_pid "$CONDUIT_PID"
        # Another process took the port between the probe and the bind: try another one.
        grep -q 'Address already in use' "$TMP/conduit-$mode-$rep.err" && ((attempt < 5)) &&
            continue
        die "conduit did not start: $(tail -20 "$TMP/conduit-$mode-$rep.err")"
    done
    if [[ "$rep" == 1 ]]; then
        note_cmd "conduit ($mode)" "${cmd[@]}"
    fi

    local provider_id mapping_id group_id i key id
    provider_id="$(admin POST /api/ProviderCredentials "$(jq -nc --arg url "$MOCK_URL/v1" \
        '{providerType: "openai-compatible", providerName: "bench-mock", baseUrl: $url,
          apiKey: "sk-bench-upstream"}')" | jq -r .id)"
    if [[ "$KIND" == image ]]; then
        mapping_id="$(admin POST /api/ModelProviderMapping "$(jq -nc --argjson p "$provider_id" \
            '{modelAlias: "dall-e-3", providerModelId: "mock-image", providerId: $p,
              supportsChat: false, supportsImageGeneration: true}')" | jq -r .id)"
        admin POST /api/ModelCosts "$(jq -nc --argjson m "$mapping_id" '{costName: "image",
            modelProviderMappingIds: [$m], imageCostPerImage: 0.04}')" >/dev/null
    else
        mapping_id="$(admin POST /api/ModelProviderMapping "$(jq -nc --argjson p "$provider_id" \
            '{modelAlias: "sora", providerModelId: "sora-2", providerId: $p, supportsChat: false,
              supportsVideoGeneration: true}')" | jq -r .id)"
    fi
    group_id="$(admin POST /api/VirtualKeyGroups \
        '{"groupName":"bench","initialBalance":100000000}' | jq -r .id)"
    KEYS_FILE="$TMP/keys-$mode-$rep.txt"
    : >"$KEYS_FILE"
    for i in $(seq 1 "$NKEYS"); do
        key="$(admin POST /api/VirtualKeys "$(jq -nc --argjson g "$group_id" --arg n "bench-$i" \
            '{keyName: $n, virtualKeyGroupId: $g}')")"
        id="$(jq -r .keyInfo.id <<<"$key")"
        # Signed deliveries, as in production.
        admin POST "/api/VirtualKeys/$id/webhook-secret" >/dev/null
        printf 'Authorization: Bearer %s\n' "$(jq -r .virtualKey <<<"$key")" >>"$KEYS_FILE"
    done
    # The configuration is applied within about a second: wait until the last key is accepted.
    local last code=""
    last="$(tail -1 "$KEYS_FILE")"
    for _ in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "$last" -H 'Content-Type: application/json' \
            -d "{\"model\":\"$MODEL\",\"prompt\":\"warm-up\"}" "$CONDUIT_URL$SUBMIT_PATH")" || true
        [[ "$code" == 202 ]] && break
        sleep 0.1
    done
    [[ "$code" == 202 ]] || die "submit check answered $code"
    wait_tasks_done 0 "$(($(now_ms) + 1))" 30 >/dev/null
    log "conduit ($mode, rep $rep) at $CONDUIT_URL: $NKEYS keys seeded"
}

# Data dirs are removed at exit, not here: deleting tens of thousands of media files right
# before the next instance starts makes ext4's inode allocation (which skips recently deleted
# inodes) markedly slower for that instance.
stop_conduit() { # MODE REP
    stop_pid "$CONDUIT_PID"
    forget_pid "$CONDUIT_PID"
    if [[ -n "$VHOST" ]]; then
        vhost_delete "$VHOST"
    fi
    if [[ -n "$MEDIA_DIR" ]]; then
        MEDIA_DIRS+=("${MEDIA_DIR:?}/$1-$2")
    fi
}

# Store queries run on the client core, read-only (WAL: they never block the gateway's writer).
sql() { "${CLIENT_PIN[@]}" sqlite3 -readonly "$DATA/conduit.db" "$1"; }

# Waits until no task created in [FROM_MS, TO_MS) is pending or running; prints the count left.
wait_tasks_done() { # FROM_MS TO_MS TIMEOUT_S
    local deadline=$((SECONDS + $3)) open=1
    while ((SECONDS < deadline)); do
        open="$(sql "SELECT count(*) FROM async_tasks WHERE state IN ('pending','running')
            AND created_at_ms >= $1 AND created_at_ms < $2")"
        [[ "$open" == 0 ]] && break
        sleep 0.25
    done
    echo "$open"
}

# The store's view of the tasks created in [FROM_MS, TO_MS), as JSON.
task_stats() { # FROM_MS TO_MS
    local where="created_at_ms >= $1 AND created_at_ms < $2"
    sql "SELECT json_object('tasks', count(*),
            'completed', coalesce(sum(state = 'completed'), 0),
            'failed', coalesce(sum(state = 'failed'), 0),
            'unfinished', coalesce(sum(state NOT IN ('completed', 'failed')), 0),
            'first_created_ms', min(created_at_ms), 'last_created_ms', max(created_at_ms),
            'last_completed_ms', max(completed_at_ms))
         FROM async_tasks WHERE $where"
    # Latency of completed tasks (created → completed), percentiles by rank.
    sql "SELECT completed_at_ms - created_at_ms FROM async_tasks
         WHERE $where AND state = 'completed' ORDER BY 1" |
        awk 'function at(p,   i) { i = int(p * (n - 1) + 1.5); if (i > n) i = n; return v[i] }
            {v[NR] = $1}
            END {
                n = NR
                if (n == 0) {
                    print "{\"lat_p50_ms\":null,\"lat_p95_ms\":null,\"lat_p99_ms\":null,\"lat_max_ms\":null}"
                    exit
                }
                printf "{\"lat_p50_ms\":%s,\"lat_p95_ms\":%s,\"lat_p99_ms\":%s,\"lat_max_ms\":%s}\n",
                    at(0.50), at(0.95), at(0.99), v[n]
            }'
}

# ---------------------------------------------------------------------------------------------
# One scenario on the running instance.
#   capacity: closed loop, CONNECTIONS connections, DURATION s, no webhook; then wait until every
#             task is terminal.
#   rate:     open loop at RATE submits/s for DURATION s, no webhook.
#   webhook:  open loop at WEBHOOK_RATE submits/s with webhook_url → the receiver.
#   drain:    the receiver holds deliveries; closed-loop submits with webhook_url for DURATION s;
#             once every task is terminal the receiver releases: the backlog drains.
# ---------------------------------------------------------------------------------------------
run_scenario() { # MODE REP SCENARIO
    local mode="$1" rep="$2" scenario="$3" label body out args=() t0 t1 c0 c1 b0 b1 m0 m1 s0 s1
    local w0 w1 left extra="{}" wait_s
    label="$mode-$rep-$scenario"
    out="$RUN_DIR/$label.json"
    body="{\"model\":\"$MODEL\",\"prompt\":\"benchmark\"}"
    case "$scenario" in
        capacity) args=(--connections "$CONNECTIONS") ;;
        rate) args=(--connections "$CONNECTIONS" --rate "$RATE") ;;
        webhook)
            args=(--connections "$CONNECTIONS" --rate "$WEBHOOK_RATE")
            body="{\"model\":\"$MODEL\",\"prompt\":\"benchmark\",\"webhook_url\":\"$SINK_URL/hook\"}"
            ;;
        drain)
            args=(--connections "$CONNECTIONS")
            body="{\"model\":\"$MODEL\",\"prompt\":\"benchmark\",\"webhook_url\":\"$SINK_URL/hook\"}"
            ;;
        *) die "unknown scenario $scenario" ;;
    esac
    printf '%s' "$body" >"$TMP/body-$scenario.json"
    local cmd=("${CLIENT_PIN[@]}" "$LOADGEN_BIN" --url "$CONDUIT_URL$SUBMIT_PATH" --method POST
        --body-file "$TMP/body-$scenario.json" --header-per-connection "$KEYS_FILE"
        --duration "$DURATION" --warmup 0 --timeout-ms 10000 "${args[@]}")
    if [[ "$rep" == 1 && "$mode" == "${MODES%% *}" ]]; then
        note_cmd "submit load ($scenario; the URL's port differs per instance)" "${cmd[@]}"
    fi

    wait_quiet
    curl -sf -X POST "$SINK_URL/reset" >/dev/null
    if [[ "$scenario" == drain ]]; then
        curl -sf -X POST "$SINK_URL/hold" >/dev/null
    fi
    curl -sf -X POST "$MOCK_URL/mock/reset" >/dev/null
    sleep 0.5
    local bpid=""
    if [[ "$mode" == rabbitmq ]]; then
        bpid="$(broker_pid)"
    fi
    c0="$(cpu_ticks "$CONDUIT_PID")"
    b0="$(cpu_ticks "$bpid")"
    m0="$(($(cpu_ticks "$MOCK_PID") + $(cpu_ticks "$SINK_PID")))"
    s0="$(machine_busy_ticks)"
    w0="$(date +%s.%N)"
    t0="$(now_ms)"
    "${cmd[@]}" >"$out" 2>"$out.err" || die "loadgen failed: $(cat "$out.err")"
    t1="$(($(now_ms) + 1))"
    left="$(wait_tasks_done "$t0" "$t1" "$DRAIN_TIMEOUT")"
    if [[ "$scenario" == webhook ]]; then
        # Every terminal task sends one webhook: wait for them (bounded).
        local want
        want="$(sql "SELECT count(*) FROM async_tasks WHERE created_at_ms >= $t0
            AND created_at_ms < $t1 AND state IN ('completed', 'failed')")"
        for _ in $(seq 1 240); do
            (($(curl -sf "$SINK_URL/stats" | jq .count) >= want)) && break
            sleep 0.25
        done
    fi
    if [[ "$scenario" == drain ]]; then
        sleep 1
        local before held want got prev=-1 stable=0
        before="$(curl -sf "$SINK_URL/stats")"
        held="$(jq .held <<<"$before")"
        want="$(($(sql "SELECT count(*) FROM async_tasks WHERE created_at_ms >= $t0
            AND created_at_ms < $t1 AND state IN ('completed', 'failed')") - $(jq .count <<<"$before")))"
        curl -sf -X POST "$SINK_URL/release" >/dev/null
        for _ in $(seq 1 $((4 * DRAIN_TIMEOUT))); do
            got="$(curl -sf "$SINK_URL/stats" | jq .count)"
            ((got >= want)) && break
            if ((got == prev)); then
                stable=$((stable + 1))
                ((stable >= 40)) && break # nothing new for 10 s
            else
                stable=0
            fi
            prev=$got
            sleep 0.25
        done
        extra="$(jq -nc --argjson held "$held" --argjson want "$want" \
            '{held_at_release: $held, backlog: $want}')"
    fi
    w1="$(date +%s.%N)"
    s1="$(machine_busy_ticks)"
    m1="$(($(cpu_ticks "$MOCK_PID") + $(cpu_ticks "$SINK_PID")))"
    b1="$(cpu_ticks "$bpid")"
    ((b1 >= b0)) || b1=$b0 # restarted meanwhile
    c1="$(cpu_ticks "$CONDUIT_PID")"
    wait_s="$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')"

    local ts sink deliveries dq
    ts="$(task_stats "$t0" "$t1" | jq -sc 'add')"
    sink="$(curl -sf "$SINK_URL/stats")"
    # Delivery status rows are written in batches (every 200 ms): give them up to 10 s.
    dq="SELECT json_object('delivered', coalesce(sum(status = 'delivered'), 0),
        'not_delivered', coalesce(sum(status <> 'delivered'), 0)) FROM webhook_deliveries
        WHERE created_at_ms >= $t0"
    for _ in $(seq 1 40); do
        deliveries="$(sql "$dq")"
        (($(jq .not_delivered <<<"$deliveries") == 0)) && break
        sleep 0.25
    done
    jq -c -n --arg mode "$mode" --argjson rep "$rep" --arg scenario "$scenario" \
        --slurpfile lg "$out" --argjson ts "$ts" --argjson sink "$sink" \
        --argjson dl "$deliveries" --argjson extra "$extra" --argjson left "$left" \
        --argjson conduit "$((c1 - c0))" --argjson broker "$((b1 - b0))" \
        --argjson helpers "$((m1 - m0))" --argjson busy "$((s1 - s0))" --argjson hz "$CLK_TCK" \
        --argjson wall "$wait_s" --argjson duration "$DURATION" '
        $lg[0] as $l |
        (($ts.last_completed_ms - $ts.first_created_ms) / 1000) as $e2e |
        {kind: "tasks", mode: $mode, rep: $rep, scenario: $scenario,
         accepted: ($l.status["202"] // 0), sent: $l.sent, errors: $l.errors.total,
         accepted_per_s: (($l.status["202"] // 0) / $duration),
         submit_p50_ms: ($l.latency_us.p50 / 1000), submit_p99_ms: ($l.latency_us.p99 / 1000),
         send_lag_p99_ms: (($l.send_lag_us.p99 // 0) / 1000),
         tasks: $ts.tasks, completed: $ts.completed, failed: $ts.failed,
         unfinished: $ts.unfinished, left_open: $left,
         e2e_s: $e2e, completed_per_s: (if $e2e > 0 then $ts.completed / $e2e else 0 end),
         tail_after_last_submit_s: (($ts.last_completed_ms - $ts.last_created_ms) / 1000),
         lat_p50_ms: $ts.lat_p50_ms, lat_p95_ms: $ts.lat_p95_ms, lat_p99_ms: $ts.lat_p99_ms,
         wh_received: $sink.count, wh_duplicates: $sink.duplicates, wh_rate: $sink.rate_per_s,
         wh_lat_p50_ms: $sink.latency_ms.p50, wh_lat_p95_ms: $sink.latency_ms.p95,
         wh_lat_p99_ms: $sink.latency_ms.p99, wh_lat_max_ms: $sink.latency_ms.max,
         wh_delivered_rows: $dl.delivered, wh_not_delivered_rows: $dl.not_delivered,
         wh_drain_s: (if $sink.count > 1 then ($sink.last_us - $sink.first_us) / 1e6 else null end),
         wall_s: $wall,
         conduit_cpu_s: ($conduit / $hz), conduit_cpu_pct: (100 * $conduit / $hz / $wall),
         conduit_cpu_us_per_task: (if $ts.tasks > 0 then 1e6 * $conduit / $hz / $ts.tasks else 0 end),
         broker_cpu_pct: (100 * $broker / $hz / $wall),
         other_cpu_pct: ([0, 100 * (($busy - $conduit - $broker - $helpers) / $hz
                              - ($l.client_cpu_s // 0)) / $wall] | max)} + $extra' >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | jq -r '"\(.mode) \(.scenario) rep \(.rep): accepted \(.accepted_per_s)/s, \(.completed)/\(.tasks) completed (\(.failed) failed) in \(.e2e_s) s = \(.completed_per_s | floor)/s; webhooks \(.wh_received) at \(.wh_rate)/s p95 \(.wh_lat_p95_ms) ms"')"
}

# ---------------------------------------------------------------------------------------------
# The run: every repetition runs the raw queue reference and the gateway for each mode.
# ---------------------------------------------------------------------------------------------
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$SECONDS
declare -A PEAK_RSS
for rep in $(seq 1 "$REPS"); do
    for mode in $MODES; do
        run_queue_bench "$mode" "$rep"
        start_conduit "$mode" "$rep"
        for scenario in $SCENARIOS; do
            run_scenario "$mode" "$rep" "$scenario"
        done
        PEAK_RSS[$mode]="$(rss_kb "$CONDUIT_PID")"
        stop_conduit "$mode" "$rep"
    done
done
T_LOAD=$((SECONDS - T_START))

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
# Median over repetitions of FIELD for (kind, mode, scenario-or-phase).
med() { # KIND MODE KEY FIELD
    jq -s -r --arg k "$1" --arg m "$2" --arg s "$3" --arg f "$4" '
        [.[] | select(.kind == $k and .mode == $m and ((.scenario // .phase) == $s))
         | .[$f] | select(. != null)] | sort |
        if length == 0 then "nan"
        elif length % 2 == 1 then .[(length - 1) / 2]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end' "$RESULTS"
}
each() { # KIND MODE KEY FIELD → "a / b / c"
    jq -s -r --arg k "$1" --arg m "$2" --arg s "$3" --arg f "$4" '
        [.[] | select(.kind == $k and .mode == $m and ((.scenario // .phase) == $s))
         | .[$f] | if . == null then "–" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end]
        | join(" / ")' "$RESULTS"
}
maxof() { # KIND MODE KEY FIELD → largest over repetitions
    jq -s -r --arg k "$1" --arg m "$2" --arg s "$3" --arg f "$4" '
        [.[] | select(.kind == $k and .mode == $m and ((.scenario // .phase) == $s))
         | .[$f] | select(. != null)] | max // "nan"' "$RESULTS"
}
total() { # KIND MODE KEY FIELD → sum over repetitions
    jq -s -r --arg k "$1" --arg m "$2" --arg s "$3" --arg f "$4" '
        [.[] | select(.kind == $k and .mode == $m and ((.scenario // .phase) == $s))
         | .[$f] // 0] | add // 0' "$RESULTS"
}
fmt0() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f", v }'; }
fmt2() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.2f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "–"; else printf "%.2f", a / b }'; }
verdict() { # VALUE TARGET
    awk -v v="$1" -v t="$2" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else if (v + 0 >= t + 0) print "**PASS**"; else print "**FAIL**" }'
}

mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$OUT_NAME"
DIRTY=""
if ((DIRTY_FILES > 0)); then
    DIRTY=" + uncommitted changes in $DIRTY_FILES tracked file(s)"
fi
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
MEM_GB="$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
RMQ_VERSION=""
if [[ " $MODES " == *" rabbitmq "* ]]; then
    RMQ_VERSION="$(rmqctl version 2>/dev/null || true)"
fi
if [[ "$PIN" == 1 ]]; then
    PIN_TEXT="pinned: Conduit (all its threads, \`--threads $THREADS\`) and conduit-queue-bench alone on CPU $SERVER_CPU; the mock provider, the load generator, the webhook receiver and the sqlite3 progress polls share CPU $CLIENT_CPU (\`taskset -c\`). The RabbitMQ broker is a shared, already-running process and is **not** pinned: it runs on both cores, and its CPU is reported separately"
else
    PIN_TEXT="unpinned: every process may use every core (whole-box shape); Conduit \`--threads $THREADS\`"
fi

{
    echo "# Async task and webhook benchmark, $(date -u +%Y-%m-%d)"
    echo
    echo "Generated by \`bench/tasks.sh\` at $(date -u '+%Y-%m-%d %H:%M:%S') UTC (load phase $T_LOAD s)."
    echo
    echo "## Machine and set-up"
    echo
    echo "- CPUs: $(nproc) × $CPU_MODEL; memory $MEM_GB GiB; kernel $(uname -sr)"
    echo "- Built from commit $COMMIT$DIRTY at the start of the run; binaries from \`$BUILD_ARG\`"
    if [[ -n "$RMQ_VERSION" ]]; then
        echo "- RabbitMQ $RMQ_VERSION at $AMQP_HOST:$AMQP_PORT (a fresh vhost per run, deleted afterwards)"
    fi
    echo "- Pinning: $PIN_TEXT."
    echo "- Conduit: embedded SQLite store and media store in a fresh temp data dir per run$([[ -n "$MEDIA_DIR" ]] && echo " (media in \`$MEDIA_DIR\`)"), \`--log-level warn\`, \`--task-poll-interval-ms $POLL_MS\`, \`--webhook-timeout-ms $WEBHOOK_TIMEOUT_MS\` (so held deliveries of the drain scenario do not time out); work queue: embedded (\`queue.db\` in the data dir) or RabbitMQ; defaults otherwise (30 partitions, prefetch 25, 50 concurrent messages)."
    echo "- Workload: $KIND tasks (\`POST $SUBMIT_PATH\` \`{\"model\":\"$MODEL\",\"prompt\":\"benchmark\"}\`), $NKEYS virtual keys (one per load-generator connection, \`--header-per-connection\`: the key is the task's partition key), each with a webhook signing secret; a group with a large balance; an image cost, so each completion is billed."
    echo "- Mock: \`--job-duration-ms 0\`: the provider's submit already returns the finished job, so a task is: create (202) → queue → worker marks it running → provider submit → record the job → download the output into the media store → complete (billed) → task event (+ webhook). No provider polling happens, so \`--task-poll-interval-ms\` does not enter the figures (with a real provider, completion lags by up to one poll interval)."
    echo "- Repetitions: $REPS; **medians** shown, individual runs in the detail tables. Load average at start: $LOADAVG_START. The machine is shared: before each measurement the script waited for it to be quiet (< $QUIET_PCT % of a core busy and the data disk \`$DISK\` < $QUIET_DISK_PCT % busy over 1 s, at most $QUIET_WAIT s): $QUIET_WAITED s of waiting in all; $BUSY_RUNS measurement(s) started on a busy machine anyway."
    echo
    echo "## Summary"
    echo
    row "mode" "accepted/s (202, closed loop c=$CONNECTIONS)" "completed/s end to end" "raw queue publish+consume msg/s (same run)" "completed ÷ raw" "accepted ÷ raw publish-only" "webhook deliveries/s (backlog drain)" "webhook latency p50 / p95 ms (at $WEBHOOK_RATE tasks/s)"
    row --- ---: ---: ---: ---: ---: ---: ---:
    for mode in $MODES; do
        acc="$(med tasks "$mode" capacity accepted_per_s)"
        comp="$(med tasks "$mode" capacity completed_per_s)"
        raw="$(med queue "$mode" mixed e2e_per_s)"
        rawpub="$(med queue "$mode" publish-only publish_per_s)"
        drain="$(med tasks "$mode" drain wh_rate)"
        row "$mode" "$(fmt0 "$acc")" "$(fmt0 "$comp")" "$(fmt0 "$raw")" "$(ratio "$comp" "$raw")" \
            "$(ratio "$acc" "$rawpub")" "$(fmt0 "$drain")" \
            "$(fmt1 "$(med tasks "$mode" webhook wh_lat_p50_ms)") / $(fmt1 "$(med tasks "$mode" webhook wh_lat_p95_ms)")"
    done
    echo
    echo "## Targets (from the issue)"
    echo
    row "target" "mode" "measured (median of $REPS)" "verdict"
    row --- --- ---: ---
    for mode in $MODES; do
        v="$(med tasks "$mode" capacity accepted_per_s)"
        row "task submissions accepted ≥ 1,000/s" "$mode" "$(fmt0 "$v")/s" "$(verdict "$v" 1000)"
        v="$(med tasks "$mode" capacity completed_per_s)"
        row "tasks completed end to end ≥ 1,000/s" "$mode" "$(fmt0 "$v")/s" "$(verdict "$v" 1000)"
        v="$(med tasks "$mode" rate completed_per_s)"
        acc="$(med tasks "$mode" rate accepted_per_s)"
        tail_s="$(med tasks "$mode" rate tail_after_last_submit_s)"
        sustained="$(awk -v a="$acc" -v t="$tail_s" -v r="$RATE" 'BEGIN {
            if (a == "nan" || t == "nan") print "n/a";
            else if (a >= 0.98 * r && t <= 1.0) print "**PASS**"; else print "**FAIL**" }')"
        row "… $RATE/s offered for ${DURATION} s (open loop) is sustained" "$mode" "accepted $(fmt0 "$acc")/s, completed $(fmt0 "$v")/s, last task done $(fmt2 "$tail_s") s after the last submit" "$sustained"
        v="$(med tasks "$mode" drain wh_rate)"
        row "webhook deliveries ≥ 2,000/s" "$mode" "$(fmt0 "$v")/s" "$(verdict "$v" 2000)"
        row "webhook p95 delivery latency (reported)" "$mode" "$(fmt1 "$(med tasks "$mode" webhook wh_lat_p95_ms)") ms at $WEBHOOK_RATE tasks/s" "reported"
    done
    echo
    echo "\"completed/s\" = completed tasks ÷ (last \`completed_at\` − first \`created_at\`) of the run's tasks, read from the store: it includes the time the tasks waited in the queue while submissions were still coming in. The open-loop row passes when ≥ 98 % of the offered submissions are accepted and the last task completes ≤ 1 s after the last submission (no backlog builds up: at ${RATE}/s for ${DURATION} s, a pipeline 10 % short of the rate would end about $(awk -v d="$DURATION" 'BEGIN {printf "%.1f", d / 9}') s behind)."
    echo
    echo "## Task runs (medians of $REPS)"
    echo
    row "mode" "scenario" "offered" "accepted/s" "submit p50 / p99 ms" "tasks" "completed" "failed" "completed/s" "tail after last submit s" "task latency p50 / p95 / p99 ms" "Conduit CPU %" "CPU µs/task" "broker CPU %" "other CPU % (median / worst)"
    row --- --- --- ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---: ---:
    for mode in $MODES; do
        for scenario in $SCENARIOS; do
            case "$scenario" in
                capacity | drain) offered="closed c=$CONNECTIONS" ;;
                rate) offered="$RATE/s" ;;
                webhook) offered="$WEBHOOK_RATE/s" ;;
            esac
            row "$mode" "$scenario" "$offered" "$(fmt0 "$(med tasks "$mode" "$scenario" accepted_per_s)")" \
                "$(fmt1 "$(med tasks "$mode" "$scenario" submit_p50_ms)") / $(fmt1 "$(med tasks "$mode" "$scenario" submit_p99_ms)")" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" tasks)")" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" completed)")" \
                "$(total tasks "$mode" "$scenario" failed) (all runs)" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" completed_per_s)")" \
                "$(fmt1 "$(med tasks "$mode" "$scenario" tail_after_last_submit_s)")" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" lat_p50_ms)") / $(fmt0 "$(med tasks "$mode" "$scenario" lat_p95_ms)") / $(fmt0 "$(med tasks "$mode" "$scenario" lat_p99_ms)")" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" conduit_cpu_pct)")" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" conduit_cpu_us_per_task)")" \
                "$([[ "$mode" == rabbitmq ]] && fmt0 "$(med tasks "$mode" "$scenario" broker_cpu_pct)" || echo –)" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" other_cpu_pct)") / $(fmt0 "$(maxof tasks "$mode" "$scenario" other_cpu_pct)")"
        done
    done
    echo
    echo "Scenarios: **capacity** — closed loop, $CONNECTIONS connections, ${DURATION} s of submissions, then every task runs to a terminal state; **rate** — open loop at $RATE submissions/s for ${DURATION} s; **webhook** — open loop at $WEBHOOK_RATE/s, each task with \`webhook_url\` → the receiver; **drain** — the receiver holds the deliveries (the worker's connections stay busy) while closed-loop submissions with \`webhook_url\` run for ${DURATION} s and every task completes; then it releases them and the backlog drains. \"tail after last submit\" = last completion − last submission. Task latency = \`completed_at − created_at\` (store, ms resolution); in the closed-loop rows it is mostly queueing behind the backlog. CPU % is of one core over the scenario's wall time (submissions + drain); \"CPU µs/task\" = Conduit CPU ÷ tasks; \"other CPU %\" = machine busy time not used by Conduit, the broker, the mock, the receiver or the load generator, in % of one core (the progress polls with sqlite3, curl and jq count here, a few %; much more means other work ran on the machine and the row is suspect). Before each scenario the script waits (up to ${QUIET_WAIT} s) for the machine to be quiet (< ${QUIET_PCT} % of one core busy over a second)."
    echo
    echo "Per run (capacity: accepted/s · completed/s):"
    echo
    row "mode" "accepted/s per run" "completed/s per run" "rate: completed/s per run" "drain: deliveries/s per run"
    row --- --- --- --- ---
    for mode in $MODES; do
        row "$mode" "$(each tasks "$mode" capacity accepted_per_s)" "$(each tasks "$mode" capacity completed_per_s)" \
            "$(each tasks "$mode" rate completed_per_s)" "$(each tasks "$mode" drain wh_rate)"
    done
    echo
    echo "## Webhooks (medians of $REPS)"
    echo
    row "mode" "scenario" "tasks" "deliveries received" "duplicates" "deliveries/s" "latency p50 / p95 / p99 / max ms" "delivery rows delivered / not" "backlog at release"
    row --- --- ---: ---: ---: ---: ---: ---: ---:
    for mode in $MODES; do
        for scenario in webhook drain; do
            [[ " $SCENARIOS " == *" $scenario "* ]] || continue
            lat="$(fmt1 "$(med tasks "$mode" "$scenario" wh_lat_p50_ms)") / $(fmt1 "$(med tasks "$mode" "$scenario" wh_lat_p95_ms)") / $(fmt1 "$(med tasks "$mode" "$scenario" wh_lat_p99_ms)") / $(fmt1 "$(med tasks "$mode" "$scenario" wh_lat_max_ms)")"
            [[ "$scenario" == drain ]] && lat="(backlog: not a latency)"
            row "$mode" "$scenario" "$(fmt0 "$(med tasks "$mode" "$scenario" tasks)")" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" wh_received)")" \
                "$(total tasks "$mode" "$scenario" wh_duplicates) (all runs)" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" wh_rate)")" "$lat" \
                "$(fmt0 "$(med tasks "$mode" "$scenario" wh_delivered_rows)") / $(fmt0 "$(med tasks "$mode" "$scenario" wh_not_delivered_rows)")" \
                "$([[ "$scenario" == drain ]] && fmt0 "$(med tasks "$mode" drain backlog)" || echo –)"
        done
    done
    echo
    echo "Delivery latency = receive time at the receiver − the payload's \`timestamp\` (set by Conduit when it builds the webhook, right after the task's terminal state is stored; ms resolution, same clock): it covers queueing the delivery, the delivery worker (secret lookup, signing) and the HTTP round trip. deliveries/s = (received − 1) ÷ (last − first receive time). In **webhook** the rate is bounded by the task rate offered ($WEBHOOK_RATE/s); **drain** measures the delivery worker's capacity on its own (tasks all finished, backlog queued; the deliveries held at release are not counted). Receiver: \`conduit-webhook-sink\` (C++, epoll, one thread, answers 200 at once)."
    echo
    echo "## Raw queue reference: conduit-queue-bench (medians of $REPS)"
    echo
    row "engine" "phase" "publish msg/s" "publish+consume msg/s" "consume-only msg/s" "confirm p50 / p99 ms" "bench CPU µs/msg" "broker CPU µs/msg"
    row --- --- ---: ---: ---: ---: ---: ---:
    for mode in $MODES; do
        for phase in mixed publish-only consume-only mixed-batched; do
            row "$mode" "$phase" "$(fmt0 "$(med queue "$mode" "$phase" publish_per_s)")" \
                "$(fmt0 "$(med queue "$mode" "$phase" e2e_per_s)")" \
                "$(fmt0 "$(med queue "$mode" "$phase" consume_per_s)")" \
                "$(fmt2 "$(med queue "$mode" "$phase" confirm_ms_p50)") / $(fmt2 "$(med queue "$mode" "$phase" confirm_ms_p99)")" \
                "$(fmt1 "$(med queue "$mode" "$phase" cpu_us_per_msg)")" \
                "$([[ "$mode" == rabbitmq && "$phase" == mixed ]] && fmt1 "$(med queue "$mode" mixed broker_us_per_msg)" || echo –)"
        done
    done
    echo
    echo "$QUEUE_MESSAGES messages of 100 B per phase, one message per \`Publish()\` with at most $CONNECTIONS unconfirmed (the shape of $CONNECTIONS concurrent submissions, each queueing one task step), $NKEYS partition keys over 30 partitions, prefetch 25, concurrency 50, consumer acks at once on $THREADS loop(s), on the server core. **mixed**: the consumer runs while publishing (publish+consume = all $QUEUE_MESSAGES acked); **publish-only** into an unconsumed topic, then **consume-only**: a fresh adapter over the same storage drains it (from its creation to the last ack); **mixed-batched**: the shape of the former \`ThroughputReport\` contract test (batches of 50, up to 2,000 unconfirmed, 1,000 keys, 200 B). "broker CPU µs/msg" = the broker's CPU over the mixed and split phases ÷ the $((2 * QUEUE_MESSAGES)) messages they move (not pinned; on top of the bench's own CPU). With a 0 ms provider, one $KIND task costs exactly one queue message (one publish, one delivery, one ack), plus one more with a webhook: so \"completed ÷ raw\" is the share of the queue's capacity the whole task path reaches."
    echo
    echo "## Memory"
    echo
    row "mode" "Conduit peak RSS MB (VmHWM, last run)"
    row --- ---:
    for mode in $MODES; do
        row "$mode" "$(awk -v k="${PEAK_RSS[$mode]:-0}" 'BEGIN {printf "%.1f", k / 1024}')"
    done
    echo
    echo "## Commands"
    echo
    echo '```'
    echo "TASKS_REPS=$REPS TASKS_DURATION=$DURATION TASKS_CONNECTIONS=$CONNECTIONS TASKS_KEYS=$NKEYS \\"
    echo "  TASKS_RATE=$RATE TASKS_WEBHOOK_RATE=$WEBHOOK_RATE TASKS_KIND=$KIND TASKS_PIN=$PIN \\"
    echo "  TASKS_THREADS=$THREADS TASKS_MODES='$MODES'$([[ -n "$MEDIA_DIR" ]] && echo " TASKS_MEDIA_DIR=$MEDIA_DIR") \\"
    echo "  bench/tasks.sh $BUILD_ARG"
    echo
    sed -e "s#$TMP#\$TMP#g" -e "s#$ROOT/##g" -e "s#$$#\$PID#g" "$COMMANDS"
    echo '```'
    echo
    echo "Store queries (sqlite3, read-only, on the running gateway's \`\$DATA/conduit.db\`): completion is \`SELECT count(*) FROM async_tasks WHERE state IN ('pending','running') AND created_at_ms >= T0 AND created_at_ms < T1\` polled every 250 ms until 0; figures from \`count(*)\`, \`sum(state = 'completed')\`, \`min(created_at_ms)\`, \`max(completed_at_ms)\` and the sorted \`completed_at_ms - created_at_ms\` over the same window. Receiver figures from \`GET /stats\` of conduit-webhook-sink; the drain scenario uses its \`POST /hold\` and \`POST /release\`."
} >"$REPORT"

cat "$REPORT"
log "report written to $REPORT"
