//! The model: architecture configs read from GGUF metadata, one forward
//! pass over a narrow backend trait, the sampler, and single-sequence
//! sessions (prompt, then token by token) on top.

pub mod backend;
pub mod config;
pub mod model;
pub mod sampler;
pub mod session;
pub mod synth;
pub mod weights;

pub use backend::{
    AttnParams, Backend, Kernels, RopeParams, RowGroup, SeqRows, TILED_ATTENTION_MIN_ROWS,
};
pub use config::{Arch, FfnActivation, ModelConfig, RopeStyle};
pub use model::{ActivationSink, Batch, Model, Scratch};
pub use sampler::{Sampler, SamplerConfig};
pub use session::Session;

use quarrel_gguf::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown architecture {0:?} (supported: llama, mistral, qwen2, gemma3, phi3)")]
    UnknownArch(String),
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {0:?} has an unusable value")]
    BadKey(String),
    #[error("invalid hyperparameters: {0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {name:?} has block type {ty}, which this engine cannot compute with")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("bad batch: {0}")]
    Batch(String),
    #[error("context full: {needed} positions needed, the context holds {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("backend: {0}")]
    Backend(String),
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    BadToken { token: u32, n_vocab: usize },
}
