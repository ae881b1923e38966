//! out = x · wᵀ. Up to [`GEMV_MAX_ROWS`] rows at a time run the GEMV
//! kernels of `matmul.cu`, which read the weight once for all of them;
//! longer runs dequantize the weight to f16 and multiply on the tensor
//! cores through cuBLAS (f32 accumulation).

use cudarc::cublas::{result as blas, sys as blas_sys};
use quarrel_gguf::GgmlType;
use quarrel_model::{Kernels, RowGroup};

use super::ensure;
use crate::{kernel_args, CudaBackend, CudaError, CudaTensor, CudaWeight, Scratch};

pub(crate) const GEMV_MAX_ROWS: usize = 8;
/// Warps per GEMV block.
const GEMV_WARPS: u32 = 4;

/// Weight rows per warp for `r` activation rows (GEMV_WEIGHT_ROWS in
/// matmul.cu).
fn gemv_weight_rows(r: usize) -> u32 {
    match r {
        1 => 4,
        2 => 2,
        _ => 1,
    }
}

/// The kernels compiled for one weight type (see `WEIGHT_TYPE` in matmul.cu).
pub(crate) struct TypeKernels {
    pub ty: GgmlType,
    pub embed: &'static str,
    pub dequant_f16: &'static str,
    pub gemv: [&'static str; GEMV_MAX_ROWS],
    /// One activation row, one weight row per warp (experiment).
    pub gemv1: &'static str,
    /// Row lengths must be a multiple of this.
    pub cols_multiple: usize,
}

macro_rules! type_kernels {
    ($name:literal, $ty:ident, $multiple:expr) => {
        TypeKernels {
            ty: GgmlType::$ty,
            embed: concat!("embed_", $name),
            dequant_f16: concat!("dequant_f16_", $name),
            gemv: [
                concat!("gemv_", $name, "_1"),
                concat!("gemv_", $name, "_2"),
                concat!("gemv_", $name, "_3"),
                concat!("gemv_", $name, "_4"),
                concat!("gemv_", $name, "_5"),
                concat!("gemv_", $name, "_6"),
                concat!("gemv_", $name, "_7"),
                concat!("gemv_", $name, "_8"),
            ],
            gemv1: concat!("gemv1_", $name),
            cols_multiple: $multiple,
        }
    };
}

pub(crate) const WEIGHT_TYPES: [TypeKernels; 11] = [
    type_kernels!("f32", F32, 4),
    type_kernels!("f16", F16, 8),
    type_kernels!("bf16", Bf16, 8),
    type_kernels!("q4_0", Q4_0, 32),
    type_kernels!("q4_1", Q4_1, 32),
    type_kernels!("q5_0", Q5_0, 32),
    type_kernels!("q5_1", Q5_1, 32),
    type_kernels!("q8_0", Q8_0, 32),
    type_kernels!("q4_k", Q4K, 256),
    type_kernels!("q5_k", Q5K, 256),
    type_kernels!("q6_k", Q6K, 256),
];

fn kernels(ty: GgmlType) -> &'static TypeKernels {
    WEIGHT_TYPES
        .iter()
        .find(|k| k.ty == ty)
        .expect("weight types are checked at load")
}

pub(crate) fn supports(ty: GgmlType, cols: usize) -> bool {
    WEIGHT_TYPES
        .iter()
        .any(|k| k.ty == ty && cols.is_multiple_of(k.cols_multiple))
}

/// A weight's bytes as the kernels read them, and its row stride: Q6_K
/// rows repacked so that every load is aligned (see `Q6KRow` in
/// blocks.cuh: each block's 192 quant bytes, then each block's 16 scales,
/// then each block's d; rows padded to 16 bytes), other types as stored.
pub(crate) fn device_layout(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
) -> (std::borrow::Cow<'_, [u8]>, usize) {
    let row_bytes = data.len() / rows;
    if ty != GgmlType::Q6K {
        return (data.into(), row_bytes);
    }
    const BLOCK: usize = 210;
    let nb = row_bytes / BLOCK;
    let stride = row_bytes.next_multiple_of(16);
    let mut out = vec![0u8; rows * stride];
    for (src, dst) in data
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(stride))
    {
        let (quants, rest) = dst.split_at_mut(192 * nb);
        let (scales, d) = rest.split_at_mut(16 * nb);
        for (b, blk) in src.chunks_exact(BLOCK).enumerate() {
            quants[192 * b..][..192].copy_from_slice(&blk[..192]);
            scales[16 * b..][..16].copy_from_slice(&blk[192..208]);
            d[2 * b..][..2].copy_from_slice(&blk[208..210]);
        }
    }
    (out.into(), stride)
}

/// How activations are quantized for a weight type (ggml's vec_dot_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activations {
    /// f32 in the kernels (rounded there to f16/bf16 for those weights).
    Float,
    Q8_0,
    Q8_1,
    Q8K,
}

impl Activations {
    /// The weight type's activations.
    pub(crate) fn of(ty: GgmlType) -> Activations {
        match quarrel_quant::vec_dot_type(ty) {
            GgmlType::Q8_0 => Activations::Q8_0,
            GgmlType::Q8_1 => Activations::Q8_1,
            GgmlType::Q8K => Activations::Q8K,
            _ => Activations::Float,
        }
    }

    /// The kernels' number for it (QUANT_* in common.cuh).
    pub(crate) fn mode(self) -> i32 {
        match self {
            Activations::Float => 0,
            Activations::Q8_0 => 1,
            Activations::Q8_1 => 2,
            Activations::Q8K => 3,
        }
    }
}

/// The addresses of `x`'s quantized copy (int8 values, per-block
/// (d, sum)), allocated at first use.
pub(crate) fn quant_buffers(b: &CudaBackend, x: &CudaTensor) -> Result<(u64, u64), CudaError> {
    if x.quant.get().is_none() {
        let bufs = (
            b.gpu.alloc(x.max_rows * x.cols)?,
            b.gpu.alloc(x.max_rows * x.cols / 32 * 8)?,
        );
        let _ = x.quant.set(bufs);
    }
    let (q, d) = x.quant.get().expect("just set");
    Ok((q.ptr, d.ptr))
}

pub(crate) fn embed(
    b: &CudaBackend,
    s: &mut Scratch,
    table: &CudaWeight,
    out: &CudaTensor,
) -> Result<(), CudaError> {
    let (w, rb, tokens, o) = (
        table.buf.ptr,
        table.row_bytes as u64,
        s.meta_ptr(s.layout.tokens),
        out.ptr(),
    );
    let (k, rows) = (table.cols as i32, out.rows as i32);
    b.launch_n(
        kernels(table.ty).embed,
        out.len(),
        &mut kernel_args![w, rb, tokens, o, k, rows],
    )
}

/// Whether rows of a group with these kernels run the GEMV kernels.
fn gemv_rows(kernels: Kernels, rows: usize) -> bool {
    match kernels {
        Kernels::TokenRow => true,
        Kernels::PromptRow => false,
        Kernels::Batch => rows <= GEMV_MAX_ROWS,
    }
}

pub(crate) fn matmul(
    b: &CudaBackend,
    s: &mut Scratch,
    x: &CudaTensor,
    w: &CudaWeight,
    out: &CudaTensor,
    groups: &[RowGroup],
) -> Result<(), CudaError> {
    assert_eq!(x.cols, w.cols, "matmul inner dimensions");
    assert_eq!(out.cols, w.rows, "matmul output width");
    let mut m = Matmul {
        b,
        x,
        w,
        out,
        dequantized: false,
    };
    // Consecutive groups that take the same path run as one.
    let mut run: Option<(usize, usize, bool)> = None;
    for g in groups {
        let gemv = gemv_rows(g.kernels, g.rows.len());
        match &mut run {
            Some((_, end, path)) if *path == gemv && *end == g.rows.start => *end = g.rows.end,
            _ => {
                if let Some((start, end, path)) = run {
                    m.run(s, start, end, path)?;
                }
                run = Some((g.rows.start, g.rows.end, gemv));
            }
        }
    }
    if let Some((start, end, path)) = run {
        m.run(s, start, end, path)?;
    }
    Ok(())
}

struct Matmul<'a> {
    b: &'a CudaBackend,
    x: &'a CudaTensor,
    w: &'a CudaWeight,
    out: &'a CudaTensor,
    /// Whether w is already dequantized in the scratch.
    dequantized: bool,
}

impl Matmul<'_> {
    fn run(
        &mut self,
        s: &mut Scratch,
        start: usize,
        end: usize,
        gemv: bool,
    ) -> Result<(), CudaError> {
        if gemv {
            self.gemv(start, end)
        } else {
            self.gemm(s, start, end)
        }
    }

    fn gemv(&mut self, start: usize, end: usize) -> Result<(), CudaError> {
        let (xq, xd) = self.quantize()?;
        gemv(
            self.b,
            self.x,
            (xq, xd),
            &[(self.w, None, self.out)],
            start,
            end,
        )
    }

    /// Every row of x quantized for the weight's type (see [`CudaTensor`]:
    /// done once for the matmuls that share x); the addresses of the int8
    /// values and of the per-block (d, sum).
    fn quantize(&mut self) -> Result<(u64, u64), CudaError> {
        quantize(self.b, self.x, Activations::of(self.w.ty))
    }

    fn gemm(&mut self, s: &mut Scratch, start: usize, end: usize) -> Result<(), CudaError> {
        let (b, x, w) = (self.b, self.x, self.w);
        let gpu = &b.gpu;
        let (n, k, rows) = (w.rows, w.cols, end - start);
        // f16 and bf16 weights multiply as they are, with activations
        // rounded like the CPU's; other weights are dequantized to f16 and
        // meet the same quantized activations as in decode.
        let half_type = if w.ty == GgmlType::Bf16 {
            blas_sys::cudaDataType::CUDA_R_16BF
        } else {
            blas_sys::cudaDataType::CUDA_R_16F
        };
        let a = if matches!(w.ty, GgmlType::F16 | GgmlType::Bf16) {
            w.buf.ptr
        } else {
            let w16 = ensure(gpu, &mut s.w16, n * k * 2)?;
            if !self.dequantized {
                let (wp, rb, kk) = (w.buf.ptr, w.row_bytes as u64, k as i32);
                // A block per row and 2048 columns, 8 per thread.
                let block = super::elementwise::BLOCK;
                gpu.launch(
                    kernels(w.ty).dequant_f16,
                    (n as u32, (k as u32).div_ceil(8 * block), 1),
                    block,
                    &mut kernel_args![wp, rb, w16, kk],
                )?;
                self.dequantized = true;
            }
            w16
        };
        let x16 = ensure(gpu, &mut s.x16, rows * k * 2)?;
        let cnt = (rows * k) as u64;
        if Activations::of(w.ty) == Activations::Float {
            let xp = x.ptr() + (start * k * 4) as u64;
            let mode = i32::from(w.ty == GgmlType::Bf16);
            b.launch_n(
                "f32_to_half",
                rows * k,
                &mut kernel_args![xp, x16, cnt, mode],
            )?;
        } else {
            let (xq, xd) = self.quantize()?;
            let (xqp, xdp) = (xq + (start * k) as u64, xd + (start * k / 32 * 8) as u64);
            b.launch_n(
                "dequant_act_f16",
                rows * k,
                &mut kernel_args![xqp, xdp, x16, cnt],
            )?;
        }
        let c = self.out.ptr() + (start * n * 4) as u64;
        if gpu.mode() == crate::device::Mode::Fingerprint {
            // cuBLAS may allocate while it runs: never recorded.
            gpu.not_capturable();
            return Ok(());
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Column-major view: outᵀ (n × rows) = w (n × k, stored as kᵀ) · xᵀ.
        // SAFETY: the operands hold n·k, rows·k and rows·n elements of the
        // declared types; the handle is bound to the backend's stream.
        unsafe {
            blas::gemm_ex(
                *gpu.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                rows as i32,
                k as i32,
                &alpha as *const f32 as *const _,
                a as *const _,
                half_type,
                k as i32,
                x16 as *const _,
                half_type,
                k as i32,
                &beta as *const f32 as *const _,
                c as *mut _,
                blas_sys::cudaDataType::CUDA_R_32F,
                n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )?;
        }
        Ok(())
    }
}

/// x quantized as `mode` (once for the matmuls that share x, see
/// [`CudaTensor`]); the addresses of its int8 values and per-block
/// (d, sum), zeros for [`Activations::Float`].
fn quantize(b: &CudaBackend, x: &CudaTensor, mode: Activations) -> Result<(u64, u64), CudaError> {
    if mode == Activations::Float {
        return Ok((0, 0));
    }
    let (xq, xd) = quant_buffers(b, x)?;
    if x.quantized_as.get() != Some(mode) {
        let block_len = if mode == Activations::Q8K { 256 } else { 32 };
        let n = (x.len() / block_len) as u64;
        let block = super::elementwise::BLOCK;
        let grid = n.div_ceil((block / 32) as u64) as u32;
        let (xp, m) = (x.ptr(), mode.mode());
        b.gpu.launch(
            "quantize",
            (grid, 1, 1),
            block,
            &mut kernel_args![xp, xq, xd, n, m],
        )?;
        x.quantized_as.set(Some(mode));
    }
    Ok((xq, xd))
}

/// Rows start..end of x times up to three weights of one type and row
/// length, in GEMV launches of up to [`GEMV_MAX_ROWS`] rows; `quant`: x's
/// quantized copy for that type.
fn gemv(
    b: &CudaBackend,
    x: &CudaTensor,
    (xq, xd): (u64, u64),
    mats: &[(&CudaWeight, Option<&CudaWeight>, &CudaTensor)],
    start: usize,
    end: usize,
) -> Result<(), CudaError> {
    assert!(
        (1..=3).contains(&mats.len()),
        "one to three weights per launch"
    );
    let w0 = mats[0].0;
    let k = w0.cols;
    let names = &kernels(w0.ty).gemv;
    let total: usize = mats.iter().map(|(w, ..)| w.rows).sum();
    static ONE_ROW_WARPS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let one_row_warps =
        *ONE_ROW_WARPS.get_or_init(|| std::env::var_os("QUARREL_GEMV_WR1").is_some());
    let mut r0 = start;
    while r0 < end {
        let r = (end - r0).min(GEMV_MAX_ROWS);
        let (name, wr) = if r == 1 && one_row_warps {
            (kernels(w0.ty).gemv1, 1)
        } else {
            (names[r - 1], gemv_weight_rows(r))
        };
        let grid = (total as u32).div_ceil(GEMV_WARPS * wr);
        let (mut ws, mut bs, mut os, mut ns) = ([0u64; 3], [0u64; 3], [0u64; 3], [0i32; 3]);
        for (i, (w, bias, out)) in mats.iter().enumerate() {
            debug_assert!(w.ty == w0.ty && w.cols == k);
            ws[i] = w.buf.ptr;
            bs[i] = bias.map_or(0, |b| b.buf.ptr);
            os[i] = out.ptr() + (r0 * w.rows * 4) as u64;
            ns[i] = w.rows as i32;
        }
        let rb = w0.row_bytes as u64;
        let xp = x.ptr() + (r0 * k * 4) as u64;
        let xqp = xq + (r0 * k) as u64;
        let xdp = xd + (r0 * k / 32 * 8) as u64;
        let ki = k as i32;
        b.gpu.launch(
            name,
            (grid, 1, 1),
            GEMV_WARPS * 32,
            &mut kernel_args![
                ws[0], ws[1], ws[2], rb, bs[0], bs[1], bs[2], os[0], os[1], os[2], ns[0], ns[1],
                ns[2], xp, xqp, xdp, ki
            ],
        )?;
        r0 += r;
    }
    Ok(())
}

/// outs[i] = x · ws[i]ᵀ + biases[i]: where every group runs the GEMV
/// kernels, consecutive weights of one type share their launches and add
/// their biases as they store; otherwise one matmul (and bias) each.
pub(crate) fn matmul_many(
    b: &CudaBackend,
    s: &mut Scratch,
    x: &CudaTensor,
    ws: &[&CudaWeight],
    biases: &[Option<&CudaWeight>],
    outs: &[&mut CudaTensor],
    groups: &[RowGroup],
) -> Result<(), CudaError> {
    let all_gemv = groups.iter().all(|g| gemv_rows(g.kernels, g.rows.len()));
    let rows = groups.first().map_or(0..0, |f| {
        f.rows.start..groups.last().expect("first").rows.end
    });
    for ((w, bias), out) in ws.iter().zip(biases).zip(outs) {
        assert_eq!(x.cols, w.cols, "matmul inner dimensions");
        assert_eq!(out.cols, w.rows, "matmul output width");
        assert!(bias.is_none_or(|b| b.cols == w.rows), "bias width");
    }
    if !all_gemv {
        for ((w, bias), out) in ws.iter().zip(biases).zip(outs) {
            matmul(b, s, x, w, out, groups)?;
            if let Some(bias) = bias {
                super::elementwise::add_bias(b, out, bias)?;
            }
        }
        return Ok(());
    }
    let mut i = 0;
    while i < ws.len() {
        // Up to three consecutive weights of one type per launch.
        let n = ws[i..]
            .iter()
            .take(3)
            .take_while(|w| w.ty == ws[i].ty)
            .count();
        let quant = quantize(b, x, Activations::of(ws[i].ty))?;
        let mut mats = [(ws[i], biases[i], &*outs[i]); 3];
        for (m, t) in mats.iter_mut().zip(i..i + n) {
            *m = (ws[t], biases[t], &*outs[t]);
        }
        gemv(b, x, quant, &mats[..n], rows.start, rows.end)?;
        i += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element j of a row of `k` values in the repacked Q6_K layout, read
    /// as `elem_q6_k` in blocks.cuh reads it.
    fn q6k_elem(row: &[u8], j: usize, k: usize) -> f32 {
        let nb = k / 256;
        let (b, i) = (j / 256, j % 256);
        let (n, g, l) = (i / 128, (i % 128) / 32, i % 32);
        let quants = &row[192 * b..];
        let lo = if g & 1 == 1 {
            quants[64 * n + l + 32]
        } else {
            quants[64 * n + l]
        };
        let lo = if g & 2 == 2 { lo >> 4 } else { lo & 0xF } as i32;
        let h = quants[128 + 32 * n + l] as i32;
        let q = (lo | (((h >> (2 * g)) & 3) << 4)) - 32;
        let scale = row[192 * nb + 16 * b + 8 * n + l / 16 + 2 * g] as i8;
        let d = half::f16::from_le_bytes([row[208 * nb + 2 * b], row[208 * nb + 2 * b + 1]]);
        d.to_f32() * scale as f32 * q as f32
    }

    #[test]
    fn repacked_q6k_rows_dequantize_as_stored() {
        let (rows, k) = (3, 768);
        let src: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
            .collect();
        let row_bytes = GgmlType::Q6K.row_bytes(k as u64).unwrap() as usize;
        let mut data = vec![0u8; rows * row_bytes];
        for (s, d) in src.chunks_exact(k).zip(data.chunks_exact_mut(row_bytes)) {
            quarrel_quant::quantize_row(GgmlType::Q6K, s, d).unwrap();
        }
        let (packed, stride) = device_layout(GgmlType::Q6K, &data, rows);
        assert_eq!(stride % 16, 0);
        assert_eq!(packed.len(), rows * stride);
        for (r, stored) in data.chunks_exact(row_bytes).enumerate() {
            let mut want = vec![0f32; k];
            quarrel_quant::dequantize_row(GgmlType::Q6K, stored, &mut want).unwrap();
            let row = &packed[r * stride..][..stride];
            for (j, w) in want.iter().enumerate() {
                assert_eq!(
                    q6k_elem(row, j, k).to_bits(),
                    w.to_bits(),
                    "row {r} element {j}"
                );
            }
        }
        let (same, stride) = device_layout(GgmlType::Q4K, &data[..rows * 144], rows);
        assert_eq!((same.len(), stride), (rows * 144, 144));
    }
}
