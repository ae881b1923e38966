#!/usr/bin/env bash
# On the GPU machine: per-kernel GPU time of a prompt pass and of decode
# steps under Nsight Compute (graphs off, so every launch is seen), summed
# by kernel name, largest first.
#
#   bench/cuda-profile.sh PRESET TYPE [PROMPT_TOKENS] [GEN_TOKENS]
#
# Files go to $WORK (default /tmp/quarrel-cuda); reports to $OUT if set.
set -euo pipefail
Q=${QUARREL:-$PWD/target/release/quarrel}
W=${WORK:-/tmp/quarrel-cuda}
LOG=${OUT:-$W}
PRESET=$1 TYPE=$2 PP=${3:-512} TG=${4:-2}
mkdir -p "$W" "$LOG"
export QUARREL_CUDA_CACHE=$W/kernels QUARREL_CUDA_GRAPHS=0
f=$W/$PRESET-$TYPE.gguf
[ -s "$f" ] || "$Q" synth --preset "$PRESET" --type "$TYPE" -o "$f" >/dev/null
for phase in "pp $PP 0" "tg 0 $TG"; do
    set -- $phase
    csv=$LOG/profile-$PRESET-$TYPE-$1.csv
    ncu --clock-control none --csv --page raw --metrics gpu__time_duration.sum,dram__bytes_read.sum \
        "$Q" bench --device cuda -m "$f" -p "$2" -n "$3" -r 1 >"$csv" 2>/dev/null || true
    python3 - "$csv" "$1" "$PRESET-$TYPE" <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
names = rows[head]
k, t, b = names.index("Kernel Name"), names.index("gpu__time_duration.sum"), names.index("dram__bytes_read.sum")
unit_t, unit_b = rows[head + 1][t], rows[head + 1][b]
scale_t = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[unit_t]
scale_b = {"byte": 1, "Kbyte": 1e3, "KB": 1e3, "Mbyte": 1e6, "MB": 1e6, "Gbyte": 1e9, "GB": 1e9}[unit_b]
agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
for r in rows[head + 2:]:
    if len(r) <= max(k, t, b) or not r[t]:
        continue
    a = agg[r[k].split("(")[0][:60]]
    a[0] += 1
    a[1] += float(r[t].replace(",", "")) * scale_t
    a[2] += float(r[b].replace(",", "")) * scale_b
total = sum(a[1] for a in agg.values())
print(f"== {sys.argv[3]} {sys.argv[2]}: {total / 1e3:.2f} ms of kernels (warm-up and timed runs together)")
print(f"{'kernel':60} {'calls':>6} {'ms':>8} {'share':>6} {'GB/s':>7}")
for name, (n, us, by) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{name:60} {n:6} {us / 1e3:8.3f} {100 * us / total:5.1f}% {by / us / 1e3 if us else 0:7.0f}")
PY
done
