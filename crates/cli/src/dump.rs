//! `--dump-activations DIR`: every named intermediate as a .npy file,
//! named `<call>-<name>[-<layer>].npy`, so a layer-by-layer diff against
//! another engine is one script.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use quarrel_model::ActivationSink;

pub struct NpyDump {
    dir: PathBuf,
    call: usize,
    pub error: Option<std::io::Error>,
}

impl NpyDump {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(NpyDump {
            dir,
            call: 0,
            error: None,
        })
    }

    /// Starts the files of the next forward pass.
    pub fn next_call(&mut self) {
        self.call += 1;
    }
}

/// NumPy format 1.0: magic, header length, a padded dict, raw data.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fs::File::create(path)?.write_all(&out)
}

impl ActivationSink for NpyDump {
    fn record(&mut self, name: &str, layer: Option<usize>, rows: usize, cols: usize, data: &[f32]) {
        let file = match layer {
            Some(l) => format!("{:03}-{name}-{l:02}.npy", self.call),
            None => format!("{:03}-{name}.npy", self.call),
        };
        if let Err(e) = write_npy(&self.dir.join(file), rows, cols, data) {
            self.error.get_or_insert(e);
        }
    }
}
