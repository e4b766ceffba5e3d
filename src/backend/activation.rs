//! Elementwise activations of the continuous-token models (MAR's timm blocks, the DiffLoss head).

/// An activation applied elementwise by [`crate::backend::Backend::activate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU `x/2 (1 + erf(x / sqrt 2))` (PyTorch `nn.GELU()`, timm's default).
    Gelu,
    /// SiLU (swish) `x * sigmoid(x)`.
    Silu,
}

impl Activation {
    /// The op's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
        }
    }
}
