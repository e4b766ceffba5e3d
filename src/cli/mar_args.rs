//! Flags of MAR weights directories (`"family": "mar"`), shared by `generate` and `bench`: MAR's
//! steps and guidance schedule, and the settings of continuous speculative decoding
//! (`--spec cspd`). Each CSpD option starts from the preset (`--cspd-preset paper`, the
//! default, or `code`) and a flag given overrides it.

use clap::{Args, ValueEnum};

use crate::decode::cspd::{CspdOptions, FinalStep, VarianceFactor, VerifyMode, WindowCfg};
use crate::decode::mar::{CfgSchedule, MarSampling};
use crate::engine::MarDraft;

/// The starting point of the CSpD options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CspdPreset {
    /// The paper: leviathan_rollback, variance factor paper, tau_a 1, stochastic final step,
    /// per-position guidance, prefill 0.05, 100 residual proposals.
    Paper,
    /// The official code: mar_window, variance factor code, tau_a 42, deterministic final step,
    /// the last step's guidance for the window, prefill 0.05, 100 residual proposals.
    Code,
}

/// Guidance schedules of MAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CfgScheduleArg {
    /// `1 + (cfg - 1) * revealed fraction` (MAR's default).
    Linear,
    /// The scale at every step.
    Constant,
}

/// MAR and CSpD flags (MAR directories only).
#[derive(Args, Debug, Clone, Default)]
pub struct MarArgs {
    /// MAR: generation steps (default: one per token, as CSpD).
    #[arg(long)]
    pub num_iter: Option<usize>,
    /// MAR: how the guidance scale follows the steps [default: linear].
    #[arg(long, value_enum)]
    pub cfg_schedule: Option<CfgScheduleArg>,
    /// CSpD: drafted steps per target verification; `bench` takes a list [default: 8; bench:
    /// 4,8,16,32].
    #[arg(long, value_delimiter = ',')]
    pub gamma: Option<Vec<usize>>,
    /// CSpD: the defaults the flags below override [default: paper].
    #[arg(long, value_enum)]
    pub cspd_preset: Option<CspdPreset>,
    /// CSpD: pre-fill ratio rho (the target alone generates steps s <= rho * num_iter).
    #[arg(long)]
    pub prefill_ratio: Option<f64>,
    /// CSpD: leviathan_rollback (the paper) or mar_window (the official code).
    #[arg(long, value_parser = VerifyMode::parse)]
    pub verify_mode: Option<VerifyMode>,
    /// CSpD: paper (prod sigma_q/sigma_p) or code (prod sigma_p/sigma_q).
    #[arg(long, value_parser = VarianceFactor::parse)]
    pub variance_factor: Option<VarianceFactor>,
    /// CSpD: tempering of the acceptance exponent (1 = the paper, 42 = the official code).
    #[arg(long)]
    pub tau_a: Option<f64>,
    /// CSpD: stochastic (token = mu_0 + sigma_0 tau_s eps_0) or deterministic (token = mu_0).
    #[arg(long, value_parser = FinalStep::parse)]
    pub final_step: Option<FinalStep>,
    /// CSpD: residual proposals before an exact draw from the target's final Gaussian.
    #[arg(long)]
    pub max_resample_trials: Option<usize>,
    /// CSpD: per_position or last_step guidance for the window's target pass.
    #[arg(long, value_parser = WindowCfg::parse)]
    pub window_cfg: Option<WindowCfg>,
    /// CSpD: draft with the target itself (self-speculation: checks the machinery, no speed-up)
    /// instead of the directory's `draft` model.
    #[arg(long)]
    pub self_draft: bool,
}

impl MarArgs {
    /// The flags given, by name (all of them apply to MAR directories only).
    pub fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--num-iter", self.num_iter.is_some()),
            ("--cfg-schedule", self.cfg_schedule.is_some()),
            ("--gamma", self.gamma.is_some()),
            ("--cspd-preset", self.cspd_preset.is_some()),
            ("--prefill-ratio", self.prefill_ratio.is_some()),
            ("--verify-mode", self.verify_mode.is_some()),
            ("--variance-factor", self.variance_factor.is_some()),
            ("--tau-a", self.tau_a.is_some()),
            ("--final-step", self.final_step.is_some()),
            ("--max-resample-trials", self.max_resample_trials.is_some()),
            ("--window-cfg", self.window_cfg.is_some()),
            ("--self-draft", self.self_draft),
        ];
        flags.iter().filter(|(_, given)| *given).map(|(name, _)| *name).collect()
    }

    /// MAR's sampling settings for images of `seq_len` tokens with guidance `cfg` and
    /// temperature `temperature` (checked by the library when generating).
    pub fn sampling(&self, seq_len: usize, cfg: f32, temperature: f32) -> MarSampling {
        let cfg_schedule = match self.cfg_schedule.unwrap_or(CfgScheduleArg::Linear) {
            CfgScheduleArg::Linear => CfgSchedule::Linear,
            CfgScheduleArg::Constant => CfgSchedule::Constant,
        };
        MarSampling { num_iter: self.num_iter.unwrap_or(seq_len), cfg: cfg as f64, cfg_schedule, temperature: temperature as f64 }
    }

    /// The CSpD options: the preset, each given flag overriding it, for each of `gammas`.
    pub fn options(&self, gammas: &[usize]) -> Vec<CspdOptions> {
        let preset = match self.cspd_preset.unwrap_or(CspdPreset::Paper) {
            CspdPreset::Paper => CspdOptions::default(),
            CspdPreset::Code => CspdOptions::official_code(),
        };
        let base = CspdOptions {
            prefill_ratio: self.prefill_ratio.unwrap_or(preset.prefill_ratio),
            verify: self.verify_mode.unwrap_or(preset.verify),
            variance_factor: self.variance_factor.unwrap_or(preset.variance_factor),
            tau_a: self.tau_a.unwrap_or(preset.tau_a),
            final_step: self.final_step.unwrap_or(preset.final_step),
            max_resample_trials: self.max_resample_trials.unwrap_or(preset.max_resample_trials),
            window_cfg: self.window_cfg.unwrap_or(preset.window_cfg),
            ..preset
        };
        gammas.iter().map(|&gamma| CspdOptions { gamma, ..base }).collect()
    }

    /// The γ values given, or `default`.
    pub fn gammas(&self, default: &[usize]) -> Vec<usize> {
        self.gamma.clone().unwrap_or_else(|| default.to_vec())
    }

    /// Which model drafts.
    pub fn draft(&self) -> MarDraft {
        if self.self_draft {
            MarDraft::Target
        } else {
            MarDraft::Section
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_preset() {
        let args = MarArgs { cspd_preset: Some(CspdPreset::Code), tau_a: Some(3.0), ..MarArgs::default() };
        let options = args.options(&[16]);
        assert_eq!(options, vec![CspdOptions { gamma: 16, tau_a: 3.0, ..CspdOptions::official_code() }]);
        assert_eq!(MarArgs::default().options(&[8])[0], CspdOptions::default());
        assert_eq!(args.given(), vec!["--cspd-preset", "--tau-a"]);
        assert_eq!(MarArgs::default().sampling(16, 2.0, 1.0).num_iter, 16);
    }
}
