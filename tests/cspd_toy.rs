//! Continuous speculative decoding on toy Gaussians whose laws are known in closed form (spec
//! §5, S1-S5; the Python twin is tools/reference/cspd_toy.py): the acceptance rule and the
//! residual sampler of `acceptance::gaussian` as `decode::cspd::verify_token` runs them, the
//! surrogate ratio on linear-Gaussian reverse chains (exact for one step, a measured bias for
//! more), and the whole CSpD loop on a toy Gaussian "MAR" (one Gaussian step per token), whose
//! joint law under plain generation is computable.
//!
//! KS tests run at level 1e-3 with enough samples to reject a law at KS distance 0.01 (a "1%
//! error") with power about 0.99; the power is also shown by rejecting deliberately wrong outputs.
//! Each test prints its statistics (`cargo test --release --test cspd_toy -- --nocapture`).

mod common;

use common::stats::{chi_square_cdf_even, ks_test, normal_cdf};
use spire::acceptance::gaussian::{log_acceptance_ratio, sample_residual, DiagGaussian};
use spire::decode::cspd::{generate_cspd, verify_token, CspdOptions, CspdOutput, FinalStep, TokenLaw, VarianceFactor, Verdict, VerifyMode};
use spire::decode::mar::schedule::step_masks;
use spire::decode::mar::{generate_batch, ImageQueries, MarImage, MarNoise, MarSampling, TokenPredictor};
use spire::model::diffusion::HeadSample;
use spire::sampling::Rng;

/// Level of every KS test.
const ALPHA: f64 = 1e-3;
/// Samples of the exactness tests: level 1e-3 then detects a KS distance of 0.0095.
const N: usize = 120_000;
/// Standard errors a moment may stray.
const Z_MAX: f64 = 4.0;

/// A law with no diffusion path (one Gaussian step): the ideal speculative rule.
fn law(mean: &[f64], std: &[f64]) -> TokenLaw {
    TokenLaw { mean: mean.to_vec(), std: std.to_vec(), sum_log_sigma: vec![0.0; mean.len()] }
}

/// The paper's options, with `max_trials` residual proposals.
fn paper(max_trials: usize) -> CspdOptions {
    CspdOptions { max_resample_trials: max_trials, ..CspdOptions::default() }
}

/// Draw from `draft` and verify against `target`.
fn speculate(rng: &mut Rng, target: &TokenLaw, draft: &TokenLaw, options: &CspdOptions) -> (Vec<f64>, Verdict) {
    let x = draft.gaussian().draw(rng);
    verify_token(rng, 0, &x, target, draft, options)
}

/// `|got - want| <= Z_MAX se`, printed.
fn assert_within(label: &str, got: f64, want: f64, se: f64) {
    let z = (got - want).abs() / se;
    println!("{label}: {got:.5} vs {want:.5} ({z:.2} SE)");
    assert!(z <= Z_MAX, "{label}: {got} is {z:.1} standard errors from {want}");
}

/// The density of `N(mean, std²)`.
fn normal_pdf(x: f64, mean: f64, std: f64) -> f64 {
    (-0.5 * ((x - mean) / std).powi(2)).exp() / (std * (2.0 * std::f64::consts::PI).sqrt())
}

/// The CDF of the residual `max(0, p - q)/Z` of two 1-D Gaussians, tabulated by the trapezoid
/// rule on a fine grid, and `Z` (the total variation distance).
struct ResidualCdf {
    lo: f64,
    step: f64,
    cdf: Vec<f64>,
    mass: f64,
}

impl ResidualCdf {
    fn new(p: (f64, f64), q: (f64, f64)) -> Self {
        let (lo, hi, step) = (-15.0, 15.0, 1e-4);
        let density = |x: f64| (normal_pdf(x, p.0, p.1) - normal_pdf(x, q.0, q.1)).max(0.0);
        let points = ((hi - lo) / step) as usize + 1;
        let mut cdf = Vec::with_capacity(points);
        let (mut total, mut previous) = (0.0, density(lo));
        for i in 0..points {
            let value = density(lo + i as f64 * step);
            total += 0.5 * (previous + value) * step;
            previous = value;
            cdf.push(total);
        }
        Self { lo, step, mass: total, cdf: cdf.iter().map(|c| c / total).collect() }
    }

    fn at(&self, x: f64) -> f64 {
        let at = ((x - self.lo) / self.step).clamp(0.0, (self.cdf.len() - 2) as f64);
        let (i, frac) = (at.floor() as usize, at.fract());
        self.cdf[i] * (1.0 - frac) + self.cdf[i + 1] * frac
    }
}

#[test]
fn s1_the_ideal_rule_and_its_residual_give_the_target_law_in_one_dimension() {
    let (p, q) = (law(&[0.0], &[1.0]), law(&[0.7], &[1.3]));
    let residual = ResidualCdf::new((0.0, 1.0), (0.7, 1.3));
    let tv = residual.mass;
    let mut rng = Rng::new(11);
    let (mut out, mut accepted, mut trials) = (Vec::with_capacity(N), 0usize, Vec::new());
    for _ in 0..N {
        let (x, verdict) = speculate(&mut rng, &p, &q, &paper(10_000));
        out.push(x[0]);
        accepted += usize::from(verdict.accepted);
        if !verdict.accepted {
            trials.push(verdict.trials as f64);
        }
    }
    println!("S1: p = N(0, 1), q = N(0.7, 1.3^2), TV(p, q) = {tv:.5}");
    let (_, pv) = ks_test("S1 output vs N(0, 1)", &mut out.clone(), normal_cdf, ALPHA);
    assert!(pv > ALPHA, "the ideal rule's output is not N(0, 1)");
    let rate = accepted as f64 / N as f64;
    assert_within("S1 acceptance = 1 - TV", rate, 1.0 - tv, (rate * (1.0 - rate) / N as f64).sqrt());
    let mean_trials = trials.iter().sum::<f64>() / trials.len() as f64;
    assert_within("S1 residual proposals = 1/TV", mean_trials, 1.0 / tv, ((1.0 - tv) / tv / tv / trials.len() as f64).sqrt());

    // The residual sampler alone: max(0, p - q)/Z.
    let mut draws: Vec<f64> = (0..N).map(|_| sample_residual(&mut rng, p.gaussian(), q.gaussian(), 0.0, 10_000).value[0]).collect();
    let (_, pv) = ks_test("S1 residual sampler vs max(0, p - q)/Z", &mut draws, |x| residual.at(x), ALPHA);
    assert!(pv > ALPHA, "the residual sampler does not draw max(0, p - q)/Z");

    // Power: the same tests reject a 1% error.
    let mut shifted: Vec<f64> = out.iter().map(|x| x + 0.025).collect();
    let (_, pv) = ks_test("S1 power: the output shifted by 0.025 (KS distance 0.00997)", &mut shifted, normal_cdf, ALPHA);
    assert!(pv < ALPHA, "the KS test missed a 1% error");
    let mut leaky: Vec<f64> = (0..N).map(|_| if rng.uniform() < 0.03 { p.gaussian().draw(&mut rng)[0] } else { sample_residual(&mut rng, p.gaussian(), q.gaussian(), 0.0, 10_000).value[0] }).collect();
    let (_, pv) = ks_test("S1 power: a residual with 3% of p mixed in (KS distance 0.011)", &mut leaky, |x| residual.at(x), ALPHA);
    assert!(pv < ALPHA, "the KS test missed a residual leaking 3% of p");
}

#[test]
fn s2_the_rule_in_sixteen_dimensions_gives_the_target_law() {
    let d = 16;
    let mut rng = Rng::new(12);
    let mean_p: Vec<f64> = (0..d).map(|_| rng.standard_normal()).collect();
    let std_p: Vec<f64> = (0..d).map(|_| (0.3 * rng.standard_normal()).exp()).collect();
    let mean_q: Vec<f64> = mean_p.iter().map(|m| m + 0.1 * rng.standard_normal()).collect();
    let std_q: Vec<f64> = std_p.iter().map(|s| s * (0.05 * rng.standard_normal()).exp()).collect();
    let (p, q) = (law(&mean_p, &std_p), law(&mean_q, &std_q));
    let (mut out, mut accepted) = (Vec::with_capacity(N), 0usize);
    for _ in 0..N {
        let (x, verdict) = speculate(&mut rng, &p, &q, &paper(10_000));
        accepted += usize::from(verdict.accepted);
        out.push(x);
    }
    // TV by Monte Carlo: E_q[max(0, 1 - p/q)].
    let gaps: Vec<f64> = (0..4 * N).map(|_| {
        let y = q.gaussian().draw(&mut rng);
        (-(p.gaussian().log_density(&y) - q.gaussian().log_density(&y)).exp_m1()).max(0.0)
    }).collect();
    let tv = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let tv_se = (gaps.iter().map(|g| (g - tv).powi(2)).sum::<f64>() / gaps.len() as f64 / gaps.len() as f64).sqrt();
    println!("S2: 16-D diagonal Gaussians, TV(p, q) = {tv:.5} (Monte Carlo, SE {tv_se:.1e})");
    for j in 0..d {
        let mut column: Vec<f64> = out.iter().map(|x| (x[j] - mean_p[j]) / std_p[j]).collect();
        let (_, pv) = ks_test(&format!("S2 dimension {j}"), &mut column, normal_cdf, ALPHA / d as f64);
        assert!(pv > ALPHA / d as f64, "dimension {j} is not the target's (Bonferroni over {d})");
    }
    let mut mahalanobis: Vec<f64> = out.iter().map(|x| x.iter().zip(&mean_p).zip(&std_p).map(|((x, m), s)| ((x - m) / s).powi(2)).sum()).collect();
    let (_, pv) = ks_test("S2 Mahalanobis^2 vs chi^2_16", &mut mahalanobis, |x| chi_square_cdf_even(x, d), ALPHA);
    assert!(pv > ALPHA);
    let rate = accepted as f64 / N as f64;
    assert_within("S2 acceptance = 1 - TV", rate, 1.0 - tv, (rate * (1.0 - rate) / N as f64 + tv_se * tv_se).sqrt());
}

#[test]
fn s3_a_capped_residual_ends_in_a_draw_from_the_target_not_at_zero() {
    // p = N(0, 1), q = N(delta, 1) with TV 0.005: 100 proposals all fail on (1 - TV)^100 = 0.61 of
    // the rejected tokens.
    let delta = 0.005 * (2.0 * std::f64::consts::PI).sqrt();
    let tv = 2.0 * normal_cdf(delta / 2.0) - 1.0;
    let (p, q) = (law(&[0.0], &[1.0]), law(&[delta], &[1.0]));
    let n = 200_000;
    let mut rng = Rng::new(13);
    let (mut capped, mut near_zero, mut exact_zero) = (0usize, 0usize, 0usize);
    for _ in 0..n {
        let (x, verdict) = speculate(&mut rng, &p, &q, &paper(100));
        capped += usize::from(verdict.capped);
        near_zero += usize::from(x[0].abs() <= 1e-3);
        exact_zero += usize::from(x[0] == 0.0);
    }
    let want = tv * (1.0 - tv).powi(100);
    assert_within("S3 capped fraction = TV (1 - TV)^100", capped as f64 / n as f64, want, (want * (1.0 - want) / n as f64).sqrt());
    let expected = n as f64 * (normal_cdf(1e-3) - normal_cdf(-1e-3));
    let chi = (near_zero as f64 - expected).powi(2) / expected;
    println!("S3: {capped} capped tokens; {near_zero} in |x| <= 1e-3 vs {expected:.0} expected (chi^2 {chi:.2}, 1 dof), {exact_zero} exactly 0");
    assert!(chi < 10.83 && exact_zero == 0, "the capped tokens form a point mass at 0 (the official code's fallback)");
}

/// Linear-Gaussian reverse-chain coefficients `x_{t-1} = a x_t + b + s ε_t` (every step alike).
#[derive(Clone, Copy)]
struct Chain {
    a: f64,
    b: f64,
    s: f64,
}

/// The target and draft chains of tools/reference/cspd_toy.py (S4).
const TARGET_CHAIN: Chain = Chain { a: 0.97, b: 0.02, s: 0.25 };
const DRAFT_CHAIN: Chain = Chain { a: 0.95, b: 0.05, s: 0.30 };

impl Chain {
    /// Mean and std of `x_0` after `steps` steps from `x_T ~ N(0, 1)`.
    fn marginal(self, steps: usize) -> (f64, f64) {
        let (mut m, mut v) = (0.0, 1.0);
        for _ in 0..steps {
            (m, v) = (self.a * m + self.b, self.a * self.a * v + self.s * self.s);
        }
        (m, v.sqrt())
    }

    /// The path `x_T..x_{T-len+1}` from `x_t` with the noises `eps` (shared between chains).
    fn path(self, x_t: f64, eps: &[f64], len: usize) -> Vec<f64> {
        let mut path = vec![x_t];
        for e in &eps[..len - 1] {
            path.push(self.a * path[path.len() - 1] + self.b + self.s * e);
        }
        path
    }

    /// The law of the last step from `x_1`, with `Σ log σ` of the `steps - 1` steps before it.
    fn last_step(self, x1: f64, steps: usize) -> TokenLaw {
        TokenLaw { mean: vec![self.a * x1 + self.b], std: vec![self.s], sum_log_sigma: vec![(steps - 1) as f64 * self.s.ln()] }
    }

    /// `log N(x_T; 0, 1) + Σ_t log N(x_{t-1}; a x_t + b, s²)` along `path` ending at `x0`.
    fn path_log_density(self, path: &[f64], x0: f64) -> f64 {
        let full: Vec<f64> = path.iter().copied().chain([x0]).collect();
        let g = |x: f64, m: f64, s: f64| DiagGaussian { mean: &[m], std: &[s] }.log_density(&[x]);
        g(full[0], 0.0, 1.0) + full.windows(2).map(|w| g(w[1], self.a * w[0] + self.b, self.s)).sum::<f64>()
    }
}

/// One CSpD verification on the chains: the draft's `x_0`, the target's shared-noise path to
/// `x_1`, the surrogate test, the residual from the target's last Gaussian.
fn chain_speculate(rng: &mut Rng, steps: usize, options: &CspdOptions) -> (f64, Verdict) {
    let x_t = rng.standard_normal();
    let eps: Vec<f64> = (0..steps).map(|_| rng.standard_normal()).collect();
    let draft_path = DRAFT_CHAIN.path(x_t, &eps, steps + 1);
    let target_path = TARGET_CHAIN.path(x_t, &eps, steps);
    let x0 = draft_path[steps];
    let (target, draft) = (TARGET_CHAIN.last_step(target_path[steps - 1], steps), DRAFT_CHAIN.last_step(draft_path[steps - 1], steps));
    let (x, verdict) = verify_token(rng, 0, &[x0], &target, &draft, options);
    (x[0], verdict)
}

#[test]
fn s4_the_surrogate_is_the_path_ratio_exact_for_one_step_and_biased_beyond() {
    // S4a: with shared noise the paper's factor makes the surrogate the ratio of the two path
    // densities; the code's inverse does not.
    let steps = 5;
    let mut rng = Rng::new(14);
    for (factor, want_equal) in [(VarianceFactor::Paper, true), (VarianceFactor::Code, false)] {
        let mut worst: f64 = 0.0;
        for _ in 0..1000 {
            let x_t = rng.standard_normal();
            let eps: Vec<f64> = (0..steps).map(|_| rng.standard_normal()).collect();
            let (draft_path, target_path) = (DRAFT_CHAIN.path(x_t, &eps, steps + 1), TARGET_CHAIN.path(x_t, &eps, steps));
            let x0 = draft_path[steps];
            let direct = TARGET_CHAIN.path_log_density(&target_path, x0) - DRAFT_CHAIN.path_log_density(&draft_path[..steps], x0);
            let (p, q) = (TARGET_CHAIN.last_step(target_path[steps - 1], steps), DRAFT_CHAIN.last_step(draft_path[steps - 1], steps));
            let surrogate = log_acceptance_ratio(&[x0], p.gaussian(), q.gaussian(), factor.log_factor(&p.sum_log_sigma, &q.sum_log_sigma), 1.0);
            worst = worst.max((surrogate - direct).abs());
        }
        println!("S4a {} factor vs the path-density ratio (T = {steps}): max |log difference| {worst:.2e}", factor.name());
        assert_eq!(worst < 1e-12, want_equal, "{} factor: {worst}", factor.name());
    }

    // S4c: one step, the surrogate is the exact ratio: the output is the target's x_0.
    let (m, sd) = TARGET_CHAIN.marginal(1);
    let mut out: Vec<f64> = (0..N).map(|_| chain_speculate(&mut rng, 1, &paper(10_000)).0).collect();
    let (_, pv) = ks_test("S4c T = 1: the single-step pipeline vs the target's x_0", &mut out, |x| normal_cdf((x - m) / sd), ALPHA);
    assert!(pv > ALPHA, "the one-step pipeline is not exact");

    // S4b: the bias for T > 1, measured (not asserted): 50000 samples per row, 100 residual
    // proposals (the default cap) then a draw from the target's last Gaussian.
    let n = 50_000;
    println!("S4b surrogate vs the exact target marginal p(x_0) (n = {n}, residual capped at 100 proposals):");
    println!("    T  factor tau_a  accept  capped  out mean/std      exact mean/std    KS D");
    for (steps, factor, tau_a) in [
        (1, VarianceFactor::Paper, 1.0),
        (2, VarianceFactor::Paper, 1.0),
        (2, VarianceFactor::Code, 1.0),
        (5, VarianceFactor::Paper, 1.0),
        (5, VarianceFactor::Code, 1.0),
        (5, VarianceFactor::Code, 42.0),
        (100, VarianceFactor::Paper, 1.0),
        (100, VarianceFactor::Code, 42.0),
    ] {
        let options = CspdOptions { variance_factor: factor, tau_a, ..CspdOptions::default() };
        let runs: Vec<(f64, Verdict)> = (0..n).map(|_| chain_speculate(&mut rng, steps, &options)).collect();
        let mut out: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let rate = |f: fn(&Verdict) -> bool| runs.iter().filter(|r| f(&r.1)).count() as f64 / n as f64;
        let mean = out.iter().sum::<f64>() / n as f64;
        let std = (out.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let (m, sd) = TARGET_CHAIN.marginal(steps);
        let d = common::stats::ks_statistic(&mut out, |x| normal_cdf((x - m) / sd));
        println!(
            "  {steps:3}  {:6} {tau_a:5.0}  {:.4}  {:.4}  {mean:+.4}/{std:.4}    {m:+.4}/{sd:.4}    {d:.4}",
            factor.name(),
            rate(|v| v.accepted),
            rate(|v| v.capped)
        );
    }
}

/// A toy masked AR model of one channel per token and a single Gaussian head step: the token at
/// `p` is `N(bias_p + Σ_{v visible} weight_{p,v} x_v, std_p²)`. Its final step is its only step,
/// so the CSpD surrogate is the exact ratio.
#[derive(Clone)]
struct ToyAr {
    bias: Vec<f64>,
    weight: Vec<Vec<f64>>,
    std: Vec<f64>,
}

impl ToyAr {
    fn random(rng: &mut Rng, len: usize) -> Self {
        Self {
            bias: (0..len).map(|_| 0.5 * rng.standard_normal()).collect(),
            weight: (0..len).map(|p| (0..len).map(|v| if v == p { 0.0 } else { 0.5 * rng.standard_normal() }).collect()).collect(),
            std: (0..len).map(|_| (0.2 * rng.standard_normal()).exp()).collect(),
        }
    }

    /// This model with every coefficient moved by `spread` standard normals (a draft).
    fn perturbed(&self, rng: &mut Rng, spread: f64) -> Self {
        let mut moved = self.clone();
        moved.bias.iter_mut().for_each(|b| *b += spread * rng.standard_normal());
        moved.weight.iter_mut().flatten().filter(|w| **w != 0.0).for_each(|w| *w += spread * rng.standard_normal());
        moved.std.iter_mut().for_each(|s| *s *= (spread * rng.standard_normal()).exp());
        moved
    }

    /// The mean of token `p` given `tokens` where `mask` is false.
    fn mean(&self, p: usize, tokens: &[f32], mask: &[bool]) -> f64 {
        self.bias[p] + (0..mask.len()).filter(|&v| !mask[v]).map(|v| self.weight[p][v] * tokens[v] as f64).sum::<f64>()
    }

    /// Mean and covariance of the tokens plain generation gives in `order` over `num_iter` steps
    /// with a stochastic final step: every token is affine in the standard normals `ε_p`.
    fn joint(&self, order: &[usize], num_iter: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
        let len = self.bias.len();
        let (mut offset, mut loading) = (vec![0.0; len], vec![vec![0.0; len]; len]);
        let mut mask = vec![true; len];
        for step in 0..num_iter {
            let masks = step_masks(order, step, num_iter, &mask);
            for &p in &masks.predict {
                let visible: Vec<usize> = (0..len).filter(|&v| !mask[v]).collect();
                offset[p] = self.bias[p] + visible.iter().map(|&v| self.weight[p][v] * offset[v]).sum::<f64>();
                loading[p] = (0..len).map(|j| visible.iter().map(|&v| self.weight[p][v] * loading[v][j]).sum::<f64>() + if j == p { self.std[p] } else { 0.0 }).collect();
            }
            mask = masks.next;
        }
        let cov = (0..len).map(|i| (0..len).map(|j| (0..len).map(|k| loading[i][k] * loading[j][k]).sum()).collect()).collect();
        (offset, cov)
    }
}

impl TokenPredictor for ToyAr {
    fn seq_len(&self) -> usize {
        self.bias.len()
    }

    fn token_dim(&self) -> usize {
        1
    }

    fn head_steps(&self) -> usize {
        1
    }

    fn predict(&self, images: &[ImageQueries], _temperature: f64) -> spire::Result<Vec<HeadSample>> {
        let run = |image: &ImageQueries| {
            let positions = || image.queries.iter().flat_map(|q| q.positions.iter().map(move |&p| (p, q.mask)));
            let mu0: Vec<f64> = positions().map(|(p, mask)| self.mean(p, image.tokens, mask)).collect();
            HeadSample { sum_log_sigma: vec![0.0; mu0.len()], sigma0: positions().map(|(p, _)| self.std[p]).collect(), mu0 }
        };
        Ok(images.iter().map(run).collect())
    }
}

/// Tokens per toy image and steps: steps of 1, 1, 2 and 2 tokens.
const TOY_LEN: usize = 6;
const TOY_STEPS: usize = 4;

/// A fixed order (the toy's joint depends on it) with fresh noise from `rng`.
fn toy_noise(rng: &mut Rng, order: &[usize]) -> MarNoise {
    MarNoise { order: order.to_vec(), ..MarNoise::draw(rng, TOY_LEN, 1, 1) }
}

/// A toy image (the toys ignore the class).
fn toy_image(noise: &MarNoise) -> MarImage<'_> {
    MarImage { class: 0, noise }
}

fn toy_sampling() -> MarSampling {
    MarSampling { num_iter: TOY_STEPS, ..MarSampling::default() }
}

/// Lower Cholesky factor of a symmetric positive definite matrix.
fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    l
}

/// The KS p-values of the whitened components and of the squared Mahalanobis distance of
/// `samples` against the Gaussian `(mean, cov)` (every component N(0, 1), independent; the
/// squared norm chi-square with `len` degrees of freedom). Returns the smallest p-value, with
/// the components Bonferroni-corrected.
fn joint_test(label: &str, samples: &[Vec<f64>], mean: &[f64], cov: &[Vec<f64>]) -> f64 {
    let (l, len) = (cholesky(cov), mean.len());
    let whitened: Vec<Vec<f64>> = samples
        .iter()
        .map(|x| {
            let mut z = vec![0.0; len];
            for i in 0..len {
                z[i] = (x[i] - mean[i] - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
            }
            z
        })
        .collect();
    let mut worst: f64 = 1.0;
    for i in 0..len {
        let mut column: Vec<f64> = whitened.iter().map(|z| z[i]).collect();
        let (_, pv) = ks_test(&format!("{label}: whitened component {i}"), &mut column, normal_cdf, ALPHA / len as f64);
        worst = worst.min(pv * len as f64);
    }
    let mut norms: Vec<f64> = whitened.iter().map(|z| z.iter().map(|v| v * v).sum()).collect();
    let (_, pv) = ks_test(&format!("{label}: Mahalanobis^2 vs chi^2_{len}"), &mut norms, |x| chi_square_cdf_even(x, len), ALPHA);
    worst.min(pv)
}

/// `n` CSpD generations of the toy pair with `options`, and their summed stats.
fn toy_runs(target: &ToyAr, draft: &ToyAr, order: &[usize], options: &CspdOptions, n: usize, seed: u64) -> (Vec<Vec<f64>>, spire::decode::cspd::CspdStats) {
    let mut rng = Rng::new(seed);
    let mut stats = spire::decode::cspd::CspdStats::default();
    let samples = (0..n)
        .map(|_| {
            let noise = toy_noise(&mut rng, order);
            let out = generate_cspd(target, draft, &toy_sampling(), toy_image(&noise), options, &mut rng).unwrap();
            stats.accumulate(&out.stats);
            out.tokens.iter().map(|&t| t as f64).collect()
        })
        .collect();
    (samples, stats)
}

#[test]
fn s5_the_cspd_loop_with_rollback_gives_the_target_joint_and_the_code_window_does_not() {
    let mut rng = Rng::new(15);
    let target = ToyAr::random(&mut rng, TOY_LEN);
    let draft = target.perturbed(&mut rng, 0.3);
    let order = [4, 1, 5, 0, 2, 3];
    let (mean, cov) = target.joint(&order, TOY_STEPS);
    let rollback = CspdOptions { gamma: 2, prefill_ratio: 0.0, max_resample_trials: 10_000, ..CspdOptions::default() };
    let (samples, stats) = toy_runs(&target, &draft, &order, &rollback, N, 16);
    println!(
        "S5 rollback: acceptance {:.3}, {} resampled, {} discarded, {} bonus tokens, {:.3} target forwards per image",
        stats.acceptance_rate(),
        stats.resampled,
        stats.discarded,
        stats.bonus,
        stats.target_forwards as f64 / N as f64
    );
    assert!(stats.resampled > N / 10 && stats.discarded > 0 && stats.bonus > 0, "the draft must be rejected, discarded and completed often");
    let pv = joint_test("S5 rollback", &samples, &mean, &cov);
    assert!(pv > ALPHA, "CSpD with rollback does not give the target's joint law");

    // The official code's window: each position against the target's prefix-only prediction,
    // nothing discarded. Not the target's joint: the same test rejects it.
    let window = CspdOptions { verify: VerifyMode::MarWindow, ..rollback };
    let (samples, _) = toy_runs(&target, &draft, &order, &window, N, 17);
    let pv = joint_test("S5 mar_window", &samples, &mean, &cov);
    assert!(pv < ALPHA, "the window semantics should not give the target's joint law");
}

#[test]
fn self_speculation_accepts_everything_and_reproduces_plain_generation() {
    let mut rng = Rng::new(18);
    let target = ToyAr::random(&mut rng, TOY_LEN);
    let order = [2, 0, 5, 3, 1, 4];
    for (verify, gamma) in [(VerifyMode::LeviathanRollback, 1), (VerifyMode::LeviathanRollback, 2), (VerifyMode::LeviathanRollback, 5), (VerifyMode::MarWindow, 1)] {
        for final_step in [FinalStep::Deterministic, FinalStep::Stochastic] {
            let options = CspdOptions { verify, gamma, final_step, prefill_ratio: 0.0, ..CspdOptions::default() };
            let noise = toy_noise(&mut rng, &order);
            let run = |options: &CspdOptions| -> CspdOutput { generate_cspd(&target, &target, &toy_sampling(), toy_image(&noise), options, &mut Rng::new(5)).unwrap() };
            let out = run(&options);
            let label = format!("{} gamma {gamma}, {} final step", verify.name(), final_step.name());
            assert!(!out.verdicts.is_empty() && out.verdicts.iter().all(|v| v.log_ratio == 0.0 && v.accepted), "{label}: {:?}", out.verdicts);
            assert_eq!(out.stats.acceptance_rate(), 1.0, "{label}");
            let plain = match final_step {
                FinalStep::Deterministic => generate_batch(&target, &toy_sampling(), &[toy_image(&noise)]).unwrap().remove(0),
                FinalStep::Stochastic => run(&CspdOptions { prefill_ratio: 1.0, ..options }).tokens,
            };
            assert_eq!(out.tokens, plain, "{label}: self-speculation changed the tokens");
        }
    }
}

#[test]
fn a_batch_gives_every_image_the_output_it_gets_alone() {
    // A perturbed draft: images reject at different steps, so with rollback their windows fall
    // out of step.
    let mut rng = Rng::new(19);
    let target = ToyAr::random(&mut rng, TOY_LEN);
    let draft = target.perturbed(&mut rng, 0.5);
    let noises: Vec<MarNoise> = (0..9)
        .map(|i| {
            let mut order: Vec<usize> = (0..TOY_LEN).collect();
            order.rotate_left(i % TOY_LEN);
            toy_noise(&mut rng, &order)
        })
        .collect();
    let images: Vec<MarImage> = noises.iter().map(toy_image).collect();
    for options in [CspdOptions { gamma: 2, prefill_ratio: 0.3, ..CspdOptions::default() }, CspdOptions { gamma: 3, ..CspdOptions::official_code() }] {
        let mut rngs: Vec<Rng> = (0..images.len() as u64).map(Rng::new).collect();
        let batch = spire::decode::cspd::generate_cspd_batch(&target, &draft, &toy_sampling(), &images, &mut rngs, &options).unwrap();
        let forwards: Vec<usize> = batch.iter().map(|out| out.stats.target_forwards).collect();
        if options.verify == VerifyMode::LeviathanRollback {
            assert!(forwards.iter().any(|&f| f != forwards[0]), "rollbacks should put the images out of step: {forwards:?}");
        }
        for (i, (image, out)) in images.iter().zip(&batch).enumerate() {
            assert_eq!(&generate_cspd(&target, &draft, &toy_sampling(), *image, &options, &mut Rng::new(i as u64)).unwrap(), out, "{options:?}: image {i}");
        }
    }
    let plain = generate_batch(&target, &toy_sampling(), &images).unwrap();
    for (image, tokens) in images.iter().zip(&plain) {
        assert_eq!(&generate_batch(&target, &toy_sampling(), &[*image]).unwrap()[0], tokens);
    }
}
