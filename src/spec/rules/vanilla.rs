//! Lossless speculative sampling (Leviathan et al. 2023; Chen et al. 2023).

use super::{positive_part_residual, ratio_acceptance, AcceptanceRule};

/// Accept with `min(1, p(x)/q(x))`, resample from `norm((p - q)+)`: the output is distributed
/// exactly as `p`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Vanilla;

impl AcceptanceRule for Vanilla {
    fn describe(&self) -> String {
        "vanilla (lossless)".into()
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        ratio_acceptance(p[x], q[x])
    }

    fn residual(&self, _depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        // q * min(1, p/q) = min(p, q), so this is norm((p - q)+).
        positive_part_residual(p, q, |x| ratio_acceptance(p[x], q[x]))
    }
}
