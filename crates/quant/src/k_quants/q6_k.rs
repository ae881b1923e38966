//! Q6_K (210 B): 16 sub-blocks of 16 with 8-bit signed scales; 128 bytes of
//! low nibbles (ql), 64 bytes of high 2-bit pairs (qh), 16 i8 scales, f16 d;
//! x = d * scale * (q - 32).
//!
//! Element 128n + 32k + l (k in 0..4, l in 0..32): nibble of ql[64n + l + 32(k % 2)]
//! (low for k < 2, high otherwise), high bits 2k..2k+2 of qh[32n + l].

use super::search::make_qx_quants;
use super::{check, k_lanes, lane_sum, nearest_int, q8_k_parts, tiled_step, Q8_K_BYTES, QK_K};
use crate::avx2::Acc8;
use crate::float::{f16_le, fp32_to_fp16};

pub(crate) const BYTES: usize = 210;

/// The unsigned 6-bit quants (0..64) of a block, in element order.
fn unpack(ql: &[u8], qh: &[u8]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (half, (ql, qh)) in q
        .chunks_exact_mut(128)
        .zip(ql.chunks_exact(64).zip(qh.chunks_exact(32)))
    {
        for (k, chunk) in half.chunks_exact_mut(32).enumerate() {
            let src = &ql[32 * (k % 2)..];
            for ((q, &b), &h) in chunk.iter_mut().zip(src).zip(qh) {
                let low = if k < 2 { b & 0xF } else { b >> 4 };
                *q = (low | (((h >> (2 * k)) & 3) << 4)) as i8;
            }
        }
    }
    q
}

fn scales(s: &[u8]) -> [i32; 16] {
    std::array::from_fn(|j| i32::from(s[j] as i8))
}

pub fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), BYTES);
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_le(&b[208..]);
        let q = unpack(&b[..128], &b[128..192]);
        for ((yg, qg), &s) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&b[192..208])
        {
            // ggml multiplies (d * scale) * (q - 32), left to right.
            let ds = d * f32::from(s as i8);
            for (y, &q) in yg.iter_mut().zip(qg) {
                *y = ds * f32::from(q - 32);
            }
        }
    }
}

pub fn quantize_row_q6_k_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), BYTES);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut levels = [0i8; QK_K];
        let mut sub_scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for (j, (xg, lg)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            sub_scales[j] = make_qx_quants(32, xg, lg);
            if sub_scales[j].abs() > max_abs_scale {
                max_abs_scale = sub_scales[j].abs();
                max_scale = sub_scales[j];
            }
        }
        if max_abs_scale < 1e-15 {
            // GROUP_MAX_EPS: an all-zero block (d = +0).
            b.fill(0);
            continue;
        }

        let iscale = -128.0 / max_scale;
        b[208..210].copy_from_slice(&fp32_to_fp16(1.0 / iscale).to_le_bytes());
        for (s, &v) in b[192..208].iter_mut().zip(&sub_scales) {
            *s = nearest_int(iscale * v).min(127) as i8 as u8;
        }

        // Requantize against the rounded scales; sub-blocks whose scale
        // rounded to zero keep the search's levels.
        let d = f16_le(&b[208..]);
        for ((xg, lg), &s) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .zip(&b[192..208])
        {
            let dl = d * f32::from(s as i8);
            if dl == 0.0 {
                continue;
            }
            for (l, &v) in lg.iter_mut().zip(xg) {
                *l = (nearest_int(v / dl).clamp(-32, 31) + 32) as i8;
            }
        }

        let (ql, rest) = b.split_at_mut(128);
        let qh = &mut rest[..64];
        for n in 0..2 {
            for l in 0..32 {
                let lv = |k: usize| levels[128 * n + 32 * k + l] as u8;
                ql[64 * n + l] = (lv(0) & 0xF) | ((lv(2) & 0xF) << 4);
                ql[64 * n + l + 32] = (lv(1) & 0xF) | ((lv(3) & 0xF) << 4);
                qh[32 * n + l] =
                    (lv(0) >> 4) | ((lv(1) >> 4) << 2) | ((lv(2) >> 4) << 4) | ((lv(3) >> 4) << 6);
            }
        }
    }
}

/// ggml's x86 AVX2 `ggml_vec_dot_q6_K_q8_K`: lanes of unsigned quants times
/// scales, minus `32 * (scale * bsum)` pairs per lane, one FMA per block.
pub fn vec_dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = Acc8::default();
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (d8, q8, bsums) = q8_k_parts(by);
        let d = d8 * f16_le(&bx[208..]);
        let sc = scales(&bx[192..208]);
        let mut lanes = k_lanes(&unpack(&bx[..128], &bx[128..192]), q8, &sc);
        for (k, lane) in lanes.iter_mut().enumerate() {
            let pair =
                i32::from(bsums[2 * k]) * sc[2 * k] + i32::from(bsums[2 * k + 1]) * sc[2 * k + 1];
            *lane = lane.wrapping_sub(pair.wrapping_shl(5));
        }
        acc.fma_i32(d, &lanes);
    }
    acc.hsum()
}

/// ggml's tiled matmul (see `tiled_step`): the quants minus 32 times the
/// i8 scales, no mins (the kernel's +128 activation bias cancels exactly).
pub fn tiled_dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let blocks = x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES));
    blocks.fold(0.0, |acc, (bx, by)| {
        let (d8, q8, _) = q8_k_parts(by);
        let q = unpack(&bx[..128], &bx[128..192]).map(|q| q - 32);
        let s1 = lane_sum(k_lanes(&q, q8, &scales(&bx[192..208])));
        tiled_step(acc, d8, f16_le(&bx[208..]), s1, None)
    })
}
