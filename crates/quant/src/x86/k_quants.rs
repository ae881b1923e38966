//! AVX2 kernels for the k-quants; the scalar models, with the lane layout
//! these follow (`k_lanes`: element i of a super-block in i32 lane
//! (i % 32) / 4), are in `crate::k_quants`.

use std::arch::x86_64::*;

use super::legacy::pack_i32x32;
use super::{
    bit_set, bytes, crumbs, f16_at, f16_pair, hsum_float_8, hsum_i32_8, i32x4, load_128, load_256,
    load_ps, prefetch_ahead, scales_16x2, store_256, store_i8x32, store_ps, Affine,
};
use crate::float::f32_le;
use crate::k_quants::{
    check, q3_k_scales, quantize_row_q8_k_ref, scales_mins, tiled_step, Q2_K_BYTES, Q3_K_BYTES,
    Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_K_BYTES, QK_K,
};
use crate::Chunk;

/// The 32 activation quants of chunk `c` (elements 32c..32c + 32) of a Q8_K block.
#[inline]
#[target_feature(enable = "avx2")]
fn q8(by: &[u8], c: usize) -> __m256i {
    load_256(bytes(by, 4 + 32 * c))
}

/// The 16 i16 block sums of a Q8_K block.
#[inline]
#[target_feature(enable = "avx2")]
fn q8_bsums(by: &[u8]) -> __m256i {
    load_256(bytes(by, 260))
}

/// `maddubs` of unsigned quants with chunk `c`'s activations, times the
/// scales of its two 16-element groups: eight i32 lanes of 4 elements.
#[inline]
#[target_feature(enable = "avx2")]
fn scaled_chunk(q: __m256i, by: &[u8], c: usize, scales: __m256i) -> __m256i {
    _mm256_madd_epi16(scales, _mm256_maddubs_epi16(q, q8(by, c)))
}

// ------------------------------------------------------------- dot products

/// The integer parts of a Q2_K super-block: the scaled quant lanes, and
/// the mins products (lane k: the mins of 16-element sub-blocks 2k, 2k + 1
/// times their block sums).
#[inline]
#[target_feature(enable = "avx2")]
fn q2_k_sums(bx: &[u8], by: &[u8]) -> (__m256i, __m256i) {
    let sc = bytes::<16>(bx, 0);
    let mins = _mm_and_si128(_mm_srli_epi16::<4>(load_128(sc)), _mm_set1_epi8(0xF));
    let prod = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins), q8_bsums(by));
    let mut sumi = _mm256_setzero_si256();
    for c in 0..8 {
        let q = crumbs(load_256(bytes(bx, 16 + 32 * (c / 4))), 2 * (c % 4) as i32);
        let s = scales_16x2(i32::from(sc[2 * c] & 0xF), i32::from(sc[2 * c + 1] & 0xF));
        sumi = _mm256_add_epi32(sumi, scaled_chunk(q, by, c, s));
    }
    (sumi, prod)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q2_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q2_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = f32_le(by);
        let [dx, mx] = f16_pair(bx, 80, bx, 82);
        let (d, dmin) = (d8 * dx, -d8 * mx);
        let (sumi, prod) = q2_k_sums(bx, by);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// The scaled quant lanes of a Q3_K super-block.
#[inline]
#[target_feature(enable = "avx2")]
fn q3_k_lanes(bx: &[u8], by: &[u8]) -> __m256i {
    let sc = q3_k_scales(bytes::<12>(bx, 96));
    let hmask = load_256(bytes(bx, 0));
    let mut sumi = _mm256_setzero_si256();
    for c in 0..8 {
        let low = crumbs(load_256(bytes(bx, 32 + 32 * (c / 4))), 2 * (c % 4) as i32);
        // 4 where the high bit is clear; q = low - high, as ggml
        // subtracts the two maddubs products.
        let high = _mm256_andnot_si256(bit_set(hmask, 1 << c), _mm256_set1_epi8(4));
        let a = q8(by, c);
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(low, a), _mm256_maddubs_epi16(high, a));
        let s = scales_16x2(sc[2 * c], sc[2 * c + 1]);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
    }
    sumi
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q3_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q3_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d = f32_le(by) * f16_at(bx, 108);
        let sumi = q3_k_lanes(bx, by);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// The 5th bits of chunk `c` of a Q5_K block (`hbits`: its 32 qh bytes),
/// as 0x10 or 0.
#[inline]
#[target_feature(enable = "avx2")]
fn q5_high(hbits: __m256i, c: usize) -> __m256i {
    _mm256_and_si256(bit_set(hbits, 1 << c), _mm256_set1_epi8(0x10))
}

/// The scaled quant lanes of a Q4_K / Q5_K super-block: sub-block c (scale
/// `sm[c].0`) takes the low (c even) or high nibbles of the 32 bytes at
/// `qs_at + 32 * (c / 2)`, plus, for Q5_K (`q5`), its 5th bits from qh.
#[inline]
#[target_feature(enable = "avx2")]
fn k4_lanes(bx: &[u8], by: &[u8], sm: &[(u8, u8); 8], qs_at: usize, q5: bool) -> __m256i {
    let hbits = load_256(bytes(bx, 16));
    let mut sumi = _mm256_setzero_si256();
    for p in 0..4 {
        let raw = load_256(bytes(bx, qs_at + 32 * p));
        let mut lo = _mm256_and_si256(raw, _mm256_set1_epi8(0xF));
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), _mm256_set1_epi8(0xF));
        if q5 {
            lo = _mm256_or_si256(lo, q5_high(hbits, 2 * p));
            hi = _mm256_or_si256(hi, q5_high(hbits, 2 * p + 1));
        }
        let (s_lo, s_hi) = (i32::from(sm[2 * p].0), i32::from(sm[2 * p + 1].0));
        sumi = _mm256_add_epi32(sumi, scaled_chunk(lo, by, 2 * p, scales_16x2(s_lo, s_lo)));
        sumi = _mm256_add_epi32(
            sumi,
            scaled_chunk(hi, by, 2 * p + 1, scales_16x2(s_hi, s_hi)),
        );
    }
    sumi
}

/// The mins products of a Q4_K / Q5_K super-block: lane u holds
/// `min_2u * sum_2u + min_2u+1 * sum_2u+1`, the sums of the 32-element
/// sub-blocks formed by `_mm_hadd_epi16` of the block sums.
#[inline]
#[target_feature(enable = "avx2")]
fn k4_mins(by: &[u8], sm: &[(u8, u8); 8]) -> __m128i {
    let bsums = q8_bsums(by);
    let sums = _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    );
    let m = |j: usize| i16::from(sm[j].1);
    let mins = _mm_setr_epi16(m(0), m(1), m(2), m(3), m(4), m(5), m(6), m(7));
    _mm_madd_epi16(mins, sums)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q4_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (bx, by) in x.chunks_exact(Q4_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = f32_le(by);
        let [dx, mx] = f16_pair(bx, 0, bx, 2);
        let (d, dmin) = (d8 * dx, -d8 * mx);
        let sm = scales_mins(bytes::<12>(bx, 4));
        let prod = k4_mins(by, &sm);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        let sumi = k4_lanes(bx, by, &sm, 16, false);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    hsum_float_8(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q5_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q5_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (bx, by) in x.chunks_exact(Q5_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d8 = f32_le(by);
        let [dx, mx] = f16_pair(bx, 0, bx, 2);
        let (d, dmin) = (d8 * dx, -d8 * mx);
        let sm = scales_mins(bytes::<12>(bx, 4));
        let prod = k4_mins(by, &sm);
        let p = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(p, _mm_shuffle_epi32::<1>(p)));
        summs = dmin.mul_add(sum as f32, summs);
        let sumi = k4_lanes(bx, by, &sm, 48, true);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc) + summs
}

/// A Q6_K super-block unpacked once for any number of activation blocks.
struct Q6Block {
    d: f32,
    quants: [__m256i; 8],
    scales: [__m256i; 8],
    /// The 16 scales as i16, for the offset term.
    scales_i16: __m256i,
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn q6_unpack(bx: &[u8]) -> Q6Block {
    let sc = bytes::<16>(bx, 192);
    Q6Block {
        d: f16_at(bx, 208),
        quants: std::array::from_fn(|c| q6_chunk(bx, c)),
        scales: std::array::from_fn(|c| {
            scales_16x2(i32::from(sc[2 * c] as i8), i32::from(sc[2 * c + 1] as i8))
        }),
        scales_i16: _mm256_cvtepi8_epi16(load_128(sc)),
    }
}

/// ggml's AVX2 `ggml_vec_dot_q6_K_q8_K`, one super-block into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6_step(b: &Q6Block, by: &[u8], acc: __m256) -> __m256 {
    let d = f32_le(by) * b.d;
    let mut sumi = _mm256_setzero_si256();
    for c in 0..8 {
        sumi = _mm256_add_epi32(sumi, scaled_chunk(b.quants[c], by, c, b.scales[c]));
    }
    // The quants are stored plus 32: subtract 32 * scale * (block sums).
    let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(q8_bsums(by), b.scales_i16));
    sumi = _mm256_sub_epi32(sumi, offset);
    _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q6_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        prefetch_ahead(bx);
        acc = q6_step(&q6_unpack(bx), by, acc);
    }
    hsum_float_8(acc)
}

/// [`vec_dot_q6_k_q8_k`] for one weight row against `N` activation rows
/// interleaved by `crate::pack_acts` in `p`: each super-block is unpacked
/// once for all of them.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn vec_dot_q6_k_q8_k_1xn<const N: usize>(n: usize, x: &[u8], p: &[Chunk]) -> [f32; N] {
    check(n, x.len(), Q6_K_BYTES);
    let mut acc = [_mm256_setzero_ps(); N];
    for (bx, slots) in x.chunks_exact(Q6_K_BYTES).zip(super_block_slots(n, N, p)) {
        prefetch_ahead(bx);
        let b = q6_unpack(bx);
        for (t, acc) in acc.iter_mut().enumerate() {
            *acc = q6_step(&b, packed_q8_k(slots, t), *acc);
        }
    }
    acc.map(|a| hsum_float_8(a))
}

/// The packed activations of each super-block: one slot per row.
fn super_block_slots(n: usize, rows: usize, p: &[Chunk]) -> std::slice::ChunksExact<'_, Chunk> {
    let slots = crate::Q8K_SLOT * rows;
    assert_eq!(p.len(), n / QK_K * slots, "packed activations");
    p.chunks_exact(slots)
}

/// Row `t`'s Q8_K block in a super-block's slots.
fn packed_q8_k(slots: &[Chunk], t: usize) -> &[u8] {
    let slot = crate::chunk_bytes(&slots[t * crate::Q8K_SLOT..(t + 1) * crate::Q8K_SLOT]);
    &slot[crate::Q8K_AT..crate::Q8K_AT + Q8_K_BYTES]
}

/// The unsigned 6-bit quants of chunk `c` of a Q6_K block: elements
/// 128h + 32k + l take the nibble of ql[64h + l + 32(k % 2)] (low for
/// k < 2) and bits 2k.. of qh[32h + l].
#[inline]
#[target_feature(enable = "avx2")]
fn q6_chunk(bx: &[u8], c: usize) -> __m256i {
    let (h, k) = (c / 4, c % 4);
    let ql = load_256(bytes(bx, 64 * h + 32 * (k % 2)));
    let low = if k < 2 {
        ql
    } else {
        _mm256_srli_epi16::<4>(ql)
    };
    let low = _mm256_and_si256(low, _mm256_set1_epi8(0xF));
    let high = crumbs(load_256(bytes(bx, 128 + 32 * h)), 2 * k as i32);
    _mm256_or_si256(low, _mm256_slli_epi16::<4>(high))
}

/// A Q4_K super-block unpacked for the repacked kernels' arithmetic.
struct K4Block {
    d: f32,
    m: f32,
    /// Sub-block j's unsigned quants and its scale in every i16 lane.
    quants: [__m256i; 8],
    scales: [__m256i; 8],
    mins: [(u8, u8); 8],
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn k4_unpack(bx: &[u8]) -> K4Block {
    let [d, m] = f16_pair(bx, 0, bx, 2);
    let sm = scales_mins(bytes::<12>(bx, 4));
    K4Block {
        d,
        m,
        quants: std::array::from_fn(|j| {
            let raw = load_256(bytes(bx, 16 + 32 * (j / 2)));
            let raw = if j % 2 == 0 {
                raw
            } else {
                _mm256_srli_epi16::<4>(raw)
            };
            _mm256_and_si256(raw, _mm256_set1_epi8(0xF))
        }),
        scales: std::array::from_fn(|j| scales_16x2(i32::from(sm[j].0), i32::from(sm[j].0))),
        mins: sm,
    }
}

/// One super-block of the repacked Q4_K kernels
/// (`crate::k_quants::gemv_q4_k_q8_k`, `gemm_q4_k_q8_k`): integer sums per
/// pair of sub-blocks, accumulated per pair (`per_pair`, the gemm) or per
/// super-block (the gemv), into (acc, acc_min).
#[inline]
#[target_feature(enable = "avx2")]
fn k4_repacked_step(b: &K4Block, by: &[u8], per_pair: bool, acc: &mut (f32, f32)) {
    let d8 = f32_le(by);
    let (d, dmin) = (b.d * d8, b.m * d8);
    // Lane p: min_2p * sum_2p + min_2p+1 * sum_2p+1, the pair's mins term.
    let mins = i32x4(k4_mins(by, &b.mins));
    let (mut lanes, mut imin) = (_mm256_setzero_si256(), 0i32);
    for (p, &pair_min) in mins.iter().enumerate() {
        let pair = _mm256_add_epi32(
            scaled_chunk(b.quants[2 * p], by, 2 * p, b.scales[2 * p]),
            scaled_chunk(b.quants[2 * p + 1], by, 2 * p + 1, b.scales[2 * p + 1]),
        );
        if per_pair {
            acc.0 = (hsum_i32_8(pair) as f32).mul_add(d, acc.0);
            acc.1 = (pair_min as f32).mul_add(dmin, acc.1);
        } else {
            lanes = _mm256_add_epi32(lanes, pair);
            imin += pair_min;
        }
    }
    if !per_pair {
        acc.0 = (hsum_i32_8(lanes) as f32).mul_add(d, acc.0);
        acc.1 = (imin as f32).mul_add(dmin, acc.1);
    }
}

/// The repacked Q4_K kernels' output for one activation row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_repacked_dot(n: usize, x: &[u8], y: &[u8], per_pair: bool) -> f32 {
    check(n, x.len(), Q4_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = (0f32, 0f32);
    for (bx, by) in x.chunks_exact(Q4_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        prefetch_ahead(bx);
        k4_repacked_step(&k4_unpack(bx), by, per_pair, &mut acc);
    }
    acc.0 - acc.1
}

/// The repacked Q4_K gemv's (`per_pair` false) or gemm's output for `N`
/// activation rows interleaved by `crate::pack_acts` in `p`: each
/// super-block is unpacked once for all of them, and the rows' horizontal
/// sums and scalar FMAs ([`k4_repacked_step`]) run one row per lane, with
/// the same integers and the same f32 operations in the same order.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_repacked_1xn<const N: usize>(
    n: usize,
    x: &[u8],
    p: &[Chunk],
    per_pair: bool,
) -> [f32; N] {
    check(n, x.len(), Q4_K_BYTES);
    assert!(N <= 8, "at most eight rows");
    let zero = _mm256_setzero_si256();
    let (mut acc, mut acc_min) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (bx, slots) in x.chunks_exact(Q4_K_BYTES).zip(super_block_slots(n, N, p)) {
        prefetch_ahead(bx);
        let b = k4_unpack(bx);
        let by = |t: usize| packed_q8_k(slots, t);
        let d8 = std::array::from_fn::<f32, 8, _>(|t| if t < N { f32_le(by(t)) } else { 0.0 });
        let d8 = load_ps(&d8, 0);
        let d = _mm256_mul_ps(_mm256_set1_ps(b.d), d8);
        let dmin = _mm256_mul_ps(_mm256_set1_ps(b.m), d8);
        // mins[p], lane t: row t's mins term of pair p.
        let m = std::array::from_fn::<__m128i, 8, _>(|t| {
            if t < N {
                k4_mins(by(t), &b.mins)
            } else {
                _mm_setzero_si128()
            }
        });
        let mins = transpose_4x8(m);
        let pair = |t: usize, p: usize| {
            if t >= N {
                return zero;
            }
            let (q, by) = (&b.quants, by(t));
            _mm256_add_epi32(
                scaled_chunk(q[2 * p], by, 2 * p, b.scales[2 * p]),
                scaled_chunk(q[2 * p + 1], by, 2 * p + 1, b.scales[2 * p + 1]),
            )
        };
        if per_pair {
            for (p, &pair_min) in mins.iter().enumerate() {
                let sums = hsums_8(std::array::from_fn(|t| pair(t, p)));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
                acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pair_min), dmin, acc_min);
            }
        } else {
            let lanes =
                std::array::from_fn(|t| (0..4).fold(zero, |a, p| _mm256_add_epi32(a, pair(t, p))));
            let imin = mins.iter().fold(zero, |a, &m| _mm256_add_epi32(a, m));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsums_8(lanes)), d, acc);
            acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dmin, acc_min);
        }
    }
    let mut out = [0f32; 8];
    store_ps(&mut out, 0, _mm256_sub_ps(acc, acc_min));
    std::array::from_fn(|t| out[t])
}

/// Lane t: the wrapping sum of the eight i32 lanes of `v[t]` (integer
/// sums: any order gives the same result).
#[inline]
#[target_feature(enable = "avx2")]
fn hsums_8(v: [__m256i; 8]) -> __m256i {
    // Per 128-bit half, hadd of (x, y) is [x0+x1, x2+x3, y0+y1, y2+y3]:
    // twice over, each half holds rows 0..3 (4..7) summed over its lanes.
    let ab = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let cd = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(ab, cd),
        _mm256_permute2x128_si256::<0x31>(ab, cd),
    )
}

/// `out[p]`, lane t: lane p of `m[t]`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_4x8(m: [__m128i; 8]) -> [__m256i; 4] {
    // Rows 0..3 in the low halves, 4..7 in the high ones; then a 4 x 4
    // transpose within each half.
    let r: [__m256i; 4] = std::array::from_fn(|j| _mm256_set_m128i(m[4 + j], m[j]));
    let (t0, t1) = (
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpacklo_epi32(r[2], r[3]),
    );
    let (t2, t3) = (
        _mm256_unpackhi_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[2], r[3]),
    );
    [
        _mm256_unpacklo_epi64(t0, t1),
        _mm256_unpackhi_epi64(t0, t1),
        _mm256_unpacklo_epi64(t2, t3),
        _mm256_unpackhi_epi64(t2, t3),
    ]
}

// ------------------------------------------------------------ tiled matmul
//
// `crate::k_quants::tiled_dot_*`: exact integer sums per super-block, then
// the scalar `tiled_step`. The sums must not depend on the Q8_K block sums
// where ggml's tiled kernel does not use them (Q3_K, Q6_K), nor wrap where
// it widens them first (Q4_K / Q5_K mins), or rows with inconsistent sums
// would differ from the model.

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn tiled_dot_q2_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q2_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = 0f32;
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let [dx, mx] = f16_pair(bx, 80, bx, 82);
        let (sumi, prod) = q2_k_sums(bx, by);
        let min = Some((mx, hsum_i32_8(prod)));
        acc = tiled_step(acc, f32_le(by), dx, hsum_i32_8(sumi), min);
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn tiled_dot_q3_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q3_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = 0f32;
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let s1 = hsum_i32_8(q3_k_lanes(bx, by));
        acc = tiled_step(acc, f32_le(by), f16_at(bx, 108), s1, None);
    }
    acc
}

/// Q4_K (`q5` false) or Q5_K: the mins term from the i16 block sums
/// widened before they are added, as the tiled kernel does.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn tiled_dot_k4(n: usize, x: &[u8], y: &[u8], q5: bool) -> f32 {
    let (block, qs_at) = if q5 {
        (Q5_K_BYTES, 48)
    } else {
        (Q4_K_BYTES, 16)
    };
    check(n, x.len(), block);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = 0f32;
    for (bx, by) in x.chunks_exact(block).zip(y.chunks_exact(Q8_K_BYTES)) {
        let [dx, mx] = f16_pair(bx, 0, bx, 2);
        let sm = scales_mins(bytes::<12>(bx, 4));
        let bsum = |g: usize| i32::from(i16::from_le_bytes([by[260 + 2 * g], by[261 + 2 * g]]));
        let s2 = sm.iter().enumerate().fold(0i32, |a, (j, &(_, m))| {
            a + i32::from(m) * (bsum(2 * j) + bsum(2 * j + 1))
        });
        let s1 = hsum_i32_8(k4_lanes(bx, by, &sm, qs_at, q5));
        acc = tiled_step(acc, f32_le(by), dx, s1, Some((mx, s2)));
    }
    acc
}

/// Q6_K: the quants minus 32 as the difference of two `maddubs` products
/// (within i16: at most 2 * 63 * 128 + 2 * 32 * 128), not through the
/// block sums as the vec_dot does.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tiled_q6_step(b: &Q6Block, by: &[u8], acc: f32) -> f32 {
    let mut sumi = _mm256_setzero_si256();
    for c in 0..8 {
        let a = q8(by, c);
        let p = _mm256_sub_epi16(
            _mm256_maddubs_epi16(b.quants[c], a),
            _mm256_maddubs_epi16(_mm256_set1_epi8(32), a),
        );
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(b.scales[c], p));
    }
    tiled_step(acc, f32_le(by), b.d, hsum_i32_8(sumi), None)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn tiled_dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check(n, x.len(), Q6_K_BYTES);
    check(n, y.len(), Q8_K_BYTES);
    let mut acc = 0f32;
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        acc = tiled_q6_step(&q6_unpack(bx), by, acc);
    }
    acc
}

/// [`tiled_dot_q6_k_q8_k`] for one weight row against `N` activation rows
/// interleaved by `crate::pack_acts` in `p`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn tiled_dot_q6_k_q8_k_1xn<const N: usize>(n: usize, x: &[u8], p: &[Chunk]) -> [f32; N] {
    check(n, x.len(), Q6_K_BYTES);
    let mut acc = [0f32; N];
    for (bx, slots) in x.chunks_exact(Q6_K_BYTES).zip(super_block_slots(n, N, p)) {
        let b = q6_unpack(bx);
        for (t, acc) in acc.iter_mut().enumerate() {
            *acc = tiled_q6_step(&b, packed_q8_k(slots, t), *acc);
        }
    }
    acc
}

// ----------------------------------------------------- activation quantizers

/// Writes the 16 sums of 16 quants of a Q8_K block.
fn put_bsums(b: &mut [u8]) {
    let (qs, bsums) = b[4..].split_at_mut(QK_K);
    for (s, g) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
        let sum: i16 = g.iter().map(|&q| i16::from(q as i8)).sum();
        s.copy_from_slice(&sum.to_le_bytes());
    }
}

/// Quantizes a Q8_K block's 256 values with `iscale` (`_mm256_round_ps`
/// half to even, then saturating packs) and writes d and the block sums.
#[inline]
#[target_feature(enable = "avx2")]
fn q8_k_quants(x: &[f32], b: &mut [u8], iscale: f32, d: f32) {
    b[..4].copy_from_slice(&d.to_le_bytes());
    let mul = _mm256_set1_ps(iscale);
    for c in 0..8 {
        let mut i = [_mm256_setzero_si256(); 4];
        for (j, i) in i.iter_mut().enumerate() {
            let v = _mm256_mul_ps(load_ps(x, 32 * c + 8 * j), mul);
            *i = _mm256_cvtps_epi32(_mm256_round_ps::<_MM_FROUND_TO_NEAREST_INT>(v));
        }
        let q: &mut [u8; 32] = (&mut b[4 + 32 * c..36 + 32 * c]).try_into().expect("block");
        store_256(q, pack_i32x32(&i));
    }
    put_bsums(b);
}

/// `quantize_row_q8_k_ref`. Its `nearest_int` rounds half to even like
/// `_mm256_round_ps` for the finite products here (|iscale * x| <= 127);
/// blocks holding an infinity or NaN, or so small that the scale overflows,
/// take the scalar model, whose `nearest_int` bit trick turns non-finite
/// products into values no SIMD rounding reproduces.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_K_BYTES);
    let sign = _mm256_set1_ps(-0.0);
    let inf = _mm256_set1_ps(f32::INFINITY);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let (mut max, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in 0..32 {
            let a = _mm256_andnot_ps(sign, load_ps(x, 8 * i));
            max = _mm256_max_ps(max, a);
            // Not less than infinity: infinite or NaN.
            odd = _mm256_or_ps(odd, _mm256_cmp_ps::<_CMP_NLT_UQ>(a, inf));
        }
        if _mm256_movemask_ps(odd) != 0 {
            quantize_row_q8_k_ref(x, b);
            continue;
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(max), _mm256_castps256_ps128(max));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        // The reference scales by the first element of largest magnitude.
        let at = (0..32)
            .find_map(|i| {
                let a = _mm256_andnot_ps(sign, load_ps(x, 8 * i));
                let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, _mm256_set1_ps(amax)));
                (hit != 0).then(|| 8 * i + hit.trailing_zeros() as usize)
            })
            .expect("the maximum is an element");
        let iscale = -127.0 / x[at];
        if !iscale.is_finite() {
            quantize_row_q8_k_ref(x, b);
            continue;
        }
        q8_k_quants(x, b, iscale, 1.0 / iscale);
    }
}

/// `quantize_row_q8_k_4x8` (ggml's `ggml_quantize_mat_q8_K_4x8`, one row):
/// the same lane masks, in the same instructions.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_row_q8_k_4x8(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_K_BYTES);
    let sign = _mm256_set1_ps(-0.0);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let (mut max, mut positive) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for sb in 0..8 {
            let v = [0, 1, 2, 3].map(|j| load_ps(x, 32 * sb + 8 * j));
            let a = v.map(|v| _mm256_andnot_ps(sign, v));
            let prev = max;
            max = if sb == 0 {
                _mm256_max_ps(a[0], a[1])
            } else {
                _mm256_max_ps(_mm256_max_ps(prev, a[0]), a[1])
            };
            max = _mm256_max_ps(_mm256_max_ps(max, a[2]), a[3]);
            let hit = v.map(|v| _mm256_cmp_ps::<_CMP_EQ_OQ>(max, v));
            let hit = _mm256_or_ps(_mm256_or_ps(hit[0], hit[1]), _mm256_or_ps(hit[2], hit[3]));
            if sb > 0 {
                positive = _mm256_and_ps(positive, _mm256_cmp_ps::<_CMP_EQ_OQ>(prev, max));
            }
            positive = _mm256_or_ps(positive, hit);
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(max), _mm256_castps256_ps128(max));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        let at_max = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_set1_ps(amax), max);
        let flip = _mm256_movemask_ps(_mm256_and_ps(positive, at_max)) != 0;
        let iscale = match (amax != 0.0, flip) {
            (false, _) => 0.0,
            (true, false) => 127.0 / amax,
            (true, true) => -127.0 / amax,
        };
        let d = if amax != 0.0 { 1.0 / iscale } else { 0.0 };
        q8_k_quants(x, b, iscale, d);
    }
}

// ------------------------------------------------------------- dequantize

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q2_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q2_K_BYTES);
    for (b, y) in src.chunks_exact(Q2_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let [d, min] = f16_pair(b, 80, b, 82);
        let group = |g: usize| {
            let dl = _mm256_set1_ps(d * f32::from(b[g] & 0xF));
            let ml = _mm256_set1_ps(min * f32::from(b[g] >> 4));
            Affine::MulSub(dl, ml)
        };
        for c in 0..8 {
            let q = crumbs(load_256(bytes(b, 16 + 32 * (c / 4))), 2 * (c % 4) as i32);
            store_i8x32(y, 32 * c, q, [group(2 * c), group(2 * c + 1)]);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q3_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q3_K_BYTES);
    for (b, y) in src.chunks_exact(Q3_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 108);
        let sc = q3_k_scales(bytes::<12>(b, 96));
        let hmask = load_256(bytes(b, 0));
        let group = |g: usize| Affine::Mul(_mm256_set1_ps(d * sc[g] as f32));
        for c in 0..8 {
            let low = crumbs(load_256(bytes(b, 32 + 32 * (c / 4))), 2 * (c % 4) as i32);
            let high = _mm256_andnot_si256(bit_set(hmask, 1 << c), _mm256_set1_epi8(4));
            let q = _mm256_sub_epi8(low, high);
            store_i8x32(y, 32 * c, q, [group(2 * c), group(2 * c + 1)]);
        }
    }
}

/// Q4_K and Q5_K: d * scale * q - dmin * min per 32-element sub-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dequantize_k4(b: &[u8], y: &mut [f32], qs_at: usize, q5: bool) {
    let [d, min] = f16_pair(b, 0, b, 2);
    let sm = scales_mins(bytes::<12>(b, 4));
    let hbits = load_256(bytes(b, 16));
    for p in 0..4 {
        let raw = load_256(bytes(b, qs_at + 32 * p));
        let mut q = [
            _mm256_and_si256(raw, _mm256_set1_epi8(0xF)),
            _mm256_and_si256(_mm256_srli_epi16::<4>(raw), _mm256_set1_epi8(0xF)),
        ];
        for (h, q) in q.iter_mut().enumerate() {
            let c = 2 * p + h;
            if q5 {
                *q = _mm256_or_si256(*q, q5_high(hbits, c));
            }
            let d1 = _mm256_set1_ps(d * f32::from(sm[c].0));
            let m1 = _mm256_set1_ps(min * f32::from(sm[c].1));
            store_i8x32(y, 32 * c, *q, [Affine::MulSub(d1, m1); 2]);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q4_K_BYTES);
    for (b, y) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        dequantize_k4(b, y, 16, false);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q5_K_BYTES);
    for (b, y) in src.chunks_exact(Q5_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        dequantize_k4(b, y, 48, true);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q6_K_BYTES);
    for (b, y) in src.chunks_exact(Q6_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 208);
        let group = |g: usize| Affine::Mul(_mm256_set1_ps(d * f32::from(b[192 + g] as i8)));
        for c in 0..8 {
            let q = _mm256_sub_epi8(q6_chunk(b, c), _mm256_set1_epi8(32));
            store_i8x32(y, 32 * c, q, [group(2 * c), group(2 * c + 1)]);
        }
    }
}
