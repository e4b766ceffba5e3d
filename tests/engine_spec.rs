//! End-to-end proof that lossless speculative decoding in the engine (drafting, tree-masked
//! verification on the paged KV cache, rollback, CFG) samples exactly the target's distribution:
//! the joint law of the first three image tokens is computed exactly by enumeration with the
//! target model and compared with engine samples by a chi-square test. The samples are drawn in
//! batches of 1000 images through the device-resident batched loop (drafts, logits processing
//! and acceptance as backend ops, ragged acceptance per image).

mod common;

use spire::backend::CpuBackend;
use spire::engine::random_tiny::{tiny_config, write_random_model};
use spire::engine::{BackendEngine, Request};
use spire::model::{StepRow, TokenInput};
use spire::sampling::SamplingParams;
use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use spire::weights::ModelConfig;

const VOCAB: usize = 6;

/// A tiny model with a 6-token vocabulary and a 2x2 token grid (4 tokens per image).
fn small_vocab_engine(tag: &str) -> BackendEngine {
    let mut config: ModelConfig = tiny_config();
    config.gpt.vocab_size = VOCAB;
    config.gpt.block_size = 4;
    let draft = config.draft.as_mut().unwrap();
    draft.vocab_size = VOCAB;
    draft.block_size = 4;
    config.vq = None;
    let dir = common::temp_dir(tag);
    write_random_model(&dir, &config, 3).unwrap();
    BackendEngine::load(&dir).unwrap()
}

/// Exact joint distribution of the first three tokens under the target with `params`.
fn exact_joint(engine: &BackendEngine, class: u32, params: &SamplingParams) -> Vec<f64> {
    let be = CpuBackend;
    let gpt = engine.target();
    let dist = |prefix: &[u32]| -> Vec<f32> {
        let mut cache = gpt.new_cache(&be, 8, 16).unwrap();
        let seqs: Vec<_> = [class, gpt.config().num_classes as u32].iter().map(|_| cache.add_sequence()).collect();
        let mut rows = Vec::new();
        for (s, &c) in seqs.iter().zip(&[class, gpt.config().num_classes as u32]) {
            let inputs = std::iter::once(TokenInput::Class(c)).chain(prefix.iter().map(|&t| TokenInput::Image(t)));
            rows.extend(inputs.enumerate().map(|(p, t)| StepRow::causal(*s, t, p)));
        }
        let out = gpt.forward(&be, &mut cache, &rows).unwrap();
        let n = prefix.len() + 1;
        params.distribution(out.logits_row(n - 1), Some(out.logits_row(2 * n - 1)), "exact").unwrap()
    };
    let mut joint = vec![0f64; VOCAB * VOCAB * VOCAB];
    let p0 = dist(&[]);
    for a in 0..VOCAB {
        let p1 = dist(&[a as u32]);
        for b in 0..VOCAB {
            let p2 = dist(&[a as u32, b as u32]);
            for c in 0..VOCAB {
                joint[(a * VOCAB + b) * VOCAB + c] = p0[a] as f64 * p1[b] as f64 * p2[c] as f64;
            }
        }
    }
    joint
}

fn check_lossless(tag: &str, spec: SpecConfig, params: SamplingParams, samples: u64) {
    let engine = small_vocab_engine(tag);
    let class = 2;
    let exact = exact_joint(&engine, class, &params);
    let mut counts = vec![0u64; exact.len()];
    let mut accepted = 0;
    let requests: Vec<Request> = (0..samples).map(|seed| Request { class_id: class, seed, sampling: params, speculative: Some(spec.clone()), ..Request::new(0, 0) }).collect();
    for batch in requests.chunks(1000) {
        for g in engine.generate_tokens_batch(batch, &mut |_, _| {}).unwrap() {
            let t = &g.tokens;
            counts[(t[0] as usize * VOCAB + t[1] as usize) * VOCAB + t[2] as usize] += 1;
            accepted += g.stats.accepted;
        }
    }
    println!("{tag}: {accepted} draft tokens accepted");
    assert!(accepted > 0, "{tag}: no draft was ever accepted, the test would prove nothing");
    assert!(common::stats::passes_chi_square(tag, &counts, &exact), "{tag}: engine output deviates from the target distribution");
}

#[test]
fn vanilla_chain_with_draft_model_and_cfg_is_lossless() {
    let spec = SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 2);
    check_lossless("chain-model-cfg", spec, SamplingParams { cfg_scale: 2.0, ..Default::default() }, 40_000);
}

#[test]
fn vanilla_tree_with_draft_model_is_lossless() {
    let spec = SpecConfig { rule: RuleConfig::Vanilla, drafter: DrafterChoice::Model, widths: vec![2, 2] };
    check_lossless("tree-model", spec, SamplingParams::default(), 40_000);
}

#[test]
fn vanilla_tree_with_draft_head_and_cfg_is_lossless() {
    let spec = SpecConfig { rule: RuleConfig::Vanilla, drafter: DrafterChoice::Head, widths: vec![3, 1] };
    check_lossless("tree-head-cfg", spec, SamplingParams { cfg_scale: 2.0, ..Default::default() }, 40_000);
}
