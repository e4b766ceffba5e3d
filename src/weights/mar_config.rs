//! The sections of a MAR weights directory's `config.json` (`"family": "mar"`): the masked
//! autoregressive transformer with its DiffLoss head (`mar`, optional `draft`) and the KL-16 VAE
//! decoder (`vae`). Keys are the official constructor arguments (`MAR(...)`, LDM `ddconfig`);
//! the schema is in docs/ARCHITECTURE.md and tools/README.md.

use serde::{Deserialize, Serialize};

fn default_mar_norm_eps() -> f64 {
    1e-6
}
fn default_buffer_size() -> usize {
    64
}
fn default_num_sampling_steps() -> usize {
    100
}
fn default_diffusion_steps() -> usize {
    1000
}
fn default_noise_schedule() -> String {
    "cosine".into()
}
fn default_out_ch() -> usize {
    3
}
fn default_vae_norm_groups() -> usize {
    32
}

/// A MAR model with its DiffLoss head (target or CSpD draft).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarConfig {
    /// Safetensors file, relative to the weights directory.
    pub file: String,
    /// Image side in pixels.
    pub img_size: usize,
    /// Pixels per latent cell of the VAE (16).
    pub vae_stride: usize,
    /// Latent cells per token side (1 for the released models).
    pub patch_size: usize,
    /// Channels of the VAE latent.
    pub vae_embed_dim: usize,
    /// Encoder width.
    pub encoder_embed_dim: usize,
    /// Encoder blocks.
    pub encoder_depth: usize,
    /// Encoder attention heads.
    pub encoder_num_heads: usize,
    /// Decoder width.
    pub decoder_embed_dim: usize,
    /// Decoder blocks.
    pub decoder_depth: usize,
    /// Decoder attention heads.
    pub decoder_num_heads: usize,
    /// MLP hidden width over block width.
    pub mlp_ratio: f64,
    /// LayerNorm epsilon of the transformer.
    #[serde(default = "default_mar_norm_eps")]
    pub norm_eps: f64,
    /// Number of classes (`class_emb` rows; `fake_latent` is the unconditional embedding).
    pub class_num: usize,
    /// Class-embedding rows prepended to the token sequence.
    #[serde(default = "default_buffer_size")]
    pub buffer_size: usize,
    /// ResBlocks of the diffusion head.
    pub diffloss_d: usize,
    /// Width of the diffusion head.
    pub diffloss_w: usize,
    /// Respaced sampling steps of the diffusion head.
    #[serde(default = "default_num_sampling_steps")]
    pub num_sampling_steps: usize,
    /// Training steps of the diffusion process the respacing starts from.
    #[serde(default = "default_diffusion_steps")]
    pub diffusion_steps: usize,
    /// Noise schedule (only `cosine`).
    #[serde(default = "default_noise_schedule")]
    pub noise_schedule: String,
}

impl MarConfig {
    /// Side of the token grid: `img_size / vae_stride / patch_size`.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.vae_stride.max(1) / self.patch_size.max(1)
    }

    /// Tokens per image.
    pub fn seq_len(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Channels of one token: `vae_embed_dim * patch_size^2`.
    pub fn token_dim(&self) -> usize {
        self.vae_embed_dim * self.patch_size * self.patch_size
    }

    /// MLP hidden width of a transformer block of `width`: `int(width * mlp_ratio)`, as timm.
    pub fn mlp_hidden(&self, width: usize) -> usize {
        (width as f64 * self.mlp_ratio) as usize
    }

    /// Check internal consistency; `what` names the section for the message.
    pub fn validate(&self, what: &str) -> std::result::Result<(), String> {
        let positive = [
            ("img_size", self.img_size),
            ("vae_stride", self.vae_stride),
            ("patch_size", self.patch_size),
            ("vae_embed_dim", self.vae_embed_dim),
            ("class_num", self.class_num),
            ("buffer_size", self.buffer_size),
            ("diffloss_w", self.diffloss_w),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{what}.{key} must be positive"));
        }
        if !self.img_size.is_multiple_of(self.vae_stride * self.patch_size) {
            return Err(format!("{what}.img_size {} is not a multiple of vae_stride * patch_size = {}", self.img_size, self.vae_stride * self.patch_size));
        }
        for (part, width, heads) in [("encoder", self.encoder_embed_dim, self.encoder_num_heads), ("decoder", self.decoder_embed_dim, self.decoder_num_heads)] {
            if width == 0 || heads == 0 || !width.is_multiple_of(heads) {
                return Err(format!("{what}.{part}_embed_dim {width} must be a positive multiple of {part}_num_heads {heads}"));
            }
            if self.mlp_hidden(width) == 0 {
                return Err(format!("{what}.mlp_ratio {} leaves no MLP width", self.mlp_ratio));
            }
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(format!("{what}.norm_eps must be positive"));
        }
        if self.noise_schedule != "cosine" {
            return Err(format!("{what}.noise_schedule {:?} is not supported; spire implements \"cosine\" (MAR's)", self.noise_schedule));
        }
        if self.num_sampling_steps < 2 || self.num_sampling_steps > self.diffusion_steps {
            return Err(format!("{what}.num_sampling_steps {} must be between 2 and diffusion_steps {}", self.num_sampling_steps, self.diffusion_steps));
        }
        Ok(())
    }
}

/// The decoding half of the LDM KL autoencoder (`AutoencoderKL`, KL-16 for MAR).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Safetensors file, relative to the weights directory.
    pub file: String,
    /// Latent channels (`post_quant_conv` keeps them: `z_channels == embed_dim`).
    pub embed_dim: usize,
    /// Base channel count.
    pub ch: usize,
    /// Channel multipliers per resolution, lowest first (the decoder walks them in reverse).
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder uses one more).
    pub num_res_blocks: usize,
    /// Output image channels.
    #[serde(default = "default_out_ch")]
    pub out_ch: usize,
    /// GroupNorm groups (LDM's `Normalize` hard-codes 32).
    #[serde(default = "default_vae_norm_groups")]
    pub norm_groups: usize,
    /// Latent scale: generated tokens are divided by it before decoding (0.2325 for MAR).
    pub scale_factor: f64,
}

impl VaeConfig {
    /// Output pixels per latent cell along each axis: `2^(levels - 1)`.
    pub fn upscale(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    /// Check that the decoder can run (positive widths, GroupNorm-divisible channels, a usable
    /// scale).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [("embed_dim", self.embed_dim), ("ch", self.ch), ("out_ch", self.out_ch), ("norm_groups", self.norm_groups)];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("vae.{key} must be positive"));
        }
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) || self.ch_mult.len() > 16 {
            return Err(format!("vae.ch_mult {:?} must hold 1 to 16 positive multipliers", self.ch_mult));
        }
        if let Some(m) = self.ch_mult.iter().find(|&&m| !(self.ch * m).is_multiple_of(self.norm_groups)) {
            return Err(format!("vae: width ch * {m} = {} is not a multiple of norm_groups {}", self.ch * m, self.norm_groups));
        }
        if !(self.scale_factor > 0.0 && self.scale_factor.is_finite()) {
            return Err(format!("vae.scale_factor {} must be positive", self.scale_factor));
        }
        Ok(())
    }
}

/// Everything a MAR directory's `config.json` describes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarDirConfig {
    /// The target MAR model.
    pub mar: MarConfig,
    /// A smaller MAR model of the same token layout and schedule (the CSpD draft), if shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<MarConfig>,
    /// The KL VAE decoder, if shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<VaeConfig>,
}

impl MarDirConfig {
    /// Check every section and the agreement between them.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.mar.validate("mar")?;
        if let Some(draft) = &self.draft {
            draft.validate("draft")?;
            let shared = |c: &MarConfig| (c.grid_size(), c.token_dim(), c.class_num, c.num_sampling_steps, c.diffusion_steps);
            if shared(draft) != shared(&self.mar) {
                return Err("draft must share the mar's token grid, token width, class_num, num_sampling_steps and diffusion_steps (CSpD shares orders and noise)".into());
            }
        }
        if let Some(vae) = &self.vae {
            vae.validate()?;
            if vae.embed_dim != self.mar.vae_embed_dim {
                return Err(format!("vae.embed_dim {} differs from mar.vae_embed_dim {}", vae.embed_dim, self.mar.vae_embed_dim));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> MarDirConfig {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mar_tiny/config.json")).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value.as_object_mut().unwrap().remove("family");
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_tiny_config_is_valid_and_derives_its_grid() {
        let config = tiny();
        config.validate().unwrap();
        assert_eq!((config.mar.grid_size(), config.mar.seq_len(), config.mar.token_dim(), config.mar.mlp_hidden(24)), (4, 16, 6, 96));
    }

    #[test]
    fn inconsistent_sections_are_rejected_with_the_reason() {
        let broken = |edit: fn(&mut MarDirConfig)| {
            let mut config = tiny();
            edit(&mut config);
            config.validate().unwrap_err()
        };
        assert!(broken(|c| c.mar.encoder_num_heads = 5).contains("mar.encoder_embed_dim 32 must be a positive multiple of encoder_num_heads 5"));
        assert!(broken(|c| c.mar.img_size = 60).contains("not a multiple of vae_stride"));
        assert!(broken(|c| c.mar.noise_schedule = "linear".into()).contains("\"linear\" is not supported"));
        assert!(broken(|c| c.mar.num_sampling_steps = 1).contains("between 2 and diffusion_steps"));
        assert!(broken(|c| c.mar.buffer_size = 0).contains("mar.buffer_size must be positive"));
        assert!(broken(|c| c.draft = Some(MarConfig { class_num: 11, ..c.mar.clone() })).contains("draft must share"));
        assert!(broken(|c| c.vae.as_mut().unwrap().embed_dim = 5).contains("vae.embed_dim 5 differs"));
        assert!(broken(|c| c.vae.as_mut().unwrap().norm_groups = 3).contains("not a multiple of norm_groups 3"));
    }
}
