//! The settings of continuous speculative decoding, with the paper's choices as defaults and
//! the official code's as a preset: where the two differ (spec §2.7, tools/README.md), each
//! difference is an explicit option.

use crate::error::{Error, Result};

/// How the target verifies a window of drafted steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// The paper (Leviathan et al.): the target conditions each drafted step on the prefix and
    /// the drafts before it (one sequence per step in the pass), steps are verified in order, the
    /// first step with a rejected token is corrected and every later draft is discarded; when
    /// all are accepted, the pass's extra sequence gives the next step (the bonus).
    LeviathanRollback,
    /// The official code: the target predicts every position of the window from the verified
    /// prefix only (one MAR pass), each position is accepted or resampled independently and
    /// nothing is discarded (exact marginals, not an exact joint: spec §5, S5).
    MarWindow,
}

/// The direction of the variance-product factor over the diffusion steps `k = 1..K-1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceFactor {
    /// `∏ σ^q_k/σ^p_k` (draft over target): the ratio of the two aligned path densities.
    Paper,
    /// `∏ σ^p_k/σ^q_k` (target over draft): the official code's inverse.
    Code,
}

/// How a token is read off the diffusion head's final step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalStep {
    /// `x_0 = μ_0 + σ_0 τ_s ε_0` with `ε_0` the position's unused step-0 noise: the token is a
    /// sample of the final Gaussian the rule scores (the paper's model).
    Stochastic,
    /// `x_0 = μ_0`, as MAR's sampler (and the official code): the rule still scores
    /// `N(x; μ_0, (σ_0 τ_s)²)`.
    Deterministic,
}

/// The guidance scale of the target's window pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowCfg {
    /// Each position with the scale of the step that drafted it.
    PerPosition,
    /// Every position with the scale of the window's last drafted step (the official code).
    LastStep,
}

/// `parse` and `name` for an option enum from its values' snake_case names.
macro_rules! named_values {
    ($ty:ident, $option:literal, [$(($name:literal, $value:ident)),* $(,)?]) => {
        impl $ty {
            /// Every value with its name.
            const VALUES: &'static [(&'static str, $ty)] = &[$(($name, $ty::$value)),*];

            /// The value named `name` (the option's snake_case spelling).
            pub fn parse(name: &str) -> Result<Self> {
                Self::VALUES.iter().find(|(n, _)| *n == name).map(|&(_, v)| v).ok_or_else(|| {
                    let names: Vec<String> = Self::VALUES.iter().map(|(n, _)| format!("{n:?}")).collect();
                    Error::InvalidRequest(format!("unknown {} {name:?}; use {}", $option, names.join(" or ")))
                })
            }

            /// This value's name.
            pub fn name(self) -> &'static str {
                Self::VALUES.iter().find(|(_, v)| *v == self).map_or("?", |(n, _)| n)
            }
        }
    };
}

named_values!(VerifyMode, "verify mode", [("leviathan_rollback", LeviathanRollback), ("mar_window", MarWindow)]);
named_values!(VarianceFactor, "variance factor", [("paper", Paper), ("code", Code)]);
named_values!(FinalStep, "final step", [("stochastic", Stochastic), ("deterministic", Deterministic)]);
named_values!(WindowCfg, "window cfg", [("per_position", PerPosition), ("last_step", LastStep)]);

impl VarianceFactor {
    /// `log` of the factor for one token from the two models' `Σ_{k≥1} log σ_k` per channel.
    pub fn log_factor(self, target_sum_log_sigma: &[f64], draft_sum_log_sigma: &[f64]) -> f64 {
        let draft_over_target: f64 = draft_sum_log_sigma.iter().zip(target_sum_log_sigma).map(|(q, p)| q - p).sum();
        match self {
            VarianceFactor::Paper => draft_over_target,
            VarianceFactor::Code => -draft_over_target,
        }
    }
}

/// The settings of one CSpD generation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CspdOptions {
    /// Drafted steps per target verification (γ).
    pub gamma: usize,
    /// Pre-fill ratio ρ: steps `s <= ρ N` are the target's alone (as the official code: at
    /// least step 0; 1 means plain target generation).
    pub prefill_ratio: f64,
    /// How a window is verified.
    pub verify: VerifyMode,
    /// The variance-product factor's direction.
    pub variance_factor: VarianceFactor,
    /// Tempering of the acceptance exponent (τ_a: 1 in the paper, 42 in the code).
    pub tau_a: f64,
    /// How tokens are read off the head's final step.
    pub final_step: FinalStep,
    /// Proposals of the residual sampler before its exact draw from the target's final Gaussian.
    pub max_resample_trials: usize,
    /// The guidance scale of the window pass.
    pub window_cfg: WindowCfg,
}

impl Default for CspdOptions {
    /// The paper: teacher-forced target with rollback, draft-over-target variance factor,
    /// τ_a = 1, stochastic final step, each position's own guidance; γ = 8, ρ = 5 %, at most 100
    /// residual proposals.
    fn default() -> Self {
        Self {
            gamma: 8,
            prefill_ratio: 0.05,
            verify: VerifyMode::LeviathanRollback,
            variance_factor: VarianceFactor::Paper,
            tau_a: 1.0,
            final_step: FinalStep::Stochastic,
            max_resample_trials: 100,
            window_cfg: WindowCfg::PerPosition,
        }
    }
}

impl CspdOptions {
    /// The official code's behaviour (its demo notebook: γ = 4, ρ = 5 %): prefix-only window,
    /// target-over-draft factor, τ_a = 42, deterministic final step, the last step's guidance
    /// for the window, 100 residual proposals; where the code sets a capped token to zero, spire
    /// still draws it from the target.
    pub fn official_code() -> Self {
        Self {
            gamma: 4,
            verify: VerifyMode::MarWindow,
            variance_factor: VarianceFactor::Code,
            tau_a: 42.0,
            final_step: FinalStep::Deterministic,
            window_cfg: WindowCfg::LastStep,
            ..Self::default()
        }
    }

    /// Error unless the settings can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidRequest(what));
        if self.gamma == 0 {
            return bad("CSpD gamma (drafted steps per verification) must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.prefill_ratio) {
            return bad(format!("CSpD prefill ratio {} must be between 0 and 1", self.prefill_ratio));
        }
        if !(self.tau_a.is_finite() && self.tau_a > 0.0) {
            return bad(format!("CSpD tau_a {} must be positive (1 = the paper, 42 = the official code)", self.tau_a));
        }
        if self.max_resample_trials == 0 {
            return bad("CSpD max resample trials must be at least 1 (the residual can be empty: a cap is needed)".into());
        }
        Ok(())
    }

    /// Steps the target generates alone before drafting starts: the steps `s <= ρ N` of `N`.
    pub fn prefill_steps(&self, num_iter: usize) -> usize {
        ((self.prefill_ratio * num_iter as f64).floor() as usize + 1).min(num_iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for mode in [VerifyMode::LeviathanRollback, VerifyMode::MarWindow] {
            assert_eq!(VerifyMode::parse(mode.name()).unwrap(), mode);
        }
        assert_eq!(FinalStep::parse("deterministic").unwrap(), FinalStep::Deterministic);
        assert_eq!(WindowCfg::parse("last_step").unwrap(), WindowCfg::LastStep);
        let err = VarianceFactor::parse("both").unwrap_err().to_string();
        assert!(err.contains("unknown variance factor \"both\"; use \"paper\" or \"code\""), "{err}");
    }

    #[test]
    fn the_variance_factors_are_inverses() {
        let (target, draft) = ([-3.0, -4.0], [-2.5, -4.5]);
        assert_eq!(VarianceFactor::Paper.log_factor(&target, &draft), 0.0);
        let draft = [-2.0, -3.0];
        assert_eq!(VarianceFactor::Paper.log_factor(&target, &draft), 2.0);
        assert_eq!(VarianceFactor::Code.log_factor(&target, &draft), -2.0);
    }

    #[test]
    fn prefill_counts_the_steps_up_to_rho_n_inclusive() {
        let options = CspdOptions::default();
        assert_eq!(options.prefill_steps(256), 13, "the notebook's steps 0..12");
        assert_eq!(CspdOptions { prefill_ratio: 0.0, ..options }.prefill_steps(16), 1);
        assert_eq!(CspdOptions { prefill_ratio: 1.0, ..options }.prefill_steps(16), 16);
    }

    #[test]
    fn settings_that_cannot_run_are_refused_with_the_reason() {
        let err = |options: CspdOptions| options.validate().unwrap_err().to_string();
        let options = CspdOptions::default();
        assert!(err(CspdOptions { gamma: 0, ..options }).contains("gamma"));
        assert!(err(CspdOptions { prefill_ratio: 1.5, ..options }).contains("between 0 and 1"));
        assert!(err(CspdOptions { tau_a: 0.0, ..options }).contains("tau_a 0 must be positive"));
        assert!(err(CspdOptions { max_resample_trials: 0, ..options }).contains("a cap is needed"));
        CspdOptions::official_code().validate().unwrap();
    }
}
