//! The CUDA backend. Weights are uploaded once in their GGUF block layout;
//! decode runs quantized matrix-vector kernels on int8 activations, longer
//! batches dequantize each weight to f16 for cuBLAS on the tensor cores.
//! Kernels are compiled by NVRTC at first use (see `compile`), and the
//! driver, NVRTC and cuBLAS are opened at run time, so the binary needs no
//! CUDA toolkit to build and runs on machines without a GPU.
//!
//! Every operation is queued on one stream; nothing waits for the device
//! until [`Backend::read`]. A failed CUDA call is kept and reported by the
//! next `begin_batch` or `read`; operations after it are skipped.

mod compile;
mod device;
mod ops;

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::sync::Mutex;

use cudarc::driver::{sys as driver_sys, CudaGraph};

use quarrel_gguf::{GgmlType, GgufFile, TensorInfo};
use quarrel_model::{
    AttnParams, Backend, Batch, FfnActivation, ModelError, RopeParams, RowGroup, SeqRows,
};

use device::Gpu;
pub use device::{libraries_present, DeviceBuffer};

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA is not available: {0}")]
    Unavailable(String),
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("cuBLAS: {0:?}")]
    Blas(#[from] cudarc::cublas::result::CublasError),
    #[error("compiling the CUDA kernels: {0}")]
    Compile(String),
    #[error("not supported by the CUDA backend: {0}")]
    Unsupported(String),
}

/// A weight matrix of `rows` rows of `cols` elements in block type `ty`,
/// on the device. Vectors (norms, biases, rope factors) are stored as f32.
pub struct CudaWeight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    buf: DeviceBuffer,
}

/// An f32 activation matrix on the device, with room for `max_rows` rows.
///
/// It also keeps its rows quantized for the GEMV kernels, made by the first
/// matmul that needs them and reused by the next ones with the same
/// quantization (Q, K and V projections; gate and up). Every operation
/// that writes the tensor takes it `&mut` and forgets that copy.
pub struct CudaTensor {
    buf: DeviceBuffer,
    rows: usize,
    cols: usize,
    max_rows: usize,
    /// int8 values and per block of 32 (scale, sum), allocated at first use.
    quant: OnceCell<(DeviceBuffer, DeviceBuffer)>,
    quantized_as: Cell<Option<ops::matmul::Activations>>,
}

impl CudaTensor {
    fn ptr(&self) -> u64 {
        self.buf.ptr
    }
    fn len(&self) -> usize {
        self.rows * self.cols
    }
    /// The tensor, about to be written.
    fn written(&mut self) -> &mut Self {
        self.quantized_as.set(None);
        self
    }
}

/// K and V of every layer, one f16 row per cache slot.
pub struct CudaKvCache {
    k: Vec<DeviceBuffer>,
    v: Vec<DeviceBuffer>,
    /// Positions per layer.
    n_slots: usize,
    k_dim: usize,
    v_dim: usize,
}

/// The current batch's tokens, positions, output rows and cache slots, on
/// the device (offsets in u32s into one buffer).
#[derive(Clone, Copy, Default)]
struct BatchLayout {
    tokens: usize,
    positions: usize,
    slot_base: usize,
    outputs: usize,
    slots: usize,
}

struct Scratch {
    meta_host: Vec<u32>,
    meta: Option<DeviceBuffer>,
    layout: BatchLayout,
    /// f16 operands of the cuBLAS prefill.
    w16: Option<DeviceBuffer>,
    x16: Option<DeviceBuffer>,
    /// Token ids chosen on the device.
    ids: Option<DeviceBuffer>,
}

pub struct CudaBackend {
    gpu: Gpu,
    ordinal: usize,
    scratch: Mutex<Scratch>,
    error: Mutex<Option<String>>,
    /// Recorded forward passes by the fingerprint of their launches; off
    /// with QUARREL_CUDA_GRAPHS=0 or after a capture failed.
    graphs: Mutex<HashMap<u64, Graph>>,
    graphs_on: std::sync::atomic::AtomicBool,
}

/// A recorded forward pass.
struct Graph(CudaGraph);

// SAFETY: the graph's handles are plain driver objects that any thread may
// launch with the context current; the backend only touches them under its
// `graphs` lock.
unsafe impl Send for Graph {}

/// Recordings kept at most (the server meets many batch shapes).
const MAX_GRAPHS: usize = 64;

impl CudaBackend {
    /// Opens device `ordinal`, compiling (or loading cached) kernels.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let gpu = Gpu::open(ordinal)?;
        Ok(CudaBackend {
            gpu,
            ordinal,
            scratch: Mutex::new(Scratch {
                meta_host: Vec::new(),
                meta: None,
                layout: BatchLayout::default(),
                w16: None,
                x16: None,
                ids: None,
            }),
            error: Mutex::new(None),
            graphs: Mutex::new(HashMap::new()),
            graphs_on: std::sync::atomic::AtomicBool::new(
                std::env::var("QUARREL_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            ),
        })
    }

    /// Captures the work `ops` queues into a graph, instantiates it, and
    /// launches it; the graph, or None where capture failed (the work then
    /// ran eagerly, and graphs are switched off).
    fn capture(
        &self,
        ops: &mut dyn FnMut() -> Result<(), ModelError>,
    ) -> Result<Option<Graph>, ModelError> {
        let stream = &self.gpu.stream;
        let begun = stream
            .begin_capture(driver_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
        let ran = begun.is_ok().then(&mut *ops);
        let graph = if begun.is_ok() {
            stream.end_capture(driver_sys::CUgraphInstantiate_flags(0))
        } else {
            Ok(None)
        };
        match (ran, graph) {
            (Some(Ok(())), Ok(Some(g))) if self.error.lock().expect("error lock").is_none() => {
                self.run(|_| Ok(g.launch()?));
                Ok(Some(Graph(g)))
            }
            (ran, graph) => {
                eprintln!(
                    "quarrel: CUDA graph capture failed ({:?}, {:?}); running without graphs",
                    ran.map(|r| r.err()),
                    graph.err()
                );
                self.graphs_on
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                self.error.lock().expect("error lock").take();
                ops()?;
                Ok(None)
            }
        }
    }

    /// The device's name ("NVIDIA H100 80GB HBM3").
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// Runs `f` unless an earlier call failed; keeps its error.
    fn run(&self, f: impl FnOnce(&mut Scratch) -> Result<(), CudaError>) {
        let mut err = self.error.lock().expect("error lock");
        if err.is_some() {
            return;
        }
        let mut scratch = self.scratch.lock().expect("scratch lock");
        if let Err(e) = f(&mut scratch) {
            *err = Some(e.to_string());
        }
    }

    fn take_error(&self) -> Result<(), ModelError> {
        match self.error.lock().expect("error lock").as_ref() {
            Some(e) => Err(ModelError::Backend(e.clone())),
            None => Ok(()),
        }
    }

    fn alloc_or_record(&self, bytes: usize) -> DeviceBuffer {
        match self.gpu.alloc(bytes) {
            Ok(b) => b,
            Err(e) => {
                let mut err = self.error.lock().expect("error lock");
                err.get_or_insert_with(|| format!("allocating {bytes} bytes: {e}"));
                DeviceBuffer::null()
            }
        }
    }

    /// Launches an elementwise kernel over `n` elements.
    fn launch_n(
        &self,
        name: &str,
        n: usize,
        args: &mut [device::KernelArg],
    ) -> Result<(), CudaError> {
        let block = ops::elementwise::BLOCK;
        let grid = n.div_ceil(block as usize).max(1) as u32;
        self.gpu.launch(name, (grid, 1, 1), block, args)
    }
}

/// Kernel arguments: the address and size of each value, which must have
/// exactly the C type that the kernel declares (u64 for pointers and sizes,
/// i32, f32).
#[macro_export]
#[doc(hidden)]
macro_rules! kernel_args {
    ($($a:expr),* $(,)?) => {
        [$((&$a as *const _ as *mut ::std::ffi::c_void, ::std::mem::size_of_val(&$a))),*]
    };
}

impl Backend for CudaBackend {
    type Weight = CudaWeight;
    type Tensor = CudaTensor;
    type KvCache = CudaKvCache;

    fn describe(&self) -> String {
        format!(
            "cuda:{} ({}, {})",
            self.ordinal, self.gpu.name, self.gpu.arch
        )
    }

    fn load_weight(&self, file: &GgufFile, info: &TensorInfo) -> Result<CudaWeight, ModelError> {
        let unsupported = || ModelError::UnsupportedType {
            name: info.name.clone(),
            ty: info.ty,
        };
        let rows = info.n_rows() as usize;
        let cols = info.row_len() as usize;
        let data = file.view(info).data;
        let fail = |e: CudaError| ModelError::Backend(format!("uploading {}: {e}", info.name));
        self.gpu.bind().map_err(fail)?;
        if rows == 1 {
            let mut v = vec![0f32; cols];
            quarrel_quant::dequantize_row(info.ty, data, &mut v).map_err(|_| unsupported())?;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            return Ok(CudaWeight {
                ty: GgmlType::F32,
                rows,
                cols,
                row_bytes: cols * 4,
                buf: self.gpu.upload(&bytes).map_err(fail)?,
            });
        }
        if !ops::matmul::supports(info.ty, cols) {
            return Err(unsupported());
        }
        let (bytes, row_bytes) = ops::matmul::device_layout(info.ty, data, rows);
        Ok(CudaWeight {
            ty: info.ty,
            rows,
            cols,
            row_bytes,
            buf: self.gpu.upload(&bytes).map_err(fail)?,
        })
    }

    fn new_tensor(&self, max_rows: usize, cols: usize) -> CudaTensor {
        CudaTensor {
            buf: self.alloc_or_record(max_rows * cols * 4),
            rows: max_rows,
            cols,
            max_rows,
            quant: OnceCell::new(),
            quantized_as: Cell::new(None),
        }
    }

    fn set_rows(&self, t: &mut CudaTensor, rows: usize) {
        assert!(rows <= t.max_rows, "tensor capacity exceeded");
        t.written().rows = rows;
    }

    fn shape(&self, t: &CudaTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_slots: usize,
        k_dim: usize,
        v_dim: usize,
    ) -> CudaKvCache {
        CudaKvCache {
            k: (0..n_layer)
                .map(|_| self.alloc_or_record(n_slots * k_dim * 2))
                .collect(),
            v: (0..n_layer)
                .map(|_| self.alloc_or_record(n_slots * v_dim * 2))
                .collect(),
            n_slots,
            k_dim,
            v_dim,
        }
    }

    fn kv_slot_bytes(&self, n_layer: usize, k_dim: usize, v_dim: usize) -> usize {
        n_layer * (k_dim + v_dim) * 2
    }

    fn prompt_kernels_min_rows(&self) -> usize {
        ops::matmul::GEMV_MAX_ROWS + 1
    }

    fn begin_batch(&self, batch: &Batch<'_>) -> Result<(), ModelError> {
        self.run(|s| {
            self.gpu.bind()?;
            ops::upload_batch(&self.gpu, s, batch)
        });
        self.take_error()
    }

    fn run_recorded(
        &self,
        ops: &mut dyn FnMut() -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        use std::sync::atomic::Ordering;
        if !self.graphs_on.load(Ordering::Relaxed) {
            return ops();
        }
        // A dry run fingerprints every launch (kernel, grid, argument
        // bytes): a recording with the same fingerprint does exactly this
        // work, so it can be replayed in its place.
        self.gpu.set_mode(device::Mode::Fingerprint);
        let dry = ops();
        self.gpu.set_mode(device::Mode::Run);
        dry?;
        let (fingerprint, capturable) = self.gpu.fingerprint();
        if !capturable {
            return ops();
        }
        let mut graphs = self.graphs.lock().expect("graphs lock");
        if let Some(g) = graphs.get(&fingerprint) {
            self.run(|_| Ok(g.0.launch()?));
            return self.take_error();
        }
        if let Some(g) = self.capture(ops)? {
            if graphs.len() >= MAX_GRAPHS {
                graphs.clear();
            }
            graphs.insert(fingerprint, g);
        }
        self.take_error()
    }

    fn embed(&self, table: &CudaWeight, tokens: &[u32], out: &mut CudaTensor) {
        out.written().rows = tokens.len();
        self.run(|s| ops::matmul::embed(self, s, table, out));
    }

    fn scale(&self, x: &mut CudaTensor, s: f32) {
        let (ptr, n) = (x.written().ptr(), x.len() as u64);
        self.run(|_| self.launch_n("scale_f32", n as usize, &mut kernel_args![ptr, s, n]));
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaWeight, eps: f32, out: &mut CudaTensor) {
        out.written().rows = x.rows;
        self.run(|_| ops::elementwise::rms_norm(self, x, None, w, eps, out, None));
    }

    fn rms_norm_inplace(&self, x: &mut CudaTensor, w: &CudaWeight, eps: f32) {
        x.written();
        self.run(|_| ops::elementwise::rms_norm(self, x, None, w, eps, x, None));
    }

    fn residual_norm(
        &self,
        x: &mut CudaTensor,
        residual: Option<&CudaTensor>,
        w: &CudaWeight,
        eps: f32,
        out: &mut CudaTensor,
        next: &CudaWeight,
    ) {
        x.written();
        out.written().rows = x.rows;
        let next = (x.cols == next.cols).then_some(next);
        self.run(|_| ops::elementwise::rms_norm(self, x, residual, w, eps, out, next));
    }

    fn matmul(&self, x: &CudaTensor, w: &CudaWeight, out: &mut CudaTensor, groups: &[RowGroup]) {
        out.written().rows = x.rows;
        self.run(|s| ops::matmul::matmul(self, s, x, w, out, groups));
    }

    fn matmul_many(
        &self,
        x: &CudaTensor,
        ws: &[&CudaWeight],
        biases: &[Option<&CudaWeight>],
        outs: &mut [&mut CudaTensor],
        groups: &[RowGroup],
    ) {
        assert!(
            ws.len() == outs.len() && ws.len() == biases.len(),
            "one output and bias per weight"
        );
        for out in outs.iter_mut() {
            out.written().rows = x.rows;
        }
        self.run(|s| ops::matmul::matmul_many(self, s, x, ws, biases, outs, groups));
    }

    fn add_bias(&self, x: &mut CudaTensor, b: &CudaWeight) {
        x.written();
        self.run(|_| ops::elementwise::add_bias(self, x, b));
    }

    fn copy_cols(&self, src: &CudaTensor, start: usize, dst: &mut CudaTensor) {
        dst.written().rows = src.rows;
        let (sp, sc, st) = (src.ptr(), src.cols as i32, start as i32);
        let (dp, dc, n) = (dst.ptr(), dst.cols as i32, dst.len() as u64);
        self.run(|_| {
            self.launch_n(
                "copy_cols",
                n as usize,
                &mut kernel_args![sp, sc, st, dp, dc, n],
            )
        });
    }

    fn rope(&self, x: &mut CudaTensor, positions: &[u32], p: &RopeParams<'_, CudaWeight>) {
        debug_assert_eq!(positions.len(), x.rows);
        x.written();
        self.run(|s| ops::elementwise::rope(self, s, x, None, None, p));
    }

    fn kv_store(
        &self,
        k: &CudaTensor,
        v: &CudaTensor,
        cache: &mut CudaKvCache,
        layer: usize,
        positions: &[u32],
        _seqs: &[SeqRows<'_>],
    ) {
        debug_assert_eq!(positions.len(), k.rows);
        self.run(|s| ops::attention::kv_store(self, s, k, v, cache, layer));
    }

    fn rope_store(
        &self,
        q: &mut CudaTensor,
        k: &mut CudaTensor,
        v: &CudaTensor,
        cache: &mut CudaKvCache,
        layer: usize,
        positions: &[u32],
        _seqs: &[SeqRows<'_>],
        p: &RopeParams<'_, CudaWeight>,
        k_heads: usize,
    ) {
        debug_assert_eq!(positions.len(), q.rows);
        debug_assert!(q.rows == k.rows && k.rows == v.rows);
        debug_assert!(k.cols == cache.k_dim && v.cols == cache.v_dim);
        q.written();
        k.written();
        let store = Some((v, &*cache, layer));
        self.run(|s| ops::elementwise::rope(self, s, q, Some((k, k_heads)), store, p));
    }

    fn attention(
        &self,
        q: &CudaTensor,
        cache: &CudaKvCache,
        layer: usize,
        positions: &[u32],
        seqs: &[SeqRows<'_>],
        p: &AttnParams,
        out: &mut CudaTensor,
    ) {
        debug_assert_eq!(positions.len(), q.rows);
        debug_assert!(!seqs.is_empty());
        out.written().rows = q.rows;
        self.run(|s| ops::attention::attention(self, s, q, cache, layer, seqs, p, out));
    }

    fn glu(
        &self,
        gate: &CudaTensor,
        up: Option<&CudaTensor>,
        act: FfnActivation,
        out: &mut CudaTensor,
        next: &CudaWeight,
    ) {
        out.written().rows = gate.rows;
        self.run(|_| ops::elementwise::glu(self, gate, up, act, out, next));
    }

    fn add(&self, x: &mut CudaTensor, y: &CudaTensor) {
        let (xp, yp, n) = (x.written().ptr(), y.ptr(), x.len() as u64);
        self.run(|_| self.launch_n("add_f32", n as usize, &mut kernel_args![xp, yp, n]));
    }

    fn gather_rows(&self, x: &CudaTensor, rows: &[usize], out: &mut CudaTensor) {
        out.written().rows = rows.len();
        self.run(|s| ops::elementwise::gather_rows(self, s, x, out));
    }

    fn softcap(&self, x: &mut CudaTensor, c: f32) {
        let (ptr, n) = (x.written().ptr(), x.len() as u64);
        self.run(|_| self.launch_n("softcap_f32", n as usize, &mut kernel_args![ptr, c, n]));
    }

    fn read(&self, t: &CudaTensor, dst: &mut [f32]) -> Result<(), ModelError> {
        let n = t.len();
        self.run(|_| self.gpu.copy_to_host(t.ptr(), &mut dst[..n]));
        self.take_error()
    }

    fn argmax(&self, t: &CudaTensor, dst: &mut [u32]) -> Result<(), ModelError> {
        let n = t.rows;
        self.run(|s| {
            let ids = ops::ensure(&self.gpu, &mut s.ids, n * 4)?;
            ops::elementwise::argmax(self, t, ids)?;
            self.gpu.copy_to_host(ids, &mut dst[..n])
        });
        self.take_error()
    }
}

impl CudaBackend {
    /// Copies `data` (whole rows) into `t` and sets its row count: how
    /// tests and tools put chosen inputs on the device.
    pub fn write(&self, t: &mut CudaTensor, data: &[f32]) -> Result<(), CudaError> {
        assert!(data.len().is_multiple_of(t.cols) && data.len() / t.cols <= t.max_rows);
        t.written().rows = data.len() / t.cols;
        self.gpu.bind()?;
        self.gpu.copy_to_device(data, &mut t.buf, 0)
    }
}
