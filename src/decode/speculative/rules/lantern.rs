//! LANTERN (arXiv 2410.03355) and LANTERN++ (arXiv 2502.06352): relaxed acceptance by pooling the
//! target's mass over a drafted token's latent neighbourhood (tokens whose VQ codebook vectors are
//! close, see [`LatentNeighbours`]).
//!
//! Construction, as in jadohu/LANTERN (`models/ea_model_llamagen.py`, sampling verification):
//! - **pooling**: for drafted `x` with neighbours `n_1, n_2, ...` (nearest first), the pooled
//!   mass is the largest prefix sum `p(n_1) + ... + p(n_m)` that does not exceed the budget, and
//!   `p~(x) = p(x) + ` that sum. LANTERN's budget is `delta` (the total-variation distance between
//!   `p` and `p` with that mass moved onto `x`); LANTERN++'s is `(lambda - 1) p(x)`, so
//!   `p~(x) <= lambda p(x)`;
//! - **acceptance**: `min(1, p~(x)/q(x))`;
//! - **residual** after rejecting `x`: `norm([p - q']+)`, where `q'` is `q` with the draft mass on
//!   `x`'s `k` neighbours zeroed when the pooling took at least one neighbour (else `q' = q`, the
//!   vanilla residual). The reference zeroes the first `k + 1` entries of a neighbour list that
//!   already excludes the token itself (an apparent off-by-one); spire zeroes the `k` neighbours.

use std::sync::Arc;

use super::{AcceptanceRule, LatentNeighbours};
use crate::acceptance::{at, positive_part_residual, ratio_acceptance};

/// The pooling shared by LANTERN and LANTERN++, for a budget chosen per drafted token.
#[derive(Clone, Debug, PartialEq)]
struct Pooling {
    neighbours: Arc<LatentNeighbours>,
}

impl Pooling {
    /// The pooled neighbour mass of `x` within `budget` and how many neighbours it took.
    fn pool(&self, p: &[f32], x: usize, budget: f32) -> (f32, usize) {
        let mut mass = 0f32;
        let mut taken = 0;
        for &n in self.neighbours.of(x) {
            let next = mass + at(p, n as usize);
            // Stops on NaN too.
            if next.partial_cmp(&budget).is_none_or(|o| o.is_gt()) {
                break;
            }
            mass = next;
            taken += 1;
        }
        (mass, taken)
    }

    fn accept(&self, p: &[f32], q: &[f32], x: usize, budget: f32) -> f32 {
        let (mass, _) = self.pool(p, x, budget);
        ratio_acceptance(at(p, x) + mass, at(q, x))
    }

    fn residual(&self, p: &[f32], q: &[f32], x: usize, budget: f32) -> Vec<f32> {
        let (_, taken) = self.pool(p, x, budget);
        let mut draft = q.to_vec();
        if taken > 0 {
            for &n in self.neighbours.of(x) {
                if let Some(v) = draft.get_mut(n as usize) {
                    *v = 0.0;
                }
            }
        }
        positive_part_residual(p, |y| at(&draft, y))
    }
}

/// LANTERN: pool neighbour mass within the total-variation budget `delta`; accept with
/// `min(1, p~(x)/q(x))`; resample as the reference implementation does (module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Lantern {
    pooling: Pooling,
    delta: f32,
}

impl Lantern {
    /// LANTERN with neighbourhoods `neighbours` and total-variation budget `delta`.
    pub fn new(neighbours: impl Into<Arc<LatentNeighbours>>, delta: f32) -> Self {
        Self { pooling: Pooling { neighbours: neighbours.into() }, delta }
    }

    /// The pooled target mass `p~(x)`.
    pub fn pooled(&self, p: &[f32], x: usize) -> f32 {
        at(p, x) + self.pooling.pool(p, x, self.delta).0
    }
}

impl AcceptanceRule for Lantern {
    fn describe(&self) -> String {
        format!("lantern (k {}, delta {})", self.pooling.neighbours.k(), self.delta)
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        self.pooling.accept(p, q, x, self.delta)
    }

    /// The vanilla residual `norm((p - q)+)` (LANTERN's residual depends on the rejected token:
    /// verification uses [`AcceptanceRule::residual_after`]).
    fn residual(&self, _depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        positive_part_residual(p, |y| at(q, y))
    }

    fn residual_after(&self, _depth: usize, p: &[f32], q: &[f32], rejected: usize) -> Vec<f32> {
        self.pooling.residual(p, q, rejected, self.delta)
    }
}

/// What LANTERN++ resamples from after a rejection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LanternResample {
    /// As the reference code: `norm([p - q']+)`, `q'` with the rejected token's pooled
    /// neighbourhood zeroed.
    #[default]
    Reference,
    /// COOL-SD's optimal `G* = norm([p - q f]+)` for LANTERN++'s acceptance `f`. As
    /// `p~ >= p`, `p - min(q, p~)` is positive exactly where `p > q`, so `G*` is the vanilla
    /// residual `norm((p - q)+)`.
    Optimal,
}

/// LANTERN++: pool neighbour mass within `(lambda - 1) p(x)`, so `p~(x) <= lambda p(x)`; accept
/// with `min(1, p~(x)/q(x))`; resample as LANTERN does, or with `G*` ([`LanternResample`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LanternPlusPlus {
    pooling: Pooling,
    lambda: f32,
    resample: LanternResample,
}

impl LanternPlusPlus {
    /// LANTERN++ with neighbourhoods `neighbours` and cap factor `lambda`, resampling as the
    /// reference code does.
    pub fn new(neighbours: impl Into<Arc<LatentNeighbours>>, lambda: f32) -> Self {
        Self { pooling: Pooling { neighbours: neighbours.into() }, lambda, resample: LanternResample::Reference }
    }

    /// The same rule resampling with `resample`.
    pub fn with_resample(self, resample: LanternResample) -> Self {
        Self { resample, ..self }
    }

    fn budget(&self, p: &[f32], x: usize) -> f32 {
        (self.lambda - 1.0) * at(p, x)
    }

    /// The pooled target mass `p~(x)`.
    pub fn pooled(&self, p: &[f32], x: usize) -> f32 {
        at(p, x) + self.pooling.pool(p, x, self.budget(p, x)).0
    }
}

impl AcceptanceRule for LanternPlusPlus {
    fn describe(&self) -> String {
        format!("lantern++ (k {}, lambda {}, {:?} resampling)", self.pooling.neighbours.k(), self.lambda, self.resample)
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        self.pooling.accept(p, q, x, self.budget(p, x))
    }

    /// The vanilla residual `norm((p - q)+)`; see [`Lantern::residual`].
    fn residual(&self, _depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        positive_part_residual(p, |y| at(q, y))
    }

    fn residual_after(&self, depth: usize, p: &[f32], q: &[f32], rejected: usize) -> Vec<f32> {
        match self.resample {
            LanternResample::Reference => self.pooling.residual(p, q, rejected, self.budget(p, rejected)),
            LanternResample::Optimal => self.residual(depth, p, q),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens 0..4 on a line at 0, 1, 2, 10: token 0's neighbours are 1, 2, 3.
    fn neighbours() -> LatentNeighbours {
        LatentNeighbours::from_codebook(&[0.0, 1.0, 2.0, 10.0], 1, 3).unwrap()
    }

    #[test]
    fn pools_the_largest_prefix_within_budget() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let lantern = Lantern::new(neighbours(), 0.25);
        assert!((lantern.pooled(&p, 0) - 0.3).abs() < 1e-6, "takes neighbour 1 (0.2), not 2");
        assert!((Lantern::new(neighbours(), 0.1).pooled(&p, 0) - 0.1).abs() < 1e-6);
        // LANTERN++ with lambda 4: budget 0.3 at token 0 -> takes neighbour 1 only.
        let pp = LanternPlusPlus::new(neighbours(), 4.0);
        assert!((pp.pooled(&p, 0) - 0.3).abs() < 1e-6);
        assert!((LanternPlusPlus::new(neighbours(), 6.1).pooled(&p, 0) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn accepts_with_pooled_ratio() {
        let (p, q) = ([0.1, 0.2, 0.3, 0.4], [0.6, 0.1, 0.1, 0.2]);
        let lantern = Lantern::new(neighbours(), 0.25);
        assert!((lantern.accept_probability(0, &p, &q, 0) - 0.5).abs() < 1e-6);
        assert_eq!(lantern.accept_probability(0, &p, &q, 9), 0.0);
    }

    #[test]
    fn residual_zeroes_draft_mass_on_pooled_neighbourhoods() {
        let (p, q) = ([0.1, 0.2, 0.3, 0.4], [0.6, 0.3, 0.05, 0.05]);
        let lantern = Lantern::new(neighbours(), 0.25);
        // Pooling took a neighbour: q' = [0.6, 0, 0, 0] -> [p - q']+ = [0, 0.2, 0.3, 0.4].
        let r = lantern.residual_after(0, &p, &q, 0);
        for (a, b) in r.iter().zip([0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0]) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
        // Budget too small to take any neighbour: the vanilla residual.
        let tight = Lantern::new(neighbours(), 0.01);
        assert_eq!(tight.residual_after(0, &p, &q, 0), tight.residual(0, &p, &q));
    }

    #[test]
    fn optimal_resampling_is_g_star() {
        // G* = norm([p - q f]+) with LANTERN++'s f, computed from its definition.
        let (p, q) = ([0.1, 0.2, 0.3, 0.4], [0.6, 0.3, 0.05, 0.05]);
        let pp = LanternPlusPlus::new(neighbours(), 4.0).with_resample(LanternResample::Optimal);
        let g_star = positive_part_residual(&p, |y| q[y] * pp.accept_probability(0, &p, &q, y));
        let optimal = pp.residual_after(0, &p, &q, 0);
        assert!(optimal.iter().zip(&g_star).all(|(a, b)| (a - b).abs() < 1e-6), "{optimal:?} vs {g_star:?}");
        assert_eq!(optimal, pp.residual(0, &p, &q), "the vanilla residual");
        assert_ne!(LanternPlusPlus::new(neighbours(), 4.0).residual_after(0, &p, &q, 0), optimal);
    }
}
