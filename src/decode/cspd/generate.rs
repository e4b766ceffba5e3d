//! The CSpD loop of one image (spec §2.6, with the paper's choices as options): the draft and
//! the target share the order, every `x_T` and every `ε_k`; the target alone generates the
//! pre-fill steps, then the draft drafts γ steps at a time (each conditioned on everything so
//! far, its own drafts included) and one target pass verifies them ([`super::window`]).

use crate::decode::cspd::options::CspdOptions;
use crate::decode::cspd::stats::CspdStats;
use crate::decode::cspd::verify::{TokenLaw, Verdict};
use crate::decode::mar::schedule::{step_masks, StepMasks};
use crate::decode::mar::{MarNoise, MarSampling, StepQuery, TokenPredictor};
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

/// The state of one generation.
pub(super) struct Run<'a, T, D> {
    /// The verifying model.
    pub target: &'a T,
    /// The drafting model.
    pub draft: &'a D,
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
/// space and head steps) under `options`, MAR settings `sampling` and the shared `noise`; `rng`
/// drives only the acceptance tests and the residual sampler.
pub fn generate_cspd<T: TokenPredictor, D: TokenPredictor>(target: &T, draft: &D, sampling: &MarSampling, noise: &MarNoise, options: &CspdOptions, rng: &mut Rng) -> Result<CspdOutput> {
    let target_shape = (target.seq_len(), target.token_dim(), target.head_steps());
    let draft_shape = (draft.seq_len(), draft.token_dim(), draft.head_steps());
    if target_shape != draft_shape {
        return Err(Error::InvalidRequest(format!(
            "CSpD needs a draft of the target's token space: (tokens, channels, head steps) {draft_shape:?} vs the target's {target_shape:?}"
        )));
    }
    let (seq_len, c, head_steps) = target_shape;
    options.validate()?;
    sampling.validate(seq_len)?;
    noise.check(seq_len, c, head_steps)?;
    let mut run = Run {
        target,
        draft,
        sampling,
        noise,
        options,
        rng,
        tokens: vec![0f32; seq_len * c],
        mask: vec![true; seq_len],
        step: 0,
        window: Vec::with_capacity(options.gamma),
        stats: CspdStats { tokens: seq_len, ..CspdStats::default() },
        verdicts: Vec::new(),
    };
    let (num_iter, prefill) = (sampling.num_iter, options.prefill_steps(sampling.num_iter));
    while run.step < num_iter {
        let masks = run.next_masks();
        match (masks.predict.is_empty(), run.step < prefill) {
            (true, _) => run.advance(masks.next),
            (false, true) => run.target_step(masks)?,
            (false, false) => run.draft_step(masks)?,
        }
        if !run.window.is_empty() && (run.window.len() == options.gamma || run.step == num_iter) {
            run.verify_window()?;
        }
    }
    Ok(CspdOutput { tokens: run.tokens, stats: run.stats, verdicts: run.verdicts })
}

impl<T: TokenPredictor, D: TokenPredictor> Run<'_, T, D> {
    /// Channels of a token.
    pub fn token_dim(&self) -> usize {
        self.target.token_dim()
    }

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

    /// The laws of the `count` rows of `sample` from row `first`.
    pub fn laws(&self, sample: &HeadSample, first: usize, count: usize) -> Vec<TokenLaw> {
        (first..first + count).map(|row| TokenLaw::of(sample, row, self.token_dim(), self.sampling.temperature)).collect()
    }

    /// The tokens `laws` give at `positions` under the final-step rule, `[positions, C]`.
    pub fn final_tokens(&self, laws: &[TokenLaw], positions: &[usize]) -> Vec<f64> {
        let (c, k) = (self.token_dim(), self.target.head_steps());
        positions.iter().zip(laws).flat_map(|(&p, law)| law.token(&self.noise.steps[p * k * c..(p * k + 1) * c], self.options.final_step)).collect()
    }

    /// Store `values` (`[positions, C]`) at `positions`.
    pub fn write(&mut self, positions: &[usize], values: &[f64]) {
        let c = self.token_dim();
        for (&p, token) in positions.iter().zip(values.chunks(c)) {
            self.tokens[p * c..(p + 1) * c].iter_mut().zip(token).for_each(|(t, &v)| *t = v as f32);
        }
    }

    /// One target step on its own (pre-fill).
    fn target_step(&mut self, masks: StepMasks) -> Result<()> {
        let guidance = self.guidance(masks.mask_len).map(|g| vec![g; masks.predict.len()]);
        let query = StepQuery { mask: &self.mask, positions: &masks.predict, guidance: guidance.as_deref() };
        let sample = self.target.predict(&self.tokens, &[query], self.noise, self.sampling.temperature)?;
        let values = self.final_tokens(&self.laws(&sample, 0, masks.predict.len()), &masks.predict);
        self.write(&masks.predict, &values);
        self.stats.target_forwards += 1;
        self.stats.prefill_steps += 1;
        self.advance(masks.next);
        Ok(())
    }

    /// One draft step, kept in the window until the target verifies it.
    fn draft_step(&mut self, masks: StepMasks) -> Result<()> {
        let guidance = self.guidance(masks.mask_len);
        let scales = guidance.map(|g| vec![g; masks.predict.len()]);
        let query = StepQuery { mask: &self.mask, positions: &masks.predict, guidance: scales.as_deref() };
        let draft = self.draft.predict(&self.tokens, &[query], self.noise, self.sampling.temperature)?;
        let values = self.final_tokens(&self.laws(&draft, 0, masks.predict.len()), &masks.predict);
        self.write(&masks.predict, &values);
        self.stats.draft_forwards += 1;
        let StepMasks { next, predict, .. } = masks;
        self.window.push(DraftedStep { step: self.step, mask_before: self.mask.clone(), mask_after: next.clone(), positions: predict, guidance, draft, values });
        self.advance(next);
        Ok(())
    }
}
