//! PyTorch modules with a bias, loaded by their official names and run on a backend:
//! `nn.Linear` and the affine `nn.LayerNorm` (the continuous-token models use both everywhere).

use std::sync::Arc;

use crate::backend::Backend;
use crate::error::Result;
use crate::weights::WeightFile;

/// `nn.Linear(in_dim, out_dim)`: `name.weight [out_dim, in_dim]`, `name.bias [out_dim]`.
pub struct Linear<B: Backend> {
    weight: B::Weight,
    bias: B::Weight,
    in_dim: usize,
    out_dim: usize,
}

impl<B: Backend> Linear<B> {
    /// Load `name.weight` and `name.bias`, checking their shapes.
    pub fn load(backend: &B, file: &Arc<WeightFile>, name: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: backend.load_weight(file, &format!("{name}.weight"), &[out_dim, in_dim])?,
            bias: backend.load_weight(file, &format!("{name}.bias"), &[out_dim])?,
            in_dim,
            out_dim,
        })
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `out = x · weightᵀ + bias` for `rows` rows (`out` is resized to `[rows, out_dim]`).
    pub fn forward(&self, backend: &B, x: &B::Buf, rows: usize, out: &mut B::Buf) -> Result<()> {
        backend.resize(out, rows * self.out_dim)?;
        backend.linear(x, &self.weight, rows, self.in_dim, self.out_dim, out)?;
        backend.add_bias(out, &self.bias, self.out_dim)
    }
}

/// An affine `nn.LayerNorm(dim, eps)`: `name.weight [dim]`, `name.bias [dim]`.
pub struct LayerNorm<B: Backend> {
    weight: B::Weight,
    bias: B::Weight,
    dim: usize,
    eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    /// Load `name.weight` and `name.bias`, checking their shapes.
    pub fn load(backend: &B, file: &Arc<WeightFile>, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: backend.load_weight(file, &format!("{name}.weight"), &[dim])?,
            bias: backend.load_weight(file, &format!("{name}.bias"), &[dim])?,
            dim,
            eps: eps as f32,
        })
    }

    /// Normalise `rows` rows of `x` into `out` (resized to `[rows, dim]`).
    pub fn forward(&self, backend: &B, x: &B::Buf, rows: usize, out: &mut B::Buf) -> Result<()> {
        backend.resize(out, rows * self.dim)?;
        backend.layer_norm(x, Some((&self.weight, &self.bias)), self.eps, self.dim, out)
    }
}
