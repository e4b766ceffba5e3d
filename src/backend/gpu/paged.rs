//! The paged KV cache on the device: fused append, slot copies and paged attention
//! (kernels/kv_cache.cu, kernels/attention.cu).

use std::sync::Arc;

use super::buffer::{DevVec, GpuBuf, GpuKvPool, GpuWords, KvData, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::{ATTN_GROUP_ROWS, ATTN_WARPS, ROPE_THREADS, ROW_THREADS, SKINNY_WARPS};
use super::GpuBackend;
use crate::backend::ops::check_parts;
use crate::backend::{AttentionLayout, CopyList, ForwardPlan, GemmShape, PlanOffsets};
use crate::error::{Error, Result};

/// A [`ForwardPlan`] on the device: a view of its arrays packed in an uploaded words buffer
/// (shared by every forward of a decoding step: one copy for the whole step), read by every
/// layer, with the host copy its ops check against.
pub struct GpuPlan<D: Driver> {
    pub(super) host: ForwardPlan,
    words: Arc<GpuWords<D>>,
    at: PlanOffsets,
}

/// Check that every key a query can see lies inside its sequence's block table, so the kernel
/// never reads outside it (whether the blocks are inside the pool is checked per call).
fn validate_layout(layout: &AttentionLayout) -> Result<()> {
    let rows = layout.rows();
    let sequences = layout.block_tables.len().checked_div(layout.max_blocks).unwrap_or(0);
    let capacity = layout.max_blocks * layout.block_size;
    let ok = layout.query_prefix.len() == rows
        && layout.window_start.len() == rows
        && layout.window_mask.len() == rows * layout.window_len
        && (0..rows).all(|r| {
            let end = layout.visible_positions(r).last().map_or(0, |p| p + 1);
            (layout.query_seq[r] as usize) < sequences && end <= capacity
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Backend("attention: layout refers to keys outside its block tables".into()))
    }
}

impl<D: Driver> GpuPlan<D> {
    /// A view of `plan`, packed at `at` into the uploaded `words`, after checking the layout and
    /// that every array lies inside `words`.
    pub(super) fn view(words: &Arc<GpuWords<D>>, plan: ForwardPlan, at: PlanOffsets) -> Result<Self> {
        validate_layout(&plan.layout)?;
        let layout = &plan.layout;
        let rows = layout.rows();
        let mut parts = vec![
            (at.positions, plan.positions.len()),
            (at.slots, plan.slots.len()),
            (at.layout[0], layout.block_tables.len()),
            (at.layout[1], rows),
            (at.layout[2], rows),
            (at.layout[3], rows),
            (at.layout[4], layout.window_mask.len().div_ceil(4)),
        ];
        if at.gathers.len() != plan.gathers.len() {
            return Err(Error::Backend("plan: gather offsets do not match its gathers".into()));
        }
        for (g, &(ids, out_rows)) in plan.gathers.iter().zip(&at.gathers) {
            parts.extend([(ids, g.ids.len()), (out_rows, g.rows.len())]);
        }
        check_parts("plan", words.len(), &parts)?;
        Ok(Self { host: plan, words: Arc::clone(words), at })
    }

    /// The packed device buffer.
    pub(super) fn words(&self) -> &GpuWords<D> {
        &self.words
    }

    /// Word offsets of the ids and the rows of gather `gather` (checked to exist by the caller).
    pub(super) fn gather_offsets(&self, gather: usize) -> (usize, usize) {
        self.at.gathers[gather]
    }

    /// Word offset of the RoPE positions.
    pub(super) fn positions_offset(&self) -> usize {
        self.at.positions
    }
}

impl<D: Driver> GpuBackend<D> {
    /// `kv_write(qkv, width, slots, pool, key_plane, value_plane)`: one block per row.
    pub(super) fn launch_kv_write(&self, pool: &mut GpuKvPool<D>, layer: usize, qkv: &GpuBuf<D>, plan: &GpuPlan<D>) -> Result<()> {
        let (key_plane, value_plane) = (pool.plane_offset(layer, false), pool.plane_offset(layer, true));
        let launch = LaunchBuilder::new(&self.driver, (plan.host.slots.len(), 1), ROW_THREADS)?
            .input(qkv)
            .i32(pool.shape.row_width())?
            .input_at(plan.words(), plan.at.slots)
            .kv_output(&mut pool.data)
            .u64(key_plane)
            .u64(value_plane)
            .build();
        self.run(kv_kernel(&pool.data, Kernel::KvWriteF32, Kernel::KvWriteBf16), &launch)
    }

    /// `rope_kv_write(qkv, width, head_dim, table, positions, slots, pool, key_plane,
    /// value_plane)` (kernels/rope.cu): one block per row, positions and slots read from the plan.
    pub(super) fn launch_rope_kv_write(&self, qkv: &mut GpuBuf<D>, head_dim: usize, table: &GpuBuf<D>, pool: &mut GpuKvPool<D>, layer: usize, plan: &GpuPlan<D>) -> Result<()> {
        let launch = LaunchBuilder::new(&self.driver, (plan.host.slots.len(), 1), ROPE_THREADS)?.output(qkv);
        let launch = rope_kv_params(launch, head_dim, table, pool, layer, plan)?.build();
        self.run(kv_kernel(&pool.data, Kernel::RopeKvWriteF32, Kernel::RopeKvWriteBf16), &launch)
    }

    /// `gemm_skinny_norm_qkv_rope_kv_*(x, norm, eps, w, qkv, rows, k, width, head_dim, table,
    /// positions, slots, pool, key_plane, value_plane)` (kernels/gemv.cu): one warp per qkv
    /// column, positions and slots read from the plan.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_norm_qkv_rope_kv(
        &self,
        x: &GpuBuf<D>,
        (norm, eps): (&GpuBuf<D>, f32),
        w: &DevVec<u16, D>,
        (shape, head_dim): (GemmShape, usize),
        table: &GpuBuf<D>,
        pool: &mut GpuKvPool<D>,
        layer: usize,
        plan: &GpuPlan<D>,
        qkv: &mut GpuBuf<D>,
    ) -> Result<()> {
        let launch = LaunchBuilder::new(&self.driver, (shape.n.div_ceil(SKINNY_WARPS as usize), 1), SKINNY_WARPS * 32)?
            .input(x)
            .input(norm)
            .f32(eps)
            .input(w)
            .output(qkv)
            .i32(shape.rows)?
            .i32(shape.k)?;
        let launch = rope_kv_params(launch, head_dim, table, pool, layer, plan)?.build();
        self.run(kv_kernel(&pool.data, Kernel::GemmSkinnyNormQkvRopeKvF32, Kernel::GemmSkinnyNormQkvRopeKvBf16), &launch)
    }

    /// `kv_copy(pool, plane_len, width, num_slots, src, dst)`: one block per (pair, plane), the
    /// slot lists read from `words`.
    pub(super) fn launch_kv_copy(&self, pool: &mut GpuKvPool<D>, words: &GpuWords<D>, copies: CopyList) -> Result<()> {
        check_parts("kv_copy", words.len(), &[(copies.src_at, copies.pairs), (copies.dst_at, copies.pairs)])?;
        let (plane_len, width, planes) = (pool.plane_len(), pool.shape.row_width(), 2 * pool.shape.n_layer);
        let kernel = kv_kernel(&pool.data, Kernel::KvCopyF32, Kernel::KvCopyBf16);
        let launch = LaunchBuilder::new(&self.driver, (copies.pairs, planes), ROW_THREADS)?
            .kv_output(&mut pool.data)
            .u64(plane_len)
            .i32(width)?
            .i32(pool.shape.num_slots())?
            .input_at(words, copies.src_at)
            .input_at(words, copies.dst_at)
            .build();
        self.run(kernel, &launch)
    }

    /// `paged_attention(...)` (argument order of kernels/attention.cu): one block per
    /// (query row, head, split of the keys), of which those starting a group of rows with the
    /// same keys work; the splits chosen by [`attention_splits`] over the groups.
    pub(super) fn launch_attention(&self, qkv: &GpuBuf<D>, pool: &GpuKvPool<D>, layer: usize, plan: &GpuPlan<D>, out: &mut GpuBuf<D>) -> Result<()> {
        let (layout, words, at) = (&plan.host.layout, plan.words(), &plan.at.layout);
        let scale = 1.0 / (layout.head_dim as f32).sqrt();
        let pairs = layout.rows() * layout.n_head;
        let keys = layout.query_prefix.iter().max().map_or(0, |&p| p as usize) + layout.window_len;
        let splits = attention_splits(attention_groups(layout) * layout.n_head, keys);
        let tile = attention_tile(layout.head_dim);
        let launch = LaunchBuilder::new_3d(&self.driver, (layout.rows(), layout.n_head, splits), ATTN_WARPS * 32)?
            .dynamic_shared(attention_shared_bytes(layout.head_dim, tile))?
            .input(qkv)
            .kv_input_at(&pool.data, pool.plane_offset(layer, false))
            .kv_input_at(&pool.data, pool.plane_offset(layer, true))
            .output(out)
            .i32(layout.n_head)?
            .i32(layout.head_dim)?
            .i32(layout.block_size)?
            .i32(layout.max_blocks)?
            .input_at(words, at[0])
            .input_at(words, at[1])
            .input_at(words, at[2])
            .input_at(words, at[3])
            .i32(layout.window_len)?
            .input_at(words, at[4])
            .f32(scale)
            .i32(tile)?;
        let launch = if splits == 1 {
            launch.null().null().build()
        } else {
            let mut scratch = self.attention_splits.lock().map_err(|_| Error::Backend("attention: the split-KV scratch is poisoned".into()))?;
            let SplitScratch { partials, arrivals } = &mut *scratch;
            // Sized for the most splits, so a context that grows does not reallocate mid-decode.
            launch.output(self.scratch(partials, pairs * MAX_SPLITS * (3 + layout.head_dim))?).output(self.scratch(arrivals, pairs)?).build()
        };
        self.run(kv_kernel(&pool.data, Kernel::PagedAttentionF32, Kernel::PagedAttentionBf16), &launch)
    }
}

/// The parameters every RoPE + KV-append kernel ends with: `width, head_dim, table, positions,
/// slots, pool, key_plane, value_plane`, the positions and slots read from the plan.
fn rope_kv_params<'d, D: Driver>(launch: LaunchBuilder<'d, D>, head_dim: usize, table: &GpuBuf<D>, pool: &mut GpuKvPool<D>, layer: usize, plan: &GpuPlan<D>) -> Result<LaunchBuilder<'d, D>> {
    let (key_plane, value_plane) = (pool.plane_offset(layer, false), pool.plane_offset(layer, true));
    Ok(launch
        .i32(pool.shape.row_width())?
        .i32(head_dim)?
        .input(table)
        .input_at(plan.words(), plan.positions_offset())
        .input_at(plan.words(), plan.at.slots)
        .kv_output(&mut pool.data)
        .u64(key_plane)
        .u64(value_plane))
}

/// Split-KV attention's device scratch: the partial states of every (row, head, split) and one
/// arrival count per (row, head), which the kernel leaves at zero.
pub(super) struct SplitScratch<D: Driver> {
    partials: Option<DevVec<f32, D>>,
    arrivals: Option<DevVec<u32, D>>,
}

impl<D: Driver> Default for SplitScratch<D> {
    fn default() -> Self {
        Self { partials: None, arrivals: None }
    }
}

/// Dynamic shared memory an attention block may use: the 48 KiB every CUDA GPU gives a block
/// without opting in, less room for the kernel's static `last` flag.
const ATTENTION_SHARED_BUDGET: usize = 48 * 1024 - 64;
/// Most keys per attention tile: one per lane.
const MAX_TILE: usize = 32;

/// Groups of query rows that one attention block serves (kernels/attention.cu's rule): each run
/// of consecutive rows with the same sequence, prefix and window start, cut into pieces of
/// [`ATTN_GROUP_ROWS`].
pub fn attention_groups(layout: &AttentionLayout) -> usize {
    let key = |r: usize| (layout.query_seq[r], layout.query_prefix[r], layout.window_start[r]);
    let mut groups = 0;
    let mut run = 0;
    for r in 0..layout.rows() {
        run = if r > 0 && key(r) == key(r - 1) { run + 1 } else { 0 };
        if run % ATTN_GROUP_ROWS as usize == 0 {
            groups += 1;
        }
    }
    groups
}

/// Keys per attention tile at `head_dim`: 32 where the queries and two tiles fit the shared
/// budget, fewer at the widest heads (15 at head_dim 256).
fn attention_tile(head_dim: usize) -> usize {
    let floats = ATTENTION_SHARED_BUDGET / 4 - ATTN_GROUP_ROWS as usize * head_dim;
    (floats / (2 * head_dim + 1)).min(MAX_TILE)
}

/// Dynamic shared memory of an attention block: the group's queries, a key tile (padded rows)
/// and a value tile, in f32.
fn attention_shared_bytes(head_dim: usize, tile: usize) -> usize {
    4 * (ATTN_GROUP_ROWS as usize * head_dim + tile * (2 * head_dim + 1))
}

/// Blocks an attention launch aims for: two per SM of an H100 (132 SMs) or H200.
const ATTENTION_TARGET_BLOCKS: usize = 264;
/// Fewest candidate keys a split takes (two tiles), so a split's merge stays cheap.
const MIN_KEYS_PER_SPLIT: usize = 64;
/// Most splits of one (row, head) pair.
const MAX_SPLITS: usize = 16;

/// How many ranges attention splits each (group, head) pair's keys into: one when the `pairs`
/// fill the GPU or the context (`keys` candidates at most) is short; else enough blocks to fill
/// it, each with at least [`MIN_KEYS_PER_SPLIT`] keys (flash-decoding's split-KV for batch 1 and
/// small batches).
pub fn attention_splits(pairs: usize, keys: usize) -> usize {
    let to_fill = ATTENTION_TARGET_BLOCKS.div_ceil(pairs.max(1));
    to_fill.min(keys / MIN_KEYS_PER_SPLIT).clamp(1, MAX_SPLITS)
}

/// The variant of a KV kernel for the pool's element type.
fn kv_kernel<D: Driver>(data: &KvData<D>, f32: Kernel, bf16: Kernel) -> Kernel {
    match data {
        KvData::F32(_) => f32,
        KvData::Bf16(_) => bf16,
    }
}

#[cfg(test)]
mod tests {
    use super::{attention_shared_bytes, attention_splits, attention_tile, ATTENTION_SHARED_BUDGET};

    #[test]
    fn splits_fill_the_gpu_only_where_pairs_are_few_and_contexts_long() {
        // GPT-XL at batch 1 with CFG: 2 rows x 20 heads, 288 keys: 4 splits of 72 keys.
        assert_eq!(attention_splits(40, 288), 4);
        assert_eq!(attention_splits(40, 4096), 7, "enough blocks to fill the GPU, no more");
        assert_eq!(attention_splits(40, 100), 1, "short contexts stay in one block");
        assert_eq!(attention_splits(16 * 20, 576), 1, "many pairs fill the GPU already");
        assert_eq!(attention_splits(1, 1 << 20), 16, "at most MAX_SPLITS");
    }

    #[test]
    fn tiles_fit_the_shared_budget_at_every_head_width() {
        assert_eq!(attention_tile(64), 32);
        assert_eq!(attention_tile(128), 32);
        assert_eq!(attention_tile(256), 15);
        for head_dim in 1..=crate::backend::gpu::geometry::MAX_HEAD_DIM as usize {
            let tile = attention_tile(head_dim);
            assert!(tile >= 1 && attention_shared_bytes(head_dim, tile) <= ATTENTION_SHARED_BUDGET, "head_dim {head_dim}");
        }
    }
}
