#!/usr/bin/env python3
"""Compares two --dump-activations directories (e.g. the CPU and CUDA
backends on the same tokens), tensor by tensor in forward order: the
relative error ||a - b|| / ||a|| and the largest absolute difference.

    scripts/compare-activations.py DIR_A DIR_B [--layers N]
"""
import argparse
import os

import numpy as np

ORDER = ["inp_embd", "attn_norm", "q", "k", "v", "attn_out", "attn_proj", "ffn_inp", "ffn_norm",
         "ffn_gate", "ffn_up", "ffn_gate_up", "ffn_act", "ffn_out", "l_out", "result_norm", "result_output"]


def key(name):
    stem = name[:-4].split("-", 1)[1]
    parts = stem.rsplit("-", 1)
    layer = int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else (-1 if stem == "inp_embd" else 1 << 20)
    base = parts[0] if len(parts) == 2 and parts[1].isdigit() else stem
    return (name.split("-", 1)[0], layer, ORDER.index(base) if base in ORDER else 99)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--layers", type=int, default=2, help="layers to print (all: -1)")
    args = ap.parse_args()
    for name in sorted((f for f in os.listdir(args.a) if f.endswith(".npy")), key=key):
        if not os.path.exists(os.path.join(args.b, name)):
            continue
        _, layer, _ = key(name)
        if args.layers >= 0 and 0 <= layer < 1 << 20 and layer >= args.layers:
            continue
        a = np.load(os.path.join(args.a, name)).astype(np.float64)
        b = np.load(os.path.join(args.b, name)).astype(np.float64)
        if a.shape != b.shape:
            print(f"{name:32} shapes differ: {a.shape} vs {b.shape}")
            continue
        rel = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)
        print(f"{name:32} rel {rel:.3e}  max abs {np.abs(a - b).max():.3e}")


if __name__ == "__main__":
    main()
