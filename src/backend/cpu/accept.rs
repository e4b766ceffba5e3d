//! The exact CPU twin of kernels/accept.cu `accept_block`: the same walk and the same f32
//! operations in the same order, so for equal inputs it returns the same tokens, paths and
//! acceptance probabilities, bit for bit. The element-wise steps (acceptance ratios, residuals,
//! q without a sibling, each normalisation's quotients) are order-free; every sum and every draw
//! goes through [`super::block_cdf`], the kernel's vocabulary ownership, fixed reduction tree
//! (lane sums, warp scans, warp totals in warp order) and inverse CDF in ownership order. It
//! documents and tests the kernel; apart from the scalar `ratio_acceptance` of
//! `crate::acceptance` it is independent of the host verifier.
//! Siblings are drawn without replacement (`crate::acceptance::sample_children`): after a
//! rejection the draft side of the next sibling is q renormalised without the siblings already
//! tried.

use super::block_cdf::{inverse_cdf, total};
use crate::backend::{Acceptance, BlockLayout, DraftBlock};
// The same limit and NaN handling as the kernel's `ratio_accept`.
use crate::acceptance::ratio_acceptance;
use crate::error::Result;

/// `[cur - emitted]+` with `emitted = min(q, omega cur)`, or `q` when `omega` is `None`;
/// normalised when it has mass (then returned), else `None`.
fn residual(cur: &[f32], q: &[f32], omega: Option<f32>) -> Option<Vec<f32>> {
    let mut r: Vec<f32> = cur
        .iter()
        .zip(q)
        .map(|(&c, &qv)| {
            let emitted = omega.map_or(qv, |om| qv.min(om * c));
            (c - emitted).max(0.0)
        })
        .collect();
    let mass = total(&r);
    (mass > 0.0).then(|| {
        r.iter_mut().for_each(|v| *v /= mass);
        r
    })
}

/// `q` without token `x`, renormalised in the kernel's summation order (left as is without mass).
fn drop_token(q: &mut [f32], x: usize) {
    if let Some(v) = q.get_mut(x) {
        *v = 0.0;
    }
    let mass = total(q);
    if mass > 0.0 {
        q.iter_mut().for_each(|v| *v /= mass);
    }
}

/// Verify `block` against `p` and `q` (`[batch, nodes + 1, vocab]`) exactly as the kernel does.
pub fn accept_block(p: &[f32], q: &[f32], block: &DraftBlock<'_>) -> Result<Acceptance> {
    block.validate(p.len(), q.len())?;
    Ok(walk(p, q, block))
}

/// The CPU backend's `accept_block`: the inputs read from `plan` and `state` as the kernel reads
/// them, the decisions written into `state`.
pub(crate) fn accept_into_state(p: &[f32], q: &[f32], plan: &[u32], layout: &BlockLayout, state: &mut [u32]) -> Result<()> {
    layout.check(plan.len(), state.len(), p.len(), q.len())?;
    let (batch, nodes) = (layout.batch, layout.nodes);
    let tokens = state[layout.tokens_at..][..batch * nodes].to_vec();
    let f32s = |at: usize, len: usize| -> &[f32] { bytemuck::cast_slice(&plan[at..at + len]) };
    let block = DraftBlock {
        batch,
        nodes,
        vocab: layout.vocab,
        tokens: &tokens,
        parents: bytemuck::cast_slice(&plan[layout.parents_at..][..batch * nodes]),
        omega: f32s(layout.omega_at, nodes),
        u_accept: f32s(layout.u_accept_at, batch * nodes),
        u_sample: f32s(layout.u_sample_at, batch),
    };
    let out = walk(p, q, &block);
    for (b, path) in out.paths.iter().enumerate() {
        state[layout.accepted_at + b] = path.len() as u32;
        state[layout.next_at + b] = out.next[b];
        for n in 0..nodes {
            state[layout.path_at + b * nodes + n] = path.get(n).map_or(u32::MAX, |&node| node as u32);
        }
    }
    state[layout.prob_at..][..batch * nodes].copy_from_slice(bytemuck::cast_slice(&out.accept_prob));
    Ok(())
}

/// The kernel's walk over every sequence of `block` (lengths already checked).
fn walk(p: &[f32], q: &[f32], block: &DraftBlock<'_>) -> Acceptance {
    let (nodes, vocab) = (block.nodes, block.vocab);
    let mut accept_prob = vec![-1.0f32; block.batch * nodes];
    let mut paths = Vec::with_capacity(block.batch);
    let mut next = Vec::with_capacity(block.batch);
    for b in 0..block.batch {
        let row = |dist: &'_ [f32], slot: usize| -> Vec<f32> { dist[(b * (nodes + 1) + slot) * vocab..][..vocab].to_vec() };
        let mut path = Vec::new();
        let mut node: Option<usize> = None;
        loop {
            let slot = node.map_or(0, |n| n + 1);
            let (p_row, q_row) = (row(p, slot), row(q, slot));
            let om = block.omega.get(path.len()).copied().unwrap_or(0.0);
            let level_omega = if om.is_finite() && om >= 0.0 { om } else { 0.0 };
            let mut cur = p_row.clone();
            let mut q_left = q_row.clone();
            let mut first = true;
            let mut accepted = None;
            // At depth `nodes` a malformed tree still ends, as in the kernel.
            let parent = node.map_or(-1, |n| n as i32);
            let children = (0..nodes).filter(|&n| path.len() < nodes && block.parents[b * nodes + n] == parent);
            for n in children {
                let x = block.tokens[b * nodes + n] as usize;
                let a = match (x < vocab, first) {
                    (false, _) => 0.0,
                    (true, true) => ratio_acceptance(level_omega * p_row[x], q_row[x]),
                    (true, false) => ratio_acceptance(cur[x], q_left[x]),
                };
                accept_prob[b * nodes + n] = a;
                if block.u_accept[b * nodes + n] < a {
                    accepted = Some(n);
                    break;
                }
                if let Some(r) = residual(&cur, &q_left, first.then_some(level_omega)) {
                    cur = r;
                }
                drop_token(&mut q_left, x);
                first = false;
            }
            match accepted {
                Some(n) => {
                    path.push(n);
                    node = Some(n);
                }
                None => {
                    next.push(inverse_cdf(&cur, &[], block.u_sample[b]).unwrap_or(0) as u32);
                    break;
                }
            }
        }
        paths.push(path);
    }
    Acceptance { paths, next, accept_prob }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain<'a>(tokens: &'a [u32], parents: &'a [i32], omega: &'a [f32], u_accept: &'a [f32], u_sample: &'a [f32]) -> DraftBlock<'a> {
        DraftBlock { batch: 1, nodes: tokens.len(), vocab: 3, tokens, parents, omega, u_accept, u_sample }
    }

    #[test]
    fn accepts_a_certain_chain_and_draws_the_bonus_from_p() {
        // p = q everywhere: every draft is accepted with probability 1.
        let dist = [0.2f32, 0.3, 0.5].repeat(3);
        let block = chain(&[2, 1], &[-1, 0], &[1.0, 1.0], &[0.999, 0.999], &[0.25]);
        let out = accept_block(&dist, &dist, &block).unwrap();
        assert_eq!(out.paths, vec![vec![0, 1]]);
        assert_eq!(out.accept_prob, vec![1.0, 1.0]);
        assert_eq!(out.next, vec![1]); // 0.25 falls in (0.2, 0.5]
    }

    #[test]
    fn rejection_resamples_from_the_positive_residual() {
        // p = (0.5, 0.5, 0), q = (0, 0.5, 0.5): token 2 has p = 0 and is rejected; the residual
        // (p - q)+ is all on token 0.
        let p = [0.5f32, 0.5, 0.0].repeat(2);
        let q = [0.0f32, 0.5, 0.5].repeat(2);
        let block = chain(&[2], &[-1], &[1.0], &[0.0], &[0.9]);
        let out = accept_block(&p, &q, &block).unwrap();
        assert_eq!(out.paths, vec![Vec::<usize>::new()]);
        assert_eq!(out.accept_prob, vec![0.0]);
        assert_eq!(out.next, vec![0]);
    }

    #[test]
    fn omega_relaxes_acceptance_and_bad_omega_never_accepts() {
        let p = [0.2f32, 0.3, 0.5].repeat(2);
        let q = [0.1f32, 0.6, 0.3].repeat(2);
        let relaxed = accept_block(&p, &q, &chain(&[1], &[-1], &[1.5], &[0.7], &[0.0])).unwrap();
        assert!((relaxed.accept_prob[0] - 0.75).abs() < 1e-6);
        assert_eq!(relaxed.paths, vec![vec![0]]);
        let bad = accept_block(&p, &q, &chain(&[1], &[-1], &[f32::NAN], &[0.0], &[0.0])).unwrap();
        assert_eq!(bad.accept_prob, vec![0.0]);
        assert_eq!(bad.next, vec![0]); // residual = p, u = 0 draws the first positive token
    }

    /// One tree level of 3 siblings drawn without replacement, verified losslessly: the law of
    /// the emitted token (accepted sibling, or the residual draw) is p.
    #[test]
    fn a_tree_level_without_replacement_emits_the_target_law() {
        use crate::sampling::Rng;
        use crate::acceptance::sample_children;
        let p = [0.05f32, 0.4, 0.1, 0.25, 0.15, 0.05];
        let q = [0.3f32, 0.05, 0.3, 0.1, 0.05, 0.2];
        let (width, vocab, samples) = (3, p.len(), 200_000);
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; vocab];
        for _ in 0..samples {
            let tokens = sample_children(&q, width, &mut rng);
            let dist_p: Vec<f32> = (0..=width).flat_map(|_| p).collect();
            let dist_q: Vec<f32> = (0..=width).flat_map(|_| q).collect();
            let u_accept: Vec<f32> = (0..width).map(|_| rng.uniform() as f32).collect();
            let u_sample = [rng.uniform() as f32];
            let block = DraftBlock { batch: 1, nodes: width, vocab, tokens: &tokens, parents: &[-1; 3], omega: &[1.0; 3], u_accept: &u_accept, u_sample: &u_sample };
            let out = accept_block(&dist_p, &dist_q, &block).unwrap();
            let emitted = out.paths[0].first().map_or(out.next[0], |&n| tokens[n]);
            counts[emitted as usize] += 1;
        }
        for (x, (&c, &px)) in counts.iter().zip(&p).enumerate() {
            let freq = c as f32 / samples as f32;
            assert!((freq - px).abs() < 0.006, "token {x}: frequency {freq} vs p {px}");
        }
    }
}
