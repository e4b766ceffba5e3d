//! Bootstrap confidence intervals: statistics recomputed on resamples (with replacement) of the
//! generated set, drawn from a fixed seed so a run is reproducible; 95% normal intervals.

use crate::sampling::rng::Rng;

/// A two-sided interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Half its width: the `±` of a table.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// `count` resamples of `0..n` with replacement, from `seed`.
pub fn resamples(n: usize, count: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| (0..n).map(|_| rng.below(n)).collect()).collect()
}

/// The 97.5% quantile of the standard normal distribution.
const Z_95: f64 = 1.959_963_984_540_054;

/// The 95% normal bootstrap interval `point ± 1.96 sd(resampled)` (sample standard deviation of
/// the statistic over the resamples, at least two). Centred on the estimate: FID computed on a
/// resample (with its duplicates) is biased upwards, so its percentiles would not be.
pub fn normal_interval(point: f64, resampled: &[f64]) -> Interval {
    let n = resampled.len() as f64;
    let mean = resampled.iter().sum::<f64>() / n;
    let sd = (resampled.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    Interval { lo: point - Z_95 * sd, hi: point + Z_95 * sd }
}
