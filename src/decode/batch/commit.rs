//! Committing a step on the host: per image, the non-finite checks, the new tokens, the KV
//! rollback (its moves run at the start of the next step) and the drafter's bookkeeping.

use super::device::StepOutcome;
use super::plan::{ImagePlan, StepPlan};
use super::{Batch, BatchEvent, ImageTokens};
use crate::backend::{Acceptance, Backend};
use crate::decode::speculative::draft::Committed;
use crate::error::{Error, Result};

/// One image's decision: the accepted nodes and the token the target adds.
pub(super) struct Decision {
    /// Accepted nodes from the pending token down.
    pub path: Vec<usize>,
    /// The replacement or bonus token.
    pub next: u32,
}

/// Error if a distribution slot image `b` (id `id`) used this step had non-finite logits.
fn check_flags(state: &[u32], plan: &StepPlan, b: usize, image: &ImagePlan, id: u64) -> Result<()> {
    let slots = plan.nodes + 1;
    let drafted_slots = if image.depth > 0 { 1 + image.expanded } else { 0 };
    let q_bad = (0..drafted_slots).any(|s| state[plan.q_flags_at + b * slots + s] != 0);
    let p_bad = (0..=image.present).any(|s| state[plan.p_flags_at + b * slots + s] != 0);
    if q_bad || p_bad {
        let which = if p_bad { "target" } else { "draft" };
        return Err(Error::NonFiniteLogits { context: format!("image token {} of image {id} of the batch (the {which} distribution)", image.pending) });
    }
    Ok(())
}

impl<B: Backend> Batch<'_, B> {
    /// Commit the step `plan` ran for every image in flight: the events, with the images that
    /// finished (or failed) removed from the batch and their KV blocks freed.
    pub(super) fn commit_step(&mut self, plan: &StepPlan, outcome: &StepOutcome) -> Result<Vec<BatchEvent>> {
        let decisions: Vec<Decision> = match &plan.accept {
            Some(layout) => {
                let acceptance = Acceptance::from_state(&outcome.state, layout)?;
                acceptance.paths.into_iter().zip(acceptance.next).map(|(path, next)| Decision { path, next }).collect()
            }
            None => self.host_walk(plan, outcome)?,
        };
        let total = self.target.config().block_size;
        let mut events = Vec::with_capacity(self.images.len());
        let mut leaving = Vec::new();
        for (b, decision) in decisions.iter().enumerate() {
            let id = self.images[b].id;
            let image_plan = &plan.images[b];
            if let Err(e) = check_flags(&outcome.state, plan, b, image_plan, id) {
                events.push(BatchEvent::Finished { id, result: Err(e) });
                leaving.push(b);
                continue;
            }
            let tokens = self.commit_image(b, plan, outcome, decision)?;
            let image = &self.images[b];
            events.push(BatchEvent::Progress { id, tokens, done: image.state.tokens.len() });
            if image.state.tokens.len() >= total {
                let mut stats = image.stats.clone();
                stats.tokens = image.state.tokens.len();
                events.push(BatchEvent::Finished { id, result: Ok(ImageTokens { tokens: image.state.tokens.clone(), stats }) });
                leaving.push(b);
            }
        }
        for &b in leaving.iter().rev() {
            let image = self.images.remove(b);
            self.release(&image)?;
        }
        Ok(events)
    }

    /// Apply `decision` to image `b`: its new tokens (returned), the KV moves of its accepted
    /// path, its rollback, its drafter's bookkeeping and its counters.
    fn commit_image(&mut self, b: usize, plan: &StepPlan, outcome: &StepOutcome, decision: &Decision) -> Result<Vec<u32>> {
        let vocab = self.target.config().vocab_size as u32;
        let image_plan = &plan.images[b];
        let tokens: Vec<u32> = decision.path.iter().map(|&node| outcome.state[b * plan.nodes + node]).chain([decision.next]).collect();
        let image = &mut self.images[b];
        if tokens.iter().any(|&t| t >= vocab) || decision.path.len() > image_plan.depth {
            return Err(Error::Internal(format!("image {}: the step decided {tokens:?} over a vocabulary of {vocab}", image.id)));
        }
        let base = image_plan.pending + 1;
        let kept = base + decision.path.len();
        let from: Vec<usize> = decision.path.iter().map(|&node| base + node).collect();
        let to: Vec<usize> = (base..kept).collect();
        image.target_copies = image.target.position_copies(&self.cache, &from, &to)?;
        image.target.truncate(&mut self.cache, kept)?;
        image.state.tokens.extend(&tokens);
        if let (Some(spec), Some(slot)) = (self.decoding.speculative.as_mut(), image.draft) {
            let feature_rows: Vec<(u32, u32)> = std::iter::once(0).chain(decision.path.iter().map(|&node| 1 + node)).map(|s| image_plan.verify_rows[s]).collect();
            let fed_depth = image_plan.depth.saturating_sub(1);
            image.draft_copies = spec.drafter.commit(slot, &image.state, &Committed { path: &decision.path, fed_depth, feature_rows: &feature_rows })?;
        }
        let stats = &mut image.stats;
        stats.target_forwards += 1;
        stats.draft_forwards += image_plan.draft_passes;
        if image_plan.depth > 0 {
            stats.verify_steps += 1;
            stats.drafted += image_plan.present;
            stats.accepted += decision.path.len();
        }
        Ok(tokens)
    }
}
