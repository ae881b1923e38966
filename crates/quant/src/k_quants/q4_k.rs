//! Q4_K (144 B): 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes;
//! f16 d, f16 dmin, 12 scale bytes, 128 bytes of 4-bit quants;
//! x = d * scale * q - dmin * min.
//!
//! Element 64c + m: low nibble of qs[32c + m] (m < 32, sub-block 2c) or high
//! nibble of qs[32c + m - 32] (sub-block 2c + 1).

use super::search::Qkx2;
use super::{
    check, get_scale_min_k4, k_lanes, lane_sum, nearest_int, q8_k_parts, tiled_step, Q8_K_BYTES,
    QK_K,
};
use crate::avx2::Acc8;
use crate::float::{f16_le, fp32_to_fp16};

pub(crate) const BYTES: usize = 144;

/// The 4-bit quants of a block, in element order.
fn unpack(qs: &[u8]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (pair, src) in q.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
        let (lo, hi) = pair.split_at_mut(32);
        for ((l, h), &b) in lo.iter_mut().zip(hi).zip(src) {
            *l = (b & 0xF) as i8;
            *h = (b >> 4) as i8;
        }
    }
    q
}

/// The 8 (scale, min) pairs of a 12-byte scale field.
pub(crate) fn scales_mins(s: &[u8]) -> [(u8, u8); 8] {
    std::array::from_fn(|j| get_scale_min_k4(j, s))
}

/// The reference scale search shared by Q4_K and Q5_K: per 32-element
/// sub-block, weights `rms + |x|`, a `make_qkx2_quants` fit, then 6-bit
/// scales and mins relative to their maxima. Writes d, dmin and the 12 scale
/// bytes into `head` (16 bytes) and the levels (0..=nmax) into `levels`.
pub(super) fn quantize_k4_head(x: &[f32], search: &Qkx2, head: &mut [u8], levels: &mut [u8; QK_K]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = search.quantize(xs, &weights, ls);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let s = &mut head[4..16];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    head[..2].copy_from_slice(&fp32_to_fp16(max_scale / 63.0).to_le_bytes());
    head[2..4].copy_from_slice(&fp32_to_fp16(max_min / 63.0).to_le_bytes());

    // Requantize against the rounded scales; sub-blocks whose scale rounded
    // to zero keep the search's levels.
    let (d, dmin) = (f16_le(head), f16_le(&head[2..]));
    let nmax = search.nmax;
    for ((xs, ls), (sc, m)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .zip(scales_mins(&head[4..16]))
    {
        let dl = d * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m);
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = nearest_int((v + dm) / dl).clamp(0, nmax) as u8;
        }
    }
}

pub fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), BYTES);
    for (b, y) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        dequantize_k4_block(b, &unpack(&b[16..]), y);
    }
}

/// Q4_K and Q5_K share the header (d, dmin, 12 bytes of scales and mins):
/// y = d·scale·q − dmin·min per sub-block of 32, in ggml's operation order.
pub(crate) fn dequantize_k4_block(header: &[u8], q: &[i8; QK_K], y: &mut [f32]) {
    let (d, min) = (f16_le(header), f16_le(&header[2..]));
    for ((ys, qs), (sc, m)) in y
        .chunks_exact_mut(32)
        .zip(q.chunks_exact(32))
        .zip(scales_mins(&header[4..16]))
    {
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        for (y, &q) in ys.iter_mut().zip(qs) {
            *y = d1 * f32::from(q) - m1;
        }
    }
}

pub fn quantize_row_q4_k_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), BYTES);
    let search = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut levels = [0u8; QK_K];
        quantize_k4_head(x, &search, &mut b[..16], &mut levels);
        for (c, q) in b[16..].chunks_exact_mut(32).enumerate() {
            for (m, q) in q.iter_mut().enumerate() {
                *q = levels[64 * c + m] | (levels[64 * c + m + 32] << 4);
            }
        }
    }
}

/// The dot of one Q4_K / Q5_K block's quants with a Q8_K block, accumulated
/// as ggml's AVX2 kernels do. Returns the mins term as the integer
/// `sum_j min_j * (sum of the 32 q8 of sub-block j)` split in four lanes.
pub(super) fn k4_block_dot(
    acc: &mut Acc8,
    d: f32,
    q: &[i8; QK_K],
    sm: &[(u8, u8); 8],
    by: &[u8],
) -> [i32; 4] {
    let (_, q8, bsums) = q8_k_parts(by);
    let scales = std::array::from_fn(|g| i32::from(sm[g / 2].0));
    acc.fma_i32(d, &k_lanes(q, q8, &scales));
    // _mm_hadd_epi16 of the bsums (wrapping), then madd with the mins.
    let sums: [i32; 8] =
        std::array::from_fn(|t| i32::from(bsums[2 * t].wrapping_add(bsums[2 * t + 1])));
    std::array::from_fn(|u| {
        i32::from(sm[2 * u].1) * sums[2 * u] + i32::from(sm[2 * u + 1].1) * sums[2 * u + 1]
    })
}

/// ggml's x86 AVX2 `ggml_vec_dot_q4_K_q8_K`: scaled quant lanes in 8 f32
/// lanes, the mins term (`dmin = -d8 * dmin`) in 4 more, each by FMA.
pub fn vec_dot_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = Acc8::default();
    let mut acc_m = [0f32; 4];
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = crate::float::f32_le(by);
        let d = d8 * f16_le(bx);
        let dmin = -d8 * f16_le(&bx[2..]);
        let prod = k4_block_dot(
            &mut acc,
            d,
            &unpack(&bx[16..]),
            &scales_mins(&bx[4..16]),
            by,
        );
        for (a, &p) in acc_m.iter_mut().zip(&prod) {
            *a = dmin.mul_add(p as f32, *a);
        }
    }
    acc.hsum() + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// The integer parts of one Q4_K super-block against one Q8_K block for the
/// repacked kernels, per pair of sub-blocks (2p, 2p + 1): the scaled quant
/// dot and the mins term `min * (sum of the sub-block's 32 activations)`.
/// Exact: every i16 stage of ggml's kernels stays within range for 4-bit
/// weights and 8-bit activations.
fn repacked_pair_sums(bx: &[u8], by: &[u8]) -> [(i32, i32); 4] {
    let (_, q8, bsums) = q8_k_parts(by);
    let q = unpack(&bx[16..]);
    let sm = scales_mins(&bx[4..16]);
    let sub = |j: usize| -> (i32, i32) {
        let dot: i32 = q[32 * j..32 * j + 32]
            .iter()
            .zip(&q8[32 * j..32 * j + 32])
            .map(|(&w, &a)| i32::from(w) * i32::from(a as i8))
            .sum();
        // _mm_hadd_epi16 of the two 16-element sums (wrapping, as i16).
        let s = bsums[2 * j].wrapping_add(bsums[2 * j + 1]);
        (i32::from(sm[j].0) * dot, i32::from(sm[j].1) * i32::from(s))
    };
    std::array::from_fn(|p| {
        let (a, b) = (sub(2 * p), sub(2 * p + 1));
        (a.0 + b.0, a.1 + b.1)
    })
}

/// One output of ggml's x86 `ggml_gemv_q4_K_8x8_q8_K` (weights repacked to
/// `block_q4_Kx8`, one activation row from `quantize_row_q8_K`): per
/// super-block one FMA of the integer quant sum with `d_w * d_a` and one of
/// the integer mins sum with `dmin_w * d_a`, in two f32 accumulators; the
/// result is their difference.
pub fn gemv_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = crate::float::f32_le(by);
        let (isum, imin) = repacked_pair_sums(bx, by)
            .iter()
            .fold((0, 0), |(s, m), &(ps, pm)| (s + ps, m + pm));
        acc = (isum as f32).mul_add(f16_le(bx) * d8, acc);
        acc_min = (imin as f32).mul_add(f16_le(&bx[2..]) * d8, acc_min);
    }
    acc - acc_min
}

/// One output of ggml's x86 `ggml_gemm_q4_K_8x8_q8_K` (groups of four
/// activation rows from `ggml_quantize_mat_q8_K_4x8`, see
/// [`super::quantize_row_q8_k_4x8`]). Unlike the gemv it converts and
/// accumulates after every pair of sub-blocks: four FMAs per super-block
/// into each accumulator.
pub fn gemm_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (bx, by) in x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = crate::float::f32_le(by);
        let (d, dmin) = (f16_le(bx) * d8, f16_le(&bx[2..]) * d8);
        for (isum, imin) in repacked_pair_sums(bx, by) {
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (imin as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// One Q4_K / Q5_K super-block of ggml's tiled matmul (see `tiled_step`):
/// 6-bit scales and mins per 32-element sub-block, each min against the
/// sum of its sub-block's two Q8_K block sums.
pub(super) fn k4_tiled_step(acc: f32, bx: &[u8], q: &[i8; QK_K], by: &[u8]) -> f32 {
    let (d8, q8, bsums) = q8_k_parts(by);
    let sm = scales_mins(&bx[4..16]);
    let scales = std::array::from_fn(|g| i32::from(sm[g / 2].0));
    let s1 = lane_sum(k_lanes(q, q8, &scales));
    let s2 = sm.iter().enumerate().fold(0i32, |a, (j, &(_, m))| {
        a + i32::from(m) * (i32::from(bsums[2 * j]) + i32::from(bsums[2 * j + 1]))
    });
    tiled_step(acc, d8, f16_le(bx), s1, Some((f16_le(&bx[2..]), s2)))
}

/// ggml's tiled matmul (see `tiled_step`) for Q4_K weights that are not
/// repacked.
pub fn tiled_dot_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let blocks = x.chunks_exact(BYTES).zip(y.chunks_exact(Q8_K_BYTES));
    blocks.fold(0.0, |acc, (bx, by)| {
        k4_tiled_step(acc, bx, &unpack(&bx[16..]), by)
    })
}
