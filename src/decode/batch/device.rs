//! Running a planned step on the device: one upload of the plan, the passes and their
//! distribution and draw ops, the acceptance, and one download of the step's state.

use std::sync::Arc;

use super::plan::{Pass, StepPlan};
use super::Batch;
use crate::backend::Backend;
use crate::error::Result;
use crate::model::ForwardOutput;

/// The device buffers of the decoding loop, reused by every step and, when the caller keeps them,
/// by every later batch: they only grow, with the largest step seen.
pub struct DecodeBuffers<B: Backend> {
    /// The step's packed plan (uploaded into in place once no pass's plan still views it).
    plan: Arc<B::Words>,
    /// The step's state: drafted tokens, decisions, non-finite flags.
    state: B::Words,
    /// Target and draft distributions, `[images, nodes + 1, vocab]`.
    p: B::Buf,
    q: B::Buf,
    /// The target's verification outputs (kept until the next step: a draft head's features).
    target: ForwardOutput<B>,
    /// The drafter's outputs, alternately: a pass reads its features from the previous one.
    draft: [ForwardOutput<B>; 2],
    /// A draft head's gathered input features.
    features: B::Buf,
}

/// What a step computed, on the host.
pub(super) struct StepOutcome {
    /// The state words.
    pub state: Vec<u32>,
    /// The target and draft distributions, downloaded only for the host walk.
    pub distributions: Option<(Vec<f32>, Vec<f32>)>,
}

impl<B: Backend> DecodeBuffers<B> {
    /// Empty buffers.
    pub fn new(backend: &B) -> Result<Self> {
        Ok(Self {
            plan: Arc::new(backend.words(0)?),
            state: backend.words(0)?,
            p: backend.zeros(0)?,
            q: backend.zeros(0)?,
            target: ForwardOutput::new(backend)?,
            draft: [ForwardOutput::new(backend)?, ForwardOutput::new(backend)?],
            features: backend.zeros(0)?,
        })
    }

    /// Upload `words` as the step's plan: one copy.
    fn upload_plan(&mut self, backend: &B, words: &[u32]) -> Result<()> {
        match Arc::get_mut(&mut self.plan) {
            Some(plan) => backend.upload_words_into(plan, words),
            None => {
                let mut plan = backend.words(0)?;
                backend.upload_words_into(&mut plan, words)?;
                self.plan = Arc::new(plan);
                Ok(())
            }
        }
    }
}

impl<B: Backend> Batch<'_, B> {
    /// Run `plan` (see the parent module's docs for the order of the ops).
    pub(super) fn run_step(&mut self, plan: &StepPlan) -> Result<StepOutcome> {
        let backend = self.backend;
        let vocab = self.target.config().vocab_size;
        let images = plan.images.len();
        let buffers = &mut self.buffers;
        buffers.upload_plan(backend, plan.packed.words())?;
        backend.resize_words(&mut buffers.state, plan.state_len)?;
        let dist_len = images * (plan.nodes + 1) * vocab;
        backend.resize(&mut buffers.p, dist_len)?;
        backend.resize(&mut buffers.q, dist_len)?;
        let words = Arc::clone(&buffers.plan);
        for &copies in &plan.target_copies {
            backend.kv_copy(self.cache.pool_mut(), &words, copies)?;
        }
        if let Some(spec) = self.decoding.speculative.as_mut() {
            for &copies in &plan.draft_copies {
                backend.kv_copy(spec.drafter.pool(), &words, copies)?;
            }
            for (k, pass) in plan.drafts.iter().enumerate() {
                let view = backend.plan_in(&words, pass.plan.clone(), pass.at.clone())?;
                let [even, odd] = &mut buffers.draft;
                let (previous, current) = if k % 2 == 0 { (&*odd, even) } else { (&*even, odd) };
                let source = if k == 0 { &buffers.target.hidden } else { &previous.hidden };
                let dim = self.target.config().dim;
                let (features, state, q, params) = (&mut buffers.features, &mut buffers.state, &mut buffers.q, &self.decoding.params);
                let drafter = &mut *spec.drafter;
                backend.graphed(&mut || {
                    if let Some(gather) = pass.features {
                        backend.resize(features, gather.rows * dim)?;
                        backend.gather_rows(source, dim, &words, gather, features)?;
                    }
                    drafter.forward(backend, &view, pass.rows, state, features, current)?;
                    finish_pass(backend, pass, &current.logits, &words, params, q, state)
                })?;
            }
        }
        let view = backend.plan_in(&words, plan.verify.plan.clone(), plan.verify.at.clone())?;
        let (target, pool, params) = (self.target, self.cache.pool_mut(), &self.decoding.params);
        let DecodeBuffers { state, p, q, target: out, .. } = &mut *buffers;
        // The verification pass and the fused acceptance: one fixed-shape region per tree shape
        // and batch.
        backend.graphed(&mut || {
            target.forward_planned(backend, pool, &view, plan.verify.rows, Some(state), out)?;
            finish_pass(backend, &plan.verify, &out.logits, &words, params, p, state)?;
            match &plan.accept {
                Some(block) => backend.accept_block(p, q, &words, block, state),
                None => Ok(()),
            }
        })?;
        drop(view);
        let distributions = match &plan.accept {
            Some(_) => None,
            None => Some((backend.download(&buffers.p)?, backend.download(&buffers.q)?)),
        };
        drop(words);
        Ok(StepOutcome { state: backend.download_words(&buffers.state)?, distributions })
    }
}

/// After a pass: its logits rows into distribution slots, then the tree level drawn from them.
fn finish_pass<B: Backend>(backend: &B, pass: &Pass, logits: &B::Buf, words: &B::Words, params: &crate::sampling::SamplingParams, probs: &mut B::Buf, state: &mut B::Words) -> Result<()> {
    if let Some(map) = pass.logits {
        backend.process_logits(logits, words, map, params, probs, state)?;
    }
    if let Some(draws) = pass.children {
        backend.sample_children(probs, words, draws, state)?;
    }
    Ok(())
}
