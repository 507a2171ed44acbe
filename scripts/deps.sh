#!/usr/bin/env bash
# Installs every Debian package Conduit needs to build, test and benchmark. Idempotent.
# Never installs libboost-all-dev (1.74, conflicts with 1.81).
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build ccache lld pkg-config git curl ca-certificates
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-system1.81-dev
  libssl-dev libcurl4-openssl-dev libsqlite3-dev libsimdjson-dev libspdlog-dev libfmt-dev
  libyaml-cpp-dev libcli11-dev libexpected-dev libjemalloc-dev
  libhiredis-dev libpq-dev librabbitmq-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format nodejs chromium
  nginx  # the load balancer of the e2e cluster (tests/e2e/cluster.mjs)
  python3-yaml  # scripts/check-deploy.sh parses the compose and Kubernetes files
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "deps: installing ${missing[*]}"
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
