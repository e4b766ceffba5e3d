//! The LlamaGen class-conditional GPT, generic over the backend.

use std::sync::Arc;

use crate::backend::{Backend, KvShape};
use crate::error::{Error, Result};
use crate::kv::PagedKvCache;
use crate::model::layer::{DecoderLayer, KvRows, LayerDims};
use crate::model::rope::rope_table_2d;
use crate::model::step::{place_rows, StepOutput, StepRow, TokenInput};
use crate::weights::{GptConfig, WeightFile};

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
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// An empty paged KV cache for this model.
    pub fn new_cache(&self, backend: &B, num_blocks: usize, block_size: usize) -> Result<PagedKvCache<B>> {
        let shape = KvShape { n_layer: self.config.n_layer, num_blocks, block_size, n_head: self.config.n_head, head_dim: self.config.head_dim() };
        PagedKvCache::new(backend, shape)
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

    /// Embed the rows' input tokens into a `[rows, dim]` buffer.
    pub fn embed(&self, backend: &B, rows: &[StepRow]) -> Result<B::Buf> {
        self.check_inputs(rows)?;
        let d = self.config.dim;
        let mut x = backend.zeros(rows.len() * d)?;
        let (mut class_ids, mut class_rows, mut image_ids, mut image_rows) = (vec![], vec![], vec![], vec![]);
        for (r, row) in rows.iter().enumerate() {
            match row.input {
                TokenInput::Class(c) => {
                    class_ids.push(c);
                    class_rows.push(r as u32);
                }
                TokenInput::Image(t) => {
                    image_ids.push(t);
                    image_rows.push(r as u32);
                }
            }
        }
        backend.embedding(&self.cls_embedding, &class_ids, &class_rows, d, &mut x)?;
        backend.embedding(&self.tok_embeddings, &image_ids, &image_rows, d, &mut x)?;
        Ok(x)
    }

    /// Final norm and output head: logits for the `[rows, dim]` pre-norm states `hidden`.
    pub fn head(&self, backend: &B, hidden: &B::Buf, rows: usize) -> Result<Vec<f32>> {
        let (d, v) = (self.config.dim, self.config.vocab_size);
        let mut normed = backend.zeros(rows * d)?;
        backend.rms_norm(hidden, &self.norm, self.dims.eps, d, &mut normed)?;
        let mut logits = backend.zeros(rows * v)?;
        backend.linear(&normed, &self.output, rows, d, v, &mut logits)?;
        backend.download(&logits)
    }

    /// Run the rows through the model, writing their keys and values into `cache`.
    pub fn forward(&self, backend: &B, cache: &mut PagedKvCache<B>, rows: &[StepRow]) -> Result<StepOutput> {
        let mut x = self.embed(backend, rows)?;
        let placement = place_rows(backend, cache, rows, self.config.max_seq_len())?;
        let kv = KvRows { slots: &placement.slots, positions: &placement.positions, layout: &placement.layout };
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward(backend, &self.dims, &mut x, rows.len(), cache.pool_mut(), i, &self.rope, &kv)?;
        }
        let logits = self.head(backend, &x, rows.len())?;
        Ok(StepOutput { logits, hidden: backend.download(&x)?, vocab: self.config.vocab_size, dim: self.config.dim })
    }
}
