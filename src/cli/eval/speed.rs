//! How fast a setting generated, read off either family's decoding counts and the wall time.

use std::time::Duration;

use serde::Serialize;

use crate::decode::cspd::CspdStats;
use crate::engine::GenerationStats;

/// Decoding counts of a family, summed over a setting's batches.
pub trait DecodeCounts: Default {
    /// Add `other`'s counts.
    fn add(&mut self, other: &Self);
    /// Image tokens per target forward pass.
    fn tokens_per_target_forward(&self) -> f64;
    /// Tokens per verification (accepted drafts plus the target's own), where the family has
    /// them and drafts were verified.
    fn mean_accepted_length(&self) -> Option<f64>;
    /// Accepted over verified drafted tokens, where drafts were verified.
    fn acceptance_rate(&self) -> Option<f64>;
}

impl DecodeCounts for GenerationStats {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }

    fn tokens_per_target_forward(&self) -> f64 {
        GenerationStats::tokens_per_target_forward(self)
    }

    fn mean_accepted_length(&self) -> Option<f64> {
        (self.drafted > 0).then(|| GenerationStats::mean_accepted_length(self))
    }

    fn acceptance_rate(&self) -> Option<f64> {
        (self.drafted > 0).then(|| GenerationStats::acceptance_rate(self))
    }
}

impl DecodeCounts for CspdStats {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }

    fn tokens_per_target_forward(&self) -> f64 {
        CspdStats::tokens_per_target_forward(self)
    }

    /// None: a CSpD window keeps or redraws every drafted token, so α says what accepted
    /// lengths would.
    fn mean_accepted_length(&self) -> Option<f64> {
        None
    }

    fn acceptance_rate(&self) -> Option<f64> {
        (self.verified > 0).then(|| CspdStats::acceptance_rate(self))
    }
}

/// How fast a setting generated.
#[derive(Clone, Debug, Serialize)]
pub struct Speed {
    /// Image tokens per target forward pass.
    pub tokens_per_target_forward: f64,
    /// Mean accepted length per verification (absent for plain decoding and CSpD).
    pub mean_accepted_length: Option<f64>,
    /// Accepted over verified drafted tokens, α (absent for plain decoding).
    pub acceptance_rate: Option<f64>,
    /// Generation wall time per image (a batch's images share it).
    pub latency_ms_per_image: f64,
    /// The baseline's latency (plain AR, or plain MAR) over this one, measured in the same run.
    pub speedup_vs_ar: f64,
}

impl Speed {
    /// The speed of `images` images with summed `counts`, generated in `wall`.
    pub fn new(counts: &impl DecodeCounts, wall: Duration, images: usize) -> Self {
        Self {
            tokens_per_target_forward: counts.tokens_per_target_forward(),
            mean_accepted_length: counts.mean_accepted_length(),
            acceptance_rate: counts.acceptance_rate(),
            latency_ms_per_image: wall.as_secs_f64() * 1e3 / images as f64,
            speedup_vs_ar: 1.0,
        }
    }
}
