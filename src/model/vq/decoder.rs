//! The VQ decoder: codebook lookup, then LlamaGen's `post_quant_conv` + `Decoder`, on the CPU.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::model::vq::net::DecoderNet;
use crate::model::vq::ops::FeatureMap;
use crate::model::vq::plan::{decoder_plan, CODEBOOK};
use crate::weights::{VqConfig, WeightFile};

/// A loaded VQ decoder (weights converted to f32 once).
pub struct VqDecoder {
    config: VqConfig,
    codebook: Vec<f32>,
    net: DecoderNet,
}

impl VqDecoder {
    /// Load every decoder tensor of `cfg` from `file`, checking names and shapes.
    pub fn load(file: &WeightFile, cfg: &VqConfig) -> Result<Self> {
        check_config(cfg).map_err(|reason| Error::Config { path: file.path().to_path_buf(), reason: format!("vq: {reason}") })?;
        let mut codebook = file.tensor_with_shape(CODEBOOK, &[cfg.codebook_size, cfg.codebook_embed_dim])?.to_f32().into_owned();
        if cfg.codebook_l2_norm {
            for row in codebook.chunks_mut(cfg.codebook_embed_dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Ok(Self { config: cfg.clone(), codebook, net: DecoderNet::load(file, decoder_plan(cfg), cfg.norm_groups)? })
    }

    /// Output pixels per token along each axis.
    pub fn upscale(&self) -> usize {
        1 << (self.config.ch_mult.len() - 1)
    }

    /// The decoder's raw output (`[out_channels, H, W]`, roughly in [-1, 1]) for a row-major
    /// `grid_h x grid_w` grid of tokens.
    pub fn decode_pixels(&self, tokens: &[u32], grid_h: usize, grid_w: usize) -> Result<FeatureMap> {
        let (vocab, e) = (self.config.codebook_size, self.config.codebook_embed_dim);
        if grid_h == 0 || grid_w == 0 {
            return Err(Error::InvalidRequest(format!("cannot decode an empty {grid_h}x{grid_w} token grid")));
        }
        if grid_h.checked_mul(grid_w) != Some(tokens.len()) {
            return Err(Error::InvalidRequest(format!("{} tokens do not fill a {grid_h}x{grid_w} grid", tokens.len())));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidRequest(format!("token id {bad} outside the VQ codebook of {vocab} entries")));
        }
        let mut z = FeatureMap::zeros(e, grid_h, grid_w);
        for (i, &t) in tokens.iter().enumerate() {
            for c in 0..e {
                z.data[c * tokens.len() + i] = self.codebook[t as usize * e + c];
            }
        }
        Ok(self.net.run(z))
    }

    /// Decode a row-major token grid into an RGB image.
    pub fn decode(&self, tokens: &[u32], grid_h: usize, grid_w: usize) -> Result<Image> {
        let map = self.decode_pixels(tokens, grid_h, grid_w)?;
        Ok(Image::from_chw(map.channels, map.height, map.width, &map.data))
    }
}

/// Reject configurations the decoder cannot run (zero widths, channel counts GroupNorm cannot
/// split), so that a bad `config.json` is an error at load time rather than a panic at decode.
fn check_config(cfg: &VqConfig) -> std::result::Result<(), String> {
    let widths = [
        ("codebook_size", cfg.codebook_size),
        ("codebook_embed_dim", cfg.codebook_embed_dim),
        ("z_channels", cfg.z_channels),
        ("ch", cfg.ch),
        ("out_channels", cfg.out_channels),
        ("norm_groups", cfg.norm_groups),
    ];
    if let Some((key, _)) = widths.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{key} must be positive"));
    }
    if cfg.ch_mult.is_empty() || cfg.ch_mult.contains(&0) {
        return Err(format!("ch_mult {:?} must be non-empty and positive", cfg.ch_mult));
    }
    if cfg.ch_mult.len() > 16 {
        return Err(format!("ch_mult has {} stages; at most 16 are supported", cfg.ch_mult.len()));
    }
    if !cfg.ch.is_multiple_of(cfg.norm_groups) {
        return Err(format!("ch {} must be a multiple of norm_groups {}", cfg.ch, cfg.norm_groups));
    }
    Ok(())
}
