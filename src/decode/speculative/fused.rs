//! Verification of a drafted block through the backend's fused acceptance op
//! (`Backend::accept_block`: kernels/accept.cu on a device, its exact twin on the CPU), for every
//! rule of the form it computes ([`AcceptanceRule::kernel_omega`]); other rules (LANTERN) are
//! verified on the host by [`verify_tree`]. Both follow the same scheme (siblings drawn without
//! replacement, multi-draft tries, one residual or bonus draw; `super::verify` documents it), so
//! the output law is the same; they differ in how uniforms are drawn: the fused op takes one
//! pre-drawn uniform per node (in BFS order) plus one for the final token, whether or not a node
//! is tried, so a device never waits on the host for a random number.

use crate::backend::{Backend, DraftBlock};
use crate::decode::speculative::rules::AcceptanceRule;
use crate::decode::speculative::tree::check_bfs;
use crate::decode::speculative::verify::{verify_tree, TreeDraft, VerifyOutcome};
use crate::error::{Error, Result};
use crate::sampling::Rng;

/// Verify `draft` with `rule` on `backend` when the rule has the fused op's form, else on the host.
pub fn verify_block<B: Backend>(backend: &B, draft: &TreeDraft<'_>, rule: &dyn AcceptanceRule, rng: &mut Rng) -> Result<VerifyOutcome> {
    let depth = draft.nodes.iter().map(|n| n.depth).max().unwrap_or(0);
    // Block depth d (0-based) holds the nodes at distance d + 1; deeper entries are never read.
    let omega: Option<Vec<f32>> = (0..draft.nodes.len()).map(|d| if d < depth { rule.kernel_omega(d) } else { Some(1.0) }).collect();
    match omega {
        Some(omega) if !draft.nodes.is_empty() => verify_fused(backend, draft, &omega, rng),
        _ => verify_tree(draft, rule, rng),
    }
}

/// A uniform in `[0, 1)` as f32: the f64 draw rounded down where rounding to nearest would reach
/// 1 (which would reject a certain acceptance).
fn uniform_f32(rng: &mut Rng) -> f32 {
    (rng.uniform() as f32).min(f32::from_bits(0x3f7f_ffff))
}

/// One fused-op launch for one sequence: `[nodes + 1, vocab]` target and draft rows (leaves,
/// which have no draft distribution, get zero rows the op never reads).
fn verify_fused<B: Backend>(backend: &B, draft: &TreeDraft<'_>, omega: &[f32], rng: &mut Rng) -> Result<VerifyOutcome> {
    check_bfs(draft.nodes)?;
    let nodes = draft.nodes.len();
    let vocab = draft.p.first().map_or(0, Vec::len);
    let rows = |dists: &[Vec<f32>], what: &str| -> Result<Vec<f32>> {
        let mut flat = vec![0.0; (nodes + 1) * vocab];
        for (slot, dist) in dists.iter().enumerate().take(nodes + 1) {
            if dist.len() != vocab {
                return Err(Error::InvalidRequest(format!("{what} distribution at tree slot {slot} has {} entries, not {vocab}", dist.len())));
            }
            flat[slot * vocab..(slot + 1) * vocab].copy_from_slice(dist);
        }
        Ok(flat)
    };
    let (p, q) = (backend.upload(&rows(draft.p, "target")?)?, backend.upload(&rows(draft.q, "draft")?)?);
    let tokens: Vec<u32> = draft.nodes.iter().map(|n| n.token).collect();
    let parents: Vec<i32> = draft.nodes.iter().map(|n| n.parent.map_or(-1, |p| p as i32)).collect();
    let u_accept: Vec<f32> = (0..nodes).map(|_| uniform_f32(rng)).collect();
    let u_sample = [uniform_f32(rng)];
    let block = DraftBlock { batch: 1, nodes, vocab, tokens: &tokens, parents: &parents, omega, u_accept: &u_accept, u_sample: &u_sample };
    let mut outcome = backend.accept_block(&p, &q, &block)?;
    Ok(VerifyOutcome { path: outcome.paths.swap_remove(0), next: outcome.next[0], drafted: nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::decode::speculative::rules::{Cool, Lantern, LatentNeighbours, Vanilla};
    use crate::decode::speculative::tree::DraftNode;

    /// A tree of two children of the root and one grandchild, over a 4-token vocabulary.
    fn tree() -> (Vec<DraftNode>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let nodes = vec![
            DraftNode { index: 0, token: 1, parent: None, depth: 1 },
            DraftNode { index: 1, token: 2, parent: None, depth: 1 },
            DraftNode { index: 2, token: 3, parent: Some(0), depth: 2 },
        ];
        let p = vec![vec![0.1, 0.4, 0.2, 0.3], vec![0.25; 4], vec![0.7, 0.1, 0.1, 0.1], vec![0.4, 0.3, 0.2, 0.1]];
        let q = vec![vec![0.3, 0.3, 0.3, 0.1], vec![0.1, 0.2, 0.3, 0.4]];
        (nodes, p, q)
    }

    #[test]
    fn kernel_rules_go_through_the_backend_op_with_pre_drawn_uniforms() {
        let (nodes, p, q) = tree();
        let draft = TreeDraft { nodes: &nodes, q: &q, p: &p };
        for rule in [&Vanilla as &dyn AcceptanceRule, &Cool { delta: 2.0, nu: 0.7, mu: 0.0 }] {
            for seed in 0..50 {
                let got = verify_block(&CpuBackend, &draft, rule, &mut Rng::new(seed)).unwrap();
                // The same uniforms, in the same order, handed to the CPU twin directly.
                let mut rng = Rng::new(seed);
                let u_accept: Vec<f32> = (0..3).map(|_| uniform_f32(&mut rng)).collect();
                let u_sample = [uniform_f32(&mut rng)];
                let omega: Vec<f32> = (0..3).map(|d| rule.kernel_omega(d).unwrap()).collect();
                let flat = |d: &[Vec<f32>]| -> Vec<f32> { (0..4).flat_map(|s| d.get(s).cloned().unwrap_or(vec![0.0; 4])).collect() };
                let block = DraftBlock { batch: 1, nodes: 3, vocab: 4, tokens: &[1, 2, 3], parents: &[-1, -1, 0], omega: &omega, u_accept: &u_accept, u_sample: &u_sample };
                let want = crate::backend::cpu::accept::accept_block(&flat(&p), &flat(&q), &block).unwrap();
                assert_eq!((got.path.clone(), got.next), (want.paths[0].clone(), want.next[0]), "{} seed {seed}", rule.describe());
                assert_eq!(got.drafted, 3);
            }
        }
    }

    #[test]
    fn rules_the_op_cannot_express_are_verified_on_the_host() {
        let (nodes, p, q) = tree();
        let draft = TreeDraft { nodes: &nodes, q: &q, p: &p };
        let codebook = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let lantern = Lantern::new(LatentNeighbours::from_codebook(&codebook, 2, 2).unwrap(), 0.1);
        assert!(lantern.kernel_omega(0).is_none());
        for seed in 0..50 {
            let got = verify_block(&CpuBackend, &draft, &lantern, &mut Rng::new(seed)).unwrap();
            let want = verify_tree(&draft, &lantern, &mut Rng::new(seed)).unwrap();
            assert_eq!(got, want, "seed {seed}");
        }
    }
}
