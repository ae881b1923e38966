//! AVX2 + FMA + F16C versions of the ggml_math primitives. Each follows
//! the same per-element operation order as its scalar reference, so the
//! results are bit-identical (tests compare them exactly); the callers in
//! ggml_math pick these when the CPU has the features.

use std::arch::x86_64::*;

use half::f16;

/// Whether the functions below run: they need the AVX2, FMA and F16C
/// that quarrel-quant's kernels need, and follow its `QUARREL_SIMD`.
pub fn available() -> bool {
    quarrel_quant::simd_enabled()
}

#[inline(always)]
unsafe fn load_f16(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable halves at p; f16 is a u16.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

#[inline(always)]
unsafe fn store_f16(p: *mut f16, v: __m256) {
    // SAFETY: the caller guarantees 8 writable halves at p; rounding to
    // nearest even, as F16C does for ggml.
    unsafe {
        _mm_storeu_si128(
            p as *mut __m128i,
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v),
        )
    }
}

/// ggml's 8-lane horizontal sum: high half plus low half, then two hadds.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics of the enabled features.
    unsafe {
        let t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }
}

/// See ggml_math::dot_f16_scalar.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let k = i + j * 8;
            // SAFETY: k + 8 <= np <= n, within both slices.
            let (xv, yv) = unsafe { (load_f16(x.as_ptr().add(k)), load_f16(y.as_ptr().add(k))) };
            *a = _mm256_fmadd_ps(xv, yv, *a);
        }
        i += 32;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    // SAFETY: register-only.
    let mut sum = unsafe { hsum(v) } as f64;
    for k in np..n {
        sum += (x[k].to_f32() * y[k].to_f32()) as f64;
    }
    sum as f32
}

/// y = f16(fma(x, v, y)), 8 lanes at a time (ggml_vec_mad_f16).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f16(y: &mut [f16], x: &[f16], v: f32) {
    let n = y.len().min(x.len());
    let np = n & !7;
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i < np {
        // SAFETY: i + 8 <= n, within both slices.
        unsafe {
            let r = _mm256_fmadd_ps(load_f16(x.as_ptr().add(i)), vv, load_f16(y.as_ptr().add(i)));
            store_f16(y.as_mut_ptr().add(i), r);
        }
        i += 8;
    }
    for k in np..n {
        y[k] = f16::from_f32(x[k].to_f32().mul_add(v, y[k].to_f32()));
    }
}

/// y = f16(y * v) (ggml_vec_scale_f16).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_f16(y: &mut [f16], v: f32) {
    let np = y.len() & !7;
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i < np {
        // SAFETY: i + 8 <= len.
        unsafe {
            let p = y.as_mut_ptr().add(i);
            store_f16(p, _mm256_mul_ps(load_f16(p), vv));
        }
        i += 8;
    }
    for a in &mut y[np..] {
        *a = f16::from_f32(a.to_f32() * v);
    }
}

/// acc = fma(v, p, acc) over f32 accumulators and f16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f32_f16(acc: &mut [f32], v: &[f16], p: f32) {
    let n = acc.len().min(v.len());
    let np = n & !7;
    let pv = _mm256_set1_ps(p);
    let mut i = 0;
    while i < np {
        // SAFETY: i + 8 <= n, within both slices.
        unsafe {
            let a = acc.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                a,
                _mm256_fmadd_ps(load_f16(v.as_ptr().add(i)), pv, _mm256_loadu_ps(a)),
            );
        }
        i += 8;
    }
    for k in np..n {
        acc[k] = v[k].to_f32().mul_add(p, acc[k]);
    }
}

/// ggml_v_expf, 8 lanes; see ggml_math::expf for the scalar form.
#[target_feature(enable = "avx2,fma")]
unsafe fn expf8(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_castsi256_ps(_mm256_set1_epi32(bits as i32));
    let r = c(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    );
    let fast = _mm256_fmadd_ps(j, k, k);
    if _mm256_movemask_ps(big) == 0 {
        return fast;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let mid = _mm256_or_ps(_mm256_and_ps(big, scaled), _mm256_andnot_ps(big, fast));
    _mm256_or_ps(
        _mm256_and_ps(huge, _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(huge, mid),
    )
}

/// out = silu(g) * u, with ggml_v_silu (x / (1 + expf(0 - x))).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn swiglu(out: &mut [f32], g: &[f32], u: &[f32]) {
    let n = out.len().min(g.len()).min(u.len());
    let np = n & !7;
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i < np {
        // SAFETY: i + 8 <= n, within all three slices; expf8 needs the
        // features this function enables.
        unsafe {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr().add(i))),
            );
        }
        i += 8;
    }
    // The tail as ggml's (and the scalar kernel's): libm's expf.
    super::ggml_math::swiglu_scalar(&mut out[np..n], &g[np..n], &u[np..n]);
}

/// See ggml_math::tile_scores: eight keys per vector, each lane its own
/// sequential FMA chain, so every score is bit-identical to the scalar one.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_scores(kt: &[f32], q: &[f32], scores: &mut [f32; 64]) {
    assert!(
        kt.len() >= q.len() * 64,
        "key tile holds the head dimension"
    );
    let mut acc = [_mm256_setzero_ps(); 8];
    for (d, &qd) in q.iter().enumerate() {
        let qv = _mm256_set1_ps(qd);
        for (g, a) in acc.iter_mut().enumerate() {
            // SAFETY: d * 64 + g * 8 + 8 <= kt.len(), asserted above.
            let k = unsafe { _mm256_loadu_ps(kt.as_ptr().add(d * 64 + g * 8)) };
            *a = _mm256_fmadd_ps(k, qv, *a);
        }
    }
    for (g, a) in acc.iter().enumerate() {
        // SAFETY: g * 8 + 8 <= 64.
        unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(g * 8), *a) };
    }
}

/// See ggml_math::exp_shifted.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_shifted(p: &mut [f32], m: f32) {
    assert!(p.len().is_multiple_of(8), "whole groups of 8");
    let mv = _mm256_set1_ps(m);
    for c in p.chunks_exact_mut(8) {
        // SAFETY: c holds 8 floats; expf8 needs the enabled features.
        unsafe {
            let x = _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv);
            _mm256_storeu_ps(c.as_mut_ptr(), expf8(x));
        }
    }
}
