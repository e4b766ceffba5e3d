//! CPU weights. The values are held as loaded: f32 read in place from the memory-mapped file when
//! aligned (zero-copy), 16-bit tensors copied once in their file precision, anything else as
//! owned f32. What the ops read is derived from them once, on first use, and kept:
//! - GEMMs stream a [`PackedMatrix`] (panels for the SIMD kernel, same precision: 16-bit weights
//!   stay 16-bit, half the bytes, widened exactly in registers), packed on the weight's first
//!   `linear`, never per call. Packing waits for that call because only it says a tensor is a
//!   GEMM weight: embedding tables are 2-D too, and packing them would double their memory.
//! - Row-wise ops (embedding lookups, norms) read f32 values: the mapping itself for f32, a
//!   widened copy made on first use for 16-bit tensors.

use std::ops::{Deref, Range};
use std::sync::{Arc, OnceLock};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::gemm::{PackedMatrix, WeightMatrix};
use crate::error::{Error, Result};
use crate::weights::{DType, TensorRef, WeightFile};

/// A weight tensor in host memory.
pub struct CpuWeight {
    stored: Stored,
    /// f32 values of a 16-bit tensor, for the row-wise ops (filled on first use).
    widened: OnceLock<Vec<f32>>,
    /// The values packed for GEMMs (filled by the first `linear`).
    packed: OnceLock<PackedMatrix>,
}

/// How a weight's values are held.
enum Stored {
    /// f32 values owned by the weight (synthetic, or unaligned in the file).
    Owned(Vec<f32>),
    /// Aligned f32 values read in place from a mapped file (no copy).
    Mapped {
        /// The file, which keeps the mapping alive.
        file: Arc<WeightFile>,
        /// Tensor name within `file`.
        name: String,
        /// Byte range of the values in the mapping (checked to be aligned f32 at load).
        range: Range<usize>,
    },
    /// Half-precision values copied once from the file, as stored there.
    F16(Vec<f16>),
    /// bfloat16 values copied once from the file, as stored there.
    BF16(Vec<bf16>),
}

impl CpuWeight {
    /// The tensor `tensor` of `file`: borrowed in place when it is aligned f32, copied once in
    /// its own precision otherwise.
    pub fn from_tensor(file: &Arc<WeightFile>, tensor: &TensorRef<'_>) -> CpuWeight {
        let stored = match tensor.dtype {
            DType::F32 if file.mapped_f32(tensor.range.clone()).is_some() => {
                Stored::Mapped { file: Arc::clone(file), name: tensor.name.to_string(), range: tensor.range.clone() }
            }
            DType::F32 => Stored::Owned(tensor.to_f32().into_owned()),
            DType::F16 => Stored::F16(from_le_pairs(tensor.bytes, f16::from_le_bytes)),
            DType::BF16 => Stored::BF16(from_le_pairs(tensor.bytes, bf16::from_le_bytes)),
        };
        CpuWeight::new(stored)
    }

    /// A weight owning `values`.
    pub fn owned(values: Vec<f32>) -> CpuWeight {
        CpuWeight::new(Stored::Owned(values))
    }

    fn new(stored: Stored) -> CpuWeight {
        CpuWeight { stored, widened: OnceLock::new(), packed: OnceLock::new() }
    }

    /// True when the values are read straight from the memory map (no copy was made at load):
    /// the f32 the row-wise ops read is the mapping itself. A GEMM weight also gets one packed
    /// copy, on its first `linear` ([`CpuWeight::packed`]).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.stored, Stored::Mapped { .. })
    }

    /// The weight packed for GEMMs as `[n, k]`: packed on the first call, then the same packing
    /// every time; a call with another shape is an error.
    pub fn packed(&self, n: usize, k: usize) -> Result<&PackedMatrix> {
        let packed = self.packed.get_or_init(|| PackedMatrix::pack(self.matrix(), n, k));
        if (packed.n(), packed.k()) != (n, k) {
            return Err(Error::Backend(format!("a weight packed as [{}, {}] used as [{n}, {k}]", packed.n(), packed.k())));
        }
        Ok(packed)
    }

    /// The values as loaded, in their stored precision.
    pub fn matrix(&self) -> WeightMatrix<'_> {
        match &self.stored {
            Stored::F16(values) => WeightMatrix::F16(values),
            Stored::BF16(values) => WeightMatrix::BF16(values),
            Stored::Owned(_) | Stored::Mapped { .. } => WeightMatrix::F32(self),
        }
    }
}

/// Little-endian 2-byte values.
fn from_le_pairs<T>(bytes: &[u8], from_le: fn([u8; 2]) -> T) -> Vec<T> {
    bytes.chunks_exact(2).map(|b| from_le([b[0], b[1]])).collect()
}

impl Deref for CpuWeight {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.stored {
            Stored::Owned(values) => values,
            Stored::Mapped { file, range, .. } => file.mapped_f32(range.clone()).expect("a mapped weight's range was checked at load"),
            Stored::F16(values) => self.widened.get_or_init(|| values.to_f32_vec()),
            Stored::BF16(values) => self.widened.get_or_init(|| values.to_f32_vec()),
        }
    }
}

impl std::fmt::Debug for CpuWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.stored {
            Stored::Owned(v) => write!(f, "CpuWeight::Owned({} values)", v.len()),
            Stored::Mapped { name, range, .. } => write!(f, "CpuWeight::Mapped({name}, {} values)", range.len() / 4),
            Stored::F16(v) => write!(f, "CpuWeight::F16({} values)", v.len()),
            Stored::BF16(v) => write!(f, "CpuWeight::BF16({} values)", v.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::CpuWeight;
    use crate::backend::cpu::gemm::WeightMatrix;
    use crate::weights::synthetic::{write_safetensors, HostTensor};
    use crate::weights::{DType, WeightFile};

    #[test]
    fn weights_keep_their_file_precision_and_are_packed_once() {
        let dir = std::env::temp_dir().join(format!("spire-cpu-weight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.25 - 1.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let path = dir.join(format!("{dtype:?}.safetensors"));
            write_safetensors(&path, &[HostTensor { name: "w".into(), shape: vec![3, 5], values: values.clone() }], dtype).unwrap();
            let file = Arc::new(WeightFile::open(&path).unwrap());
            let weight = CpuWeight::from_tensor(&file, &file.tensor("w").unwrap());
            let kept = matches!(
                (dtype, weight.matrix()),
                (DType::F32, WeightMatrix::F32(_)) | (DType::F16, WeightMatrix::F16(_)) | (DType::BF16, WeightMatrix::BF16(_))
            );
            assert!(kept, "{dtype:?} stored as {:?}", weight.matrix());
            // These values are exact in every precision, so the row-wise view is them.
            assert_eq!(&*weight, values.as_slice(), "{dtype:?}");
            let first: *const _ = weight.packed(3, 5).unwrap();
            let second: *const _ = weight.packed(3, 5).unwrap();
            assert_eq!(first, second, "{dtype:?} packed twice");
            assert!(weight.packed(5, 3).is_err(), "{dtype:?}: another shape must not reuse the packing");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
