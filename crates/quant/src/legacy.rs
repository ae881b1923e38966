//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1.
//!
//! Layouts (all little-endian; element j < 16 sits in the low nibble of
//! byte j, element j + 16 in its high nibble):
//! - Q4_0 (18 B): f16 d, 16 nibble bytes; x = d * (q - 8).
//! - Q4_1 (20 B): f16 d, f16 m, 16 nibble bytes; x = d * q + m.
//! - Q5_0 (22 B): f16 d, u32 qh (bit j = 5th bit of element j), 16 nibble bytes; x = d * (q - 16).
//! - Q5_1 (24 B): f16 d, f16 m, u32 qh, 16 nibble bytes; x = d * q + m.
//! - Q8_0 (34 B): f16 d, 32 i8; x = d * q.
//! - Q8_1 (36 B): f16 d, f16 s = d * sum(q), 32 i8; x = d * q.
//!
//! `quantize_row_*_ref` follow ggml-quants.c (the model-file reference);
//! `quantize_row_q8_0` / `quantize_row_q8_1` follow the x86 AVX2 CPU path
//! used for activations, and the dots follow the x86 AVX2 kernels.
//! These functions panic if the slices are not whole, matching blocks; the
//! crate-root entry points check and return errors instead.

use crate::avx2::{
    max_ps, mul_sum_i8_pairs, mul_sum_us8_pairs, reduce_max8, round_to_i32, saturate_i8, Acc8,
};
use crate::float::{f16_le, f16c_fp32_to_fp16, fp32_to_fp16};

pub(crate) const QK: usize = 32;
pub(crate) const Q4_0: usize = 18;
pub(crate) const Q4_1: usize = 20;
pub(crate) const Q5_0: usize = 22;
pub(crate) const Q5_1: usize = 24;
pub(crate) const Q8_0: usize = 34;
pub(crate) const Q8_1: usize = 36;

/// Panics unless `bytes` holds exactly the blocks for `n` elements.
pub(crate) fn check(n: usize, bytes: usize, block_bytes: usize) {
    assert!(n.is_multiple_of(QK), "{n} is not a multiple of {QK}");
    assert_eq!(bytes, n / QK * block_bytes, "row length mismatch");
}

fn put_f16(b: &mut [u8], bits: u16) {
    b[..2].copy_from_slice(&bits.to_le_bytes());
}

fn qh_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn i8s(b: &[u8]) -> [i8; 32] {
    std::array::from_fn(|i| b[i] as i8)
}

/// The element with the largest magnitude (the first one on ties), as ggml's
/// Q4_0 / Q5_0 reference quantizers pick it.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// min and max as ggml's Q4_1 / Q5_1 reference quantizers compute them.
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

// ---------------------------------------------------------------- dequantize

pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q4_0);
    for (b, y) in src.chunks_exact(Q4_0).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(b);
        for (j, &q) in b[2..].iter().enumerate() {
            y[j] = (i32::from(q & 0xF) - 8) as f32 * d;
            y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q4_1);
    for (b, y) in src.chunks_exact(Q4_1).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f16_le(b), f16_le(&b[2..]));
        for (j, &q) in b[4..].iter().enumerate() {
            y[j] = f32::from(q & 0xF) * d + m;
            y[j + 16] = f32::from(q >> 4) * d + m;
        }
    }
}

pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q5_0);
    for (b, y) in src.chunks_exact(Q5_0).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(b);
        let qh = qh_le(&b[2..]);
        for (j, &q) in b[6..].iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = ((u32::from(q & 0xF) | h0) as i32 - 16) as f32 * d;
            y[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q5_1);
    for (b, y) in src.chunks_exact(Q5_1).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f16_le(b), f16_le(&b[2..]));
        let qh = qh_le(&b[4..]);
        for (j, &q) in b[8..].iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = (u32::from(q & 0xF) | h0) as f32 * d + m;
            y[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
        }
    }
}

pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q8_0);
    for (b, y) in src.chunks_exact(Q8_0).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(b);
        for (y, &q) in y.iter_mut().zip(&b[2..]) {
            *y = f32::from(q as i8) * d;
        }
    }
}

/// ggml has no Q8_1 `to_float`; this reads it like Q8_0 (d * q), ignoring s.
pub fn dequantize_row_q8_1(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q8_1);
    for (b, y) in src.chunks_exact(Q8_1).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(b);
        for (y, &q) in y.iter_mut().zip(&b[4..]) {
            *y = f32::from(q as i8) * d;
        }
    }
}

// ------------------------------------------------------- reference quantize

pub fn quantize_row_q4_0_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q4_0);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q4_0)) {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, fp32_to_fp16(d));
        for j in 0..16 {
            // ggml truncates (x * id + 8.5) through int8_t, then caps at 15.
            let q0 = ((x[j] * id + 8.5) as i32 as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i32 as i8).min(15) as u8;
            b[2 + j] = q0 | (q1 << 4);
        }
    }
}

pub fn quantize_row_q4_1_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q4_1);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q4_1)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, fp32_to_fp16(d));
        put_f16(&mut b[2..], fp32_to_fp16(min));
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i32 as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i32 as i8).min(15) as u8;
            b[4 + j] = q0 | (q1 << 4);
        }
    }
}

pub fn quantize_row_q5_0_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q5_0);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q5_0)) {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, fp32_to_fp16(d));
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] * id + 16.5) as i32 as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i32 as i8).min(31) as u8;
            b[6 + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
            qh |= u32::from(q0 >> 4) << j;
            qh |= u32::from(q1 >> 4) << (j + 16);
        }
        b[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn quantize_row_q5_1_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q5_1);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q5_1)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, fp32_to_fp16(d));
        put_f16(&mut b[2..], fp32_to_fp16(min));
        let mut qh = 0u32;
        for j in 0..16 {
            // No cap here in ggml: (x - min) * id never exceeds 31.
            let q0 = ((x[j] - min) * id + 0.5) as i32 as u8;
            let q1 = ((x[j + 16] - min) * id + 0.5) as i32 as u8;
            b[8 + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
            qh |= u32::from((q0 >> 4) & 1) << j;
            qh |= u32::from((q1 >> 4) & 1) << (j + 16);
        }
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// amax / 127 as the scale, then round half away from zero (`roundf`).
pub fn quantize_row_q8_0_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_0);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_0)) {
        let amax = x
            .iter()
            .fold(0f32, |a, v| if a > v.abs() { a } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, fp32_to_fp16(d));
        for (q, &v) in b[2..].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

pub fn quantize_row_q8_1_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_1);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_1)) {
        let amax = x
            .iter()
            .fold(0f32, |a, v| if a > v.abs() { a } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b[4..].iter_mut().zip(x) {
            let qi = (v * id).round() as i8;
            sum += i32::from(qi);
            *q = qi as u8;
        }
        put_f16(b, fp32_to_fp16(d));
        put_f16(&mut b[2..], fp32_to_fp16(sum as f32 * d));
    }
}

// ------------------------------------------ x86 CPU activation quantization

/// max |x| over a 32-element block in the AVX order: 8 lanes over the four
/// vectors, then hi/lo halves, then pairs.
fn avx_absmax(x: &[f32]) -> f32 {
    let mut m: [f32; 8] = std::array::from_fn(|l| x[l].abs());
    for v in x[8..].chunks_exact(8) {
        for (m, a) in m.iter_mut().zip(v) {
            *m = max_ps(*m, a.abs());
        }
    }
    reduce_max8(&m)
}

/// Quantizes one block as the AVX2 `quantize_row_q8_0/q8_1` do: returns the
/// scale and writes quants; also returns the i32 sum before saturation.
fn avx_q8_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = avx_absmax(x);
    let d = amax / 127.0;
    // Unlike the reference (1 / d), the multiplier is 127 / amax, and the
    // rounding is half to even (_mm256_round_ps), not half away from zero.
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let i = round_to_i32(v * id);
        sum = sum.wrapping_add(i);
        *q = saturate_i8(i) as u8;
    }
    (d, sum)
}

/// ggml's x86 AVX2 `quantize_row_q8_0` (activations for Q4_0 / Q5_0 / Q8_0).
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_0);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_0)) {
        let (d, _) = avx_q8_block(x, &mut b[2..]);
        put_f16(b, f16c_fp32_to_fp16(d));
    }
}

/// ggml's x86 AVX2 `quantize_row_q8_1` (activations for Q4_1 / Q5_1).
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_1);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_1)) {
        let (d, sum) = avx_q8_block(x, &mut b[4..]);
        put_f16(b, f16c_fp32_to_fp16(d));
        put_f16(&mut b[2..], f16c_fp32_to_fp16(d * sum as f32));
    }
}

// ---------------------------------------------------------- dot products

fn nibbles(qs: &[u8]) -> [u8; 32] {
    std::array::from_fn(|i| if i < 16 { qs[i] & 0xF } else { qs[i - 16] >> 4 })
}

/// Adds each element's 5th bit from `qh`, as `bytes_from_bits_32` spreads it.
fn with_high_bits(mut q: [u8; 32], qh: u32, set: u8, clear: u8) -> [u8; 32] {
    for (i, q) in q.iter_mut().enumerate() {
        *q |= if (qh >> i) & 1 == 1 { set } else { clear };
    }
    q
}

/// ggml's x86 AVX2 `ggml_vec_dot_q4_0_q8_0`.
pub fn vec_dot_q4_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q4_0);
    check(n, y.len(), Q8_0);
    let mut acc = Acc8::default();
    for (bx, by) in x.chunks_exact(Q4_0).zip(y.chunks_exact(Q8_0)) {
        let d = f16_le(bx) * f16_le(by);
        let qx = nibbles(&bx[2..]).map(|q| q as i8 - 8);
        acc.fma_i32(d, &mul_sum_i8_pairs(&qx, &i8s(&by[2..])));
    }
    acc.hsum()
}

/// ggml's x86 AVX2 `ggml_vec_dot_q4_1_q8_1`. GCC contracts its scalar
/// `summs += m * s` into an FMA (same value: two f16 multiply exactly in f32).
pub fn vec_dot_q4_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q4_1);
    check(n, y.len(), Q8_1);
    let mut acc = Acc8::default();
    let mut summs = 0f32;
    for (bx, by) in x.chunks_exact(Q4_1).zip(y.chunks_exact(Q8_1)) {
        summs = f16_le(&bx[2..]).mul_add(f16_le(&by[2..]), summs);
        let d = f16_le(bx) * f16_le(by);
        acc.fma_i32(d, &mul_sum_us8_pairs(&nibbles(&bx[4..]), &i8s(&by[4..])));
    }
    acc.hsum() + summs
}

/// ggml's x86 AVX2 `ggml_vec_dot_q5_0_q8_0`.
pub fn vec_dot_q5_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q5_0);
    check(n, y.len(), Q8_0);
    let mut acc = Acc8::default();
    for (bx, by) in x.chunks_exact(Q5_0).zip(y.chunks_exact(Q8_0)) {
        let d = f16_le(bx) * f16_le(by);
        // A clear 5th bit ORs in 0xF0, i.e. q - 16 as i8.
        let qx = with_high_bits(nibbles(&bx[6..]), qh_le(&bx[2..]), 0, 0xF0).map(|q| q as i8);
        acc.fma_i32(d, &mul_sum_i8_pairs(&qx, &i8s(&by[2..])));
    }
    acc.hsum()
}

/// ggml's x86 AVX2 `ggml_vec_dot_q5_1_q8_1` (scalar `summs` FMA-contracted).
pub fn vec_dot_q5_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q5_1);
    check(n, y.len(), Q8_1);
    let mut acc = Acc8::default();
    let mut summs = 0f32;
    for (bx, by) in x.chunks_exact(Q5_1).zip(y.chunks_exact(Q8_1)) {
        summs = f16_le(&bx[2..]).mul_add(f16_le(&by[2..]), summs);
        let d = f16_le(bx) * f16_le(by);
        let qx = with_high_bits(nibbles(&bx[8..]), qh_le(&bx[4..]), 0x10, 0);
        acc.fma_i32(d, &mul_sum_us8_pairs(&qx, &i8s(&by[4..])));
    }
    acc.hsum() + summs
}

/// ggml's x86 AVX2 `ggml_vec_dot_q8_0_q8_0`.
pub fn vec_dot_q8_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q8_0);
    check(n, y.len(), Q8_0);
    let mut acc = Acc8::default();
    for (bx, by) in x.chunks_exact(Q8_0).zip(y.chunks_exact(Q8_0)) {
        let d = f16_le(bx) * f16_le(by);
        acc.fma_i32(d, &mul_sum_i8_pairs(&i8s(&bx[2..]), &i8s(&by[2..])));
    }
    acc.hsum()
}

// ------------------------------------------------ repacked Q4_0 (8x8) kernels

/// The i32 dot of one Q4_0 block's quants with one Q8_0 block's, as the
/// repacked kernels form it: their `mul_sum_i8_pairs` takes its absolute
/// values from the first operand, so `weights_first` picks which operand a
/// -128 activation wraps in (the only case where the order shows).
fn q4_0_block_isum(bx: &[u8], by: &[u8], weights_first: bool) -> i32 {
    let qx = nibbles(&bx[2..]).map(|q| q as i8 - 8);
    let qy = i8s(&by[2..]);
    let lanes = if weights_first {
        mul_sum_i8_pairs(&qx, &qy)
    } else {
        mul_sum_i8_pairs(&qy, &qx)
    };
    lanes.iter().fold(0i32, |a, &l| a.wrapping_add(l))
}

/// One output of the repacked Q4_0 kernels: per block, the whole block's
/// integer dot converted once and accumulated by one FMA with `d_w * d_a`,
/// in a single f32 (no lanes, no horizontal sum).
fn q4_0_repacked_dot(n: usize, x: &[u8], y: &[u8], weights_first: bool) -> f32 {
    check(n, x.len(), Q4_0);
    check(n, y.len(), Q8_0);
    let mut acc = 0f32;
    for (bx, by) in x.chunks_exact(Q4_0).zip(y.chunks_exact(Q8_0)) {
        let d = f16_le(bx) * f16_le(by);
        let isum = q4_0_block_isum(bx, by, weights_first);
        acc = (isum as f32).mul_add(d, acc);
    }
    acc
}

/// One output of ggml's x86 `ggml_gemv_q4_0_8x8_q8_0` (weights repacked to
/// `block_q4_0x8`; a single activation row quantized by `quantize_row_q8_0`).
pub fn gemv_q4_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    q4_0_repacked_dot(n, x, y, true)
}

/// One output of ggml's x86 `ggml_gemm_q4_0_8x8_q8_0` (groups of four
/// activation rows from `ggml_quantize_mat_q8_0_4x8`, which quantizes each
/// row exactly as [`quantize_row_q8_0`]). Same sums as the gemv, except that
/// the sign trick here takes |activation|, so a -128 activation is exact.
pub fn gemm_q4_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    q4_0_repacked_dot(n, x, y, false)
}
