//! `MarEngine`: loads a MAR weights directory (`"family": "mar"`) onto a backend and generates
//! images: MAR's transformer and diffusion head on the backend, the KL VAE on the CPU. Plain
//! MAR only; continuous speculative decoding (CSpD) is not implemented yet.

use std::path::Path;
use std::sync::Arc;

use crate::backend::{Backend, CpuBackend};
use crate::decode::mar::{generate_tokens, MarNoise, MarSampling};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::model::diffusion::{DiffusionHead, DiffusionSchedule};
use crate::model::mar::MarModel;
use crate::model::vae::VaeDecoder;
use crate::sampling::Rng;
use crate::weights::{DirConfig, MarDirConfig, ModelConfig, WeightFile};

/// One MAR image to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarRequest {
    /// Class label.
    pub class: usize,
    /// Seed of the order and of every noise value: the same seed gives the same image.
    pub seed: u64,
    /// Steps, guidance and temperature.
    pub sampling: MarSampling,
}

impl MarRequest {
    /// A request for `class` with `seed` and MAR's default sampling settings.
    pub fn new(class: usize, seed: u64) -> Self {
        Self { class, seed, sampling: MarSampling::default() }
    }
}

/// A loaded MAR model set on a backend.
pub struct MarEngine<B: Backend = CpuBackend> {
    backend: B,
    config: MarDirConfig,
    model: MarModel<B>,
    head: DiffusionHead<B>,
    schedule: DiffusionSchedule,
    vae: Option<VaeDecoder>,
}

impl MarEngine<CpuBackend> {
    /// Load the MAR weights directory `dir` on the CPU backend.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(CpuBackend, dir)
    }
}

impl<B: Backend> MarEngine<B> {
    /// Load the MAR weights directory `dir` onto `backend` (the target model; a `draft`
    /// section is checked but not loaded).
    pub fn load_on(backend: B, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = match DirConfig::load(dir)? {
            DirConfig::Mar(config) => config,
            DirConfig::LlamaGen(_) => return Err(Error::Config { path: ModelConfig::path_in(dir), reason: "this is a LlamaGen directory, not a MAR one (\"family\": \"mar\"); load it with spire::Engine".into() }),
        };
        let file = Arc::new(WeightFile::open(&dir.join(&config.mar.file))?);
        let model = MarModel::load(&backend, &file, &config.mar)?;
        let head = DiffusionHead::load(&backend, &file, &config.mar)?;
        let schedule = DiffusionSchedule::cosine(config.mar.num_sampling_steps, config.mar.diffusion_steps)?;
        let vae = match &config.vae {
            Some(vae) => Some(VaeDecoder::load(&WeightFile::open(&dir.join(&vae.file))?, vae)?),
            None => None,
        };
        Ok(Self { backend, config, model, head, schedule, vae })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &MarDirConfig {
        &self.config
    }

    /// The tokens (`[seq_len, token_dim]`) of `request`'s image: the order and noise drawn
    /// from its seed, then `generate_tokens`.
    pub fn generate_tokens(&self, request: &MarRequest) -> Result<Vec<f32>> {
        let mar = &self.config.mar;
        let noise = MarNoise::draw(&mut Rng::new(request.seed), mar.seq_len(), mar.token_dim(), self.schedule.steps());
        generate_tokens(&self.backend, &self.model, &self.head, &self.schedule, request.class, &request.sampling, &noise)
    }

    /// Generate `request`'s image (needs the `vae` section).
    pub fn generate(&self, request: &MarRequest) -> Result<Image> {
        let vae = self.vae.as_ref().ok_or_else(|| Error::InvalidRequest("this MAR directory has no \"vae\" section: generate_tokens works, images need the VAE".into()))?;
        vae.decode(&self.config.mar, &self.generate_tokens(request)?)
    }
}

/// The error `Engine::load` gives for a MAR directory.
pub(crate) fn not_llamagen(dir: &Path) -> Error {
    Error::InvalidRequest(format!("{} holds a MAR model (\"family\": \"mar\"); Engine generates LlamaGen models: use spire::engine::MarEngine", dir.display()))
}
