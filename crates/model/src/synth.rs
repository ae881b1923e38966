//! Synthetic models: valid GGUF files with deterministic pseudo-random
//! weights at a real model's shapes (as vLLM's dummy load format), with a
//! byte-level SentencePiece vocabulary so that llama.cpp loads them too.
//! They let benchmarks and engine-to-engine comparisons run where real
//! weights cannot go, and cover architectures with no real file here.

use std::f64::consts::PI;
use std::io::{self, Write};

use quarrel_gguf::{Array, GgmlType, GgufWriter, Value, ValueType};

use crate::config::Arch;

#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    pub arch: Arch,
    pub name: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub rope_base: f32,
    pub norm_eps: f32,
    pub qkv_bias: bool,
    pub tied_output: bool,
    pub sliding_window: usize,
    /// Llama 3.1 rope scaling (factor 8), carried by `rope_freqs.weight`.
    pub llama3_rope: bool,
}

impl SynthSpec {
    fn base(arch: Arch, name: &'static str) -> Self {
        SynthSpec {
            arch,
            name,
            n_layer: 2,
            n_embd: 256,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            n_vocab: 320,
            n_ctx: 4096,
            rope_base: 10_000.0,
            norm_eps: 1e-5,
            qkv_bias: false,
            tied_output: false,
            sliding_window: 0,
            llama3_rope: false,
        }
    }
}

pub const PRESETS: &[&str] = &[
    "llama3-8b",
    "qwen2.5-7b",
    "mistral-7b",
    "qwen2.5-0.5b",
    "tiny-llama",
    "tiny-llama3",
    "tiny-mistral",
    "tiny-phi3",
    "tiny-qwen2",
    "tiny-gemma3",
];

/// Real shapes (from the public model configs) and small test shapes.
pub fn preset(name: &str) -> Option<SynthSpec> {
    let mut s;
    match name {
        "llama3-8b" => {
            s = SynthSpec::base(Arch::Llama, "synthetic llama3-8b");
            (s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv) = (32, 4096, 14336, 32, 8);
            (s.head_dim, s.n_vocab, s.rope_base, s.llama3_rope) = (128, 128_256, 500_000.0, true);
            s.n_ctx = 131_072;
        }
        "qwen2.5-7b" => {
            s = SynthSpec::base(Arch::Qwen2, "synthetic qwen2.5-7b");
            (s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv) = (28, 3584, 18944, 28, 4);
            (s.head_dim, s.n_vocab, s.rope_base, s.qkv_bias) = (128, 152_064, 1e6, true);
            (s.norm_eps, s.n_ctx) = (1e-6, 32_768);
        }
        "mistral-7b" => {
            s = SynthSpec::base(Arch::Llama, "synthetic mistral-7b");
            (s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv) = (32, 4096, 14336, 32, 8);
            (s.head_dim, s.n_vocab, s.sliding_window) = (128, 32_000, 4096);
            s.n_ctx = 32_768;
        }
        "qwen2.5-0.5b" => {
            s = SynthSpec::base(Arch::Qwen2, "synthetic qwen2.5-0.5b");
            (s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv) = (24, 896, 4864, 14, 2);
            (s.head_dim, s.n_vocab, s.rope_base, s.qkv_bias) = (64, 151_936, 1e6, true);
            (s.norm_eps, s.n_ctx) = (1e-6, 32_768);
        }
        "tiny-llama" => s = SynthSpec::base(Arch::Llama, "synthetic tiny llama"),
        "tiny-llama3" => {
            s = SynthSpec::base(Arch::Llama, "synthetic tiny llama3");
            (s.rope_base, s.llama3_rope) = (500_000.0, true);
        }
        "tiny-mistral" => {
            // Mistral 7B v0.1 files use the llama architecture with a window.
            s = SynthSpec::base(Arch::Llama, "synthetic tiny mistral");
            s.sliding_window = 4096;
        }
        "tiny-phi3" => {
            s = SynthSpec::base(Arch::Phi3, "synthetic tiny phi3");
            s.n_head_kv = s.n_head;
        }
        "tiny-qwen2" => {
            s = SynthSpec::base(Arch::Qwen2, "synthetic tiny qwen2");
            (s.qkv_bias, s.rope_base, s.norm_eps) = (true, 1e6, 1e-6);
        }
        "tiny-gemma3" => {
            s = SynthSpec::base(Arch::Gemma3, "synthetic tiny gemma3");
            (s.n_layer, s.n_head_kv, s.tied_output) = (6, 1, true);
            (s.sliding_window, s.rope_base, s.norm_eps) = (32, 1e6, 1e-6);
        }
        _ => return None,
    }
    Some(s)
}

/// Weight types: one block type for every matrix, or llama.cpp's Q4_K_M
/// mix (Q6_K for the output, and for attn_v and ffn_down in a third of
/// the layers, Q4_K elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthType {
    Uniform(GgmlType),
    Q4KM,
}

impl SynthType {
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("q4_k_m") {
            return Some(SynthType::Q4KM);
        }
        GgmlType::from_name(s)
            .filter(|t| {
                quarrel_quant::is_supported(*t) && *t != GgmlType::Q8K && *t != GgmlType::Q8_1
            })
            .map(SynthType::Uniform)
    }

    fn file_type(self) -> u32 {
        // llama_ftype values llama.cpp prints.
        match self {
            SynthType::Q4KM => 15,
            SynthType::Uniform(t) => match t {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q2K => 10,
                GgmlType::Q3K => 12,
                GgmlType::Q4K => 14,
                GgmlType::Q5K => 16,
                GgmlType::Q6K => 18,
                GgmlType::Bf16 => 32,
                _ => 0,
            },
        }
    }

    /// The type of a matrix; rows that cannot hold whole blocks fall back
    /// to Q8_0 (or F16), as llama.cpp's quantizer does.
    fn for_tensor(self, role: &str, layer: Option<usize>, n_layer: usize, row: usize) -> GgmlType {
        let want = match self {
            SynthType::Uniform(t) => t,
            SynthType::Q4KM => {
                // llama.cpp's use_more_bits: the first and last eighth of
                // the layers, and every third one between.
                let more_bits = |i: usize| {
                    let first = n_layer / 8;
                    i < first || i >= 7 * n_layer / 8 || (i - first) % 3 == 2
                };
                match (role, layer) {
                    ("output", _) => GgmlType::Q6K,
                    ("attn_v" | "ffn_down", Some(i)) if more_bits(i) => GgmlType::Q6K,
                    _ => GgmlType::Q4K,
                }
            }
        };
        if row.is_multiple_of(want.block_size()) {
            want
        } else if row.is_multiple_of(32) {
            GgmlType::Q8_0
        } else {
            GgmlType::F16
        }
    }
}

struct TensorPlan {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    /// Uniform half-width of the weights (0: a norm, all ones).
    scale: f32,
}

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    /// What each draw adds to the state.
    const STEP: u64 = 0x9e37_79b9_7f4a_7c15;

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::STEP);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn plan(spec: &SynthSpec, ty: SynthType) -> Vec<TensorPlan> {
    let (e, ff, l) = (spec.n_embd, spec.n_ff, spec.n_layer);
    let (qd, kvd) = (spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim);
    let mut out = Vec::new();
    let mut mat = |name: String, role: &str, layer: Option<usize>, cols: usize, rows: usize| {
        out.push(TensorPlan {
            ty: ty.for_tensor(role, layer, l, cols),
            name,
            dims: vec![cols as u64, rows as u64],
            // Keeps activations O(1) through the layers.
            scale: (3.0 / cols as f32).sqrt(),
        });
    };
    mat(
        "token_embd.weight".into(),
        "token_embd",
        None,
        e,
        spec.n_vocab,
    );
    if !spec.tied_output {
        mat("output.weight".into(), "output", None, e, spec.n_vocab);
    }
    for i in 0..l {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        if spec.arch == Arch::Phi3 {
            mat(n("attn_qkv"), "attn_qkv", Some(i), e, qd + 2 * kvd);
            mat(n("ffn_up"), "ffn_up", Some(i), e, 2 * ff);
        } else {
            mat(n("attn_q"), "attn_q", Some(i), e, qd);
            mat(n("attn_k"), "attn_k", Some(i), e, kvd);
            mat(n("attn_v"), "attn_v", Some(i), e, kvd);
            mat(n("ffn_gate"), "ffn_gate", Some(i), e, ff);
            mat(n("ffn_up"), "ffn_up", Some(i), e, ff);
        }
        mat(n("attn_output"), "attn_output", Some(i), qd, e);
        mat(n("ffn_down"), "ffn_down", Some(i), ff, e);
    }
    let mut vec = |name: String, len: usize, scale: f32| {
        out.push(TensorPlan {
            name,
            ty: GgmlType::F32,
            dims: vec![len as u64],
            scale,
        })
    };
    vec("output_norm.weight".into(), e, 0.0);
    for i in 0..l {
        let n = |s: &str| format!("blk.{i}.{s}");
        vec(n("attn_norm.weight"), e, 0.0);
        vec(n("ffn_norm.weight"), e, 0.0);
        if spec.qkv_bias {
            vec(n("attn_q.bias"), qd, 0.5);
            vec(n("attn_k.bias"), kvd, 0.5);
            vec(n("attn_v.bias"), kvd, 0.5);
        }
        if spec.arch == Arch::Gemma3 {
            vec(n("attn_q_norm.weight"), spec.head_dim, 0.0);
            vec(n("attn_k_norm.weight"), spec.head_dim, 0.0);
            vec(n("post_attention_norm.weight"), e, 0.0);
            vec(n("post_ffw_norm.weight"), e, 0.0);
        }
    }
    out
}

fn llama3_rope_factors(spec: &SynthSpec) -> Vec<f32> {
    let (factor, low, high, old_ctx) = (8.0f64, 1.0f64, 4.0f64, 8192.0f64);
    let (low_wl, high_wl) = (old_ctx / low, old_ctx / high);
    let dim = spec.head_dim as f64;
    (0..spec.head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (spec.rope_base as f64).powf(2.0 * i as f64 / dim);
            let wavelen = 2.0 * PI / freq;
            let f = if wavelen < high_wl {
                1.0
            } else if wavelen > low_wl {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array {
        ty: ValueType::String,
        items: items.into_iter().map(Value::String).collect(),
    })
}

/// A SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, the
/// architecture's control tokens, then filler pieces, so any text
/// tokenizes (by byte fallback).
fn set_vocab(w: &mut GgufWriter, arch: Arch, n_vocab: usize) {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    // llama.cpp looks these up by name when it loads a Phi-3 vocabulary.
    if arch == Arch::Phi3 {
        for t in ["<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"] {
            tokens.push(t.into());
            types.push(3);
        }
    }
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut i = 0;
    while tokens.len() < n_vocab {
        tokens.push(format!("\u{2581}w{i}"));
        types.push(1);
        i += 1;
    }
    tokens.truncate(n_vocab);
    types.truncate(n_vocab);
    let scores = (0..n_vocab).map(|i| Value::F32(-(i as f32))).collect();
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set("tokenizer.ggml.pre", Value::String("default".into()));
    w.set("tokenizer.ggml.tokens", strings(tokens));
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(Array {
            ty: ValueType::F32,
            items: scores,
        }),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array {
            ty: ValueType::I32,
            items: types.into_iter().map(Value::I32).collect(),
        }),
    );
    w.set("tokenizer.ggml.unknown_token_id", Value::U32(0));
    w.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.set("tokenizer.ggml.add_space_prefix", Value::Bool(true));
}

/// Writes the synthetic model; weights depend only on (`seed`, tensor
/// name), so every run (and every machine) writes the same file.
pub fn write(spec: &SynthSpec, ty: SynthType, seed: u64, out: &mut impl Write) -> io::Result<()> {
    let a = spec.arch.name();
    let k = |s: &str| format!("{a}.{s}");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(a.into()));
    w.set("general.name", Value::String(spec.name.into()));
    w.set("general.file_type", Value::U32(ty.file_type()));
    w.set("general.quantization_version", Value::U32(2));
    w.set(&k("block_count"), Value::U32(spec.n_layer as u32));
    w.set(&k("context_length"), Value::U32(spec.n_ctx as u32));
    w.set(&k("embedding_length"), Value::U32(spec.n_embd as u32));
    w.set(&k("feed_forward_length"), Value::U32(spec.n_ff as u32));
    w.set(&k("attention.head_count"), Value::U32(spec.n_head as u32));
    w.set(
        &k("attention.head_count_kv"),
        Value::U32(spec.n_head_kv as u32),
    );
    w.set(&k("attention.key_length"), Value::U32(spec.head_dim as u32));
    w.set(
        &k("attention.value_length"),
        Value::U32(spec.head_dim as u32),
    );
    w.set(&k("rope.dimension_count"), Value::U32(spec.head_dim as u32));
    w.set(&k("rope.freq_base"), Value::F32(spec.rope_base));
    w.set(
        &k("attention.layer_norm_rms_epsilon"),
        Value::F32(spec.norm_eps),
    );
    w.set(&k("vocab_size"), Value::U32(spec.n_vocab as u32));
    if spec.sliding_window > 0 {
        w.set(
            &k("attention.sliding_window"),
            Value::U32(spec.sliding_window as u32),
        );
    }
    set_vocab(&mut w, spec.arch, spec.n_vocab);

    let plans = plan(spec, ty);
    for p in &plans {
        w.declare_tensor(&p.name, p.ty, &p.dims)?;
    }
    if spec.llama3_rope {
        let factors: Vec<u8> = llama3_rope_factors(spec)
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        w.add_tensor(
            "rope_freqs.weight",
            GgmlType::F32,
            &[spec.head_dim as u64 / 2],
            factors,
        )?;
    }
    // Rows are quantized on every core, a slab at a time: a model at 8B
    // shapes takes minutes on one.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut slab = Vec::new();
    w.write_to(out, |name, out| {
        let p = plans
            .iter()
            .find(|p| p.name == name)
            .expect("every declared tensor has a plan");
        let cols = p.dims[0] as usize;
        let rows: usize = p.dims[1..].iter().map(|&d| d as usize).product();
        let row_bytes = p.ty.row_bytes(cols as u64).expect("planned whole blocks") as usize;
        let per_thread = 64;
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(per_thread * threads);
            slab.resize(n * row_bytes, 0);
            std::thread::scope(|scope| {
                let parts = slab.chunks_mut(per_thread * row_bytes).enumerate();
                let handles: Vec<_> = parts
                    .map(|(i, part)| {
                        let first = r0 + i * per_thread;
                        scope.spawn(move || synth_rows(p, seed, name, cols, first, part))
                    })
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("synth thread"))
            })?;
            out.write_all(&slab)?;
            r0 += n;
        }
        Ok(())
    })
}

/// Rows `first..` of a tensor into `out` (whole rows). Each row's weights
/// continue the tensor's one random stream: splitmix64 advances its state
/// by a constant per draw, so row r starts r·cols draws in.
fn synth_rows(
    p: &TensorPlan,
    seed: u64,
    name: &str,
    cols: usize,
    first: usize,
    out: &mut [u8],
) -> io::Result<()> {
    let skip = (first as u64).wrapping_mul(cols as u64);
    let mut rng = Rng(name_seed(seed, name).wrapping_add(skip.wrapping_mul(Rng::STEP)));
    let mut row = vec![0f32; cols];
    let row_bytes = p.ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    for dst in out.chunks_exact_mut(row_bytes) {
        for v in row.iter_mut() {
            *v = if p.scale == 0.0 {
                1.0
            } else {
                p.scale * rng.uniform()
            };
        }
        quarrel_quant::quantize_row(p.ty, &row, dst).map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn presets_write_files_that_load_as_their_architecture() {
        for name in PRESETS.iter().filter(|p| p.starts_with("tiny-")) {
            let spec = preset(name).unwrap();
            let mut bytes = Vec::new();
            write(&spec, SynthType::Uniform(GgmlType::Q8_0), 7, &mut bytes).unwrap();
            let f = quarrel_gguf::GgufFile::from_bytes(bytes, name).unwrap();
            let cfg = ModelConfig::from_metadata(f.metadata()).unwrap();
            assert_eq!(cfg.arch, spec.arch, "{name}");
            assert_eq!(cfg.n_vocab, spec.n_vocab);
            assert_eq!(
                f.tensor_info("rope_freqs.weight").is_some(),
                spec.llama3_rope
            );
        }
    }

    #[test]
    fn weights_are_deterministic_and_seed_dependent() {
        let spec = preset("tiny-llama").unwrap();
        let file = |seed| {
            let mut b = Vec::new();
            write(&spec, SynthType::Uniform(GgmlType::Q4_0), seed, &mut b).unwrap();
            b
        };
        assert_eq!(file(1), file(1));
        assert_ne!(file(1), file(2));
    }

    #[test]
    fn q4_k_m_mix_uses_q6_k_where_llama_cpp_does() {
        let spec = preset("qwen2.5-0.5b").unwrap();
        let p = plan(&spec, SynthType::Q4KM);
        let ty = |n: &str| p.iter().find(|t| t.name == n).unwrap().ty;
        assert_eq!(ty("output.weight"), GgmlType::Q8_0); // 896 is no multiple of 256
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6K);
        assert_eq!(ty("blk.4.ffn_down.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.5.ffn_down.weight"), GgmlType::Q6K);
        assert_eq!(ty("blk.23.attn_v.weight"), GgmlType::Q8_0);
    }

    #[test]
    fn llama3_factors_span_one_to_eight() {
        let spec = preset("llama3-8b").unwrap();
        let f = llama3_rope_factors(&spec);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(*f.last().unwrap(), 8.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }
}
