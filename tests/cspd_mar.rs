//! CSpD on the tiny random MAR of tests/data/mar_tiny (target and a smaller random `draft`
//! section): self-speculation (the target as its own draft) accepts every token with a
//! log-ratio of exactly 0 and reproduces plain MAR bit for bit; the official code's window
//! conditions the target on the verified prefix only; with the random draft the counts add up.
//! Random weights: acceptance between the two models means nothing here (spec §5, U5).

mod common;

use std::path::{Path, PathBuf};

use spire::backend::CpuBackend;
use spire::decode::cspd::{CspdOptions, CspdOutput, FinalStep, VerifyMode, WindowCfg};
use spire::decode::mar::{CfgSchedule, MarSampling};
use spire::engine::{MarDraft, MarEngine, MarRequest};
use spire::error::Error;
use spire::model::mar::{MarBatchInput, MarInput, MarModel, MarQuery};
use spire::weights::{DirConfig, WeightFile};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mar_tiny")
}

/// Class 3, guided with the linear schedule, one token per step (CSpD's setting).
fn request(seed: u64) -> MarRequest {
    MarRequest { class: 3, seed, sampling: MarSampling { num_iter: 16, cfg: 2.5, cfg_schedule: CfgSchedule::Linear, temperature: 0.9 } }
}

fn self_speculate(engine: &MarEngine, request: &MarRequest, options: &CspdOptions) -> CspdOutput {
    engine.generate_tokens_cspd(request, options, MarDraft::Target).unwrap()
}

#[test]
fn a_pass_over_several_masks_equals_separate_passes_bit_for_bit() {
    let DirConfig::Mar(config) = DirConfig::load(&data_dir()).unwrap() else { panic!("mar_tiny is a MAR directory") };
    let file = std::sync::Arc::new(WeightFile::open(&data_dir().join(&config.mar.file)).unwrap());
    let model = MarModel::load(&CpuBackend, &file, &config.mar).unwrap();
    let tokens: Vec<f32> = (0..16 * 6).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3).collect();
    let masks: Vec<Vec<bool>> = [3, 9, 15].iter().map(|&hidden| (0..16).map(|p| p < hidden).collect()).collect();
    let positions: [&[usize]; 3] = [&[0, 2], &[8], &[1, 14, 3]];
    let classes = [Some(3), None];
    let queries: Vec<MarQuery> = masks.iter().zip(positions).map(|(mask, positions)| MarQuery { mask, positions }).collect();
    let batched = model.batch_conditions(&CpuBackend, &[MarBatchInput { tokens: &tokens, classes: &classes, queries: &queries }]).unwrap();
    let width = config.mar.decoder_embed_dim;
    let mut row = 0;
    for class in classes {
        for query in &queries {
            let alone = model.conditions(&CpuBackend, &MarInput { tokens: &tokens, mask: query.mask, classes: &[class], positions: query.positions }).unwrap();
            assert_eq!(batched[row * width..(row + query.positions.len()) * width], alone[..], "class {class:?}, positions {:?}", query.positions);
            row += query.positions.len();
        }
    }
}

#[test]
fn self_speculation_accepts_every_token_and_reproduces_plain_mar() {
    let engine = MarEngine::load(data_dir()).unwrap();
    for sampling in [request(7).sampling, MarSampling { num_iter: 6, cfg: 1.0, ..request(7).sampling }] {
        let request = MarRequest { sampling, ..request(7) };
        let plain = engine.generate_tokens(&request).unwrap();
        for (verify, gamma) in [(VerifyMode::LeviathanRollback, 1), (VerifyMode::LeviathanRollback, 3), (VerifyMode::LeviathanRollback, 16), (VerifyMode::MarWindow, 1)] {
            let options = CspdOptions { verify, gamma, final_step: FinalStep::Deterministic, ..CspdOptions::default() };
            let out = self_speculate(&engine, &request, &options);
            let label = format!("{} gamma {gamma}, {} steps", verify.name(), sampling.num_iter);
            assert!(!out.verdicts.is_empty() && out.verdicts.iter().all(|v| v.log_ratio == 0.0 && v.accepted), "{label}: {:?}", out.verdicts);
            assert_eq!((out.stats.accepted, out.stats.resampled, out.stats.discarded), (out.stats.verified, 0, 0), "{label}");
            assert_eq!(out.tokens, plain, "{label}: self-speculation changed the tokens");
            // The stochastic final step: the same tokens as the target alone with that step.
            let stochastic = CspdOptions { final_step: FinalStep::Stochastic, ..options };
            let target_alone = self_speculate(&engine, &request, &CspdOptions { prefill_ratio: 1.0, ..stochastic });
            assert_eq!(target_alone.stats.target_forwards, sampling.num_iter, "{label}");
            assert_eq!(self_speculate(&engine, &request, &stochastic).tokens, target_alone.tokens, "{label}, stochastic final step");
        }
    }
}

#[test]
fn the_code_window_shows_the_target_only_the_verified_prefix() {
    // Self-speculation with gamma 4: the first position of a window is predicted from what the
    // draft saw (log-ratio 0); the later ones are not (the draft saw the earlier drafts).
    let engine = MarEngine::load(data_dir()).unwrap();
    let options = CspdOptions { verify: VerifyMode::MarWindow, gamma: 4, final_step: FinalStep::Deterministic, window_cfg: WindowCfg::PerPosition, ..CspdOptions::default() };
    let out = self_speculate(&engine, &request(9), &options);
    // One pre-fill step, then 15 one-token steps: windows of 4, 4, 4 and 3.
    assert_eq!((out.stats.prefill_steps, out.stats.windows, out.stats.target_forwards, out.stats.draft_forwards), (1, 4, 5, 15));
    for window in out.verdicts.chunks(4) {
        assert_eq!(window[0].log_ratio, 0.0, "the first position of a window: {window:?}");
        assert!(window[1..].iter().all(|v| v.log_ratio != 0.0), "later positions see less than the draft did: {window:?}");
    }
}

#[test]
fn with_the_random_draft_every_drafted_token_is_accounted_for() {
    let engine = MarEngine::load(data_dir()).unwrap();
    assert!(engine.has_draft());
    for options in [CspdOptions { gamma: 4, ..CspdOptions::default() }, CspdOptions::official_code(), CspdOptions { gamma: 3, window_cfg: WindowCfg::LastStep, ..CspdOptions::default() }] {
        let out = engine.generate_tokens_cspd(&request(5), &options, MarDraft::Section).unwrap();
        let s = out.stats;
        println!("{options:?}: {s:?}, acceptance {:.3} (random weights: meaningless)", s.acceptance_rate());
        assert!(out.tokens.iter().all(|t| t.is_finite()));
        assert_eq!(s.tokens, 16);
        assert_eq!((s.verified, s.verified), (s.accepted + s.resampled, out.verdicts.len()));
        assert_eq!(s.target_forwards, s.prefill_steps + s.windows);
        // One token per step: every draft step is verified or discarded, every token comes from
        // a pre-fill step, a verified draft or a bonus step.
        assert_eq!(s.draft_forwards, s.verified + s.discarded);
        assert_eq!(s.prefill_steps + s.verified + s.bonus, 16);
        assert!(s.resample_trials >= s.resampled);
        assert_eq!(engine.generate_tokens_cspd(&request(5), &options, MarDraft::Section).unwrap(), out, "the same seed gave another generation");
        if options.verify == VerifyMode::MarWindow {
            assert_eq!((s.windows, s.discarded, s.bonus), (15usize.div_ceil(options.gamma), 0, 0));
        }
    }
    let image = engine.decode(&engine.generate_tokens_cspd(&request(5), &CspdOptions::default(), MarDraft::Section).unwrap().tokens).unwrap();
    assert_eq!((image.width, image.height), (16, 16));
}

#[test]
fn cspd_errors_name_the_problem() {
    let engine = MarEngine::load(data_dir()).unwrap();
    let err = |result: spire::Result<CspdOutput>| match result.unwrap_err() {
        Error::InvalidRequest(message) => message,
        other => panic!("expected an invalid request, got {other}"),
    };
    assert!(err(engine.generate_tokens_cspd(&request(1), &CspdOptions { gamma: 0, ..CspdOptions::default() }, MarDraft::Section)).contains("gamma"));
    let bad_steps = MarRequest { sampling: MarSampling { num_iter: 17, ..request(1).sampling }, ..request(1) };
    assert!(err(engine.generate_tokens_cspd(&bad_steps, &CspdOptions::default(), MarDraft::Section)).contains("num_iter 17"));

    // A directory without a draft section: self-speculation still works.
    let dir = common::temp_dir("mar-no-draft");
    for file in ["mar.safetensors", "vae.safetensors"] {
        std::fs::copy(data_dir().join(file), dir.join(file)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data_dir().join("config.json")).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("draft");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let engine = MarEngine::load(&dir).unwrap();
    assert!(!engine.has_draft());
    assert!(err(engine.generate_tokens_cspd(&request(1), &CspdOptions::default(), MarDraft::Section)).contains("no \"draft\" section"));
    engine.generate_tokens_cspd(&request(1), &CspdOptions::default(), MarDraft::Target).unwrap();
}

#[test]
fn a_batch_gives_every_image_the_tokens_it_gets_alone() {
    // Four classes and seeds in one batch: plain MAR, and CSpD with the random draft (whose
    // rejections put the images out of step) in both semantics.
    let engine = MarEngine::load(data_dir()).unwrap();
    let requests: Vec<MarRequest> = [(3, 5), (0, 6), (7, 7), (3, 8)].iter().map(|&(class, seed)| MarRequest { class, ..request(seed) }).collect();
    let plain = engine.generate_tokens_batch(&requests).unwrap();
    for (request, tokens) in requests.iter().zip(&plain) {
        assert_eq!(&engine.generate_tokens(request).unwrap(), tokens, "plain MAR, {request:?}");
    }
    for options in [CspdOptions { gamma: 3, ..CspdOptions::default() }, CspdOptions::official_code()] {
        let batch = engine.generate_tokens_cspd_batch(&requests, &options, MarDraft::Section).unwrap();
        for (request, out) in requests.iter().zip(&batch) {
            assert_eq!(&engine.generate_tokens_cspd(request, &options, MarDraft::Section).unwrap(), out, "{options:?}, {request:?}");
        }
    }
    let mixed = [requests[0], MarRequest { sampling: MarSampling { cfg: 1.0, ..requests[1].sampling }, ..requests[1] }];
    assert!(engine.generate_tokens_batch(&mixed).unwrap_err().to_string().contains("share their sampling settings"));
    assert!(engine.generate_tokens_batch(&[]).unwrap_err().to_string().contains("at least one request"));
}
