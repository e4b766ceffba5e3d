//! spire: autoregressive image generation (LlamaGen) made fast by speculative decoding.
//!
//! The crate is organised by concern: [`backend`] (the op trait and its CPU/CUDA implementations),
//! [`weights`] (safetensors loading), [`model`] (LlamaGen GPT, draft head, VQ decoder, written once
//! over the backend), [`kv`] (paged KV cache), [`sampling`], [`spec`] (speculative decoding) and
//! [`engine`] (the library API). See `docs/ARCHITECTURE.md` for the contracts between them.

#![warn(missing_docs)]

pub mod acceptance;
pub mod backend;
pub mod engine;
pub mod error;
pub mod image;
pub mod kv;
pub mod model;
pub mod sampling;
pub mod spec;
pub mod weights;

pub use error::{Error, Result};
