//! CPU kernels, one file per operation.

pub mod activation;
pub mod attention;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm;
/// The tiled prompt matmul is x86-only: elsewhere it never applies.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod gemm {
    pub const GEMM_MIN_TOKENS: usize = usize::MAX;

    pub fn available() -> bool {
        false
    }

    pub fn applies(_tokens: usize) -> bool {
        false
    }
}
pub mod ggml_math;
pub mod matmul;
pub mod norm;
pub mod rope;
#[cfg(target_arch = "x86_64")]
mod x86;
