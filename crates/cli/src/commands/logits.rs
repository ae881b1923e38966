//! `quarrel logits`: evaluate a token sequence and write the logits of
//! every position as a .npy matrix, for comparison with other engines
//! (scripts/compare-logits.py) and other backends.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use quarrel_model::{ActivationSink, Backend, Session};

use super::EngineArgs;
use crate::dump::{write_npy, NpyDump};
use crate::load;

#[derive(Args, Clone, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Where to write the [positions × vocabulary] f32 matrix.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Also write every named intermediate as .npy into DIR.
    #[arg(long, value_name = "DIR")]
    pub dump_activations: Option<PathBuf>,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    let path = load::resolve_model(args.engine.model.as_deref())?;
    load::with_model(&path, args.engine.device, args.engine.threads, args)
}

impl load::WithModel for LogitsArgs {
    type Output = ();

    fn run<B: Backend + 'static>(self, loaded: load::Loaded<B>) -> Result<()> {
        logits(self, loaded)
    }
}

fn logits<B: Backend>(args: LogitsArgs, loaded: load::Loaded<B>) -> Result<()> {
    if args.tokens.len() > args.engine.ctx_size {
        bail!(
            "{} tokens do not fit the context of {} (raise -c)",
            args.tokens.len(),
            args.engine.ctx_size
        );
    }
    let mut session = Session::new(&loaded.model, args.engine.ctx_size, args.engine.ubatch);
    let mut logits = Vec::new();
    let mut dump = args
        .dump_activations
        .map(NpyDump::new)
        .transpose()
        .context("cannot create the activation directory")?;
    if let Some(d) = dump.as_mut() {
        d.next_call();
    }
    session.eval(
        &args.tokens,
        true,
        &mut logits,
        dump.as_mut().map(|d| d as &mut dyn ActivationSink),
    )?;
    if let Some(e) = dump.and_then(|d| d.error) {
        return Err(e).context("cannot write activations");
    }
    write_npy(
        &args.output,
        args.tokens.len(),
        loaded.model.config.n_vocab,
        &logits,
    )
    .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}
