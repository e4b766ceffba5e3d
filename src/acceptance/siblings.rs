//! How siblings are drafted, and therefore how verification must treat them.
//!
//! The children of one tree node are drawn **sequentially without replacement** from the draft
//! distribution `q` at that node: `x_1 ~ q`, then `x_2 ~ q_1 = norm(q` with `x_1` removed`)`, and so
//! on. Siblings are therefore distinct (no tree slot is wasted on a duplicate) and the `k`-th
//! sibling's law given the earlier ones is `q_{k-1}`, which verification uses as the draft side of
//! the multi-draft rule. Drafting and verification share one `SiblingPool`, so both see bitwise the
//! same `q_k`.

use crate::sampling::{dist, Rng};

/// The draft distribution for the next sibling: `q` with the siblings drawn so far removed and the
/// rest renormalised.
#[derive(Clone, Debug)]
pub(crate) struct SiblingPool {
    q: Vec<f32>,
}

impl SiblingPool {
    /// The pool before any sibling is drawn: `q` as given.
    pub(crate) fn new(q: &[f32]) -> Self {
        Self { q: q.to_vec() }
    }

    /// The distribution the next sibling is drawn from.
    pub(crate) fn current(&self) -> &[f32] {
        &self.q
    }

    /// Remove token `x` and renormalise. Returns `false` when no mass is left (no further
    /// sibling can be drawn).
    pub(crate) fn remove(&mut self, x: usize) -> bool {
        if let Some(v) = self.q.get_mut(x) {
            *v = 0.0;
        }
        dist::normalize(&mut self.q)
    }
}

/// Draw up to `width` distinct sibling drafts from `q`, sequentially without replacement (one
/// uniform each). Fewer come back when `q`'s support is smaller than `width`; none when `q` has
/// no positive mass. The host verifier (`decode::speculative::verify`) and the device acceptance
/// kernel assume exactly this law, with siblings kept in the order returned.
pub fn sample_children(q: &[f32], width: usize, rng: &mut Rng) -> Vec<u32> {
    let mut pool = SiblingPool::new(q);
    let mut children = Vec::with_capacity(width);
    while children.len() < width {
        let x = dist::sample(pool.current(), rng);
        // Stops on NaN too.
        if pool.current().get(x).is_none_or(|&m| m.is_nan() || m <= 0.0) {
            break;
        }
        children.push(x as u32);
        if !pool.remove(x) {
            break;
        }
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_distinct_and_limited_by_support() {
        let mut rng = Rng::new(7);
        let q = [0.0, 0.5, 0.0, 0.3, 0.2];
        for _ in 0..100 {
            let mut c = sample_children(&q, 3, &mut rng);
            c.sort_unstable();
            assert_eq!(c, [1, 3, 4]);
        }
        assert_eq!(sample_children(&q, 5, &mut rng).len(), 3);
        assert!(sample_children(&[0.0, 0.0], 2, &mut rng).is_empty());
        assert!(sample_children(&[f32::NAN, 0.5], 2, &mut rng).len() <= 1);
    }

    #[test]
    fn second_child_follows_the_renormalised_remainder() {
        // q = [0.5, 0.25, 0.25]: P(second = 2) = 0.5 * (0.25 / 0.5) + 0.25 * (0.25 / 0.75) = 1/3.
        let mut rng = Rng::new(8);
        let n = 200_000;
        let hits = (0..n).filter(|_| sample_children(&[0.5, 0.25, 0.25], 2, &mut rng)[1] == 2).count();
        assert!((hits as f64 / n as f64 - 1.0 / 3.0).abs() < 0.005);
    }
}
