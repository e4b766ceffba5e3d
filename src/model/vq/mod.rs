//! The VQ-16 decoder (LlamaGen `VQModel` generation half) with config-driven widths, so the
//! demo tokenizer and the real one share code, and the convolutional decoder executor it shares
//! with MAR's KL VAE ([`DecoderNet`], [`Step`], [`ops`]). It runs on the CPU.

mod decoder;
mod net;
pub mod ops;
mod plan;

pub use decoder::VqDecoder;
pub use net::DecoderNet;
pub use plan::{decoder_output, decoder_stem, step_tensor_shapes, vq_tensor_shapes, Step};
