//! Speculative decoding: drafters propose a chain or tree of tokens, the target verifies them
//! in one pass (tree-masked attention over the paged KV cache), an acceptance rule decides, and
//! rejected tokens are rolled back.
//!
//! - [`rules`]: vanilla (lossless), LANTERN / LANTERN++, COOL-SD, UniformRSD.
//! - [`tree`]: static tree shapes; [`verify`]: chain/tree verification on host distributions.
//! - [`draft`]: the draft model and the EAGLE-style draft head; [`decode`]: the loop.
//! - [`analysis`]: exact output laws and TV distances of relaxed rules.
//! - [`config`]: what a request chooses.

pub mod analysis;
pub mod config;
pub mod decode;
pub mod draft;
pub mod rules;
pub mod tree;
pub mod verify;
