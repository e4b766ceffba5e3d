//! A tiny model with random weights (target, draft model, draft head, VQ decoder) for smoke
//! tests and `spire generate --random-tiny`. Its images are noise: it proves the plumbing only.

use std::path::Path;

use crate::error::Result;
use crate::model::vq::vq_tensor_shapes;
use crate::model::{draft_head_tensor_shapes, gpt_tensor_shapes};
use crate::weights::synthetic::{random_tensors, write_safetensors};
use crate::weights::{DType, DraftHeadConfig, GptConfig, ModelConfig, VqConfig};

/// The tiny configuration: 4x4 token grid, vocab 64, 5 classes, 2-layer target, 1-layer draft.
pub fn tiny_config() -> ModelConfig {
    let gpt = GptConfig {
        file: "gpt.safetensors".into(),
        dim: 32,
        n_layer: 2,
        n_head: 4,
        vocab_size: 64,
        num_classes: 5,
        cls_token_num: 1,
        block_size: 16,
        rope_base: 10000.0,
        norm_eps: 1e-5,
        multiple_of: 32,
        ffn_dim_multiplier: None,
    };
    let draft = GptConfig { file: "draft.safetensors".into(), dim: 16, n_layer: 1, n_head: 2, ..gpt.clone() };
    ModelConfig {
        draft: Some(draft),
        draft_head: Some(DraftHeadConfig { file: "draft_head.safetensors".into(), n_head: 4, multiple_of: 32, ffn_dim_multiplier: None, norm_eps: 1e-5 }),
        vq: Some(VqConfig {
            file: "vq.safetensors".into(),
            codebook_size: 64,
            codebook_embed_dim: 4,
            codebook_l2_norm: true,
            z_channels: 16,
            ch: 8,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            out_channels: 3,
            norm_groups: 4,
        }),
        gpt,
    }
}

/// Write `config.json` and random weights for every model of `config` into `dir`.
pub fn write_random_model(dir: &Path, config: &ModelConfig, seed: u64) -> Result<()> {
    let mut files = vec![(config.gpt.file.clone(), gpt_tensor_shapes(&config.gpt))];
    if let Some(draft) = &config.draft {
        files.push((draft.file.clone(), gpt_tensor_shapes(draft)));
    }
    if let Some(head) = &config.draft_head {
        files.push((head.file.clone(), draft_head_tensor_shapes(&config.gpt, head)));
    }
    if let Some(vq) = &config.vq {
        files.push((vq.file.clone(), vq_tensor_shapes(vq)));
    }
    for (i, (file, shapes)) in files.iter().enumerate() {
        write_safetensors(&dir.join(file), &random_tensors(shapes, seed + i as u64), DType::F32)?;
    }
    config.save(dir)
}
