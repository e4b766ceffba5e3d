//! `spire bench`: AR against each speculative mode on the same images, as a table or JSON.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::backend::{Backend, DeviceCounts};
use crate::engine::{BackendEngine, GenerationStats, Request};

use crate::cli::device::{with_engine, EngineTask, ModelArgs};
use crate::cli::generate::SamplingArgs;
use crate::cli::mar::{self, is_mar_dir, refuse_mar_flags};
use crate::cli::mar_args::MarArgs;
use crate::cli::spec_args::{SpecArgs, SpecMode};

/// Arguments of `spire bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decoding modes to compare (AR, `none`, is always measured first as the baseline)
    /// [default: vanilla,cool; on a MAR directory: cspd].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Option<Vec<SpecMode>>,
    /// Images per mode (and batch size).
    #[arg(long, default_value_t = 8)]
    pub images: usize,
    /// Batch sizes to measure, comma-separated: images generated together in shared forward
    /// passes (e.g. `1,4,16`).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Classes to cycle through (default: 0..min(num_classes, 10)).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<u32>>,
    /// Seed of the first image.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub mar: MarArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the bench table.
#[derive(Debug, Serialize)]
struct BenchRow {
    mode: String,
    /// Images per batch.
    batch: usize,
    images: usize,
    /// Wall time over images (a batch's images share it).
    latency_ms_per_image: f64,
    images_per_second: f64,
    target_forwards_per_image: f64,
    tokens_per_target_forward: f64,
    mean_accepted_length: f64,
    /// Accepted drafts over drafted tokens, every tree node counted (`GenerationStats::acceptance_rate`).
    acceptance_rate: f64,
    /// Against plain AR at the same batch size, measured in the same run.
    speedup_vs_ar: f64,
    /// Device operations per decoding step (one target forward for the whole batch), on kernel
    /// backends; absent on the CPU.
    device_per_step: Option<DevicePerStep>,
}

/// Kernel launches and copies per decoding step, counted by the backend.
#[derive(Debug, Serialize)]
struct DevicePerStep {
    /// Kernels run (GEMMs included).
    launches: f64,
    /// Launch calls of the host: kernels launched one by one plus graph replays.
    host_launches: f64,
    uploads: f64,
    downloads: f64,
    allocations: f64,
}

impl DevicePerStep {
    fn new(counts: DeviceCounts, steps: usize) -> Self {
        let per = |n: u64| n as f64 / steps.max(1) as f64;
        Self {
            launches: per(counts.launches),
            host_launches: per(counts.host_launches()),
            uploads: per(counts.uploads),
            downloads: per(counts.downloads),
            allocations: per(counts.allocations),
        }
    }
}

/// What generating the bench's images in one mode and batch size took.
struct Measured {
    stats: GenerationStats,
    /// Decoding steps (target forwards of the batches).
    steps: usize,
    wall: Duration,
    counts: Option<DeviceCounts>,
}

/// Generate the bench's images in `mode`, `batch` at a time; returns their summed statistics,
/// the wall time and the device operations they took.
fn measure<B: Backend>(engine: &BackendEngine<B>, args: &BenchArgs, mode: SpecMode, batch: usize, classes: &[u32]) -> anyhow::Result<Measured> {
    let bar = ProgressBar::new(args.images as u64);
    bar.set_style(ProgressStyle::with_template("{msg:>16} [{bar:32}] {pos}/{len} images").expect("static template"));
    bar.set_message(format!("{mode:?} x{batch}").to_lowercase());
    let requests: Vec<Request> = (0..args.images)
        .map(|i| Request { class_id: classes[i % classes.len()], seed: args.seed + i as u64, sampling: args.sampling.params(), speculative: args.spec.config(mode), ..Request::new(0, 0) })
        .collect();
    let (mut stats, mut steps) = (GenerationStats::default(), 0);
    engine.backend().take_device_counts();
    let start = Instant::now();
    for chunk in requests.chunks(batch) {
        let generations = engine.generate_tokens_batch(chunk, &mut |_, _| {})?;
        steps += generations.iter().map(|g| g.stats.target_forwards).max().unwrap_or(0);
        generations.iter().for_each(|g| stats.accumulate(&g.stats));
        bar.inc(chunk.len() as u64);
    }
    let wall = start.elapsed();
    bar.finish_and_clear();
    Ok(Measured { stats, steps, wall, counts: engine.backend().take_device_counts() })
}

fn row(mode: SpecMode, batch: usize, m: &Measured, images: usize, ar_latency: f64) -> BenchRow {
    let latency = m.wall.as_secs_f64() * 1e3 / images as f64;
    let stats = &m.stats;
    BenchRow {
        mode: format!("{mode:?}").to_lowercase().replace("none", "ar"),
        batch,
        images,
        latency_ms_per_image: latency,
        images_per_second: 1e3 / latency,
        target_forwards_per_image: stats.target_forwards as f64 / images as f64,
        tokens_per_target_forward: stats.tokens_per_target_forward(),
        mean_accepted_length: stats.mean_accepted_length(),
        acceptance_rate: stats.acceptance_rate(),
        speedup_vs_ar: ar_latency / latency,
        device_per_step: m.counts.map(|c| DevicePerStep::new(c, m.steps)),
    }
}

/// Measure AR and every requested mode, then print the comparison.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    anyhow::ensure!(args.batch.iter().all(|&b| b > 0), "--batch sizes must be at least 1");
    if is_mar_dir(&args.model) {
        return mar::bench(&args);
    }
    refuse_mar_flags(&args.mar, args.modes.as_deref().unwrap_or_default())?;
    with_engine(&args.model.clone(), args)
}

impl EngineTask for BenchArgs {
    fn run<B: Backend>(self, engine: &BackendEngine<B>) -> anyhow::Result<()> {
        bench_with(engine, &self)
    }
}

fn bench_with<B: Backend>(engine: &BackendEngine<B>, args: &BenchArgs) -> anyhow::Result<()> {
    let num_classes = engine.config().gpt.num_classes as u32;
    let classes = args.classes.clone().unwrap_or_else(|| (0..num_classes.min(10)).collect());
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let ar = measure(engine, args, SpecMode::None, batch, &classes)?;
        let ar_latency = ar.wall.as_secs_f64() * 1e3 / args.images as f64;
        rows.push(row(SpecMode::None, batch, &ar, args.images, ar_latency));
        let modes = args.modes.clone().unwrap_or_else(|| vec![SpecMode::Vanilla, SpecMode::Cool]);
        for &mode in modes.iter().filter(|&&m| m != SpecMode::None) {
            rows.push(row(mode, batch, &measure(engine, args, mode, batch, &classes)?, args.images, ar_latency));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("backend: {}, weights: {}, cfg {}, temperature {}", engine.backend().name(), engine.dir().display(), args.sampling.cfg, args.sampling.temperature);
    println!(
        "{:<11} {:>5} {:>7} {:>10} {:>9} {:>14} {:>11} {:>13} {:>11} {:>9}",
        "mode", "batch", "images", "ms/image", "images/s", "target fwd/img", "tokens/fwd", "mean acc len", "acceptance", "speedup"
    );
    let device = rows.iter().filter_map(|r| r.device_per_step.as_ref().map(|d| (&r.mode, r.batch, d))).collect::<Vec<_>>();
    for r in &rows {
        // Plain AR verifies nothing: its acceptance columns are blank.
        let (accepted_length, acceptance) = if r.mode == "ar" {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.2}", r.mean_accepted_length), format!("{:.3}", r.acceptance_rate))
        };
        println!(
            "{:<11} {:>5} {:>7} {:>10.1} {:>9.2} {:>14.1} {:>11.2} {:>13} {:>11} {:>8.2}x",
            r.mode,
            r.batch,
            r.images,
            r.latency_ms_per_image,
            r.images_per_second,
            r.target_forwards_per_image,
            r.tokens_per_target_forward,
            accepted_length,
            acceptance,
            r.speedup_vs_ar
        );
    }
    if !device.is_empty() {
        println!("\ndevice operations per decoding step (one target forward for the batch, drafting included):");
        println!("{:<11} {:>5} {:>8} {:>13} {:>8} {:>10} {:>12}", "mode", "batch", "kernels", "host launches", "uploads", "downloads", "allocations");
        for (mode, batch, d) in device {
            println!("{mode:<11} {batch:>5} {:>8.1} {:>13.1} {:>8.1} {:>10.1} {:>12.1}", d.launches, d.host_launches, d.uploads, d.downloads, d.allocations);
        }
    }
    Ok(())
}
