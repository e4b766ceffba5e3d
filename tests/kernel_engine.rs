//! The whole engine on the kernel backends: the shipped demo model through the CUDA emulator
//! (the real `kernels/*.cu` and the real launch code, a CPU GEMM in place of cuBLAS) and, in a
//! `cuda` build on a machine with a GPU, through the GPU, gives logits within 1e-4 (relative to
//! the largest) of the CPU backend's and, for the same seed, the same tokens in plain AR and in
//! speculative decoding (draft-model chain and tree, draft-head tree, vanilla and COOL-SD, with
//! CFG), alone or in a batch, with one upload and one download per decoding step.
#![cfg(any(feature = "emulator", feature = "cuda"))]

use spire::backend::{Backend, CpuBackend, KvDtype};
use spire::engine::{BackendEngine, Request};
use spire::model::{StepRow, TokenInput};
use spire::sampling::SamplingParams;
use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo");

/// Run `$case(&BackendEngine<CpuBackend>, &BackendEngine<kernel backend>)` with the demo model on the emulator
/// and, in a `cuda` build, on the GPU (or print why not); `; method(args)` configures every
/// engine (e.g. `; with_kv_dtype(KvDtype::Bf16)`).
macro_rules! on_kernel_backends {
    ($case:ident $(; $method:ident($($arg:expr),*))?) => {{
        let cpu = BackendEngine::load(DIR).unwrap()$(.$method($($arg),*))?;
        #[cfg(feature = "emulator")]
        {
            let emu = spire::backend::EmuBackend::new().unwrap_or_else(|e| panic!("{e} (install g++ or clang++ and rebuild)"));
            $case(&cpu, &BackendEngine::load_on(emu, DIR).unwrap()$(.$method($($arg),*))?);
        }
        #[cfg(feature = "cuda")]
        match spire::backend::CudaBackend::new(0) {
            Ok(gpu) => $case(&cpu, &BackendEngine::load_on(gpu, DIR).unwrap()$(.$method($($arg),*))?),
            Err(e) => println!("skipped: {e}"),
        }
    }};
}

/// Target logits over `[class, tokens...]` for the conditional and the null class (KV cache in
/// the engine's dtype).
fn logits<B: Backend>(engine: &BackendEngine<B>, class: u32, tokens: &[u32]) -> Vec<f32> {
    let gpt = engine.target();
    let be = engine.backend();
    let mut cache = engine.new_cache(gpt, 0).unwrap();
    let null = gpt.config().num_classes as u32;
    let mut rows = Vec::new();
    for c in [class, null] {
        let seq = cache.add_sequence();
        let inputs = std::iter::once(TokenInput::Class(c)).chain(tokens.iter().map(|&t| TokenInput::Image(t)));
        rows.extend(inputs.enumerate().map(|(p, t)| StepRow::causal(seq, t, p)));
    }
    gpt.forward(be, &mut cache, &rows).unwrap().logits
}

#[test]
fn demo_model_logits_match_the_cpu_backend() {
    on_kernel_backends!(logits_match);
}

/// The largest difference between the two engines' logits over a 40-token context, relative to
/// the largest |logit|, and that largest |logit|.
fn logits_error<B: Backend>(cpu: &BackendEngine<CpuBackend>, other: &BackendEngine<B>) -> (f32, f32) {
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 1000).collect();
    let (want, got) = (logits(cpu, 3, &tokens), logits(other, 3, &tokens));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    (got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale, scale)
}

fn logits_match<B: Backend>(cpu: &BackendEngine<CpuBackend>, emu: &BackendEngine<B>) {
    let (err, scale) = logits_error(cpu, emu);
    println!("{} vs CPU logits: max error {err:e} of the largest |logit| {scale}", emu.backend().name());
    assert!(err < 1e-4, "{} logits differ from the CPU's by {err:e} (relative)", emu.backend().name());
}

#[test]
fn demo_model_generates_the_same_tokens_on_the_kernel_backends() {
    on_kernel_backends!(same_tokens);
}

fn same_tokens<B: Backend>(cpu: &BackendEngine<CpuBackend>, emu: &BackendEngine<B>) {
    let cool = RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored };
    let modes: [(&str, Option<SpecConfig>); 6] = [
        ("AR", None),
        ("vanilla chain", Some(SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 4))),
        ("vanilla tree", Some(SpecConfig { rule: RuleConfig::Vanilla, drafter: DrafterChoice::Model, widths: vec![2, 2, 1] })),
        ("COOL-SD chain", Some(SpecConfig::chain(cool.clone(), DrafterChoice::Model, 4))),
        ("COOL-SD tree", Some(SpecConfig { rule: cool.clone(), drafter: DrafterChoice::Model, widths: vec![2, 1, 1] })),
        ("COOL-SD tree, draft head", Some(SpecConfig { rule: cool, drafter: DrafterChoice::Head, widths: vec![2, 2, 1] })),
    ];
    for (seed, (mode, spec)) in modes.into_iter().enumerate() {
        let request = Request { class_id: seed as u32, seed: seed as u64, sampling: SamplingParams { cfg_scale: 2.0, ..Default::default() }, speculative: spec, ..Request::new(0, 0) };
        let want = cpu.generate_tokens(&request, &mut |_, _| {}).unwrap();
        let got = emu.generate_tokens(&request, &mut |_, _| {}).unwrap();
        println!("{mode}: {} tokens, {} target forwards on {}", got.tokens.len(), got.stats.target_forwards, emu.backend().name());
        assert_eq!(got.tokens, want.tokens, "{mode}: the kernels chose other tokens than the CPU backend");
        assert_eq!(got.stats.target_forwards, want.stats.target_forwards, "{mode}: different acceptance");
    }
}

/// The device budget of a decoding step: the plan is the only host-to-device copy and the step's
/// state the only device-to-host copy (LANTERN's host walk also downloads p and q), once a first
/// request has sized the engine's KV caches and buffers a request allocates nothing, and the
/// passes replay as graphs.
/// Counted by the emulated backend for plain AR, a draft-model chain, a draft-head tree and
/// LANTERN.
#[test]
fn a_decoding_step_makes_one_upload_and_one_download() {
    on_kernel_backends!(step_budget);
}

fn step_budget<B: Backend>(_: &BackendEngine<CpuBackend>, emu: &BackendEngine<B>) {
    let be = emu.backend();
    let cfg = SamplingParams { cfg_scale: 2.0, ..Default::default() };
    let modes: [(&str, Option<SpecConfig>, u64); 4] = [
        ("AR", None, 1),
        ("vanilla chain (draft model)", Some(SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 4)), 1),
        ("COOL-SD tree (draft head)", Some(SpecConfig { rule: RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored }, drafter: DrafterChoice::Head, widths: vec![2, 2, 1] }), 1),
        ("LANTERN chain (host walk)", Some(SpecConfig::chain(RuleConfig::Lantern { k: 20, delta: 0.1 }, DrafterChoice::Model, 4)), 3),
    ];
    for (mode, spec, downloads_per_step) in modes {
        let request = Request { class_id: 2, seed: 5, sampling: cfg, speculative: spec, ..Request::new(0, 0) };
        emu.generate_tokens(&request, &mut |_, _| {}).unwrap(); // sizes the KV caches and workspaces
        be.take_device_counts();
        let steps = emu.generate_tokens(&request, &mut |_, _| {}).unwrap().stats.target_forwards as u64;
        let counts = be.take_device_counts().unwrap();
        println!("{mode}: {steps} steps, {counts:?}, {:.1} kernels and {:.1} host launches per step", counts.launches as f64 / steps as f64, counts.host_launches() as f64 / steps as f64);
        assert_eq!(counts.uploads, steps, "{mode}: uploads");
        assert_eq!(counts.downloads, downloads_per_step * steps, "{mode}: downloads");
        assert_eq!(counts.allocations, 0, "{mode}: allocations");
        // Once warm, every fixed-shape pass replays as one graph: a handful of host launches per
        // step (the KV moves and an odd-length catch-up pass run directly).
        assert!(counts.host_launches() <= 16 * steps, "{mode}: {} host launches in {steps} steps", counts.host_launches());
    }
}

/// With a bf16 KV cache the kernel backends compute the CPU backend's logits (which rounds its
/// keys and values to bf16 the same way) to 1e-3 of the largest, and generate with the same
/// step budget. Tokens are not compared: bf16 rounding turns the backends' 1e-6 differences in
/// an element near a rounding boundary into a 2^-8 one, so long generations may part ways.
#[test]
fn bf16_kv_matches_the_cpu_backend() {
    on_kernel_backends!(bf16_kv; with_kv_dtype(KvDtype::Bf16));
}

fn bf16_kv<B: Backend>(cpu: &BackendEngine<CpuBackend>, kernels: &BackendEngine<B>) {
    let (err, scale) = logits_error(cpu, kernels);
    println!("bf16 KV: {} vs CPU logits: max error {err:e} of the largest |logit| {scale}", kernels.backend().name());
    assert!(err < 1e-3, "bf16 KV logits differ from the CPU's by {err:e} (relative)");
    let spec = SpecConfig { rule: RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored }, drafter: DrafterChoice::Head, widths: vec![2, 2, 1] };
    let request = Request { class_id: 4, seed: 9, sampling: SamplingParams { cfg_scale: 2.0, ..Default::default() }, speculative: Some(spec), ..Request::new(0, 0) };
    kernels.backend().take_device_counts();
    let generation = kernels.generate_tokens(&request, &mut |_, _| {}).unwrap();
    let counts = kernels.backend().take_device_counts().unwrap();
    let steps = generation.stats.target_forwards as u64;
    assert_eq!(generation.tokens.len(), 64);
    assert_eq!((counts.uploads, counts.downloads), (steps, steps), "bf16 KV: one upload and one download per step");
}

/// Three requests generated in one batch on a kernel backend give each the tokens the CPU
/// backend gives it alone (ragged acceptance, one CFG pair each, different classes and seeds).
#[test]
fn a_batch_gives_each_image_its_tokens_alone_on_the_cpu() {
    on_kernel_backends!(batch_alone);
}

fn batch_alone<B: Backend>(cpu: &BackendEngine<CpuBackend>, emu: &BackendEngine<B>) {
    let spec = SpecConfig { rule: RuleConfig::Vanilla, drafter: DrafterChoice::Head, widths: vec![2, 1, 1] };
    let requests: Vec<Request> =
        (0..3).map(|i| Request { class_id: 3 * i, seed: 40 + u64::from(i), sampling: SamplingParams { cfg_scale: 2.0, ..Default::default() }, speculative: Some(spec.clone()), ..Request::new(0, 0) }).collect();
    let batch = emu.generate_tokens_batch(&requests, &mut |_, _| {}).unwrap();
    for (request, got) in requests.iter().zip(&batch) {
        let alone = cpu.generate_tokens(request, &mut |_, _| {}).unwrap();
        assert_eq!(got.tokens, alone.tokens, "seed {}", request.seed);
        assert_eq!(got.stats.target_forwards, alone.stats.target_forwards, "seed {}", request.seed);
    }
}
