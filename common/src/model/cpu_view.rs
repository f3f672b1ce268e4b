//! Borrowing Candle's CPU storage as plain `f32` slices for the hand-written kernels.

use candle_core::{CpuStorage, Layout, Result, Storage};

/// The contiguous `f32` data of a CPU storage; `op` and `what` name it in errors.
pub(crate) fn storage_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

/// The same for a tensor's storage, refusing non-CPU devices.
pub(crate) fn tensor_slice<'a>(
    storage: &'a Storage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => storage_slice(cpu, layout, op, "tensor"),
        _ => candle_core::bail!("{op}: this kernel runs on the CPU only"),
    }
}
