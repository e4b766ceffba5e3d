//! Weights: memory-mapped safetensors files and the `config.json` that describes them.

pub mod config;
pub mod family;
pub mod file;
pub mod mar_config;
pub mod synthetic;

pub use config::{DraftHeadConfig, GptConfig, ModelConfig, VqConfig};
pub use family::{DirConfig, Family};
pub use file::{DType, TensorRef, WeightFile};
pub use mar_config::{MarConfig, MarDirConfig, VaeConfig};
