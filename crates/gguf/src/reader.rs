//! Reading GGUF files (versions 2 and 3).
//!
//! Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
//! the metadata key/values, the tensor infos (name, dims, type, offset), then
//! padding to `general.alignment` and the tensor data. Everything read from
//! the file is bounded by the bytes that remain before anything is allocated
//! or indexed, so a hostile file yields an error, never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{FormatError, GgufError};
use crate::types::GgmlType;
use crate::value::{Array, Metadata, Value, ValueType};

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are rejected (guards the stack).
const MAX_NESTING: usize = 8;

/// The bytes of a GGUF file: memory-mapped, or owned (tests, fuzzing).
pub enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// One tensor's description; `offset` is absolute within the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length (contiguous).
    pub dims: Vec<u64>,
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Rows: the product of all dims but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A tensor's description and its bytes, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

/// A parsed, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    storage: Arc<Storage>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Memory-maps and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; as with every mmap-based loader, the
        // file must not be truncated or rewritten while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Storage::Mapped(map))
    }

    /// Parses bytes held in memory; `label` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<Self, GgufError> {
        Self::parse(PathBuf::from(label), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<Self, GgufError> {
        let parsed = Parser::new(&storage).parse();
        match parsed {
            Ok(p) => Ok(GgufFile {
                path,
                storage: Arc::new(storage),
                version: p.version,
                alignment: p.alignment,
                data_offset: p.data_offset,
                metadata: p.metadata,
                tensor_index: p
                    .tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect(),
                tensors: p.tensors,
            }),
            Err((offset, kind)) => Err(GgufError::Format { path, offset, kind }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.storage.len() as u64
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `general.architecture`, which every model file must carry.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get_str("general.architecture")
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| self.view(info))
    }

    /// The bytes of a tensor described by this file (validated at open).
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = info.offset as usize;
        TensorView {
            info,
            data: &self.storage[start..start + info.size as usize],
        }
    }

    /// The shared file bytes, for zero-copy weights that outlive `self`.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
}

type ParseResult<T> = Result<T, (u64, FormatError)>;

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    version: u32,
}

impl<'a> Parser<'a> {
    fn new(data: &'a [u8]) -> Self {
        Parser {
            data,
            pos: 0,
            version: 3,
        }
    }

    fn err<T>(&self, kind: FormatError) -> ParseResult<T> {
        Err((self.pos as u64, kind))
    }

    fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> ParseResult<&'a [u8]> {
        if n > self.remaining() {
            return self.err(FormatError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> ParseResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> ParseResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> ParseResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Element counts are bounded by what the remaining bytes could hold.
    fn count(&mut self, what: &'static str, min_item_size: u64) -> ParseResult<u64> {
        let start = self.pos;
        let n = self.u64(what)?;
        if n.saturating_mul(min_item_size) > self.remaining() {
            self.pos = start;
            return self.err(FormatError::CountTooLarge {
                what,
                count: n,
                available: self.remaining().saturating_sub(8),
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &'static str) -> ParseResult<String> {
        let len = self.count(what, 1)?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => {
                self.pos = start;
                self.err(FormatError::InvalidUtf8 { what })
            }
        }
    }

    fn value_type(&mut self) -> ParseResult<ValueType> {
        let id = self.u32("value type")?;
        match ValueType::from_id(id) {
            Some(t) => Ok(t),
            None => {
                self.pos -= 4;
                self.err(FormatError::UnknownValueType(id))
            }
        }
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> ParseResult<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("u8")?[0]),
            ValueType::I8 => Value::I8(self.array::<1>("i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            ValueType::Bool => {
                let b = self.array::<1>("bool")?[0];
                if b > 1 {
                    self.pos -= 1;
                    return self.err(FormatError::InvalidBool(b));
                }
                Value::Bool(b == 1)
            }
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => {
                if depth >= MAX_NESTING {
                    return self.err(FormatError::NestingTooDeep);
                }
                let elem = self.value_type()?;
                let n = self.count("array length", elem.min_encoded_size())?;
                // The count was checked against the remaining bytes, so the
                // reservation is bounded by the file's size.
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(Array { ty: elem, items })
            }
        })
    }

    fn parse(mut self) -> ParseResult<Parsed> {
        let magic = self.array::<4>("magic")?;
        if magic != MAGIC {
            self.pos = 0;
            return self.err(FormatError::BadMagic(magic));
        }
        self.version = self.u32("version")?;
        if !(2..=3).contains(&self.version) {
            self.pos -= 4;
            return self.err(FormatError::UnsupportedVersion(self.version));
        }
        // Each tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, each
        // key/value at least 8 (key) + 4 + 1.
        let n_tensors = self.count("tensor count", 24)?;
        let n_kv = self.count("metadata count", 13)?;

        let mut metadata = Metadata::default();
        for _ in 0..n_kv {
            let key_pos = self.pos;
            let key = self.string("metadata key")?;
            let ty = self.value_type()?;
            let value = self.value(ty, 0)?;
            if metadata.get(&key).is_some() {
                return Err((key_pos as u64, FormatError::DuplicateKey(key)));
            }
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return self.err(FormatError::BadAlignment(other.summary(4)));
            }
        };

        let mut infos = Vec::with_capacity(n_tensors as usize);
        let mut names = HashMap::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let info_pos = self.pos as u64;
            let name = self.string("tensor name")?;
            let n_dims = self.u32("tensor dimension count")? as usize;
            if n_dims > MAX_DIMS {
                return Err((info_pos, FormatError::TooManyDims { name, n_dims }));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(self.u64("tensor dimension")?);
            }
            let type_id = self.u32("tensor type")?;
            let offset = self.u64("tensor offset")?;
            let Some(ty) = GgmlType::from_id(type_id) else {
                return Err((
                    info_pos,
                    FormatError::UnknownTensorType { name, id: type_id },
                ));
            };
            if names.insert(name.clone(), ()).is_some() {
                return Err((info_pos, FormatError::DuplicateTensor(name)));
            }
            infos.push((info_pos, name, ty, dims, offset));
        }

        let data_offset = (self.pos as u64).next_multiple_of(alignment);
        let file_len = self.data.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (info_pos, name, ty, dims, offset) in infos {
            let fail = |kind| Err((info_pos, kind));
            let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let row_len = dims.first().copied().unwrap_or(1);
            let size = match n_elements {
                Some(n) if n < (1 << 62) => ty.row_bytes(row_len).and_then(|row| {
                    let rows = n.checked_div(row_len).unwrap_or(0);
                    row.checked_mul(rows)
                }),
                _ => None,
            };
            let Some(size) = size else {
                return fail(FormatError::BadShape { name, ty, dims });
            };
            if offset % alignment != 0 {
                return fail(FormatError::Misaligned {
                    name,
                    offset,
                    alignment,
                });
            }
            let start = data_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                    name,
                    ty,
                    dims,
                    offset: start,
                    size,
                }),
                _ => {
                    return fail(FormatError::DataOutOfBounds {
                        name,
                        offset,
                        size,
                        available: file_len.saturating_sub(data_offset),
                    })
                }
            }
        }

        let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].size > pair[1].offset {
                return Err((
                    pair[1].offset,
                    FormatError::Overlap {
                        first: pair[0].name.clone(),
                        second: pair[1].name.clone(),
                    },
                ));
            }
        }

        Ok(Parsed {
            version: self.version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }
}
