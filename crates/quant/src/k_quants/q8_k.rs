//! Q8_K (292 B): f32 d, 256 i8 quants, 16 i16 sums of each 16 quants (used by
//! the k-quant dots for the min terms); x = d * q. Only an activation format.

use super::{check, nearest_int, Q8_K_BYTES, QK_K};
use crate::avx2::{max_ps, reduce_max8, round_to_i32, saturate_i8};
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

/// ggml's x86 AVX2 `ggml_quantize_mat_q8_K_4x8`, the activation quantizer of
/// the repacked Q4_K gemm, for one row (it quantizes four rows at once, but
/// each independently), written in the plain Q8_K layout.
///
/// Same scale magnitude and rounding as [`quantize_row_q8_k_ref`], but the
/// sign of the scale comes from lane masks rather than from the first
/// element of largest magnitude: it is negative (the maximum maps to -127)
/// whenever +max|x| occurs in the block, so a block holding both +m and -m
/// (-m first) quantizes with the opposite sign to the reference. Products
/// d * q are unchanged, so dots agree; the bytes do not.
pub fn quantize_row_q8_k_4x8(src: &[f32], dst: &mut [u8]) {
    check(src.len(), dst.len(), Q8_K_BYTES);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        // Per lane l: the running max of |x| over elements l, l + 8, ...,
        // and whether that max was last reached by a positive element.
        let mut max_abs = [0f32; 8];
        let mut positive = [false; 8];
        for (sb, v) in x.chunks_exact(32).enumerate() {
            for l in 0..8 {
                let col = [v[l], v[8 + l], v[16 + l], v[24 + l]];
                let prev = max_abs[l];
                let mut m = if sb == 0 {
                    col[0].abs()
                } else {
                    max_ps(prev, col[0].abs())
                };
                for c in &col[1..] {
                    m = max_ps(m, c.abs());
                }
                let hit = col.contains(&m);
                positive[l] = if sb == 0 {
                    hit
                } else {
                    (positive[l] && prev == m) || hit
                };
                max_abs[l] = m;
            }
        }
        let amax = reduce_max8(&max_abs);
        let flip = (0..8).any(|l| positive[l] && max_abs[l] == amax);
        let iscale = match (amax != 0.0, flip) {
            (false, _) => 0.0,
            (true, false) => 127.0 / amax,
            (true, true) => -127.0 / amax,
        };
        let d = if amax != 0.0 { 1.0 / iscale } else { 0.0 };
        b[..4].copy_from_slice(&d.to_le_bytes());
        let (qs, bsums) = b[4..].split_at_mut(QK_K);
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = saturate_i8(round_to_i32(v * iscale)) as u8;
        }
        for (s, g) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
            let sum: i32 = g.iter().map(|&q| i32::from(q as i8)).sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
    }
}
