//! The MAR transformer (`forward_mae_encoder` + `forward_mae_decoder`): tokens, mask and class
//! in, one head condition `z` per requested position out.

use std::sync::Arc;

use crate::backend::{Backend, RowGather};
use crate::error::Result;
use crate::model::mar::block::{BlockDims, BlockStack};
use crate::model::mar::pass::{MarBatchInput, MarInput, MarPass};
use crate::model::modules::{LayerNorm, Linear};
use crate::weights::{MarConfig, WeightFile};

/// A loaded MAR transformer (its DiffLoss head is [`crate::model::diffusion::DiffusionHead`]).
pub struct MarModel<B: Backend> {
    config: MarConfig,
    /// `z_proj.weight` (its bias is the last row of `encoder_addends`).
    z_proj: B::Weight,
    /// `[class_num + 2, De]`: `class_emb` rows, `fake_latent`, `z_proj.bias`: what an encoder
    /// row adds to `z_proj(token)` (a buffer row's token is zero).
    encoder_addends: B::Buf,
    encoder_pos: B::Buf,
    z_proj_ln: LayerNorm<B>,
    encoder: BlockStack<B>,
    decoder_embed: Linear<B>,
    /// `mask_token`, `[1, Dd]`.
    mask_token: B::Buf,
    decoder_pos: B::Buf,
    decoder: BlockStack<B>,
    diffusion_pos: B::Buf,
}

/// The f32 values of tensor `name` (checked to have `shape`).
fn host_values(file: &WeightFile, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(file.tensor_with_shape(name, shape)?.to_f32().into_owned())
}

impl<B: Backend> MarModel<B> {
    /// Load the transformer of `config` from `file` (official tensor names).
    pub fn load(backend: &B, file: &Arc<WeightFile>, config: &MarConfig) -> Result<Self> {
        let (de, dd, c) = (config.encoder_embed_dim, config.decoder_embed_dim, config.token_dim());
        let (full, seq) = (config.buffer_size + config.seq_len(), config.seq_len());
        let table = |name: &str, shape: &[usize]| -> Result<B::Buf> { backend.upload(&host_values(file, name, shape)?) };
        let mut addends = host_values(file, "class_emb.weight", &[config.class_num, de])?;
        addends.extend(host_values(file, "fake_latent", &[1, de])?);
        addends.extend(host_values(file, "z_proj.bias", &[de])?);
        let dims = |width, n_head| BlockDims { width, n_head, hidden: config.mlp_hidden(width), eps: config.norm_eps };
        Ok(Self {
            config: config.clone(),
            z_proj: backend.load_weight(file, "z_proj.weight", &[de, c])?,
            encoder_addends: backend.upload(&addends)?,
            encoder_pos: table("encoder_pos_embed_learned", &[1, full, de])?,
            z_proj_ln: LayerNorm::load(backend, file, "z_proj_ln", de, config.norm_eps)?,
            encoder: BlockStack::load(backend, file, "encoder", config.encoder_depth, dims(de, config.encoder_num_heads))?,
            decoder_embed: Linear::load(backend, file, "decoder_embed", de, dd)?,
            mask_token: table("mask_token", &[1, 1, dd])?,
            decoder_pos: table("decoder_pos_embed_learned", &[1, full, dd])?,
            decoder: BlockStack::load(backend, file, "decoder", config.decoder_depth, dims(dd, config.decoder_num_heads))?,
            diffusion_pos: table("diffusion_pos_embed_learned", &[1, seq, dd])?,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &MarConfig {
        &self.config
    }

    /// The head conditions `z` of `input`: `[sequences * positions, decoder_embed_dim]`,
    /// sequence-major (all positions of the first class, then of the next).
    pub fn conditions(&self, backend: &B, input: &MarInput) -> Result<B::Buf> {
        self.run_pass(backend, &MarPass::new(&self.config, input)?)
    }

    /// The head conditions of a batch of images, each with several queries over its tokens, in
    /// one pass: `[outputs, decoder_embed_dim]`, branch-major (per branch, every image's
    /// queries' positions in order; see [`MarPass::batch`]).
    pub fn batch_conditions(&self, backend: &B, images: &[MarBatchInput]) -> Result<B::Buf> {
        self.run_pass(backend, &MarPass::batch(&self.config, images)?)
    }

    /// Encoder and decoder over a built pass.
    fn run_pass(&self, backend: &B, pass: &MarPass) -> Result<B::Buf> {
        let words = pass.upload(backend)?;
        let encoded = self.encode(backend, pass, &words)?;
        self.decode(backend, pass, &words, &encoded)
    }

    /// The encoder output after `encoder_norm`: `[enc_rows, encoder_embed_dim]`, per sequence
    /// the buffer rows and then the visible tokens in position order. `words` is
    /// [`MarPass::upload`]'s.
    pub fn encode(&self, backend: &B, pass: &MarPass, words: &B::Words) -> Result<B::Buf> {
        let (de, rows) = (self.config.encoder_embed_dim, pass.enc_rows());
        let (mut x, mut tmp, mut out) = (backend.upload(&pass.tokens)?, backend.zeros(0)?, backend.zeros(0)?);
        backend.resize(&mut out, rows * de)?;
        backend.linear(&x, &self.z_proj, rows, self.config.token_dim(), de, &mut out)?;
        add_rows(backend, &mut out, &self.encoder_addends, de, words, pass.enc_addend, &mut tmp)?;
        add_rows(backend, &mut out, &self.encoder_pos, de, words, pass.enc_pos, &mut tmp)?;
        self.z_proj_ln.forward(backend, &out, rows, &mut x)?;
        self.encoder.forward(backend, &mut x, &pass.enc_lens, &mut out)?;
        Ok(out)
    }

    /// The head conditions from the encoder output: `decoder_embed`, scattered back to every
    /// position with `mask_token` at the masked ones, the decoder, `decoder_norm`, then the
    /// requested positions plus `diffusion_pos_embed_learned`.
    pub fn decode(&self, backend: &B, pass: &MarPass, words: &B::Words, encoded: &B::Buf) -> Result<B::Buf> {
        let dd = self.config.decoder_embed_dim;
        let rows = pass.seqs * pass.full_len;
        let (mut embedded, mut x, mut tmp) = (backend.zeros(0)?, backend.zeros(0)?, backend.zeros(0)?);
        self.decoder_embed.forward(backend, encoded, pass.enc_rows(), &mut embedded)?;
        backend.resize(&mut x, rows * dd)?;
        backend.gather_rows(&embedded, dd, words, pass.dec_rows, &mut x)?;
        add_rows(backend, &mut x, &self.mask_token, dd, words, pass.dec_mask, &mut tmp)?;
        add_rows(backend, &mut x, &self.decoder_pos, dd, words, pass.dec_pos, &mut tmp)?;
        self.decoder.forward(backend, &mut x, &vec![pass.full_len; pass.seqs], &mut embedded)?;
        let mut z = backend.zeros(0)?;
        backend.resize(&mut z, pass.outputs * dd)?;
        backend.gather_rows(&embedded, dd, words, pass.out_rows, &mut z)?;
        add_rows(backend, &mut z, &self.diffusion_pos, dd, words, pass.out_pos, &mut tmp)?;
        Ok(z)
    }
}

/// `acc += table[rows]` for the rows of `gather` (an index naming no row adds zeros), through
/// `tmp`.
fn add_rows<B: Backend>(backend: &B, acc: &mut B::Buf, table: &B::Buf, width: usize, words: &B::Words, gather: RowGather, tmp: &mut B::Buf) -> Result<()> {
    backend.resize(tmp, gather.rows * width)?;
    backend.gather_rows(table, width, words, gather, tmp)?;
    backend.add_assign(acc, tmp)
}
