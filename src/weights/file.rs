//! A memory-mapped safetensors file: validated header, named tensor lookup, zero-copy views.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// Element types spire can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

/// An open, memory-mapped safetensors file whose header has been validated against its length.
pub struct WeightFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// A borrowed view of one tensor inside a [`WeightFile`].
pub struct TensorRef<'a> {
    /// Tensor name in the file.
    pub name: &'a str,
    /// File the tensor lives in (for error messages).
    pub path: &'a Path,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: &'a [usize],
    /// Raw little-endian bytes.
    pub bytes: &'a [u8],
    /// Where `bytes` lie in the file's mapping (for [`WeightFile::mapped_f32`]).
    pub range: std::ops::Range<usize>,
}

impl WeightFile {
    /// Memory-map `path` and validate its safetensors header (a truncated or corrupt file is an
    /// [`Error::CorruptWeights`] naming the file).
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the mapping is read-only; spire never writes weight files while they are mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::CorruptWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        Ok(Self { path: path.to_path_buf(), mmap, data_start: 8 + header_len, tensors })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Look up tensor `name`; a missing tensor or an unsupported dtype is an error naming both
    /// the tensor and the file.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let (key, info) = self.tensors.get_key_value(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            path: self.path.clone(),
        })?;
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::UnsupportedDtype {
                    name: name.to_string(),
                    path: self.path.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (start, end) = info.data_offsets;
        let range = self.data_start + start..self.data_start + end;
        Ok(TensorRef { name: key, path: &self.path, dtype, shape: &info.shape, bytes: &self.mmap[range.clone()], range })
    }

    /// The f32 values stored at byte `range` of the mapping (a [`TensorRef::range`]), read in
    /// place; `None` when they are not aligned little-endian f32.
    pub fn mapped_f32(&self, range: std::ops::Range<usize>) -> Option<&[f32]> {
        self.mmap.get(range).and_then(bytemuck_f32)
    }

    /// Look up tensor `name` and check that its shape is `expected`.
    pub fn tensor_with_shape(&self, name: &str, expected: &[usize]) -> Result<TensorRef<'_>> {
        let tensor = self.tensor(name)?;
        if tensor.shape != expected {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                path: self.path.clone(),
                expected: expected.to_vec(),
                found: tensor.shape.to_vec(),
            });
        }
        Ok(tensor)
    }
}

impl TensorRef<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32: borrowed straight from the mapping when the file stores aligned f32,
    /// converted otherwise.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self.dtype {
            DType::F32 => match bytemuck_f32(self.bytes) {
                Some(values) => Cow::Borrowed(values),
                None => Cow::Owned(
                    self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                ),
            },
            DType::F16 => Cow::Owned(
                self.bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            ),
            DType::BF16 => Cow::Owned(
                self.bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            ),
        }
    }
}

/// Reinterpret little-endian f32 bytes in place when the slice is suitably aligned.
fn bytemuck_f32(bytes: &[u8]) -> Option<&[f32]> {
    cfg!(target_endian = "little").then(|| bytemuck::try_cast_slice(bytes).ok()).flatten()
}
