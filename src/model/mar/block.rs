//! The transformer of MAR's encoder and decoder: timm 0.9.12 `Block`s (pre-LN, fused qkv with
//! bias, bidirectional attention, exact-GELU MLP) followed by a final LayerNorm.

use std::sync::Arc;

use crate::backend::{Activation, Backend};
use crate::error::Result;
use crate::model::modules::{LayerNorm, Linear};
use crate::weights::WeightFile;

/// Geometry of a stack of blocks.
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    /// Width.
    pub width: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP hidden width.
    pub hidden: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

/// One timm `Block`: `x += proj(attn(qkv(norm1 x)))`, then `x += fc2(gelu(fc1(norm2 x)))`.
struct VitBlock<B: Backend> {
    norm1: LayerNorm<B>,
    qkv: Linear<B>,
    proj: Linear<B>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The intermediate activations of a block, shared by every block of a pass.
struct BlockScratch<B: Backend> {
    normed: B::Buf,
    qkv: B::Buf,
    attn: B::Buf,
    projected: B::Buf,
    hidden: B::Buf,
}

impl<B: Backend> VitBlock<B> {
    fn load(backend: &B, file: &Arc<WeightFile>, prefix: &str, dims: &BlockDims) -> Result<Self> {
        let (d, h) = (dims.width, dims.hidden);
        Ok(Self {
            norm1: LayerNorm::load(backend, file, &format!("{prefix}norm1"), d, dims.eps)?,
            qkv: Linear::load(backend, file, &format!("{prefix}attn.qkv"), d, 3 * d)?,
            proj: Linear::load(backend, file, &format!("{prefix}attn.proj"), d, d)?,
            norm2: LayerNorm::load(backend, file, &format!("{prefix}norm2"), d, dims.eps)?,
            fc1: Linear::load(backend, file, &format!("{prefix}mlp.fc1"), d, h)?,
            fc2: Linear::load(backend, file, &format!("{prefix}mlp.fc2"), h, d)?,
        })
    }

    /// Apply the block to `x` (`[rows, width]`, consecutive sequences of `seq_lens` rows) in
    /// place.
    fn forward(&self, backend: &B, dims: &BlockDims, x: &mut B::Buf, seq_lens: &[usize], s: &mut BlockScratch<B>) -> Result<()> {
        let (rows, head_dim) = (seq_lens.iter().sum(), dims.width / dims.n_head);
        self.norm1.forward(backend, x, rows, &mut s.normed)?;
        self.qkv.forward(backend, &s.normed, rows, &mut s.qkv)?;
        backend.resize(&mut s.attn, rows * dims.width)?;
        match seq_lens {
            [first, rest @ ..] if rest.iter().all(|len| len == first) => backend.dense_attention(&s.qkv, *first, dims.n_head, head_dim, &mut s.attn)?,
            _ => backend.ragged_attention(&s.qkv, seq_lens, dims.n_head, head_dim, &mut s.attn)?,
        }
        self.proj.forward(backend, &s.attn, rows, &mut s.projected)?;
        backend.add_assign(x, &s.projected)?;
        self.norm2.forward(backend, x, rows, &mut s.normed)?;
        self.fc1.forward(backend, &s.normed, rows, &mut s.hidden)?;
        backend.activate(&mut s.hidden, Activation::Gelu)?;
        self.fc2.forward(backend, &s.hidden, rows, &mut s.projected)?;
        backend.add_assign(x, &s.projected)
    }
}

/// `depth` blocks `{name}_blocks.{i}` and the LayerNorm `{name}_norm` (MAR's encoder or
/// decoder transformer).
pub struct BlockStack<B: Backend> {
    dims: BlockDims,
    blocks: Vec<VitBlock<B>>,
    norm: LayerNorm<B>,
}

impl<B: Backend> BlockStack<B> {
    /// Load the stack named `name` (`encoder` or `decoder`).
    pub fn load(backend: &B, file: &Arc<WeightFile>, name: &str, depth: usize, dims: BlockDims) -> Result<Self> {
        let blocks = (0..depth).map(|i| VitBlock::load(backend, file, &format!("{name}_blocks.{i}."), &dims)).collect::<Result<Vec<_>>>()?;
        Ok(Self { dims, blocks, norm: LayerNorm::load(backend, file, &format!("{name}_norm"), dims.width, dims.eps)? })
    }

    /// Run every block on `x` (`[rows, width]`, consecutive sequences of `seq_lens` rows, all
    /// of one length or not; changed in place) and write the final norm into `out`.
    pub fn forward(&self, backend: &B, x: &mut B::Buf, seq_lens: &[usize], out: &mut B::Buf) -> Result<()> {
        let empty = || backend.zeros(0);
        let mut scratch = BlockScratch { normed: empty()?, qkv: empty()?, attn: empty()?, projected: empty()?, hidden: empty()? };
        for block in &self.blocks {
            block.forward(backend, &self.dims, x, seq_lens, &mut scratch)?;
        }
        self.norm.forward(backend, x, seq_lens.iter().sum(), out)
    }
}
