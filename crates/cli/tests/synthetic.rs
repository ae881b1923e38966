//! Architectures with no real model file here (Llama 3 rope scaling,
//! Mistral's windowed llama files, Phi-3's fused projections, and small
//! Qwen2/Gemma 3): synthetic models written by `quarrel synth`, evaluated
//! over 256 positions, against llama.cpp's logits on the same files
//! (tests/data/synthetic, made by scripts/make-synthetic-reference.sh).
//!
//! Both the SIMD kernels and the scalar reference kernels
//! (`QUARREL_SIMD=off`) reproduce llama.cpp's logits bit for bit.

mod common;

use common::{data_dir, quarrel_ok, quarrel_ok_env, read_npy_f32, scratch_dir};

const POSITIONS: usize = 256;

/// The token sequence scripts/compare-logits.py uses.
fn tokens(n_vocab: usize) -> Vec<usize> {
    (0..POSITIONS)
        .map(|i| 3 + (i * 7919 + 13) % (n_vocab - 3))
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

fn check(preset: &str) {
    let (rows, n_vocab, want) =
        read_npy_f32(&data_dir().join(format!("synthetic/{preset}-q8_0.npy")));
    assert_eq!(rows, POSITIONS);
    let dir = scratch_dir(preset);
    let model = dir.join("model.gguf");
    let out = dir.join("logits.npy");
    let model_s = model.to_str().unwrap();
    quarrel_ok(&["synth", "--preset", preset, "--type", "q8_0", "-o", model_s]);
    let toks: Vec<String> = tokens(n_vocab).iter().map(|t| t.to_string()).collect();
    let toks = toks.join(",");
    for simd in [false, true] {
        let args = [
            "logits",
            "-m",
            model_s,
            "--tokens",
            &toks,
            "-o",
            out.to_str().unwrap(),
        ];
        if simd {
            quarrel_ok(&args);
        } else {
            quarrel_ok_env(&args, &[("QUARREL_SIMD", "off")]);
        }
        let (r, c, got) = read_npy_f32(&out);
        assert_eq!((r, c), (rows, n_vocab));
        let max_diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let agree = got
            .chunks_exact(n_vocab)
            .zip(want.chunks_exact(n_vocab))
            .filter(|(g, w)| argmax(g) == argmax(w))
            .count();
        eprintln!(
            "{preset} (simd {simd}): top-1 agreement {agree}/{rows}, max |Δlogit| {max_diff:e}"
        );
        assert_eq!(
            max_diff, 0.0,
            "{preset} (simd {simd}): logits are not bit-exact"
        );
    }
}

#[test]
fn llama_matches_llama_cpp() {
    check("tiny-llama");
}

#[test]
fn llama3_rope_scaling_matches_llama_cpp() {
    check("tiny-llama3");
}

#[test]
fn mistral_windowed_llama_matches_llama_cpp() {
    check("tiny-mistral");
}

#[test]
fn phi3_fused_projections_match_llama_cpp() {
    check("tiny-phi3");
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("tiny-qwen2");
}

#[test]
fn gemma3_sliding_window_matches_llama_cpp() {
    check("tiny-gemma3");
}
