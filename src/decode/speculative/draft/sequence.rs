//! The committed sequence of one image, and the forward-pass rows of a draft tree.

use crate::decode::speculative::tree::{ancestor_mask, DraftNode};
use crate::error::Result;
use crate::kv::{QueryVisibility, SeqId};
use crate::model::{StepRow, TokenInput};

/// The class label and the image tokens committed so far. The last token is "pending": the
/// target has not yet seen it as input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceState {
    /// Class label.
    pub class: u32,
    /// Committed image tokens.
    pub tokens: Vec<u32>,
}

impl SequenceState {
    /// A sequence with no image token yet (the class token is pending).
    pub fn new(class: u32) -> Self {
        Self { class, tokens: Vec::new() }
    }

    /// Input token at sequence position `pos` (0 is the class token).
    pub fn input_at(&self, pos: usize) -> TokenInput {
        match pos {
            0 => TokenInput::Class(self.class),
            _ => TokenInput::Image(self.tokens[pos - 1]),
        }
    }

    /// Sequence position of the pending token.
    pub fn pending_position(&self) -> usize {
        self.tokens.len()
    }
}

/// The forward-pass rows of tree `nodes` (BFS order, `all` holding every node of the tree so far)
/// drafted below the pending token at sequence position `pending` of `seq`: node `i` sits at RoPE
/// position `pending + depth`, writes KV position `pending + 1 + i`, sees the committed prefix
/// plus its ancestors ([`ancestor_mask`], which rejects nodes out of BFS layout), and reads its
/// token from entry `token_base + i` of the step's device tokens.
pub fn tree_rows(seq: SeqId, pending: usize, all: &[DraftNode], nodes: &[DraftNode], token_base: usize) -> Result<Vec<StepRow>> {
    let base = pending + 1;
    let n = all.len();
    let mask = ancestor_mask(all)?;
    // Ancestors precede a node (BFS order): its window ends at the node itself.
    let window = |i: usize| mask[i * n..=i * n + i].to_vec();
    Ok(nodes
        .iter()
        .map(|node| StepRow {
            input: TokenInput::Drafted((token_base + node.index) as u32),
            position: pending + node.depth,
            kv_pos: base + node.index,
            visibility: QueryVisibility { seq, prefix: base, window_start: base, window: window(node.index) },
        })
        .collect())
}
