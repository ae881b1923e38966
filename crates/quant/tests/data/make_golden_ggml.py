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
  ggml_repack_act.bin  meta [vec_dot type, k], blobs [4 f32 rows of k,
                       ggml_quantize_mat_*_4x8 output de-interleaved into
                       4 plain rows]
  ggml_matmul.bin      first record meta [k, rows], blobs [f32 activation
                       rows]; then per weight matrix meta [type, m, repacked,
                       n...], blobs [m weight rows, f32 n x m result per n]:
                       a ggml graph with one mul_mat of the first n
                       activation rows on the CPU backend, the weights in the
                       CPU_REPACK buffer when it takes them (repacked = 1),
                       as llama.cpp places them.
  ggml_tiled.bin       as ggml_matmul.bin, for the K-quant batches of 7 to
                       64 rows around the tiled matmul's threshold (8) and
                       row counts around its 16-row microtiles and 256-row
                       windows; every weight matrix in plain CPU memory.
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


class InitParams(C.Structure):
    _fields_ = [("mem_size", C.c_size_t), ("mem_buffer", P), ("no_alloc", C.c_bool)]


class GgmlMatmul:
    """One mul_mat on ggml's CPU backend, through the public graph API."""

    def __init__(self, g, threads=2):
        self.b, cpu = g.base, g.cpu
        for name, res, args in [
            ("ggml_init", P, [InitParams]), ("ggml_free", None, [P]),
            ("ggml_new_tensor_2d", P, [P, C.c_int, C.c_int64, C.c_int64]),
            ("ggml_mul_mat", P, [P, P, P]), ("ggml_new_graph", P, [P]),
            ("ggml_build_forward_expand", None, [P, P]), ("ggml_get_data", P, [P]),
            ("ggml_backend_alloc_ctx_tensors_from_buft", P, [P, P]),
            ("ggml_backend_buffer_free", None, [P]),
            ("ggml_backend_tensor_set", None, [P, P, C.c_size_t, C.c_size_t]),
            ("ggml_backend_graph_compute", C.c_int, [P, P]),
            ("ggml_backend_dev_supports_op", C.c_bool, [P, P]),
            ("ggml_backend_cpu_buffer_type", P, []),
            ("ggml_backend_reg_dev_get", P, [P, C.c_size_t]),
        ]:
            f = getattr(self.b, name)
            f.restype, f.argtypes = res, args
        cpu.ggml_backend_cpu_init.restype = P
        cpu.ggml_backend_cpu_reg.restype = P
        cpu.ggml_backend_cpu_set_n_threads.argtypes = [P, C.c_int]
        # Exported only under its C++ name.
        repack = cpu._Z35ggml_backend_cpu_repack_buffer_typev
        repack.restype = P
        self.repack_buft = repack()
        self.backend = cpu.ggml_backend_cpu_init()
        cpu.ggml_backend_cpu_set_n_threads(self.backend, threads)
        self.dev = self.b.ggml_backend_reg_dev_get(cpu.ggml_backend_cpu_reg(), 0)

    def _weight(self, qtype, k, m, buft):
        ctx = self.b.ggml_init(InitParams(1 << 20, None, True))
        w = self.b.ggml_new_tensor_2d(ctx, int(qtype), k, m)
        return ctx, w, self.b.ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft)

    def mul_mat(self, qtype, w_bytes, m, x):
        """Returns (x @ w.T as n x m f32, whether the weights were repacked)."""
        b = self.b
        n, k = x.shape
        ctx = b.ggml_init(InitParams(64 << 20, None, False))
        xt = b.ggml_new_tensor_2d(ctx, int(T.F32), k, n)
        # Like llama.cpp: the repack buffer when it supports the op (its
        # supports_op consults the repack type table), else plain CPU memory.
        wctx, wt, buf = self._weight(qtype, k, m, self.repack_buft)
        out = b.ggml_mul_mat(ctx, wt, xt)
        repacked = b.ggml_backend_dev_supports_op(self.dev, out)
        if not repacked:
            b.ggml_backend_buffer_free(buf)
            b.ggml_free(wctx)
            wctx, wt, buf = self._weight(qtype, k, m, b.ggml_backend_cpu_buffer_type())
            out = b.ggml_mul_mat(ctx, wt, xt)
        w_bytes = np.ascontiguousarray(w_bytes)
        b.ggml_backend_tensor_set(wt, w_bytes.ctypes.data_as(P), 0, w_bytes.nbytes)
        x = np.ascontiguousarray(x, np.float32)
        C.memmove(b.ggml_get_data(xt), x.ctypes.data, x.nbytes)
        graph = b.ggml_new_graph(ctx)
        b.ggml_build_forward_expand(graph, out)
        assert b.ggml_backend_graph_compute(self.backend, graph) == 0
        res = np.ctypeslib.as_array((C.c_float * (n * m)).from_address(b.ggml_get_data(out))).copy()
        b.ggml_backend_buffer_free(buf)
        b.ggml_free(wctx)
        b.ggml_free(ctx)
        return res.reshape(n, m), bool(repacked)


def quantize_mat_4x8(g, qtype, x):
    """ggml_quantize_mat_{q8_0,q8_K}_4x8 on 4 rows, de-interleaved to 4 plain rows."""
    k = x.shape[1]
    block, size = GGML_QUANT_SIZES[qtype]
    nb = k // block
    out = np.zeros(4 * nb * size, np.uint8)
    fn = getattr(g.cpu, f"ggml_quantize_mat_{ggml_name(qtype)}_4x8")
    fn(np.ascontiguousarray(x, np.float32).ctypes.data_as(P), out.ctypes.data_as(P), C.c_int64(k))
    rows = np.zeros((4, nb, size), np.uint8)
    for i, blk in enumerate(out.reshape(nb, 4 * size)):
        if qtype == T.Q8_0:  # block_q8_0x4: f16 d[4], qs[128] in 8-byte chunks per row
            d = blk[:8].reshape(4, 2)
            qs = blk[8:].reshape(4, 4, 8)  # chunk, row, byte
            for r in range(4):
                rows[r, i, :2] = d[r]
                rows[r, i, 2:] = qs[:, r, :].reshape(-1)
        else:  # block_q8_Kx4: f32 d[4], qs[1024] in 8-byte chunks, bsums[64]
            d = blk[:16].reshape(4, 4)
            qs = blk[16:1040].reshape(32, 4, 8)
            bsums = blk[1040:].view("<i2").reshape(4, 4, 4)  # pair of sub-blocks, row, 16-group
            for r in range(4):
                q = qs[:, r, :].reshape(-1)
                sums = bsums[:, r, :].reshape(-1)
                assert (sums == q.view(np.int8).astype(np.int16).reshape(16, 16).sum(axis=1)).all()
                rows[r, i, :4] = d[r]
                rows[r, i, 4:260] = q
                rows[r, i, 260:] = sums.astype("<i2").view(np.uint8)
    return rows.reshape(4, -1)


def matmul_activations(rng, k):
    """Eight activation rows of k (a multiple of 512) elements."""
    x = np.zeros((8, k), np.float32)
    x[0] = rng.standard_normal(k) * 0.05
    x[0, rng.integers(0, k, 8)] *= 60
    x[1] = rng.uniform(-3, 3, k)
    # Largest magnitude reached by both signs in every 256-block, at various
    # lanes and sub-blocks, negative first or positive first: the Q8_K 4x8
    # quantizer and the reference pick opposite scale signs.
    for r, (a, b) in zip((2, 3, 6), ((3, 200), (5, 13), (130, 7))):
        x[r] = rng.standard_normal(k)
        for blk in range(0, k, 256):
            x[r, blk + a], x[r, blk + b] = -4.5, 4.5
    x[3, 256:512] = -x[3, 256:512]
    x[4] = rng.standard_t(3, k) * np.repeat(np.exp(rng.uniform(-6, 2, k // 32)), 32)
    x[4, :256] = 0.0
    x[5] = -np.abs(rng.standard_normal(k))
    x[7] = (rng.integers(-253, 254, k) / 2).astype(np.float32)
    return x


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

    # A separate generator keeps the files above unchanged.
    rng = np.random.default_rng(8)
    k = 512
    x = matmul_activations(rng, k)
    special = np.zeros((4, k), np.float32)
    special[0] = rng.standard_normal(k)
    special[0, [10, 300]] = [np.inf, -np.inf]
    special[1] = rng.standard_normal(k)
    special[1, [20, 400]] = np.nan
    special[2] = -0.0
    special[3] = rng.standard_normal(k) * 1e-40
    repack_acts = []
    for qtype in (T.Q8_0, T.Q8_K):
        for rows in (x[:4], x[4:], special):
            repack_acts.append(([int(qtype), k], [rows.tobytes(), quantize_mat_4x8(g, qtype, rows).tobytes()]))
    write_records(os.path.join(HERE, "ggml_repack_act.bin"), repack_acts)

    mm = GgmlMatmul(g)
    ns = (1, 3, 4, 5, 8)
    matmuls = [([k, len(x)], [x.tobytes()])]
    for qtype in [T.F32, T.F16, T.BF16] + QUANT:
        for m in (16, 12):
            if qtype in (T.F32, T.F16, T.BF16):
                w = (rng.standard_normal((m, k)) * 0.1).astype(np.float32)
                w = w.view(np.uint8) if qtype == T.F32 else np.concatenate([g.quantize_ref(qtype, r) for r in w])
            else:
                w = np.concatenate([
                    g.quantize_ref(qtype, (rng.standard_normal(k) * 0.02).astype(np.float32)) if r % 2 else
                    random_blocks(rng, qtype, k) for r in range(m)])
            outs, flags = [], set()
            for n in ns:
                res, repacked = mm.mul_mat(qtype, w, m, x[:n])
                outs.append(res.astype("<f4").tobytes())
                flags.add(repacked)
            assert len(flags) == 1
            matmuls.append(([int(qtype), m, int(flags.pop()), *ns], [w.tobytes(), *outs]))
    write_records(os.path.join(HERE, "ggml_matmul.bin"), matmuls)
    print(f"{len(repack_acts)} repacked activation, {len(matmuls) - 1} matmul records")
    write_tiled(g)


def write_tiled(g):
    """ggml_tiled.bin: K-quant mul_mats whose batches the tiled path (ggml-cpu/tiled) takes."""
    rng = np.random.default_rng(9)
    k = 512
    x = np.concatenate([matmul_activations(rng, k) for _ in range(8)])
    mm = GgmlMatmul(g)
    matmuls = [([k, len(x)], [x.tobytes()])]
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        # Row counts: under one microtile, ragged microtiles, past one 256-row window
        # (narrow and standard path only, to keep the file small); none a multiple
        # of 8, so Q4_K stays out of the repack buffer.
        for m, ns in ((12, (7, 8, 9, 16, 17, 64)), (44, (7, 8, 9, 16, 17, 64)), (260, (9, 17))):
            w = np.concatenate([
                g.quantize_ref(qtype, (rng.standard_normal(k) * 0.02).astype(np.float32)) if r % 2 else
                random_blocks(rng, qtype, k) for r in range(m)])
            outs = []
            for n in ns:
                res, repacked = mm.mul_mat(qtype, w, m, x[:n])
                assert not repacked
                outs.append(res.astype("<f4").tobytes())
            matmuls.append(([int(qtype), m, 0, *ns], [w.tobytes(), *outs]))
    write_records(os.path.join(HERE, "ggml_tiled.bin"), matmuls)
    print(f"{len(matmuls) - 1} tiled matmul records")


if __name__ == "__main__":
    main()
