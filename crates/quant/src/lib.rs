//! ggml's block formats, bit-exact with the llama.cpp version Quarrel tracks.
//!
//! - [`dequantize_row`] and [`quantize_row`] match ggml-quants.c (the
//!   `to_float` functions and the `quantize_row_*_ref` reference quantizers
//!   used to write model files).
//! - [`quantize_activation`] and [`vec_dot`] match what llama.cpp's CPU
//!   backend runs on x86 built with AVX2 + FMA + F16C: its activation
//!   quantizers round differently from the references (see
//!   [`legacy::quantize_row_q8_0`]), and its dot kernels accumulate in eight
//!   f32 lanes with FMAs, a summation order these scalar kernels reproduce so
//!   that a SIMD port can be checked against them bit for bit.
//!
//! - [`matmul_path`], [`quantize_activation_for`] and [`dot`] follow the
//!   kernels ggml picks per matrix: the repacked Q4_0 / Q4_K gemm and gemv,
//!   the tiled K-quant matmul for batches of eight or more rows;
//!   [`dot_rows`] computes several activation rows' outputs at once.
//!
//! The public modules hold scalar models of all of these, in safe code
//! reading little-endian bytes: the reference, and the fallback. On x86-64
//! CPUs with AVX2 + FMA + F16C (detected at run time) the crate-root entry
//! points run SIMD ports of them instead (`x86`), bit-identical by
//! construction and by test.

mod avx2;
pub mod float;
pub mod k_quants;
pub mod legacy;
mod repack;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use quarrel_gguf::GgmlType;
pub use repack::{matmul_path, DotKernel, MatmulPath, TILED_MIN_BATCH};

/// Whether the SIMD kernels run: on x86-64 with AVX2, FMA and F16C
/// (detected once), unless `QUARREL_SIMD=off` in the environment forces
/// the scalar reference kernels everywhere, to compare against them. The
/// CPU backend's own SIMD kernels follow the same answer.
pub fn simd_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Why a row could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("type {0} is not supported by quarrel-quant")]
    Unsupported(GgmlType),
    #[error("{ty}: {n} elements is not a whole number of {block}-element blocks")]
    PartialBlock {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: {n} elements take {expected} bytes, got {actual}")]
    ByteLength {
        ty: GgmlType,
        n: usize,
        expected: usize,
        actual: usize,
    },
}

/// Types this crate can dequantize / compute with.
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | Bf16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2K
            | Q3K
            | Q4K
            | Q5K
            | Q6K
            | Q8K
    )
}

/// Checks that `n` elements of `ty` fill whole blocks taking `bytes` bytes.
fn check_row(ty: GgmlType, n: usize, bytes: usize) -> Result<(), QuantError> {
    if !is_supported(ty) {
        return Err(QuantError::Unsupported(ty));
    }
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::PartialBlock { ty, n, block });
    }
    let expected = n / block * ty.type_size();
    if bytes != expected {
        return Err(QuantError::ByteLength {
            ty,
            n,
            expected,
            actual: bytes,
        });
    }
    Ok(())
}

/// Dequantize `dst.len()` elements from `src` (exactly row_bytes(dst.len()) bytes).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_row(ty, dst.len(), src.len())?;
    #[cfg(target_arch = "x86_64")]
    if x86::dequantize_row(ty, src, dst) {
        return Ok(());
    }
    dequantize_row_scalar(ty, src, dst)
}

/// [`dequantize_row`] through the scalar reference kernels only.
pub fn dequantize_row_scalar(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_row(ty, dst.len(), src.len())?;
    use GgmlType::*;
    let f = match ty {
        F32 => float::f32_row_from_le,
        F16 => float::fp16_to_fp32_row,
        Bf16 => float::bf16_to_fp32_row,
        Q4_0 => legacy::dequantize_row_q4_0,
        Q4_1 => legacy::dequantize_row_q4_1,
        Q5_0 => legacy::dequantize_row_q5_0,
        Q5_1 => legacy::dequantize_row_q5_1,
        Q8_0 => legacy::dequantize_row_q8_0,
        Q8_1 => legacy::dequantize_row_q8_1,
        Q2K => k_quants::dequantize_row_q2_k,
        Q3K => k_quants::dequantize_row_q3_k,
        Q4K => k_quants::dequantize_row_q4_k,
        Q5K => k_quants::dequantize_row_q5_k,
        Q6K => k_quants::dequantize_row_q6_k,
        Q8K => k_quants::dequantize_row_q8_k,
        _ => unreachable!("checked by check_row"),
    };
    f(src, dst);
    Ok(())
}

/// Quantize (reference quality, as ggml's quantize_row_*_ref) `src` into `dst` (row_bytes(src.len()) bytes).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_row(ty, src.len(), dst.len())?;
    use GgmlType::*;
    let f = match ty {
        F32 => float::f32_row_to_le,
        F16 => float::fp32_to_fp16_row,
        Bf16 => float::fp32_to_bf16_row,
        Q4_0 => legacy::quantize_row_q4_0_ref,
        Q4_1 => legacy::quantize_row_q4_1_ref,
        Q5_0 => legacy::quantize_row_q5_0_ref,
        Q5_1 => legacy::quantize_row_q5_1_ref,
        Q8_0 => legacy::quantize_row_q8_0_ref,
        Q8_1 => legacy::quantize_row_q8_1_ref,
        Q2K => k_quants::quantize_row_q2_k_ref,
        Q3K => k_quants::quantize_row_q3_k_ref,
        Q4K => k_quants::quantize_row_q4_k_ref,
        Q5K => k_quants::quantize_row_q5_k_ref,
        Q6K => k_quants::quantize_row_q6_k_ref,
        Q8K => k_quants::quantize_row_q8_k_ref,
        _ => unreachable!("checked by check_row"),
    };
    f(src, dst);
    Ok(())
}

/// ggml's vec_dot_type: the type activations are quantized to for a dot with weights of `ty`
/// (Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1, K-quants -> Q8_K, F16 -> F16, BF16 -> BF16, F32 -> F32).
///
/// Follows ggml's CPU type table for every type, supported or not (the
/// i-quants and ternary types pair with Q8_K, IQ4_NL and MXFP4 with Q8_0);
/// integer and f64 types, which ggml does not multiply, map to themselves.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | Iq4Nl | Mxfp4 => Q8_0,
        Q4_1 | Q5_1 | Q8_1 => Q8_1,
        Q2K | Q3K | Q4K | Q5K | Q6K | Q8K | Iq2Xxs | Iq2Xs | Iq3Xxs | Iq1S | Iq3S | Iq2S
        | Iq4Xs | Iq1M | Tq1_0 | Tq2_0 => Q8K,
        F32 | F16 | Bf16 | I8 | I16 | I32 | I64 | F64 => ty,
    }
}

/// Quantize an activation row to vec_dot_type(weight_ty), exactly as ggml's CPU backend does on x86
/// (AVX2 build).
///
/// Findings (llama.cpp's x86 `quantize_row_q8_0` / `quantize_row_q8_1` vs the
/// `_ref` versions): the AVX path multiplies by `127 / amax` instead of
/// `1 / (amax / 127)`, rounds with `_mm256_round_ps` (half to even) instead
/// of `roundf` (half away from zero), saturates through `packs`, and for
/// Q8_1 computes `s` from the pre-saturation integer sum; d and s are
/// converted by F16C. On random data the two agree almost always, but every
/// exact .5 tie differs. Q8_K has no x86 SIMD quantizer: the CPU backend runs
/// `quantize_row_q8_K_ref`, whose `nearest_int` already rounds half to even.
/// F16 activations use F16C (differs from the reference only in NaN payloads);
/// BF16 uses the same rounding as the reference.
pub fn quantize_activation(
    weight_ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let ty = vec_dot_type(weight_ty);
    check_row(ty, src.len(), dst.len())?;
    #[cfg(target_arch = "x86_64")]
    if x86::quantize_activation(ty, false, src, dst) {
        return Ok(());
    }
    quantize_activation_scalar(weight_ty, src, dst)
}

/// [`quantize_activation`] through the scalar reference kernels only.
pub fn quantize_activation_scalar(
    weight_ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let ty = vec_dot_type(weight_ty);
    check_row(ty, src.len(), dst.len())?;
    use GgmlType::*;
    let f = match ty {
        F32 => float::f32_row_to_le,
        F16 => float::cpu_fp32_to_fp16,
        Bf16 => float::fp32_to_bf16_row,
        Q8_0 => legacy::quantize_row_q8_0,
        Q8_1 => legacy::quantize_row_q8_1,
        Q8K => k_quants::quantize_row_q8_k_ref,
        _ => return Err(QuantError::Unsupported(weight_ty)),
    };
    f(src, dst);
    Ok(())
}

/// Quantize an activation row for `kernel` (see [`MatmulPath::kernel`]):
/// as [`quantize_activation`] for [`DotKernel::VecDot`],
/// [`DotKernel::Gemv`] and [`DotKernel::Tiled`]; for [`DotKernel::Gemm`]
/// as the repacked gemm's `ggml_quantize_mat_*_4x8` (Q8_K:
/// [`k_quants::quantize_row_q8_k_4x8`]; Q8_0: identical to
/// `quantize_row_q8_0`), in the plain row layout.
pub fn quantize_activation_for(
    kernel: DotKernel,
    weight_ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    match (kernel, weight_ty) {
        (DotKernel::VecDot | DotKernel::Tiled, _) | (_, GgmlType::Q4_0) => {
            quantize_activation(weight_ty, src, dst)
        }
        (DotKernel::Gemv, GgmlType::Q4K) => quantize_activation(weight_ty, src, dst),
        (DotKernel::Gemm, GgmlType::Q4K) => {
            check_row(GgmlType::Q8K, src.len(), dst.len())?;
            #[cfg(target_arch = "x86_64")]
            if x86::quantize_activation(GgmlType::Q8K, true, src, dst) {
                return Ok(());
            }
            k_quants::quantize_row_q8_k_4x8(src, dst);
            Ok(())
        }
        _ => Err(QuantError::Unsupported(weight_ty)),
    }
}

/// One output of `kernel` for weight row `w` (type `ty`, `n` elements) and
/// an activation row quantized by [`quantize_activation_for`] with the same
/// kernel: [`vec_dot`], one element of the repacked gemv / gemm, or of the
/// tiled matmul.
///
/// # Panics
/// As [`vec_dot`]; also for a repacked or tiled kernel on a type ggml does
/// not run it on.
#[inline]
pub fn dot(kernel: DotKernel, ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    if kernel == DotKernel::VecDot {
        return vec_dot(ty, n, w, act);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = x86::kernel_dot(kernel, ty, n, w, act) {
        return v;
    }
    let f = match (kernel, ty) {
        (DotKernel::Gemv, GgmlType::Q4_0) => legacy::gemv_q4_0_q8_0,
        (DotKernel::Gemm, GgmlType::Q4_0) => legacy::gemm_q4_0_q8_0,
        (DotKernel::Gemv, GgmlType::Q4K) => k_quants::gemv_q4_k_q8_k,
        (DotKernel::Gemm, GgmlType::Q4K) => k_quants::gemm_q4_k_q8_k,
        (DotKernel::Tiled, GgmlType::Q2K) => k_quants::tiled_dot_q2_k_q8_k,
        (DotKernel::Tiled, GgmlType::Q3K) => k_quants::tiled_dot_q3_k_q8_k,
        (DotKernel::Tiled, GgmlType::Q4K) => k_quants::tiled_dot_q4_k_q8_k,
        (DotKernel::Tiled, GgmlType::Q5K) => k_quants::tiled_dot_q5_k_q8_k,
        (DotKernel::Tiled, GgmlType::Q6K) => k_quants::tiled_dot_q6_k_q8_k,
        _ => panic!("no {kernel:?} kernel for {ty}"),
    };
    f(n, w, act)
}

/// The most activation rows one [`dot_rows`] call takes.
pub const DOT_ROWS_MAX: usize = 8;

/// 32 bytes on a 32-byte boundary, the unit of [`pack_acts`]' layout: a
/// block's quants are one aligned load.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C, align(32))]
pub struct Chunk(pub [u8; 32]);

/// How [`pack_acts`] lays out the activations of a weight type's dot type.
#[derive(Clone, Copy)]
enum ActPacking {
    /// Per 32-element block: `per` chunks of f32 scale lanes (Q8_0's d;
    /// Q8_1's d, then s), one lane per row, then one chunk of quants per
    /// row. `bytes` is the dot type's block size.
    Blocks32 { bytes: usize, per: usize },
    /// Per super-block, one slot of [`Q8K_SLOT`] chunks per row holding the
    /// Q8_K block at byte [`Q8K_AT`], where its quants start on a chunk.
    SuperBlocks,
}

/// Chunks per packed Q8_K block: 4 bytes of d moved to the end of the
/// first chunk, 256 of quants, 32 of block sums.
pub(crate) const Q8K_SLOT: usize = 10;
/// Where a packed Q8_K block starts in its slot.
pub(crate) const Q8K_AT: usize = 28;

fn act_packing(ty: GgmlType) -> Option<ActPacking> {
    Some(match vec_dot_type(ty) {
        GgmlType::Q8_0 => ActPacking::Blocks32 {
            bytes: legacy::Q8_0,
            per: 1,
        },
        GgmlType::Q8_1 => ActPacking::Blocks32 {
            bytes: legacy::Q8_1,
            per: 2,
        },
        GgmlType::Q8K => ActPacking::SuperBlocks,
        _ => return None,
    })
}

/// How many [`Chunk`]s [`pack_acts`] writes for `rows` (at most
/// [`DOT_ROWS_MAX`]) activation rows of `n` elements quantized for weights
/// of `ty`.
pub fn packed_acts_len(ty: GgmlType, n: usize, rows: usize) -> usize {
    match act_packing(ty) {
        Some(ActPacking::Blocks32 { per, .. }) => (per + rows) * n / legacy::QK,
        Some(ActPacking::SuperBlocks) => Q8K_SLOT * rows * n / k_quants::QK_K,
        None => 0,
    }
}

/// Interleaves up to [`DOT_ROWS_MAX`] activation rows (`act`, back to
/// back, quantized for weights of `ty` by [`quantize_activation_for`]) into
/// `out` ([`packed_acts_len`] chunks) for [`dot_rows`], block by block so
/// that the rows' blocks lie together and every quant load is aligned.
/// Read straight from the quantized rows (34-, 36- or 292-byte blocks),
/// half of those loads straddle a cache line, and the batched kernels ran
/// at about half their register-only floor. The 32-element formats also
/// get their scales widened to f32, one lane per row, so that a weight
/// block's scale multiplies all of them at once.
pub fn pack_acts(ty: GgmlType, n: usize, act: &[u8], out: &mut [Chunk]) {
    let Some(packing) = act_packing(ty) else {
        return;
    };
    let (bs, blocks) = match packing {
        ActPacking::Blocks32 { bytes, .. } => (bytes, n / legacy::QK),
        ActPacking::SuperBlocks => (k_quants::Q8_K_BYTES, n / k_quants::QK_K),
    };
    let rows = act.len() / (blocks * bs).max(1);
    assert!(rows <= DOT_ROWS_MAX, "at most {DOT_ROWS_MAX} rows");
    assert_eq!(act.len(), rows * blocks * bs, "activation rows length");
    assert_eq!(
        out.len(),
        packed_acts_len(ty, n, rows),
        "packed activations length"
    );
    let slot = out.len() / blocks.max(1);
    out.fill(Chunk::default());
    for (t, row) in act.chunks_exact(blocks * bs).enumerate() {
        for (blk, o) in row.chunks_exact(bs).zip(out.chunks_exact_mut(slot)) {
            match packing {
                ActPacking::Blocks32 { per, .. } => {
                    for (j, lanes) in o[..per].iter_mut().enumerate() {
                        let bits = [blk[2 * j], blk[2 * j + 1]];
                        let v = half::f16::from_le_bytes(bits).to_f32();
                        lanes.0[4 * t..4 * t + 4].copy_from_slice(&v.to_le_bytes());
                    }
                    o[per + t].0.copy_from_slice(&blk[bs - 32..]);
                }
                ActPacking::SuperBlocks => {
                    let s = chunk_bytes_mut(&mut o[t * Q8K_SLOT..(t + 1) * Q8K_SLOT]);
                    s[Q8K_AT..Q8K_AT + bs].copy_from_slice(blk);
                }
            }
        }
    }
}

/// The bytes of `c`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn chunk_bytes(c: &[Chunk]) -> &[u8] {
    // SAFETY: `Chunk` is `repr(C)` around `[u8; 32]` with no padding (its
    // size equals its alignment), so the slice is `32 * c.len()` bytes.
    unsafe { std::slice::from_raw_parts(c.as_ptr().cast(), 32 * c.len()) }
}

fn chunk_bytes_mut(c: &mut [Chunk]) -> &mut [u8] {
    // SAFETY: as in `chunk_bytes`; every byte pattern is a valid `Chunk`.
    unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr().cast(), 32 * c.len()) }
}

/// [`dot`] for each weight row in `w` (back to back) against each of the
/// at most [`DOT_ROWS_MAX`] activation rows quantized for `kernel`, stored
/// back to back in `act`, and interleaved by [`pack_acts`] in `packed`:
/// `out[r * t + i]`, for `t` activation rows, is bit-identical to
/// `dot(kernel, ty, n, weight row r, activation row i)`.
///
/// On x86 with AVX2, the 32-element formats, Q6_K (vec_dot and tiled) and
/// the repacked Q4_K gemv and gemm run kernels that unpack each weight
/// block once for all the rows and overlap their chains (prompts, and the
/// batched decode of several sequences); otherwise this is one [`dot`] per
/// pair of rows.
pub fn dot_rows(
    kernel: DotKernel,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    act: &[u8],
    packed: &[Chunk],
    out: &mut [f32],
) {
    let row_bytes = |ty: GgmlType| {
        ty.row_bytes(n as u64)
            .expect("row length checked by the caller") as usize
    };
    let (wrow, stride) = (row_bytes(ty), row_bytes(vec_dot_type(ty)));
    let t = act.len() / stride;
    assert!((1..=DOT_ROWS_MAX).contains(&t), "1 to {DOT_ROWS_MAX} rows");
    assert_eq!(act.len(), t * stride, "activation rows length");
    assert_eq!(w.len() % wrow, 0, "weight rows length");
    assert_eq!(out.len(), w.len() / wrow * t, "output length");
    #[cfg(target_arch = "x86_64")]
    if x86::dot_rows(kernel, ty, n, w, wrow, t, act, packed, out) {
        return;
    }
    // Only the x86 kernels read the interleaved layout.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = packed;
    for (x, o) in w.chunks_exact(wrow).zip(out.chunks_exact_mut(t)) {
        for (o, a) in o.iter_mut().zip(act.chunks_exact(stride)) {
            *o = dot(kernel, ty, n, x, a);
        }
    }
}

/// Whether [`unpack_rows`] and [`dot_rows_unpacked`] serve weights of
/// `ty` here: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 on a CPU with AVX2;
/// [`dot_rows`] serves the rest.
pub fn unpacks(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::unpacks(ty);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        false
    }
}

/// Unpacks weight rows of `ty` (`n` elements each, back to back in `w`)
/// for [`dot_rows_unpacked`]: each 32-element block's quants widened to
/// one [`Chunk`] of bytes, its scales (d, and m where the format has one)
/// to f32, `n / 32` of each per row. A prompt's runs of activation rows
/// then share one unpacking of each weight block.
///
/// # Panics
/// Unless [`unpacks`]`(ty)`, or if the slices do not hold whole rows.
pub fn unpack_rows(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    quants: &mut [Chunk],
    scales: &mut [[f32; 2]],
) {
    assert!(unpacks(ty), "no unpacked kernel for {ty} here");
    let wrow = ty
        .row_bytes(n as u64)
        .expect("row length checked by the caller") as usize;
    let rows = w.len() / wrow;
    assert_eq!(w.len(), rows * wrow, "weight rows length");
    assert_eq!(
        quants.len(),
        rows * (n / legacy::QK),
        "unpacked quants length"
    );
    assert_eq!(scales.len(), quants.len(), "unpacked scales length");
    #[cfg(target_arch = "x86_64")]
    x86::unpack_rows(ty, n, w, wrow, quants, scales);
}

/// [`dot_rows`] with [`DotKernel::VecDot`] on weight rows unpacked by
/// [`unpack_rows`], against `rows` (1 to [`DOT_ROWS_MAX`]) activation rows
/// interleaved by [`pack_acts`]: the same bits.
///
/// # Panics
/// Unless [`unpacks`]`(ty)`.
pub fn dot_rows_unpacked(
    ty: GgmlType,
    n: usize,
    quants: &[Chunk],
    scales: &[[f32; 2]],
    rows: usize,
    packed: &[Chunk],
    out: &mut [f32],
) {
    assert!(
        (1..=DOT_ROWS_MAX).contains(&rows),
        "1 to {DOT_ROWS_MAX} rows"
    );
    assert_eq!(scales.len(), quants.len(), "unpacked scales length");
    assert_eq!(
        out.len(),
        quants.len() / (n / legacy::QK) * rows,
        "output length"
    );
    #[cfg(target_arch = "x86_64")]
    x86::dot_rows_unpacked(ty, n, quants, scales, rows, packed, out);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, packed);
        panic!("no unpacked weight rows off x86");
    }
}

/// Dot product of one weight row (`n` elements, type `ty`) with one activation row already quantized to
/// vec_dot_type(ty), as ggml's `ggml_vec_dot_<ty>_<vec_dot_type>` (integer sums per block, then scaled in f32).
///
/// Reproduces the x86 AVX2 + FMA kernels bit for bit: per-block integer
/// sums in eight lanes, f32 FMA accumulation per lane, ggml's horizontal
/// reduction tree, and the FMA contractions GCC applies to their scalar parts.
///
/// # Panics
/// If `ty` has no ggml dot kernel here (unsupported types, and Q8_1 / Q8_K,
/// which are only activation formats) or the slices do not hold `n` elements.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = x86::vec_dot(ty, n, w, act) {
        return v;
    }
    vec_dot_scalar(ty, n, w, act)
}

/// [`vec_dot`] through the scalar reference kernels only: the fallback
/// without SIMD, and what the SIMD kernels are tested against.
pub fn vec_dot_scalar(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    use GgmlType::*;
    let f = match ty {
        F32 => float::vec_dot_f32,
        F16 => float::vec_dot_f16,
        Bf16 => float::vec_dot_bf16,
        Q4_0 => legacy::vec_dot_q4_0_q8_0,
        Q4_1 => legacy::vec_dot_q4_1_q8_1,
        Q5_0 => legacy::vec_dot_q5_0_q8_0,
        Q5_1 => legacy::vec_dot_q5_1_q8_1,
        Q8_0 => legacy::vec_dot_q8_0_q8_0,
        Q2K => k_quants::vec_dot_q2_k_q8_k,
        Q3K => k_quants::vec_dot_q3_k_q8_k,
        Q4K => k_quants::vec_dot_q4_k_q8_k,
        Q5K => k_quants::vec_dot_q5_k_q8_k,
        Q6K => k_quants::vec_dot_q6_k_q8_k,
        _ => panic!("no vec_dot for {ty}"),
    };
    f(n, w, act)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_dot_types_follow_ggml() {
        use GgmlType::*;
        for (w, a) in [
            (Q4_0, Q8_0),
            (Q5_0, Q8_0),
            (Q8_0, Q8_0),
            (Q4_1, Q8_1),
            (Q5_1, Q8_1),
            (Q2K, Q8K),
            (Q3K, Q8K),
            (Q4K, Q8K),
            (Q5K, Q8K),
            (Q6K, Q8K),
            (F16, F16),
            (Bf16, Bf16),
            (F32, F32),
        ] {
            assert_eq!(vec_dot_type(w), a, "{w}");
        }
    }

    #[test]
    fn rejects_bad_lengths_and_unsupported_types() {
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out),
            Err(QuantError::ByteLength {
                expected: 18,
                actual: 17,
                ..
            })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::Q4K, &[0; 144], &mut out),
            Err(QuantError::PartialBlock { block: 256, .. })
        ));
        assert!(matches!(
            quantize_row(GgmlType::Iq4Xs, &[0.0; 256], &mut [0; 136]),
            Err(QuantError::Unsupported(GgmlType::Iq4Xs))
        ));
        assert!(matches!(
            quantize_activation(GgmlType::I32, &[0.0; 4], &mut [0; 16]),
            Err(QuantError::Unsupported(GgmlType::I32))
        ));
        // All-ones block: q = 127, d = f16(1 / 127); each of the 8 lanes
        // holds 4 * 127^2 and the reduction only doubles.
        let mut act = [0u8; 34];
        quantize_activation(GgmlType::Q5_0, &[1.0; 32], &mut act).unwrap();
        let d = half::f16::from_f32(1.0 / 127.0).to_f32();
        assert_eq!(
            vec_dot(GgmlType::Q8_0, 32, &act, &act),
            8.0 * (d * d * 64516.0)
        );
    }
}
