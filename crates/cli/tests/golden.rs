//! Golden tests against llama.cpp's outputs on the real models
//! (tests/data/reference, made by llama.cpp's CPU build; see its README).
//! The models are fetched by scripts/fetch-models.sh; a missing model fails
//! the test with that instruction rather than passing silently.

mod common;

use common::{model_path, quarrel, reference, Reference};
use serde_json::Value;

/// llama.cpp's own top-2 gap below which a different greedy choice is a
/// numeric near-tie rather than a bug (the criterion).
const NEAR_TIE: f64 = 0.05;
/// Largest accepted difference between our log-probability of llama.cpp's
/// chosen token and llama.cpp's, before any divergence. Measured: at most
/// 0.0008 everywhere but the cases below.
const LOGPROB_TOLERANCE: f64 = 0.01;

/// Understood deviations: (model, prompt prefix, bound, why). Each must
/// still occur (the test fails when it disappears, so the list stays true).
const KNOWN_LOGPROB_DRIFT: &[(&str, &str, f64, &str)] = &[(
    "gemma",
    "The history of computing",
    0.25,
    "llama-server keeps a separate, pruned cache for gemma's windowed layers; \
         decode steps past 512 positions attend over it in an order we do not \
         reproduce yet (tokens stay identical; measured drift 0.13)",
)];

struct Outcome {
    identical: bool,
    note: String,
}

fn check_prompt(model: &str, case: &Value) -> Outcome {
    let prompt = case["prompt"].as_str().unwrap();
    let want_prompt: Vec<u64> = serde_json::from_value(case["prompt_tokens"].clone()).unwrap();
    let want: Vec<u64> = serde_json::from_value(case["tokens"].clone()).unwrap();
    let top5 = case["top5"].as_array().unwrap();
    let out = quarrel(&[
        "run",
        "-m",
        model_path(model).to_str().unwrap(),
        "-p",
        prompt,
        "-n",
        &want.len().to_string(),
        "--temp",
        "0",
        "--format",
        "json",
        "--top-logprobs",
        "5",
    ]);
    let got_prompt: Vec<u64> = serde_json::from_value(out["prompt_tokens"].clone()).unwrap();
    assert_eq!(
        got_prompt, want_prompt,
        "{model}: prompt tokens of {prompt:?}"
    );
    let got: Vec<u64> = serde_json::from_value(out["tokens"].clone()).unwrap();
    let ours = out["top_logprobs"].as_array().unwrap();

    let mut max_dlp = 0.0f64;
    for (i, w) in want.iter().enumerate() {
        let ref_top = top5[i].as_array().unwrap();
        let ref_lp = |k: usize| ref_top[k]["logprob"].as_f64().unwrap();
        let our_lp_of = |id: u64| {
            ours[i]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["id"].as_u64() == Some(id))
                .map(|e| e["logprob"].as_f64().unwrap())
        };
        if let Some(lp) = our_lp_of(*w) {
            max_dlp = max_dlp.max((lp - ref_lp(0)).abs());
        }
        match got.get(i) {
            Some(g) if g == w => continue,
            _ => {
                let gap = ref_lp(0) - ref_lp(1);
                let ours_is_second = got.get(i) == ref_top[1]["id"].as_u64().as_ref();
                assert!(
                    gap < NEAR_TIE && ours_is_second,
                    "{model}: {prompt:?} diverges at token {i}: llama.cpp {w} (logprob {:.4}), \
                     quarrel {:?}; llama.cpp's top-2 gap {gap:.4} is no near-tie",
                    ref_lp(0),
                    got.get(i),
                );
                return Outcome {
                    identical: false,
                    note: format!(
                        "{prompt:?}: near-tie at token {i}: llama.cpp top-2 {:.4} / {:.4} (gap {gap:.4})",
                        ref_lp(0),
                        ref_lp(1)
                    ),
                };
            }
        }
    }
    assert_eq!(got.len(), want.len(), "{model}: {prompt:?}: length");
    let known = KNOWN_LOGPROB_DRIFT
        .iter()
        .find(|(m, p, _, _)| *m == model && prompt.starts_with(p));
    let note = match known {
        Some((_, _, bound, why)) => {
            assert!(
                max_dlp >= LOGPROB_TOLERANCE,
                "{model}: {prompt:?}: the known drift is gone ({max_dlp:.4}): drop it from the list"
            );
            assert!(
                max_dlp < *bound,
                "{model}: {prompt:?}: drift {max_dlp:.4} ({why})"
            );
            format!("{prompt:?}: identical tokens, known log-prob drift {max_dlp:.4} ({why})")
        }
        None => {
            assert!(
                max_dlp < LOGPROB_TOLERANCE,
                "{model}: {prompt:?}: log-probabilities differ from llama.cpp's by up to {max_dlp:.4}"
            );
            format!("{prompt:?}: identical, max |Δlogprob| {max_dlp:.4}")
        }
    };
    Outcome {
        identical: true,
        note,
    }
}

fn check_model(name: &str) {
    let Reference { model, json } = reference(name);
    let mut identical = 0;
    let cases = json["greedy"].as_array().unwrap();
    for case in cases {
        let o = check_prompt(&model, case);
        identical += usize::from(o.identical);
        eprintln!("{name}: {}", o.note);
    }
    eprintln!(
        "{name}: {identical}/{} continuations identical",
        cases.len()
    );
}

#[test]
fn greedy_matches_llama_cpp_qwen05() {
    check_model("qwen05");
}

#[test]
fn greedy_matches_llama_cpp_smol() {
    check_model("smol");
}

#[test]
fn greedy_matches_llama_cpp_gemma() {
    check_model("gemma");
}
