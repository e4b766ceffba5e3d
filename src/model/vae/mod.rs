//! MAR's KL-16 VAE decoder (LDM `AutoencoderKL` decoding half, spec §1.7): generated tokens are
//! unpatchified into the latent, divided by the latent scale (0.2325) and decoded to an RGB
//! image. It runs on the CPU through the convolutional executor it shares with the VQ decoder.

use crate::error::{Error, Result};
use crate::image::{mar_pixel_value, Image};
use crate::model::vq::ops::FeatureMap;
use crate::model::vq::{decoder_output, decoder_stem, DecoderNet, Step};
use crate::weights::{MarConfig, VaeConfig, WeightFile};

/// The steps of LDM's `post_quant_conv` + `Decoder` for `cfg` (attention only in `mid`).
pub fn vae_decoder_plan(cfg: &VaeConfig) -> Vec<Step> {
    let levels = cfg.ch_mult.len();
    let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
    let mut steps = decoder_stem(cfg.embed_dim, cfg.embed_dim, block_in, ["decoder.mid.block_1", "decoder.mid.attn_1", "decoder.mid.block_2"]);
    for level in (0..levels).rev() {
        let block_out = cfg.ch * cfg.ch_mult[level];
        for j in 0..=cfg.num_res_blocks {
            steps.push(Step::Res { name: format!("decoder.up.{level}.block.{j}"), inp: block_in, out: block_out });
            block_in = block_out;
        }
        if level != 0 {
            steps.push(Step::Upsample { name: format!("decoder.up.{level}.upsample"), ch: block_in });
        }
    }
    steps.extend(decoder_output(block_in, cfg.out_ch));
    steps
}

/// A loaded KL VAE decoder.
pub struct VaeDecoder {
    config: VaeConfig,
    net: DecoderNet,
}

impl VaeDecoder {
    /// Load the decoder of `cfg` from `file` (official names), checking the config first.
    pub fn load(file: &WeightFile, cfg: &VaeConfig) -> Result<Self> {
        cfg.validate().map_err(|reason| Error::Config { path: file.path().to_path_buf(), reason })?;
        Ok(Self { config: cfg.clone(), net: DecoderNet::load(file, vae_decoder_plan(cfg), cfg.norm_groups)? })
    }

    /// The decoder output (`[out_ch, H, W]`, roughly in [-1, 1]) for the tokens of a MAR model
    /// of `mar` (`[seq_len, token_dim]`, row-major grid): unpatchify, divide by `scale_factor`,
    /// decode.
    pub fn decode_pixels(&self, mar: &MarConfig, tokens: &[f32]) -> Result<FeatureMap> {
        let (grid, p, channels) = (mar.grid_size(), mar.patch_size, mar.vae_embed_dim);
        if channels != self.config.embed_dim || tokens.len() != mar.seq_len() * mar.token_dim() {
            return Err(Error::InvalidRequest(format!(
                "the VAE decodes {} tokens of {} values (latent {} channels), got {} values for a latent of {channels} channels",
                mar.seq_len(),
                mar.token_dim(),
                self.config.embed_dim,
                tokens.len()
            )));
        }
        let side = grid * p;
        let mut latent = FeatureMap::zeros(channels, side, side);
        let scale = self.config.scale_factor as f32;
        // Token (h, w) holds channels (c, py, px) of latent cell (h p + py, w p + px).
        for (t, token) in tokens.chunks(mar.token_dim()).enumerate() {
            let (h, w) = (t / grid, t % grid);
            for (i, &v) in token.iter().enumerate() {
                let (c, py, px) = (i / (p * p), i / p % p, i % p);
                latent.data[(c * side + h * p + py) * side + w * p + px] = v / scale;
            }
        }
        Ok(self.net.run(latent))
    }

    /// Decode MAR tokens into an RGB image with MAR's mapping `round(clip((x + 1)/2 · 255))`.
    pub fn decode(&self, mar: &MarConfig, tokens: &[f32]) -> Result<Image> {
        let map = self.decode_pixels(mar, tokens)?;
        Ok(Image::from_chw_mapped(map.channels, map.height, map.width, &map.data, mar_pixel_value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_walks_the_levels_in_reverse_with_shortcuts_where_the_width_changes() {
        let cfg = VaeConfig { file: "v".into(), embed_dim: 4, ch: 8, ch_mult: vec![1, 2], num_res_blocks: 1, out_ch: 3, norm_groups: 4, scale_factor: 0.5 };
        let names: Vec<String> = vae_decoder_plan(&cfg)
            .into_iter()
            .map(|s| match s {
                Step::Res { name, inp, out } => format!("{name} {inp}->{out}"),
                Step::Conv { name, .. } | Step::Attn { name, .. } | Step::Upsample { name, .. } | Step::NormSwish { name, .. } => name,
            })
            .collect();
        let want = [
            "post_quant_conv",
            "decoder.conv_in",
            "decoder.mid.block_1 16->16",
            "decoder.mid.attn_1",
            "decoder.mid.block_2 16->16",
            "decoder.up.1.block.0 16->16",
            "decoder.up.1.block.1 16->16",
            "decoder.up.1.upsample",
            "decoder.up.0.block.0 16->8",
            "decoder.up.0.block.1 8->8",
            "decoder.norm_out",
            "decoder.conv_out",
        ];
        assert_eq!(names, want);
    }
}
