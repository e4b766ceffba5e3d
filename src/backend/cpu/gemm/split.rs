//! Splitting a GEMM's output panels between rayon's threads, only when there is enough work to
//! pay for handing it over.

use std::ops::Range;

use rayon::prelude::*;

use super::lanes::PANEL;

/// A call estimated under twice this many nanoseconds stays on the calling thread: handing work
/// to rayon's workers and being woken when they are done costs 10-60 µs on a busy 2-core VM, so
/// each of two threads' shares must be worth about that much.
const MIN_CHUNK_NS: usize = 40_000;
/// Chunks per thread, so a thread that starts late (or is preempted) takes a smaller share
/// instead of leaving the others waiting.
const CHUNKS_PER_THREAD: usize = 4;

/// Run `job(panels, out_rows)` over ranges of panels that together cover the `n` columns of
/// `out` (`[rows, n]`, row-major), where `out_rows` holds the range's columns of each row.
/// `estimated_ns`, the time the whole call would take on one thread, decides: one range (run on
/// the calling thread) below twice [`MIN_CHUNK_NS`], else [`CHUNKS_PER_THREAD`] per rayon thread
/// (fewer if the panels run out); ranges are whole multiples of `group` panels (but the last).
pub fn by_panels(rows: usize, n: usize, group: usize, estimated_ns: usize, out: &mut [f32], job: impl Fn(Range<usize>, &mut [&mut [f32]]) + Sync) {
    if rows == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(PANEL);
    let groups = panels.div_ceil(group);
    let worth_splitting = estimated_ns >= 2 * MIN_CHUNK_NS;
    let chunks = if worth_splitting { (rayon::current_num_threads() * CHUNKS_PER_THREAD).min(groups) } else { 1 };
    let out = &mut out[..rows * n];
    if chunks == 1 {
        job(0..panels, &mut out.chunks_mut(n).collect::<Vec<_>>());
        return;
    }
    let bounds: Vec<usize> = (0..=chunks).map(|i| (groups * i / chunks * group).min(panels)).collect();
    let mut parts: Vec<Vec<&mut [f32]>> = (0..chunks).map(|_| Vec::with_capacity(rows)).collect();
    for mut rest in out.chunks_mut(n) {
        for (part, range) in parts.iter_mut().zip(bounds.windows(2)) {
            let width = (range[1] * PANEL).min(n) - range[0] * PANEL;
            let (head, tail) = rest.split_at_mut(width);
            part.push(head);
            rest = tail;
        }
    }
    parts.into_par_iter().zip(bounds.par_windows(2)).for_each(|(mut part, range)| job(range[0]..range[1], &mut part));
}
