//! Verification of a drafted chain or tree against the target, on host distributions.
//!
//! Sibling drafts are sampled i.i.d. from the parent's draft distribution `q`
//! ([`sample_children`]). At each level the children are tried in order (multi-draft speculative
//! sampling, as in SpecInfer): the first try uses the acceptance rule; after a rejection the
//! target side becomes the rule's residual `r`, and each further sibling `x` is accepted with
//! `min(1, r(x)/q(x))`, the residual then becoming `norm((r - q)+)`. If every child is rejected,
//! the next token is drawn from the last residual; if a leaf is accepted, a bonus token is drawn
//! from the target at that leaf. With the vanilla rule this is exactly lossless for chains and
//! trees; relaxed rules relax only the first try of each level.

use crate::error::{Error, Result};
use crate::sampling::{dist, Rng};
use crate::spec::draft::DraftNode;
use crate::spec::rules::{AcceptanceRule, Vanilla};

/// A drafted tree with the distributions verification needs.
pub struct TreeDraft<'a> {
    /// Drafted nodes in BFS order.
    pub nodes: &'a [DraftNode],
    /// Draft distributions: index 0 at the pending token, `1 + i` after node `i` (expanded
    /// nodes only; leaves need none).
    pub q: &'a [Vec<f32>],
    /// Target distributions: index 0 at the pending token, `1 + i` after node `i`.
    pub p: &'a [Vec<f32>],
}

/// What verification decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// Accepted nodes from the root down (empty when the first level was rejected).
    pub path: Vec<usize>,
    /// The token the target adds after the path (a resampled replacement or a bonus token).
    pub next: u32,
}

/// Draw `width` sibling drafts i.i.d. from `q`.
pub fn sample_children(q: &[f32], width: usize, rng: &mut Rng) -> Vec<u32> {
    (0..width).map(|_| dist::sample(q, rng) as u32).collect()
}

fn distribution<'a>(table: &'a [Vec<f32>], index: usize, what: &str) -> Result<&'a [f32]> {
    table
        .get(index)
        .map(Vec::as_slice)
        .ok_or_else(|| Error::InvalidRequest(format!("verification is missing the {what} distribution at tree slot {index}")))
}

/// Walk the tree from the pending token, accepting children with `rule`; see the module docs.
pub fn verify_tree(draft: &TreeDraft<'_>, rule: &dyn AcceptanceRule, rng: &mut Rng) -> Result<VerifyOutcome> {
    let mut path = Vec::new();
    let mut parent: Option<usize> = None;
    loop {
        let slot = parent.map_or(0, |i| 1 + i);
        let p = distribution(draft.p, slot, "target")?;
        let children: Vec<&DraftNode> = draft.nodes.iter().filter(|n| n.parent == parent).collect();
        if children.is_empty() {
            return Ok(VerifyOutcome { path, next: dist::sample(p, rng) as u32 });
        }
        let q = distribution(draft.q, slot, "draft")?;
        let depth = children[0].depth - 1;
        let mut residual: Option<Vec<f32>> = None;
        let mut accepted = None;
        for child in children {
            let x = child.token as usize;
            let a = match &residual {
                None => rule.accept_probability(depth, p, q, x),
                Some(r) => Vanilla.accept_probability(depth, r, q, x),
            };
            if rng.uniform() < a as f64 {
                accepted = Some(child.index);
                break;
            }
            residual = Some(match residual {
                None => rule.residual(depth, p, q),
                Some(r) => Vanilla.residual(depth, &r, q),
            });
        }
        match accepted {
            Some(i) => {
                path.push(i);
                parent = Some(i);
            }
            None => {
                let r = residual.unwrap_or_else(|| p.to_vec());
                return Ok(VerifyOutcome { path, next: dist::sample(&r, rng) as u32 });
            }
        }
    }
}
