//! The 256-element super-block formats ("k-quants"): Q2_K, Q3_K, Q4_K, Q5_K,
//! Q6_K and the activation format Q8_K. One file per type under
//! `k_quants/`, plus the scale searches the reference quantizers share.
//!
//! Dequantization and `quantize_row_*_ref` follow ggml-quants.c operation
//! for operation; the dots follow ggml's x86 AVX2 kernels, whose integer
//! lanes and f32 FMA accumulation order they reproduce (see `k_lanes`).
//! These functions panic if the slices are not whole, matching blocks; the
//! crate-root entry points check and return errors instead.

mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod q8_k;
mod search;

pub use q2_k::{
    dequantize_row_q2_k, quantize_row_q2_k_ref, tiled_dot_q2_k_q8_k, vec_dot_q2_k_q8_k,
};
pub use q3_k::{
    dequantize_row_q3_k, quantize_row_q3_k_ref, tiled_dot_q3_k_q8_k, vec_dot_q3_k_q8_k,
};
pub use q4_k::{
    dequantize_row_q4_k, gemm_q4_k_q8_k, gemv_q4_k_q8_k, quantize_row_q4_k_ref,
    tiled_dot_q4_k_q8_k, vec_dot_q4_k_q8_k,
};
pub use q5_k::{
    dequantize_row_q5_k, quantize_row_q5_k_ref, tiled_dot_q5_k_q8_k, vec_dot_q5_k_q8_k,
};
pub use q6_k::{
    dequantize_row_q6_k, quantize_row_q6_k_ref, tiled_dot_q6_k_q8_k, vec_dot_q6_k_q8_k,
};
pub use q8_k::{dequantize_row_q8_k, quantize_row_q8_k_4x8, quantize_row_q8_k_ref};

// Block sizes and scale decoders the SIMD kernels share with the models.
#[cfg(target_arch = "x86_64")]
pub(crate) use {
    q2_k::BYTES as Q2_K_BYTES,
    q3_k::{scales as q3_k_scales, BYTES as Q3_K_BYTES},
    q4_k::{scales_mins, BYTES as Q4_K_BYTES},
    q5_k::BYTES as Q5_K_BYTES,
    q6_k::BYTES as Q6_K_BYTES,
};

/// Elements per super-block.
pub(crate) const QK_K: usize = 256;

/// Bytes of a Q8_K block: f32 d, 256 i8 quants, 16 i16 sums of 16 quants.
pub(crate) const Q8_K_BYTES: usize = 292;

/// Panics unless `bytes` holds exactly the super-blocks for `n` elements.
pub(crate) fn check(n: usize, bytes: usize, block_bytes: usize) {
    assert!(n.is_multiple_of(QK_K), "{n} is not a multiple of {QK_K}");
    assert_eq!(bytes, n / QK_K * block_bytes, "row length mismatch");
}

/// ggml's `nearest_int`: adding 1.5 * 2^23 makes the FPU round half to even
/// into the low mantissa bits. Exact for |x| <= 4194303, like ggml's.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `get_scale_min_k4`: the j-th 6-bit scale and min of Q4_K / Q5_K,
/// packed in 12 bytes (j < 4: low 6 bits of bytes j and j + 4; j >= 4: a
/// nibble of byte j + 4 plus the top 2 bits of bytes j - 4 and j).
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The parts of a Q8_K block: d, quants, and the 16 block sums.
pub(crate) fn q8_k_parts(b: &[u8]) -> (f32, &[u8], [i16; 16]) {
    let d = crate::float::f32_le(b);
    let bsums = std::array::from_fn(|j| i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]));
    (d, &b[4..260], bsums)
}

/// The eight i32 lanes ggml's AVX2 k-quant dots build before converting to
/// float: `maddubs` pairs, then `madd` with the group scale, put element i
/// of the super-block into lane (i % 32) / 4, weighted by the scale of its
/// 16-element group. These sums cannot saturate for k-quant value ranges,
/// so plain i32 arithmetic is exact.
pub(crate) fn k_lanes(q: &[i8; QK_K], q8: &[u8], scales: &[i32; 16]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (g, (qg, yg)) in q.chunks_exact(16).zip(q8.chunks_exact(16)).enumerate() {
        let half = &mut lanes[(g & 1) * 4..(g & 1) * 4 + 4];
        for (t, lane) in half.iter_mut().enumerate() {
            let s: i32 = (4 * t..4 * t + 4)
                .map(|i| i32::from(qg[i]) * i32::from(yg[i] as i8))
                .sum();
            *lane += scales[g] * s;
        }
    }
    lanes
}

/// The (wrapping, as the SIMD lanes) sum of [`k_lanes`]' output.
pub(crate) fn lane_sum(lanes: [i32; 8]) -> i32 {
    lanes.iter().fold(0, |a, &l| a.wrapping_add(l))
}

/// One super-block of ggml's tiled K-quant matmul (ggml-cpu/tiled,
/// `tiled_run_microtile_avx2`), added to the running output `acc`.
///
/// The kernel forms the exact integer sums `s1 = sum scale * q * a` (the
/// weight's true quant values, i.e. after any offset such as Q6_K's -32)
/// and, for formats with mins, `s2 = sum min * bsum`; then per block
/// `res = d * f32(s1)`, `res = fnmadd(dmin, f32(s2), res)` and
/// `acc = fma(res, d8, acc)`: unlike `ggml_vec_dot_*`, the activation's
/// scale comes last, and each block is rounded into a single f32 sum
/// starting from +0.
#[inline(always)]
pub(crate) fn tiled_step(acc: f32, d8: f32, d: f32, s1: i32, min: Option<(f32, i32)>) -> f32 {
    let mut res = d * s1 as f32;
    if let Some((dmin, s2)) = min {
        res = (-dmin).mul_add(s2 as f32, res);
    }
    res.mul_add(d8, acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    #[test]
    fn scale_min_k4_unpacks_all_six_bits() {
        // Scales 0..8 = 10 + j, mins = 40 + j packed as ggml packs them.
        let mut q = [0u8; 12];
        for j in 0..8u8 {
            let (ls, lm) = (10 + j, 40 + j);
            let j = usize::from(j);
            if j < 4 {
                q[j] = ls;
                q[j + 4] = lm;
            } else {
                q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                q[j - 4] |= (ls >> 4) << 6;
                q[j] |= (lm >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (10 + j as u8, 40 + j as u8));
        }
    }
}
