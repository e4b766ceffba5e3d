//! The vocabulary ownership, reduction tree and inverse-CDF draw of the acceptance kernels
//! (kernels/accept.cu: `accept_block` and `sample_children`), shared by their CPU twins
//! [`super::accept`] and [`super::children`].
//!
//! Exactness contract: for equal inputs every value below is the kernel's, bit for bit, because
//! it is the same f32 operations (each rounded to nearest, none fused) in the same order:
//! - ownership: kernel thread `t` of [`THREADS`] owns the groups of [`GROUP`] consecutive
//!   elements starting at `4t + 1024k` (the last group cut at the vocabulary), and visits them by
//!   `k`, each group in index order ([`owned`]); the kernel's 128-bit and scalar load paths visit
//!   the same elements in the same order;
//! - [`lane_sums`]: each thread adds its positive weights (NaN and non-positive ones, and the
//!   tokens already drawn, add nothing) serially from `+0`;
//! - [`warp_scan`]: each warp's inclusive Hillis–Steele scan of its 32 lane sums (offsets 1, 2,
//!   4, 8, 16; `x[l] = x[l - offset] + x[l]`); the warp total is lane 31's inclusive value, and a
//!   lane's exclusive prefix is lane `l - 1`'s inclusive value;
//! - [`block_total`]: the warp totals added serially in warp order from `+0`;
//! - [`inverse_cdf`]: the draw, in the same ownership order (warps, lanes, each lane's elements),
//!   with the kernel's fallbacks.
//!
//! The CDF runs in ownership order, not index order (they agree for vocabularies up to 1024): an
//! exact inverse-CDF draw of the same law, the weights merely listed in another order.

use crate::backend::gpu::geometry::ACCEPT_THREADS;

/// Threads per block of the acceptance kernels.
pub(crate) const THREADS: usize = ACCEPT_THREADS as usize;
/// Lanes per warp.
const WARP: usize = 32;
/// Warps per block.
const WARPS: usize = THREADS / WARP;
/// Consecutive elements a thread owns together (one 128-bit load).
const GROUP: usize = 4;
/// Between a thread's groups: one group per thread of the block.
const STRIDE: usize = GROUP * THREADS;

/// The elements of a vocabulary of `vocab` owned by kernel thread `t`, in its order.
pub(crate) fn owned(vocab: usize, t: usize) -> impl Iterator<Item = usize> {
    (GROUP * t..vocab).step_by(STRIDE).flat_map(move |g| g..(g + GROUP).min(vocab))
}

/// `w[y]` when it counts: positive and not one of the tokens `drawn` (siblings drawn before).
fn counted(w: &[f32], y: usize, drawn: &[u32]) -> Option<f32> {
    let v = w[y];
    (v > 0.0 && !drawn.contains(&(y as u32))).then_some(v)
}

/// Step 1: every thread's serial sum of its weights that count, in its order.
pub(crate) fn lane_sums(w: &[f32], drawn: &[u32]) -> Vec<f32> {
    (0..THREADS).map(|t| owned(w.len(), t).filter_map(|y| counted(w, y, drawn)).fold(0.0, |s, v| s + v)).collect()
}

/// Step 2: one warp's inclusive scan of its 32 lane sums, as the kernel's `__shfl_up_sync`
/// Hillis–Steele steps compute it.
pub(crate) fn warp_scan(lanes: &[f32]) -> [f32; WARP] {
    let mut x: [f32; WARP] = lanes.try_into().expect("a warp has 32 lanes");
    let mut offset = 1;
    while offset < WARP {
        let before = x;
        for l in offset..WARP {
            x[l] = before[l - offset] + before[l];
        }
        offset *= 2;
    }
    x
}

/// Step 3: the warp totals added serially in warp order.
pub(crate) fn block_total(warp_totals: &[f32]) -> f32 {
    warp_totals.iter().fold(0.0, |s, &v| s + v)
}

/// The whole reduction over one row: lane sums, per-lane inclusive scans, warp totals, total.
struct Scan {
    sums: Vec<f32>,
    inclusive: Vec<f32>,
    warp_totals: [f32; WARPS],
    total: f32,
}

impl Scan {
    fn of(w: &[f32], drawn: &[u32]) -> Scan {
        let sums = lane_sums(w, drawn);
        let inclusive: Vec<f32> = sums.chunks(WARP).flat_map(warp_scan).collect();
        let warp_totals = std::array::from_fn(|i| inclusive[i * WARP + WARP - 1]);
        let total = block_total(&warp_totals);
        Scan { sums, inclusive, warp_totals, total }
    }
}

/// The kernel's total of the positive weights of `w` (how residuals are normalised).
pub(crate) fn total(w: &[f32]) -> f32 {
    Scan::of(w, &[]).total
}

/// Thread `t`'s first element whose running sum of the weights that count, from `acc`, exceeds
/// `target`; else its last element that counts.
fn lane_scan(w: &[f32], drawn: &[u32], t: usize, mut acc: f32, target: f32) -> Option<usize> {
    let mut last = None;
    for y in owned(w.len(), t) {
        if let Some(v) = counted(w, y, drawn) {
            acc += v;
            last = Some(y);
            if target < acc {
                break;
            }
        }
    }
    last
}

/// Inverse-CDF draw at `u` over the weights of `w` that count (without the tokens `drawn`), as
/// the kernel draws it: the first warp with mass whose running total exceeds `u * total`, in it
/// the first lane with mass whose scanned value exceeds it, in that lane the first element;
/// fallbacks (rounding past the last positive mass): the last warp with mass, its last lane with
/// mass, that lane's last positive element. `None` when nothing counts.
pub(crate) fn inverse_cdf(w: &[f32], drawn: &[u32], u: f32) -> Option<usize> {
    let scan = Scan::of(w, drawn);
    let target = u * scan.total;
    let (mut running, mut crossed, mut last_warp) = (0.0f32, None, None);
    for (i, &warp_total) in scan.warp_totals.iter().enumerate() {
        let next = running + warp_total;
        if warp_total > 0.0 {
            last_warp = Some(i);
            if crossed.is_none() && target < next {
                crossed = Some((i, running));
            }
        }
        running = next;
    }
    let warp = crossed.map_or(last_warp, |(i, _)| Some(i))?;
    let lanes = warp * WARP..(warp + 1) * WARP;
    let crossing = crossed.and_then(|(_, prefix)| lanes.clone().find(|&t| scan.sums[t] > 0.0 && target < prefix + scan.inclusive[t]).map(|t| (t, prefix)));
    match crossing {
        Some((t, prefix)) => {
            let exclusive = if t % WARP == 0 { 0.0 } else { scan.inclusive[t - 1] };
            lane_scan(w, drawn, t, prefix + exclusive, target)
        }
        None => lanes.rev().find(|&t| scan.sums[t] > 0.0).and_then(|t| lane_scan(w, drawn, t, 0.0, f32::INFINITY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_covers_the_vocabulary_once_in_groups_of_four() {
        for vocab in [1, 3, 1000, 1025, 4099, 16384] {
            let mut seen = vec![0u32; vocab];
            for t in 0..THREADS {
                let mine: Vec<usize> = owned(vocab, t).collect();
                assert!(mine.windows(2).all(|p| p[0] < p[1]), "thread {t}: in index order");
                mine.iter().for_each(|&y| seen[y] += 1);
                assert!(mine.iter().all(|&y| (y / GROUP) % THREADS == t));
            }
            assert!(seen.iter().all(|&c| c == 1), "vocab {vocab}");
        }
    }

    #[test]
    fn the_warp_scan_is_hillis_steele() {
        let lanes: Vec<f32> = (0..WARP).map(|l| l as f32).collect();
        let scan = warp_scan(&lanes);
        assert_eq!(scan[WARP - 1], (0..WARP).sum::<usize>() as f32);
        assert!((0..WARP).all(|l| scan[l] == (0..=l).sum::<usize>() as f32));
        // The tree, not a serial sum: lanes (1, 2^-24, 2^-24, 0...) give 1 + (2^-24 + 2^-24) at
        // lane 2 (1 + 2^-23), where a serial sum rounds to 1 twice.
        let tiny = f32::EPSILON / 2.0;
        let mut lanes = vec![0.0; WARP];
        lanes[..3].copy_from_slice(&[1.0, tiny, tiny]);
        assert_eq!(warp_scan(&lanes)[2], 1.0 + f32::EPSILON);
        assert_eq!((1.0f32 + tiny) + tiny, 1.0);
    }

    #[test]
    fn the_cdf_runs_in_ownership_order() {
        // Index 1024 is thread 0's second group, index 4 is thread 1's first: 1024 comes first.
        let mut w = vec![0.0f32; 2000];
        w[4] = 0.5;
        w[1024] = 0.5;
        assert_eq!(inverse_cdf(&w, &[], 0.25), Some(1024));
        assert_eq!(inverse_cdf(&w, &[], 0.75), Some(4));
        // Past the last mass (u rounds to 1): the last positive element in that order.
        assert_eq!(inverse_cdf(&w, &[], 1.0), Some(4));
        assert_eq!(inverse_cdf(&w, &[4], 0.75), Some(1024));
        assert_eq!(inverse_cdf(&w, &[4, 1024], 0.75), None);
        // Up to 1024 elements, ownership order is index order.
        let w: Vec<f32> = (0..1000).map(|i| (i % 7) as f32).collect();
        let total: f32 = w.iter().sum();
        for u in [0.0f32, 0.1, 0.5, 0.9, 0.999] {
            let mut acc = 0.0f32;
            let want = w.iter().position(|&v| {
                acc += v;
                u * total < acc
            });
            assert_eq!(inverse_cdf(&w, &[], u), want, "u {u}");
        }
    }

    /// Lanes 0..2 of warp 0 hold `1 + 7 * 2^-23`, `3 * 2^-25`, `6 * 2^-25`: the scan's lane 2 is
    /// `a + (b + c)`, one ulp below the warp total `(a + b) + c`, so at u = 1 - 2^-24 the target
    /// lands between them, no lane with mass crosses it, and the draw falls back to the last lane
    /// with mass (the kernel takes the same branch; tests/gpu_kernels.rs compares them).
    #[test]
    fn no_lane_crossing_falls_back_to_the_last_lane_with_mass() {
        let mut w = vec![0.0f32; 16384];
        let (a, b, c) = (1.0 + 7.0 * f32::EPSILON, 3.0 * f32::EPSILON / 4.0, 6.0 * f32::EPSILON / 4.0);
        (w[0], w[4], w[8]) = (a, b, c);
        let scan = Scan::of(&w, &[]);
        assert_eq!((scan.inclusive[2], scan.warp_totals[0], scan.total), (a + (b + c), (a + b) + c, (a + b) + c));
        let u = 1.0 - f32::EPSILON / 2.0;
        let target = u * scan.total;
        assert!(scan.inclusive[2] <= target && target < scan.total);
        assert_eq!(inverse_cdf(&w, &[], u), Some(8));
        assert_eq!(inverse_cdf(&w, &[], 0.5), Some(0));
    }

    #[test]
    fn nan_and_non_positive_weights_have_no_mass() {
        assert_eq!(inverse_cdf(&[f32::NAN, -1.0, 0.0], &[], 0.5), None);
        assert_eq!(inverse_cdf(&[f32::NAN, 2.0, -1.0], &[], 0.99), Some(1));
        assert_eq!(total(&[f32::NAN, 2.0, -1.0, 0.5]), 2.5);
    }
}
