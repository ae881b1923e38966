//! The CPU backend. Weights are used in place from the memory map; every
//! operation runs on one persistent thread pool.

mod ops;
mod pool;
mod tensor;

use std::sync::Mutex;

use quarrel_gguf::{GgufFile, TensorInfo};
use quarrel_model::{
    AttnParams, Backend, FfnActivation, ModelError, RopeParams, RowGroup, SeqRows,
};

pub use tensor::{CpuKvCache, CpuTensor, CpuWeight};

use ops::matmul::MatmulScratch;
use pool::Pool;

pub struct CpuBackend {
    pool: Pool,
    matmul_scratch: Mutex<MatmulScratch>,
    /// Why no GPU is used, when one was looked for.
    fallback: Option<String>,
}

impl CpuBackend {
    /// `threads` 0: one per available core.
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        CpuBackend {
            pool: Pool::new(threads),
            matmul_scratch: Mutex::new(MatmulScratch::new()),
            fallback: None,
        }
    }

    /// Records why no GPU is used; [`Backend::describe`] says it.
    pub fn with_fallback_reason(mut self, reason: String) -> Self {
        self.fallback = Some(reason);
        self
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Tensor = CpuTensor;
    type KvCache = CpuKvCache;

    fn describe(&self) -> String {
        match &self.fallback {
            Some(why) => format!("cpu ({} threads; no GPU used: {why})", self.threads()),
            None => format!("cpu ({} threads)", self.threads()),
        }
    }

    fn load_weight(&self, file: &GgufFile, info: &TensorInfo) -> Result<CpuWeight, ModelError> {
        if !quarrel_quant::is_supported(info.ty) {
            return Err(ModelError::UnsupportedType {
                name: info.name.clone(),
                ty: info.ty,
            });
        }
        Ok(CpuWeight::new(
            info.ty,
            info.n_rows() as usize,
            info.row_len() as usize,
            file.storage().clone(),
            info.offset as usize,
        ))
    }

    fn new_tensor(&self, max_rows: usize, cols: usize) -> CpuTensor {
        CpuTensor::new(max_rows, cols)
    }

    fn set_rows(&self, t: &mut CpuTensor, rows: usize) {
        assert!(rows * t.cols <= t.data.len(), "tensor capacity exceeded");
        t.rows = rows;
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_slots: usize,
        k_dim: usize,
        v_dim: usize,
    ) -> CpuKvCache {
        CpuKvCache::new(n_layer, n_slots, k_dim, v_dim)
    }

    fn kv_slot_bytes(&self, n_layer: usize, k_dim: usize, v_dim: usize) -> usize {
        CpuKvCache::slot_bytes(n_layer, k_dim, v_dim)
    }

    fn prompt_kernels_min_rows(&self) -> usize {
        // llama.cpp runs a prompt of this many tokens as one batch, through
        // the tiled K-quant matmul and the repacked gemm.
        quarrel_quant::TILED_MIN_BATCH
    }

    fn embed(&self, table: &CpuWeight, tokens: &[u32], out: &mut CpuTensor) {
        out.rows = tokens.len();
        let cols = out.cols;
        self.pool.for_each_chunk(out.live_mut(), cols, |i, row| {
            quarrel_quant::dequantize_row(table.ty, table.row(tokens[i] as usize), row)
                .expect("type checked at load");
        });
    }

    fn scale(&self, x: &mut CpuTensor, s: f32) {
        x.live_mut().iter_mut().for_each(|v| *v *= s);
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuWeight, eps: f32, out: &mut CpuTensor) {
        out.rows = x.rows;
        ops::norm::rms_norm(&self.pool, x.live(), &w.vector, eps, out.live_mut());
    }

    fn rms_norm_inplace(&self, x: &mut CpuTensor, w: &CpuWeight, eps: f32) {
        ops::norm::rms_norm_inplace(&self.pool, x.live_mut(), &w.vector, eps);
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight, out: &mut CpuTensor, groups: &[RowGroup]) {
        let mut guard = self.matmul_scratch.lock().expect("matmul scratch");
        let scratch: &mut MatmulScratch = &mut guard;
        ops::matmul::matmul(&self.pool, x, w, out, groups, scratch);
    }

    fn matmul_many(
        &self,
        x: &CpuTensor,
        ws: &[&CpuWeight],
        biases: &[Option<&CpuWeight>],
        outs: &mut [&mut CpuTensor],
        groups: &[RowGroup],
    ) {
        if !ops::matmul::can_share(ws) || ws.len() != biases.len() {
            return quarrel_model::backend::matmul_each(self, x, ws, biases, outs, groups);
        }
        let mut guard = self.matmul_scratch.lock().expect("matmul scratch");
        ops::matmul::matmul_many(&self.pool, x, ws, outs, groups, &mut guard);
        for (bias, out) in biases.iter().zip(outs.iter_mut()) {
            if let Some(bias) = bias {
                self.add_bias(out, bias);
            }
        }
    }

    fn add_bias(&self, x: &mut CpuTensor, b: &CpuWeight) {
        let cols = x.cols;
        for row in x.live_mut().chunks_exact_mut(cols) {
            row.iter_mut().zip(&b.vector).for_each(|(v, b)| *v += b);
        }
    }

    fn copy_cols(&self, src: &CpuTensor, start: usize, dst: &mut CpuTensor) {
        dst.rows = src.rows;
        let cols = dst.cols;
        for (d, s) in dst
            .live_mut()
            .chunks_exact_mut(cols)
            .zip(src.live().chunks_exact(src.cols))
        {
            d.copy_from_slice(&s[start..start + cols]);
        }
    }

    fn rope(&self, x: &mut CpuTensor, positions: &[u32], p: &RopeParams<'_, CpuWeight>) {
        let cols = x.cols;
        ops::rope::rope(&self.pool, x.live_mut(), cols, positions, p);
    }

    fn kv_store(
        &self,
        k: &CpuTensor,
        v: &CpuTensor,
        cache: &mut CpuKvCache,
        layer: usize,
        positions: &[u32],
        seqs: &[SeqRows<'_>],
    ) {
        ops::attention::store_kv(k, v, cache, layer, positions, seqs);
    }

    fn attention(
        &self,
        q: &CpuTensor,
        cache: &CpuKvCache,
        layer: usize,
        positions: &[u32],
        seqs: &[SeqRows<'_>],
        p: &AttnParams,
        out: &mut CpuTensor,
    ) {
        ops::attention::attention(&self.pool, q, cache, layer, positions, seqs, p, out);
    }

    fn glu(
        &self,
        gate: &CpuTensor,
        up: Option<&CpuTensor>,
        act: FfnActivation,
        out: &mut CpuTensor,
        _next: &CpuWeight,
    ) {
        ops::activation::glu(&self.pool, gate, up, act, out);
    }

    fn add(&self, x: &mut CpuTensor, y: &CpuTensor) {
        x.live_mut()
            .iter_mut()
            .zip(y.live())
            .for_each(|(a, b)| *a += b);
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize], out: &mut CpuTensor) {
        out.rows = rows.len();
        let cols = x.cols;
        for (dst, &r) in out.live_mut().chunks_exact_mut(cols).zip(rows) {
            dst.copy_from_slice(&x.data[r * cols..(r + 1) * cols]);
        }
    }

    fn softcap(&self, x: &mut CpuTensor, c: f32) {
        x.live_mut()
            .iter_mut()
            .for_each(|v| *v = c * (*v / c).tanh());
    }

    fn read(&self, t: &CpuTensor, dst: &mut [f32]) -> Result<(), ModelError> {
        dst.copy_from_slice(t.live());
        Ok(())
    }

    fn argmax(&self, t: &CpuTensor, dst: &mut [u32]) -> Result<(), ModelError> {
        for (d, row) in dst.iter_mut().zip(t.live().chunks_exact(t.cols)) {
            *d = quarrel_model::sampler::argmax(row);
        }
        Ok(())
    }
}
