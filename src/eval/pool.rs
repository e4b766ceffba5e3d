//! CPU ops the evaluation network adds to the VQ decoder's: ReLU, 2x2 max-pooling, and the
//! bilinear resize that brings an image of another size to its input.

use crate::model::vq::ops::FeatureMap;

/// `max(x, 0)` in place.
pub fn relu(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// 2x2 max-pooling with stride 2 (odd trailing rows or columns are dropped, as in PyTorch).
pub fn max_pool2(x: &FeatureMap) -> FeatureMap {
    let (h, w) = (x.height / 2, x.width / 2);
    let mut out = FeatureMap::zeros(x.channels, h, w);
    for (c, plane) in out.data.chunks_mut((h * w).max(1)).enumerate() {
        let src = &x.data[c * x.plane()..];
        for (i, v) in plane.iter_mut().enumerate() {
            let (y, xx) = (2 * (i / w), 2 * (i % w));
            let at = |dy: usize, dx: usize| src[(y + dy) * x.width + xx + dx];
            *v = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
        }
    }
    out
}

/// Bilinear resize of every channel to `height x width`, pixel centres aligned (PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)` without antialiasing).
pub fn resize_bilinear(x: &FeatureMap, height: usize, width: usize) -> FeatureMap {
    /// The two source indices around output index `i` of `out` over `len` inputs, and the second's weight.
    fn taps(i: usize, out: usize, len: usize) -> (usize, usize, f32) {
        let at = ((i as f32 + 0.5) * len as f32 / out as f32 - 0.5).clamp(0.0, (len - 1) as f32);
        let lo = at.floor() as usize;
        (lo, (lo + 1).min(len - 1), at - lo as f32)
    }
    let mut out = FeatureMap::zeros(x.channels, height, width);
    for (c, plane) in out.data.chunks_mut((height * width).max(1)).enumerate() {
        let src = &x.data[c * x.plane()..];
        for (i, v) in plane.iter_mut().enumerate() {
            let ((y0, y1, fy), (x0, x1, fx)) = (taps(i / width, height, x.height), taps(i % width, width, x.width));
            let row = |y: usize| src[y * x.width + x0] * (1.0 - fx) + src[y * x.width + x1] * fx;
            *v = row(y0) * (1.0 - fy) + row(y1) * fy;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_each_window_of_each_channel() {
        let x = FeatureMap { channels: 2, height: 2, width: 4, data: vec![1., 5., 2., 0., 3., 4., 8., 7., 0., -1., -2., -3., -4., -5., -6., -7.] };
        let y = max_pool2(&x);
        assert_eq!((y.channels, y.height, y.width), (2, 1, 2));
        assert_eq!(y.data, vec![5., 8., 0., -2.]);
    }

    #[test]
    fn resizes_with_aligned_pixel_centres() {
        let x = FeatureMap { channels: 1, height: 1, width: 2, data: vec![0., 4.] };
        assert_eq!(resize_bilinear(&x, 1, 4).data, vec![0., 1., 3., 4.], "PyTorch's bilinear 2x upsampling");
        assert_eq!(resize_bilinear(&x, 2, 2).data, vec![0., 4., 0., 4.]);
    }

    #[test]
    fn relu_clamps_negatives() {
        let mut v = [-1.0, 0.5, 0.0];
        relu(&mut v);
        assert_eq!(v, [0.0, 0.5, 0.0]);
    }
}
