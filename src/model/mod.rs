//! Model definitions: LlamaGen GPT and draft head (generic over the backend) and the VQ decoder.

pub mod vq;
