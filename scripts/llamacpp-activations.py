#!/usr/bin/env python3
"""Dump llama.cpp's named intermediate tensors (f32, contiguous) as .npy.

Runs a prompt through llama.cpp (libllama from a local build, through the
llama-cpp-python bindings of the pinned source) and saves every f32 tensor
the graph names, as `<name>.npy` (e.g. `ffn_out-3.npy`), for layer-by-layer
comparison with `quarrel run --dump-activations`.

  PYTHONPATH=<llama_cpp_python src> LLAMA_CPP_LIB_PATH=<build>/bin \
    scripts/llamacpp-activations.py MODEL OUT_DIR TOKEN_ID...
"""
import ctypes
import os
import sys

import numpy as np
import llama_cpp

GGML_TYPE_F32 = 0


class GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def main():
    model, out, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3:]]
    os.makedirs(out, exist_ok=True)

    @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)
    def callback(ptr, ask, _user):
        t = GgmlTensor.from_address(ptr)
        if ask:
            return True  # we want to see every tensor
        name = t.name.decode(errors="replace")
        ne = list(t.ne)
        contiguous = t.nb[0] == 4 and t.nb[1] == 4 * ne[0] and t.nb[2] == t.nb[1] * ne[1]
        if t.type == GGML_TYPE_F32 and contiguous and t.data and " " not in name:
            n = ne[0] * ne[1] * ne[2] * ne[3]
            a = np.ctypeslib.as_array((ctypes.c_float * n).from_address(t.data)).copy()
            np.save(os.path.join(out, name + ".npy"), a.reshape(ne[3] * ne[2] * ne[1], ne[0]))
        return True

    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    m = llama_cpp.llama_model_load_from_file(model.encode(), mp)
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = 1024
    cp.n_batch = 512
    cp.n_ubatch = 512
    cp.n_threads = cp.n_threads_batch = 2
    cp.flash_attn_type = 1  # enabled, as llama.cpp's CPU default resolves to
    cp.cb_eval = callback
    ctx = llama_cpp.llama_init_from_model(m, cp)
    arr = (llama_cpp.llama_token * len(tokens))(*tokens)
    batch = llama_cpp.llama_batch_get_one(arr, len(tokens))
    if llama_cpp.llama_decode(ctx, batch) != 0:
        sys.exit("llama_decode failed")
    print(f"saved tensors of {len(tokens)} tokens to {out}")


if __name__ == "__main__":
    main()
