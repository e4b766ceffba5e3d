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
    /// Chain lengths to compare for every speculative mode, comma-separated (e.g. `1,2,3,4`;
    /// overrides --draft-len; not with --tree). The best length depends on the backend: how
    /// much more a verification of k + 1 rows costs than a decoding step of one.
    #[arg(long, value_delimiter = ',')]
    pub draft_lens: Option<Vec<usize>>,
    /// Measure every row this many times, alternating between rows, and report the median
    /// time (token counts do not change between rounds): steadier ratios on a busy machine.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One speculative setting a bench row measures: the mode, and its chain length when
/// --draft-lens sweeps it.
#[derive(Clone, Copy)]
struct Setting {
    mode: SpecMode,
    draft_len: Option<usize>,
}

impl Setting {
    /// The flags of this setting: the command line's, with the chain length replaced.
    fn spec(&self, args: &SpecArgs) -> SpecArgs {
        SpecArgs { draft_len: self.draft_len.unwrap_or(args.draft_len), ..args.clone() }
    }

    /// The drafted shape, as the table shows it: `-` for AR, the chain length or the tree.
    fn draft(&self, args: &SpecArgs) -> String {
        match (self.mode, &args.tree) {
            (SpecMode::None, _) => "-".into(),
            (_, Some(tree)) => tree.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
            _ => self.spec(args).draft_len.to_string(),
        }
    }
}

/// One row of the bench table.
#[derive(Debug, Serialize)]
struct BenchRow {
    mode: String,
    /// Drafted tokens per step: the chain length, or the tree's widths (`-` for AR).
    draft: String,
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
fn measure<B: Backend>(engine: &BackendEngine<B>, args: &BenchArgs, setting: Setting, batch: usize, classes: &[u32]) -> anyhow::Result<Measured> {
    let bar = ProgressBar::new(args.images as u64);
    bar.set_style(ProgressStyle::with_template("{msg:>16} [{bar:32}] {pos}/{len} images").expect("static template"));
    bar.set_message(format!("{:?} x{batch}", setting.mode).to_lowercase());
    let speculative = setting.spec(&args.spec).config(setting.mode);
    let requests: Vec<Request> = (0..args.images)
        .map(|i| Request { class_id: classes[i % classes.len()], seed: args.seed + i as u64, sampling: args.sampling.params(), speculative: speculative.clone(), ..Request::new(0, 0) })
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

/// Milliseconds per image of `m`.
fn latency_ms(m: &Measured, images: usize) -> f64 {
    m.wall.as_secs_f64() * 1e3 / images as f64
}

fn row(setting: Setting, args: &BenchArgs, batch: usize, m: &Measured, ar_latency: f64) -> BenchRow {
    let images = args.images;
    let latency = latency_ms(m, images);
    let stats = &m.stats;
    BenchRow {
        mode: format!("{:?}", setting.mode).to_lowercase().replace("none", "ar"),
        draft: setting.draft(&args.spec),
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

/// Plain AR first, then every requested speculative mode at every requested chain length.
fn settings(args: &BenchArgs) -> Vec<Setting> {
    let modes = args.modes.clone().unwrap_or_else(|| vec![SpecMode::Vanilla, SpecMode::Cool]);
    let lens: Vec<Option<usize>> = args.draft_lens.as_ref().map_or(vec![None], |lens| lens.iter().copied().map(Some).collect());
    let speculative = modes.into_iter().filter(|&m| m != SpecMode::None).flat_map(|mode| lens.iter().map(move |&draft_len| Setting { mode, draft_len }));
    std::iter::once(Setting { mode: SpecMode::None, draft_len: None }).chain(speculative).collect()
}

/// Every setting measured `args.rounds` times in turn; each keeps its first round's counts and
/// its median wall time.
fn measure_rounds<B: Backend>(engine: &BackendEngine<B>, args: &BenchArgs, settings: &[Setting], batch: usize, classes: &[u32]) -> anyhow::Result<Vec<Measured>> {
    let mut rounds: Vec<Vec<Measured>> = settings.iter().map(|_| Vec::with_capacity(args.rounds)).collect();
    for _ in 0..args.rounds {
        for (setting, runs) in settings.iter().zip(&mut rounds) {
            runs.push(measure(engine, args, *setting, batch, classes)?);
        }
    }
    Ok(rounds
        .into_iter()
        .map(|mut runs| {
            let mut walls: Vec<Duration> = runs.iter().map(|m| m.wall).collect();
            walls.sort();
            let mut first = runs.swap_remove(0);
            first.wall = walls[walls.len() / 2];
            first
        })
        .collect())
}

/// Measure AR and every requested mode, then print the comparison.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    anyhow::ensure!(args.batch.iter().all(|&b| b > 0), "--batch sizes must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    if let Some(lens) = &args.draft_lens {
        anyhow::ensure!(args.spec.tree.is_none(), "--draft-lens sweeps chain lengths; it cannot be combined with --tree");
        anyhow::ensure!(!lens.is_empty() && lens.iter().all(|&k| k > 0), "--draft-lens must list chain lengths of at least 1, e.g. 1,2,4");
    }
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
    let settings = settings(args);
    for &batch in &args.batch {
        let measured = measure_rounds(engine, args, &settings, batch, &classes)?;
        let ar_latency = latency_ms(&measured[0], args.images);
        rows.extend(settings.iter().zip(&measured).map(|(&setting, m)| row(setting, args, batch, m, ar_latency)));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("backend: {}, weights: {}, cfg {}, temperature {}", engine.backend().name(), engine.dir().display(), args.sampling.cfg, args.sampling.temperature);
    println!(
        "{:<11} {:>5} {:>5} {:>7} {:>10} {:>9} {:>14} {:>11} {:>13} {:>11} {:>9}",
        "mode", "draft", "batch", "images", "ms/image", "images/s", "target fwd/img", "tokens/fwd", "mean acc len", "acceptance", "speedup"
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
            "{:<11} {:>5} {:>5} {:>7} {:>10.1} {:>9.2} {:>14.1} {:>11.2} {:>13} {:>11} {:>8.2}x",
            r.mode,
            r.draft,
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
