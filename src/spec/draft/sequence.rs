//! The committed sequence of one image and the nodes of a draft tree.

use crate::model::TokenInput;

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

/// Visibility over the tree window: node `i` sees itself and its ancestors.
pub fn ancestor_window(nodes: &[DraftNode], index: usize) -> Vec<bool> {
    let mut window = vec![false; index + 1];
    let mut current = Some(index);
    while let Some(i) = current {
        window[i] = true;
        current = nodes[i].parent;
    }
    window
}
