//! The target's verification of a window of drafted steps: the queries of its one target pass,
//! then every drafted token tested ([`super::verify`]), in either semantics of [`VerifyMode`].

use crate::decode::cspd::generate::{DraftedStep, Run};
use crate::decode::cspd::options::{VerifyMode, WindowCfg};
use crate::decode::cspd::plan::OwnedQuery;
use crate::decode::cspd::verify::verify_token;
use crate::decode::mar::schedule::StepMasks;
use crate::model::diffusion::HeadSample;

impl Run<'_> {
    /// The target's guidance scales for the positions of `drafted` in `window`.
    fn window_guidance(&self, window: &[DraftedStep], drafted: &DraftedStep) -> Option<Vec<f64>> {
        let scale = match self.options.window_cfg {
            WindowCfg::PerPosition => drafted.guidance,
            WindowCfg::LastStep => window.last().and_then(|last| last.guidance),
        };
        scale.map(|g| vec![g; drafted.positions.len()])
    }

    /// The queries verifying `window` (the bonus step's comes after them): in rollback mode one
    /// per drafted step, each seeing the prefix and the drafts before it; in window mode one
    /// predicting every window position from the verified prefix (the mask before the window).
    pub(super) fn window_queries(&self, window: &[DraftedStep]) -> Vec<OwnedQuery> {
        match self.options.verify {
            VerifyMode::LeviathanRollback => window
                .iter()
                .map(|d| OwnedQuery { mask: d.mask_before.clone(), positions: d.positions.clone(), guidance: self.window_guidance(window, d) })
                .collect(),
            VerifyMode::MarWindow => {
                let positions = window.iter().flat_map(|d| d.positions.iter().copied()).collect();
                let guidance = window.iter().map(|d| self.window_guidance(window, d)).collect::<Option<Vec<_>>>().map(|g| g.concat());
                window.first().map(|d| OwnedQuery { mask: d.mask_before.clone(), positions, guidance }).into_iter().collect()
            }
        }
    }

    /// Verify `window` with the target's run `target` over [`Self::window_queries`] (and the
    /// bonus step's positions after them).
    pub(super) fn verify_window(&mut self, window: &[DraftedStep], bonus: Option<StepMasks>, target: &HeadSample) {
        self.stats.windows += 1;
        self.stats.target_forwards += 1;
        match self.options.verify {
            VerifyMode::LeviathanRollback => self.verify_with_rollback(window, bonus, target),
            VerifyMode::MarWindow => self.verify_positions(window, target),
        }
    }

    /// Test the drafted tokens of `drafted` against rows `first..` of the target's run, writing
    /// what is kept; returns whether every one was accepted.
    fn verify_step(&mut self, drafted: &DraftedStep, target: &HeadSample, first: usize) -> bool {
        let c = self.token_dim;
        let n = drafted.positions.len();
        let (target_laws, draft_laws) = (self.laws(target, first, n), self.laws(&drafted.draft, 0, n));
        let mut all_accepted = true;
        for (i, &position) in drafted.positions.iter().enumerate() {
            let (value, verdict) = verify_token(self.rng, position, &drafted.values[i * c..(i + 1) * c], &target_laws[i], &draft_laws[i], self.options);
            if !verdict.accepted {
                self.write(&[position], &value);
                self.stats.resampled += 1;
                self.stats.resample_trials += verdict.trials;
                self.stats.capped += usize::from(verdict.capped);
            }
            self.stats.verified += 1;
            self.stats.accepted += usize::from(verdict.accepted);
            all_accepted &= verdict.accepted;
            self.verdicts.push(verdict);
        }
        all_accepted
    }

    /// The paper's semantics: steps tested in order; at the first step with a rejection the
    /// later drafts are discarded and generation resumes after it; when every draft is kept,
    /// the bonus step's target tokens are taken too.
    fn verify_with_rollback(&mut self, window: &[DraftedStep], bonus: Option<StepMasks>, target: &HeadSample) {
        let mut first = 0;
        for (j, drafted) in window.iter().enumerate() {
            let all_accepted = self.verify_step(drafted, target, first);
            first += drafted.positions.len();
            if !all_accepted {
                let discarded: usize = window[j + 1..].iter().map(|d| d.positions.len()).sum();
                self.stats.discarded += discarded;
                tracing::debug!(step = drafted.step, kept_steps = j, discarded, "CSpD window: rejection, later drafts discarded");
                self.mask = drafted.mask_after.clone();
                self.step = drafted.step + 1;
                return;
            }
        }
        if let Some(b) = bonus {
            let values = self.final_tokens(&self.laws(target, first, b.predict.len()), &b.predict);
            self.write(&b.predict, &values);
            self.stats.bonus += b.predict.len();
            self.advance(b.next);
        }
        tracing::debug!(steps = window.len(), "CSpD window: every draft accepted");
    }

    /// The official code's semantics: each window position tested on its own, nothing
    /// discarded.
    fn verify_positions(&mut self, window: &[DraftedStep], target: &HeadSample) {
        let mut first = 0;
        for drafted in window {
            self.verify_step(drafted, target, first);
            first += drafted.positions.len();
        }
    }
}
