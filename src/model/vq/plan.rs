//! A convolutional decoder as a list of steps, and the VQ decoder's steps derived from its
//! config: the single description both the tensor list (names and shapes) and the forward pass
//! ([`super::DecoderNet`]) are read from.

use crate::weights::VqConfig;

/// One step of the decoder, with the tensor-name prefix of its weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Convolution `name.{weight,bias}`, kernel `k` (1 or 3), `inp -> out` channels.
    Conv {
        /// Tensor-name prefix.
        name: String,
        /// Input channels.
        inp: usize,
        /// Output channels.
        out: usize,
        /// Kernel side (odd; zero padding `k / 2`).
        k: usize,
    },
    /// `ResnetBlock` `inp -> out` (with `nin_shortcut` when they differ).
    Res {
        /// Tensor-name prefix.
        name: String,
        /// Input channels.
        inp: usize,
        /// Output channels.
        out: usize,
    },
    /// `AttnBlock` over `ch` channels.
    Attn {
        /// Tensor-name prefix.
        name: String,
        /// Channels.
        ch: usize,
    },
    /// Nearest x2 upsampling followed by conv `name.conv`.
    Upsample {
        /// Tensor-name prefix.
        name: String,
        /// Channels.
        ch: usize,
    },
    /// GroupNorm `name` followed by swish.
    NormSwish {
        /// Tensor-name prefix.
        name: String,
        /// Channels.
        ch: usize,
    },
}

/// The opening steps of a taming / LDM decoder: `post_quant_conv` (1x1, `latent -> z`),
/// `decoder.conv_in` (3x3, `z -> width`) and the middle ResNet, attention and ResNet blocks
/// named `mid`.
pub fn decoder_stem(latent: usize, z: usize, width: usize, mid: [&str; 3]) -> Vec<Step> {
    vec![
        Step::Conv { name: "post_quant_conv".into(), inp: latent, out: z, k: 1 },
        Step::Conv { name: "decoder.conv_in".into(), inp: z, out: width, k: 3 },
        Step::Res { name: mid[0].into(), inp: width, out: width },
        Step::Attn { name: mid[1].into(), ch: width },
        Step::Res { name: mid[2].into(), inp: width, out: width },
    ]
}

/// The closing steps of a taming / LDM decoder: `decoder.norm_out` with swish, then
/// `decoder.conv_out` (3x3, `width -> out_channels`).
pub fn decoder_output(width: usize, out_channels: usize) -> [Step; 2] {
    [
        Step::NormSwish { name: "decoder.norm_out".into(), ch: width },
        Step::Conv { name: "decoder.conv_out".into(), inp: width, out: out_channels, k: 3 },
    ]
}

/// The steps of LlamaGen's `post_quant_conv` + `Decoder` for `cfg`.
pub fn decoder_plan(cfg: &VqConfig) -> Vec<Step> {
    let n = cfg.ch_mult.len();
    let mut block_in = cfg.ch * cfg.ch_mult[n - 1];
    let mut steps = decoder_stem(cfg.codebook_embed_dim, cfg.z_channels, block_in, ["decoder.mid.0", "decoder.mid.1", "decoder.mid.2"]);
    for stage in 0..n {
        let block_out = cfg.ch * cfg.ch_mult[n - 1 - stage];
        for j in 0..=cfg.num_res_blocks {
            steps.push(Step::Res { name: format!("decoder.conv_blocks.{stage}.res.{j}"), inp: block_in, out: block_out });
            block_in = block_out;
            if stage == 0 {
                steps.push(Step::Attn { name: format!("decoder.conv_blocks.{stage}.attn.{j}"), ch: block_in });
            }
        }
        if stage != n - 1 {
            steps.push(Step::Upsample { name: format!("decoder.conv_blocks.{stage}.upsample"), ch: block_in });
        }
    }
    steps.extend(decoder_output(block_in, cfg.out_channels));
    steps
}

fn conv_shapes(name: &str, inp: usize, out: usize, k: usize) -> [(String, Vec<usize>); 2] {
    [(format!("{name}.weight"), vec![out, inp, k, k]), (format!("{name}.bias"), vec![out])]
}

fn norm_shapes(name: &str, ch: usize) -> [(String, Vec<usize>); 2] {
    [(format!("{name}.weight"), vec![ch]), (format!("{name}.bias"), vec![ch])]
}

/// Name of the VQ codebook tensor.
pub const CODEBOOK: &str = "quantize.embedding.weight";

/// Official tensor names and shapes of the VQ decoder half for `cfg` (codebook included).
pub fn vq_tensor_shapes(cfg: &VqConfig) -> Vec<(String, Vec<usize>)> {
    let mut shapes = vec![(CODEBOOK.to_string(), vec![cfg.codebook_size, cfg.codebook_embed_dim])];
    shapes.extend(step_tensor_shapes(&decoder_plan(cfg)));
    shapes
}

/// The tensor names and shapes the steps `plan` read, in order.
pub fn step_tensor_shapes(plan: &[Step]) -> Vec<(String, Vec<usize>)> {
    let mut shapes = Vec::new();
    for step in plan {
        match step {
            Step::Conv { name, inp, out, k } => shapes.extend(conv_shapes(name, *inp, *out, *k)),
            Step::Res { name, inp, out } => {
                shapes.extend(norm_shapes(&format!("{name}.norm1"), *inp));
                shapes.extend(conv_shapes(&format!("{name}.conv1"), *inp, *out, 3));
                shapes.extend(norm_shapes(&format!("{name}.norm2"), *out));
                shapes.extend(conv_shapes(&format!("{name}.conv2"), *out, *out, 3));
                if inp != out {
                    shapes.extend(conv_shapes(&format!("{name}.nin_shortcut"), *inp, *out, 1));
                }
            }
            Step::Attn { name, ch } => {
                shapes.extend(norm_shapes(&format!("{name}.norm"), *ch));
                for proj in ["q", "k", "v", "proj_out"] {
                    shapes.extend(conv_shapes(&format!("{name}.{proj}"), *ch, *ch, 1));
                }
            }
            Step::Upsample { name, ch } => shapes.extend(conv_shapes(&format!("{name}.conv"), *ch, *ch, 3)),
            Step::NormSwish { name, ch } => shapes.extend(norm_shapes(name, *ch)),
        }
    }
    shapes
}
