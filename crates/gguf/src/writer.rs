//! Writing GGUF v3 files. Tensor data is either held by the writer or
//! streamed by a callback at write time, so multi-gigabyte synthetic models
//! never need to sit in memory whole.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::reader::{DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::{Metadata, Value};

struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    size: u64,
    data: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Metadata,
    tensors: Vec<PendingTensor>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.metadata.set(key, value);
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .get_u64("general.alignment")
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Declares a tensor whose bytes `write_to`'s callback will produce;
    /// returns its size in bytes.
    pub fn declare_tensor(&mut self, name: &str, ty: GgmlType, dims: &[u64]) -> io::Result<u64> {
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(invalid(format!(
                "tensor {name:?}: {} dimensions",
                dims.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(invalid(format!("duplicate tensor {name:?}")));
        }
        let rows: u64 = dims[1..].iter().product();
        let size = ty
            .row_bytes(dims[0])
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| invalid(format!("tensor {name:?}: shape {dims:?} invalid for {ty}")))?;
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            ty,
            dims: dims.to_vec(),
            size,
            data: None,
        });
        Ok(size)
    }

    /// Adds a tensor with its bytes.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> io::Result<()> {
        let size = self.declare_tensor(name, ty, dims)?;
        if data.len() as u64 != size {
            self.tensors.pop();
            return Err(invalid(format!(
                "tensor {name:?}: {} bytes given, {size} expected",
                data.len()
            )));
        }
        self.tensors.last_mut().expect("just declared").data = Some(data);
        Ok(())
    }

    /// Writes the file; `fill(name, out)` must write exactly the declared
    /// bytes of each tensor that was declared without data.
    pub fn write_to<W: Write>(
        &self,
        out: &mut W,
        mut fill: impl FnMut(&str, &mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let align = self.alignment();
        let mut w = Counting { inner: out, n: 0 };
        w.write_all(&MAGIC)?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in self.metadata.iter() {
            write_string(&mut w, key)?;
            w.write_all(&(value.value_type() as u32).to_le_bytes())?;
            write_value(&mut w, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ty.id().to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset = (offset + t.size).next_multiple_of(align);
        }
        pad(&mut w, align)?;
        for t in &self.tensors {
            let start = w.n;
            match &t.data {
                Some(d) => w.write_all(d)?,
                None => fill(&t.name, &mut w)?,
            }
            if w.n - start != t.size {
                return Err(invalid(format!(
                    "tensor {:?}: {} bytes written, {} declared",
                    t.name,
                    w.n - start,
                    t.size
                )));
            }
            pad(&mut w, align)?;
        }
        w.flush()
    }

    /// Writes a file whose tensors were all given with their data.
    pub fn write_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        self.write_to(&mut out, |name, _| {
            Err(invalid(format!(
                "tensor {name:?} was declared without data"
            )))
        })
    }

    /// The whole file in memory (tests).
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out, |name, _| {
            Err(invalid(format!(
                "tensor {name:?} was declared without data"
            )))
        })?;
        Ok(out)
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<'_, W>, align: u64) -> io::Result<()> {
    let n = w.n.next_multiple_of(align) - w.n;
    w.write_all(&vec![0u8; n as usize])
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_string(w, s),
        Value::Array(a) => {
            if let Some(bad) = a.items.iter().find(|i| i.value_type() != a.ty) {
                return Err(invalid(format!(
                    "array of {:?} holds a {:?}",
                    a.ty,
                    bad.value_type()
                )));
            }
            w.write_all(&(a.ty as u32).to_le_bytes())?;
            w.write_all(&(a.items.len() as u64).to_le_bytes())?;
            a.items.iter().try_for_each(|i| write_value(w, i))
        }
    }
}
