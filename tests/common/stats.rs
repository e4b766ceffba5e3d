//! Statistical helpers for distribution tests: chi-square goodness of fit, critical values,
//! random distributions and empirical TV.

use spire::sampling::Rng;
use spire::weights::synthetic::normal;

/// Pearson chi-square statistic of `counts` against `probs`, pooling cells with expected count
/// below 5 into one; returns (statistic, degrees of freedom).
pub fn chi_square(counts: &[u64], probs: &[f64]) -> (f64, usize) {
    let n: u64 = counts.iter().sum();
    let (mut stat, mut cells, mut pooled_obs, mut pooled_exp) = (0.0, 0usize, 0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let e = p * n as f64;
        if e < 5.0 {
            pooled_obs += c as f64;
            pooled_exp += e;
        } else {
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp.max(1e-9);
        cells += 1;
    }
    (stat, cells.saturating_sub(1).max(1))
}

/// Upper 1e-4 quantile of chi-square with `df` degrees of freedom (Wilson-Hilferty).
pub fn chi_square_critical(df: usize) -> f64 {
    let z = 3.719; // standard normal 1 - 1e-4 quantile
    let k = df as f64;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Whether `counts` pass the chi-square test against `probs` at level 1e-4; prints the numbers.
pub fn passes_chi_square(label: &str, counts: &[u64], probs: &[f64]) -> bool {
    let (stat, df) = chi_square(counts, probs);
    let critical = chi_square_critical(df);
    let n: u64 = counts.iter().sum();
    let tv = 0.5 * counts.iter().zip(probs).map(|(&c, &p)| (c as f64 / n as f64 - p).abs()).sum::<f64>();
    println!("{label}: chi-square {stat:.1} on {df} df (critical {critical:.1} at 1e-4), empirical TV {tv:.4}, n {n}");
    stat < critical
}

/// A random distribution over `n` outcomes with log-normal weights of spread `spread`.
pub fn random_distribution(rng: &mut Rng, n: usize, spread: f32) -> Vec<f32> {
    let w: Vec<f32> = (0..n).map(|_| (spread * normal(rng)).exp()).collect();
    let total: f32 = w.iter().sum();
    w.iter().map(|v| v / total).collect()
}
