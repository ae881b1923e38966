//! Shared helpers of the end-to-end tests: model paths, reference data,
//! and running the `quarrel` binary.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The file name of each reference model.
pub fn model_file(name: &str) -> &'static str {
    match name {
        "qwen05" => "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "smol" => "smollm2-135m-instruct-q4_1.gguf",
        "gemma" => "gemma-3-270m-q4_k_m.gguf",
        other => panic!("unknown reference model {other}"),
    }
}

pub fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("QUARREL_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            PathBuf::from(home).join(".cache/quarrel/models")
        });
    let p = dir.join(model_file(name));
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh first",
        p.display()
    );
    p
}

pub struct Reference {
    pub model: String,
    pub json: Value,
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn reference(name: &str) -> Reference {
    let path = data_dir().join(format!("reference/{name}.json"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    Reference {
        model: name.to_string(),
        json,
    }
}

/// Runs `quarrel ARGS`, expecting success; returns stdout.
fn run_ok(args: &[&str]) -> Vec<u8> {
    run_ok_env(args, &[])
}

fn run_ok_env(args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_quarrel"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run quarrel");
    assert!(
        out.status.success(),
        "quarrel {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `quarrel ARGS`, expecting success and one JSON object on stdout.
pub fn quarrel(args: &[&str]) -> Value {
    let stdout = run_ok(args);
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "quarrel {args:?}: bad JSON ({e}): {}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// Runs `quarrel ARGS`, expecting failure; returns stderr.
pub fn quarrel_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_quarrel"))
        .args(args)
        .output()
        .expect("run quarrel");
    assert!(
        !out.status.success(),
        "quarrel {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Reads a 2-D little-endian f32 .npy file (format 1.0, C order).
pub fn read_npy_f32(path: &std::path::Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not .npy", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("False"),
        "{header}"
    );
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), dims.iter().product::<usize>());
    (dims[0], dims.get(1).copied().unwrap_or(1), data)
}

/// A fresh scratch directory for one test, removed when dropped (whether
/// the test passes or panics).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch_dir(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("quarrel-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// Runs `quarrel ARGS` expecting success, ignoring stdout.
pub fn quarrel_ok(args: &[&str]) {
    run_ok(args);
}

/// [`quarrel_ok`] with extra environment variables.
pub fn quarrel_ok_env(args: &[&str], env: &[(&str, &str)]) {
    run_ok_env(args, env);
}
