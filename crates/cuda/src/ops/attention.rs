//! Launchers of `attention.cu`: the KV-cache write, and each sequence's
//! rows through the tiled kernel (runs of [`TILED_ATTENTION_MIN_ROWS`] or
//! more) or the f16 one, as the CPU backend splits them.

use quarrel_model::{AttnParams, SeqRows, TILED_ATTENTION_MIN_ROWS};

use crate::{kernel_args, CudaBackend, CudaError, CudaKvCache, CudaTensor, Scratch};

/// Head dimensions up to this are supported, in multiples of 8.
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// The kernels by their head-dimension bound D, with the tiled kernel's
/// rows per block (`ATTENTION(D, RW)` in attention.cu: 4 warps of RW rows).
const KERNELS: [(usize, u32, &str, &str); 2] = [
    (128, 16, "attention_tiled_128", "attention_f16_128"),
    (256, 8, "attention_tiled_256", "attention_f16_256"),
];

pub(crate) fn kernel_names() -> impl Iterator<Item = &'static str> {
    KERNELS.iter().flat_map(|&(_, _, tiled, f16)| [tiled, f16])
}

/// Writes K and V of every row of the batch into its slot of `layer`.
pub(crate) fn kv_store(
    b: &CudaBackend,
    s: &Scratch,
    k: &CudaTensor,
    v: &CudaTensor,
    cache: &CudaKvCache,
    layer: usize,
) -> Result<(), CudaError> {
    if k.rows == 0 {
        return Ok(());
    }
    let (pos, base, slots) = s.slot_table();
    let (kc, vc) = (cache.k[layer].ptr, cache.v[layer].ptr);
    let (kd, vd) = (cache.k_dim as i32, cache.v_dim as i32);
    let (kp, vp) = (k.ptr(), v.ptr());
    b.gpu.launch(
        "kv_store",
        (k.rows as u32, 1, 1),
        256,
        &mut kernel_args![kp, vp, kc, vc, pos, base, slots, kd, vd],
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    b: &CudaBackend,
    s: &Scratch,
    q: &CudaTensor,
    cache: &CudaKvCache,
    layer: usize,
    seqs: &[SeqRows<'_>],
    p: &AttnParams,
    out: &CudaTensor,
) -> Result<(), CudaError> {
    let (dk, dv) = (p.head_dim_k, p.head_dim_v);
    let Some(&(_, tiled_rows, tiled_name, f16_name)) = KERNELS
        .iter()
        .find(|&&(d, ..)| dk.max(dv) <= d && dk % 8 == 0 && dv % 8 == 0)
    else {
        return Err(CudaError::Unsupported(format!(
            "head dimension {dk}/{dv} (multiples of 8 up to {MAX_HEAD_DIM})"
        )));
    };
    let rows = q.rows as u32;
    if rows == 0 {
        return Ok(());
    }
    let (pos, base, slots) = s.slot_table();
    let (kc, vc) = (cache.k[layer].ptr, cache.v[layer].ptr);
    let (qp, op) = (q.ptr(), out.ptr());
    let (nh, nkv) = (p.n_head as i32, p.n_head_kv as i32);
    let (dki, dvi) = (dk as i32, dv as i32);
    let (scale, window, n_slots) = (p.kq_scale, p.window as i32, cache.n_slots as i32);
    let launch = |tiled: bool, start: usize, end: usize| {
        let (row0, n_rows) = (start as i32, (end - start) as i32);
        let (name, grid, block) = if tiled {
            let blocks = (n_rows as u32).div_ceil(tiled_rows);
            (tiled_name, blocks, 128)
        } else {
            (f16_name, n_rows as u32, 256)
        };
        b.gpu.launch(
            name,
            (grid, p.n_head as u32, 1),
            block,
            &mut kernel_args![
                qp, kc, vc, op, pos, base, slots, row0, n_rows, nh, nkv, dki, dvi, scale, window,
                n_slots
            ],
        )
    };
    // Consecutive short runs share one launch of the f16 kernel.
    let mut short: Option<(usize, usize)> = None;
    for seq in seqs {
        let r = seq.rows.clone();
        if r.len() < TILED_ATTENTION_MIN_ROWS {
            short = match short {
                Some((start, end)) if end == r.start => Some((start, r.end)),
                Some((start, end)) => {
                    launch(false, start, end)?;
                    Some((r.start, r.end))
                }
                None => Some((r.start, r.end)),
            };
            continue;
        }
        if let Some((start, end)) = short.take() {
            launch(false, start, end)?;
        }
        launch(true, r.start, r.end)?;
    }
    if let Some((start, end)) = short {
        launch(false, start, end)?;
    }
    Ok(())
}
