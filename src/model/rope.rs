//! LlamaGen's 2-D rotary position table.

/// The (cos, sin) table of LlamaGen's `precompute_freqs_cis_2d`, flattened as
/// `[cls_token_num + grid², head_dim / 2, 2]`.
///
/// Rows `0..cls_token_num` (the class prefix) are all zero, as in the official code, so the class
/// token's rotated q and k are zero. Row `cls_token_num + r*grid + c` encodes grid cell (r, c):
/// its first `head_dim / 4` pairs rotate by `r * f_j`, the last `head_dim / 4` by `c * f_j`, with
/// `f_j = base^(-2j / (head_dim / 2))`.
pub fn rope_table_2d(grid: usize, head_dim: usize, base: f64, cls_token_num: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let n_freq = half / 2;
    let freqs: Vec<f64> = (0..n_freq).map(|j| 1.0 / base.powf((2 * j) as f64 / half as f64)).collect();
    let mut table = vec![0f32; (cls_token_num + grid * grid) * half * 2];
    for cell in 0..grid * grid {
        let (row, col) = ((cell / grid) as f64, (cell % grid) as f64);
        let out = &mut table[(cls_token_num + cell) * half * 2..(cls_token_num + cell + 1) * half * 2];
        let angles = freqs.iter().map(|f| row * f).chain(freqs.iter().map(|f| col * f));
        for (pair, angle) in out.chunks_mut(2).zip(angles) {
            pair[0] = angle.cos() as f32;
            pair[1] = angle.sin() as f32;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_rows_are_zero_and_cell_rows_rotate_by_row_then_column() {
        let t = rope_table_2d(2, 8, 10000.0, 1);
        assert_eq!(t.len(), 5 * 4 * 2);
        assert!(t[..8].iter().all(|&v| v == 0.0));
        // cell (1, 0) = sequence row 3: row pairs rotate by 1*f_j, column pairs by 0.
        let r = &t[3 * 8..4 * 8];
        assert!((r[0] - 1f32.cos()).abs() < 1e-6 && (r[1] - 1f32.sin()).abs() < 1e-6);
        assert_eq!((r[4], r[5]), (1.0, 0.0));
    }
}
