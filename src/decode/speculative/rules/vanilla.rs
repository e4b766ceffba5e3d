//! Lossless speculative sampling (Leviathan et al. 2023; Chen et al. 2023).

use super::AcceptanceRule;
use crate::acceptance::{at, positive_part_residual, ratio_acceptance};

/// Accept with `min(1, p(x)/q(x))`, resample from `norm((p - q)+)`: the output is distributed
/// exactly as `p`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Vanilla;

impl AcceptanceRule for Vanilla {
    fn describe(&self) -> String {
        "vanilla (lossless)".into()
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        ratio_acceptance(at(p, x), at(q, x))
    }

    fn residual(&self, _depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        positive_part_residual(p, |x| at(q, x))
    }

    fn kernel_omega(&self, _depth: usize) -> Option<f32> {
        Some(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_is_positive_part_of_p_minus_q() {
        let (p, q) = ([0.5, 0.3, 0.2], [0.2, 0.6, 0.2]);
        let r = Vanilla.residual(0, &p, &q);
        assert!((r[0] - 1.0).abs() < 1e-6 && r[1] == 0.0 && r[2] == 0.0);
        assert_eq!(Vanilla.accept_probability(0, &p, &q, 1), 0.5);
        assert_eq!(Vanilla.accept_probability(0, &p, &q, 7), 0.0);
    }

    #[test]
    fn equal_distributions_fall_back_to_p() {
        let p = [0.5, 0.5];
        assert_eq!(Vanilla.residual(0, &p, &p), p.to_vec());
    }
}
