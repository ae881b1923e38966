//! Q3_K (110 B): 16 sub-blocks of 16; 32 bytes of high bits (hmask), 64 bytes
//! of low 2-bit quants, 12 bytes of 6-bit signed scales, f16 d;
//! x = d * (scale - 32) * (q - (high bit clear ? 4 : 0)).
//!
//! Element 128n + 32j + m: low bits 2j..2j+2 of qs[32n + m], high bit 4n + j
//! of hmask[m]. Scale s: low nibble of byte s (s < 8) or high nibble of byte
//! s - 8, top 2 bits at bits 2(s / 4) of byte 8 + s % 4.

use super::search::make_q3_quants;
use super::{check, k_lanes, lane_sum, nearest_int, q8_k_parts, tiled_step, Q8_K_BYTES, QK_K};
use crate::avx2::Acc8;
use crate::float::{f16_le, fp32_to_fp16};

pub(crate) const BYTES: usize = 110;

/// The 16 signed 6-bit scales (already minus 32).
pub(crate) fn scales(s: &[u8]) -> [i32; 16] {
    std::array::from_fn(|j| {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        i32::from(low | (high << 4)) - 32
    })
}

/// The 256 signed 3-bit quants (-4..=3) of a block, in element order.
fn unpack(hmask: &[u8], qs: &[u8]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    // Chunk c of 32 elements: bits 2(c % 4) of qs[32(c / 4)..], hmask bit c.
    for (c, chunk) in q.chunks_exact_mut(32).enumerate() {
        let (src, shift) = (&qs[32 * (c / 4)..], 2 * (c % 4));
        for ((q, &b), &h) in chunk.iter_mut().zip(src).zip(hmask) {
            let high_clear = (h >> c) & 1 == 0;
            *q = ((b >> shift) & 3) as i8 - 4 * i8::from(high_clear);
        }
    }
    q
}

pub fn dequantize_row_q3_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), BYTES);
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_le(&b[108..]);
        let sc = scales(&b[96..108]);
        let q = unpack(&b[..32], &b[32..96]);
        for ((yg, qg), &s) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&sc) {
            let dl = d * s as f32;
            for (y, &q) in yg.iter_mut().zip(qg) {
                *y = dl * f32::from(q);
            }
        }
    }
}

pub fn quantize_row_q3_k_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), BYTES);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut levels = [0i8; QK_K];
        let mut sub_scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for (j, (xg, lg)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            sub_scales[j] = make_q3_quants(4, xg, lg);
            if sub_scales[j].abs() > amax {
                amax = sub_scales[j].abs();
                max_scale = sub_scales[j];
            }
        }

        b[96..108].fill(0);
        let d = if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            let s = &mut b[96..108];
            for (j, &v) in sub_scales.iter().enumerate() {
                let l = ((nearest_int(iscale * v) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    s[j] = l & 0xF;
                } else {
                    s[j - 8] |= (l & 0xF) << 4;
                }
                s[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
            }
            fp32_to_fp16(1.0 / iscale)
        } else {
            fp32_to_fp16(0.0)
        };
        b[108..110].copy_from_slice(&d.to_le_bytes());

        // Requantize against the rounded scales; sub-blocks whose scale
        // rounded to zero keep the search's levels.
        let df = f16_le(&b[108..]);
        let sc = scales(&b[96..108]);
        for ((xg, lg), &s) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).zip(&sc) {
            let dl = df * s as f32;
            if dl == 0.0 {
                continue;
            }
            for (l, &v) in lg.iter_mut().zip(xg) {
                *l = (nearest_int(v / dl).clamp(-4, 3) + 4) as i8;
            }
        }

        // Level bit 2 goes to hmask: byte e % 32, bit e / 32.
        let (hmask, rest) = b.split_at_mut(32);
        hmask.fill(0);
        for (e, l) in levels.iter_mut().enumerate() {
            if *l > 3 {
                hmask[e % 32] |= 1 << (e / 32);
                *l -= 4;
            }
        }
        for (n, q) in rest[..64].chunks_exact_mut(32).enumerate() {
            let lv = |i: usize| levels[128 * n + i] as u8;
            for (m, q) in q.iter_mut().enumerate() {
                *q = lv(m) | (lv(m + 32) << 2) | (lv(m + 64) << 4) | (lv(m + 96) << 6);
            }
        }
    }
}

/// ggml's x86 AVX2 `ggml_vec_dot_q3_K_q8_K`: one FMA of the scaled lanes per
/// super-block.
pub fn vec_dot_q3_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = Acc8::default();
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (d8, q8, _) = q8_k_parts(by);
        let d = d8 * f16_le(&bx[108..]);
        let q = unpack(&bx[..32], &bx[32..96]);
        acc.fma_i32(d, &k_lanes(&q, q8, &scales(&bx[96..108])));
    }
    acc.hsum()
}

/// ggml's tiled matmul (see `tiled_step`): signed quants and scales, no
/// mins (the kernel's +128 activation bias cancels exactly).
pub fn tiled_dot_q3_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let blocks = x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES));
    blocks.fold(0.0, |acc, (bx, by)| {
        let (d8, q8, _) = q8_k_parts(by);
        let q = unpack(&bx[..32], &bx[32..96]);
        let s1 = lane_sum(k_lanes(&q, q8, &scales(&bx[96..108])));
        tiled_step(acc, d8, f16_le(&bx[108..]), s1, None)
    })
}
