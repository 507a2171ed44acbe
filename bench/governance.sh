#!/usr/bin/env bash
# Governance cost, same run, same load (issue 5): chat requests through Conduit with governance
# OFF (a key without limits, a model without a price: no counters call at all) and ON (a key with
# RPM and RPD limits that are never reached, a priced model: rate check + worst-case balance
# reservation + settlement), in the embedded mode (in-process counters) and the Redis mode
# (--redis-url; a private redis-server). Closed-loop throughput and open-loop latency at a fixed
# rate, alternating OFF and ON in every repetition; Redis round trips per request from
# conduit_counters_round_trips_total. Writes bench/results/<UTC date>-governance.md.
#
#   bench/governance.sh [BUILD_DIR]            (default build/release)
#
# Knobs: GOV_REPS=3 GOV_DURATION=8 GOV_WARMUP=2 GOV_CONNECTIONS=32 GOV_RATE=1000 GOV_PIN=1
# GOV_MODES="embedded redis" GOV_OUT_DIR=bench/results GOV_QUIET_WAIT=60 (s, per measurement).
# Needs: conduit, conduit-mock-provider, conduit-loadgen in BUILD_DIR; redis-server, jq, curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-build/release}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
REPS="${GOV_REPS:-3}"
DURATION="${GOV_DURATION:-8}"
WARMUP="${GOV_WARMUP:-2}"
CONNECTIONS="${GOV_CONNECTIONS:-32}"
RATE="${GOV_RATE:-1000}"
PIN="${GOV_PIN:-1}"
MODES="${GOV_MODES:-embedded redis}"
OUT_DIR="${GOV_OUT_DIR:-$ROOT/bench/results}"
QUIET_WAIT="${GOV_QUIET_WAIT:-60}"
MASTER_KEY="bench-master-key-0123456789abcdef"
UPSTREAM_KEY="sk-bench-upstream"
BODY='{"model":"MODEL","max_tokens":64,"messages":[{"role":"user","content":"Say something about governance."}]}'

log() { printf '[governance %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for b in conduit conduit-mock-provider conduit-loadgen; do
    [[ -x "$BUILD/$b" ]] || die "$BUILD/$b missing (build it first)"
done
for c in redis-server redis-cli jq curl; do
    command -v "$c" >/dev/null || die "$c missing (scripts/deps.sh, scripts/engines.sh start redis)"
done

NCPU="$(nproc)"
SERVER_PIN=()
CLIENT_PIN=()
if [[ "$PIN" == 1 && "$NCPU" -ge 2 ]]; then
    SERVER_PIN=(taskset -c 1) # Conduit alone on CPU 1
    CLIENT_PIN=(taskset -c 0) # mock, load generator, redis-server on CPU 0
fi

TMP="$(mktemp -d /tmp/conduit-gov-bench.XXXXXX)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

CLK_TCK="$(getconf CLK_TCK)"
DISK="$(df --output=source "${TMPDIR:-/tmp}" 2>/dev/null | tail -1)"
DISK="${DISK#/dev/}"
QUIET_PCT=25
QUIET_DISK_PCT=10
QUIET_WAITED=0
BUSY_RUNS=0
LAST_QUIET_PCT=0
metric() { # BASE NAME → value (0 when absent)
    curl -fsS "$1/metrics" | awk -v n="$2" '$1 == n {print $2; found = 1} END {if (!found) print 0}'
}
metric_sum() { # BASE NAME → the sum over every series of NAME (labelled or not)
    curl -fsS "$1/metrics" | awk -v n="$2" '
        index($1, n) == 1 && (length($1) == length(n) || substr($1, length(n) + 1, 1) == "{") {
            s += $NF
        }
        END {printf "%d\n", s}'
}

# The mock provider: instant answers, on the client core.
MOCK_PORT="$(free_port)"
"${CLIENT_PIN[@]}" "$BUILD/conduit-mock-provider" --listen "127.0.0.1:$MOCK_PORT" --threads 1 \
    --require-key "$UPSTREAM_KEY" --log-level warn >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/mock/stats" 10 || die "mock did not start"

start_conduit() { # MODE → BASE (global), CONDUIT_PID
    local mode=$1 port extra=()
    port="$(free_port)"
    if [[ "$mode" == redis ]]; then
        REDIS_PORT="$(free_port)"
        "${CLIENT_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
            --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
        REDIS_PID=$!
        PIDS+=("$REDIS_PID")
        for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
        extra=(--redis-url "redis://127.0.0.1:$REDIS_PORT/0")
    fi
    rm -rf "$TMP/data"
    CONDUIT_MASTER_KEY="$MASTER_KEY" "${SERVER_PIN[@]}" "$BUILD/conduit" serve \
        --listen "127.0.0.1:$port" --threads 1 --data-dir "$TMP/data" --log-level warn \
        "${extra[@]}" >"$TMP/conduit-$mode.log" 2>&1 &
    CONDUIT_PID=$!
    PIDS+=("$CONDUIT_PID")
    BASE="http://127.0.0.1:$port"
    wait_http "$BASE/health/live" 20 || die "conduit ($mode) did not start: $(tail -5 "$TMP/conduit-$mode.log")"
}
stop_conduit() {
    kill "$CONDUIT_PID" 2>/dev/null || true
    wait "$CONDUIT_PID" 2>/dev/null || true
    if [[ -n "${REDIS_PID:-}" ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
}
admin() { # PATH JSON → response
    curl -fsS -X POST "$BASE$1" -H "X-API-Key: $MASTER_KEY" -H 'Content-Type: application/json' -d "$2"
}
seed() { # → KEY_OFF, KEY_ON
    local provider free priced group
    provider="$(admin /api/ProviderCredentials "$(jq -nc --arg url "http://127.0.0.1:$MOCK_PORT/v1" \
        --arg key "$UPSTREAM_KEY" '{providerType: "openai-compatible", providerName: "mock", baseUrl: $url, apiKey: $key}')" | jq -r .id)"
    free="$(admin /api/ModelProviderMapping "$(jq -nc --argjson p "$provider" \
        '{modelAlias: "free-model", providerModelId: "mock", providerId: $p}')" | jq -r .id)"
    priced="$(admin /api/ModelProviderMapping "$(jq -nc --argjson p "$provider" \
        '{modelAlias: "priced-model", providerModelId: "mock", providerId: $p}')" | jq -r .id)"
    [[ -n "$free" ]] || die "seeding failed"
    admin /api/ModelCosts "$(jq -nc --argjson m "$priced" '{costName: "priced",
        modelProviderMappingIds: [$m], inputCostPerMillionTokens: 1, outputCostPerMillionTokens: 2}')" >/dev/null
    group="$(admin /api/VirtualKeyGroups '{"groupName":"bench","initialBalance":1000000}' | jq -r .id)"
    KEY_OFF="$(admin /api/VirtualKeys "$(jq -nc --argjson g "$group" \
        '{keyName: "off", virtualKeyGroupId: $g}')" | jq -r .virtualKey)"
    KEY_ON="$(admin /api/VirtualKeys "$(jq -nc --argjson g "$group" \
        '{keyName: "on", virtualKeyGroupId: $g, rateLimitRpm: 100000000, rateLimitRpd: 1000000000}')" | jq -r .virtualKey)"
}
load() { # KEY MODEL OUT [RATE]
    local body="${BODY/MODEL/$2}" rate_args=()
    [[ -n "${4:-}" ]] && rate_args=(--rate "$4")
    wait_quiet
    "${CLIENT_PIN[@]}" "$BUILD/conduit-loadgen" --url "$BASE/v1/chat/completions" --body "$body" \
        -H "Authorization: Bearer $1" --connections "$CONNECTIONS" --duration "$DURATION" \
        --warmup "$WARMUP" "${rate_args[@]}" >"$3" 2>"$3.err" || die "loadgen failed: $(cat "$3.err")"
}

CLK_TCK="$(getconf CLK_TCK)"
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)"
DIRTY="$(git -C "$ROOT" status --porcelain --untracked-files=no | wc -l)"
STARTED="$(date -u '+%Y-%m-%d %H:%M:%S')"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
for mode in $MODES; do
    for rep in $(seq "$REPS"); do
        log "$mode rep $rep"
        start_conduit "$mode"
        seed
        for gov in off on; do
            key=$KEY_OFF
            model=free-model
            if [[ "$gov" == on ]]; then
                key=$KEY_ON
                model=priced-model
            fi
            trips0="$(metric "$BASE" conduit_counters_round_trips_total)"
            reqs0="$(metric_sum "$BASE" conduit_usage_tracking_requests_total)"
            gw_cpu0="$(cpu_ticks "$CONDUIT_PID")"
            rd_cpu0="$(cpu_ticks "${REDIS_PID:-}")"
            load "$key" "$model" "$TMP/$mode-$rep-$gov-closed.json"
            gw_cpu1="$(cpu_ticks "$CONDUIT_PID")"
            rd_cpu1="$(cpu_ticks "${REDIS_PID:-}")"
            reqs_closed="$(($(metric_sum "$BASE" conduit_usage_tracking_requests_total) - reqs0))"
            load "$key" "$model" "$TMP/$mode-$rep-$gov-open.json" "$RATE"
            trips1="$(metric "$BASE" conduit_counters_round_trips_total)"
            reqs1="$(metric_sum "$BASE" conduit_usage_tracking_requests_total)"
            sent="$(jq -r '.requests // .completed // 0' "$TMP/$mode-$rep-$gov-closed.json")"
            sent_open="$(jq -r '.requests // .completed // 0' "$TMP/$mode-$rep-$gov-open.json")"
            # CPU time per request of the closed-loop run (warm-up included, like its count):
            # what governance costs the gateway (and Redis), independent of what else runs.
            cpu_us() { awk -v a="$1" -v b="$2" -v n="$reqs_closed" -v hz="$CLK_TCK" \
                'BEGIN {if (n > 0) printf "%.2f", (b - a) * 1e6 / hz / n; else print "nan"}'; }
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$rep" "$gov" \
                "$(jq -r .rps "$TMP/$mode-$rep-$gov-closed.json")" \
                "$(jq -r .latency_us.p50 "$TMP/$mode-$rep-$gov-open.json")" \
                "$(jq -r .latency_us.p99 "$TMP/$mode-$rep-$gov-open.json")" \
                "$(jq -r '.errors.total' "$TMP/$mode-$rep-$gov-closed.json")" \
                "$(awk -v a="$trips0" -v b="$trips1" 'BEGIN {print b - a}')" \
                "$((reqs1 - reqs0))" "$(cpu_us "$gw_cpu0" "$gw_cpu1")" \
                "$(cpu_us "$rd_cpu0" "$rd_cpu1")" >>"$RESULTS"
            : "$sent" "$sent_open"
        done
        stop_conduit
    done
done

med() { # MODE GOV COLUMN → median over repetitions
    awk -F'\t' -v m="$1" -v g="$2" -v c="$3" '$1 == m && $3 == g {print $c}' "$RESULTS" | sort -g |
        awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
OUT="$OUT_DIR/$(date -u +%Y-%m-%d)-governance.md"
mkdir -p "$OUT_DIR"
{
    echo "# Governance cost benchmark, $(date -u +%Y-%m-%d)"
    echo
    echo "Generated by \`bench/governance.sh\` at $STARTED UTC."
    echo
    echo "## Set-up"
    echo
    echo "- CPUs: $NCPU × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load average at start: $LOAD_AT_START"
    echo "- Built from commit $COMMIT$( ((DIRTY > 0)) && echo " + uncommitted changes in $DIRTY tracked file(s)"); binaries from \`${BUILD#"$ROOT"/}\`"
    echo "- Pinning: $([[ ${#SERVER_PIN[@]} -gt 0 ]] && echo 'Conduit (--threads 1) alone on CPU 1; mock, load generator and redis-server on CPU 0' || echo 'none')"
    echo "- Load: \`POST /v1/chat/completions\` (max_tokens 64) to the mock provider (instant answers); closed loop with $CONNECTIONS connections for ${DURATION} s (+${WARMUP} s warm-up), then open loop at $RATE requests/s for latency."
    echo "- **OFF**: a key without limits and a model without a price — no counters call at all. **ON**: a key with RPM 100,000,000 and RPD 1,000,000,000 (never reached) and a priced model — rate check, worst-case balance reservation and settlement for every request. Round trips per request: the \`conduit_counters_round_trips_total\` delta over the gateway's own count of requests served (\`conduit_usage_tracking_requests_total\`, warm-up included on both sides)."
    echo "- Modes: embedded (in-process counters) and redis (a private \`redis-server\` on CPU 0, \`--redis-url\`)."
    echo "- $REPS repetitions, OFF and ON alternating within each; **medians**. Quiet-wait before each measurement (< 25 % of a core and the disk < 10 % busy, at most ${QUIET_WAIT} s): ${QUIET_WAITED} s waited, ${BUSY_RUNS} measurement(s) started on a busy machine."
    echo
    echo "## Summary"
    echo
    echo "| mode | req/s OFF | req/s ON | ON ÷ OFF | p50 / p99 µs OFF (at $RATE/s) | p50 / p99 µs ON | Redis round trips per request (ON) | gateway CPU µs/request OFF / ON (ON ÷ OFF) | Redis CPU µs/request (ON) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for mode in $MODES; do
        off="$(med "$mode" off 4)"
        on="$(med "$mode" on 4)"
        ratio="$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}')"
        trips="$(awk -F'\t' -v m="$mode" '$1 == m && $3 == "on" {t += $8; n += $9} END {if (n) printf "%.2f", t / n; else print "–"}' "$RESULTS")"
        cpu_off="$(med "$mode" off 10)"
        cpu_on="$(med "$mode" on 10)"
        cpu_ratio="$(awk -v a="$cpu_on" -v b="$cpu_off" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "nan"}')"
        echo "| $mode | $(printf '%.0f' "$off") | $(printf '%.0f' "$on") | $ratio | $(med "$mode" off 5) / $(med "$mode" off 6) | $(med "$mode" on 5) / $(med "$mode" on 6) | $trips | $cpu_off / $cpu_on ($cpu_ratio) | $(med "$mode" on 11) |"
    done
    echo
    echo "## Targets (issue 5)"
    echo
    echo "| target | mode | measured | verdict |"
    echo "| --- | --- | ---: | --- |"
    for mode in $MODES; do
        off="$(med "$mode" off 4)"
        on="$(med "$mode" on 4)"
        cost="$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.1f", 100 * (1 - a / b)}')"
        verdict="$(awk -v c="$cost" 'BEGIN {print (c <= 10) ? "**PASS**" : "**FAIL**"}')"
        echo "| throughput cost ≤ 10 % | $mode | $cost % | $verdict |"
        cpu_cost="$(awk -v a="$(med "$mode" on 10)" -v b="$(med "$mode" off 10)" 'BEGIN {if (b > 0) printf "%.1f", 100 * (a / b - 1); else print "nan"}')"
        verdict="$(awk -v c="$cpu_cost" 'BEGIN {print (c != "nan" && c <= 10) ? "**PASS**" : "**FAIL**"}')"
        echo "| gateway CPU per request + ≤ 10 % (same target, measured as CPU time) | $mode | $cpu_cost % | $verdict |"
        if [[ "$mode" == redis ]]; then
            trips="$(awk -F'\t' '$1 == "redis" && $3 == "on" {t += $8; n += $9} END {if (n) printf "%.2f", t / n; else print "nan"}' "$RESULTS")"
            verdict="$(awk -v t="$trips" 'BEGIN {print (t != "nan" && t <= 1) ? "**PASS**" : "**FAIL**"}')"
            echo "| ≤ 1 Redis round trip per request | redis | $trips | $verdict |"
        fi
    done
    echo
    echo "## Every run"
    echo
    echo "| mode | rep | governance | req/s (closed) | p50 µs (open) | p99 µs (open) | errors | round trips | requests | gateway CPU µs/request | Redis CPU µs/request |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    awk -F'\t' '{printf "| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}' "$RESULTS"
    echo
    echo "## Command"
    echo
    echo "\`GOV_REPS=$REPS GOV_DURATION=$DURATION GOV_CONNECTIONS=$CONNECTIONS GOV_RATE=$RATE GOV_MODES=\"$MODES\" bench/governance.sh ${BUILD#"$ROOT"/}\`"
} >"$OUT"
log "wrote $OUT"
cat "$OUT"
