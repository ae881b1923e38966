//! GGUF files: a validating, memory-mapped reader with zero-copy tensor
//! views, and a writer (for tests, synthetic models and quantization).
//! Knows files, metadata and tensors; nothing about models.

mod error;
mod reader;
mod types;
mod value;
mod writer;

pub use error::{FormatError, GgufError};
pub use reader::{GgufFile, Storage, TensorInfo, TensorView, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
pub use types::GgmlType;
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::GgufWriter;
