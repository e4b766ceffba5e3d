//! The target's verification of a window of drafted steps: one target pass, then every drafted
//! token tested ([`super::verify`]), in either semantics of [`VerifyMode`].

use crate::decode::cspd::generate::{DraftedStep, Run};
use crate::decode::cspd::options::{VerifyMode, WindowCfg};
use crate::decode::cspd::verify::verify_token;
use crate::decode::mar::{StepQuery, TokenPredictor};
use crate::error::Result;
use crate::model::diffusion::HeadSample;

impl<T: TokenPredictor, D: TokenPredictor> Run<'_, T, D> {
    /// Verify the window and clear it.
    pub(super) fn verify_window(&mut self) -> Result<()> {
        let window = std::mem::take(&mut self.window);
        self.stats.windows += 1;
        self.stats.target_forwards += 1;
        match self.options.verify {
            VerifyMode::LeviathanRollback => self.verify_with_rollback(&window),
            VerifyMode::MarWindow => self.verify_positions(&window),
        }
    }

    /// The target's guidance scales for the positions of `drafted` in `window`.
    fn window_guidance(&self, window: &[DraftedStep], drafted: &DraftedStep) -> Option<Vec<f64>> {
        let scale = match self.options.window_cfg {
            WindowCfg::PerPosition => drafted.guidance,
            WindowCfg::LastStep => window.last().and_then(|last| last.guidance),
        };
        scale.map(|g| vec![g; drafted.positions.len()])
    }

    /// Test the drafted tokens of `drafted` against rows `first..` of the target's run, writing
    /// what is kept; returns whether every one was accepted.
    fn verify_step(&mut self, drafted: &DraftedStep, target: &HeadSample, first: usize) -> bool {
        let c = self.token_dim();
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

    /// The paper's semantics: one pass with a sequence per drafted step, each seeing the prefix
    /// and the drafts before it, plus one seeing every draft (the bonus step); steps tested in
    /// order; at the first step with a rejection the later drafts are discarded and generation
    /// resumes after it; when every draft is kept, the bonus step's target tokens are taken too.
    fn verify_with_rollback(&mut self, window: &[DraftedStep]) -> Result<()> {
        let bonus = Some(self.next_masks()).filter(|m| self.step < self.sampling.num_iter && !m.predict.is_empty());
        let scales: Vec<Option<Vec<f64>>> = window.iter().map(|d| self.window_guidance(window, d)).collect();
        let bonus_scales = bonus.as_ref().and_then(|b| self.guidance(b.mask_len).map(|g| vec![g; b.predict.len()]));
        let mut queries: Vec<StepQuery> = window.iter().zip(&scales).map(|(d, g)| StepQuery { mask: &d.mask_before, positions: &d.positions, guidance: g.as_deref() }).collect();
        if let Some(b) = &bonus {
            queries.push(StepQuery { mask: &self.mask, positions: &b.predict, guidance: bonus_scales.as_deref() });
        }
        let target = self.target.predict(&self.tokens, &queries, self.noise, self.sampling.temperature)?;
        let mut first = 0;
        for (j, drafted) in window.iter().enumerate() {
            let all_accepted = self.verify_step(drafted, &target, first);
            first += drafted.positions.len();
            if !all_accepted {
                let discarded: usize = window[j + 1..].iter().map(|d| d.positions.len()).sum();
                self.stats.discarded += discarded;
                tracing::debug!(step = drafted.step, kept_steps = j, discarded, "CSpD window: rejection, later drafts discarded");
                self.mask = drafted.mask_after.clone();
                self.step = drafted.step + 1;
                return Ok(());
            }
        }
        if let Some(b) = bonus {
            let values = self.final_tokens(&self.laws(&target, first, b.predict.len()), &b.predict);
            self.write(&b.predict, &values);
            self.stats.bonus += b.predict.len();
            self.advance(b.next);
        }
        tracing::debug!(steps = window.len(), "CSpD window: every draft accepted");
        Ok(())
    }

    /// The official code's semantics: one pass predicting every window position from the
    /// verified prefix (the mask before the window), each position tested on its own, nothing
    /// discarded.
    fn verify_positions(&mut self, window: &[DraftedStep]) -> Result<()> {
        let positions: Vec<usize> = window.iter().flat_map(|d| d.positions.iter().copied()).collect();
        let scales: Option<Vec<f64>> = window.iter().map(|d| self.window_guidance(window, d)).collect::<Option<Vec<_>>>().map(|g| g.concat());
        let Some(prefix) = window.first().map(|d| &d.mask_before) else { return Ok(()) };
        let query = StepQuery { mask: prefix, positions: &positions, guidance: scales.as_deref() };
        let target = self.target.predict(&self.tokens, &[query], self.noise, self.sampling.temperature)?;
        let mut first = 0;
        for drafted in window {
            self.verify_step(drafted, &target, first);
            first += drafted.positions.len();
        }
        Ok(())
    }
}
