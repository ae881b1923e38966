//! `quarrel serve` on loopback with the official `openai` Python client:
//! each test runs one scenario of `serve/serve_test.py` against real
//! servers on the smallest reference model. The Python interpreter is
//! $QUARREL_TEST_PYTHON (scripts/test.sh sets up one with `openai`), else
//! `python3`, which must then have `openai` installed.

mod common;

use std::process::Command;

fn scenario(name: &str) {
    let python = std::env::var("QUARREL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/serve_test.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_quarrel"))
        .arg(common::model_path("smol"))
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "scenario {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openai_client_chat_and_completions() {
    scenario("openai");
}

#[test]
fn sixteen_concurrent_greedy_requests_match_one_at_a_time() {
    scenario("concurrency");
}

#[test]
fn preemption_under_a_tiny_kv_budget_keeps_outputs() {
    scenario("preemption");
}

#[test]
fn a_client_disconnect_frees_its_kv_blocks() {
    scenario("disconnect");
}

#[test]
fn malformed_requests_get_openai_errors() {
    scenario("bad_input");
}

#[test]
fn shutdown_drains_in_flight_requests() {
    scenario("shutdown");
}
