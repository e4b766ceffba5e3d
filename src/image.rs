//! RGB images: built from planar decoder output, tiled into grids, written as PNG.

use std::path::Path;

use crate::error::{Error, Result};

/// An 8-bit RGB image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes, RGB interleaved.
    pub rgb: Vec<u8>,
}

/// LlamaGen's output mapping: `clamp(127.5 * x + 128, 0, 255)`, truncated.
pub fn pixel_value(x: f32) -> u8 {
    (127.5 * x + 128.0).clamp(0.0, 255.0) as u8
}

/// MAR's output mapping: `round(clip((x + 1)/2 · 255, 0, 255))`, rounding half to even (NumPy).
pub fn mar_pixel_value(x: f32) -> u8 {
    ((x as f64 + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0).round_ties_even() as u8
}

impl Image {
    /// Map planar decoder output `data` (`[channels, height, width]`, 3 channels, or 1 for
    /// grayscale, replicated) to RGB bytes with [`pixel_value`].
    pub fn from_chw(channels: usize, height: usize, width: usize, data: &[f32]) -> Self {
        Self::from_chw_mapped(channels, height, width, data, pixel_value)
    }

    /// [`Image::from_chw`] with the decoder's own value-to-byte mapping `map`.
    pub fn from_chw_mapped(channels: usize, height: usize, width: usize, data: &[f32], map: fn(f32) -> u8) -> Self {
        let plane = height * width;
        let channel = |c: usize, i: usize| data[c.min(channels - 1) * plane + i];
        let rgb = (0..plane).flat_map(|i| (0..3).map(move |c| map(channel(c, i)))).collect();
        Self { width, height, rgb }
    }

    /// Tile `images` (all of one size) `columns` per row with a 2-pixel white gap.
    pub fn grid(images: &[Image], columns: usize) -> Image {
        const GAP: usize = 2;
        let Some(first) = images.first() else { return Image { width: 0, height: 0, rgb: Vec::new() } };
        let columns = columns.clamp(1, images.len());
        let rows = images.len().div_ceil(columns);
        let width = columns * first.width + (columns - 1) * GAP;
        let height = rows * first.height + (rows - 1) * GAP;
        let mut rgb = vec![255u8; width * height * 3];
        for (n, image) in images.iter().enumerate() {
            let (x0, y0) = ((n % columns) * (first.width + GAP), (n / columns) * (first.height + GAP));
            for y in 0..image.height.min(first.height) {
                let src = &image.rgb[y * image.width * 3..(y * image.width + image.width.min(first.width)) * 3];
                let dst = ((y0 + y) * width + x0) * 3;
                rgb[dst..dst + src.len()].copy_from_slice(src);
            }
        }
        Image { width, height, rgb }
    }

    /// Write the image as an 8-bit RGB PNG.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
        let file = std::fs::File::create(path).map_err(io)?;
        self.write_png(std::io::BufWriter::new(file)).map_err(io)
    }

    /// The image as the bytes of an 8-bit RGB PNG.
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.write_png(&mut bytes).map_err(|e| Error::Internal(format!("encoding a {}x{} PNG in memory: {e}", self.width, self.height)))?;
        Ok(bytes)
    }

    fn write_png(&self, out: impl std::io::Write) -> std::io::Result<()> {
        let mut encoder = png::Encoder::new(out, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| std::io::Error::other(e.to_string());
        let mut writer = encoder.write_header().map_err(png_err)?;
        writer.write_image_data(&self.rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_mapping_clamps_and_truncates() {
        let got: Vec<u8> = [-2.0, -1.0, 0.0, 0.5, 0.99, 1.0, 3.0].into_iter().map(pixel_value).collect();
        // 127.5 * x + 128: 0.5, 128, 191.75, 254.225, 255.5 -> clamped and truncated.
        assert_eq!(got, vec![0, 0, 128, 191, 254, 255, 255]);
    }

    #[test]
    fn mar_mapping_rounds_and_clamps() {
        // (x + 1)/2 * 255: -1 -> 0, 0 -> 127.5 (the only exact tie; to even: 128), 0.5 -> 191.25,
        // 0.9 -> 242.25, 1 -> 255; outside [-1, 1] clamped.
        let got: Vec<u8> = [-1.5, -1.0, 0.0, 0.5, 0.9, 1.0, 2.0].into_iter().map(mar_pixel_value).collect();
        assert_eq!(got, vec![0, 0, 128, 191, 242, 255, 255]);
    }

    #[test]
    fn chw_becomes_interleaved_rgb_and_gray_is_replicated() {
        let rgb = [-1.0, 1.0, 0.0, 0.0, 1.0, -1.0];
        assert_eq!(Image::from_chw(3, 1, 2, &rgb).rgb, vec![0, 128, 255, 255, 128, 0]);
        let image = Image::from_chw(1, 2, 1, &[1.0, -1.0]);
        assert_eq!((image.width, image.height, image.rgb), (1, 2, vec![255, 255, 255, 0, 0, 0]));
    }

    #[test]
    fn grid_tiles_row_major_with_white_gaps() {
        let solid = |v: u8| Image { width: 1, height: 1, rgb: vec![v; 3] };
        let grid = Image::grid(&[solid(10), solid(20), solid(30)], 2);
        assert_eq!((grid.width, grid.height), (4, 4));
        let px = |x: usize, y: usize| grid.rgb[(y * grid.width + x) * 3];
        assert_eq!([px(0, 0), px(3, 0), px(0, 3), px(3, 3)], [10, 20, 30, 255]);
        assert!([(1, 0), (2, 0), (0, 1), (0, 2), (1, 1)].iter().all(|&(x, y)| px(x, y) == 255));
        assert_eq!(Image::grid(&[], 3).rgb.len(), 0);
    }
}
