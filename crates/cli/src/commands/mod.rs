pub mod bench;
pub mod chat;
pub mod inspect;
pub mod logits;
pub mod perplexity;
pub mod run;
pub mod serve;
pub mod synth;
pub mod tokenize;

use clap::{Args, ValueEnum};
use quarrel_model::SamplerConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Sampling flags, named as llama.cpp names them.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens below M times the most likely token's probability.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Tokens the penalties look back over.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long, short = 's', default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

/// Flags of every command that evaluates a model.
#[derive(Args, Clone, Debug)]
pub struct EngineArgs {
    /// GGUF model file (default: the model fetched by scripts/fetch-models.sh).
    #[arg(short = 'm', long)]
    pub model: Option<std::path::PathBuf>,
    /// Threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Tokens per forward pass while reading a prompt.
    #[arg(short = 'u', long = "ubatch-size", default_value_t = 512)]
    pub ubatch: usize,
    /// Where to run: auto (a CUDA GPU if one is present, else the CPU),
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: crate::load::Device,
}
