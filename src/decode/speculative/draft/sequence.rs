//! The committed sequence of one image and the nodes of a draft tree.

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

/// One node of a draft tree: its token, its parent node (`None` = child of the pending token)
/// and its depth (1 for children of the pending token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DraftNode {
    /// BFS index of the node.
    pub index: usize,
    /// Drafted token.
    pub token: u32,
    /// Parent node, or `None` for a child of the pending token.
    pub parent: Option<usize>,
    /// Distance from the pending token.
    pub depth: usize,
}

/// The forward-pass rows of tree `nodes` (BFS order, `all` holding every node of the tree so far)
/// drafted below the pending token at sequence position `pending` of `seq`: node `i` sits at RoPE
/// position `pending + depth`, writes KV position `pending + 1 + i`, and sees the committed prefix
/// plus its ancestors.
pub fn tree_rows(seq: SeqId, pending: usize, all: &[DraftNode], nodes: &[DraftNode]) -> Vec<StepRow> {
    let base = pending + 1;
    nodes
        .iter()
        .map(|node| StepRow {
            input: TokenInput::Image(node.token),
            position: pending + node.depth,
            kv_pos: base + node.index,
            visibility: QueryVisibility { seq, prefix: base, window_start: base, window: ancestor_window(all, node.index) },
        })
        .collect()
}

/// Visibility over the tree window: node `i` sees itself and its ancestors.
fn ancestor_window(nodes: &[DraftNode], index: usize) -> Vec<bool> {
    let mut window = vec![false; index + 1];
    let mut current = Some(index);
    while let Some(i) = current {
        window[i] = true;
        current = nodes[i].parent;
    }
    window
}
