//! End-to-end decoding benchmarks on a demo-sized random model (d=256, 6 layers, 8x8 tokens):
//! one plain AR image against speculative modes with the same draft model. Speedups on random
//! weights say little (drafts are rarely accepted); the table of `spire bench` on trained weights
//! is the number to quote. This bench tracks the engine's per-image overhead.

use criterion::{criterion_group, criterion_main, Criterion};

use spire::engine::random_tiny::{tiny_config, write_random_model};
use spire::engine::{BackendEngine, Request};
use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};

fn demo_sized_engine() -> BackendEngine {
    let mut config = tiny_config();
    config.gpt.dim = 256;
    config.gpt.n_layer = 6;
    config.gpt.n_head = 8;
    config.gpt.vocab_size = 1000;
    config.gpt.block_size = 64;
    config.gpt.multiple_of = 16;
    let draft = config.draft.as_mut().unwrap();
    draft.vocab_size = 1000;
    draft.block_size = 64;
    draft.dim = 128;
    draft.n_head = 4;
    draft.n_layer = 2;
    config.draft_head = None;
    config.vq = None;
    let dir = std::env::temp_dir().join(format!("spire-bench-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_random_model(&dir, &config, 0).unwrap();
    BackendEngine::load(&dir).unwrap()
}

fn decode(c: &mut Criterion) {
    let engine = demo_sized_engine();
    let mut group = c.benchmark_group("decode_image_64_tokens");
    group.sample_size(10);
    let modes = [
        ("ar", None),
        ("vanilla_chain4", Some(SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 4))),
        ("cool_chain4", Some(SpecConfig::chain(RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored }, DrafterChoice::Model, 4))),
    ];
    for (name, speculative) in modes {
        let mut request = Request::new(1, 0);
        request.sampling.cfg_scale = 2.0;
        request.speculative = speculative;
        group.bench_function(name, |b| b.iter(|| engine.generate_tokens(&request, &mut |_, _| {}).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
