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
    pub drafter: &'a mut dyn Drafter<B>,
    /// The acceptance rule.
    pub rule: &'a dyn AcceptanceRule,
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

/// An image in flight.
struct Image {
    state: SequenceState,
    rng: Rng,
    stats: GenerationStats,
    target: GuidedSeqs,
    draft: Option<usize>,
    done: bool,
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

/// Generate `images` together on `backend` (see the module docs). `cache` must hold every
/// image's sequences (two per image with CFG) plus a verification window each; `buffers` are
/// the loop's device buffers (kept by the caller so later batches allocate nothing).
pub fn generate_batch<'a, B: Backend>(
    backend: &'a B,
    target: &'a Gpt<B>,
    cache: &mut PagedKvCache<B>,
    buffers: &mut DecodeBuffers<B>,
    mut decoding: Decoding<'a, B>,
    images: &[ImageRequest],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<ImageTokens>> {
    decoding.params.validate()?;
    let classes = target.config().num_classes;
    if let Some(bad) = images.iter().find(|r| r.class as usize >= classes) {
        return Err(Error::InvalidRequest(format!("class id {} out of range: this model has {classes} classes (0..={})", bad.class, classes - 1)));
    }
    let cfg = decoding.params.uses_cfg();
    let mut batch = Batch {
        backend,
        target,
        tree: TreeLayout::new(decoding.speculative.as_ref().map(|s| &s.shape)),
        images: images
            .iter()
            .map(|r| Image {
                state: SequenceState::new(r.class),
                rng: Rng::new(r.seed),
                stats: GenerationStats::default(),
                target: GuidedSeqs::open(cache, cfg, classes),
                draft: decoding.speculative.as_mut().map(|s| s.drafter.open(cfg)),
                done: false,
            })
            .collect(),
        cache,
        decoding,
        target_copies: Vec::new(),
        draft_copies: Vec::new(),
        buffers,
    };
    let total = batch.target.config().block_size * images.len();
    let outcome = batch.run(total, progress);
    let released = batch.release_all();
    outcome?;
    released?;
    Ok(batch.images.into_iter().map(|image| ImageTokens { tokens: image.state.tokens, stats: image.stats }).collect())
}

/// The loop's state: the models, the images in flight, the KV moves pending for the next step,
/// and the device buffers every step reuses.
struct Batch<'a, 'c, B: Backend> {
    backend: &'a B,
    target: &'a Gpt<B>,
    cache: &'c mut PagedKvCache<B>,
    decoding: Decoding<'a, B>,
    tree: TreeLayout,
    images: Vec<Image>,
    /// Slot copies in the target's pool, in order, to run before the next pass.
    target_copies: Vec<(u32, u32)>,
    /// Slot copies in the drafter's pool, in order, to run before its next pass.
    draft_copies: Vec<(u32, u32)>,
    buffers: &'c mut DecodeBuffers<B>,
}

impl<B: Backend> Batch<'_, '_, B> {
    /// Step until every image is done.
    fn run(&mut self, total: usize, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        let mut done = 0;
        loop {
            let active: Vec<usize> = (0..self.images.len()).filter(|&i| !self.images[i].done).collect();
            if active.is_empty() {
                return Ok(());
            }
            let plan = self.plan_step(&active)?;
            let outcome = self.run_step(&plan)?;
            done += self.commit_step(&active, &plan, &outcome)?;
            progress(done, total);
        }
    }

    /// Release every image's KV sequences (done or not).
    fn release_all(&mut self) -> Result<()> {
        for image in &mut self.images {
            if !image.done {
                image.target.free(self.cache)?;
                if let (Some(spec), Some(slot)) = (self.decoding.speculative.as_mut(), image.draft.take()) {
                    spec.drafter.close(slot)?;
                }
                image.done = true;
            }
        }
        Ok(())
    }
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
        let (mut cache, mut draft_cache) = (target.new_cache(&CpuBackend, 8, 16).unwrap(), draft.new_cache(&CpuBackend, 8, 16).unwrap());
        let mut drafter = ModelDrafter::new(&draft, &mut draft_cache);
        let rule = UniformRsd { omega: f32::MAX };
        let speculative = Speculative { drafter: &mut drafter, rule: &rule, shape: TreeShape::from_widths(&[2, 2]).unwrap() };
        let decoding = Decoding { speculative: Some(speculative), params: SamplingParams::default() };
        let images = [ImageRequest { class: 0, seed: 1 }, ImageRequest { class: 1, seed: 2 }];
        let mut buffers = DecodeBuffers::new(&CpuBackend).unwrap();
        let out = generate_batch(&CpuBackend, &target, &mut cache, &mut buffers, decoding, &images, &mut |_, _| {}).unwrap();
        for image in &out {
            let stats = &image.stats;
            assert_eq!(image.tokens.len(), 9);
            assert_eq!((stats.target_forwards, stats.verify_steps), (4, 3));
            assert_eq!((stats.drafted, stats.accepted), (6 + 6 + 2, 2 + 2 + 1));
        }
        assert_eq!(cache.free_blocks(), 8, "finished images return their KV blocks");
    }
}
