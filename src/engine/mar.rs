//! `MarEngine`: loads a MAR weights directory (`"family": "mar"`) onto a backend and generates
//! images, alone or in batches, plain or with continuous speculative decoding (CSpD) against the
//! directory's `draft` model or the target itself: MAR's transformers and diffusion heads on the
//! backend, the KL VAE on the CPU.

use std::path::Path;
use std::sync::Arc;

use crate::backend::{Backend, CpuBackend};
use crate::decode::cspd::{generate_cspd_batch, CspdOptions, CspdOutput};
use crate::decode::mar::{generate_batch, MarImage, MarNoise, MarPredictor, MarSampling};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::model::diffusion::{DiffusionHead, DiffusionSchedule};
use crate::model::mar::MarModel;
use crate::model::vae::VaeDecoder;
use crate::sampling::Rng;
use crate::weights::{DirConfig, MarConfig, MarDirConfig, ModelConfig, WeightFile};

/// The random stream of CSpD's acceptance tests and residual draws, forked from the request's
/// seed (whose own stream draws the order and noise, as for plain MAR).
const ACCEPTANCE_STREAM: u64 = 1;

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

/// Which model drafts for CSpD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarDraft {
    /// The directory's `draft` section (a smaller MAR of the same token space).
    Section,
    /// The target itself (self-speculation: a check of the machinery, no speed-up).
    Target,
}

/// A MAR transformer and its diffusion head.
struct MarNet<B: Backend> {
    model: MarModel<B>,
    head: DiffusionHead<B>,
}

impl<B: Backend> MarNet<B> {
    /// Load the model of section `config` from its file in `dir`.
    fn load(backend: &B, dir: &Path, config: &MarConfig) -> Result<Self> {
        let file = Arc::new(WeightFile::open(&dir.join(&config.file))?);
        Ok(Self { model: MarModel::load(backend, &file, config)?, head: DiffusionHead::load(backend, &file, config)? })
    }
}

/// A loaded MAR model set on a backend.
pub struct MarEngine<B: Backend = CpuBackend> {
    backend: B,
    config: MarDirConfig,
    target: MarNet<B>,
    draft: Option<MarNet<B>>,
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
    /// Load the MAR weights directory `dir` onto `backend`: the target, the `draft` section's
    /// model if there is one, and the VAE if there is one.
    pub fn load_on(backend: B, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = match DirConfig::load(dir)? {
            DirConfig::Mar(config) => config,
            DirConfig::LlamaGen(_) => return Err(Error::Config { path: ModelConfig::path_in(dir), reason: "this is a LlamaGen directory, not a MAR one (\"family\": \"mar\"); load it with spire::Engine".into() }),
        };
        let target = MarNet::load(&backend, dir, &config.mar)?;
        let draft = config.draft.as_ref().map(|draft| MarNet::load(&backend, dir, draft)).transpose()?;
        let schedule = DiffusionSchedule::cosine(config.mar.num_sampling_steps, config.mar.diffusion_steps)?;
        let vae = match &config.vae {
            Some(vae) => Some(VaeDecoder::load(&WeightFile::open(&dir.join(&vae.file))?, vae)?),
            None => None,
        };
        Ok(Self { backend, config, target, draft, schedule, vae })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &MarDirConfig {
        &self.config
    }

    /// Whether the directory has a `draft` model (for [`MarDraft::Section`]).
    pub fn has_draft(&self) -> bool {
        self.draft.is_some()
    }

    /// The order and noise of `request`'s image, drawn from its seed.
    fn noise(&self, request: &MarRequest) -> MarNoise {
        let mar = &self.config.mar;
        MarNoise::draw(&mut Rng::new(request.seed), mar.seq_len(), mar.token_dim(), self.schedule.steps())
    }

    /// `net` predicting on this engine's backend.
    fn predictor<'a>(&'a self, net: &'a MarNet<B>) -> MarPredictor<'a, B> {
        MarPredictor { backend: &self.backend, model: &net.model, head: &net.head, schedule: &self.schedule }
    }

    /// The requests' shared sampling settings and each image's order and noise (error for an
    /// empty batch or one whose requests sample differently).
    fn batch_noise(&self, requests: &[MarRequest]) -> Result<(MarSampling, Vec<MarNoise>)> {
        let sampling = requests.first().ok_or_else(|| Error::InvalidRequest("a MAR batch needs at least one request".into()))?.sampling;
        if let Some(other) = requests.iter().find(|r| r.sampling != sampling) {
            return Err(Error::InvalidRequest(format!("the images of a MAR batch share their sampling settings: {sampling:?} and {:?}", other.sampling)));
        }
        Ok((sampling, requests.iter().map(|r| self.noise(r)).collect()))
    }

    /// The tokens (`[seq_len, token_dim]`) of `request`'s image: the order and noise drawn
    /// from its seed, then plain MAR generation.
    pub fn generate_tokens(&self, request: &MarRequest) -> Result<Vec<f32>> {
        Ok(self.generate_tokens_batch(std::slice::from_ref(request))?.remove(0))
    }

    /// The tokens of a batch of requests (each with its class and seed, all with the same
    /// sampling settings) generated together, one batched pass per step: each image the same as
    /// [`Self::generate_tokens`] gives it alone.
    pub fn generate_tokens_batch(&self, requests: &[MarRequest]) -> Result<Vec<Vec<f32>>> {
        let (sampling, noises) = self.batch_noise(requests)?;
        let images: Vec<MarImage> = requests.iter().zip(&noises).map(|(r, noise)| MarImage { class: r.class, noise }).collect();
        generate_batch(&self.predictor(&self.target), &sampling, &images)
    }

    /// The tokens of `request`'s image by CSpD with `options`, `draft` drafting: the same order
    /// and noise as [`Self::generate_tokens`] for the same seed; the acceptance tests draw from
    /// a stream forked from the seed.
    pub fn generate_tokens_cspd(&self, request: &MarRequest, options: &CspdOptions, draft: MarDraft) -> Result<CspdOutput> {
        Ok(self.generate_tokens_cspd_batch(std::slice::from_ref(request), options, draft)?.remove(0))
    }

    /// [`Self::generate_tokens_cspd`] for a batch of requests (all with the same sampling
    /// settings) in shared draft and target passes, each image with its own acceptance: each
    /// gets the output it gets alone.
    pub fn generate_tokens_cspd_batch(&self, requests: &[MarRequest], options: &CspdOptions, draft: MarDraft) -> Result<Vec<CspdOutput>> {
        let draft_net = match draft {
            MarDraft::Target => &self.target,
            MarDraft::Section => self.draft.as_ref().ok_or_else(|| {
                Error::InvalidRequest("this MAR directory has no \"draft\" section: add a smaller MAR of the same token space (tools/convert_mar.py --section draft), or self-speculate with the target as draft".into())
            })?,
        };
        let (sampling, noises) = self.batch_noise(requests)?;
        let images: Vec<MarImage> = requests.iter().zip(&noises).map(|(r, noise)| MarImage { class: r.class, noise }).collect();
        let mut rngs: Vec<Rng> = requests.iter().map(|r| Rng::new(r.seed).fork(ACCEPTANCE_STREAM)).collect();
        generate_cspd_batch(&self.predictor(&self.target), &self.predictor(draft_net), &sampling, &images, &mut rngs, options)
    }

    /// The image of `tokens` (needs the `vae` section).
    pub fn decode(&self, tokens: &[f32]) -> Result<Image> {
        let vae = self.vae.as_ref().ok_or_else(|| Error::InvalidRequest("this MAR directory has no \"vae\" section: tokens can be generated, images need the VAE".into()))?;
        vae.decode(&self.config.mar, tokens)
    }

    /// Generate `request`'s image (needs the `vae` section).
    pub fn generate(&self, request: &MarRequest) -> Result<Image> {
        self.decode(&self.generate_tokens(request)?)
    }
}

/// The error `Engine::load` gives for a MAR directory.
pub(crate) fn not_llamagen(dir: &Path) -> Error {
    Error::InvalidRequest(format!("{} holds a MAR model (\"family\": \"mar\"); Engine generates LlamaGen models: use spire::engine::MarEngine", dir.display()))
}
