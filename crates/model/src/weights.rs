//! Tensor names and shapes, checked against the config before loading.

use quarrel_gguf::{GgufFile, TensorInfo};

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::ModelError;

/// Q, K and V projections: separate, or fused into one matrix (Phi-3).
pub enum QkvWeights<W> {
    Split {
        q: W,
        k: W,
        v: W,
        q_bias: Option<W>,
        k_bias: Option<W>,
        v_bias: Option<W>,
    },
    Fused(W),
}

impl<W> QkvWeights<W> {
    /// The first matrix to multiply the normalised input.
    pub fn first(&self) -> &W {
        match self {
            QkvWeights::Split { q, .. } => q,
            QkvWeights::Fused(w) => w,
        }
    }
}

/// Gate and up projections: separate, or fused as [gate | up] (Phi-3).
pub enum GateUpWeights<W> {
    Split { gate: W, up: W },
    Fused(W),
}

impl<W> GateUpWeights<W> {
    /// The first matrix to multiply the normalised input.
    pub fn first(&self) -> &W {
        match self {
            GateUpWeights::Split { gate, .. } => gate,
            GateUpWeights::Fused(w) => w,
        }
    }
}

pub struct LayerWeights<W> {
    pub attn_norm: W,
    pub qkv: QkvWeights<W>,
    pub q_norm: Option<W>,
    pub k_norm: Option<W>,
    pub wo: W,
    pub wo_bias: Option<W>,
    pub post_attn_norm: Option<W>,
    pub ffn_norm: W,
    pub gate_up: GateUpWeights<W>,
    pub down: W,
    pub post_ffn_norm: Option<W>,
    pub rope_freqs: Option<W>,
}

pub struct Weights<W> {
    pub tok_embd: W,
    pub output_norm: W,
    /// None: tied to the token embeddings.
    pub output: Option<W>,
    pub layers: Vec<LayerWeights<W>>,
}

struct Loader<'a, B: Backend> {
    file: &'a GgufFile,
    backend: &'a B,
}

impl<B: Backend> Loader<'_, B> {
    fn info(&self, name: &str, dims: &[usize]) -> Result<Option<&TensorInfo>, ModelError> {
        let Some(info) = self.file.tensor_info(name) else {
            return Ok(None);
        };
        let want: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        // Trailing dims of 1 are implicit in ggml shapes.
        let mut got = info.dims.clone();
        while got.len() > want.len() && got.last() == Some(&1) {
            got.pop();
        }
        if got != want {
            return Err(ModelError::TensorShape {
                name: name.into(),
                expected: want,
                found: info.dims.clone(),
            });
        }
        if !quarrel_quant::is_supported(info.ty) {
            return Err(ModelError::UnsupportedType {
                name: name.into(),
                ty: info.ty,
            });
        }
        Ok(Some(info))
    }

    fn optional(&self, name: &str, dims: &[usize]) -> Result<Option<B::Weight>, ModelError> {
        match self.info(name, dims)? {
            Some(info) => Ok(Some(self.backend.load_weight(self.file, info)?)),
            None => Ok(None),
        }
    }

    fn required(&self, name: &str, dims: &[usize]) -> Result<B::Weight, ModelError> {
        self.optional(name, dims)?
            .ok_or_else(|| ModelError::MissingTensor(name.into()))
    }
}

impl<W> Weights<W> {
    pub fn load<B: Backend<Weight = W>>(
        file: &GgufFile,
        cfg: &ModelConfig,
        backend: &B,
    ) -> Result<Self, ModelError> {
        let l = Loader { file, backend };
        let (e, qd, kd, vd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.k_dim(), cfg.v_dim(), cfg.n_ff);
        let tok_embd = l.required("token_embd.weight", &[e, cfg.n_vocab])?;
        let output_norm = l.required("output_norm.weight", &[e])?;
        let output = l.optional("output.weight", &[e, cfg.n_vocab])?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qkv = match l.optional(&n("attn_qkv.weight"), &[e, qd + kd + vd])? {
                Some(w) => QkvWeights::Fused(w),
                None => QkvWeights::Split {
                    q: l.required(&n("attn_q.weight"), &[e, qd])?,
                    k: l.required(&n("attn_k.weight"), &[e, kd])?,
                    v: l.required(&n("attn_v.weight"), &[e, vd])?,
                    q_bias: l.optional(&n("attn_q.bias"), &[qd])?,
                    k_bias: l.optional(&n("attn_k.bias"), &[kd])?,
                    v_bias: l.optional(&n("attn_v.bias"), &[vd])?,
                },
            };
            let gate_up = match l.optional(&n("ffn_gate.weight"), &[e, ff])? {
                Some(gate) => GateUpWeights::Split {
                    gate,
                    up: l.required(&n("ffn_up.weight"), &[e, ff])?,
                },
                None => GateUpWeights::Fused(l.required(&n("ffn_up.weight"), &[e, 2 * ff])?),
            };
            // rope_freqs is stored once, for every layer.
            let rope_freqs = match l.optional(&n("rope_freqs.weight"), &[cfg.rope.n_rot / 2])? {
                Some(w) => Some(w),
                None => l.optional("rope_freqs.weight", &[cfg.rope.n_rot / 2])?,
            };
            layers.push(LayerWeights {
                attn_norm: l.required(&n("attn_norm.weight"), &[e])?,
                qkv,
                q_norm: l.optional(&n("attn_q_norm.weight"), &[cfg.head_dim_k])?,
                k_norm: l.optional(&n("attn_k_norm.weight"), &[cfg.head_dim_k])?,
                wo: l.required(&n("attn_output.weight"), &[cfg.n_head * cfg.head_dim_v, e])?,
                wo_bias: l.optional(&n("attn_output.bias"), &[e])?,
                post_attn_norm: l.optional(&n("post_attention_norm.weight"), &[e])?,
                ffn_norm: l.required(&n("ffn_norm.weight"), &[e])?,
                gate_up,
                down: l.required(&n("ffn_down.weight"), &[ff, e])?,
                post_ffn_norm: l.optional(&n("post_ffw_norm.weight"), &[e])?,
                rope_freqs,
            });
        }
        Ok(Weights {
            tok_embd,
            output_norm,
            output,
            layers,
        })
    }
}
