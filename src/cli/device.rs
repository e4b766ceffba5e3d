//! Choosing the weights and the device, shared by every subcommand that runs a model.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use spire::engine::random_tiny;
use spire::engine::Engine;

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU reference backend (always available).
    Cpu,
    /// An NVIDIA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// Which model to load and where.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Weights directory: config.json plus safetensors (e.g. weights/demo, or the output of
    /// tools/convert_llamagen.py for an official LlamaGen checkpoint).
    #[arg(long, default_value = "weights/demo", conflicts_with = "random_tiny")]
    pub weights: PathBuf,
    /// Use a tiny model with RANDOM weights instead (for smoke tests: the image is noise).
    #[arg(long)]
    pub random_tiny: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// KV cache blocks (of 16 tokens) per model; default: just enough for one image.
    #[arg(long)]
    pub kv_blocks: Option<usize>,
}

/// Load the engine the arguments describe.
pub fn load_engine(args: &ModelArgs) -> anyhow::Result<Engine> {
    if args.device == Device::Cuda {
        if cfg!(feature = "cuda") {
            bail!("the CUDA backend is not implemented yet in this build; use --device cpu");
        }
        bail!("this spire binary was built without CUDA support: rebuild with `cargo build --release --features cuda`, or use --device cpu");
    }
    let dir = if args.random_tiny {
        let dir = std::env::temp_dir().join(format!("spire-random-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        random_tiny::write_random_model(&dir, &random_tiny::tiny_config(), 0)?;
        eprintln!("NOTE: --random-tiny uses a tiny model with RANDOM weights; its images are noise, not samples of a trained model.");
        dir
    } else {
        args.weights.clone()
    };
    let engine = Engine::load(&dir).with_context(|| format!("loading weights from {}", dir.display()))?;
    Ok(match args.kv_blocks {
        Some(blocks) => engine.with_kv_blocks(blocks),
        None => engine,
    })
}
