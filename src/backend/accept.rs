//! One verification step's draft block and its outcome on the host, and
//! [`accept_on_host`], which runs the backend's fused acceptance op
//! ([`super::Backend::accept_block`]; the algorithm is documented in `kernels/accept.cu`, its
//! exact CPU twin is `backend::cpu::accept`) on host arrays: for tests, benches and one-off
//! verification; the decoding loop keeps everything on the device.

use super::{Backend, BlockInputs, BlockLayout, Packed};
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
    /// Parent node of each node, `[batch, nodes]`: -1 for children of the pending token, an
    /// earlier node of the sequence, or below -1 for an absent node (never tried). Siblings are
    /// tried in index order. A chain has parents `-1, 0, 1, ...`.
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
        let parents_ok = self.nodes == 0 || self.parents.chunks(self.nodes).all(|seq| seq.iter().enumerate().all(|(n, &p)| (p as i64) < n as i64));
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

impl Acceptance {
    /// Read the decisions of `layout` from a step's `state` words.
    pub fn from_state(state: &[u32], layout: &BlockLayout) -> Result<Self> {
        let (batch, nodes) = (layout.batch, layout.nodes);
        let get = |at: usize, len: usize| super::packed::part(state, at, len).ok_or_else(|| Error::Backend("accept_block: state shorter than its layout".into()));
        let (accepted, next) = (get(layout.accepted_at, batch)?, get(layout.next_at, batch)?);
        let path: &[i32] = bytemuck::cast_slice(get(layout.path_at, batch * nodes)?);
        let accept_prob: &[f32] = bytemuck::cast_slice(get(layout.prob_at, batch * nodes)?);
        let paths = (0..batch)
            .map(|b| {
                let len = (accepted[b] as usize).min(nodes);
                path[b * nodes..][..len].iter().map(|&n| n as usize).collect()
            })
            .collect();
        Ok(Self { paths, next: next.to_vec(), accept_prob: accept_prob.to_vec() })
    }
}

/// Run `backend`'s fused acceptance op on host arrays: upload `p`, `q` and the block, verify,
/// download the decisions.
pub fn accept_on_host<B: Backend>(backend: &B, p: &[f32], q: &[f32], block: &DraftBlock<'_>) -> Result<Acceptance> {
    block.validate(p.len(), q.len())?;
    let mut plan = Packed::default();
    let inputs = BlockInputs { batch: block.batch, nodes: block.nodes, vocab: block.vocab, parents: block.parents, omega: block.omega, u_accept: block.u_accept, u_sample: block.u_sample };
    let layout = BlockLayout::pack(&mut plan, &inputs, 0, block.tokens.len())?;
    let mut state_host = block.tokens.to_vec();
    state_host.resize(layout.state_end(), 0);
    let (mut plan_words, mut state) = (backend.words(0)?, backend.words(0)?);
    backend.upload_words_into(&mut plan_words, plan.words())?;
    backend.upload_words_into(&mut state, &state_host)?;
    backend.accept_block(&backend.upload(p)?, &backend.upload(q)?, &plan_words, &layout, &mut state)?;
    Acceptance::from_state(&backend.download_words(&state)?, &layout)
}
