#!/usr/bin/env python3
"""Ratio table of llama-bench and `quarrel bench` JSON results.

    bench/ratio-table.py DIR NAME...

DIR holds files ENGINE-NAME-ROUND.json (ENGINE: llama or quarrel), each an
array of results with llama-bench's fields; the table has, per NAME and
test, the median of avg_ts over rounds for each engine and their ratio.
"""
import json
import os
import statistics
import sys

out, names = sys.argv[1], sys.argv[2:]
print("| model | test | llama.cpp t/s | quarrel t/s | ratio |")
print("|---|---|--:|--:|--:|")
for name in names:
    rows = {}
    for eng in ("llama", "quarrel"):
        for f in sorted(os.listdir(out)):
            if f.startswith(f"{eng}-{name}-") and f[len(eng) + len(name) + 2 :].split(".")[0].isdigit():
                for r in json.load(open(os.path.join(out, f))):
                    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
                    rows.setdefault((test, eng), []).append(r["avg_ts"])
    for test in sorted({t for t, _ in rows}):
        if (test, "llama") not in rows or (test, "quarrel") not in rows:
            continue
        a = statistics.median(rows[(test, "llama")])
        b = statistics.median(rows[(test, "quarrel")])
        print(f"| {name} | {test} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
