//! Errors that name the file, the byte offset and what is wrong.

use std::path::PathBuf;

use crate::types::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid GGUF file: {kind} (at byte {offset})", path.display())]
    Format {
        path: PathBuf,
        offset: u64,
        kind: FormatError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic {0:02x?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("truncated: {what} needs {needed} bytes, {available} remain")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("{what} {count} cannot fit in the {available} bytes that remain")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        available: u64,
    },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),
    #[error("arrays nested too deep")]
    NestingTooDeep,
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("general.alignment must be a power-of-two u32, found {0}")]
    BadAlignment(String),
    #[error("tensor {name:?} has {n_dims} dimensions (at most 4)")]
    TooManyDims { name: String, n_dims: usize },
    #[error("tensor {name:?} has unknown type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: shape {dims:?} is invalid for type {ty} (rows must hold whole blocks of {})", ty.block_size())]
    BadShape {
        name: String,
        ty: GgmlType,
        dims: Vec<u64>,
    },
    #[error(
        "tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?}: data [{offset}, +{size}) runs past the end of the data section ({available} bytes)")]
    DataOutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        available: u64,
    },
    #[error("tensors {first:?} and {second:?} overlap")]
    Overlap { first: String, second: String },
}
