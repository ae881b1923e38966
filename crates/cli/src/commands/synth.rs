//! `quarrel synth`: write a GGUF with deterministic pseudo-random weights
//! at a real model's shapes (see quarrel_model::synth).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use quarrel_model::synth::{self, SynthType};

#[derive(Args, Clone, Debug)]
pub struct SynthArgs {
    /// Shapes to use: llama3-8b, qwen2.5-7b, mistral-7b, qwen2.5-0.5b, or
    /// tiny-{llama,llama3,mistral,phi3,qwen2,gemma3}.
    #[arg(long)]
    pub preset: String,
    /// Block type of the matrices (q4_0, q8_0, q4_k, f16, …) or q4_k_m.
    #[arg(long = "type", default_value = "q8_0")]
    pub ty: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let spec = synth::preset(&args.preset).ok_or_else(|| {
        anyhow!(
            "unknown preset {:?} (known: {})",
            args.preset,
            synth::PRESETS.join(", ")
        )
    })?;
    let ty = SynthType::parse(&args.ty)
        .ok_or_else(|| anyhow!("unknown or unsupported weight type {:?}", args.ty))?;
    let file = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = BufWriter::with_capacity(1 << 22, file);
    synth::write(&spec, ty, args.seed, &mut out)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}
