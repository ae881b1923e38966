//! Launchers, each beside the `.cu` source of its kernels.

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod matmul;

use quarrel_model::Batch;

use crate::device::{DeviceBuffer, Gpu};
use crate::{BatchLayout, CudaError, Scratch};

/// A scratch buffer of at least `bytes` (grown by doubling, so that
/// steady-state steps allocate nothing); its address.
pub(crate) fn ensure(
    gpu: &Gpu,
    buf: &mut Option<DeviceBuffer>,
    bytes: usize,
) -> Result<u64, CudaError> {
    if buf.as_ref().is_none_or(|b| b.bytes < bytes) {
        let old = buf.as_ref().map_or(0, |b| b.bytes);
        *buf = None;
        *buf = Some(gpu.alloc(bytes.max(2 * old))?);
    }
    Ok(buf.as_ref().expect("just ensured").ptr)
}

/// Copies the batch's tokens, positions, output rows and cache slots to
/// the device in one transfer: tokens, positions, each row's offset into
/// the slots, outputs, then each sequence's slots.
pub(crate) fn upload_batch(gpu: &Gpu, s: &mut Scratch, batch: &Batch<'_>) -> Result<(), CudaError> {
    let n = batch.tokens.len();
    let h = &mut s.meta_host;
    h.clear();
    h.extend_from_slice(batch.tokens);
    h.extend_from_slice(batch.positions);
    let slots_start = 3 * n + batch.outputs.len();
    let mut offset = 0usize;
    h.resize(3 * n, 0);
    for seq in batch.seqs {
        for r in seq.rows.clone() {
            h[2 * n + r] = offset as u32;
        }
        offset += seq.slots.len();
    }
    h.extend(batch.outputs.iter().map(|&r| r as u32));
    for seq in batch.seqs {
        h.extend_from_slice(seq.slots);
    }
    s.layout = BatchLayout {
        tokens: 0,
        positions: n,
        slot_base: 2 * n,
        outputs: 3 * n,
        slots: slots_start,
    };
    ensure(gpu, &mut s.meta, h.len() * 4)?;
    gpu.copy_to_device(h, s.meta.as_mut().expect("ensured"), 0)
}

impl Scratch {
    /// Device address of the u32 at `offset` of the batch metadata.
    pub(crate) fn meta_ptr(&self, offset: usize) -> u64 {
        self.meta.as_ref().map_or(0, |m| m.ptr) + 4 * offset as u64
    }

    /// What the kernels need to find row r's cache slot,
    /// `slots[slot_base[r] + positions[r]]`: the addresses of positions,
    /// slot_base and slots.
    pub(crate) fn slot_table(&self) -> (u64, u64, u64) {
        let l = &self.layout;
        (
            self.meta_ptr(l.positions),
            self.meta_ptr(l.slot_base),
            self.meta_ptr(l.slots),
        )
    }
}
