//! Bit-exact checks against llama.cpp's own x86 (AVX2 + FMA + F16C) build:
//! tests/data/ggml_*.bin hold outputs of its reference quantizers, its CPU
//! activation quantizers, its vec_dot kernels, its repacked-gemm activation
//! quantizers and whole mul_mat ops on its CPU backend (make_golden_ggml.py),
//! including the batches its tiled K-quant matmul takes (ggml_tiled.bin).

mod common;

use std::collections::HashMap;

use quarrel_quant::{
    dot, matmul_path, quantize_activation, quantize_activation_for, quantize_row, vec_dot,
    vec_dot_type, DotKernel, GgmlType, MatmulPath,
};

fn inputs() -> HashMap<u32, Vec<f32>> {
    common::read_records(&common::data_dir().join("ggml_inputs.bin"))
        .into_iter()
        .map(|r| (r.meta[0], common::f32s(&r.blobs[0])))
        .collect()
}

/// ggml's activation rows, keyed by (vec_dot type id, input index).
fn activations() -> HashMap<(u32, u32), Vec<u8>> {
    common::read_records(&common::data_dir().join("ggml_activation.bin"))
        .into_iter()
        .map(|mut r| ((r.meta[0], r.meta[1]), r.blobs.remove(0)))
        .collect()
}

fn first_diff(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(g, w)| g != w)
}

#[test]
fn quantize_row_matches_ggml_reference_quantizers() {
    let inputs = inputs();
    let records = common::read_records(&common::data_dir().join("ggml_quantize.bin"));
    assert!(records.len() >= 50);
    for r in records {
        let ty = common::ggml_type(r.meta[0]);
        let x = &inputs[&r.meta[1]];
        let mut got = vec![0u8; r.blobs[0].len()];
        quantize_row(ty, x, &mut got).unwrap();
        assert_eq!(
            first_diff(&got, &r.blobs[0]),
            None,
            "{ty} input {}",
            r.meta[1]
        );
    }
}

#[test]
fn quantize_activation_matches_ggml_x86_cpu_path() {
    let inputs = inputs();
    // A weight type for each activation type.
    let weight_for = |act: GgmlType| {
        GgmlType::ALL
            .into_iter()
            .find(|&w| vec_dot_type(w) == act)
            .unwrap()
    };
    let acts = activations();
    assert_eq!(acts.len(), 28);
    for ((ty, input), want) in acts {
        let wty = weight_for(common::ggml_type(ty));
        let mut got = vec![0u8; want.len()];
        quantize_activation(wty, &inputs[&input], &mut got).unwrap();
        assert_eq!(
            first_diff(&got, &want),
            None,
            "{wty} activations, input {input}"
        );
    }
}

#[test]
fn activation_quantizers_differ_from_reference_on_ties() {
    // Input 2 is built of exact .5 ties; documents why quantize_activation
    // must not be the reference quantizer for Q8_0 / Q8_1.
    let x = &inputs()[&2];
    for (w, act) in [
        (GgmlType::Q4_0, GgmlType::Q8_0),
        (GgmlType::Q4_1, GgmlType::Q8_1),
    ] {
        let len = act.row_bytes(x.len() as u64).unwrap() as usize;
        let (mut cpu, mut reference) = (vec![0u8; len], vec![0u8; len]);
        quantize_activation(w, x, &mut cpu).unwrap();
        quantize_row(act, x, &mut reference).unwrap();
        assert_ne!(cpu, reference, "{act}");
    }
}

#[test]
fn vec_dot_matches_ggml_x86_kernels_bit_for_bit() {
    let acts = activations();
    let records = common::read_records(&common::data_dir().join("ggml_vec_dot.bin"));
    assert!(records.len() >= 100);
    for r in records {
        let ty = common::ggml_type(r.meta[0]);
        let n = r.meta[1] as usize;
        let want = common::f32s(&r.blobs[1]);
        for (&input, want) in r.meta[2..].iter().zip(&want) {
            let act_len = vec_dot_type(ty).row_bytes(n as u64).unwrap() as usize;
            let act = &acts[&(vec_dot_type(ty).id(), input)][..act_len];
            let got = vec_dot(ty, n, &r.blobs[0], act);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{ty} n={n} input {input}: {got} != {want}"
            );
        }
    }
}

/// A weight type whose activations are `act`, for the quantizer entry points.
fn weight_for(act: GgmlType) -> GgmlType {
    match act {
        GgmlType::Q8_0 => GgmlType::Q4_0,
        GgmlType::Q8K => GgmlType::Q4K,
        _ => unreachable!("{act}"),
    }
}

#[test]
fn gemm_activation_quantizers_match_ggml_quantize_mat_4x8() {
    let records = common::read_records(&common::data_dir().join("ggml_repack_act.bin"));
    assert_eq!(records.len(), 6);
    let mut sign_flips = 0;
    for r in records {
        let (act, k) = (common::ggml_type(r.meta[0]), r.meta[1] as usize);
        let w = weight_for(act);
        let x = common::f32s(&r.blobs[0]);
        let row_bytes = r.blobs[1].len() / 4;
        for (i, (src, want)) in x.chunks(k).zip(r.blobs[1].chunks(row_bytes)).enumerate() {
            let mut got = vec![0u8; row_bytes];
            quantize_activation_for(DotKernel::Gemm, w, src, &mut got).unwrap();
            assert_eq!(first_diff(&got, want), None, "{act} row {i}");
            let mut gemv = vec![0u8; row_bytes];
            quantize_activation_for(DotKernel::Gemv, w, src, &mut gemv).unwrap();
            sign_flips += usize::from(gemv != got);
        }
    }
    // The Q8_K 4x8 quantizer picks the other scale sign on +-max ties.
    assert!(sign_flips >= 3, "{sign_flips}");
}

/// Quarrel's matmul structure on the public API: each activation row
/// quantized once for its kernel, then dotted with every weight row.
fn matmul(ty: GgmlType, path: MatmulPath, k: usize, w: &[u8], x: &[f32], n: usize) -> Vec<f32> {
    let act_bytes = vec_dot_type(ty).row_bytes(k as u64).unwrap() as usize;
    let w_bytes = ty.row_bytes(k as u64).unwrap() as usize;
    let mut out = Vec::new();
    for (t, src) in x.chunks(k).take(n).enumerate() {
        let kernel = path.kernel(t, n);
        let mut act = vec![0u8; act_bytes];
        quantize_activation_for(kernel, ty, src, &mut act).unwrap();
        out.extend(w.chunks(w_bytes).map(|wr| dot(kernel, ty, k, wr, &act)));
    }
    out
}

/// Whether ggml computes this batch with the kernels modelled here. Not yet
/// modelled: llamafile's tinyBLAS, which takes float weights for batches of
/// two or more rows.
fn modelled(ty: GgmlType, n: usize) -> bool {
    use GgmlType::*;
    match ty {
        F32 | F16 | Bf16 => n < 2,
        _ => true,
    }
}

/// Checks every modelled batch of a ggml_matmul.bin-format file bit for bit;
/// returns how many matrices were repacked and how many batches checked.
fn check_matmuls(file: &str, records: usize) -> (usize, usize) {
    let records_ = common::read_records(&common::data_dir().join(file));
    let k = records_[0].meta[0] as usize;
    let x = common::f32s(&records_[0].blobs[0]);
    assert_eq!(records_.len(), records, "{file}");
    let (mut repacked, mut checked) = (0, 0);
    for r in &records_[1..] {
        let (ty, m) = (common::ggml_type(r.meta[0]), r.meta[1] as usize);
        let path = matmul_path(ty, m);
        assert_eq!(path == MatmulPath::Repacked, r.meta[2] == 1, "{ty} x {m}");
        repacked += usize::from(path == MatmulPath::Repacked);
        for (&n, want) in r.meta[3..].iter().zip(&r.blobs[1..]) {
            let n = n as usize;
            if !modelled(ty, n) {
                continue;
            }
            checked += 1;
            let got = matmul(ty, path, k, &r.blobs[0], &x, n);
            for (i, (g, w)) in got.iter().zip(common::f32s(want)).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{file}: {ty} {m} rows, batch {n}: row {}, output {}: {g} != {w}",
                    i / m,
                    i % m
                );
            }
        }
    }
    (repacked, checked)
}

#[test]
fn matmul_matches_ggml_mul_mat_on_the_cpu_backend() {
    let (repacked, checked) = check_matmuls("ggml_matmul.bin", 27);
    assert_eq!(repacked, 2, "Q4_0 and Q4_K with 16 rows");
    assert_eq!(
        checked,
        6 + 10 * 10,
        "float batches of 1, all quant batches"
    );
}

#[test]
fn tiled_matmul_matches_ggml_around_its_batch_threshold() {
    // Q2_K..Q6_K matrices of 12, 44 and 260 rows (none repacked), batches
    // of 7 (vec_dot) and 8, 9, 16 (the tiled path's narrow K loop), 17, 64
    // (its standard one).
    let (repacked, checked) = check_matmuls("ggml_tiled.bin", 16);
    assert_eq!(repacked, 0);
    assert_eq!(checked, 5 * (6 + 6 + 2));
}

#[test]
fn tiled_matmul_differs_from_vec_dot() {
    // Documents why the batch size matters: the same rows through the tiled
    // path (batch of 8) and vec_dot (batch of 7) round differently.
    let records = common::read_records(&common::data_dir().join("ggml_tiled.bin"));
    let k = records[0].meta[0] as usize;
    let x = common::f32s(&records[0].blobs[0]);
    for r in &records[1..] {
        let (ty, m) = (common::ggml_type(r.meta[0]), r.meta[1] as usize);
        let tiled = matmul(ty, MatmulPath::Tiled, k, &r.blobs[0], &x, 8);
        let plain = matmul(ty, MatmulPath::VecDot, k, &r.blobs[0], &x, 8);
        let differ = tiled.iter().zip(&plain).filter(|(a, b)| a != b).count();
        assert!(differ > 0, "{ty} x {m}");
    }
}

#[test]
fn repacked_kernels_differ_from_vec_dot_and_each_other() {
    // Documents why the path matters: on the same data, the repacked Q4_K
    // gemm, its gemv and vec_dot each give results the others do not.
    let records = common::read_records(&common::data_dir().join("ggml_matmul.bin"));
    let k = records[0].meta[0] as usize;
    let x = common::f32s(&records[0].blobs[0]);
    let r = records[1..]
        .iter()
        .find(|r| r.meta[0] == GgmlType::Q4K.id() && r.meta[2] == 1)
        .unwrap();
    let gemm = matmul(GgmlType::Q4K, MatmulPath::Repacked, k, &r.blobs[0], &x, 8);
    let gemv: Vec<f32> = (0..8)
        .flat_map(|t| {
            matmul(
                GgmlType::Q4K,
                MatmulPath::Repacked,
                k,
                &r.blobs[0],
                &x[t * k..],
                1,
            )
        })
        .collect();
    let plain = matmul(GgmlType::Q4K, MatmulPath::VecDot, k, &r.blobs[0], &x, 8);
    let differ = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(a, b)| a != b).count();
    assert!(differ(&gemm, &gemv) > 0);
    assert!(differ(&gemm, &plain) > 0);
    assert!(differ(&gemv, &plain) > 0);
}
