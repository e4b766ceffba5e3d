//! Plain CPU kernels for the row-wise ops of a decoder step (the reference for GPU kernels).

use rayon::prelude::*;

use super::erf::erf;
use crate::backend::Activation;

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

/// Run `f(r, row)` on every `dim`-wide row of `data`, in parallel when `data` is large.
fn for_each_row(data: &mut [f32], dim: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if data.len() >= PAR_MIN {
        data.par_chunks_mut(dim).enumerate().for_each(|(r, row)| f(r, row));
    } else {
        data.chunks_mut(dim).enumerate().for_each(|(r, row)| f(r, row));
    }
}

/// LayerNorm (in f64, biased variance, rounded once) of every `dim`-wide row of `x` into `out`,
/// with the affine `(weight, bias)` when given.
pub fn layer_norm(x: &[f32], affine: Option<(&[f32], &[f32])>, eps: f32, dim: usize, out: &mut [f32]) {
    for_each_row(out, dim, |r, or| {
        let xr = &x[r * dim..(r + 1) * dim];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
            let normed = (v as f64 - mean) * inv;
            *o = match affine {
                Some((w, b)) => (normed * w[i] as f64 + b[i] as f64) as f32,
                None => normed as f32,
            };
        }
    });
}

/// `x[r] += bias` for every `bias.len()`-wide row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for_each_row(x, bias.len(), |_, row| row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b));
}

/// `activation` of every element of `x`, in place (exact GELU evaluated in f64).
pub fn activate(x: &mut [f32], activation: Activation) {
    let f = match activation {
        Activation::Gelu => |v: &mut f32| {
            let x = *v as f64;
            *v = (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32;
        },
        Activation::Silu => |v: &mut f32| *v /= 1.0 + (-*v).exp(),
    };
    if x.len() >= PAR_MIN {
        x.par_iter_mut().for_each(f);
    } else {
        x.iter_mut().for_each(f);
    }
}

/// `x = x * (1 + scale) + shift` per `dim`-wide row, shift and scale from columns `at..` of the
/// row's `mods_width`-wide `mods` row.
pub fn modulate(x: &mut [f32], mods: &[f32], mods_width: usize, at: usize, dim: usize) {
    for_each_row(x, dim, |r, row| {
        let m = &mods[r * mods_width + at..][..2 * dim];
        let (shift, scale) = m.split_at(dim);
        row.iter_mut().zip(shift.iter().zip(scale)).for_each(|(v, (&sh, &sc))| *v = *v * (1.0 + sc) + sh);
    });
}

/// `acc += gate * x` per `dim`-wide row, gate from columns `at..at + dim` of the row's
/// `mods_width`-wide `mods` row.
pub fn add_gated(acc: &mut [f32], x: &[f32], mods: &[f32], mods_width: usize, at: usize, dim: usize) {
    for_each_row(acc, dim, |r, row| {
        let gate = &mods[r * mods_width + at..][..dim];
        row.iter_mut().zip(&x[r * dim..(r + 1) * dim]).zip(gate).for_each(|((a, &v), &g)| *a += g * v);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_scales_and_applies_the_affine() {
        // Row [1, 3]: mean 2, variance 1, so (x - mean) / sqrt(1 + eps) is [-1, 1] up to eps.
        let mut out = vec![0.0; 4];
        layer_norm(&[1.0, 3.0, 5.0, 5.0], None, 1e-6, 2, &mut out);
        assert!((out[0] + 1.0).abs() < 1e-6 && (out[1] - 1.0).abs() < 1e-6, "{out:?}");
        assert_eq!(&out[2..], &[0.0, 0.0], "a constant row normalises to 0");
        layer_norm(&[1.0, 3.0], Some((&[2.0, 3.0], &[0.5, -0.5])), 0.0, 2, &mut out[..2]);
        assert_eq!(&out[..2], &[-1.5, 2.5]);
        layer_norm(&[1.0, 3.0], None, 3.0, 2, &mut out[..2]);
        assert_eq!(&out[..2], &[-0.5, 0.5], "eps is added to the variance: 1 / sqrt(1 + 3)");
    }

    #[test]
    fn add_bias_adds_the_bias_to_every_row() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        add_bias(&mut x, &[10.0, 20.0, 30.0]);
        assert_eq!(x, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    }

    #[test]
    fn gelu_is_exact_and_silu_is_x_sigmoid_x() {
        let inputs = [-3.0f32, -1.0, 0.0, 0.5, 2.0];
        // x Φ(x) with Φ the standard normal CDF (values of 0.5 x erfc(-x/sqrt 2) in f64).
        let gelu = [-0.004_049_694, -0.158_655_25, 0.0, 0.345_731_23, 1.954_499_7];
        let mut x = inputs.to_vec();
        activate(&mut x, Activation::Gelu);
        assert!(x.iter().zip(gelu).all(|(a, b)| (a - b).abs() < 1e-7), "{x:?}");
        let mut x = inputs.to_vec();
        activate(&mut x, Activation::Silu);
        assert!(x.iter().zip(inputs).all(|(a, v)| (a - v / (1.0 + (-v).exp())).abs() < 1e-7), "{x:?}");
    }

    #[test]
    fn modulate_and_gate_read_their_columns_of_the_row() {
        // Two rows of width 2; mods rows of width 6 = [shift | scale | gate].
        let mods = [1.0, 2.0, 0.0, 1.0, 3.0, -1.0, /* row 1 */ 0.0, 0.0, -1.0, 0.5, 2.0, 2.0];
        let mut x = vec![1.0, 1.0, 2.0, 4.0];
        modulate(&mut x, &mods, 6, 0, 2);
        assert_eq!(x, vec![2.0, 4.0, 0.0, 6.0]);
        let mut acc = vec![1.0; 4];
        add_gated(&mut acc, &x, &mods, 6, 4, 2);
        assert_eq!(acc, vec![7.0, -3.0, 1.0, 13.0]);
    }
}
