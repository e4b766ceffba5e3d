//! End-to-end decoding of one 256-token image with a GPT-XL-shaped target (36 layers, 1280 wide,
//! random bf16 weights) on the GPU: plain AR against COOL-SD with a small random draft model, CFG
//! on. Random weights make acceptance meaningless; this measures per-step engine cost at the
//! real model size. Needs `--features cuda` and a GPU; prints why and skips otherwise.

use criterion::{criterion_group, criterion_main, Criterion};

use spire::backend::CudaBackend;
use spire::engine::{Engine, Request};
use spire::model::gpt_tensor_shapes;
use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use spire::weights::synthetic::{random_tensors, write_safetensors};
use spire::weights::{DType, GptConfig, ModelConfig};

fn gpt_xl_engine(gpu: CudaBackend) -> spire::Result<Engine<CudaBackend>> {
    let gpt = GptConfig::preset("GPT-XL", 256).expect("GPT-XL preset");
    let draft = GptConfig { file: "draft.safetensors".into(), dim: 512, n_layer: 4, n_head: 8, ..gpt.clone() };
    let config = ModelConfig { gpt, draft: Some(draft), draft_head: None, vq: None };
    let dir = std::env::temp_dir().join(format!("spire-bench-gpt-xl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| spire::Error::Io { path: dir.clone(), source })?;
    for (i, model) in [&config.gpt, config.draft.as_ref().expect("draft")].into_iter().enumerate() {
        write_safetensors(&dir.join(&model.file), &random_tensors(&gpt_tensor_shapes(model), i as u64), DType::BF16)?;
    }
    config.save(&dir)?;
    Engine::load_on(gpu, &dir)
}

fn decode(c: &mut Criterion) {
    let gpu = match CudaBackend::new(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let engine = match gpt_xl_engine(gpu) {
        Ok(engine) => engine,
        Err(e) => {
            println!("skipped: cannot build the GPT-XL-shaped model: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("gpt_xl_image_256_tokens");
    group.sample_size(10);
    let cool = SpecConfig::chain(RuleConfig::Cool { delta: 2.0, nu: 0.7, mu: 0.0 }, DrafterChoice::Model, 4);
    for (name, speculative) in [("ar", None), ("cool_chain4", Some(cool))] {
        let mut request = Request::new(207, 0);
        request.sampling.cfg_scale = 1.75;
        request.speculative = speculative;
        group.bench_function(name, |b| b.iter(|| engine.generate_tokens(&request, &mut |_, _| {}).expect("generation")));
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
