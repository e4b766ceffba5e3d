//! The omega-relaxation shared by COOL-SD (arXiv 2601.09212) and its ablation UniformRSD.
//!
//! Relaxed acceptance with factor `omega`: `f(x) = min(1, omega p(x) / q(x))`.
//!
//! **Optimal resampling `G*`.** One relaxed step drafts `x ~ q`, accepts it with `f(x)` and
//! otherwise samples from a resampling distribution `G`, so it outputs
//! `P = q f + (1 - beta) G` with `beta = sum_x q(x) f(x)`. Write `d = p - q f`; then
//! `sum_x d(x) = 1 - beta`, hence `sum d+ = (1 - beta) + sum d-`. For any `G`,
//! `TV(P, p) = sum_x [P - p]+ = sum_x [(1 - beta) G - d]+ >= sum_{d < 0} (-d) = sum_x d-(x)`.
//! `G* = d+ / sum d+ = norm([p - q f]+)` reaches it: `(1 - beta) G* <= d+` pointwise (as
//! `1 - beta <= sum d+`) and `G* = 0` where `d <= 0`, so `[P - p]+` is `-d` on `{d < 0}` and 0
//! elsewhere. Thus `TV(P, p) = sum_x [q f - p]+ = sum_x [min(q, omega p) - p]+`, the minimum over
//! all `G`. Closed form: `p - min(q, omega p) = max(p - q, (1 - omega) p)`, so
//! `G* = norm([max(p - q, (1 - omega) p)]+)`:
//! - `omega <= 1`: `min(q, omega p) <= p`, the minimum TV is 0 and the step is exactly lossless
//!   (with acceptance lower than vanilla's);
//! - `omega >= 1`: `(1 - omega) p <= 0`, so `G* = norm((p - q)+)`, the vanilla residual, and
//!   `TV = sum_x [min(q, omega p) - p]+`, nondecreasing in `omega` and at most
//!   `min(omega - 1, TV(p, q))`.
//!
//! For a block, the TV of the joint output from the target's joint law is at most the sum over
//! positions of the expected one-step TV at the depth each position is drafted at
//! (see [`crate::decode::speculative::analysis`]), so `G*` minimises that bound term by term.

use crate::acceptance::{at, positive_part_residual, ratio_acceptance};

/// `f(x) = min(1, omega p(x)/q(x))`; a non-finite or negative `omega` never accepts.
pub(super) fn relaxed_accept(omega: f32, p: &[f32], q: &[f32], x: usize) -> f32 {
    if !(omega.is_finite() && omega >= 0.0) {
        return 0.0;
    }
    ratio_acceptance(omega * at(p, x), at(q, x))
}

/// `G* = norm([p - q f]+)` for the relaxation `omega` (see the module docs).
pub(super) fn optimal_residual(omega: f32, p: &[f32], q: &[f32]) -> Vec<f32> {
    positive_part_residual(p, |x| at(q, x) * relaxed_accept(omega, p, q, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_matches_definition() {
        let (p, q) = ([0.5, 0.3, 0.2], [0.1, 0.5, 0.4]);
        for omega in [0.3f32, 0.8, 1.0, 1.5, 3.0] {
            let g = optimal_residual(omega, &p, &q);
            let mut closed: Vec<f32> = p.iter().zip(&q).map(|(&p, &q)| (p - q).max((1.0 - omega) * p).max(0.0)).collect();
            crate::sampling::dist::normalize(&mut closed);
            for (a, b) in g.iter().zip(&closed) {
                assert!((a - b).abs() < 1e-6, "omega {omega}: {g:?} vs {closed:?}");
            }
        }
    }

    #[test]
    fn bad_omega_never_accepts() {
        assert_eq!(relaxed_accept(f32::NAN, &[0.5], &[0.5], 0), 0.0);
        assert_eq!(relaxed_accept(-1.0, &[0.5], &[0.5], 0), 0.0);
    }
}
