//! The acceptance maths of speculative decoding, on plain numbers: the scalar acceptance ratio,
//! the positive-part residual, how sibling drafts are drawn without replacement, and the
//! continuous (diagonal Gaussian) ratio and residual sampler of CSpD ([`gaussian`]).
//!
//! Every layer may use it: the host acceptance rules (`decode::speculative::rules`), the host
//! verifier and the device kernel's CPU twin (`backend::cpu::accept`). It depends on
//! nothing but [`crate::sampling`]'s probability helpers and RNG.

pub mod gaussian;
mod siblings;

pub use siblings::sample_children;
pub(crate) use siblings::SiblingPool;

use crate::sampling::dist::normalize;

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
