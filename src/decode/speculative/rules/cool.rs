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
//!
//! **Schedules** ([`CoolSchedule`]): `Floored` (the default) as above; `Literal`, the paper's
//! `delta * exp(-nu * i - mu)` unfloored; `Normalised`, the literal shape with `mu` chosen so the
//! factors average `delta` over the block: `exp(-mu) = L / sum_{i<L} exp(-nu * i)` for a block
//! of depth `L` (the `mu` flag is then ignored). `spire eval` measures the three on the demo
//! (weights/demo/README.md).

use super::relaxed::{optimal_residual, relaxed_accept};
use super::AcceptanceRule;

/// How COOL-SD's factors `omega_i` follow from `delta`, `nu` and `mu` (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoolSchedule {
    /// `max(1, delta * exp(-nu * i - mu))`.
    #[default]
    Floored,
    /// `delta * exp(-nu * i - mu)`.
    Literal,
    /// `delta * exp(-nu * i) * L / sum_{j<L} exp(-nu * j)`: mean `delta` over a block of depth `L`.
    Normalised,
}

/// COOL-SD: `f_i = min(1, omega_i p/q)` with `omega_i` from `schedule` (by default
/// `max(1, delta * exp(-nu * i - mu))`) and the optimal resampling `G*_i = norm([p - q f_i]+)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cool {
    /// Scale of the relaxation (the paper uses 1.1 to 2).
    pub delta: f32,
    /// Decay along the block (the paper uses 0.7).
    pub nu: f32,
    /// Offset of the exponent.
    pub mu: f32,
    /// The schedule's form.
    pub schedule: CoolSchedule,
    /// Depth `L` of the draft block (used by [`CoolSchedule::Normalised`]).
    pub block_depth: usize,
}

impl Cool {
    /// The default (floored) schedule of `delta`, `nu` and `mu`.
    pub fn floored(delta: f32, nu: f32, mu: f32) -> Self {
        Self { delta, nu, mu, schedule: CoolSchedule::Floored, block_depth: 1 }
    }

    /// The paper's schedule `delta * exp(-nu * i - mu)` at 0-based block depth `depth`, unfloored.
    pub fn annealed(&self, depth: usize) -> f32 {
        self.delta * (-self.nu * depth as f32 - self.mu).exp()
    }

    /// `omega_i` at 0-based block depth `depth` under the rule's schedule.
    pub fn omega(&self, depth: usize) -> f32 {
        match self.schedule {
            CoolSchedule::Floored => self.annealed(depth).max(1.0),
            CoolSchedule::Literal => self.annealed(depth),
            CoolSchedule::Normalised => {
                let depths = self.block_depth.max(1);
                let sum: f32 = (0..depths).map(|i| (-self.nu * i as f32).exp()).sum();
                self.delta * (-self.nu * depth as f32).exp() * depths as f32 / sum
            }
        }
    }
}

impl AcceptanceRule for Cool {
    fn describe(&self) -> String {
        format!("cool-sd (delta {}, nu {}, mu {}, {:?} schedule)", self.delta, self.nu, self.mu, self.schedule)
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
        let cool = Cool::floored(2.0, 0.7, 0.0);
        assert_eq!(cool.omega(0), 2.0);
        assert!((cool.annealed(1) - 2.0 * (-0.7f32).exp()).abs() < 1e-6);
        assert_eq!(cool.omega(3), 1.0);
        assert!(cool.annealed(3) < 1.0);
        let literal = Cool { schedule: CoolSchedule::Literal, ..cool };
        assert_eq!(literal.omega(3), cool.annealed(3));
    }

    #[test]
    fn normalised_schedule_averages_delta_over_the_block() {
        let cool = Cool { schedule: CoolSchedule::Normalised, block_depth: 4, mu: 5.0, ..Cool::floored(1.5, 0.7, 0.0) };
        let mean = (0..4).map(|i| cool.omega(i)).sum::<f32>() / 4.0;
        assert!((mean - 1.5).abs() < 1e-5, "{mean}");
        assert!((cool.omega(1) / cool.omega(0) - (-0.7f32).exp()).abs() < 1e-6);
    }
}
