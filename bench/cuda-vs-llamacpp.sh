#!/usr/bin/env bash
# On the GPU machine: builds llama.cpp with CUDA (sm_90 only) from the
# source that bench/pack-llamacpp.sh packed here, synthesizes each model
# with quarrel, then runs llama-bench (-ngl 99 -fa 1) and `quarrel bench
# --device cuda` alternately on the same files and prints the ratio table.
#   bench/cuda-vs-llamacpp.sh SRC.tar.xz [-r ROUNDS] PRESET:TYPE...
#   e.g. bench/cuda-vs-llamacpp.sh carry/llamacpp-src.tar.xz -r 3 llama3-8b:q4_k_m qwen2.5-0.5b:q4_k_m
# Files go to $WORK (default /tmp/quarrel-cuda); the build takes about 5
# minutes on 16 cores.
set -euo pipefail
Q=${QUARREL:-$PWD/target/release/quarrel}
W=${WORK:-/tmp/quarrel-cuda}
tarball=$1; shift
rounds=3
if [ "${1:-}" = -r ]; then rounds=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 SRC.tar.xz [-r ROUNDS] PRESET:TYPE..." >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$W/llamacpp"
bench=$W/llamacpp/build/bin/llama-bench
if [ ! -x "$bench" ]; then
  tar -xJf "$tarball" -C "$W/llamacpp"
  cmake -S "$W/llamacpp/llama.cpp" -B "$W/llamacpp/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build "$W/llamacpp/build" -j "$(nproc)" --target llama-bench >/dev/null
fi
out=$(mktemp -d)
names=()
for spec in "$@"; do
  f=$W/${spec%%:*}-${spec##*:}.gguf
  [ -s "$f" ] || "$Q" synth --preset "${spec%%:*}" --type "${spec##*:}" -o "$f" >/dev/null
  names+=("$(basename "$f" .gguf)")
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for r in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    echo "round $r: $name" >&2
    "$bench" -m "$W/$name.gguf" -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o json > "$out/llama-$name-$r.json"
    "$Q" bench --device cuda -m "$W/$name.gguf" -p 512 -n 128 -r 3 -o json > "$out/quarrel-$name-$r.json"
  done
done
"$here/ratio-table.py" "$out" "${names[@]}"
rm -rf "$out"
