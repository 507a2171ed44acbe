#!/usr/bin/env bash
# Checks the deployment artefacts (deploy/: systemd units, docker-compose.yml + Dockerfile,
# Kubernetes manifests) and docs/operations.md against the real binary and scripts: every
# flag and CONDUIT_* name is one `conduit serve` accepts, the settings start a gateway that
# answers /health/live and /health/ready and drains on SIGTERM within the configured stop
# timeouts, ports / health paths / volumes / selectors agree, YAML parses, the nginx template
# rendered for the compose gateways passes `nginx -t`. Docker and a cluster are not needed.
# With the test engines up (CONDUIT_TEST_PG, CONDUIT_TEST_REDIS, CONDUIT_TEST_AMQP, as
# scripts/test.sh exports them) the systemd file's distributed settings are started against them.
#
#   scripts/check-deploy.sh [BUILD_DIR | path/to/conduit]     (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-build/release}"
bin="$target"
[ -d "$target" ] && bin="$target/conduit"
[ -x "$bin" ] || { echo "check-deploy: no conduit executable at $bin" >&2; exit 2; }
# The first Python 3 with PyYAML: the one on PATH, else Debian's (python3-yaml, scripts/deps.sh).
py=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
    py="$candidate"
    break
  fi
done
[ -n "$py" ] || { echo "check-deploy: no python3 with PyYAML (scripts/deps.sh installs python3-yaml)" >&2; exit 2; }
exec "$py" scripts/check_deploy.py "$bin"
