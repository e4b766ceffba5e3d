//! Verification of a drafted chain or tree against the target, on host distributions.
//!
//! **Scheme.** Siblings are drawn without replacement
//! ([`sample_children`](crate::acceptance::sample_children)). The tree is walked from the pending
//! token; at each level the children of the current node are tried in drafting order
//! (multi-draft speculative sampling, SpecInfer-style, in its without-replacement form, cf.
//! recursive rejection sampling):
//! - the first child `x_1 ~ q` is accepted with the rule's probability `a(x_1)`; on rejection the
//!   target side becomes the rule's residual `r_1 = rule.residual_after(x_1)`;
//! - child `k > 1`, drawn from `q_{k-1}` (`q` without `x_1..x_{k-1}`, renormalised), is accepted
//!   with the lossless `min(1, r_{k-1}(x)/q_{k-1}(x))`; on rejection `r_k = norm((r_{k-1} - q_{k-1})+)`;
//! - if every child is rejected, the next token is drawn from the last residual; if a child is
//!   accepted the walk descends into it; at a node without children a bonus token is drawn from
//!   the target at that node.
//!
//! **Exactness.** Given the first rejection, the remaining tries are lossless with respect to
//! `r_1` (each `x_k` is distributed as `q_{k-1}` given the history, and
//! `min(r, q) + (r - q)+ = r`), so one level outputs `q a + sum_x q(x) (1 - a(x)) r_1(x)`: exactly
//! the single-draft law of the rule. With [`Vanilla`] that is `p` (lossless for chains and
//! trees); relaxed rules relax only the first try of each level, so extra siblings raise
//! acceptance without moving the output law away from the single-draft relaxed law
//! ([`step_distribution`](super::analysis::step_distribution) gives it exactly).
//!
//! **Uniforms.** Each try consumes one `rng.uniform()` (accept iff `u < a`), in tree order, and
//! the final residual or bonus sample consumes one more (inverse CDF); a device kernel given the
//! same uniforms reproduces the same decisions.
//!
//! **Validation.** Every distribution used must have the vocabulary's length, finite
//! non-negative entries (NaN/inf is [`Error::NonFiniteLogits`]) and positive mass; tokens must be
//! in the vocabulary and siblings distinct. Nothing here panics on bad input.

use crate::acceptance::SiblingPool;
use crate::decode::speculative::rules::{AcceptanceRule, Vanilla};
use crate::decode::speculative::tree::{check_bfs, slot, DraftNode};
use crate::error::{Error, Result};
use crate::sampling::{dist, Rng};

/// A drafted tree with the distributions verification needs.
pub struct TreeDraft<'a> {
    /// Drafted nodes in BFS order (`nodes[i].index == i`, parents before children, siblings in
    /// drafting order).
    pub nodes: &'a [DraftNode],
    /// Draft distributions: index 0 at the pending token, `1 + i` after node `i` (expanded
    /// nodes only; leaves need none).
    pub q: &'a [Vec<f32>],
    /// Target distributions: index 0 at the pending token, `1 + i` after node `i`.
    pub p: &'a [Vec<f32>],
}

/// What one verification step decided, with its statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// Accepted nodes from the root down (empty when the first level was rejected); for a chain,
    /// `0..accepted`.
    pub path: Vec<usize>,
    /// The token the target adds after the path (a resampled replacement or a bonus token).
    pub next: u32,
    /// Number of drafted tokens (tree nodes) this step verified.
    pub drafted: usize,
}

impl VerifyOutcome {
    /// Number of accepted drafted tokens.
    pub fn accepted(&self) -> usize {
        self.path.len()
    }

    /// Tokens this step commits: the accepted ones plus `next`.
    pub fn emitted(&self) -> usize {
        self.path.len() + 1
    }
}

/// How one level ended.
enum Level {
    /// The `k`-th candidate was accepted.
    Accepted(usize),
    /// All candidates were rejected and `next` was drawn from the residual.
    Rejected(u32),
}

/// Check that `d` is a usable distribution over `vocab` tokens.
fn check_distribution(d: &[f32], vocab: usize, what: &str) -> Result<()> {
    if d.len() != vocab {
        return Err(Error::InvalidRequest(format!("{what} has {} entries, expected the vocabulary size {vocab}", d.len())));
    }
    let mut total = 0f64;
    for &v in d {
        if !v.is_finite() {
            return Err(Error::NonFiniteLogits { context: what.to_string() });
        }
        if v < 0.0 {
            return Err(Error::InvalidRequest(format!("{what} has a negative probability {v}")));
        }
        total += v as f64;
    }
    if total <= 0.0 {
        return Err(Error::InvalidRequest(format!("{what} has no probability mass")));
    }
    Ok(())
}

/// Draw from a validated target distribution (the bonus token).
fn sample_target(p: &[f32], vocab: usize, what: &str, rng: &mut Rng) -> Result<u32> {
    check_distribution(p, vocab, what)?;
    Ok(dist::sample(p, rng) as u32)
}

/// Try `candidates` (siblings drawn without replacement from `q`, in order) against target `p`
/// at 0-based block depth `depth`; see the module docs.
fn verify_level(rule: &dyn AcceptanceRule, depth: usize, p: &[f32], q: &[f32], candidates: &[u32], rng: &mut Rng) -> Result<Level> {
    let vocab = p.len();
    check_distribution(p, vocab, &format!("target distribution at draft depth {depth}"))?;
    check_distribution(q, vocab, &format!("draft distribution at draft depth {depth}"))?;
    for (k, &x) in candidates.iter().enumerate() {
        if x as usize >= vocab {
            return Err(Error::InvalidRequest(format!("drafted token {x} is outside the vocabulary of {vocab}")));
        }
        if candidates[..k].contains(&x) {
            return Err(Error::InvalidRequest(format!("sibling drafts must be distinct (drawn without replacement); token {x} repeats")));
        }
    }
    let mut pool = SiblingPool::new(q);
    // `None` while the target side is still `p` under the rule.
    let mut target: Option<Vec<f32>> = None;
    for (k, &x) in candidates.iter().enumerate() {
        let x = x as usize;
        let accept = match &target {
            None => rule.accept_probability(depth, p, q, x),
            Some(r) => Vanilla.accept_probability(depth, r, pool.current(), x),
        };
        if rng.uniform() < accept as f64 {
            return Ok(Level::Accepted(k));
        }
        target = Some(match &target {
            None => rule.residual_after(depth, p, q, x),
            Some(r) => Vanilla.residual(depth, r, pool.current()),
        });
        pool.remove(x);
    }
    let residual = target.as_deref().unwrap_or(p);
    Ok(Level::Rejected(dist::sample(residual, rng) as u32))
}

/// Verify a drafted chain: tokens `x_0..x_{L-1}` drafted from `q[0..L]`, target distributions
/// `p[0..=L]` (`p[i]` at the context before `x_i`, `p[L]` for the bonus token). Returns the
/// accepted count as `path = 0..n` and the next token: resampled at the first rejection, or the
/// bonus sample from `p[L]` when all are accepted. Block depth `i` is passed to the rule.
pub fn verify_chain<D: AsRef<[f32]>>(tokens: &[u32], q: &[D], p: &[D], rule: &dyn AcceptanceRule, rng: &mut Rng) -> Result<VerifyOutcome> {
    if q.len() != tokens.len() || p.len() != tokens.len() + 1 {
        return Err(Error::InvalidRequest(format!(
            "chain verification of {} tokens needs {} draft and {} target distributions, got {} and {}",
            tokens.len(),
            tokens.len(),
            tokens.len() + 1,
            q.len(),
            p.len()
        )));
    }
    let vocab = p[0].as_ref().len();
    for (i, &x) in tokens.iter().enumerate() {
        match verify_level(rule, i, p[i].as_ref(), q[i].as_ref(), &[x], rng)? {
            Level::Accepted(_) => {}
            Level::Rejected(next) => return Ok(VerifyOutcome { path: (0..i).collect(), next, drafted: tokens.len() }),
        }
    }
    let next = sample_target(p[tokens.len()].as_ref(), vocab, "target distribution for the bonus token", rng)?;
    Ok(VerifyOutcome { path: (0..tokens.len()).collect(), next, drafted: tokens.len() })
}

fn distribution<'a>(table: &'a [Vec<f32>], slot: usize, what: &str) -> Result<&'a [f32]> {
    table
        .get(slot)
        .map(Vec::as_slice)
        .ok_or_else(|| Error::InvalidRequest(format!("verification is missing the {what} distribution at tree slot {slot}")))
}

/// Children of each slot (0 = pending token, `1 + i` = node `i`), after checking the BFS layout.
fn children_by_slot(nodes: &[DraftNode]) -> Result<Vec<Vec<usize>>> {
    check_bfs(nodes)?;
    let mut children = vec![Vec::new(); nodes.len() + 1];
    for (i, node) in nodes.iter().enumerate() {
        children[slot(node.parent)].push(i);
    }
    Ok(children)
}

/// Walk the tree from the pending token, accepting children with `rule`; see the module docs.
pub fn verify_tree(draft: &TreeDraft<'_>, rule: &dyn AcceptanceRule, rng: &mut Rng) -> Result<VerifyOutcome> {
    let children = children_by_slot(draft.nodes)?;
    let vocab = distribution(draft.p, 0, "target")?.len();
    let mut path = Vec::new();
    let mut current = 0;
    loop {
        let p = distribution(draft.p, current, "target")?;
        let kids = &children[current];
        if kids.is_empty() {
            let next = sample_target(p, vocab, &format!("target distribution for the bonus token at tree slot {current}"), rng)?;
            return Ok(VerifyOutcome { path, next, drafted: draft.nodes.len() });
        }
        let q = distribution(draft.q, current, "draft")?;
        let tokens: Vec<u32> = kids.iter().map(|&i| draft.nodes[i].token).collect();
        match verify_level(rule, path.len(), p, q, &tokens, rng)? {
            Level::Accepted(k) => {
                path.push(kids[k]);
                current = slot(Some(kids[k]));
            }
            Level::Rejected(next) => return Ok(VerifyOutcome { path, next, drafted: draft.nodes.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::speculative::rules::Cool;

    fn node(index: usize, token: u32, parent: Option<usize>, depth: usize) -> DraftNode {
        DraftNode { index, token, parent, depth }
    }

    #[test]
    fn chain_accepts_everything_when_q_equals_p_and_draws_bonus() {
        let p = vec![vec![0.5f32, 0.5], vec![0.25, 0.75], vec![0.0, 1.0]];
        let mut rng = Rng::new(1);
        let out = verify_chain(&[0, 1], &p[..2], &p, &Vanilla, &mut rng).unwrap();
        assert_eq!(out, VerifyOutcome { path: vec![0, 1], next: 1, drafted: 2 });
        assert_eq!((out.accepted(), out.emitted()), (2, 3));
    }

    #[test]
    fn chain_rejects_tokens_the_target_never_emits() {
        let p = vec![vec![1.0f32, 0.0], vec![0.5, 0.5]];
        let q = vec![vec![0.0f32, 1.0]];
        let out = verify_chain(&[1], &q, &p, &Vanilla, &mut Rng::new(2)).unwrap();
        assert_eq!((out.path.len(), out.next), (0, 0));
    }

    #[test]
    fn zero_draft_probability_uses_the_limit() {
        // q(x) = 0 with p(x) > 0 accepts; with p(x) = 0 rejects and resamples from p.
        let p = vec![vec![0.5f32, 0.5, 0.0], vec![1.0, 0.0, 0.0]];
        let q = vec![vec![1.0f32, 0.0, 0.0]];
        assert_eq!(verify_chain(&[1], &q, &p, &Vanilla, &mut Rng::new(3)).unwrap().path, vec![0]);
        let out = verify_chain(&[2], &q, &p, &Vanilla, &mut Rng::new(3)).unwrap();
        assert!(out.path.is_empty() && out.next == 1);
    }

    #[test]
    fn non_finite_and_malformed_input_is_an_error() {
        let good = vec![vec![0.5f32, 0.5], vec![0.5, 0.5]];
        let nan = vec![vec![f32::NAN, 0.5], vec![0.5, 0.5]];
        let mut rng = Rng::new(4);
        assert!(matches!(verify_chain(&[0], &nan[..1], &good, &Vanilla, &mut rng), Err(Error::NonFiniteLogits { .. })));
        assert!(matches!(verify_chain(&[0], &good[..1], &nan, &Vanilla, &mut rng), Err(Error::NonFiniteLogits { .. })));
        assert!(matches!(verify_chain(&[0], &good[..1], &[good[0].clone(), vec![f32::INFINITY, 0.0]], &Vanilla, &mut rng), Err(Error::NonFiniteLogits { .. })));
        assert!(verify_chain(&[5], &good[..1], &good, &Vanilla, &mut rng).is_err());
        assert!(verify_chain(&[0], &good, &good, &Vanilla, &mut rng).is_err());
        assert!(verify_chain(&[0], &[vec![0.0f32, 0.0]], &good, &Vanilla, &mut rng).is_err());
        assert!(verify_chain(&[0], &[vec![0.5f32, 0.5, 0.0]], &good, &Vanilla, &mut rng).is_err());
        let none: [Vec<f32>; 0] = [];
        assert!(verify_chain(&[], &none, &none, &Vanilla, &mut rng).is_err());
    }

    #[test]
    fn tree_walks_accepted_children_and_checks_layout() {
        // Root children 0 (token 1) and 1 (token 0); node 0 has child 2 (token 1).
        let nodes = [node(0, 1, None, 1), node(1, 0, None, 1), node(2, 1, Some(0), 2)];
        let point = |t: usize| -> Vec<f32> { (0..2).map(|i| if i == t { 1.0 } else { 0.0 }).collect() };
        let p = vec![point(1), point(1), point(0), point(0)];
        let q = vec![vec![0.5, 0.5], point(1)];
        let draft = TreeDraft { nodes: &nodes, q: &q, p: &p };
        let out = verify_tree(&draft, &Vanilla, &mut Rng::new(5)).unwrap();
        assert_eq!(out, VerifyOutcome { path: vec![0, 2], next: 0, drafted: 3 });
        // Duplicate siblings, bad parents and missing distributions are errors.
        let dup = [node(0, 1, None, 1), node(1, 1, None, 1)];
        assert!(verify_tree(&TreeDraft { nodes: &dup, q: &q, p: &p }, &Vanilla, &mut Rng::new(5)).is_err());
        let bad = [node(0, 1, Some(0), 1)];
        assert!(verify_tree(&TreeDraft { nodes: &bad, q: &q, p: &p }, &Vanilla, &mut Rng::new(5)).is_err());
        let missing = TreeDraft { nodes: &nodes, q: &q[..1], p: &p };
        assert!(verify_tree(&missing, &Cool::floored(2.0, 0.7, 0.0), &mut Rng::new(5)).is_err());
    }

    #[test]
    fn empty_tree_draws_from_the_target() {
        let p = vec![vec![0.0f32, 1.0]];
        let out = verify_tree(&TreeDraft { nodes: &[], q: &[], p: &p }, &Vanilla, &mut Rng::new(6)).unwrap();
        assert_eq!(out, VerifyOutcome { path: vec![], next: 1, drafted: 0 });
    }
}
