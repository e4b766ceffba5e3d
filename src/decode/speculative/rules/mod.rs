//! Acceptance rules: when a drafted token is accepted, and what is sampled after a rejection.
//!
//! Every rule sees, for block depth `i` (0 for the first drafted token of a block), the target
//! distribution `p` and the draft distribution `q` over the vocabulary (after CFG, temperature,
//! top-k, top-p). Rules are pure arithmetic on validated input: [`super::verify`] checks
//! lengths, token ranges and finiteness (NaN is [`crate::Error::NonFiniteLogits`]) before calling
//! them. Out of range tokens get acceptance 0 and NaN ratios never accept, so a rule never panics
//! or accepts on corrupt input even when called directly.
//!
//! A drafted token `x` with `q(x) = 0` (which a correct drafter never proposes) gets the limit of
//! `min(1, target/q)` as `q -> 0+`: 1 when the rule's target mass at `x` is positive, else 0.
//! That scalar ratio and the positive-part residual live in [`crate::acceptance`], shared with
//! the device kernel's CPU twin.

mod cool;
mod lantern;
mod neighbours;
mod relaxed;
mod uniform;
mod vanilla;

pub use cool::{Cool, CoolSchedule};
pub use lantern::{Lantern, LanternPlusPlus, LanternResample};
pub use neighbours::LatentNeighbours;
pub use uniform::UniformRsd;
pub use vanilla::Vanilla;

/// A verification rule for speculative decoding.
pub trait AcceptanceRule: Send + Sync {
    /// A short description with parameters, for tables and logs.
    fn describe(&self) -> String;

    /// Probability of accepting drafted token `x` at block depth `depth`.
    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32;

    /// The (normalised) distribution sampled after a rejection at block depth `depth`, for rules
    /// whose residual does not depend on the rejected token.
    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32>;

    /// The distribution sampled after rejecting drafted token `rejected`; verification calls
    /// this. Defaults to [`AcceptanceRule::residual`]; LANTERN's residual depends on the token.
    fn residual_after(&self, depth: usize, p: &[f32], q: &[f32], rejected: usize) -> Vec<f32> {
        let _ = rejected;
        self.residual(depth, p, q)
    }

    /// The relaxation factor `omega` at block depth `depth` when the rule has the form the fused
    /// acceptance op computes (`Backend::accept_block`): accept with `min(1, omega p/q)`,
    /// resample from `norm([p - min(q, omega p)]+)`. `None` (the default) for rules it cannot
    /// express, which are verified on the host (LANTERN's neighbourhood pooling).
    fn kernel_omega(&self, depth: usize) -> Option<f32> {
        let _ = depth;
        None
    }
}
