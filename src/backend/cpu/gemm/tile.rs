//! The GEMM kernel, generic over the instruction set: tiles of `R` activation rows x `P` packed
//! panels ([`PANEL`] output columns each), accumulated in registers along `k` by broadcasting
//! one activation at a time against a row of each panel. Each panel streams once per row tile
//! as one sequential read; no sums across lanes, no remainder loops over `k`.
//!
//! Every output element is one chain of multiply-adds in `k` order, so a row's result does not
//! depend on the other rows of the call, on the tile shape, or on how the columns were split
//! between threads.

use std::ops::Range;

use super::lanes::{Lanes, LoadWidened, PANEL};
use super::packed::Packed;

/// The tallest row tile any instruction set uses.
pub const MAX_TILE_ROWS: usize = 12;

/// `out[r][c - panels.start * PANEL] = x[r] · w[c]` for every row `r < rows` and every column
/// `c < w.n` of the panels `panels`: `x` is `[rows, w.k]` row-major, `out` holds one slice per
/// row covering those columns. Tiles are `R` rows x `P` panels, with smaller tiles at the edges.
///
/// # Safety
/// `L`'s instruction set must be available (see [`Lanes`]); the function must be inlined into
/// one compiled for it.
#[inline(always)]
pub unsafe fn panels<L: Lanes, T: LoadWidened<L>, const R: usize, const P: usize>(
    x: &[f32],
    w: Packed<'_, T>,
    rows: usize,
    panels: Range<usize>,
    out: &mut [&mut [f32]],
) {
    assert!(x.len() >= rows * w.k && out.len() >= rows && panels.end <= w.panels(), "GEMM operands too short");
    const { assert!(R <= MAX_TILE_ROWS, "row tile taller than MAX_TILE_ROWS") };
    let mut p = panels.start;
    while p + P <= panels.end {
        // SAFETY: forwarded from the caller.
        unsafe { panel_group::<L, T, R, P>(x, w, rows, p, p - panels.start, out) };
        p += P;
    }
    for p in p..panels.end {
        // SAFETY: forwarded from the caller.
        unsafe { panel_group::<L, T, R, 1>(x, w, rows, p, p - panels.start, out) };
    }
}

/// Panels `p..p + P` for every row, written from panel offset `at` of each output row.
#[inline(always)]
unsafe fn panel_group<L: Lanes, T: LoadWidened<L>, const R: usize, const P: usize>(
    x: &[f32],
    w: Packed<'_, T>,
    rows: usize,
    p: usize,
    at: usize,
    out: &mut [&mut [f32]],
) {
    let group = Group { panels: std::array::from_fn(|j| w.panel(p + j)), columns: w.n - p * PANEL, at: at * PANEL };
    let mut r = 0;
    while r + R <= rows {
        // SAFETY: forwarded from the caller.
        unsafe { row_tile::<L, T, R, P>(x, w.k, r, &group, out) };
        r += R;
    }
    // SAFETY: forwarded from the caller.
    unsafe { last_rows::<L, T, P>(x, w.k, r, rows - r, &group, out) };
}

/// The `left` (< the tile height, at most [`MAX_TILE_ROWS`] - 1) rows from row `r` on, as one
/// tile of exactly that height, so that every row count up to the tile height streams and
/// widens each weight once.
#[inline(always)]
unsafe fn last_rows<L: Lanes, T: LoadWidened<L>, const P: usize>(x: &[f32], k: usize, r: usize, left: usize, group: &Group<'_, T, P>, out: &mut [&mut [f32]]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match left {
            0 => {}
            1 => row_tile::<L, T, 1, P>(x, k, r, group, out),
            2 => row_tile::<L, T, 2, P>(x, k, r, group, out),
            3 => row_tile::<L, T, 3, P>(x, k, r, group, out),
            4 => row_tile::<L, T, 4, P>(x, k, r, group, out),
            5 => row_tile::<L, T, 5, P>(x, k, r, group, out),
            6 => row_tile::<L, T, 6, P>(x, k, r, group, out),
            7 => row_tile::<L, T, 7, P>(x, k, r, group, out),
            8 => row_tile::<L, T, 8, P>(x, k, r, group, out),
            9 => row_tile::<L, T, 9, P>(x, k, r, group, out),
            10 => row_tile::<L, T, 10, P>(x, k, r, group, out),
            11 => row_tile::<L, T, 11, P>(x, k, r, group, out),
            _ => unreachable!("a tile is at most {MAX_TILE_ROWS} rows"),
        }
    }
}

/// `P` panels side by side and where their columns go.
struct Group<'a, T, const P: usize> {
    /// Each panel: `k` rows of [`PANEL`] values.
    panels: [&'a [T]; P],
    /// Real (unpadded) columns from the first panel on, to the end of the matrix.
    columns: usize,
    /// Offset of the first panel's first column in the output row slices.
    at: usize,
}

/// Rows `r..r + R` against the group's panels, written into output rows `r..r + R`.
#[inline(always)]
unsafe fn row_tile<L: Lanes, T: LoadWidened<L>, const R: usize, const P: usize>(x: &[f32], k: usize, r: usize, group: &Group<'_, T, P>, out: &mut [&mut [f32]]) {
    let inputs: [&[f32]; R] = std::array::from_fn(|i| &x[(r + i) * k..(r + i + 1) * k]);
    // SAFETY: the instruction set is available (caller); each load reads the `PANEL` values of
    // row `kk < k` of a panel of `k * PANEL` values.
    let acc = unsafe {
        let mut acc = [[L::zero(); P]; R];
        for kk in 0..k {
            let mut w = [L::zero(); P];
            for (wj, panel) in w.iter_mut().zip(&group.panels) {
                *wj = T::load_widened(panel.as_ptr().add(kk * PANEL));
            }
            for (acc_row, input) in acc.iter_mut().zip(&inputs) {
                let xv = L::splat(input[kk]);
                for (a, &wj) in acc_row.iter_mut().zip(&w) {
                    *a = L::mul_add(xv, wj, *a);
                }
            }
        }
        acc
    };
    let mut lanes = [0f32; PANEL];
    for (acc_row, row) in acc.iter().zip(out[r..r + R].iter_mut()) {
        for (j, &a) in acc_row.iter().enumerate() {
            // SAFETY: the instruction set is available (caller).
            unsafe { L::store(a, &mut lanes) };
            let valid = PANEL.min(group.columns - j * PANEL);
            let at = group.at + j * PANEL;
            row[at..at + valid].copy_from_slice(&lanes[..valid]);
        }
    }
}
