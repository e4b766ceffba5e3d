//! `Engine`: loads a weights directory onto a backend and generates images.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, CpuBackend};
use crate::engine::ar::generate_ar;
use crate::engine::context::DecodeContext;
use crate::engine::image::Image;
use crate::engine::request::{Generation, Request};
use crate::engine::stats::GenerationStats;
use crate::error::{Error, Result};
use crate::kv::PagedKvCache;
use crate::model::vq::VqDecoder;
use crate::model::Gpt;
use crate::sampling::Rng;
use crate::weights::{ModelConfig, WeightFile};

/// Token slots per KV block.
pub const KV_BLOCK_SIZE: usize = 16;

/// A loaded model set (target, optional drafters, VQ decoder) on a backend.
pub struct Engine<B: Backend = CpuBackend> {
    backend: B,
    dir: PathBuf,
    config: ModelConfig,
    target: Gpt<B>,
    vq: Option<VqDecoder>,
    kv_blocks: Option<usize>,
}

fn open(dir: &Path, file: &str) -> Result<Arc<WeightFile>> {
    Ok(Arc::new(WeightFile::open(&dir.join(file))?))
}

impl Engine<CpuBackend> {
    /// Load the weights directory `dir` (config.json + safetensors) on the CPU backend.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(CpuBackend, dir)
    }
}

impl<B: Backend> Engine<B> {
    /// Load the weights directory `dir` onto `backend`.
    pub fn load_on(backend: B, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config = ModelConfig::load(&dir)?;
        let target = Gpt::load(&backend, &open(&dir, &config.gpt.file)?, &config.gpt)?;
        let vq = match &config.vq {
            Some(vq) => Some(VqDecoder::load(&WeightFile::open(&dir.join(&vq.file))?, vq)?),
            None => None,
        };
        Ok(Self { backend, dir, config, target, vq, kv_blocks: None })
    }

    /// Use a KV pool of exactly `blocks` blocks of [`KV_BLOCK_SIZE`] slots per model (default:
    /// just enough for one image with CFG and the largest draft window).
    pub fn with_kv_blocks(mut self, blocks: usize) -> Self {
        self.kv_blocks = Some(blocks);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The weights directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The target model.
    pub fn target(&self) -> &Gpt<B> {
        &self.target
    }

    /// A fresh KV cache for `gpt`, sized for one image (two sequences with CFG) plus a
    /// speculative window of `window` tokens.
    pub fn new_cache(&self, gpt: &Gpt<B>, window: usize) -> Result<PagedKvCache<B>> {
        let per_seq = (gpt.config().max_seq_len() + window).div_ceil(KV_BLOCK_SIZE);
        gpt.new_cache(&self.backend, self.kv_blocks.unwrap_or(2 * per_seq), KV_BLOCK_SIZE)
    }

    fn check_request(&self, request: &Request) -> Result<()> {
        request.sampling.validate()?;
        let n = self.config.gpt.num_classes;
        if request.class_id as usize >= n {
            return Err(Error::InvalidRequest(format!(
                "class id {} out of range: this model has {n} classes (0..={})",
                request.class_id,
                n - 1
            )));
        }
        Ok(())
    }

    /// Generate the image tokens for `request`, reporting (done, total) to `progress`.
    pub fn generate_tokens(&self, request: &Request, progress: &mut dyn FnMut(usize, usize)) -> Result<Generation> {
        self.check_request(request)?;
        let start = Instant::now();
        let mut ctx = DecodeContext {
            backend: &self.backend,
            params: request.sampling,
            rng: Rng::new(request.seed),
            stats: GenerationStats::default(),
            progress,
        };
        let mut cache = self.new_cache(&self.target, 0)?;
        let tokens = generate_ar(&mut ctx, &self.target, &mut cache, request.class_id)?;
        let mut stats = ctx.stats;
        stats.elapsed = start.elapsed();
        Ok(Generation { tokens, stats })
    }

    /// Decode image tokens into an RGB image with the VQ decoder.
    pub fn decode(&self, tokens: &[u32]) -> Result<Image> {
        let vq = self.vq.as_ref().ok_or_else(|| {
            Error::InvalidRequest(format!("{} has no \"vq\" section: this weights directory cannot decode images", self.dir.display()))
        })?;
        let grid = self.config.gpt.grid_size();
        vq.decode(tokens, grid, grid)
    }

    /// Generate one image for `request`.
    pub fn generate(&self, request: &Request) -> Result<Image> {
        let generation = self.generate_tokens(request, &mut |_, _| {})?;
        self.decode(&generation.tokens)
    }
}
