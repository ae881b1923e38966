//! `quarrel`: run, chat, serve, bench, tokenize, inspect and perplexity on GGUF models.

mod commands;
mod dump;
mod load;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quarrel",
    version,
    about = "An LLM inference engine for GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Run(commands::run::RunArgs),
    /// Talk with a model, turn by turn, through its chat template.
    Chat(commands::chat::ChatArgs),
    /// Print the token ids of a text.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Print a GGUF file's metadata and tensor table.
    Inspect(commands::inspect::InspectArgs),
    /// Measure perplexity on a text file, as llama-perplexity does.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Write the logits of every position of a token sequence (.npy).
    Logits(commands::logits::LogitsArgs),
    /// Write a synthetic GGUF model at a real model's shapes.
    Synth(commands::synth::SynthArgs),
    /// Measure prompt and generation throughput, as llama-bench does.
    Bench(commands::bench::BenchArgs),
    /// Serve the OpenAI API over HTTP, with continuous batching.
    Serve(commands::serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(a)) => commands::run::run(a),
        Some(Command::Chat(a)) => commands::chat::run(a),
        Some(Command::Tokenize(a)) => commands::tokenize::run(a),
        Some(Command::Inspect(a)) => commands::inspect::run(a),
        Some(Command::Perplexity(a)) => commands::perplexity::run(a),
        Some(Command::Logits(a)) => commands::logits::run(a),
        Some(Command::Synth(a)) => commands::synth::run(a),
        Some(Command::Bench(a)) => commands::bench::run(a),
        Some(Command::Serve(a)) => commands::serve::run(a),
        // Bare `quarrel`: a short generation with the default model.
        None => commands::run::run(commands::run::RunArgs::demo()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
