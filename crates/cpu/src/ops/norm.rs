//! RMSNorm as ggml computes it: the sum of squares in f64, the scale in f32.

use crate::pool::Pool;

/// Values per parallel task: whole groups, at least a few hundred values.
fn task_len(g: usize) -> usize {
    g.max(256).next_multiple_of(g)
}

/// 1 / sqrt(mean(x²) + eps)
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Normalises each run of `w.len()` values of `x` into `out`, times `w`.
pub fn rms_norm(pool: &Pool, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let (g, len) = (w.len(), task_len(w.len()));
    pool.for_each_chunk(out, len, |i, o| {
        for (o, x) in o.chunks_exact_mut(g).zip(x[i * len..].chunks_exact(g)) {
            let scale = rms_scale(x, eps);
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                *o = x * scale * w;
            }
        }
    });
}

pub fn rms_norm_inplace(pool: &Pool, x: &mut [f32], w: &[f32], eps: f32) {
    let g = w.len();
    pool.for_each_chunk(x, task_len(g), |_, x| {
        for x in x.chunks_exact_mut(g) {
            let scale = rms_scale(x, eps);
            for (x, &w) in x.iter_mut().zip(w) {
                *x = *x * scale * w;
            }
        }
    });
}
