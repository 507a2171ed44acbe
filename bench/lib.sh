#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (bench/tasks.sh, bench/hubs.sh, bench/governance.sh).
# Source it after defining `log`; the callers provide the globals the helpers read:
#   TMP (scratch dir), PIDS (array of background PIDs), DISK (block device for disk_io_ms),
#   CLK_TCK, QUIET_WAIT (s), QUIET_PCT (% of a core), QUIET_DISK_PCT, QUIET_WAITED, BUSY_RUNS.
# wait_quiet also sets LAST_QUIET_PCT.

die() {
    log "error: $*"
    exit 1
}

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

stop_pid() { # PID
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

start_bg() { # NAME CMD... → LAST_PID
    local name="$1"
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

forget_pid() { # PID
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ "$p" == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

listening_url() { # NAME → URL from "listening on http://..." in $TMP/NAME.out
    local url=""
    for _ in $(seq 1 100); do
        url="$(sed -n 's#.*listening on \(http://[^ ]*\).*#\1#p' "$TMP/$1.out" 2>/dev/null | head -1)"
        [[ -n "$url" ]] && break
        sleep 0.05
    done
    [[ -n "$url" ]] || die "$1 did not start: $(cat "$TMP/$1.err")"
    printf '%s' "$url"
}

free_port() {
    # Below the kernel's ephemeral range: a port there may be some client's source port, which a
    # connect probe does not see but bind() then refuses.
    local p lo
    lo="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    ((lo > 11000)) || lo=32768
    for _ in $(seq 1 200); do
        p=$((10000 + RANDOM % (lo - 10000)))
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
        curl -s -o /dev/null -m 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

cpu_ticks() { # PID → utime + stime (all threads)
    if [[ -z "$1" || ! -r "/proc/$1/stat" ]]; then
        echo 0
        return
    fi
    awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0
}

machine_busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }

disk_io_ms() { awk -v d="$DISK" '$3 == d {print $13; found = 1} END {if (!found) print 0}' /proc/diskstats; }

wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) b0 b1 d0 d1 pct disk
    while :; do
        b0="$(machine_busy_ticks)"
        d0="$(disk_io_ms)"
        sleep 1
        b1="$(machine_busy_ticks)"
        d1="$(disk_io_ms)"
        pct=$((100 * (b1 - b0) / CLK_TCK))
        disk=$(((d1 - d0) / 10))
        LAST_QUIET_PCT=$pct
        ((pct < QUIET_PCT && disk < QUIET_DISK_PCT)) && return 0
        if ((SECONDS >= deadline)); then
            log "machine still busy ($pct % of a core, disk $disk % busy); measuring anyway"
            BUSY_RUNS=$((BUSY_RUNS + 1))
            return 0
        fi
        QUIET_WAITED=$((QUIET_WAITED + 1))
    done
}

row() {
    local IFS='|'
    printf '| %s |\n' "$*" | sed 's/|/ | /g; s/^ | /| /; s/  *|$/ |/'
}

# start_on_free_port NAME BUILD → LAST_PID, STARTED_URL; the started command in STARTED_CMD.
# Picks a free port, calls BUILD PORT (a function that sets the array STARTED_CMD), starts it with
# start_bg and waits for /health/live; tries another port when one was taken meanwhile (free_port
# only probes). Dies with the server's last output otherwise.
start_on_free_port() {
    local name="$1" build="$2" port attempt
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        STARTED_URL="http://127.0.0.1:$port"
        "$build" "$port"
        start_bg "$name" "${STARTED_CMD[@]}"
        if wait_http "$STARTED_URL/health/live" 30; then
            return 0
        fi
        stop_pid "$LAST_PID"
        forget_pid "$LAST_PID"
        grep -q 'Address already in use' "$TMP/$name.err" && ((attempt < 5)) && continue
        die "$name did not start: $(tail -20 "$TMP/$name.err")"
    done
}
