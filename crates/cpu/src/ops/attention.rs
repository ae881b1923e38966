//! Attention over the f16 KV cache with an online softmax.
//!
//! Two numeric paths, as in ggml's CPU flash attention (greedy text can
//! hinge on such details, see ggml_math): batches of fewer than 64 queries
//! round Q to f16 and accumulate V·softmax in f16, one key at a time;
//! larger batches work in f32, 64 keys per tile.

use std::ops::Range;

use crate::pool::Pool;
use half::f16;
use half::slice::HalfFloatSliceExt;
use quarrel_model::config::MAX_HEAD_DIM;
use quarrel_model::{AttnParams, SeqRows, TILED_ATTENTION_MIN_ROWS};

use crate::ops::ggml_math::{dot_f16, exp_shifted, mad_f16, mad_f32_f16, scale_f16, tile_scores};
use crate::tensor::{CpuKvCache, CpuTensor};

const TILE_KV: usize = 64;
/// Query rows per task of the tiled path.
const BLOCK_ROWS: usize = 16;
/// ggml pads the cache length it attends over to 256 positions, and splits
/// a single query's keys across threads from 512 (see attend_f16).
const KV_PAD: usize = 256;
const SPLIT_KV_MIN: usize = 512;
const SPLIT_KV_CHUNKS: usize = 2;

/// Writes the batch's K and V into their cache slots.
pub fn store_kv(
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

/// One layer's K and V rows, one per cache slot.
#[derive(Clone, Copy)]
struct LayerKv<'a> {
    k: &'a [f16],
    v: &'a [f16],
    k_dim: usize,
    v_dim: usize,
}

impl<'a> LayerKv<'a> {
    fn of(cache: &'a CpuKvCache, layer: usize) -> Self {
        LayerKv {
            k: &cache.k[layer],
            v: &cache.v[layer],
            k_dim: cache.k_dim,
            v_dim: cache.v_dim,
        }
    }

    fn head(self, kv_head: usize, p: &'a AttnParams) -> HeadCtx<'a> {
        HeadCtx {
            kv: self,
            kv_head,
            p,
        }
    }
}

/// One KV head of one layer.
struct HeadCtx<'a> {
    kv: LayerKv<'a>,
    kv_head: usize,
    p: &'a AttnParams,
}

impl HeadCtx<'_> {
    fn key(&self, slot: u32) -> &[f16] {
        let dk = self.p.head_dim_k;
        &self.kv.k[slot as usize * self.kv.k_dim + self.kv_head * dk..][..dk]
    }

    fn value(&self, slot: u32) -> &[f16] {
        let dv = self.p.head_dim_v;
        &self.kv.v[slot as usize * self.kv.v_dim + self.kv_head * dv..][..dv]
    }

    /// One query's step of ggml's tiled path over the keys at positions
    /// `first..end` of the tile starting at `start`, whose keys `kt` holds
    /// transposed: Q·K as a sequential FMA chain per key, the tile's
    /// softmax with ggml's vector expf summed 8 lanes at a time into f64,
    /// then V accumulated by FMA key after key into `acc`, with the
    /// running max `m` and sum `s`.
    #[allow(clippy::too_many_arguments)]
    fn tile_step(
        &self,
        slots: &[u32],
        qh: &[f32],
        kt: &[f32],
        start: usize,
        keys: Range<usize>,
        acc: &mut [f32],
        m: &mut f32,
        s: &mut f32,
    ) {
        let mut probs = [0f32; TILE_KV];
        tile_scores(kt, qh, &mut probs);
        // Masked keys keep -inf and weigh exactly zero.
        for (j, pr) in probs.iter_mut().enumerate() {
            *pr = if keys.contains(&(start + j)) {
                *pr * self.p.kq_scale
            } else {
                f32::NEG_INFINITY
            };
        }
        let tile_max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let m_new = m.max(tile_max);
        if m_new > *m {
            let ms = (*m - m_new).exp();
            acc.iter_mut().for_each(|a| *a *= ms);
            *s *= ms;
        }
        *m = m_new;
        exp_shifted(&mut probs, m_new);
        let tile_sum: f64 = probs
            .chunks_exact(8)
            .map(|g| (((g[4] + g[0]) + (g[6] + g[2])) + ((g[5] + g[1]) + (g[7] + g[3]))) as f64)
            .sum();
        *s = (*s as f64 + tile_sum) as f32;
        for j in keys {
            mad_f32_f16(acc, self.value(slots[j]), probs[j - start]);
        }
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
        // A split chunk may lie wholly before the window: no keys.
        let end = keys.end.min(vis.pos + 1);
        let keys = keys.start.max(vis.lo).min(end)..end;
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
}

/// ggml's tiled path (see [`HeadCtx::tile_step`]) for `out.len() /
/// out_cols` consecutive query rows of one sequence starting at `r0`, all
/// heads; 64 keys per tile aligned to absolute positions. Each key tile is
/// converted to f32 once for all the rows and heads that share it.
#[allow(clippy::too_many_arguments)]
fn attend_tiled(
    q: &CpuTensor,
    kv: LayerKv<'_>,
    seq: &SeqRows<'_>,
    positions: &[u32],
    p: &AttnParams,
    r0: usize,
    out: &mut [f32],
    out_cols: usize,
) {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let group = p.n_head / p.n_head_kv;
    let n_rows = out.len() / out_cols;
    let vis: Vec<Visible<'_>> = (r0..r0 + n_rows)
        .map(|r| Visible::new(seq.slots, positions[r], p.window))
        .collect();
    // Running max and sum per (row, head); `out` holds the accumulators.
    let mut m = vec![f32::NEG_INFINITY; n_rows * p.n_head];
    let mut s = vec![0f32; n_rows * p.n_head];
    out.fill(0.0);
    let mut kt = vec![0f32; dk * TILE_KV];
    let lo = vis.iter().map(|v| v.lo).min().unwrap_or(0);
    let hi = vis.iter().map(|v| v.pos).max().unwrap_or(0);
    for kv_head in 0..p.n_head_kv {
        let ctx = kv.head(kv_head, p);
        for start in (lo / TILE_KV * TILE_KV..=hi).step_by(TILE_KV) {
            for j in start.max(lo)..(start + TILE_KV).min(hi + 1) {
                for (d, k) in ctx.key(seq.slots[j]).iter().enumerate() {
                    kt[d * TILE_KV + j - start] = k.to_f32();
                }
            }
            for (i, vis) in vis.iter().enumerate() {
                // Each query's tiles run from the one holding its first key.
                if start > vis.pos || start < vis.lo / TILE_KV * TILE_KV {
                    continue;
                }
                let keys = start.max(vis.lo)..(start + TILE_KV).min(vis.pos + 1);
                for h in kv_head * group..(kv_head + 1) * group {
                    let qh = &q.data[(r0 + i) * q.cols + h * dk..][..dk];
                    let acc = &mut out[i * out_cols + h * dv..][..dv];
                    let st = i * p.n_head + h;
                    ctx.tile_step(
                        seq.slots,
                        qh,
                        &kt,
                        start,
                        keys.clone(),
                        acc,
                        &mut m[st],
                        &mut s[st],
                    );
                }
            }
        }
    }
    for (i, row) in out.chunks_exact_mut(out_cols).enumerate() {
        for (h, acc) in row[..p.n_head * dv].chunks_exact_mut(dv).enumerate() {
            let sum = s[i * p.n_head + h];
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            acc.iter_mut().for_each(|a| *a *= inv);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &Pool,
    q: &CpuTensor,
    cache: &CpuKvCache,
    layer: usize,
    positions: &[u32],
    seqs: &[SeqRows<'_>],
    p: &AttnParams,
    out: &mut CpuTensor,
) {
    out.rows = q.rows;
    let group = p.n_head / p.n_head_kv;
    let kv = LayerKv::of(cache, layer);
    let n_slots = kv.k.len() / kv.k_dim;
    let q_cols = q.cols;
    for seq in seqs {
        let rows = seq.rows.clone();
        // The path follows the sequence's own rows, as llama.cpp's follows
        // the batch of a lone sequence, so a sequence's numbers do not
        // depend on what else shares the batch.
        let out_rows = &mut out.data[rows.start * out.cols..rows.end * out.cols];
        if rows.len() >= TILED_ATTENTION_MIN_ROWS {
            let cols = out.cols;
            pool.for_each_chunk(out_rows, BLOCK_ROWS * cols, |b, o| {
                let r0 = rows.start + b * BLOCK_ROWS;
                attend_tiled(q, kv, seq, positions, p, r0, o, cols);
            });
            continue;
        }
        pool.for_each_chunk(out_rows, p.head_dim_v, |i, o| {
            let (r, h) = (rows.start + i / p.n_head, i % p.n_head);
            let ctx = kv.head(h / group, p);
            let qh = &q.data[r * q_cols + h * p.head_dim_k..][..p.head_dim_k];
            let vis = Visible::new(seq.slots, positions[r], p.window);
            let n_kv = (positions[r] as usize + 1)
                .next_multiple_of(KV_PAD)
                .min(n_slots);
            ctx.attend_f16(qh, &vis, n_kv, o);
        });
    }
}
