//! Each CUDA kernel against a float64 reference on fresh random inputs
//! (drawn anew on every run), through the backend's public interface.
//! Outputs are poisoned with NaN first, so an element a kernel fails to
//! write fails the check. Without a CUDA device every test says SKIPPED
//! and passes: CI has no GPU; `bench/cuda-check.sh` runs these there.

use std::sync::{Mutex, MutexGuard, OnceLock};

use quarrel_cuda::{CudaBackend, CudaTensor, CudaWeight};
use quarrel_gguf::{GgmlType, GgufFile, GgufWriter};
use quarrel_model::{
    AttnParams, Backend, Batch, FfnActivation, Kernels, RopeParams, RopeStyle, RowGroup, SeqRows,
};
use rand::Rng;

/// The device, one test at a time: a backend runs one batch at a time.
fn gpu() -> Option<MutexGuard<'static, CudaBackend>> {
    static GPU: OnceLock<Option<Mutex<CudaBackend>>> = OnceLock::new();
    let b = GPU.get_or_init(|| match CudaBackend::new(0) {
        Ok(b) => Some(Mutex::new(b)),
        Err(e) => {
            eprintln!("SKIPPED: no CUDA device ({e})");
            None
        }
    });
    b.as_ref()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

fn random(n: usize, scale: f32) -> Vec<f32> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// ‖out − ref‖ / ‖ref‖, failing on any NaN.
fn rel_error(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len());
    assert!(
        out.iter().all(|v| v.is_finite()),
        "non-finite output (unwritten?)"
    );
    let num: f64 = out
        .iter()
        .zip(reference)
        .map(|(&o, &r)| (o as f64 - r).powi(2))
        .sum();
    let den: f64 = reference.iter().map(|r| r * r).sum();
    (num / den.max(1e-300)).sqrt()
}

/// A one-tensor GGUF in memory, quantized to `ty`, and its weight on `b`.
fn weight(
    b: &CudaBackend,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[f32],
) -> (CudaWeight, Vec<f32>) {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut bytes = vec![0u8; rows * row_bytes];
    for (src, dst) in data
        .chunks_exact(cols)
        .zip(bytes.chunks_exact_mut(row_bytes))
    {
        quarrel_quant::quantize_row(ty, src, dst).unwrap();
    }
    let mut deq = vec![0f32; rows * cols];
    for (src, dst) in bytes
        .chunks_exact(row_bytes)
        .zip(deq.chunks_exact_mut(cols))
    {
        quarrel_quant::dequantize_row(ty, src, dst).unwrap();
    }
    let dims: Vec<u64> = if rows == 1 {
        vec![cols as u64]
    } else {
        vec![cols as u64, rows as u64]
    };
    let mut w = GgufWriter::new();
    w.add_tensor("w", ty, &dims, bytes).unwrap();
    let file = GgufFile::from_bytes(w.to_bytes().unwrap(), "test").unwrap();
    let info = file.tensor_info("w").unwrap().clone();
    (b.load_weight(&file, &info).unwrap(), deq)
}

fn tensor(b: &CudaBackend, data: &[f32], cols: usize) -> CudaTensor {
    let mut t = b.new_tensor(data.len() / cols, cols);
    b.write(&mut t, data).unwrap();
    t
}

/// A tensor of `rows` × `cols` NaNs.
fn poisoned(b: &CudaBackend, rows: usize, cols: usize) -> CudaTensor {
    tensor(b, &vec![f32::NAN; rows * cols], cols)
}

fn read(b: &CudaBackend, t: &CudaTensor) -> Vec<f32> {
    let (rows, cols) = b.shape(t);
    let mut out = vec![0f32; rows * cols];
    b.read(t, &mut out).unwrap();
    out
}

/// Starts a batch of one sequence at positions `positions` whose slots are
/// the positions themselves.
fn begin(b: &CudaBackend, tokens: &[u32], positions: &[u32], slots: &[u32], outputs: &[usize]) {
    let seqs = [SeqRows {
        rows: 0..tokens.len(),
        slots,
        kernels: Kernels::Batch,
    }];
    b.begin_batch(&Batch {
        tokens,
        positions,
        seqs: &seqs,
        outputs,
    })
    .unwrap();
}

/// The activations the kernels multiply for weights of `ty`: quantized as
/// the CPU quantizes them, then dequantized (f16/bf16 rounding for those).
fn activations_as_used(ty: GgmlType, x: &[f32], cols: usize) -> Vec<f32> {
    let at = quarrel_quant::vec_dot_type(ty);
    let row_bytes = at.row_bytes(cols as u64).unwrap() as usize;
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mut q = vec![0u8; row_bytes];
        quarrel_quant::quantize_activation(ty, src, &mut q).unwrap();
        quarrel_quant::dequantize_row(at, &q, dst).unwrap();
    }
    out
}

const MATMUL_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

#[test]
fn matmul_matches_f64_reference() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    // 99 rows: not a multiple of the GEMV's rows per block.
    let (n, k) = (99, 512);
    for ty in MATMUL_TYPES {
        let (w, wd) = weight(b, ty, n, k, &random(n * k, 1.0));
        // Up to 8 rows run the GEMV kernels, more the cuBLAS path.
        for rows in [1, 2, 3, 5, 8, 9, 40] {
            let x = random(rows * k, 1.0);
            let xt = tensor(b, &x, k);
            let mut out = poisoned(b, rows, n);
            let groups = [RowGroup {
                rows: 0..rows,
                kernels: Kernels::Batch,
            }];
            b.matmul(&xt, &w, &mut out, &groups);
            let got = read(b, &out);
            let xa = activations_as_used(ty, &x, k);
            let reference: Vec<f64> = (0..rows * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k)
                        .map(|j| wd[c * k + j] as f64 * xa[r * k + j] as f64)
                        .sum()
                })
                .collect();
            let err = rel_error(&got, &reference);
            // The GEMV sums exact integer products (or f32 products) in f32,
            // except that Q8_1's s = d * sum(q), which the mins multiply, is
            // an f16 (as in ggml); the prefill rounds dequantized weights and
            // activations to f16.
            let gemm_rounds = rows > 8 && !matches!(ty, GgmlType::F16 | GgmlType::Bf16);
            let s_rounds = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
            let bound = if gemm_rounds || s_rounds { 2e-3 } else { 1e-5 };
            assert!(
                err < bound,
                "{ty} × {rows} rows: relative error {err:e} (bound {bound:e})"
            );
        }
    }
}

#[test]
fn rms_norm_matches_f64_reference() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let (rows, cols, eps) = (5, 896, 1e-6f32);
    for group in [cols, 64] {
        let x = random(rows * cols, 3.0);
        let (w, wd) = weight(b, GgmlType::F32, 1, group, &random(group, 2.0));
        let xt = tensor(b, &x, cols);
        let mut out = poisoned(b, rows, cols);
        b.rms_norm(&xt, &w, eps, &mut out);
        let reference: Vec<f64> = x
            .chunks_exact(group)
            .flat_map(|g| {
                let ms = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / group as f64;
                let s = 1.0 / (ms + eps as f64).sqrt();
                g.iter()
                    .zip(&wd)
                    .map(move |(&v, &w)| v as f64 * s * w as f64)
            })
            .collect();
        let err = rel_error(&read(b, &out), &reference);
        assert!(err < 1e-6, "group {group}: {err:e}");
    }
}

#[test]
fn rope_matches_f64_reference() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let (rows, n_heads, head_dim) = (6, 4, 128);
    let cols = n_heads * head_dim;
    let mut rng = rand::rng();
    for (style, n_rot, with_factors) in [
        (RopeStyle::Normal, 128, false),
        (RopeStyle::Neox, 128, true),
        (RopeStyle::Neox, 64, false),
    ] {
        let x = random(rows * cols, 1.0);
        let positions: Vec<u32> = (0..rows).map(|_| rng.random_range(0..4096)).collect();
        let factors: Vec<f32> = (0..n_rot / 2).map(|_| rng.random_range(1.0..8.0)).collect();
        let (fw, _) = weight(b, GgmlType::F32, 1, n_rot / 2, &factors);
        let (base, scale) = (500_000.0f32, 0.5f32);
        begin(
            b,
            &vec![0; rows],
            &positions,
            &(0..4096).collect::<Vec<_>>(),
            &[],
        );
        let mut xt = tensor(b, &x, cols);
        let p = RopeParams {
            style,
            n_heads,
            head_dim,
            n_rot,
            freq_base: base,
            freq_scale: scale,
            freq_factors: with_factors.then_some(&fw),
        };
        b.rope(&mut xt, &positions, &p);
        let mut reference: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for (r, row) in reference.chunks_exact_mut(cols).enumerate() {
            for head in row.chunks_exact_mut(head_dim) {
                for (i, &f) in factors.iter().enumerate() {
                    let ff = if with_factors { f as f64 } else { 1.0 };
                    let theta =
                        positions[r] as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
                    let t = scale as f64 * theta / ff;
                    let (a, c) = match style {
                        RopeStyle::Normal => (2 * i, 2 * i + 1),
                        RopeStyle::Neox => (i, i + n_rot / 2),
                    };
                    let (x0, x1) = (head[a], head[c]);
                    head[a] = x0 * t.cos() - x1 * t.sin();
                    head[c] = x0 * t.sin() + x1 * t.cos();
                }
            }
        }
        let err = rel_error(&read(b, &xt), &reference);
        // The angles themselves are f32 (ggml's recurrence): at positions
        // up to 4096 they are off by up to about 5e-4 radians.
        assert!(err < 5e-4, "{style:?} n_rot {n_rot}: {err:e}");
    }
}

/// Both activations, split and fused, against f64 (GELU goes through
/// ggml's f16 table) and bit for bit against the CPU backend.
#[test]
fn glu_matches_f64_reference_and_cpu() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let cpu = quarrel_cpu::CpuBackend::new(2);
    let (rows, cols) = (3, 1003);
    for (act, tolerance) in [(FfnActivation::SwiGlu, 1e-6), (FfnActivation::GeGlu, 2e-3)] {
        let g = random(rows * cols, 12.0);
        let u = random(rows * cols, 2.0);
        let f = |x: f64| match act {
            FfnActivation::SwiGlu => x / (1.0 + (-x).exp()),
            FfnActivation::GeGlu => {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * x * (1.0 + 0.044715 * x * x))
                            .tanh())
            }
        };
        let reference: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(&g, &u)| f(g as f64) * u as f64)
            .collect();
        let mut cpu_out = cpu.new_tensor(rows, cols);
        let (gc, uc) = (cpu_tensor(&cpu, &g, cols), cpu_tensor(&cpu, &u, cols));
        let cpu_down = cpu_weight(&cpu, cols);
        cpu.glu(&gc, Some(&uc), act, &mut cpu_out, &cpu_down);
        let mut want = vec![0f32; rows * cols];
        cpu.read(&cpu_out, &mut want).unwrap();
        // Separate gate and up tensors, then one fused [gate | up] tensor.
        let (gt, ut) = (tensor(b, &g, cols), tensor(b, &u, cols));
        // An f32 down projection: the output is not quantized.
        let (down, _) = weight(b, GgmlType::F32, 4, cols, &random(4 * cols, 1.0));
        let mut out = poisoned(b, rows, cols);
        b.glu(&gt, Some(&ut), act, &mut out, &down);
        let split = read(b, &out);
        let fused: Vec<f32> = g
            .chunks_exact(cols)
            .zip(u.chunks_exact(cols))
            .flat_map(|(g, u)| g.iter().chain(u).copied())
            .collect();
        let ft = tensor(b, &fused, 2 * cols);
        let mut out = poisoned(b, rows, cols);
        b.glu(&ft, None, act, &mut out, &down);
        for (got, how) in [(split, "split"), (read(b, &out), "fused")] {
            let err = rel_error(&got, &reference);
            assert!(err < tolerance, "{act:?} {how}: {err:e}");
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                differ.count(),
                0,
                "{act:?} {how}: values differ from the CPU's"
            );
        }
    }
}

/// One attention scenario: a context of `n_ctx` positions written by one
/// batch (the tiled kernel), then 3 query rows at its end (the f16 kernel;
/// from 512 cache slots it splits the keys in two). Slots are a random
/// permutation (a paged cache).
struct AttnCase {
    n_head: usize,
    n_head_kv: usize,
    dk: usize,
    window: usize,
    n_ctx: usize,
}

/// Runs `case` through `b` (inputs written by `write`), returning Q, K, V
/// and the output of each of the two batches.
#[allow(clippy::type_complexity)]
fn run_attention<B: Backend>(
    b: &B,
    case: &AttnCase,
    slots: &[u32],
    inputs: &[[Vec<f32>; 3]; 2],
    write: &dyn Fn(&B, &[f32], usize) -> B::Tensor,
    begin: &dyn Fn(&B, &[u32]),
) -> [Vec<f32>; 2] {
    let (nh, nkv, dk) = (case.n_head, case.n_head_kv, case.dk);
    let mut cache = b.new_kv_cache(1, 512, nkv * dk, nkv * dk);
    let p = AttnParams {
        n_head: nh,
        n_head_kv: nkv,
        head_dim_k: dk,
        head_dim_v: dk,
        kq_scale: 1.0 / (dk as f32).sqrt(),
        window: case.window,
    };
    let batches = [
        0..case.n_ctx as u32 - 3,
        case.n_ctx as u32 - 3..case.n_ctx as u32,
    ];
    let mut outs = [vec![], vec![]];
    for ((range, [q, k, v]), out) in batches.into_iter().zip(inputs).zip(&mut outs) {
        let positions: Vec<u32> = range.collect();
        let rows = positions.len();
        begin(b, &positions);
        let seqs = [SeqRows {
            rows: 0..rows,
            slots,
            kernels: Kernels::Batch,
        }];
        let (qt, kt, vt) = (
            write(b, q, nh * dk),
            write(b, k, nkv * dk),
            write(b, v, nkv * dk),
        );
        let mut o = write(b, &vec![f32::NAN; rows * nh * dk], nh * dk);
        b.kv_store(&kt, &vt, &mut cache, 0, &positions, &seqs);
        b.attention(&qt, &cache, 0, &positions, &seqs, &p, &mut o);
        let mut host = vec![0f32; rows * nh * dk];
        b.read(&o, &mut host).unwrap();
        *out = host;
    }
    outs
}

/// The f64 attention of the rows at `positions` over the context's keys
/// and values (rounded to f16, as the cache holds them).
fn attention_reference(
    case: &AttnCase,
    inputs: &[[Vec<f32>; 3]; 2],
    batch: usize,
    positions: std::ops::Range<u32>,
) -> Vec<f64> {
    let (nh, nkv, dk) = (case.n_head, case.n_head_kv, case.dk);
    let h = |x: &f32| half::f16::from_f32(*x).to_f64();
    let keys: Vec<f64> = inputs[0][1].iter().chain(&inputs[1][1]).map(h).collect();
    let values: Vec<f64> = inputs[0][2].iter().chain(&inputs[1][2]).map(h).collect();
    let q = &inputs[batch][0];
    let kv_cols = nkv * dk;
    let mut reference = vec![0f64; positions.len() * nh * dk];
    for (i, pos) in positions.map(|p| p as usize).enumerate() {
        let lo = if case.window > 0 {
            (pos + 1).saturating_sub(case.window)
        } else {
            0
        };
        for hq in 0..nh {
            let kh = hq / (nh / nkv);
            let qv = &q[(i * nh + hq) * dk..][..dk];
            let scores: Vec<f64> = (lo..=pos)
                .map(|j| {
                    let kr = &keys[j * kv_cols + kh * dk..][..dk];
                    qv.iter().zip(kr).map(|(&a, &b)| a as f64 * b).sum::<f64>() / (dk as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            let o = &mut reference[(i * nh + hq) * dk..][..dk];
            for (w, j) in e.iter().zip(lo..=pos) {
                for (d, ov) in o.iter_mut().enumerate() {
                    *ov += w / z * values[j * kv_cols + kh * dk + d];
                }
            }
        }
    }
    reference
}

/// Both attention kernels against f64 (the f16 one accumulates in f16),
/// and against the CPU backend, which they follow operation for operation.
#[test]
fn attention_matches_f64_reference_and_cpu() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let cpu = quarrel_cpu::CpuBackend::new(2);
    let mut rng = rand::rng();
    let cases = [
        AttnCase {
            n_head: 8,
            n_head_kv: 2,
            dk: 128,
            window: 0,
            n_ctx: 300,
        },
        AttnCase {
            n_head: 8,
            n_head_kv: 2,
            dk: 128,
            window: 37,
            n_ctx: 300,
        },
        AttnCase {
            n_head: 4,
            n_head_kv: 1,
            dk: 256,
            window: 0,
            n_ctx: 200,
        },
        AttnCase {
            n_head: 14,
            n_head_kv: 2,
            dk: 64,
            window: 100,
            n_ctx: 130,
        },
    ];
    for case in &cases {
        let mut slots: Vec<u32> = (0..512).collect();
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.random_range(0..=i));
        }
        let slots = &slots[..case.n_ctx];
        let (nh, nkv, dk) = (case.n_head, case.n_head_kv, case.dk);
        let inputs = [case.n_ctx - 3, 3].map(|rows| {
            [
                random(rows * nh * dk, 1.0),
                random(rows * nkv * dk, 1.0),
                random(rows * nkv * dk, 1.0),
            ]
        });
        let gpu_out = run_attention(
            b,
            case,
            slots,
            &inputs,
            &|b, data, cols| tensor(b, data, cols),
            &|b, positions| begin(b, &vec![0; positions.len()], positions, slots, &[]),
        );
        let cpu_out = run_attention(
            &cpu,
            case,
            slots,
            &inputs,
            &|b, data, cols| cpu_tensor(b, data, cols),
            &|_, _| {},
        );
        let n = case.n_ctx as u32;
        for (batch, positions, tolerance) in [(0, 0..n - 3, 1e-5), (1, n - 3..n, 5e-3)] {
            let reference = attention_reference(case, &inputs, batch, positions);
            let err = rel_error(&gpu_out[batch], &reference);
            let tag = format!("dk {dk}, window {}, batch {batch}", case.window);
            assert!(err < tolerance, "{tag}: {err:e} from f64");
            let differ = gpu_out[batch]
                .iter()
                .zip(&cpu_out[batch])
                .filter(|(g, c)| g.to_bits() != c.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{tag}: {differ} values differ from the CPU backend's"
            );
        }
    }
}

/// A CPU tensor holding `data` (rows of `cols`), through an f32 table.
fn cpu_tensor(b: &quarrel_cpu::CpuBackend, data: &[f32], cols: usize) -> quarrel_cpu::CpuTensor {
    let rows = data.len() / cols;
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut w = GgufWriter::new();
    w.add_tensor("t", GgmlType::F32, &[cols as u64, rows as u64], bytes)
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes().unwrap(), "test").unwrap();
    let table = b
        .load_weight(&file, &file.tensor_info("t").unwrap().clone())
        .unwrap();
    let mut t = b.new_tensor(rows, cols);
    let tokens: Vec<u32> = (0..rows as u32).collect();
    b.embed(&table, &tokens, &mut t);
    t
}

/// An f32 weight of 4 rows of `cols` on the CPU backend.
fn cpu_weight(b: &quarrel_cpu::CpuBackend, cols: usize) -> quarrel_cpu::CpuWeight {
    let bytes: Vec<u8> = random(4 * cols, 1.0)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut w = GgufWriter::new();
    w.add_tensor("w", GgmlType::F32, &[cols as u64, 4], bytes)
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes().unwrap(), "test").unwrap();
    b.load_weight(&file, &file.tensor_info("w").unwrap().clone())
        .unwrap()
}

fn one_group(rows: usize) -> [RowGroup; 1] {
    [RowGroup {
        rows: 0..rows,
        kernels: Kernels::Batch,
    }]
}

/// `x · w` from a fresh copy of `x` (quantized by the matmul itself).
fn matmul_of_copy(b: &CudaBackend, x: &[f32], cols: usize, w: &CudaWeight, n: usize) -> Vec<f32> {
    let rows = x.len() / cols;
    let xt = tensor(b, x, cols);
    let mut out = poisoned(b, rows, n);
    b.matmul(&xt, w, &mut out, &one_group(rows));
    read(b, &out)
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The residual norm and GLU quantize their outputs for the next matmul
/// in the same kernel: the matmul then gives exactly what it gives when it
/// quantizes those outputs itself, for each activation type (none, Q8_0,
/// Q8_1, Q8_K), at decode and prompt sizes.
#[test]
fn fused_quantization_matches_separate_steps() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let (cols, n, eps) = (512, 40, 1e-5f32);
    let (norm, _) = weight(b, GgmlType::F32, 1, cols, &random(cols, 2.0));
    for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4K] {
        let (next, _) = weight(b, ty, n, cols, &random(n * cols, 1.0));
        for rows in [1, 3, 12] {
            let (x, y) = (random(rows * cols, 3.0), random(rows * cols, 3.0));
            let (mut xt, yt) = (tensor(b, &x, cols), tensor(b, &y, cols));
            let mut xn = poisoned(b, rows, cols);
            b.residual_norm(&mut xt, Some(&yt), &norm, eps, &mut xn, &next);
            let mut fused = poisoned(b, rows, n);
            b.matmul(&xn, &next, &mut fused, &one_group(rows));
            let sum: Vec<f32> = x.iter().zip(&y).map(|(a, c)| a + c).collect();
            assert!(same_bits(&read(b, &xt), &sum), "{ty}: x + residual");
            let mut alone = poisoned(b, rows, cols);
            b.rms_norm(&tensor(b, &sum, cols), &norm, eps, &mut alone);
            let normed = read(b, &alone);
            assert!(same_bits(&read(b, &xn), &normed), "{ty} × {rows}: norm");
            let want = matmul_of_copy(b, &normed, cols, &next, n);
            assert!(
                same_bits(&read(b, &fused), &want),
                "{ty} × {rows}: norm + matmul"
            );

            let mut act = poisoned(b, rows, cols);
            b.glu(&xt, Some(&yt), FfnActivation::SwiGlu, &mut act, &next);
            let mut fused = poisoned(b, rows, n);
            b.matmul(&act, &next, &mut fused, &one_group(rows));
            let want = matmul_of_copy(b, &read(b, &act), cols, &next, n);
            assert!(
                same_bits(&read(b, &fused), &want),
                "{ty} × {rows}: glu + matmul"
            );
        }
    }
}

/// Weights that share their input, in shared launches where they have one
/// type, biases added as they store: the same bits as one matmul (and
/// bias) each.
#[test]
fn matmul_many_matches_matmul() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let k = 512;
    let shapes = [
        (GgmlType::Q4K, 96),
        (GgmlType::Q4K, 32),
        (GgmlType::Q6K, 32),
    ];
    let ws: Vec<CudaWeight> = shapes
        .iter()
        .map(|&(ty, n)| weight(b, ty, n, k, &random(n * k, 1.0)).0)
        .collect();
    let (bq, _) = weight(b, GgmlType::F32, 1, 96, &random(96, 1.0));
    let (bv, _) = weight(b, GgmlType::F32, 1, 32, &random(32, 1.0));
    let biases = [Some(&bq), None, Some(&bv)];
    for rows in [1, 4, 8, 9] {
        let x = random(rows * k, 1.0);
        let xt = tensor(b, &x, k);
        let mut outs: Vec<CudaTensor> = shapes.iter().map(|&(_, n)| poisoned(b, rows, n)).collect();
        let mut refs: Vec<&mut CudaTensor> = outs.iter_mut().collect();
        let w_refs: Vec<&CudaWeight> = ws.iter().collect();
        b.matmul_many(&xt, &w_refs, &biases, &mut refs, &one_group(rows));
        for (((w, out), &(ty, n)), bias) in ws.iter().zip(&outs).zip(&shapes).zip(biases) {
            let mut want = poisoned(b, rows, n);
            b.matmul(&tensor(b, &x, k), w, &mut want, &one_group(rows));
            if let Some(bias) = bias {
                b.add_bias(&mut want, bias);
            }
            assert!(
                same_bits(&read(b, out), &read(b, &want)),
                "{ty} × {rows} rows"
            );
        }
    }
}

/// Q and K rotated and K and V stored in one launch: the same Q, K and
/// attention output as rotating and storing one at a time.
#[test]
fn rope_store_matches_rope_then_store() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let (rows, head_dim, n_head, n_head_kv) = (5, 64, 6, 2);
    let positions: Vec<u32> = (1000..1000 + rows as u32).collect();
    let slots: Vec<u32> = (0..2048).collect();
    begin(b, &vec![0; rows], &positions, &slots, &[]);
    let seqs = [SeqRows {
        rows: 0..rows,
        slots: &slots[..1000 + rows],
        kernels: Kernels::Batch,
    }];
    let p = |n_heads| RopeParams {
        style: RopeStyle::Neox,
        n_heads,
        head_dim,
        n_rot: head_dim,
        freq_base: 10_000.0,
        freq_scale: 1.0,
        freq_factors: None,
    };
    let attn = AttnParams {
        n_head,
        n_head_kv,
        head_dim_k: head_dim,
        head_dim_v: head_dim,
        kq_scale: 0.125,
        window: 0,
    };
    let (qd, kd) = (n_head * head_dim, n_head_kv * head_dim);
    let (q, k, v) = (
        random(rows * qd, 1.0),
        random(rows * kd, 1.0),
        random(rows * kd, 1.0),
    );
    let run = |fused: bool| {
        let (mut qt, mut kt, vt) = (tensor(b, &q, qd), tensor(b, &k, kd), tensor(b, &v, kd));
        let mut cache = b.new_kv_cache(1, 2048, kd, kd);
        if fused {
            b.rope_store(
                &mut qt,
                &mut kt,
                &vt,
                &mut cache,
                0,
                &positions,
                &seqs,
                &p(n_head),
                n_head_kv,
            );
        } else {
            b.rope(&mut qt, &positions, &p(n_head));
            b.rope(&mut kt, &positions, &p(n_head_kv));
            b.kv_store(&kt, &vt, &mut cache, 0, &positions, &seqs);
        }
        let mut out = poisoned(b, rows, qd);
        b.attention(&qt, &cache, 0, &positions, &seqs, &attn, &mut out);
        [read(b, &qt), read(b, &kt), read(b, &out)]
    };
    let (fused, apart) = (run(true), run(false));
    for ((a, c), what) in fused.iter().zip(&apart).zip(["q", "k", "attention"]) {
        assert!(same_bits(a, c), "{what}");
    }
}

/// The device's greedy choice is the CPU's: first of equal maxima, NaN
/// never taken except as the first value.
#[test]
fn argmax_matches_cpu() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let cols = 151_936;
    let mut x = random(4 * cols, 20.0);
    let mut rng = rand::rng();
    // Row 1: a tie, the later one planted first; row 2: NaNs around the
    // maximum; row 3: a NaN first.
    let (a, c) = (
        rng.random_range(cols / 2..cols),
        rng.random_range(0..cols / 2),
    );
    x[cols + a] = 25.0;
    x[cols + c] = 25.0;
    x[2 * cols + 5] = f32::NAN;
    x[2 * cols + 6] = 30.0;
    x[2 * cols + 7] = f32::NAN;
    x[3 * cols] = f32::NAN;
    let xt = tensor(b, &x, cols);
    let mut got = [0u32; 4];
    b.argmax(&xt, &mut got).unwrap();
    let want: Vec<u32> = x
        .chunks_exact(cols)
        .map(quarrel_model::sampler::argmax)
        .collect();
    assert_eq!(got.to_vec(), want);
    assert_eq!(&want[1..], &[c as u32, 6, 0]);
}

#[test]
fn embed_and_row_ops_match_reference() {
    let Some(b) = gpu() else { return };
    let b = &*b;
    let (vocab, cols) = (50, 256);
    let tokens: Vec<u32> = vec![7, 0, 49, 7, 23];
    // Q6_K: repacked at upload, 512 columns: rows of two blocks, padded.
    for (ty, cols) in [
        (GgmlType::Q4K, cols),
        (GgmlType::Q8_0, cols),
        (GgmlType::F16, cols),
        (GgmlType::Q6K, 512),
    ] {
        let (table, deq) = weight(b, ty, vocab, cols, &random(vocab * cols, 1.0));
        begin(b, &tokens, &[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], &[1, 4]);
        let mut out = poisoned(b, tokens.len(), cols);
        b.embed(&table, &tokens, &mut out);
        let reference: Vec<f64> = tokens
            .iter()
            .flat_map(|&t| deq[t as usize * cols..][..cols].iter().map(|&v| v as f64))
            .collect();
        assert!(rel_error(&read(b, &out), &reference) < 1e-7, "{ty} embed");

        let mut gathered = poisoned(b, 2, cols);
        b.gather_rows(&out, &[1, 4], &mut gathered);
        let want: Vec<f64> = [1, 4]
            .iter()
            .flat_map(|&r| reference[r * cols..][..cols].to_vec())
            .collect();
        assert!(rel_error(&read(b, &gathered), &want) < 1e-7, "gather_rows");
    }
    let x = random(4 * 96, 2.0);
    let y = random(4 * 96, 2.0);
    let mut xt = tensor(b, &x, 96);
    let yt = tensor(b, &y, 96);
    b.add(&mut xt, &yt);
    b.scale(&mut xt, 0.75);
    b.softcap(&mut xt, 3.0);
    let reference: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(&a, &c)| 3.0 * ((a as f64 + c as f64) * 0.75 / 3.0).tanh())
        .collect();
    assert!(
        rel_error(&read(b, &xt), &reference) < 1e-6,
        "add, scale, softcap"
    );
    let mut part = poisoned(b, 4, 32);
    b.copy_cols(&xt, 40, &mut part);
    let (bias, bd) = weight(b, GgmlType::F32, 1, 32, &random(32, 1.0));
    b.add_bias(&mut part, &bias);
    let want: Vec<f64> = reference
        .chunks_exact(96)
        .flat_map(|r| {
            r[40..72]
                .iter()
                .zip(&bd)
                .map(|(&v, &c)| v + c as f64)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        rel_error(&read(b, &part), &want) < 1e-6,
        "copy_cols, add_bias"
    );
}
