//! Launchers of `elementwise.cu`: norms, rotary embedding, gated
//! activations, row gathers.

use quarrel_model::{FfnActivation, RopeParams, RopeStyle};

use crate::{kernel_args, CudaBackend, CudaError, CudaTensor, CudaWeight, Scratch};

/// Threads per block of the one-thread-per-element kernels.
pub(crate) const BLOCK: u32 = 256;

/// Threads for a block over `n` values: whole warps, at most 1024.
fn block_for(n: usize) -> u32 {
    (n.div_ceil(32) * 32).min(1024) as u32
}

/// RMS norm of each run of `w.cols` values of `len` values at `x`, into
/// `out` (which may be `x`).
pub(crate) fn rms_norm(
    b: &CudaBackend,
    x: u64,
    len: usize,
    w: &CudaWeight,
    eps: f32,
    out: u64,
) -> Result<(), CudaError> {
    let group = w.cols;
    let blocks = (len / group) as u32;
    if blocks == 0 {
        return Ok(());
    }
    let (wp, g) = (w.buf.ptr, group as i32);
    b.gpu.launch(
        "rms_norm",
        (blocks, 1, 1),
        block_for(group),
        &mut kernel_args![x, wp, out, g, eps],
    )
}

pub(crate) fn rope(
    b: &CudaBackend,
    s: &Scratch,
    x: &CudaTensor,
    p: &RopeParams<'_, CudaWeight>,
) -> Result<(), CudaError> {
    if x.rows == 0 {
        return Ok(());
    }
    let (xp, cols, pos) = (x.ptr(), x.cols as i32, s.meta_ptr(s.layout.positions));
    let (heads, hd, rot) = (p.n_heads as i32, p.head_dim as i32, p.n_rot as i32);
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let freq_scale = p.freq_scale;
    let factors = p.freq_factors.map_or(0u64, |w| w.buf.ptr);
    let neox = i32::from(p.style == RopeStyle::Neox);
    b.gpu.launch(
        "rope",
        (x.rows as u32, p.n_heads as u32, 1),
        block_for(p.n_rot / 2),
        &mut kernel_args![
            xp,
            cols,
            pos,
            heads,
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
    let (o, c, n) = (out.ptr(), cols as i32, out.len() as u64);
    b.launch_n(
        "glu",
        out.len(),
        &mut kernel_args![g, u, stride, o, c, act, n],
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
