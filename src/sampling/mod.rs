//! Sampling: a seeded RNG, probability helpers, and the logits processors of LlamaGen's sampler
//! (classifier-free guidance, temperature, top-k, top-p).

pub mod dist;
pub mod logits;
pub mod rng;

pub use logits::SamplingParams;
pub use rng::Rng;
