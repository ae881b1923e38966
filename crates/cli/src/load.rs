//! Finding, opening and loading a model, shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quarrel_cpu::CpuBackend;
use quarrel_gguf::GgufFile;
use quarrel_model::Model;
use quarrel_tokenizer::Tokenizer;

/// The model that `scripts/fetch-models.sh` fetches first.
pub const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The model cache: $QUARREL_MODELS, else ~/.cache/quarrel/models.
pub fn model_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUARREL_MODELS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("quarrel").join("models")
}

/// `-m` if given, else the default model in the cache.
pub fn resolve_model(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    let p = model_cache().join(DEFAULT_MODEL_FILE);
    if !p.exists() {
        bail!(
            "no model given (-m) and the default model {} is missing: run scripts/fetch-models.sh",
            p.display()
        );
    }
    Ok(p)
}

pub struct Loaded {
    pub file: GgufFile,
    pub model: Model<CpuBackend>,
    pub tokenizer: Tokenizer,
}

pub fn open(path: &Path) -> Result<GgufFile> {
    Ok(GgufFile::open(path)?)
}

pub fn load(path: &Path, threads: usize) -> Result<Loaded> {
    let file = open(path)?;
    let model = Model::load(&file, CpuBackend::new(threads))
        .with_context(|| format!("{}: cannot load the model", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
    Ok(Loaded {
        file,
        model,
        tokenizer,
    })
}
