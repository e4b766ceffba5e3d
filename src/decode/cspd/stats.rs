//! What a CSpD generation did: forwards of each model, and what became of every drafted token.

use serde::Serialize;

/// Counts of one or more CSpD generations (summed with [`CspdStats::accumulate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CspdStats {
    /// Tokens generated.
    pub tokens: usize,
    /// Target passes: pre-fill steps plus one per verified window.
    pub target_forwards: usize,
    /// Draft passes (one per drafted step, discarded ones included).
    pub draft_forwards: usize,
    /// Steps the target generated alone before drafting started.
    pub prefill_steps: usize,
    /// Windows verified.
    pub windows: usize,
    /// Drafted tokens the target verified (accepted or resampled).
    pub verified: usize,
    /// Drafted tokens accepted.
    pub accepted: usize,
    /// Rejected drafted tokens replaced by a residual sample.
    pub resampled: usize,
    /// Residual proposals drawn in all.
    pub resample_trials: usize,
    /// Residual samples that hit the proposal cap and were drawn from the target's final
    /// Gaussian instead.
    pub capped: usize,
    /// Drafted tokens thrown away unverified after an earlier rejection (rollback mode).
    pub discarded: usize,
    /// Tokens of bonus steps: the target's own step after a fully accepted window (rollback mode).
    pub bonus: usize,
}

impl CspdStats {
    /// Add `other`'s counts.
    pub fn accumulate(&mut self, other: &CspdStats) {
        let CspdStats { tokens, target_forwards, draft_forwards, prefill_steps, windows, verified, accepted, resampled, resample_trials, capped, discarded, bonus } = *other;
        self.tokens += tokens;
        self.target_forwards += target_forwards;
        self.draft_forwards += draft_forwards;
        self.prefill_steps += prefill_steps;
        self.windows += windows;
        self.verified += verified;
        self.accepted += accepted;
        self.resampled += resampled;
        self.resample_trials += resample_trials;
        self.capped += capped;
        self.discarded += discarded;
        self.bonus += bonus;
    }

    /// Acceptance α: accepted over verified drafted tokens (0 when none were verified).
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.verified.max(1) as f64
    }

    /// Tokens per target pass.
    pub fn tokens_per_target_forward(&self) -> f64 {
        self.tokens as f64 / self.target_forwards.max(1) as f64
    }
}
