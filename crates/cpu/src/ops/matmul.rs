//! Quantized matrix multiplication: where decode spends its time.
//!
//! Activations are quantized once per row to the weight type's dot type
//! (Q8_0, Q8_1 or Q8_K, as ggml does); then each thread streams a
//! contiguous range of weight rows and dots every row with every token,
//! four tokens at a time where it can ([`quarrel_quant::dot_multi`]: each
//! weight block unpacked once for the four; same bits as single dots).
//! Which kernel (and which activation quantizer) serves a token follows
//! ggml's x86 path for the matrix: repacked Q4_0 / Q4_K matrices use the
//! gemm for whole groups of four tokens and the gemv for the rest; other
//! K-quant matrices use ggml's tiled matmul for batches of eight or more
//! tokens, which is why the kernel depends on the whole batch's size.

use quarrel_quant::DotKernel;
use rayon::prelude::*;

use crate::tensor::{CpuTensor, CpuWeight};

/// Weight rows per task: large enough to amortise scheduling, small
/// enough to balance two to dozens of threads.
const ROWS_PER_TASK: usize = 16;

pub struct MatmulScratch {
    act: Vec<u8>,
    /// Output transposed (weight row major), when there are several tokens.
    out_t: Vec<f32>,
    /// Activations rounded through the dot type, for the tiled matmul.
    xq: Vec<f32>,
}

impl MatmulScratch {
    pub fn new() -> Self {
        MatmulScratch {
            act: Vec::new(),
            out_t: Vec::new(),
            xq: Vec::new(),
        }
    }
}

pub fn matmul(x: &CpuTensor, w: &CpuWeight, out: &mut CpuTensor, scratch: &mut MatmulScratch) {
    assert_eq!(x.cols, w.cols, "matmul inner dimensions");
    assert_eq!(out.cols, w.rows, "matmul output width");
    let (n, k, m) = (x.rows, w.cols, w.rows);
    out.rows = n;
    #[cfg(target_arch = "x86_64")]
    if super::gemm::applies(n) {
        super::gemm::round_activations(w.ty, x.live(), k, &mut scratch.act, &mut scratch.xq);
        super::gemm::matmul(&scratch.xq, w, out);
        return;
    }
    let path = quarrel_quant::matmul_path(w.ty, m);
    let kernel = |t: usize| -> DotKernel { path.kernel(t, n) };
    let dot_ty = quarrel_quant::vec_dot_type(w.ty);
    let act_row = dot_ty
        .row_bytes(k as u64)
        .expect("row length checked at load") as usize;
    // Grows once to the largest batch, then is reused.
    scratch.act.resize(n * act_row, 0);
    let quantize = |(t, (dst, src)): (usize, (&mut [u8], &[f32]))| {
        quarrel_quant::quantize_activation_for(kernel(t), w.ty, src, dst).expect("sizes match");
    };
    if n == 1 {
        // A microsecond of work: not worth waking the pool for.
        quantize((0, (&mut scratch.act[..], x.live())));
    } else {
        scratch
            .act
            .par_chunks_mut(act_row)
            .zip(x.live().par_chunks(k))
            .enumerate()
            .for_each(quantize);
    }
    let act = &scratch.act;
    let token = |t: usize| &act[t * act_row..(t + 1) * act_row];
    let dot_rows = |r0: usize, dst: &mut [f32]| {
        // dst holds, for weight rows r0.., the value for every token.
        for (i, chunk) in dst.chunks_mut(n).enumerate() {
            let wr = w.row(r0 + i);
            let mut t = 0;
            // Four tokens at a time where they share a kernel.
            while t + 4 <= n && kernel(t) == kernel(t + 3) {
                let a = [token(t), token(t + 1), token(t + 2), token(t + 3)];
                let o = quarrel_quant::dot_multi(kernel(t), w.ty, k, wr, a);
                chunk[t..t + 4].copy_from_slice(&o);
                t += 4;
            }
            for (t, o) in chunk.iter_mut().enumerate().skip(t) {
                *o = quarrel_quant::dot(kernel(t), w.ty, k, wr, token(t));
            }
        }
    };
    if n == 1 {
        out.live_mut()
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(i, dst)| dot_rows(i * ROWS_PER_TASK, dst));
        return;
    }
    scratch.out_t.resize(m * n, 0.0);
    scratch
        .out_t
        .par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(i, dst)| dot_rows(i * ROWS_PER_TASK, dst));
    let out_t = &scratch.out_t;
    out.live_mut()
        .par_chunks_mut(m)
        .enumerate()
        .for_each(|(t, row)| {
            for (r, o) in row.iter_mut().enumerate() {
                *o = out_t[r * n + t];
            }
        });
}
