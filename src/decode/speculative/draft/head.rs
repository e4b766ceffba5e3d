//! Drafting with an EAGLE/LANTERN-style draft head on the target's features.

use crate::backend::Backend;
use crate::decode::guided::GuidedSeqs;
use crate::decode::speculative::tree::{slot, DraftNode};
use crate::decode::DecodeContext;
use crate::error::{Error, Result};
use crate::kv::PagedKvCache;
use crate::model::{head_row, DraftHead, Gpt, StepOutput, StepRow, TokenInput};
use super::sequence::{tree_rows, SequenceState};
use super::Drafter;

/// A row's output features: conditional, then unconditional (empty without CFG).
type RowFeatures = (Vec<f32>, Vec<f32>);

/// A row waiting to be fed to the head: token at `position` with the target's true feature
/// from `position - 1` (conditional, and unconditional under CFG).
struct PendingRow {
    position: usize,
    token: u32,
    feature: Vec<f32>,
    uncond_feature: Vec<f32>,
}

/// The draft head with its one-layer paged KV cache.
///
/// Positions whose input feature came from the target are kept across steps; tree nodes (fed
/// with the head's own features) are dropped after each verification and the accepted tokens are
/// re-fed with the target's features, as EAGLE does.
pub struct HeadDrafter<'a, B: Backend> {
    head: &'a DraftHead<B>,
    target: &'a Gpt<B>,
    cache: &'a mut PagedKvCache<B>,
    seqs: GuidedSeqs,
    valid: usize,
    pending: Vec<PendingRow>,
    fed: Vec<DraftNode>,
    /// Output features (cond rows, then uncond rows when CFG) of the last fed rows: index 0 is
    /// the pending token, `1 + i` node `i`.
    features: Vec<Vec<f32>>,
}

impl<'a, B: Backend> HeadDrafter<'a, B> {
    /// A drafter using `head` on top of `target`, with the (empty) cache `cache`, which the
    /// caller owns (and may reuse).
    pub fn new(head: &'a DraftHead<B>, target: &'a Gpt<B>, cache: &'a mut PagedKvCache<B>, cfg: bool) -> Self {
        let seqs = GuidedSeqs::open(cache, cfg, target.config().num_classes);
        Self { head, target, cache, seqs, valid: 0, pending: Vec::new(), fed: Vec::new(), features: Vec::new() }
    }

    fn cfg(&self) -> bool {
        self.seqs.uncond.is_some()
    }

    /// Run `rows` with conditional `features` (and their unconditional twins); returns the draft
    /// distributions and records each row's output features (cond and uncond).
    fn run(&mut self, ctx: &mut DecodeContext<'_, B>, rows: Vec<StepRow>, features: Vec<f32>, uncond: Vec<f32>, context: &str) -> Result<(Vec<Vec<f32>>, Vec<RowFeatures>)> {
        let n = rows.len();
        let all_features = if self.cfg() { [features, uncond].concat() } else { features };
        let rows: Vec<StepRow> = rows.into_iter().map(head_row).collect();
        let out = self.head.forward(ctx.backend, self.target, self.cache, &self.seqs.mirror(rows), &all_features)?;
        ctx.stats.draft_forwards += 1;
        let q = self.seqs.distributions(&out, n, &ctx.params, context)?;
        let feats = (0..n)
            .map(|r| (out.hidden_row(r).to_vec(), if self.cfg() { out.hidden_row(n + r).to_vec() } else { Vec::new() }))
            .collect();
        Ok((q, feats))
    }

    fn node_feature(&self, parent: Option<usize>) -> &[f32] {
        &self.features[slot(parent)]
    }
}

impl<B: Backend> Drafter<B> for HeadDrafter<'_, B> {
    fn start(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState) -> Result<Vec<f32>> {
        if self.pending.last().map(|r| r.position) != Some(state.pending_position()) {
            return Err(Error::InvalidRequest("the draft head needs the target's features of the pending token: run a target step first".into()));
        }
        let pending = std::mem::take(&mut self.pending);
        let rows = pending.iter().map(|r| StepRow::causal(self.seqs.cond, TokenInput::Image(r.token), r.position)).collect();
        let features = pending.iter().flat_map(|r| r.feature.iter().copied()).collect();
        let uncond = pending.iter().flat_map(|r| r.uncond_feature.iter().copied()).collect();
        let (mut q, feats) = self.run(ctx, rows, features, uncond, "draft head")?;
        self.valid = state.pending_position() + 1;
        self.fed.clear();
        let (cond, uncond) = feats.into_iter().last().unwrap_or_default();
        self.features = vec![[cond, uncond].concat()];
        Ok(q.pop().unwrap_or_default())
    }

    fn expand(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState, nodes: &[DraftNode]) -> Result<Vec<Vec<f32>>> {
        let d = self.target.config().dim;
        self.fed.extend_from_slice(nodes);
        let rows = tree_rows(self.seqs.cond, state.pending_position(), &self.fed, nodes)?;
        let features = nodes.iter().flat_map(|n| self.node_feature(n.parent)[..d].to_vec()).collect();
        let uncond = nodes.iter().flat_map(|n| self.node_feature(n.parent)[d..].to_vec()).collect();
        let (q, feats) = self.run(ctx, rows, features, uncond, "draft head tree")?;
        for (node, (cond, uncond)) in nodes.iter().zip(feats) {
            if self.features.len() != 1 + node.index {
                return Err(Error::InvalidRequest("draft tree nodes must arrive in BFS order".into()));
            }
            self.features.push([cond, uncond].concat());
        }
        Ok(q)
    }

    fn commit(&mut self, _ctx: &mut DecodeContext<'_, B>, state: &SequenceState, path: &[usize], target: &StepOutput) -> Result<()> {
        let rows = target.logits.len() / target.vocab;
        let n_cond = if self.cfg() { rows / 2 } else { rows };
        let feature = |row: usize, uncond: bool| -> Vec<f32> {
            if uncond {
                if self.cfg() { target.hidden_row(n_cond + row).to_vec() } else { Vec::new() }
            } else {
                target.hidden_row(row).to_vec()
            }
        };
        // Position m+1+j holds token tokens[m+j]; its input feature is the target's hidden state
        // at position m+j: row 0 (the pending token) for j = 0, node path[j-1] after that.
        let m = state.pending_position() - 1 - path.len();
        // Rows not yet fed (no drafting happened since the last commit) stay queued before the new ones.
        let new_rows: Vec<PendingRow> = (0..=path.len())
            .map(|j| {
                let row = if j == 0 { 0 } else { 1 + path[j - 1] };
                PendingRow { position: m + 1 + j, token: state.tokens[m + j], feature: feature(row, false), uncond_feature: feature(row, true) }
            })
            .collect();
        self.pending.extend(new_rows);
        self.valid = self.valid.min(m + 1);
        // Head KV index = position - 1: positions below `valid` are the first `valid - 1` entries.
        self.seqs.truncate(self.cache, self.valid.saturating_sub(1))?;
        self.fed.clear();
        Ok(())
    }
}
