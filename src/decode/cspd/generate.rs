//! The CSpD loop over a batch of images (spec §2.6, with the paper's choices as options): per
//! image, the draft and the target share the order, every `x_T` and every `ε_k`; the target
//! alone generates the pre-fill steps, then the draft drafts γ steps at a time (each
//! conditioned on everything so far, its own drafts included) and one target pass verifies them
//! ([`super::window`]). Images advance on their own (acceptance is ragged): each round every
//! unfinished image plans its next model call ([`super::plan`]), the draft calls of the round
//! are one batched draft pass and the target calls (pre-fill steps and verifications) one
//! batched target pass.

use crate::decode::cspd::options::CspdOptions;
use crate::decode::cspd::plan::{OwnedQuery, Plan};
use crate::decode::cspd::stats::CspdStats;
use crate::decode::cspd::verify::{TokenLaw, Verdict};
use crate::decode::mar::schedule::{step_masks, StepMasks};
use crate::decode::mar::{ImageQueries, MarImage, MarNoise, MarSampling, StepQuery, TokenPredictor};
use crate::error::{Error, Result};
use crate::model::diffusion::HeadSample;
use crate::sampling::Rng;

/// The tokens of a CSpD generation and what happened on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct CspdOutput {
    /// `[seq_len, C]`.
    pub tokens: Vec<f32>,
    /// Forwards and the fate of the drafts.
    pub stats: CspdStats,
    /// Every verified token, in verification order.
    pub verdicts: Vec<Verdict>,
}

/// A drafted step awaiting verification.
pub(super) struct DraftedStep {
    /// The MAR step it drafted.
    pub step: usize,
    /// The mask the draft saw (the target's teacher-forced mask for this step).
    pub mask_before: Vec<bool>,
    /// The mask after the step (where a rollback to this step resumes).
    pub mask_after: Vec<bool>,
    /// The positions it predicted.
    pub positions: Vec<usize>,
    /// Its guidance scale.
    pub guidance: Option<f64>,
    /// The draft's head run over `positions`.
    pub draft: HeadSample,
    /// The drafted tokens, `[positions, C]`.
    pub values: Vec<f64>,
}

/// The state of one image's generation.
pub(super) struct Run<'a> {
    /// Channels of a token.
    pub token_dim: usize,
    /// Steps of the diffusion heads.
    pub head_steps: usize,
    /// The class of the conditional branch.
    pub class: usize,
    /// Steps, guidance, temperature.
    pub sampling: &'a MarSampling,
    /// The shared order and head noise.
    pub noise: &'a MarNoise,
    /// The CSpD settings.
    pub options: &'a CspdOptions,
    /// The acceptance tests' and residual proposals' stream.
    pub rng: &'a mut Rng,
    /// `[seq_len, C]`: generated tokens, unverified drafts included.
    pub tokens: Vec<f32>,
    /// Current mask: true = not generated yet (drafts count as generated).
    pub mask: Vec<bool>,
    /// The next MAR step.
    pub step: usize,
    /// Drafted steps awaiting verification, in order.
    pub window: Vec<DraftedStep>,
    /// Counts so far.
    pub stats: CspdStats,
    /// Every verified token so far.
    pub verdicts: Vec<Verdict>,
}

/// Generate one image's tokens with `target` verifying `draft` (which must share its token
/// space and head steps) under `options`, MAR settings `sampling` and the image's shared noise;
/// `rng` drives only the acceptance tests and the residual sampler.
pub fn generate_cspd<T: TokenPredictor, D: TokenPredictor>(target: &T, draft: &D, sampling: &MarSampling, image: MarImage, options: &CspdOptions, rng: &mut Rng) -> Result<CspdOutput> {
    let mut outputs = generate_cspd_batch(target, draft, sampling, &[image], std::slice::from_mut(rng), options)?;
    Ok(outputs.remove(0))
}

/// [`generate_cspd`] for a batch of images, `rngs[i]` driving image `i`'s acceptance tests:
/// batched passes, and each image gets the output it gets alone.
pub fn generate_cspd_batch<T: TokenPredictor, D: TokenPredictor>(
    target: &T,
    draft: &D,
    sampling: &MarSampling,
    images: &[MarImage],
    rngs: &mut [Rng],
    options: &CspdOptions,
) -> Result<Vec<CspdOutput>> {
    let target_shape = (target.seq_len(), target.token_dim(), target.head_steps());
    let draft_shape = (draft.seq_len(), draft.token_dim(), draft.head_steps());
    if target_shape != draft_shape {
        return Err(Error::InvalidRequest(format!(
            "CSpD needs a draft of the target's token space: (tokens, channels, head steps) {draft_shape:?} vs the target's {target_shape:?}"
        )));
    }
    if images.len() != rngs.len() {
        return Err(Error::InvalidRequest(format!("a CSpD batch needs one acceptance stream per image: {} images, {} streams", images.len(), rngs.len())));
    }
    let (seq_len, token_dim, head_steps) = target_shape;
    options.validate()?;
    sampling.validate(seq_len)?;
    let mut runs = Vec::with_capacity(images.len());
    for (image, rng) in images.iter().zip(rngs) {
        image.noise.check(seq_len, token_dim, head_steps)?;
        runs.push(Run {
            token_dim,
            head_steps,
            class: image.class,
            sampling,
            noise: image.noise,
            options,
            rng,
            tokens: vec![0f32; seq_len * token_dim],
            mask: vec![true; seq_len],
            step: 0,
            window: Vec::with_capacity(options.gamma),
            stats: CspdStats { tokens: seq_len, ..CspdStats::default() },
            verdicts: Vec::new(),
        });
    }
    loop {
        let mut plans: Vec<Option<Plan>> = runs.iter_mut().map(Run::plan).collect();
        if plans.iter().all(Option::is_none) {
            break;
        }
        for drafting in [true, false] {
            let chosen: Vec<usize> = (0..runs.len()).filter(|&i| plans[i].as_ref().is_some_and(|p| p.drafts() == drafting)).collect();
            if chosen.is_empty() {
                continue;
            }
            let queries: Vec<Vec<OwnedQuery>> = chosen.iter().map(|&i| runs[i].queries(plans[i].as_ref().expect("chosen plans exist"))).collect();
            let samples = {
                let views: Vec<Vec<StepQuery>> = queries.iter().map(|q| q.iter().map(OwnedQuery::view).collect()).collect();
                let asked: Vec<ImageQueries> = chosen.iter().zip(&views).map(|(&i, q)| runs[i].asked(q)).collect();
                if drafting {
                    draft.predict(&asked, sampling.temperature)?
                } else {
                    target.predict(&asked, sampling.temperature)?
                }
            };
            for (&i, sample) in chosen.iter().zip(samples) {
                runs[i].apply(plans[i].take().expect("chosen plans exist"), sample);
            }
        }
    }
    Ok(runs.into_iter().map(|run| CspdOutput { tokens: run.tokens, stats: run.stats, verdicts: run.verdicts }).collect())
}

impl Run<'_> {
    /// The masks of the next step from the current mask.
    pub fn next_masks(&self) -> StepMasks {
        step_masks(&self.noise.order, self.step, self.sampling.num_iter, &self.mask)
    }

    /// The guidance scale of a step leaving `mask_len` tokens masked.
    pub fn guidance(&self, mask_len: usize) -> Option<f64> {
        self.sampling.step_guidance(mask_len, self.mask.len())
    }

    /// Move past the current step to `next`.
    pub fn advance(&mut self, next: Vec<bool>) {
        self.mask = next;
        self.step += 1;
    }

    /// This image's share of a batched prediction with `queries`.
    fn asked<'q>(&'q self, queries: &'q [StepQuery<'q>]) -> ImageQueries<'q> {
        ImageQueries { class: self.class, tokens: &self.tokens, queries, noise: self.noise }
    }

    /// The laws of the `count` rows of `sample` from row `first`.
    pub fn laws(&self, sample: &HeadSample, first: usize, count: usize) -> Vec<TokenLaw> {
        (first..first + count).map(|row| TokenLaw::of(sample, row, self.token_dim, self.sampling.temperature)).collect()
    }

    /// The tokens `laws` give at `positions` under the final-step rule, `[positions, C]`.
    pub fn final_tokens(&self, laws: &[TokenLaw], positions: &[usize]) -> Vec<f64> {
        let (c, k) = (self.token_dim, self.head_steps);
        positions.iter().zip(laws).flat_map(|(&p, law)| law.token(&self.noise.steps[p * k * c..(p * k + 1) * c], self.options.final_step)).collect()
    }

    /// Store `values` (`[positions, C]`) at `positions`.
    pub fn write(&mut self, positions: &[usize], values: &[f64]) {
        let c = self.token_dim;
        for (&p, token) in positions.iter().zip(values.chunks(c)) {
            self.tokens[p * c..(p + 1) * c].iter_mut().zip(token).for_each(|(t, &v)| *t = v as f32);
        }
    }

    /// A target step on its own (pre-fill), from the target's run over its positions.
    pub(super) fn apply_target_step(&mut self, masks: StepMasks, sample: &HeadSample) {
        let values = self.final_tokens(&self.laws(sample, 0, masks.predict.len()), &masks.predict);
        self.write(&masks.predict, &values);
        self.stats.target_forwards += 1;
        self.stats.prefill_steps += 1;
        self.advance(masks.next);
    }

    /// A draft step, kept in the window until the target verifies it.
    pub(super) fn apply_draft_step(&mut self, masks: StepMasks, draft: HeadSample) {
        let guidance = self.guidance(masks.mask_len);
        let values = self.final_tokens(&self.laws(&draft, 0, masks.predict.len()), &masks.predict);
        self.write(&masks.predict, &values);
        self.stats.draft_forwards += 1;
        let StepMasks { next, predict, .. } = masks;
        self.window.push(DraftedStep { step: self.step, mask_before: self.mask.clone(), mask_after: next.clone(), positions: predict, guidance, draft, values });
        self.advance(next);
    }
}
