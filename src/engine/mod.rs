//! The library API: load a weights directory, generate images.
//!
//! ```no_run
//! use spire::engine::{Engine, Request};
//! let engine = Engine::load("weights/demo")?;
//! let image = engine.generate(&Request::new(3, 42))?;
//! image.save_png("sample.png")?;
//! # Ok::<(), spire::Error>(())
//! ```

mod ar;
mod context;
#[allow(clippy::module_inception)]
mod engine;
pub(crate) mod guided;
pub mod random_tiny;
mod request;
mod stats;

pub use context::DecodeContext;
pub use engine::{Engine, KV_BLOCK_SIZE};
pub use crate::image::Image;
pub use request::{Generation, Request};
pub use stats::GenerationStats;
