//! Q5_K (176 B): as Q4_K (8 sub-blocks of 32, 6-bit scales and mins in 12
//! bytes) plus 32 bytes of 5th bits; f16 d, f16 dmin, 12 scale bytes,
//! 32 qh bytes, 128 bytes of low nibbles; x = d * scale * q - dmin * min.
//!
//! Element 64c + m takes its nibble as Q4_K does and its 5th bit from bit
//! 2c (m < 32) or 2c + 1 (m >= 32) of qh[m % 32].

use super::q4_k::{
    dequantize_k4_block, k4_block_dot, k4_tiled_step, quantize_k4_head, scales_mins,
};
use super::search::Qkx2;
use super::{check, Q8_K_BYTES, QK_K};
use crate::avx2::Acc8;
use crate::float::f16_le;

pub(crate) const BYTES: usize = 176;

/// The 5-bit quants of a block, in element order.
fn unpack(qh: &[u8], qs: &[u8]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (c, (pair, src)) in q.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (lo, hi) = pair.split_at_mut(32);
        for (((l, h), &b), &bits) in lo.iter_mut().zip(hi).zip(src).zip(qh) {
            *l = ((b & 0xF) | (((bits >> (2 * c)) & 1) << 4)) as i8;
            *h = ((b >> 4) | (((bits >> (2 * c + 1)) & 1) << 4)) as i8;
        }
    }
    q
}

pub fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), BYTES);
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        dequantize_k4_block(b, &unpack(&b[16..48], &b[48..]), y);
    }
}

pub fn quantize_row_q5_k_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), BYTES);
    let search = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut levels = [0u8; QK_K];
        quantize_k4_head(x, &search, &mut b[..16], &mut levels);
        let (qh, qs) = b[16..].split_at_mut(32);
        qh.fill(0);
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            for (m, q) in q.iter_mut().enumerate() {
                let (l1, l2) = (levels[64 * c + m], levels[64 * c + m + 32]);
                qh[m] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                *q = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    }
}

/// ggml's x86 AVX2 `ggml_vec_dot_q5_K_q8_K`: like Q4_K's, but the mins term
/// is summed to one integer per super-block and accumulated in a scalar,
/// `summs += dmin * sum`, which GCC contracts into an FMA.
pub fn vec_dot_q5_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = Acc8::default();
    let mut summs = 0f32;
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = crate::float::f32_le(by);
        let d = d8 * f16_le(bx);
        let dmin = -d8 * f16_le(&bx[2..]);
        let q = unpack(&bx[16..48], &bx[48..]);
        let prod = k4_block_dot(&mut acc, d, &q, &scales_mins(&bx[4..16]), by);
        let sum = prod.iter().fold(0i32, |a, &p| a.wrapping_add(p));
        summs = dmin.mul_add(sum as f32, summs);
    }
    acc.hsum() + summs
}

/// ggml's tiled matmul (see `tiled_step`): as Q4_K's, with 5-bit quants.
pub fn tiled_dot_q5_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let blocks = x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES));
    blocks.fold(0.0, |acc, (bx, by)| {
        k4_tiled_step(acc, bx, &unpack(&bx[16..48], &bx[48..]), by)
    })
}
