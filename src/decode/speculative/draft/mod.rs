//! Drafters: cheap models that propose a chain or tree of tokens for the target to verify.
//!
//! A drafter serves every image of a batch, each in a slot of its own ([`Drafter::open`]). The
//! batched loop (`crate::decode::batch`) asks each slot for the rows it must feed before drafting
//! ([`Drafter::catch_up`]: committed tokens it has not seen), adds one pass per tree level over
//! the drafted nodes (their tokens drawn on the device), places every pass in the drafter's KV
//! cache ([`Drafter::place`]), runs them ([`Drafter::forward`]), and tells it what the target
//! accepted ([`Drafter::commit`]); the KV moves it asks for run at the start of the next step.

mod head;
mod model;
mod sequence;

pub use head::HeadDrafter;
pub use model::ModelDrafter;
pub use sequence::{tree_rows, SequenceState};

use crate::backend::{Backend, ForwardPlan};
use crate::decode::guided::GuidedSeqs;
use crate::error::Result;
use crate::kv::PagedKvCache;
use crate::model::{ForwardOutput, StepRow, TokenInput};

/// A row a drafter feeds before drafting: a committed token at `position`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpRow {
    /// Sequence position.
    pub position: usize,
    /// The committed token there.
    pub input: TokenInput,
    /// The rows (conditional, unconditional) of the target's last verification pass whose
    /// hidden states are the row's input feature (a draft head's); `None` for a draft model.
    pub feature: Option<(u32, u32)>,
}

/// What one verification step decided for one image, as its drafter needs it.
#[derive(Clone, Copy, Debug)]
pub struct Committed<'a> {
    /// Accepted nodes from the pending token down.
    pub path: &'a [usize],
    /// Nodes of depth `<= fed_depth` were fed to the drafter this step (0: none).
    pub fed_depth: usize,
    /// The verification pass's rows (conditional, unconditional) of the pending token and of
    /// each accepted node, in order.
    pub feature_rows: &'a [(u32, u32)],
}

/// A model that drafts for the images of a batch (see the module docs).
pub trait Drafter<B: Backend> {
    /// Open the draft KV sequences of a new image (with their unconditional twin under CFG);
    /// returns its slot.
    fn open(&mut self, cfg: bool) -> usize;
    /// The draft KV sequences of `slot`.
    fn seqs(&self, slot: usize) -> Result<GuidedSeqs>;
    /// Release `slot` and its KV blocks.
    fn close(&mut self, slot: usize) -> Result<()>;
    /// The rows `slot` must feed this step, before drafting below the pending token of `state`
    /// when `drafting`; the drafter counts them as fed.
    fn catch_up(&mut self, slot: usize, state: &SequenceState, drafting: bool) -> Result<Vec<CatchUpRow>>;
    /// Place `rows` (target positions, conditional and unconditional) in the drafter's KV
    /// cache: the pass's plan.
    fn place(&mut self, backend: &B, rows: &[StepRow]) -> Result<ForwardPlan>;
    /// Whether passes read input features (a draft head's).
    fn uses_features(&self) -> bool;
    /// The drafter's KV pool (for the planned KV moves).
    fn pool(&mut self) -> &mut B::KvPool;
    /// The drafter's KV cache, for reuse once the drafter is done.
    fn into_cache(self: Box<Self>) -> PagedKvCache<B>;
    /// Run one planned pass of `rows` rows: drafted input tokens from `tokens`, input features
    /// from `features` when [`Drafter::uses_features`].
    fn forward(&mut self, backend: &B, plan: &B::Plan, rows: usize, tokens: &B::Words, features: &B::Buf, out: &mut ForwardOutput<B>) -> Result<()>;
    /// Tell `slot` what the target accepted (`state` already updated); returns the KV slot
    /// copies (in order) to run before its next pass.
    fn commit(&mut self, slot: usize, state: &SequenceState, committed: &Committed<'_>) -> Result<Vec<(u32, u32)>>;
}

/// Per-image state of a drafter that holds the image's draft KV sequences.
pub(crate) trait SlotSeqs {
    /// The image's draft KV sequences.
    fn seqs(&self) -> GuidedSeqs;
}

impl<T: SlotSeqs> Slots<T> {
    /// The draft KV sequences of `slot`.
    pub(crate) fn seqs(&self, slot: usize) -> Result<GuidedSeqs> {
        Ok(self.get(slot)?.seqs())
    }

    /// Empty `slot` and free its sequences' blocks in `cache`.
    pub(crate) fn release<B: Backend>(&mut self, slot: usize, cache: &mut PagedKvCache<B>) -> Result<()> {
        self.remove(slot)?.seqs().free(cache)
    }
}

/// Per-image state of a drafter, in slots reused after [`Drafter::close`].
#[derive(Debug)]
pub(crate) struct Slots<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<T> Slots<T> {
    /// Store `value` in a free slot; returns it.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(value);
                i
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    /// The value in `slot`.
    pub(crate) fn get(&self, slot: usize) -> Result<&T> {
        self.slots.get(slot).and_then(Option::as_ref).ok_or_else(|| unknown(slot))
    }

    /// The value in `slot`, mutably.
    pub(crate) fn get_mut(&mut self, slot: usize) -> Result<&mut T> {
        self.slots.get_mut(slot).and_then(Option::as_mut).ok_or_else(|| unknown(slot))
    }

    /// Take the value out of `slot`.
    pub(crate) fn remove(&mut self, slot: usize) -> Result<T> {
        self.slots.get_mut(slot).and_then(Option::take).ok_or_else(|| unknown(slot))
    }
}

fn unknown(slot: usize) -> crate::error::Error {
    crate::error::Error::Internal(format!("no drafter slot {slot}"))
}
