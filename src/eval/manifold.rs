//! Precision and recall of generated features against real ones with k-NN manifolds
//! (Kynkäänniemi et al., NeurIPS 2019): a set's manifold is the union of balls around its points,
//! each with the radius of its k-th nearest neighbour in the set (itself excluded). Precision is
//! the fraction of generated samples inside the real manifold (fidelity); recall the fraction of
//! real samples inside the generated manifold (coverage of the real distribution).

use rayon::prelude::*;

/// The neighbour count of the paper's default.
pub const DEFAULT_K: usize = 3;

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>().sqrt()
}

/// The distance of each point to its `k`-th nearest other point of `points`.
fn knn_radii(points: &[Vec<f32>], k: usize) -> Vec<f64> {
    points
        .par_iter()
        .map(|p| {
            let mut d: Vec<f64> = points.iter().map(|q| distance(p, q)).collect();
            // d contains the point itself at distance 0: the k-th neighbour is at index k.
            let k = k.min(d.len() - 1);
            *d.select_nth_unstable_by(k, f64::total_cmp).1
        })
        .collect()
}

/// The fraction of `samples` within the k-NN manifold of `manifold`.
fn coverage(samples: &[Vec<f32>], manifold: &[Vec<f32>], k: usize) -> f64 {
    let radii = knn_radii(manifold, k);
    let inside = samples.par_iter().filter(|s| manifold.iter().zip(&radii).any(|(m, &r)| distance(s, m) <= r)).count();
    inside as f64 / samples.len().max(1) as f64
}

/// Precision and recall of a generated set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PrecisionRecall {
    /// Generated samples inside the real manifold.
    pub precision: f64,
    /// Real samples inside the generated manifold.
    pub recall: f64,
}

/// Precision and recall of `generated` against `real` with `k`-NN manifolds (both sets need
/// more than `k` points).
pub fn precision_recall(real: &[Vec<f32>], generated: &[Vec<f32>], k: usize) -> PrecisionRecall {
    PrecisionRecall { precision: coverage(generated, real, k), recall: coverage(real, generated, k) }
}
