//! One MAR prediction as the decoding loops see it: a transformer pass over a batch of images,
//! each with its tokens under one or more masks, then the diffusion head over every wanted
//! position of every image with the positions' own noise. The plain loop asks one mask per
//! image and step; CSpD's target verifies a window in one pass with one mask per drafted step
//! (or one prefix mask for every position of the window).

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

/// One image's share of a batched prediction.
#[derive(Clone, Copy, Debug)]
pub struct ImageQueries<'a> {
    /// The class of the conditional branch.
    pub class: usize,
    /// The image's tokens, `[seq_len, C]`.
    pub tokens: &'a [f32],
    /// Its masks and wanted positions.
    pub queries: &'a [StepQuery<'a>],
    /// Its order and head noise.
    pub noise: &'a MarNoise,
}

impl ImageQueries<'_> {
    /// The predicted positions, queries in order.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.queries.iter().flat_map(|q| q.positions.iter().copied())
    }
}

/// What a decoding loop needs of a MAR model: its shape and one batched prediction.
pub trait TokenPredictor {
    /// Tokens per image.
    fn seq_len(&self) -> usize;
    /// Channels of a token.
    fn token_dim(&self) -> usize;
    /// Steps `K` of the diffusion head (the noise holds `K` values per token and channel).
    fn head_steps(&self) -> usize;
    /// One forward pass answering every query of every image: per image, the head's run per
    /// predicted position (queries in order, positions in query order), from the positions' own
    /// noise, with `temperature` (τ_s) on the head's step noise. An image gets the same answer
    /// alone as in any batch.
    fn predict(&self, images: &[ImageQueries], temperature: f64) -> Result<Vec<HeadSample>>;
}

/// A loaded MAR transformer and its diffusion head.
pub struct MarPredictor<'a, B: Backend> {
    /// The backend both run on.
    pub backend: &'a B,
    /// The transformer.
    pub model: &'a MarModel<B>,
    /// Its diffusion head.
    pub head: &'a DiffusionHead<B>,
    /// The head's respaced schedule.
    pub schedule: &'a DiffusionSchedule,
}

/// Error unless every query of every image has one guidance scale per position, or none has
/// any; returns whether they are guided.
fn guided(images: &[ImageQueries]) -> Result<bool> {
    let mut queries = images.iter().flat_map(|image| image.queries);
    let guided = queries.clone().next().is_some_and(|q| q.guidance.is_some());
    if queries.any(|q| q.guidance.is_some() != guided || q.guidance.is_some_and(|g| g.len() != q.positions.len())) {
        return Err(Error::InvalidRequest("a MAR prediction needs one guidance scale per position in every query of every image, or none in any".into()));
    }
    Ok(guided)
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

    /// One transformer pass (both guidance branches, every query of every image a sequence of
    /// its own), then one head run over every predicted position of the batch.
    fn predict(&self, images: &[ImageQueries], temperature: f64) -> Result<Vec<HeadSample>> {
        let guided = guided(images)?;
        let classes: Vec<[Option<usize>; 2]> = images.iter().map(|image| [Some(image.class), None]).collect();
        let masks: Vec<Vec<MarQuery>> = images.iter().map(|image| image.queries.iter().map(|q| MarQuery { mask: q.mask, positions: q.positions }).collect()).collect();
        let inputs: Vec<MarBatchInput> = images
            .iter()
            .zip(&classes)
            .zip(&masks)
            .map(|((image, classes), queries)| MarBatchInput { tokens: image.tokens, classes: &classes[..1 + usize::from(guided)], queries })
            .collect();
        let z = self.model.batch_conditions(self.backend, &inputs)?;
        let scales: Option<Vec<f64>> = guided.then(|| images.iter().flat_map(|image| image.queries).flat_map(|q| q.guidance.unwrap_or_default().iter().copied()).collect());
        let (c, k) = (self.token_dim(), self.head_steps());
        let (mut start, mut steps) = (Vec::new(), Vec::new());
        for image in images {
            let (s, e) = image.noise.gather(&image.positions().collect::<Vec<_>>(), c, k);
            start.extend(s);
            steps.extend(e);
        }
        let all = sample(self.backend, self.head, self.schedule, &z, scales.as_deref(), HeadNoise { start: &start, steps: &steps }, temperature)?;
        let mut first = 0;
        Ok(images
            .iter()
            .map(|image| {
                let n = image.positions().count();
                first += n;
                all.rows(first - n..first, c)
            })
            .collect())
    }
}
