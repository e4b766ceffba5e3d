//! Exact analysis of acceptance rules on explicit distributions: the output law of one
//! verification step and of whole chain blocks, total-variation distances and the TV bound.
//! Used to measure how far relaxed modes move away from the target (small vocabularies only:
//! the step law costs O(V^2), the block law O(V^T)).
//!
//! **Block bound.** In chain speculative generation with per-position target `p_t` and draft
//! `q_t` (context-independent), the token at position `t` is produced in a state `s_t`: the depth
//! in the current block (`s < L`: a drafted try at depth `s`, whose one-step law is `S_s(t)`), or
//! `s = L` (the bonus token, law `p_t`). The generated tokens with their states form a Markov
//! process; replacing each step's kernel by one that emits `y ~ p_t` and moves the state as the
//! real step would given `y` leaves the target's joint law, and the hybrid (telescoping)
//! argument gives
//! `TV(P(y_1..y_T), prod_t p_t) <= sum_t sum_s P(s_t = s) TV(S_s(t), p_t)`.
//! With COOL-SD's `G*` each term is `sum_x [min(q_t, omega_s p_t) - p_t]+`, the smallest any
//! resampling distribution achieves ([`super::rules`], `relaxed`). The COOL-SD paper
//! (arXiv 2601.09212) derives `G*` by minimising a TV upper bound; its exact statement was not
//! accessible here, so this is our own derivation of such a bound for the block structure spire
//! runs (tests/spec_relaxed.rs checks it on every rule).

use crate::decode::speculative::rules::AcceptanceRule;
use crate::error::{Error, Result};

/// Exact output distribution of one verification step with a single draft `x ~ q` at block
/// depth `depth`: `P(y) = q(y) a(y) + sum_x q(x) (1 - a(x)) r_x(y)`, with `a` the rule's
/// acceptance and `r_x` its residual after rejecting `x`. Also returns the acceptance rate
/// `sum_x q(x) a(x)`. A tree level has the same output law (see [`super::verify`]).
pub fn step_distribution(rule: &dyn AcceptanceRule, depth: usize, p: &[f32], q: &[f32]) -> (Vec<f64>, f64) {
    let (accepted, rejected) = step_parts(rule, depth, p, q);
    let rate = accepted.iter().sum();
    (accepted.iter().zip(&rejected).map(|(a, r)| a + r).collect(), rate)
}

/// The two halves of a step's output law: mass emitted by accepting the draft, and by resampling.
fn step_parts(rule: &dyn AcceptanceRule, depth: usize, p: &[f32], q: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let vocab = p.len();
    let mut accepted = vec![0f64; vocab];
    let mut rejected = vec![0f64; vocab];
    for (x, &qx) in q.iter().enumerate().take(vocab) {
        let a = rule.accept_probability(depth, p, q, x) as f64;
        accepted[x] = qx as f64 * a;
        let miss = qx as f64 * (1.0 - a);
        if miss > 0.0 {
            let r = rule.residual_after(depth, p, q, x);
            rejected.iter_mut().zip(&r).for_each(|(m, &ry)| *m += miss * ry as f64);
        }
    }
    (accepted, rejected)
}

/// Total-variation distance `0.5 * sum |a - b|`.
pub fn total_variation(a: &[f64], b: &[f64]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}

/// The exact law of the first `T` generated tokens under chain speculative decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockLaw {
    /// Joint law of `(y_0, ..., y_{T-1})`, index `sum_t y_t V^(T-1-t)`.
    pub joint: Vec<f64>,
    /// `TV(joint, prod_t p_t)`.
    pub tv: f64,
    /// The upper bound `sum_t sum_s P(s_t = s) TV(S_s(t), p_t)` (module docs).
    pub tv_bound: f64,
    /// Expected number of drafts accepted in the first block (starting at position 0), counted
    /// within the window (complete when `T > block_len`).
    pub mean_accepted: f64,
}

/// Largest joint law [`block_law`] enumerates.
const MAX_BLOCK_OUTCOMES: usize = 1 << 22;

/// Exact law of the first `T = p.len()` tokens of chain speculative generation with blocks of
/// `block_len` drafts, per-position target `p[t]` and draft `q[t]` (context-independent), `rule`
/// seeing depth `s` for the `s`-th draft of each block; a new block starts after each rejection
/// or bonus token. Distributions must be validated, equally long and `V^T` at most 2^22.
pub fn block_law(rule: &dyn AcceptanceRule, block_len: usize, p: &[Vec<f32>], q: &[Vec<f32>]) -> Result<BlockLaw> {
    let vocab = p.first().map_or(0, Vec::len);
    let positions = p.len();
    let outcomes = u32::try_from(positions).ok().and_then(|t| vocab.checked_pow(t)).filter(|&n| n <= MAX_BLOCK_OUTCOMES);
    let (Some(outcomes), true) = (outcomes, q.len() == positions && p.iter().chain(q).all(|d| d.len() == vocab) && vocab > 0) else {
        return Err(Error::InvalidRequest(format!(
            "block law needs {positions} equally long target and draft distributions and at most {MAX_BLOCK_OUTCOMES} outcomes"
        )));
    };
    // A block longer than the window behaves as one as long as the window.
    let block_len = block_len.min(positions);
    let states = block_len + 1;
    // law[s * n + seq]: probability of the prefix `seq` (n = V^t sequences) with state s next.
    let mut law = vec![0f64; states];
    law[0] = 1.0;
    let mut target = vec![1f64];
    let (mut tv_bound, mut mean_accepted) = (0f64, 0f64);
    for t in 0..positions {
        let n = vocab.pow(t as u32);
        let mut next = vec![0f64; states * n * vocab];
        for s in 0..states {
            let reach: f64 = law[s * n..(s + 1) * n].iter().sum();
            if (1..=block_len).contains(&s) && s == t {
                mean_accepted += reach;
            }
            if reach == 0.0 {
                continue;
            }
            let (accepted, rejected) = if s < block_len {
                step_parts(rule, s, &p[t], &q[t])
            } else {
                (vec![0f64; vocab], p[t].iter().map(|&v| v as f64).collect())
            };
            let one_step: Vec<f64> = accepted.iter().zip(&rejected).map(|(a, r)| a + r).collect();
            let p_t: Vec<f64> = p[t].iter().map(|&v| v as f64).collect();
            tv_bound += reach * total_variation(&one_step, &p_t);
            let accept_state = (s + 1).min(block_len);
            for seq in 0..n {
                let m = law[s * n + seq];
                if m == 0.0 {
                    continue;
                }
                for y in 0..vocab {
                    next[accept_state * n * vocab + seq * vocab + y] += m * accepted[y];
                    next[seq * vocab + y] += m * rejected[y];
                }
            }
        }
        law = next;
        target = target.iter().flat_map(|&m| p[t].iter().map(move |&v| m * v as f64)).collect();
    }
    let joint_len = outcomes;
    let joint: Vec<f64> = (0..joint_len).map(|seq| (0..states).map(|s| law[s * joint_len + seq]).sum()).collect();
    Ok(BlockLaw { tv: total_variation(&joint, &target), joint, tv_bound, mean_accepted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::speculative::rules::{UniformRsd, Vanilla};

    #[test]
    fn vanilla_step_and_block_are_lossless() {
        let p = vec![vec![0.6f32, 0.3, 0.1], vec![0.2, 0.2, 0.6], vec![0.1, 0.5, 0.4]];
        let q = vec![vec![0.1f32, 0.3, 0.6], vec![0.5, 0.4, 0.1], vec![0.3, 0.3, 0.4]];
        let (law, rate) = step_distribution(&Vanilla, 0, &p[0], &q[0]);
        assert!(total_variation(&law, &[0.6, 0.3, 0.1]) < 1e-7);
        assert!((rate - 0.5).abs() < 1e-7);
        let block = block_law(&Vanilla, 2, &p, &q).unwrap();
        assert!(block.tv < 1e-6 && block.tv_bound < 1e-6);
        assert!((block.joint.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // Two drafts: E[accepted] = beta_0 + beta_0 beta_1.
        let beta1 = step_distribution(&Vanilla, 1, &p[1], &q[1]).1;
        assert!((block.mean_accepted - (rate + rate * beta1)).abs() < 1e-7);
    }

    #[test]
    fn relaxed_block_stays_under_its_bound() {
        let p = vec![vec![0.6f32, 0.3, 0.1], vec![0.2, 0.2, 0.6]];
        let q = vec![vec![0.1f32, 0.3, 0.6], vec![0.5, 0.4, 0.1]];
        let block = block_law(&UniformRsd { omega: 3.0 }, 1, &p, &q).unwrap();
        assert!(block.tv > 0.01 && block.tv <= block.tv_bound + 1e-9, "{block:?}");
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(block_law(&Vanilla, 2, &[vec![0.5, 0.5]], &[]).is_err());
        assert!(block_law(&Vanilla, 2, &[], &[]).is_err());
        assert!(block_law(&Vanilla, 2, &vec![vec![0.5f32; 2]; 30], &vec![vec![0.5f32; 2]; 30]).is_err());
    }
}
