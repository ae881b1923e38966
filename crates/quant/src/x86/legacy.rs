//! AVX2 kernels for the 32-element block formats; the scalar models, with
//! the lane layouts these follow, are in `crate::legacy`.

use std::arch::x86_64::*;
use std::slice::ChunksExact;

use super::{
    bytes, bytes_from_bits_32, f16_at, f16_bits, f16_pair, f16x2_at, hsum_float_8, hsum_i32_8,
    load_256, load_ps, mul_sum_i8_pairs, mul_sum_us8_pairs, nibbles_32, prefetch_ahead, store_256,
    store_i8x32, store_ps, Affine,
};
use crate::legacy::{check, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, QK};

// ------------------------------------------------------------- dot products

/// The product of a weight block's and an activation block's f16 scales.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn dxy(bx: &[u8], by: &[u8]) -> f32 {
    let [dx, dy] = f16_pair(bx, 0, by, 0);
    dx * dy
}

/// The legacy formats, as const-generic selectors for the kernels.
pub(super) const Q4_0_T: u8 = 0;
pub(super) const Q4_1_T: u8 = 1;
pub(super) const Q5_0_T: u8 = 2;
pub(super) const Q5_1_T: u8 = 3;
pub(super) const Q8_0_T: u8 = 4;

/// The weight quants of a block of format `F` as 32 bytes: signed for the
/// formats paired with Q8_0, unsigned (0..31) for those with a min.
#[inline]
#[target_feature(enable = "avx2")]
fn weight_quants<const F: u8>(bx: &[u8]) -> __m256i {
    match F {
        Q4_0_T => _mm256_sub_epi8(nibbles_32(bytes(bx, 2)), _mm256_set1_epi8(8)),
        Q4_1_T => nibbles_32(bytes(bx, 4)),
        // A clear 5th bit ORs in 0xF0: q - 16 as i8.
        Q5_0_T => _mm256_or_si256(
            nibbles_32(bytes(bx, 6)),
            _mm256_andnot_si256(bytes_from_bits_32(bytes(bx, 2)), _mm256_set1_epi8(-16)),
        ),
        Q5_1_T => _mm256_or_si256(
            nibbles_32(bytes(bx, 8)),
            _mm256_and_si256(bytes_from_bits_32(bytes(bx, 4)), _mm256_set1_epi8(0x10)),
        ),
        _ => load_256(bytes(bx, 2)),
    }
}

/// Block and activation block sizes of format `F`, and whether it has a
/// min (pairs with Q8_1, unsigned weight quants).
const fn layout(f: u8) -> (usize, usize, bool) {
    match f {
        Q4_0_T => (Q4_0, Q8_0, false),
        Q4_1_T => (Q4_1, Q8_1, true),
        Q5_0_T => (Q5_0, Q8_0, false),
        Q5_1_T => (Q5_1, Q8_1, true),
        _ => (Q8_0, Q8_0, false),
    }
}

/// The final reduction: `hsum_float_8`, plus the min term where there is one.
#[inline]
#[target_feature(enable = "avx2")]
fn finish<const F: u8>(acc: __m256, summs: f32) -> f32 {
    let sum = hsum_float_8(acc);
    if layout(F).2 {
        sum + summs
    } else {
        sum
    }
}

/// ggml's x86 AVX2 `ggml_vec_dot_<F>_<q8>`: per block, the scalar `m * s`
/// sum (FMA-contracted) for formats with a min, then one 8-lane FMA of d
/// with the integer pair sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot<const F: u8>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let (wb, ab, with_min) = layout(F);
    check(n, x.len(), wb);
    check(n, y.len(), ab);
    let (mut acc, mut summs) = (_mm256_setzero_ps(), 0f32);
    for (bx, by) in x.chunks_exact(wb).zip(y.chunks_exact(ab)) {
        prefetch_ahead(bx);
        let (qx, qy) = (weight_quants::<F>(bx), load_256(bytes(by, ab - 32)));
        let (q, d) = if with_min {
            // Both blocks start with two f16s: (d, m) and (d, s).
            let (x, y) = (f16x2_at(bx, 0), f16x2_at(by, 0));
            let (m, s) = (_mm_movehdup_ps(x), _mm_movehdup_ps(y));
            summs = _mm_cvtss_f32(_mm_fmadd_ss(m, s, _mm_set_ss(summs)));
            (
                mul_sum_us8_pairs(qx, qy),
                _mm256_broadcastss_ps(_mm_mul_ss(x, y)),
            )
        } else {
            (mul_sum_i8_pairs(qx, qy), _mm256_set1_ps(dxy(bx, by)))
        };
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), acc);
    }
    finish::<F>(acc, summs)
}

/// [`vec_dot`] of each weight row of `wrow` bytes in `x` with the one
/// activation row `y`, dispatched once for all of them: dispatched row by
/// row through `crate::dot`, gemma's decode (whose output head has 262k
/// rows) took 7% longer.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_rows<const F: u8>(
    n: usize,
    x: &[u8],
    wrow: usize,
    y: &[u8],
    out: &mut [f32],
) {
    for (x, o) in x.chunks_exact(wrow).zip(out) {
        *o = vec_dot::<F>(n, x, y);
    }
}

/// `*x` in all eight lanes by `vbroadcastss` from memory: a load, where
/// LLVM would otherwise turn a just-stored vector's lane into a shuffle on
/// the ports the integer dot products need.
#[inline]
#[target_feature(enable = "avx2")]
fn broadcast_from_memory(x: &f32) -> __m256 {
    let v: __m256;
    // SAFETY: reads the four bytes of a live f32; no stack, no flags.
    unsafe {
        std::arch::asm!(
            "vbroadcastss {v}, dword ptr [{p}]",
            v = out(ymm_reg) v,
            p = in(reg) x,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    v
}

/// The scale products of a block, aligned so that the broadcasts read them
/// back from one cache line.
#[repr(align(32))]
struct Lanes([f32; 8]);

/// The state of [`vec_dot`] for `N` activation rows at once.
struct Acc1xn<const N: usize> {
    acc: [__m256; N],
    summs: __m256,
    dd: Lanes,
}

impl<const N: usize> Acc1xn<N> {
    #[inline]
    #[target_feature(enable = "avx")]
    fn new() -> Self {
        assert!(N <= crate::DOT_ROWS_MAX, "at most eight rows");
        Acc1xn {
            acc: [_mm256_setzero_ps(); N],
            summs: _mm256_setzero_ps(),
            dd: Lanes([0.0; 8]),
        }
    }

    /// One weight block (quants `qx` as [`weight_quants`] gives them; d, and
    /// m where the format has one, in the low lanes of `dm`) against the
    /// rows' interleaved block `pb`: the one-row kernel's arithmetic.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn block<const F: u8>(&mut self, qx: __m256i, dm: __m128, pb: &[crate::Chunk]) {
        let with_min = layout(F).2;
        let per = if with_min { 2 } else { 1 };
        let dx = _mm256_broadcastss_ps(dm);
        store_ps(&mut self.dd.0, 0, _mm256_mul_ps(dx, chunk_ps(&pb[0])));
        let ax = _mm256_sign_epi8(qx, qx);
        if with_min {
            // ggml's scalar `summs += m * s`, FMA-contracted, one lane per row.
            let m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            self.summs = _mm256_fmadd_ps(m, chunk_ps(&pb[1]), self.summs);
        }
        for (t, acc) in self.acc.iter_mut().enumerate() {
            let qy = chunk_i8(&pb[per + t]);
            let p = if with_min {
                mul_sum_us8_pairs(qx, qy)
            } else {
                mul_sum_us8_pairs(ax, _mm256_sign_epi8(qy, qx))
            };
            let d = broadcast_from_memory(&self.dd.0[t]);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), *acc);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn finish<const F: u8>(&self) -> [f32; N] {
        let mut s = [0f32; 8];
        store_ps(&mut s, 0, self.summs);
        std::array::from_fn(|t| finish::<F>(self.acc[t], s[t]))
    }
}

/// The interleaved activation blocks of `N` rows, one slice per block.
fn packed_blocks<const F: u8>(
    n: usize,
    p: &[crate::Chunk],
    rows: usize,
) -> ChunksExact<'_, crate::Chunk> {
    let per = if layout(F).2 { 2 } else { 1 };
    assert_eq!(p.len(), n / QK * (per + rows), "packed activations");
    p.chunks_exact(per + rows)
}

/// [`vec_dot`] for one weight row against `N` (at most 8) activation rows
/// interleaved by `crate::pack_acts` in `p`. Each weight block is unpacked
/// once for all `N`, the `N` scale products are one vector multiply, and
/// the `N` FMA chains overlap; each output is bit-identical to the one-row
/// kernel's (the same integer lanes, the same f32 product of the two
/// scales, the same FMAs).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_1xn<const F: u8, const N: usize>(
    n: usize,
    x: &[u8],
    p: &[crate::Chunk],
) -> [f32; N] {
    check(n, x.len(), layout(F).0);
    let mut a = Acc1xn::<N>::new();
    for (bx, pb) in x.chunks_exact(layout(F).0).zip(packed_blocks::<F>(n, p, N)) {
        prefetch_ahead(bx);
        // (d, m), or d and two quant bytes: one 32-bit load, no merge into
        // a live register (see `f16_pair`).
        a.block::<F>(weight_quants::<F>(bx), f16x2_at(bx, 0), pb);
    }
    a.finish::<F>()
}

/// One weight row of format `F` as [`vec_dot_unpacked_1xn`] reads it: each
/// block's quants as [`weight_quants`] gives them, its d and m (0 without
/// one) as f32.
#[target_feature(enable = "avx2,f16c")]
pub(super) fn unpack_row<const F: u8>(
    n: usize,
    x: &[u8],
    quants: &mut [crate::Chunk],
    scales: &mut [[f32; 2]],
) {
    let (wb, _, with_min) = layout(F);
    check(n, x.len(), wb);
    assert_eq!(quants.len(), n / QK, "unpacked quants");
    assert_eq!(scales.len(), n / QK, "unpacked scales");
    for ((bx, q), s) in x.chunks_exact(wb).zip(quants).zip(scales) {
        store_256(&mut q.0, weight_quants::<F>(bx));
        let d = f16_at(bx, 0);
        *s = [d, if with_min { f16_at(bx, 2) } else { 0.0 }];
    }
}

/// [`vec_dot_1xn`] on a weight row unpacked by [`unpack_row`]: a prompt's
/// runs of activation rows then share one unpacking of each weight block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_unpacked_1xn<const F: u8, const N: usize>(
    n: usize,
    quants: &[crate::Chunk],
    scales: &[[f32; 2]],
    p: &[crate::Chunk],
) -> [f32; N] {
    assert_eq!(quants.len(), n / QK, "unpacked quants");
    assert_eq!(scales.len(), n / QK, "unpacked scales");
    let mut a = Acc1xn::<N>::new();
    let blocks = quants.iter().zip(scales).zip(packed_blocks::<F>(n, p, N));
    for ((q, &[d, m]), pb) in blocks {
        a.block::<F>(chunk_i8(q), _mm_setr_ps(d, m, 0.0, 0.0), pb);
    }
    a.finish::<F>()
}

/// A chunk's eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn chunk_ps(c: &crate::Chunk) -> __m256 {
    // SAFETY: both types are 32 bytes and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<[u8; 32], __m256>(c.0) }
}

/// A chunk's 32 bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn chunk_i8(c: &crate::Chunk) -> __m256i {
    load_256(&c.0)
}

/// The repacked Q4_0 kernels' output (`crate::legacy::gemv_q4_0_q8_0`):
/// one FMA per block of the block's whole integer dot.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_0_repacked_dot(n: usize, x: &[u8], y: &[u8], weights_first: bool) -> f32 {
    check(n, x.len(), Q4_0);
    check(n, y.len(), Q8_0);
    let mut acc = 0f32;
    for (bx, by) in x.chunks_exact(Q4_0).zip(y.chunks_exact(Q8_0)) {
        let d = dxy(bx, by);
        let qx = _mm256_sub_epi8(nibbles_32(bytes(bx, 2)), _mm256_set1_epi8(8));
        let qy = load_256(bytes(by, 2));
        let lanes = if weights_first {
            mul_sum_i8_pairs(qx, qy)
        } else {
            mul_sum_i8_pairs(qy, qx)
        };
        acc = (hsum_i32_8(lanes) as f32).mul_add(d, acc);
    }
    acc
}

// ----------------------------------------------------- activation quantizers

/// One block as ggml's AVX2 `quantize_row_q8_0/q8_1`: writes the quants,
/// returns d and the i32 sum of the quants before saturation.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_block(x: &[f32], qs: &mut [u8; 32]) -> (f32, i32) {
    let sign = _mm256_set1_ps(-0.0);
    let v = [load_ps(x, 0), load_ps(x, 8), load_ps(x, 16), load_ps(x, 24)];
    let mut max = _mm256_andnot_ps(sign, v[0]);
    for &vj in &v[1..] {
        max = _mm256_max_ps(max, _mm256_andnot_ps(sign, vj));
    }
    let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(max), _mm256_castps256_ps128(max));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    let d = amax / 127.0;
    let mul = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let mut i = [_mm256_setzero_si256(); 4];
    for (i, &vj) in i.iter_mut().zip(&v) {
        let r = _mm256_round_ps::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(vj, mul));
        *i = _mm256_cvtps_epi32(r);
    }
    let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    store_256(qs, pack_i32x32(&i));
    (d, hsum_i32_8(sum))
}

/// 32 i32 lanes to i8 with signed saturation, in order (`packs` works per
/// 128-bit half, so the dwords come out as 0, 4, 1, 5, ... and are permuted).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn pack_i32x32(i: &[__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_0);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_0)) {
        let (head, qs) = b.split_at_mut(2);
        let (d, _) = q8_block(x, qs.try_into().expect("block"));
        head.copy_from_slice(&f16_bits(d).to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_1);
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_1)) {
        let (head, qs) = b.split_at_mut(4);
        let (d, sum) = q8_block(x, qs.try_into().expect("block"));
        head[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        head[2..].copy_from_slice(&f16_bits(d * sum as f32).to_le_bytes());
    }
}

// ------------------------------------------------------------- dequantize

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q4_0);
    for (b, y) in src.chunks_exact(Q4_0).zip(dst.chunks_exact_mut(QK)) {
        let q = _mm256_sub_epi8(nibbles_32(bytes(b, 2)), _mm256_set1_epi8(8));
        store_i8x32(y, 0, q, [Affine::Mul(_mm256_set1_ps(f16_at(b, 0))); 2]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q4_1);
    for (b, y) in src.chunks_exact(Q4_1).zip(dst.chunks_exact_mut(QK)) {
        let [d, m] = f16_pair(b, 0, b, 2);
        let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
        store_i8x32(y, 0, nibbles_32(bytes(b, 4)), [Affine::MulAdd(d, m); 2]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q5_0);
    for (b, y) in src.chunks_exact(Q5_0).zip(dst.chunks_exact_mut(QK)) {
        let high = _mm256_and_si256(bytes_from_bits_32(bytes(b, 2)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles_32(bytes(b, 6)), high);
        let q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        store_i8x32(y, 0, q, [Affine::Mul(_mm256_set1_ps(f16_at(b, 0))); 2]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q5_1);
    for (b, y) in src.chunks_exact(Q5_1).zip(dst.chunks_exact_mut(QK)) {
        let high = _mm256_and_si256(bytes_from_bits_32(bytes(b, 4)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles_32(bytes(b, 8)), high);
        let [d, m] = f16_pair(b, 0, b, 2);
        let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
        store_i8x32(y, 0, q, [Affine::MulAdd(d, m); 2]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q8_0);
    for (b, y) in src.chunks_exact(Q8_0).zip(dst.chunks_exact_mut(QK)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        store_i8x32(y, 0, load_256(bytes(b, 2)), [Affine::Mul(d); 2]);
    }
}
