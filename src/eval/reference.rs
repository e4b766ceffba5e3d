//! The real-data reference of `spire eval`, shipped beside the evaluation network
//! (`eval_reference.safetensors`, written by `tools/train/train_eval_net.py`): the training
//! split's feature Gaussian (all of it), a training feature sample (the real manifold of
//! precision/recall) and a test-split feature sample with its labels (the "test split" row).
//! A fresh clone needs no dataset.

use std::path::Path;

use crate::error::{Error, Result};
use crate::weights::WeightFile;

use super::frechet::{FrechetReference, Gaussian};

/// The real-data statistics generated images are compared with.
pub struct RealReference {
    /// The training split's feature Gaussian.
    pub train: FrechetReference,
    /// Features of a sample of the training split.
    pub train_sample: Vec<Vec<f32>>,
    /// Features of a sample of the test split.
    pub test_sample: Vec<Vec<f32>>,
    /// The test sample's classes.
    pub test_labels: Vec<u32>,
}

fn rows(file: &WeightFile, name: &str, dim: usize) -> Result<Vec<Vec<f32>>> {
    let tensor = file.tensor(name)?;
    if tensor.shape.len() != 2 || tensor.shape[1] != dim {
        return Err(Error::ShapeMismatch { name: name.into(), path: file.path().into(), expected: vec![tensor.shape[0], dim], found: tensor.shape.to_vec() });
    }
    Ok(tensor.to_f32().chunks(dim).map(<[f32]>::to_vec).collect())
}

impl RealReference {
    /// Load the reference for features of width `dim`.
    pub fn load(path: &Path, dim: usize) -> Result<Self> {
        let file = WeightFile::open(path)?;
        let mean = file.tensor_with_shape("train_mean", &[dim])?.to_f32().iter().map(|&v| v as f64).collect::<Vec<_>>();
        let cov = file.tensor_with_shape("train_cov", &[dim, dim])?.to_f32().iter().map(|&v| v as f64).collect::<Vec<_>>();
        let gaussian = Gaussian { mean: mean.into(), cov: nalgebra::DMatrix::from_row_slice(dim, dim, &cov) };
        let test_sample = rows(&file, "test_sample", dim)?;
        let test_labels = file.tensor_with_shape("test_labels", &[test_sample.len()])?.to_f32().iter().map(|&v| v as u32).collect();
        Ok(Self { train: FrechetReference::new(gaussian), train_sample: rows(&file, "train_sample", dim)?, test_sample, test_labels })
    }
}
