//! Drafting with an independent small AR model (same architecture and vocabulary as the target).

use crate::backend::Backend;
use crate::decode::guided::GuidedSeqs;
use crate::decode::speculative::tree::DraftNode;
use crate::decode::DecodeContext;
use crate::error::Result;
use crate::kv::PagedKvCache;
use crate::model::{Gpt, StepOutput, StepRow};
use super::sequence::{tree_rows, SequenceState};
use super::Drafter;

/// A small LlamaGen GPT drafting with its own paged KV cache (and CFG pair when the target
/// uses CFG).
pub struct ModelDrafter<'a, B: Backend> {
    gpt: &'a Gpt<B>,
    cache: &'a mut PagedKvCache<B>,
    seqs: GuidedSeqs,
    /// Positions `< valid` of the draft cache hold the committed sequence.
    valid: usize,
    /// The current tree's nodes that have been fed to the drafter.
    fed: Vec<DraftNode>,
}

impl<'a, B: Backend> ModelDrafter<'a, B> {
    /// A drafter using `gpt` with the (empty) cache `cache`, which the caller owns (and may reuse).
    pub fn new(gpt: &'a Gpt<B>, cache: &'a mut PagedKvCache<B>, cfg: bool) -> Self {
        let seqs = GuidedSeqs::open(cache, cfg, gpt.config().num_classes);
        Self { gpt, cache, seqs, valid: 0, fed: Vec::new() }
    }

    fn run(&mut self, ctx: &mut DecodeContext<'_, B>, rows: Vec<StepRow>, context: &str) -> Result<Vec<Vec<f32>>> {
        let n = rows.len();
        let out = self.gpt.forward(ctx.backend, self.cache, &self.seqs.mirror(rows))?;
        ctx.stats.draft_forwards += 1;
        self.seqs.distributions(&out, n, &ctx.params, context)
    }
}

impl<B: Backend> Drafter<B> for ModelDrafter<'_, B> {
    fn start(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState) -> Result<Vec<f32>> {
        let pending = state.pending_position();
        let rows = (self.valid..=pending).map(|p| StepRow::causal(self.seqs.cond, state.input_at(p), p)).collect();
        let mut q = self.run(ctx, rows, "draft model")?;
        self.valid = pending + 1;
        self.fed.clear();
        Ok(q.pop().unwrap_or_default())
    }

    fn expand(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState, nodes: &[DraftNode]) -> Result<Vec<Vec<f32>>> {
        self.fed.extend_from_slice(nodes);
        let rows = tree_rows(self.seqs.cond, state.pending_position(), &self.fed, nodes)?;
        self.run(ctx, rows, "draft model tree")
    }

    fn commit(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState, path: &[usize], _target: &StepOutput) -> Result<()> {
        let base = self.valid;
        // Accepted nodes that were fed keep their KV, moved onto consecutive positions.
        let kept: Vec<usize> = path.iter().copied().take_while(|&i| self.fed.iter().any(|n| n.index == i)).collect();
        let from: Vec<usize> = kept.iter().map(|&i| base + i).collect();
        let to: Vec<usize> = (0..kept.len()).map(|j| base + j).collect();
        self.seqs.move_positions(ctx.backend, self.cache, &from, &to)?;
        self.valid = (base + kept.len()).min(state.pending_position());
        self.seqs.truncate(self.cache, self.valid)?;
        self.fed.clear();
        Ok(())
    }
}
