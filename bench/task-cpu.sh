#!/usr/bin/env bash
# Conduit CPU per async task (quick A/B between two builds): image tasks with a 0 ms mock, 16
# virtual keys, closed loop for 5 s, then waits until every task is terminal and prints
# "completed N cpu_ticks T us/task U" (Conduit utime+stime over the run ÷ completed tasks).
# Conduit runs alone on CPU 1 (--threads 1), the mock and the load generator on CPU 0.
#
#   bench/task-cpu.sh [build-dir]      (default build/release)
set -euo pipefail
B="$(cd "${1:-build/release}" && pwd)"
LG="$B/conduit-loadgen"
W="$(mktemp -d /tmp/conduit-task-cpu.XXXXXX)"
GW=18200 MOCK=18201
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
taskset -c 0 "$B/conduit-mock-provider" --listen 127.0.0.1:$MOCK --threads 1 --job-duration-ms 0 \
  --log-level warn >"$W/mock.log" 2>&1 &
CONDUIT_MASTER_KEY=mk taskset -c 1 "$B/conduit" serve --listen 127.0.0.1:$GW --data-dir "$W/data" \
  --threads 1 --log-level warn --task-poll-interval-ms 50 >"$W/gw.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 50); do curl -sf "localhost:$GW/health/live" >/dev/null && break; sleep 0.1; done
A=(-s -H X-API-Key:mk -H Content-Type:application/json)
P=$(curl "${A[@]}" "localhost:$GW/api/ProviderCredentials" -d "{\"providerType\":\"openai-compatible\",\"providerName\":\"mock\",\"baseUrl\":\"http://127.0.0.1:$MOCK/v1\",\"apiKey\":\"x\"}" | jq .id)
M=$(curl "${A[@]}" "localhost:$GW/api/ModelProviderMapping" -d "{\"modelAlias\":\"dall-e-3\",\"providerModelId\":\"gpt-image-1\",\"providerId\":$P,\"supportsChat\":false,\"supportsImageGeneration\":true}" | jq .id)
curl "${A[@]}" "localhost:$GW/api/ModelCosts" -d "{\"costName\":\"i\",\"modelProviderMappingIds\":[$M],\"imageCostPerImage\":0.01}" >/dev/null
G=$(curl "${A[@]}" "localhost:$GW/api/VirtualKeyGroups" -d '{"groupName":"g","initialBalance":100000}' | jq .id)
for i in $(seq 1 16); do
  curl "${A[@]}" "localhost:$GW/api/VirtualKeys" -d "{\"keyName\":\"k$i\",\"virtualKeyGroupId\":$G}" |
    jq -r '"Authorization: Bearer " + .virtualKey'
done >"$W/keys.txt"
echo '{"model":"dall-e-3","prompt":"benchmark"}' >"$W/body.json"
c0=$(awk '{print $14+$15}' "/proc/$GW_PID/stat")
taskset -c 0 "$LG" --url "http://127.0.0.1:$GW/v1/images/generations/async" --method POST \
  --body-file "$W/body.json" --header-per-connection "$W/keys.txt" --duration 5 --warmup 0 \
  --connections 16 2>&1 | grep -E " ok,"
for _ in $(seq 1 120); do
  n=$(sqlite3 "$W/data/conduit.db" "select count(*) from async_tasks where state in ('pending','running')")
  [ "$n" = 0 ] && break
  sleep 0.5
done
c1=$(awk '{print $14+$15}' "/proc/$GW_PID/stat")
n=$(sqlite3 "$W/data/conduit.db" "select count(*) from async_tasks where state='completed'")
hz=$(getconf CLK_TCK)
echo "completed $n cpu_ticks $((c1 - c0)) us/task $(((c1 - c0) * 1000000 / hz / n))"
