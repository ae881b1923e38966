//! Properties on fresh random data, for every supported type: round-trip
//! error within the bound the bit width implies, dot products against f64,
//! and the integer dot path against dequantized operands.
//!
//! Each test uses a fixed seed, printed in every failure message.

use quarrel_quant::{
    dequantize_row, is_supported, quantize_activation, quantize_row, vec_dot, vec_dot_type,
    GgmlType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use GgmlType::*;

const TYPES: [GgmlType; 15] = [
    F32, F16, Bf16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K,
];
const WEIGHT_TYPES: [GgmlType; 13] = [
    F32, F16, Bf16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K,
];

/// Row lengths to test: several block counts, including the model sizes
/// 896 (32-element blocks) and 4864 (super-blocks).
fn lengths(ty: GgmlType) -> &'static [usize] {
    match ty.block_size() {
        1 => &[1, 7, 31, 33, 896, 4864],
        32 => &[32, 96, 896, 4864],
        _ => &[256, 768, 4864],
    }
}

/// Standard normal samples times `sigma` (Box-Muller; rand_distr is not a dependency).
fn gaussian(rng: &mut StdRng, n: usize, sigma: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * sigma) as f32
        })
        .collect()
}

fn bytes_for(ty: GgmlType, n: usize) -> Vec<u8> {
    vec![0u8; ty.row_bytes(n as u64).unwrap() as usize]
}

fn dequant(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, src, &mut out).unwrap();
    out
}

/// How a type's grid step follows from its data, per sub-block of `len`
/// elements: `spread / levels`, the spread being max |x| (symmetric types)
/// or max - min (types with a min; k-quants clamp the min at 0).
struct Grid {
    len: usize,
    levels: f64,
    symmetric: bool,
}

fn grid(ty: GgmlType) -> Grid {
    let (len, levels, symmetric) = match ty {
        Q8_0 | Q8_1 => (32, 127.0, true),
        Q8K => (256, 127.0, true),
        Q4_0 => (32, 8.0, true),
        Q5_0 => (32, 16.0, true),
        Q4_1 => (32, 15.0, false),
        Q5_1 => (32, 31.0, false),
        Q2K => (16, 3.0, false),
        Q3K => (16, 4.0, true),
        Q4K => (32, 15.0, false),
        Q5K => (32, 31.0, false),
        Q6K => (16, 32.0, true),
        _ => unreachable!("{ty} has no grid"),
    };
    Grid {
        len,
        levels,
        symmetric,
    }
}

fn min_max(b: &[f32]) -> (f64, f64) {
    b.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| {
        (lo.min(f64::from(v)), hi.max(f64::from(v)))
    })
}

/// Round trip against the bit width: rounding to a grid of step D leaves an
/// RMS error of D / sqrt(12), so the predicted RMS error of a row is
/// sqrt(mean over sub-blocks of D^2 / 12), D taken from the row's own data.
/// The allowance of 10 % covers f16 / 6-bit / 4-bit scale rounding and
/// sampling noise (under 2 % at these lengths); the k-quant scale searches
/// only lower the error.
#[test]
fn quantize_round_trip_rms_within_grid_prediction() {
    let seed = 0x5eed_0001;
    let mut rng = StdRng::seed_from_u64(seed);
    assert!(TYPES.into_iter().all(is_supported));
    for ty in TYPES.into_iter().filter(|t| t.block_size() > 1) {
        let g = grid(ty);
        for &n in lengths(ty).iter().filter(|&&n| n >= 768) {
            let x = gaussian(&mut rng, n, 0.05);
            let mut q = bytes_for(ty, n);
            quantize_row(ty, &x, &mut q).unwrap();
            let y = dequant(ty, &q, n);
            let mse = x
                .iter()
                .zip(&y)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                / n as f64;
            let predicted = x
                .chunks(g.len)
                .map(|b| {
                    let (lo, hi) = min_max(b);
                    let spread = if g.symmetric {
                        hi.max(-lo)
                    } else {
                        hi - lo.min(0.0)
                    };
                    (spread / g.levels).powi(2) / 12.0
                })
                .sum::<f64>()
                / (n / g.len) as f64;
            let ratio = (mse / predicted).sqrt();
            assert!(
                ratio <= 1.1,
                "seed {seed:#x}: {ty} n={n}: RMS error {ratio:.3} x the grid prediction"
            );
        }
    }
}

/// Hard per-element bounds where the quantizer guarantees one (every length,
/// including single blocks): half a step for round to nearest (a whole
/// step for Q4_0 / Q5_0, whose top level is clipped), plus the error of
/// storing d and m as f16. Floats: half an ulp.
#[test]
fn quantize_round_trip_elementwise_bounds() {
    let seed = 0x5eed_0004;
    let mut rng = StdRng::seed_from_u64(seed);
    let f16_ulp = 2f64.powi(-11);
    for ty in [F32, F16, Bf16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8K] {
        for &n in lengths(ty) {
            let x = gaussian(&mut rng, n, 0.05);
            let mut q = bytes_for(ty, n);
            quantize_row(ty, &x, &mut q).unwrap();
            let y = dequant(ty, &q, n);
            for (i, (bx, by)) in x
                .chunks(ty.block_size())
                .zip(y.chunks(ty.block_size()))
                .enumerate()
            {
                let (lo, hi) = min_max(bx);
                let amax = hi.max(-lo);
                let bound = |v: f64| -> f64 {
                    let tiny = (v.abs() + amax) * 1e-6;
                    tiny + match ty {
                        F32 => 0.0,
                        F16 => v.abs() * f16_ulp + 2f64.powi(-25),
                        Bf16 => v.abs() * 2f64.powi(-8),
                        Q8_0 | Q8_1 => amax / 127.0 * (0.5 + 127.0 * f16_ulp),
                        Q8K => amax / 127.0 * 0.5,
                        Q4_0 => amax / 8.0 * (1.0 + 8.0 * f16_ulp),
                        Q5_0 => amax / 16.0 * (1.0 + 16.0 * f16_ulp),
                        Q4_1 => (hi - lo) / 15.0 * (0.5 + 15.0 * f16_ulp) + lo.abs() * f16_ulp,
                        Q5_1 => (hi - lo) / 31.0 * (0.5 + 31.0 * f16_ulp) + lo.abs() * f16_ulp,
                        _ => unreachable!(),
                    }
                };
                for (&a, &b) in bx.iter().zip(by) {
                    let (a, b) = (f64::from(a), f64::from(b));
                    assert!(
                        (a - b).abs() <= bound(a),
                        "seed {seed:#x}: {ty} n={n} block {i}: {a} -> {b}, error {} > {}",
                        (a - b).abs(),
                        bound(a)
                    );
                }
            }
        }
    }
}

/// Largest possible |x - dequantized activation| for each element of `x`
/// quantized to `act`: half a step, plus the error of storing the scale.
fn activation_error_bounds(act: GgmlType, x: &[f32]) -> Vec<f64> {
    let block = act.block_size();
    if block == 1 {
        let rel = match act {
            F32 => 0.0,
            F16 => 2f64.powi(-11),
            _ => 2f64.powi(-8),
        };
        // Plus half of F16's smallest subnormal, for tiny values.
        return x
            .iter()
            .map(|&v| f64::from(v).abs() * rel + 2f64.powi(-25))
            .collect();
    }
    x.chunks(block)
        .flat_map(|b| {
            let amax = b.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
            let step = amax / 127.0;
            // Q8_0 / Q8_1 store d as f16: up to 127 * d * 2^-11 more.
            let scale_err = if act == Q8K {
                1e-5
            } else {
                127.0 * 2f64.powi(-11)
            };
            std::iter::repeat_n(step * (0.5 + scale_err) * (1.0 + 1e-6), b.len())
        })
        .collect()
}

#[test]
fn vec_dot_with_quantized_activations_matches_f64_dot() {
    let seed = 0x5eed_0002;
    let mut rng = StdRng::seed_from_u64(seed);
    for ty in WEIGHT_TYPES {
        let act_ty = vec_dot_type(ty);
        for &n in lengths(ty) {
            let w_f32 = gaussian(&mut rng, n, 0.02);
            let mut w = bytes_for(ty, n);
            quantize_row(ty, &w_f32, &mut w).unwrap();
            let wd = dequant(ty, &w, n);
            let x = gaussian(&mut rng, n, 1.0);
            let mut act = bytes_for(act_ty, n);
            quantize_activation(ty, &x, &mut act).unwrap();

            let got = f64::from(vec_dot(ty, n, &w, &act));
            let exact: f64 = wd
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let magnitude: f64 = wd
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            // Worst case of the activation error, plus f32 accumulation.
            let tol: f64 = wd
                .iter()
                .zip(activation_error_bounds(act_ty, &x))
                .map(|(&a, e)| f64::from(a).abs() * e)
                .sum::<f64>()
                + 1e-5 * magnitude;
            assert!(
                (got - exact).abs() <= tol,
                "seed {seed:#x}: {ty} n={n}: dot {got} vs f64 {exact}, |diff| {} > {tol}",
                (got - exact).abs()
            );
        }
    }
}

/// The dot ggml's kernels compute, in f64 from the dequantized operands.
/// Q8_1 dots use the activation's stored s = f16(d * sum q) for the min
/// term, so that term is taken from s rather than from the quants.
fn reference_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> (f64, f64) {
    let act_ty = vec_dot_type(ty);
    let ad = dequant(act_ty, act, n);
    let mut w = w.to_vec();
    let mut min_term = 0f64;
    if act_ty == Q8_1 {
        let (wb, ab) = (ty.type_size(), act_ty.type_size());
        for (bw, ba) in w.chunks_exact_mut(wb).zip(act.chunks_exact(ab)) {
            let f16 = |b: &[u8]| f64::from(half::f16::from_le_bytes([b[2], b[3]]).to_f32());
            min_term += f16(bw) * f16(ba);
            bw[2..4].fill(0); // m = 0 leaves d * q
        }
    }
    let wd = dequant(ty, &w, n);
    let dot = wd
        .iter()
        .zip(&ad)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum::<f64>()
        + min_term;
    let magnitude = wd
        .iter()
        .zip(&ad)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum::<f64>();
    (dot, magnitude + min_term.abs())
}

#[test]
fn vec_dot_integer_path_matches_dequantized_operands() {
    let seed = 0x5eed_0003;
    let mut rng = StdRng::seed_from_u64(seed);
    for ty in WEIGHT_TYPES {
        let act_ty = vec_dot_type(ty);
        for &n in lengths(ty) {
            // Random weights quantized with the reference quantizer, and an
            // activation with a few large outliers, as in real models.
            let mut w = bytes_for(ty, n);
            quantize_row(ty, &gaussian(&mut rng, n, 0.02), &mut w).unwrap();
            let mut x = gaussian(&mut rng, n, 1.0);
            for _ in 0..n / 100 {
                let i = rng.random_range(0..n);
                x[i] *= 30.0;
            }
            let mut act = bytes_for(act_ty, n);
            quantize_activation(ty, &x, &mut act).unwrap();

            let got = f64::from(vec_dot(ty, n, &w, &act));
            let (want, magnitude) = reference_dot(ty, n, &w, &act);
            assert!(
                (got - want).abs() <= 1e-5 * magnitude,
                "seed {seed:#x}: {ty} n={n}: dot {got} vs {want} (magnitude {magnitude})"
            );
        }
    }
}
