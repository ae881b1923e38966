//! `quarrel serve`: the OpenAI-compatible HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use quarrel_engine::{EngineConfig, EngineHandle, Metrics};
use quarrel_model::Backend;
use quarrel_server::{Loaded, Server};
use quarrel_tokenizer::chat::ChatTemplate;

use crate::load;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// GGUF model file (default: the model fetched by scripts/fetch-models.sh).
    #[arg(short = 'm', long)]
    pub model: Option<std::path::PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 endpoints.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Where to run: auto (a CUDA GPU if one is present, else the CPU),
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: load::Device,
    /// Positions per sequence, prompt and completion (capped by the model's).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Memory for the KV cache, in MiB; it sets the number of blocks.
    #[arg(long, default_value_t = 1024)]
    pub kv_mem: usize,
    /// Positions per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Sequences evaluated together at most.
    #[arg(short = 'n', long = "parallel", default_value_t = 32)]
    pub max_seqs: usize,
    /// Rows per forward pass at most (decode rows plus prompt chunks).
    #[arg(long, default_value_t = 256)]
    pub batch_tokens: usize,
    /// Prompt tokens per chunk.
    #[arg(long, default_value_t = 128)]
    pub prefill_chunk: usize,
    /// Requests waiting to start at most; past it, 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let path = load::resolve_model(args.model.as_deref())?;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("bad address {}:{}", args.host, args.port))?;
    let model_id = path
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let metrics = Arc::new(Metrics::default());
    let server = Server::new(model_id, args.api_key.clone(), metrics.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "quarrel serve: listening on http://{addr} (loading {})",
            path.display()
        );
        let (s, a) = (server.clone(), args.clone());
        let loading = tokio::task::spawn_blocking(move || -> Result<()> {
            let loaded = load::with_model(
                &path,
                a.device,
                a.threads,
                StartEngine { args: &a, metrics },
            )?;
            s.set_loaded(loaded);
            Ok(())
        });
        let grace = Duration::from_secs_f64(args.shutdown_timeout.max(0.0));
        let serving = quarrel_server::serve(listener, server.clone(), shutdown_signal(), grace);
        tokio::pin!(serving);
        tokio::select! {
            loaded = loading => {
                loaded??;
                eprintln!("quarrel serve: ready");
                serving.await?;
            }
            served = &mut serving => served?,
        }
        Ok::<_, anyhow::Error>(())
    })?;
    if let Some(l) = server.loaded() {
        l.engine.shutdown();
    }
    eprintln!("quarrel serve: stopped");
    Ok(())
}

/// Loads the model and starts the engine thread on it.
struct StartEngine<'a> {
    args: &'a ServeArgs,
    metrics: Arc<Metrics>,
}

impl load::WithModel for StartEngine<'_> {
    type Output = Loaded;

    fn run<B: Backend + 'static>(self, loaded: load::Loaded<B>) -> Result<Loaded> {
        start_engine(self.args, self.metrics, loaded)
    }
}

fn start_engine<B: Backend + 'static>(
    a: &ServeArgs,
    metrics: Arc<Metrics>,
    loaded: load::Loaded<B>,
) -> Result<Loaded> {
    let c = &loaded.model.config;
    eprintln!("quarrel serve: {}", loaded.model.backend.describe());
    let template = ChatTemplate::from_gguf(loaded.file.metadata(), c.arch.name())
        .context("cannot build the chat template")?;
    let slot_bytes = loaded.model.kv_slot_bytes();
    let kv_blocks = (a.kv_mem << 20) / (slot_bytes * a.block_size.max(1));
    anyhow::ensure!(
        kv_blocks > 0,
        "--kv-mem {} MiB holds no block of {} positions",
        a.kv_mem,
        a.block_size
    );
    let n_ctx = if c.n_ctx_train > 0 {
        a.ctx_size.min(c.n_ctx_train)
    } else {
        a.ctx_size
    };
    let cfg = EngineConfig {
        n_ctx,
        kv_blocks,
        block_size: a.block_size.max(1),
        max_seqs: a.max_seqs.max(1),
        max_batch_tokens: a.batch_tokens.max(a.prefill_chunk).max(a.max_seqs),
        prefill_chunk: a.prefill_chunk.max(1),
        max_queue: a.max_queue,
    };
    eprintln!(
        "quarrel serve: {} KV blocks of {} positions ({} MiB), {} per sequence, {} sequences",
        cfg.kv_blocks,
        cfg.block_size,
        a.kv_mem,
        cfg.max_positions(),
        cfg.max_seqs
    );
    let tokenizer = Arc::new(loaded.tokenizer);
    let engine = EngineHandle::start(loaded.model, tokenizer.clone(), cfg, metrics);
    Ok(Loaded {
        engine,
        tokenizer,
        template,
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("quarrel serve: shutting down; finishing in-flight requests");
}
