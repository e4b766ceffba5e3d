//! The fused acceptance step of speculative decoding on the device (kernels/accept.cu): one launch
//! verifies a whole draft block (chain or tree) for the whole batch. The algorithm is documented
//! in the kernel; [`super::accept_reference::accept_block`] is its exact CPU twin.

use super::buffer::{GpuBuf, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::ACCEPT_THREADS;
use super::GpuBackend;
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

impl<D: Driver> GpuBackend<D> {
    /// Verify `block` against target probabilities `p` and draft probabilities `q` (both
    /// `[batch, nodes + 1, vocab]` on the device) in one kernel launch.
    pub fn accept_block(&self, p: &GpuBuf<D>, q: &GpuBuf<D>, block: &DraftBlock<'_>) -> Result<Acceptance> {
        block.validate(p.len(), q.len())?;
        let (tokens, parents) = (self.upload_vec(block.tokens)?, self.upload_vec(block.parents)?);
        let omega = self.upload_vec(block.omega)?;
        let (u_accept, u_sample) = (self.upload_vec(block.u_accept)?, self.upload_vec(block.u_sample)?);
        let per_node = block.batch * block.nodes;
        let mut work = self.alloc::<f32>(block.batch * 3 * block.vocab)?;
        let mut accept_prob = self.alloc::<f32>(per_node)?;
        let mut path = self.alloc::<i32>(per_node)?;
        let mut accepted_len = self.alloc::<u32>(block.batch)?;
        let mut next = self.alloc::<u32>(block.batch)?;
        let launch = LaunchBuilder::new(&self.driver, (block.batch, 1), ACCEPT_THREADS)?
            .input(p)
            .input(q)
            .input(&tokens)
            .input(&parents)
            .input(&omega)
            .input(&u_accept)
            .input(&u_sample)
            .i32(block.nodes)?
            .i32(block.vocab)?
            .output(&mut work)
            .output(&mut accept_prob)
            .output(&mut path)
            .output(&mut accepted_len)
            .output(&mut next)
            .build();
        self.run(Kernel::AcceptBlock, &launch)?;

        let accept_prob = self.download_vec(&accept_prob)?;
        let path = self.download_vec(&path)?;
        let accepted_len = self.download_vec(&accepted_len)?;
        let next = self.download_vec(&next)?;
        let paths = (0..block.batch)
            .map(|b| path[b * block.nodes..][..accepted_len[b] as usize].iter().map(|&n| n as usize).collect())
            .collect();
        Ok(Acceptance { paths, next, accept_prob })
    }
}
