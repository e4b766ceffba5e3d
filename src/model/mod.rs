//! Model definitions: LlamaGen GPT and draft head (written once, generic over the backend) and
//! the VQ decoder; MAR's transformer and diffusion head (generic over the backend) and the KL
//! VAE decoder.

pub mod diffusion;
pub mod draft_head;
pub mod gpt;
pub mod layer;
pub mod mar;
pub mod modules;
pub mod rope;
pub mod step;
pub mod vae;
pub mod vq;

pub use draft_head::{draft_head_tensor_shapes, head_row, DraftHead};
pub use gpt::{gpt_tensor_shapes, ForwardOutput, Gpt};
pub use step::{place_rows, StepOutput, StepRow, TokenInput};
