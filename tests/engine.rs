//! The library API end to end on a tiny random model: reproducible generation, request checks,
//! clear errors for a bad weights directory.

mod common;

use spire::engine::random_tiny::{tiny_config, write_random_model};
use spire::engine::{BackendEngine, Request};
use spire::Error;

fn tiny_engine(tag: &str) -> (std::path::PathBuf, BackendEngine) {
    let dir = common::temp_dir(tag);
    write_random_model(&dir, &tiny_config(), 11).unwrap();
    let engine = BackendEngine::load(&dir).unwrap();
    (dir, engine)
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let (_dir, engine) = tiny_engine("seed");
    let mut request = Request::new(1, 5);
    request.sampling.cfg_scale = 2.0;
    let a = engine.generate_tokens(&request, &mut |_, _| {}).unwrap();
    let b = engine.generate_tokens(&request, &mut |_, _| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens.len(), 16);
    assert_eq!(a.stats.target_forwards, 16);
    request.seed = 6;
    let c = engine.generate_tokens(&request, &mut |_, _| {}).unwrap();
    assert_ne!(a.tokens, c.tokens);
}

/// Requests reuse the engine's KV caches: each request takes the caches it needs and gives them
/// back cleared, so repeated requests allocate no new pool and give the same tokens as a fresh
/// engine.
#[test]
fn kv_caches_are_reused_across_requests_without_changing_results() {
    use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
    let (dir, engine) = tiny_engine("kv-reuse");
    let ar = Request::new(2, 9);
    let spec = Request { speculative: Some(SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 3)), ..Request::new(2, 9) };
    assert_eq!(engine.idle_kv_caches(), 0);
    let first = engine.generate_tokens(&ar, &mut |_, _| {}).unwrap();
    assert_eq!(engine.idle_kv_caches(), 1, "the AR request's target cache");
    let again = engine.generate_tokens(&ar, &mut |_, _| {}).unwrap();
    assert_eq!(engine.idle_kv_caches(), 1, "reused, not grown");
    assert_eq!(again.tokens, first.tokens);
    let spec_first = engine.generate_tokens(&spec, &mut |_, _| {}).unwrap();
    // The tiny model's speculative window fits the same number of blocks, so the target cache is
    // the AR request's, taken again; the draft model's is new.
    assert_eq!(engine.idle_kv_caches(), 2, "the target cache plus the draft model's");
    let spec_again = engine.generate_tokens(&spec, &mut |_, _| {}).unwrap();
    assert_eq!(engine.idle_kv_caches(), 2);
    let fresh = BackendEngine::load(&dir).unwrap().generate_tokens(&spec, &mut |_, _| {}).unwrap();
    assert_eq!((spec_again.tokens.clone(), spec_first.tokens), (fresh.tokens.clone(), fresh.tokens));
}

#[test]
fn class_out_of_range_is_rejected_with_the_valid_range() {
    let (_dir, engine) = tiny_engine("class");
    let err = engine.generate(&Request::new(5, 0)).err().unwrap();
    assert!(matches!(err, Error::InvalidRequest(_)));
    assert!(err.to_string().contains("class id 5 out of range"), "{err}");
}

#[test]
fn too_small_kv_cache_is_a_clear_error() {
    let (_dir, engine) = tiny_engine("kv");
    let engine = engine.with_kv_blocks(1);
    let mut request = Request::new(0, 0);
    request.sampling.cfg_scale = 2.0;
    let err = engine.generate_tokens(&request, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::KvCacheExhausted { .. }), "{err}");
}

#[test]
fn missing_tensor_wrong_shape_truncated_file_and_bad_config_name_the_problem() {
    let (dir, _) = tiny_engine("bad");
    let config = tiny_config();
    // Missing tensor.
    common::write_gpt(&dir, &config.gpt, spire::weights::DType::F32, 1, Some("layers.1.attention.wo.weight"));
    let err = BackendEngine::load(&dir).err().unwrap().to_string();
    assert!(err.contains("layers.1.attention.wo.weight") && err.contains("gpt.safetensors"), "{err}");
    // Wrong shape: a config that disagrees with the file.
    write_random_model(&dir, &config, 1).unwrap();
    let mut wrong = config.clone();
    wrong.gpt.vocab_size = 65;
    wrong.vq.as_mut().unwrap().codebook_size = 65;
    wrong.draft.as_mut().unwrap().vocab_size = 65;
    wrong.save(&dir).unwrap();
    let err = BackendEngine::load(&dir).err().unwrap().to_string();
    assert!(err.contains("tok_embeddings.weight") && err.contains("[65, 32]"), "{err}");
    // Truncated file.
    config.save(&dir).unwrap();
    let path = dir.join("gpt.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = BackendEngine::load(&dir).err().unwrap().to_string();
    assert!(err.contains("corrupt or truncated") && err.contains("gpt.safetensors"), "{err}");
    // Garbage header.
    std::fs::write(&path, b"not a safetensors file at all").unwrap();
    assert!(BackendEngine::load(&dir).err().unwrap().to_string().contains("gpt.safetensors"));
    // Unparsable config.
    std::fs::write(dir.join("config.json"), "{ \"gpt\": 3 }").unwrap();
    let err = BackendEngine::load(&dir).err().unwrap().to_string();
    assert!(err.contains("config.json"), "{err}");
    // Missing directory.
    let err = BackendEngine::load(dir.join("nope")).err().unwrap().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn unsupported_dtype_names_the_tensor_and_file() {
    use safetensors::tensor::{Dtype, TensorView};
    let (dir, _) = tiny_engine("dtype");
    let config = tiny_config();
    // Rewrite gpt.safetensors with every tensor as I32 of the right shape.
    let shapes = spire::model::gpt_tensor_shapes(&config.gpt);
    let buffers: Vec<Vec<u8>> = shapes.iter().map(|(_, s)| vec![0u8; s.iter().product::<usize>() * 4]).collect();
    let views: Vec<(String, TensorView<'_>)> =
        shapes.iter().zip(&buffers).map(|((n, s), b)| (n.clone(), TensorView::new(Dtype::I32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("gpt.safetensors")).unwrap();
    let err = BackendEngine::load(&dir).err().unwrap().to_string();
    assert!(err.contains("dtype I32") && err.contains("gpt.safetensors"), "{err}");
}

#[test]
fn nan_weights_give_a_non_finite_logits_error_not_an_image() {
    use spire::weights::synthetic::{random_tensors, write_safetensors};
    let (dir, _) = tiny_engine("nan");
    let config = tiny_config();
    let mut tensors = random_tensors(&spire::model::gpt_tensor_shapes(&config.gpt), 1);
    let norm = tensors.iter_mut().find(|t| t.name == "norm.weight").unwrap();
    norm.values[0] = f32::NAN;
    write_safetensors(&dir.join("gpt.safetensors"), &tensors, spire::weights::DType::F32).unwrap();
    let engine = BackendEngine::load(&dir).unwrap();
    let err = engine.generate(&Request::new(0, 0)).err().unwrap();
    assert!(matches!(err, Error::NonFiniteLogits { .. }), "{err}");
    assert!(err.to_string().contains("image token 0"), "{err}");
}
