//! `config.json`: the architecture of every model in a weights directory (format in
//! docs/ARCHITECTURE.md). Field names follow LlamaGen's `ModelArgs`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::weights::DirConfig;

fn default_cls_token_num() -> usize {
    1
}
fn default_rope_base() -> f64 {
    10000.0
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_multiple_of() -> usize {
    256
}
fn default_out_channels() -> usize {
    3
}
fn default_norm_groups() -> usize {
    32
}

/// A LlamaGen class-conditional GPT (target or independent draft model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Safetensors file, relative to the weights directory.
    pub file: String,
    /// Model width.
    pub dim: usize,
    /// Number of decoder layers.
    pub n_layer: usize,
    /// Number of attention heads.
    pub n_head: usize,
    /// Number of image tokens in the codebook.
    pub vocab_size: usize,
    /// Number of classes (the class table has one more row: the CFG null class).
    pub num_classes: usize,
    /// Class prefix tokens (1 for class-conditional LlamaGen).
    #[serde(default = "default_cls_token_num")]
    pub cls_token_num: usize,
    /// Image tokens per image (a square grid).
    pub block_size: usize,
    /// RoPE base.
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// FFN hidden size is rounded up to a multiple of this.
    #[serde(default = "default_multiple_of")]
    pub multiple_of: usize,
    /// Optional FFN width multiplier.
    #[serde(default)]
    pub ffn_dim_multiplier: Option<f64>,
}

/// Official LlamaGen model sizes: (name, layers, heads, dim).
pub const GPT_PRESETS: [(&str, usize, usize, usize); 5] = [
    ("GPT-B", 12, 12, 768),
    ("GPT-L", 24, 16, 1024),
    ("GPT-XL", 36, 20, 1280),
    ("GPT-XXL", 48, 24, 1536),
    ("GPT-3B", 24, 32, 3200),
];

/// LlamaGen's `find_multiple`: `n` rounded up to a multiple of `k`.
pub fn find_multiple(n: usize, k: usize) -> usize {
    n.div_ceil(k) * k
}

fn ffn_hidden(dim: usize, multiple_of: usize, multiplier: Option<f64>) -> usize {
    let mut hidden = 2 * 4 * dim / 3;
    if let Some(m) = multiplier {
        hidden = (m * hidden as f64) as usize;
    }
    find_multiple(hidden, multiple_of)
}

impl GptConfig {
    /// The official class-conditional configuration `name` (GPT-B, GPT-L, GPT-XL, GPT-XXL,
    /// GPT-3B) for `image_size` pixels with the VQ-16 tokenizer.
    pub fn preset(name: &str, image_size: usize) -> Option<Self> {
        let &(_, n_layer, n_head, dim) = GPT_PRESETS.iter().find(|p| p.0.eq_ignore_ascii_case(name))?;
        let grid = image_size / 16;
        Some(Self {
            file: "gpt.safetensors".into(),
            dim,
            n_layer,
            n_head,
            vocab_size: 16384,
            num_classes: 1000,
            cls_token_num: 1,
            block_size: grid * grid,
            rope_base: 10000.0,
            norm_eps: 1e-5,
            multiple_of: 256,
            ffn_dim_multiplier: None,
        })
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_head
    }

    /// SwiGLU hidden width, exactly as LlamaGen's `FeedForward` computes it.
    pub fn ffn_hidden(&self) -> usize {
        ffn_hidden(self.dim, self.multiple_of, self.ffn_dim_multiplier)
    }

    /// Side of the square token grid.
    pub fn grid_size(&self) -> usize {
        (self.block_size as f64).sqrt().round() as usize
    }

    /// Sequence length the model ever sees: class prefix plus image tokens.
    pub fn max_seq_len(&self) -> usize {
        self.cls_token_num + self.block_size
    }

    /// Check internal consistency; `what` names the section for the message.
    pub fn validate(&self, what: &str) -> std::result::Result<(), String> {
        let g = self.grid_size();
        if g * g != self.block_size {
            return Err(format!("{what}.block_size {} is not a square number", self.block_size));
        }
        if self.n_head == 0 || !self.dim.is_multiple_of(self.n_head) {
            return Err(format!("{what}.dim {} is not divisible by n_head {}", self.dim, self.n_head));
        }
        if !self.head_dim().is_multiple_of(4) {
            return Err(format!("{what}: head_dim {} must be a multiple of 4 for 2-D RoPE", self.head_dim()));
        }
        if self.cls_token_num != 1 {
            return Err(format!("{what}.cls_token_num must be 1 for class-conditional models"));
        }
        if self.vocab_size == 0 || self.num_classes == 0 || self.n_layer == 0 {
            return Err(format!("{what}: vocab_size, num_classes and n_layer must be positive"));
        }
        Ok(())
    }
}

/// The EAGLE/LANTERN-style draft head (one decoder layer on top of the target's features).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DraftHeadConfig {
    /// Safetensors file, relative to the weights directory.
    pub file: String,
    /// Attention heads of the head's decoder layer.
    pub n_head: usize,
    /// FFN rounding, as for the GPT.
    #[serde(default = "default_multiple_of")]
    pub multiple_of: usize,
    /// Optional FFN width multiplier.
    #[serde(default)]
    pub ffn_dim_multiplier: Option<f64>,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
}

impl DraftHeadConfig {
    /// SwiGLU hidden width for a head on a target of width `dim`.
    pub fn ffn_hidden(&self, dim: usize) -> usize {
        ffn_hidden(dim, self.multiple_of, self.ffn_dim_multiplier)
    }
}

/// The VQ tokenizer's decoder half (LlamaGen `VQModel` structure, config-driven widths).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqConfig {
    /// Safetensors file, relative to the weights directory.
    pub file: String,
    /// Codebook entries (equals the GPT vocabulary).
    pub codebook_size: usize,
    /// Width of a codebook vector.
    pub codebook_embed_dim: usize,
    /// Whether codebook vectors are l2-normalised before use.
    pub codebook_l2_norm: bool,
    /// Channels after `post_quant_conv`.
    pub z_channels: usize,
    /// Base channel count.
    pub ch: usize,
    /// Channel multipliers per resolution (LlamaGen `decoder_ch_mult`).
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per encoder stage (the decoder uses one more).
    pub num_res_blocks: usize,
    /// Output image channels.
    #[serde(default = "default_out_channels")]
    pub out_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "default_norm_groups")]
    pub norm_groups: usize,
}

/// Everything `config.json` describes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The target GPT.
    pub gpt: GptConfig,
    /// An independent small AR draft model, if shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<GptConfig>,
    /// An EAGLE/LANTERN-style draft head, if shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_head: Option<DraftHeadConfig>,
    /// The VQ decoder, if shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vq: Option<VqConfig>,
}

impl ModelConfig {
    /// Path of `config.json` inside `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("config.json")
    }

    /// Read and validate `dir/config.json` of a LlamaGen directory (a MAR directory is an
    /// error that says so: see [`DirConfig`]).
    pub fn load(dir: &Path) -> Result<Self> {
        match DirConfig::load(dir)? {
            DirConfig::LlamaGen(config) => Ok(config),
            DirConfig::Mar(_) => Err(Error::Config {
                path: Self::path_in(dir),
                reason: "this is a MAR directory (\"family\": \"mar\"), not a LlamaGen one; load it with spire::engine::MarEngine".into(),
            }),
        }
    }

    /// Check every section and the agreement between them.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.gpt.validate("gpt")?;
        if let Some(draft) = &self.draft {
            draft.validate("draft")?;
            if draft.vocab_size != self.gpt.vocab_size || draft.block_size != self.gpt.block_size || draft.num_classes != self.gpt.num_classes {
                return Err("draft.vocab_size, draft.block_size and draft.num_classes must equal the gpt's".into());
            }
        }
        if let Some(head) = &self.draft_head {
            if head.n_head == 0 || !self.gpt.dim.is_multiple_of(head.n_head) {
                return Err(format!("draft_head.n_head {} does not divide gpt.dim {}", head.n_head, self.gpt.dim));
            }
        }
        if let Some(vq) = &self.vq {
            if vq.codebook_size != self.gpt.vocab_size {
                return Err(format!(
                    "vq.codebook_size {} differs from gpt.vocab_size {}",
                    vq.codebook_size, self.gpt.vocab_size
                ));
            }
            if vq.ch_mult.is_empty() {
                return Err("vq.ch_mult must not be empty".into());
            }
        }
        Ok(())
    }

    /// Write this configuration as `dir/config.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path_in(dir);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Config { path: path.clone(), reason: e.to_string() })?;
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
    }
}
