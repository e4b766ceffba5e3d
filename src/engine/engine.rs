//! `Engine`: loads a weights directory onto a backend and generates images.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::{Backend, CpuBackend, KvShape};
use crate::decode::speculative::config::{DrafterChoice, SpecConfig};
use crate::decode::speculative::draft::{Drafter, HeadDrafter, ModelDrafter};
use crate::decode::speculative::rules::LatentNeighbours;
use crate::decode::{generate_batch, DecodeBuffers, Decoding, ImageRequest, ImageTokens, Speculative};
use crate::engine::mar::not_llamagen;
use crate::engine::request::{Generation, Request};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::kv::PagedKvCache;
use crate::model::vq::VqDecoder;
use crate::model::{DraftHead, Gpt};
use crate::sampling::SamplingParams;
use crate::weights::{DirConfig, ModelConfig, WeightFile};

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
    /// The decoding loop's device buffers of finished batches, reused by the next ones.
    idle_buffers: Mutex<Vec<DecodeBuffers<B>>>,
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
        Ok(Self { backend, dir, config, target, draft, draft_head, vq, codebook, neighbours: Mutex::new(None), kv_blocks: None, idle_caches: Mutex::new(Vec::new()), idle_buffers: Mutex::new(Vec::new()) })
    }

    /// Use a KV pool of exactly `blocks` blocks of [`KV_BLOCK_SIZE`] slots per model (default:
    /// just enough for the images of a batch, each with CFG and the largest draft window).
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

    /// A cleared cache of `shape`'s geometry with at least its blocks: an idle one, or a new one.
    fn checkout_cache(&self, shape: KvShape) -> Result<PagedKvCache<B>> {
        let mut idle = self.idle_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fits = |c: &PagedKvCache<B>| c.shape() == KvShape { num_blocks: c.shape().num_blocks, ..shape } && c.shape().num_blocks >= shape.num_blocks;
        match idle.iter().position(fits) {
            Some(i) => Ok(idle.swap_remove(i)),
            None => PagedKvCache::new(&self.backend, shape),
        }
    }

    /// Run `decode` with idle decoding buffers (or new ones), keeping them for later batches.
    fn with_buffers<T>(&self, decode: impl FnOnce(&mut DecodeBuffers<B>) -> Result<T>) -> Result<T> {
        let idle = self.idle_buffers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut buffers = match idle {
            Some(buffers) => buffers,
            None => DecodeBuffers::new(&self.backend)?,
        };
        let result = decode(&mut buffers);
        self.idle_buffers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(buffers);
        result
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

    /// A fresh KV cache for `gpt` (see [`Engine::with_kv_blocks`]) with room for one image and a
    /// speculative window of `window` tokens.
    pub fn new_cache(&self, gpt: &Gpt<B>, window: usize) -> Result<PagedKvCache<B>> {
        gpt.new_cache(&self.backend, self.kv_blocks_for(1, window), KV_BLOCK_SIZE)
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
        let params = settings.sampling;
        let Some(spec) = &settings.speculative else {
            let mut cache = self.checkout_cache(self.target.kv_shape(self.kv_blocks_for(images.len(), 0), KV_BLOCK_SIZE))?;
            let tokens = self.with_buffers(|buffers| generate_batch(&self.backend, &self.target, &mut cache, buffers, Decoding { speculative: None, params }, images, progress));
            self.give_back(cache);
            return tokens;
        };
        self.generate_speculative(spec, params, images, progress)
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
    fn generate_speculative(&self, spec: &SpecConfig, params: SamplingParams, images: &[ImageRequest], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<ImageTokens>> {
        let shape = spec.shape()?;
        let rule = spec.build_rule(&|k| self.latent_neighbours(k))?;
        let window = shape.num_nodes() + 1;
        let missing = |section: &str| {
            Error::InvalidRequest(format!("{} has no \"{section}\" section in config.json: pick another drafter", self.dir.display()))
        };
        let draft_model = || self.draft.as_ref().ok_or_else(|| missing("draft"));
        let draft_head = || self.draft_head.as_ref().ok_or_else(|| missing("draft_head"));
        let blocks = self.kv_blocks_for(images.len(), window);
        let mut draft_cache = self.checkout_cache(match spec.drafter {
            DrafterChoice::Model => draft_model()?.kv_shape(blocks, KV_BLOCK_SIZE),
            DrafterChoice::Head => draft_head()?.kv_shape(blocks, KV_BLOCK_SIZE),
        })?;
        let mut cache = self.checkout_cache(self.target.kv_shape(blocks, KV_BLOCK_SIZE))?;
        let tokens = {
            let mut drafter: Box<dyn Drafter<B> + '_> = match spec.drafter {
                DrafterChoice::Model => Box::new(ModelDrafter::new(draft_model()?, &mut draft_cache)),
                DrafterChoice::Head => Box::new(HeadDrafter::new(draft_head()?, &self.target, &mut draft_cache)),
            };
            let speculative = Speculative { drafter: drafter.as_mut(), rule: rule.as_ref(), shape };
            self.with_buffers(|buffers| generate_batch(&self.backend, &self.target, &mut cache, buffers, Decoding { speculative: Some(speculative), params }, images, progress))
        };
        self.give_back(draft_cache);
        self.give_back(cache);
        tokens
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
    /// ([`Engine::generate_tokens_batch`]).
    pub fn generate_batch(&self, requests: &[Request]) -> Result<Vec<Image>> {
        let generations = self.generate_tokens_batch(requests, &mut |_, _| {})?;
        generations.iter().map(|g| self.decode(&g.tokens)).collect()
    }
}
