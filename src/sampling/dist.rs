//! Probability-vector helpers shared by sampling and speculative verification.

use crate::sampling::rng::Rng;

/// Softmax of `logits` in f64 accumulation, written into a new vector of probabilities.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

/// Draw an index from the (not necessarily normalised) non-negative weights `weights`
/// by inverse CDF with one uniform `u` in [0, 1). Returns the last positive index if rounding
/// leaves `u` beyond the total.
pub fn sample_with_uniform(weights: &[f32], u: f64) -> usize {
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    let target = u * total;
    let mut acc = 0.0f64;
    let mut last_positive = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            acc += w as f64;
            last_positive = i;
            if target < acc {
                return i;
            }
        }
    }
    last_positive
}

/// Draw an index from non-negative weights with the generator `rng`.
pub fn sample(weights: &[f32], rng: &mut Rng) -> usize {
    sample_with_uniform(weights, rng.uniform())
}

/// Scale non-negative weights in place so they sum to one. Returns `false` (and leaves the
/// weights untouched) when they sum to zero.
pub fn normalize(weights: &mut [f32]) -> bool {
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    if total <= 0.0 {
        return false;
    }
    for w in weights.iter_mut() {
        *w = (*w as f64 / total) as f32;
    }
    true
}
