//! Elementary computations done exactly as llama.cpp's x86 (AVX2 + FMA)
//! CPU build does them, lane by lane. Greedy continuations of sensitive
//! models (Qwen2: llama.cpp's own logits move by 0.5 between its two
//! attention paths) hinge on last-bit agreement, so the reference kernels
//! reproduce ggml's operation order, fused multiply-adds included (GCC
//! contracts `a*b + c` into FMA under -march=native).

use half::f16;

/// ggml's vectorised expf (`ggml_v_expf`, after ARM's optimized-routines):
/// a degree-5 polynomial on a range-reduced argument; max error 1.5 ulp.
pub fn expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    // b = x - n*ln2, ln2 split in a high and a low part.
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // Overflow and underflow: scale in two steps (or saturate).
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// silu(x) = x / (1 + exp(-x)), as `ggml_v_silu`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf(0.0 - x))
}

#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    super::x86::available()
}

/// out = silu(g) * u as `ggml_vec_swiglu_f32`: groups of 8 through the
/// vector expf, the tail through libm's expf (ggml_silu_f32).
pub fn swiglu(out: &mut [f32], g: &[f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { super::x86::swiglu(out, g, u) };
    }
    swiglu_scalar(out, g, u);
}

pub fn swiglu_scalar(out: &mut [f32], g: &[f32], u: &[f32]) {
    let n = out.len().min(g.len()).min(u.len());
    let np = n & !7;
    for k in 0..np {
        out[k] = silu(g[k]) * u[k];
    }
    for k in np..n {
        out[k] = g[k] / (1.0 + (-g[k]).exp()) * u[k];
    }
}

/// `ggml_vec_dot_f16` (see [`dot_f16_scalar`]).
pub fn dot_f16(x: &[f16], y: &[f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { super::x86::dot_f16(x, y) };
    }
    dot_f16_scalar(x, y)
}

/// y = f16(fma(x, v, y)) (`ggml_vec_mad_f16`).
pub fn mad_f16(y: &mut [f16], x: &[f16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { super::x86::mad_f16(y, x, v) };
    }
    for (a, b) in y.iter_mut().zip(x) {
        *a = f16::from_f32(b.to_f32().mul_add(v, a.to_f32()));
    }
}

/// y = f16(y * v) (`ggml_vec_scale_f16`).
pub fn scale_f16(y: &mut [f16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { super::x86::scale_f16(y, v) };
    }
    for a in y.iter_mut() {
        *a = f16::from_f32(a.to_f32() * v);
    }
}

/// acc = fma(v, p, acc), element by element.
pub fn mad_f32_f16(acc: &mut [f32], v: &[f16], p: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { super::x86::mad_f32_f16(acc, v, p) };
    }
    for (a, b) in acc.iter_mut().zip(v) {
        *a = b.to_f32().mul_add(p, *a);
    }
}

/// Scores of one query against a tile of 64 keys stored transposed
/// (`kt[d * 64 + j]` is element d of key j): for each key, ggml's tiled
/// attention's sequential FMA chain over the head dimension.
pub fn tile_scores(kt: &[f32], q: &[f32], scores: &mut [f32; 64]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { super::x86::tile_scores(kt, q, scores) };
    }
    for (j, s) in scores.iter_mut().enumerate() {
        *s = q
            .iter()
            .enumerate()
            .fold(0.0f32, |a, (d, &q)| kt[d * 64 + j].mul_add(q, a));
    }
}

/// p = expf(p - m) for every element (`p.len()` a multiple of 8).
pub fn exp_shifted(p: &mut [f32], m: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { super::x86::exp_shifted(p, m) };
    }
    p.iter_mut().for_each(|p| *p = expf(*p - m));
}

/// `ggml_vec_dot_f16` on AVX2: four 8-lane FMA accumulators over blocks
/// of 32, reduced pairwise then horizontally; the tail in f64.
pub fn dot_f16_scalar(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, a) in a.iter_mut().enumerate() {
                let k = i + j * 8 + l;
                *a = x[k].to_f32().mul_add(y[k].to_f32(), *a);
            }
        }
    }
    let mut v = [0f32; 8];
    for l in 0..8 {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t0 = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let mut sum = ((t0[0] + t0[1]) + (t0[2] + t0[3])) as f64;
    for k in np..n {
        sum += (x[k].to_f32() * y[k].to_f32()) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_accurate_across_the_range() {
        // Normal results only: below -87 they are subnormal and the
        // relative error bound no longer applies.
        for i in -8_700..=8_800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            let got = expf(x) as f64;
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON as f64 * want,
                "expf({x}) = {got}, want {want}"
            );
        }
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(100.0), f32::INFINITY);
    }

    #[test]
    fn dot_f16_matches_a_plain_sum() {
        let x: Vec<f16> = (0..100)
            .map(|i| f16::from_f32((i as f32 * 0.37).sin()))
            .collect();
        let y: Vec<f16> = (0..100)
            .map(|i| f16::from_f32((i as f32 * 0.11).cos()))
            .collect();
        let want: f64 = x.iter().zip(&y).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
        assert!((dot_f16(&x, &y) as f64 - want).abs() < 1e-5);
    }
}
