#!/usr/bin/env bash
# CPU throughput: quarrel bench against llama.cpp's llama-bench on the same
# GGUF files and thread count, alternating engine by engine for R rounds,
# then a ratio table of medians. One benchmark at a time: run it on an idle
# machine.
#   bench/vs-llamacpp.sh [-t THREADS] [-r ROUNDS] [-i REPS] [-p N_PROMPT] [-n N_GEN] MODEL.gguf...
# Each round runs each engine once per model with REPS repetitions (1 by
# default); the table shows the median over rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc); rounds=3; reps=1; pp=512; tg=128
while getopts "t:r:i:p:n:" o; do
  case $o in t) threads=$OPTARG ;; r) rounds=$OPTARG ;; i) reps=$OPTARG ;; p) pp=$OPTARG ;; n) tg=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-t T] [-r R] [-p N] [-n N] MODEL.gguf..." >&2; exit 2; }
bin=$(bench/build-llamacpp.sh cpu | tail -1)
cargo build --release --bin quarrel >&2
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  for m in "$@"; do
    name=$(basename "$m" .gguf)
    echo "round $r: $name" >&2
    "$bin/llama-bench" -m "$m" -t "$threads" -p "$pp" -n "$tg" -r "$reps" -o json > "$out/llama-$name-$r.json"
    target/release/quarrel bench -m "$m" -t "$threads" -p "$pp" -n "$tg" -r "$reps" -o json > "$out/quarrel-$name-$r.json"
  done
done
bench/ratio-table.py "$out" $(for m in "$@"; do basename "$m" .gguf; done)
rm -rf "$out"
