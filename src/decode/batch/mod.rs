//! The device-resident batched decoding loop, for plain AR decoding and every speculative mode.
//!
//! Many images advance together, each with its own class, seed and CFG pair, in shared forward
//! passes; each accepts its own number of drafted tokens per step (ragged acceptance), and an
//! image that is done leaves the batch and returns its KV blocks to the pool. One step:
//! 1. **Plan** (host, [`plan`]): every index array of the step (the KV moves decided by the
//!    last step, each pass's rows, positions, KV slots and attention layout, which logits rows
//!    become which distributions, the tree levels' draws, the acceptance inputs and every
//!    pre-drawn uniform) is packed into one buffer: **one host-to-device copy**.
//! 2. **Run** (device, [`device`]): the drafter's catch-up pass, then one pass per tree level,
//!    each followed by `process_logits` (the draft distributions `q`) and `sample_children`
//!    (the next level's tokens, written to the step's device tokens, which the next pass
//!    embeds); the target's verification pass over every image's pending token and tree,
//!    `process_logits` (`p`), and the fused `accept_block`. The logits never leave the device.
//! 3. **Commit** (host, [`commit`]): **one device-to-host copy** of the step's state words
//!    (drafted tokens, accepted paths and lengths, next tokens, non-finite flags), then per image
//!    the new tokens, KV rollback (the moves run at the start of the next step) and the
//!    drafter's bookkeeping.
//!
//! Plain AR decoding is the same step with an empty tree and no drafter: the acceptance op
//! draws the token from `p`. Rules the fused op cannot express (LANTERN's neighbourhood pooling,
//! whose residual depends on the rejected token) are verified by the host walk
//! ([`host_walk`]), which downloads `p` and `q` as well.
//!
//! **Random streams.** Each image owns a generator seeded by its request. Per step it draws, in
//! this order: one uniform per drafted node (its draw), one per drafted node (its acceptance
//! test), one for the final token; the host walk draws its acceptance uniforms afterwards. The
//! draws depend only on the image's own state, and the CPU twins consume them exactly as the
//! kernels do, so an image gets the same tokens alone or in a batch, on every backend (within
//! the backends' logits agreement).

mod commit;
mod device;
mod host_walk;
mod plan;

pub use device::DecodeBuffers;

use crate::backend::Backend;
use crate::decode::guided::GuidedSeqs;
use crate::decode::speculative::draft::{Drafter, SequenceState};
use crate::decode::speculative::rules::AcceptanceRule;
use crate::decode::speculative::tree::{slot, DraftNode, TreeShape};
use crate::decode::GenerationStats;
use crate::error::{Error, Result};
use crate::kv::PagedKvCache;
use crate::model::Gpt;
use crate::sampling::{Rng, SamplingParams};

/// One image of a batch: its class and the seed of its random stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRequest {
    /// Class label.
    pub class: u32,
    /// Seed of the image's random stream.
    pub seed: u64,
}

/// How a batch decodes: plain AR, or speculative with a drafter, a tree shape and a rule.
pub struct Decoding<'a, B: Backend> {
    /// The drafter and its tree shape and acceptance rule; `None` for plain AR decoding.
    pub speculative: Option<Speculative<'a, B>>,
    /// Logits processing for target and drafter alike.
    pub params: SamplingParams,
}

/// The speculative part of [`Decoding`].
pub struct Speculative<'a, B: Backend> {
    /// The drafter (it owns its KV cache).
    pub drafter: Box<dyn Drafter<B> + Send + 'a>,
    /// The acceptance rule.
    pub rule: Box<dyn AcceptanceRule>,
    /// The draft tree (a chain is widths `[1; L]`).
    pub shape: TreeShape,
}

/// One generated image's tokens and counters.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTokens {
    /// Image tokens, row-major over the token grid.
    pub tokens: Vec<u32>,
    /// What producing them cost (forwards are counted per image: a pass serving a batch
    /// counts once for each of its images).
    pub stats: GenerationStats,
}

/// Identifies an image inside a [`Batch`].
pub type ImageId = u64;

/// What a step of a [`Batch`] produced for one image.
#[derive(Debug)]
pub enum BatchEvent {
    /// New tokens were committed.
    Progress {
        /// The image.
        id: ImageId,
        /// The tokens committed this step.
        tokens: Vec<u32>,
        /// Tokens committed so far.
        done: usize,
    },
    /// The image is complete, or failed (its KV blocks are free either way).
    Finished {
        /// The image.
        id: ImageId,
        /// Its tokens, or why it failed (non-finite logits).
        result: Result<ImageTokens>,
    },
}

/// An image in flight.
struct Image {
    id: ImageId,
    state: SequenceState,
    rng: Rng,
    stats: GenerationStats,
    target: GuidedSeqs,
    draft: Option<usize>,
    /// Slot copies in the target's and the drafter's pools, in order, to run before the next
    /// step's passes (the compaction of the last accepted path).
    target_copies: Vec<(u32, u32)>,
    draft_copies: Vec<(u32, u32)>,
}

/// The static layout of the draft tree: nodes in BFS order and each slot's first child.
struct TreeLayout {
    nodes: Vec<DraftNode>,
    /// Index of the first child of slot `s` (0: the pending token, `1 + i`: node `i`), or the
    /// node count when it has none.
    first_child: Vec<usize>,
    /// Children per node at depth `d`, `widths[d]` (`widths[0]` under the pending token).
    widths: Vec<usize>,
}

impl TreeLayout {
    fn new(shape: Option<&TreeShape>) -> Self {
        let nodes = shape.map_or_else(Vec::new, TreeShape::layout);
        let mut first_child = vec![nodes.len(); nodes.len() + 1];
        for node in nodes.iter().rev() {
            first_child[slot(node.parent)] = node.index;
        }
        let widths = shape.map_or_else(Vec::new, |s| s.widths().to_vec());
        Self { nodes, first_child, widths }
    }

    /// Drafted levels of a full tree.
    fn depth(&self) -> usize {
        self.widths.len()
    }

    /// Nodes of a tree of `depth` levels (a BFS prefix of the layout).
    fn present(&self, depth: usize) -> usize {
        self.nodes.iter().take_while(|n| n.depth <= depth).count()
    }
}

/// A batch of images decoding together (see the module docs): images are admitted and
/// cancelled between steps, each step advances every image by one verification (or one token),
/// and a finished image leaves with its KV blocks returned to the pool. It owns the target's KV
/// cache, the decoding buffers and the drafter (with its cache) until [`Batch::into_parts`].
pub struct Batch<'a, B: Backend> {
    backend: &'a B,
    target: &'a Gpt<B>,
    cache: PagedKvCache<B>,
    decoding: Decoding<'a, B>,
    tree: TreeLayout,
    images: Vec<Image>,
    next_id: ImageId,
    buffers: DecodeBuffers<B>,
}

impl<'a, B: Backend> Batch<'a, B> {
    /// An empty batch decoding with `target` on `backend` as `decoding` says, in `cache` (empty)
    /// with the device `buffers`.
    pub fn new(backend: &'a B, target: &'a Gpt<B>, cache: PagedKvCache<B>, buffers: DecodeBuffers<B>, decoding: Decoding<'a, B>) -> Result<Self> {
        decoding.params.validate()?;
        let tree = TreeLayout::new(decoding.speculative.as_ref().map(|s| &s.shape));
        Ok(Self { backend, target, cache, decoding, tree, images: Vec::new(), next_id: 0, buffers })
    }

    /// KV blocks one image may need at most: two sequences (CFG) of the model's length plus a
    /// verification window each.
    pub fn blocks_per_image(&self) -> usize {
        let seqs = if self.decoding.params.uses_cfg() { 2 } else { 1 };
        let window = self.tree.nodes.len() + 1;
        seqs * (self.target.config().max_seq_len() + window).div_ceil(self.cache.shape().block_size)
    }

    /// Whether one more image fits in the KV pool with every admitted image at its largest.
    pub fn can_admit(&self) -> bool {
        (self.images.len() + 1) * self.blocks_per_image() <= self.cache.shape().num_blocks
    }

    /// Images in flight.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when no image is in flight.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Free KV blocks of the target's cache (every block is free once the batch is empty).
    pub fn free_blocks(&self) -> usize {
        self.cache.free_blocks()
    }

    /// KV blocks of the target's cache held by images in flight.
    pub fn blocks_in_use(&self) -> usize {
        self.cache.shape().num_blocks - self.cache.free_blocks()
    }

    /// Start decoding `request` at the next step; an error if its class is out of range or the
    /// KV pool cannot hold one more image ([`Error::KvCacheExhausted`]).
    pub fn admit(&mut self, request: ImageRequest) -> Result<ImageId> {
        let classes = self.target.config().num_classes;
        if request.class as usize >= classes {
            return Err(Error::InvalidRequest(format!("class id {} out of range: this model has {classes} classes (0..={})", request.class, classes - 1)));
        }
        if !self.can_admit() {
            let needed = self.blocks_per_image();
            return Err(Error::KvCacheExhausted { needed, free: self.cache.shape().num_blocks.saturating_sub(self.images.len() * needed), total: self.cache.shape().num_blocks });
        }
        let cfg = self.decoding.params.uses_cfg();
        let id = self.next_id;
        self.next_id += 1;
        self.images.push(Image {
            id,
            state: SequenceState::new(request.class),
            rng: Rng::new(request.seed),
            stats: GenerationStats::default(),
            target: GuidedSeqs::open(&mut self.cache, cfg, classes),
            draft: self.decoding.speculative.as_mut().map(|s| s.drafter.open(cfg)),
            target_copies: Vec::new(),
            draft_copies: Vec::new(),
        });
        Ok(id)
    }

    /// Stop decoding image `id` and free its KV blocks; false if no such image is in flight.
    pub fn cancel(&mut self, id: ImageId) -> Result<bool> {
        match self.images.iter().position(|image| image.id == id) {
            Some(i) => {
                let image = self.images.remove(i);
                self.release(&image)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Free `image`'s sequences in both caches.
    fn release(&mut self, image: &Image) -> Result<()> {
        image.target.free(&mut self.cache)?;
        match (self.decoding.speculative.as_mut(), image.draft) {
            (Some(spec), Some(slot)) => spec.drafter.close(slot),
            _ => Ok(()),
        }
    }

    /// Advance every image by one step: what each committed, and the images that finished.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        if self.images.is_empty() {
            return Ok(Vec::new());
        }
        let plan = self.plan_step()?;
        let outcome = self.run_step(&plan)?;
        self.commit_step(&plan, &outcome)
    }

    /// Cancel every image and give back the target's KV cache, the buffers and the drafter's
    /// cache (all for reuse).
    pub fn into_parts(mut self) -> Result<BatchParts<B>> {
        while let Some(image) = self.images.pop() {
            self.release(&image)?;
        }
        let draft_cache = self.decoding.speculative.map(|s| s.drafter.into_cache());
        Ok(BatchParts { cache: self.cache, buffers: self.buffers, draft_cache })
    }
}

/// What a finished [`Batch`] gives back for reuse.
pub struct BatchParts<B: Backend> {
    /// The target's KV cache (every block free).
    pub cache: PagedKvCache<B>,
    /// The decoding buffers.
    pub buffers: DecodeBuffers<B>,
    /// The drafter's KV cache, when it had one.
    pub draft_cache: Option<PagedKvCache<B>>,
}

/// Generate `images` together in one [`Batch`] until all are done, reporting (tokens done,
/// tokens total) to `progress`; the first failure fails the call. Returns the results in the
/// order of `images` and the batch's parts for reuse ([`Batch::into_parts`]).
pub fn generate_batch<'a, B: Backend>(
    mut batch: Batch<'a, B>,
    images: &[ImageRequest],
    progress: &mut dyn FnMut(usize, usize),
) -> (Result<Vec<ImageTokens>>, Batch<'a, B>) {
    let result = run_to_completion(&mut batch, images, progress);
    (result, batch)
}

fn run_to_completion<B: Backend>(batch: &mut Batch<'_, B>, images: &[ImageRequest], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<ImageTokens>> {
    let ids = images.iter().map(|&r| batch.admit(r)).collect::<Result<Vec<_>>>()?;
    let total = batch.target.config().block_size * images.len();
    let mut results: Vec<Option<ImageTokens>> = vec![None; images.len()];
    let mut done = 0;
    while !batch.is_empty() {
        for event in batch.step()? {
            match event {
                BatchEvent::Progress { tokens, .. } => done += tokens.len(),
                BatchEvent::Finished { id, result } => {
                    let index = ids.iter().position(|&i| i == id).ok_or_else(|| Error::Internal(format!("unknown image {id} finished")))?;
                    results[index] = Some(result?);
                }
            }
        }
        progress(done, total);
    }
    results.into_iter().map(|r| r.ok_or_else(|| Error::Internal("an image of the batch did not finish".into()))).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::CpuBackend;
    use crate::decode::speculative::draft::ModelDrafter;
    use crate::decode::speculative::rules::UniformRsd;
    use crate::model::gpt_tensor_shapes;
    use crate::weights::synthetic::{random_tensors, write_safetensors};
    use crate::weights::{DType, GptConfig, WeightFile};

    /// A random 1-layer GPT over 16 tokens with 9 image tokens per image.
    fn tiny_gpt() -> Gpt<CpuBackend> {
        let config = GptConfig {
            file: "gpt.safetensors".into(),
            dim: 16,
            n_layer: 1,
            n_head: 2,
            vocab_size: 16,
            num_classes: 2,
            cls_token_num: 1,
            block_size: 9,
            rope_base: 10000.0,
            norm_eps: 1e-5,
            multiple_of: 16,
            ffn_dim_multiplier: None,
        };
        let dir = std::env::temp_dir().join(format!("spire-batch-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(&config.file);
        write_safetensors(&path, &random_tensors(&gpt_tensor_shapes(&config), 3), DType::F32).unwrap();
        let gpt = Gpt::load(&CpuBackend, &Arc::new(WeightFile::open(&path).unwrap()), &config).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        gpt
    }

    /// Every image of a ragged batch counts every tree node it drafted, and its own steps: with
    /// a rule that accepts every first child (omega = f32::MAX), 9 tokens and trees of widths
    /// [2, 2]: a plain target step at position 0 (1 token), full trees at positions 1 and 4
    /// (6 nodes, 2 accepted + 1 token each), one level at position 7 (2 nodes, 1 + 1).
    #[test]
    fn each_image_counts_every_node_it_drafted() {
        let (target, draft) = (tiny_gpt(), tiny_gpt());
        let (cache, draft_cache) = (target.new_cache(&CpuBackend, 8, 16).unwrap(), draft.new_cache(&CpuBackend, 8, 16).unwrap());
        let speculative = Speculative { drafter: Box::new(ModelDrafter::new(&draft, draft_cache)), rule: Box::new(UniformRsd { omega: f32::MAX }), shape: TreeShape::from_widths(&[2, 2]).unwrap() };
        let decoding = Decoding { speculative: Some(speculative), params: SamplingParams::default() };
        let batch = Batch::new(&CpuBackend, &target, cache, DecodeBuffers::new(&CpuBackend).unwrap(), decoding).unwrap();
        let images = [ImageRequest { class: 0, seed: 1 }, ImageRequest { class: 1, seed: 2 }];
        let (out, batch) = generate_batch(batch, &images, &mut |_, _| {});
        for image in &out.unwrap() {
            let stats = &image.stats;
            assert_eq!(image.tokens.len(), 9);
            assert_eq!((stats.target_forwards, stats.verify_steps), (4, 3));
            assert_eq!((stats.drafted, stats.accepted), (6 + 6 + 2, 2 + 2 + 1));
        }
        assert_eq!(batch.free_blocks(), 8, "finished images return their KV blocks");
    }

    /// Images join a running batch and are cancelled midway; each finished image has the tokens
    /// it gets alone, and every KV block is back at the end.
    #[test]
    fn images_join_and_leave_between_steps_with_their_tokens_alone() {
        let target = tiny_gpt();
        let new_batch = || Batch::new(&CpuBackend, &target, target.new_cache(&CpuBackend, 8, 16).unwrap(), DecodeBuffers::new(&CpuBackend).unwrap(), Decoding { speculative: None, params: SamplingParams::default() }).unwrap();
        let alone = |seed: u64| generate_batch(new_batch(), &[ImageRequest { class: 1, seed }], &mut |_, _| {}).0.unwrap().remove(0).tokens;
        let mut batch = new_batch();
        let first = batch.admit(ImageRequest { class: 1, seed: 10 }).unwrap();
        let doomed = batch.admit(ImageRequest { class: 1, seed: 11 }).unwrap();
        let mut finished = std::collections::HashMap::new();
        let mut late = None;
        for step in 0.. {
            if step == 3 {
                late = Some(batch.admit(ImageRequest { class: 1, seed: 12 }).unwrap());
                assert!(batch.cancel(doomed).unwrap());
            }
            for event in batch.step().unwrap() {
                if let BatchEvent::Finished { id, result } = event {
                    finished.insert(id, result.unwrap().tokens);
                }
            }
            if batch.is_empty() {
                break;
            }
        }
        assert_eq!(finished.len(), 2);
        assert_eq!(finished[&first], alone(10));
        assert_eq!(finished[&late.unwrap()], alone(12));
        assert_eq!(batch.free_blocks(), 8);
    }
}
