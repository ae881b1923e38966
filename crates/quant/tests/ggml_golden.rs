//! Bit-exact checks against llama.cpp's own x86 (AVX2 + FMA + F16C) build:
//! tests/data/ggml_*.bin hold outputs of its reference quantizers, its CPU
//! activation quantizers and its vec_dot kernels (make_golden_ggml.py).

mod common;

use std::collections::HashMap;

use quarrel_quant::{quantize_activation, quantize_row, vec_dot, vec_dot_type, GgmlType};

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
