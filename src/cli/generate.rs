//! `spire generate`: images for one or more classes, written as PNG.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{BackendEngine, GenerationStats, Image, Request};
use crate::sampling::SamplingParams;

use crate::cli::device::{with_engine, EngineTask, ModelArgs};
use crate::cli::mar::{self, is_mar_dir, refuse_mar_flags};
use crate::cli::mar_args::MarArgs;
use crate::cli::spec_args::SpecArgs;

/// Arguments of `spire generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Class id(s) to draw, comma-separated (e.g. `3` or `0,1,2`).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub class: Vec<u32>,
    /// Images per class; more than one image in all makes a grid with one row per class.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Images generated together in shared forward passes (each keeps its own seed: the images
    /// are the same for any batch size).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seed of the first image (image i uses seed + i): the same seed gives the same image.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub mar: MarArgs,
    /// Output PNG path.
    #[arg(long, default_value = "sample.png")]
    pub out: PathBuf,
    /// Write every image as its own PNG in this directory (`{index:06}_class{class}.png`)
    /// instead of a grid at --out, keeping none in memory (e.g. 50,000 images for
    /// tools/fid_npz.py).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Logits-processing flags shared by `generate` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Classifier-free guidance scale (1 = off; LlamaGen uses 1.65-2.0).
    #[arg(long, default_value_t = 2.0)]
    pub cfg: f32,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
}

impl SamplingArgs {
    /// The library's sampling parameters.
    pub fn params(&self) -> SamplingParams {
        SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, cfg_scale: self.cfg }
    }
}

fn progress_bar(total: usize, label: String) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:32}] {pos}/{len} tokens {elapsed_precise}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(label);
    bar
}

/// Generate the requested images and write the PNG.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create --out-dir {}", dir.display()))?;
            check_writable(&dir.join("000000_probe.png"), "--out-dir")?;
        }
        None => check_writable(&args.out, "--out")?,
    }
    if is_mar_dir(&args.model) {
        anyhow::ensure!(args.out_dir.is_none(), "--out-dir is not supported for MAR directories yet: drop it (the grid goes to --out)");
        return mar::generate(&args);
    }
    refuse_mar_flags(&args.mar, &[args.spec.spec])?;
    with_engine(&args.model.clone(), args)
}

/// Fail now, before any generation, if `path` (the value of option `flag`) cannot be written.
pub fn check_writable(path: &Path, flag: &str) -> anyhow::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).with_context(|| format!("cannot write {} (choose another {flag})", path.display()))?;
    if !existed {
        std::fs::remove_file(path).with_context(|| format!("removing the probe file {}", path.display()))?;
    }
    Ok(())
}

impl EngineTask for GenerateArgs {
    fn run<B: crate::backend::Backend>(self, engine: &BackendEngine<B>) -> anyhow::Result<()> {
        generate_with(engine, &self)
    }
}

/// One line of statistics for a generated image.
fn report(request: &Request, s: &GenerationStats) {
    let acceptance = if request.speculative.is_some() {
        format!(", mean accepted length {:.2}, acceptance {:.2}", s.mean_accepted_length(), s.acceptance_rate())
    } else {
        String::new()
    };
    eprintln!(
        "  class {} seed {}: {} tokens, {} target forwards, {:.2} tokens/forward{acceptance}",
        request.class_id,
        request.seed,
        s.tokens,
        s.target_forwards,
        s.tokens_per_target_forward()
    );
}

fn generate_with<B: crate::backend::Backend>(engine: &BackendEngine<B>, args: &GenerateArgs) -> anyhow::Result<()> {
    let requests: Vec<Request> = args
        .class
        .iter()
        .flat_map(|&class| std::iter::repeat_n(class, args.samples))
        .enumerate()
        .map(|(i, class)| Request { class_id: class, seed: args.seed + i as u64, sampling: args.sampling.params(), speculative: args.spec.config(args.spec.spec), ..Request::new(0, 0) })
        .collect();
    let mut images = Vec::with_capacity(if args.out_dir.is_some() { 0 } else { requests.len() });
    let mut written = 0;
    for chunk in requests.chunks(args.batch) {
        let label = match chunk {
            [one] => format!("class {} seed {}", one.class_id, one.seed),
            _ => format!("{} images", chunk.len()),
        };
        let bar = progress_bar(engine.config().gpt.block_size * chunk.len(), label);
        let generations = engine.generate_tokens_batch(chunk, &mut |done, _| bar.set_position(done as u64))?;
        bar.finish();
        for (request, generation) in chunk.iter().zip(&generations) {
            report(request, &generation.stats);
            let image = engine.decode(&generation.tokens)?;
            match &args.out_dir {
                Some(dir) => {
                    let path = dir.join(format!("{written:06}_class{}.png", request.class_id));
                    image.save_png(&path).with_context(|| format!("writing {}", path.display()))?;
                    written += 1;
                }
                None => images.push(image),
            }
        }
    }
    if let Some(dir) = &args.out_dir {
        eprintln!("wrote {written} images to {}", dir.display());
        return Ok(());
    }
    let image = if images.len() == 1 { images.remove(0) } else { Image::grid(&images, args.samples) };
    image.save_png(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} ({}x{})", args.out.display(), image.width, image.height);
    Ok(())
}
