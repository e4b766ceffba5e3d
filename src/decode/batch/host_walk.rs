//! Verification on the host, for rules the fused acceptance op cannot express (LANTERN and
//! LANTERN++: their pooled acceptance and token-dependent residual need the VQ neighbourhoods),
//! after downloading the step's target and draft distributions.

use super::commit::Decision;
use super::device::StepOutcome;
use super::plan::StepPlan;
use super::Batch;
use crate::backend::Backend;
use crate::decode::speculative::tree::DraftNode;
use crate::decode::speculative::verify::{verify_tree, TreeDraft};
use crate::error::{Error, Result};

impl<B: Backend> Batch<'_, B> {
    /// Walk every image's tree with the rule on the host ([`verify_tree`]), with acceptance
    /// uniforms drawn from each image's stream after the pre-drawn ones. Nodes whose token could
    /// not be drawn (their parent's support ran out) are left out, as the host drafter would not
    /// have drafted them.
    pub(super) fn host_walk(&mut self, plan: &StepPlan, outcome: &StepOutcome) -> Result<Vec<Decision>> {
        let spec = self.decoding.speculative.as_ref().ok_or_else(|| Error::Internal("host verification without a rule".into()))?;
        let (p, q) = outcome.distributions.as_ref().ok_or_else(|| Error::Internal("host verification without distributions".into()))?;
        let vocab = self.target.config().vocab_size;
        let (n, slots) = (plan.nodes, plan.nodes + 1);
        let row = |dist: &[f32], b: usize, s: usize| dist[(b * slots + s) * vocab..][..vocab].to_vec();
        let mut decisions = Vec::with_capacity(self.images.len());
        for b in 0..self.images.len() {
            // Kept nodes, renumbered in BFS order, and their indices in the layout.
            let mut kept: Vec<DraftNode> = Vec::new();
            let mut layout_index: Vec<usize> = Vec::new();
            for node in &self.tree.nodes[..plan.images[b].present] {
                let token = outcome.state[b * n + node.index];
                let parent = match node.parent {
                    None => Some(None),
                    Some(parent) => layout_index.iter().position(|&k| k == parent).map(Some),
                };
                if let (Some(parent), true) = (parent, (token as usize) < vocab) {
                    kept.push(DraftNode { index: kept.len(), token, parent, depth: node.depth });
                    layout_index.push(node.index);
                }
            }
            let slot_rows = |dist: &[f32]| -> Vec<Vec<f32>> { std::iter::once(0).chain(layout_index.iter().map(|&k| 1 + k)).map(|s| row(dist, b, s)).collect() };
            let (p_rows, q_rows) = (slot_rows(p), slot_rows(q));
            let draft = TreeDraft { nodes: &kept, q: &q_rows, p: &p_rows };
            let outcome = verify_tree(&draft, spec.rule.as_ref(), &mut self.images[b].rng)?;
            let path = outcome.path.iter().map(|&k| layout_index[k]).collect();
            decisions.push(Decision { path, next: outcome.next });
        }
        Ok(decisions)
    }
}
