//! `quarrel tokenize`: the ids of a text, special tokens parsed as
//! llama.cpp parses them.

use anyhow::Result;
use clap::Args;
use quarrel_tokenizer::Tokenizer;

use super::Format;
use crate::load;

#[derive(Args, Clone, Debug)]
pub struct TokenizeArgs {
    #[arg(short = 'm', long)]
    pub model: Option<std::path::PathBuf>,
    /// Do not add the BOS token even if the model asks for it.
    #[arg(long)]
    pub no_bos: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    pub text: String,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = load::resolve_model(args.model.as_deref())?;
    let file = load::open(&path)?;
    let tok = Tokenizer::from_gguf(file.metadata())?;
    let ids = tok.encode(&args.text, !args.no_bos, true);
    match args.format {
        Format::Json => println!("{}", serde_json::json!({ "ids": ids })),
        Format::Text => {
            for id in ids {
                let piece = tok.token_to_piece(id);
                println!("{id:>7} -> {:?}", String::from_utf8_lossy(piece));
            }
        }
    }
    Ok(())
}
