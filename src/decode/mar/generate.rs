//! MAR generation of a batch of images (`sample_tokens`, spec §1.4) with their randomness given
//! from outside: the order and, per token, the diffusion head's `x_T` and step noise (CSpD's
//! layout, so a draft and a target can share it).

use crate::backend::Backend;
use crate::decode::mar::predict::{ImageQueries, MarPredictor, StepQuery, TokenPredictor};
use crate::decode::mar::schedule::{step_masks, CfgSchedule};
use crate::error::{Error, Result};
use crate::model::diffusion::{DiffusionHead, DiffusionSchedule};
use crate::model::mar::MarModel;
use crate::sampling::Rng;

/// The sampling settings of a MAR generation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarSampling {
    /// Generation steps (1 to the number of tokens; as many as tokens = one token per step).
    pub num_iter: usize,
    /// Classifier-free guidance scale (1 = no guidance, no unconditional branch).
    pub cfg: f64,
    /// How the scale follows the steps.
    pub cfg_schedule: CfgSchedule,
    /// Multiplies the diffusion head's noise std (τ_s).
    pub temperature: f64,
}

impl Default for MarSampling {
    /// MAR's `main_mar.py` defaults: 64 steps, no guidance (linear schedule), temperature 1.
    fn default() -> Self {
        Self { num_iter: 64, cfg: 1.0, cfg_schedule: CfgSchedule::Linear, temperature: 1.0 }
    }
}

impl MarSampling {
    /// Error unless the settings can generate `seq_len` tokens.
    pub fn validate(&self, seq_len: usize) -> Result<()> {
        if self.num_iter == 0 || self.num_iter > seq_len {
            return Err(Error::InvalidRequest(format!("num_iter {} must be between 1 and the {seq_len} tokens of an image", self.num_iter)));
        }
        if !(self.cfg.is_finite() && self.cfg >= 1.0) {
            return Err(Error::InvalidRequest(format!("cfg {} must be a finite scale of at least 1", self.cfg)));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::InvalidRequest(format!("temperature {} must be positive", self.temperature)));
        }
        Ok(())
    }

    /// Whether the unconditional branch runs.
    pub fn guided(&self) -> bool {
        self.cfg != 1.0
    }

    /// The guidance scale of a step after which `mask_len` of `seq_len` tokens are still
    /// masked, or `None` without guidance.
    pub fn step_guidance(&self, mask_len: usize, seq_len: usize) -> Option<f64> {
        self.guided().then(|| self.cfg_schedule.scale(self.cfg, mask_len, seq_len))
    }
}

/// The randomness of one MAR image: a generation order and the head noise of every token.
#[derive(Clone, Debug, PartialEq)]
pub struct MarNoise {
    /// A permutation of the token positions; `order[..k]` are masked when `k` remain.
    pub order: Vec<usize>,
    /// `x_T` per token, `[seq_len, C]`.
    pub start: Vec<f32>,
    /// `ε_k` per token and step, `[seq_len, K, C]`.
    pub steps: Vec<f32>,
}

impl MarNoise {
    /// Draw the order (uniform permutation) and standard normal noise for `seq_len` tokens of
    /// `token_dim` channels over `head_steps` diffusion steps.
    pub fn draw(rng: &mut Rng, seq_len: usize, token_dim: usize, head_steps: usize) -> Self {
        let mut order: Vec<usize> = (0..seq_len).collect();
        for i in (1..seq_len).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut normals = |len: usize| (0..len).map(|_| rng.standard_normal() as f32).collect::<Vec<f32>>();
        let start = normals(seq_len * token_dim);
        Self { order, start, steps: normals(seq_len * head_steps * token_dim) }
    }

    /// Error unless this noise fits `seq_len` tokens of `token_dim` channels over `head_steps`.
    pub fn check(&self, seq_len: usize, token_dim: usize, head_steps: usize) -> Result<()> {
        let mut seen = vec![false; seq_len];
        let permutation = self.order.len() == seq_len && self.order.iter().all(|&p| p < seq_len && !std::mem::replace(&mut seen[p], true));
        if !permutation || self.start.len() != seq_len * token_dim || self.steps.len() != seq_len * head_steps * token_dim {
            return Err(Error::InvalidRequest(format!(
                "MAR noise must hold a permutation of {seq_len} positions, {} start values and {} step values",
                seq_len * token_dim,
                seq_len * head_steps * token_dim
            )));
        }
        Ok(())
    }

    /// The head noise (`x_T` rows, step rows) of the tokens at `positions`, in that order.
    pub fn gather(&self, positions: &[usize], token_dim: usize, head_steps: usize) -> (Vec<f32>, Vec<f32>) {
        let rows = |values: &[f32], width: usize| positions.iter().flat_map(|&p| values[p * width..(p + 1) * width].iter().copied()).collect();
        (rows(&self.start, token_dim), rows(&self.steps, head_steps * token_dim))
    }
}

/// One image of a MAR batch: its class and its randomness.
#[derive(Clone, Copy, Debug)]
pub struct MarImage<'a> {
    /// The class of the conditional branch.
    pub class: usize,
    /// The order and head noise.
    pub noise: &'a MarNoise,
}

/// The tokens (`[seq_len, C]`) of one image of `class`: `sampling.num_iter` steps, each one
/// transformer pass over the current tokens and mask (with the unconditional branch when
/// guided) and one head run over the positions it predicts, with the noise of `noise`.
pub fn generate_tokens<B: Backend>(
    backend: &B,
    model: &MarModel<B>,
    head: &DiffusionHead<B>,
    schedule: &DiffusionSchedule,
    class: usize,
    sampling: &MarSampling,
    noise: &MarNoise,
) -> Result<Vec<f32>> {
    let mut tokens = generate_batch(&MarPredictor { backend, model, head, schedule }, sampling, &[MarImage { class, noise }])?;
    Ok(tokens.remove(0))
}

/// The tokens of a batch of images with any predictor, in lockstep: each step is one batched
/// prediction over every image's current tokens and mask, and its positions take the head's
/// final mean `μ_0` (MAR's sampler adds no noise at the last step). Each image gets the tokens
/// it gets alone.
pub fn generate_batch<P: TokenPredictor>(predictor: &P, sampling: &MarSampling, images: &[MarImage]) -> Result<Vec<Vec<f32>>> {
    let (seq_len, c) = (predictor.seq_len(), predictor.token_dim());
    sampling.validate(seq_len)?;
    for image in images {
        image.noise.check(seq_len, c, predictor.head_steps())?;
    }
    let mut tokens = vec![vec![0f32; seq_len * c]; images.len()];
    let mut masks = vec![vec![true; seq_len]; images.len()];
    for step in 0..sampling.num_iter {
        let steps: Vec<_> = images.iter().zip(&masks).map(|(image, mask)| step_masks(&image.noise.order, step, sampling.num_iter, mask)).collect();
        let guidance: Vec<Option<Vec<f64>>> = steps.iter().map(|m| sampling.step_guidance(m.mask_len, seq_len).map(|scale| vec![scale; m.predict.len()])).collect();
        let queries: Vec<[StepQuery; 1]> = steps.iter().zip(&masks).zip(&guidance).map(|((m, mask), g)| [StepQuery { mask, positions: &m.predict, guidance: g.as_deref() }]).collect();
        // The clamped schedule reveals the same count in every image: all or none predict.
        if steps.iter().any(|m| !m.predict.is_empty()) {
            let asked: Vec<ImageQueries> = images.iter().zip(&tokens).zip(&queries).map(|((image, tokens), queries)| ImageQueries { class: image.class, tokens, queries, noise: image.noise }).collect();
            let drawn = predictor.predict(&asked, sampling.temperature)?;
            for ((tokens, m), drawn) in tokens.iter_mut().zip(&steps).zip(drawn) {
                for (&p, token) in m.predict.iter().zip(drawn.tokens().chunks(c)) {
                    tokens[p * c..(p + 1) * c].copy_from_slice(token);
                }
            }
        }
        masks = steps.into_iter().map(|m| m.next).collect();
    }
    Ok(tokens)
}
