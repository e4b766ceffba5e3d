//! One LlamaGen decoder layer (pre-norm attention + SwiGLU), shared by the GPT and the draft head.

use std::sync::Arc;

use crate::backend::{AttentionLayout, Backend};
use crate::error::Result;
use crate::weights::WeightFile;

/// Weights of one decoder layer, loaded from `{prefix}attention.wqkv.weight` etc.
pub struct DecoderLayer<B: Backend> {
    attention_norm: B::Weight,
    wqkv: B::Weight,
    wo: B::Weight,
    ffn_norm: B::Weight,
    w1: B::Weight,
    w2: B::Weight,
    w3: B::Weight,
}

/// Geometry of a decoder layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerDims {
    /// Model width.
    pub dim: usize,
    /// Attention heads.
    pub n_head: usize,
    /// SwiGLU hidden width.
    pub hidden: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
}

impl LayerDims {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_head
    }

    /// Official tensor names (after `prefix`) and shapes of one layer.
    pub fn tensor_shapes(&self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        let (d, h) = (self.dim, self.hidden);
        [
            ("attention_norm.weight", vec![d]),
            ("attention.wqkv.weight", vec![3 * d, d]),
            ("attention.wo.weight", vec![d, d]),
            ("ffn_norm.weight", vec![d]),
            ("feed_forward.w1.weight", vec![h, d]),
            ("feed_forward.w2.weight", vec![d, h]),
            ("feed_forward.w3.weight", vec![h, d]),
        ]
        .into_iter()
        .map(|(name, shape)| (format!("{prefix}{name}"), shape))
        .collect()
    }
}

/// Where a forward pass's rows read and write the KV cache of one model.
pub struct KvRows<'a> {
    /// Physical KV slot each row writes.
    pub slots: &'a [u32],
    /// RoPE table row of each row.
    pub positions: &'a [u32],
    /// Which keys each row attends to.
    pub layout: &'a AttentionLayout,
}

impl<B: Backend> DecoderLayer<B> {
    /// Load the layer whose tensors start with `prefix` (e.g. `layers.3.`).
    pub fn load(backend: &B, file: &Arc<WeightFile>, prefix: &str, dims: &LayerDims) -> Result<Self> {
        let shapes = dims.tensor_shapes(prefix);
        let mut w = shapes.iter().map(|(name, shape)| backend.load_weight(file, name, shape));
        let mut next = || w.next().expect("seven tensors per layer");
        Ok(Self {
            attention_norm: next()?,
            wqkv: next()?,
            wo: next()?,
            ffn_norm: next()?,
            w1: next()?,
            w2: next()?,
            w3: next()?,
        })
    }

    /// Apply the layer to the residual stream `x` (`[rows, dim]`), writing this layer's keys and
    /// values for the rows into `pool` at `kv.slots`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        backend: &B,
        dims: &LayerDims,
        x: &mut B::Buf,
        rows: usize,
        pool: &mut B::KvPool,
        layer: usize,
        rope: &B::Buf,
        kv: &KvRows<'_>,
    ) -> Result<()> {
        let (d, h) = (dims.dim, dims.hidden);
        let mut normed = backend.zeros(rows * d)?;
        backend.rms_norm(x, &self.attention_norm, dims.eps, d, &mut normed)?;
        let mut qkv = backend.zeros(rows * 3 * d)?;
        backend.linear(&normed, &self.wqkv, rows, d, 3 * d, &mut qkv)?;
        backend.rope(&mut qkv, rows, 3 * d, 2 * dims.n_head, dims.head_dim(), rope, kv.positions)?;
        backend.kv_write(pool, layer, &qkv, kv.slots)?;
        let mut attn = backend.zeros(rows * d)?;
        backend.attention(&qkv, pool, layer, kv.layout, &mut attn)?;
        let mut projected = backend.zeros(rows * d)?;
        backend.linear(&attn, &self.wo, rows, d, d, &mut projected)?;
        backend.add_rms_norm(x, &projected, &self.ffn_norm, dims.eps, d, &mut normed)?;
        let mut gate = backend.zeros(rows * h)?;
        let mut up = backend.zeros(rows * h)?;
        backend.linear(&normed, &self.w1, rows, d, h, &mut gate)?;
        backend.linear(&normed, &self.w3, rows, d, h, &mut up)?;
        let mut act = backend.zeros(rows * h)?;
        backend.swiglu(&gate, &up, &mut act)?;
        backend.linear(&act, &self.w2, rows, h, d, &mut projected)?;
        backend.add_assign(x, &projected)
    }
}
