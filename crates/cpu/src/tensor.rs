//! CPU storage: activation matrices, weights in their block layout
//! (borrowed from the memory map), and the f16 KV cache.

use std::sync::Arc;

use half::f16;
use quarrel_gguf::{GgmlType, Storage};

/// A row-major f32 matrix with room for `data.len() / cols` rows.
pub struct CpuTensor {
    pub(crate) data: Vec<f32>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl CpuTensor {
    pub(crate) fn new(max_rows: usize, cols: usize) -> Self {
        CpuTensor {
            data: vec![0.0; max_rows * cols],
            rows: max_rows,
            cols,
        }
    }

    pub(crate) fn live(&self) -> &[f32] {
        &self.data[..self.rows * self.cols]
    }

    pub(crate) fn live_mut(&mut self) -> &mut [f32] {
        &mut self.data[..self.rows * self.cols]
    }
}

/// A weight matrix of `rows` rows of `cols` elements in block type `ty`.
pub struct CpuWeight {
    pub(crate) ty: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_bytes: usize,
    storage: Arc<Storage>,
    offset: usize,
    /// Vectors (norms, biases, rope factors) are also kept as f32.
    pub(crate) vector: Vec<f32>,
}

impl CpuWeight {
    pub(crate) fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        storage: Arc<Storage>,
        offset: usize,
    ) -> Self {
        let row_bytes = ty
            .row_bytes(cols as u64)
            .expect("validated by the GGUF reader") as usize;
        let mut w = CpuWeight {
            ty,
            rows,
            cols,
            row_bytes,
            storage,
            offset,
            vector: Vec::new(),
        };
        if rows == 1 {
            let mut v = vec![0.0; cols];
            quarrel_quant::dequantize_row(ty, w.row(0), &mut v).expect("type checked at load");
            w.vector = v;
        }
        w
    }

    pub(crate) fn row(&self, r: usize) -> &[u8] {
        self.rows_range(r..r + 1)
    }

    /// Rows `r`, back to back.
    pub(crate) fn rows_range(&self, r: std::ops::Range<usize>) -> &[u8] {
        let start = self.offset + r.start * self.row_bytes;
        &self.storage[start..start + r.len() * self.row_bytes]
    }
}

/// K and V of every layer, one f16 row per cache slot.
pub struct CpuKvCache {
    pub(crate) k: Vec<Vec<f16>>,
    pub(crate) v: Vec<Vec<f16>>,
    pub(crate) k_dim: usize,
    pub(crate) v_dim: usize,
}

impl CpuKvCache {
    pub(crate) fn new(n_layer: usize, n_slots: usize, k_dim: usize, v_dim: usize) -> Self {
        CpuKvCache {
            k: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_slots * k_dim])
                .collect(),
            v: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_slots * v_dim])
                .collect(),
            k_dim,
            v_dim,
        }
    }

    pub(crate) fn slot_bytes(n_layer: usize, k_dim: usize, v_dim: usize) -> usize {
        n_layer * (k_dim + v_dim) * std::mem::size_of::<f16>()
    }
}
