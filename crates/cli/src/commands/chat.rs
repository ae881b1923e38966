//! `quarrel chat`: multi-turn conversation through the chat template.
//! Each turn renders the whole conversation, keeps the cached prefix that
//! still matches, and evaluates only the new tokens.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use clap::Args;
use quarrel_model::{Backend, Sampler, Session};
use quarrel_tokenizer::chat::{ChatTemplate, Message};

use super::run::{generate, GenerateOptions};
use super::{EngineArgs, SamplingArgs};
use crate::load;

#[derive(Args, Clone, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A system message for the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per answer.
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    pub n_predict: usize,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let path = load::resolve_model(args.engine.model.as_deref())?;
    load::with_model(&path, args.engine.device, args.engine.threads, args)
}

impl load::WithModel for ChatArgs {
    type Output = ();

    fn run<B: Backend + 'static>(self, loaded: load::Loaded<B>) -> Result<()> {
        chat(self, loaded)
    }
}

fn chat<B: Backend>(args: ChatArgs, loaded: load::Loaded<B>) -> Result<()> {
    let template = ChatTemplate::from_gguf(loaded.file.metadata(), loaded.model.config.arch.name())
        .context("cannot build the chat template")?;
    let tok = &loaded.tokenizer;
    let mut session = Session::new(&loaded.model, args.engine.ctx_size, args.engine.ubatch);
    let mut sampler = Sampler::new(args.sampling.config(), loaded.model.config.n_vocab);
    let mut messages: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message {
            role: "system".into(),
            content: s.clone(),
        })
        .collect();
    // Tokens whose K/V the session holds, position by position.
    let mut cached: Vec<u32> = Vec::new();
    eprintln!(
        "quarrel chat: {} on {}. Empty line or end of input quits.",
        loaded.model.config.name,
        loaded.model.backend.describe()
    );
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        print!("> ");
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        messages.push(Message {
            role: "user".into(),
            content: line.trim_end_matches(['\n', '\r']).to_string(),
        });
        let text = template.render(&messages, true)?;
        let tokens = tok.encode(&text, true, true);
        let keep = cached
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count()
            // At least one token must be evaluated to get logits.
            .min(tokens.len().saturating_sub(1));
        if tokens.len() + args.n_predict > session.n_ctx() {
            eprintln!("the conversation no longer fits the context (-c); starting over");
            messages.drain(..messages.len() - 1);
            cached.clear();
            session.reset();
            continue;
        }
        session.truncate(keep);
        cached.truncate(keep);
        let mut on_text = |s: &str| {
            print!("{s}");
            let _ = std::io::stdout().flush();
        };
        let gen = generate(
            &mut session,
            tok,
            &mut sampler,
            &tokens[keep..],
            GenerateOptions {
                n_predict: args.n_predict,
                ignore_eos: false,
                top_logprobs: 0,
                on_text: &mut on_text,
                sink: None,
            },
        )?;
        println!();
        // The session holds the prompt and every generated token it fed
        // back (all but a final token cut off by the limit).
        cached = tokens;
        cached.extend_from_slice(&gen.tokens);
        cached.truncate(session.n_past());
        messages.push(Message {
            role: "assistant".into(),
            content: gen.text,
        });
    }
    Ok(())
}
