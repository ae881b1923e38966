#!/usr/bin/env python3
"""Compare quarrel's logits with llama.cpp's on the same GGUF and tokens.

  compare-logits.py MODEL.gguf [--positions N] [--save REF.npy] [--reference REF.npy]

Without --reference, llama.cpp (libllama of a local build, through the
pinned llama-cpp-python sources: set PYTHONPATH and LLAMA_CPP_LIB_PATH)
computes the reference logits; --save keeps them (as test data).
Prints top-1 agreement and the largest absolute logit difference.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def tokens_for(n_vocab, n):
    # Deterministic, spread over the vocabulary, skipping the 3 specials.
    return [3 + (i * 7919 + 13) % (n_vocab - 3) for i in range(n)]


def llama_cpp_logits(model, tokens):
    import llama_cpp
    m = llama_cpp.Llama(model, n_ctx=max(512, len(tokens)), n_batch=512, n_ubatch=512,
                        logits_all=True, verbose=False, n_threads=2, flash_attn=True)
    m.eval(tokens)
    return np.array(m.scores[: len(tokens)], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--positions", type=int, default=256)
    ap.add_argument("--save")
    ap.add_argument("--reference")
    ap.add_argument("--quarrel", default="target/debug/quarrel")
    a = ap.parse_args()
    import gguf
    n_vocab = len(gguf.GGUFReader(a.model).fields["tokenizer.ggml.tokens"].data)
    tokens = tokens_for(n_vocab, a.positions)
    ref = np.load(a.reference) if a.reference else llama_cpp_logits(a.model, tokens)
    if a.save:
        np.save(a.save, ref)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "ours.npy")
        subprocess.run([a.quarrel, "logits", "-m", a.model, "-o", out,
                        "--tokens", ",".join(map(str, tokens))], check=True)
        ours = np.load(out)
    agree = float(np.mean(ours.argmax(1) == ref.argmax(1)))
    print(json.dumps({"model": os.path.basename(a.model), "positions": len(tokens),
                      "top1_agreement": agree,
                      "max_abs_logit_diff": float(np.abs(ours - ref).max())}))


if __name__ == "__main__":
    sys.exit(main())
