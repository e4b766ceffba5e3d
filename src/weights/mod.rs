//! Weights: memory-mapped safetensors files and the `config.json` that describes them.

pub mod config;
pub mod file;
pub mod synthetic;

pub use config::{DraftHeadConfig, GptConfig, ModelConfig, VqConfig};
pub use file::{DType, TensorRef, WeightFile};
