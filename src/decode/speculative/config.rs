//! What a caller chooses for speculative decoding: drafter, tree shape, acceptance rule.

use std::sync::Arc;

use crate::decode::speculative::rules::{AcceptanceRule, Cool, CoolSchedule, LatentNeighbours, Lantern, LanternPlusPlus, LanternResample, UniformRsd, Vanilla};
use crate::decode::speculative::tree::TreeShape;
use crate::error::{Error, Result};

/// Which acceptance rule verifies drafts.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleConfig {
    /// Lossless speculative sampling: accept with min(1, p/q), resample from norm((p-q)+).
    Vanilla,
    /// LANTERN: pool target mass over the `k` nearest codebook neighbours within TV budget `delta`.
    Lantern {
        /// Neighbours per token.
        k: usize,
        /// Total-variation budget.
        delta: f32,
    },
    /// LANTERN++: pooled mass capped at `(lambda - 1) p(x)`.
    LanternPlusPlus {
        /// Neighbours per token.
        k: usize,
        /// Cap factor.
        lambda: f32,
        /// The resampling after a rejection.
        resample: LanternResample,
    },
    /// COOL-SD: omega_i = delta * exp(-nu * i - mu) (floored at 1 by default) with the optimal
    /// resampling G*.
    Cool {
        /// Scale of the relaxation.
        delta: f32,
        /// Decay along the draft block.
        nu: f32,
        /// Offset.
        mu: f32,
        /// The schedule's form (floored at 1 by default).
        schedule: CoolSchedule,
    },
    /// UniformRSD: the COOL-SD relaxation with a constant omega.
    Uniform {
        /// The constant relaxation.
        omega: f32,
    },
}

impl RuleConfig {
    /// Reject parameters that make no sense, naming the parameter.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidRequest(what.to_string()));
        match *self {
            RuleConfig::Vanilla => Ok(()),
            RuleConfig::Cool { delta, nu, mu, .. } if !(delta.is_finite() && delta > 0.0 && nu.is_finite() && mu.is_finite()) => {
                bad(&format!("COOL-SD delta {delta} must be finite and > 0, nu {nu} and mu {mu} finite"))
            }
            RuleConfig::Uniform { omega } if !(omega.is_finite() && omega > 0.0) => bad(&format!("UniformRSD omega {omega} must be finite and > 0")),
            RuleConfig::Lantern { k, delta } if k == 0 || !(0.0..=1.0).contains(&delta) => bad(&format!("LANTERN k {k} must be >= 1 and delta {delta} in [0, 1]")),
            RuleConfig::LanternPlusPlus { k, lambda, .. } if k == 0 || !(lambda.is_finite() && lambda >= 1.0) => {
                bad(&format!("LANTERN++ k {k} must be >= 1 and lambda {lambda} finite and >= 1"))
            }
            _ => Ok(()),
        }
    }
}

/// Which model drafts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrafterChoice {
    /// The independent small AR draft model (`draft` in config.json).
    Model,
    /// The EAGLE/LANTERN-style draft head (`draft_head` in config.json).
    Head,
}

/// Speculative decoding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecConfig {
    /// Acceptance rule.
    pub rule: RuleConfig,
    /// Drafter.
    pub drafter: DrafterChoice,
    /// Children per node at each depth (`[1; L]` is a chain of length L).
    pub widths: Vec<usize>,
}

impl SpecConfig {
    /// A chain of `len` tokens drafted by `drafter`, verified with `rule`.
    pub fn chain(rule: RuleConfig, drafter: DrafterChoice, len: usize) -> Self {
        Self { rule, drafter, widths: vec![1; len] }
    }

    /// The draft tree shape.
    pub fn shape(&self) -> Result<TreeShape> {
        TreeShape::from_widths(&self.widths)
    }

    /// Build the acceptance rule; LANTERN variants get their `k`-nearest latent neighbourhoods
    /// from `neighbours` (the engine builds them from the VQ codebook once and caches them).
    pub fn build_rule(&self, neighbours: &dyn Fn(usize) -> Result<Arc<LatentNeighbours>>) -> Result<Box<dyn AcceptanceRule>> {
        Ok(match self.rule {
            RuleConfig::Vanilla => Box::new(Vanilla),
            RuleConfig::Lantern { k, delta } => Box::new(Lantern::new(neighbours(k)?, delta)),
            RuleConfig::LanternPlusPlus { k, lambda, resample } => Box::new(LanternPlusPlus::new(neighbours(k)?, lambda).with_resample(resample)),
            RuleConfig::Cool { delta, nu, mu, schedule } => Box::new(Cool { delta, nu, mu, schedule, block_depth: self.widths.len() }),
            RuleConfig::Uniform { omega } => Box::new(UniformRsd { omega }),
        })
    }
}
