//! Scalar models of the AVX2 instructions whose rounding, saturation and
//! summation order ggml's x86 kernels depend on.
//!
//! llama.cpp's CPU build on x86 (AVX2 + FMA + F16C, no VNNI) accumulates dot
//! products in eight f32 lanes with fused multiply-adds and reduces them in a
//! fixed tree. Float addition is not associative, so to reproduce its results
//! bit for bit the scalar kernels keep the same lanes and the same tree.

/// Eight f32 lanes of a `__m256` accumulator.
#[derive(Clone, Copy, Default)]
pub(crate) struct Acc8([f32; 8]);

impl Acc8 {
    /// `acc = _mm256_fmadd_ps(set1(d), cvtepi32_ps(lanes), acc)`.
    #[inline]
    pub(crate) fn fma_i32(&mut self, d: f32, lanes: &[i32; 8]) {
        for (acc, &q) in self.0.iter_mut().zip(lanes) {
            *acc = d.mul_add(q as f32, *acc);
        }
    }

    /// ggml's `hsum_float_8`: (hi + lo) halves, then [0]+[2], [1]+[3], then the two.
    #[inline]
    pub(crate) fn hsum(&self) -> f32 {
        hsum_float_8(&self.0)
    }
}

/// ggml's `hsum_float_8` reduction tree.
#[inline]
pub(crate) fn hsum_float_8(v: &[f32; 8]) -> f32 {
    let r = [v[4] + v[0], v[5] + v[1], v[6] + v[2], v[7] + v[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// `_mm_max_ps` on one lane: returns `b` unless `a > b` (so a NaN in either
/// operand yields `b`, as the instruction does).
#[inline]
pub(crate) fn max_ps(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// ggml's reduction of an 8-lane `_mm256_max_ps` accumulator to a scalar:
/// hi/lo halves, then lanes 0/2 and 1/3, then the two (`max_ps` order kept,
/// so NaNs resolve as the instructions resolve them).
#[inline]
pub(crate) fn reduce_max8(m: &[f32; 8]) -> f32 {
    let m4: [f32; 4] = std::array::from_fn(|i| max_ps(m[4 + i], m[i]));
    max_ps(max_ps(m4[0], m4[2]), max_ps(m4[1], m4[3]))
}

/// `_mm256_cvtps_epi32(_mm256_round_ps(v, _MM_ROUND_NEAREST))`: round half to
/// even; NaN and out-of-range values give the "integer indefinite" i32::MIN.
#[inline]
pub(crate) fn round_to_i32(v: f32) -> i32 {
    let r = v.round_ties_even();
    if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        r as i32
    } else {
        i32::MIN
    }
}

/// `_mm256_packs_epi32` then `_mm256_packs_epi16`: signed saturation to i8.
#[inline]
pub(crate) fn saturate_i8(v: i32) -> i8 {
    v.clamp(i8::MIN.into(), i8::MAX.into()) as i8
}

/// `_mm256_maddubs_epi16` on one output lane: u8 x i8 products of a byte
/// pair, summed with signed 16-bit saturation.
#[inline]
fn maddubs(a0: u8, b0: i8, a1: u8, b1: i8) -> i32 {
    let s = i32::from(a0) * i32::from(b0) + i32::from(a1) * i32::from(b1);
    s.clamp(i16::MIN.into(), i16::MAX.into())
}

/// ggml's `mul_sum_us8_pairs_float` before the float conversion: lane k sums
/// the products of bytes 4k..4k+4 (maddubs pairs, then madd with ones).
#[inline]
pub(crate) fn mul_sum_us8_pairs(x: &[u8; 32], y: &[i8]) -> [i32; 8] {
    let mut out = [0i32; 8];
    for (k, lane) in out.iter_mut().enumerate() {
        let (a, b) = (&x[4 * k..4 * k + 4], &y[4 * k..4 * k + 4]);
        *lane = maddubs(a[0], b[0], a[1], b[1]) + maddubs(a[2], b[2], a[3], b[3]);
    }
    out
}

/// ggml's `mul_sum_i8_pairs_float` before the float conversion. It feeds
/// maddubs with |x| and y carrying x's sign (`_mm256_sign_epi8`), whose
/// wrapping negation turns -(-128) into -128; modelled here for exactness.
#[inline]
pub(crate) fn mul_sum_i8_pairs(x: &[i8; 32], y: &[i8]) -> [i32; 8] {
    let ax = x.map(i8::unsigned_abs);
    let sy: [i8; 32] = std::array::from_fn(|i| y[i].wrapping_mul(x[i].signum()));
    mul_sum_us8_pairs(&ax, &sy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_to_i32_is_ties_even_with_indefinite_overflow() {
        assert_eq!(round_to_i32(2.5), 2);
        assert_eq!(round_to_i32(3.5), 4);
        assert_eq!(round_to_i32(-2.5), -2);
        assert_eq!(round_to_i32(f32::NAN), i32::MIN);
        assert_eq!(round_to_i32(3e9), i32::MIN);
        assert_eq!(saturate_i8(round_to_i32(f32::INFINITY)), -128);
    }

    #[test]
    fn mul_sum_i8_pairs_models_sign_wrap_and_saturation() {
        let mut x = [0i8; 32];
        let mut y = [0i8; 32];
        x[0] = 3;
        y[0] = -5;
        x[5] = -2;
        y[5] = 7;
        // -(-128) wraps to -128 in _mm256_sign_epi8.
        x[8] = -1;
        y[8] = -128;
        let l = mul_sum_i8_pairs(&x, &y);
        assert_eq!(l[0], -15);
        assert_eq!(l[1], -14);
        assert_eq!(l[2], -128);

        // 255 * 127 * 2 = 64770 saturates the i16 pair sum.
        let mut u = [0u8; 32];
        let mut v = [0i8; 32];
        u[..2].fill(255);
        v[..2].fill(127);
        assert_eq!(mul_sum_us8_pairs(&u, &v)[0], i32::from(i16::MAX));
    }
}
