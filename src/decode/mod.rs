//! The decoding loops of one image, side by side: plain autoregressive decoding ([`ar`]) and
//! speculative decoding ([`speculative`]), over the model layer and the paged KV cache.
//!
//! Both loops carry a [`DecodeContext`] (backend, sampling settings, the image's random stream,
//! [`GenerationStats`] counters, progress callback) and run classifier-free guidance as a pair of
//! mirrored sequences (`guided`). The engine picks a loop per request; nothing here depends on
//! the engine.

pub mod ar;
mod context;
pub(crate) mod guided;
pub mod speculative;
mod stats;

pub use ar::generate_ar;
pub use context::DecodeContext;
pub use stats::GenerationStats;
