//! COOL-SD (arXiv 2601.09212) and its constant-omega ablation UniformRSD.
//!
//! Relaxed acceptance at block depth `i`: `f_i(x) = min(1, omega_i p(x) / q(x))`.
//!
//! **Optimal resampling.** One relaxed step outputs `P = q f + (1 - beta) G`, with
//! `beta = sum_x q(x) f(x)` and `G` the resampling distribution. Let `d = p - q f`; then
//! `sum_x d(x) = 1 - beta`, so `sum d+ = (1 - beta) + sum d-`. For any `G`, on the set where
//! `d < 0` we have `P - p = (1 - beta) G - d >= d-`, hence `TV(P, p) >= sum_x d-(x)`. Choosing
//! `G* = d+ / sum d+ = norm([p - q f]+)` gives `P - p = d- - d+ (1 - (1 - beta)/sum d+)`, whose
//! positive and negative parts both sum to `sum d-`: `TV(P, p) = sum_x [min(q, omega p) - p]+`,
//! the lower bound, so `G*` is optimal. Closed form: `p - min(q, omega p) = max(p - q, (1 - omega) p)`.
//! For `omega <= 1`, `d >= 0` everywhere and the step is exactly lossless; for `omega >= 1` its
//! TV is at most `min(omega - 1, TV(p, q))`, nondecreasing in `omega`.
//!
//! **Indexing.** `i` is the 0-based depth in the draft block: the first drafted token uses
//! `omega_0 = delta * exp(-mu)`, the next `delta * exp(-nu - mu)`, and so on (generous early,
//! strict late).
//!
//! **Floor at 1.** COOL-SD's omega is floored at 1: below 1 the step is exactly lossless with
//! or without the floor (see above), and the floor only raises acceptance. Without it, the
//! paper's `nu = 0.7` makes every position past `ln(delta)/nu` stricter than lossless speculative
//! sampling, and the annealed schedule then loses to a uniform one at equal mean accepted length
//! (tests/rules_relaxed.rs measures both). UniformRSD keeps its constant omega as given.

use super::{positive_part_residual, ratio_acceptance, AcceptanceRule};

/// `f = min(1, omega p/q)` and its optimal residual, for one omega.
fn relaxed_accept(omega: f32, p: f32, q: f32) -> f32 {
    ratio_acceptance(omega * p, q)
}

fn relaxed_residual(omega: f32, p: &[f32], q: &[f32]) -> Vec<f32> {
    positive_part_residual(p, q, |x| relaxed_accept(omega, p[x], q[x]))
}

/// COOL-SD: annealed relaxation `omega_i = max(1, delta * exp(-nu * i - mu))` with the optimal
/// resampling `G*_i = norm([p - q f_i]+)`.
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
    /// `omega_i = max(1, delta * exp(-nu * i - mu))` at 0-based block depth `depth`.
    pub fn omega(&self, depth: usize) -> f32 {
        (self.delta * (-self.nu * depth as f32 - self.mu).exp()).max(1.0)
    }
}

impl AcceptanceRule for Cool {
    fn describe(&self) -> String {
        format!("cool-sd (delta {}, nu {}, mu {})", self.delta, self.nu, self.mu)
    }

    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        relaxed_accept(self.omega(depth), p[x], q[x])
    }

    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        relaxed_residual(self.omega(depth), p, q)
    }
}

/// UniformRSD: the COOL-SD relaxation and resampling with one constant `omega`.
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
        relaxed_accept(self.omega, p[x], q[x])
    }

    fn residual(&self, _depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        relaxed_residual(self.omega, p, q)
    }
}
