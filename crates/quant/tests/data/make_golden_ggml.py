#!/usr/bin/env python3
"""Writes golden files from a llama.cpp CPU build, checked by tests/ggml_golden.rs.

Calls libggml-base / libggml-cpu through ctypes (numpy needed, plus the
dequant_*.bin files from make_golden.py, whose real model rows serve as dot
weights). The build must be the one Quarrel matches: x86-64 with AVX2, FMA
and F16C (GGML_NATIVE on such a machine, no AVX-512, no AVX-VNNI).

    python3 make_golden_ggml.py --lib /work/cache/llamacpp/build/bin

Files (format in make_golden.py):
  ggml_inputs.bin      meta [index, n], blobs [f32 row]
  ggml_quantize.bin    meta [type, input], blobs [quantize_row_*_ref output]
  ggml_activation.bin  meta [vec_dot type, input], blobs [CPU from_float output]
  ggml_vec_dot.bin     meta [weight type, n, inputs...], blobs [weights, f32
                       result per input]: the activation is the first n
                       elements of the ggml_activation.bin row for
                       (vec_dot type, input).
"""

import argparse
import ctypes as C
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import GGML_QUANT_SIZES, HERE, T, random_blocks, read_records, write_records  # noqa: E402

N = 1024
P = C.c_void_p

QUANT = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
VEC_DOT_TYPE = {
    T.F32: T.F32, T.F16: T.F16, T.BF16: T.BF16,
    T.Q4_0: T.Q8_0, T.Q5_0: T.Q8_0, T.Q8_0: T.Q8_0,
    T.Q4_1: T.Q8_1, T.Q5_1: T.Q8_1,
    T.Q2_K: T.Q8_K, T.Q3_K: T.Q8_K, T.Q4_K: T.Q8_K, T.Q5_K: T.Q8_K, T.Q6_K: T.Q8_K,
}


def ggml_name(qtype):
    return qtype.name.lower().replace("_k", "_K")


def row_bytes(qtype, n):
    if qtype == T.F32:
        return 4 * n
    if qtype in (T.F16, T.BF16):
        return 2 * n
    block, size = GGML_QUANT_SIZES[qtype]
    return n // block * size


def make_inputs(rng):
    """Activation-like rows, plus rows aimed at rounding edge cases."""
    x0 = rng.standard_normal(N).astype(np.float32) * 0.05
    x0[rng.integers(0, N, 8)] *= 60  # a few outliers, as in real activations
    x1 = rng.uniform(-3, 3, N).astype(np.float32)
    # Exact .5 ties: with amax = 127 per block, x * 127 / amax is x itself.
    x2 = (rng.integers(-253, 254, N) / 2).astype(np.float32)
    x2[::32] = 127.0
    x2[64:96] = 0.0  # an all-zero 32-block
    # Mixed scales per 32-block, negative maxima, a zero 256-block.
    x3 = (rng.standard_t(3, N) * np.repeat(np.exp(rng.uniform(-6, 2, N // 32)), 32)).astype(np.float32)
    x3[256:512] = 0.0
    x3[600:632] = -np.abs(x3[600:632])
    x3[700:716] = 1e-20  # tiny values
    # Special floats for the float formats only.
    sp = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, 65520.0, 65519.996, 5.96e-8, 2.98e-8, 2.99e-8,
                   1e-45, -1e-40, 6.1e-5, 3.4e38], dtype=np.float32)
    nan = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FA01234], dtype=np.uint32).view(np.float32)
    bits = rng.integers(0, 1 << 32, 256 - len(sp) - len(nan), dtype=np.uint64).astype(np.uint32).view(np.float32)
    x4 = np.concatenate([sp, nan, bits]).astype(np.float32)
    return [x0, x1, x2, x3, x4, multiplier_edges(rng)]


def multiplier_edges(rng):
    """Blocks where the x86 multiplier 127 / amax and the reference's
    1 / (amax / 127) differ by an ulp and that ulp changes the rounding."""
    f = np.float32
    out = []
    while len(out) < N // 32:
        amax = f(rng.uniform(0.5, 2.0))
        id_cpu, id_ref = f(127) / amax, f(1) / (amax / f(127))
        if id_cpu == id_ref:
            continue
        block = [amax]
        while len(block) < 32:
            k = rng.integers(-126, 126)
            x = f((k + 0.5) / id_cpu)
            for _ in range(8):
                if np.rint(x * id_cpu) != np.rint(x * id_ref):
                    block.append(x)
                    break
                x = np.nextafter(x, f(np.inf), dtype=np.float32)
            else:
                block.append(f(rng.uniform(-1, 1)) * amax)
        out.append(np.array(block, np.float32))
    return np.concatenate(out)


class Ggml:
    def __init__(self, lib_dir):
        self.base = C.CDLL(os.path.join(lib_dir, "libggml-base.so"))
        self.cpu = C.CDLL(os.path.join(lib_dir, "libggml-cpu.so"))
        self.cpu.ggml_cpu_init()

    def _call(self, fn, x, qtype):
        out = np.zeros(row_bytes(qtype, len(x)), np.uint8)
        fn(np.ascontiguousarray(x).ctypes.data_as(P), out.ctypes.data_as(P), C.c_int64(len(x)))
        return out

    def quantize_ref(self, qtype, x):
        if qtype == T.F16:
            return self._call(self.base.ggml_fp32_to_fp16_row, x, qtype)
        if qtype == T.BF16:
            return self._call(self.base.ggml_fp32_to_bf16_row_ref, x, qtype)
        return self._call(getattr(self.base, f"quantize_row_{ggml_name(qtype)}_ref"), x, qtype)

    def from_float(self, qtype, x):
        if qtype == T.F32:
            return np.ascontiguousarray(x).view(np.uint8).copy()
        if qtype == T.F16:
            return self._call(self.cpu.ggml_cpu_fp32_to_fp16, x, qtype)
        if qtype == T.BF16:
            return self._call(self.cpu.ggml_cpu_fp32_to_bf16, x, qtype)
        return self._call(getattr(self.cpu, f"quantize_row_{ggml_name(qtype)}"), x, qtype)

    def vec_dot(self, qtype, n, w, a):
        if qtype in (T.F32, T.F16, T.BF16):
            fn = getattr(self.cpu, f"ggml_vec_dot_{qtype.name.lower()}")
        else:
            fn = getattr(self.cpu, f"ggml_vec_dot_{ggml_name(qtype)}_{ggml_name(VEC_DOT_TYPE[qtype])}")
        s = C.c_float(0)
        w, a = np.ascontiguousarray(w), np.ascontiguousarray(a)
        fn(C.c_int(n), C.byref(s), C.c_size_t(0), w.ctypes.data_as(P), C.c_size_t(0),
           a.ctypes.data_as(P), C.c_size_t(0), C.c_int(1))
        return np.float32(s.value)


def model_weights():
    """Real quantized rows from the dequant golden files, by type."""
    out = {}
    for name in sorted(os.listdir(HERE)):
        if name.startswith("dequant_") and not name.startswith("dequant_random"):
            for meta, blobs in read_records(os.path.join(HERE, name)):
                out.setdefault(T(meta[0]), []).append(np.frombuffer(blobs[0], np.uint8))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="/work/cache/llamacpp/build/bin")
    args = ap.parse_args()
    g = Ggml(args.lib)
    rng = np.random.default_rng(7)
    inputs = make_inputs(rng)

    write_records(os.path.join(HERE, "ggml_inputs.bin"),
                  [([i, len(x)], [x.astype("<f4").tobytes()]) for i, x in enumerate(inputs)])

    def wanted(qtype, i):
        """Special floats only for float types, multiplier edges only for Q8_0 / Q8_1."""
        if i == 4:
            return qtype in (T.F16, T.BF16)
        if i == 5:
            return qtype in (T.Q8_0, T.Q8_1)
        return True

    quant = []
    for qtype in [T.F16, T.BF16, T.Q8_1, T.Q8_K] + QUANT:
        for i, x in enumerate(inputs):
            if wanted(qtype, i):
                quant.append(([int(qtype), i], [g.quantize_ref(qtype, x).tobytes()]))
    write_records(os.path.join(HERE, "ggml_quantize.bin"), quant)

    acts = {}
    for qtype in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q8_1, T.Q8_K]:
        for i, x in enumerate(inputs):
            if wanted(qtype, i):
                acts[(qtype, i)] = g.from_float(qtype, x)
    write_records(os.path.join(HERE, "ggml_activation.bin"),
                  [([int(q), i], [a.tobytes()]) for (q, i), a in acts.items()])

    dots = []
    real = model_weights()
    for qtype in QUANT:
        weights = [g.quantize_ref(qtype, inputs[1]), g.quantize_ref(qtype, inputs[3])]
        weights += [random_blocks(rng, qtype, N) for _ in range(2)]
        weights += real.get(qtype, [])
        for w in weights:
            assert len(w) == row_bytes(qtype, N)
            res = [g.vec_dot(qtype, N, w, acts[(VEC_DOT_TYPE[qtype], i)]) for i in (0, 2, 3)]
            dots.append(([int(qtype), N, 0, 2, 3], [w.tobytes(), np.array(res, "<f4").tobytes()]))
    for qtype in (T.F32, T.F16, T.BF16):
        for n in (1, 3, 4, 5, 7, 8, 12, 13, 20, 31, 32, 33, 45, 63, 64, 77, 100, 1024):
            w_f32 = (rng.standard_normal(n) * 0.1).astype(np.float32)
            w = w_f32.view(np.uint8) if qtype == T.F32 else g.quantize_ref(qtype, w_f32)
            res = [g.vec_dot(qtype, n, w, acts[(qtype, i)][: row_bytes(qtype, n)]) for i in (0, 1)]
            dots.append(([int(qtype), n, 0, 1], [w.tobytes(), np.array(res, "<f4").tobytes()]))
    write_records(os.path.join(HERE, "ggml_vec_dot.bin"), dots)
    print(f"{len(quant)} quantize, {len(acts)} activation, {len(dots)} vec_dot records")


if __name__ == "__main__":
    main()
