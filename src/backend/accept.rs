//! One verification step's draft block and its outcome, as the acceptance op of every backend
//! takes and returns them ([`super::Backend::accept_block`]; the algorithm is documented in
//! `kernels/accept.cu`, its exact CPU twin is `backend::cpu::accept`).

use crate::error::{Error, Result};

/// One verification step's draft block for a batch, besides the distributions. Sequence `b`'s
/// target and draft distributions are rows `b * (nodes + 1) + slot` of `p` and `q`
/// (`[batch, nodes + 1, vocab]`), slot 0 at the pending token and slot `1 + n` after node `n`.
#[derive(Clone, Copy, Debug)]
pub struct DraftBlock<'a> {
    /// Sequences.
    pub batch: usize,
    /// Drafted nodes per sequence (a chain of `nodes` tokens, or a tree).
    pub nodes: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Drafted token of each node, `[batch, nodes]`.
    pub tokens: &'a [u32],
    /// Parent node of each node, `[batch, nodes]`; -1 for children of the pending token.
    /// Siblings are tried in index order. A chain has parents `-1, 0, 1, ...`.
    pub parents: &'a [i32],
    /// Relaxation factor per block depth, `[nodes]`: 1 is lossless; COOL-SD's `omega_i`;
    /// UniformRSD's constant. A non-finite or negative value never accepts.
    pub omega: &'a [f32],
    /// Uniform in `[0, 1)` for trying each node, `[batch, nodes]`.
    pub u_accept: &'a [f32],
    /// Uniform in `[0, 1)` for the final (replacement or bonus) token, `[batch]`.
    pub u_sample: &'a [f32],
}

impl DraftBlock<'_> {
    /// Length of `p` and `q`: `batch * (nodes + 1) * vocab`.
    pub fn dist_len(&self) -> usize {
        self.batch * (self.nodes + 1) * self.vocab
    }

    /// Check array lengths against the geometry and that parents name nodes of the block.
    pub fn validate(&self, p_len: usize, q_len: usize) -> Result<()> {
        let per_node = self.batch * self.nodes;
        let lengths_ok = p_len == self.dist_len()
            && q_len == self.dist_len()
            && self.tokens.len() == per_node
            && self.parents.len() == per_node
            && self.u_accept.len() == per_node
            && self.omega.len() == self.nodes
            && self.u_sample.len() == self.batch;
        let parents_ok = self.parents.iter().all(|&p| p >= -1 && (p as i64) < self.nodes as i64);
        if lengths_ok && parents_ok && self.vocab > 0 && self.vocab <= i32::MAX as usize {
            Ok(())
        } else {
            Err(Error::InvalidRequest(format!(
                "draft block of {} sequences x {} nodes x vocab {}: array lengths or parents do not match",
                self.batch, self.nodes, self.vocab
            )))
        }
    }
}

/// What one verification step decided, per sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Acceptance {
    /// Accepted nodes of each sequence from the pending token down.
    pub paths: Vec<Vec<usize>>,
    /// The token the target adds after each path (a replacement after a rejection, or a bonus
    /// token after a leaf).
    pub next: Vec<u32>,
    /// Acceptance probability of each node that was tried, -1 for the others, `[batch, nodes]`.
    pub accept_prob: Vec<f32>,
}
