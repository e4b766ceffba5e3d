//! Classifier-free guidance as a batch of two sequences: every row of the conditional sequence
//! is mirrored onto the unconditional (null-class) one, and the two logits rows are mixed.

use crate::backend::Backend;
use crate::error::Result;
use crate::kv::{PagedKvCache, QueryVisibility, SeqId};
use crate::model::{StepOutput, StepRow, TokenInput};
use crate::sampling::SamplingParams;

/// The conditional sequence of one image and, with CFG, its unconditional twin.
#[derive(Clone, Copy, Debug)]
pub struct GuidedSeqs {
    /// The class-conditional sequence.
    pub cond: SeqId,
    /// The null-class sequence, present when CFG is on.
    pub uncond: Option<SeqId>,
    null_class: u32,
}

impl GuidedSeqs {
    /// Open the sequences in `cache` (two when `cfg`, else one).
    pub fn open<B: Backend>(cache: &mut PagedKvCache<B>, cfg: bool, num_classes: usize) -> Self {
        let cond = cache.add_sequence();
        let uncond = cfg.then(|| cache.add_sequence());
        Self { cond, uncond, null_class: num_classes as u32 }
    }

    /// Rows written for the conditional sequence, followed by their mirror on the unconditional
    /// one (class tokens become the null class).
    pub fn mirror(&self, rows: Vec<StepRow>) -> Vec<StepRow> {
        let Some(uncond) = self.uncond else { return rows };
        let mirrored: Vec<StepRow> = rows
            .iter()
            .map(|r| StepRow {
                input: match r.input {
                    TokenInput::Class(_) => TokenInput::Class(self.null_class),
                    image => image,
                },
                visibility: QueryVisibility { seq: uncond, ..r.visibility.clone() },
                ..r.clone()
            })
            .collect();
        rows.into_iter().chain(mirrored).collect()
    }

    /// Token distributions of the first `n` (conditional) rows of `out`, guided by the mirrored
    /// rows when CFG is on.
    pub fn distributions(&self, out: &StepOutput, n: usize, params: &SamplingParams, context: &str) -> Result<Vec<Vec<f32>>> {
        (0..n)
            .map(|r| {
                let uncond = self.uncond.map(|_| out.logits_row(n + r));
                params.distribution(out.logits_row(r), uncond, &format!("{context}, row {r}"))
            })
            .collect()
    }

    /// Truncate both sequences to `len` tokens.
    pub fn truncate<B: Backend>(&self, cache: &mut PagedKvCache<B>, len: usize) -> Result<()> {
        cache.truncate(self.cond, len)?;
        self.uncond.map_or(Ok(()), |u| cache.truncate(u, len))
    }

    /// Copy KV positions `from[i]` to `to[i]` in both sequences.
    pub fn move_positions<B: Backend>(&self, backend: &B, cache: &mut PagedKvCache<B>, from: &[usize], to: &[usize]) -> Result<()> {
        cache.move_positions(backend, self.cond, from, to)?;
        self.uncond.map_or(Ok(()), |u| cache.move_positions(backend, u, from, to))
    }
}
