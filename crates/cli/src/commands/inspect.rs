//! `quarrel inspect`: metadata and a tensor table.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::load;

#[derive(Args, Clone, Debug)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Array items shown before "… N more".
    #[arg(long, default_value_t = 8)]
    pub max_items: usize,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let f = load::open(&args.model)?;
    println!(
        "{}: GGUF v{}, {} bytes, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        args.model.display(),
        f.version(),
        f.file_size(),
        f.metadata().len(),
        f.tensors().len(),
        f.alignment(),
        f.data_offset()
    );
    println!("\nmetadata:");
    for (k, v) in f.metadata().iter() {
        let mut s = v.summary(args.max_items);
        if s.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            s = format!("{}… ({} chars)", &s[..cut], s.len());
        }
        println!("  {k} = {s}");
    }
    println!("\ntensors:");
    println!(
        "  {:<40} {:<6} {:<22} {:>12}",
        "name", "type", "shape", "bytes"
    );
    let mut total = 0u64;
    for t in f.tensors() {
        total += t.size;
        println!(
            "  {:<40} {:<6} {:<22} {:>12}",
            t.name,
            t.ty.to_string(),
            format!("{:?}", t.dims),
            t.size
        );
    }
    println!("  total tensor bytes: {total}");
    Ok(())
}
