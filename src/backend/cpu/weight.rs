//! CPU weights: f32 values borrowed from the memory-mapped file when possible, owned otherwise.

use std::ops::{Deref, Range};
use std::sync::Arc;

use crate::weights::WeightFile;

/// An f32 weight tensor in host memory.
pub enum CpuWeight {
    /// Converted (f16/bf16 or unaligned f32) or synthetic values.
    Owned(Vec<f32>),
    /// Aligned f32 values read in place from a mapped file.
    Mapped {
        /// The file, which keeps the mapping alive.
        file: Arc<WeightFile>,
        /// Tensor name within `file`.
        name: String,
        /// Byte range of the values in the mapping (checked to be aligned f32 at load).
        range: Range<usize>,
    },
}

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
            CpuWeight::Mapped { file, range, .. } => file.mapped_f32(range.clone()).expect("a mapped weight's range was checked at load"),
        }
    }
}

impl std::fmt::Debug for CpuWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuWeight::Owned(v) => write!(f, "CpuWeight::Owned({} values)", v.len()),
            CpuWeight::Mapped { name, range, .. } => write!(f, "CpuWeight::Mapped({name}, {} values)", range.len() / 4),
        }
    }
}
