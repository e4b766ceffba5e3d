//! One drafted token against the target: the two final-step Gaussians and path statistics read
//! off the models' head runs, the CSpD acceptance test in log space and, on rejection, the
//! residual sample from the target's cached final Gaussian (spec §2.3-2.4).

use crate::acceptance::gaussian::{accept, log_acceptance_ratio, sample_residual, DiagGaussian};
use crate::decode::cspd::options::{CspdOptions, FinalStep};
use crate::model::diffusion::HeadSample;
use crate::sampling::Rng;

/// What one model's head run says about one token: its final-step Gaussian
/// `N(μ_0, (σ_0 τ_s)²)` and `Σ_{k≥1} log σ_k` per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLaw {
    /// `μ_0`.
    pub mean: Vec<f64>,
    /// `σ_0 τ_s`.
    pub std: Vec<f64>,
    /// `Σ_{k=1}^{K-1} log σ_k` (without τ_s, which cancels between the models).
    pub sum_log_sigma: Vec<f64>,
}

impl TokenLaw {
    /// Row `row` of `sample` (tokens of `c` channels) at temperature `temperature`.
    pub fn of(sample: &HeadSample, row: usize, c: usize, temperature: f64) -> Self {
        let at = row * c..(row + 1) * c;
        Self {
            mean: sample.mu0[at.clone()].to_vec(),
            std: sample.sigma0[at.clone()].iter().map(|s| s * temperature).collect(),
            sum_log_sigma: sample.sum_log_sigma[at].to_vec(),
        }
    }

    /// The final-step Gaussian.
    pub fn gaussian(&self) -> DiagGaussian<'_> {
        DiagGaussian { mean: &self.mean, std: &self.std }
    }

    /// The token this law gives with the position's final-step noise `eps0` (`[C]`).
    pub fn token(&self, eps0: &[f32], final_step: FinalStep) -> Vec<f64> {
        match final_step {
            FinalStep::Deterministic => self.mean.clone(),
            FinalStep::Stochastic => self.mean.iter().zip(&self.std).zip(eps0).map(|((m, s), &e)| m + s * e as f64).collect(),
        }
    }
}

/// What became of one verified drafted token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Its position.
    pub position: usize,
    /// `log r̃`: the variance factor's log plus the tempered final-step log ratio.
    pub log_ratio: f64,
    /// Whether the draft was kept.
    pub accepted: bool,
    /// Residual proposals drawn (0 when accepted).
    pub trials: usize,
    /// Whether the residual hit the cap (the token is then a draw from the target's final
    /// Gaussian).
    pub capped: bool,
}

/// Verify the drafted token `x` at `position` against `target`'s law, `draft`'s being the one
/// that drew it: accept with probability `min(1, r̃)`, else replace it with a sample of the
/// residual `max(0, c p - q)/Z` (`c` the variance factor, untempered). Returns the token kept and
/// the verdict.
pub fn verify_token(rng: &mut Rng, position: usize, x: &[f64], target: &TokenLaw, draft: &TokenLaw, options: &CspdOptions) -> (Vec<f64>, Verdict) {
    let log_factor = options.variance_factor.log_factor(&target.sum_log_sigma, &draft.sum_log_sigma);
    let log_ratio = log_acceptance_ratio(x, target.gaussian(), draft.gaussian(), log_factor, options.tau_a);
    if accept(rng, log_ratio) {
        return (x.to_vec(), Verdict { position, log_ratio, accepted: true, trials: 0, capped: false });
    }
    let residual = sample_residual(rng, target.gaussian(), draft.gaussian(), log_factor, options.max_resample_trials);
    (residual.value, Verdict { position, log_ratio, accepted: false, trials: residual.trials, capped: residual.capped })
}
