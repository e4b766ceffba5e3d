//! One LlamaGen decoder layer (pre-norm attention + SwiGLU), shared by the GPT and the draft head.

use std::sync::Arc;

use crate::backend::{Backend, GemmShape, RmsNorm};
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

/// The activation buffers of a decoder layer's forward pass, allocated once and resized (without
/// reallocating once they are large enough) for each pass; every layer of a model shares them.
pub struct LayerScratch<B: Backend> {
    normed: B::Buf,
    qkv: B::Buf,
    attn: B::Buf,
    projected: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    act: B::Buf,
}

impl<B: Backend> LayerScratch<B> {
    /// Empty buffers (they grow on the first pass).
    pub fn new(backend: &B) -> Result<Self> {
        let empty = || backend.zeros(0);
        Ok(Self { normed: empty()?, qkv: empty()?, attn: empty()?, projected: empty()?, gate: empty()?, up: empty()?, act: empty()? })
    }

    /// Size every buffer for `rows` rows of a layer of `dims`.
    fn fit(&mut self, backend: &B, dims: &LayerDims, rows: usize) -> Result<()> {
        let (d, h) = (dims.dim, dims.hidden);
        for (buf, width) in [(&mut self.normed, d), (&mut self.qkv, 3 * d), (&mut self.attn, d), (&mut self.projected, d), (&mut self.gate, h), (&mut self.up, h), (&mut self.act, h)] {
            backend.resize(buf, rows * width)?;
        }
        Ok(())
    }
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
    /// values for the rows into `pool` at the plan's slots; `scratch` holds the intermediates.
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
        plan: &B::Plan,
        scratch: &mut LayerScratch<B>,
    ) -> Result<()> {
        let (d, h) = (dims.dim, dims.hidden);
        scratch.fit(backend, dims, rows)?;
        let LayerScratch { normed, qkv, attn, projected, gate, up, act } = scratch;
        let norm = |weight| RmsNorm { weight, eps: dims.eps };
        let heads = (rows, dims.n_head, dims.head_dim());
        backend.norm_qkv_rope_kv_write(x, norm(&self.attention_norm), &self.wqkv, heads, rope, (pool, layer), plan, normed, qkv)?;
        backend.attention(qkv, pool, layer, plan, attn)?;
        backend.linear_add(attn, &self.wo, GemmShape { rows, k: d, n: d }, projected, x)?;
        backend.norm_linear_swiglu(x, norm(&self.ffn_norm), [&self.w1, &self.w3], GemmShape { rows, k: d, n: h }, normed, [gate, up], act)?;
        backend.linear_add(act, &self.w2, GemmShape { rows, k: h, n: d }, projected, x)
    }
}
