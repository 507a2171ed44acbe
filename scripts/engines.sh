#!/usr/bin/env bash
# Starts and stops the distributed engines (RabbitMQ, Redis, PostgreSQL) on loopback, on
# non-default ports, with their data in a state directory, for tests and CI. Idempotent.
#
#   scripts/engines.sh start rabbitmq|redis|postgres|all
#   scripts/engines.sh stop  rabbitmq|redis|postgres|all
#   scripts/engines.sh status [engine|all]
#   scripts/engines.sh env    [engine|all]     # prints the export lines only
#   scripts/engines.sh reset  [engine|all]     # stop + delete the engine's data
#
# `start` installs the Debian package when it is missing (as root; the package's own service is
# kept from starting), starts the engine, waits until it answers and prints the variables the
# tests read, e.g. `export CONDUIT_TEST_AMQP=amqp://guest:guest@127.0.0.1:5699/`. Use
# `eval "$(scripts/engines.sh start all | grep ^export)"` to load them into a shell.
#
# Environment: CONDUIT_ENGINES_DIR (state, default /tmp/conduit-engines), CONDUIT_AMQP_PORT
# (5699), CONDUIT_REDIS_PORT (6390), CONDUIT_PG_PORT (5499). A second, private RabbitMQ beside the
# default one needs its own node name and ports: CONDUIT_RMQ_NODE (conduit@localhost),
# CONDUIT_RMQ_DIST_PORT (Erlang distribution port, default AMQP port + 20000) and optionally
# CONDUIT_EPMD_PORT (a private epmd for the node and its CLI tools; default: the shared one, 4369).
set -euo pipefail

STATE="${CONDUIT_ENGINES_DIR:-/tmp/conduit-engines}"
AMQP_PORT="${CONDUIT_AMQP_PORT:-5699}"
REDIS_PORT="${CONDUIT_REDIS_PORT:-6390}"
PG_PORT="${CONDUIT_PG_PORT:-5499}"
RMQ_NODE="${CONDUIT_RMQ_NODE:-conduit@localhost}"
RMQ_DIST_PORT="${CONDUIT_RMQ_DIST_PORT:-$((AMQP_PORT + 20000))}"
EPMD_PORT="${CONDUIT_EPMD_PORT:-}"

log() { printf 'engines: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Runs a command as `user` (root is required to switch users).
as_user() {
  local user=$1
  shift
  if [ "$(id -un)" = "$user" ]; then
    "$@"
  elif [ "$(id -u)" -eq 0 ]; then
    runuser -u "$user" -- "$@"
  else
    sudo -u "$user" -- "$@"
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Installs Debian packages if missing, without letting their services start (a policy-rc.d that
# denies every start, removed afterwards unless one was already there).
install_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    $SUDO apt-get update -qq || true
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  fi
  [ "$added" -eq 1 ] && $SUDO rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

# Waits up to $2 seconds for the command "${@:3}" to succeed.
wait_until() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
  log "$what is up"
}

# ---------------------------------------------------------------- RabbitMQ

# The environment of the server and of the CLI tools (same node name, cookie and paths).
rmq_env() {
  local dir="$STATE/rabbitmq"
  RMQ_ENV=(
    HOME=/var/lib/rabbitmq # holds the Erlang cookie shared by the server and the CLI tools
    RABBITMQ_NODENAME="$RMQ_NODE"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$AMQP_PORT"
    RABBITMQ_DIST_PORT="$RMQ_DIST_PORT"
    ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_MNESIA_BASE="$dir/mnesia"
    RABBITMQ_LOG_BASE="$dir/log"
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
    # Erlang distribution (used by the CLI tools) on loopback only.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  )
  [ -z "$EPMD_PORT" ] || RMQ_ENV+=(ERL_EPMD_PORT="$EPMD_PORT")
}

rmq_ctl() {
  local tool=$1
  shift
  rmq_env
  as_user rabbitmq env "${RMQ_ENV[@]}" "/usr/lib/rabbitmq/bin/$tool" "$@"
}

rmq_ping() { rmq_ctl rabbitmq-diagnostics -q -n "$RMQ_NODE" ping >/dev/null 2>&1; }

rmq_ready() {
  port_open "$AMQP_PORT" && rmq_ctl rabbitmq-diagnostics -q -n "$RMQ_NODE" check_port_connectivity
}

start_rabbitmq() {
  install_pkgs rabbitmq-server
  local dir="$STATE/rabbitmq"
  if port_open "$AMQP_PORT"; then
    # Running (the CLI tools can be slow to reach a busy node: a second server must not be
    # started over it, its failure would delete the running node's pid file).
    wait_until "rabbitmq ping" 60 rmq_ping ||
      die "something listens on 127.0.0.1:$AMQP_PORT but node $RMQ_NODE does not answer"
    log "rabbitmq already running on 127.0.0.1:$AMQP_PORT"
  else
    $SUDO mkdir -p "$dir/mnesia" "$dir/log"
    # No plugins (no management listener); loopback-only listeners come from the env above.
    echo '[].' | $SUDO tee "$dir/enabled_plugins" >/dev/null
    echo 'loopback_users.guest = true' | $SUDO tee "$dir/rabbitmq.conf" >/dev/null
    echo '[].' | $SUDO tee "$dir/advanced.config" >/dev/null
    $SUDO chown -R rabbitmq:rabbitmq "$dir"
    $SUDO chmod 755 "$STATE" "$dir"
    local t0=$SECONDS
    log "starting rabbitmq ($RMQ_NODE) on 127.0.0.1:$AMQP_PORT, data in $dir"
    (cd /var/lib/rabbitmq && rmq_ctl rabbitmq-server -detached)
    if ! wait_until rabbitmq 120 rmq_ready; then
      tail -n 30 "$dir"/log/*.log >&2 2>/dev/null || true
      die "rabbitmq did not start within 120 s"
    fi
    log "rabbitmq started in $((SECONDS - t0)) s"
  fi
  echo "export CONDUIT_TEST_AMQP=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
}

stop_rabbitmq() {
  local dir="$STATE/rabbitmq"
  [ -x /usr/lib/rabbitmq/bin/rabbitmqctl ] || return 0
  if port_open "$AMQP_PORT" || rmq_ping; then
    # With a pid file, `stop` returns once the process is gone; without one it would wait for
    # the file to appear, so it is only passed when it exists.
    local pidfile=()
    [ -f "$dir/rabbitmq.pid" ] && pidfile=("$dir/rabbitmq.pid")
    rmq_ctl rabbitmqctl -q -n "$RMQ_NODE" stop "${pidfile[@]}" >/dev/null 2>&1 || true
    wait_until "rabbitmq shutdown" 60 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT)" ||
      die "rabbitmq did not stop"
  fi
  if [ -f "$dir/rabbitmq.pid" ]; then
    local pid
    pid=$(cat "$dir/rabbitmq.pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      $SUDO kill "$pid" 2>/dev/null || true
    fi
    $SUDO rm -f "$dir/rabbitmq.pid"
  fi
  log "rabbitmq stopped"
}

status_rabbitmq() {
  if port_open "$AMQP_PORT"; then echo "rabbitmq: up (127.0.0.1:$AMQP_PORT)"; else echo "rabbitmq: down"; fi
}
env_rabbitmq() { echo "export CONDUIT_TEST_AMQP=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"; }

# ---------------------------------------------------------------- Redis

start_redis() {
  install_pkgs redis-server
  local dir="$STATE/redis"
  if port_open "$REDIS_PORT"; then
    log "redis already running on 127.0.0.1:$REDIS_PORT"
  else
    $SUDO mkdir -p "$dir"
    $SUDO chown -R redis:redis "$dir" 2>/dev/null || true
    as_user redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
      --appendonly no --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
      die "redis-server failed to start"
    wait_until redis 30 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || die "redis did not start"
  fi
  echo "export CONDUIT_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT/0"
}

stop_redis() {
  if port_open "$REDIS_PORT"; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    # Wait for the port to close, so an immediate `start` really starts a new server.
    wait_until "redis shutdown" 30 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT)" ||
      die "redis did not stop"
  fi
  log "redis stopped"
}

status_redis() {
  if port_open "$REDIS_PORT"; then echo "redis: up (127.0.0.1:$REDIS_PORT)"; else echo "redis: down"; fi
}
env_redis() { echo "export CONDUIT_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT/0"; }

# ---------------------------------------------------------------- PostgreSQL

pg_bin() {
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
    sort -V | tail -n 1)
  [ -n "$d" ] || die "PostgreSQL binaries not found"
  echo "$d"
}

start_postgres() {
  install_pkgs postgresql
  local dir="$STATE/postgres" bin
  bin=$(pg_bin)
  if port_open "$PG_PORT"; then
    log "postgres already running on 127.0.0.1:$PG_PORT"
  else
    $SUDO mkdir -p "$dir"
    $SUDO chown postgres:postgres "$dir"
    $SUDO chmod 700 "$dir"
    $SUDO chmod 755 "$STATE"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_user postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >/dev/null ||
        die "initdb failed"
    fi
    as_user postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off" \
      start >/dev/null || die "postgres failed to start (see $dir/postgres.log)"
    log "postgres is up"
  fi
  echo "export CONDUIT_TEST_PG=postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

stop_postgres() {
  local dir="$STATE/postgres"
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_user postgres "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  log "postgres stopped"
}

status_postgres() {
  if port_open "$PG_PORT"; then echo "postgres: up (127.0.0.1:$PG_PORT)"; else echo "postgres: down"; fi
}
env_postgres() { echo "export CONDUIT_TEST_PG=postgresql://postgres@127.0.0.1:$PG_PORT/postgres"; }

# ---------------------------------------------------------------- main

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
target=${2:-all}
case "$target" in
  all) engines=(rabbitmq redis postgres) ;;
  rabbitmq | redis | postgres) engines=("$target") ;;
  *) usage ;;
esac

case "$cmd" in
  start)
    $SUDO mkdir -p "$STATE"
    $SUDO chmod 755 "$STATE"
    for e in "${engines[@]}"; do "start_$e"; done
    ;;
  stop)
    for e in "${engines[@]}"; do "stop_$e"; done
    ;;
  status)
    for e in "${engines[@]}"; do "status_$e"; done
    ;;
  env)
    for e in "${engines[@]}"; do "env_$e"; done
    ;;
  reset)
    for e in "${engines[@]}"; do
      "stop_$e"
      $SUDO rm -rf "${STATE:?}/$e"
    done
    ;;
  *) usage ;;
esac
