//! `spire eval`: the speed–quality frontier. For plain decoding (AR; plain MAR on a MAR
//! directory) and every speculative setting (LlamaGen's rules; CSpD), generate N images over all
//! classes, score them with the evaluation network (FID, class accuracy, precision/recall,
//! bootstrap intervals) and print one table, optionally JSON, and a PNG plot of FID against
//! tokens per target forward. Both families run through [`evaluate`]; `llamagen.rs` and
//! `mar.rs` say how each generates a batch.

mod llamagen;
mod mar;
mod plot;
mod score;
mod speed;
mod sweep;
mod table;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::device::ModelArgs;
use crate::cli::generate::{check_writable, SamplingArgs};
use crate::cli::mar::is_mar_dir;
use crate::cli::mar_args::MarArgs;
use crate::cli::spec_args::{SpecArgs, SpecMode};
use crate::Image;

use score::Scorer;
use speed::{DecodeCounts, Speed};
use sweep::{Setting, Sweep, SweepFlags};
use table::{print_table, EvalReport, EvalRow};

/// Arguments of `spire eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Speculative modes to measure (plain decoding is always measured first, as the reference)
    /// [default: vanilla,cool,uniform,lantern,lantern-pp; on a MAR directory: cspd].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Option<Vec<SpecMode>>,
    /// Images per setting, cycling over the classes (seed, seed + 1, ...).
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub images: usize,
    /// Images generated together in shared forward passes.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of the first image.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Vary a decoding flag: `--sweep delta=1,1.25,1.5,2,3` (repeatable; settings are the
    /// product of the sweeps that change a mode; list values such as `tree` separated by `/`:
    /// `--sweep tree=3,2,1/2,2,1`); on a MAR directory the CSpD flags: `--sweep gamma=4,8,16,32`.
    #[arg(long)]
    pub sweep: Vec<Sweep>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub mar: MarArgs,
    /// Directory with eval_net.json (default: the weights directory; for a MAR directory without
    /// one, weights/demo, whose network scores the same 32x32 Fashion-MNIST images).
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

/// Check the arguments and outputs, then measure every setting of the directory's family.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images >= 10, "-n/--images must be at least 10 (FID needs a covariance; 2,000 for a stable one)");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.resamples > 0, "--resamples must be at least 1");
    check_writable(&args.plot, "--plot")?;
    if let Some(json) = &args.json {
        check_writable(json, "--json")?;
    }
    if is_mar_dir(&args.model) {
        mar::run(&args)
    } else {
        llamagen::run(args)
    }
}

/// A model family as `spire eval` measures it: how it generates one batch of images.
trait Family {
    /// Its decoding flags, which `--sweep` varies.
    type Flags: SweepFlags;
    /// One image's generated tokens.
    type Tokens;
    /// Its decoding counts.
    type Counts: DecodeCounts;

    /// Classes the images cycle through.
    fn classes(&self) -> u32;
    /// The tokens of one batch of `(class, seed)` images under `setting`, with their counts.
    fn generate(&self, setting: &Setting<Self::Flags>, images: &[(u32, u64)]) -> anyhow::Result<(Vec<Self::Tokens>, Self::Counts)>;
    /// The image of `tokens`.
    fn decode(&self, tokens: &Self::Tokens) -> anyhow::Result<Image>;
}

/// The images of `(class, seed)` `requests` under one setting, `batch` at a time, with their
/// counts and generation time (decoding to pixels excluded).
fn generate<F: Family>(family: &F, setting: &Setting<F::Flags>, requests: &[(u32, u64)], batch: usize, bar: &ProgressBar) -> anyhow::Result<(Vec<Image>, F::Counts, Duration)> {
    let (mut images, mut counts, mut wall) = (Vec::with_capacity(requests.len()), F::Counts::default(), Duration::ZERO);
    for chunk in requests.chunks(batch) {
        let start = Instant::now();
        let (tokens, chunk_counts) = family.generate(setting, chunk)?;
        wall += start.elapsed();
        counts.add(&chunk_counts);
        for tokens in &tokens {
            images.push(family.decode(tokens)?);
        }
        bar.inc(chunk.len() as u64);
    }
    Ok((images, counts, wall))
}

/// Measure every setting of `family` (from the weights directory `dir`), score each against
/// the network of `scorer`, and print, write and plot the report; `decoding` describes the
/// settings every row shares beyond cfg and temperature.
fn evaluate<F: Family>(family: &F, dir: &Path, settings: &[Setting<F::Flags>], scorer: &Scorer, decoding: Option<String>, args: &EvalArgs) -> anyhow::Result<()> {
    let bar = ProgressBar::new((settings.len() * args.images) as u64);
    bar.set_style(ProgressStyle::with_template("{msg:>28} [{bar:32}] {pos}/{len} images {elapsed_precise} (eta {eta})").expect("static template").progress_chars("=> "));
    let (test_images, test_quality) = scorer.test_split(args.images);
    let mut rows = vec![EvalRow::test_split(test_quality)];
    let requests: Vec<(u32, u64)> = (0..args.images).map(|i| (i as u32 % family.classes(), args.seed + i as u64)).collect();
    let classes: Vec<u32> = requests.iter().map(|&(class, _)| class).collect();
    for setting in settings {
        bar.set_message(setting.label());
        let (images, counts, wall) = generate(family, setting, &requests, args.batch, &bar)?;
        rows.push(EvalRow::measured(setting, Speed::new(&counts, wall, args.images), scorer.score(&images, &classes)));
    }
    bar.finish_and_clear();
    let report = EvalReport::new(dir, args, decoding, scorer.test_accuracy(), test_images, rows);
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    plot::write_png(&args.plot, &report.frontier())?;
    eprintln!("wrote {}{}", args.plot.display(), args.json.as_ref().map_or(String::new(), |j| format!(" and {}", j.display())));
    Ok(())
}
