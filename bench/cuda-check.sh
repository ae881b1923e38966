#!/usr/bin/env bash
# On the GPU machine (no Rust there: build here, carry target/release/quarrel):
# synthesizes models at real shapes, checks the CUDA backend against the
# CPU backend on the same files (perplexity top-1 agreement and KLD over
# 512-token chunks, the first 32 greedy tokens), then times pp512/tg128.
#
#   bench/cuda-check.sh [check|speed|memcheck|all]   (default all)
#   CHECKS="tiny-llama:q4_k ..." limits check to those files.
#
# Files go to $WORK (default /tmp/quarrel-cuda); logs to $OUT if set.
set -uo pipefail
Q=${QUARREL:-$PWD/target/release/quarrel}
W=${WORK:-/tmp/quarrel-cuda}
LOG=${OUT:-$W}
MODE=${1:-all}
mkdir -p "$W" "$LOG"
export QUARREL_CUDA_CACHE=$W/kernels
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader

synth() { # preset type
    local f=$W/$1-$2.gguf
    [ -s "$f" ] || "$Q" synth --preset "$1" --type "$2" -o "$f" || return 1
    echo "$f"
}

# Text for perplexity: the repository's own prose (the synthetic vocabulary
# tokenizes it byte by byte).
TEXT=$W/text.txt
cat README.md BENCHMARKS.md crates/*/src/*.rs > "$TEXT"

check() { # preset type
    local f; f=$(synth "$1" "$2") || { echo "synth $1 $2 failed"; return; }
    local tag=$1-$2
    echo "== check $tag"
    "$Q" perplexity --device cpu -m "$f" -f "$TEXT" -c 512 --chunks 2 --save-logits "$W/$tag.base" \
        >"$LOG/$tag-cpu.txt" 2>&1 || { tail -3 "$LOG/$tag-cpu.txt"; return; }
    "$Q" perplexity --device cuda -m "$f" -f "$TEXT" -c 512 --chunks 2 --kl-divergence "$W/$tag.base" \
        >"$LOG/$tag-cuda.txt" 2>&1
    grep -iE "ppl|kld|top|error" "$LOG/$tag-cpu.txt" "$LOG/$tag-cuda.txt" | tail -8
    for dev in cpu cuda; do
        "$Q" run --device $dev -m "$f" -p "The capital of France is" -n 32 --temp 0 --ignore-eos \
            --format json 2>"$LOG/$tag-run-$dev.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])' \
            >"$W/$tag-run-$dev.txt" || tail -3 "$LOG/$tag-run-$dev.err"
    done
    if cmp -s "$W/$tag-run-cpu.txt" "$W/$tag-run-cuda.txt"; then
        echo "greedy 32 tokens: identical"
    else
        echo "greedy 32 tokens: DIFFER"; cat "$W/$tag-run-cpu.txt" "$W/$tag-run-cuda.txt"
    fi
}

speed() { # preset type [env assignments...]
    local f; f=$(synth "$1" "$2") || { echo "synth $1 $2 failed"; return; }
    echo "== speed $1-$2 ${*:3}"
    env "${@:3}" "$Q" bench --device cuda -m "$f" -p 512 -n 128 -r 3 2>&1 | tail -2
}

if [ -n "${KERNEL_TESTS:-}" ] && { [ "$MODE" = check ] || [ "$MODE" = all ]; }; then
    echo "== kernel tests ($KERNEL_TESTS)"
    "$KERNEL_TESTS" 2>&1 | grep -E "^test |test result|panicked|error"
fi
if [ "$MODE" = check ] || [ "$MODE" = all ]; then
    if [ -n "${CHECKS:-}" ]; then  # a subset: "preset:type ..."
        for c in $CHECKS; do check "${c%%:*}" "${c##*:}"; done
    else
        for p in tiny-llama tiny-llama3 tiny-mistral tiny-phi3 tiny-qwen2 tiny-gemma3; do check $p q8_0; done
        for t in q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k f16 bf16; do check tiny-llama $t; done
        check qwen2.5-0.5b q4_k_m
    fi
fi
if [ "$MODE" = memcheck ] || [ "$MODE" = all ]; then
    f=$(synth tiny-llama q4_k)
    echo "== compute-sanitizer memcheck, tiny-llama q4_k, a 40-token prompt and 8 tokens"
    compute-sanitizer --tool memcheck --leak-check no "$Q" run --device cuda -m "$f" --temp 0 -n 8 \
        -p "$(head -c 40 "$TEXT" | tr -d '\n')" 2>&1 | grep -E "ERROR SUMMARY|Invalid|error" | head -5
fi
if [ "$MODE" = speed ] || [ "$MODE" = all ]; then
    python3 - <<'PY'
import torch
n = 1 << 30  # 2 GiB buffers of f16
a = torch.empty(n, dtype=torch.float16, device="cuda").normal_()
b = torch.empty_like(a)
times = []
for _ in range(25):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); torch.cuda.synchronize()
    times.append(s.elapsed_time(e) / 1e3)
times = sorted(times[5:])
print(f"device copy bandwidth (read + write, 2 GiB, median of 20): {2 * 2 * n / times[len(times) // 2] / 1e9:.0f} GB/s")
PY
    speed qwen2.5-0.5b q4_k_m
    for t in q4_k_m q8_0 f16; do speed llama3-8b $t; done
    # What each launch-side technique is worth: the same files without
    # graphs, with programmatic dependent launch, with one-row GEMV warps.
    for off in QUARREL_CUDA_GRAPHS=0 QUARREL_CUDA_PDL=1 QUARREL_GEMV_WR1=1; do
        speed qwen2.5-0.5b q4_k_m $off
        speed llama3-8b q4_k_m $off
    done
fi
