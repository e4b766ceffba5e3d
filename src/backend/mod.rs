//! The backend trait: every op a LlamaGen transformer step needs, on some device.
//!
//! Model code (`crate::model`) is written once against [`Backend`]; the CPU backend is the
//! reference every other backend is tested against. Activations are f32 buffers ([`Backend::Buf`]);
//! weights live in the backend's own format ([`Backend::Weight`]); the paged KV pool
//! ([`Backend::KvPool`]) holds keys and values for all layers. The positions, KV slots and
//! attention layout of a forward pass form one [`ForwardPlan`], uploaded once per pass
//! ([`Backend::Plan`]); token ids and KV copies are small host slices. Activation buffers can be
//! resized in place ([`Backend::resize`]), so a model allocates its workspace once. The kernel backend
//! ([`GpuBackend`]) runs `kernels/*.cu` on a CUDA GPU ([`CudaBackend`], feature `cuda`) or on the
//! CUDA emulator ([`EmuBackend`], feature `emulator`, default).

mod accept;
pub mod checks;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "emulator")]
pub mod emu;
pub mod gpu;
mod layout;
mod plan;

use std::sync::Arc;

pub use accept::{Acceptance, DraftBlock};
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
#[cfg(feature = "emulator")]
pub use emu::EmuBackend;
pub use gpu::GpuBackend;
pub use layout::AttentionLayout;
pub use plan::{ForwardPlan, Gather};

use crate::error::Result;
use crate::weights::WeightFile;

/// What the backend has asked of its device since it was created (or since the last
/// [`Backend::take_device_counts`]): the numbers the decode-step budget is checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Kernel launches (GEMMs included).
    pub launches: u64,
    /// Host-to-device copies.
    pub uploads: u64,
    /// Device-to-host copies.
    pub downloads: u64,
    /// Device allocations.
    pub allocations: u64,
}

/// Geometry of a paged KV pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    /// Decoder layers.
    pub n_layer: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Token slots per block.
    pub block_size: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl KvShape {
    /// Width of one token's keys (or values) in one layer.
    pub fn row_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Token slots in the pool.
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
}

/// A compute device with the ops of a LlamaGen decoder step.
///
/// Shapes are passed explicitly; buffers are row-major. "Rows" are the tokens of one forward
/// pass (all sequences of a batch concatenated).
pub trait Backend: Send + Sync {
    /// An f32 activation buffer on the device.
    type Buf: Send + Sync;
    /// A weight tensor on the device.
    type Weight: Send + Sync;
    /// Keys and values of every layer, in fixed-size blocks of token slots.
    type KvPool: Send + Sync;
    /// A [`ForwardPlan`] in the form the ops read it (on a device: one uploaded buffer).
    type Plan: Send + Sync;

    /// A short human-readable name ("cpu", "cuda:0 (H100)").
    fn name(&self) -> String;

    /// Load tensor `name` of `file`, checking its shape; zero-copy where the device and dtype
    /// allow.
    fn load_weight(&self, file: &Arc<WeightFile>, name: &str, shape: &[usize]) -> Result<Self::Weight>;
    /// A weight from host f32 values (synthetic or derived tensors).
    fn weight_from_host(&self, values: &[f32]) -> Result<Self::Weight>;

    /// A zero-filled buffer of `len` f32.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// A buffer holding a copy of `values`.
    fn upload(&self, values: &[f32]) -> Result<Self::Buf>;
    /// Copy `values` into `buf`, resized to hold them (reusing its memory when large enough).
    fn upload_into(&self, buf: &mut Self::Buf, values: &[f32]) -> Result<()>;
    /// Copy a buffer back to the host.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Make `buf` hold `len` elements, reusing its memory when it is large enough (contents
    /// unspecified afterwards): the workspace of a forward pass is allocated once this way.
    fn resize(&self, buf: &mut Self::Buf, len: usize) -> Result<()>;
    /// Hand `plan` to the device for the ops of one forward pass (one copy on a device).
    fn upload_plan(&self, plan: ForwardPlan) -> Result<Self::Plan>;
    /// An empty (zeroed) KV pool.
    fn kv_pool(&self, shape: KvShape) -> Result<Self::KvPool>;

    /// `out[rows[i]] = table[ids[i]]` for rows of width `dim`, with `ids` and `rows` those of
    /// gather `gather` of the plan.
    fn embedding(&self, table: &Self::Weight, plan: &Self::Plan, gather: usize, dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// `out = concat(a, b)` per row: `a` rows of width `a_dim`, `b` rows of width `b_dim`.
    fn concat_rows(&self, a: &Self::Buf, a_dim: usize, b: &Self::Buf, b_dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// RMSNorm of each row of width `dim`: `out = x / sqrt(mean(x^2) + eps) * weight`.
    fn rms_norm(&self, x: &Self::Buf, weight: &Self::Weight, eps: f32, dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// Fused residual add + RMSNorm: `residual += x; out = rms_norm(residual)`.
    fn add_rms_norm(
        &self,
        residual: &mut Self::Buf,
        x: &Self::Buf,
        weight: &Self::Weight,
        eps: f32,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `acc += x` elementwise.
    fn add_assign(&self, acc: &mut Self::Buf, x: &Self::Buf) -> Result<()>;
    /// `out[rows, out_dim] = x[rows, in_dim] · weightᵀ` for a PyTorch-layout `[out_dim, in_dim]` weight.
    fn linear(&self, x: &Self::Buf, weight: &Self::Weight, rows: usize, in_dim: usize, out_dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// `out = silu(gate) * up` elementwise (SwiGLU).
    fn swiglu(&self, gate: &Self::Buf, up: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Rotate, in place, the first `n_rot_heads` heads of width `head_dim` of each row (row
    /// stride `row_stride`) by the RoPE table row `plan.positions[r]`. `table` holds, per position,
    /// `head_dim / 2` (cos, sin) pairs applied to interleaved pairs `(x[2k], x[2k+1])`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        rows: usize,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &Self::Buf,
        plan: &Self::Plan,
    ) -> Result<()>;
    /// Write the K and V parts of fused `qkv` rows (`[rows, 3 * width]`, order q|k|v) of layer
    /// `layer` into pool slots `plan.slots[r]`.
    fn kv_write(&self, pool: &mut Self::KvPool, layer: usize, qkv: &Self::Buf, plan: &Self::Plan) -> Result<()>;
    /// Copy keys and values of every layer from pool slot `src[i]` to slot `dst[i]`.
    fn kv_copy(&self, pool: &mut Self::KvPool, src: &[u32], dst: &[u32]) -> Result<()>;
    /// Scaled dot-product attention of the q part of `qkv` against layer `layer` of the paged
    /// pool, with per-query visibility from `plan.layout` (causal, or a token-tree mask);
    /// `out` is `[rows, n_head * head_dim]`.
    fn attention(&self, qkv: &Self::Buf, pool: &Self::KvPool, layer: usize, plan: &Self::Plan, out: &mut Self::Buf) -> Result<()>;
    /// Verify a whole draft `block` (chain or tree, every sequence of a batch) against target
    /// probabilities `p` and draft probabilities `q` (both `[batch, nodes + 1, vocab]`), as the
    /// fused kernel `kernels/accept.cu` does: one launch on a device, its exact twin on the CPU.
    fn accept_block(&self, p: &Self::Buf, q: &Self::Buf, block: &DraftBlock<'_>) -> Result<Acceptance>;
    /// The device operations since the last call (or since creation), resetting the counts:
    /// kernel backends count launches, copies and allocations; the CPU backend has none (`None`).
    fn take_device_counts(&self) -> Option<DeviceCounts> {
        None
    }
}
