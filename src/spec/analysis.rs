//! Exact analysis of acceptance rules on explicit distributions: the output law of one
//! verification step, and total-variation distances. Used to measure how far relaxed modes
//! move away from the target.

use crate::spec::rules::AcceptanceRule;

/// Exact output distribution of one verification step with a single draft `x ~ q` at block
/// depth `depth`: `P(y) = q(y) a(y) + (1 - sum_x q(x) a(x)) r(y)`, with `a` the rule's
/// acceptance and `r` its residual. Also returns the acceptance rate `sum_x q(x) a(x)`.
pub fn step_distribution(rule: &dyn AcceptanceRule, depth: usize, p: &[f32], q: &[f32]) -> (Vec<f64>, f64) {
    let accept: Vec<f64> = (0..p.len()).map(|x| q[x] as f64 * rule.accept_probability(depth, p, q, x) as f64).collect();
    let rate: f64 = accept.iter().sum();
    let residual = rule.residual(depth, p, q);
    let out = accept.iter().zip(&residual).map(|(&a, &r)| a + (1.0 - rate) * r as f64).collect();
    (out, rate)
}

/// Total-variation distance `0.5 * sum |a - b|`.
pub fn total_variation(a: &[f64], b: &[f64]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}
