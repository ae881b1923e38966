//! Q2_K (84 B): 16 sub-blocks of 16; bytes 0..16 hold each sub-block's 4-bit
//! scale (low nibble) and 4-bit min (high nibble), 64 bytes of 2-bit quants,
//! then f16 d and f16 dmin; x = d * scale * q - dmin * min.
//!
//! Quant layout: element 128n + 32j + m is bits 2j..2j+2 of qs[32n + m].

use super::search::Qkx2;
use super::{check, k_lanes, lane_sum, nearest_int, q8_k_parts, tiled_step, Q8_K_BYTES, QK_K};
use crate::avx2::Acc8;
use crate::float::{f16_le, fp32_to_fp16};

pub(crate) const BYTES: usize = 84;

/// The 256 2-bit quants of a block, in element order.
fn unpack(qs: &[u8]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (e, chunk) in q.chunks_exact_mut(32).enumerate() {
        let (src, shift) = (&qs[32 * (e / 4)..], 2 * (e % 4));
        for (q, &b) in chunk.iter_mut().zip(src) {
            *q = ((b >> shift) & 3) as i8;
        }
    }
    q
}

pub fn dequantize_row_q2_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), BYTES);
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_le(&b[80..]), f16_le(&b[82..]));
        let q = unpack(&b[16..80]);
        for (g, (yg, qg)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * f32::from(b[g] & 0xF);
            let ml = min * f32::from(b[g] >> 4);
            for (y, &q) in yg.iter_mut().zip(qg) {
                *y = dl * f32::from(q) - ml;
            }
        }
    }
}

pub fn quantize_row_q2_k_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), BYTES);
    const Q4SCALE: f32 = 15.0;
    let search = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for (j, (xg, lg)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let weights: [f32; 16] = std::array::from_fn(|l| xg[l].abs());
            (scales[j], mins[j]) = search.quantize(xg, &weights, lg);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }

        let sc = &mut b[..16];
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &v) in sc.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * v) as u8;
            }
        } else {
            sc.fill(0);
        }
        let d = if max_scale > 0.0 {
            fp32_to_fp16(max_scale / Q4SCALE)
        } else {
            fp32_to_fp16(0.0)
        };
        let dmin = if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &v) in sc.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * v) << 4) as u8;
            }
            fp32_to_fp16(max_min / Q4SCALE)
        } else {
            fp32_to_fp16(0.0)
        };
        b[80..82].copy_from_slice(&d.to_le_bytes());
        b[82..84].copy_from_slice(&dmin.to_le_bytes());

        // Requantize against the rounded scales; sub-blocks whose scale
        // rounded to zero keep the search's levels.
        let (df, dminf) = (f16_le(&b[80..]), f16_le(&b[82..]));
        for (j, (xg, lg)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let dl = df * f32::from(b[j] & 0xF);
            if dl == 0.0 {
                continue;
            }
            let dm = dminf * f32::from(b[j] >> 4);
            for (l, &v) in lg.iter_mut().zip(xg) {
                *l = nearest_int((v + dm) / dl).clamp(0, 3) as u8;
            }
        }

        let qs = &mut b[16..80];
        for (n, q) in qs.chunks_exact_mut(32).enumerate() {
            let lv = &levels[128 * n..];
            for (m, q) in q.iter_mut().enumerate() {
                *q = lv[m] | (lv[m + 32] << 2) | (lv[m + 64] << 4) | (lv[m + 96] << 6);
            }
        }
    }
}

/// ggml's x86 AVX2 `ggml_vec_dot_q2_K_q8_K`: per super-block one FMA of the
/// min lanes (`dmin = -d8 * dmin`), then one of the scaled quant lanes.
pub fn vec_dot_q2_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = Acc8::default();
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (d8, q8, bsums) = q8_k_parts(by);
        let d = d8 * f16_le(&bx[80..]);
        let dmin = -d8 * f16_le(&bx[82..]);
        let mins: [i32; 8] = std::array::from_fn(|k| {
            i32::from(bx[2 * k] >> 4) * i32::from(bsums[2 * k])
                + i32::from(bx[2 * k + 1] >> 4) * i32::from(bsums[2 * k + 1])
        });
        acc.fma_i32(dmin, &mins);
        let scales = std::array::from_fn(|g| i32::from(bx[g] & 0xF));
        acc.fma_i32(d, &k_lanes(&unpack(&bx[16..80]), q8, &scales));
    }
    acc.hsum()
}

/// ggml's tiled matmul (see `tiled_step`): 4-bit scales and mins per
/// 16-element sub-block, the mins against the Q8_K block sums.
pub fn tiled_dot_q2_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let blocks = x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES));
    blocks.fold(0.0, |acc, (bx, by)| {
        let (d8, q8, bsums) = q8_k_parts(by);
        let scales = std::array::from_fn(|g| i32::from(bx[g] & 0xF));
        let s1 = lane_sum(k_lanes(&unpack(&bx[16..80]), q8, &scales));
        let s2 = (0..16).fold(0i32, |a, g| a + i32::from(bx[g] >> 4) * i32::from(bsums[g]));
        let min = Some((f16_le(&bx[82..]), s2));
        tiled_step(acc, d8, f16_le(&bx[80..]), s1, min)
    })
}
