#!/usr/bin/env bash
# Regenerate llama.cpp's logits for the synthetic test models
# (crates/cli/tests/data/synthetic/*.npy). Needs a local llama.cpp build
# (bench/build-llamacpp.sh makes it) and its Python bindings from the pinned
# sources.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(bench/build-llamacpp.sh cpu | tail -1)
cache=${LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quarrel/llamacpp}
src="$cache/llama_cpp_python-0.3.36"
python3 -m pip install --quiet gguf numpy diskcache
out=crates/cli/tests/data/synthetic
mkdir -p "$out"
cargo build -p quarrel
tmp=$(mktemp -d)
for preset in tiny-llama tiny-llama3 tiny-mistral tiny-phi3 tiny-qwen2 tiny-gemma3; do
  target/debug/quarrel synth --preset "$preset" --type q8_0 -o "$tmp/$preset.gguf"
  PYTHONPATH="$src" LLAMA_CPP_LIB_PATH="$lib" \
    python3 scripts/compare-logits.py "$tmp/$preset.gguf" --save "$out/$preset-q8_0.npy"
done
rm -rf "$tmp"
