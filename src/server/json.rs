//! The JSON of `POST /v1/images`: what a client sends (unknown fields refused) and how it
//! becomes a [`Request`], and what a `"format": "json"` response holds.

use serde::{Deserialize, Serialize};

use crate::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use crate::decode::GenerationStats;
use crate::engine::Request;
use crate::sampling::SamplingParams;

fn one() -> f32 {
    1.0
}

fn two() -> f32 {
    2.0
}

/// The body of `POST /v1/images`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequestJson {
    /// Class label.
    pub class: u32,
    /// Seed of the image's random stream (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Classifier-free guidance scale (default 2; 1 is off).
    #[serde(default = "two")]
    pub cfg: f32,
    /// Sampling temperature (default 1; 0 is greedy).
    #[serde(default = "one")]
    pub temperature: f32,
    /// Keep the k most likely tokens (default 0: off).
    #[serde(default)]
    pub top_k: usize,
    /// Nucleus mass (default 1: off).
    #[serde(default = "one")]
    pub top_p: f32,
    /// Speculative decoding (default: plain AR decoding).
    #[serde(default)]
    pub speculative: Option<SpeculativeJson>,
    /// Give up after this many milliseconds (default: no deadline).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// `png` (default): the image; `json`: the PNG in base64 with the tokens and statistics.
    #[serde(default)]
    pub format: ResponseFormat,
}

/// The response body a client asks for.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    /// `image/png`.
    #[default]
    Png,
    /// `application/json` ([`ImageResponseJson`]).
    Json,
}

/// An acceptance rule by name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RuleName {
    /// Lossless speculative sampling.
    Vanilla,
    /// COOL-SD (`delta`, `nu`, `mu`).
    Cool,
    /// UniformRSD (`omega`).
    Uniform,
    /// LANTERN (`k`, `delta`).
    Lantern,
    /// LANTERN++ (`k`, `lambda`).
    LanternPp,
}

/// A drafter by name.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DrafterName {
    /// The small draft model.
    #[default]
    Model,
    /// The draft head.
    Head,
}

/// Speculative decoding settings of a request; the parameters default as on the command line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeculativeJson {
    /// The acceptance rule.
    pub rule: RuleName,
    /// The drafter (default `model`).
    #[serde(default)]
    pub drafter: DrafterName,
    /// Tokens drafted per step as a chain (default 4).
    #[serde(default)]
    pub draft_len: Option<usize>,
    /// A static tree instead: children per node at each depth.
    #[serde(default)]
    pub tree: Option<Vec<usize>>,
    /// COOL-SD delta (default 1.5) or LANTERN's budget (default 0.1).
    #[serde(default)]
    pub delta: Option<f32>,
    /// COOL-SD nu (default 0.7).
    #[serde(default)]
    pub nu: Option<f32>,
    /// COOL-SD mu (default 0).
    #[serde(default)]
    pub mu: Option<f32>,
    /// UniformRSD omega (default 1.5).
    #[serde(default)]
    pub omega: Option<f32>,
    /// LANTERN neighbourhood size (default 100).
    #[serde(default)]
    pub k: Option<usize>,
    /// LANTERN++ cap (default 2).
    #[serde(default)]
    pub lambda: Option<f32>,
}

impl SpeculativeJson {
    /// The library's settings.
    fn config(&self) -> SpecConfig {
        let rule = match self.rule {
            RuleName::Vanilla => RuleConfig::Vanilla,
            RuleName::Cool => RuleConfig::Cool { delta: self.delta.unwrap_or(1.5), nu: self.nu.unwrap_or(0.7), mu: self.mu.unwrap_or(0.0), schedule: crate::CoolSchedule::Floored },
            RuleName::Uniform => RuleConfig::Uniform { omega: self.omega.unwrap_or(1.5) },
            RuleName::Lantern => RuleConfig::Lantern { k: self.k.unwrap_or(100), delta: self.delta.unwrap_or(0.1) },
            RuleName::LanternPp => RuleConfig::LanternPlusPlus { k: self.k.unwrap_or(100), lambda: self.lambda.unwrap_or(2.0), resample: crate::LanternResample::Reference },
        };
        let drafter = match self.drafter {
            DrafterName::Model => DrafterChoice::Model,
            DrafterName::Head => DrafterChoice::Head,
        };
        let widths = self.tree.clone().unwrap_or_else(|| vec![1; self.draft_len.unwrap_or(4)]);
        SpecConfig { rule, drafter, widths }
    }
}

impl ImageRequestJson {
    /// The library's request (checked by the engine when submitted).
    pub fn request(&self) -> Request {
        Request {
            class_id: self.class,
            seed: self.seed,
            sampling: SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, cfg_scale: self.cfg },
            speculative: self.speculative.as_ref().map(SpeculativeJson::config),
            deadline: self.deadline_ms.map(std::time::Duration::from_millis),
            preview_every: 0,
        }
    }
}

/// The counters of a generated image, as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatsJson {
    /// Image tokens.
    pub tokens: usize,
    /// Target forward passes this image took part in.
    pub target_forwards: usize,
    /// Image tokens per target forward.
    pub tokens_per_target_forward: f64,
    /// Accepted over drafted tokens (0 without speculative decoding).
    pub acceptance_rate: f64,
    /// Milliseconds from submission to the last token.
    pub elapsed_ms: f64,
}

impl From<&GenerationStats> for StatsJson {
    fn from(s: &GenerationStats) -> Self {
        Self {
            tokens: s.tokens,
            target_forwards: s.target_forwards,
            tokens_per_target_forward: s.tokens_per_target_forward(),
            acceptance_rate: s.acceptance_rate(),
            elapsed_ms: s.elapsed.as_secs_f64() * 1e3,
        }
    }
}

/// The body of a `"format": "json"` response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageResponseJson {
    /// The PNG, base64 (standard alphabet, padded).
    pub png_base64: String,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Image tokens.
    pub tokens: Vec<u32>,
    /// Counters.
    pub stats: StatsJson,
}
