//! The library API: load a weights directory, generate images. [`Engine`] runs LlamaGen
//! directories (with speculative decoding), [`MarEngine`] MAR ones (`"family": "mar"`).
//!
//! ```no_run
//! use spire::engine::{Engine, Request};
//! let engine = Engine::load("weights/demo")?;
//! let image = engine.generate(&Request::new(3, 42))?;
//! image.save_png("sample.png")?;
//! # Ok::<(), spire::Error>(())
//! ```

#[allow(clippy::module_inception)]
mod engine;
mod mar;
pub mod random_tiny;
mod request;

pub use crate::decode::GenerationStats;
pub use crate::image::Image;
pub use engine::{Engine, KV_BLOCK_SIZE};
pub use mar::{MarEngine, MarRequest};
pub use request::{Generation, Request};
