#!/usr/bin/env python3
"""Writes the dequantization golden files checked by tests/dequant_golden.rs.

Needs only `gguf` and numpy. For every type present in the three reference
models it extracts the first ELEMS elements of one real tensor; for the other
supported types it builds random but valid blocks (random quant bytes, finite
scales of modest magnitude). The expected f32 output is gguf's
`gguf.quants.dequantize` (numpy: f32 ops, no FMA, as ggml-base), except for
Q8_1 and Q8_K, which gguf lacks: there it is numpy's f32 d * q.

    python3 make_golden.py [--models ~/.cache/quarrel/models]

File format (shared with make_golden_ggml.py): b"QGLD", u32 record count;
per record: u32 count + that many u32 meta values, u32 count + that many
blobs (u32 length + bytes). All little-endian. Dequant records have meta
[ggml type id, n] and blobs [quantized bytes, expected f32 bytes].
"""

import argparse
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES as GGUF_SIZES
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
ELEMS = 1024  # per file; F32 rows are plain copies, so fewer of them
F32_ELEMS = 256

# gguf's table still gives Q8_1 f32 d and s (40 bytes); ggml's block_q8_1
# now holds two f16 (36 bytes).
GGML_QUANT_SIZES = {**GGUF_SIZES, T.Q8_1: (32, 36)}

MODELS = {
    "qwen": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma": "gemma-3-270m-q4_k_m.gguf",
    "smollm": "smollm2-135m-instruct-q4_1.gguf",
}


def write_records(path, records):
    """records: list of (meta ints, blobs)."""
    out = [b"QGLD", struct.pack("<I", len(records))]
    for meta, blobs in records:
        out.append(struct.pack(f"<I{len(meta)}I", len(meta), *meta))
        out.append(struct.pack("<I", len(blobs)))
        for blob in blobs:
            out.append(struct.pack("<I", len(blob)) + bytes(blob))
    with open(path, "wb") as f:
        f.write(b"".join(out))


def read_records(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"QGLD"
    (count,), pos = struct.unpack_from("<I", data, 4), 8
    records = []
    for _ in range(count):
        (nm,) = struct.unpack_from("<I", data, pos)
        meta = list(struct.unpack_from(f"<{nm}I", data, pos + 4))
        pos += 4 + 4 * nm
        (nb,) = struct.unpack_from("<I", data, pos)
        pos += 4
        blobs = []
        for _ in range(nb):
            (ln,) = struct.unpack_from("<I", data, pos)
            blobs.append(data[pos + 4 : pos + 4 + ln])
            pos += 4 + ln
        records.append((meta, blobs))
    return records


def row_bytes(qtype, n):
    block, size = GGML_QUANT_SIZES[qtype]
    assert n % block == 0
    return n // block * size


def model_records(models_dir):
    """(name, qtype, raw bytes) for one tensor of each type in each model."""
    out = []
    for short, fname in MODELS.items():
        reader = GGUFReader(os.path.join(models_dir, fname))
        by_type = {}
        for t in reader.tensors:
            by_type.setdefault(t.tensor_type, []).append(t)
        for qtype, tensors in by_type.items():
            n = F32_ELEMS if qtype == T.F32 else ELEMS
            # A tensor from the middle of the file: more typical than the
            # embeddings, and big enough for n elements.
            big = [t for t in tensors if int(t.n_elements) >= n]
            t = big[len(big) // 2]
            raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
            out.append((f"{short}_{qtype.name.lower()}", qtype, raw[: row_bytes(qtype, n)].copy()))
    return out


def f16_scales(rng, count, lo=1e-4, hi=1e-1, signed=True):
    """Finite f16 values with magnitudes log-uniform in [lo, hi]."""
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), count))
    sign = rng.choice([-1.0, 1.0], count) if signed else 1.0
    return (mag * sign).astype(np.float16).view(np.uint8).reshape(count, 2)


def random_blocks(rng, qtype, n):
    """Random quant bytes with sane scale fields for `qtype`."""
    block, size = GGML_QUANT_SIZES[qtype]
    nb = n // block
    b = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    if qtype in (T.Q4_0, T.Q5_0, T.Q8_0):
        b[:, 0:2] = f16_scales(rng, nb)
    elif qtype in (T.Q4_1, T.Q5_1):
        b[:, 0:2] = f16_scales(rng, nb)
        b[:, 2:4] = f16_scales(rng, nb, 1e-3, 1.0)
    elif qtype == T.Q8_1:
        b[:, 0:2] = f16_scales(rng, nb)
        b[:, 2:4] = f16_scales(rng, nb, 1e-2, 10.0)
    elif qtype == T.Q2_K:
        b[:, 80:82] = f16_scales(rng, nb, signed=False)
        b[:, 82:84] = f16_scales(rng, nb, signed=False)
    elif qtype == T.Q3_K:
        b[:, 108:110] = f16_scales(rng, nb)
    elif qtype in (T.Q4_K, T.Q5_K):
        b[:, 0:2] = f16_scales(rng, nb, 1e-5, 1e-2, signed=False)
        b[:, 2:4] = f16_scales(rng, nb, 1e-5, 1e-2, signed=False)
    elif qtype == T.Q6_K:
        b[:, 208:210] = f16_scales(rng, nb, 1e-5, 1e-2)
    elif qtype == T.Q8_K:
        d = (np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), nb)) * rng.choice([-1.0, 1.0], nb)).astype(np.float32)
        b[:, 0:4] = d.view(np.uint8).reshape(nb, 4)
        qs = b[:, 4:260].view(np.int8).astype(np.int16)
        b[:, 260:292] = qs.reshape(nb, 16, 16).sum(axis=2).astype("<i2").view(np.uint8).reshape(nb, 32)
    else:
        raise ValueError(qtype)
    return b.reshape(-1)


def random_floats(rng, qtype, n):
    """Random finite F16 / BF16 bit patterns (including subnormals)."""
    exp_mask = 0x7C00 if qtype == T.F16 else 0x7F80
    bits = rng.integers(0, 1 << 16, 2 * n, dtype=np.uint16)
    bits = bits[(bits & exp_mask) != exp_mask]  # drop inf / NaN
    return bits[:n].astype("<u2").view(np.uint8)


def expected(qtype, raw, n):
    if qtype == T.BF16:
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    if qtype in (T.Q8_1, T.Q8_K):
        block, size = GGML_QUANT_SIZES[qtype]
        b = raw.reshape(-1, size)
        if qtype == T.Q8_1:
            d, qs = b[:, 0:2].copy().view(np.float16).astype(np.float32), b[:, 4:]
        else:
            d, qs = b[:, 0:4].copy().view(np.float32), b[:, 4:260]
        return (d * qs.view(np.int8).astype(np.float32)).reshape(-1)
    return dequantize(raw, qtype).reshape(-1).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.expanduser("~/.cache/quarrel/models"))
    args = ap.parse_args()

    cases = model_records(args.models)
    rng = np.random.default_rng(20240611)
    for qtype in (T.F16, T.BF16):
        cases.append((f"random_{qtype.name.lower()}", qtype, random_floats(rng, qtype, ELEMS)))
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_1, T.Q8_1, T.Q2_K, T.Q3_K, T.Q5_K, T.Q8_K):
        cases.append((f"random_{qtype.name.lower()}", qtype, random_blocks(rng, qtype, ELEMS)))

    for name in os.listdir(HERE):
        if name.startswith("dequant_") and name.endswith(".bin"):
            os.remove(os.path.join(HERE, name))
    for name, qtype, raw in cases:
        n = len(raw) // GGML_QUANT_SIZES[qtype][1] * GGML_QUANT_SIZES[qtype][0]
        want = expected(qtype, raw, n)
        assert want.size == n and np.all(np.isfinite(want)), name
        path = os.path.join(HERE, f"dequant_{name}.bin")
        write_records(path, [([int(qtype), n], [raw.tobytes(), want.astype("<f4").tobytes()])])
        print(f"{path}: {qtype.name} x {n}")


if __name__ == "__main__":
    main()
