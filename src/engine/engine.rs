//! `Engine`: loads a weights directory onto a backend and generates images.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::{Backend, CpuBackend, KvShape};
use crate::decode::speculative::config::{DrafterChoice, SpecConfig};
use crate::decode::speculative::draft::{Drafter, HeadDrafter, ModelDrafter};
use crate::decode::speculative::generate_speculative;
use crate::decode::speculative::rules::LatentNeighbours;
use crate::decode::{generate_ar, DecodeContext, GenerationStats};
use crate::engine::request::{Generation, Request};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::kv::PagedKvCache;
use crate::model::vq::VqDecoder;
use crate::model::{DraftHead, Gpt};
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
    draft: Option<Gpt<B>>,
    draft_head: Option<DraftHead<B>>,
    vq: Option<VqDecoder>,
    /// The raw VQ codebook (`[vocab, embed_dim]`), for LANTERN's latent neighbourhoods.
    codebook: Option<(Vec<f32>, usize)>,
    /// The last neighbourhood table built (by `k`): building one for a 16384-token codebook
    /// takes seconds, so it is done once, not per image.
    neighbours: Mutex<Option<(usize, Arc<LatentNeighbours>)>>,
    kv_blocks: Option<usize>,
    /// KV caches of finished requests, cleared, reused by the next requests of the same shape.
    idle_caches: Mutex<Vec<PagedKvCache<B>>>,
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
        let draft = match &config.draft {
            Some(draft) => Some(Gpt::load(&backend, &open(&dir, &draft.file)?, draft)?),
            None => None,
        };
        let draft_head = match &config.draft_head {
            Some(head) => Some(DraftHead::load(&backend, &open(&dir, &head.file)?, &config.gpt, head)?),
            None => None,
        };
        let (vq, codebook) = match &config.vq {
            Some(vq) => {
                let file = WeightFile::open(&dir.join(&vq.file))?;
                let codebook = file
                    .tensor_with_shape("quantize.embedding.weight", &[vq.codebook_size, vq.codebook_embed_dim])?
                    .to_f32()
                    .into_owned();
                (Some(VqDecoder::load(&file, vq)?), Some((codebook, vq.codebook_embed_dim)))
            }
            None => (None, None),
        };
        Ok(Self { backend, dir, config, target, draft, draft_head, vq, codebook, neighbours: Mutex::new(None), kv_blocks: None, idle_caches: Mutex::new(Vec::new()) })
    }

    /// Use a KV pool of exactly `blocks` blocks of [`KV_BLOCK_SIZE`] slots per model (default:
    /// just enough for one image with CFG and the largest draft window).
    pub fn with_kv_blocks(mut self, blocks: usize) -> Self {
        self.kv_blocks = Some(blocks);
        self.idle_caches = Mutex::new(Vec::new());
        self
    }

    /// Idle KV caches the engine keeps for its next requests (each request takes the ones it
    /// needs and gives them back, cleared, when it finishes).
    pub fn idle_kv_caches(&self) -> usize {
        self.idle_caches.lock().map_or(0, |idle| idle.len())
    }

    /// A cleared cache of `shape`: an idle one, or a new one.
    fn checkout_cache(&self, shape: KvShape) -> Result<PagedKvCache<B>> {
        let mut idle = self.idle_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match idle.iter().position(|c| c.shape() == shape) {
            Some(i) => Ok(idle.swap_remove(i)),
            None => PagedKvCache::new(&self.backend, shape),
        }
    }

    /// Keep `cache`, cleared, for a later request.
    fn give_back(&self, mut cache: PagedKvCache<B>) {
        cache.clear();
        self.idle_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(cache);
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

    /// KV blocks per model: the configured number, or enough for one image (two sequences
    /// with CFG) plus a speculative window of `window` tokens.
    fn kv_blocks_for(&self, window: usize) -> usize {
        let per_seq = (self.config.gpt.max_seq_len() + window).div_ceil(KV_BLOCK_SIZE);
        self.kv_blocks.unwrap_or(2 * per_seq)
    }

    /// A fresh KV cache for `gpt` (see [`Engine::with_kv_blocks`]) with room for a speculative
    /// window of `window` tokens.
    pub fn new_cache(&self, gpt: &Gpt<B>, window: usize) -> Result<PagedKvCache<B>> {
        gpt.new_cache(&self.backend, self.kv_blocks_for(window), KV_BLOCK_SIZE)
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
        let tokens = match &request.speculative {
            None => {
                let mut cache = self.checkout_cache(self.target.kv_shape(self.kv_blocks_for(0), KV_BLOCK_SIZE))?;
                let tokens = generate_ar(&mut ctx, &self.target, &mut cache, request.class_id)?;
                self.give_back(cache);
                tokens
            }
            Some(spec) => self.generate_speculative(&mut ctx, spec, request.class_id)?,
        };
        let mut stats = ctx.stats;
        stats.elapsed = start.elapsed();
        Ok(Generation { tokens, stats })
    }

    /// The `k` nearest codebook neighbours of every token (cached).
    fn latent_neighbours(&self, k: usize) -> Result<Arc<LatentNeighbours>> {
        let (codebook, dim) = self.codebook.as_ref().ok_or_else(|| {
            Error::InvalidRequest(format!("LANTERN needs the VQ codebook: {} has no \"vq\" section", self.dir.display()))
        })?;
        let mut cache = self.neighbours.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, cached)) = cache.as_ref().filter(|(cached_k, _)| *cached_k == k) {
            return Ok(Arc::clone(cached));
        }
        let built = Arc::new(LatentNeighbours::from_codebook(codebook, *dim, k)?);
        *cache = Some((k, Arc::clone(&built)));
        Ok(built)
    }

    /// Run speculative decoding with the drafter and rule `spec` selects.
    fn generate_speculative(&self, ctx: &mut DecodeContext<'_, B>, spec: &SpecConfig, class: u32) -> Result<Vec<u32>> {
        let shape = spec.shape()?;
        let rule = spec.build_rule(&|k| self.latent_neighbours(k))?;
        let window = shape.num_nodes() + 1;
        let cfg = ctx.params.uses_cfg();
        let missing = |section: &str| {
            Error::InvalidRequest(format!("{} has no \"{section}\" section in config.json: pick another drafter", self.dir.display()))
        };
        let draft_model = || self.draft.as_ref().ok_or_else(|| missing("draft"));
        let draft_head = || self.draft_head.as_ref().ok_or_else(|| missing("draft_head"));
        let blocks = self.kv_blocks_for(window);
        let mut draft_cache = self.checkout_cache(match spec.drafter {
            DrafterChoice::Model => draft_model()?.kv_shape(blocks, KV_BLOCK_SIZE),
            DrafterChoice::Head => draft_head()?.kv_shape(blocks, KV_BLOCK_SIZE),
        })?;
        let mut cache = self.checkout_cache(self.target.kv_shape(blocks, KV_BLOCK_SIZE))?;
        let tokens = {
            let mut drafter: Box<dyn Drafter<B> + '_> = match spec.drafter {
                DrafterChoice::Model => Box::new(ModelDrafter::new(draft_model()?, &mut draft_cache, cfg)),
                DrafterChoice::Head => Box::new(HeadDrafter::new(draft_head()?, &self.target, &mut draft_cache, cfg)),
            };
            generate_speculative(ctx, &self.target, &mut cache, drafter.as_mut(), rule.as_ref(), &shape, class)?
        };
        self.give_back(draft_cache);
        self.give_back(cache);
        Ok(tokens)
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
