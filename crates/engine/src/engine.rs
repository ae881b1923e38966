//! The engine loop: continuous batching over the paged KV cache.
//!
//! Every step makes one forward pass over the next token of each running
//! sequence plus chunks of prompts (chunked prefill), up to a token budget.
//! Rows are computed with per-row kernels (`Kernels::PromptRow` for the
//! tokens of long prompts, `Kernels::TokenRow` for generated ones and short
//! prompts: `Backend::prompt_kernels_min_rows`), so a row's numbers do
//! not depend on what shares its pass, on how its prompt was chunked, or
//! on what the prefix cache supplied: batched and lone requests give the
//! same tokens. When a decode step finds no free block, the newest sequence
//! is preempted: its blocks are released (full ones stay in the prefix
//! cache) and it waits at the head of the queue to be recomputed, which
//! gives the same bits again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use quarrel_model::sampler::{log_softmax, top_logprobs};
use quarrel_model::{Backend, Batch, Kernels, Model, ModelError, Sampler, Scratch, SeqRows};
use quarrel_tokenizer::Tokenizer;

use crate::kv_blocks::BlockPool;
use crate::metrics::Metrics;
use crate::request::{Event, Finish, FinishReason, Request, TokenLogprob};
use crate::sequence::Sequence;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Positions per sequence, prompt and generation together.
    pub n_ctx: usize,
    pub kv_blocks: usize,
    pub block_size: usize,
    /// Sequences evaluated together at most.
    pub max_seqs: usize,
    /// Rows of one forward pass at most (at least `prefill_chunk` and `max_seqs`).
    pub max_batch_tokens: usize,
    pub prefill_chunk: usize,
    /// Requests accepted but not yet started, at most.
    pub max_queue: usize,
}

impl EngineConfig {
    /// Positions one sequence can reach: its context, or the whole cache.
    pub fn max_positions(&self) -> usize {
        self.n_ctx.min(self.kv_blocks * self.block_size)
    }
}

/// State shared between the engine thread and the handles.
pub(crate) struct Shared {
    pub metrics: Arc<Metrics>,
    /// Requests submitted and not yet started.
    pub queued: AtomicUsize,
    /// Finish every sequence now (shutdown past its grace period).
    pub abort: AtomicBool,
}

/// One sequence's part of a step.
#[derive(Clone, Copy)]
struct Planned {
    /// Index into `running`.
    seq: usize,
    rows: usize,
}

pub(crate) struct Engine<B: Backend> {
    model: Model<B>,
    tokenizer: Arc<Tokenizer>,
    cfg: EngineConfig,
    cache: B::KvCache,
    scratch: Scratch<B>,
    blocks: BlockPool,
    waiting: VecDeque<Sequence>,
    /// Oldest first (from the start of each schedule; admissions append).
    running: Vec<Sequence>,
    shared: Arc<Shared>,
    next_id: u64,
    /// This step, in row order.
    plan: Vec<Planned>,
    tokens: Vec<u32>,
    positions: Vec<u32>,
    outputs: Vec<usize>,
    logits: Vec<f32>,
    /// The outputs' tokens as the backend picked them, where every
    /// sequence of the step decodes greedily and wants no log-probabilities
    /// (then the logits stay on the device); else empty.
    picked: Vec<u32>,
    logprobs: Vec<f64>,
    /// The batch's sequence entries, kept for their allocation only (see
    /// [`recycle`]): empty between steps.
    seq_rows: Vec<SeqRows<'static>>,
    /// Sequences a step finished: (index into `running`, why).
    finished: Vec<(usize, FinishReason)>,
}

impl<B: Backend> Engine<B> {
    pub fn new(
        model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        cfg: EngineConfig,
        shared: Arc<Shared>,
    ) -> Self {
        let cache = model.new_kv_cache(cfg.kv_blocks * cfg.block_size);
        let scratch = model.new_scratch(cfg.max_batch_tokens, cfg.max_seqs);
        let blocks = BlockPool::new(cfg.kv_blocks, cfg.block_size);
        let n_vocab = model.config.n_vocab;
        let engine = Engine {
            model,
            tokenizer,
            cache,
            scratch,
            blocks,
            waiting: VecDeque::new(),
            running: Vec::with_capacity(cfg.max_seqs),
            shared,
            next_id: 0,
            plan: Vec::with_capacity(cfg.max_seqs),
            tokens: Vec::with_capacity(cfg.max_batch_tokens),
            positions: Vec::with_capacity(cfg.max_batch_tokens),
            outputs: Vec::with_capacity(cfg.max_seqs),
            logits: Vec::with_capacity(cfg.max_seqs * n_vocab),
            picked: Vec::with_capacity(cfg.max_seqs),
            logprobs: Vec::with_capacity(n_vocab),
            seq_rows: Vec::with_capacity(2 * cfg.max_seqs),
            finished: Vec::with_capacity(cfg.max_seqs),
            cfg,
        };
        engine.publish();
        engine
    }

    /// Runs until every handle is gone and every sequence has finished.
    pub fn run(mut self, rx: Receiver<Request>) {
        let mut open = true;
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(req) => self.accept(req),
                    Err(_) => return,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(req) => self.accept(req),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if let Err(e) = self.step() {
                // A bug, not bad input: requests are validated on submission.
                eprintln!("engine: forward pass failed: {e}");
                for mut seq in self.take_all() {
                    let _ = seq.events.send(Event::Failed(e.to_string()));
                    self.release_blocks(&mut seq);
                }
            }
            self.publish();
        }
    }

    fn accept(&mut self, req: Request) {
        let n_vocab = self.model.config.n_vocab;
        let mut sampler = Sampler::new(req.params.sampler, n_vocab);
        for &t in &req.prompt {
            sampler.accept(t);
        }
        self.next_id += 1;
        let prompt_kernels = if req.prompt.len() >= self.model.backend.prompt_kernels_min_rows() {
            Kernels::PromptRow
        } else {
            Kernels::TokenRow
        };
        let seq = Sequence::new(
            self.next_id,
            req.prompt,
            prompt_kernels,
            req.params,
            sampler,
            req.events,
            self.tokenizer.clone(),
        );
        self.waiting.push_back(seq);
    }

    /// One scheduling decision and one forward pass.
    fn step(&mut self) -> Result<(), ModelError> {
        self.drop_cancelled();
        if self.shared.abort.load(Relaxed) {
            self.abort_all();
            return Ok(());
        }
        self.schedule();
        if self.plan.is_empty() {
            // Prompts stuck mid-way, each waiting for blocks another holds:
            // the newest gives way.
            if let Some(newest) = self.running.len().checked_sub(1) {
                self.preempt(newest);
            }
            return Ok(());
        }
        self.forward()?;
        self.sample();
        Ok(())
    }

    fn drop_cancelled(&mut self) {
        let blocks = &mut self.blocks;
        // Keeps a live sequence; releases a cancelled one's blocks.
        let mut live = |seq: &Sequence| {
            if seq.is_cancelled() {
                seq.blocks.iter().for_each(|&b| blocks.release(b));
                return false;
            }
            true
        };
        self.running.retain(|s| live(s));
        self.waiting.retain(|s| {
            let keep = live(s);
            if !keep && !s.admitted {
                self.shared.queued.fetch_sub(1, Relaxed);
            }
            keep
        });
    }

    /// Every sequence, running or waiting, out of the engine.
    fn take_all(&mut self) -> Vec<Sequence> {
        for seq in &self.waiting {
            if !seq.admitted {
                self.shared.queued.fetch_sub(1, Relaxed);
            }
        }
        self.running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect()
    }

    fn abort_all(&mut self) {
        for mut seq in self.take_all() {
            self.finish(&mut seq, FinishReason::Cancelled);
        }
    }

    /// Fills `plan`: decode rows first (oldest first, preempting the newest
    /// when blocks run out), then prompt chunks (or recomputation) of
    /// running sequences, then newly admitted ones, while the token budget
    /// lasts.
    fn schedule(&mut self) {
        self.plan.clear();
        // Resumed sequences were appended last: back to arrival order.
        self.running.sort_unstable_by_key(|s| s.id);
        let mut budget = self.cfg.max_batch_tokens;
        let chunk = self.cfg.prefill_chunk;
        let is_decode = |s: &Sequence| s.pending() == 1 && s.n_computed > 0;
        let mut i = 0;
        while i < self.running.len() {
            if is_decode(&self.running[i]) {
                loop {
                    if self.reserve(i, 1) {
                        self.plan.push(Planned { seq: i, rows: 1 });
                        budget -= 1;
                        break;
                    }
                    let victim = self.running.len() - 1;
                    self.preempt(victim);
                    if victim == i {
                        break;
                    }
                }
            }
            i += 1;
        }
        for i in 0..self.running.len() {
            if is_decode(&self.running[i]) {
                continue;
            }
            let rows = self.running[i].pending().min(chunk).min(budget);
            if rows > 0 && self.reserve(i, rows) {
                self.plan.push(Planned { seq: i, rows });
                budget -= rows;
            }
        }
        while self.running.len() < self.cfg.max_seqs && budget > 0 {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            self.attach_cached_prefix(&mut seq);
            let rows = seq.pending().min(chunk).min(budget);
            let pos = self.running.len();
            self.running.push(seq);
            if !self.reserve(pos, rows) {
                let mut seq = self.running.pop().expect("just pushed");
                self.release_blocks(&mut seq);
                self.waiting.push_front(seq);
                break;
            }
            let seq = &mut self.running[pos];
            if !seq.admitted {
                seq.admitted = true;
                seq.cached_tokens = seq.n_computed.min(seq.prompt_len);
                self.shared.queued.fetch_sub(1, Relaxed);
                let m = &self.shared.metrics;
                m.prompt_tokens.fetch_add(seq.prompt_len as u64, Relaxed);
                m.cached_prompt_tokens
                    .fetch_add(seq.cached_tokens as u64, Relaxed);
            }
            self.plan.push(Planned { seq: pos, rows });
            budget -= rows;
        }
    }

    /// Makes room in sequence `i`'s blocks for its next `n` positions.
    fn reserve(&mut self, i: usize, n: usize) -> bool {
        let bs = self.cfg.block_size;
        let seq = &self.running[i];
        let need = (seq.n_computed + n)
            .div_ceil(bs)
            .saturating_sub(seq.blocks.len());
        if need > self.blocks.available() {
            return false;
        }
        let seq = &mut self.running[i];
        for _ in 0..need {
            let b = self.blocks.allocate().expect("counted as available");
            seq.blocks.push(b);
            let first = b * bs as u32;
            seq.slots.extend(first..first + bs as u32);
        }
        true
    }

    /// Attaches the cached blocks of the longest cached prefix of the
    /// sequence's tokens, leaving at least one token to compute.
    fn attach_cached_prefix(&mut self, seq: &mut Sequence) {
        let bs = self.cfg.block_size;
        debug_assert!(seq.blocks.is_empty() && seq.n_computed == 0);
        for i in 0..(seq.tokens.len() - 1) / bs {
            let h = block_hash(&self.blocks, seq, i);
            let Some(b) = self.blocks.lookup(h) else {
                break;
            };
            seq.blocks.push(b);
            let first = b * bs as u32;
            seq.slots.extend(first..first + bs as u32);
            seq.hashes.push(h);
            seq.n_computed += bs;
        }
    }

    fn release_blocks(&mut self, seq: &mut Sequence) {
        for &b in &seq.blocks {
            self.blocks.release(b);
        }
        seq.blocks.clear();
        seq.slots.clear();
        seq.hashes.clear();
        seq.n_computed = 0;
    }

    /// Frees running sequence `i` and puts it first in the queue.
    fn preempt(&mut self, i: usize) {
        let mut seq = self.running.remove(i);
        self.release_blocks(&mut seq);
        self.waiting.push_front(seq);
        self.shared.metrics.preemptions.fetch_add(1, Relaxed);
    }

    fn forward(&mut self) -> Result<(), ModelError> {
        self.tokens.clear();
        self.positions.clear();
        self.outputs.clear();
        let mut seqs = recycle(std::mem::take(&mut self.seq_rows));
        for p in &self.plan {
            let seq = &self.running[p.seq];
            let start = self.tokens.len();
            let (from, n) = (seq.n_computed, p.rows);
            self.tokens.extend_from_slice(&seq.tokens[from..from + n]);
            self.positions.extend((from..from + n).map(|p| p as u32));
            if from + n == seq.tokens.len() {
                self.outputs.push(start + n - 1);
            }
            // Prompt tokens and generated ones (recomputed after a
            // preemption) take their own kernels.
            let split = seq.prompt_len.clamp(from, from + n);
            let parts = [
                (from..split, seq.prompt_kernels),
                (split..from + n, Kernels::TokenRow),
            ];
            for (range, kernels) in parts {
                if !range.is_empty() {
                    seqs.push(SeqRows {
                        rows: start + range.start - from..start + range.end - from,
                        slots: &seq.slots[..range.end],
                        kernels,
                    });
                }
            }
        }
        let batch = Batch {
            tokens: &self.tokens,
            positions: &self.positions,
            seqs: &seqs,
            outputs: &self.outputs,
        };
        let result = self
            .model
            .forward(&batch, &mut self.cache, &mut self.scratch, None);
        self.seq_rows = recycle(seqs);
        result?;
        let greedy = self.plan.iter().all(|p| {
            let seq = &self.running[p.seq];
            seq.sampler.config().is_greedy() && seq.params.logprobs.is_none()
        });
        self.picked.clear();
        if greedy {
            self.picked.resize(self.outputs.len(), 0);
            self.model.argmax_logits(&self.scratch, &mut self.picked)?;
            return Ok(());
        }
        let n_vocab = self.model.config.n_vocab;
        self.logits.resize(self.outputs.len() * n_vocab, 0.0);
        self.model.read_logits(&self.scratch, &mut self.logits)?;
        Ok(())
    }

    /// Advances every planned sequence: registers its newly full blocks,
    /// and samples the next token of those whose rows ended in an output.
    fn sample(&mut self) {
        let n_vocab = self.model.config.n_vocab;
        let bs = self.cfg.block_size;
        let limit = self.cfg.max_positions();
        let mut out = 0;
        self.finished.clear();
        for p in &self.plan {
            let seq = &mut self.running[p.seq];
            seq.n_computed += p.rows;
            while seq.hashes.len() < seq.n_computed / bs {
                let k = seq.hashes.len();
                let h = block_hash(&self.blocks, seq, k);
                self.blocks.register(seq.blocks[k], h);
                seq.hashes.push(h);
            }
            if seq.n_computed < seq.tokens.len() {
                continue;
            }
            let (token, top) = match self.picked.get(out) {
                Some(&token) => (token, None),
                None => {
                    let logits = &self.logits[out * n_vocab..(out + 1) * n_vocab];
                    let top = seq.params.logprobs.map(|k| {
                        log_softmax(logits, &mut self.logprobs);
                        top_logprobs(&self.logprobs, k)
                    });
                    (seq.sampler.sample(logits), top)
                }
            };
            out += 1;
            seq.sampler.accept(token);
            seq.tokens.push(token);
            let now = Instant::now();
            let m = &self.shared.metrics;
            m.generated_tokens.fetch_add(1, Relaxed);
            match seq.last_token {
                None => m.ttft.observe(now - seq.arrival),
                Some(t) => m.itl.observe(now - t),
            }
            seq.last_token = Some(now);
            let logprob = top.map(|top| TokenLogprob {
                logprob: self.logprobs[token as usize] as f32,
                top: top.into_iter().map(|(t, l)| (t, l as f32)).collect(),
            });
            // The end-of-generation token is counted but not shown.
            let eog = !seq.params.ignore_eos && self.tokenizer.is_eog(token);
            let stopped = !eog && {
                let (text, stopped) = seq.push_text(token);
                let _ = seq.events.send(Event::Token {
                    id: token,
                    text,
                    logprob,
                });
                stopped
            };
            let reason = if eog || stopped {
                Some(FinishReason::Stop)
            } else if seq.generated() >= seq.params.max_tokens || seq.tokens.len() >= limit {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(r) = reason {
                self.finished.push((p.seq, r));
            }
        }
        // Highest index first, so that removals leave the others in place.
        self.finished
            .sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
        for k in 0..self.finished.len() {
            let (i, reason) = self.finished[k];
            let mut seq = self.running.remove(i);
            self.finish(&mut seq, reason);
        }
    }

    /// Frees the blocks of a sequence taken out of the engine, then sends
    /// what text is left and the final event: a client that has its answer
    /// sees the gauges without it.
    fn finish(&mut self, seq: &mut Sequence, reason: FinishReason) {
        self.release_blocks(seq);
        self.publish();
        let rest = seq.flush_text();
        if !rest.is_empty() {
            let _ = seq.events.send(Event::Text(rest));
        }
        let _ = seq.events.send(Event::Done(Finish {
            reason,
            prompt_tokens: seq.prompt_len,
            completion_tokens: seq.generated(),
            cached_tokens: seq.cached_tokens,
        }));
    }

    /// Updates the gauges.
    fn publish(&self) {
        let m = &self.shared.metrics;
        m.running.store(self.running.len() as u64, Relaxed);
        m.waiting.store(self.waiting.len() as u64, Relaxed);
        let free = self.blocks.available();
        m.kv_blocks_free.store(free as u64, Relaxed);
        m.kv_blocks_used
            .store((self.blocks.n_blocks() - free) as u64, Relaxed);
        m.kv_blocks_cached
            .store(self.blocks.cached_unused() as u64, Relaxed);
    }
}

/// The prefix hash of block `k` of `seq` (its parent's hash must be in
/// `seq.hashes`). It covers which positions were prompt tokens and the
/// prompt's kernels, as those decide the kernels of each position.
fn block_hash(blocks: &BlockPool, seq: &Sequence, k: usize) -> u64 {
    let bs = blocks.block_size();
    let parent = if k == 0 { 0 } else { seq.hashes[k - 1] };
    let prompt_part = seq.prompt_len.clamp(k * bs, (k + 1) * bs) - k * bs;
    let long = u64::from(seq.prompt_kernels == Kernels::PromptRow);
    blocks.hash(
        parent,
        prompt_part as u64 | long << 32,
        &seq.tokens[k * bs..(k + 1) * bs],
    )
}

/// An empty vector of sequence entries with the allocation of `v`, for
/// another lifetime: the batch borrows the running sequences only for one
/// step, while its buffer lives on (the in-place `collect` reuses it).
fn recycle<'a>(mut v: Vec<SeqRows<'_>>) -> Vec<SeqRows<'a>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("cleared")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycling_keeps_the_allocation() {
        let slots = [0u32; 4];
        let mut v = Vec::with_capacity(8);
        v.push(SeqRows {
            rows: 0..1,
            slots: &slots,
            kernels: Kernels::TokenRow,
        });
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let r: Vec<SeqRows<'static>> = recycle(v);
        assert_eq!((r.as_ptr() as usize, r.capacity(), r.len()), (ptr, cap, 0));
    }
}
