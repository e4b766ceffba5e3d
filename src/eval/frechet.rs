//! The Fréchet distance between Gaussians fitted to feature sets: FID in the evaluation
//! network's feature space.
//!
//! `d² = |m1 - m2|² + tr S1 + tr S2 - 2 tr sqrt(S1^½ S2 S1^½)`: the trace term is computed from
//! the eigenvalues of the symmetric positive semi-definite `S1^½ S2 S1^½` (negative round-off
//! clamped to 0), which is stable where `sqrtm(S1 S2)` of a non-symmetric product is not.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and unbiased covariance of a feature set.
#[derive(Clone, Debug)]
pub struct Gaussian {
    /// Mean feature.
    pub mean: DVector<f64>,
    /// Covariance (normalised by `n - 1`).
    pub cov: DMatrix<f64>,
}

impl Gaussian {
    /// Fit the rows `features` (at least two, all of one width).
    pub fn fit(features: &[&[f32]]) -> Self {
        let n = features.len();
        let dim = features.first().map_or(0, |row| row.len());
        let mut mean = DVector::zeros(dim);
        for row in features {
            mean += DVector::from_iterator(dim, row.iter().map(|&v| v as f64));
        }
        mean /= n as f64;
        let mut centred = DMatrix::zeros(dim, n);
        for (j, row) in features.iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                centred[(i, j)] = v as f64 - mean[i];
            }
        }
        let cov = &centred * centred.transpose() / (n.max(2) - 1) as f64;
        Self { mean, cov }
    }
}

/// The symmetric square root of a positive semi-definite matrix.
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m.clone());
    let roots = eigen.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// A reference Gaussian with its covariance's square root precomputed, for many distances.
#[derive(Clone, Debug)]
pub struct FrechetReference {
    gaussian: Gaussian,
    cov_sqrt: DMatrix<f64>,
}

impl FrechetReference {
    /// Prepare `gaussian` as the reference.
    pub fn new(gaussian: Gaussian) -> Self {
        let cov_sqrt = psd_sqrt(&gaussian.cov);
        Self { gaussian, cov_sqrt }
    }

    /// The squared Fréchet distance of `other` from the reference.
    pub fn distance(&self, other: &Gaussian) -> f64 {
        let (m1, s1) = (&self.gaussian.mean, &self.gaussian.cov);
        let inner = &self.cov_sqrt * &other.cov * &self.cov_sqrt;
        let inner = (&inner + inner.transpose()) * 0.5;
        let trace_sqrt: f64 = SymmetricEigen::new(inner).eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
        (m1 - &other.mean).norm_squared() + s1.trace() + other.cov.trace() - 2.0 * trace_sqrt
    }
}
