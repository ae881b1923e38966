//! Dequantization against gguf-py's reference output (tests/data/dequant_*.bin,
//! written by make_golden.py from real model tensors and random blocks),
//! compared bit for bit.

mod common;

use quarrel_quant::dequantize_row;

#[test]
fn dequantize_matches_gguf_bit_for_bit() {
    let files = common::files("dequant_");
    assert!(files.len() >= 20, "golden files missing: {}", files.len());
    for path in files {
        for rec in common::read_records(&path) {
            let ty = common::ggml_type(rec.meta[0]);
            let n = rec.meta[1] as usize;
            let want = common::f32s(&rec.blobs[1]);
            assert_eq!(want.len(), n);
            let mut got = vec![0f32; n];
            dequantize_row(ty, &rec.blobs[0], &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{} ({ty}) element {i}: {g} != {w}",
                    path.display()
                );
            }
        }
    }
}
