#!/usr/bin/env bash
# Starts the mock provider and the gateway on the embedded default (SQLite in ./conduit-data),
# seeds a demo provider, model mappings, prices, a group and a virtual key through the admin
# API, prints the key and a working streamed-chat curl, then serves until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build/release}"
GATEWAY_PORT="${CONDUIT_DEMO_PORT:-5000}"
MOCK_PORT="${CONDUIT_DEMO_MOCK_PORT:-8090}"
DATA_DIR="${CONDUIT_DATA_DIR:-./conduit-data}"
UPSTREAM_KEY="demo-upstream-key"
LOG_DIR="$DATA_DIR/logs"
mkdir -p "$LOG_DIR"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BUILD_DIR/conduit-mock-provider" --listen "127.0.0.1:$MOCK_PORT" --require-key "$UPSTREAM_KEY" \
  --latency-ms 40 --tokens-per-second 40 >"$LOG_DIR/mock.log" 2>&1 &
pids+=($!)
"$BUILD_DIR/conduit" serve --listen "0.0.0.0:$GATEWAY_PORT" --data-dir "$DATA_DIR" \
  >"$LOG_DIR/gateway.out" 2>"$LOG_DIR/gateway.log" &
pids+=($!)

base="http://127.0.0.1:$GATEWAY_PORT"
for _ in $(seq 1 100); do
  curl -fsS "$base/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/health/ready" >/dev/null || { echo "gateway did not start; see $LOG_DIR/gateway.log"; exit 1; }

MASTER_KEY="${CONDUIT_MASTER_KEY:-$(cat "$DATA_DIR/master.key")}"
api() { curl -fsS -H "X-API-Key: $MASTER_KEY" -H 'Content-Type: application/json' "$@"; }
json_field() { sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p" | head -n1; }

if ! api "$base/api/ProviderCredentials" | grep -q '"providerName":"demo-mock"'; then
  provider_id=$(api -X POST "$base/api/ProviderCredentials" -d "{\"providerType\":\"openai-compatible\",\"providerName\":\"demo-mock\",\"baseUrl\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"apiKey\":\"$UPSTREAM_KEY\"}" | json_field id)
  chat_map=$(api -X POST "$base/api/ModelProviderMapping" -d "{\"modelAlias\":\"gpt-4o-mini\",\"providerModelId\":\"mock-gpt-4o-mini\",\"providerId\":$provider_id}" | json_field id)
  emb_map=$(api -X POST "$base/api/ModelProviderMapping" -d "{\"modelAlias\":\"text-embedding-3-small\",\"providerModelId\":\"mock-embedding\",\"providerId\":$provider_id,\"supportsChat\":false,\"supportsEmbeddings\":true}" | json_field id)
  img_map=$(api -X POST "$base/api/ModelProviderMapping" -d "{\"modelAlias\":\"dall-e-3\",\"providerModelId\":\"mock-image\",\"providerId\":$provider_id,\"supportsChat\":false,\"supportsImageGeneration\":true}" | json_field id)
  api -X POST "$base/api/ModelCosts" -d "{\"costName\":\"demo-chat\",\"modelProviderMappingIds\":[$chat_map],\"inputCostPerMillionTokens\":0.15,\"outputCostPerMillionTokens\":0.60}" >/dev/null
  api -X POST "$base/api/ModelCosts" -d "{\"costName\":\"demo-embedding\",\"modelProviderMappingIds\":[$emb_map],\"embeddingCostPerMillionTokens\":0.02}" >/dev/null
  api -X POST "$base/api/ModelCosts" -d "{\"costName\":\"demo-image\",\"modelProviderMappingIds\":[$img_map],\"imageCostPerImage\":0.04}" >/dev/null
  api -X POST "$base/api/VirtualKeyGroups" -d '{"groupName":"demo","initialBalance":25}' >/dev/null
fi
group_id=$(api "$base/api/VirtualKeyGroups" | sed -n 's/.*{"id":\([0-9]*\),"groupName":"demo".*/\1/p' | head -n1)
key=$(api -X POST "$base/api/VirtualKeys" -d "{\"keyName\":\"demo-$(date +%s)\",\"virtualKeyGroupId\":$group_id}" | sed -n 's/.*"virtualKey":"\(condt_[^"]*\)".*/\1/p')

cat <<TXT

Conduit is running on $base (embedded mode: SQLite in $DATA_DIR; logs in $LOG_DIR).
Master key (admin API, X-API-Key): stored in $DATA_DIR/master.key

Your virtual key:
  $key

Streamed chat through the gateway:
  curl -N $base/v1/chat/completions \\
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

Also: GET $base/v1/models, POST $base/v1/embeddings, $base/metrics, $base/health/ready
Press Ctrl-C to stop.
TXT
wait "${pids[1]}"
