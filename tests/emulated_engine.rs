//! The whole engine on the emulated kernels: the shipped demo model through the CUDA emulator
//! (the real `kernels/*.cu` and the real launch code, a CPU GEMM in place of cuBLAS) gives logits
//! within 1e-4 (relative to the largest) of the CPU backend's and, for the same seed, the same
//! tokens in plain AR and in speculative decoding (draft-model chain and tree, vanilla and
//! COOL-SD, with CFG).
#![cfg(feature = "emulator")]

use spire::backend::{Backend, CpuBackend, EmuBackend};
use spire::engine::{Engine, Request};
use spire::model::{StepRow, TokenInput};
use spire::sampling::SamplingParams;
use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo");

fn engines() -> (Engine<CpuBackend>, Engine<EmuBackend>) {
    let emu = EmuBackend::new().unwrap_or_else(|e| panic!("{e} (install g++ or clang++ and rebuild)"));
    (Engine::load(DIR).unwrap(), Engine::load_on(emu, DIR).unwrap())
}

/// Target logits over `[class, tokens...]` for the conditional and the null class.
fn logits<B: Backend>(engine: &Engine<B>, class: u32, tokens: &[u32]) -> Vec<f32> {
    let gpt = engine.target();
    let be = engine.backend();
    let mut cache = gpt.new_cache(be, 16, 16).unwrap();
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
    let (cpu, emu) = engines();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 1000).collect();
    let (want, got) = (logits(&cpu, 3, &tokens), logits(&emu, 3, &tokens));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    println!("emulated vs CPU logits: max error {err:e} of the largest |logit| {scale}");
    assert!(err < 1e-4, "emulated logits differ from the CPU's by {err:e} (relative)");
}

#[test]
fn demo_model_generates_the_same_tokens_on_the_emulator() {
    let (cpu, emu) = engines();
    let cool = RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0 };
    let modes: [(&str, Option<SpecConfig>); 5] = [
        ("AR", None),
        ("vanilla chain", Some(SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 4))),
        ("vanilla tree", Some(SpecConfig { rule: RuleConfig::Vanilla, drafter: DrafterChoice::Model, widths: vec![2, 2, 1] })),
        ("COOL-SD chain", Some(SpecConfig::chain(cool.clone(), DrafterChoice::Model, 4))),
        ("COOL-SD tree", Some(SpecConfig { rule: cool, drafter: DrafterChoice::Model, widths: vec![2, 1, 1] })),
    ];
    for (seed, (mode, spec)) in modes.into_iter().enumerate() {
        let request = Request { class_id: seed as u32, seed: seed as u64, sampling: SamplingParams { cfg_scale: 2.0, ..Default::default() }, speculative: spec };
        let want = cpu.generate_tokens(&request, &mut |_, _| {}).unwrap();
        let got = emu.generate_tokens(&request, &mut |_, _| {}).unwrap();
        println!("{mode}: {} tokens, {} target forwards on the emulator", got.tokens.len(), got.stats.target_forwards);
        assert_eq!(got.tokens, want.tokens, "{mode}: the emulated kernels chose other tokens than the CPU backend");
        assert_eq!(got.stats.target_forwards, want.stats.target_forwards, "{mode}: different acceptance");
    }
}

/// The device budget of one forward pass after the first (which sizes the workspace): one
/// host-to-device copy (the plan), no allocation but the plan's, and the logits and hidden states
/// as the only device-to-host copies.
#[test]
fn a_forward_pass_uploads_its_plan_once_and_allocates_nothing_else() {
    let (_, emu) = engines();
    let tokens: Vec<u32> = (0..10).collect();
    logits(&emu, 1, &tokens);
    let be = emu.backend();
    let gpt = emu.target();
    let mut cache = gpt.new_cache(be, 16, 16).unwrap();
    let seq = cache.add_sequence();
    let rows: Vec<StepRow> = std::iter::once(TokenInput::Class(1)).chain(tokens.iter().map(|&t| TokenInput::Image(t))).enumerate().map(|(p, t)| StepRow::causal(seq, t, p)).collect();
    gpt.forward(be, &mut cache, &rows).unwrap();
    be.take_device_counts();
    gpt.forward(be, &mut cache, &rows).unwrap();
    let counts = be.take_device_counts().unwrap();
    println!("one target forward on the emulator: {counts:?}");
    assert_eq!(counts.uploads, 1, "uploads per forward");
    assert_eq!(counts.allocations, 1, "allocations per forward (the plan's buffer)");
    assert_eq!(counts.downloads, 2, "downloads per forward (logits, hidden states)");
}
