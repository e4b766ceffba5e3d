//! The GEMM kernel, generic over the instruction set: blocks of [`COL_TILE`] weight rows
//! (output columns) against tiles of up to [`ROW_TILE`] activation rows, reduced along `k` in
//! SIMD lanes. Each weight vector is loaded once per row tile and used for all of its rows, and
//! a column block (`COL_TILE * k` weights) stays in L1 while the row tiles pass over it, so the
//! weights stream from memory once per call whatever the row count.
//!
//! Every output element is one dot product summed in a fixed order (lanes, then the lane sum,
//! then the scalar tail), so a row's result does not depend on the other rows of the call or on
//! how the columns were split between threads.

use std::ops::Range;

use super::lanes::{Lanes, LoadWidened};

/// Activation rows that share each weight load.
pub const ROW_TILE: usize = 4;
/// Weight rows (output columns) streamed side by side.
pub const COL_TILE: usize = 4;

/// `out[r][c - cols.start] = x[r] · w[c]` for every row `r < rows` and column `c` in `cols`:
/// `x` is `[rows, k]`, `w` is `[n, k]` (both row-major, `cols.end <= n`), `out` holds one slice
/// of `cols.len()` values per row.
///
/// # Safety
/// `L`'s instruction set must be available (see [`Lanes`]); the function must be inlined into
/// one compiled for it.
#[inline(always)]
pub unsafe fn columns<L: Lanes, T: LoadWidened<L>>(x: &[f32], w: &[T], rows: usize, k: usize, cols: Range<usize>, out: &mut [&mut [f32]]) {
    assert!(x.len() >= rows * k && w.len() >= cols.end * k && out.len() >= rows, "GEMM operands too short");
    let mut c = cols.start;
    while c + COL_TILE <= cols.end {
        // SAFETY: forwarded from the caller.
        unsafe { column_block::<L, T, COL_TILE>(x, w, rows, k, c, c - cols.start, out) };
        c += COL_TILE;
    }
    for c in c..cols.end {
        // SAFETY: forwarded from the caller.
        unsafe { column_block::<L, T, 1>(x, w, rows, k, c, c - cols.start, out) };
    }
}

/// Columns `c..c + C` for every row, written at offset `at` of each output row.
#[inline(always)]
unsafe fn column_block<L: Lanes, T: LoadWidened<L>, const C: usize>(x: &[f32], w: &[T], rows: usize, k: usize, c: usize, at: usize, out: &mut [&mut [f32]]) {
    let weights: [&[T]; C] = std::array::from_fn(|j| &w[(c + j) * k..(c + j + 1) * k]);
    let mut r = 0;
    while r + ROW_TILE <= rows {
        // SAFETY: forwarded from the caller.
        unsafe { row_tile::<L, T, ROW_TILE, C>(x, r, k, weights, at, out) };
        r += ROW_TILE;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows - r {
            1 => row_tile::<L, T, 1, C>(x, r, k, weights, at, out),
            2 => row_tile::<L, T, 2, C>(x, r, k, weights, at, out),
            3 => row_tile::<L, T, 3, C>(x, r, k, weights, at, out),
            _ => {}
        }
    }
}

/// Rows `r..r + R` against `weights`, written at offset `at` of output rows `r..r + R`.
#[inline(always)]
unsafe fn row_tile<L: Lanes, T: LoadWidened<L>, const R: usize, const C: usize>(
    x: &[f32],
    r: usize,
    k: usize,
    weights: [&[T]; C],
    at: usize,
    out: &mut [&mut [f32]],
) {
    let inputs: [&[f32]; R] = std::array::from_fn(|i| &x[(r + i) * k..(r + i + 1) * k]);
    // SAFETY: forwarded from the caller.
    let dots = unsafe { dot_tile::<L, T, R, C>(inputs, weights, k) };
    for (row, values) in out[r..r + R].iter_mut().zip(dots) {
        row[at..at + C].copy_from_slice(&values);
    }
}

/// The `R x C` dot products of `inputs` with `weights` (every slice `k` long).
#[inline(always)]
unsafe fn dot_tile<L: Lanes, T: LoadWidened<L>, const R: usize, const C: usize>(inputs: [&[f32]; R], weights: [&[T]; C], k: usize) -> [[f32; C]; R] {
    let body = k - k % L::WIDTH;
    // SAFETY: the instruction set is available (caller); every load below reads `L::WIDTH`
    // elements at offset `i` with `i + L::WIDTH <= body <= k`, inside slices of length `k`.
    unsafe {
        let mut acc = [[L::zero(); C]; R];
        let mut i = 0;
        while i < body {
            let mut w = [L::zero(); C];
            for (wj, row) in w.iter_mut().zip(&weights) {
                *wj = T::load_widened(row.as_ptr().add(i));
            }
            for (acc_row, input) in acc.iter_mut().zip(&inputs) {
                let xv = L::load(input.as_ptr().add(i));
                for (a, &wj) in acc_row.iter_mut().zip(&w) {
                    *a = L::mul_add(xv, wj, *a);
                }
            }
            i += L::WIDTH;
        }
        let mut dots = [[0f32; C]; R];
        for ((dot_row, acc_row), input) in dots.iter_mut().zip(&acc).zip(&inputs) {
            for ((dot, &a), row) in dot_row.iter_mut().zip(acc_row).zip(&weights) {
                let tail: f32 = input[body..].iter().zip(&row[body..]).map(|(&xv, &wv)| xv * wv.to_f32()).sum();
                *dot = L::sum(a) + tail;
            }
        }
        dots
    }
}
