//! The narrow interface between the model and a compute backend.
//!
//! Activations are row-major f32 matrices of `rows` tokens by `cols`
//! features; weights stay in their GGUF block layout. A backend fuses
//! internally as it sees fit; the model only names the operations.

use std::ops::Range;

use quarrel_gguf::{GgufFile, TensorInfo};

use crate::config::{FfnActivation, RopeStyle};
use crate::model::Batch;
use crate::ModelError;

/// Rotary embedding of one Q or K tensor.
#[derive(Clone, Copy, Debug)]
pub struct RopeParams<'a, W> {
    pub style: RopeStyle,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    /// Per-frequency divisors (Llama 3 scaling, Phi-3 long rope).
    pub freq_factors: Option<&'a W>,
}

/// A sequence's run of at least this many rows in a batch attends through
/// ggml's f32 tiled path, a shorter one through its f16 path (Q rounded to
/// f16, V accumulated in f16); every backend follows the same split so that
/// their numbers agree.
pub const TILED_ATTENTION_MIN_ROWS: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub kq_scale: f32,
    /// Keys at distance >= window are masked (0: no window).
    pub window: usize,
}

/// How the kernels that compute a run of rows are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// As llama.cpp chooses them for a lone batch of that many rows (its
    /// numbers, which depend on how a sequence is split into batches).
    Batch,
    /// The same kernels for a row whatever it is batched with: prompt
    /// tokens through the prompt kernels (those llama.cpp runs for most
    /// rows of a long prompt), so a row's numbers never depend on chunking,
    /// batching or what the prefix cache supplied.
    PromptRow,
    /// Likewise, through the single-token kernels (generated tokens, and
    /// prompts too short to repay the prompt kernels). Several such rows
    /// share each weight block's unpacking, with the same bits.
    TokenRow,
}

/// One sequence's share of a batch: its token rows and, for every
/// position from 0 to its last one in the batch, the KV-cache slot that
/// holds (or receives) that position. A sequence may have several
/// consecutive entries (rows of different [`Kernels`]).
#[derive(Clone, Debug)]
pub struct SeqRows<'a> {
    pub rows: Range<usize>,
    pub slots: &'a [u32],
    pub kernels: Kernels,
}

/// A run of rows of a matmul and how its kernels are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowGroup {
    pub rows: Range<usize>,
    pub kernels: Kernels,
}

pub trait Backend: Send + Sync {
    type Weight: Send + Sync;
    type Tensor: Send;
    type KvCache: Send;

    /// A human-readable description ("cpu (avx2, 2 threads)").
    fn describe(&self) -> String;

    /// Makes a tensor of `file` usable (zero-copy where possible).
    fn load_weight(&self, file: &GgufFile, info: &TensorInfo) -> Result<Self::Weight, ModelError>;

    /// Allocates an activation matrix with room for `max_rows` rows.
    fn new_tensor(&self, max_rows: usize, cols: usize) -> Self::Tensor;
    /// Sets the live row count (at most the capacity); never allocates.
    fn set_rows(&self, t: &mut Self::Tensor, rows: usize);
    /// (rows, cols)
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);

    /// A KV cache of `n_slots` positions per layer, K rows of `k_dim`
    /// and V rows of `v_dim` values.
    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_slots: usize,
        k_dim: usize,
        v_dim: usize,
    ) -> Self::KvCache;
    /// Bytes that one slot of such a cache takes, all layers together.
    fn kv_slot_bytes(&self, n_layer: usize, k_dim: usize, v_dim: usize) -> usize;
    /// The shortest prompt whose rows run the prompt kernels
    /// ([`Kernels::PromptRow`]); a shorter one goes through the token
    /// kernels. `usize::MAX` where the two are the same kernels.
    fn prompt_kernels_min_rows(&self) -> usize;

    /// Called at the start of each forward pass. The slices that `embed`,
    /// `rope`, `attention` and `gather_rows` then receive are this batch's;
    /// a device backend copies them over once here and uses its copy (so it
    /// runs one batch at a time). An error is one the backend met, in this
    /// call or since the last check.
    fn begin_batch(&self, _batch: &Batch<'_>) -> Result<(), ModelError> {
        Ok(())
    }

    /// Runs `ops`, the operations of one forward pass after `begin_batch`.
    /// A device backend may record the work they queue and replay the
    /// recording when the same work comes again (CUDA graphs): what changes
    /// from step to step (tokens, positions, slots) is in the batch it copied.
    fn run_recorded(
        &self,
        ops: &mut dyn FnMut() -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        ops()
    }

    /// out[i] = dequantized row `tokens[i]` of `table`.
    fn embed(&self, table: &Self::Weight, tokens: &[u32], out: &mut Self::Tensor);
    fn scale(&self, x: &mut Self::Tensor, s: f32);
    /// RMS-normalises each run of `w.len()` values of every row (a whole
    /// row, or one head for Q/K norms) and multiplies by `w`.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Weight, eps: f32, out: &mut Self::Tensor);
    fn rms_norm_inplace(&self, x: &mut Self::Tensor, w: &Self::Weight, eps: f32);
    /// x += residual (when given), then out = rms_norm(x) · w, where out
    /// is about to be multiplied by `next` (a backend may prepare it for
    /// that weight now, as its quantized activations).
    fn residual_norm(
        &self,
        x: &mut Self::Tensor,
        residual: Option<&Self::Tensor>,
        w: &Self::Weight,
        eps: f32,
        out: &mut Self::Tensor,
        _next: &Self::Weight,
    ) {
        if let Some(y) = residual {
            self.add(x, y);
        }
        self.rms_norm(x, w, eps, out);
    }
    /// out = x · wᵀ, w of shape [out cols][x cols] in its block layout.
    /// `groups` splits the rows of `x` into contiguous runs, in order, at
    /// least one per sequence; kernels are chosen per group as its
    /// [`Kernels`] says, so that what a sequence computes does not depend
    /// on what it is batched with.
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        out: &mut Self::Tensor,
        groups: &[RowGroup],
    );
    /// outs[i] = x · ws[i]ᵀ (+ biases[i], where given) for weights that
    /// share their input (Q, K and V; gate and up), which a backend may
    /// compute together.
    fn matmul_many(
        &self,
        x: &Self::Tensor,
        ws: &[&Self::Weight],
        biases: &[Option<&Self::Weight>],
        outs: &mut [&mut Self::Tensor],
        groups: &[RowGroup],
    ) {
        matmul_each(self, x, ws, biases, outs, groups);
    }
    fn add_bias(&self, x: &mut Self::Tensor, b: &Self::Weight);
    /// dst = src[:, start .. start + dst.cols] (splits fused projections).
    fn copy_cols(&self, src: &Self::Tensor, start: usize, dst: &mut Self::Tensor);
    fn rope(&self, x: &mut Self::Tensor, positions: &[u32], p: &RopeParams<'_, Self::Weight>);
    /// Writes K and V of every row into its slot in layer `layer` of the
    /// cache.
    #[allow(clippy::too_many_arguments)]
    fn kv_store(
        &self,
        k: &Self::Tensor,
        v: &Self::Tensor,
        cache: &mut Self::KvCache,
        layer: usize,
        positions: &[u32],
        seqs: &[SeqRows<'_>],
    );
    /// Rotates q as `p` says and k likewise over its `k_heads` heads, then
    /// stores k and v as [`Backend::kv_store`] does.
    #[allow(clippy::too_many_arguments)]
    fn rope_store(
        &self,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        v: &Self::Tensor,
        cache: &mut Self::KvCache,
        layer: usize,
        positions: &[u32],
        seqs: &[SeqRows<'_>],
        p: &RopeParams<'_, Self::Weight>,
        k_heads: usize,
    ) {
        self.rope(q, positions, p);
        let pk = RopeParams {
            n_heads: k_heads,
            ..*p
        };
        self.rope(k, positions, &pk);
        self.kv_store(k, v, cache, layer, positions, seqs);
    }
    /// Attends each row of `q` to its sequence's causal past in layer
    /// `layer` of the cache, where the batch's own K and V are already
    /// stored.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvCache,
        layer: usize,
        positions: &[u32],
        seqs: &[SeqRows<'_>],
        p: &AttnParams,
        out: &mut Self::Tensor,
    );
    /// out = act(gate) * up; with `up` None, `gate` holds [gate | up]. Out
    /// is about to be multiplied by `next` (see [`Backend::residual_norm`]).
    fn glu(
        &self,
        gate: &Self::Tensor,
        up: Option<&Self::Tensor>,
        act: FfnActivation,
        out: &mut Self::Tensor,
        next: &Self::Weight,
    );
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor);
    /// out[i] = x[rows[i]]
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize], out: &mut Self::Tensor);
    /// x = c * tanh(x / c)
    fn softcap(&self, x: &mut Self::Tensor, c: f32);
    /// Copies the live rows to the host, row-major (waiting for the
    /// device); an error is one the backend met since the last check.
    fn read(&self, t: &Self::Tensor, dst: &mut [f32]) -> Result<(), ModelError>;
    /// The index of each live row's largest value, as
    /// [`crate::sampler::argmax`] picks it (greedy decoding without
    /// copying the logits), into `dst` (one per row); errors as `read`.
    fn argmax(&self, t: &Self::Tensor, dst: &mut [u32]) -> Result<(), ModelError>;
}

/// [`Backend::matmul_many`] one weight at a time: each matmul, then its
/// bias (the default, and where a backend cannot share the work).
pub fn matmul_each<B: Backend + ?Sized>(
    b: &B,
    x: &B::Tensor,
    ws: &[&B::Weight],
    biases: &[Option<&B::Weight>],
    outs: &mut [&mut B::Tensor],
    groups: &[RowGroup],
) {
    assert!(
        ws.len() == outs.len() && ws.len() == biases.len(),
        "one output and bias per weight"
    );
    for ((w, bias), out) in ws.iter().zip(biases).zip(outs.iter_mut()) {
        b.matmul(x, w, out, groups);
        if let Some(bias) = bias {
            b.add_bias(out, bias);
        }
    }
}
