#!/usr/bin/env bash
# Serving throughput, quarrel vs llama.cpp's llama-server, on one model:
# for each concurrency, each server alone on loopback, bench/serve-load.py
# for SECONDS. Uses target/release/quarrel and the llama.cpp build that
# bench/vs-llamacpp.sh makes (LLAMACPP_BIN to override).
#   bench/serve-vs-llamacpp.sh MODEL.gguf [SECONDS] [CONCURRENCY...]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; secs=${2:-60}; shift 2 || true
conc=${*:-1 8}
llama=${LLAMACPP_BIN:-/work/cache/llamacpp/build/bin}
port=18080
wait_ready() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0; sleep 0.1
  done
  echo "server did not start" >&2; return 1
}
run() {  # name, clients, command...
  local name=$1 c=$2; shift 2
  "$@" >/tmp/serve-bench-$name.log 2>&1 & local pid=$!
  wait_ready
  # Warm-up, then the measured run.
  python3 bench/serve-load.py --port $port -c "$c" -t 5 -n 16 --json >/dev/null
  echo "$name c=$c $(python3 bench/serve-load.py --port $port -c "$c" -t "$secs" --rss-pid $pid --json)"
  kill -TERM $pid; wait $pid || true
}
for c in $conc; do
  run quarrel "$c" target/release/quarrel serve -m "$model" --port $port -t 2 --parallel "$c"
  run llama-server "$c" "$llama/llama-server" -m "$model" --port $port -t 2 -np "$c" -c $((4096 * c)) --no-webui
done
