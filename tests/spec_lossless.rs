//! Proof that lossless verification (`spire::decode::speculative::verify` with the `Vanilla` rule) outputs
//! exactly the target's law, for chains ([`verify_chain`]) and trees ([`verify_tree`]) drafted
//! with [`sample_children`] (siblings without replacement).
//!
//! The "models" are Markov tables: the target's and the draft's next-token distributions depend
//! on the absolute position and on the previous token, so the exact law of the first two output
//! tokens is `p_0(a) p_1(b | a)`, whether the second token comes from the same block (an accepted
//! draft, a resample or the bonus token) or from the next block. Each case runs 200 000
//! generations and compares the first token (V cells) and the first two tokens (V^2 cells) with
//! the exact law by Pearson's chi-square test at significance level 1e-4 (cells with expected
//! count < 5 pooled). Power: the same test on the same sample size rejects a verifier whose
//! residual leaks 1% of `q` (the noncentrality of that alternative is printed), and one level of
//! a tree is also checked exactly, without sampling, by enumerating every sibling draw.

mod common;

use common::stats::{chi_square_critical, passes_chi_square, random_distribution};
use spire::acceptance::sample_children;
use spire::sampling::{dist, Rng, SamplingParams};
use spire::decode::speculative::analysis::{step_distribution, total_variation};
use spire::decode::speculative::rules::{AcceptanceRule, Vanilla};
use spire::decode::speculative::tree::{slot, DraftTree, TreeShape};
use spire::decode::speculative::verify::{verify_chain, verify_tree, TreeDraft};
use spire::weights::synthetic::normal;

const SAMPLES: usize = 200_000;
/// Positions a table covers: two output tokens plus the deepest draft and its bonus.
const POSITIONS: usize = 8;

/// Next-token tables `table[position][previous]`, `previous = vocab` at position 0.
#[derive(Clone)]
struct Markov {
    vocab: usize,
    table: Vec<Vec<Vec<f32>>>,
}

impl Markov {
    fn from_fn(vocab: usize, mut f: impl FnMut() -> Vec<f32>) -> Self {
        Self { vocab, table: (0..POSITIONS).map(|_| (0..=vocab).map(|_| f()).collect()).collect() }
    }

    fn random(rng: &mut Rng, vocab: usize, spread: f32) -> Self {
        Self::from_fn(vocab, || random_distribution(rng, vocab, spread))
    }

    /// A CFG-guided model: random cond/uncond logits mixed as LlamaGen does
    /// (`uncond + scale (cond - uncond)`), then top-k and softmax.
    fn guided(rng: &mut Rng, vocab: usize, scale: f32, top_k: usize) -> Self {
        let params = SamplingParams { cfg_scale: scale, top_k, ..Default::default() };
        Self::from_fn(vocab, || {
            let cond: Vec<f32> = (0..vocab).map(|_| normal(rng)).collect();
            let uncond: Vec<f32> = (0..vocab).map(|_| normal(rng)).collect();
            params.distribution(&cond, Some(&uncond), "test").expect("finite logits")
        })
    }

    /// Zero the entries `keep` rejects in every distribution and renormalise.
    fn restricted(mut self, keep: impl Fn(usize) -> bool) -> Self {
        for d in self.table.iter_mut().flatten() {
            d.iter_mut().enumerate().filter(|(t, _)| !keep(*t)).for_each(|(_, v)| *v = 0.0);
            dist::normalize(d);
        }
        self
    }

    fn next(&self, position: usize, tokens: &[u32]) -> &[f32] {
        &self.table[position][tokens.last().map_or(self.vocab, |&t| t as usize)]
    }

    /// Exact law of the first two tokens, index `a * V + b`.
    fn two_token_law(&self) -> Vec<f64> {
        let v = self.vocab;
        (0..v * v).map(|c| self.next(0, &[])[c / v] as f64 * self.next(1, &[(c / v) as u32])[c % v] as f64).collect()
    }
}

/// How one verification step is drafted and checked.
#[derive(Clone, Copy)]
enum Drafting<'a> {
    /// A chain of this many tokens, verified with `verify_chain`.
    Chain(usize),
    /// A tree of this shape, verified with `verify_tree`.
    Tree(&'a TreeShape),
}

/// One draft-verify step after `tokens`; returns the tokens it commits.
fn step(target: &Markov, draft: &Markov, drafting: Drafting<'_>, rule: &dyn AcceptanceRule, tokens: &[u32], rng: &mut Rng) -> Vec<u32> {
    let base = tokens.len();
    match drafting {
        Drafting::Chain(len) => {
            let mut context = tokens.to_vec();
            let (mut q, mut p) = (Vec::new(), vec![target.next(base, &context).to_vec()]);
            for i in 0..len {
                q.push(draft.next(base + i, &context).to_vec());
                context.push(dist::sample(&q[i], rng) as u32);
                p.push(target.next(base + i + 1, &context).to_vec());
            }
            let out = verify_chain(&context[base..], &q, &p, rule, rng).expect("valid chain");
            context.truncate(base + out.accepted());
            context.push(out.next);
            context.split_off(base)
        }
        Drafting::Tree(shape) => {
            let mut tree = DraftTree::default();
            let mut q = vec![draft.next(base, tokens).to_vec()];
            let mut p = vec![target.next(base, tokens).to_vec()];
            for d in 1..=shape.depth() {
                let level = tree.grow(|parent| sample_children(&q[slot(parent)], shape.width(d), rng)).to_vec();
                let nodes = tree.nodes();
                for node in &level {
                    let mut context = tokens.to_vec();
                    let mut path = vec![node.token];
                    let mut up = node.parent;
                    while let Some(i) = up {
                        path.push(nodes[i].token);
                        up = nodes[i].parent;
                    }
                    context.extend(path.iter().rev());
                    q.push(draft.next(base + d, &context).to_vec());
                    p.push(target.next(base + d, &context).to_vec());
                }
            }
            let nodes = tree.into_nodes();
            let out = verify_tree(&TreeDraft { nodes: &nodes, q: &q, p: &p }, rule, rng).expect("valid tree");
            out.path.iter().map(|&i| nodes[i].token).chain([out.next]).collect()
        }
    }
}

/// Counts of the first token and of the first two tokens over `SAMPLES` generations.
fn sample_counts(target: &Markov, draft: &Markov, drafting: Drafting<'_>, rule: &dyn AcceptanceRule, seed: u64) -> (Vec<u64>, Vec<u64>) {
    let v = target.vocab;
    let mut rng = Rng::new(seed);
    let (mut first, mut two) = (vec![0u64; v], vec![0u64; v * v]);
    for _ in 0..SAMPLES {
        let mut tokens = Vec::new();
        while tokens.len() < 2 {
            let committed = step(target, draft, drafting, rule, &tokens, &mut rng);
            tokens.extend(committed);
        }
        first[tokens[0] as usize] += 1;
        two[tokens[0] as usize * v + tokens[1] as usize] += 1;
    }
    (first, two)
}

fn assert_lossless(label: &str, target: &Markov, draft: &Markov, drafting: Drafting<'_>, seed: u64) {
    let (first, two) = sample_counts(target, draft, drafting, &Vanilla, seed);
    let exact = target.two_token_law();
    let v = target.vocab;
    let first_exact: Vec<f64> = (0..v).map(|a| exact[a * v..(a + 1) * v].iter().sum()).collect();
    assert!(passes_chi_square(&format!("{label}, first token"), &first, &first_exact), "{label}: first token differs from p_0");
    assert!(passes_chi_square(&format!("{label}, first two tokens"), &two, &exact), "{label}: first two tokens differ from p_0 p_1");
}

#[test]
fn chains_of_length_one_to_four_are_lossless() {
    let mut rng = Rng::new(1);
    let (target, draft) = (Markov::random(&mut rng, 8, 1.0), Markov::random(&mut rng, 8, 1.0));
    for len in 1..=4 {
        assert_lossless(&format!("V=8 chain {len}"), &target, &draft, Drafting::Chain(len), 10 + len as u64);
    }
}

#[test]
fn trees_are_lossless() {
    let mut rng = Rng::new(2);
    let (target, draft) = (Markov::random(&mut rng, 12, 1.5), Markov::random(&mut rng, 12, 0.7));
    for (widths, seed) in [(&[3usize, 2][..], 21), (&[2, 2, 2], 22), (&[4, 1], 23)] {
        let shape = TreeShape::from_widths(widths).unwrap();
        assert_lossless(&format!("V=12 tree {widths:?}"), &target, &draft, Drafting::Tree(&shape), seed);
    }
}

#[test]
fn adversarial_drafts_are_lossless() {
    let mut rng = Rng::new(3);
    let target = Markov::random(&mut rng, 16, 1.0);
    let tree = TreeShape::from_widths(&[3, 2]).unwrap();
    assert_lossless("V=16 q = p, chain 3", &target, &target, Drafting::Chain(3), 31);
    assert_lossless("V=16 q = p, tree [3, 2]", &target, &target, Drafting::Tree(&tree), 32);
    let peaked = Markov::random(&mut rng, 16, 5.0);
    assert_lossless("V=16 peaked q, chain 2", &target, &peaked, Drafting::Chain(2), 33);
    assert_lossless("V=16 peaked q, tree [3, 2]", &target, &peaked, Drafting::Tree(&tree), 34);
    // Disjoint supports: the draft only proposes tokens the target never emits.
    let half_target = target.clone().restricted(|t| t < 8);
    let disjoint = Markov::random(&mut rng, 16, 1.0).restricted(|t| t >= 8);
    assert_lossless("V=16 disjoint supports, chain 2", &half_target, &disjoint, Drafting::Chain(2), 35);
    assert_lossless("V=16 disjoint supports, tree [3, 2]", &half_target, &disjoint, Drafting::Tree(&tree), 36);
    // Overlapping but different supports (the draft's support is smaller than a tree level).
    let narrow = Markov::random(&mut rng, 16, 1.0).restricted(|t| (6..8).contains(&t));
    assert_lossless("V=16 two-token draft support, tree [3, 2]", &half_target, &narrow, Drafting::Tree(&tree), 37);
}

#[test]
fn cfg_mixed_distributions_are_lossless() {
    let mut rng = Rng::new(4);
    let (target, draft) = (Markov::guided(&mut rng, 8, 4.0, 0), Markov::guided(&mut rng, 8, 2.0, 0));
    assert_lossless("V=8 cfg 4.0 / 2.0, chain 3", &target, &draft, Drafting::Chain(3), 41);
    let (target, draft) = (Markov::guided(&mut rng, 8, 3.0, 5), Markov::guided(&mut rng, 8, 3.0, 4));
    let tree = TreeShape::from_widths(&[2, 2]).unwrap();
    assert_lossless("V=8 cfg 3.0 + top-k 5 / 4, tree [2, 2]", &target, &draft, Drafting::Tree(&tree), 42);
}

/// The law of one tree level, by enumerating every ordered draw of `width` distinct siblings
/// without replacement and applying the multi-draft rule in closed form: an oracle independent of
/// `verify.rs`. Returns the law of the level's output token.
fn level_law_by_enumeration(p: &[f32], q: &[f32], width: usize) -> Vec<f64> {
    fn recurse(target: &[f64], pool: &[f64], left: usize, weight: f64, law: &mut [f64]) {
        let pool_mass: f64 = pool.iter().sum();
        if left == 0 || pool_mass <= 0.0 {
            law.iter_mut().zip(target).for_each(|(l, t)| *l += weight * t);
            return;
        }
        for x in 0..pool.len() {
            let qx = pool[x] / pool_mass;
            if qx <= 0.0 {
                continue;
            }
            let accept = (target[x] / qx).min(1.0);
            law[x] += weight * qx * accept;
            let residual: Vec<f64> = target.iter().zip(pool).map(|(t, q)| (t - q / pool_mass).max(0.0)).collect();
            let mass: f64 = residual.iter().sum();
            if weight * qx * (1.0 - accept) > 0.0 && mass > 0.0 {
                let residual: Vec<f64> = residual.iter().map(|r| r / mass).collect();
                let mut rest = pool.to_vec();
                rest[x] = 0.0;
                recurse(&residual, &rest, left - 1, weight * qx * (1.0 - accept), law);
            }
        }
    }
    let mut law = vec![0f64; p.len()];
    let (target, pool): (Vec<f64>, Vec<f64>) = (p.iter().map(|&v| v as f64).collect(), q.iter().map(|&v| v as f64).collect());
    recurse(&target, &pool, width, 1.0, &mut law);
    law
}

#[test]
fn one_tree_level_is_exactly_lossless_by_enumeration() {
    let mut rng = Rng::new(6);
    let mut worst = 0f64;
    for case in 0..60 {
        let p = random_distribution(&mut rng, 7, 1.0 + (case % 3) as f32);
        let q = match case % 4 {
            0 => p.clone(),
            1 => random_distribution(&mut rng, 7, 5.0),
            2 => {
                let mut q = random_distribution(&mut rng, 7, 1.0);
                q[..4].fill(0.0);
                dist::normalize(&mut q);
                q
            }
            _ => random_distribution(&mut rng, 7, 1.0),
        };
        for width in 1..=4 {
            let law = level_law_by_enumeration(&p, &q, width);
            let p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
            worst = worst.max(total_variation(&law, &p64));
        }
    }
    println!("one tree level (widths 1-4, 60 instances), exact TV from p: max {worst:.2e}");
    assert!(worst < 1e-6);
}

/// Vanilla, except that the residual leaks 1% of `q`: the kind of subtle bug the tests must catch.
struct LeakyResidual;

impl AcceptanceRule for LeakyResidual {
    fn describe(&self) -> String {
        "vanilla with a residual that mixes in 1% of q".into()
    }

    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        Vanilla.accept_probability(depth, p, q, x)
    }

    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        Vanilla.residual(depth, p, q).iter().zip(q).map(|(r, q)| 0.99 * r + 0.01 * q).collect()
    }
}

#[test]
fn the_test_rejects_a_residual_leaking_one_percent_of_q() {
    let mut rng = Rng::new(3);
    // The "V=16 peaked q, chain 2" case of `adversarial_drafts_are_lossless` (same tables and seed),
    // which the exact verifier passes.
    let target = Markov::random(&mut rng, 16, 1.0);
    let peaked = Markov::random(&mut rng, 16, 5.0);
    // Exact first-token law of the leaky verifier, and the noncentrality of the alternative.
    let p0: Vec<f64> = target.next(0, &[]).iter().map(|&v| v as f64).collect();
    let (leaky, _) = step_distribution(&LeakyResidual, 0, target.next(0, &[]), peaked.next(0, &[]));
    let lambda = SAMPLES as f64 * leaky.iter().zip(&p0).map(|(a, b)| (a - b).powi(2) / b).sum::<f64>();
    println!(
        "leaky residual: exact first-token TV {:.4}, noncentrality {lambda:.0} vs critical {:.1} (df 15) at n = {SAMPLES}",
        total_variation(&leaky, &p0),
        chi_square_critical(15)
    );
    let (first, two) = sample_counts(&target, &peaked, Drafting::Chain(2), &LeakyResidual, 33);
    let exact = target.two_token_law();
    assert!(!passes_chi_square("leaky residual, first token", &first, &p0), "the test missed a 1% leak in the residual");
    assert!(!passes_chi_square("leaky residual, first two tokens", &two, &exact), "the test missed a 1% leak in the residual");
}
