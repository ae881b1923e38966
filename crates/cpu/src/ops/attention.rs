//! Attention over the f16 KV cache with an online softmax.
//!
//! Two numeric paths, as in ggml's CPU flash attention (greedy text can
//! hinge on such details, see ggml_math): batches of fewer than 64 queries
//! round Q to f16 and accumulate V·softmax in f16, one key at a time;
//! larger batches work in f32, 64 keys per tile.

use std::ops::Range;

use half::f16;
use half::slice::HalfFloatSliceExt;
use quarrel_model::config::MAX_HEAD_DIM;
use quarrel_model::{AttnParams, SeqRows};
use rayon::prelude::*;

use crate::ops::ggml_math::{dot_f16, expf, mad_f16, mad_f32_f16, scale_f16};
use crate::tensor::{CpuKvCache, CpuTensor};

/// Queries of one sequence from which the f32 tiled path is used.
const TILE_Q: usize = 64;
const TILE_KV: usize = 64;
/// ggml pads the cache length it attends over to 256 positions, and splits
/// a single query's keys across threads from 512 (see attend_f16).
const KV_PAD: usize = 256;
const SPLIT_KV_MIN: usize = 512;
const SPLIT_KV_CHUNKS: usize = 2;

/// Writes the batch's K and V into their cache slots.
fn store_kv(
    k: &CpuTensor,
    v: &CpuTensor,
    cache: &mut CpuKvCache,
    layer: usize,
    positions: &[u32],
    seqs: &[SeqRows<'_>],
) {
    let (kd, vd) = (cache.k_dim, cache.v_dim);
    let (kc, vc) = (&mut cache.k[layer], &mut cache.v[layer]);
    for seq in seqs {
        for r in seq.rows.clone() {
            let slot = seq.slots[positions[r] as usize] as usize;
            kc[slot * kd..][..kd].convert_from_f32_slice(&k.data[r * kd..][..kd]);
            vc[slot * vd..][..vd].convert_from_f32_slice(&v.data[r * vd..][..vd]);
        }
    }
}

/// Keys visible to a query: the sequence's positions `lo..=pos`.
struct Visible<'a> {
    slots: &'a [u32],
    lo: usize,
    pos: usize,
}

impl Visible<'_> {
    fn new<'a>(slots: &'a [u32], pos: u32, window: usize) -> Visible<'a> {
        let pos = pos as usize;
        let lo = if window > 0 {
            (pos + 1).saturating_sub(window)
        } else {
            0
        };
        Visible { slots, lo, pos }
    }
}

struct HeadCtx<'a> {
    k_cache: &'a [f16],
    v_cache: &'a [f16],
    k_dim: usize,
    v_dim: usize,
    kv_head: usize,
    p: &'a AttnParams,
}

impl HeadCtx<'_> {
    fn key(&self, slot: u32) -> &[f16] {
        let dk = self.p.head_dim_k;
        &self.k_cache[slot as usize * self.k_dim + self.kv_head * dk..][..dk]
    }

    fn value(&self, slot: u32) -> &[f16] {
        let dv = self.p.head_dim_v;
        &self.v_cache[slot as usize * self.v_dim + self.kv_head * dv..][..dv]
    }

    /// ggml's one-key-at-a-time path over the keys at positions `keys`:
    /// Q and the accumulator in f16. Returns the running max and sum, and
    /// the unnormalised accumulator in `acc_out`.
    fn attend_f16_chunk(
        &self,
        q16: &[f16],
        vis: &Visible<'_>,
        keys: Range<usize>,
        acc_out: &mut [f32],
    ) -> (f32, f32) {
        let mut acc = [f16::ZERO; MAX_HEAD_DIM];
        let acc = &mut acc[..self.p.head_dim_v];
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        let keys = keys.start.max(vis.lo)..keys.end.min(vis.pos + 1);
        for &slot in &vis.slots[keys] {
            let score = dot_f16(q16, self.key(slot)) * self.p.kq_scale;
            let (mut ms, mut vs) = (1.0f32, 1.0f32);
            if score > m {
                ms = (m - score).exp();
                m = score;
                scale_f16(acc, ms);
            } else {
                vs = (score - m).exp();
            }
            mad_f16(acc, self.value(slot), vs);
            s = s.mul_add(ms, vs);
        }
        for (o, a) in acc_out.iter_mut().zip(acc.iter()) {
            *o = a.to_f32();
        }
        (m, s)
    }

    /// One query through ggml's f16 path. Past 512 cache positions ggml
    /// splits the keys in one chunk per thread and merges the partial
    /// softmaxes in f32; the split follows the reference machine's two
    /// threads, so results do not depend on our own thread count.
    fn attend_f16(&self, q: &[f32], vis: &Visible<'_>, n_kv: usize, out: &mut [f32]) {
        let mut q16 = [f16::ZERO; MAX_HEAD_DIM];
        for (d, &x) in q16.iter_mut().zip(q) {
            *d = f16::from_f32(x);
        }
        let q16 = &q16[..q.len()];
        if n_kv < SPLIT_KV_MIN {
            let (_, s) = self.attend_f16_chunk(q16, vis, 0..n_kv, out);
            let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
            out.iter_mut().for_each(|o| *o *= inv);
            return;
        }
        let chunk = n_kv.div_ceil(SPLIT_KV_CHUNKS);
        let mut part = [0f32; MAX_HEAD_DIM];
        let part = &mut part[..out.len()];
        out.iter_mut().for_each(|o| *o = 0.0);
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        for c in 0..SPLIT_KV_CHUNKS {
            let (mc, sc) = self.attend_f16_chunk(q16, vis, c * chunk..(c + 1) * chunk, part);
            if sc == 0.0 {
                continue;
            }
            let m_new = m.max(mc);
            let (old, new) = ((m - m_new).exp(), (mc - m_new).exp());
            for (o, &p) in out.iter_mut().zip(part.iter()) {
                *o = o.mul_add(old, p * new);
            }
            s = s.mul_add(old, sc * new);
            m = m_new;
        }
        if s != 0.0 {
            let inv = 1.0 / s;
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }

    /// ggml's tiled path: f32 throughout, 64 keys per tile aligned to
    /// absolute cache positions: Q·K as a sequential FMA chain, the tile's
    /// softmax with ggml's vector expf summed 8 lanes at a time into f64,
    /// then V accumulated by FMA key after key.
    fn attend_f32(&self, q: &[f32], vis: &Visible<'_>, out: &mut [f32]) {
        let mut acc = [0f32; MAX_HEAD_DIM];
        let acc = &mut acc[..self.p.head_dim_v];
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        let mut start = vis.lo / TILE_KV * TILE_KV;
        while start <= vis.pos {
            // Masked keys of the tile keep -inf and weigh exactly zero.
            let mut probs = [f32::NEG_INFINITY; TILE_KV];
            let first = start.max(vis.lo);
            let end = (start + TILE_KV).min(vis.pos + 1);
            for j in first..end {
                let dot = q
                    .iter()
                    .zip(self.key(vis.slots[j]))
                    .fold(0.0f32, |a, (&q, k)| k.to_f32().mul_add(q, a));
                probs[j - start] = dot * self.p.kq_scale;
            }
            let tile_max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m.max(tile_max);
            if m_new > m {
                let ms = (m - m_new).exp();
                acc.iter_mut().for_each(|a| *a *= ms);
                s *= ms;
            }
            m = m_new;
            let mut tile_sum = 0.0f64;
            for group in probs.chunks_exact_mut(8) {
                for p in group.iter_mut() {
                    *p = expf(*p - m);
                }
                let g = &*group;
                let sum8 = ((g[4] + g[0]) + (g[6] + g[2])) + ((g[5] + g[1]) + (g[7] + g[3]));
                tile_sum += sum8 as f64;
            }
            s = (s as f64 + tile_sum) as f32;
            for j in first..end {
                mad_f32_f16(acc, self.value(vis.slots[j]), probs[j - start]);
            }
            start += TILE_KV;
        }
        let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
        for (o, a) in out.iter_mut().zip(acc.iter()) {
            *o = a * inv;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    cache: &mut CpuKvCache,
    layer: usize,
    positions: &[u32],
    seqs: &[SeqRows<'_>],
    p: &AttnParams,
    out: &mut CpuTensor,
) {
    store_kv(k, v, cache, layer, positions, seqs);
    out.rows = q.rows;
    let group = p.n_head / p.n_head_kv;
    let (k_cache, v_cache) = (&cache.k[layer][..], &cache.v[layer][..]);
    let (k_dim, v_dim) = (cache.k_dim, cache.v_dim);
    let n_slots = k_cache.len() / k_dim;
    let q_cols = q.cols;
    for seq in seqs {
        let rows = seq.rows.clone();
        // The path follows the sequence's own rows, as llama.cpp's follows
        // the batch of a lone sequence, so a sequence's numbers do not
        // depend on what else shares the batch.
        let f32_path = rows.len() >= TILE_Q;
        let out_rows = &mut out.data[rows.start * out.cols..rows.end * out.cols];
        out_rows
            .par_chunks_mut(p.head_dim_v)
            .enumerate()
            .for_each(|(i, o)| {
                let (r, h) = (rows.start + i / p.n_head, i % p.n_head);
                let ctx = HeadCtx {
                    k_cache,
                    v_cache,
                    k_dim,
                    v_dim,
                    kv_head: h / group,
                    p,
                };
                let qh = &q.data[r * q_cols + h * p.head_dim_k..][..p.head_dim_k];
                let vis = Visible::new(seq.slots, positions[r], p.window);
                if f32_path {
                    ctx.attend_f32(qh, &vis, o);
                } else {
                    let n_kv = (positions[r] as usize + 1)
                        .next_multiple_of(KV_PAD)
                        .min(n_slots);
                    ctx.attend_f16(qh, &vis, n_kv, o);
                }
            });
    }
}
