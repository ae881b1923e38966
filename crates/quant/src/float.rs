//! Plain float rows: F32 (4 bytes LE), F16 (IEEE binary16, 2 bytes LE) and
//! BF16 (top half of an f32, 2 bytes LE).
//!
//! The dot products model ggml's x86 `ggml_vec_dot_{f32,f16,bf16}` as built
//! with AVX2 + FMA + F16C: four 8-lane f32 accumulators over 32-element
//! steps, a fixed reduction tree, then the leftover elements.
//! These functions panic on mismatched lengths; the crate-root entry points
//! check and return errors instead.

use crate::avx2::hsum_float_8;
use half::f16;

/// Elements per step of ggml's AVX float dot loops (4 accumulators x 8 lanes).
pub(crate) const STEP: usize = 32;

/// The f16 stored little-endian at `b[0..2]`, widened exactly.
#[inline]
pub(crate) fn f16_le(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The f32 stored little-endian at `b[0..4]`.
#[inline]
pub(crate) fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The bf16 stored little-endian at `b[0..2]`, widened exactly.
#[inline]
pub(crate) fn bf16_le(b: &[u8]) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
}

/// ggml's `GGML_FP32_TO_FP16` (ggml-base, software): round to nearest even,
/// and every NaN becomes the canonical quiet NaN 0x7E00 with its sign.
#[inline]
pub(crate) fn fp32_to_fp16(x: f32) -> u16 {
    if x.is_nan() {
        ((x.to_bits() >> 16) & 0x8000) as u16 | 0x7E00
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// x86 F16C `vcvtps2ph` with round-to-nearest-even, which ggml's CPU backend
/// uses (`GGML_CPU_FP32_TO_FP16`): a NaN keeps its sign and top payload bits.
#[inline]
pub(crate) fn f16c_fp32_to_fp16(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even; a NaN is truncated and
/// forced quiet.
#[inline]
pub(crate) fn fp32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        ((u >> 16) | 64) as u16
    } else {
        ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
    }
}

pub(crate) fn check_lens(src_bytes: usize, elem_bytes: usize, n: usize) {
    assert_eq!(src_bytes, n * elem_bytes, "row length mismatch");
}

/// F32 bytes to f32 values.
pub fn f32_row_from_le(src: &[u8], dst: &mut [f32]) {
    check_lens(src.len(), 4, dst.len());
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32_le(s);
    }
}

/// f32 values to F32 bytes.
pub fn f32_row_to_le(src: &[f32], dst: &mut [u8]) {
    check_lens(dst.len(), 4, src.len());
    for (d, s) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

/// ggml's `ggml_fp16_to_fp32_row`: F16 bytes to f32.
pub fn fp16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    check_lens(src.len(), 2, dst.len());
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16_le(s);
    }
}

/// ggml's `ggml_fp32_to_fp16_row` (the reference conversion model files use).
pub fn fp32_to_fp16_row(src: &[f32], dst: &mut [u8]) {
    check_lens(dst.len(), 2, src.len());
    for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&fp32_to_fp16(s).to_le_bytes());
    }
}

/// ggml's `ggml_cpu_fp32_to_fp16` on x86 with F16C (activations for F16
/// weights). Differs from [`fp32_to_fp16_row`] only in NaN payloads.
pub fn cpu_fp32_to_fp16(src: &[f32], dst: &mut [u8]) {
    check_lens(dst.len(), 2, src.len());
    for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&f16c_fp32_to_fp16(s).to_le_bytes());
    }
}

/// ggml's `ggml_bf16_to_fp32_row`.
pub fn bf16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    check_lens(src.len(), 2, dst.len());
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_le(s);
    }
}

/// ggml's `ggml_fp32_to_bf16_row_ref`; the x86 CPU backend
/// (`ggml_cpu_fp32_to_bf16` without AVX512-BF16) converts the same way.
pub fn fp32_to_bf16_row(src: &[f32], dst: &mut [u8]) {
    check_lens(dst.len(), 2, src.len());
    for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&fp32_to_bf16(s).to_le_bytes());
    }
}

/// The vectorised part of ggml's float dots: `acc[j] = fma(x, y, acc[j])`
/// over the first `np` elements, accumulator j taking elements 8j..8j+8 of
/// each 32-element step.
fn fma_steps(np: usize, x: impl Fn(usize) -> f32, y: impl Fn(usize) -> f32) -> [[f32; 8]; 4] {
    let mut acc = [[0f32; 8]; 4];
    for i in (0..np).step_by(STEP) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let e = i + 8 * j + l;
                *a = x(e).mul_add(y(e), *a);
            }
        }
    }
    acc
}

/// Folds the four accumulators as (a0 + a2) + (a1 + a3), lane by lane.
fn fold4(acc: &[[f32; 8]; 4]) -> [f32; 8] {
    std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]))
}

/// ggml's `GGML_F32x8_REDUCE` after the fold: halves added, then two `hadd`s.
fn reduce_hadd(v: &[f32; 8]) -> f32 {
    let t = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// ggml's `ggml_vec_dot_f32` (x86 AVX2 + FMA build) on two F32 byte rows.
///
/// GCC vectorises the leftover loop `sumf += x[i]*y[i]`: chunks of 8, then
/// of 4, are multiplied, then added one by one in order; the last (< 4)
/// elements are contracted to scalar FMAs.
pub fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_lens(x.len(), 4, n);
    check_lens(y.len(), 4, n);
    let xf = |i: usize| f32_le(&x[4 * i..]);
    let yf = |i: usize| f32_le(&y[4 * i..]);
    let np = n & !(STEP - 1);
    f32_tail(n, np, x, y, reduce_hadd(&fold4(&fma_steps(np, xf, yf))))
}

/// The end of [`vec_dot_f32`]: adds elements `from..n` to the reduced `sum`.
pub(crate) fn f32_tail(n: usize, from: usize, x: &[u8], y: &[u8], mut sum: f32) -> f32 {
    let xf = |i: usize| f32_le(&x[4 * i..]);
    let yf = |i: usize| f32_le(&y[4 * i..]);
    let mut i = from;
    let unfused_end = i + (n - i) / 4 * 4;
    while i < unfused_end {
        sum += xf(i) * yf(i);
        i += 1;
    }
    while i < n {
        sum = xf(i).mul_add(yf(i), sum);
        i += 1;
    }
    sum
}

/// ggml's `ggml_vec_dot_f16` (x86 AVX2 + FMA + F16C build): f32 lanes, the
/// reduced sum widened to f64, leftovers added in f64 as f32 products.
pub fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_lens(x.len(), 2, n);
    check_lens(y.len(), 2, n);
    let xf = |i: usize| f16_le(&x[2 * i..]);
    let yf = |i: usize| f16_le(&y[2 * i..]);
    let np = n & !(STEP - 1);
    f16_tail(n, np, x, y, reduce_hadd(&fold4(&fma_steps(np, xf, yf))))
}

/// The end of [`vec_dot_f16`]: the reduced `sum` widened to f64, plus the
/// f32 products of elements `from..n`.
pub(crate) fn f16_tail(n: usize, from: usize, x: &[u8], y: &[u8], sum: f32) -> f32 {
    let mut sum = f64::from(sum);
    for i in from..n {
        sum += f64::from(f16_le(&x[2 * i..]) * f16_le(&y[2 * i..]));
    }
    sum as f32
}

/// ggml's `ggml_vec_dot_bf16` (x86 AVX2 build). Its `add(mul(x, y), c)` is
/// contracted to FMA by GCC; the reduction ends like `hsum_float_8`.
pub fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_lens(x.len(), 2, n);
    check_lens(y.len(), 2, n);
    let xf = |i: usize| bf16_le(&x[2 * i..]);
    let yf = |i: usize| bf16_le(&y[2 * i..]);
    let np = n & !(STEP - 1);
    bf16_tail(n, np, x, y, hsum_float_8(&fold4(&fma_steps(np, xf, yf))))
}

/// The end of [`vec_dot_bf16`]: 0.0 + the reduced `sum` in f64 (so -0.0
/// becomes +0.0), plus the f32 products of elements `from..n`.
pub(crate) fn bf16_tail(n: usize, from: usize, x: &[u8], y: &[u8], sum: f32) -> f32 {
    let mut sum = 0f64 + f64::from(sum);
    for i in from..n {
        sum += f64::from(bf16_le(&x[2 * i..]) * bf16_le(&y[2 * i..]));
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_conversions_differ_only_in_nan_payload() {
        let nan = f32::from_bits(0x7fa0_1234);
        assert_eq!(fp32_to_fp16(nan), 0x7e00);
        assert_eq!(f16c_fp32_to_fp16(nan), 0x7e00 | (0x0020_1234 >> 13) as u16);
        for x in [
            0.0f32,
            -0.0,
            1.0,
            65504.0,
            65520.0,
            1e-8,
            -3.5e-6,
            f32::INFINITY,
        ] {
            assert_eq!(fp32_to_fp16(x), f16c_fp32_to_fp16(x), "{x}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(fp32_to_bf16(f32::INFINITY), 0x7f80);
    }
}
