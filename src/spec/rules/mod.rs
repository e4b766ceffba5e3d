//! Acceptance rules: when a drafted token is accepted, and what is sampled after a rejection.
//!
//! Every rule sees, for block depth `i` (0 for the first drafted token of a block), the target
//! distribution `p` and the draft distribution `q` over the vocabulary (after CFG, temperature,
//! top-k, top-p). Rules are pure arithmetic on validated input: [`crate::spec::verify`] checks
//! lengths, token ranges and finiteness (NaN is [`crate::Error::NonFiniteLogits`]) before calling
//! them. Out of range tokens get acceptance 0 and NaN ratios never accept, so a rule never panics
//! or accepts on corrupt input even when called directly.
//!
//! A drafted token `x` with `q(x) = 0` (which a correct drafter never proposes) gets the limit of
//! `min(1, target/q)` as `q -> 0+`: 1 when the rule's target mass at `x` is positive, else 0.

mod cool;
mod lantern;
mod neighbours;
mod relaxed;
mod uniform;
mod vanilla;

pub use cool::Cool;
pub use lantern::{Lantern, LanternPlusPlus};
pub use neighbours::LatentNeighbours;
pub use uniform::UniformRsd;
pub use vanilla::Vanilla;

use crate::sampling::dist::normalize;

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
}

/// `min(1, target / draft)`; at `draft = 0` the limit (1 if `target > 0`, else 0); NaN gives 0.
pub(crate) fn ratio_acceptance(target: f32, draft: f32) -> f32 {
    let ratio = if draft.is_nan() {
        f32::NAN
    } else if draft > 0.0 {
        target / draft
    } else if target > 0.0 {
        1.0
    } else {
        0.0
    };
    if ratio >= 0.0 {
        ratio.min(1.0)
    } else {
        0.0
    }
}

/// The value at `x`, or 0 when `x` is out of range.
pub(crate) fn at(v: &[f32], x: usize) -> f32 {
    v.get(x).copied().unwrap_or(0.0)
}

/// `norm([p - m]+)`, where `m(x)` is the mass the acceptance step already emitted at `x`; falls
/// back to `p` when the positive part has no mass (then the step rejects with probability 0, so
/// any choice is exact).
pub(crate) fn positive_part_residual(p: &[f32], emitted: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut residual: Vec<f32> = p.iter().enumerate().map(|(x, &px)| (px - emitted(x)).max(0.0)).collect();
    if normalize(&mut residual) {
        residual
    } else {
        p.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_acceptance_edge_cases() {
        assert_eq!(ratio_acceptance(0.2, 0.4), 0.5);
        assert_eq!(ratio_acceptance(0.5, 0.4), 1.0);
        assert_eq!(ratio_acceptance(0.3, 0.0), 1.0);
        assert_eq!(ratio_acceptance(0.0, 0.0), 0.0);
        assert_eq!(ratio_acceptance(f32::NAN, 0.3), 0.0);
        assert_eq!(ratio_acceptance(0.3, f32::NAN), 0.0);
    }

    #[test]
    fn residual_falls_back_to_p_without_mass() {
        let p = [0.25, 0.75];
        assert_eq!(positive_part_residual(&p, |x| p[x]), p.to_vec());
        assert_eq!(positive_part_residual(&p, |x| [0.5, 0.5][x]), vec![0.0, 1.0]);
    }
}
