//! Drafting with an EAGLE/LANTERN-style draft head on the target's features.

use super::sequence::SequenceState;
use super::{CatchUpRow, Committed, Drafter, SlotSeqs, Slots};
use crate::backend::{Backend, ForwardPlan};
use crate::decode::guided::GuidedSeqs;
use crate::error::{Error, Result};
use crate::kv::PagedKvCache;
use crate::model::{head_row, place_rows, DraftHead, ForwardOutput, Gpt, StepRow, TokenInput};

/// One image's head sequences.
#[derive(Debug)]
struct HeadSlot {
    seqs: GuidedSeqs,
    /// Positions `< valid` hold KV computed from the target's features (head index = position - 1).
    valid: usize,
    /// Committed rows not yet fed, with the target rows of their input features.
    pending: Vec<CatchUpRow>,
}

impl SlotSeqs for HeadSlot {
    fn seqs(&self) -> GuidedSeqs {
        self.seqs
    }
}

/// The draft head with its one-layer paged KV cache.
///
/// Positions whose input feature came from the target are kept across steps; tree nodes (fed
/// with the head's own features) are dropped after each verification and the accepted tokens are
/// re-fed with the target's features, as EAGLE does. A slot feeds its committed rows every step
/// (drafting or not), so their features always come from the target's last verification pass.
pub struct HeadDrafter<'a, B: Backend> {
    head: &'a DraftHead<B>,
    target: &'a Gpt<B>,
    cache: PagedKvCache<B>,
    slots: Slots<HeadSlot>,
}

impl<'a, B: Backend> HeadDrafter<'a, B> {
    /// A drafter using `head` on top of `target`, with the (empty) cache `cache` (given back by
    /// [`Drafter::into_cache`]).
    pub fn new(head: &'a DraftHead<B>, target: &'a Gpt<B>, cache: PagedKvCache<B>) -> Self {
        Self { head, target, cache, slots: Slots::default() }
    }
}

impl<B: Backend> Drafter<B> for HeadDrafter<'_, B> {
    fn open(&mut self, cfg: bool) -> usize {
        let seqs = GuidedSeqs::open(&mut self.cache, cfg, self.target.config().num_classes);
        self.slots.insert(HeadSlot { seqs, valid: 0, pending: Vec::new() })
    }

    fn seqs(&self, slot: usize) -> Result<GuidedSeqs> {
        self.slots.seqs(slot)
    }

    fn close(&mut self, slot: usize) -> Result<()> {
        self.slots.release(slot, &mut self.cache)
    }

    fn catch_up(&mut self, slot: usize, state: &SequenceState, drafting: bool) -> Result<Vec<CatchUpRow>> {
        let s = self.slots.get_mut(slot)?;
        if drafting && s.pending.last().map(|r| r.position) != Some(state.pending_position()) {
            return Err(Error::InvalidRequest("the draft head needs the target's features of the pending token: run a target step first".into()));
        }
        let rows = std::mem::take(&mut s.pending);
        if let Some(last) = rows.last() {
            s.valid = last.position + 1;
        }
        Ok(rows)
    }

    fn place(&mut self, backend: &B, rows: &[StepRow]) -> Result<ForwardPlan> {
        let rows: Vec<StepRow> = rows.iter().cloned().map(head_row).collect();
        DraftHead::<B>::check_rows(&rows)?;
        let gathers = self.target.gathers(&rows)?;
        place_rows(backend, &mut self.cache, &rows, self.target.config().max_seq_len(), gathers)
    }

    fn uses_features(&self) -> bool {
        true
    }

    fn pool(&mut self) -> &mut B::KvPool {
        self.cache.pool_mut()
    }

    fn into_cache(self: Box<Self>) -> PagedKvCache<B> {
        self.cache
    }

    fn forward(&mut self, backend: &B, plan: &B::Plan, rows: usize, tokens: &B::Words, features: &B::Buf, out: &mut ForwardOutput<B>) -> Result<()> {
        self.head.forward_planned(backend, self.target, self.cache.pool_mut(), plan, rows, Some(tokens), features, out)
    }

    fn commit(&mut self, slot: usize, state: &SequenceState, committed: &Committed<'_>) -> Result<Vec<(u32, u32)>> {
        let s = self.slots.get_mut(slot)?;
        if !s.pending.is_empty() || committed.feature_rows.len() != committed.path.len() + 1 {
            return Err(Error::Internal("draft head: committed rows out of step with the feed".into()));
        }
        // Position m+1+j holds token tokens[m+j]; its input feature is the target's hidden state
        // at position m+j: the pending token's row for j = 0, node path[j-1]'s after that.
        let m = state.pending_position() - 1 - committed.path.len();
        s.pending = committed
            .feature_rows
            .iter()
            .enumerate()
            .map(|(j, &rows)| CatchUpRow { position: m + 1 + j, input: TokenInput::Image(state.tokens[m + j]), feature: Some(rows) })
            .collect();
        s.valid = s.valid.min(m + 1);
        // Head KV index = position - 1: positions below `valid` are the first `valid - 1` entries.
        s.seqs.truncate(&mut self.cache, s.valid.saturating_sub(1))?;
        Ok(Vec::new())
    }
}
