//! The VQ decoder: codebook lookup, then LlamaGen's `post_quant_conv` + `Decoder`, on the CPU.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::model::vq::ops::{conv2d, group_norm, spatial_attention, swish, upsample2x, FeatureMap};
use crate::model::vq::plan::{decoder_plan, vq_tensor_shapes, Step};
use crate::weights::{VqConfig, WeightFile};

/// A loaded VQ decoder (weights converted to f32 once).
pub struct VqDecoder {
    config: VqConfig,
    codebook: Vec<f32>,
    plan: Vec<Step>,
    tensors: HashMap<String, Vec<f32>>,
}

impl VqDecoder {
    /// Load every decoder tensor of `cfg` from `file`, checking names and shapes.
    pub fn load(file: &WeightFile, cfg: &VqConfig) -> Result<Self> {
        check_config(cfg).map_err(|reason| Error::Config { path: file.path().to_path_buf(), reason: format!("vq: {reason}") })?;
        let mut tensors = HashMap::new();
        for (name, shape) in vq_tensor_shapes(cfg) {
            let values = file.tensor_with_shape(&name, &shape)?.to_f32().into_owned();
            tensors.insert(name, values);
        }
        let mut codebook = tensors.remove("quantize.embedding.weight").unwrap_or_default();
        if cfg.codebook_l2_norm {
            for row in codebook.chunks_mut(cfg.codebook_embed_dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Ok(Self { config: cfg.clone(), codebook, plan: decoder_plan(cfg), tensors })
    }

    /// Output pixels per token along each axis.
    pub fn upscale(&self) -> usize {
        1 << (self.config.ch_mult.len() - 1)
    }

    fn tensor(&self, name: &str) -> &[f32] {
        // Every name the plan uses was loaded (and shape-checked) from the same plan.
        &self.tensors[name]
    }

    fn conv(&self, x: &FeatureMap, name: &str, out: usize, k: usize) -> FeatureMap {
        conv2d(x, self.tensor(&format!("{name}.weight")), self.tensor(&format!("{name}.bias")), out, k)
    }

    fn norm(&self, x: &FeatureMap, name: &str) -> FeatureMap {
        group_norm(x, self.config.norm_groups, self.tensor(&format!("{name}.weight")), self.tensor(&format!("{name}.bias")))
    }

    fn norm_swish(&self, x: &FeatureMap, name: &str) -> FeatureMap {
        let mut h = self.norm(x, name);
        swish(&mut h);
        h
    }

    fn step(&self, x: FeatureMap, step: &Step) -> FeatureMap {
        match step {
            Step::Conv { name, out, k, .. } => self.conv(&x, name, *out, *k),
            Step::Res { name, inp, out } => {
                let h = self.conv(&self.norm_swish(&x, &format!("{name}.norm1")), &format!("{name}.conv1"), *out, 3);
                let h = self.conv(&self.norm_swish(&h, &format!("{name}.norm2")), &format!("{name}.conv2"), *out, 3);
                let mut skip = if inp != out { self.conv(&x, &format!("{name}.nin_shortcut"), *out, 1) } else { x };
                skip.data.iter_mut().zip(&h.data).for_each(|(s, v)| *s += v);
                skip
            }
            Step::Attn { name, ch } => {
                let h = self.norm(&x, &format!("{name}.norm"));
                let [q, k, v] = ["q", "k", "v"].map(|p| self.conv(&h, &format!("{name}.{p}"), *ch, 1));
                let attended = self.conv(&spatial_attention(&q, &k, &v), &format!("{name}.proj_out"), *ch, 1);
                let mut out = x;
                out.data.iter_mut().zip(&attended.data).for_each(|(s, v)| *s += v);
                out
            }
            Step::Upsample { name, ch } => self.conv(&upsample2x(&x), &format!("{name}.conv"), *ch, 3),
            Step::NormSwish { name, .. } => self.norm_swish(&x, name),
        }
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
        Ok(self.plan.iter().fold(z, |x, step| self.step(x, step)))
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
