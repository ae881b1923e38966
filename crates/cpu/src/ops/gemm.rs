//! Prompt processing: matrix × matrix on FMA register tiles.
//!
//! For a batch of many tokens the integer dot kernels are compute-bound
//! at one f32 FMA per 32-element block per token-row pair, plus the
//! unpacking; here each weight block is unpacked once per batch instead.
//! A thread takes a contiguous range of 16-row panels of the weight
//! matrix, dequantizes 256 columns of a panel at a time into an
//! L1-resident buffer (column major, 16 floats per column), and runs every
//! group of six tokens over it: 12 accumulators of 8 lanes, two vector
//! loads and six broadcasts per 12 FMAs.
//!
//! The activations are first rounded through the weight type's dot type
//! (Q8_0, Q8_1 or Q8_K) exactly as the integer kernels quantize them, so
//! the products are those of llama.cpp's quantized matmul and only the
//! f32 summation order differs. One more detail is kept: for Q4_1 / Q5_1
//! weights ggml multiplies each block's offset by the activation block's
//! sum as stored in f16 (Q8_1's `s`), not by the exact sum. Those rows get
//! one extra column per block: the activation side holds `s` minus the
//! exact sum, the weight side the block's offset.

use quarrel_quant::GgmlType;

use super::x86;
use crate::pool::{ColumnSplit, Pool};
use crate::tensor::CpuWeight;

/// The fewest tokens for which the tiled matmul runs: unpacking every
/// weight to f32 once per batch pays off from between 32 and 64 tokens on
/// the real models here (see BENCHMARKS.md).
pub const GEMM_MIN_TOKENS: usize = 32;
/// Weight rows per panel: two 8-lane vectors.
const NR: usize = 16;
/// Tokens per register tile.
const MR: usize = 6;
/// Columns per panel chunk: 16 KiB of f32, a multiple of every block size.
const KC: usize = 256;
/// Panels per task: enough work to amortise a task, small enough to balance.
const PANELS_PER_TASK: usize = 2;

/// Whether this CPU has the tiled matmul.
pub fn available() -> bool {
    x86::available()
}

/// Whether [`matmul`] serves a lone batch of `tokens` rows on this CPU.
pub fn applies(tokens: usize) -> bool {
    tokens >= GEMM_MIN_TOKENS && available()
}

/// Weight types whose blocks carry an offset multiplied by Q8_1's `s`.
fn has_offset(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1)
}

/// Row length of the rounded activations for weights of `ty`: `k`, plus
/// one correction column per block for offset types.
pub fn rounded_len(ty: GgmlType, k: usize) -> usize {
    if has_offset(ty) {
        k + k / ty.block_size()
    } else {
        k
    }
}

/// Rounds each activation row (`k` elements) through `vec_dot_type(ty)`
/// into `xq`, rows of [`rounded_len`].
pub fn round_activations(
    pool: &Pool,
    ty: GgmlType,
    x: &[f32],
    k: usize,
    act: &mut Vec<u8>,
    xq: &mut Vec<f32>,
) {
    let dot_ty = quarrel_quant::vec_dot_type(ty);
    let act_row = dot_ty
        .row_bytes(k as u64)
        .expect("row length checked at load") as usize;
    let ka = rounded_len(ty, k);
    let n = x.len() / k;
    act.resize(n * act_row, 0);
    xq.resize(n * ka, 0.0);
    pool.for_each_chunk2(act, act_row, xq, ka, |t, a, q| {
        let src = &x[t * k..][..k];
        quarrel_quant::quantize_activation(ty, src, a).expect("sizes match");
        let (q, corr) = q.split_at_mut(k);
        quarrel_quant::dequantize_row(dot_ty, a, q).expect("sizes match");
        // Q8_1 blocks: f16 d, f16 s, 32 quants.
        for ((c, blk), xs) in corr
            .iter_mut()
            .zip(a.chunks_exact(36))
            .zip(q.chunks_exact(32))
        {
            let s = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32() as f64;
            *c = (s - xs.iter().map(|&v| v as f64).sum::<f64>()) as f32;
        }
    });
}

/// out (n × m, row major) = xq (n × ka) · wᵀ, `xq` rounded by
/// [`round_activations`]. Each output is one FMA chain over its row's
/// columns in order, whatever n is.
pub fn matmul(pool: &Pool, xq: &[f32], w: &CpuWeight, out: &mut [f32]) {
    let (k, m) = (w.cols, w.rows);
    let ka = rounded_len(w.ty, k);
    let n = xq.len() / ka;
    assert_eq!(out.len(), n * m, "tiled matmul output size");
    let ldc = m;
    let c = ColumnSplit::new(out, ldc);
    let panels = m.div_ceil(NR);
    pool.for_each(panels.div_ceil(PANELS_PER_TASK), |task| {
        let mut panel = [0f32; NR * KC];
        let mut row = [0f32; KC];
        let first = task * PANELS_PER_TASK;
        for p in first..(first + PANELS_PER_TASK).min(panels) {
            let r0 = p * NR;
            let rows = NR.min(m - r0);
            // Chunks never straddle the weights / corrections boundary.
            let chunks = (0..k).step_by(KC).chain((k..ka).step_by(KC));
            for k0 in chunks {
                let kc = KC.min(if k0 < k { k } else { ka } - k0);
                pack_panel(w, r0, rows, k0, kc, &mut row, &mut panel);
                for t0 in (0..n).step_by(MR) {
                    // SAFETY: xq holds n rows of ka; the panel holds kc
                    // columns of NR; the tile writes columns r0..r0 + rows
                    // (this task's alone) of rows t0..t0 + MR.min(n - t0).
                    unsafe {
                        x86::gemm_tile(
                            MR.min(n - t0),
                            kc,
                            xq.as_ptr().add(t0 * ka + k0),
                            ka,
                            panel.as_ptr(),
                            c.at(t0, r0),
                            ldc,
                            rows,
                            k0 > 0,
                        );
                    }
                }
            }
        }
    });
}

/// Dequantizes columns k0..k0 + kc of weight rows r0..r0 + rows into
/// `panel`, column major (`panel[j * NR + i]` is row r0 + i, column k0 + j);
/// rows past the matrix are zero. Columns from `w.cols` on are the blocks'
/// offsets (see [`rounded_len`]).
fn pack_panel(
    w: &CpuWeight,
    r0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    row: &mut [f32; KC],
    panel: &mut [f32; NR * KC],
) {
    let (bs, ts) = (w.ty.block_size(), w.ty.type_size());
    for i in 0..NR {
        if i < rows && k0 >= w.cols {
            // Q4_1 / Q5_1 blocks start with f16 d, then f16 m.
            let b0 = (k0 - w.cols) * ts;
            let blocks = w.row(r0 + i)[b0..b0 + kc * ts].chunks_exact(ts);
            for (v, blk) in row.iter_mut().zip(blocks) {
                *v = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32();
            }
        } else if i < rows {
            let bytes = &w.row(r0 + i)[k0 / bs * ts..(k0 + kc) / bs * ts];
            quarrel_quant::dequantize_row(w.ty, bytes, &mut row[..kc])
                .expect("type checked at load");
        } else {
            row[..kc].fill(0.0);
        }
        for (j, &v) in row[..kc].iter().enumerate() {
            panel[j * NR + i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use quarrel_gguf::Storage;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Every output against ggml's dot kernel on the same quantized
    /// operands: only the f32 summation order may differ, so the error is
    /// bounded by a few ulps of Σ|w·x| (a float64 sum of the magnitudes).
    #[test]
    fn gemm_matches_the_dot_kernels() {
        if !x86::available() {
            eprintln!("skipped: no AVX2 + FMA on this CPU");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        use GgmlType::*;
        // Rows past a whole panel, columns past a whole chunk, tokens past
        // a whole tile.
        for (ty, k) in [
            (Q4_1, 320),
            (Q5_1, 320),
            (Q5_0, 320),
            (Q8_0, 576),
            (Q4K, 512),
            (Q6K, 768),
            (F32, 40),
        ] {
            let (m, n) = (37, 41);
            let row_bytes = ty.row_bytes(k as u64).unwrap() as usize;
            let mut bytes = vec![0u8; m * row_bytes];
            let mut wf = vec![0f32; k];
            for r in bytes.chunks_exact_mut(row_bytes) {
                wf.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
                quarrel_quant::quantize_row(ty, &wf, r).unwrap();
            }
            let w = CpuWeight::new(ty, m, k, Arc::new(Storage::Owned(bytes)), 0);
            let x: Vec<f32> = (0..n * k).map(|_| rng.random_range(-2.0..2.0)).collect();
            let (mut act, mut xq) = (Vec::new(), Vec::new());
            let pool = Pool::new(2);
            round_activations(&pool, ty, &x, k, &mut act, &mut xq);
            let mut out = vec![f32::NAN; n * m];
            matmul(&pool, &xq, &w, &mut out);
            // Batch invariance: any run of rows alone gives the same bits.
            let (a, b) = (5, 12);
            let mut part = vec![f32::NAN; (b - a) * m];
            let ka = rounded_len(ty, k);
            matmul(&pool, &xq[a * ka..b * ka], &w, &mut part);
            assert_eq!(part, out[a * m..b * m], "{ty}: rows {a}..{b} alone");
            let act_row = act.len() / n;
            let mut wd = vec![0f32; k];
            for r in 0..m {
                quarrel_quant::dequantize_row(ty, w.row(r), &mut wd).unwrap();
                for t in 0..n {
                    let want =
                        quarrel_quant::vec_dot(ty, k, w.row(r), &act[t * act_row..][..act_row]);
                    let scale: f64 = wd
                        .iter()
                        .zip(&x[t * k..][..k])
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let got = out[t * m + r];
                    assert!(
                        ((got - want) as f64).abs() <= 1e-5 * scale,
                        "{ty} row {r} token {t}: {got} vs {want} (scale {scale})"
                    );
                }
            }
        }
    }
}
