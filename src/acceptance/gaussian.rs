//! The acceptance maths of continuous speculative decoding (CSpD, spec §2.3-2.4) on diagonal
//! Gaussians: the log acceptance ratio `log(c p(x)/q(x))` and the acceptance-rejection sampler of
//! the residual `max(0, c p - q)/Z` with proposal `p` and bound `1/Z`, capped and ending in an
//! exact draw from `p`.

use crate::sampling::Rng;

/// `ln(2π)/2`.
const HALF_LN_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// A Gaussian with a diagonal covariance: one mean and one standard deviation per channel.
#[derive(Clone, Copy, Debug)]
pub struct DiagGaussian<'a> {
    /// Means.
    pub mean: &'a [f64],
    /// Standard deviations (positive).
    pub std: &'a [f64],
}

impl DiagGaussian<'_> {
    /// `log N(x; mean, diag(std²))`.
    pub fn log_density(&self, x: &[f64]) -> f64 {
        self.tempered_log_density(x, 1.0) - HALF_LN_TWO_PI * x.len() as f64
    }

    /// `Σ_d -((x_d - mean_d)/(std_d tau))²/2 - ln std_d`: the log density up to `ln 2π`, with the
    /// exponent flattened by `tau²` and the normalisation left alone (CSpD's tempering).
    fn tempered_log_density(&self, x: &[f64], tau: f64) -> f64 {
        x.iter().zip(self.mean).zip(self.std).map(|((&x, &m), &s)| -0.5 * ((x - m) / (s * tau)).powi(2) - s.ln()).sum()
    }

    /// One sample, a standard normal per channel from `rng`.
    pub fn draw(&self, rng: &mut Rng) -> Vec<f64> {
        self.mean.iter().zip(self.std).map(|(&m, &s)| m + s * rng.standard_normal()).collect()
    }
}

/// `log(c p(x)/q(x))` with `log c = log_factor` and both exponents divided by `tau_a²` (the
/// normalisations untempered, as the official CSpD code). With `tau_a = 1` and `c = 1` this is
/// the exact log density ratio.
pub fn log_acceptance_ratio(x: &[f64], p: DiagGaussian, q: DiagGaussian, log_factor: f64, tau_a: f64) -> f64 {
    log_factor + p.tempered_log_density(x, tau_a) - q.tempered_log_density(x, tau_a)
}

/// Accept with probability `min(1, exp(log_ratio))`: `ln u < log_ratio` for `u ~ U[0, 1)`; a NaN
/// ratio rejects.
pub fn accept(rng: &mut Rng, log_ratio: f64) -> bool {
    rng.uniform().ln() < log_ratio
}

/// The outcome of [`sample_residual`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualDraw {
    /// The sample.
    pub value: Vec<f64>,
    /// Proposals drawn (at most the cap).
    pub trials: usize,
    /// Whether every proposal was refused and the value is the cap's draw from `p`.
    pub capped: bool,
}

/// A sample of the residual `max(0, c p - q)/Z` (`log c = log_factor`) by acceptance-rejection:
/// propose `y ~ p` and keep it with probability `max(0, 1 - q(y)/(c p(y)))` (the residual over
/// `p/Z`: valid because `max(0, c p - q) <= c p`). After `max_trials` refusals the value is an
/// exact draw from `p` (`capped`): the residual can be empty when `c < 1`, so an uncapped loop need
/// not end.
pub fn sample_residual(rng: &mut Rng, p: DiagGaussian, q: DiagGaussian, log_factor: f64, max_trials: usize) -> ResidualDraw {
    for trials in 1..=max_trials {
        let y = p.draw(rng);
        let keep = -(q.log_density(&y) - p.log_density(&y) - log_factor).exp_m1();
        if rng.uniform() < keep {
            return ResidualDraw { value: y, trials, capped: false };
        }
    }
    ResidualDraw { value: p.draw(rng), trials: max_trials, capped: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_density_is_the_normal_log_density() {
        let (mean, std) = ([0.5, -1.0], [2.0, 0.25]);
        let g = DiagGaussian { mean: &mean, std: &std };
        let x = [1.5, -1.5];
        let want = -0.5 * (0.5f64.powi(2) + 2f64.powi(2)) - (2f64 * 0.25).ln() - (2.0 * std::f64::consts::PI).ln();
        assert!((g.log_density(&x) - want).abs() < 1e-14);
    }

    #[test]
    fn the_ratio_of_a_gaussian_to_itself_is_the_factor_alone() {
        let (mean, std) = ([0.3, 7.0, -2.0], [0.1, 1.0, 3.0]);
        let g = DiagGaussian { mean: &mean, std: &std };
        for tau in [1.0, 42.0] {
            assert_eq!(log_acceptance_ratio(&[1.0, 2.0, 3.0], g, g, 0.0, tau), 0.0);
            assert_eq!(log_acceptance_ratio(&[1.0, 2.0, 3.0], g, g, -1.5, tau), -1.5);
        }
    }

    #[test]
    fn tempering_flattens_the_exponent_and_keeps_the_normalisation() {
        let (p, q) = (DiagGaussian { mean: &[0.0], std: &[1.0] }, DiagGaussian { mean: &[1.0], std: &[2.0] });
        // log p(2) - log q(2) = -2 - (-1/8 - ln 2); with tau 2: -1/2 - (-1/32 - ln 2).
        assert!((log_acceptance_ratio(&[2.0], p, q, 0.0, 1.0) - (-2.0 + 0.125 + 2f64.ln())).abs() < 1e-15);
        assert!((log_acceptance_ratio(&[2.0], p, q, 0.0, 2.0) - (-0.5 + 1.0 / 32.0 + 2f64.ln())).abs() < 1e-15);
    }

    #[test]
    fn an_empty_residual_ends_in_a_capped_draw_from_p() {
        let g = DiagGaussian { mean: &[0.0], std: &[1.0] };
        let mut rng = Rng::new(1);
        // c p - q = (c - 1) p < 0 everywhere: no proposal can be kept.
        let draw = sample_residual(&mut rng, g, g, -0.1, 7);
        assert_eq!((draw.trials, draw.capped, draw.value.len()), (7, true, 1));
        assert!(draw.value[0] != 0.0, "the cap draws from p, it does not return zero");
    }
}
