//! End-to-end decoding of 256-token images with a GPT-XL-shaped target (36 layers, 1280 wide,
//! random bf16 weights) on the GPU: plain AR against COOL-SD with a small random draft model, CFG
//! on, one image and batches of 8. Random weights make acceptance meaningless; this measures
//! per-step engine cost at the real model size. Before criterion it prints, per mode, the time
//! per decoding step and the device operations per step (kernels, host launches with graph
//! replays, copies). Needs `--features cuda` and a GPU; prints why and skips otherwise.

use criterion::{criterion_group, criterion_main, Criterion};

use spire::backend::gpu::cost::{ar_step, chain_step, Precision, Step, H100_SXM, H200};
use spire::backend::{Backend, CudaBackend, KvDtype};
use spire::engine::{BackendEngine, Request};
use spire::model::gpt_tensor_shapes;
use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use spire::weights::synthetic::{random_tensors, write_safetensors};
use spire::weights::{DType, GptConfig, ModelConfig};

fn gpt_xl_engine(gpu: CudaBackend) -> spire::Result<BackendEngine<CudaBackend>> {
    let gpt = GptConfig::preset("GPT-XL", 256).expect("GPT-XL preset");
    let draft = GptConfig { file: "draft.safetensors".into(), dim: 512, n_layer: 4, n_head: 8, ..gpt.clone() };
    let config = ModelConfig { gpt, draft: Some(draft), draft_head: None, vq: None };
    let dir = std::env::temp_dir().join(format!("spire-bench-gpt-xl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| spire::Error::Io { path: dir.clone(), source })?;
    for (i, model) in [&config.gpt, config.draft.as_ref().expect("draft")].into_iter().enumerate() {
        write_safetensors(&dir.join(&model.file), &random_tensors(&gpt_tensor_shapes(model), i as u64), DType::BF16)?;
    }
    config.save(&dir)?;
    BackendEngine::load_on(gpu, &dir)
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
    let mut group = c.benchmark_group("gpt_xl_256_tokens");
    group.sample_size(10);
    let cool = SpecConfig::chain(RuleConfig::Cool { delta: 2.0, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored }, DrafterChoice::Model, 4);
    for (mode, speculative) in [("ar", None), ("cool_chain4", Some(cool))] {
        for batch in [1u32, 8] {
            let requests: Vec<Request> = (0..batch)
                .map(|i| {
                    let mut request = Request::new(207, u64::from(i));
                    request.sampling.cfg_scale = 1.75;
                    request.speculative = speculative.clone();
                    request
                })
                .collect();
            let name = format!("{mode}_batch{batch}");
            let gpt = engine.config().gpt.clone();
            let (images, context, precision) = (batch as usize, gpt.block_size / 2, Precision { weight_bytes: 2.0, kv: KvDtype::F32 });
            let model = match &speculative {
                None => ar_step(&gpt, images, context, precision),
                Some(_) => chain_step(&gpt, engine.config().draft.as_ref().expect("a draft model"), images, 4, 2, context, precision),
            };
            report_steps(&engine, &name, &requests, &model);
            group.bench_function(name, |b| b.iter(|| engine.generate_tokens_batch(&requests, &mut |_, _| {}).expect("generation")));
        }
    }
    group.finish();
}

/// One warm run of `requests`, then one measured: time and device operations per step, next to
/// the cost model's prediction for a step (graphed, at the mean context).
fn report_steps(engine: &BackendEngine<CudaBackend>, name: &str, requests: &[Request], model: &Step) {
    engine.generate_tokens_batch(requests, &mut |_, _| {}).expect("warm-up");
    engine.backend().take_device_counts();
    let start = std::time::Instant::now();
    let out = engine.generate_tokens_batch(requests, &mut |_, _| {}).expect("generation");
    let secs = start.elapsed().as_secs_f64();
    let steps = out.iter().map(|g| g.stats.target_forwards).max().unwrap_or(1) as f64;
    let c = engine.backend().take_device_counts().unwrap_or_default();
    let per = |n: u64| n as f64 / steps;
    let ceilings = if engine.backend().name().contains("H200") { H200 } else { H100_SXM };
    println!("{name:<18} model {:>8.3} ms/step ({} ceilings, graphed, {} launches)", model.time(&ceilings, true) * 1e3, ceilings.name, model.launches.len());
    println!(
        "{name:<18} {steps:>4} steps {:>8.3} ms/step  kernels {:>6.1}  host launches {:>6.1}  uploads {:.1}  downloads {:.1}  allocations {:.1} (graphs: {})",
        1e3 * secs / steps,
        per(c.launches),
        per(c.host_launches()),
        per(c.uploads),
        per(c.downloads),
        per(c.allocations),
        engine.backend().graph_status().unwrap_or_else(|| "on".into())
    );
}

criterion_group!(benches, decode);
criterion_main!(benches);
