//! UniformRSD: COOL-SD's ablation baseline with one constant relaxation factor.

use super::relaxed::{optimal_residual, relaxed_accept};
use super::AcceptanceRule;

/// `f = min(1, omega p/q)` at every depth, with the optimal resampling `G* = norm([p - q f]+)`.
/// `omega` is used as given (no floor): `omega <= 1` is exactly lossless.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformRsd {
    /// The constant relaxation factor.
    pub omega: f32,
}

impl AcceptanceRule for UniformRsd {
    fn describe(&self) -> String {
        format!("uniform-rsd (omega {})", self.omega)
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        relaxed_accept(self.omega, p, q, x)
    }

    fn residual(&self, _depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        optimal_residual(self.omega, p, q)
    }

    fn kernel_omega(&self, _depth: usize) -> Option<f32> {
        Some(self.omega)
    }
}
