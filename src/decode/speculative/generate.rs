//! The speculative decoding loop: draft a chain or tree, verify it with one target pass over the
//! paged KV cache (tree-masked attention), accept with the configured rule, roll back the rest.

use crate::acceptance::sample_children;
use crate::backend::Backend;
use crate::decode::guided::GuidedSeqs;
use crate::decode::speculative::draft::{tree_rows, Drafter, SequenceState};
use crate::decode::speculative::rules::AcceptanceRule;
use crate::decode::speculative::tree::{slot, DraftNode, DraftTree, TreeShape};
use crate::decode::speculative::verify::{verify_tree, TreeDraft};
use crate::decode::DecodeContext;
use crate::error::Result;
use crate::kv::PagedKvCache;
use crate::model::{Gpt, StepRow};

/// Draft, verify and commit until the image's `block_size` tokens exist.
pub fn generate_speculative<B: Backend>(
    ctx: &mut DecodeContext<'_, B>,
    target: &Gpt<B>,
    cache: &mut PagedKvCache<B>,
    drafter: &mut dyn Drafter<B>,
    rule: &dyn AcceptanceRule,
    shape: &TreeShape,
    class: u32,
) -> Result<Vec<u32>> {
    let total = target.config().block_size;
    let seqs = GuidedSeqs::open(cache, ctx.params.uses_cfg(), target.config().num_classes);
    let mut state = SequenceState::new(class);
    while state.tokens.len() < total {
        let m = state.pending_position();
        // The first step is a plain target step: a draft head needs the target's features first.
        let depth = if m == 0 { 0 } else { shape.depth().min(total - m - 1) };
        let (nodes, q) = draft_tree(ctx, drafter, &state, shape, depth)?;

        let base = m + 1;
        let mut rows = vec![StepRow::causal(seqs.cond, state.input_at(m), m)];
        rows.extend(tree_rows(seqs.cond, m, &nodes, &nodes)?);
        let n_rows = rows.len();
        let out = target.forward(ctx.backend, cache, &seqs.mirror(rows))?;
        ctx.stats.target_forwards += 1;
        let p = seqs.distributions(&out, n_rows, &ctx.params, &format!("verification at position {m}"))?;

        let draft = TreeDraft { nodes: &nodes, q: &q, p: &p };
        let outcome = verify_tree(&draft, rule, &mut ctx.rng)?;
        let from: Vec<usize> = outcome.path.iter().map(|&i| base + i).collect();
        let to: Vec<usize> = (0..outcome.path.len()).map(|j| base + j).collect();
        seqs.move_positions(ctx.backend, cache, &from, &to)?;
        seqs.truncate(cache, base + outcome.path.len())?;

        state.tokens.extend(outcome.path.iter().map(|&i| nodes[i].token));
        state.tokens.push(outcome.next);
        drafter.commit(ctx, &state, &outcome.path, &out)?;
        if depth > 0 {
            ctx.stats.verify_steps += 1;
            ctx.stats.drafted += depth;
            ctx.stats.accepted += outcome.path.len();
        }
        (ctx.progress)(state.tokens.len(), total);
    }
    ctx.stats.tokens += total;
    Ok(state.tokens)
}

/// Draft `depth` levels of `shape` below the pending token. Returns the nodes (BFS order) and the
/// draft distributions: index 0 at the pending token, `1 + i` after node `i` (for expanded nodes).
fn draft_tree<B: Backend>(
    ctx: &mut DecodeContext<'_, B>,
    drafter: &mut dyn Drafter<B>,
    state: &SequenceState,
    shape: &TreeShape,
    depth: usize,
) -> Result<(Vec<DraftNode>, Vec<Vec<f32>>)> {
    if depth == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut tree = DraftTree::default();
    let mut q = vec![drafter.start(ctx, state)?];
    for d in 1..=depth {
        let level = tree.grow(|parent| sample_children(&q[slot(parent)], shape.width(d), &mut ctx.rng));
        if d < depth {
            q.extend(drafter.expand(ctx, state, level)?);
        }
    }
    Ok((tree.into_nodes(), q))
}
