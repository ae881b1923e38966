//! The reader against valid, truncated and hostile files: every case must
//! give an error that says what is wrong, never a panic.

use quarrel_gguf::{
    Array, FormatError, GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType,
};

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("llama.block_count", Value::U32(2));
    w.set("some.f64", Value::F64(-1.5));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array {
            ty: ValueType::String,
            items: vec![Value::String("a".into()), Value::String("b".into())],
        }),
    );
    w.set(
        "nested",
        Value::Array(Array {
            ty: ValueType::Array,
            items: vec![Value::Array(Array {
                ty: ValueType::I16,
                items: vec![Value::I16(-3), Value::I16(7)],
            })],
        }),
    );
    w.set(
        "empty",
        Value::Array(Array {
            ty: ValueType::U64,
            items: vec![],
        }),
    );
    let f32s: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("a", GgmlType::F32, &[4, 2], f32s).unwrap();
    w.add_tensor("q", GgmlType::Q8_0, &[32, 1], vec![7u8; 34])
        .unwrap();
    w
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes, "test.gguf")
}

fn kind(bytes: Vec<u8>) -> FormatError {
    match parse(bytes) {
        Err(GgufError::Format { kind, .. }) => kind,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("hostile file accepted"),
    }
}

/// A header with the given counts, then raw body bytes.
fn raw(version: u32, n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(version.to_le_bytes());
    v.extend(n_tensors.to_le_bytes());
    v.extend(n_kv.to_le_bytes());
    v.extend(body);
    v
}

fn gguf_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

/// One tensor info: name, dims, type id, offset.
fn tensor_info(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut v = gguf_str(name);
    v.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend(d.to_le_bytes());
    }
    v.extend(ty.to_le_bytes());
    v.extend(offset.to_le_bytes());
    v
}

/// Header plus tensor infos, padded to 32, plus `data_len` zero bytes.
fn with_tensors(infos: &[Vec<u8>], data_len: usize) -> Vec<u8> {
    let mut v = raw(3, infos.len() as u64, 0, &infos.concat());
    v.resize(v.len().next_multiple_of(32) + data_len, 0);
    v
}

#[test]
fn writer_output_reads_back() {
    let bytes = sample().to_bytes().unwrap();
    let f = parse(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.metadata().get_u32("llama.block_count"), Some(2));
    assert_eq!(f.metadata().get("some.f64"), Some(&Value::F64(-1.5)));
    let toks = f.metadata().get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(toks[1].as_str(), Some("b"));
    let nested = f.metadata().get_array("nested").unwrap();
    assert_eq!(nested[0].as_array().unwrap()[0], Value::I16(-3));
    assert_eq!(f.metadata().get_array("empty").unwrap().len(), 0);
    let a = f.tensor("a").unwrap();
    assert_eq!(a.info.dims, vec![4, 2]);
    assert_eq!(a.info.n_rows(), 2);
    assert_eq!(a.data.len(), 32);
    assert_eq!(f32::from_le_bytes(a.data[28..32].try_into().unwrap()), 7.0);
    let q = f.tensor("q").unwrap();
    assert_eq!(q.info.ty, GgmlType::Q8_0);
    assert_eq!(q.data, &[7u8; 34][..]);
    assert_eq!(q.info.offset % 32, 0);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().to_bytes().unwrap();
    // The last tensor's padding is not needed by any tensor; stop before it.
    let needed = {
        let f = parse(bytes.clone()).unwrap();
        f.tensors().iter().map(|t| t.offset + t.size).max().unwrap() as usize
    };
    for len in 0..needed {
        let err = parse(bytes[..len].to_vec()).err();
        let msg = err
            .unwrap_or_else(|| panic!("prefix of {len} bytes accepted"))
            .to_string();
        assert!(msg.starts_with("test.gguf: not a valid GGUF file"), "{msg}");
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut bytes = sample().to_bytes().unwrap();
    bytes[0] = b'X';
    assert!(matches!(kind(bytes), FormatError::BadMagic(_)));
    assert!(matches!(
        kind(raw(1, 0, 0, &[])),
        FormatError::UnsupportedVersion(1)
    ));
    assert!(matches!(
        kind(raw(4, 0, 0, &[])),
        FormatError::UnsupportedVersion(4)
    ));
    // Version 2 has the same layout as 3.
    assert!(parse(raw(2, 0, 0, &[])).is_ok());
}

#[test]
fn huge_counts_are_rejected_before_allocation() {
    assert!(matches!(
        kind(raw(3, u64::MAX, 0, &[])),
        FormatError::CountTooLarge { .. }
    ));
    assert!(matches!(
        kind(raw(3, 0, 1 << 40, &[])),
        FormatError::CountTooLarge { .. }
    ));
    // A string claiming 2^63 bytes.
    let mut body = (1u64 << 63).to_le_bytes().to_vec();
    body.extend(b"key");
    assert!(matches!(
        kind(raw(3, 0, 1, &body)),
        FormatError::CountTooLarge { .. }
    ));
    // An array claiming 2^60 u32 elements.
    let mut body = gguf_str("k");
    body.extend(9u32.to_le_bytes());
    body.extend(4u32.to_le_bytes());
    body.extend((1u64 << 60).to_le_bytes());
    assert!(matches!(
        kind(raw(3, 0, 1, &body)),
        FormatError::CountTooLarge { .. }
    ));
}

#[test]
fn unknown_value_type_and_bad_values() {
    let mut body = gguf_str("k");
    body.extend(99u32.to_le_bytes());
    assert!(matches!(
        kind(raw(3, 0, 1, &body)),
        FormatError::UnknownValueType(99)
    ));

    let mut body = gguf_str("k");
    body.extend(7u32.to_le_bytes());
    body.push(2);
    assert!(matches!(
        kind(raw(3, 0, 1, &body)),
        FormatError::InvalidBool(2)
    ));

    let mut body = 2u64.to_le_bytes().to_vec();
    body.extend([0xff, 0xfe]);
    body.extend(4u32.to_le_bytes());
    body.extend(0u32.to_le_bytes());
    assert!(matches!(
        kind(raw(3, 0, 1, &body)),
        FormatError::InvalidUtf8 { .. }
    ));
}

#[test]
fn duplicate_keys_and_tensors() {
    let mut kv = gguf_str("k");
    kv.extend(4u32.to_le_bytes());
    kv.extend(1u32.to_le_bytes());
    let body = [kv.clone(), kv].concat();
    assert!(matches!(
        kind(raw(3, 0, 2, &body)),
        FormatError::DuplicateKey(_)
    ));

    let t = tensor_info("t", &[4], 0, 0);
    let bytes = with_tensors(&[t.clone(), t], 64);
    assert!(matches!(kind(bytes), FormatError::DuplicateTensor(_)));
}

#[test]
fn deep_nesting_is_rejected() {
    let mut body = gguf_str("k");
    body.extend(9u32.to_le_bytes());
    for _ in 0..64 {
        body.extend(9u32.to_le_bytes());
        body.extend(1u64.to_le_bytes());
    }
    body.extend(vec![0u8; 64]);
    assert!(matches!(
        kind(raw(3, 0, 1, &body)),
        FormatError::NestingTooDeep
    ));
}

#[test]
fn bad_alignment_values() {
    for v in [0u32, 3, 48] {
        let mut body = gguf_str("general.alignment");
        body.extend(4u32.to_le_bytes());
        body.extend(v.to_le_bytes());
        assert!(matches!(
            kind(raw(3, 0, 1, &body)),
            FormatError::BadAlignment(_)
        ));
    }
}

#[test]
fn tensor_shape_type_and_bounds() {
    // Unknown block type id.
    let bytes = with_tensors(&[tensor_info("t", &[32], 4, 0)], 64);
    assert!(matches!(
        kind(bytes),
        FormatError::UnknownTensorType { id: 4, .. }
    ));
    // Five dimensions.
    let bytes = with_tensors(&[tensor_info("t", &[1, 1, 1, 1, 1], 0, 0)], 64);
    assert!(matches!(kind(bytes), FormatError::TooManyDims { .. }));
    // Row not a whole number of Q4_K blocks.
    let bytes = with_tensors(&[tensor_info("t", &[100], 12, 0)], 1024);
    assert!(matches!(kind(bytes), FormatError::BadShape { .. }));
    // Element count overflows.
    let bytes = with_tensors(&[tensor_info("t", &[1 << 40, 1 << 40], 0, 0)], 64);
    assert!(matches!(kind(bytes), FormatError::BadShape { .. }));
    // Data past the end.
    let bytes = with_tensors(&[tensor_info("t", &[32], 0, 0)], 64);
    assert!(matches!(kind(bytes), FormatError::DataOutOfBounds { .. }));
    // Offset that wraps around.
    let bytes = with_tensors(&[tensor_info("t", &[4], 0, u64::MAX - 31)], 64);
    assert!(matches!(kind(bytes), FormatError::DataOutOfBounds { .. }));
    // Misaligned offset.
    let bytes = with_tensors(&[tensor_info("t", &[4], 0, 8)], 64);
    assert!(matches!(
        kind(bytes),
        FormatError::Misaligned { offset: 8, .. }
    ));
    // Overlapping tensors.
    let a = tensor_info("a", &[16], 0, 0);
    let b = tensor_info("b", &[16], 0, 64);
    assert!(parse(with_tensors(&[a.clone(), b], 128)).is_ok());
    let b = tensor_info("b", &[16], 0, 0);
    assert!(matches!(
        kind(with_tensors(&[a, b], 128)),
        FormatError::Overlap { .. }
    ));
}

#[test]
fn errors_name_the_file() {
    let err = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
    let err = parse(raw(3, 1 << 40, 0, &[])).err().unwrap().to_string();
    assert!(
        err.contains("test.gguf") && err.contains("tensor count"),
        "{err}"
    );
}

#[test]
fn writer_rejects_inconsistent_input() {
    let mut w = GgufWriter::new();
    assert!(w.add_tensor("t", GgmlType::F32, &[4], vec![0; 15]).is_err());
    assert!(w
        .add_tensor("t", GgmlType::Q4_0, &[31], vec![0; 18])
        .is_err());
    w.add_tensor("t", GgmlType::F32, &[4], vec![0; 16]).unwrap();
    assert!(w.add_tensor("t", GgmlType::F32, &[4], vec![0; 16]).is_err());
    w.declare_tensor("lazy", GgmlType::F32, &[2]).unwrap();
    let mut out = Vec::new();
    let short = w.write_to(&mut out, |_, o| o.write_all(&[0; 4]));
    assert!(short.is_err());
    let mut out = Vec::new();
    w.write_to(&mut out, |_, o| o.write_all(&1f32.to_le_bytes().repeat(2)))
        .unwrap();
    let f = parse(out).unwrap();
    assert_eq!(f.tensor("lazy").unwrap().data, 1f32.to_le_bytes().repeat(2));
}
