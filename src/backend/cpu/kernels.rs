//! Plain CPU kernels for the row-wise ops of a decoder step (the reference for GPU kernels).

use rayon::prelude::*;

/// Rows below this many f32 are processed serially (parallel overhead dominates).
const PAR_MIN: usize = 1 << 14;

/// RMSNorm of every `dim`-wide row of `x` into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, dim: usize, out: &mut [f32]) {
    let norm_row = |(xr, or): (&[f32], &mut [f32])| {
        let mean_sq = xr.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / dim as f64;
        let inv = (1.0 / (mean_sq + eps as f64).sqrt()) as f32;
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    };
    if x.len() >= PAR_MIN {
        x.par_chunks(dim).zip(out.par_chunks_mut(dim)).for_each(norm_row);
    } else {
        x.chunks(dim).zip(out.chunks_mut(dim)).for_each(norm_row);
    }
}

/// `acc += x`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
}

/// `out = silu(gate) * up`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let f = |((o, &g), &u): ((&mut f32, &f32), &f32)| *o = g / (1.0 + (-g).exp()) * u;
    if out.len() >= PAR_MIN {
        out.par_iter_mut().zip(gate.par_iter()).zip(up.par_iter()).for_each(f);
    } else {
        out.iter_mut().zip(gate).zip(up).for_each(f);
    }
}

/// Rotate interleaved pairs of the first `n_rot_heads` heads of each row in place.
pub fn rope(x: &mut [f32], row_stride: usize, n_rot_heads: usize, head_dim: usize, table: &[f32], positions: &[u32]) {
    let half = head_dim / 2;
    x.chunks_mut(row_stride).zip(positions).for_each(|(row, &pos)| {
        let cs = &table[pos as usize * half * 2..(pos as usize + 1) * half * 2];
        for head in row[..n_rot_heads * head_dim].chunks_mut(head_dim) {
            for (pair, c) in head.chunks_mut(2).zip(cs.chunks(2)) {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * c[0] - x1 * c[1];
                pair[1] = x1 * c[0] + x0 * c[1];
            }
        }
    });
}

/// `out = x · wᵀ` with `x: [rows, k]`, `w: [n, k]` (PyTorch linear layout), `out: [rows, n]`,
/// for f32 weights that are not `CpuWeight`s (the CUDA emulator's GEMMs): packs `w` on every call.
pub fn linear(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, out: &mut [f32]) {
    super::gemm::linear(x, &super::gemm::PackedMatrix::pack(super::gemm::WeightMatrix::F32(w), n, k), rows, out);
}
