//! What one image of a CSpD batch asks next: a target step (pre-fill), a draft step or the
//! verification of its window, with the queries of that model call; and the step that applies
//! the model's answer. Steps that reveal nothing are passed over while planning.

use crate::decode::cspd::generate::{DraftedStep, Run};
use crate::decode::cspd::options::VerifyMode;
use crate::decode::mar::schedule::StepMasks;
use crate::decode::mar::StepQuery;
use crate::model::diffusion::HeadSample;

/// A [`StepQuery`] that owns its mask, positions and guidance.
pub(super) struct OwnedQuery {
    /// `[seq_len]`, true = masked.
    pub mask: Vec<bool>,
    /// The positions to predict.
    pub positions: Vec<usize>,
    /// One guidance scale per position, or none.
    pub guidance: Option<Vec<f64>>,
}

impl OwnedQuery {
    /// The borrowed form the predictors take.
    pub fn view(&self) -> StepQuery<'_> {
        StepQuery { mask: &self.mask, positions: &self.positions, guidance: self.guidance.as_deref() }
    }
}

/// An image's next model call.
pub(super) enum Plan {
    /// A target step on its own (pre-fill).
    Prefill(StepMasks),
    /// A draft step.
    Draft(StepMasks),
    /// The verification of the window (taken out of the run) and, in rollback mode, the masks
    /// of the bonus step the same target pass predicts.
    Verify { window: Vec<DraftedStep>, bonus: Option<StepMasks> },
}

impl Plan {
    /// Whether the draft answers it (else the target).
    pub fn drafts(&self) -> bool {
        matches!(self, Plan::Draft(_))
    }
}

impl Run<'_> {
    /// The next model call, or `None` when the image is done: the window's verification when it
    /// is full or the steps are over, else the next step that reveals tokens (pre-fill or draft).
    pub(super) fn plan(&mut self) -> Option<Plan> {
        let num_iter = self.sampling.num_iter;
        loop {
            if !self.window.is_empty() && (self.window.len() == self.options.gamma || self.step == num_iter) {
                let bonus = match self.options.verify {
                    VerifyMode::LeviathanRollback => Some(self.next_masks()).filter(|m| self.step < num_iter && !m.predict.is_empty()),
                    VerifyMode::MarWindow => None,
                };
                return Some(Plan::Verify { window: std::mem::take(&mut self.window), bonus });
            }
            if self.step >= num_iter {
                return None;
            }
            let masks = self.next_masks();
            match (masks.predict.is_empty(), self.step < self.options.prefill_steps(num_iter)) {
                (true, _) => self.advance(masks.next),
                (false, true) => return Some(Plan::Prefill(masks)),
                (false, false) => return Some(Plan::Draft(masks)),
            }
        }
    }

    /// The query of a step predicting `masks` under the current mask.
    fn step_query(&self, masks: &StepMasks) -> OwnedQuery {
        let guidance = self.guidance(masks.mask_len).map(|g| vec![g; masks.predict.len()]);
        OwnedQuery { mask: self.mask.clone(), positions: masks.predict.clone(), guidance }
    }

    /// The queries of `plan`'s model call.
    pub(super) fn queries(&self, plan: &Plan) -> Vec<OwnedQuery> {
        match plan {
            Plan::Prefill(masks) | Plan::Draft(masks) => vec![self.step_query(masks)],
            Plan::Verify { window, bonus } => {
                let mut queries = self.window_queries(window);
                queries.extend(bonus.as_ref().map(|b| self.step_query(b)));
                queries
            }
        }
    }

    /// Carry out `plan` with the model's answer `sample`.
    pub(super) fn apply(&mut self, plan: Plan, sample: HeadSample) {
        match plan {
            Plan::Prefill(masks) => self.apply_target_step(masks, &sample),
            Plan::Draft(masks) => self.apply_draft_step(masks, sample),
            Plan::Verify { window, bonus } => self.verify_window(&window, bonus, &sample),
        }
    }
}
