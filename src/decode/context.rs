//! What every decoding loop carries: the backend, sampling settings, the seeded RNG, counters
//! and the progress callback.

use crate::backend::Backend;
use crate::decode::GenerationStats;
use crate::sampling::{Rng, SamplingParams};

/// The running state shared by the AR and speculative decoding loops of one image.
pub struct DecodeContext<'a, B: Backend> {
    /// The device.
    pub backend: &'a B,
    /// Logits processing for target and drafter alike.
    pub params: SamplingParams,
    /// The image's random stream.
    pub rng: Rng,
    /// Counters.
    pub stats: GenerationStats,
    /// Called with (tokens done, tokens total) as tokens are produced.
    pub progress: &'a mut dyn FnMut(usize, usize),
}
