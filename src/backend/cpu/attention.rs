//! Paged attention on the CPU: each query row attends to the keys its layout makes visible.

use rayon::prelude::*;

use crate::backend::AttentionLayout;

/// Multiply-adds (query-key products and weighted value sums, all rows together) below which
/// a call runs on the calling thread: a demo-model step (a few rows, 64 keys of width 256) is a
/// few microseconds of work, less than waking a rayon worker costs.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Attention of the q part of `qkv` (`[rows, 3 * width]`) against one layer's paged keys and
/// values (`[slots, width]` each), writing `[rows, width]` into `out`; rows are split between
/// rayon's threads only above [`PARALLEL_MIN_MACS`].
pub fn paged_attention(qkv: &[f32], keys: &[f32], values: &[f32], layout: &AttentionLayout, out: &mut [f32]) {
    let width = layout.n_head * layout.head_dim;
    let attend = |(r, out_row): (usize, &mut [f32])| attend_row(qkv, keys, values, layout, r, out_row);
    let visible: usize = (0..layout.rows()).map(|r| layout.visible_positions(r).count()).sum();
    if 2 * visible * width >= PARALLEL_MIN_MACS {
        out.par_chunks_mut(width).enumerate().for_each(attend);
    } else {
        out.chunks_mut(width).enumerate().for_each(attend);
    }
}

/// Query row `r` against the keys its layout makes visible, every head, into `out_row`.
fn attend_row(qkv: &[f32], keys: &[f32], values: &[f32], layout: &AttentionLayout, r: usize, out_row: &mut [f32]) {
    let (n_head, head_dim) = (layout.n_head, layout.head_dim);
    let width = n_head * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let seq = layout.query_seq[r] as usize;
    let slots: Vec<usize> = layout.visible_positions(r).map(|p| layout.slot(seq, p)).collect();
    let q_row = &qkv[r * 3 * width..r * 3 * width + width];
    let mut scores = vec![0f32; slots.len()];
    for h in 0..n_head {
        let q = &q_row[h * head_dim..(h + 1) * head_dim];
        for (score, &slot) in scores.iter_mut().zip(&slots) {
            let k = &keys[slot * width + h * head_dim..slot * width + (h + 1) * head_dim];
            *score = dot(q, k) * scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        let o = &mut out_row[h * head_dim..(h + 1) * head_dim];
        o.fill(0.0);
        for (&weight, &slot) in scores.iter().zip(&slots) {
            let v = &values[slot * width + h * head_dim..slot * width + (h + 1) * head_dim];
            let w = weight / total;
            o.iter_mut().zip(v).for_each(|(acc, &val)| *acc += w * val);
        }
    }
}

/// Dot product with eight independent partial sums, so the compiler can vectorise it (a single
/// running f32 sum has to be evaluated in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
