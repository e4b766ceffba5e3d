//! Drafting with an independent small AR model (same architecture and vocabulary as the target).

use super::sequence::SequenceState;
use super::{CatchUpRow, Committed, Drafter, SlotSeqs, Slots};
use crate::backend::{Backend, ForwardPlan};
use crate::decode::guided::GuidedSeqs;
use crate::error::Result;
use crate::kv::PagedKvCache;
use crate::model::{place_rows, ForwardOutput, Gpt, StepRow};

/// One image's draft sequences.
#[derive(Debug)]
struct ModelSlot {
    seqs: GuidedSeqs,
    /// Positions `< valid` of the draft cache hold the committed sequence.
    valid: usize,
}

impl SlotSeqs for ModelSlot {
    fn seqs(&self) -> GuidedSeqs {
        self.seqs
    }
}

/// A small LlamaGen GPT drafting with its own paged KV cache (and CFG pair when the target
/// uses CFG). The KV of accepted tree nodes it has seen is kept (moved onto consecutive
/// positions); the rest is rolled back.
pub struct ModelDrafter<'a, B: Backend> {
    gpt: &'a Gpt<B>,
    cache: PagedKvCache<B>,
    slots: Slots<ModelSlot>,
}

impl<'a, B: Backend> ModelDrafter<'a, B> {
    /// A drafter using `gpt` with the (empty) cache `cache` (given back by [`Drafter::into_cache`]).
    pub fn new(gpt: &'a Gpt<B>, cache: PagedKvCache<B>) -> Self {
        Self { gpt, cache, slots: Slots::default() }
    }
}

impl<B: Backend> Drafter<B> for ModelDrafter<'_, B> {
    fn open(&mut self, cfg: bool) -> usize {
        let seqs = GuidedSeqs::open(&mut self.cache, cfg, self.gpt.config().num_classes);
        self.slots.insert(ModelSlot { seqs, valid: 0 })
    }

    fn seqs(&self, slot: usize) -> Result<GuidedSeqs> {
        self.slots.seqs(slot)
    }

    fn close(&mut self, slot: usize) -> Result<()> {
        self.slots.release(slot, &mut self.cache)
    }

    fn catch_up(&mut self, slot: usize, state: &SequenceState, drafting: bool) -> Result<Vec<CatchUpRow>> {
        let s = self.slots.get_mut(slot)?;
        if !drafting {
            return Ok(Vec::new());
        }
        let pending = state.pending_position();
        let rows = (s.valid..=pending).map(|position| CatchUpRow { position, input: state.input_at(position), feature: None }).collect();
        s.valid = pending + 1;
        Ok(rows)
    }

    fn place(&mut self, backend: &B, rows: &[StepRow]) -> Result<ForwardPlan> {
        let gathers = self.gpt.gathers(rows)?;
        place_rows(backend, &mut self.cache, rows, self.gpt.config().max_seq_len(), gathers)
    }

    fn uses_features(&self) -> bool {
        false
    }

    fn pool(&mut self) -> &mut B::KvPool {
        self.cache.pool_mut()
    }

    fn into_cache(self: Box<Self>) -> PagedKvCache<B> {
        self.cache
    }

    fn forward(&mut self, backend: &B, plan: &B::Plan, rows: usize, tokens: &B::Words, _features: &B::Buf, out: &mut ForwardOutput<B>) -> Result<()> {
        self.gpt.forward_planned(backend, self.cache.pool_mut(), plan, rows, Some(tokens), out)
    }

    fn commit(&mut self, slot: usize, state: &SequenceState, committed: &Committed<'_>) -> Result<Vec<(u32, u32)>> {
        let s = self.slots.get_mut(slot)?;
        let base = s.valid;
        // Accepted nodes that were fed keep their KV, moved onto consecutive positions (node i
        // was written at base + i; path node j has depth j + 1).
        let kept = &committed.path[..committed.path.len().min(committed.fed_depth)];
        let from: Vec<usize> = kept.iter().map(|&i| base + i).collect();
        let to: Vec<usize> = (0..kept.len()).map(|j| base + j).collect();
        let copies = s.seqs.position_copies(&self.cache, &from, &to)?;
        s.valid = (base + kept.len()).min(state.pending_position());
        s.seqs.truncate(&mut self.cache, s.valid)?;
        Ok(copies)
    }
}
