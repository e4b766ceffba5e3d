//! Speculative-decoding flags shared by `generate` and `bench`.

use clap::{Args, Command, FromArgMatches, ValueEnum};

use crate::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use crate::decode::speculative::rules::{CoolSchedule, LanternResample};

/// Decoding mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpecMode {
    /// Plain autoregressive decoding, one target pass per token (the baseline).
    None,
    /// Lossless speculative sampling (output distributed exactly as the target's).
    Vanilla,
    /// LANTERN relaxation (latent-neighbourhood pooling, --lantern-k, --lantern-delta).
    Lantern,
    /// LANTERN++ relaxation (pooled mass capped by --lambda).
    LanternPp,
    /// COOL-SD annealed relaxation (--delta, --nu, --mu) with optimal resampling.
    Cool,
    /// UniformRSD: COOL-SD's relaxation with a constant --omega.
    Uniform,
    /// Continuous speculative decoding, for MAR directories (--gamma, --cspd-preset, ...).
    Cspd,
}

/// Which drafter proposes tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DrafterArg {
    /// The independent small AR draft model.
    Model,
    /// The EAGLE/LANTERN-style draft head on the target's features.
    Head,
}

/// Speculative decoding flags.
#[derive(Args, Debug, Clone)]
pub struct SpecArgs {
    /// Decoding mode.
    #[arg(long, value_enum, default_value_t = SpecMode::None)]
    pub spec: SpecMode,
    /// Drafter.
    #[arg(long, value_enum, default_value_t = DrafterArg::Model)]
    pub drafter: DrafterArg,
    /// Tokens drafted per step (a chain).
    #[arg(long, default_value_t = 4)]
    pub draft_len: usize,
    /// Draft a static tree instead of a chain: children per node at each depth, e.g. `3,2,1`.
    #[arg(long, value_delimiter = ',')]
    pub tree: Option<Vec<usize>>,
    /// COOL-SD scale delta of omega_i = delta * exp(-nu * i - mu) (the paper uses 1.1 to 2).
    #[arg(long, default_value_t = 1.5)]
    pub delta: f32,
    /// COOL-SD decay nu (paper: 0.7).
    #[arg(long, default_value_t = 0.7)]
    pub nu: f32,
    /// COOL-SD offset mu.
    #[arg(long, default_value_t = 0.0)]
    pub mu: f32,
    /// COOL-SD schedule: omega_i floored at 1, the literal delta * exp(-nu * i - mu), or
    /// normalised to mean delta over the block (mu ignored).
    #[arg(long, value_enum, default_value_t = CoolSchedule::Floored)]
    pub cool_schedule: CoolSchedule,
    /// UniformRSD constant omega.
    #[arg(long, default_value_t = 1.5)]
    pub omega: f32,
    /// LANTERN neighbourhood size k.
    #[arg(long, default_value_t = 100)]
    pub lantern_k: usize,
    /// LANTERN total-variation budget delta.
    #[arg(long, default_value_t = 0.1)]
    pub lantern_delta: f32,
    /// LANTERN++ cap lambda.
    #[arg(long, default_value_t = 2.0)]
    pub lambda: f32,
    /// LANTERN++ resampling after a rejection: as the reference code, or COOL-SD's optimal G*.
    #[arg(long, value_enum, default_value_t = LanternResample::Reference)]
    pub lantern_resample: LanternResample,
}

impl SpecArgs {
    /// The rule for `mode` with these flags' parameters, or `None` for plain AR decoding
    /// (`cspd` is refused for LlamaGen directories before: `cli::mar::refuse_mar_flags`).
    pub fn rule(&self, mode: SpecMode) -> Option<RuleConfig> {
        Some(match mode {
            SpecMode::None | SpecMode::Cspd => return None,
            SpecMode::Vanilla => RuleConfig::Vanilla,
            SpecMode::Lantern => RuleConfig::Lantern { k: self.lantern_k, delta: self.lantern_delta },
            SpecMode::LanternPp => RuleConfig::LanternPlusPlus { k: self.lantern_k, lambda: self.lambda, resample: self.lantern_resample },
            SpecMode::Cool => RuleConfig::Cool { delta: self.delta, nu: self.nu, mu: self.mu, schedule: self.cool_schedule },
            SpecMode::Uniform => RuleConfig::Uniform { omega: self.omega },
        })
    }

    /// The speculative configuration for `mode`, or `None` for plain AR decoding.
    pub fn config(&self, mode: SpecMode) -> Option<SpecConfig> {
        let drafter = match self.drafter {
            DrafterArg::Model => DrafterChoice::Model,
            DrafterArg::Head => DrafterChoice::Head,
        };
        let widths = self.tree.clone().unwrap_or_else(|| vec![1; self.draft_len]);
        Some(SpecConfig { rule: self.rule(mode)?, drafter, widths })
    }

    /// The drafter and rule flags set to other than their defaults, by name (`--spec` aside:
    /// for a command that takes `--modes` instead).
    pub fn changed(&self) -> Vec<&'static str> {
        let command = Self::augment_args(Command::new("defaults").no_binary_name(true));
        let d = Self::from_arg_matches(&command.get_matches_from(std::iter::empty::<String>())).expect("the flags have defaults");
        let flags = [
            ("--drafter", self.drafter != d.drafter),
            ("--draft-len", self.draft_len != d.draft_len),
            ("--tree", self.tree.is_some()),
            ("--delta", self.delta != d.delta),
            ("--nu", self.nu != d.nu),
            ("--mu", self.mu != d.mu),
            ("--cool-schedule", self.cool_schedule != d.cool_schedule),
            ("--omega", self.omega != d.omega),
            ("--lantern-k", self.lantern_k != d.lantern_k),
            ("--lantern-delta", self.lantern_delta != d.lantern_delta),
            ("--lambda", self.lambda != d.lambda),
            ("--lantern-resample", self.lantern_resample != d.lantern_resample),
        ];
        flags.iter().filter(|(_, changed)| *changed).map(|(name, _)| *name).collect()
    }
}
