//! What a client asks the engine for, and what it hears back.

use quarrel_model::SamplerConfig;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Some(n): report each token's log-probability and the n most likely.
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
}

pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenParams,
    /// Closed by the receiver when the client goes away: the engine then
    /// frees the sequence at its next step.
    pub events: UnboundedSender<Event>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One generated token and the text it releases (possibly empty: an
    /// unfinished character, or text that may begin a stop string).
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Text released at the end (a held tail, an unfinished character).
    Text(String),
    Done(Finish),
    /// The engine failed; the request is over.
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// max_tokens, or the context (or the whole KV cache) is full.
    Length,
    /// The server is shutting down and stopped waiting.
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens found in the prefix cache.
    pub cached_tokens: usize,
}
