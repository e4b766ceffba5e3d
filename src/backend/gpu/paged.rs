//! The paged KV cache on the device: fused append, slot copies and paged attention
//! (kernels/kv_cache.cu, kernels/attention.cu).

use super::buffer::{DevVec, GpuBuf, GpuKvPool, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::{ATTN_WARPS, ROW_THREADS};
use super::GpuBackend;
use crate::backend::{AttentionLayout, ForwardPlan};
use crate::error::{Error, Result};

/// A [`ForwardPlan`] on the device: its arrays packed into one buffer of u32 words (the window
/// mask's bytes four to a word, then the embedding gathers), uploaded with one copy and read by
/// every layer.
pub struct GpuPlan<D: Driver> {
    pub(super) host: ForwardPlan,
    words: DevVec<u32, D>,
    /// Word offsets of positions, slots, block tables, query sequences, query prefixes, window
    /// starts and the window mask.
    offsets: [usize; 7],
    /// Word offsets of each gather's ids and rows.
    gathers: Vec<(usize, usize)>,
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
    /// Validate `plan` and upload it in one copy.
    pub(super) fn upload(backend: &GpuBackend<D>, plan: ForwardPlan) -> Result<Self> {
        validate_layout(&plan.layout)?;
        let layout = &plan.layout;
        let parts: [&[u32]; 6] = [&plan.positions, &plan.slots, &layout.block_tables, &layout.query_seq, &layout.query_prefix, &layout.window_start];
        let mut words = Vec::new();
        let mut offsets = [0; 7];
        for (offset, part) in offsets.iter_mut().zip(parts) {
            *offset = words.len();
            words.extend_from_slice(part);
        }
        offsets[6] = words.len();
        words.extend(layout.window_mask.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &b)| w | u32::from(b) << (8 * i))));
        let mut gathers = Vec::with_capacity(plan.gathers.len());
        for gather in &plan.gathers {
            gathers.push((words.len(), words.len() + gather.ids.len()));
            words.extend_from_slice(&gather.ids);
            words.extend_from_slice(&gather.rows);
        }
        Ok(Self { words: backend.upload_vec(&words)?, offsets, gathers, host: plan })
    }

    /// The packed device buffer.
    pub(super) fn words(&self) -> &DevVec<u32, D> {
        &self.words
    }

    /// Word offsets of the ids and the rows of gather `gather` (checked to exist by the caller).
    pub(super) fn gather_offsets(&self, gather: usize) -> (usize, usize) {
        self.gathers[gather]
    }

    /// Word offset of the RoPE positions.
    pub(super) fn positions_offset(&self) -> usize {
        self.offsets[0]
    }
}

/// Split the copies `src[i] -> dst[i]`, meant to run in order (as on the CPU), into consecutive
/// batches whose copies are independent and may run in parallel: a copy joins the current batch
/// unless it reads a slot the batch writes or writes a slot the batch reads or writes. Copies of
/// a slot onto itself are dropped. (Compacting an accepted tree path, `[2, 5] -> [1, 2]`, needs
/// two batches: slot 2 is read by the first copy and written by the second.)
fn independent_batches(src: &[u32], dst: &[u32]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut batches: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    let mut current: (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for (&s, &d) in src.iter().zip(dst).filter(|(s, d)| s != d) {
        if current.1.contains(&s) || current.0.contains(&d) || current.1.contains(&d) {
            batches.push(std::mem::take(&mut current));
        }
        current.0.push(s);
        current.1.push(d);
    }
    if !current.0.is_empty() {
        batches.push(current);
    }
    batches
}

impl<D: Driver> GpuBackend<D> {
    /// `kv_write(qkv, width, slots, pool, key_plane, value_plane)`: one block per row.
    pub(super) fn launch_kv_write(&self, pool: &mut GpuKvPool<D>, layer: usize, qkv: &GpuBuf<D>, plan: &GpuPlan<D>) -> Result<()> {
        let (key_plane, value_plane) = (pool.plane_offset(layer, false), pool.plane_offset(layer, true));
        let launch = LaunchBuilder::new(&self.driver, (plan.host.slots.len(), 1), ROW_THREADS)?
            .input(qkv)
            .i32(pool.shape.row_width())?
            .input_at(&plan.words, plan.offsets[1])
            .output(&mut pool.data)
            .u64(key_plane)
            .u64(value_plane)
            .build();
        self.run(Kernel::KvWrite, &launch)
    }

    /// `kv_copy(pool, plane_len, width, src, dst)`: one block per (pair, plane), one launch per
    /// batch of independent copies (see [`independent_batches`]).
    pub(super) fn launch_kv_copy(&self, pool: &mut GpuKvPool<D>, src: &[u32], dst: &[u32]) -> Result<()> {
        let (plane_len, width, planes) = (pool.plane_len(), pool.shape.row_width(), 2 * pool.shape.n_layer);
        for (src, dst) in independent_batches(src, dst) {
            let (src_dev, dst_dev) = (self.upload_vec(&src)?, self.upload_vec(&dst)?);
            let launch = LaunchBuilder::new(&self.driver, (src.len(), planes), ROW_THREADS)?
                .output(&mut pool.data)
                .u64(plane_len)
                .i32(width)?
                .input(&src_dev)
                .input(&dst_dev)
                .build();
            self.run(Kernel::KvCopy, &launch)?;
        }
        Ok(())
    }

    /// `paged_attention(...)` (argument order of kernels/attention.cu): one block per
    /// (query row, head).
    pub(super) fn launch_attention(&self, qkv: &GpuBuf<D>, pool: &GpuKvPool<D>, layer: usize, plan: &GpuPlan<D>, out: &mut GpuBuf<D>) -> Result<()> {
        let (layout, words, at) = (&plan.host.layout, &plan.words, plan.offsets);
        let scale = 1.0 / (layout.head_dim as f32).sqrt();
        let launch = LaunchBuilder::new(&self.driver, (layout.rows(), layout.n_head), ATTN_WARPS * 32)?
            .input(qkv)
            .input_at(&pool.data, pool.plane_offset(layer, false))
            .input_at(&pool.data, pool.plane_offset(layer, true))
            .output(out)
            .i32(layout.n_head)?
            .i32(layout.head_dim)?
            .i32(layout.block_size)?
            .i32(layout.max_blocks)?
            .input_at(words, at[2])
            .input_at(words, at[3])
            .input_at(words, at[4])
            .input_at(words, at[5])
            .i32(layout.window_len)?
            .input_at(words, at[6])
            .f32(scale)
            .build();
        self.run(Kernel::PagedAttention, &launch)
    }
}

#[cfg(test)]
mod tests {
    use super::independent_batches;

    #[test]
    fn copies_split_where_they_depend_on_each_other() {
        assert_eq!(independent_batches(&[0, 2, 5], &[0, 1, 2]), vec![(vec![2], vec![1]), (vec![5], vec![2])]);
        assert_eq!(independent_batches(&[1, 2, 3], &[9, 10, 11]), vec![(vec![1, 2, 3], vec![9, 10, 11])]);
        assert_eq!(independent_batches(&[1, 1], &[4, 4]), vec![(vec![1], vec![4]), (vec![1], vec![4])]);
        assert!(independent_batches(&[3], &[3]).is_empty());
    }
}
