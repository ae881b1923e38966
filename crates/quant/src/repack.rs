//! Which kernels ggml's x86 CPU backend runs for a matrix multiplication.
//!
//! llama.cpp places weights that its AVX2 build can repack in the CPU_REPACK
//! buffer type: Q4_0 and Q4_K matrices whose row count is a multiple of 8
//! are interleaved eight rows at a time at load (`block_q4_0x8`,
//! `block_q4_Kx8`) and multiplied by dedicated kernels instead of
//! `ggml_vec_dot_*`. (IQ4_NL and MXFP4 are repacked too; Quarrel does not
//! support them. Other types are repacked only on ARM, or with AVX-512.)
//!
//! A multiplication by a repacked matrix quantizes the activation rows in
//! groups of four from row 0 (`ggml_quantize_mat_*_4x8`) and runs the gemm
//! kernel on those; the `rows % 4` leftover rows are quantized by the
//! ordinary `from_float` and run through the gemv kernel. The per-output
//! arithmetic of the two kernels is not the same for Q4_K (the gemm
//! accumulates per pair of sub-blocks, the gemv per super-block), so each
//! activation row's [`DotKernel`] depends on its index and the batch size.
//!
//! Weights that are not repacked go through `ggml_vec_dot_*`, or for
//! batches of two or more rows through llamafile's tinyBLAS where it covers
//! the type: for Q4_0 / Q5_0 / Q8_0 it sums exactly as `ggml_vec_dot_*`
//! (checked by the golden tests). Not modelled yet: tinyBLAS on F32 / F16 /
//! BF16 weights (batches of two or more rows).
//!
//! K-quant weights that are not repacked (Q2_K..Q6_K) go, for batches of
//! `ggml_tiled_min_batch` (8) or more rows, through ggml's tiled matmul
//! (ggml-cpu/tiled), which ggml_compute_forward_mul_mat tries first: it
//! quantizes the activations with the ordinary `from_float` (Q8_K) and sums
//! each super-block exactly in integers, but scales and accumulates in its
//! own order ([`crate::k_quants`]' `tiled_dot_*`). (It also takes IQ types,
//! which Quarrel does not support.)

use crate::GgmlType;

/// How ggml's x86 CPU backend multiplies by a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// Row by row with `ggml_vec_dot_<type>_<vec_dot_type>`.
    VecDot,
    /// Repacked into 8-row interleaved blocks and multiplied by
    /// `ggml_gemm_*_8x8` / `ggml_gemv_*_8x8`.
    Repacked,
    /// A K-quant matrix that is not repacked: `ggml_vec_dot_*` for batches
    /// under [`TILED_MIN_BATCH`] rows, the tiled matmul for larger ones.
    Tiled,
}

/// `ggml_tiled_min_batch`: the fewest activation rows the tiled matmul takes.
pub const TILED_MIN_BATCH: usize = 8;

/// The kernel that produces the outputs of one activation row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotKernel {
    /// `ggml_vec_dot_*`, activations from `from_float`.
    VecDot,
    /// A repacked matrix's gemv, activations from `from_float`.
    Gemv,
    /// A repacked matrix's gemm, activations from `ggml_quantize_mat_*_4x8`.
    Gemm,
    /// The tiled K-quant matmul (ggml-cpu/tiled), activations from `from_float`.
    Tiled,
}

/// The path ggml's AVX2 build takes for a matrix of `rows` rows of `ty`
/// (`ggml_repack_get_optimal_repack_type`, then `ggml_tiled_supported`).
#[inline]
pub fn matmul_path(ty: GgmlType, rows: usize) -> MatmulPath {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4K if rows.is_multiple_of(8) => MatmulPath::Repacked,
        Q2K | Q3K | Q4K | Q5K | Q6K => MatmulPath::Tiled,
        _ => MatmulPath::VecDot,
    }
}

impl MatmulPath {
    /// The kernel for activation row `row` of a batch of `rows`: repacked
    /// matrices run the gemm on the first `rows - rows % 4` rows; the tiled
    /// matmul takes whole batches of at least [`TILED_MIN_BATCH`] rows.
    #[inline]
    pub fn kernel(self, row: usize, rows: usize) -> DotKernel {
        debug_assert!(row < rows);
        match self {
            MatmulPath::VecDot => DotKernel::VecDot,
            MatmulPath::Tiled if rows >= TILED_MIN_BATCH => DotKernel::Tiled,
            MatmulPath::Tiled => DotKernel::VecDot,
            MatmulPath::Repacked if row < rows - rows % 4 => DotKernel::Gemm,
            MatmulPath::Repacked => DotKernel::Gemv,
        }
    }

    /// The kernel for a row of a long prompt, whatever it is batched with:
    /// the one ggml runs for most rows of a large batch.
    #[inline]
    pub fn prompt_kernel(self) -> DotKernel {
        match self {
            MatmulPath::VecDot => DotKernel::VecDot,
            MatmulPath::Tiled => DotKernel::Tiled,
            MatmulPath::Repacked => DotKernel::Gemm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacks_q4_0_and_q4_k_with_rows_multiple_of_8() {
        use GgmlType::*;
        assert_eq!(matmul_path(Q4K, 896), MatmulPath::Repacked);
        assert_eq!(matmul_path(Q4_0, 8), MatmulPath::Repacked);
        assert_eq!(matmul_path(Q4K, 12), MatmulPath::Tiled);
        for ty in [Q2K, Q3K, Q5K, Q6K] {
            assert_eq!(matmul_path(ty, 896), MatmulPath::Tiled, "{ty}");
        }
        for ty in [Q4_1, Q5_0, Q5_1, Q8_0, F16, F32, Bf16] {
            assert_eq!(matmul_path(ty, 896), MatmulPath::VecDot, "{ty}");
        }
    }

    #[test]
    fn tiled_takes_whole_batches_of_eight_or_more_rows() {
        use DotKernel::*;
        assert_eq!(MatmulPath::Tiled.kernel(6, 7), VecDot);
        assert_eq!(MatmulPath::Tiled.kernel(0, 8), Tiled);
        assert_eq!(MatmulPath::Tiled.kernel(63, 64), Tiled);
    }

    #[test]
    fn gemm_takes_whole_groups_of_four_rows() {
        let kinds = |n: usize| -> Vec<DotKernel> {
            (0..n).map(|i| MatmulPath::Repacked.kernel(i, n)).collect()
        };
        use DotKernel::*;
        assert_eq!(kinds(3), [Gemv; 3]);
        assert_eq!(kinds(5), [Gemm, Gemm, Gemm, Gemm, Gemv]);
        assert_eq!(kinds(8), [Gemm; 8]);
        assert_eq!(MatmulPath::VecDot.kernel(0, 4), VecDot);
    }
}
