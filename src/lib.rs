//! spire: autoregressive image generation (LlamaGen) made fast by speculative decoding.
//!
//! What a service embeds is at the crate root: an [`Engine`] on a [`Device`] chosen at run time,
//! [`Request`]s (with [`SamplingParams`] and optional [`SpecConfig`]), a [`GenerationHandle`]
//! per request, the [`Image`], and [`Error`]. [`server`] is the HTTP service (feature `server`),
//! [`backend`] the kernels and their CPU twins (for microbenchmarks), [`weights`] the formats.
//!
//! ```
//! use spire::{Engine, Request};
//! let engine = Engine::load("weights/demo")?;
//! let handle = engine.submit(Request::new(3, 42))?; // from any thread; batched with others
//! let generated = handle.wait()?;
//! generated.image.save_png(std::env::temp_dir().join("spire-doc-sample.png"))?;
//! assert_eq!(generated.tokens.len(), 64);
//! # Ok::<(), spire::Error>(())
//! ```
//!
//! Inside, the crate is organised in layers, each depending only on the ones before it:
//! `backend` (the op trait and its CPU/CUDA implementations), `weights` (safetensors loading),
//! `model` (LlamaGen GPT, draft head, VQ decoder; MAR), `kv` (paged KV cache), `decode` (the
//! batched decoding loop, speculative decoding), `engine` (the library API) and the `spire`
//! command. Beside them sit leaf modules every layer may use: `acceptance` (the acceptance
//! maths on plain numbers), `sampling`, `image` and `error`. The layers below the engine are
//! public only with the `internals` feature (for the test suites and benches). See
//! `docs/ARCHITECTURE.md` for the contracts between them.

#![warn(missing_docs)]
// Without `internals`, the layers below the engine are private, and what only tests and benches
// use of them is unused.
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

/// Modules public only with the `internals` feature (the test suites and benches turn it on):
/// the layers an embedding service does not use directly.
macro_rules! internal_modules {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$attr])*
            #[cfg(feature = "internals")]
            pub mod $name;
            $(#[$attr])*
            #[cfg(not(feature = "internals"))]
            mod $name;
        )*
    };
}

internal_modules!(acceptance, decode, eval, kv, model, sampling);

pub mod backend;
#[doc(hidden)]
pub mod cli;
pub mod engine;
pub mod error;
pub mod image;
#[cfg(feature = "server")]
pub mod server;
pub mod weights;

pub use backend::KvDtype;
pub use decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
pub use decode::speculative::rules::{CoolSchedule, LanternResample};
pub use decode::GenerationStats;
pub use engine::{Device, Engine, EngineBuilder, EngineStats, Generated, GenerationHandle, Image, Progress, Request};
pub use error::{Error, Result};
pub use sampling::SamplingParams;
