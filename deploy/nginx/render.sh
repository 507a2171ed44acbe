#!/bin/sh
# Renders deploy/nginx/conduit.conf (a template) for a set of Conduit gateway instances and prints
# the result: an nginx config for the `http {}` context.
#
#   deploy/nginx/render.sh [options] HOST:PORT [HOST:PORT ...]
#
#   --listen ADDR        nginx listen address or port (default 8080)
#   --max-body BYTES     client_max_body_size; keep it equal to the gateways' server.max_body_bytes
#                        (CONDUIT_MAX_BODY_BYTES; default 33554432, the gateway default)
#   --access-log PATH    access log (default /var/log/nginx/conduit.access.log; "off" disables it)
#   --keepalive N        idle keep-alive connections per worker to each upstream (default 32)
#   --template FILE      template to render (default: conduit.conf next to this script)
#
# Instance K (0-based, in argument order) is upstream conduit_nK and marks its hub tokens "nK.";
# keep the order stable across reloads, or live hub sessions are routed to the wrong instance.
# POSIX sh + awk (runs in the nginx container too).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
template="$here/conduit.conf"
listen=8080
max_body=33554432
access_log=/var/log/nginx/conduit.access.log
keepalive=32

die() { echo "render.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --listen) [ $# -ge 2 ] || die "--listen needs a value"; listen=$2; shift 2 ;;
    --max-body) [ $# -ge 2 ] || die "--max-body needs a value"; max_body=$2; shift 2 ;;
    --access-log) [ $# -ge 2 ] || die "--access-log needs a value"; access_log=$2; shift 2 ;;
    --keepalive) [ $# -ge 2 ] || die "--keepalive needs a value"; keepalive=$2; shift 2 ;;
    --template) [ $# -ge 2 ] || die "--template needs a value"; template=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    --*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || die "give at least one gateway address (HOST:PORT)"
for node in "$@"; do
  case "$node" in
    *:*) ;;
    *) die "gateway address '$node' must be HOST:PORT" ;;
  esac
  case "$node" in
    *[!A-Za-z0-9.:_\[\]-]*) die "gateway address '$node' has characters nginx would misread" ;;
  esac
done
case "$keepalive" in ''|*[!0-9]*) die "--keepalive must be a number" ;; esac
case "$max_body" in ''|*[!0-9]*) die "--max-body must be a number of bytes" ;; esac
case "$listen" in ''|*[\;{}\ ]*) die "--listen must be an address or port" ;; esac
case "$access_log" in ''|*[\;{}\ ]*) die "--access-log must be a path or off" ;; esac
[ -r "$template" ] || die "template $template not readable"

awk -v nodes="$*" -v listen="$listen" -v max_body="$max_body" -v access_log="$access_log" \
    -v keepalive="$keepalive" '
BEGIN {
  n = split(nodes, node, " ");
  if (access_log == "off") access_log_line = "off"; else access_log_line = access_log;
}
/^@@UPSTREAMS@@$/ {
  print "# Every instance (plain HTTP and negotiate fallback)."
  print "upstream conduit_all {";
  for (i = 1; i <= n; i++) printf "    server %s max_fails=1 fail_timeout=5s;\n", node[i];
  printf "    keepalive %d;\n", keepalive;
  print "}";
  print "# One per instance: where a marked hub token is routed.";
  for (i = 1; i <= n; i++) {
    printf "upstream conduit_n%d {\n    server %s;\n    keepalive %d;\n}\n", i - 1, node[i], keepalive;
  }
  next;
}
/^@@NEGOTIATE_SPLIT@@$/ {
  print "split_clients \"${request_id}\" $conduit_negotiate_1 {";
  share = int(10000 / n) / 100;
  for (i = 1; i < n; i++) printf "    %.2f%% n%d;\n", share, i - 1;
  printf "    * n%d;\n", n - 1;
  print "}";
  for (k = 1; k <= 2; k++) {
    printf "map $conduit_negotiate_%d $conduit_negotiate_%d {\n", k, k + 1;
    for (i = 0; i < n; i++) printf "    n%d n%d;\n", i, (i + 1) % n;
    print "}";
  }
  next;
}
{
  gsub(/@@LISTEN@@/, listen);
  gsub(/@@MAX_BODY@@/, max_body);
  gsub(/@@ACCESS_LOG@@/, access_log_line);
  print;
}
' "$template"
