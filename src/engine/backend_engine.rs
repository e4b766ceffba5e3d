//! `BackendEngine`: the models of a weights directory on one backend type, generating batches of
//! images synchronously (the device-erased, scheduled [`crate::Engine`] runs on top of it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::{Backend, CpuBackend, KvDtype, KvShape};
use crate::decode::speculative::config::DrafterChoice;
use crate::decode::speculative::draft::{Drafter, HeadDrafter, ModelDrafter};
use crate::decode::speculative::rules::LatentNeighbours;
use crate::decode::{generate_batch, Batch, DecodeBuffers, Decoding, ImageRequest, ImageTokens, Speculative};
use crate::engine::mar::not_llamagen;
use crate::engine::request::{Generation, Request};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::kv::PagedKvCache;
use crate::model::vq::VqDecoder;
use crate::model::{DraftHead, Gpt};
use crate::weights::{DirConfig, ModelConfig, WeightFile};

/// Token slots per KV block.
pub const KV_BLOCK_SIZE: usize = 16;

/// A loaded model set (target, optional drafters, VQ decoder) on a backend.
pub struct BackendEngine<B: Backend = CpuBackend> {
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
    /// Element type of every KV cache.
    kv_dtype: KvDtype,
    /// KV caches of finished requests, cleared, reused by the next requests of the same shape.
    idle_caches: Mutex<Vec<PagedKvCache<B>>>,
    /// The decoding loop's device buffers of finished batches, reused by the next ones.
    idle_buffers: Mutex<Vec<DecodeBuffers<B>>>,
}

fn open(dir: &Path, file: &str) -> Result<Arc<WeightFile>> {
    Ok(Arc::new(WeightFile::open(&dir.join(file))?))
}

impl BackendEngine<CpuBackend> {
    /// Load the weights directory `dir` (config.json + safetensors) on the CPU backend.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(CpuBackend, dir)
    }
}

impl<B: Backend> BackendEngine<B> {
    /// Load the weights directory `dir` onto `backend`.
    pub fn load_on(backend: B, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config = match DirConfig::load(&dir)? {
            DirConfig::LlamaGen(config) => config,
            DirConfig::Mar(_) => return Err(not_llamagen(&dir)),
        };
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
        Ok(Self { backend, dir, config, target, draft, draft_head, vq, codebook, neighbours: Mutex::new(None), kv_blocks: None, kv_dtype: KvDtype::F32, idle_caches: Mutex::new(Vec::new()), idle_buffers: Mutex::new(Vec::new()) })
    }

    /// Use a KV pool of exactly `blocks` blocks of [`KV_BLOCK_SIZE`] slots per model (default:
    /// just enough for the images of a batch, each with CFG and the largest draft window).
    pub fn with_kv_blocks(mut self, blocks: usize) -> Self {
        self.kv_blocks = Some(blocks);
        self.idle_caches = Mutex::new(Vec::new());
        self
    }

    /// Keep keys and values in `dtype` (default f32; see [`KvDtype`]).
    pub fn with_kv_dtype(mut self, dtype: KvDtype) -> Self {
        self.kv_dtype = dtype;
        self.idle_caches = Mutex::new(Vec::new());
        self
    }

    /// Idle KV caches the engine keeps for its next requests (each request takes the ones it
    /// needs and gives them back, cleared, when it finishes).
    pub fn idle_kv_caches(&self) -> usize {
        self.idle_caches.lock().map_or(0, |idle| idle.len())
    }

    /// A cleared cache of `shape`'s geometry (in the engine's KV dtype) with at least its blocks:
    /// an idle one, or a new one.
    fn checkout_cache(&self, shape: KvShape) -> Result<PagedKvCache<B>> {
        let shape = KvShape { dtype: self.kv_dtype, ..shape };
        let mut idle = self.idle_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fits = |c: &PagedKvCache<B>| c.shape() == KvShape { num_blocks: c.shape().num_blocks, ..shape } && c.shape().num_blocks >= shape.num_blocks;
        match idle.iter().position(fits) {
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

    /// KV blocks per model: the configured number, or enough for `images` images (two
    /// sequences each, for CFG) plus a speculative window of `window` tokens each.
    fn kv_blocks_for(&self, images: usize, window: usize) -> usize {
        let per_seq = (self.config.gpt.max_seq_len() + window).div_ceil(KV_BLOCK_SIZE);
        self.kv_blocks.unwrap_or(2 * per_seq * images.max(1))
    }

    /// A fresh KV cache for `gpt` (see [`BackendEngine::with_kv_blocks`]) with room for one image and a
    /// speculative window of `window` tokens.
    pub fn new_cache(&self, gpt: &Gpt<B>, window: usize) -> Result<PagedKvCache<B>> {
        let shape = gpt.kv_shape(self.kv_blocks_for(1, window), KV_BLOCK_SIZE);
        PagedKvCache::new(&self.backend, KvShape { dtype: self.kv_dtype, ..shape })
    }

    fn check_request(&self, request: &Request) -> Result<()> {
        request.validate(&self.config)
    }

    /// Generate the image tokens for `request`, reporting (done, total) to `progress`.
    pub fn generate_tokens(&self, request: &Request, progress: &mut dyn FnMut(usize, usize)) -> Result<Generation> {
        let mut generations = self.generate_tokens_batch(std::slice::from_ref(request), progress)?;
        Ok(generations.remove(0))
    }

    /// Generate the image tokens of every request, requests with equal sampling and speculative
    /// settings together in shared forward passes (each with its own class, seed and accepted
    /// lengths); a request gets the same tokens alone or in a batch. Reports (tokens done,
    /// tokens total) of the current batch to `progress`. Each generation's `elapsed` is its
    /// batch's wall time.
    pub fn generate_tokens_batch(&self, requests: &[Request], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Generation>> {
        requests.iter().try_for_each(|r| self.check_request(r))?;
        let mut generations: Vec<Option<Generation>> = vec![None; requests.len()];
        let mut left: Vec<usize> = (0..requests.len()).collect();
        while let Some(&first) = left.first() {
            let same = |i: &usize| requests[*i].sampling == requests[first].sampling && requests[*i].speculative == requests[first].speculative;
            let (group, rest): (Vec<usize>, Vec<usize>) = left.into_iter().partition(same);
            left = rest;
            let start = Instant::now();
            let images: Vec<ImageRequest> = group.iter().map(|&i| ImageRequest { class: requests[i].class_id, seed: requests[i].seed }).collect();
            let outputs = self.generate_group(&requests[first], &images, progress)?;
            let elapsed = start.elapsed();
            for (&i, ImageTokens { tokens, mut stats }) in group.iter().zip(outputs) {
                stats.elapsed = elapsed;
                generations[i] = Some(Generation { tokens, stats });
            }
        }
        generations.into_iter().map(|g| g.ok_or_else(|| Error::Internal("a request of the batch was not generated".into()))).collect()
    }

    /// Generate `images` with the settings of `settings` in one batch.
    fn generate_group(&self, settings: &Request, images: &[ImageRequest], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<ImageTokens>> {
        let batch = self.new_batch(settings, images.len())?;
        let (result, batch) = generate_batch(batch, images, progress);
        self.recycle(batch)?;
        result
    }

    /// An empty `Batch` decoding with `settings`' sampling and speculative settings (its class
    /// and seed are not used), with room for `images` images; its KV caches and buffers come from
    /// the engine's idle ones (give them back with [`BackendEngine::recycle`]).
    pub fn new_batch(&self, settings: &Request, images: usize) -> Result<Batch<'_, B>> {
        self.check_request(settings)?;
        let params = settings.sampling;
        let (speculative, window) = match &settings.speculative {
            None => (None, 0),
            Some(spec) => {
                let shape = spec.shape()?;
                let window = shape.num_nodes() + 1;
                let rule = spec.build_rule(&|k| self.latent_neighbours(k))?;
                (Some(Speculative { drafter: self.drafter(spec.drafter, self.kv_blocks_for(images, window))?, rule, shape }), window)
            }
        };
        let cache = self.checkout_cache(self.target.kv_shape(self.kv_blocks_for(images, window), KV_BLOCK_SIZE))?;
        let buffers = self.idle_buffers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let buffers = match buffers {
            Some(buffers) => buffers,
            None => DecodeBuffers::new(&self.backend)?,
        };
        Batch::new(&self.backend, &self.target, cache, buffers, Decoding { speculative, params })
    }

    /// The drafter `choice` names, with a KV cache of `blocks` blocks.
    fn drafter(&self, choice: DrafterChoice, blocks: usize) -> Result<Box<dyn Drafter<B> + Send + '_>> {
        let missing = |section: &str| {
            Error::InvalidRequest(format!("{} has no \"{section}\" section in config.json: pick another drafter", self.dir.display()))
        };
        Ok(match choice {
            DrafterChoice::Model => {
                let gpt = self.draft.as_ref().ok_or_else(|| missing("draft"))?;
                Box::new(ModelDrafter::new(gpt, self.checkout_cache(gpt.kv_shape(blocks, KV_BLOCK_SIZE))?))
            }
            DrafterChoice::Head => {
                let head = self.draft_head.as_ref().ok_or_else(|| missing("draft_head"))?;
                Box::new(HeadDrafter::new(head, &self.target, self.checkout_cache(head.kv_shape(blocks, KV_BLOCK_SIZE))?))
            }
        })
    }

    /// Keep a finished batch's KV caches and buffers for later batches.
    pub fn recycle(&self, batch: Batch<'_, B>) -> Result<()> {
        let parts = batch.into_parts()?;
        self.give_back(parts.cache);
        if let Some(cache) = parts.draft_cache {
            self.give_back(cache);
        }
        self.idle_buffers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(parts.buffers);
        Ok(())
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

    /// Generate one image per request, in shared forward passes where the settings agree
    /// ([`BackendEngine::generate_tokens_batch`]).
    pub fn generate_batch(&self, requests: &[Request]) -> Result<Vec<Image>> {
        let generations = self.generate_tokens_batch(requests, &mut |_, _| {})?;
        generations.iter().map(|g| self.decode(&g.tokens)).collect()
    }
}
