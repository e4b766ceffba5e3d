//! CPU ops of the VQ decoder on one image in CHW layout (f32).

use rayon::prelude::*;

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

/// Stride-1 convolution with zero padding `k / 2` (k = 1 or 3): `weight [out, in, k, k]`,
/// `bias [out]`; computed as im2col + one GEMM.
pub fn conv2d(x: &FeatureMap, weight: &[f32], bias: &[f32], out_channels: usize, k: usize) -> FeatureMap {
    let (c, h, w) = (x.channels, x.height, x.width);
    let pad = (k / 2) as isize;
    let plane = h * w;
    let cols: Vec<f32> = if k == 1 {
        x.data.clone()
    } else {
        let mut cols = vec![0f32; c * k * k * plane];
        cols.par_chunks_mut(plane).enumerate().for_each(|(row, col)| {
            let (ci, ky, kx) = (row / (k * k), (row / k) % k, row % k);
            for y in 0..h {
                let sy = y as isize + ky as isize - pad;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for xx in 0..w {
                    let sx = xx as isize + kx as isize - pad;
                    if sx >= 0 && sx < w as isize {
                        col[y * w + xx] = x.data[ci * plane + sy as usize * w + sx as usize];
                    }
                }
            }
        });
        cols
    };
    let mut out = FeatureMap::zeros(out_channels, h, w);
    for (o, b) in out.data.chunks_mut(plane).zip(bias) {
        o.fill(*b);
    }
    let inner = c * k * k;
    // SAFETY: weight is [out_channels, inner], cols is [inner, plane], out is [out_channels, plane],
    // all row-major and non-aliasing; beta = 1 accumulates onto the bias.
    unsafe {
        matrixmultiply::sgemm(
            out_channels,
            inner,
            plane,
            1.0,
            weight.as_ptr(),
            inner as isize,
            1,
            cols.as_ptr(),
            plane as isize,
            1,
            1.0,
            out.data.as_mut_ptr(),
            plane as isize,
            1,
        );
    }
    out
}

/// GroupNorm with `groups` groups (biased variance, eps 1e-6) and per-channel affine.
pub fn group_norm(x: &FeatureMap, groups: usize, gamma: &[f32], beta: &[f32]) -> FeatureMap {
    let per_group = x.channels / groups * x.plane();
    let mut out = x.clone();
    out.data.par_chunks_mut(per_group).enumerate().for_each(|(g, chunk)| {
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
    out.data.par_chunks_mut(h2 * w2).enumerate().for_each(|(c, plane)| {
        for y in 0..h2 {
            for xx in 0..w2 {
                plane[y * w2 + xx] = x.data[c * x.plane() + (y / 2) * x.width + xx / 2];
            }
        }
    });
    out
}

/// Spatial self-attention of LlamaGen's `AttnBlock` on projected `q`, `k`, `v` maps:
/// `out[c, i] = sum_j softmax_j(q[:, i] · k[:, j] / sqrt(C)) v[c, j]`.
pub fn spatial_attention(q: &FeatureMap, k: &FeatureMap, v: &FeatureMap) -> FeatureMap {
    let (c, n) = (q.channels, q.plane());
    let scale = 1.0 / (c as f32).sqrt();
    let mut rows = vec![0f32; n * c];
    rows.par_chunks_mut(c).enumerate().for_each(|(i, out_row)| {
        let mut scores: Vec<f32> = (0..n).map(|j| (0..c).map(|ch| q.data[ch * n + i] * k.data[ch * n + j]).sum::<f32>() * scale).collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        for (ch, o) in out_row.iter_mut().enumerate() {
            *o = (0..n).map(|j| scores[j] * v.data[ch * n + j]).sum::<f32>() / total;
        }
    });
    let mut out = FeatureMap::zeros(c, q.height, q.width);
    for i in 0..n {
        for ch in 0..c {
            out.data[ch * n + i] = rows[i * c + ch];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv3x3_matches_a_direct_loop() {
        let x = FeatureMap { channels: 2, height: 3, width: 4, data: (0..24).map(|v| v as f32 * 0.1 - 1.0).collect() };
        let weight: Vec<f32> = (0..3 * 2 * 9).map(|v| ((v * 7 % 11) as f32 - 5.0) * 0.1).collect();
        let bias = [0.5, -0.25, 1.0];
        let got = conv2d(&x, &weight, &bias, 3, 3);
        for o in 0..3 {
            for y in 0..3isize {
                for xx in 0..4isize {
                    let mut acc = bias[o];
                    for c in 0..2 {
                        for ky in 0..3isize {
                            for kx in 0..3isize {
                                let (sy, sx) = (y + ky - 1, xx + kx - 1);
                                if (0..3).contains(&sy) && (0..4).contains(&sx) {
                                    acc += weight[((o * 2 + c) * 3 + ky as usize) * 3 + kx as usize] * x.data[c * 12 + (sy * 4 + sx) as usize];
                                }
                            }
                        }
                    }
                    assert!((got.data[o * 12 + (y * 4 + xx) as usize] - acc).abs() < 1e-5);
                }
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
    fn upsample_repeats_pixels() {
        let x = FeatureMap { channels: 1, height: 1, width: 2, data: vec![1.0, 2.0] };
        assert_eq!(upsample2x(&x).data, vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    }
}
