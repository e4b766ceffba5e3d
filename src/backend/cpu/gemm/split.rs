//! Splitting a GEMM's output columns between rayon's threads, only when there is enough work
//! to pay for handing it over.

use std::ops::Range;

use rayon::prelude::*;

/// Work (weight bytes streamed, times row tiles) below which a chunk is not worth a thread:
/// waking a rayon worker and waiting for it costs tens of microseconds on a busy 2-core VM,
/// about what streaming this much from L3 takes.
const MIN_WORK_PER_CHUNK: usize = 512 << 10;
/// Chunks per thread, so a thread that starts late (or is preempted) takes a smaller share
/// instead of leaving the others waiting.
const CHUNKS_PER_THREAD: usize = 4;

/// Run `job(columns, out_rows)` over ranges of columns that together cover `0..n`, each range
/// a multiple of `align` long (but the last), where `out_rows` holds the range's part of each of
/// the `rows` rows of the row-major `out` (`[rows, n]`). `work` sizes the split: one range when
/// it is small, up to [`CHUNKS_PER_THREAD`] per rayon thread when large.
pub fn by_columns(rows: usize, n: usize, align: usize, work: usize, out: &mut [f32], job: impl Fn(Range<usize>, &mut [&mut [f32]]) + Sync) {
    if rows == 0 || n == 0 {
        return;
    }
    let blocks = n.div_ceil(align);
    let chunks = (work / MIN_WORK_PER_CHUNK).clamp(1, rayon::current_num_threads() * CHUNKS_PER_THREAD).min(blocks);
    let out = &mut out[..rows * n];
    if chunks == 1 {
        job(0..n, &mut out.chunks_mut(n).collect::<Vec<_>>());
        return;
    }
    let bounds: Vec<usize> = (0..=chunks).map(|i| (blocks * i / chunks * align).min(n)).collect();
    let mut parts: Vec<Vec<&mut [f32]>> = (0..chunks).map(|_| Vec::with_capacity(rows)).collect();
    for mut rest in out.chunks_mut(n) {
        for (part, range) in parts.iter_mut().zip(bounds.windows(2)) {
            let (head, tail) = rest.split_at_mut(range[1] - range[0]);
            part.push(head);
            rest = tail;
        }
    }
    parts.into_par_iter().zip(bounds.par_windows(2)).for_each(|(mut part, range)| job(range[0]..range[1], &mut part));
}
