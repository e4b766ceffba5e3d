//! The decoding loops: one device-resident batched loop ([`batch`]) for plain autoregressive
//! decoding and every speculative mode ([`speculative`]: drafters, trees, acceptance rules, exact
//! laws), over the model layer and the paged KV cache, with classifier-free guidance as a pair
//! of mirrored sequences per image (`guided`). The engine picks the drafter and rule per request;
//! nothing here depends on the engine. MAR's generation loop (continuous tokens) is [`mar`], its
//! continuous speculative decoding [`cspd`].

pub mod batch;
pub mod cspd;
pub(crate) mod guided;
pub mod mar;
pub mod speculative;
mod stats;

pub use batch::{generate_batch, Batch, BatchEvent, DecodeBuffers, Decoding, ImageId, ImageRequest, ImageTokens, Speculative};
pub use stats::GenerationStats;
