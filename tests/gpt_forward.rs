//! The GPT forward pass on the CPU backend: KV-cached decoding equals full recomputation,
//! tree-masked verification equals per-path causal passes, and bad input gives clear errors.

mod common;

use std::sync::Arc;

use spire::backend::CpuBackend;
use spire::kv::QueryVisibility;
use spire::model::{Gpt, StepRow, TokenInput};
use spire::weights::{DType, WeightFile};
use spire::Error;

fn load_tiny(dtype: DType, seed: u64) -> Gpt<CpuBackend> {
    let dir = common::temp_dir("gpt");
    let config = common::tiny_gpt_config();
    let path = common::write_gpt(&dir, &config, dtype, seed, None);
    let file = Arc::new(WeightFile::open(&path).unwrap());
    Gpt::load(&CpuBackend, &file, &config).unwrap()
}

fn inputs(class: u32, tokens: &[u32]) -> Vec<TokenInput> {
    std::iter::once(TokenInput::Class(class)).chain(tokens.iter().map(|&t| TokenInput::Image(t))).collect()
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn kv_cached_decoding_equals_full_recomputation() {
    let be = CpuBackend;
    let gpt = load_tiny(DType::F32, 1);
    let tokens = [3u32, 7, 1, 40, 22, 9, 9, 0, 47, 5, 13, 2, 8, 30, 31];
    let seq_inputs = inputs(2, &tokens);

    let mut full_cache = gpt.new_cache(&be, 8, 4).unwrap();
    let seq = full_cache.add_sequence();
    let rows: Vec<StepRow> = seq_inputs.iter().enumerate().map(|(p, &t)| StepRow::causal(seq, t, p)).collect();
    let full = gpt.forward(&be, &mut full_cache, &rows).unwrap();

    let mut cache = gpt.new_cache(&be, 8, 4).unwrap();
    let seq = cache.add_sequence();
    for (p, &t) in seq_inputs.iter().enumerate() {
        let step = gpt.forward(&be, &mut cache, &[StepRow::causal(seq, t, p)]).unwrap();
        let err = max_rel_err(step.logits_row(0), full.logits_row(p));
        assert!(err < 1e-5, "position {p}: relative error {err}");
    }
}

#[test]
fn batched_sequences_do_not_interfere() {
    let be = CpuBackend;
    let gpt = load_tiny(DType::F32, 2);
    let mut cache = gpt.new_cache(&be, 8, 4).unwrap();
    let (a, b) = (cache.add_sequence(), cache.add_sequence());
    let batch = gpt
        .forward(&be, &mut cache, &[StepRow::causal(a, TokenInput::Class(1), 0), StepRow::causal(b, TokenInput::Class(4), 0)])
        .unwrap();
    let mut solo_cache = gpt.new_cache(&be, 8, 4).unwrap();
    let s = solo_cache.add_sequence();
    let solo = gpt.forward(&be, &mut solo_cache, &[StepRow::causal(s, TokenInput::Class(4), 0)]).unwrap();
    assert!(max_rel_err(batch.logits_row(1), solo.logits_row(0)) < 1e-6);
}

/// A tree of 4 nodes after a 3-token prefix: 0 -> {1, 2}, 1 -> {3}. Each node's logits must equal
/// the logits of a plain causal pass along its root path.
#[test]
fn tree_masked_verification_equals_causal_paths() {
    let be = CpuBackend;
    let gpt = load_tiny(DType::F32, 3);
    let prefix = inputs(0, &[5, 6]);
    let nodes = [(11u32, None), (12, Some(0)), (13, Some(0)), (14, Some(1))];
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(p) = nodes[i].1 {
            i = p;
            d += 1;
        }
        d
    };

    let mut cache = gpt.new_cache(&be, 8, 4).unwrap();
    let seq = cache.add_sequence();
    let rows: Vec<StepRow> = prefix.iter().enumerate().map(|(p, &t)| StepRow::causal(seq, t, p)).collect();
    gpt.forward(&be, &mut cache, &rows).unwrap();
    let base = prefix.len();
    let tree_rows: Vec<StepRow> = (0..nodes.len())
        .map(|i| {
            let mut window = vec![false; nodes.len()];
            let mut j = Some(i);
            while let Some(k) = j {
                window[k] = true;
                j = nodes[k].1;
            }
            StepRow {
                input: TokenInput::Image(nodes[i].0),
                position: base + depth(i),
                kv_pos: base + i,
                visibility: QueryVisibility { seq, prefix: base, window_start: base, window },
            }
        })
        .collect();
    let tree = gpt.forward(&be, &mut cache, &tree_rows).unwrap();

    for (i, node) in nodes.iter().enumerate() {
        let mut path = vec![node.0];
        let mut j = node.1;
        while let Some(k) = j {
            path.insert(0, nodes[k].0);
            j = nodes[k].1;
        }
        let mut c = gpt.new_cache(&be, 8, 4).unwrap();
        let s = c.add_sequence();
        let all = inputs(0, &[5, 6]).into_iter().chain(path.iter().map(|&t| TokenInput::Image(t)));
        let rows: Vec<StepRow> = all.enumerate().map(|(p, t)| StepRow::causal(s, t, p)).collect();
        let out = gpt.forward(&be, &mut c, &rows).unwrap();
        let err = max_rel_err(tree.logits_row(i), out.logits_row(rows.len() - 1));
        assert!(err < 1e-5, "node {i}: relative error {err}");
    }
}

#[test]
fn half_precision_weights_load_and_agree_with_f32() {
    let be = CpuBackend;
    let (f32_model, f16_model) = (load_tiny(DType::F32, 4), load_tiny(DType::F16, 4));
    let run = |gpt: &Gpt<CpuBackend>| {
        let mut cache = gpt.new_cache(&be, 8, 4).unwrap();
        let seq = cache.add_sequence();
        let rows: Vec<StepRow> = inputs(3, &[1, 2, 3]).into_iter().enumerate().map(|(p, t)| StepRow::causal(seq, t, p)).collect();
        gpt.forward(&be, &mut cache, &rows).unwrap().logits
    };
    assert!(max_rel_err(&run(&f16_model), &run(&f32_model)) < 2e-2);
}

#[test]
fn class_id_out_of_range_is_a_clear_error() {
    let be = CpuBackend;
    let gpt = load_tiny(DType::F32, 5);
    let mut cache = gpt.new_cache(&be, 8, 4).unwrap();
    let seq = cache.add_sequence();
    let err = gpt.forward(&be, &mut cache, &[StepRow::causal(seq, TokenInput::Class(6), 0)]).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)));
    assert!(err.to_string().contains("class id 6 out of range"), "{err}");
}

#[test]
fn kv_cache_exhaustion_is_an_error_not_a_panic() {
    let be = CpuBackend;
    let gpt = load_tiny(DType::F32, 6);
    let mut cache = gpt.new_cache(&be, 2, 4).unwrap();
    let seq = cache.add_sequence();
    let rows: Vec<StepRow> = inputs(0, &[1, 2, 3, 4, 5, 6, 7, 8]).into_iter().enumerate().map(|(p, t)| StepRow::causal(seq, t, p)).collect();
    let err = gpt.forward(&be, &mut cache, &rows).unwrap_err();
    assert!(matches!(err, Error::KvCacheExhausted { needed: 1, free: 0, total: 2 }), "{err}");
    assert!(err.to_string().contains("KV cache exhausted"));
}

#[test]
fn f32_weights_are_read_in_place_and_half_precision_is_converted() {
    use spire::backend::Backend;
    let config = common::tiny_gpt_config();
    for (dtype, zero_copy) in [(DType::F32, true), (DType::F16, false), (DType::BF16, false)] {
        let dir = common::temp_dir("zero-copy");
        let file = Arc::new(WeightFile::open(&common::write_gpt(&dir, &config, dtype, 7, None)).unwrap());
        let weight = CpuBackend.load_weight(&file, "output.weight", &[config.vocab_size, config.dim]).unwrap();
        assert_eq!(weight.is_zero_copy(), zero_copy, "{dtype:?}");
    }
}
