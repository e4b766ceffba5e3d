//! The EAGLE/LANTERN-style draft head: one decoder layer fed with the target's features.
//!
//! At sequence position `k` the head reads `fc([tok_embeddings(s_k) ; f_{k-1}])`, where `f_{k-1}`
//! is the target's pre-norm last hidden state at `k-1` (or, beyond the verified prefix, the
//! head's own output there). Its output `g_k` goes through the target's final norm and output
//! head to draft the token at `k+1`, and is the feature of the next draft step.

use std::sync::{Arc, Mutex};

use crate::backend::{Backend, KvDtype, KvShape};
use crate::error::{Error, Result};
use crate::kv::{PagedKvCache, QueryVisibility};
use crate::model::gpt::{ForwardOutput, Gpt};
use crate::model::layer::{DecoderLayer, LayerDims, LayerScratch};
use crate::model::step::{place_rows, StepOutput, StepRow, TokenInput};
use crate::weights::{DraftHeadConfig, GptConfig, WeightFile};

/// A loaded draft head, used together with the target [`Gpt`] it was trained on.
pub struct DraftHead<B: Backend> {
    dims: LayerDims,
    fc: B::Weight,
    layer: DecoderLayer<B>,
    scratch: Mutex<DraftHeadScratch<B>>,
}

/// The head's intermediate activations, allocated once and reused by every pass.
struct DraftHeadScratch<B: Backend> {
    embedded: B::Buf,
    joined: B::Buf,
    layer: LayerScratch<B>,
}

fn head_dims(target: &GptConfig, config: &DraftHeadConfig) -> LayerDims {
    LayerDims { dim: target.dim, n_head: config.n_head, hidden: config.ffn_hidden(target.dim), eps: config.norm_eps as f32 }
}

/// The head's version of a target-indexed row: same RoPE position, KV index and visibility
/// shifted down by one (the head stores nothing for the class position).
pub fn head_row(row: StepRow) -> StepRow {
    let v = &row.visibility;
    StepRow {
        kv_pos: row.kv_pos.saturating_sub(1),
        visibility: QueryVisibility { seq: v.seq, prefix: v.prefix.saturating_sub(1), window_start: v.window_start.saturating_sub(1), window: v.window.clone() },
        ..row
    }
}

/// Tensor names and shapes of a draft head for a target of config `target`.
pub fn draft_head_tensor_shapes(target: &GptConfig, config: &DraftHeadConfig) -> Vec<(String, Vec<usize>)> {
    let d = target.dim;
    let mut shapes = vec![("fc.weight".to_string(), vec![d, 2 * d])];
    shapes.extend(head_dims(target, config).tensor_shapes("layer."));
    shapes
}

impl<B: Backend> DraftHead<B> {
    /// Load the head described by `config` for a target of config `target`.
    pub fn load(backend: &B, file: &Arc<WeightFile>, target: &GptConfig, config: &DraftHeadConfig) -> Result<Self> {
        let dims = head_dims(target, config);
        Ok(Self {
            fc: backend.load_weight(file, "fc.weight", &[target.dim, 2 * target.dim])?,
            layer: DecoderLayer::load(backend, file, "layer.", &dims)?,
            dims,
            scratch: Mutex::new(DraftHeadScratch { embedded: backend.zeros(0)?, joined: backend.zeros(0)?, layer: LayerScratch::new(backend)? }),
        })
    }

    /// The geometry of a KV pool of `num_blocks` blocks for the head's single layer.
    pub fn kv_shape(&self, num_blocks: usize, block_size: usize) -> KvShape {
        KvShape { n_layer: 1, num_blocks, block_size, n_head: self.dims.n_head, head_dim: self.dims.head_dim(), dtype: KvDtype::F32 }
    }

    /// An empty paged KV cache for the head's single layer.
    pub fn new_cache(&self, backend: &B, num_blocks: usize, block_size: usize) -> Result<PagedKvCache<B>> {
        PagedKvCache::new(backend, self.kv_shape(num_blocks, block_size))
    }

    /// Check that `rows` are image-token rows (the head has no class position).
    pub fn check_rows(rows: &[StepRow]) -> Result<()> {
        match rows.iter().find(|r| matches!(r.input, TokenInput::Class(_))) {
            Some(row) => Err(Error::InvalidRequest(format!("draft head rows must be image tokens (position {})", row.position))),
            None => Ok(()),
        }
    }

    /// Run the `rows` rows of an uploaded `plan` (image tokens only, KV indices shifted by
    /// [`head_row`]) with their input `features` (`[rows, dim]` on the device): the draft logits
    /// (through `target`'s norm and output) and the head's output features (the next draft
    /// step's input) land in `out`. Drafted input tokens are read from `tokens`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_planned(
        &self,
        backend: &B,
        target: &Gpt<B>,
        pool: &mut B::KvPool,
        plan: &B::Plan,
        rows: usize,
        tokens: Option<&B::Words>,
        features: &B::Buf,
        out: &mut ForwardOutput<B>,
    ) -> Result<()> {
        let d = self.dims.dim;
        let mut guard = self.scratch.lock().map_err(|_| Error::Backend("a draft-head pass panicked earlier; its workspace is unusable".into()))?;
        let DraftHeadScratch { embedded, joined, layer } = &mut *guard;
        target.embed(backend, rows, plan, tokens, embedded)?;
        backend.resize(joined, rows * 2 * d)?;
        backend.concat_rows(embedded, d, features, d, joined)?;
        backend.resize(&mut out.hidden, rows * d)?;
        backend.linear(joined, &self.fc, rows, 2 * d, d, &mut out.hidden)?;
        self.layer.forward(backend, &self.dims, &mut out.hidden, rows, pool, 0, target.rope(), plan, layer)?;
        target.head(backend, &out.hidden, rows, &mut out.logits)
    }

    /// [`Self::forward_planned`] from host rows and features, returning the outputs on the host
    /// (for tests and one-off passes).
    pub fn forward(&self, backend: &B, target: &Gpt<B>, cache: &mut PagedKvCache<B>, rows: &[StepRow], features: &[f32]) -> Result<StepOutput> {
        let d = self.dims.dim;
        if features.len() != rows.len() * d {
            return Err(Error::InvalidRequest(format!("draft head got {} feature values for {} rows of width {d}", features.len(), rows.len())));
        }
        Self::check_rows(rows)?;
        let gathers = target.gathers(rows)?;
        let plan = backend.upload_plan(place_rows(backend, cache, rows, target.config().max_seq_len(), gathers)?)?;
        let mut out = ForwardOutput::new(backend)?;
        self.forward_planned(backend, target, cache.pool_mut(), &plan, rows.len(), None, &backend.upload(features)?, &mut out)?;
        out.download(backend, target.config().vocab_size, d)
    }
}
