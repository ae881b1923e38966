//! The forward pass, written once for every architecture and backend.
//!
//! embed → for each layer: norm, QKV (+bias), Q/K norm, RoPE, attention
//! over the KV cache, output projection (+post-norm), residual; norm, gated
//! FFN (+post-norm), residual → final norm → logits. Every intermediate is
//! named so that `--dump-activations` can write it for layer-by-layer diffs.

use quarrel_gguf::GgufFile;

use crate::backend::{AttnParams, Backend, Kernels, RopeParams, RowGroup, SeqRows};
use crate::config::ModelConfig;
use crate::weights::{GateUpWeights, LayerWeights, QkvWeights, Weights};
use crate::ModelError;

/// Tokens to run through the model in one pass. Prefill of one sequence
/// and decode of many are the same call with different shapes.
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [u32],
    /// In row order, covering every row once.
    pub seqs: &'a [SeqRows<'a>],
    /// Rows whose logits are wanted, in the order they are returned.
    pub outputs: &'a [usize],
}

/// Receives named intermediates (`layer` is None outside the layers).
pub trait ActivationSink {
    fn record(&mut self, name: &str, layer: Option<usize>, rows: usize, cols: usize, data: &[f32]);
}

/// Activation buffers, allocated once for the largest batch.
pub struct Scratch<B: Backend> {
    max_rows: usize,
    max_outputs: usize,
    /// Rows of each sequence, and its output rows (see [`Backend::matmul`]).
    groups: Vec<RowGroup>,
    out_groups: Vec<RowGroup>,
    x: B::Tensor,
    xn: B::Tensor,
    q: B::Tensor,
    k: B::Tensor,
    v: B::Tensor,
    qkv: Option<B::Tensor>,
    attn: B::Tensor,
    proj: B::Tensor,
    gate: B::Tensor,
    up: Option<B::Tensor>,
    act: B::Tensor,
    ffn_out: B::Tensor,
    out_x: B::Tensor,
    logits: B::Tensor,
}

pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub weights: Weights<B::Weight>,
    pub backend: B,
}

impl<B: Backend> Model<B> {
    pub fn load(file: &GgufFile, backend: B) -> Result<Self, ModelError> {
        let config = ModelConfig::from_metadata(file.metadata())?;
        let weights = Weights::load(file, &config, &backend)?;
        Ok(Model {
            config,
            weights,
            backend,
        })
    }

    pub fn new_scratch(&self, max_rows: usize, max_outputs: usize) -> Scratch<B> {
        let c = &self.config;
        let b = &self.backend;
        let t = |cols| b.new_tensor(max_rows, cols);
        let fused_qkv = matches!(self.weights.layers[0].qkv, QkvWeights::Fused(_));
        let fused_ffn = matches!(self.weights.layers[0].gate_up, GateUpWeights::Fused(_));
        Scratch {
            max_rows,
            max_outputs,
            groups: Vec::with_capacity(max_rows),
            out_groups: Vec::with_capacity(max_outputs),
            x: t(c.n_embd),
            xn: t(c.n_embd),
            q: t(c.q_dim()),
            k: t(c.k_dim()),
            v: t(c.v_dim()),
            qkv: fused_qkv.then(|| t(c.q_dim() + c.k_dim() + c.v_dim())),
            attn: t(c.n_head * c.head_dim_v),
            proj: t(c.n_embd),
            gate: t(if fused_ffn { 2 * c.n_ff } else { c.n_ff }),
            up: (!fused_ffn).then(|| t(c.n_ff)),
            act: t(c.n_ff),
            ffn_out: t(c.n_embd),
            out_x: b.new_tensor(max_outputs, c.n_embd),
            logits: b.new_tensor(max_outputs, c.n_vocab),
        }
    }

    pub fn new_kv_cache(&self, n_slots: usize) -> B::KvCache {
        let c = &self.config;
        self.backend
            .new_kv_cache(c.n_layer, n_slots, c.k_dim(), c.v_dim())
    }

    /// Bytes per position of [`Model::new_kv_cache`]'s cache.
    pub fn kv_slot_bytes(&self) -> usize {
        let c = &self.config;
        self.backend.kv_slot_bytes(c.n_layer, c.k_dim(), c.v_dim())
    }

    /// Runs `batch`; the logits of `batch.outputs` are then in `scratch`
    /// (read them with [`Model::read_logits`]).
    pub fn forward(
        &self,
        batch: &Batch<'_>,
        cache: &mut B::KvCache,
        s: &mut Scratch<B>,
        sink: Option<&mut (dyn ActivationSink + '_)>,
    ) -> Result<(), ModelError> {
        let n = batch.tokens.len();
        if n == 0 || n > s.max_rows || batch.positions.len() != n {
            return Err(ModelError::Batch(format!(
                "{n} tokens, {} positions, room for {}",
                batch.positions.len(),
                s.max_rows
            )));
        }
        if batch.outputs.len() > s.max_outputs || batch.outputs.iter().any(|&r| r >= n) {
            return Err(ModelError::Batch(format!(
                "{} output rows requested of {n} (room for {})",
                batch.outputs.len(),
                s.max_outputs
            )));
        }
        group_rows(batch, &mut s.groups, &mut s.out_groups)?;
        let b = &self.backend;
        b.begin_batch(batch)?;
        if sink.is_some() {
            // Reads in between: run the operations as they come.
            self.operations(batch, cache, s, sink)
        } else {
            b.run_recorded(&mut || self.operations(batch, cache, s, None))
        }
    }

    /// The forward pass's operations, after the batch has been checked and
    /// handed to the backend.
    fn operations(
        &self,
        batch: &Batch<'_>,
        cache: &mut B::KvCache,
        s: &mut Scratch<B>,
        mut sink: Option<&mut (dyn ActivationSink + '_)>,
    ) -> Result<(), ModelError> {
        let n = batch.tokens.len();
        let (b, c, w) = (&self.backend, &self.config, &self.weights);
        for t in [
            &mut s.x,
            &mut s.xn,
            &mut s.q,
            &mut s.k,
            &mut s.v,
            &mut s.attn,
            &mut s.proj,
            &mut s.gate,
            &mut s.act,
            &mut s.ffn_out,
        ] {
            b.set_rows(t, n);
        }
        for t in [s.qkv.as_mut(), s.up.as_mut()].into_iter().flatten() {
            b.set_rows(t, n);
        }
        let mut dump = |name: &str, layer: Option<usize>, t: &B::Tensor| {
            if let Some(sink) = sink.as_deref_mut() {
                let (rows, cols) = b.shape(t);
                let mut host = vec![0.0; rows * cols];
                b.read(t, &mut host)?;
                sink.record(name, layer, rows, cols, &host);
            }
            Ok::<(), ModelError>(())
        };

        b.embed(&w.tok_embd, batch.tokens, &mut s.x);
        if c.embed_scale != 1.0 {
            b.scale(&mut s.x, c.embed_scale);
        }
        dump("inp_embd", None, &s.x)?;

        for (il, layer) in w.layers.iter().enumerate() {
            let l = Some(il);
            // The previous layer's residual add goes with this norm.
            let residual = (il > 0).then_some(&s.ffn_out);
            let next = layer.qkv.first();
            b.residual_norm(
                &mut s.x,
                residual,
                &layer.attn_norm,
                c.norm_eps,
                &mut s.xn,
                next,
            );
            if il > 0 {
                dump("l_out", Some(il - 1), &s.x)?;
            }
            dump("attn_norm", l, &s.xn)?;

            self.project_qkv(layer, s);
            if let Some(qn) = &layer.q_norm {
                b.rms_norm_inplace(&mut s.q, qn, c.norm_eps);
            }
            if let Some(kn) = &layer.k_norm {
                b.rms_norm_inplace(&mut s.k, kn, c.norm_eps);
            }
            let rope = RopeParams {
                style: c.rope.style,
                n_heads: c.n_head,
                head_dim: c.head_dim_k,
                n_rot: c.rope.n_rot,
                freq_base: c.rope_base(il),
                freq_scale: c.rope.freq_scale,
                freq_factors: layer.rope_freqs.as_ref(),
            };
            b.rope_store(
                &mut s.q,
                &mut s.k,
                &s.v,
                cache,
                il,
                batch.positions,
                batch.seqs,
                &rope,
                c.n_head_kv,
            );
            if c.q_scale != 1.0 {
                b.scale(&mut s.q, c.q_scale);
            }
            dump("q", l, &s.q)?;
            dump("k", l, &s.k)?;
            dump("v", l, &s.v)?;

            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim_k: c.head_dim_k,
                head_dim_v: c.head_dim_v,
                kq_scale: c.kq_scale,
                window: c.window(il),
            };
            b.attention(
                &s.q,
                cache,
                il,
                batch.positions,
                batch.seqs,
                &params,
                &mut s.attn,
            );
            dump("attn_out", l, &s.attn)?;

            b.matmul(&s.attn, &layer.wo, &mut s.proj, &s.groups);
            if let Some(bias) = &layer.wo_bias {
                b.add_bias(&mut s.proj, bias);
            }
            if let Some(pn) = &layer.post_attn_norm {
                b.rms_norm_inplace(&mut s.proj, pn, c.norm_eps);
            }
            dump("attn_proj", l, &s.proj)?;
            let next = layer.gate_up.first();
            b.residual_norm(
                &mut s.x,
                Some(&s.proj),
                &layer.ffn_norm,
                c.norm_eps,
                &mut s.xn,
                next,
            );
            dump("ffn_inp", l, &s.x)?;
            dump("ffn_norm", l, &s.xn)?;
            match &layer.gate_up {
                GateUpWeights::Split { gate, up } => {
                    let up_t = s.up.as_mut().expect("scratch matches the weights");
                    b.matmul_many(
                        &s.xn,
                        &[gate, up],
                        &[None, None],
                        &mut [&mut s.gate, &mut *up_t],
                        &s.groups,
                    );
                    dump("ffn_gate", l, &s.gate)?;
                    dump("ffn_up", l, up_t)?;
                    b.glu(&s.gate, Some(up_t), c.activation, &mut s.act, &layer.down);
                }
                GateUpWeights::Fused(gate_up) => {
                    b.matmul(&s.xn, gate_up, &mut s.gate, &s.groups);
                    dump("ffn_gate_up", l, &s.gate)?;
                    b.glu(&s.gate, None, c.activation, &mut s.act, &layer.down);
                }
            }
            dump("ffn_act", l, &s.act)?;
            b.matmul(&s.act, &layer.down, &mut s.ffn_out, &s.groups);
            if let Some(pn) = &layer.post_ffn_norm {
                b.rms_norm_inplace(&mut s.ffn_out, pn, c.norm_eps);
            }
            dump("ffn_out", l, &s.ffn_out)?;
        }
        if let Some(last) = w.layers.len().checked_sub(1) {
            b.add(&mut s.x, &s.ffn_out);
            dump("l_out", Some(last), &s.x)?;
        }

        b.set_rows(&mut s.out_x, batch.outputs.len());
        b.set_rows(&mut s.logits, batch.outputs.len());
        if batch.outputs.is_empty() {
            return Ok(());
        }
        b.gather_rows(&s.x, batch.outputs, &mut s.out_x);
        b.rms_norm_inplace(&mut s.out_x, &w.output_norm, c.norm_eps);
        dump("result_norm", None, &s.out_x)?;
        b.matmul(
            &s.out_x,
            w.output.as_ref().unwrap_or(&w.tok_embd),
            &mut s.logits,
            &s.out_groups,
        );
        if c.final_logit_softcap > 0.0 {
            b.softcap(&mut s.logits, c.final_logit_softcap);
        }
        dump("result_output", None, &s.logits)?;
        Ok(())
    }

    fn project_qkv(&self, layer: &LayerWeights<B::Weight>, s: &mut Scratch<B>) {
        let b = &self.backend;
        match &layer.qkv {
            QkvWeights::Split {
                q,
                k,
                v,
                q_bias,
                k_bias,
                v_bias,
            } => {
                b.matmul_many(
                    &s.xn,
                    &[q, k, v],
                    &[q_bias.as_ref(), k_bias.as_ref(), v_bias.as_ref()],
                    &mut [&mut s.q, &mut s.k, &mut s.v],
                    &s.groups,
                );
            }
            QkvWeights::Fused(wt) => {
                let qkv = s.qkv.as_mut().expect("scratch matches the weights");
                b.matmul(&s.xn, wt, qkv, &s.groups);
                let (qd, kd) = (self.config.q_dim(), self.config.k_dim());
                b.copy_cols(qkv, 0, &mut s.q);
                b.copy_cols(qkv, qd, &mut s.k);
                b.copy_cols(qkv, qd + kd, &mut s.v);
            }
        }
    }

    /// Copies the logits of the last forward pass (outputs × vocab).
    pub fn read_logits(&self, s: &Scratch<B>, dst: &mut [f32]) -> Result<(), ModelError> {
        self.backend.read(&s.logits, dst)
    }

    /// The greedy token of each output row of the last forward pass,
    /// chosen where the logits are (only the ids cross from a device).
    pub fn argmax_logits(&self, s: &Scratch<B>, dst: &mut [u32]) -> Result<(), ModelError> {
        self.backend.argmax(&s.logits, dst)
    }
}

/// The batch's row groups (one per [`SeqRows`]), and those of its output
/// rows: for a sequence computed as a batch, the runs of its outputs; rows
/// computed on their own take the single-token kernels as outputs.
fn group_rows(
    batch: &Batch<'_>,
    groups: &mut Vec<RowGroup>,
    out_groups: &mut Vec<RowGroup>,
) -> Result<(), ModelError> {
    groups.clear();
    out_groups.clear();
    let mut next = 0;
    for seq in batch.seqs {
        if seq.rows.start != next || seq.rows.is_empty() {
            return Err(ModelError::Batch(format!(
                "sequence rows {:?} do not follow row {next}",
                seq.rows
            )));
        }
        next = seq.rows.end;
        groups.push(RowGroup {
            rows: seq.rows.clone(),
            kernels: seq.kernels,
        });
    }
    if next != batch.tokens.len() {
        return Err(ModelError::Batch(format!(
            "sequences cover {next} of {} rows",
            batch.tokens.len()
        )));
    }
    let mut g = 0;
    let mut prev: Option<(usize, usize)> = None; // (row, group)
    for (i, &row) in batch.outputs.iter().enumerate() {
        if prev.is_some_and(|(r, _)| r >= row) {
            return Err(ModelError::Batch("output rows must ascend".into()));
        }
        while groups[g].rows.end <= row {
            g += 1;
        }
        let kernels = match groups[g].kernels {
            Kernels::Batch => Kernels::Batch,
            Kernels::PromptRow | Kernels::TokenRow => Kernels::TokenRow,
        };
        match out_groups.last_mut() {
            Some(o) if prev.is_some_and(|(_, pg)| pg == g) => o.rows.end = i + 1,
            _ => out_groups.push(RowGroup {
                rows: i..i + 1,
                kernels,
            }),
        }
        prev = Some((row, g));
    }
    Ok(())
}
