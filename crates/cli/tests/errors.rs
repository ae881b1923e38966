//! Bad input at the command line: each case exits non-zero with one clear
//! line naming what is wrong, never a panic.

mod common;

use std::process::Command;

use common::{scratch_dir, Scratch};
use quarrel_gguf::{GgmlType, GgufWriter, Value};

/// Runs quarrel; returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quarrel"))
        .args(args)
        .env("QUARREL_MODELS", "/nonexistent-quarrel-cache")
        .output()
        .expect("run quarrel");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn fails_with(args: &[&str], needle: &str) {
    let (code, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "{args:?}: expected {needle:?} in the first line of {err:?}"
    );
}

/// A tiny synthetic model, then `edit` applied to its bytes; the file
/// lives as long as the returned directory.
fn model_file(name: &str, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> (Scratch, String) {
    let dir = scratch_dir(name);
    let path = dir.join("m.gguf");
    let p = path.to_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_quarrel"))
        .args([
            "synth",
            "--preset",
            "tiny-llama",
            "--type",
            "q4_0",
            "-o",
            &p,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, edit(bytes)).unwrap();
    (dir, p)
}

fn write_gguf(name: &str, w: &GgufWriter) -> (Scratch, String) {
    let dir = scratch_dir(name);
    let path = dir.join("m.gguf");
    w.write_file(&path).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

#[test]
fn missing_model_and_default_model() {
    fails_with(
        &["run", "-m", "/nonexistent/x.gguf", "-p", "hi"],
        "/nonexistent/x.gguf",
    );
    fails_with(&["run", "-p", "hi"], "scripts/fetch-models.sh");
}

#[test]
fn truncated_and_garbage_files() {
    let (_truncated_dir, truncated) = model_file("truncated", |b| b[..b.len() / 2].to_vec());
    fails_with(&["run", "-m", &truncated, "-p", "hi"], "runs past the end");
    let (_header_only_dir, header_only) = model_file("header", |b| b[..20].to_vec());
    fails_with(&["inspect", &header_only], "not a valid GGUF file");
    let (_garbage_dir, garbage) = model_file("garbage", |b| b.iter().map(|x| x ^ 0x5a).collect());
    fails_with(&["run", "-m", &garbage, "-p", "hi"], "bad magic");
}

#[test]
fn unknown_architecture_and_block_type() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("mamba9".into()));
    let (_dir, p) = write_gguf("arch", &w);
    fails_with(
        &["run", "-m", &p, "-p", "hi"],
        "unknown architecture \"mamba9\"",
    );

    // A valid file whose matrices use a block type we cannot compute with.
    let (_dir, p) = model_file("iq", |mut b| {
        let f = quarrel_gguf::GgufFile::from_bytes(b.clone(), "m").unwrap();
        let info = f.tensor_info("blk.0.attn_q.weight").unwrap().clone();
        // Rewrite the type id in the tensor info: find the name, then skip
        // the dims to the type field.
        let name = info.name.as_bytes();
        let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        let ty_at = at + 4 + 8 * info.dims.len();
        assert_eq!(b[ty_at..ty_at + 4], GgmlType::Q4_0.id().to_le_bytes());
        // IQ4_NL has the same block size and bytes per block as Q4_0.
        b[ty_at..ty_at + 4].copy_from_slice(&GgmlType::Iq4Nl.id().to_le_bytes());
        b
    });
    fails_with(&["run", "-m", &p, "-p", "hi"], "block type IQ4_NL");
}

#[test]
fn missing_tensor_is_named() {
    let mut w = GgufWriter::new();
    for (k, v) in [
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(1)),
        ("llama.embedding_length", Value::U32(32)),
        ("llama.feed_forward_length", Value::U32(64)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.vocab_size", Value::U32(8)),
    ] {
        w.set(k, v);
    }
    w.add_tensor(
        "token_embd.weight",
        GgmlType::F32,
        &[32, 8],
        vec![0; 32 * 8 * 4],
    )
    .unwrap();
    let (_dir, p) = write_gguf("missing", &w);
    fails_with(
        &["run", "-m", &p, "-p", "hi"],
        "missing tensor \"output_norm.weight\"",
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let (_dir, p) = model_file("ctx", |b| b);
    let long = "word ".repeat(200);
    fails_with(
        &["run", "-m", &p, "-c", "64", "-p", &long, "-n", "4"],
        "does not fit the context",
    );
}

#[test]
fn bad_arguments() {
    let (code, err) = run(&["run", "--temp", "hot", "-p", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'hot'"), "{err}");
    fails_with(
        &["synth", "--preset", "nope", "-o", "/tmp/x"],
        "unknown preset \"nope\"",
    );
    fails_with(&["frobnicate"], "unrecognized subcommand");
}
