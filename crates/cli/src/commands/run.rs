//! `quarrel run`: prompt in, text out (streamed, or one JSON object).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser};
use quarrel_model::sampler::{log_softmax, top_logprobs};
use quarrel_model::{ActivationSink, Backend, Sampler, Session};
use quarrel_tokenizer::chat::{ChatTemplate, Message};
use quarrel_tokenizer::{StreamDecoder, Tokenizer};
use serde::Serialize;

use super::{EngineArgs, Format, SamplingArgs};
use crate::dump::NpyDump;
use crate::load;

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Wrap the prompt as one user turn of the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Generate all N tokens even past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// With --format json: the K most likely tokens at each step.
    #[arg(long, default_value_t = 0)]
    pub top_logprobs: usize,
    /// Write every named intermediate of every layer as .npy into DIR.
    #[arg(long, value_name = "DIR")]
    pub dump_activations: Option<PathBuf>,
}

impl RunArgs {
    /// What bare `quarrel` runs: a short greedy answer from the default model.
    pub fn demo() -> Self {
        #[derive(clap::Parser)]
        struct Demo {
            #[command(flatten)]
            run: RunArgs,
        }
        let prompt = "Write a Rust function that checks whether a number is prime.";
        Demo::parse_from(["quarrel", "--chat", "--temp", "0", "-p", prompt]).run
    }
}

#[derive(Serialize)]
pub struct TopLogprob {
    pub id: u32,
    pub logprob: f64,
}

#[derive(Serialize, Default)]
pub struct Timings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    pub predicted_per_second: f64,
}

#[derive(Serialize)]
struct RunOutput {
    prompt_tokens: Vec<u32>,
    tokens: Vec<u32>,
    text: String,
    stop_type: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_logprobs: Vec<Vec<TopLogprob>>,
    timings: Timings,
}

/// What one generation produced.
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    /// "eos" or "limit", as llama.cpp reports it.
    pub stop_type: &'static str,
    pub top_logprobs: Vec<Vec<TopLogprob>>,
    pub timings: Timings,
}

pub struct GenerateOptions<'a> {
    pub n_predict: usize,
    pub ignore_eos: bool,
    pub top_logprobs: usize,
    pub on_text: &'a mut dyn FnMut(&str),
    pub sink: Option<&'a mut NpyDump>,
}

/// Evaluates `prompt` after the session's context and samples up to
/// `n_predict` tokens, streaming text through `on_text`.
pub fn generate<B: Backend>(
    session: &mut Session<'_, B>,
    tokenizer: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    mut opts: GenerateOptions<'_>,
) -> Result<Generation> {
    let n_vocab = tokenizer.vocab_size();
    let mut logits = Vec::with_capacity(n_vocab);
    let mut logprobs = Vec::new();
    let mut decoder = StreamDecoder::new(tokenizer);
    let mut out = Generation {
        tokens: Vec::with_capacity(opts.n_predict),
        text: String::new(),
        stop_type: "limit",
        top_logprobs: Vec::new(),
        timings: Timings::default(),
    };
    for &t in prompt {
        sampler.accept(t);
    }
    // Greedy decoding with nothing else to report lets the backend pick
    // each token where the logits are.
    let on_device = sampler.config().is_greedy() && opts.top_logprobs == 0 && opts.sink.is_none();
    let t0 = Instant::now();
    let mut picked = step(session, prompt, on_device, &mut logits, &mut opts.sink)?;
    out.timings.prompt_n = prompt.len();
    out.timings.prompt_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    while out.tokens.len() < opts.n_predict {
        let token = match picked {
            Some(token) => token,
            None => {
                let logits_row = &logits[logits.len() - n_vocab..];
                if opts.top_logprobs > 0 {
                    log_softmax(logits_row, &mut logprobs);
                    out.top_logprobs.push(top_k(&logprobs, opts.top_logprobs));
                }
                sampler.sample(logits_row)
            }
        };
        sampler.accept(token);
        out.tokens.push(token);
        // As llama.cpp, the end-of-generation token is reported among the
        // tokens (and counts toward -n) but adds no text.
        if !opts.ignore_eos && tokenizer.is_eog(token) {
            out.stop_type = "eos";
            break;
        }
        let piece = decoder.push(token);
        if !piece.is_empty() {
            (opts.on_text)(&piece);
            out.text.push_str(&piece);
        }
        if out.tokens.len() == opts.n_predict {
            break;
        }
        picked = step(session, &[token], on_device, &mut logits, &mut opts.sink)?;
    }
    let rest = decoder.finish();
    if !rest.is_empty() {
        (opts.on_text)(&rest);
        out.text.push_str(&rest);
    }
    out.timings.predicted_n = out.tokens.len();
    out.timings.predicted_ms = t1.elapsed().as_secs_f64() * 1e3;
    let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    out.timings.prompt_per_second = rate(out.timings.prompt_n, out.timings.prompt_ms);
    out.timings.predicted_per_second = rate(out.timings.predicted_n, out.timings.predicted_ms);
    Ok(out)
}

/// Evaluates `tokens`: the greedy next token as the backend picks it
/// (`on_device`), or None with the logits of the last token in `logits`.
fn step<B: Backend>(
    session: &mut Session<'_, B>,
    tokens: &[u32],
    on_device: bool,
    logits: &mut Vec<f32>,
    sink: &mut Option<&mut NpyDump>,
) -> Result<Option<u32>> {
    if on_device {
        return Ok(Some(session.eval_greedy(tokens)?));
    }
    session.eval(tokens, false, logits, next_call(sink))?;
    Ok(None)
}

/// The dump (if any) for the next forward pass.
fn next_call<'a>(dump: &'a mut Option<&mut NpyDump>) -> Option<&'a mut dyn ActivationSink> {
    dump.as_deref_mut().map(|d| {
        d.next_call();
        d as &mut dyn ActivationSink
    })
}

fn top_k(logprobs: &[f64], k: usize) -> Vec<TopLogprob> {
    top_logprobs(logprobs, k)
        .into_iter()
        .map(|(id, logprob)| TopLogprob { id, logprob })
        .collect()
}

pub fn run(args: RunArgs) -> Result<()> {
    let path = load::resolve_model(args.engine.model.as_deref())?;
    load::with_model(&path, args.engine.device, args.engine.threads, args)
}

impl load::WithModel for RunArgs {
    type Output = ();

    fn run<B: Backend + 'static>(self, loaded: load::Loaded<B>) -> Result<()> {
        run_model(self, loaded)
    }
}

fn run_model<B: Backend>(args: RunArgs, loaded: load::Loaded<B>) -> Result<()> {
    let tok = &loaded.tokenizer;
    let text = if args.chat {
        let arch = loaded.model.config.arch.name();
        let template = ChatTemplate::from_gguf(loaded.file.metadata(), arch)
            .context("cannot build the chat template")?;
        template.render(
            &[Message {
                role: "user".into(),
                content: args.prompt.clone(),
            }],
            true,
        )?
    } else {
        args.prompt.clone()
    };
    let prompt = tok.encode(&text, true, true);
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty after tokenization");
    }
    if prompt.len() + args.n_predict > args.engine.ctx_size {
        anyhow::bail!(
            "prompt of {} tokens plus {} to generate does not fit the context of {} (raise -c)",
            prompt.len(),
            args.n_predict,
            args.engine.ctx_size
        );
    }
    if args.format == Format::Text {
        eprintln!(
            "quarrel: {} on {}",
            loaded.model.config.name,
            loaded.model.backend.describe()
        );
    }
    let mut session = Session::new(&loaded.model, args.engine.ctx_size, args.engine.ubatch);
    let mut sampler = Sampler::new(args.sampling.config(), loaded.model.config.n_vocab);
    let mut dump = args
        .dump_activations
        .as_ref()
        .map(|d| NpyDump::new(d.clone()))
        .transpose()
        .context("cannot create the activation directory")?;
    let stream = args.format == Format::Text;
    let mut stdout = std::io::stdout();
    let mut on_text = |s: &str| {
        if stream {
            let _ = stdout.write_all(s.as_bytes());
            let _ = stdout.flush();
        }
    };
    let gen = generate(
        &mut session,
        tok,
        &mut sampler,
        &prompt,
        GenerateOptions {
            n_predict: args.n_predict,
            ignore_eos: args.ignore_eos,
            top_logprobs: args.top_logprobs,
            on_text: &mut on_text,
            sink: dump.as_mut(),
        },
    )?;
    if let Some(e) = dump.and_then(|d| d.error) {
        return Err(e).context("cannot write activations");
    }
    match args.format {
        Format::Text => {
            println!();
            let t = &gen.timings;
            eprintln!(
                "quarrel: prompt {} tokens at {:.1} tok/s, generated {} tokens at {:.1} tok/s",
                t.prompt_n, t.prompt_per_second, t.predicted_n, t.predicted_per_second
            );
        }
        Format::Json => {
            let out = RunOutput {
                prompt_tokens: prompt,
                tokens: gen.tokens,
                text: gen.text,
                stop_type: gen.stop_type,
                top_logprobs: gen.top_logprobs,
                timings: gen.timings,
            };
            println!("{}", serde_json::to_string(&out)?);
        }
    }
    Ok(())
}
