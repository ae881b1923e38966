//! Reader for the golden files under tests/data (format in make_golden.py).

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use quarrel_quant::GgmlType;

/// One golden record: small integer metadata plus byte blobs.
pub struct Record {
    pub meta: Vec<u32>,
    pub blobs: Vec<Vec<u8>>,
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The checked-in files whose names start with `prefix`, sorted.
pub fn files(prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(prefix) && name.ends_with(".bin")
        })
        .collect();
    v.sort();
    v
}

fn u32_at(data: &[u8], pos: &mut usize) -> u32 {
    let v = u32::from_le_bytes(data[*pos..*pos + 4].try_into().unwrap());
    *pos += 4;
    v
}

pub fn read_records(path: &Path) -> Vec<Record> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&data[..4], b"QGLD", "{}", path.display());
    let mut pos = 4;
    let count = u32_at(&data, &mut pos);
    let mut out = Vec::new();
    for _ in 0..count {
        let nm = u32_at(&data, &mut pos);
        let meta = (0..nm).map(|_| u32_at(&data, &mut pos)).collect();
        let nb = u32_at(&data, &mut pos);
        let blobs = (0..nb)
            .map(|_| {
                let len = u32_at(&data, &mut pos) as usize;
                pos += len;
                data[pos - len..pos].to_vec()
            })
            .collect();
        out.push(Record { meta, blobs });
    }
    assert_eq!(pos, data.len(), "{}: trailing bytes", path.display());
    out
}

pub fn ggml_type(id: u32) -> GgmlType {
    GgmlType::from_id(id).unwrap_or_else(|| panic!("unknown type id {id}"))
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
