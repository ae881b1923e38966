//! Launchers of `attention.cu`: the KV-cache write and attention of every
//! batch row over its sequence's cached positions.

use quarrel_model::AttnParams;

use crate::{kernel_args, CudaBackend, CudaError, CudaKvCache, CudaTensor, Scratch};

/// Head dimensions up to this are supported (ATTN_MAX_DIM).
pub(crate) const MAX_HEAD_DIM: usize = 256;
const ATTN_WARPS: u32 = 4;

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    b: &CudaBackend,
    s: &Scratch,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    cache: &mut CudaKvCache,
    layer: usize,
    p: &AttnParams,
    out: &CudaTensor,
) -> Result<(), CudaError> {
    if p.head_dim_k > MAX_HEAD_DIM || p.head_dim_v > MAX_HEAD_DIM {
        return Err(CudaError::Unsupported(format!(
            "head dimension {}/{} (at most {MAX_HEAD_DIM})",
            p.head_dim_k, p.head_dim_v
        )));
    }
    let rows = q.rows as u32;
    if rows == 0 {
        return Ok(());
    }
    let l = &s.layout;
    let (pos, base, slots) = (
        s.meta_ptr(l.positions),
        s.meta_ptr(l.slot_base),
        s.meta_ptr(l.slots),
    );
    let (kc, vc) = (cache.k[layer].ptr, cache.v[layer].ptr);
    let (kd, vd) = (cache.k_dim as i32, cache.v_dim as i32);
    let (kp, vp) = (k.ptr(), v.ptr());
    b.gpu.launch(
        "kv_store",
        (rows, 1, 1),
        256,
        &mut kernel_args![kp, vp, kc, vc, pos, base, slots, kd, vd],
    )?;
    let (qp, op) = (q.ptr(), out.ptr());
    let (nh, nkv) = (p.n_head as i32, p.n_head_kv as i32);
    let (dk, dv) = (p.head_dim_k as i32, p.head_dim_v as i32);
    let (scale, window) = (p.kq_scale, p.window as i32);
    b.gpu.launch(
        "attention",
        (rows, p.n_head as u32, 1),
        ATTN_WARPS * 32,
        &mut kernel_args![qp, kc, vc, op, pos, base, slots, nh, nkv, dk, dv, scale, window],
    )
}
