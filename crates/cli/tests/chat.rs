//! `quarrel chat` driven through stdin, as a person types: two turns, then
//! end of input.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{model_path, quarrel};

#[test]
fn two_turns_then_end_of_input() {
    let model = model_path("smol");
    let m = model.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quarrel"))
        .args(["chat", "-m", m, "--temp", "0", "-n", "16"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nAnd of Italy?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Prompts ("> ") precede each answer; a third prompt meets end of input.
    let answers: Vec<&str> = text.split("> ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{text:?}");
    assert!(answers[2].trim().is_empty(), "{text:?}");
    // The first turn is what `run --chat` gives for the same message.
    let single = quarrel(&[
        "run",
        "-m",
        m,
        "--chat",
        "-p",
        "What is the capital of France?",
        "--temp",
        "0",
        "-n",
        "16",
        "--format",
        "json",
    ]);
    assert_eq!(
        answers[0].trim_end(),
        single["text"].as_str().unwrap().trim_end()
    );
    assert!(!answers[1].trim().is_empty(), "{text:?}");
}
