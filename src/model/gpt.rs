//! The LlamaGen class-conditional GPT, generic over the backend.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Backend, Gather, KvShape};
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

/// The activation buffers of a forward pass, allocated once per model and reused by every pass
/// (they only grow when a pass has more rows than any before).
struct GptScratch<B: Backend> {
    /// The residual stream, `[rows, dim]`.
    x: B::Buf,
    layer: LayerScratch<B>,
    head: HeadScratch<B>,
}

/// Buffers of the final norm and output projection.
struct HeadScratch<B: Backend> {
    normed: B::Buf,
    logits: B::Buf,
}

impl<B: Backend> HeadScratch<B> {
    fn new(backend: &B) -> Result<Self> {
        Ok(Self { normed: backend.zeros(0)?, logits: backend.zeros(0)? })
    }
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
            scratch: Mutex::new(GptScratch { x: backend.zeros(0)?, layer: LayerScratch::new(backend)?, head: HeadScratch::new(backend)? }),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The geometry of a KV pool of `num_blocks` blocks for this model.
    pub fn kv_shape(&self, num_blocks: usize, block_size: usize) -> KvShape {
        KvShape { n_layer: self.config.n_layer, num_blocks, block_size, n_head: self.config.n_head, head_dim: self.config.head_dim() }
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
    /// ([`CLASS_GATHER`]), image tokens from the token table ([`IMAGE_GATHER`]). Checks the tokens.
    pub fn gathers(&self, rows: &[StepRow]) -> Result<Vec<Gather>> {
        self.check_inputs(rows)?;
        let (mut class, mut image) = (Gather::default(), Gather::default());
        for (r, row) in rows.iter().enumerate() {
            let (part, id) = match row.input {
                TokenInput::Class(c) => (&mut class, c),
                TokenInput::Image(t) => (&mut image, t),
            };
            part.ids.push(id);
            part.rows.push(r as u32);
        }
        Ok(vec![class, image])
    }

    /// Embed the `rows` input tokens of `plan` (built with [`Gpt::gathers`]) into `x`, resized to
    /// `[rows, dim]`.
    pub fn embed(&self, backend: &B, rows: usize, plan: &B::Plan, x: &mut B::Buf) -> Result<()> {
        let d = self.config.dim;
        backend.resize(x, rows * d)?;
        backend.embedding(&self.cls_embedding, plan, CLASS_GATHER, d, x)?;
        backend.embedding(&self.tok_embeddings, plan, IMAGE_GATHER, d, x)
    }

    /// Final norm and output head: logits for the `[rows, dim]` pre-norm states `hidden`.
    pub fn head(&self, backend: &B, hidden: &B::Buf, rows: usize) -> Result<Vec<f32>> {
        self.head_with(backend, hidden, rows, &mut self.lock_scratch()?.head)
    }

    fn head_with(&self, backend: &B, hidden: &B::Buf, rows: usize, scratch: &mut HeadScratch<B>) -> Result<Vec<f32>> {
        let (d, v) = (self.config.dim, self.config.vocab_size);
        backend.resize(&mut scratch.normed, rows * d)?;
        backend.resize(&mut scratch.logits, rows * v)?;
        backend.rms_norm(hidden, &self.norm, self.dims.eps, d, &mut scratch.normed)?;
        backend.linear(&scratch.normed, &self.output, rows, d, v, &mut scratch.logits)?;
        backend.download(&scratch.logits)
    }

    fn lock_scratch(&self) -> Result<MutexGuard<'_, GptScratch<B>>> {
        self.scratch.lock().map_err(|_| Error::Backend("a forward pass panicked earlier; its workspace is unusable".into()))
    }

    /// Run the rows through the model, writing their keys and values into `cache`. One plan
    /// upload per pass; the activations live in the model's workspace.
    pub fn forward(&self, backend: &B, cache: &mut PagedKvCache<B>, rows: &[StepRow]) -> Result<StepOutput> {
        let gathers = self.gathers(rows)?;
        let mut guard = self.lock_scratch()?;
        let scratch = &mut *guard;
        let plan = backend.upload_plan(place_rows(backend, cache, rows, self.config.max_seq_len(), gathers)?)?;
        self.embed(backend, rows.len(), &plan, &mut scratch.x)?;
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward(backend, &self.dims, &mut scratch.x, rows.len(), cache.pool_mut(), i, &self.rope, &plan, &mut scratch.layer)?;
        }
        let logits = self.head_with(backend, &scratch.x, rows.len(), &mut scratch.head)?;
        Ok(StepOutput { logits, hidden: backend.download(&scratch.x)?, vocab: self.config.vocab_size, dim: self.config.dim })
    }
}
