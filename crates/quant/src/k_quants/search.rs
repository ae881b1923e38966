//! The scale searches of ggml's k-quant reference quantizers
//! (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`), kept in ggml's
//! f32 operation order so the chosen levels match bit for bit.

use super::nearest_int;

/// ggml's `GROUP_MAX_EPS`: groups below this magnitude quantize to zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// The element of largest magnitude (first on ties) and that magnitude.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Quantizes `x` to `l` in [-nmax, nmax) for `iscale`.
#[inline]
fn level(iscale: f32, x: f32, nmax: i32) -> i32 {
    nearest_int(iscale * x).clamp(-nmax, nmax - 1)
}

/// The weighted least-squares sums Σ w·x·l and Σ w·l² (weights x²) of `x`
/// quantized with `iscale`, in ggml's order.
fn fit_sums(iscale: f32, x: &[f32], nmax: i32) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for &v in x {
        let l = level(iscale, v, nmax) as f32;
        let w = v * v;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    (sumlx, suml2)
}

/// ggml's `make_qx_quants` as Q6_K calls it (`rmse_type` 1, no importance
/// weights): symmetric levels `L = l + nmax`, weights x^2, and a search over
/// 18 nearby inverse scales for the best least-squares fit. Returns the scale.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let iscale = -nmaxf / max;
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = (level(iscale, v, nmax) + nmax) as i8;
    }
    let (sumlx, suml2) = fit_sums(iscale, x, nmax);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmaxf + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit_sums(iscale, x, nmax);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (q, &v) in levels.iter_mut().zip(x) {
                *q = (level(iscale, v, nmax) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric levels, then up to five
/// passes moving single levels while the weighted fit improves. Levels are
/// returned offset by `nmax`.
pub(super) fn make_q3_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = level(iscale, v, nmax) as i8;
    }
    let (mut sumlx, mut suml2) = fit_sums(iscale, x, nmax);
    for _ in 0..5 {
        let mut changed = false;
        for (q, &v) in levels.iter_mut().zip(x) {
            let w = v * v;
            let old = f32::from(*q);
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != i32::from(*q) {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for q in levels.iter_mut() {
        *q += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Parameters of ggml's `make_qkx2_quants` search over inverse scales
/// `(rmin + rdelta * is + nmax) / (max - min)` for `is` in 0..=nstep.
pub(super) struct Qkx2 {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Minimise absolute rather than squared error.
    pub use_mad: bool,
}

impl Qkx2 {
    fn err(&self, diff: f32) -> f32 {
        if self.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    }

    /// ggml's `make_qkx2_quants`: asymmetric levels `x ~ scale * L - min`
    /// (min >= 0 returned), fitting scale and offset by weighted least
    /// squares for each candidate inverse scale. Returns (scale, min).
    pub(super) fn quantize(&self, x: &[f32], weights: &[f32], levels: &mut [u8]) -> (f32, f32) {
        let n = x.len();
        let nmax = self.nmax;
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            sum_w += weights[i];
            sum_x += weights[i] * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            levels.fill(0);
            return (0.0, -min);
        }
        let iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            levels[i] = l as u8;
            best_error += weights[i] * self.err(scale * l as f32 + min - x[i]);
        }
        let mut aux = [0u8; 32];
        let aux = &mut aux[..n];
        for is in 0..=self.nstep {
            let iscale = (self.rmin + self.rdelta * is as f32 + nmax as f32) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for i in 0..n {
                let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                aux[i] = l as u8;
                let (w, l) = (weights[i], l as f32);
                sum_l += w * l;
                sum_l2 += w * l * l;
                sum_xl += w * l * x[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0f32;
                for i in 0..n {
                    cur_error +=
                        weights[i] * self.err(this_scale * f32::from(aux[i]) + this_min - x[i]);
                }
                if cur_error < best_error {
                    levels.copy_from_slice(aux);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }
}
