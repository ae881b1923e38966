//! `quarrel bench`: prompt processing (pp) and generation (tg) throughput
//! as llama-bench measures them: pp evaluates N random tokens as one
//! prompt; tg decodes N tokens one at a time from an empty context. Each
//! test runs once to warm up, then `-r` times; the table reports mean ±
//! standard deviation of tokens/s, and `--format json` uses llama-bench's
//! field names so its comparison scripts read either engine.
//!
//! `--parallel N` makes tg decode N sequences together, one token each per
//! pass through the per-row kernels the server's batches use (as
//! llama-batched-bench's S_TG): tokens/s counts the tokens of all N.

use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use quarrel_model::{Backend, Batch, Kernels, Model, SeqRows, Session};
use serde::Serialize;

use crate::load;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    Md,
    Json,
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// GGUF model file (default: the model fetched by scripts/fetch-models.sh).
    #[arg(short = 'm', long)]
    pub model: Option<std::path::PathBuf>,
    /// Prompt lengths to test (0 skips).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (0 skips).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Where to run: auto (a CUDA GPU if one is present, else the CPU),
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: load::Device,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Tokens per forward pass while reading a prompt.
    #[arg(short = 'u', long = "ubatch-size", default_value_t = 512)]
    pub ubatch: usize,
    /// Sequences decoded together in tg tests.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub parallel: u64,
    #[arg(short = 'o', long = "format", value_enum, default_value = "md")]
    pub format: BenchFormat,
}

#[derive(Serialize)]
struct BenchResult {
    engine: &'static str,
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    backend: String,
    n_threads: usize,
    n_ubatch: usize,
    n_prompt: usize,
    n_gen: usize,
    n_parallel: usize,
    test_time: String,
    avg_ns: u64,
    stddev_ns: u64,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
    peak_rss_bytes: u64,
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Deterministic pseudo-random token ids (llama-bench uses rand()).
fn random_tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let path = load::resolve_model(args.model.as_deref())?;
    load::with_model(&path, args.device, args.threads, args)
}

impl load::WithModel for BenchArgs {
    type Output = ();

    fn run<B: Backend + 'static>(self, loaded: load::Loaded<B>) -> Result<()> {
        bench(self, loaded)
    }
}

fn bench<B: Backend>(args: BenchArgs, loaded: load::Loaded<B>) -> Result<()> {
    let path = loaded.file.path().to_path_buf();
    let model = &loaded.model;
    let cfg = &model.config;
    let n_params: u64 = loaded.file.tensors().iter().map(|t| t.n_elements()).sum();
    let model_size: u64 = loaded.file.tensors().iter().map(|t| t.size).sum();
    let file_type = loaded
        .file
        .metadata()
        .get_u32("general.file_type")
        .map_or(String::new(), |t| format!(" ftype {t}"));
    let tests: Vec<(usize, usize)> = args
        .n_prompt
        .iter()
        .filter(|&&p| p > 0)
        .map(|&p| (p, 0))
        .chain(args.n_gen.iter().filter(|&&g| g > 0).map(|&g| (0, g)))
        .collect();
    let n_ctx = tests.iter().map(|(p, g)| p + g).max().unwrap_or(1);
    let n_par = args.parallel as usize;
    // As the CPU backend counts them (llama-bench reports them for GPU runs too).
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    let mut session = Session::new(model, n_ctx, args.ubatch);
    let mut parallel = (n_par > 1).then(|| ParallelDecode::new(model, n_par, n_ctx));
    let mut logits = Vec::new();
    let mut results = Vec::new();
    for (n_prompt, n_gen) in tests {
        let mut samples = Vec::with_capacity(args.reps);
        for rep in 0..=args.reps {
            session.reset();
            let t0 = Instant::now();
            if n_prompt > 0 {
                let toks = random_tokens(n_prompt, cfg.n_vocab, rep as u64);
                session.eval(&toks, false, &mut logits, None)?;
            } else if let Some(par) = parallel.as_mut() {
                par.run(model, loaded.tokenizer.bos().unwrap_or(0), n_gen)?;
            } else {
                let mut tok = loaded.tokenizer.bos().unwrap_or(0);
                for _ in 0..n_gen {
                    tok = session.eval_greedy(&[tok])?;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            // The first run warms caches and pages the weights in.
            if rep > 0 {
                let n_seqs = if n_gen > 0 { n_par } else { 1 };
                samples.push((n_prompt + n_gen * n_seqs) as f64 / secs);
            }
        }
        let (avg, std) = mean_std(&samples);
        let n_seqs = if n_gen > 0 { n_par } else { 1 };
        let n_tok = (n_prompt + n_gen * n_seqs) as f64;
        results.push(BenchResult {
            engine: concat!("quarrel ", env!("CARGO_PKG_VERSION")),
            model_filename: path
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned()),
            model_type: format!("{}{}", cfg.arch.name(), file_type),
            model_size,
            model_n_params: n_params,
            backend: model.backend.describe(),
            n_threads: threads,
            n_ubatch: args.ubatch,
            n_prompt,
            n_gen,
            n_parallel: n_seqs,
            test_time: chrono_free_utc_now(),
            avg_ns: (n_tok / avg * 1e9) as u64,
            stddev_ns: if avg > 0.0 {
                (std / avg * n_tok / avg * 1e9) as u64
            } else {
                0
            },
            avg_ts: avg,
            stddev_ts: std,
            samples_ts: samples,
            peak_rss_bytes: peak_rss(),
        });
        if args.format == BenchFormat::Md && results.len() == 1 {
            println!(
                "| model | size | params | backend | threads | test | t/s | peak RSS |\n|---|--:|--:|---|--:|--:|--:|--:|"
            );
        }
        if args.format == BenchFormat::Md {
            let r = results.last().expect("just pushed");
            let test = if n_prompt > 0 {
                format!("pp{n_prompt}")
            } else if n_par > 1 {
                format!("tg{n_gen} ×{n_par}")
            } else {
                format!("tg{n_gen}")
            };
            println!(
                "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {:.2} ± {:.2} | {:.0} MiB |",
                r.model_type,
                r.model_size as f64 / (1 << 20) as f64,
                r.model_n_params as f64 / 1e6,
                r.backend,
                r.n_threads,
                test,
                r.avg_ts,
                r.stddev_ts,
                r.peak_rss_bytes as f64 / (1 << 20) as f64,
            );
        }
    }
    if args.format == BenchFormat::Json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// Greedy decode of several sequences in lockstep, one row each per pass.
struct ParallelDecode<B: Backend> {
    cache: B::KvCache,
    scratch: quarrel_model::Scratch<B>,
    /// Sequence s owns slots s·n_ctx .. (s + 1)·n_ctx.
    slots: Vec<u32>,
    n_ctx: usize,
    tokens: Vec<u32>,
    positions: Vec<u32>,
    outputs: Vec<usize>,
}

impl<B: Backend> ParallelDecode<B> {
    fn new(model: &Model<B>, n_seq: usize, n_ctx: usize) -> Self {
        ParallelDecode {
            cache: model.new_kv_cache(n_seq * n_ctx),
            scratch: model.new_scratch(n_seq, n_seq),
            slots: (0..(n_seq * n_ctx) as u32).collect(),
            n_ctx,
            tokens: Vec::with_capacity(n_seq),
            positions: vec![0; n_seq],
            outputs: (0..n_seq).collect(),
        }
    }

    fn run(&mut self, model: &Model<B>, first: u32, n_gen: usize) -> Result<()> {
        let n_seq = self.outputs.len();
        self.tokens.clear();
        self.tokens.resize(n_seq, first);
        let mut seqs = Vec::with_capacity(n_seq);
        for pos in 0..n_gen {
            self.positions.fill(pos as u32);
            seqs.clear();
            seqs.extend((0..n_seq).map(|s| SeqRows {
                rows: s..s + 1,
                slots: &self.slots[s * self.n_ctx..][..=pos],
                kernels: Kernels::TokenRow,
            }));
            let batch = Batch {
                tokens: &self.tokens,
                positions: &self.positions,
                seqs: &seqs,
                outputs: &self.outputs,
            };
            model.forward(&batch, &mut self.cache, &mut self.scratch, None)?;
            model.argmax_logits(&self.scratch, &mut self.tokens)?;
        }
        Ok(())
    }
}

/// RFC 3339 UTC time from the system clock (no date crate needed).
fn chrono_free_utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
