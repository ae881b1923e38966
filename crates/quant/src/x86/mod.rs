//! x86-64 AVX2 + FMA + F16C kernels.
//!
//! Each kernel computes exactly what its scalar model in the parent modules
//! computes (which is what ggml's AVX2 code computes): the same integer
//! lanes, the same FMAs per f32 lane, the same reduction trees, so outputs
//! are bit-identical; tests/simd.rs checks that on random data. Where an
//! integer step can saturate (`maddubs` on extreme Q8_0 pairs) these use the
//! same instruction on the same byte pairs as ggml; everywhere else the
//! integer sums are exact (or wrap identically), so only their assignment
//! to lanes matters, not the order in which the instructions form them.
//!
//! The entry points are safe: they check [`available`] and return `None`
//! (the caller then runs the scalar model) on CPUs without the features.

use std::arch::x86_64::*;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::{DotKernel, GgmlType};

mod float;
mod k_quants;
mod legacy;

/// Whether AVX2, FMA and F16C are all available, detected once: the
/// kernels are called per row, so the answer is kept in an atomic.
pub(crate) fn available() -> bool {
    const UNKNOWN: u8 = 0;
    const NO: u8 = 1;
    const YES: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    match STATE.load(Ordering::Relaxed) {
        NO => false,
        YES => true,
        _ => {
            let yes = std::env::var("QUARREL_SIMD").map_or(true, |v| v != "off")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            STATE.store(if yes { YES } else { NO }, Ordering::Relaxed);
            yes
        }
    }
}

/// `N` bytes at `b[at..]` as an array reference (panics if out of bounds;
/// with constant offsets into fixed-size blocks the check folds away).
#[inline]
fn bytes<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
    b[at..at + N].try_into().expect("in bounds")
}

// Loads and stores go through `transmute` of arrays rather than the
// `loadu` / `storeu` intrinsics: those are built on `ptr::copy_nonoverlapping`,
// whose precondition checks (on in the debug-assertion builds Quarrel
// benchmarks with) cost a compare and a spill per load in the hot loops.
// The generated code is the same unaligned vector load or store.

#[inline]
#[target_feature(enable = "avx2")]
fn load_256(b: &[u8; 32]) -> __m256i {
    // SAFETY: both types are 32 bytes and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<[u8; 32], __m256i>(*b) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_128(b: &[u8; 16]) -> __m128i {
    // SAFETY: both types are 16 bytes and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<[u8; 16], __m128i>(*b) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_256(b: &mut [u8; 32], v: __m256i) {
    // SAFETY: both types are 32 bytes and every bit pattern is valid for both.
    *b = unsafe { std::mem::transmute::<__m256i, [u8; 32]>(v) };
}

/// The four i32 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
fn i32x4(v: __m128i) -> [i32; 4] {
    // SAFETY: both types are 16 bytes and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<__m128i, [i32; 4]>(v) }
}

/// Eight f32 from `x[at..at + 8]`.
#[inline]
#[target_feature(enable = "avx2")]
fn load_ps(x: &[f32], at: usize) -> __m256 {
    let v: &[f32; 8] = x[at..at + 8].try_into().expect("in bounds");
    // SAFETY: both types are 32 bytes and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<[f32; 8], __m256>(*v) }
}

/// Stores eight f32 at `y[at..at + 8]`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_ps(y: &mut [f32], at: usize, v: __m256) {
    let d: &mut [f32; 8] = (&mut y[at..at + 8]).try_into().expect("in bounds");
    // SAFETY: both types are 32 bytes and every bit pattern is valid for both.
    *d = unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) };
}

/// The f16 at `b[at..at + 2]`, widened by F16C (exact, like `f16_le`).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_pair(b, at, b, at)[0]
}

/// The f16s at `a[i..i + 2]` and `b[j..j + 2]`, widened together. Both
/// halves of the 32-bit input are used, so LLVM moves it in with `vmovd`;
/// for a lone f16 it merges the 16 bits into a stale register (`vpinsrw`),
/// a false dependency that chains the loops' iterations through it.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_pair(a: &[u8], i: usize, b: &[u8], j: usize) -> [f32; 2] {
    let bits = u32::from(u16::from_le_bytes(*bytes(a, i)))
        | u32::from(u16::from_le_bytes(*bytes(b, j))) << 16;
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    [_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v))]
}

/// The two adjacent f16s at `b[at..at + 4]`, widened into lanes 0 and 1
/// by one 32-bit load and one conversion.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16x2_at(b: &[u8], at: usize) -> __m128 {
    let bits = u32::from_le_bytes(*bytes(b, at));
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// f32 to f16 bits by F16C, round to nearest even (as `f16c_fp32_to_fp16`).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_bits(x: f32) -> u16 {
    _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16
}

/// ggml's `hsum_float_8`: (hi + lo), then lanes 0 + 2 and 1 + 3, then the two.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_float_8(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

/// The (wrapping) sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32_8(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// ggml's `mul_sum_us8_pairs` before the conversion: u8 x i8 products
/// summed by `maddubs` pairs (saturating), then pairs of pairs.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_sum_us8_pairs(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy))
}

/// ggml's `mul_sum_i8_pairs` before the conversion: |x| times y carrying
/// x's sign (`sign_epi8`, so -(-128) wraps), then as [`mul_sum_us8_pairs`].
#[inline]
#[target_feature(enable = "avx2")]
fn mul_sum_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
    mul_sum_us8_pairs(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// ggml's `bytes_from_nibbles_32`: the 32 nibbles of 16 bytes, low nibbles
/// first, as bytes 0..16.
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles_32(b: &[u8; 16]) -> __m256i {
    let v = load_128(b);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
    _mm256_and_si256(both, _mm256_set1_epi8(0xF))
}

/// ggml's `bytes_from_bits_32`: byte i is 0xFF where bit i of the u32 is set.
#[inline]
#[target_feature(enable = "avx2")]
fn bytes_from_bits_32(b: &[u8; 4]) -> __m256i {
    let x = _mm256_set1_epi32(i32::from_le_bytes(*b));
    let spread = _mm256_shuffle_epi8(
        x,
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let probe = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(probe, _mm256_set1_epi64x(-1))
}

/// Eight i8 lanes (the low 8 bytes of `v`) widened to f32.
#[inline]
#[target_feature(enable = "avx2")]
fn i8x8_to_ps(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// How a dequantizer maps a quant q (as f32) to its value, with the scalar
/// models' separate (unfused) operations.
#[derive(Clone, Copy)]
enum Affine {
    /// q * d
    Mul(__m256),
    /// q * d + m
    MulAdd(__m256, __m256),
    /// d * q - m
    MulSub(__m256, __m256),
}

#[inline]
#[target_feature(enable = "avx2")]
fn apply(q: __m256, f: Affine) -> __m256 {
    match f {
        Affine::Mul(d) => _mm256_mul_ps(q, d),
        Affine::MulAdd(d, m) => _mm256_add_ps(_mm256_mul_ps(q, d), m),
        Affine::MulSub(d, m) => _mm256_sub_ps(_mm256_mul_ps(d, q), m),
    }
}

/// Writes the 32 i8 quants of `q` to `y[at..at + 32]` through `f[0]` (the
/// first 16) and `f[1]` (the last 16).
#[inline]
#[target_feature(enable = "avx2")]
fn store_i8x32(y: &mut [f32], at: usize, q: __m256i, f: [Affine; 2]) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    for (i, part) in [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)]
        .into_iter()
        .enumerate()
    {
        store_ps(y, at + 8 * i, apply(i8x8_to_ps(part), f[i / 2]));
    }
}

/// Sixteen i16 lanes: `lo` in the first eight, `hi` in the last eight (the
/// scales of a 32-element chunk's two 16-element groups).
#[inline]
#[target_feature(enable = "avx2")]
fn scales_16x2(lo: i32, hi: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16))
}

/// Bits `shift..shift + 2` of every byte of `v`.
#[inline]
#[target_feature(enable = "avx2")]
fn crumbs(v: __m256i, shift: i32) -> __m256i {
    _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)),
        _mm256_set1_epi8(3),
    )
}

/// 0xFF in the bytes of `v` that have all the bits of `mask` set.
#[inline]
#[target_feature(enable = "avx2")]
fn bit_set(v: __m256i, mask: u8) -> __m256i {
    let m = _mm256_set1_epi8(mask as i8);
    _mm256_cmpeq_epi8(_mm256_and_si256(v, m), m)
}

// ---------------------------------------------------------------- dispatch
//
// Each entry point returns `None` / `false` when the CPU lacks the features
// or the type has no kernel here; the caller then runs the scalar model.

/// How far ahead of the block in use the kernels that stream weight rows
/// prefetch them: without it, decode stalled on weight loads at about 45%
/// of the memory bandwidth that a plain sequential read reaches.
const PREFETCH_AHEAD: usize = 1024;

/// Prefetches the weight bytes [`PREFETCH_AHEAD`] past `block`, a cache
/// line per 64 bytes of it (they may lie past the row: the next rows
/// follow it, and a prefetch never faults).
#[inline]
#[target_feature(enable = "sse")]
fn prefetch_ahead(block: &[u8]) {
    for at in (0..block.len()).step_by(64) {
        let p = block.as_ptr().wrapping_add(PREFETCH_AHEAD + at);
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
}

/// Runs legacy kernel `$kernel` monomorphised for the format selector `$f`.
macro_rules! by_format {
    ($f:expr, $kernel:ident, $($arg:expr),* $(; $n:tt)?) => {
        // SAFETY (each call): the caller checked `available()` (AVX2, FMA,
        // F16C); the kernels check slice lengths themselves.
        unsafe {
            match $f {
                legacy::Q4_0_T => legacy::$kernel::<{ legacy::Q4_0_T } $(, $n)?>($($arg),*),
                legacy::Q4_1_T => legacy::$kernel::<{ legacy::Q4_1_T } $(, $n)?>($($arg),*),
                legacy::Q5_0_T => legacy::$kernel::<{ legacy::Q5_0_T } $(, $n)?>($($arg),*),
                legacy::Q5_1_T => legacy::$kernel::<{ legacy::Q5_1_T } $(, $n)?>($($arg),*),
                _ => legacy::$kernel::<{ legacy::Q8_0_T } $(, $n)?>($($arg),*),
            }
        }
    };
}

/// `crate::vec_dot` for `ty`.
pub(crate) fn vec_dot(ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> Option<f32> {
    if !available() {
        return None;
    }
    if let Some(f) = legacy_format(ty) {
        return Some(by_format!(f, vec_dot, n, x, y));
    }
    use GgmlType::*;
    // SAFETY (each call): `available()` checked AVX2, FMA and F16C; the
    // kernels check slice lengths themselves.
    Some(unsafe {
        match ty {
            F32 => float::vec_dot_f32(n, x, y),
            F16 => float::vec_dot_f16(n, x, y),
            Bf16 => float::vec_dot_bf16(n, x, y),
            Q2K => k_quants::vec_dot_q2_k_q8_k(n, x, y),
            Q3K => k_quants::vec_dot_q3_k_q8_k(n, x, y),
            Q4K => k_quants::vec_dot_q4_k_q8_k(n, x, y),
            Q5K => k_quants::vec_dot_q5_k_q8_k(n, x, y),
            Q6K => k_quants::vec_dot_q6_k_q8_k(n, x, y),
            _ => return None,
        }
    })
}

/// `$call` for each weight row `$x` of the iterator `$rows`, into `N`
/// outputs each of `$out`, with `N`, the activation row count `$t` (1 to
/// 8), a const.
macro_rules! by_rows {
    ($t:expr, $rows:expr, $out:expr, $x:pat => $call:expr) => {
        match $t {
            1 => by_rows!(@ 1, $rows, $out, $x => $call),
            2 => by_rows!(@ 2, $rows, $out, $x => $call),
            3 => by_rows!(@ 3, $rows, $out, $x => $call),
            4 => by_rows!(@ 4, $rows, $out, $x => $call),
            5 => by_rows!(@ 5, $rows, $out, $x => $call),
            6 => by_rows!(@ 6, $rows, $out, $x => $call),
            7 => by_rows!(@ 7, $rows, $out, $x => $call),
            8 => by_rows!(@ 8, $rows, $out, $x => $call),
            _ => panic!("1 to {} rows per call", crate::DOT_ROWS_MAX),
        }
    };
    (@ $n:literal, $rows:expr, $out:expr, $x:pat => $call:expr) => {{
        const N: usize = $n;
        for ($x, o) in $rows.zip($out.chunks_exact_mut(N)) {
            o.copy_from_slice(&$call);
        }
    }};
}

/// `crate::unpacks`.
pub(crate) fn unpacks(ty: GgmlType) -> bool {
    available() && legacy_format(ty).is_some()
}

/// `crate::unpack_rows`: the weight rows of `wrow` bytes in `x`.
pub(crate) fn unpack_rows(
    ty: GgmlType,
    n: usize,
    x: &[u8],
    wrow: usize,
    quants: &mut [crate::Chunk],
    scales: &mut [[f32; 2]],
) {
    let f = legacy_format(ty).expect("checked by crate::unpack_rows");
    let nb = n / crate::legacy::QK;
    let rows = x.chunks_exact(wrow);
    for ((x, q), s) in rows
        .zip(quants.chunks_exact_mut(nb))
        .zip(scales.chunks_exact_mut(nb))
    {
        by_format!(f, unpack_row, n, x, q, s);
    }
}

/// `crate::dot_rows_unpacked` for `t` activation rows.
pub(crate) fn dot_rows_unpacked(
    ty: GgmlType,
    n: usize,
    quants: &[crate::Chunk],
    scales: &[[f32; 2]],
    t: usize,
    packed: &[crate::Chunk],
    out: &mut [f32],
) {
    assert!(unpacks(ty), "no unpacked kernel for {ty} here");
    let f = legacy_format(ty).expect("checked just above");
    let nb = n / crate::legacy::QK;
    let rows = quants.chunks_exact(nb).zip(scales.chunks_exact(nb));
    by_rows!(t, rows, out, (q, s) => by_format!(f, vec_dot_unpacked_1xn, n, q, s, packed; N));
}

/// `crate::dot_rows` over the weight rows of `wrow` bytes in `x`, where
/// there is a batched kernel: for `t` = 2 to 8 activation rows (`act`,
/// interleaved by `crate::pack_acts` in `packed`), the 32-element formats,
/// Q6_K (vec_dot and tiled) and the repacked Q4_K gemv and gemm unpack
/// each weight block once for all of them; for one activation row, the
/// 32-element formats' vec_dot runs row after row without the per-row
/// dispatch. Returns whether it ran.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_rows(
    kernel: DotKernel,
    ty: GgmlType,
    n: usize,
    x: &[u8],
    wrow: usize,
    t: usize,
    act: &[u8],
    packed: &[crate::Chunk],
    out: &mut [f32],
) -> bool {
    if !available() {
        return false;
    }
    if t == 1 {
        return match (kernel, legacy_format(ty)) {
            (DotKernel::VecDot, Some(f)) => {
                by_format!(f, vec_dot_rows, n, x, wrow, act, out);
                true
            }
            _ => false,
        };
    }
    let rows = || x.chunks_exact(wrow);
    // SAFETY (each k-quant call): `available()` checked AVX2, FMA and
    // F16C; the kernels check slice lengths themselves.
    match (kernel, ty, legacy_format(ty)) {
        (DotKernel::VecDot, _, Some(f)) => {
            by_rows!(t, rows(), out, x => by_format!(f, vec_dot_1xn, n, x, packed; N))
        }
        (DotKernel::VecDot, GgmlType::Q6K, _) => {
            by_rows!(t, rows(), out, x => unsafe { k_quants::vec_dot_q6_k_q8_k_1xn::<N>(n, x, packed) })
        }
        (DotKernel::Tiled, GgmlType::Q6K, _) => {
            by_rows!(t, rows(), out, x => unsafe { k_quants::tiled_dot_q6_k_q8_k_1xn::<N>(n, x, packed) })
        }
        (DotKernel::Gemv | DotKernel::Gemm, GgmlType::Q4K, _) => {
            let per_pair = kernel == DotKernel::Gemm;
            by_rows!(t, rows(), out, x => unsafe { k_quants::q4_k_repacked_1xn::<N>(n, x, packed, per_pair) })
        }
        _ => return false,
    }
    true
}

/// The const-generic selector of a 32-element format.
fn legacy_format(ty: GgmlType) -> Option<u8> {
    Some(match ty {
        GgmlType::Q4_0 => legacy::Q4_0_T,
        GgmlType::Q4_1 => legacy::Q4_1_T,
        GgmlType::Q5_0 => legacy::Q5_0_T,
        GgmlType::Q5_1 => legacy::Q5_1_T,
        GgmlType::Q8_0 => legacy::Q8_0_T,
        _ => return None,
    })
}

/// `crate::dot` for the repacked and tiled kernels.
pub(crate) fn kernel_dot(
    kernel: DotKernel,
    ty: GgmlType,
    n: usize,
    x: &[u8],
    y: &[u8],
) -> Option<f32> {
    if !available() {
        return None;
    }
    let gemm = kernel == DotKernel::Gemm;
    use GgmlType::*;
    // SAFETY (each call): `available()` checked AVX2, FMA and F16C; the
    // kernels check slice lengths themselves.
    Some(unsafe {
        match (kernel, ty) {
            (DotKernel::Tiled, Q2K) => k_quants::tiled_dot_q2_k_q8_k(n, x, y),
            (DotKernel::Tiled, Q3K) => k_quants::tiled_dot_q3_k_q8_k(n, x, y),
            (DotKernel::Tiled, Q4K) => k_quants::tiled_dot_k4(n, x, y, false),
            (DotKernel::Tiled, Q5K) => k_quants::tiled_dot_k4(n, x, y, true),
            (DotKernel::Tiled, Q6K) => k_quants::tiled_dot_q6_k_q8_k(n, x, y),
            (DotKernel::Tiled, _) => return None,
            // The gemv takes |weight| in its sign trick, the gemm |activation|.
            (_, Q4_0) => legacy::q4_0_repacked_dot(n, x, y, !gemm),
            (_, Q4K) => k_quants::q4_k_repacked_dot(n, x, y, gemm),
            _ => return None,
        }
    })
}

/// Activation quantization to `act_ty` (a vec_dot type), as
/// `crate::quantize_activation`; `gemm_4x8` selects the Q8_K quantizer of
/// the repacked gemm. Returns whether it ran.
pub(crate) fn quantize_activation(
    act_ty: GgmlType,
    gemm_4x8: bool,
    src: &[f32],
    dst: &mut [u8],
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY (each call): `available()` checked AVX2, FMA and F16C; the
    // kernels check slice lengths themselves.
    unsafe {
        match act_ty {
            GgmlType::F16 => float::cpu_fp32_to_fp16(src, dst),
            GgmlType::Bf16 => float::fp32_to_bf16_row(src, dst),
            GgmlType::Q8_0 => legacy::quantize_row_q8_0(src, dst),
            GgmlType::Q8_1 => legacy::quantize_row_q8_1(src, dst),
            GgmlType::Q8K if gemm_4x8 => k_quants::quantize_row_q8_k_4x8(src, dst),
            GgmlType::Q8K => k_quants::quantize_row_q8_k(src, dst),
            _ => return false,
        }
    }
    true
}

/// `crate::dequantize_row` for `ty`. Returns whether it ran.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    use GgmlType::*;
    // SAFETY (each call): `available()` checked AVX2, FMA and F16C; the
    // kernels check slice lengths themselves.
    unsafe {
        match ty {
            F16 => float::fp16_to_fp32_row(src, dst),
            Bf16 => float::bf16_to_fp32_row(src, dst),
            Q4_0 => legacy::dequantize_row_q4_0(src, dst),
            Q4_1 => legacy::dequantize_row_q4_1(src, dst),
            Q5_0 => legacy::dequantize_row_q5_0(src, dst),
            Q5_1 => legacy::dequantize_row_q5_1(src, dst),
            Q8_0 => legacy::dequantize_row_q8_0(src, dst),
            Q2K => k_quants::dequantize_row_q2_k(src, dst),
            Q3K => k_quants::dequantize_row_q3_k(src, dst),
            Q4K => k_quants::dequantize_row_q4_k(src, dst),
            Q5K => k_quants::dequantize_row_q5_k(src, dst),
            Q6K => k_quants::dequantize_row_q6_k(src, dst),
            _ => return false,
        }
    }
    true
}
