//! The shipped continuous demo model (weights/demo-mar) loads, and spire reproduces what the
//! NumPy float64 reference computed on the stored float16 weights at export time
//! (weights/demo-mar/golden.safetensors, made by tools/train_mar/export_golden.py): the target's
//! and the draft's head conditions over a half-masked real latent, one guided head call, and the
//! VAE decode of that latent. It also generates with the README's settings: plain MAR's tokens
//! stay in the data's range and CSpD under the official code's rule accepts drafted tokens.

mod common;

use std::path::Path;
use std::sync::Arc;

use spire::backend::{Backend, CpuBackend};
use spire::decode::cspd::CspdOptions;
use spire::decode::mar::CfgSchedule;
use spire::engine::{MarDraft, MarEngine, MarRequest};
use spire::model::diffusion::DiffusionHead;
use spire::model::mar::{MarInput, MarModel};
use spire::model::vae::VaeDecoder;
use spire::weights::{DirConfig, MarConfig, MarDirConfig, WeightFile};

use common::golden::{check_close, Golden};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo-mar");
/// f32 against float64 on the same float16 weights (relative to each tensor's largest value;
/// measured: below 1e-6).
const TOL: f64 = 5e-6;

fn config() -> MarDirConfig {
    let DirConfig::Mar(config) = DirConfig::load(Path::new(DIR)).unwrap() else { panic!("weights/demo-mar is a MAR directory") };
    config
}

fn file(config: &MarConfig) -> Arc<WeightFile> {
    Arc::new(WeightFile::open(&Path::new(DIR).join(&config.file)).unwrap())
}

#[test]
fn target_draft_head_and_vae_reproduce_the_reference() {
    let (config, golden) = (config(), Golden::load(&Path::new(DIR).join("golden.safetensors")));
    let (tokens, mask, class) = (golden.f32("tokens"), golden.flags("mask"), golden.usize("class_id")[0]);
    let all: Vec<usize> = (0..config.mar.seq_len()).collect();
    let input = MarInput { tokens: &tokens, mask: &mask, classes: &[Some(class), None], positions: &all };
    let target = MarModel::load(&CpuBackend, &file(&config.mar), &config.mar).unwrap();
    let z = target.conditions(&CpuBackend, &input).unwrap();
    let half = z.len() / 2;
    check_close("z_cond", &z[..half], &golden.f32("z_cond"), TOL);
    check_close("z_uncond", &z[half..], &golden.f32("z_uncond"), TOL);

    let draft_config = config.draft.as_ref().unwrap();
    let draft = MarModel::load(&CpuBackend, &file(draft_config), draft_config).unwrap();
    let draft_z = draft.conditions(&CpuBackend, &MarInput { classes: &[Some(class)], ..input }).unwrap();
    check_close("draft_z_cond", &draft_z, &golden.f32("draft_z_cond"), TOL);

    // One guided head call on the reference's own conditions of positions 0..n.
    let head = DiffusionHead::load(&CpuBackend, &file(&config.mar), &config.mar).unwrap();
    let t: Vec<f64> = golden.usize("head_t").iter().map(|&t| t as f64).collect();
    let (n, dd) = (t.len(), config.mar.decoder_embed_dim);
    let (z_cond, z_uncond) = (golden.f32("z_cond"), golden.f32("z_uncond"));
    let z = CpuBackend.upload(&[&z_cond[..n * dd], &z_uncond[..n * dd]].concat()).unwrap();
    let cond = head.embed_conditions(&CpuBackend, &z, 2 * n).unwrap();
    let out = head.forward_guided(&CpuBackend, &golden.f32("head_x"), &t, &cond, Some(&vec![golden.scalar("head_cfg_scale"); n])).unwrap();
    check_close("head_out_cfg", &out.iter().map(|&v| v as f32).collect::<Vec<_>>(), &golden.f32("head_out_cfg"), TOL);

    let vae_config = config.vae.as_ref().unwrap();
    let vae = VaeDecoder::load(&WeightFile::open(&Path::new(DIR).join(&vae_config.file)).unwrap(), vae_config).unwrap();
    let pixels = vae.decode_pixels(&config.mar, &tokens).unwrap();
    assert_eq!((pixels.channels, pixels.height, pixels.width), (3, 32, 32));
    check_close("vae_pixels", &pixels.data, &golden.f32("vae_pixels"), TOL);
}

#[test]
fn the_demo_generates_an_image_with_cspd() {
    // Eight steps instead of 64 (seconds, not a sample worth looking at): the whole path runs.
    let engine = MarEngine::load(DIR).unwrap();
    let mut request = MarRequest::new(7, 1);
    request.sampling.num_iter = 8;
    request.sampling.cfg = 3.0;
    let out = engine.generate_tokens_cspd(&request, &Default::default(), MarDraft::Section).unwrap();
    assert!(out.stats.verified > 0 && out.tokens.iter().all(|t| t.is_finite()), "{:?}", out.stats);
    let image = engine.decode(&out.tokens).unwrap();
    assert_eq!((image.width, image.height), (32, 32));
}

/// The README's sampling settings: 64 steps, constant guidance 3, temperature 0.7.
fn readme_request(class: usize, seed: u64) -> MarRequest {
    let mut request = MarRequest::new(class, seed);
    request.sampling.cfg = 3.0;
    request.sampling.cfg_schedule = CfgSchedule::Constant;
    request.sampling.temperature = 0.7;
    request
}

#[test]
fn the_demo_samples_tokens_in_the_datas_range_and_the_code_rule_accepts_drafts() {
    // The scaled latents have unit variance. A head whose epsilon at t = 999 is off by a few
    // hundredths sends every token hundreds of units away (the demo before its head was polished:
    // RMS 424 to 880, and no drafted token ever accepted), weights/demo-mar/README.md.
    let engine = MarEngine::load(DIR).unwrap();
    let request = readme_request(7, 0);
    let tokens = engine.generate_tokens(&request).unwrap();
    let rms = (tokens.iter().map(|t| (*t as f64).powi(2)).sum::<f64>() / tokens.len() as f64).sqrt();
    assert!((0.3..3.0).contains(&rms), "plain MAR token RMS {rms}, the data's is 1");
    let options = CspdOptions { gamma: 8, ..CspdOptions::official_code() };
    let out = engine.generate_tokens_cspd(&request, &options, MarDraft::Section).unwrap();
    assert!(out.stats.accepted > 0, "no drafted token accepted under the official code's rule: {:?}", out.stats);
}
