//! One sequence over one contiguous KV cache: evaluate a prompt in
//! micro-batches, then one token at a time. Used by `run`, `chat` and
//! `perplexity`; the server's engine drives [`Model::forward`] itself.

use crate::backend::{Backend, Kernels, SeqRows};
use crate::model::{ActivationSink, Batch, Model, Scratch};
use crate::ModelError;

pub struct Session<'m, B: Backend> {
    model: &'m Model<B>,
    cache: B::KvCache,
    scratch: Scratch<B>,
    /// Slot of each position: the identity, as the cache is contiguous.
    slots: Vec<u32>,
    positions: Vec<u32>,
    outputs: Vec<usize>,
    n_past: usize,
    ubatch: usize,
}

impl<'m, B: Backend> Session<'m, B> {
    /// A session holding up to `n_ctx` positions, evaluating at most
    /// `ubatch` tokens per forward pass.
    pub fn new(model: &'m Model<B>, n_ctx: usize, ubatch: usize) -> Self {
        let ubatch = ubatch.clamp(1, n_ctx.max(1));
        Session {
            model,
            cache: model.new_kv_cache(n_ctx),
            scratch: model.new_scratch(ubatch, ubatch),
            slots: (0..n_ctx as u32).collect(),
            positions: Vec::with_capacity(ubatch),
            outputs: Vec::with_capacity(ubatch),
            n_past: 0,
            ubatch,
        }
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn n_ctx(&self) -> usize {
        self.slots.len()
    }

    /// Forgets the context (the cache is overwritten, not cleared).
    pub fn reset(&mut self) {
        self.n_past = 0;
    }

    /// Keeps the first `n` positions of the context and forgets the rest.
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    /// Evaluates `tokens` after the current context. `all_logits`: the
    /// logits of every token are appended to `logits` (perplexity);
    /// otherwise `logits` receives those of the last token only.
    pub fn eval(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
        logits: &mut Vec<f32>,
        sink: Option<&mut (dyn ActivationSink + '_)>,
    ) -> Result<(), ModelError> {
        if !all_logits {
            logits.clear();
        }
        self.run(tokens, all_logits, Some(logits), sink)
    }

    /// Evaluates `tokens` after the current context and returns the most
    /// likely next token, chosen by the backend where the logits are.
    pub fn eval_greedy(&mut self, tokens: &[u32]) -> Result<u32, ModelError> {
        self.run(tokens, false, None, None)?;
        let mut token = [0u32];
        self.model.argmax_logits(&self.scratch, &mut token)?;
        Ok(token[0])
    }

    /// [`Session::eval`], with the logits left in the scratch where
    /// `logits` is None.
    fn run(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
        mut logits: Option<&mut Vec<f32>>,
        mut sink: Option<&mut (dyn ActivationSink + '_)>,
    ) -> Result<(), ModelError> {
        let n_vocab = self.model.config.n_vocab;
        let n_ctx = self.n_ctx();
        if self.n_past + tokens.len() > n_ctx {
            return Err(ModelError::ContextFull {
                needed: self.n_past + tokens.len(),
                n_ctx,
            });
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::BadToken { token, n_vocab });
        }
        // llama-server evaluates the last 4 + n_ubatch and the last 4 tokens
        // of a prompt as batches of their own when the model has windowed
        // layers (to checkpoint their cache); batch boundaries decide which
        // kernels run, so generation follows it to stay token-for-token.
        let windowed = !all_logits && self.model.config.swa_layers.iter().any(|&w| w);
        let n = tokens.len();
        let cut = |tail: usize| (windowed && n > tail).then(|| n - tail);
        let mut batch_start = 0;
        for end in [cut(4 + self.ubatch), cut(4), Some(n)]
            .into_iter()
            .flatten()
        {
            let mut start = batch_start;
            while start < end {
                let stop = (start + self.ubatch).min(end);
                let wants_logits = all_logits || stop == n;
                self.forward_chunk(
                    &tokens[start..stop],
                    wants_logits,
                    all_logits,
                    logits.as_deref_mut(),
                    sink.as_deref_mut(),
                )?;
                start = stop;
            }
            batch_start = end;
        }
        Ok(())
    }

    /// One forward pass over `chunk`, right after the current context;
    /// appends the logits of every row (`all`) or of the last row to
    /// `logits`, when given.
    fn forward_chunk(
        &mut self,
        chunk: &[u32],
        wants_logits: bool,
        all: bool,
        logits: Option<&mut Vec<f32>>,
        sink: Option<&mut (dyn ActivationSink + '_)>,
    ) -> Result<(), ModelError> {
        let start = self.n_past;
        self.positions.clear();
        self.positions
            .extend((start..start + chunk.len()).map(|p| p as u32));
        self.outputs.clear();
        if all {
            self.outputs.extend(0..chunk.len());
        } else if wants_logits {
            self.outputs.push(chunk.len() - 1);
        }
        let seqs = [SeqRows {
            rows: 0..chunk.len(),
            slots: &self.slots[..start + chunk.len()],
            kernels: Kernels::Batch,
        }];
        let batch = Batch {
            tokens: chunk,
            positions: &self.positions,
            seqs: &seqs,
            outputs: &self.outputs,
        };
        self.model
            .forward(&batch, &mut self.cache, &mut self.scratch, sink)?;
        self.n_past += chunk.len();
        if let Some(logits) = logits.filter(|_| !self.outputs.is_empty()) {
            let old = logits.len();
            logits.resize(old + self.outputs.len() * self.model.config.n_vocab, 0.0);
            self.model.read_logits(&self.scratch, &mut logits[old..])?;
        }
        Ok(())
    }
}
