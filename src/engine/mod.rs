//! The library API.
//!
//! [`Engine`] (also at the crate root) is what a service embeds: the models of a LlamaGen
//! weights directory on a [`Device`] chosen at run time, a scheduler that batches the requests of
//! any number of threads or async tasks into shared forward passes, and a [`GenerationHandle`]
//! per request to wait on, stream progress from and cancel. [`BackendEngine`] is the same models
//! on one backend type, decoding batches synchronously (for benchmarks and tests).
//! [`MarEngine`] runs MAR directories (`"family": "mar"`), plain or with continuous speculative
//! decoding ([`CspdOptions`]); the MAR and CSpD settings are re-exported here.
//!
//! ```
//! use spire::{Engine, Request};
//! let engine = Engine::load("weights/demo")?;
//! let images = engine.generate_batch(&[Request::new(3, 42), Request::new(7, 1)])?;
//! assert_eq!(images.len(), 2);
//! # Ok::<(), spire::Error>(())
//! ```

mod backend_engine;
mod device;
mod handle;
mod mar;
mod metrics;
pub mod random_tiny;
mod request;
mod service;
mod worker;

pub use crate::decode::cspd::{CspdOptions, CspdOutput, CspdStats, FinalStep, VarianceFactor, Verdict, VerifyMode, WindowCfg};
pub use crate::decode::mar::{CfgSchedule, MarSampling};
pub use crate::decode::GenerationStats;
pub use crate::image::Image;
pub use backend_engine::{BackendEngine, KV_BLOCK_SIZE};
pub use device::Device;
pub use handle::{Generated, GenerationHandle, Progress};
pub use mar::{MarDraft, MarEngine, MarRequest};
pub use metrics::EngineStats;
pub use request::{Generation, Request};
pub use service::{Engine, EngineBuilder, DEFAULT_MAX_BATCH, DEFAULT_QUEUE_CAPACITY};
