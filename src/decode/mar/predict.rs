//! One MAR prediction as the decoding loops see it: a transformer pass over the tokens under one
//! or more masks, then the diffusion head over the wanted positions with their own noise. The
//! plain loop asks one mask per step; CSpD's target verifies a window in one pass with one mask
//! per drafted step (or one prefix mask for every position of the window).

use crate::backend::Backend;
use crate::decode::mar::MarNoise;
use crate::error::{Error, Result};
use crate::model::diffusion::{sample, DiffusionHead, DiffusionSchedule, HeadNoise, HeadSample};
use crate::model::mar::{MarBatchInput, MarModel, MarQuery};

/// One mask over the tokens, the positions predicted under it and their guidance.
#[derive(Clone, Copy, Debug)]
pub struct StepQuery<'a> {
    /// `[seq_len]`, true = masked (unknown).
    pub mask: &'a [bool],
    /// The positions to predict.
    pub positions: &'a [usize],
    /// One classifier-free guidance scale per position, or `None` without guidance (then no
    /// query of the same call may have any).
    pub guidance: Option<&'a [f64]>,
}

/// What a decoding loop needs of a MAR model: its shape and one batched prediction.
pub trait TokenPredictor {
    /// Tokens per image.
    fn seq_len(&self) -> usize;
    /// Channels of a token.
    fn token_dim(&self) -> usize;
    /// Steps `K` of the diffusion head (the noise holds `K` values per token and channel).
    fn head_steps(&self) -> usize;
    /// One forward pass answering every query over `tokens` (`[seq_len, C]`): the head's run per
    /// predicted position, queries in order and positions in query order, from the positions'
    /// own `noise`, with `temperature` (τ_s) on the head's step noise.
    fn predict(&self, tokens: &[f32], queries: &[StepQuery], noise: &MarNoise, temperature: f64) -> Result<HeadSample>;
}

/// A loaded MAR transformer and its diffusion head, predicting for one class.
pub struct MarPredictor<'a, B: Backend> {
    /// The backend both run on.
    pub backend: &'a B,
    /// The transformer.
    pub model: &'a MarModel<B>,
    /// Its diffusion head.
    pub head: &'a DiffusionHead<B>,
    /// The head's respaced schedule.
    pub schedule: &'a DiffusionSchedule,
    /// The class of the conditional branch.
    pub class: usize,
}

impl<B: Backend> TokenPredictor for MarPredictor<'_, B> {
    fn seq_len(&self) -> usize {
        self.model.config().seq_len()
    }

    fn token_dim(&self) -> usize {
        self.model.config().token_dim()
    }

    fn head_steps(&self) -> usize {
        self.schedule.steps()
    }

    /// One transformer pass (both guidance branches, every query a sequence of its own), then
    /// one head run over every predicted position.
    fn predict(&self, tokens: &[f32], queries: &[StepQuery], noise: &MarNoise, temperature: f64) -> Result<HeadSample> {
        let guided = queries.first().is_some_and(|q| q.guidance.is_some());
        if queries.iter().any(|q| q.guidance.is_some() != guided || q.guidance.is_some_and(|g| g.len() != q.positions.len())) {
            return Err(Error::InvalidRequest("a MAR prediction needs one guidance scale per position in every query, or none in any".into()));
        }
        let classes: &[Option<usize>] = if guided { &[Some(self.class), None] } else { &[Some(self.class)] };
        let masks: Vec<MarQuery> = queries.iter().map(|q| MarQuery { mask: q.mask, positions: q.positions }).collect();
        let z = self.model.batch_conditions(self.backend, &MarBatchInput { tokens, classes, queries: &masks })?;
        let positions: Vec<usize> = queries.iter().flat_map(|q| q.positions.iter().copied()).collect();
        let scales: Option<Vec<f64>> = guided.then(|| queries.iter().flat_map(|q| q.guidance.unwrap_or_default().iter().copied()).collect());
        let (start, steps) = noise.gather(&positions, self.token_dim(), self.head_steps());
        sample(self.backend, self.head, self.schedule, &z, scales.as_deref(), HeadNoise { start: &start, steps: &steps }, temperature)
    }
}
