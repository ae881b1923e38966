//! Q8_K (292 B): f32 d, 256 i8 quants, 16 i16 sums of each 16 quants (used by
//! the k-quant dots for the min terms); x = d * q. Only an activation format.

use super::{check, nearest_int, Q8_K_BYTES, QK_K};
use crate::float::f32_le;

pub fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) {
    check(dst.len(), src.len(), Q8_K_BYTES);
    for (b, y) in src.chunks_exact(Q8_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32_le(b);
        for (y, &q) in y.iter_mut().zip(&b[4..260]) {
            *y = d * f32::from(q as i8);
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`, which is also what the x86 CPU backend
/// runs for activations (`quantize_row_q8_K` has no SIMD version there):
/// scale -127 / (signed value of largest magnitude), `nearest_int` rounding
/// (half to even), and d = 1 / iscale stored as f32.
pub fn quantize_row_q8_k_ref(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_K_BYTES);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; with d = 0 they never count.
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let (qs, bsums) = b[4..].split_at_mut(QK_K);
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for (s, g) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
            let sum: i32 = g.iter().map(|&q| i32::from(q as i8)).sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
