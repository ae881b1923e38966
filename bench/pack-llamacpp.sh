#!/usr/bin/env bash
# Packs the llama.cpp that the pinned llama-cpp-python 0.3.36 source
# distribution vendors, without its models, docs, tests, examples and
# benches (76 MB of sdist, 8.6 MB left), so that it fits what a call to the
# GPU machine can carry; bench/cuda-vs-llamacpp.sh builds it there.
#   bench/pack-llamacpp.sh [OUT]     (default carry/llamacpp-src.tar.xz)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-carry/llamacpp-src.tar.xz}
cache=${LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quarrel/llamacpp}
version=0.3.36
src="$cache/llama_cpp_python-$version"
if [ ! -d "$src" ]; then
  mkdir -p "$cache"
  # The sdist's metadata step needs scikit-build-core and cmake; without
  # build isolation pip does not build its build dependencies from source.
  python3 -m pip install --quiet scikit-build-core cmake >/dev/null
  python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$cache" "llama-cpp-python==$version"
  tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
fi
mkdir -p "$(dirname "$out")"
tar -C "$src/vendor" --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/benches \
  --exclude=llama.cpp/tests --exclude=llama.cpp/examples -cJf "$out" llama.cpp
ls -l "$out"
