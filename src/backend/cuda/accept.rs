//! The fused acceptance step of speculative decoding on the GPU (kernels/accept.cu): one launch
//! verifies a whole draft block (chain or tree) for the whole batch. The algorithm is documented
//! in the kernel; [`super::accept_reference::accept_block`] is its exact CPU twin.

use cudarc::driver::PushKernelArg;

use super::buffer::{alloc_zeros, cuda_error, upload_slice, CudaBuf};
use super::kernels::{config, launch, ACCEPT_THREADS};
use super::CudaBackend;
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

impl CudaBackend {
    /// Verify `block` against target probabilities `p` and draft probabilities `q` (both
    /// `[batch, nodes + 1, vocab]` on the device) in one kernel launch.
    pub fn accept_block(&self, p: &CudaBuf, q: &CudaBuf, block: &DraftBlock<'_>) -> Result<Acceptance> {
        block.validate(p.len(), q.len())?;
        let s = &self.stream;
        let (tokens, parents, omega) = (upload_slice(s, block.tokens)?, upload_slice(s, block.parents)?, upload_slice(s, block.omega)?);
        let (u_accept, u_sample) = (upload_slice(s, block.u_accept)?, upload_slice(s, block.u_sample)?);
        let per_node = block.batch * block.nodes;
        let mut work = alloc_zeros::<f32>(s, block.batch * 3 * block.vocab)?;
        let mut accept_prob = alloc_zeros::<f32>(s, per_node)?;
        let mut path = alloc_zeros::<i32>(s, per_node)?;
        let mut accepted_len = alloc_zeros::<u32>(s, block.batch)?;
        let mut next = alloc_zeros::<u32>(s, block.batch)?;
        let (nodes, vocab) = (block.nodes as i32, block.vocab as i32);
        let mut args = s.launch_builder(&self.kernels.accept_block);
        args.arg(&p.data).arg(&q.data).arg(&tokens).arg(&parents).arg(&omega).arg(&u_accept).arg(&u_sample);
        args.arg(&nodes).arg(&vocab).arg(&mut work).arg(&mut accept_prob).arg(&mut path).arg(&mut accepted_len).arg(&mut next);
        launch(args, config((block.batch as u32, 1), ACCEPT_THREADS), "accept_block")?;

        let accept_prob = s.clone_dtoh(&accept_prob).map_err(cuda_error("accept_block download"))?;
        let path = s.clone_dtoh(&path).map_err(cuda_error("accept_block download"))?;
        let accepted_len = s.clone_dtoh(&accepted_len).map_err(cuda_error("accept_block download"))?;
        let next = s.clone_dtoh(&next).map_err(cuda_error("accept_block download"))?;
        let paths = (0..block.batch)
            .map(|b| path[b * block.nodes..][..accepted_len[b] as usize].iter().map(|&n| n as usize).collect())
            .collect();
        Ok(Acceptance { paths, next: next[..block.batch].to_vec(), accept_prob: accept_prob[..per_node].to_vec() })
    }
}
