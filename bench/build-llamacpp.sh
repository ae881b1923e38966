#!/usr/bin/env bash
# Build llama.cpp's tools (llama-bench, llama-perplexity, llama-tokenize,
# llama-server, and the shared libraries) from the pinned llama-cpp-python
# 0.3.36 source distribution, which vendors llama.cpp, into a cache outside
# the repository. Runs once; later calls reuse the build.
#   bench/build-llamacpp.sh [cpu|cuda]     (cuda: for sm_90 only)
# Cache: $LLAMACPP_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/quarrel/llamacpp.
set -euo pipefail
kind=${1:-cpu}
cache=${LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quarrel/llamacpp}
version=0.3.36
src="$cache/llama_cpp_python-$version"
build="$cache/build-$kind"
mkdir -p "$cache"
if [ ! -d "$src" ]; then
  if [ ! -f "$cache/llama_cpp_python-$version.tar.gz" ]; then
    # The sdist's metadata step needs scikit-build-core; without build
    # isolation pip does not try to build its build dependencies from source.
    python3 -m pip install --quiet scikit-build-core >/dev/null
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
      --no-build-isolation -d "$cache" "llama-cpp-python==$version"
  fi
  tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
fi
command -v cmake >/dev/null || python3 -m pip install --quiet cmake ninja
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=ON
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF)
if [ "$kind" = cuda ]; then
  flags+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON)
else
  flags+=(-DGGML_NATIVE=ON)
fi
# Real paths: a build made through another path to the same tree would be
# redone from scratch.
src=$(realpath "$src"); mkdir -p "$build"; build=$(realpath "$build")
cmake -S "$src/vendor/llama.cpp" -B "$build" "${gen[@]}" "${flags[@]}" >/dev/null
cmake --build "$build" -j "$(nproc)" --target llama-bench llama-perplexity llama-tokenize llama-server
echo "$build/bin"
