//! How far relaxed rules move the output away from the target, computed exactly by enumeration
//! (`spire::decode::speculative::analysis`: one-step laws and the joint law of the first `L + 1` tokens of chain
//! generation with blocks of `L` drafts), on random small-vocabulary instances:
//! (i) COOL-SD / UniformRSD with omega <= 1 are exactly lossless;
//! (ii) TV grows monotonically with delta (COOL-SD) and omega (UniformRSD);
//! (iii) the optimal resampling `G*` never does worse than `norm((p - q)+)` under the same
//!      acceptance, and strictly better where omega < 1;
//! (iv) the block TV stays under the bound of `analysis` (sum over positions of the expected
//!      one-step TV), and each G* step attains `sum_x [min(q, omega p) - p]+`;
//! (v) annealed vs constant omega at equal mean accepted length;
//! (vi) LANTERN's promise (the pooled distribution within delta of p, LANTERN++ within
//!      lambda p(x)) holds per drafted token, but does not bound the output law.
//! Finally a sampled check ties the analysis to the verifier: chains and tree levels verified by
//! `verify_chain` / `verify_tree` with relaxed rules produce exactly `step_distribution`'s law.

mod common;

use common::stats::passes_chi_square;
use spire::acceptance::sample_children;
use spire::sampling::{dist, Rng};
use spire::decode::speculative::analysis::{block_law, step_distribution, total_variation};
use spire::decode::speculative::rules::{AcceptanceRule, Cool, LatentNeighbours, Lantern, LanternPlusPlus, UniformRsd, Vanilla};
use spire::decode::speculative::tree::DraftTree;
use spire::decode::speculative::verify::{verify_chain, verify_tree, TreeDraft};
use spire::weights::synthetic::normal;

const VOCAB: usize = 8;

/// Per-position target and draft distributions: target logits with spread `spread`, draft
/// logits = target logits + noise of scale `noise`.
fn instance(rng: &mut Rng, positions: usize, spread: f32, noise: f32) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    (0..positions)
        .map(|_| {
            let logits: Vec<f32> = (0..VOCAB).map(|_| spread * normal(rng)).collect();
            let draft: Vec<f32> = logits.iter().map(|l| l + noise * normal(rng)).collect();
            (dist::softmax(&logits), dist::softmax(&draft))
        })
        .unzip()
}

fn as_f64(p: &[f32]) -> Vec<f64> {
    p.iter().map(|&v| v as f64).collect()
}

fn step_tv(rule: &dyn AcceptanceRule, depth: usize, p: &[f32], q: &[f32]) -> f64 {
    total_variation(&step_distribution(rule, depth, p, q).0, &as_f64(p))
}

/// The paper's annealed schedule `delta exp(-nu i - mu)` without spire's floor at 1.
struct Unfloored(Cool);

impl AcceptanceRule for Unfloored {
    fn describe(&self) -> String {
        format!("unfloored {}", self.0.describe())
    }
    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        UniformRsd { omega: self.0.annealed(depth) }.accept_probability(depth, p, q, x)
    }
    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        UniformRsd { omega: self.0.annealed(depth) }.residual(depth, p, q)
    }
}

/// A rule's acceptance with the naive residual `norm((p - q)+)` instead of its own.
struct NaiveResidual<R>(R);

impl<R: AcceptanceRule> AcceptanceRule for NaiveResidual<R> {
    fn describe(&self) -> String {
        format!("{} with norm((p - q)+)", self.0.describe())
    }
    fn accept_probability(&self, depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        self.0.accept_probability(depth, p, q, x)
    }
    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        Vanilla.residual(depth, p, q)
    }
}

const PAPER_NU: f32 = 0.7;

fn cool(delta: f32) -> Cool {
    Cool::floored(delta, PAPER_NU, 0.0)
}

#[test]
fn omega_at_most_one_is_exactly_lossless() {
    let mut rng = Rng::new(1);
    let mut worst = 0f64;
    for _ in 0..100 {
        let (p, q) = instance(&mut rng, 4, 1.5, 1.5);
        for omega in [0.2f32, 0.6, 0.9, 1.0] {
            worst = worst.max(step_tv(&UniformRsd { omega }, 0, &p[0], &q[0]));
        }
        for rule in [&cool(0.9) as &dyn AcceptanceRule, &Unfloored(cool(0.9)), &UniformRsd { omega: 0.7 }] {
            worst = worst.max(block_law(rule, 3, &p, &q).unwrap().tv);
        }
    }
    println!("(i) omega <= 1: max exact TV from the target over 100 instances (steps and 3-draft blocks): {worst:.2e}");
    assert!(worst < 1e-6);
}

#[test]
fn tv_grows_monotonically_with_delta() {
    let mut rng = Rng::new(2);
    let grid = [1.0f32, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0];
    let (mut step_sum, mut block_sum) = (vec![0f64; grid.len()], vec![0f64; grid.len()]);
    let instances = 40;
    for _ in 0..instances {
        let (p, q) = instance(&mut rng, 4, 1.5, 1.5);
        let steps: Vec<f64> = grid.iter().map(|&omega| step_tv(&UniformRsd { omega }, 0, &p[0], &q[0])).collect();
        let blocks: Vec<f64> = grid.iter().map(|&delta| block_law(&cool(delta), 3, &p, &q).unwrap().tv).collect();
        for k in 1..grid.len() {
            assert!(steps[k] >= steps[k - 1] - 1e-7, "UniformRSD step TV not monotone in omega: {steps:?}");
            assert!(blocks[k] >= blocks[k - 1] - 1e-7, "COOL-SD block TV not monotone in delta: {blocks:?}");
        }
        // A strict increase somewhere: relaxation does move the law.
        assert!(steps[grid.len() - 1] > steps[0] + 1e-4 && blocks[grid.len() - 1] > blocks[0] + 1e-4);
        step_sum.iter_mut().zip(&steps).for_each(|(s, v)| *s += v / instances as f64);
        block_sum.iter_mut().zip(&blocks).for_each(|(s, v)| *s += v / instances as f64);
    }
    for (k, d) in grid.iter().enumerate() {
        println!("(ii) omega/delta {d:4.2}: mean UniformRSD step TV {:.4}, mean COOL-SD 3-draft block TV {:.4}", step_sum[k], block_sum[k]);
    }
}

#[test]
fn optimal_resampling_beats_the_naive_residual() {
    let mut rng = Rng::new(3);
    let (mut strictly, mut total, mut best_gain) = (0, 0, 0f64);
    for _ in 0..300 {
        let (p, q) = instance(&mut rng, 1, 1.5, 1.5);
        for omega in [0.3f32, 0.6, 0.9, 1.0, 1.2, 2.0, 3.0] {
            let optimal = step_tv(&UniformRsd { omega }, 0, &p[0], &q[0]);
            let naive = step_tv(&NaiveResidual(UniformRsd { omega }), 0, &p[0], &q[0]);
            assert!(optimal <= naive + 1e-7, "omega {omega}: G* TV {optimal} > naive {naive}");
            total += 1;
            if optimal < naive - 1e-6 {
                strictly += 1;
                best_gain = best_gain.max(naive - optimal);
            }
            if omega >= 1.0 {
                assert!((optimal - naive).abs() < 1e-6, "for omega >= 1, G* is the vanilla residual");
            }
        }
    }
    println!("(iii) G* vs norm((p-q)+): never worse on {total} cases, strictly better on {strictly} (all with omega < 1), largest gain {best_gain:.4}");
    assert!(strictly > 0);
}

#[test]
fn block_tv_stays_under_the_bound() {
    let mut rng = Rng::new(4);
    let codebook: Vec<f32> = (0..VOCAB * 2).map(|_| normal(&mut rng)).collect();
    let neighbours = LatentNeighbours::from_codebook(&codebook, 2, 3).unwrap();
    let rules: Vec<Box<dyn AcceptanceRule>> = vec![
        Box::new(cool(1.1)),
        Box::new(cool(2.0)),
        Box::new(Unfloored(cool(2.0))),
        Box::new(UniformRsd { omega: 1.5 }),
        Box::new(NaiveResidual(UniformRsd { omega: 0.6 })),
        Box::new(Lantern::new(neighbours.clone(), 0.2)),
        Box::new(LanternPlusPlus::new(neighbours, 2.0)),
    ];
    let mut worst_ratio = vec![0f64; rules.len()];
    for _ in 0..30 {
        let (p, q) = instance(&mut rng, 4, 1.5, 1.5);
        for (k, rule) in rules.iter().enumerate() {
            let law = block_law(rule.as_ref(), 3, &p, &q).unwrap();
            assert!(law.tv <= law.tv_bound + 1e-7, "{}: TV {} above the bound {}", rule.describe(), law.tv, law.tv_bound);
            if law.tv_bound > 0.0 {
                worst_ratio[k] = worst_ratio[k].max(law.tv / law.tv_bound);
            }
        }
        // Each G* step attains the closed form sum_x [min(q, omega p) - p]+.
        for omega in [0.5f32, 1.5, 3.0] {
            let closed: f64 = p[0].iter().zip(&q[0]).map(|(&p, &q)| (q.min(omega * p) - p).max(0.0) as f64).sum();
            assert!((step_tv(&UniformRsd { omega }, 0, &p[0], &q[0]) - closed).abs() < 1e-6);
        }
    }
    for (rule, ratio) in rules.iter().zip(&worst_ratio) {
        println!("(iv) {}: block TV / bound at most {ratio:.3}", rule.describe());
    }
}

/// One block of `block` drafts on a stationary instance (the same `p`, `q` at every depth): the
/// mean accepted length `E = sum_k P(reach depth k)` and the block's summed TV
/// `S = sum_s P(reach depth s) TV(S_s, p)`, the block's share of the bound of `analysis`.
fn block_summary(rule: &dyn AcceptanceRule, block: usize, p: &[f32], q: &[f32]) -> (f64, f64) {
    let (mut reach, mut accepted, mut summed) = (1f64, 0f64, 0f64);
    for s in 0..block {
        let (law, beta) = step_distribution(rule, s, p, q);
        summed += reach * total_variation(&law, &as_f64(p));
        reach *= beta;
        accepted += reach;
    }
    (accepted, summed)
}

/// UniformRSD's omega whose mean accepted length matches `goal` (bisection: it is nondecreasing
/// in omega).
fn matching_omega(goal: f64, block: usize, p: &[f32], q: &[f32]) -> f32 {
    let (mut lo, mut hi) = (0.0f32, 64.0f32);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if block_summary(&UniformRsd { omega: mid }, block, p, q).0 < goal {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// At equal mean accepted length, COOL-SD's annealed omega (floored at 1) spends less summed TV
/// per block than a constant omega: with omega >= 1 a step's TV grows exactly as fast as its
/// acceptance rate, and acceptance bought early in the block also lengthens every later run.
/// The exact joint TV over whole windows (which is sub-additive) is printed alongside: there the
/// uniform schedule is often ahead, so the paper's advantage is one of its bound. The paper's
/// unfloored schedule is also printed: past depth `ln(delta)/nu` it is stricter than vanilla.
#[test]
fn annealed_versus_uniform_at_equal_mean_accepted_length() {
    let mut rng = Rng::new(5);
    let block = 4;
    let instances = 40;
    for delta in [1.1f32, 1.5, 2.0, 3.0] {
        let (mut summed_cool, mut summed_uniform, mut joint_cool, mut joint_uniform, mut accepted) = (0f64, 0f64, 0f64, 0f64, 0f64);
        let (mut summed_unfloored, mut summed_its_uniform) = (0f64, 0f64);
        for k in 0..instances {
            let (p, q) = instance(&mut rng, 1, 1.5, 1.0);
            let (p, q) = (&p[0], &q[0]);
            let (goal, cool_summed) = block_summary(&cool(delta), block, p, q);
            let omega = matching_omega(goal, block, p, q);
            let (matched, uniform_summed) = block_summary(&UniformRsd { omega }, block, p, q);
            assert!((matched - goal).abs() < 1e-4, "bisection failed: {matched} vs {goal}");
            assert!(cool_summed <= uniform_summed + 1e-6, "delta {delta}: COOL-SD summed TV {cool_summed} > UniformRSD {uniform_summed}");
            summed_cool += cool_summed / instances as f64;
            summed_uniform += uniform_summed / instances as f64;
            accepted += goal / instances as f64;
            let (unfloored_goal, unfloored) = block_summary(&Unfloored(cool(delta)), block, p, q);
            let its_uniform = block_summary(&UniformRsd { omega: matching_omega(unfloored_goal, block, p, q) }, block, p, q).1;
            summed_unfloored += unfloored / instances as f64;
            summed_its_uniform += its_uniform / instances as f64;
            if k < 8 {
                let (ps, qs) = (vec![p.clone(); block + 1], vec![q.clone(); block + 1]);
                joint_cool += block_law(&cool(delta), block, &ps, &qs).unwrap().tv / 8.0;
                joint_uniform += block_law(&UniformRsd { omega }, block, &ps, &qs).unwrap().tv / 8.0;
            }
        }
        println!(
            "(v) delta {delta}, nu {PAPER_NU}, {block} drafts, mean accepted {accepted:.3}: summed block TV COOL-SD {summed_cool:.4} vs UniformRSD {summed_uniform:.4}; exact joint TV of {} tokens {joint_cool:.4} vs {joint_uniform:.4}; unfloored schedule: summed TV {summed_unfloored:.4} vs UniformRSD {summed_its_uniform:.4}",
            block + 1
        );
    }
}

/// LANTERN's claim: moving the pooled neighbour mass onto `x` gives a distribution within `delta`
/// of `p` (LANTERN++: `p~(x) <= lambda p(x)`). It bounds each drafted token's relaxation, not the
/// output law, which here exceeds delta.
#[test]
fn lantern_keeps_its_per_token_budget_but_not_an_output_bound() {
    let mut rng = Rng::new(6);
    let codebook: Vec<f32> = (0..VOCAB * 2).map(|_| normal(&mut rng)).collect();
    let neighbours = LatentNeighbours::from_codebook(&codebook, 2, 4).unwrap();
    for delta in [0.05f32, 0.1, 0.2, 0.4] {
        let lantern = Lantern::new(neighbours.clone(), delta);
        let (mut mean_tv, mut max_tv, mut naive_tv) = (0f64, 0f64, 0f64);
        let instances = 200;
        for _ in 0..instances {
            let (p, q) = instance(&mut rng, 1, 1.5, 1.5);
            let (p, q) = (&p[0], &q[0]);
            for x in 0..VOCAB {
                // The pooled distribution: the prefix of neighbours LANTERN pooled, moved onto x.
                let moved = lantern.pooled(p, x) - p[x];
                let mut pooled_law = as_f64(p);
                let mut left = moved as f64;
                for &n in neighbours.of(x) {
                    let take = pooled_law[n as usize].min(left);
                    pooled_law[n as usize] -= take;
                    left -= take;
                }
                pooled_law[x] += moved as f64;
                let tv = total_variation(&pooled_law, &as_f64(p));
                assert!(moved <= delta + 1e-7 && tv <= delta as f64 + 1e-6, "token {x}: pooled {moved} over budget {delta}");
                let lambda = 1.0 + 4.0 * delta;
                assert!(LanternPlusPlus::new(neighbours.clone(), lambda).pooled(p, x) <= lambda * p[x] + 1e-7);
            }
            let tv = step_tv(&lantern, 0, p, q);
            mean_tv += tv / instances as f64;
            max_tv = max_tv.max(tv);
            naive_tv += step_tv(&NaiveResidual(lantern.clone()), 0, p, q) / instances as f64;
        }
        println!("(vi) LANTERN delta {delta}: one-step output TV mean {mean_tv:.4}, max {max_tv:.4} (with norm((p-q)+) residual: mean {naive_tv:.4})");
    }
    // Ten tokens on a line, p uniform, q on the even tokens: each even token pools one odd
    // neighbour (0.1 <= delta), is always accepted, and the output is q: TV 0.5 for delta 0.1.
    let line: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let lantern = Lantern::new(LatentNeighbours::from_codebook(&line, 1, 1).unwrap(), 0.1);
    let p = vec![0.1f32; 10];
    let q: Vec<f32> = (0..10).map(|i| if i % 2 == 0 { 0.2 } else { 0.0 }).collect();
    let tv = step_tv(&lantern, 0, &p, &q);
    println!("(vi) LANTERN delta 0.1 on the line example: output TV {tv:.3}");
    assert!((tv - 0.5).abs() < 1e-6);
}

/// One verification step's first output token, through the real verifier: a chain of one draft
/// (`verify_chain`) or one tree level of `width` siblings (`verify_tree`).
fn first_token(rule: &dyn AcceptanceRule, p: &[f32], q: &[f32], width: usize, rng: &mut Rng) -> u32 {
    let bonus = vec![1.0 / VOCAB as f32; VOCAB];
    if width == 1 {
        let x = dist::sample(q, rng) as u32;
        let out = verify_chain(&[x], &[q], &[p, &bonus], rule, rng).expect("valid chain");
        return if out.accepted() == 1 { x } else { out.next };
    }
    let mut tree = DraftTree::default();
    tree.grow(|_| sample_children(q, width, rng));
    let nodes = tree.into_nodes();
    let p_slots: Vec<Vec<f32>> = std::iter::once(p.to_vec()).chain(nodes.iter().map(|_| bonus.clone())).collect();
    let out = verify_tree(&TreeDraft { nodes: &nodes, q: &[q.to_vec()], p: &p_slots }, rule, rng).expect("valid tree");
    out.path.first().map_or(out.next, |&i| nodes[i].token)
}

#[test]
fn the_verifier_realises_the_analysed_law() {
    let mut rng = Rng::new(7);
    let codebook: Vec<f32> = (0..VOCAB * 2).map(|_| normal(&mut rng)).collect();
    let neighbours = LatentNeighbours::from_codebook(&codebook, 2, 3).unwrap();
    let (p, q) = instance(&mut rng, 1, 1.5, 1.5);
    let rules: Vec<Box<dyn AcceptanceRule>> = vec![
        Box::new(cool(2.0)),
        Box::new(UniformRsd { omega: 0.6 }),
        Box::new(UniformRsd { omega: 2.5 }),
        Box::new(Lantern::new(neighbours.clone(), 0.15)),
        Box::new(LanternPlusPlus::new(neighbours, 2.0)),
    ];
    for (k, rule) in rules.iter().enumerate() {
        let (exact, _) = step_distribution(rule.as_ref(), 0, &p[0], &q[0]);
        println!("{}: exact one-step TV from p {:.4}", rule.describe(), total_variation(&exact, &as_f64(&p[0])));
        for width in [1, 3] {
            let mut sampler = Rng::new(100 + 10 * k as u64 + width as u64);
            let mut counts = vec![0u64; VOCAB];
            for _ in 0..100_000 {
                counts[first_token(rule.as_ref(), &p[0], &q[0], width, &mut sampler) as usize] += 1;
            }
            let label = format!("{}, {}", rule.describe(), if width == 1 { "chain".to_string() } else { format!("tree level of {width}") });
            assert!(passes_chi_square(&label, &counts, &exact), "{label}: the verifier's law differs from the analysed one");
        }
    }
}
