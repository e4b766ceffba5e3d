//! Choosing the weights and the device, shared by every subcommand that runs a model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::backend::{Backend, CpuBackend, KvDtype};
use crate::engine::random_tiny;
use crate::engine::BackendEngine;

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU reference backend (always available).
    Cpu,
    /// An NVIDIA GPU (needs a build with `--features cuda`).
    Cuda,
    /// The CUDA kernels on the CPU, through spire's CUDA emulator: slow, for checking the GPU
    /// code path on a machine without a GPU.
    Emulator,
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
    /// CUDA device ordinal (with --device cuda).
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// KV cache blocks (of 16 tokens) per model; default: just enough for the images of a batch.
    #[arg(long)]
    pub kv_blocks: Option<usize>,
    /// KV cache element type: f32, or bf16 (half the bytes attention reads; on the CPU the
    /// values are rounded to bf16 and kept in f32, to compute what the GPU computes).
    #[arg(long, value_enum, default_value_t = KvType::F32)]
    pub kv_dtype: KvType,
}

/// `--kv-dtype` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvType {
    /// f32.
    F32,
    /// bfloat16.
    Bf16,
}

impl From<KvType> for KvDtype {
    fn from(t: KvType) -> Self {
        match t {
            KvType::F32 => KvDtype::F32,
            KvType::Bf16 => KvDtype::Bf16,
        }
    }
}

/// A command that runs on an engine of any backend.
pub trait EngineTask {
    /// Run with the loaded engine.
    fn run<B: Backend>(self, engine: &BackendEngine<B>) -> anyhow::Result<()>;
}

impl ModelArgs {
    /// The library's device for these arguments.
    pub fn library_device(&self) -> crate::Device {
        match self.device {
            Device::Cpu => crate::Device::Cpu,
            Device::Cuda => crate::Device::Cuda(self.gpu),
            Device::Emulator => crate::Device::Emulator,
        }
    }
}

/// The weights directory the arguments name, writing the random tiny model first if asked.
pub fn weights_dir(args: &ModelArgs) -> anyhow::Result<PathBuf> {
    if !args.random_tiny {
        return Ok(args.weights.clone());
    }
    let dir = std::env::temp_dir().join(format!("spire-random-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    random_tiny::write_random_model(&dir, &random_tiny::tiny_config(), 0)?;
    eprintln!("NOTE: --random-tiny uses a tiny model with RANDOM weights; its images are noise, not samples of a trained model.");
    Ok(dir)
}

fn load_on<B: Backend>(backend: B, dir: &Path, args: &ModelArgs) -> anyhow::Result<BackendEngine<B>> {
    let engine = BackendEngine::load_on(backend, dir).with_context(|| format!("loading weights from {}", dir.display()))?.with_kv_dtype(args.kv_dtype.into());
    Ok(match args.kv_blocks {
        Some(blocks) => engine.with_kv_blocks(blocks),
        None => engine,
    })
}

/// Load the engine the arguments describe on the chosen device and run `task` with it.
pub fn with_engine(args: &ModelArgs, task: impl EngineTask) -> anyhow::Result<()> {
    let dir = weights_dir(args)?;
    match args.device {
        Device::Cpu => task.run(&load_on(CpuBackend, &dir, args)?),
        Device::Cuda => run_on_cuda(&dir, args, task),
        Device::Emulator => run_on_emulator(&dir, args, task),
    }
}

#[cfg(feature = "emulator")]
fn run_on_emulator(dir: &Path, args: &ModelArgs, task: impl EngineTask) -> anyhow::Result<()> {
    let backend = crate::backend::EmuBackend::new().context("starting the CUDA emulator (use --device cpu)")?;
    task.run(&load_on(backend, dir, args)?)
}

#[cfg(not(feature = "emulator"))]
fn run_on_emulator(_dir: &Path, _args: &ModelArgs, _task: impl EngineTask) -> anyhow::Result<()> {
    anyhow::bail!("this spire binary was built without the CUDA emulator (default feature `emulator`): rebuild with default features, or use --device cpu")
}

#[cfg(feature = "cuda")]
fn run_on_cuda(dir: &Path, args: &ModelArgs, task: impl EngineTask) -> anyhow::Result<()> {
    let backend = crate::backend::CudaBackend::new(args.gpu).context("opening the GPU (use --device cpu to run without one)")?;
    task.run(&load_on(backend, dir, args)?)
}

#[cfg(not(feature = "cuda"))]
fn run_on_cuda(_dir: &Path, _args: &ModelArgs, _task: impl EngineTask) -> anyhow::Result<()> {
    anyhow::bail!("this spire binary was built without CUDA support: rebuild with `cargo build --release --features cuda`, or use --device cpu")
}
