//! The LlamaGen class-conditional GPT, generic over the backend.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Backend, Gather, KvDtype, KvShape};
use crate::error::{Error, Result};
use crate::kv::PagedKvCache;
use crate::model::layer::{DecoderLayer, LayerDims, LayerScratch};
use crate::model::rope::rope_table_2d;
use crate::model::step::{place_rows, StepOutput, StepRow, TokenInput};
use crate::weights::{GptConfig, WeightFile};

/// The plan gather of class tokens ([`Gpt::gathers`]).
pub const CLASS_GATHER: usize = 0;
/// The plan gather of image tokens ([`Gpt::gathers`]).
pub const IMAGE_GATHER: usize = 1;
/// The plan gather of drafted image tokens, read from the device tokens ([`Gpt::gathers`]).
pub const DRAFTED_GATHER: usize = 2;

/// What a forward pass leaves on the device: the caller's buffers, reused pass after pass.
pub struct ForwardOutput<B: Backend> {
    /// `[rows, dim]` last-layer hidden states before the final norm (the residual stream; the
    /// draft head's features).
    pub hidden: B::Buf,
    /// `[rows, vocab]` logits.
    pub logits: B::Buf,
}

impl<B: Backend> ForwardOutput<B> {
    /// Empty buffers (they grow on the first pass).
    pub fn new(backend: &B) -> Result<Self> {
        Ok(Self { hidden: backend.zeros(0)?, logits: backend.zeros(0)? })
    }

    /// Copy both back to the host (two downloads).
    pub fn download(&self, backend: &B, vocab: usize, dim: usize) -> Result<StepOutput> {
        Ok(StepOutput { logits: backend.download(&self.logits)?, hidden: backend.download(&self.hidden)?, vocab, dim })
    }
}

/// A loaded LlamaGen GPT (target or independent draft model).
pub struct Gpt<B: Backend> {
    config: GptConfig,
    dims: LayerDims,
    tok_embeddings: B::Weight,
    cls_embedding: B::Weight,
    layers: Vec<DecoderLayer<B>>,
    norm: B::Weight,
    output: B::Weight,
    rope: B::Buf,
    scratch: Mutex<GptScratch<B>>,
}

/// The intermediate activations of a forward pass, allocated once per model and reused by every
/// pass (they only grow when a pass has more rows than any before); the residual stream and the
/// logits are the caller's [`ForwardOutput`].
struct GptScratch<B: Backend> {
    layer: LayerScratch<B>,
    /// The final norm's output, `[rows, dim]`.
    normed: B::Buf,
}

/// Official tensor names and shapes of a GPT with `config`.
pub fn gpt_tensor_shapes(config: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let dims = layer_dims(config);
    let d = config.dim;
    let mut shapes = vec![
        ("tok_embeddings.weight".to_string(), vec![config.vocab_size, d]),
        ("cls_embedding.embedding_table.weight".to_string(), vec![config.num_classes + 1, d]),
    ];
    for i in 0..config.n_layer {
        shapes.extend(dims.tensor_shapes(&format!("layers.{i}.")));
    }
    shapes.push(("norm.weight".to_string(), vec![d]));
    shapes.push(("output.weight".to_string(), vec![config.vocab_size, d]));
    shapes
}

fn layer_dims(config: &GptConfig) -> LayerDims {
    LayerDims { dim: config.dim, n_head: config.n_head, hidden: config.ffn_hidden(), eps: config.norm_eps as f32 }
}

impl<B: Backend> Gpt<B> {
    /// Load the model described by `config` from `file`.
    pub fn load(backend: &B, file: &Arc<WeightFile>, config: &GptConfig) -> Result<Self> {
        let dims = layer_dims(config);
        let (d, v) = (config.dim, config.vocab_size);
        let layers = (0..config.n_layer)
            .map(|i| DecoderLayer::load(backend, file, &format!("layers.{i}."), &dims))
            .collect::<Result<Vec<_>>>()?;
        let rope = rope_table_2d(config.grid_size(), config.head_dim(), config.rope_base, config.cls_token_num);
        Ok(Self {
            config: config.clone(),
            dims,
            tok_embeddings: backend.load_weight(file, "tok_embeddings.weight", &[v, d])?,
            cls_embedding: backend.load_weight(file, "cls_embedding.embedding_table.weight", &[config.num_classes + 1, d])?,
            layers,
            norm: backend.load_weight(file, "norm.weight", &[d])?,
            output: backend.load_weight(file, "output.weight", &[v, d])?,
            rope: backend.upload(&rope)?,
            scratch: Mutex::new(GptScratch { layer: LayerScratch::new(backend)?, normed: backend.zeros(0)? }),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The geometry of a KV pool of `num_blocks` blocks for this model.
    pub fn kv_shape(&self, num_blocks: usize, block_size: usize) -> KvShape {
        KvShape { n_layer: self.config.n_layer, num_blocks, block_size, n_head: self.config.n_head, head_dim: self.config.head_dim(), dtype: KvDtype::F32 }
    }

    /// An empty paged KV cache for this model.
    pub fn new_cache(&self, backend: &B, num_blocks: usize, block_size: usize) -> Result<PagedKvCache<B>> {
        PagedKvCache::new(backend, self.kv_shape(num_blocks, block_size))
    }

    /// The token embedding table (shared with a draft head).
    pub fn tok_embeddings(&self) -> &B::Weight {
        &self.tok_embeddings
    }

    /// The RoPE table (shared with a draft head).
    pub fn rope(&self) -> &B::Buf {
        &self.rope
    }

    /// Check that every row's token is valid for this model.
    fn check_inputs(&self, rows: &[StepRow]) -> Result<()> {
        for row in rows {
            match row.input {
                TokenInput::Class(c) if c as usize > self.config.num_classes => {
                    return Err(Error::InvalidRequest(format!(
                        "class id {c} out of range: the model has classes 0..{} (and {} = unconditional)",
                        self.config.num_classes - 1,
                        self.config.num_classes
                    )))
                }
                TokenInput::Image(t) if t as usize >= self.config.vocab_size => {
                    return Err(Error::InvalidRequest(format!("image token {t} outside the vocabulary of {}", self.config.vocab_size)))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The embedding gathers of `rows` for a pass's plan: class tokens from the class table
    /// ([`CLASS_GATHER`]), image tokens from the token table ([`IMAGE_GATHER`]), drafted tokens
    /// from the token table through the device tokens ([`DRAFTED_GATHER`]). Checks the tokens.
    pub fn gathers(&self, rows: &[StepRow]) -> Result<Vec<Gather>> {
        self.check_inputs(rows)?;
        let mut gathers = vec![Gather::default(), Gather::default(), Gather { indirect: true, ..Gather::default() }];
        for (r, row) in rows.iter().enumerate() {
            let (part, id) = match row.input {
                TokenInput::Class(c) => (CLASS_GATHER, c),
                TokenInput::Image(t) => (IMAGE_GATHER, t),
                TokenInput::Drafted(i) => (DRAFTED_GATHER, i),
            };
            gathers[part].ids.push(id);
            gathers[part].rows.push(r as u32);
        }
        Ok(gathers)
    }

    /// Embed the `rows` input tokens of `plan` (built with [`Gpt::gathers`]) into `x`, resized to
    /// `[rows, dim]`; drafted tokens are read from `tokens`.
    pub fn embed(&self, backend: &B, rows: usize, plan: &B::Plan, tokens: Option<&B::Words>, x: &mut B::Buf) -> Result<()> {
        let d = self.config.dim;
        backend.resize(x, rows * d)?;
        backend.embedding(&self.cls_embedding, plan, CLASS_GATHER, None, d, x)?;
        backend.embedding(&self.tok_embeddings, plan, IMAGE_GATHER, None, d, x)?;
        backend.embedding(&self.tok_embeddings, plan, DRAFTED_GATHER, tokens, d, x)
    }

    /// Final norm and output head: `logits` (resized to `[rows, vocab]`) for the `[rows, dim]`
    /// pre-norm states `hidden`.
    pub fn head(&self, backend: &B, hidden: &B::Buf, rows: usize, logits: &mut B::Buf) -> Result<()> {
        self.head_with(backend, hidden, rows, &mut self.lock_scratch()?.normed, logits)
    }

    fn head_with(&self, backend: &B, hidden: &B::Buf, rows: usize, normed: &mut B::Buf, logits: &mut B::Buf) -> Result<()> {
        let (d, v) = (self.config.dim, self.config.vocab_size);
        backend.resize(normed, rows * d)?;
        backend.resize(logits, rows * v)?;
        backend.rms_norm(hidden, &self.norm, self.dims.eps, d, normed)?;
        backend.linear(normed, &self.output, rows, d, v, logits)
    }

    fn lock_scratch(&self) -> Result<MutexGuard<'_, GptScratch<B>>> {
        self.scratch.lock().map_err(|_| Error::Backend("a forward pass panicked earlier; its workspace is unusable".into()))
    }

    /// Run the `rows` rows of an uploaded `plan` (its KV slots already placed in `pool`'s cache)
    /// through the model, writing their keys and values into `pool` and the hidden states and
    /// logits into `out`; nothing leaves the device and nothing is allocated once the buffers
    /// have grown. Drafted input tokens are read from `tokens`.
    pub fn forward_planned(&self, backend: &B, pool: &mut B::KvPool, plan: &B::Plan, rows: usize, tokens: Option<&B::Words>, out: &mut ForwardOutput<B>) -> Result<()> {
        let mut guard = self.lock_scratch()?;
        let scratch = &mut *guard;
        self.embed(backend, rows, plan, tokens, &mut out.hidden)?;
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward(backend, &self.dims, &mut out.hidden, rows, pool, i, &self.rope, plan, &mut scratch.layer)?;
        }
        self.head_with(backend, &out.hidden, rows, &mut scratch.normed, &mut out.logits)
    }

    /// Run the rows through the model, writing their keys and values into `cache`, and return
    /// the logits and hidden states on the host: one plan upload and two downloads (for tests
    /// and one-off passes; the decoding loops keep the outputs on the device).
    pub fn forward(&self, backend: &B, cache: &mut PagedKvCache<B>, rows: &[StepRow]) -> Result<StepOutput> {
        let plan = backend.upload_plan(place_rows(backend, cache, rows, self.config.max_seq_len(), self.gathers(rows)?)?)?;
        let mut out = ForwardOutput::new(backend)?;
        self.forward_planned(backend, cache.pool_mut(), &plan, rows.len(), None, &mut out)?;
        out.download(backend, self.config.vocab_size, self.config.dim)
    }
}
