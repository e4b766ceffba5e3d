//! `spire eval`: the speed–quality frontier. For plain AR and every speculative setting, generate
//! N images over all classes, score them with the evaluation network (FID, class accuracy,
//! precision/recall, bootstrap intervals) and print one table, optionally JSON, and a PNG plot
//! of FID against tokens per target forward.

mod plot;
mod sweep;
mod table;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;
use crate::engine::{BackendEngine, GenerationStats, Request};
use crate::eval::net::EvalNet;
use crate::eval::quality::{score, Scoring};
use crate::eval::reference::RealReference;

use crate::cli::device::{weights_dir, with_engine, EngineTask, ModelArgs};
use crate::cli::generate::{check_writable, SamplingArgs};
use crate::cli::mar::is_mar_dir;
use crate::cli::spec_args::{SpecArgs, SpecMode};

use sweep::{expand, Setting, Sweep};
use table::{print_table, EvalReport, EvalRow, Speed};

/// Arguments of `spire eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Speculative modes to measure (plain AR is always measured first, as the reference).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "vanilla,cool,uniform,lantern,lantern-pp")]
    pub modes: Vec<SpecMode>,
    /// Images per setting, cycling over the classes (seed, seed + 1, ...).
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub images: usize,
    /// Images generated together in shared forward passes.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of the first image.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Vary a speculative flag: `--sweep delta=1,1.25,1.5,2,3` (repeatable; settings are the
    /// product of the sweeps that change a mode; list values such as `tree` separated by `/`:
    /// `--sweep tree=3,2,1/2,2,1`).
    #[arg(long)]
    pub sweep: Vec<Sweep>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Directory with eval_net.json (default: the weights directory).
    #[arg(long)]
    pub eval_net: Option<PathBuf>,
    /// Bootstrap resamples per confidence interval.
    #[arg(long, default_value_t = 200)]
    pub resamples: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The PNG plot of FID against tokens per target forward.
    #[arg(long, default_value = "frontier.png")]
    pub plot: PathBuf,
}

/// Check the arguments and outputs, then measure every setting.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images >= 10, "-n/--images must be at least 10 (FID needs a covariance; 2,000 for a stable one)");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.resamples > 0, "--resamples must be at least 1");
    anyhow::ensure!(!is_mar_dir(&args.model), "spire eval runs on LlamaGen weights directories; MAR (CSpD) is not supported yet");
    check_writable(&args.plot, "--plot")?;
    if let Some(json) = &args.json {
        check_writable(json, "--json")?;
    }
    with_engine(&args.model.clone(), args)
}

impl EngineTask for EvalArgs {
    fn run<B: Backend>(self, engine: &BackendEngine<B>) -> anyhow::Result<()> {
        evaluate(engine, &self)
    }
}

/// Generated images of one setting, with their requested classes and decoding statistics.
struct Generated {
    images: Vec<crate::Image>,
    classes: Vec<u32>,
    stats: GenerationStats,
    /// Generation time (decoding images to pixels excluded).
    wall: Duration,
}

fn generate<B: Backend>(engine: &BackendEngine<B>, args: &EvalArgs, setting: &Setting, bar: &ProgressBar) -> anyhow::Result<Generated> {
    let classes = engine.config().gpt.num_classes.max(1) as u32;
    let requests: Vec<Request> = (0..args.images)
        .map(|i| Request { class_id: i as u32 % classes, seed: args.seed + i as u64, sampling: args.sampling.params(), speculative: setting.spec.config(setting.mode), ..Request::new(0, 0) })
        .collect();
    let mut out = Generated { images: Vec::with_capacity(args.images), classes: requests.iter().map(|r| r.class_id).collect(), stats: GenerationStats::default(), wall: Duration::ZERO };
    for chunk in requests.chunks(args.batch) {
        let start = Instant::now();
        let generations = engine.generate_tokens_batch(chunk, &mut |_, _| {})?;
        out.wall += start.elapsed();
        for generation in &generations {
            out.stats.accumulate(&generation.stats);
            out.images.push(engine.decode(&generation.tokens)?);
        }
        bar.inc(chunk.len() as u64);
    }
    Ok(out)
}

fn evaluate<B: Backend>(engine: &BackendEngine<B>, args: &EvalArgs) -> anyhow::Result<()> {
    let net_dir = args.eval_net.clone().map_or_else(|| weights_dir(&args.model), Ok)?;
    let net = EvalNet::load(&net_dir)?;
    let reference = RealReference::load(&net.reference_path(), net.config().feature_dim).context("loading the real-data reference of the evaluation network")?;
    let settings = expand(&args.modes, &args.spec, &args.sweep)?;
    let scoring = Scoring { resamples: args.resamples, ..Scoring::default() };
    let bar = ProgressBar::new((settings.len() * args.images) as u64);
    bar.set_style(ProgressStyle::with_template("{msg:>28} [{bar:32}] {pos}/{len} images {elapsed_precise} (eta {eta})").expect("static template").progress_chars("=> "));

    // The test split against the training split: the best a model can do at this sample size.
    let n_test = args.images.min(reference.test_sample.len());
    let test = &reference.test_sample[..n_test];
    let test_predicted: Vec<u32> = test.iter().map(|f| net.classify(f) as u32).collect();
    let mut rows = vec![EvalRow::new("test split".into(), None, None, score(test, &reference.test_labels[..n_test], &test_predicted, &reference.train, &reference.train_sample, scoring))];

    for setting in &settings {
        bar.set_message(setting.label());
        let generated = generate(engine, args, setting, &bar)?;
        let features = net.features_batch(&generated.images)?;
        let predicted: Vec<u32> = features.iter().map(|f| net.classify(f) as u32).collect();
        let quality = score(&features, &generated.classes, &predicted, &reference.train, &reference.train_sample, scoring);
        let speed = Speed::new(&generated.stats, generated.wall, args.images);
        rows.push(EvalRow::new(setting.label(), Some(setting), Some(speed), quality));
    }
    bar.finish_and_clear();
    let report = EvalReport::new(engine.dir(), args, net.config().test_accuracy, n_test, rows);
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    plot::write_png(&args.plot, &report.frontier())?;
    eprintln!("wrote {}{}", args.plot.display(), args.json.as_ref().map_or(String::new(), |j| format!(" and {}", j.display())));
    Ok(())
}
