//! `quarrel perplexity`: llama-perplexity's method and figure. The text is
//! tokenized (with BOS if the model adds it) and cut into non-overlapping
//! chunks of the context size; each chunk starts from BOS and only its
//! second half is scored. `--save-logits` writes, for each scored position,
//! the most likely token and the log-probabilities (f16), so a later run can
//! report KL divergence and top-1 agreement against it (another backend,
//! quantization or build).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use half::f16;
use quarrel_model::sampler::log_softmax;
use quarrel_model::{Backend, Session};
use serde::Serialize;

use super::{EngineArgs, Format};
use crate::load;

const LOGITS_MAGIC: &[u8; 8] = b"QLOGPRB1";

#[derive(Args, Clone, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The text to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Score at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Save the scored log-probabilities for a later --kl-divergence.
    #[arg(long, value_name = "FILE")]
    pub save_logits: Option<PathBuf>,
    /// Compare with log-probabilities saved by --save-logits.
    #[arg(long, value_name = "FILE")]
    pub kl_divergence: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    ppl: f64,
    ppl_uncertainty: f64,
    chunks: usize,
    ctx: usize,
    scored_tokens: usize,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    kl_divergence: Option<KlReport>,
}

#[derive(Serialize)]
struct KlReport {
    mean_kld: f64,
    max_kld: f64,
    top1_agreement: f64,
}

struct Header {
    n_vocab: u32,
    n_ctx: u32,
    n_chunk: u32,
    tokens: Vec<u32>,
}

fn write_header(w: &mut impl Write, h: &Header) -> std::io::Result<()> {
    w.write_all(LOGITS_MAGIC)?;
    for v in [h.n_vocab, h.n_ctx, h.n_chunk] {
        w.write_all(&v.to_le_bytes())?;
    }
    for t in &h.tokens {
        w.write_all(&t.to_le_bytes())?;
    }
    Ok(())
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_header(r: &mut impl Read) -> Result<Header> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != LOGITS_MAGIC {
        bail!("not a file written by quarrel perplexity --save-logits");
    }
    let (n_vocab, n_ctx, n_chunk) = (read_u32(r)?, read_u32(r)?, read_u32(r)?);
    let n = n_ctx as u64 * n_chunk as u64;
    if n > 1 << 32 {
        bail!("implausible header: {n_chunk} chunks of {n_ctx}");
    }
    let tokens = (0..n)
        .map(|_| read_u32(r))
        .collect::<std::io::Result<_>>()?;
    Ok(Header {
        n_vocab,
        n_ctx,
        n_chunk,
        tokens,
    })
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let path = load::resolve_model(args.engine.model.as_deref())?;
    load::with_model(&path, args.engine.device, args.engine.threads, args)
}

impl load::WithModel for PerplexityArgs {
    type Output = ();

    fn run<B: Backend + 'static>(self, loaded: load::Loaded<B>) -> Result<()> {
        perplexity(self, loaded)
    }
}

fn perplexity<B: Backend>(args: PerplexityArgs, loaded: load::Loaded<B>) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let n_ctx = args.engine.ctx_size;
    let tokens = loaded.tokenizer.encode(&text, true, false);
    let available = tokens.len() / n_ctx;
    let n_chunk = args.chunks.map_or(available, |c| c.min(available));
    if n_chunk == 0 {
        bail!(
            "{} tokens do not fill one chunk of {n_ctx} (lower -c)",
            tokens.len()
        );
    }
    let n_vocab = loaded.model.config.n_vocab;
    let header = Header {
        n_vocab: n_vocab as u32,
        n_ctx: n_ctx as u32,
        n_chunk: n_chunk as u32,
        tokens: tokens[..n_chunk * n_ctx].to_vec(),
    };
    let mut save = match &args.save_logits {
        Some(p) => {
            let mut w = BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            );
            write_header(&mut w, &header)?;
            Some(w)
        }
        None => None,
    };
    let mut base = match &args.kl_divergence {
        Some(p) => {
            let mut r = BufReader::new(
                File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            );
            let h = read_header(&mut r).with_context(|| format!("{}", p.display()))?;
            if h.n_vocab != header.n_vocab || h.n_ctx != header.n_ctx || h.tokens != header.tokens {
                bail!(
                    "{} was saved for other tokens, context or vocabulary",
                    p.display()
                );
            }
            if h.n_chunk < header.n_chunk {
                bail!("{} holds only {} chunks", p.display(), h.n_chunk);
            }
            Some(r)
        }
        None => None,
    };

    let first = n_ctx / 2;
    let bos = loaded
        .tokenizer
        .adds_bos()
        .then(|| loaded.tokenizer.bos())
        .flatten();
    let mut session = Session::new(&loaded.model, n_ctx, args.engine.ubatch.min(n_ctx));
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let (mut kld_sum, mut kld_max, mut top1_same) = (0.0f64, 0.0f64, 0usize);
    let mut logits = Vec::new();
    let mut logprobs = Vec::new();
    let mut row16 = vec![0u8; n_vocab * 2];
    let start = Instant::now();
    for c in 0..n_chunk {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        logits.clear();
        session.eval(&chunk, true, &mut logits, None)?;
        for i in first..n_ctx - 1 {
            log_softmax(&logits[i * n_vocab..(i + 1) * n_vocab], &mut logprobs);
            let lp = -logprobs[tokens[c * n_ctx + i + 1] as usize];
            nll += lp;
            nll2 += lp * lp;
            count += 1;
            let best = argmax(&logprobs);
            if let Some(w) = save.as_mut() {
                for (dst, &l) in row16.chunks_exact_mut(2).zip(&logprobs) {
                    dst.copy_from_slice(&f16::from_f64(l).to_le_bytes());
                }
                w.write_all(&(best as u32).to_le_bytes())?;
                w.write_all(&row16)?;
            }
            if let Some(r) = base.as_mut() {
                let base_best = read_u32(r)? as usize;
                r.read_exact(&mut row16)?;
                let mut kld = 0.0f64;
                for (b, &lp) in row16.chunks_exact(2).zip(&logprobs) {
                    let lp_base = f16::from_le_bytes([b[0], b[1]]).to_f64();
                    kld += lp_base.exp() * (lp_base - lp);
                }
                kld_sum += kld;
                kld_max = kld_max.max(kld);
                top1_same += usize::from(base_best == best);
            }
        }
        if args.format == Format::Text {
            eprint!("[{}]{:.4},", c + 1, (nll / count as f64).exp());
        }
    }
    if let Some(mut w) = save {
        w.flush()?;
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let report = Report {
        ppl,
        ppl_uncertainty: if var > 0.0 {
            (var / (count as f64 - 1.0)).sqrt() * ppl
        } else {
            0.0
        },
        chunks: n_chunk,
        ctx: n_ctx,
        scored_tokens: count,
        seconds: start.elapsed().as_secs_f64(),
        kl_divergence: base.map(|_| KlReport {
            mean_kld: kld_sum / count as f64,
            max_kld: kld_max,
            top1_agreement: top1_same as f64 / count as f64,
        }),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => {
            eprintln!();
            println!(
                "Final estimate: PPL = {:.4} +/- {:.5} ({} chunks of {}, {:.1} s)",
                report.ppl, report.ppl_uncertainty, n_chunk, n_ctx, report.seconds
            );
            if let Some(k) = &report.kl_divergence {
                println!(
                    "KL divergence: mean {:.6}, max {:.6}; top-1 agreement {:.2}%",
                    k.mean_kld,
                    k.max_kld,
                    100.0 * k.top1_agreement
                );
            }
        }
    }
    Ok(())
}
