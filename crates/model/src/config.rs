//! Architecture hyperparameters, read from GGUF metadata alone.
//!
//! Each family differs from the Llama baseline only in the fields below;
//! the forward pass reads these and never the architecture name.

use quarrel_gguf::Metadata;

use crate::ModelError;

/// Backends size per-head scratch for this (every known model fits).
pub const MAX_HEAD_DIM: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Gemma3,
    Phi3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): Llama, Mistral.
    Normal,
    /// Split halves (x[i], x[i + d/2]): GPT-NeoX, Qwen2, Gemma 3, Phi-3.
    Neox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// silu(gate) * up
    SwiGlu,
    /// gelu_tanh(gate) * up
    GeGlu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub style: RopeStyle,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    pub freq_base: f32,
    /// Base for sliding-window layers (Gemma 3 uses 10 000 there).
    pub freq_base_swa: f32,
    /// Linear position scaling (1 / rope.scaling.factor for type linear).
    pub freq_scale: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub norm_eps: f32,
    pub rope: RopeConfig,
    /// Attention window for sliding-window layers (0: none).
    pub sliding_window: usize,
    /// Per layer: does it use the sliding window?
    pub swa_layers: Vec<bool>,
    /// Multiplier applied to Q before attention; `kq_scale` inside it.
    pub q_scale: f32,
    pub kq_scale: f32,
    /// Token embeddings are multiplied by this (Gemma: sqrt(n_embd)).
    pub embed_scale: f32,
    pub final_logit_softcap: f32,
    pub activation: FfnActivation,
}

fn key(arch: &str, k: &str) -> String {
    format!("{arch}.{k}")
}

fn required_u(meta: &Metadata, arch: &str, k: &str) -> Result<usize, ModelError> {
    let full = key(arch, k);
    meta.get_u64(&full)
        .map(|v| v as usize)
        .ok_or(ModelError::MissingKey(full))
}

/// Head counts may be per-layer arrays in newer files; all layers must
/// agree for this engine.
fn head_count(meta: &Metadata, arch: &str, k: &str) -> Result<Option<usize>, ModelError> {
    let full = key(arch, k);
    match meta.get(&full) {
        None => Ok(None),
        Some(v) => {
            if let Some(n) = v.as_u64() {
                return Ok(Some(n as usize));
            }
            let arr = v
                .as_array()
                .ok_or_else(|| ModelError::BadKey(full.clone()))?;
            let vals: Vec<u64> = arr.iter().filter_map(|x| x.as_u64()).collect();
            match vals.first() {
                Some(&first) if vals.len() == arr.len() && vals.iter().all(|&x| x == first) => {
                    Ok(Some(first as usize))
                }
                _ => Err(ModelError::BadKey(full)),
            }
        }
    }
}

impl ModelConfig {
    pub fn from_metadata(meta: &Metadata) -> Result<Self, ModelError> {
        let arch_name = meta
            .get_str("general.architecture")
            .ok_or_else(|| ModelError::MissingKey("general.architecture".into()))?;
        let arch =
            Arch::from_name(arch_name).ok_or_else(|| ModelError::UnknownArch(arch_name.into()))?;
        let a = arch_name;

        let n_layer = required_u(meta, a, "block_count")?;
        let n_embd = required_u(meta, a, "embedding_length")?;
        let n_ff = required_u(meta, a, "feed_forward_length")?;
        let n_head = head_count(meta, a, "attention.head_count")?
            .ok_or_else(|| ModelError::MissingKey(key(a, "attention.head_count")))?;
        let n_head_kv = head_count(meta, a, "attention.head_count_kv")?.unwrap_or(n_head);
        if n_layer == 0 || n_embd == 0 || n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::Invalid(format!(
                "{n_layer} layers, {n_embd} embedding, {n_head} heads, {n_head_kv} KV heads"
            )));
        }
        let default_head_dim = n_embd / n_head;
        let head_dim_k = meta
            .get_u64(&key(a, "attention.key_length"))
            .map_or(default_head_dim, |v| v as usize);
        let head_dim_v = meta
            .get_u64(&key(a, "attention.value_length"))
            .map_or(default_head_dim, |v| v as usize);
        if head_dim_k == 0 || head_dim_v == 0 || !head_dim_k.is_multiple_of(2) {
            return Err(ModelError::Invalid(format!(
                "head dimensions {head_dim_k} (K) and {head_dim_v} (V)"
            )));
        }
        if head_dim_k > MAX_HEAD_DIM || head_dim_v > MAX_HEAD_DIM {
            return Err(ModelError::Unsupported(format!(
                "head dimension {} (at most {MAX_HEAD_DIM})",
                head_dim_k.max(head_dim_v)
            )));
        }
        let n_vocab = meta
            .get_u64(&key(a, "vocab_size"))
            .map(|v| v as usize)
            .or_else(|| meta.get_array("tokenizer.ggml.tokens").map(|t| t.len()))
            .ok_or_else(|| ModelError::MissingKey(key(a, "vocab_size")))?;
        let n_ctx_train = meta
            .get_u64(&key(a, "context_length"))
            .map_or(4096, |v| v as usize);
        let norm_eps = meta
            .get_f32(&key(a, "attention.layer_norm_rms_epsilon"))
            .ok_or_else(|| ModelError::MissingKey(key(a, "attention.layer_norm_rms_epsilon")))?;

        let style = match arch {
            Arch::Llama | Arch::Mistral => RopeStyle::Normal,
            Arch::Qwen2 | Arch::Gemma3 | Arch::Phi3 => RopeStyle::Neox,
        };
        let n_rot = meta
            .get_u64(&key(a, "rope.dimension_count"))
            .map_or(head_dim_k, |v| v as usize);
        if n_rot > head_dim_k || !n_rot.is_multiple_of(2) {
            return Err(ModelError::Invalid(format!(
                "rope dimension {n_rot} for head dimension {head_dim_k}"
            )));
        }
        let freq_base = meta.get_f32(&key(a, "rope.freq_base")).unwrap_or(10_000.0);
        let freq_base_swa = meta
            .get_f32(&key(a, "rope.freq_base_swa"))
            .unwrap_or(10_000.0);
        let freq_scale = match meta.get_str(&key(a, "rope.scaling.type")) {
            Some("linear") => meta
                .get_f32(&key(a, "rope.scaling.factor"))
                .filter(|f| *f > 0.0)
                .map_or(1.0, |f| 1.0 / f),
            // llama3 scaling travels as the rope_freqs tensor; none: no scaling.
            None | Some("none") | Some("llama3") => 1.0,
            Some(other) => return Err(ModelError::Unsupported(format!("rope scaling {other:?}"))),
        };

        // Gemma 3 alternates five windowed layers with one global layer.
        // Mistral-style llama files window every layer, as the model was
        // trained (llama.cpp ignores their window: identical results within
        // it, 4096 tokens for Mistral 7B). Phi-3's window is ignored, as
        // llama.cpp does, since its files do not describe it correctly.
        let window = meta
            .get_u64(&key(a, "attention.sliding_window"))
            .unwrap_or(0) as usize;
        let (sliding_window, swa_layers) = match arch {
            Arch::Gemma3 if window > 0 => {
                let pattern = meta
                    .get_u64(&key(a, "attention.sliding_window_pattern"))
                    .map_or(6, |v| v as usize)
                    .max(1);
                (
                    window,
                    (0..n_layer).map(|il| il % pattern < pattern - 1).collect(),
                )
            }
            Arch::Llama | Arch::Mistral if window > 0 => (window, vec![true; n_layer]),
            _ => (0, vec![false; n_layer]),
        };

        let (q_scale, kq_scale) = match arch {
            // Gemma 3 (but 27B) scales Q by 1/sqrt(head_dim) before attention.
            Arch::Gemma3 => {
                let s = if n_layer == 62 {
                    (n_embd as f32 / n_head as f32).sqrt()
                } else {
                    (head_dim_k as f32).sqrt()
                };
                (1.0 / s, 1.0)
            }
            Arch::Phi3 => (1.0 / (head_dim_k as f32).sqrt(), 1.0),
            _ => (1.0, 1.0 / (head_dim_k as f32).sqrt()),
        };
        let embed_scale = match arch {
            Arch::Gemma3 => (n_embd as f32).sqrt(),
            _ => 1.0,
        };
        let final_logit_softcap = meta
            .get_f32(&key(a, "final_logit_softcapping"))
            .unwrap_or(0.0);
        let activation = match arch {
            Arch::Gemma3 => FfnActivation::GeGlu,
            _ => FfnActivation::SwiGlu,
        };

        Ok(ModelConfig {
            arch,
            name: meta.get_str("general.name").unwrap_or(a).to_string(),
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            n_ctx_train,
            norm_eps,
            rope: RopeConfig {
                style,
                n_rot,
                freq_base,
                freq_base_swa,
                freq_scale,
            },
            sliding_window,
            swa_layers,
            q_scale,
            kq_scale,
            embed_scale,
            final_logit_softcap,
            activation,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// The rope base for layer `il`.
    pub fn rope_base(&self, il: usize) -> f32 {
        if self.swa_layers[il] && self.arch == Arch::Gemma3 {
            self.rope.freq_base_swa
        } else {
            self.rope.freq_base
        }
    }

    /// The attention window of layer `il` (0: full causal attention).
    pub fn window(&self, il: usize) -> usize {
        if self.swa_layers[il] {
            self.sliding_window
        } else {
            0
        }
    }
}
