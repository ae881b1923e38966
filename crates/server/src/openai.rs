//! OpenAI's wire format: request bodies, and the JSON of responses and
//! stream chunks, for `/v1/chat/completions` and `/v1/completions`.

use quarrel_engine::{Finish, FinishReason, GenParams, TokenLogprob};
use quarrel_model::SamplerConfig;
use quarrel_tokenizer::Tokenizer;
use serde::Deserialize;
use serde_json::{json, Value};

/// A string or a list of them (`stop`, `prompt`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(OneOrMany),
    Tokens(Vec<u32>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The parameters both endpoints share.
#[derive(Deserialize, Default)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<OneOrMany>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    /// How many most likely tokens to list per position (0: the chosen one's only).
    pub logprobs: Option<u32>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

const MAX_TOP_LOGPROBS: u32 = 20;

impl Sampling {
    /// Checks the ranges and builds the engine's parameters; `logprobs`
    /// as the endpoint asked for them.
    pub fn params(&self, logprobs: Option<u32>, max_new: usize) -> Result<GenParams, String> {
        let in_range = |name: &str, v: Option<f32>, lo: f32, hi: f32| match v {
            Some(x) if !(lo..=hi).contains(&x) => {
                Err(format!("{name} must be between {lo} and {hi}, got {x}"))
            }
            _ => Ok(()),
        };
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("top_p", self.top_p, 0.0, 1.0)?;
        in_range("min_p", self.min_p, 0.0, 1.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        in_range("repeat_penalty", self.repeat_penalty, 0.0, 10.0)?;
        if self.n.is_some_and(|n| n != 1) {
            return Err("only n = 1 is supported".into());
        }
        if logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(format!(
                "at most {MAX_TOP_LOGPROBS} top log-probabilities per token"
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => return Err("max_tokens must be at least 1".into()),
            Some(n) => (n as usize).min(max_new),
            None => max_new,
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) if v.len() > 4 => {
                return Err("at most 4 stop sequences".into())
            }
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(GenParams {
            max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature.unwrap_or(1.0),
                top_k: self.top_k.unwrap_or(0) as usize,
                top_p: self.top_p.unwrap_or(1.0),
                min_p: self.min_p.unwrap_or(0.0),
                repeat_penalty: self.repeat_penalty.unwrap_or(1.0),
                presence_penalty: self.presence_penalty.unwrap_or(0.0),
                frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
                penalty_last_n: 64,
                seed,
            },
            stop,
            logprobs: logprobs.map(|k| k as usize),
            ignore_eos: self.ignore_eos,
        })
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

impl Content {
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .map(|p| p.text.as_str())
                .collect(),
        }
    }
}

pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        // vLLM's word for a request the server gave up on.
        FinishReason::Cancelled => "abort",
    }
}

pub fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

/// The two endpoints' shapes of a response.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

impl Kind {
    pub fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl-",
            Kind::Completion => "cmpl-",
        }
    }
}

/// Log-probabilities of generated tokens, gathered for one response or
/// one chunk, in the endpoint's format.
pub struct Logprobs {
    kind: Kind,
    entries: Vec<(u32, TokenLogprob)>,
    /// Completions: the text offset of the next token.
    offset: usize,
}

impl Logprobs {
    pub fn new(kind: Kind) -> Self {
        Logprobs {
            kind,
            entries: Vec::new(),
            offset: 0,
        }
    }

    pub fn push(&mut self, id: u32, lp: TokenLogprob) {
        self.entries.push((id, lp));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The JSON of what was pushed since the last call; null if nothing was.
    pub fn take(&mut self, tok: &Tokenizer) -> Value {
        if self.entries.is_empty() {
            return Value::Null;
        }
        let piece = |id: u32| String::from_utf8_lossy(tok.token_to_piece(id)).into_owned();
        let bytes = |id: u32| tok.token_to_piece(id).to_vec();
        let entries = std::mem::take(&mut self.entries);
        match self.kind {
            Kind::Chat => json!({
                "content": entries.iter().map(|(id, lp)| json!({
                    "token": piece(*id),
                    "logprob": lp.logprob,
                    "bytes": bytes(*id),
                    "top_logprobs": lp.top.iter().map(|&(t, l)| json!({
                        "token": piece(t), "logprob": l, "bytes": bytes(t),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
            Kind::Completion => {
                let mut offsets = Vec::with_capacity(entries.len());
                for (id, _) in &entries {
                    offsets.push(self.offset);
                    self.offset += piece(*id).len();
                }
                json!({
                    "tokens": entries.iter().map(|(id, _)| piece(*id)).collect::<Vec<_>>(),
                    "token_logprobs": entries.iter().map(|(_, lp)| lp.logprob).collect::<Vec<_>>(),
                    "top_logprobs": entries.iter().map(|(_, lp)| {
                        lp.top.iter().map(|&(t, l)| (piece(t), json!(l))).collect::<serde_json::Map<_, _>>()
                    }).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
        }
    }
}
