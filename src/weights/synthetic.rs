//! Writing safetensors files, and random weights for tests, benches and `--random-tiny`.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::sampling::Rng;
use crate::weights::DType;

/// A named tensor with f32 values, to be written in some dtype.
pub struct HostTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
    }
}

/// Write `tensors` to a safetensors file at `path`, stored as `dtype`.
pub fn write_safetensors(path: &Path, tensors: &[HostTensor], dtype: DType) -> Result<()> {
    let st_dtype = match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    };
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| encode(&t.values, dtype)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorView::new(st_dtype, t.shape.clone(), b).map(|v| (t.name.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::CorruptWeights { path: path.to_path_buf(), reason: e.to_string() })?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| Error::CorruptWeights { path: path.to_path_buf(), reason: e.to_string() })
}

/// A standard normal sample (Box-Muller).
pub fn normal(rng: &mut Rng) -> f32 {
    rng.standard_normal() as f32
}

/// Random values for tensors named in `shapes`: norm weights (1-D `*norm*.weight`) near 1,
/// embeddings with unit scale, matrices scaled by `1/sqrt(fan_in)`, biases small.
pub fn random_tensors(shapes: &[(String, Vec<usize>)], seed: u64) -> Vec<HostTensor> {
    let mut rng = Rng::new(seed);
    shapes
        .iter()
        .map(|(name, shape)| {
            let len: usize = shape.iter().product();
            let (center, scale) = if name.contains("norm") && shape.len() == 1 {
                (1.0, 0.1)
            } else if name.contains("embedding") || shape.len() == 1 {
                (0.0, if shape.len() == 1 { 0.05 } else { 1.0 })
            } else {
                let fan_in: usize = shape[1..].iter().product();
                (0.0, 1.0 / (fan_in as f32).sqrt())
            };
            let values = (0..len).map(|_| center + scale * normal(&mut rng)).collect();
            HostTensor { name: name.clone(), shape: shape.clone(), values }
        })
        .collect()
}
