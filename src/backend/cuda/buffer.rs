//! Device memory: activation buffers, weights (f32 or bf16), the KV pool, and host-to-device
//! copies of small index arrays. CUDA cannot allocate zero bytes, so every allocation holds at
//! least one element while the types remember their logical length.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};

use crate::backend::KvShape;
use crate::error::{Error, Result};

/// Map a cudarc error to a backend error naming the operation.
pub(crate) fn cuda_error<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Backend(format!("cuda {what}: {e:?}"))
}

/// A zeroed allocation of `len` elements (at least one).
pub(crate) fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(stream: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<T>> {
    stream.alloc_zeros(len.max(1)).map_err(cuda_error("alloc"))
}

/// A device copy of `values` (one zero element when empty).
pub(crate) fn upload_slice<T: DeviceRepr + ValidAsZeroBits>(stream: &Arc<CudaStream>, values: &[T]) -> Result<CudaSlice<T>> {
    if values.is_empty() {
        return alloc_zeros(stream, 1);
    }
    stream.clone_htod(values).map_err(cuda_error("upload"))
}

/// An f32 activation buffer on the device.
pub struct CudaBuf {
    pub(crate) data: CudaSlice<f32>,
    len: usize,
}

impl CudaBuf {
    pub(crate) fn new(data: CudaSlice<f32>, len: usize) -> Self {
        Self { data, len }
    }

    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A weight tensor on the device. bf16 matrices stay bf16 (half the memory and bandwidth; GEMMs
/// run in bf16 with f32 accumulation); everything else is f32.
pub enum CudaWeight {
    /// f32 values (f32 and f16 files, vectors, synthetic weights).
    F32(CudaBuf),
    /// bf16 bit patterns of a 2-D tensor stored as bf16 in its file.
    Bf16 {
        /// The bf16 values.
        data: CudaSlice<u16>,
        /// Element count.
        len: usize,
    },
}

impl CudaWeight {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CudaWeight::F32(buf) => buf.len(),
            CudaWeight::Bf16 { len, .. } => *len,
        }
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values, or an error naming `op` for a bf16 weight (vectors are always f32).
    pub(crate) fn f32(&self, op: &str) -> Result<&CudaBuf> {
        match self {
            CudaWeight::F32(buf) => Ok(buf),
            CudaWeight::Bf16 { .. } => Err(Error::Backend(format!("cuda {op}: expects an f32 weight, got a bf16 matrix"))),
        }
    }
}

/// Keys and values of every layer in one allocation of `2 * n_layer` planes of
/// `[num_slots, n_head * head_dim]`: keys of layers `0..n_layer`, then values.
pub struct CudaKvPool {
    pub(crate) shape: KvShape,
    pub(crate) data: CudaSlice<f32>,
}

impl CudaKvPool {
    /// The pool's geometry.
    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// Elements in one plane.
    pub(crate) fn plane_len(&self) -> usize {
        self.shape.num_slots() * self.shape.row_width()
    }

    /// Element offset of the key plane (`value = false`) or value plane of `layer`.
    pub(crate) fn plane_offset(&self, layer: usize, value: bool) -> usize {
        (usize::from(value) * self.shape.n_layer + layer) * self.plane_len()
    }
}
