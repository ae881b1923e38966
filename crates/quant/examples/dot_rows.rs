//! Throughput of `dot_rows` on one core: one weight matrix of `rows` rows
//! (L2-resident or streamed from memory) against 1 to 8 activation rows;
//! with `unpacked`, `dot_rows_unpacked` on the rows unpacked beforehand.
//!   cargo run --release -p quarrel-quant --example dot_rows -- [TYPE] [N] [ROWS] [unpacked]
use std::time::Instant;

use quarrel_gguf::GgmlType;
use quarrel_quant::{
    dot_rows, dot_rows_unpacked, pack_acts, packed_acts_len, quantize_activation_for, quantize_row,
    unpack_rows, vec_dot_type, Chunk, DotKernel,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = match args.get(1).map_or("q5_0", String::as_str) {
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q8_0" => GgmlType::Q8_0,
        "q6_k" => GgmlType::Q6K,
        _ => GgmlType::Q5_0,
    };
    let rows_n: usize = args.get(2).map_or(8, |s| s.parse().expect("N"));
    let rows: usize = args.get(3).map_or(64, |s| s.parse().expect("ROWS"));
    let n = 896;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let wrow = ty.row_bytes(n as u64).unwrap() as usize;
    let mut w = vec![0u8; wrow * rows];
    for r in w.chunks_exact_mut(wrow) {
        let src: Vec<f32> = (0..n).map(|_| rand()).collect();
        quantize_row(ty, &src, r).unwrap();
    }
    let arow = vec_dot_type(ty).row_bytes(n as u64).unwrap() as usize;
    let mut act = vec![0u8; arow * rows_n];
    for a in act.chunks_exact_mut(arow) {
        let src: Vec<f32> = (0..n).map(|_| rand()).collect();
        quantize_activation_for(DotKernel::VecDot, ty, &src, a).unwrap();
    }
    let mut packed = vec![Chunk::default(); packed_acts_len(ty, n, rows_n)];
    pack_acts(ty, n, &act, &mut packed);
    let nb = n / 32;
    let blocks = rows * nb;
    let (mut q, mut sc) = (vec![Chunk::default(); blocks], vec![[0f32; 2]; blocks]);
    let unpacked = args.get(4).is_some_and(|a| a == "unpacked");
    if unpacked {
        unpack_rows(ty, n, &w, &mut q, &mut sc);
    }
    let mut out = vec![0f32; rows_n * 32];
    let mut sink = 0f32;
    let reps = (200_000_000 / (rows * n * rows_n)).max(1);
    for pass in 0..2 {
        let t = Instant::now();
        for _ in 0..reps {
            for (i, r) in w.chunks(32 * wrow).enumerate() {
                let out = &mut out[..r.len() / wrow * rows_n];
                if unpacked {
                    let b = i * 32 * nb..(i * 32 + r.len() / wrow) * nb;
                    dot_rows_unpacked(ty, n, &q[b.clone()], &sc[b], rows_n, &packed, out);
                } else {
                    dot_rows(DotKernel::VecDot, ty, n, r, &act, &packed, out);
                }
                sink += out[0];
            }
        }
        let s = t.elapsed().as_secs_f64();
        let pairs = (reps * rows * rows_n * n / 32) as f64;
        if pass == 1 {
            println!(
                "{ty:?} N={rows_n} rows={rows} unpacked={unpacked}: {:.2} ns per block pair, {:.1} G multiply-adds/s ({sink})",
                s / pairs * 1e9,
                pairs * 32.0 / s / 1e9
            );
        }
    }
}
