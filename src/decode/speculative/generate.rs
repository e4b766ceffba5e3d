//! The speculative decoding loop: draft a chain or tree, verify it with one target pass over the
//! paged KV cache (tree-masked attention), accept with the configured rule, roll back the rest.

use crate::acceptance::sample_children;
use crate::backend::Backend;
use crate::decode::guided::GuidedSeqs;
use crate::decode::speculative::draft::{tree_rows, Drafter, SequenceState};
use crate::decode::speculative::fused::verify_block;
use crate::decode::speculative::rules::AcceptanceRule;
use crate::decode::speculative::tree::{slot, DraftNode, DraftTree, TreeShape};
use crate::decode::speculative::verify::TreeDraft;
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
        let outcome = verify_block(ctx.backend, &draft, rule, &mut ctx.rng)?;
        let from: Vec<usize> = outcome.path.iter().map(|&i| base + i).collect();
        let to: Vec<usize> = (0..outcome.path.len()).map(|j| base + j).collect();
        seqs.move_positions(ctx.backend, cache, &from, &to)?;
        seqs.truncate(cache, base + outcome.path.len())?;

        state.tokens.extend(outcome.path.iter().map(|&i| nodes[i].token));
        state.tokens.push(outcome.next);
        drafter.commit(ctx, &state, &outcome.path, &out)?;
        if depth > 0 {
            ctx.stats.verify_steps += 1;
            ctx.stats.drafted += outcome.drafted;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::decode::GenerationStats;
    use crate::model::{gpt_tensor_shapes, StepOutput};
    use crate::sampling::{Rng, SamplingParams};
    use crate::weights::synthetic::{random_tensors, write_safetensors};
    use crate::weights::{DType, GptConfig, WeightFile};

    /// Proposes the uniform distribution everywhere, so every node gets its full width of children.
    struct UniformDrafter {
        vocab: usize,
    }

    impl<B: Backend> Drafter<B> for UniformDrafter {
        fn start(&mut self, _: &mut DecodeContext<'_, B>, _: &SequenceState) -> Result<Vec<f32>> {
            Ok(vec![1.0 / self.vocab as f32; self.vocab])
        }

        fn expand(&mut self, _: &mut DecodeContext<'_, B>, _: &SequenceState, nodes: &[DraftNode]) -> Result<Vec<Vec<f32>>> {
            Ok(vec![vec![1.0 / self.vocab as f32; self.vocab]; nodes.len()])
        }

        fn commit(&mut self, _: &mut DecodeContext<'_, B>, _: &SequenceState, _: &[usize], _: &StepOutput) -> Result<()> {
            Ok(())
        }
    }

    /// Accepts the first child of every level.
    struct AcceptAll;

    impl AcceptanceRule for AcceptAll {
        fn describe(&self) -> String {
            "accept all".into()
        }

        fn accept_probability(&self, _: usize, _: &[f32], _: &[f32], _: usize) -> f32 {
            1.0
        }

        fn residual(&self, _: usize, p: &[f32], _: &[f32]) -> Vec<f32> {
            p.to_vec()
        }
    }

    /// `drafted` counts every tree node proposed, as its doc says, not the tree's depth.
    #[test]
    fn drafted_counts_every_tree_node() {
        // 9 image tokens, trees of widths [2, 2], every level's first child accepted. Pending
        // position 0: a plain target step (1 token). Positions 1 and 4: full trees (6 nodes,
        // 2 accepted + 1 token each). Position 7: one level (2 nodes, 1 accepted + 1 token).
        let config = GptConfig {
            file: "gpt.safetensors".into(),
            dim: 16,
            n_layer: 1,
            n_head: 2,
            vocab_size: 16,
            num_classes: 2,
            cls_token_num: 1,
            block_size: 9,
            rope_base: 10000.0,
            norm_eps: 1e-5,
            multiple_of: 16,
            ffn_dim_multiplier: None,
        };
        let dir = std::env::temp_dir().join(format!("spire-drafted-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(&config.file);
        write_safetensors(&path, &random_tensors(&gpt_tensor_shapes(&config), 3), DType::F32).unwrap();
        let backend = CpuBackend;
        let gpt = Gpt::load(&backend, &std::sync::Arc::new(WeightFile::open(&path).unwrap()), &config).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut cache = gpt.new_cache(&backend, 4, 16).unwrap();
        let mut ctx = DecodeContext {
            backend: &backend,
            params: SamplingParams::default(),
            rng: Rng::new(1),
            stats: GenerationStats::default(),
            progress: &mut |_, _| {},
        };
        let shape = TreeShape::from_widths(&[2, 2]).unwrap();
        let mut drafter = UniformDrafter { vocab: config.vocab_size };
        let tokens = generate_speculative(&mut ctx, &gpt, &mut cache, &mut drafter, &AcceptAll, &shape, 0).unwrap();
        assert_eq!(tokens.len(), 9);
        let stats = ctx.stats;
        assert_eq!((stats.target_forwards, stats.verify_steps), (4, 3));
        assert_eq!((stats.drafted, stats.accepted), (6 + 6 + 2, 2 + 2 + 1));
    }
}
