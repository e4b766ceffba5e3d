//! CPU ops of the VQ decoder on one image in CHW layout (f32).

use rayon::prelude::*;

use crate::sampling::dist::softmax;

/// A feature map: `channels` planes of `height x width`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    /// Number of channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `[channels, height, width]` values.
    pub data: Vec<f32>,
}

impl FeatureMap {
    /// A zero map.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Self { channels, height, width, data: vec![0.0; channels * height * width] }
    }

    /// Pixels per channel.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }
}

/// Multiply-adds below which a [`gemm_acc`] stays on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// `c += a · b` for row-major-strided f32 matrices `a [m, k]`, `b [k, n]`, `c [m, n]`, each
/// given as `(slice, row stride, column stride)`. Large products are split by rows of `a` and
/// `c` over rayon's threads (the backend's one pool; the crate's own threading is off), each
/// block one single-threaded `sgemm`.
fn gemm_acc(m: usize, k: usize, n: usize, a: (&[f32], usize, usize), b: (&[f32], usize, usize), c: (&mut [f32], usize)) {
    if m == 0 || k == 0 || n == 0 {
        return;
    }
    if m * k * n < PARALLEL_MIN_MACS {
        // On the calling thread: a parallel iterator, even over one block, would hand the work
        // to rayon's pool and wait for it when called from outside the pool.
        return gemm_block(m, k, n, a, b, c);
    }
    let rows_per_block = m.div_ceil(rayon::current_num_threads());
    let c_rows = &mut c.0[..(m - 1) * c.1 + n];
    c_rows.par_chunks_mut(rows_per_block * c.1).enumerate().for_each(|(i, block)| {
        let first = i * rows_per_block;
        let rows = rows_per_block.min(m - first);
        gemm_block(rows, k, n, (&a.0[first * a.1..], a.1, a.2), b, (block, c.1));
    });
}

/// [`gemm_acc`] on the calling thread.
fn gemm_block(m: usize, k: usize, n: usize, a: (&[f32], usize, usize), b: (&[f32], usize, usize), c: (&mut [f32], usize)) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, k, a.1, a.2) < a.0.len() && last(k, n, b.1, b.2) < b.0.len() && last(m, n, c.1, 1) < c.0.len(),
        "gemm operands out of bounds"
    );
    // SAFETY: the assert above keeps every strided access inside its slice, and `c` is a unique
    // borrow, so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.0.as_ptr(),
            a.1 as isize,
            a.2 as isize,
            b.0.as_ptr(),
            b.1 as isize,
            b.2 as isize,
            1.0,
            c.0.as_mut_ptr(),
            c.1 as isize,
            1,
        );
    }
}

/// Stride-1 convolution with zero padding `k / 2` (odd `k`: 1 or 3 in the decoder):
/// `weight [out, in, k, k]`, `bias [out]`.
///
/// A 3x3 convolution is nine GEMMs, one per kernel tap, over a zero-padded copy of the input:
/// computed on rows of padded width `w + 2`, tap `(ky, kx)` reads the padded input shifted by
/// `ky * (w + 2) + kx`, so no im2col buffer (9x the input) is built; the two extra columns per
/// row are dropped at the end.
pub fn conv2d(x: &FeatureMap, weight: &[f32], bias: &[f32], out_channels: usize, k: usize) -> FeatureMap {
    let (c, h, w) = (x.channels, x.height, x.width);
    if x.plane() == 0 {
        return FeatureMap::zeros(out_channels, h, w);
    }
    let taps = k * k;
    let pad = k / 2;
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let padded = if pad == 0 {
        std::borrow::Cow::Borrowed(&x.data)
    } else {
        let mut padded = vec![0f32; c * hp * wp];
        padded.par_chunks_mut(hp * wp).zip(x.data.par_chunks(x.plane())).for_each(|(dst, src)| {
            for (y, row) in src.chunks(w).enumerate() {
                let at = (y + pad) * wp + pad;
                dst[at..at + w].copy_from_slice(row);
            }
        });
        std::borrow::Cow::Owned(padded)
    };
    // Output on the padded-width grid; the last row's trailing `2 * pad` columns would read past
    // the padded input, so they are not computed (they are dropped anyway).
    let plane = h * wp;
    let n = plane - 2 * pad;
    let mut wide = vec![0f32; out_channels * plane];
    for (o, b) in wide.chunks_mut(plane).zip(bias) {
        o.fill(*b);
    }
    for tap in 0..taps {
        let shift = (tap / k) * wp + tap % k;
        gemm_acc(out_channels, c, n, (&weight[tap..], c * taps, taps), (&padded[shift..], hp * wp, 1), (&mut wide, plane));
    }
    if pad == 0 {
        return FeatureMap { channels: out_channels, height: h, width: w, data: wide };
    }
    let mut out = FeatureMap::zeros(out_channels, h, w);
    out.data.par_chunks_mut(w).zip(wide.par_chunks(wp)).for_each(|(dst, src)| dst.copy_from_slice(&src[..w]));
    out
}

/// GroupNorm with `groups` groups (biased variance, eps 1e-6) and per-channel affine.
pub fn group_norm(x: &FeatureMap, groups: usize, gamma: &[f32], beta: &[f32]) -> FeatureMap {
    let per_group = x.channels / groups * x.plane();
    let mut out = x.clone();
    out.data.par_chunks_mut(per_group.max(1)).enumerate().for_each(|(g, chunk)| {
        let n = chunk.len() as f64;
        let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = chunk.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + 1e-6).sqrt();
        let channels_per_group = x.channels / groups;
        for (i, plane) in chunk.chunks_mut(x.plane()).enumerate() {
            let ch = g * channels_per_group + i;
            for v in plane.iter_mut() {
                *v = ((*v as f64 - mean) * inv) as f32 * gamma[ch] + beta[ch];
            }
        }
    });
    out
}

/// Swish `x * sigmoid(x)` in place.
pub fn swish(x: &mut FeatureMap) {
    x.data.par_iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp());
}

/// Nearest-neighbour x2 upsampling.
pub fn upsample2x(x: &FeatureMap) -> FeatureMap {
    let (h2, w2) = (2 * x.height, 2 * x.width);
    let mut out = FeatureMap::zeros(x.channels, h2, w2);
    out.data.par_chunks_mut((h2 * w2).max(1)).enumerate().for_each(|(c, plane)| {
        for y in 0..h2 {
            for xx in 0..w2 {
                plane[y * w2 + xx] = x.data[c * x.plane() + (y / 2) * x.width + xx / 2];
            }
        }
    });
    out
}

/// Spatial self-attention of LlamaGen's `AttnBlock` on projected `q`, `k`, `v` maps:
/// `out[c, i] = sum_j softmax_j(q[:, i] · k[:, j] / sqrt(C)) v[c, j]`, as two GEMMs.
pub fn spatial_attention(q: &FeatureMap, k: &FeatureMap, v: &FeatureMap) -> FeatureMap {
    let (c, n) = (q.channels, q.plane());
    let scale = 1.0 / (c as f32).sqrt();
    // scores[i, j] = q[:, i] · k[:, j]: q read transposed (row stride 1, column stride n).
    let mut scores = vec![0f32; n * n];
    gemm_acc(n, c, n, (&q.data, 1, n), (&k.data, n, 1), (&mut scores, n));
    scores.par_chunks_mut(n.max(1)).for_each(|row| {
        row.iter_mut().for_each(|s| *s *= scale);
        let probs = softmax(row);
        row.copy_from_slice(&probs);
    });
    // out[ch, i] = sum_j v[ch, j] p[i, j]: the probabilities read transposed.
    let mut out = FeatureMap::zeros(c, q.height, q.width);
    gemm_acc(c, n, n, (&v.data, n, 1), (&scores, 1, n), (&mut out.data, n));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv3x3_matches_a_direct_loop() {
        // Shapes where the padded-row trick has the least slack: single rows and columns.
        for (cin, cout, h, w) in [(2, 3, 3, 4), (3, 2, 1, 1), (1, 2, 5, 1), (2, 2, 1, 5)] {
            let plane = h * w;
            let x = FeatureMap { channels: cin, height: h, width: w, data: (0..cin * plane).map(|v| v as f32 * 0.1 - 1.0).collect() };
            let weight: Vec<f32> = (0..cout * cin * 9).map(|v| ((v * 7 % 11) as f32 - 5.0) * 0.1).collect();
            let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.75 - 0.5).collect();
            let got = conv2d(&x, &weight, &bias, cout, 3);
            for (o, y, xx) in (0..cout).flat_map(|o| (0..h).flat_map(move |y| (0..w).map(move |xx| (o, y, xx)))) {
                let mut acc = bias[o];
                for (c, ky, kx) in (0..cin).flat_map(|c| (0..3).flat_map(move |ky| (0..3).map(move |kx| (c, ky, kx)))) {
                    let (sy, sx) = ((y + ky).wrapping_sub(1), (xx + kx).wrapping_sub(1));
                    if sy < h && sx < w {
                        acc += weight[((o * cin + c) * 3 + ky) * 3 + kx] * x.data[c * plane + sy * w + sx];
                    }
                }
                assert!((got.data[o * plane + y * w + xx] - acc).abs() < 1e-5, "{cin}->{cout} {h}x{w} at {o},{y},{xx}");
            }
        }
    }

    #[test]
    fn group_norm_normalises_each_group() {
        let x = FeatureMap { channels: 4, height: 1, width: 2, data: vec![1.0, 3.0, 5.0, 7.0, 0.0, 0.0, 2.0, 2.0] };
        let y = group_norm(&x, 2, &[1.0; 4], &[0.0; 4]);
        let first = &y.data[..4];
        assert!(first.iter().sum::<f32>().abs() < 1e-5);
        assert!((first.iter().map(|v| v * v).sum::<f32>() / 4.0 - 1.0).abs() < 1e-4);
    }

    #[test]
    fn conv1x1_is_a_channel_mix_plus_bias() {
        let x = FeatureMap { channels: 2, height: 1, width: 3, data: vec![1.0, 2.0, 3.0, -1.0, 0.5, 4.0] };
        let got = conv2d(&x, &[2.0, 1.0, 0.0, -1.0], &[0.5, 0.0], 2, 1);
        assert_eq!(got.data, vec![1.5, 5.0, 10.5, 1.0, -0.5, -4.0]);
    }

    #[test]
    fn conv_of_an_empty_map_is_empty() {
        let x = FeatureMap::zeros(2, 0, 3);
        assert_eq!(conv2d(&x, &[0.0; 2 * 2 * 9], &[1.0; 2], 2, 3), FeatureMap::zeros(2, 0, 3));
    }

    #[test]
    fn group_norm_applies_the_affine_per_channel() {
        // One group of two channels: values -1, 1, -1, 1 have mean 0 and variance 1.
        let x = FeatureMap { channels: 2, height: 1, width: 2, data: vec![-1.0, 1.0, -1.0, 1.0] };
        let y = group_norm(&x, 1, &[2.0, 3.0], &[0.5, -0.5]);
        let want = [-1.5, 2.5, -3.5, 2.5];
        assert!(y.data.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5), "{:?}", y.data);
    }

    #[test]
    fn swish_is_x_sigmoid_x() {
        let mut x = FeatureMap { channels: 1, height: 1, width: 3, data: vec![0.0, 2.0, -30.0] };
        swish(&mut x);
        let want = [0.0, 2.0 / (1.0 + (-2f32).exp()), 0.0];
        assert!(x.data.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", x.data);
    }

    #[test]
    fn attention_scales_scores_by_inverse_sqrt_channels() {
        // C = 4 (scale 1/2), two positions; every query scores key 0 at 0 and key 1 at
        // 4 * (ln 3 / 2) / 2 = ln 3, so the weights are 1/4 and 3/4 and the output 4/4 + 3*8/4 = 7.
        let map = |data: Vec<f32>| FeatureMap { channels: 4, height: 1, width: 2, data };
        let q = map(vec![1.0; 8]);
        let k = map([0.0, 3f32.ln() / 2.0].repeat(4));
        let v = map([4.0, 8.0].repeat(4));
        let out = spatial_attention(&q, &k, &v);
        assert!(out.data.iter().all(|o| (o - 7.0).abs() < 1e-5), "{:?}", out.data);
    }

    #[test]
    fn attention_matches_a_direct_loop() {
        let map = |seed: usize| FeatureMap { channels: 3, height: 2, width: 3, data: (0..18).map(|i| ((i * 7 + seed * 5) % 13) as f32 * 0.2 - 1.2).collect() };
        let (q, k, v) = (map(1), map(2), map(3));
        let got = spatial_attention(&q, &k, &v);
        for i in 0..6 {
            let scores: Vec<f32> = (0..6).map(|j| (0..3).map(|c| q.data[c * 6 + i] * k.data[c * 6 + j]).sum::<f32>() / 3f32.sqrt()).collect();
            let total: f32 = scores.iter().map(|s| s.exp()).sum();
            for c in 0..3 {
                let want = (0..6).map(|j| scores[j].exp() / total * v.data[c * 6 + j]).sum::<f32>();
                assert!((got.data[c * 6 + i] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn upsample_repeats_pixels() {
        let x = FeatureMap { channels: 1, height: 1, width: 2, data: vec![1.0, 2.0] };
        assert_eq!(upsample2x(&x).data, vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    }
}
