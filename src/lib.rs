//! spire: autoregressive image generation (LlamaGen) made fast by speculative decoding.
//!
//! The crate is organised in layers, each depending only on the ones before it: [`backend`] (the
//! op trait and its CPU/CUDA implementations), [`weights`] (safetensors loading), [`model`]
//! (LlamaGen GPT, draft head, VQ decoder, written once over the backend), [`kv`] (paged KV
//! cache), [`decode`] (the AR and speculative decoding loops), [`engine`] (the library API) and
//! the `spire` command. Beside them sit leaf modules every layer may use: [`acceptance`] (the
//! acceptance maths on plain numbers), [`sampling`], [`image`] and [`error`]. See
//! `docs/ARCHITECTURE.md` for the contracts between them.

#![warn(missing_docs)]

pub mod acceptance;
pub mod backend;
pub mod decode;
pub mod engine;
pub mod error;
pub mod image;
pub mod kv;
pub mod model;
pub mod sampling;
#[cfg(feature = "server")]
pub mod server;
pub mod weights;

pub use engine::{Device, Engine, EngineBuilder, Generated, GenerationHandle, Image, Progress, Request};
pub use error::{Error, Result};
