//! What a caller asks for, and what it gets back.

use crate::decode::speculative::config::SpecConfig;
use crate::decode::GenerationStats;
use crate::sampling::SamplingParams;

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
}

impl Request {
    /// A request for `class_id` with `seed` and LlamaGen's default sampling.
    pub fn new(class_id: u32, seed: u64) -> Self {
        Self { class_id, seed, sampling: SamplingParams::default(), speculative: None }
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
