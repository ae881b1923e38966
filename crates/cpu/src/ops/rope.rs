//! Rotary position embedding, with ggml's angle recurrence (theta is
//! multiplied by base^(-2/n_rot) pair after pair, in f32) so that angles
//! match llama.cpp's bit for bit.

use crate::pool::Pool;
use crate::tensor::CpuWeight;
use quarrel_model::config::MAX_HEAD_DIM;
use quarrel_model::{RopeParams, RopeStyle};

pub fn rope(
    pool: &Pool,
    x: &mut [f32],
    cols: usize,
    positions: &[u32],
    p: &RopeParams<'_, CpuWeight>,
) {
    let half = p.n_rot / 2;
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let factors = p.freq_factors.map(|w| w.vector.as_slice());
    pool.for_each_chunk(x, cols, |r, row| {
        let pos = positions[r];
        let mut cos = [0f32; MAX_HEAD_DIM / 2];
        let mut sin = [0f32; MAX_HEAD_DIM / 2];
        let mut theta = pos as f32;
        for i in 0..half {
            let ff = factors.map_or(1.0, |f| f[i]);
            let t = p.freq_scale * (theta / ff);
            cos[i] = t.cos();
            sin[i] = t.sin();
            theta *= theta_scale;
        }
        for head in row.chunks_exact_mut(p.head_dim).take(p.n_heads) {
            for i in 0..half {
                let (a, b) = match p.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                // The FMA contraction of ggml's build (see ggml_math).
                head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
                head[b] = x0.mul_add(sin[i], x1 * cos[i]);
            }
        }
    });
}
