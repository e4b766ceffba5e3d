//! Planning one step on the host: every index array the step's ops read, packed into one
//! upload (see the parent module's docs for the step).

use super::{Batch, Image, TreeLayout};
use crate::backend::{independent_batches, Backend, BlockInputs, BlockLayout, ChildDraws, CopyList, ForwardPlan, LogitsMap, Packed, PlanOffsets, RowGather};
use crate::decode::guided::GuidedSeqs;
use crate::decode::speculative::draft::{tree_rows, CatchUpRow, Drafter};
use crate::decode::speculative::tree::{slot as slot_of, DraftNode};
use crate::error::{Error, Result};
use crate::model::{place_rows, StepRow};
use crate::sampling::Rng;

/// A uniform in `[0, 1)` as f32: the f64 draw rounded down where rounding to nearest would reach
/// 1 (which would reject a certain acceptance).
pub(super) fn uniform_f32(rng: &mut Rng) -> f32 {
    (rng.uniform() as f32).min(f32::from_bits(0x3f7f_ffff))
}

/// One forward pass of a step: its plan, where the plan was packed, and the ops that follow it.
pub(super) struct Pass {
    /// The rows' plan (host copy).
    pub plan: ForwardPlan,
    /// Where it sits in the packed words.
    pub at: PlanOffsets,
    /// Rows of the pass.
    pub rows: usize,
    /// The input features it gathers first (a draft head's), from the target's last
    /// verification pass (the first draft pass) or the previous draft pass.
    pub features: Option<RowGather>,
    /// Which of its logits rows become distribution slots (`q` for draft passes, `p` for the
    /// verification pass).
    pub logits: Option<LogitsMap>,
    /// The tree level drawn from those distributions after it (draft passes).
    pub children: Option<ChildDraws>,
}

/// One step's plan: the packed words and what each op reads there.
pub(super) struct StepPlan {
    pub packed: Packed,
    /// Independent batches of KV moves in the target's and the drafter's pools.
    pub target_copies: Vec<CopyList>,
    pub draft_copies: Vec<CopyList>,
    /// The drafter's passes: catch-up, then one per tree level below the deepest.
    pub drafts: Vec<Pass>,
    pub verify: Pass,
    /// The fused acceptance (`None`: the host walk verifies).
    pub accept: Option<BlockLayout>,
    /// Words of the step's state (drafted tokens, decisions, flags).
    pub state_len: usize,
    /// Node slots per image (`nodes + 1` distribution slots).
    pub nodes: usize,
    /// State offsets of the draft and target distributions' non-finite flags, `[images, nodes + 1]`.
    pub q_flags_at: usize,
    pub p_flags_at: usize,
    /// Per image of the step: levels drafted, nodes present, and the verification pass's rows
    /// (conditional, unconditional) of each present slot.
    pub images: Vec<ImagePlan>,
}

/// One image's part of a step.
pub(super) struct ImagePlan {
    /// Pending position.
    pub pending: usize,
    /// Levels drafted (0: a plain target step).
    pub depth: usize,
    /// Nodes present (the BFS prefix of depth `<= depth`).
    pub present: usize,
    /// Nodes expanded (with children, so with a draft distribution): depth `< depth`.
    pub expanded: usize,
    /// Verification rows (conditional, unconditional) of slot 0 (the pending token) and `1 + i`.
    pub verify_rows: Vec<(u32, u32)>,
    /// Draft passes the image took part in.
    pub draft_passes: usize,
}

/// The rows of one pass over several images: every image's conditional rows, then their
/// unconditional mirrors (with CFG), and per conditional row the source rows of its input
/// feature.
#[derive(Default)]
struct PassRows {
    cond: Vec<StepRow>,
    uncond: Vec<StepRow>,
    features: Vec<(u32, u32)>,
}

impl PassRows {
    /// Add `rows` of an image with sequences `seqs`; returns the index of the first one.
    fn add(&mut self, seqs: &GuidedSeqs, rows: Vec<StepRow>, features: impl IntoIterator<Item = (u32, u32)>) -> usize {
        let first = self.cond.len();
        self.uncond.extend(seqs.mirrored(&rows));
        self.cond.extend(rows);
        self.features.extend(features);
        first
    }

    /// The (conditional, unconditional) pass rows of conditional row `i`.
    fn pair(&self, i: usize) -> (u32, u32) {
        let uncond = if self.uncond.is_empty() { i } else { self.cond.len() + i };
        (i as u32, uncond as u32)
    }

    /// Every row, conditional first.
    fn all(&self) -> Vec<StepRow> {
        self.cond.iter().chain(&self.uncond).cloned().collect()
    }

    /// The feature sources of every row (the unconditional rows read the unconditional source).
    fn feature_rows(&self) -> Vec<u32> {
        let cond = self.features.iter().map(|f| f.0);
        let uncond = self.features.iter().map(|f| f.1).take(self.uncond.len());
        cond.chain(uncond).collect()
    }
}

/// Distribution slots filled from a pass's rows: (conditional row index, slot row).
#[derive(Default)]
struct SlotRows {
    entries: Vec<(usize, u32)>,
}

impl SlotRows {
    /// Pack the logits map of `pass` into `packed` (`None` when no slot is filled).
    fn pack(&self, packed: &mut Packed, pass: &PassRows, vocab: usize, flags_at: usize) -> Result<Option<LogitsMap>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let pairs: Vec<(u32, u32)> = self.entries.iter().map(|&(row, _)| pass.pair(row)).collect();
        let cond: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let uncond: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let dst: Vec<u32> = self.entries.iter().map(|e| e.1).collect();
        LogitsMap::pack(packed, vocab, &cond, (!pass.uncond.is_empty()).then_some(&uncond[..]), &dst, flags_at).map(Some)
    }
}

/// Pack ordered copies as independent batches.
fn pack_copies(packed: &mut Packed, copies: &[(u32, u32)]) -> Vec<CopyList> {
    let (src, dst): (Vec<u32>, Vec<u32>) = copies.iter().copied().unzip();
    independent_batches(&src, &dst).iter().map(|(s, d)| CopyList::pack(packed, s, d)).collect()
}

impl<B: Backend> Batch<'_, B> {
    /// Levels image `image` drafts this step: none at its first step (a draft head needs the
    /// target's features first) or without a drafter, else the tree's depth, cut so no drafted
    /// token falls past the image's last one.
    fn levels(&self, image: &Image) -> usize {
        let m = image.state.pending_position();
        let total = self.target.config().block_size;
        if m == 0 {
            0
        } else {
            self.tree.depth().min(total - m - 1)
        }
    }

    /// The relaxation factor of each block depth for the fused op, or `None` when the rule needs
    /// the host walk (no factor at some depth).
    fn kernel_omega(&self) -> Option<Vec<f32>> {
        let n = self.tree.nodes.len();
        match &self.decoding.speculative {
            None => Some(vec![1.0; n]),
            Some(spec) => (0..n).map(|d| if d < self.tree.depth() { spec.rule.kernel_omega(d) } else { Some(1.0) }).collect(),
        }
    }

    /// Plan one step for every image in flight.
    pub(super) fn plan_step(&mut self) -> Result<StepPlan> {
        let active: Vec<usize> = (0..self.images.len()).collect();
        let active = &active[..];
        let n = self.tree.nodes.len();
        let slots = n + 1;
        let vocab = self.target.config().vocab_size;
        let batch = active.len();
        // Packed in the order that keeps each fixed-shape region at the same offsets step after
        // step (graph replays): the verification and acceptance, the tree levels, then what
        // varies (the catch-up pass, the KV moves).
        let mut packed = Packed::default();
        // State: drafted tokens, the acceptance's outputs, then the q and p flags.
        let accept_at = batch * n;
        let mut images: Vec<ImagePlan> = Vec::with_capacity(batch);
        for &i in active {
            let depth = self.levels(&self.images[i]);
            let pending = self.images[i].state.pending_position();
            let expanded = self.tree.present(depth.saturating_sub(1));
            images.push(ImagePlan { pending, depth, present: self.tree.present(depth), expanded, verify_rows: Vec::new(), draft_passes: 0 });
        }
        // Pre-drawn uniforms, image by image: draws, then acceptance tests, then the final token.
        let mut draw_u = vec![0.0f32; batch * n];
        let mut accept_u = vec![0.0f32; batch * n];
        let mut sample_u = vec![0.0f32; batch];
        let omega = self.kernel_omega();
        for (b, &i) in active.iter().enumerate() {
            let rng = &mut self.images[i].rng;
            let present = images[b].present;
            draw_u[b * n..][..present].iter_mut().for_each(|u| *u = uniform_f32(rng));
            if omega.is_some() {
                accept_u[b * n..][..present].iter_mut().for_each(|u| *u = uniform_f32(rng));
                sample_u[b] = uniform_f32(rng);
            }
        }
        let block_len = if omega.is_some() { 2 * batch + 2 * batch * n } else { 0 };
        let q_flags_at = accept_at + block_len;
        let p_flags_at = q_flags_at + batch * slots;
        let verify = self.plan_verify(&mut packed, active, &mut images, vocab, p_flags_at)?;
        let accept = match &omega {
            Some(omega) => {
                let mut parents = vec![-2i32; batch * n];
                for (b, image) in images.iter().enumerate() {
                    for node in &self.tree.nodes[..image.present] {
                        parents[b * n + node.index] = node.parent.map_or(-1, |p| p as i32);
                    }
                }
                let inputs = BlockInputs { batch, nodes: n, vocab, parents: &parents, omega, u_accept: &accept_u, u_sample: &sample_u };
                Some(BlockLayout::pack(&mut packed, &inputs, 0, accept_at)?)
            }
            None => None,
        };
        let drafts = self.plan_drafts(&mut packed, active, &mut images, &draw_u, vocab, q_flags_at)?;
        let (target_moves, draft_moves): (Vec<_>, Vec<_>) =
            self.images.iter_mut().map(|image| (std::mem::take(&mut image.target_copies), std::mem::take(&mut image.draft_copies))).unzip();
        let target_copies = pack_copies(&mut packed, &target_moves.concat());
        let draft_copies = pack_copies(&mut packed, &draft_moves.concat());
        Ok(StepPlan { packed, target_copies, draft_copies, drafts, verify, accept, state_len: p_flags_at + batch * slots, nodes: n, q_flags_at, p_flags_at, images })
    }

    /// The drafter's passes (none without a drafter or when no image has rows to feed).
    fn plan_drafts(&mut self, packed: &mut Packed, active: &[usize], images: &mut [ImagePlan], draw_u: &[f32], vocab: usize, flags_at: usize) -> Result<Vec<Pass>> {
        let Some(spec) = self.decoding.speculative.as_mut() else { return Ok(Vec::new()) };
        let drafter: &mut dyn Drafter<B> = &mut *spec.drafter;
        let (tree, backend) = (&self.tree, self.backend);
        let slots = tree.nodes.len() + 1;
        let mut passes = Vec::new();
        // The catch-up pass: each image's unseen committed rows; its last row gives q at the
        // pending token of the images that draft.
        let mut rows = PassRows::default();
        let mut q = SlotRows::default();
        // Per image: the previous pass's row of each slot (the parents of the next level).
        let mut parent_rows: Vec<Vec<usize>> = vec![vec![usize::MAX; slots]; active.len()];
        for (b, &i) in active.iter().enumerate() {
            let image = &self.images[i];
            let drafting = images[b].depth > 0;
            let Some(slot) = image.draft else { continue };
            let catch_up: Vec<CatchUpRow> = drafter.catch_up(slot, &image.state, drafting)?;
            if catch_up.is_empty() {
                if drafting {
                    return Err(Error::Internal("a drafting image has no row to feed".into()));
                }
                continue;
            }
            let seqs = drafter.seqs(slot)?;
            let features: Vec<(u32, u32)> = catch_up.iter().map(|r| r.feature.unwrap_or_default()).collect();
            let step_rows = catch_up.iter().map(|r| StepRow::causal(seqs.cond, r.input, r.position)).collect();
            let last = rows.add(&seqs, step_rows, features) + catch_up.len() - 1;
            images[b].draft_passes += 1;
            if drafting {
                q.entries.push((last, (b * slots) as u32));
                parent_rows[b][0] = last;
            }
        }
        if rows.cond.is_empty() {
            return Ok(passes);
        }
        // The catch-up pass is packed after the levels (its length varies, theirs repeat).
        let catch_up_plan = drafter.place(backend, &rows.all())?;
        let (catch_up_rows, catch_up_q) = (rows, q);
        let mut rows = &catch_up_rows;
        let mut level_passes: Vec<PassRows> = Vec::new();
        // One pass per level d whose nodes have children: the nodes of depth d of the images
        // drafting deeper than d.
        for d in 1..tree.depth() {
            let mut level = PassRows::default();
            let mut q = SlotRows::default();
            let mut level_rows: Vec<Vec<usize>> = vec![vec![usize::MAX; slots]; active.len()];
            let fed = &tree.nodes[..tree.present(d)];
            let nodes: Vec<DraftNode> = fed.iter().filter(|node| node.depth == d).copied().collect();
            for (b, &i) in active.iter().enumerate() {
                if images[b].depth <= d {
                    continue;
                }
                let slot = self.images[i].draft.ok_or_else(|| Error::Internal("a drafting image has no drafter slot".into()))?;
                let seqs = drafter.seqs(slot)?;
                let node_rows = tree_rows(seqs.cond, images[b].pending, fed, &nodes, b * (slots - 1))?;
                let features: Vec<(u32, u32)> = nodes.iter().map(|node| rows.pair(parent_rows[b][slot_of(node.parent)])).collect();
                let first = level.add(&seqs, node_rows, features);
                for (k, node) in nodes.iter().enumerate() {
                    level_rows[b][1 + node.index] = first + k;
                    q.entries.push((first + k, (b * slots + 1 + node.index) as u32));
                }
                images[b].draft_passes += 1;
            }
            if level.cond.is_empty() {
                break; // no image drafts this deep this step
            }
            let plan = drafter.place(backend, &level.all())?;
            let draws = tree.level_draws(packed, images, d + 1, draw_u, vocab)?;
            passes.push(pack_draft_pass(drafter, packed, plan, &level, &q, draws, vocab, flags_at)?);
            level_passes.push(level);
            rows = level_passes.last().expect("just pushed");
            parent_rows = level_rows;
        }
        let draws = tree.level_draws(packed, images, 1, draw_u, vocab)?;
        passes.insert(0, pack_draft_pass(drafter, packed, catch_up_plan, &catch_up_rows, &catch_up_q, draws, vocab, flags_at)?);
        Ok(passes)
    }

    /// The verification pass: each image's pending token and its drafted nodes.
    fn plan_verify(&mut self, packed: &mut Packed, active: &[usize], images: &mut [ImagePlan], vocab: usize, flags_at: usize) -> Result<Pass> {
        let n = self.tree.nodes.len();
        let slots = n + 1;
        let mut rows = PassRows::default();
        let mut p = SlotRows::default();
        let mut firsts = Vec::with_capacity(active.len());
        for (b, &i) in active.iter().enumerate() {
            let image = &self.images[i];
            let m = images[b].pending;
            let present = &self.tree.nodes[..images[b].present];
            let mut step_rows = vec![StepRow::causal(image.target.cond, image.state.input_at(m), m)];
            step_rows.extend(tree_rows(image.target.cond, m, present, present, b * n)?);
            let count = step_rows.len();
            let first = rows.add(&image.target, step_rows, std::iter::empty());
            p.entries.extend((0..count).map(|k| (first + k, (b * slots + k) as u32)));
            firsts.push((first, count));
        }
        for (image, &(first, count)) in images.iter_mut().zip(&firsts) {
            image.verify_rows = (first..first + count).map(|r| rows.pair(r)).collect();
        }
        let all = rows.all();
        let plan = place_rows(self.backend, &mut self.cache, &all, self.target.config().max_seq_len(), self.target.gathers(&all)?)?;
        let at = plan.pack(packed);
        let logits = p.pack(packed, &rows, vocab, flags_at)?;
        Ok(Pass { plan, at, rows: all.len(), features: None, logits, children: None })
    }
}

impl TreeLayout {
    /// The draws of tree level `d` (1-based): the children of every node of depth `d - 1` (the
    /// pending token for `d = 1`) of the images drafting at least `d` levels.
    fn level_draws(&self, packed: &mut Packed, images: &[ImagePlan], d: usize, draw_u: &[f32], vocab: usize) -> Result<Option<ChildDraws>> {
        let n = self.nodes.len();
        let slots = n + 1;
        let width = self.widths.get(d - 1).copied().unwrap_or(0);
        let (mut rows, mut first, mut uniforms) = (Vec::new(), Vec::new(), Vec::new());
        for (b, image) in images.iter().enumerate() {
            if image.depth < d {
                continue;
            }
            let parents = std::iter::once(0).filter(|_| d == 1).chain(self.nodes.iter().filter(|node| node.depth == d - 1).map(|node| 1 + node.index));
            for parent_slot in parents {
                let child = self.first_child[parent_slot];
                rows.push((b * slots + parent_slot) as u32);
                first.push((b * n + child) as u32);
                uniforms.extend_from_slice(&draw_u[b * n + child..][..width]);
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        ChildDraws::pack(packed, vocab, width, &rows, &first, &uniforms).map(Some)
    }
}

/// Pack one draft pass: its plan (its rows already placed in the drafter's cache), its feature
/// gather (a draft head's: from the target's last verification for the catch-up pass, else from
/// the previous pass), its q map and the level drawn after it.
#[allow(clippy::too_many_arguments)]
fn pack_draft_pass<B: Backend>(
    drafter: &dyn Drafter<B>,
    packed: &mut Packed,
    plan: ForwardPlan,
    rows: &PassRows,
    q: &SlotRows,
    children: Option<ChildDraws>,
    vocab: usize,
    flags_at: usize,
) -> Result<Pass> {
    let at = plan.pack(packed);
    let features = drafter.uses_features().then(|| RowGather::pack(packed, &rows.feature_rows()));
    let logits = q.pack(packed, rows, vocab, flags_at)?;
    Ok(Pass { rows: plan.rows(), plan, at, features, logits, children })
}
