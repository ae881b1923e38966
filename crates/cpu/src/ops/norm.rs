//! RMSNorm as ggml computes it: the sum of squares in f64, the scale in f32.

use rayon::prelude::*;

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
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let g = w.len();
    out.par_chunks_mut(task_len(g))
        .zip(x.par_chunks(task_len(g)))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(g).zip(x.chunks_exact(g)) {
                let scale = rms_scale(x, eps);
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                    *o = x * scale * w;
                }
            }
        });
}

pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let g = w.len();
    x.par_chunks_mut(task_len(g)).for_each(|x| {
        for x in x.chunks_exact_mut(g) {
            let scale = rms_scale(x, eps);
            for (x, &w) in x.iter_mut().zip(w) {
                *x = *x * scale * w;
            }
        }
    });
}
