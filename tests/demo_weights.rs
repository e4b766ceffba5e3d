//! The shipped demo model (weights/demo) loads, and the engine reproduces the logits and pixels
//! the training code recorded at export time (weights/demo/golden.json).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use spire::backend::CpuBackend;
use spire::model::{head_row, DraftHead, Gpt, StepRow, TokenInput};
use spire::weights::{ModelConfig, WeightFile};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo");

#[derive(Deserialize)]
struct Golden {
    class: u32,
    tokens: Vec<u32>,
    prefix_len: usize,
    gpt_logits_cond: Vec<Vec<f32>>,
    gpt_logits_null: Vec<Vec<f32>>,
    draft_logits_cond: Vec<Vec<f32>>,
    draft_head_logits_cond: Vec<Vec<f32>>,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(Path::new(DIR).join("golden.json")).expect("weights/demo/golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let err = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err < 1e-3, "{what}: max relative error {err}");
}

fn load_gpt(config: &spire::weights::GptConfig) -> Gpt<CpuBackend> {
    let file = Arc::new(WeightFile::open(&Path::new(DIR).join(&config.file)).unwrap());
    Gpt::load(&CpuBackend, &file, config).unwrap()
}

/// Logits and pre-norm features of `gpt` over [class, tokens[..prefix_len]].
fn run(gpt: &Gpt<CpuBackend>, class: u32, g: &Golden) -> spire::model::StepOutput {
    let mut cache = gpt.new_cache(&CpuBackend, 4, 16).unwrap();
    let seq = cache.add_sequence();
    let inputs = std::iter::once(TokenInput::Class(class)).chain(g.tokens[..g.prefix_len].iter().map(|&t| TokenInput::Image(t)));
    let rows: Vec<StepRow> = inputs.enumerate().map(|(p, t)| StepRow::causal(seq, t, p)).collect();
    gpt.forward(&CpuBackend, &mut cache, &rows).unwrap()
}

#[test]
fn target_draft_and_head_reproduce_export_time_logits() {
    let config = ModelConfig::load(Path::new(DIR)).unwrap();
    let g = golden();
    let target = load_gpt(&config.gpt);
    let cond = run(&target, g.class, &g);
    for (p, want) in g.gpt_logits_cond.iter().enumerate() {
        assert_close(cond.logits_row(p), want, &format!("target cond position {p}"));
    }
    let null = run(&target, config.gpt.num_classes as u32, &g);
    for (p, want) in g.gpt_logits_null.iter().enumerate() {
        assert_close(null.logits_row(p), want, &format!("target null position {p}"));
    }
    let draft = load_gpt(config.draft.as_ref().unwrap());
    let draft_out = run(&draft, g.class, &g);
    for (p, want) in g.draft_logits_cond.iter().enumerate() {
        assert_close(draft_out.logits_row(p), want, &format!("draft position {p}"));
    }
    // Draft head, teacher-forced: position k reads token tokens[k-1] and the target feature at k-1.
    let head_config = config.draft_head.as_ref().unwrap();
    let file = Arc::new(WeightFile::open(&Path::new(DIR).join(&head_config.file)).unwrap());
    let head = DraftHead::load(&CpuBackend, &file, &config.gpt, head_config).unwrap();
    let mut cache = head.new_cache(&CpuBackend, 4, 16).unwrap();
    let seq = cache.add_sequence();
    let rows: Vec<StepRow> = (1..=g.prefix_len).map(|k| head_row(StepRow::causal(seq, TokenInput::Image(g.tokens[k - 1]), k))).collect();
    let features: Vec<f32> = (0..g.prefix_len).flat_map(|k| cond.hidden_row(k).to_vec()).collect();
    let out = head.forward(&CpuBackend, &target, &mut cache, &rows, &features).unwrap();
    for (r, want) in g.draft_head_logits_cond.iter().enumerate() {
        assert_close(out.logits_row(r), want, &format!("draft head position {}", r + 1));
    }
}
