//! The rows of one forward pass: which token, at which position, writing which KV slot,
//! seeing which keys.

use crate::backend::{Backend, ForwardPlan, Gather};
use crate::error::{Error, Result};
use crate::kv::{PagedKvCache, QueryVisibility, SeqId};

/// The input token of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenInput {
    /// A class label (the null class `num_classes` selects the unconditional branch of CFG).
    Class(u32),
    /// An image token id.
    Image(u32),
    /// The image token drafted on the device into entry `i` of the step's device tokens (read
    /// there by the embedding; [`crate::backend::NO_TOKEN`] embeds as zeros).
    Drafted(u32),
}

/// One row of a forward pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRow {
    /// The input token.
    pub input: TokenInput,
    /// Sequence position (0 = class token, k = image token k-1); selects the RoPE row.
    pub position: usize,
    /// Logical KV position the row's keys and values are written to.
    pub kv_pos: usize,
    /// Which keys the row attends to (its own `kv_pos` included).
    pub visibility: QueryVisibility,
}

impl StepRow {
    /// A plain causal row: token `input` at `position` of `seq`, stored at the same KV position.
    pub fn causal(seq: SeqId, input: TokenInput, position: usize) -> Self {
        Self { input, position, kv_pos: position, visibility: QueryVisibility::causal(seq, position) }
    }

    /// The row's sequence.
    pub fn seq(&self) -> SeqId {
        self.visibility.seq
    }
}

/// What a forward pass returns, on the host.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// `[rows, vocab]` logits.
    pub logits: Vec<f32>,
    /// `[rows, dim]` last-layer hidden states before the final norm (draft-head features).
    pub hidden: Vec<f32>,
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub dim: usize,
}

impl StepOutput {
    /// Logits of row `r`.
    pub fn logits_row(&self, r: usize) -> &[f32] {
        &self.logits[r * self.vocab..(r + 1) * self.vocab]
    }

    /// Hidden state of row `r`.
    pub fn hidden_row(&self, r: usize) -> &[f32] {
        &self.hidden[r * self.dim..(r + 1) * self.dim]
    }
}

/// Grow each row's sequence to cover its KV position and compute where the rows go: the pass's
/// [`ForwardPlan`] (RoPE rows, KV slots, attention layout with block tables padded to
/// `max_position` tokens), with its embedding `gathers`.
pub fn place_rows<B: Backend>(backend: &B, cache: &mut PagedKvCache<B>, rows: &[StepRow], max_position: usize, gathers: Vec<Gather>) -> Result<ForwardPlan> {
    if rows.is_empty() {
        return Err(Error::InvalidRequest("a forward pass needs at least one row".into()));
    }
    for row in rows {
        if row.position >= max_position {
            return Err(Error::InvalidRequest(format!(
                "sequence position {} beyond the model's {max_position} positions",
                row.position
            )));
        }
        let needed = row.kv_pos + 1;
        if cache.len(row.seq())? < needed {
            cache.extend(backend, row.seq(), needed)?;
        }
    }
    let slots = rows.iter().map(|r| cache.slot(r.seq(), r.kv_pos)).collect::<Result<Vec<_>>>()?;
    let visibility: Vec<QueryVisibility> = rows.iter().map(|r| r.visibility.clone()).collect();
    // Block tables as wide as a whole sequence needs, whatever the sequences' lengths now: the
    // pass's geometry then repeats from step to step.
    let layout = cache.layout_padded(&visibility, max_position.div_ceil(cache.shape().block_size))?;
    Ok(ForwardPlan { gathers, slots, positions: rows.iter().map(|r| r.position as u32).collect(), layout })
}
