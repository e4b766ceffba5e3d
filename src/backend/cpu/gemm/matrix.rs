//! The weight matrix a GEMM streams, in the element type it was stored in.

use half::{bf16, f16};

/// A row-major `[n, k]` weight (PyTorch `Linear` layout), borrowed in its stored precision.
#[derive(Clone, Copy, Debug)]
pub enum WeightMatrix<'a> {
    /// Single precision.
    F32(&'a [f32]),
    /// Half precision, widened to f32 as it is loaded into registers.
    F16(&'a [f16]),
    /// bfloat16, widened to f32 as it is loaded into registers.
    BF16(&'a [bf16]),
}

impl WeightMatrix<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightMatrix::F32(w) => w.len(),
            WeightMatrix::F16(w) => w.len(),
            WeightMatrix::BF16(w) => w.len(),
        }
    }

    /// True for a matrix with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the matrix occupies (what one GEMM over it streams from memory).
    pub fn bytes(&self) -> usize {
        match self {
            WeightMatrix::F32(w) => std::mem::size_of_val(*w),
            WeightMatrix::F16(w) => std::mem::size_of_val(*w),
            WeightMatrix::BF16(w) => std::mem::size_of_val(*w),
        }
    }
}
