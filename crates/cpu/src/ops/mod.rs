//! CPU kernels, one file per operation.

pub mod activation;
pub mod attention;
pub mod ggml_math;
pub mod matmul;
pub mod norm;
pub mod rope;
#[cfg(target_arch = "x86_64")]
mod x86;
