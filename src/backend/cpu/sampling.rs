//! The exact CPU twin of kernels/sampling.cu `process_logits`: the same steps, the same f32 and
//! f64 operations in the same order (each kernel thread's elements `t, t + SAMPLING_THREADS, ...`
//! summed in index order, a butterfly over each warp's 32 lanes, the warp totals in warp order)
//! and the kernel's own exponential ([`exp_nonpositive`]), so for equal inputs it returns the
//! same probabilities and flags, bit for bit, as the kernel on the emulator and on a GPU (every
//! f32 operation involved is correctly rounded on both, and the kernel uses only explicitly
//! rounded intrinsics). The kernel documents the algorithm; this file follows it step by step.
//!
//! Against the host's [`SamplingParams::distribution`] (f64 softmax with the library `exp`) the
//! difference is the f32 exponential's relative error (< 2e-7), so `|p - p_host| <= 1e-6` for
//! every token; the kept sets of top-k are identical, those of top-p too unless a running sum
//! lands within ~1e-7 of `top_p` or a tie group straddles the top-p cut (the kernel keeps the
//! earliest indices of the group; the host's `sort_unstable_by` leaves that order unspecified).

use crate::backend::gpu::geometry::SAMPLING_THREADS;
use crate::backend::ops::{check_parts, LogitsMap, ROW_BAD_INDEX, ROW_NONFINITE};
use crate::error::{Error, Result};
use crate::sampling::logits::argmax;
use crate::sampling::SamplingParams;

/// Threads per block of the kernel.
const THREADS: usize = SAMPLING_THREADS as usize;

/// The kernel's `exp_nonpositive`: `exp(x)` for `x <= 0` (or -inf), from f32 fused
/// multiply-adds (Cody-Waite reduction, N. Juffa's degree-7 polynomial), scaled by `2^j` exactly
/// in f64; max relative error 1.73e-7 (2e-7 checked below) down to the smallest f32 subnormal;
/// 0 below -104.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f64 {
    if x.partial_cmp(&-104.0) != Some(std::cmp::Ordering::Greater) {
        return 0.0;
    }
    let c = f32::from_bits;
    let magic = c(0x4b40_0000);
    let j = c(0x3fb8_aa3b).mul_add(x, magic) - magic;
    let mut f = j.mul_add(c(0xbf31_7200), x);
    f = j.mul_add(c(0xb5bf_be8e), f);
    let mut r = c(0x3ab4_a000);
    for coefficient in [0x3c09_2f6e, 0x3d2a_adad, 0x3e2a_aa28, 0x3eff_fffb, 0x3f80_0000, 0x3f80_0000] {
        r = r.mul_add(f, c(coefficient));
    }
    let i = j as i64; // in [-150, 0]
    f64::from(r) * f64::from_bits(((i + 1023) as u64) << 52)
}

/// `exp_nonpositive(x - m)` for every `x`: with the FMA instruction where the CPU has it (the
/// fused multiply-adds are correctly rounded either way, so the values are the same; without
/// it each one is a library call).
fn exponentials(x: &[f32], m: f32) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return unsafe { exponentials_fma(x, m) };
    }
    x.iter().map(|&v| exp_nonpositive(v - m)).collect()
}

/// [`exponentials`] compiled with FMA enabled.
///
/// # Safety
/// The CPU must support FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn exponentials_fma(x: &[f32], m: f32) -> Vec<f64> {
    x.iter().map(|&v| exp_nonpositive(v - m)).collect()
}

/// The elements kernel thread `t` owns.
fn owned(vocab: usize, t: usize) -> impl Iterator<Item = usize> {
    (t..vocab).step_by(THREADS)
}

/// The kernel's `block_sum_f64` of the per-thread values `partial` (`[THREADS]`).
fn block_sum(partial: &[f64]) -> f64 {
    let mut total = 0.0;
    for warp in partial.chunks_exact(32) {
        let mut lanes: [f64; 32] = warp.try_into().expect("32 lanes");
        for offset in [16, 8, 4, 2, 1] {
            let before = lanes;
            for (lane, v) in lanes.iter_mut().enumerate() {
                *v = before[lane] + before[lane ^ offset];
            }
        }
        total += lanes[0];
    }
    total
}

/// Sum over the row of the values `keep` selects, in the kernel's order.
fn row_sum(p: &[f32], keep: impl Fn(f32) -> bool) -> f64 {
    let partial: Vec<f64> = (0..THREADS).map(|t| owned(p.len(), t).filter(|&i| keep(p[i])).fold(0.0, |s, i| s + f64::from(p[i]))).collect();
    block_sum(&partial)
}

/// An unsigned key ordering like `f32::total_cmp`.
fn order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn key_value(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 { key & 0x7fff_ffff } else { !key })
}

/// The kernel's radix select: the `top_k`-th largest of `x` in total order (the host's
/// `sorted[top_k - 1]`).
pub fn top_k_threshold(x: &[f32], top_k: usize) -> f32 {
    let (mut prefix, mut mask, mut rank) = (0u32, 0u32, top_k as u32);
    for shift in [24, 16, 8, 0] {
        let mut hist = [0u32; 256];
        for key in x.iter().map(|&v| order_key(v)).filter(|key| key & mask == prefix) {
            hist[((key >> shift) & 255) as usize] += 1;
        }
        let (mut above, mut d) = (0u32, 255usize);
        while d > 0 && above + hist[d] < rank {
            above += hist[d];
            d -= 1;
        }
        prefix |= (d as u32) << shift;
        rank -= above;
        mask |= 255 << shift;
    }
    key_value(prefix)
}

/// The kernel's `apply_top_p` on a normalised row.
fn apply_top_p(p: &mut [f32], top_p: f32) {
    let limit = f64::from(top_p);
    let mass = |p: &[f32], cut: u32| row_sum(p, |v| v.to_bits() >= cut);
    if mass(p, 0) <= limit {
        return;
    }
    let (mut lo, mut hi, mut mass_hi) = (0u32, 0x3f80_0001u32, 0.0f64);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let m = mass(p, mid);
        if m > limit {
            lo = mid;
        } else {
            hi = mid;
            mass_hi = m;
        }
    }
    let ties = p.iter().filter(|v| v.to_bits() == lo).count();
    let v = f64::from(f32::from_bits(lo));
    let mut need = ties;
    let mut running = mass_hi;
    for j in 1..=ties {
        running += v;
        if running > limit {
            need = j;
            break;
        }
    }
    // Keep the first `need` ties in index order (the kernel's stripe ranking).
    let mut seen = 0;
    for x in p.iter_mut() {
        if x.to_bits() == lo {
            if seen >= need {
                *x = 0.0;
            }
            seen += 1;
        }
    }
    for x in p.iter_mut() {
        if x.to_bits() < lo {
            *x = 0.0;
        }
    }
    let total = row_sum(p, |x| x.to_bits() >= lo);
    for x in p.iter_mut() {
        *x = (f64::from(*x) / total) as f32;
    }
}

/// The kernel's `top_k` argument: 0 (off) for 0 or `top_k >= vocab`, as on the host.
pub(crate) fn effective_top_k(params: &SamplingParams, vocab: usize) -> usize {
    if params.top_k < vocab {
        params.top_k
    } else {
        0
    }
}

/// One output row: its probabilities and its flag (0, or [`ROW_NONFINITE`] with a NaN row).
pub fn process_row(cond: &[f32], uncond: Option<&[f32]>, params: &SamplingParams) -> (Vec<f32>, u32) {
    let vocab = cond.len();
    let greedy = params.temperature == 0.0;
    let mut bad = false;
    let mut out: Vec<f32> = (0..vocab)
        .map(|i| {
            let mut z = cond[i];
            if let Some(u) = uncond {
                z = u[i] + (z - u[i]) * params.cfg_scale;
            }
            bad |= !z.is_finite();
            if !greedy {
                z /= params.temperature;
                bad |= !z.is_finite();
            }
            z
        })
        .collect();
    if bad {
        return (vec![f32::NAN; vocab], ROW_NONFINITE);
    }
    if greedy {
        let best = argmax(&out);
        return ((0..vocab).map(|i| if i == best { 1.0 } else { 0.0 }).collect(), 0);
    }
    let top_k = effective_top_k(params, vocab);
    if top_k > 0 {
        let threshold = top_k_threshold(&out, top_k);
        out.iter_mut().filter(|x| **x < threshold).for_each(|x| *x = f32::NEG_INFINITY);
    }
    let m = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The kernel computes each exponential twice (for the sum, then for the division); they are
    // the same number, so computing it once here changes nothing.
    let e = exponentials(&out, m);
    let partial: Vec<f64> = (0..THREADS).map(|t| owned(vocab, t).fold(0.0, |s, i| s + e[i])).collect();
    let total = block_sum(&partial);
    out.iter_mut().zip(&e).for_each(|(x, &e)| *x = (e / total) as f32);
    if params.top_p < 1.0 {
        apply_top_p(&mut out, params.top_p);
    }
    (out, 0)
}

/// Check `map` against the buffers (`logits_len` values, `words_len` index words, `probs_len`
/// probabilities, `flags_len` flags) and the parameters; returns the logits rows.
pub(crate) fn check_map(map: &LogitsMap, params: &SamplingParams, logits_len: usize, words_len: usize, probs_len: usize, flags_len: usize) -> Result<usize> {
    params.validate()?;
    let vocab = map.vocab;
    let shape_ok = vocab > 0 && vocab <= i32::MAX as usize && logits_len.is_multiple_of(vocab) && probs_len.is_multiple_of(vocab) && map.rows <= i32::MAX as usize;
    if !shape_ok || flags_len < map.flags_at + probs_len / vocab.max(1) {
        return Err(Error::Backend(format!(
            "process_logits: {logits_len} logits and {probs_len} probabilities of vocab {vocab}, {flags_len} flags from {}",
            map.flags_at
        )));
    }
    check_parts("process_logits", words_len, &[(map.map_at, map.map_len()), (map.dst_at, map.rows)])?;
    Ok(logits_len / vocab)
}

/// What the kernel computes for `map` (the CPU backend's `process_logits`): each output row's
/// probabilities into its destination row of `probs`, its flag into `flags`; a destination
/// beyond `probs` is skipped, a logits row beyond `logits` gives a NaN row flagged
/// [`ROW_BAD_INDEX`].
pub fn process_logits(logits: &[f32], words: &[u32], map: &LogitsMap, params: &SamplingParams, probs: &mut [f32], flags: &mut [u32]) -> Result<()> {
    let rows_in = check_map(map, params, logits.len(), words.len(), probs.len(), flags.len())?;
    let vocab = map.vocab;
    let cfg = map.cfg && params.uses_cfg();
    let row = |r: u32| (r as usize) < rows_in;
    for r in 0..map.rows {
        let dst = words[map.dst_at + r] as usize;
        if dst >= probs.len() / vocab {
            continue;
        }
        let cond = words[map.map_at + r];
        let uncond = if cfg { words[map.map_at + map.rows + r] } else { cond };
        let (p, flag) = if row(cond) && row(uncond) {
            let at = |r: u32| &logits[r as usize * vocab..][..vocab];
            process_row(at(cond), cfg.then(|| at(uncond)), params)
        } else {
            (vec![f32::NAN; vocab], ROW_BAD_INDEX)
        };
        probs[dst * vocab..][..vocab].copy_from_slice(&p);
        flags[map.flags_at + dst] = flag;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Rng;

    #[test]
    fn the_exponential_is_accurate_to_2e_7() {
        let mut worst = 0f64;
        for k in 0..=2_000_000 {
            let x = -103.9 * k as f32 / 2_000_000.0;
            let want = f64::from(x).exp();
            worst = worst.max(((exp_nonpositive(x) - want) / want).abs());
        }
        assert!(worst < 2e-7, "max relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert_eq!(exp_nonpositive(-104.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn radix_select_finds_the_hosts_threshold() {
        let mut rng = Rng::new(3);
        for (vocab, levels) in [(1000usize, 0usize), (1000, 7), (300, 2)] {
            let x: Vec<f32> = (0..vocab)
                .map(|_| if levels > 0 { rng.below(levels) as f32 - 3.0 } else { rng.uniform() as f32 * 20.0 - 10.0 })
                .chain([0.0, -0.0, f32::MAX, -f32::MAX])
                .collect();
            let mut sorted = x.clone();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            for k in [1, 2, 5, 50, vocab] {
                assert_eq!(top_k_threshold(&x, k).to_bits(), sorted[k - 1].to_bits(), "vocab {vocab}, levels {levels}, k {k}");
            }
        }
    }

    #[test]
    fn block_sum_adds_every_thread() {
        let partial: Vec<f64> = (0..THREADS).map(|t| t as f64).collect();
        assert_eq!(block_sum(&partial), (THREADS * (THREADS - 1) / 2) as f64);
    }
}
