//! Perplexity as llama-perplexity computes it: the real models against
//! llama.cpp's figures on the reference text, and the KL-divergence
//! comparison between two runs.

mod common;

use common::{data_dir, model_path, quarrel, quarrel_ok, scratch_dir};
use serde_json::Value;

/// The text llama.cpp's reference figures were measured on.
const TEXT: &str = "/usr/share/common-licenses/GPL-3";

fn reference_ppl(model: &str) -> f64 {
    let path = data_dir().join("reference/perplexity.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap()["ppl"]
        .as_f64()
        .unwrap()
}

fn check_real(model: &str) {
    assert!(
        std::path::Path::new(TEXT).exists(),
        "{TEXT} (Debian's base-files) is missing"
    );
    let out = quarrel(&[
        "perplexity",
        "-m",
        model_path(model).to_str().unwrap(),
        "-f",
        TEXT,
        "-c",
        "512",
        "--format",
        "json",
    ]);
    let ppl = out["ppl"].as_f64().unwrap();
    let want = reference_ppl(model);
    let rel = (ppl - want).abs() / want;
    eprintln!(
        "{model}: PPL {ppl:.4} (llama.cpp {want:.4}, {:.3}% apart)",
        100.0 * rel
    );
    assert_eq!(out["chunks"].as_u64(), Some(14), "{out}");
    assert!(rel < 0.005, "{model}: PPL {ppl} vs llama.cpp's {want}");
}

#[test]
fn perplexity_matches_llama_cpp_smol() {
    check_real("smol");
}

#[test]
fn perplexity_matches_llama_cpp_gemma() {
    check_real("gemma");
}

#[test]
fn perplexity_matches_llama_cpp_qwen05() {
    check_real("qwen05");
}

#[test]
fn kl_divergence_compares_two_runs() {
    let dir = scratch_dir("kld");
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let model = |ty: &str| {
        let p = dir.join(format!("{ty}.gguf"));
        quarrel_ok(&[
            "synth",
            "--preset",
            "tiny-llama",
            "--type",
            ty,
            "-o",
            p.to_str().unwrap(),
        ]);
        p
    };
    let (q8, q4) = (model("q8_0"), model("q4_0"));
    let base = dir.join("base.bin");
    let ppl = |m: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "perplexity",
            "-m",
            m.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
            "-c",
            "128",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        quarrel(&args)
    };
    let b = base.to_str().unwrap();
    let saved = ppl(&q8, &["--save-logits", b]);
    assert!(saved["chunks"].as_u64().unwrap() >= 2);
    let same = ppl(&q8, &["--kl-divergence", b]);
    assert_eq!(same["ppl"], saved["ppl"]);
    let k = &same["kl_divergence"];
    // Only the f16 storage of the saved log-probabilities separates them.
    assert!(k["mean_kld"].as_f64().unwrap().abs() < 1e-4, "{k}");
    assert_eq!(k["top1_agreement"].as_f64(), Some(1.0));
    let other = ppl(&q4, &["--kl-divergence", b]);
    let k = &other["kl_divergence"];
    let kld = k["mean_kld"].as_f64().unwrap();
    assert!(kld > 1e-4 && kld < 1.0, "{k}");
    assert!(k["top1_agreement"].as_f64().unwrap() > 0.5, "{k}");
    // A base saved for other tokens is refused.
    let err = common::quarrel_fails(&[
        "perplexity",
        "-m",
        q8.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "64",
        "--kl-divergence",
        b,
    ]);
    assert!(err.contains("other tokens, context or vocabulary"), "{err}");
}
