//! Classifier-free guidance as a batch of two sequences: every row of the conditional sequence
//! is mirrored onto the unconditional (null-class) one, and the two logits rows are mixed by the
//! backend's `process_logits`.

use crate::backend::Backend;
use crate::error::Result;
use crate::kv::{PagedKvCache, QueryVisibility, SeqId};
use crate::model::{StepRow, TokenInput};

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
        let mirrored = self.mirrored(&rows);
        rows.into_iter().chain(mirrored).collect()
    }

    /// The mirror of conditional `rows` on the unconditional sequence (none without CFG).
    pub fn mirrored(&self, rows: &[StepRow]) -> Vec<StepRow> {
        let Some(uncond) = self.uncond else { return Vec::new() };
        rows.iter()
            .map(|r| StepRow {
                input: match r.input {
                    TokenInput::Class(_) => TokenInput::Class(self.null_class),
                    image => image,
                },
                visibility: QueryVisibility { seq: uncond, ..r.visibility.clone() },
                ..r.clone()
            })
            .collect()
    }

    /// Truncate both sequences to `len` tokens.
    pub fn truncate<B: Backend>(&self, cache: &mut PagedKvCache<B>, len: usize) -> Result<()> {
        cache.truncate(self.cond, len)?;
        self.uncond.map_or(Ok(()), |u| cache.truncate(u, len))
    }

    /// The slot copies that move KV positions `from[i]` to `to[i]` in both sequences, in order
    /// (resolved now, run by the next pass's plan).
    pub fn position_copies<B: Backend>(&self, cache: &PagedKvCache<B>, from: &[usize], to: &[usize]) -> Result<Vec<(u32, u32)>> {
        let mut copies = Vec::with_capacity(2 * from.len());
        for seq in std::iter::once(self.cond).chain(self.uncond) {
            for (&f, &t) in from.iter().zip(to) {
                copies.push((cache.slot(seq, f)?, cache.slot(seq, t)?));
            }
        }
        Ok(copies)
    }

    /// Release both sequences and their blocks.
    pub fn free<B: Backend>(&self, cache: &mut PagedKvCache<B>) -> Result<()> {
        cache.free_sequence(self.cond)?;
        self.uncond.map_or(Ok(()), |u| cache.free_sequence(u))
    }
}
