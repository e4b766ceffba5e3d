//! What a caller asks for, and what it gets back.

use std::time::Duration;

use crate::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use crate::decode::GenerationStats;
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use crate::weights::ModelConfig;

/// One image to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Class label, `0..num_classes`.
    pub class_id: u32,
    /// Seed of the image's random stream; the same seed gives the same image.
    pub seed: u64,
    /// Logits processing (CFG scale, temperature, top-k, top-p).
    pub sampling: SamplingParams,
    /// Speculative decoding settings; `None` decodes one token per target pass.
    pub speculative: Option<SpecConfig>,
    /// Give up (with [`crate::Error::DeadlineExceeded`]) when the image is not done this long
    /// after submission to an [`crate::Engine`]; `None`: no deadline.
    pub deadline: Option<Duration>,
    /// Send a low-resolution preview image to the request's handle every this many tokens
    /// (0: never); tokens not generated yet show as token 0.
    pub preview_every: usize,
}

impl Request {
    /// A request for `class_id` with `seed` and LlamaGen's default sampling.
    pub fn new(class_id: u32, seed: u64) -> Self {
        Self { class_id, seed, sampling: SamplingParams::default(), speculative: None, deadline: None, preview_every: 0 }
    }
}

impl Request {
    /// Check the request against the models of `config`: the class, the sampling settings, and
    /// that the drafter it names is shipped (and the VQ codebook, for LANTERN), with errors that
    /// say what to change.
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        self.sampling.validate()?;
        let n = config.gpt.num_classes;
        if self.class_id as usize >= n {
            return Err(Error::InvalidRequest(format!("class id {} out of range: this model has {n} classes (0..={})", self.class_id, n - 1)));
        }
        let Some(spec) = &self.speculative else { return Ok(()) };
        spec.shape()?;
        spec.rule.validate()?;
        let (shipped, section) = match spec.drafter {
            DrafterChoice::Model => (config.draft.is_some(), "draft"),
            DrafterChoice::Head => (config.draft_head.is_some(), "draft_head"),
        };
        if !shipped {
            return Err(Error::InvalidRequest(format!("the weights have no \"{section}\" section in config.json: pick another drafter")));
        }
        if matches!(spec.rule, RuleConfig::Lantern { .. } | RuleConfig::LanternPlusPlus { .. }) && config.vq.is_none() {
            return Err(Error::InvalidRequest("LANTERN needs the VQ codebook, and the weights have no \"vq\" section: pick another rule".into()));
        }
        Ok(())
    }
}

/// Tokens of one generated image and what producing them cost.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Image tokens, row-major over the token grid.
    pub tokens: Vec<u32>,
    /// Counters and timing.
    pub stats: GenerationStats,
}
