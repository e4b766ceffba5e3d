//! Counters of one generation, for the bench table and `--verbose` output.

use std::time::Duration;

/// What one image's generation cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationStats {
    /// Image tokens produced.
    pub tokens: usize,
    /// Forward passes of the target model.
    pub target_forwards: usize,
    /// Forward passes of the drafter (draft model or draft head).
    pub draft_forwards: usize,
    /// Draft tokens proposed to the target (a tree counts every node).
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Verification steps (blocks verified).
    pub verify_steps: usize,
    /// Wall time spent generating tokens (VQ decoding excluded).
    pub elapsed: Duration,
}

impl GenerationStats {
    /// Image tokens per target forward pass (1 for plain AR decoding, after the class prefill).
    pub fn tokens_per_target_forward(&self) -> f64 {
        self.tokens as f64 / self.target_forwards.max(1) as f64
    }

    /// Mean number of tokens produced per verification step (accepted drafts + the one token the
    /// target adds).
    pub fn mean_accepted_length(&self) -> f64 {
        if self.verify_steps == 0 {
            return 0.0;
        }
        (self.accepted + self.verify_steps) as f64 / self.verify_steps as f64
    }

    /// Fraction of drafted tokens that were accepted: every node of a tree counts (see
    /// [`GenerationStats::drafted`]); for a chain, the proposed positions.
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Add another generation's counters to these.
    pub fn accumulate(&mut self, other: &GenerationStats) {
        self.tokens += other.tokens;
        self.target_forwards += other.target_forwards;
        self.draft_forwards += other.draft_forwards;
        self.drafted += other.drafted;
        self.accepted += other.accepted;
        self.verify_steps += other.verify_steps;
        self.elapsed += other.elapsed;
    }
}
