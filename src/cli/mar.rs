//! `spire generate` and `spire bench` on a MAR weights directory (`"family": "mar"` in
//! config.json): plain MAR against continuous speculative decoding (`--spec cspd`), on the CPU,
//! alone or in batches of images sharing each pass (`--batch`).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::cli::bench::BenchArgs;
use crate::cli::device::{Device, ModelArgs};
use crate::cli::generate::{GenerateArgs, SamplingArgs};
use crate::cli::mar_args::MarArgs;
use crate::cli::spec_args::SpecMode;
use crate::decode::cspd::{CspdOptions, CspdStats};
use crate::engine::{Image, MarDraft, MarEngine, MarRequest};
use crate::weights::DirConfig;

/// γ values `bench` measures by default (the paper's).
const BENCH_GAMMAS: [usize; 4] = [4, 8, 16, 32];

/// Whether `model` names a MAR weights directory (its config.json says `"family": "mar"`).
pub fn is_mar_dir(model: &ModelArgs) -> bool {
    !model.random_tiny && matches!(DirConfig::load(&model.weights), Ok(DirConfig::Mar(_)))
}

/// Error if MAR-only flags or `--spec cspd` were given for a LlamaGen directory.
pub fn refuse_mar_flags(mar: &MarArgs, modes: &[SpecMode]) -> anyhow::Result<()> {
    anyhow::ensure!(!modes.contains(&SpecMode::Cspd), "--spec cspd needs a MAR weights directory (\"family\": \"mar\" in config.json); this one holds a LlamaGen model");
    let given = mar.given();
    anyhow::ensure!(given.is_empty(), "{} appl{} to MAR weights directories only; this one holds a LlamaGen model", given.join(", "), if given.len() == 1 { "ies" } else { "y" });
    Ok(())
}

/// Error if settings MAR cannot use were given: LlamaGen's decoding modes, top-k / top-p, a
/// device other than the CPU.
pub fn refuse_llamagen_flags(model: &ModelArgs, sampling: &SamplingArgs, modes: &[SpecMode]) -> anyhow::Result<()> {
    if let Some(mode) = modes.iter().find(|m| !matches!(m, SpecMode::None | SpecMode::Cspd)) {
        anyhow::bail!("--spec {} is for LlamaGen directories; a MAR directory decodes with `none` or `cspd`", format!("{mode:?}").to_lowercase());
    }
    anyhow::ensure!(sampling.top_k == 0 && sampling.top_p == 1.0, "--top-k and --top-p filter discrete tokens; MAR's tokens are continuous (use --temperature)");
    anyhow::ensure!(model.device == Device::Cpu, "MAR models run on the CPU backend only (the continuous-token ops have no GPU kernels yet): use --device cpu");
    Ok(())
}

/// Load the MAR engine of `dir`.
pub fn load(dir: &Path) -> anyhow::Result<MarEngine> {
    MarEngine::load(dir).with_context(|| format!("loading MAR weights from {}", dir.display()))
}

/// `spire generate` on a MAR directory: the images `--batch` at a time.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    refuse_llamagen_flags(&args.model, &args.sampling, &[args.spec.spec])?;
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let engine = load(&args.model.weights)?;
    let sampling = args.mar.sampling(engine.config().mar.seq_len(), args.sampling.cfg, args.sampling.temperature);
    let gammas = args.mar.gammas(&[CspdOptions::default().gamma]);
    anyhow::ensure!(gammas.len() == 1, "generate takes one --gamma value (bench takes a list)");
    let options = args.mar.options(&gammas)[0];
    let classes = args.class.iter().flat_map(|&class| std::iter::repeat_n(class as usize, args.samples));
    let requests: Vec<MarRequest> = classes.enumerate().map(|(i, class)| MarRequest { class, seed: args.seed + i as u64, sampling }).collect();
    let mut images: Vec<Image> = Vec::new();
    for batch in requests.chunks(args.batch) {
        let tokens = if args.spec.spec == SpecMode::Cspd {
            let outputs = engine.generate_tokens_cspd_batch(batch, &options, args.mar.draft())?;
            for (request, out) in batch.iter().zip(&outputs) {
                eprintln!("  class {} seed {}: {}", request.class, request.seed, describe(&out.stats));
            }
            outputs.into_iter().map(|out| out.tokens).collect()
        } else {
            for request in batch {
                eprintln!("  class {} seed {}: {} tokens, {} target forwards", request.class, request.seed, engine.config().mar.seq_len(), sampling.num_iter);
            }
            engine.generate_tokens_batch(batch)?
        };
        for tokens in tokens {
            images.push(engine.decode(&tokens)?);
        }
    }
    let image = if images.len() == 1 { images.remove(0) } else { Image::grid(&images, args.samples) };
    image.save_png(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} ({}x{})", args.out.display(), image.width, image.height);
    Ok(())
}

/// One line about a CSpD generation.
fn describe(s: &CspdStats) -> String {
    format!(
        "{} tokens, {} target forwards ({} pre-fill + {} windows), {} draft forwards, acceptance {:.3} ({} of {} verified), {} resampled ({} capped), {} discarded, {} bonus",
        s.tokens, s.target_forwards, s.prefill_steps, s.windows, s.draft_forwards, s.acceptance_rate(), s.accepted, s.verified, s.resampled, s.capped, s.discarded, s.bonus
    )
}

/// One row of the MAR bench table.
#[derive(Debug, Serialize)]
struct MarBenchRow {
    /// `mar` (plain) or `cspd`.
    mode: &'static str,
    /// Drafted steps per verification (CSpD).
    gamma: Option<usize>,
    batch: usize,
    images: usize,
    latency_ms_per_image: f64,
    target_forwards_per_image: f64,
    draft_forwards_per_image: f64,
    tokens_per_target_forward: f64,
    /// Accepted over verified drafted tokens (α).
    acceptance_rate: Option<f64>,
    resampled_per_image: f64,
    /// Residual samples that hit the proposal cap, in all.
    capped: usize,
    /// Against plain MAR at the same batch size, measured in the same run.
    speedup_vs_mar: f64,
    /// Summed counts (CSpD).
    stats: Option<CspdStats>,
}

/// The tokens of one batch of `requests`, plain (`options` `None`) or by CSpD with `draft`
/// drafting, and their summed counts (plain MAR: its tokens and target passes only).
pub fn generate_batch(engine: &MarEngine, requests: &[MarRequest], options: Option<&CspdOptions>, draft: MarDraft) -> anyhow::Result<(Vec<Vec<f32>>, CspdStats)> {
    let Some(options) = options else {
        let passes = requests.first().map_or(0, |r| r.sampling.num_iter);
        let stats = CspdStats { tokens: requests.len() * engine.config().mar.seq_len(), target_forwards: requests.len() * passes, ..CspdStats::default() };
        return Ok((engine.generate_tokens_batch(requests)?, stats));
    };
    let mut stats = CspdStats::default();
    let outputs = engine.generate_tokens_cspd_batch(requests, options, draft)?;
    outputs.iter().for_each(|out| stats.accumulate(&out.stats));
    Ok((outputs.into_iter().map(|out| out.tokens).collect(), stats))
}

/// Generate `requests` `batch` at a time, plain (`options` `None`) or by CSpD; returns the wall
/// time in ms per image and the summed CSpD counts.
fn measure(engine: &MarEngine, requests: &[MarRequest], batch: usize, options: Option<&CspdOptions>, draft: MarDraft) -> anyhow::Result<(f64, CspdStats)> {
    let (mut stats, start) = (CspdStats::default(), Instant::now());
    for chunk in requests.chunks(batch) {
        stats.accumulate(&generate_batch(engine, chunk, options, draft)?.1);
    }
    Ok((start.elapsed().as_secs_f64() * 1e3 / requests.len() as f64, stats))
}

/// The CSpD options in one line: verification, variance factor, τ_a, final step, pre-fill,
/// window guidance.
pub fn describe_options(options: &CspdOptions) -> String {
    format!(
        "{} / variance factor {} / tau_a {} / {} final step / prefill {} / {} window cfg",
        options.verify.name(),
        options.variance_factor.name(),
        options.tau_a,
        options.final_step.name(),
        options.prefill_ratio,
        options.window_cfg.name()
    )
}

/// `spire bench` on a MAR directory: per batch size, plain MAR, then CSpD for each γ, on the
/// same images.
pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let modes = args.modes.clone().unwrap_or_else(|| vec![SpecMode::Cspd]);
    refuse_llamagen_flags(&args.model, &args.sampling, &modes)?;
    anyhow::ensure!(args.draft_lens.is_none() && args.rounds == 1, "--draft-lens and --rounds apply to LlamaGen directories; on a MAR directory bench sweeps --gamma");
    let engine = load(&args.model.weights)?;
    let mar = &engine.config().mar;
    let sampling = args.mar.sampling(mar.seq_len(), args.sampling.cfg, args.sampling.temperature);
    let classes: Vec<usize> = args.classes.as_ref().map_or_else(|| (0..mar.class_num.min(10)).collect(), |c| c.iter().map(|&k| k as usize).collect());
    let requests: Vec<MarRequest> = (0..args.images).map(|i| MarRequest { class: classes[i % classes.len()], seed: args.seed + i as u64, sampling }).collect();
    let per_image = |n: usize| n as f64 / args.images as f64;
    let options = if modes.contains(&SpecMode::Cspd) { args.mar.options(&args.mar.gammas(&BENCH_GAMMAS)) } else { Vec::new() };
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let (plain_ms, _) = measure(&engine, &requests, batch, None, args.mar.draft())?;
        rows.push(MarBenchRow {
            mode: "mar",
            gamma: None,
            batch,
            images: args.images,
            latency_ms_per_image: plain_ms,
            target_forwards_per_image: sampling.num_iter as f64,
            draft_forwards_per_image: 0.0,
            tokens_per_target_forward: mar.seq_len() as f64 / sampling.num_iter as f64,
            acceptance_rate: None,
            resampled_per_image: 0.0,
            capped: 0,
            speedup_vs_mar: 1.0,
            stats: None,
        });
        for options in &options {
            let (ms, stats) = measure(&engine, &requests, batch, Some(options), args.mar.draft())?;
            rows.push(MarBenchRow {
                mode: "cspd",
                gamma: Some(options.gamma),
                batch,
                images: args.images,
                latency_ms_per_image: ms,
                target_forwards_per_image: per_image(stats.target_forwards),
                draft_forwards_per_image: per_image(stats.draft_forwards),
                tokens_per_target_forward: stats.tokens_per_target_forward(),
                acceptance_rate: Some(stats.acceptance_rate()),
                resampled_per_image: per_image(stats.resampled),
                capped: stats.capped,
                speedup_vs_mar: plain_ms / ms,
                stats: Some(stats),
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    print_table(&engine, args, &rows);
    Ok(())
}

/// Which model drafts, in words.
pub fn describe_draft(draft: MarDraft) -> &'static str {
    match draft {
        MarDraft::Target => "the target itself (self-speculation)",
        MarDraft::Section => "the directory's draft section",
    }
}

/// The bench table, with the settings it ran under.
fn print_table(engine: &MarEngine, args: &BenchArgs, rows: &[MarBenchRow]) {
    let options = args.mar.options(&[0])[0];
    println!(
        "backend: cpu, weights: {} (MAR, {} tokens), draft: {}, cfg {}, temperature {}; CSpD: {}; forwards are per image, speedups against plain MAR at the same batch size",
        args.model.weights.display(),
        engine.config().mar.seq_len(),
        describe_draft(args.mar.draft()),
        args.sampling.cfg,
        args.sampling.temperature,
        describe_options(&options)
    );
    println!("{:<5} {:>5} {:>5} {:>7} {:>10} {:>14} {:>13} {:>10} {:>10} {:>11} {:>7} {:>8}", "mode", "gamma", "batch", "images", "ms/image", "target fwd/img", "draft fwd/img", "tokens/fwd", "acceptance", "resampled/img", "capped", "speedup");
    for r in rows {
        let gamma = r.gamma.map_or("-".into(), |g| g.to_string());
        let acceptance = r.acceptance_rate.map_or("-".into(), |a| format!("{a:.3}"));
        println!(
            "{:<5} {gamma:>5} {:>5} {:>7} {:>10.1} {:>14.1} {:>13.1} {:>10.2} {acceptance:>10} {:>13.1} {:>7} {:>7.2}x",
            r.mode, r.batch, r.images, r.latency_ms_per_image, r.target_forwards_per_image, r.draft_forwards_per_image, r.tokens_per_target_forward, r.resampled_per_image, r.capped, r.speedup_vs_mar
        );
    }
}
