//! COOL-SD (arXiv 2601.09212): annealed relaxation with the optimal resampling `G*`.
//!
//! **Indexing.** `i` is the 0-based depth in the draft block: the first drafted token uses
//! `omega_0 = delta * exp(-mu)`, the next `delta * exp(-nu - mu)`, and so on (generous early,
//! strict late). With 1-based indexing the paper's `delta = 1.1, nu = 0.7` would put every
//! omega below 1, i.e. no relaxation at all, contradicting its reported speed-ups.
//!
//! **Floor at 1.** omega is floored at 1: below 1 the step is exactly lossless with or without the
//! floor (see [`super::relaxed`]), and the floor only raises acceptance. Without it, the paper's
//! `nu = 0.7` makes every position past `ln(delta)/nu` stricter than lossless speculative
//! sampling, and the annealed schedule then loses to a uniform one at equal mean accepted length
//! (tests/spec_relaxed.rs measures both). With the floor, `G*` coincides with `norm((p - q)+)`.

use super::relaxed::{optimal_residual, relaxed_accept};
use super::AcceptanceRule;

/// COOL-SD: `f_i = min(1, omega_i p/q)` with `omega_i = max(1, delta * exp(-nu * i - mu))` and
/// the optimal resampling `G*_i = norm([p - q f_i]+)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cool {
    /// Scale of the relaxation (the paper uses 1.1 to 2).
    pub delta: f32,
    /// Decay along the block (the paper uses 0.7).
    pub nu: f32,
    /// Offset of the exponent.
    pub mu: f32,
}

impl Cool {
    /// The paper's schedule `delta * exp(-nu * i - mu)` at 0-based block depth `depth`, unfloored.
    pub fn annealed(&self, depth: usize) -> f32 {
        self.delta * (-self.nu * depth as f32 - self.mu).exp()
    }

    /// `omega_i = max(1, delta * exp(-nu * i - mu))` at 0-based block depth `depth`.
    pub fn omega(&self, depth: usize) -> f32 {
        self.annealed(depth).max(1.0)
    }
}

impl AcceptanceRule for Cool {
    fn describe(&self) -> String {
        format!("cool-sd (delta {}, nu {}, mu {})", self.delta, self.nu, self.mu)
    }

    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        relaxed_accept(self.omega(depth), p, q, x)
    }

    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        optimal_residual(self.omega(depth), p, q)
    }

    fn kernel_omega(&self, depth: usize) -> Option<f32> {
        Some(self.omega(depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_decays_from_delta_and_is_floored() {
        let cool = Cool { delta: 2.0, nu: 0.7, mu: 0.0 };
        assert_eq!(cool.omega(0), 2.0);
        assert!((cool.annealed(1) - 2.0 * (-0.7f32).exp()).abs() < 1e-6);
        assert_eq!(cool.omega(3), 1.0);
        assert!(cool.annealed(3) < 1.0);
    }
}
