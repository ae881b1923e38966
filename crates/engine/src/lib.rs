//! The serving engine: many requests at once over one model, by continuous
//! batching (`engine.rs`) over a paged KV cache with prefix caching
//! (`kv_blocks.rs`). It runs on its own thread; [`EngineHandle`] submits
//! requests and each request hears back through its own channel.

mod engine;
mod kv_blocks;
mod metrics;
mod request;
mod sequence;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use quarrel_model::{Backend, Model};
use quarrel_tokenizer::Tokenizer;

pub use engine::EngineConfig;
pub use kv_blocks::BlockPool;
pub use metrics::Metrics;
pub use request::{Event, Finish, FinishReason, GenParams, Request, TokenLogprob};

use engine::{Engine, Shared};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens; this server holds at most {max} per sequence (prompt and completion together)")]
    PromptTooLong { tokens: usize, max: usize },
    #[error("the waiting queue is full ({0} requests)")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
}

pub struct EngineHandle {
    tx: Mutex<Option<Sender<Request>>>,
    shared: Arc<Shared>,
    cfg: EngineConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EngineHandle {
    /// Starts the engine thread.
    pub fn start<B: Backend + 'static>(
        model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        cfg: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        assert!(cfg.max_batch_tokens >= cfg.prefill_chunk.max(cfg.max_seqs));
        let shared = Arc::new(Shared {
            metrics,
            queued: AtomicUsize::new(0),
            abort: AtomicBool::new(false),
        });
        let (tx, rx) = channel();
        let engine = Engine::new(model, tokenizer, cfg.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("quarrel-engine".into())
            .spawn(move || engine.run(rx))
            .expect("spawn the engine thread");
        EngineHandle {
            tx: Mutex::new(Some(tx)),
            shared,
            cfg,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Queues a request, or says why it cannot be served.
    pub fn submit(&self, req: Request) -> Result<(), SubmitError> {
        let max = self.cfg.max_positions();
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.prompt.len() >= max {
            return Err(SubmitError::PromptTooLong {
                tokens: req.prompt.len(),
                max,
            });
        }
        let queued = &self.shared.queued;
        if queued.fetch_add(1, Relaxed) >= self.cfg.max_queue {
            queued.fetch_sub(1, Relaxed);
            return Err(SubmitError::QueueFull(self.cfg.max_queue));
        }
        let tx = self.tx.lock().expect("engine sender");
        let sent = tx.as_ref().is_some_and(|tx| tx.send(req).is_ok());
        if !sent {
            queued.fetch_sub(1, Relaxed);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Finishes every request now (their streams end "cancelled").
    pub fn abort_all(&self) {
        self.shared.abort.store(true, Relaxed);
    }

    /// Accepts no more requests and waits for the engine to finish the
    /// ones it has.
    pub fn shutdown(&self) {
        self.tx.lock().expect("engine sender").take();
        if let Some(t) = self.thread.lock().expect("engine thread").take() {
            let _ = t.join();
        }
    }
}
