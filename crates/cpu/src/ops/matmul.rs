//! Quantized matrix multiplication: where decode spends its time.
//!
//! Activations are quantized once per row to the weight type's dot type
//! (Q8_0, Q8_1 or Q8_K, as ggml does); then each thread streams a
//! contiguous range of weight rows and dots every row with every token,
//! up to eight tokens at a time where they share a kernel
//! ([`quarrel_quant::dot_rows`]: each weight block unpacked once for all of
//! them; the same bits as single dots). A prompt has many such runs: for
//! the 32-element formats a thread unpacks each slice of weight rows once
//! for all of them ([`quarrel_quant::unpack_rows`]).
//! Which kernel (and which activation quantizer) serves a token follows
//! ggml's x86 path for the matrix: repacked Q4_0 / Q4_K matrices use the
//! gemm for whole groups of four tokens and the gemv for the rest; other
//! K-quant matrices use ggml's tiled matmul for batches of eight or more
//! tokens, which is why the kernel depends on the whole batch's size.

use crate::pool::{ColumnSplit, Pool};
use crate::tensor::{CpuTensor, CpuWeight};
use quarrel_model::{Kernels, RowGroup};
use quarrel_quant::{DotKernel, MatmulPath};
use std::sync::Mutex;

/// The fewest weight rows per task: a task is worth a few microseconds.
const MIN_ROWS_PER_TASK: usize = 16;
/// Tasks per thread, so that a thread slowed by something else is helped.
const TASKS_PER_THREAD: usize = 4;
/// Weight rows per `dot_rows` call: its checks and dispatch, once per row,
/// had been 6.6% of a batched decode step.
const ROWS_PER_CALL: usize = 32;

pub struct MatmulScratch {
    act: Vec<u8>,
    /// Each run's activations interleaved ([`quarrel_quant::pack_acts`]).
    packed: Vec<quarrel_quant::Chunk>,
    /// The kernel of each row.
    kernels: Vec<DotKernel>,
    /// Runs of consecutive rows sharing a kernel, at most
    /// [`quarrel_quant::DOT_ROWS_MAX`] long.
    runs: Vec<Run>,
    /// One per thread: weight rows unpacked once for all the runs.
    unpacked: Vec<Mutex<Unpacked>>,
}

/// Weight rows unpacked by [`quarrel_quant::unpack_rows`].
#[derive(Default)]
struct Unpacked {
    quants: Vec<quarrel_quant::Chunk>,
    scales: Vec<[f32; 2]>,
}

/// Rows that one `dot_rows` call serves together.
struct Run {
    rows: std::ops::Range<usize>,
    kernel: DotKernel,
    /// Where its interleaved activations are in `MatmulScratch::packed`.
    packed: std::ops::Range<usize>,
}

impl MatmulScratch {
    pub fn new() -> Self {
        MatmulScratch {
            act: Vec::new(),
            packed: Vec::new(),
            kernels: Vec::new(),
            runs: Vec::new(),
            unpacked: Vec::new(),
        }
    }
}

/// out = x · wᵀ, kernels chosen per group of rows (see [`Kernels`]).
pub fn matmul(
    pool: &Pool,
    x: &CpuTensor,
    w: &CpuWeight,
    out: &mut CpuTensor,
    groups: &[RowGroup],
    scratch: &mut MatmulScratch,
) {
    matmul_many(pool, x, &[w], &mut [out], groups, scratch);
}

/// Weights whose matmuls by the same input can share its preparation:
/// one type, row length and path.
pub fn can_share(ws: &[&CpuWeight]) -> bool {
    let path = |w: &CpuWeight| quarrel_quant::matmul_path(w.ty, w.rows);
    ws.len() <= MAX_SHARED
        && ws
            .iter()
            .all(|w| w.ty == ws[0].ty && w.cols == ws[0].cols && path(w) == path(ws[0]))
}

/// Weights that one [`matmul_many`] takes at most.
const MAX_SHARED: usize = 3;

/// outs[i] = x · ws[i]ᵀ for weights that [`can_share`]: the activations
/// are quantized and packed once, and one parallel pass covers every
/// weight's rows (one wait for the threads instead of one per weight).
pub fn matmul_many(
    pool: &Pool,
    x: &CpuTensor,
    ws: &[&CpuWeight],
    outs: &mut [&mut CpuTensor],
    groups: &[RowGroup],
    scratch: &mut MatmulScratch,
) {
    assert!(can_share(ws) && ws.len() == outs.len() && !ws.is_empty());
    let w = ws[0];
    for (wi, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(x.cols, wi.cols, "matmul inner dimensions");
        assert_eq!(out.cols, wi.rows, "matmul output width");
    }
    let (n, k, m) = (x.rows, w.cols, w.rows);
    let path = quarrel_quant::matmul_path(w.ty, m);
    scratch.kernels.clear();
    for g in groups {
        let len = g.rows.len();
        let per_row = |t: usize| match g.kernels {
            Kernels::Batch => path.kernel(t, len),
            Kernels::PromptRow => path.prompt_kernel(),
            Kernels::TokenRow => path.kernel(0, 1),
        };
        scratch.kernels.extend((0..len).map(per_row));
    }
    assert_eq!(scratch.kernels.len(), n, "matmul groups cover the rows");
    let kernels = &scratch.kernels;
    let dot_ty = quarrel_quant::vec_dot_type(w.ty);
    let act_row = dot_ty
        .row_bytes(k as u64)
        .expect("row length checked at load") as usize;
    // Grows once to the largest batch, then is reused.
    scratch.act.resize(n * act_row, 0);
    let src = x.live();
    pool.for_each_chunk(&mut scratch.act, act_row, |t, dst| {
        let src = &src[t * k..][..k];
        quarrel_quant::quantize_activation_for(kernels[t], w.ty, src, dst).expect("sizes match");
    });
    scratch.runs.clear();
    for (t, &kernel) in kernels.iter().enumerate() {
        match scratch.runs.last_mut() {
            Some(r)
                if r.kernel == kernel
                    && r.rows.end == t
                    && r.rows.len() < quarrel_quant::DOT_ROWS_MAX =>
            {
                r.rows.end += 1
            }
            _ => scratch.runs.push(Run {
                rows: t..t + 1,
                kernel,
                packed: 0..0,
            }),
        }
    }
    // Each run's activations interleaved, once for every weight row, the
    // runs back to back.
    let mut end = 0;
    for r in &mut scratch.runs {
        let len = quarrel_quant::packed_acts_len(w.ty, k, r.rows.len());
        r.packed = end..end + len;
        end += len;
    }
    scratch.packed.resize(end, quarrel_quant::Chunk::default());
    for r in &scratch.runs {
        let a = &scratch.act[r.rows.start * act_row..r.rows.end * act_row];
        quarrel_quant::pack_acts(w.ty, k, a, &mut scratch.packed[r.packed.clone()]);
    }
    // Several runs (a prompt) share one unpacking of each weight block
    // where the format has such a kernel.
    let unpack =
        path == MatmulPath::VecDot && scratch.runs.len() > 1 && quarrel_quant::unpacks(w.ty);
    if unpack {
        scratch
            .unpacked
            .resize_with(pool.threads(), Default::default);
    }
    let (act, packed, runs) = (&scratch.act, &scratch.packed, &scratch.runs);
    let unpacked = &scratch.unpacked;
    let total: usize = ws.iter().map(|w| w.rows).sum();
    let rows = (total / (pool.threads() * TASKS_PER_THREAD)).max(MIN_ROWS_PER_TASK);
    // Tasks numbered weight after weight: first_task[i] is weight i's first.
    let mut first_task = [0usize; MAX_SHARED + 1];
    let mut splits: [Option<ColumnSplit>; MAX_SHARED] = [None, None, None];
    for (i, (wi, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        out.rows = n;
        first_task[i + 1] = first_task[i] + wi.rows.div_ceil(rows);
        splits[i] = Some(ColumnSplit::new(out.live_mut(), wi.rows));
    }
    pool.for_each(first_task[ws.len()], |task| {
        let i = (0..ws.len())
            .rfind(|&i| first_task[i] <= task)
            .expect("task 0 is weight 0's");
        let (w, task, m) = (ws[i], task - first_task[i], ws[i].rows);
        let out = splits[i].as_ref().expect("one split per weight");
        let mut o = [0f32; ROWS_PER_CALL * quarrel_quant::DOT_ROWS_MAX];
        // At most one task per thread runs at a time, so one buffer is free.
        let mut buf = unpack
            .then(|| unpacked.iter().find_map(|b| b.try_lock().ok()))
            .flatten();
        let task_rows = task * rows..((task + 1) * rows).min(m);
        for r0 in task_rows.clone().step_by(ROWS_PER_CALL) {
            let r1 = (r0 + ROWS_PER_CALL).min(task_rows.end);
            let wr = w.rows_range(r0..r1);
            let un = buf.as_deref_mut().map(|b| {
                let blocks = (r1 - r0) * (k / w.ty.block_size());
                b.quants.resize(blocks, quarrel_quant::Chunk::default());
                b.scales.resize(blocks, [0.0; 2]);
                quarrel_quant::unpack_rows(w.ty, k, wr, &mut b.quants, &mut b.scales);
                &*b
            });
            for run in runs {
                let (t0, len) = (run.rows.start, run.rows.len());
                let a = &act[t0 * act_row..run.rows.end * act_row];
                let p = &packed[run.packed.clone()];
                let o = &mut o[..(r1 - r0) * len];
                match un {
                    Some(u) => {
                        quarrel_quant::dot_rows_unpacked(w.ty, k, &u.quants, &u.scales, len, p, o)
                    }
                    None => quarrel_quant::dot_rows(run.kernel, w.ty, k, wr, a, p, o),
                }
                for i in 0..len {
                    // SAFETY: weight rows r0..r1, output columns r0..r1, are
                    // this task's.
                    let dst = unsafe { out.cols_mut(t0 + i, r0..r1) };
                    for (d, o) in dst.iter_mut().zip(o.chunks_exact(len)) {
                        *d = o[i];
                    }
                }
            }
        }
    });
}
