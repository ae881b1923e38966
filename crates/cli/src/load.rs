//! Finding, opening and loading a model, shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quarrel_cpu::CpuBackend;
use quarrel_cuda::CudaBackend;
use quarrel_gguf::GgufFile;
use quarrel_model::{Backend, Model};
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

/// Where a model runs (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The first CUDA device if there is one, else the CPU (saying why).
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("{s:?}: expected auto, cpu, cuda or cuda:N")),
        }
    }
}

pub struct Loaded<B: Backend> {
    pub file: GgufFile,
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
}

/// What a command does with a loaded model, for any backend.
pub trait WithModel {
    type Output;
    fn run<B: Backend + 'static>(self, loaded: Loaded<B>) -> Result<Self::Output>;
}

pub fn open(path: &Path) -> Result<GgufFile> {
    Ok(GgufFile::open(path)?)
}

/// Loads the model at `path` on `device` and hands it to `cmd`.
pub fn with_model<W: WithModel>(
    path: &Path,
    device: Device,
    threads: usize,
    cmd: W,
) -> Result<W::Output> {
    let cuda = match device {
        Device::Cpu => Err(None),
        Device::Cuda(n) => {
            Ok(CudaBackend::new(n).with_context(|| format!("cannot use CUDA device {n}"))?)
        }
        Device::Auto => CudaBackend::new(0).map_err(Some),
    };
    match cuda {
        Ok(b) => cmd.run(load(path, b)?),
        Err(why) => {
            // Commands print the backend's description, which says why.
            let mut cpu = CpuBackend::new(threads);
            if let Some(e) = why {
                cpu = cpu.with_fallback_reason(e.to_string());
            }
            cmd.run(load(path, cpu)?)
        }
    }
}

pub fn load<B: Backend>(path: &Path, backend: B) -> Result<Loaded<B>> {
    let file = open(path)?;
    let model = Model::load(&file, backend)
        .with_context(|| format!("{}: cannot load the model", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
    Ok(Loaded {
        file,
        model,
        tokenizer,
    })
}
