//! Acceptance rules: when a drafted token is accepted, and what is sampled after a rejection.
//!
//! Every rule sees, for block depth `i` (0 for the first drafted token), the target distribution
//! `p` and the draft distribution `q` over the vocabulary (after CFG, temperature, top-k, top-p).

mod lantern;
mod relaxed;
mod vanilla;

pub use lantern::{LatentNeighbours, Lantern, LanternPlusPlus};
pub use relaxed::{Cool, UniformRsd};
pub use vanilla::Vanilla;

use crate::sampling::dist::normalize;

/// A verification rule for speculative decoding.
pub trait AcceptanceRule: Send + Sync {
    /// A short description with parameters, for tables and logs.
    fn describe(&self) -> String;
    /// Probability of accepting drafted token `x` at block depth `depth`.
    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32;
    /// The (normalised) distribution sampled after a rejection at block depth `depth`.
    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32>;
}

/// `min(1, target / draft)`, with a token the drafter cannot produce always "accepted" (it is
/// never drafted, so the value only matters for completeness).
pub(crate) fn ratio_acceptance(target: f32, draft: f32) -> f32 {
    if draft <= 0.0 {
        1.0
    } else {
        (target / draft).min(1.0)
    }
}

/// `norm([p - q * f]+)` where `f(x)` is the acceptance probability of `x`; falls back to `p` when
/// the positive part has no mass (then `q * f = p`, and any choice is exact).
pub(crate) fn positive_part_residual(p: &[f32], q: &[f32], accept: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut residual: Vec<f32> = (0..p.len()).map(|x| (p[x] - q[x] * accept(x)).max(0.0)).collect();
    if normalize(&mut residual) {
        residual
    } else {
        p.to_vec()
    }
}
