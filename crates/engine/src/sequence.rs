//! One request's state inside the engine: its tokens, where its KV rows
//! live, its sampler, and the text it has released.

use std::sync::Arc;
use std::time::Instant;

use quarrel_model::{Kernels, Sampler};
use quarrel_tokenizer::{StreamDecoder, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::request::{Event, GenParams};

pub struct Sequence {
    /// Arrival order: preemption takes the newest first.
    pub id: u64,
    /// The prompt, then every generated token.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// The kernels of the prompt's rows: the prompt kernels for a long
    /// prompt, the token kernels for a short one
    /// (`Backend::prompt_kernels_min_rows`). The choice depends on the
    /// request alone, not on how its prompt is chunked or batched.
    pub prompt_kernels: Kernels,
    /// Positions whose K and V are in the cache.
    pub n_computed: usize,
    pub blocks: Vec<u32>,
    /// The cache slot of each position the blocks cover.
    pub slots: Vec<u32>,
    /// Prefix hashes of the full blocks registered so far.
    pub hashes: Vec<u64>,
    /// Prompt tokens taken from the prefix cache at first admission.
    pub cached_tokens: usize,
    /// Whether it has started (a preempted sequence waits again).
    pub admitted: bool,
    pub params: GenParams,
    pub sampler: Sampler,
    pub events: UnboundedSender<Event>,
    pub arrival: Instant,
    pub last_token: Option<Instant>,
    text: TextOut,
}

impl Sequence {
    pub fn new(
        id: u64,
        prompt: Vec<u32>,
        prompt_kernels: Kernels,
        params: GenParams,
        sampler: Sampler,
        events: UnboundedSender<Event>,
        tokenizer: Arc<Tokenizer>,
    ) -> Self {
        let prompt_len = prompt.len();
        let mut tokens = prompt;
        tokens.reserve(params.max_tokens);
        Sequence {
            id,
            tokens,
            prompt_len,
            prompt_kernels,
            n_computed: 0,
            blocks: Vec::new(),
            slots: Vec::new(),
            hashes: Vec::new(),
            cached_tokens: 0,
            admitted: false,
            text: TextOut::new(tokenizer, params.stop.clone()),
            params,
            sampler,
            events,
            arrival: Instant::now(),
            last_token: None,
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens still to evaluate before the next one can be sampled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.n_computed
    }

    pub fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// The text `token` releases, and whether it completed a stop string
    /// (the text is then what came before the stop string).
    pub fn push_text(&mut self, token: u32) -> (String, bool) {
        self.text.push(token)
    }

    /// Whatever text is still held, at the end of generation.
    pub fn flush_text(&mut self) -> String {
        self.text.flush()
    }
}

/// Incremental detokenization with stop strings: text that could be the
/// start of a stop string is held until it is known not to be one.
struct TextOut {
    decoder: StreamDecoder<Arc<Tokenizer>>,
    stop: Vec<String>,
    held: String,
    /// A stop string was found: nothing more is released.
    stopped: bool,
}

impl TextOut {
    fn new(tokenizer: Arc<Tokenizer>, stop: Vec<String>) -> Self {
        TextOut {
            decoder: StreamDecoder::new(tokenizer),
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    fn push(&mut self, token: u32) -> (String, bool) {
        let piece = self.decoder.push(token);
        self.held.push_str(&piece);
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            self.stopped = true;
            return (std::mem::take(&mut self.held), true);
        }
        // The longest tail that begins some stop string stays held.
        let keep = self
            .stop
            .iter()
            .map(|s| longest_tail_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    fn flush(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let rest = self.decoder.finish();
        self.held.push_str(&rest);
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of
/// `stop` (cut at a character boundary of `text`).
fn longest_tail_prefix(text: &str, stop: &str) -> usize {
    let max = (stop.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_that_may_begin_a_stop_string_are_held() {
        assert_eq!(longest_tail_prefix("hello wor", "world"), 3);
        assert_eq!(longest_tail_prefix("hello", "world"), 0);
        assert_eq!(longest_tail_prefix("ab", "abc"), 2);
        assert_eq!(
            longest_tail_prefix("abc", "abc"),
            0,
            "whole matches are found by find"
        );
        assert_eq!(longest_tail_prefix("xé", "éa"), 2);
    }
}
