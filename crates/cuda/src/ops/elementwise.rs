//! Launchers of `elementwise.cu`: norms, rotary embedding, gated
//! activations, row gathers.

use quarrel_model::{FfnActivation, RopeParams, RopeStyle};

use super::matmul::{quant_buffers, Activations};
use crate::{kernel_args, CudaBackend, CudaError, CudaKvCache, CudaTensor, CudaWeight, Scratch};

/// Threads per block of the one-thread-per-element kernels.
pub(crate) const BLOCK: u32 = 256;

/// Threads for a block over `n` values: whole warps, at most 1024.
fn block_for(n: usize) -> u32 {
    (n.div_ceil(32) * 32).min(1024) as u32
}

/// RMS norm of each run of `w.cols` values of `x` (after adding
/// `residual` to x, when given), into `out` (which may be `x`); where
/// `next` is given, `out` (whole rows) is also quantized for its type.
pub(crate) fn rms_norm(
    b: &CudaBackend,
    x: &CudaTensor,
    residual: Option<&CudaTensor>,
    w: &CudaWeight,
    eps: f32,
    out: &CudaTensor,
    next: Option<&CudaWeight>,
) -> Result<(), CudaError> {
    let group = w.cols;
    let blocks = (x.len() / group) as u32;
    if blocks == 0 {
        return Ok(());
    }
    let (mode, (xq, xd)) = prepare_for(b, out, next)?;
    let (xp, yp, wp, op, g) = (
        x.ptr(),
        residual.map_or(0, |y| y.ptr()),
        w.buf.ptr,
        out.ptr(),
        group as i32,
    );
    let m = mode.mode();
    b.gpu.launch(
        "rms_norm",
        (blocks, 1, 1),
        block_for(group),
        &mut kernel_args![xp, yp, wp, op, g, eps, xq, xd, m],
    )
}

/// How `out` is to be quantized for the matmul by `next`, and where to; the
/// tensor is marked as holding it (the kernel that writes it is queued
/// next).
fn prepare_for(
    b: &CudaBackend,
    out: &CudaTensor,
    next: Option<&CudaWeight>,
) -> Result<(Activations, (u64, u64)), CudaError> {
    let mode = next.map_or(Activations::Float, |w| Activations::of(w.ty));
    if mode == Activations::Float {
        return Ok((mode, (0, 0)));
    }
    assert_eq!(
        next.map(|w| w.cols),
        Some(out.cols),
        "quantized for a matmul of its width"
    );
    let bufs = quant_buffers(b, out)?;
    out.quantized_as.set(Some(mode));
    Ok((mode, bufs))
}

/// Rotates `q`, and `k` (of `k_heads` heads) when given; with `store`
/// (V, the cache and the layer), also writes the rotated K and V into the
/// rows' cache slots.
pub(crate) fn rope(
    b: &CudaBackend,
    s: &Scratch,
    q: &CudaTensor,
    k: Option<(&CudaTensor, usize)>,
    store: Option<(&CudaTensor, &CudaKvCache, usize)>,
    p: &RopeParams<'_, CudaWeight>,
) -> Result<(), CudaError> {
    if q.rows == 0 {
        return Ok(());
    }
    let (qp, q_cols, q_heads) = (q.ptr(), q.cols as i32, p.n_heads as i32);
    let (kp, k_cols, k_heads) = k.map_or((0, 0, 0), |(k, h)| (k.ptr(), k.cols as i32, h as i32));
    let (vp, v_cols, kc, vc) = store.map_or((0, 0, 0, 0), |(v, cache, layer)| {
        let (kc, vc) = (cache.k[layer].ptr, cache.v[layer].ptr);
        (v.ptr(), v.cols as i32, kc, vc)
    });
    let (pos, base, slots) = s.slot_table();
    let (hd, rot) = (p.head_dim as i32, p.n_rot as i32);
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let freq_scale = p.freq_scale;
    let factors = p.freq_factors.map_or(0u64, |w| w.buf.ptr);
    let neox = i32::from(p.style == RopeStyle::Neox);
    let blocks_y = (q_heads + k_heads) as u32 + u32::from(store.is_some());
    b.gpu.launch(
        "rope",
        (q.rows as u32, blocks_y, 1),
        block_for(p.n_rot / 2),
        &mut kernel_args![
            qp,
            q_cols,
            q_heads,
            kp,
            k_cols,
            k_heads,
            vp,
            v_cols,
            kc,
            vc,
            pos,
            base,
            slots,
            hd,
            rot,
            theta_scale,
            freq_scale,
            factors,
            neox
        ],
    )
}

pub(crate) fn glu(
    b: &CudaBackend,
    gate: &CudaTensor,
    up: Option<&CudaTensor>,
    act: FfnActivation,
    out: &CudaTensor,
    next: &CudaWeight,
) -> Result<(), CudaError> {
    let cols = out.cols;
    // A fused [gate | up] row holds both halves.
    let (g, u, stride) = match up {
        Some(u) => (gate.ptr(), u.ptr(), cols as i32),
        None => (gate.ptr(), gate.ptr() + (cols * 4) as u64, 2 * cols as i32),
    };
    let act = match act {
        FfnActivation::SwiGlu => 0i32,
        FfnActivation::GeGlu => 1,
    };
    let (mode, (xq, xd)) = prepare_for(b, out, Some(next))?;
    // A thread per value, or a warp per quantization block.
    let (n, threads) = match mode {
        Activations::Float => (out.len(), out.len()),
        Activations::Q8K => (out.len() / 256, out.len() / 8),
        _ => (out.len() / 32, out.len()),
    };
    let (o, c, n, m) = (out.ptr(), cols as i32, n as u64, mode.mode());
    b.launch_n(
        "glu",
        threads,
        &mut kernel_args![g, u, stride, o, c, act, n, xq, xd, m],
    )
}

/// x += b, row by row.
pub(crate) fn add_bias(
    b: &CudaBackend,
    x: &CudaTensor,
    bias: &CudaWeight,
) -> Result<(), CudaError> {
    let (ptr, bp, cols, n) = (x.ptr(), bias.buf.ptr, x.cols as i32, x.len() as u64);
    b.launch_n("add_bias", x.len(), &mut kernel_args![ptr, bp, cols, n])
}

/// The index of each row's largest value into `dst` (u32s on the device).
pub(crate) fn argmax(b: &CudaBackend, x: &CudaTensor, dst: u64) -> Result<(), CudaError> {
    let (xp, cols) = (x.ptr(), x.cols as i32);
    b.gpu.launch(
        "argmax_rows",
        (x.rows as u32, 1, 1),
        1024,
        &mut kernel_args![xp, cols, dst],
    )
}

pub(crate) fn gather_rows(
    b: &CudaBackend,
    s: &Scratch,
    x: &CudaTensor,
    out: &CudaTensor,
) -> Result<(), CudaError> {
    let (xp, rows, o) = (x.ptr(), s.meta_ptr(s.layout.outputs), out.ptr());
    let (c, n) = (x.cols as i32, out.len() as u64);
    b.launch_n(
        "gather_rows",
        out.len(),
        &mut kernel_args![xp, rows, o, c, n],
    )
}
