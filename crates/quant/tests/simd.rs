//! The crate-root entry points (SIMD on x86-64 with AVX2 + FMA + F16C)
//! against the scalar models in the public modules, bit for bit, on fresh
//! random data: every type, several lengths, random quant bytes with finite
//! scales, and inputs aimed at rounding and special-value edge cases.
//!
//! The seed comes from QUARREL_SIMD_SEED or the clock and is printed in
//! every failure message. On CPUs without the features both sides run the
//! scalar models and the tests prove nothing (they say so on stderr).

use quarrel_quant::{
    dequantize_row, dequantize_row_scalar, dot, dot_rows, dot_rows_unpacked, float, k_quants,
    legacy, pack_acts, packed_acts_len, quantize_activation, quantize_activation_for,
    quantize_activation_scalar, unpack_rows, unpacks, vec_dot, vec_dot_scalar, vec_dot_type, Chunk,
    DotKernel, GgmlType, DOT_ROWS_MAX,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use GgmlType::*;

type Dot = fn(usize, &[u8], &[u8]) -> f32;

fn seed() -> u64 {
    if !quarrel_quant::simd_enabled() {
        eprintln!("no SIMD kernels (no AVX2 + FMA + F16C, or QUARREL_SIMD=off): comparing the scalar models with themselves");
    }
    std::env::var("QUARREL_SIMD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

const WEIGHT_TYPES: [GgmlType; 13] = [
    F32, F16, Bf16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K,
];

fn lengths(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![1, 3, 8, 31, 32, 33, 63, 64, 100, 896, 1000],
        b => [1, 2, 3, 7, 28].iter().map(|k| k * b).collect(),
    }
}

fn bytes_for(ty: GgmlType, n: usize) -> Vec<u8> {
    vec![0u8; ty.row_bytes(n as u64).unwrap() as usize]
}

/// A random finite f16: any sign, exponent and mantissa but the all-ones
/// exponent (subnormals and zeros included).
fn finite_f16(rng: &mut impl Rng) -> [u8; 2] {
    let bits: u16 = rng.random();
    let bits = if bits & 0x7c00 == 0x7c00 {
        bits & !0x4000
    } else {
        bits
    };
    bits.to_le_bytes()
}

/// Offsets of the f16 scale fields in a block of each type.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        Q4_0 | Q5_0 | Q8_0 | Q6K => match ty {
            Q6K => &[208],
            _ => &[0],
        },
        Q4_1 | Q5_1 | Q8_1 | Q4K | Q5K => &[0, 2],
        Q2K => &[80, 82],
        Q3K => &[108],
        _ => &[],
    }
}

/// Random bytes for `n` elements of `ty`: uniform quant bytes with finite
/// scales; floats from [`normals`].
fn random_row(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    match ty {
        F32 | F16 | Bf16 => {
            let x = normals(rng, n);
            let mut out = bytes_for(ty, n);
            match ty {
                F32 => float::f32_row_to_le(&x, &mut out),
                F16 => float::fp32_to_fp16_row(&x, &mut out),
                _ => float::fp32_to_bf16_row(&x, &mut out),
            }
            out
        }
        _ => {
            let mut out = bytes_for(ty, n);
            rng.fill(&mut out[..]);
            for b in out.chunks_exact_mut(ty.type_size()) {
                for &at in f16_fields(ty) {
                    b[at..at + 2].copy_from_slice(&finite_f16(rng));
                }
                if ty == Q8K {
                    let d = rng.random_range(-1e-2f32..1e-2);
                    b[..4].copy_from_slice(&d.to_le_bytes());
                }
            }
            out
        }
    }
}

/// Normals with a random scale per 32 elements (2^-20 to 2^10), some
/// exact halves and repeated values, as activations look after norms.
fn normals(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = Vec::with_capacity(n);
    let mut scale = 1.0;
    for i in 0..n {
        if i % 32 == 0 {
            scale = 2f32.powi(rng.random_range(-20..=10));
        }
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        let g = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
        x.push(match rng.random_range(0..16) {
            0 => (g * 8.0).round() / 2.0 * scale,
            1 if i > 0 => -x[i - 1],
            _ => g * scale,
        });
    }
    x
}

/// Activation rows with special values: infinities, NaNs with payloads,
/// signed zeros, subnormals, huge values, ties of +-max.
fn special_rows(rng: &mut StdRng, n: usize) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    let base = normals(rng, n);
    let mut with = |vals: &[f32]| {
        let mut x = base.clone();
        for (i, &v) in vals.iter().enumerate() {
            let at = rng.random_range(0..n);
            x[at] = v;
            if i % 2 == 1 && at + 5 < n {
                x[at + 5] = -v;
            }
        }
        rows.push(x);
    };
    with(&[f32::INFINITY]);
    with(&[f32::NEG_INFINITY, 3.0]);
    with(&[f32::from_bits(0x7fc0_1234), f32::from_bits(0xff80_0001)]);
    with(&[f32::NAN]);
    with(&[1e-40, -1e-45, 3e38, 9.0, 9.0]);
    rows.push(vec![-0.0; n]);
    rows.push(base.iter().map(|v| v * 1e-40).collect());
    rows
}

fn assert_same_f32(got: &[f32], want: &[f32], what: &str, seed: u64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "seed {seed}: {what}: element {i}: {g} != {w}"
        );
    }
}

#[test]
fn dequantize_row_matches_scalar_models() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for ty in WEIGHT_TYPES.into_iter().filter(|&t| t != F32) {
        for n in lengths(ty) {
            for _ in 0..4 {
                let src = random_row(&mut rng, ty, n);
                let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                dequantize_row(ty, &src, &mut got).unwrap();
                dequantize_row_scalar(ty, &src, &mut want).unwrap();
                assert_same_f32(&got, &want, &format!("{ty} n={n}"), seed);
            }
        }
    }
}

#[test]
fn quantize_activation_matches_scalar_models() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for w in [F16, Bf16, Q4_0, Q4_1, Q4K] {
        let act = vec_dot_type(w);
        for n in lengths(act).into_iter().filter(|n| n % 32 == 0) {
            let mut rows = special_rows(&mut rng, n);
            rows.extend((0..4).map(|_| normals(&mut rng, n)));
            for (r, x) in rows.iter().enumerate() {
                let (mut got, mut want) = (bytes_for(act, n), bytes_for(act, n));
                quantize_activation(w, x, &mut got).unwrap();
                quantize_activation_scalar(w, x, &mut want).unwrap();
                assert_eq!(got, want, "seed {seed}: {act} n={n} row {r}");
                if w == Q4K {
                    quantize_activation_for(DotKernel::Gemm, w, x, &mut got).unwrap();
                    k_quants::quantize_row_q8_k_4x8(x, &mut want);
                    assert_eq!(got, want, "seed {seed}: Q8_K 4x8 n={n} row {r}");
                }
            }
        }
    }
}

#[test]
fn vec_dot_matches_scalar_models() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for ty in WEIGHT_TYPES {
        let act_ty = vec_dot_type(ty);
        for n in lengths(ty) {
            for _ in 0..4 {
                let w = random_row(&mut rng, ty, n);
                let mut act = bytes_for(act_ty, n);
                quantize_activation(ty, &normals(&mut rng, n), &mut act).unwrap();
                let got = vec_dot(ty, n, &w, &act);
                let want = vec_dot_scalar(ty, n, &w, &act);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "seed {seed}: {ty} n={n}: {got} != {want}"
                );
                // Random activation bytes too: every quant value, -128 included.
                let act = random_row(&mut rng, act_ty, n);
                let (got, want) = (vec_dot(ty, n, &w, &act), vec_dot_scalar(ty, n, &w, &act));
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "seed {seed}: {ty} n={n}, random activation bytes: {got} != {want}"
                );
            }
        }
    }
}

#[test]
fn repacked_dots_match_scalar_models() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let models: [(GgmlType, DotKernel, Dot); 4] = [
        (Q4_0, DotKernel::Gemv, legacy::gemv_q4_0_q8_0),
        (Q4_0, DotKernel::Gemm, legacy::gemm_q4_0_q8_0),
        (Q4K, DotKernel::Gemv, k_quants::gemv_q4_k_q8_k),
        (Q4K, DotKernel::Gemm, k_quants::gemm_q4_k_q8_k),
    ];
    for (ty, kernel, model) in models {
        let act_ty = vec_dot_type(ty);
        for n in lengths(ty) {
            for _ in 0..4 {
                let w = random_row(&mut rng, ty, n);
                let mut act = bytes_for(act_ty, n);
                quantize_activation_for(kernel, ty, &normals(&mut rng, n), &mut act).unwrap();
                let (got, want) = (dot(kernel, ty, n, &w, &act), model(n, &w, &act));
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "seed {seed}: {ty} {kernel:?} n={n}: {got} != {want}"
                );
            }
        }
    }
}

#[test]
fn tiled_dots_match_scalar_models() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let models: [(GgmlType, Dot); 5] = [
        (Q2K, k_quants::tiled_dot_q2_k_q8_k),
        (Q3K, k_quants::tiled_dot_q3_k_q8_k),
        (Q4K, k_quants::tiled_dot_q4_k_q8_k),
        (Q5K, k_quants::tiled_dot_q5_k_q8_k),
        (Q6K, k_quants::tiled_dot_q6_k_q8_k),
    ];
    for (ty, model) in models {
        for n in lengths(ty) {
            for i in 0..8 {
                let w = random_row(&mut rng, ty, n);
                // Half the activations random bytes: block sums that do not
                // match the quants, which the tiled kernel uses only for mins.
                let act = if i % 2 == 0 {
                    let mut act = bytes_for(Q8K, n);
                    let x = normals(&mut rng, n);
                    quantize_activation_for(DotKernel::Tiled, ty, &x, &mut act).unwrap();
                    act
                } else {
                    random_row(&mut rng, Q8K, n)
                };
                let (got, want) = (dot(DotKernel::Tiled, ty, n, &w, &act), model(n, &w, &act));
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "seed {seed}: {ty} tiled n={n}, activation {i}: {got} != {want}"
                );
            }
        }
    }
}

#[test]
fn dot_rows_matches_single_dots() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let kernels = |ty: GgmlType| match ty {
        Q4_0 => vec![DotKernel::VecDot, DotKernel::Gemv, DotKernel::Gemm],
        Q4K => vec![
            DotKernel::VecDot,
            DotKernel::Gemv,
            DotKernel::Gemm,
            DotKernel::Tiled,
        ],
        Q2K | Q3K | Q5K | Q6K => vec![DotKernel::VecDot, DotKernel::Tiled],
        _ => vec![DotKernel::VecDot],
    };
    for ty in WEIGHT_TYPES {
        let act_ty = vec_dot_type(ty);
        for kernel in kernels(ty) {
            for n in lengths(ty) {
                // Several weight rows, to check the output layout as well.
                let ws: Vec<Vec<u8>> = (0..6).map(|_| random_row(&mut rng, ty, n)).collect();
                let mut acts = Vec::new();
                for _ in 0..DOT_ROWS_MAX {
                    let mut a = bytes_for(act_ty, n);
                    quantize_activation_for(kernel, ty, &normals(&mut rng, n), &mut a).unwrap();
                    acts.extend_from_slice(&a);
                }
                let row = acts.len() / DOT_ROWS_MAX;
                let single =
                    |r: usize, t: usize| dot(kernel, ty, n, &ws[r], &acts[t * row..][..row]);
                let w = ws.concat();
                let legacy = matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0);
                if quarrel_quant::simd_enabled() {
                    assert_eq!(unpacks(ty), legacy, "{ty}: unpacks");
                }
                let unpacked = unpacks(ty).then(|| {
                    let blocks = ws.len() * n / ty.block_size();
                    let mut q = vec![Chunk([0x5A; 32]); blocks];
                    let mut s = vec![[f32::NAN; 2]; blocks];
                    unpack_rows(ty, n, &w, &mut q, &mut s);
                    (q, s)
                });
                for rows in 1..=DOT_ROWS_MAX {
                    let mut out = vec![f32::NAN; ws.len() * rows];
                    let mut packed = vec![Chunk([0xA5; 32]); packed_acts_len(ty, n, rows)];
                    pack_acts(ty, n, &acts[..rows * row], &mut packed);
                    dot_rows(kernel, ty, n, &w, &acts[..rows * row], &packed, &mut out);
                    let check = |out: &[f32], how: &str| {
                        for (i, &got) in out.iter().enumerate() {
                            let (r, t) = (i / rows, i % rows);
                            assert_eq!(
                                got.to_bits(),
                                single(r, t).to_bits(),
                                "seed {seed}: {ty} {kernel:?} {how} n={n} weight row {r}, row {t} of {rows}"
                            );
                        }
                    };
                    check(&out, "dot_rows");
                    if let (DotKernel::VecDot, Some((q, s))) = (kernel, &unpacked) {
                        out.fill(f32::NAN);
                        dot_rows_unpacked(ty, n, q, s, rows, &packed, &mut out);
                        check(&out, "dot_rows_unpacked");
                    }
                }
            }
        }
    }
}
