//! The VQ-16 decoder (LlamaGen `VQModel` generation half) with config-driven widths, so the
//! demo tokenizer and the real one share code. It runs on the CPU.

mod decoder;
pub mod ops;
mod plan;

pub use decoder::VqDecoder;
pub use plan::vq_tensor_shapes;
