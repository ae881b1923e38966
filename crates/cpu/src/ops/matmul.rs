//! Quantized matrix multiplication: where decode spends its time.
//!
//! Activations are quantized once per row to the weight type's dot type
//! (Q8_0, Q8_1 or Q8_K, as ggml does); then each thread streams a
//! contiguous range of weight rows and dots every row with every token.

use rayon::prelude::*;

use crate::tensor::{CpuTensor, CpuWeight};

/// Weight rows per task: large enough to amortise scheduling, small
/// enough to balance two to dozens of threads.
const ROWS_PER_TASK: usize = 16;

pub struct MatmulScratch {
    act: Vec<u8>,
    /// Output transposed (weight row major), when there are several tokens.
    out_t: Vec<f32>,
}

impl MatmulScratch {
    pub fn new() -> Self {
        MatmulScratch {
            act: Vec::new(),
            out_t: Vec::new(),
        }
    }
}

pub fn matmul(x: &CpuTensor, w: &CpuWeight, out: &mut CpuTensor, scratch: &mut MatmulScratch) {
    assert_eq!(x.cols, w.cols, "matmul inner dimensions");
    assert_eq!(out.cols, w.rows, "matmul output width");
    let (n, k, m) = (x.rows, w.cols, w.rows);
    out.rows = n;
    let dot_ty = quarrel_quant::vec_dot_type(w.ty);
    let act_row = dot_ty
        .row_bytes(k as u64)
        .expect("row length checked at load") as usize;
    // Grows once to the largest batch, then is reused.
    scratch.act.resize(n * act_row, 0);
    scratch
        .act
        .par_chunks_mut(act_row)
        .zip(x.live().par_chunks(k))
        .for_each(|(dst, src)| {
            quarrel_quant::quantize_activation(w.ty, src, dst).expect("sizes match");
        });
    let act = &scratch.act;
    let dot_rows = |r0: usize, dst: &mut [f32]| {
        // dst holds, for weight rows r0.., the value for every token.
        for (i, chunk) in dst.chunks_mut(n).enumerate() {
            let wr = w.row(r0 + i);
            for (t, o) in chunk.iter_mut().enumerate() {
                *o = quarrel_quant::vec_dot(w.ty, k, wr, &act[t * act_row..(t + 1) * act_row]);
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
