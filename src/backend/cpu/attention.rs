//! Attention on the CPU: paged (each query row attends to the keys its layout makes visible)
//! and dense (every row of a sequence attends to every row of it).

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
    let attend = |(r, out_row): (usize, &mut [f32])| attend_row_widest(qkv, keys, values, layout, r, out_row);
    let visible: usize = (0..layout.rows()).map(|r| layout.visible_positions(r).count()).sum();
    if 2 * visible * width >= PARALLEL_MIN_MACS {
        out.par_chunks_mut(width).enumerate().for_each(attend);
    } else {
        out.chunks_mut(width).enumerate().for_each(attend);
    }
}

/// [`attend_row`] on the widest vectors this CPU has: AVX2's 8 lanes where present, else the
/// target's baseline (SSE2's 4 on x86-64). Both run the same operations in the same order (no
/// fused multiply-adds), so their results are bit-identical.
fn attend_row_widest(qkv: &[f32], keys: &[f32], values: &[f32], layout: &AttentionLayout, r: usize, out_row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU.
        return unsafe { attend_row_avx2(qkv, keys, values, layout, r, out_row) };
    }
    attend_row(qkv, keys, values, layout, r, out_row)
}

/// [`attend_row`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_row_avx2(qkv: &[f32], keys: &[f32], values: &[f32], layout: &AttentionLayout, r: usize, out_row: &mut [f32]) {
    attend_row(qkv, keys, values, layout, r, out_row)
}

/// Query row `r` against the keys its layout makes visible, every head, into `out_row`.
#[inline(always)]
fn attend_row(qkv: &[f32], keys: &[f32], values: &[f32], layout: &AttentionLayout, r: usize, out_row: &mut [f32]) {
    let (n_head, head_dim) = (layout.n_head, layout.head_dim);
    let width = n_head * head_dim;
    let seq = layout.query_seq[r] as usize;
    let slots: Vec<usize> = layout.visible_positions(r).map(|p| layout.slot(seq, p)).collect();
    let q_row = &qkv[r * 3 * width..r * 3 * width + width];
    let mut scores = vec![0f32; slots.len()];
    for h in 0..n_head {
        let head = |slot: usize| slot * width + h * head_dim..slot * width + (h + 1) * head_dim;
        let q = &q_row[h * head_dim..(h + 1) * head_dim];
        attend(q, slots.iter().map(|&s| (&keys[head(s)], &values[head(s)])), &mut scores, &mut out_row[h * head_dim..(h + 1) * head_dim]);
    }
}

/// Unmasked attention within each group of `seq_len` consecutive rows of `qkv`
/// (`[rows, 3 * width]`, q|k|v), writing `[rows, width]` into `out`.
pub fn dense_attention(qkv: &[f32], seq_len: usize, n_head: usize, head_dim: usize, out: &mut [f32]) {
    let width = n_head * head_dim;
    out.par_chunks_mut(width).enumerate().for_each(|(r, out_row)| {
        let first = r / seq_len * seq_len;
        let mut scores = vec![0f32; seq_len];
        for h in 0..n_head {
            let part = |row: usize, which: usize| &qkv[row * 3 * width + which * width + h * head_dim..][..head_dim];
            let keys = (first..first + seq_len).map(|j| (part(j, 1), part(j, 2)));
            attend(part(r, 0), keys, &mut scores, &mut out_row[h * head_dim..(h + 1) * head_dim]);
        }
    });
}

/// [`dense_attention`] over consecutive groups of rows of the lengths `seq_lens`: each group is
/// its own sequence, computed exactly as a call over that group alone.
pub fn ragged_attention(qkv: &[f32], seq_lens: &[usize], n_head: usize, head_dim: usize, out: &mut [f32]) {
    let width = n_head * head_dim;
    let mut first = 0;
    for &len in seq_lens {
        let rows = first..first + len;
        dense_attention(&qkv[rows.start * 3 * width..rows.end * 3 * width], len, n_head, head_dim, &mut out[rows.start * width..rows.end * width]);
        first += len;
    }
}

/// One head of one query: `out = sum_j softmax_j(q · k_j / sqrt(d)) v_j` over the `(k_j, v_j)`
/// pairs (as many as `scores` holds).
#[inline(always)]
fn attend<'a>(q: &[f32], keys_values: impl Iterator<Item = (&'a [f32], &'a [f32])> + Clone, scores: &mut [f32], out: &mut [f32]) {
    let scale = 1.0 / (q.len() as f32).sqrt();
    for (score, (k, _)) in scores.iter_mut().zip(keys_values.clone()) {
        *score = dot(q, k) * scale;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for (&weight, (_, v)) in scores.iter().zip(keys_values) {
        let w = weight / total;
        out.iter_mut().zip(v).for_each(|(acc, &val)| *acc += w * val);
    }
}

/// Dot product with eight independent partial sums, so the compiler can vectorise it (a single
/// running f32 sum has to be evaluated in order).
#[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense attention written out for one row: softmax over the rows of its own sequence.
    fn direct(qkv: &[f32], seq_len: usize, n_head: usize, head_dim: usize, r: usize) -> Vec<f32> {
        let width = n_head * head_dim;
        let first = r / seq_len * seq_len;
        let at = |row: usize, which: usize, h: usize, i: usize| qkv[row * 3 * width + which * width + h * head_dim + i];
        let mut out = vec![0f32; width];
        for h in 0..n_head {
            let scores: Vec<f32> = (first..first + seq_len).map(|j| (0..head_dim).map(|i| at(r, 0, h, i) * at(j, 1, h, i)).sum::<f32>() / (head_dim as f32).sqrt()).collect();
            let total: f32 = scores.iter().map(|s| s.exp()).sum();
            for i in 0..head_dim {
                out[h * head_dim + i] = (first..first + seq_len).zip(&scores).map(|(j, s)| s.exp() / total * at(j, 2, h, i)).sum();
            }
        }
        out
    }

    #[test]
    fn dense_attention_sees_its_whole_sequence_and_nothing_else() {
        let (seq_len, n_head, head_dim, seqs) = (3, 2, 4, 2);
        let width = n_head * head_dim;
        let qkv: Vec<f32> = (0..seqs * seq_len * 3 * width).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.1).collect();
        let mut out = vec![0f32; seqs * seq_len * width];
        dense_attention(&qkv, seq_len, n_head, head_dim, &mut out);
        for r in 0..seqs * seq_len {
            let want = direct(&qkv, seq_len, n_head, head_dim, r);
            assert!(out[r * width..(r + 1) * width].iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "row {r}");
        }
        // Changing the second sequence leaves the first one's output alone.
        let mut other = qkv.clone();
        other[seq_len * 3 * width..].iter_mut().for_each(|v| *v += 1.0);
        let mut out2 = vec![0f32; out.len()];
        dense_attention(&other, seq_len, n_head, head_dim, &mut out2);
        assert_eq!(out[..seq_len * width], out2[..seq_len * width]);
    }

    #[test]
    fn ragged_attention_is_dense_attention_per_group() {
        let (lens, n_head, head_dim) = ([2, 5, 3], 2, 4);
        let width = n_head * head_dim;
        let rows: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..rows * 3 * width).map(|i| ((i * 29 % 19) as f32 - 9.0) * 0.1).collect();
        let mut out = vec![0f32; rows * width];
        ragged_attention(&qkv, &lens, n_head, head_dim, &mut out);
        let mut first = 0;
        for len in lens {
            let mut alone = vec![0f32; len * width];
            dense_attention(&qkv[first * 3 * width..(first + len) * 3 * width], len, n_head, head_dim, &mut alone);
            assert_eq!(out[first * width..(first + len) * width], alone[..], "group of {len} rows");
            first += len;
        }
    }
}
