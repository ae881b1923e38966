//! AVX2 kernels for F32 / F16 / BF16 rows; the scalar models, with ggml's
//! accumulator layout and reduction trees, are in `crate::float`.

use std::arch::x86_64::*;

use super::{bytes, f16_bits, hsum_float_8, load_128, load_256, load_ps, store_ps};
use crate::float::{
    bf16_le, bf16_tail, check_lens, f16_le, f16_tail, f32_tail, fp32_to_bf16, STEP,
};

/// Element formats, as const-generic selectors for the kernels.
const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// Eight elements of format `E` at element index `e` of `b`, widened to f32
/// (exactly: F16 by F16C, BF16 shifted into the top half).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load8<const E: u8>(b: &[u8], e: usize) -> __m256 {
    match E {
        F32 => _mm256_castsi256_ps(load_256(bytes(b, 4 * e))),
        F16 => _mm256_cvtph_ps(load_128(bytes(b, 2 * e))),
        _ => bf16x8(load_128(bytes(b, 2 * e))),
    }
}

/// `acc[j] = fma(x, y, acc[j])` over the whole 32-element steps (accumulator
/// j taking elements 8j..8j + 8 of each step), then ggml's fold of the four
/// accumulators, (a0 + a2) + (a1 + a3).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fma_steps<const E: u8>(np: usize, x: &[u8], y: &[u8]) -> __m256 {
    // Named accumulators: an array indexed in the loop would live in memory.
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    for i in (0..np).step_by(STEP) {
        a0 = _mm256_fmadd_ps(load8::<E>(x, i), load8::<E>(y, i), a0);
        a1 = _mm256_fmadd_ps(load8::<E>(x, i + 8), load8::<E>(y, i + 8), a1);
        a2 = _mm256_fmadd_ps(load8::<E>(x, i + 16), load8::<E>(y, i + 16), a2);
        a3 = _mm256_fmadd_ps(load8::<E>(x, i + 24), load8::<E>(y, i + 24), a3);
    }
    _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3))
}

/// Eight bf16 widened to f32 (shifted into the top half; exact).
#[inline]
#[target_feature(enable = "avx2")]
fn bf16x8(v: __m128i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v)))
}

/// ggml's `GGML_F32x8_REDUCE` after the fold: halves added, then two `hadd`s.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_hadd(v: __m256) -> f32 {
    let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_hadd_ps(t, t);
    _mm_cvtss_f32(_mm_hadd_ps(t, t))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_lens(x.len(), 4, n);
    check_lens(y.len(), 4, n);
    let np = n & !(STEP - 1);
    f32_tail(n, np, x, y, reduce_hadd(fma_steps::<F32>(np, x, y)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_lens(x.len(), 2, n);
    check_lens(y.len(), 2, n);
    let np = n & !(STEP - 1);
    f16_tail(n, np, x, y, reduce_hadd(fma_steps::<F16>(np, x, y)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_lens(x.len(), 2, n);
    check_lens(y.len(), 2, n);
    let np = n & !(STEP - 1);
    bf16_tail(n, np, x, y, hsum_float_8(fma_steps::<BF16>(np, x, y)))
}

/// F16 bytes to f32 (`ggml_fp16_to_fp32_row`), eight at a time by F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    check_lens(src.len(), 2, dst.len());
    let whole = dst.len() & !7;
    for e in (0..whole).step_by(8) {
        store_ps(dst, e, load8::<F16>(src, e));
    }
    for (e, d) in dst.iter_mut().enumerate().skip(whole) {
        *d = f16_le(&src[2 * e..]);
    }
}

/// BF16 bytes to f32 (`ggml_bf16_to_fp32_row`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bf16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    check_lens(src.len(), 2, dst.len());
    let whole = dst.len() & !7;
    for e in (0..whole).step_by(8) {
        store_ps(dst, e, load8::<BF16>(src, e));
    }
    for (e, d) in dst.iter_mut().enumerate().skip(whole) {
        *d = bf16_le(&src[2 * e..]);
    }
}

/// Stores eight u16 lanes (the low halves of `v`'s i32 lanes, each at most
/// 0xFFFF) at `dst[2 * e..]`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_u16x8(dst: &mut [u8], e: usize, v: __m256i) {
    let p = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let d: &mut [u8; 16] = (&mut dst[2 * e..2 * e + 16]).try_into().expect("in bounds");
    // SAFETY: both types are 16 bytes and every bit pattern is valid for both.
    *d = unsafe { std::mem::transmute::<__m128i, [u8; 16]>(p) };
}

/// f32 to F16 by F16C (`ggml_cpu_fp32_to_fp16`), round to nearest even.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn cpu_fp32_to_fp16(src: &[f32], dst: &mut [u8]) {
    check_lens(dst.len(), 2, src.len());
    let whole = src.len() & !7;
    for e in (0..whole).step_by(8) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(load_ps(src, e));
        store_u16x8(dst, e, _mm256_cvtepu16_epi32(h));
    }
    for (e, &x) in src.iter().enumerate().skip(whole) {
        dst[2 * e..2 * e + 2].copy_from_slice(&f16_bits(x).to_le_bytes());
    }
}

/// f32 to BF16 as `fp32_to_bf16`: round to nearest even, NaNs truncated
/// and forced quiet.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp32_to_bf16_row(src: &[f32], dst: &mut [u8]) {
    check_lens(dst.len(), 2, src.len());
    let whole = src.len() & !7;
    for e in (0..whole).step_by(8) {
        let u = _mm256_castps_si256(load_ps(src, e));
        let top = _mm256_srli_epi32::<16>(u);
        let nan = _mm256_cmpgt_epi32(
            _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff)),
            _mm256_set1_epi32(0x7f80_0000),
        );
        let bias = _mm256_add_epi32(
            _mm256_set1_epi32(0x7fff),
            _mm256_and_si256(top, _mm256_set1_epi32(1)),
        );
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(u, bias));
        let quiet = _mm256_or_si256(top, _mm256_set1_epi32(64));
        store_u16x8(dst, e, _mm256_blendv_epi8(rounded, quiet, nan));
    }
    for (e, &x) in src.iter().enumerate().skip(whole) {
        dst[2 * e..2 * e + 2].copy_from_slice(&fp32_to_bf16(x).to_le_bytes());
    }
}
