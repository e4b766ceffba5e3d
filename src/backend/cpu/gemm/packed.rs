//! Weights packed once for the GEMM kernel: the output columns in panels of [`PANEL`], each
//! panel stored as `k` consecutive rows of [`PANEL`] values (the last panel zero-padded), so the
//! kernel reads one panel as a single sequential stream and never sums across lanes. Packing
//! keeps the element type: 16-bit weights stay 16-bit (half the bytes to stream) and are widened
//! in registers, exactly.

use half::{bf16, f16};
use rayon::prelude::*;

use super::lanes::{Element, PANEL};

/// A row-major `[n, k]` weight (PyTorch `Linear` layout) in its stored precision: what
/// [`PackedMatrix::pack`] reads.
#[derive(Clone, Copy, Debug)]
pub enum WeightMatrix<'a> {
    /// Single precision.
    F32(&'a [f32]),
    /// Half precision.
    F16(&'a [f16]),
    /// bfloat16.
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
}

/// A `[n, k]` weight packed into panels for the GEMM kernel (see the module docs).
#[derive(Debug)]
pub struct PackedMatrix {
    n: usize,
    k: usize,
    values: PackedValues,
}

/// The packed values, in the weight's stored precision.
#[derive(Debug)]
pub(super) enum PackedValues {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

/// A borrowed packed matrix of one element type, as the kernel reads it.
#[derive(Clone, Copy, Debug)]
pub struct Packed<'a, T> {
    values: &'a [T],
    /// Output columns.
    pub n: usize,
    /// Inner (reduction) dimension.
    pub k: usize,
}

impl<'a, T> Packed<'a, T> {
    /// Panels of `PANEL` output columns (the last one possibly partial).
    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// Panel `p`: `k` rows of `PANEL` values.
    pub fn panel(&self, p: usize) -> &'a [T] {
        &self.values[p * PANEL * self.k..(p + 1) * PANEL * self.k]
    }
}

impl PackedMatrix {
    /// Pack `w`, a row-major `[n, k]` matrix.
    ///
    /// # Panics
    /// When `w` does not hold `n * k` values.
    pub fn pack(w: WeightMatrix<'_>, n: usize, k: usize) -> PackedMatrix {
        assert_eq!(w.len(), n * k, "packing a weight of {} values as [{n}, {k}]", w.len());
        let values = match w {
            WeightMatrix::F32(w) => PackedValues::F32(pack_panels(w, n, k)),
            WeightMatrix::F16(w) => PackedValues::F16(pack_panels(w, n, k)),
            WeightMatrix::BF16(w) => PackedValues::BF16(pack_panels(w, n, k)),
        };
        PackedMatrix { n, k, values }
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner (reduction) dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes one GEMM streams (the packed values, padding included).
    pub fn bytes(&self) -> usize {
        match &self.values {
            PackedValues::F32(v) => std::mem::size_of_val(v.as_slice()),
            PackedValues::F16(v) => std::mem::size_of_val(v.as_slice()),
            PackedValues::BF16(v) => std::mem::size_of_val(v.as_slice()),
        }
    }

    /// The packed values.
    pub(super) fn values(&self) -> &PackedValues {
        &self.values
    }

    /// The view the kernel reads, for values of element type `T`.
    pub(super) fn view<'a, T>(&self, values: &'a [T]) -> Packed<'a, T> {
        Packed { values, n: self.n, k: self.k }
    }
}

/// `w` (`[n, k]`, row-major) as panels: `panel[p][kk][j] = w[p * PANEL + j][kk]`, zero past `n`.
fn pack_panels<T: Element>(w: &[T], n: usize, k: usize) -> Vec<T> {
    let mut packed = vec![T::ZERO; n.div_ceil(PANEL) * PANEL * k];
    if k == 0 {
        return packed;
    }
    packed.par_chunks_mut(PANEL * k).zip(w.par_chunks(PANEL * k)).for_each(|(panel, columns)| {
        for (j, column) in columns.chunks_exact(k).enumerate() {
            for (kk, &v) in column.iter().enumerate() {
                panel[kk * PANEL + j] = v;
            }
        }
    });
    packed
}
