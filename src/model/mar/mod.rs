//! MAR (masked autoregressive image generation with continuous tokens), its transformer half:
//! a MAE-style encoder over the class buffer and the visible tokens, and a decoder over every
//! position that yields one condition `z` per token for the diffusion head
//! ([`crate::model::diffusion`]). Written once over the backend; tensor names are the official
//! ones (shared/notes/continuous-sd-spec.md §1.3, §1.6).

mod block;
mod model;
mod pass;

pub use model::MarModel;
pub use pass::{MarBatchInput, MarInput, MarPass, MarQuery};
