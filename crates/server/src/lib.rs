//! `quarrel serve`: an OpenAI-compatible HTTP server over the engine.
//!
//! The listener is up before the model is loaded (`/health` answers 503
//! until it is). Each completion request becomes one engine request whose
//! events stream back as server-sent events or are gathered into one
//! response; when a client goes away its response body is dropped, which
//! closes the request's channel, and the engine frees the sequence at its
//! next step.

mod openai;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use quarrel_engine::{EngineHandle, Event, Finish, Metrics, Request, SubmitError};
use quarrel_tokenizer::chat::{ChatTemplate, Message};
use quarrel_tokenizer::Tokenizer;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use openai::{ChatRequest, CompletionRequest, Kind, Logprobs, OneOrMany, Prompt, Sampling};

/// What serving needs once the model is loaded.
pub struct Loaded {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
}

pub struct Server {
    model_id: String,
    api_key: Option<String>,
    metrics: Arc<Metrics>,
    loaded: OnceLock<Loaded>,
    draining: AtomicBool,
}

impl Server {
    pub fn new(model_id: String, api_key: Option<String>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Server {
            model_id,
            api_key,
            metrics,
            loaded: OnceLock::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// The model is ready: requests are served from now on.
    pub fn set_loaded(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
    }

    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// Shutting down: new completion requests get 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Relaxed);
    }
}

pub fn router(server: Arc<Server>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(server.clone(), require_key));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint").into_response() })
        .layer(middleware::from_fn_with_state(server.clone(), count_status))
        .with_state(server)
}

/// Serves `listener` until `shutdown` resolves, then lets in-flight
/// requests finish; past `grace` after the signal the engine cancels them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let s = server.clone();
    let signal = async move {
        shutdown.await;
        s.start_draining();
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(l) = s.loaded() {
                l.engine.abort_all();
            }
        });
    };
    axum::serve(listener, router(server))
        .with_graceful_shutdown(signal)
        .await
}

/// An OpenAI-style error: `{"error": {"message", "type", ...}}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// 503 with Retry-After.
fn unavailable(message: &str) -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let body = json!({"error": {
            "message": self.message, "type": kind, "param": null, "code": self.status.as_u16(),
        }});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

async fn count_status(State(s): State<Arc<Server>>, req: HttpRequest, next: Next) -> Response {
    let r = next.run(req).await;
    s.metrics.count_request(r.status().as_u16());
    r
}

async fn require_key(State(s): State<Arc<Server>>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "invalid or missing API key").into_response();
        }
    }
    next.run(req).await
}

async fn health(State(s): State<Arc<Server>>) -> Response {
    match s.loaded() {
        Some(_) => axum::Json(json!({"status": "ok"})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn models(State(s): State<Arc<Server>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{
        "id": s.model_id, "object": "model", "created": now(), "owned_by": "quarrel",
    }]}))
    .into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

/// The loaded model, or the 503 that says why there is none.
fn ready(s: &Server) -> Result<&Loaded, ApiError> {
    if s.draining.load(Relaxed) {
        return Err(unavailable("the server is shutting down"));
    }
    s.loaded()
        .ok_or_else(|| unavailable("the model is loading"))
}

async fn chat(State(s): State<Arc<Server>>, body: Bytes) -> Response {
    let run = || -> Result<Started, ApiError> {
        let l = ready(&s)?;
        let req: ChatRequest = parse(&body)?;
        if req.messages.is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "messages must not be empty"));
        }
        let messages: Vec<Message> = req
            .messages
            .iter()
            .map(|m| {
                Message::new(
                    &m.role,
                    m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
                )
            })
            .collect();
        let text = l
            .template
            .render(&messages, true)
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
        let prompt = l.tokenizer.encode(&text, true, true);
        let logprobs = req.logprobs.then(|| req.top_logprobs.unwrap_or(0));
        start(&s, l, prompt, &req.sampling, logprobs, Kind::Chat)
    };
    match run() {
        Ok(started) => started.respond().await,
        Err(e) => e.into_response(),
    }
}

async fn completions(State(s): State<Arc<Server>>, body: Bytes) -> Response {
    let run = || -> Result<Started, ApiError> {
        let l = ready(&s)?;
        let req: CompletionRequest = parse(&body)?;
        let prompt = match &req.prompt {
            Prompt::Text(OneOrMany::One(t)) => l.tokenizer.encode(t, true, false),
            Prompt::Text(OneOrMany::Many(v)) if v.len() == 1 => {
                l.tokenizer.encode(&v[0], true, false)
            }
            Prompt::Text(OneOrMany::Many(_)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "prompt: exactly one prompt per request",
                ))
            }
            Prompt::Tokens(ids) => {
                let n_vocab = l.tokenizer.vocab_size();
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("prompt: token {bad} is outside the vocabulary of {n_vocab}"),
                    ));
                }
                ids.clone()
            }
        };
        start(&s, l, prompt, &req.sampling, req.logprobs, Kind::Completion)
    };
    match run() {
        Ok(started) => started.respond().await,
        Err(e) => e.into_response(),
    }
}

/// Submits the request and answers with a stream or, once it is done,
/// the whole response.
fn start(
    s: &Arc<Server>,
    l: &Loaded,
    prompt: Vec<u32>,
    sampling: &Sampling,
    logprobs: Option<u32>,
    kind: Kind,
) -> Result<Started, ApiError> {
    let max_new = l
        .engine
        .config()
        .max_positions()
        .saturating_sub(prompt.len());
    let params = sampling
        .params(logprobs, max_new)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let (tx, rx) = unbounded_channel();
    l.engine
        .submit(Request {
            prompt,
            params,
            events: tx,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull(_) | SubmitError::Stopped => unavailable(&e.to_string()),
            SubmitError::EmptyPrompt | SubmitError::PromptTooLong { .. } => {
                error(StatusCode::BAD_REQUEST, e.to_string())
            }
        })?;
    let reply = Reply {
        kind,
        id: format!("{}{:x}", kind.id_prefix(), rand_id()),
        created: now(),
        model: s.model_id.clone(),
        tokenizer: l.tokenizer.clone(),
        logprobs: Logprobs::new(kind),
    };
    Ok(Started {
        reply,
        rx,
        stream: sampling.stream.then(|| sampling.include_usage()),
    })
}

/// A submitted request and how to answer it.
struct Started {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    /// Some(include_usage): server-sent events.
    stream: Option<bool>,
}

impl Started {
    async fn respond(self) -> Response {
        match self.stream {
            Some(usage) => stream(self.reply, self.rx, usage),
            None => whole(self.reply, self.rx).await,
        }
    }
}

/// A fresh random id: each `RandomState` gets new keys.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

/// One response's identity and its formatting state.
struct Reply {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    tokenizer: Arc<Tokenizer>,
    logprobs: Logprobs,
}

impl Reply {
    fn envelope(&self, stream: bool, choice: Value) -> Value {
        json!({
            "id": self.id, "object": self.kind.object(stream), "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }

    /// The choice of a stream chunk (`stream`: the text as a delta) or of
    /// a whole response: its text, the log-probabilities gathered since the
    /// last one, and the finish reason on the last.
    fn choice(&mut self, text: Option<&str>, finish: Option<&Finish>, stream: bool) -> Value {
        let logprobs = self.logprobs.take(&self.tokenizer);
        let reason = finish.map(|f| openai::finish_reason(f.reason));
        match (self.kind, stream) {
            (Kind::Chat, true) => {
                let delta = text.map_or(json!({}), |t| json!({"content": t}));
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason})
            }
            (Kind::Chat, false) => json!({
                "index": 0, "message": {"role": "assistant", "content": text.unwrap_or("")},
                "logprobs": logprobs, "finish_reason": reason,
            }),
            (Kind::Completion, _) => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": reason,
            }),
        }
    }

    /// One stream chunk.
    fn chunk(&mut self, text: Option<&str>, finish: Option<&Finish>) -> Value {
        let choice = self.choice(text, finish, true);
        self.envelope(true, choice)
    }
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Server-sent events as OpenAI sends them: the role first (chat), a chunk
/// per token with text or log-probabilities, a last chunk with the finish
/// reason, usage if asked, then `data: [DONE]`.
fn stream(mut reply: Reply, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let mut head = String::new();
    if reply.kind == Kind::Chat {
        let choice = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
        head = sse(&reply.envelope(true, choice));
    }
    let mut first = Some(head);
    let events = UnboundedReceiverStream::new(rx).map(move |ev| {
        let mut out = first.take().unwrap_or_default();
        match ev {
            Event::Token { id, text, logprob } => {
                if let Some(lp) = logprob {
                    reply.logprobs.push(id, lp);
                }
                if !text.is_empty() || !reply.logprobs.is_empty() {
                    out += &sse(&reply.chunk(Some(&text), None));
                }
            }
            Event::Text(text) => out += &sse(&reply.chunk(Some(&text), None)),
            Event::Done(f) => {
                out += &sse(&reply.chunk(None, Some(&f)));
                if include_usage {
                    let mut u = reply.envelope(true, Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = openai::usage(&f);
                    out += &sse(&u);
                }
                out += "data: [DONE]\n\n";
            }
            Event::Failed(e) => {
                out += &sse(&json!({"error": {"message": e, "type": "server_error"}}));
                out += "data: [DONE]\n\n";
            }
        }
        Ok::<_, Infallible>(Bytes::from(out))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .expect("valid response")
}

/// A non-streaming response: the events gathered into one JSON body.
async fn whole(mut reply: Reply, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut finish = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token {
                id,
                text: t,
                logprob,
            } => {
                text += &t;
                if let Some(lp) = logprob {
                    reply.logprobs.push(id, lp);
                }
            }
            Event::Text(t) => text += &t,
            Event::Done(f) => finish = Some(f),
            Event::Failed(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        }
    }
    let Some(f) = finish else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the engine dropped the request",
        )
        .into_response();
    };
    let choice = reply.choice(Some(&text), Some(&f), false);
    let mut v = reply.envelope(false, choice);
    v["usage"] = openai::usage(&f);
    axum::Json(v).into_response()
}
