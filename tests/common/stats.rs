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

/// The standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + spire::backend::cpu::erf::erf(x / std::f64::consts::SQRT_2))
}

/// The CDF of chi-square with an even number `df` of degrees of freedom:
/// `1 - exp(-x/2) Σ_{i < df/2} (x/2)^i / i!`.
pub fn chi_square_cdf_even(x: f64, df: usize) -> f64 {
    assert!(df.is_multiple_of(2), "closed form for even degrees of freedom only");
    let half = x / 2.0;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..df / 2 {
        term *= half / i as f64;
        sum += term;
    }
    1.0 - (-half).exp() * sum
}

/// The one-sample Kolmogorov-Smirnov statistic `sup |F_n - F|` of `samples` (sorted in place)
/// against `cdf`.
pub fn ks_statistic(samples: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    samples.iter().enumerate().map(|(i, &x)| {
        let f = cdf(x);
        (f - i as f64 / n).max((i + 1) as f64 / n - f)
    }).fold(0.0, f64::max)
}

/// The asymptotic p-value of a KS statistic `d` over `n` samples (Kolmogorov's distribution with
/// Stephens' small-sample correction).
pub fn ks_p_value(d: f64, n: usize) -> f64 {
    let root = (n as f64).sqrt();
    let lambda = (root + 0.12 + 0.11 / root) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let sum: f64 = (1..=100).map(|j| (if j % 2 == 1 { 2.0 } else { -2.0 }) * (-2.0 * (j * j) as f64 * lambda * lambda).exp()).sum();
    sum.clamp(0.0, 1.0)
}

/// The KS distance a one-sample test over `n` samples at level `alpha` detects with power about
/// 0.99: the critical value plus 2.33 standard deviations of the statistic (at most `0.5/sqrt(n)`).
pub fn ks_detectable_distance(n: usize, alpha: f64) -> f64 {
    let critical = (-0.5 * (alpha / 2.0).ln()).sqrt();
    (critical + 2.33 * 0.5) / (n as f64).sqrt()
}

/// The KS test of `samples` against `cdf` at level `alpha`: prints the statistic, the p-value
/// and the detectable distance, returns `(D, p)`.
pub fn ks_test(label: &str, samples: &mut [f64], cdf: impl Fn(f64) -> f64, alpha: f64) -> (f64, f64) {
    let n = samples.len();
    let d = ks_statistic(samples, cdf);
    let p = ks_p_value(d, n);
    println!("{label}: KS D = {d:.5}, p = {p:.3} (n = {n}; level {alpha:.0e} detects a KS distance of {:.4})", ks_detectable_distance(n, alpha));
    (d, p)
}
