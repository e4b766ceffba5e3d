//! CPU weights: f32 values borrowed from the memory-mapped file when possible, owned otherwise.

use std::ops::Deref;
use std::sync::Arc;

use crate::weights::WeightFile;

/// An f32 weight tensor in host memory.
pub enum CpuWeight {
    /// Converted (f16/bf16 or unaligned f32) or synthetic values.
    Owned(Vec<f32>),
    /// Aligned f32 values read in place from a mapped file.
    Mapped {
        /// Keeps the mapping alive.
        file: Arc<WeightFile>,
        /// Tensor name within `file`.
        name: String,
        /// Element count.
        len: usize,
        /// Pointer to the first element inside the mapping.
        ptr: *const f32,
    },
}

// SAFETY: `Mapped` points into a read-only memory map owned by the `Arc<WeightFile>` it holds;
// the data is never mutated, so sharing across threads is sound.
unsafe impl Send for CpuWeight {}
// SAFETY: see `Send`.
unsafe impl Sync for CpuWeight {}

impl CpuWeight {
    /// True when the values are read straight from the memory map (no copy was made).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self, CpuWeight::Mapped { .. })
    }
}

impl Deref for CpuWeight {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            CpuWeight::Owned(values) => values,
            // SAFETY: ptr/len were taken from a borrowed f32 view of the mapping that `file` keeps alive.
            CpuWeight::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl std::fmt::Debug for CpuWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuWeight::Owned(v) => write!(f, "CpuWeight::Owned({} values)", v.len()),
            CpuWeight::Mapped { name, len, .. } => write!(f, "CpuWeight::Mapped({name}, {len} values)"),
        }
    }
}
