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
/// Weight rows per GEMV block (one warp each).
const GEMV_WARPS: u32 = 4;

/// The kernels compiled for one weight type (see `WEIGHT_TYPE` in matmul.cu).
pub(crate) struct TypeKernels {
    pub ty: GgmlType,
    pub embed: &'static str,
    pub dequant_f16: &'static str,
    pub gemv: [&'static str; GEMV_MAX_ROWS],
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

/// How activations are quantized for a weight type (ggml's vec_dot_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activations {
    /// f32 in the kernels (rounded there to f16/bf16 for those weights).
    Float,
    Q8_0,
    Q8_1,
    Q8K,
}

fn activations(ty: GgmlType) -> Activations {
    match quarrel_quant::vec_dot_type(ty) {
        GgmlType::Q8_0 => Activations::Q8_0,
        GgmlType::Q8_1 => Activations::Q8_1,
        GgmlType::Q8K => Activations::Q8K,
        _ => Activations::Float,
    }
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
        let (b, x, w) = (self.b, self.x, self.w);
        let k = w.cols;
        let gpu = &b.gpu;
        let (xq, xd) = self.quantize()?;
        let names = &kernels(w.ty).gemv;
        let grid = (w.rows as u32).div_ceil(GEMV_WARPS);
        let mut r0 = start;
        while r0 < end {
            let r = (end - r0).min(GEMV_MAX_ROWS);
            let (wp, rb) = (w.buf.ptr, w.row_bytes as u64);
            let xp = x.ptr() + (r0 * k * 4) as u64;
            let xqp = xq + (r0 * k) as u64;
            let xdp = xd + (r0 * k / 32 * 8) as u64;
            let op = self.out.ptr() + (r0 * w.rows * 4) as u64;
            let (ki, ni) = (k as i32, w.rows as i32);
            gpu.launch(
                names[r - 1],
                (grid, 1, 1),
                GEMV_WARPS * 32,
                &mut kernel_args![wp, rb, xp, xqp, xdp, op, ki, ni],
            )?;
            r0 += r;
        }
        Ok(())
    }

    /// Every row of x quantized for the weight's type (see [`CudaTensor`]:
    /// done once for the matmuls that share x); the addresses of the int8
    /// values and of the per-block (d, sum).
    fn quantize(&mut self) -> Result<(u64, u64), CudaError> {
        let (b, x) = (self.b, self.x);
        let mode = activations(self.w.ty);
        if mode == Activations::Float {
            return Ok((0, 0));
        }
        let gpu = &b.gpu;
        if x.quant.get().is_none() {
            let bufs = (
                gpu.alloc(x.max_rows * x.cols)?,
                gpu.alloc(x.max_rows * x.cols / 32 * 8)?,
            );
            let _ = x.quant.set(bufs);
        }
        let (q, d) = x.quant.get().expect("just set");
        let (xq, xd) = (q.ptr, d.ptr);
        if x.quantized_as.get() != Some(mode) {
            let xp = x.ptr();
            let block = super::elementwise::BLOCK;
            let warps = (block / 32) as u64;
            if mode == Activations::Q8K {
                let n = (x.len() / 256) as u64;
                let grid = n.div_ceil(warps) as u32;
                gpu.launch(
                    "quantize_q8_k",
                    (grid, 1, 1),
                    block,
                    &mut kernel_args![xp, xq, xd, n],
                )?;
            } else {
                let n = (x.len() / 32) as u64;
                let grid = n.div_ceil(warps) as u32;
                let m = i32::from(mode == Activations::Q8_1);
                gpu.launch(
                    "quantize_q8_0",
                    (grid, 1, 1),
                    block,
                    &mut kernel_args![xp, xq, xd, n, m],
                )?;
            }
            x.quantized_as.set(Some(mode));
        }
        Ok((xq, xd))
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
        if activations(w.ty) == Activations::Float {
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
