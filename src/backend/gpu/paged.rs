//! The paged KV cache on the device: fused append, slot copies and paged attention
//! (kernels/kv_cache.cu, kernels/attention.cu).

use super::buffer::{DevVec, GpuBuf, GpuKvPool, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::{ATTN_WARPS, ROW_THREADS};
use super::GpuBackend;
use crate::backend::AttentionLayout;
use crate::error::{Error, Result};

/// An [`AttentionLayout`] uploaded to the device, with the host copy it came from.
pub(super) struct DeviceLayout<D: Driver> {
    host: AttentionLayout,
    block_tables: DevVec<u32, D>,
    query_seq: DevVec<u32, D>,
    query_prefix: DevVec<u32, D>,
    window_start: DevVec<u32, D>,
    window_mask: DevVec<u8, D>,
}

/// Check that every key a query can see maps to a block of the pool, so the kernel never reads
/// outside it (the CPU backend would panic instead).
fn validate_layout(layout: &AttentionLayout, num_blocks: usize) -> Result<()> {
    let rows = layout.rows();
    let sequences = layout.block_tables.len().checked_div(layout.max_blocks).unwrap_or(0);
    let capacity = layout.max_blocks * layout.block_size;
    let ok = layout.query_prefix.len() == rows
        && layout.window_start.len() == rows
        && layout.window_mask.len() == rows * layout.window_len
        && layout.block_tables.iter().all(|&b| (b as usize) < num_blocks)
        && (0..rows).all(|r| {
            let end = layout.visible_positions(r).last().map_or(0, |p| p + 1);
            (layout.query_seq[r] as usize) < sequences && end <= capacity
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Backend("attention: layout refers to keys outside its block tables or the pool".into()))
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
    /// Validate `layout` and copy its arrays to the device.
    fn upload_layout(&self, layout: &AttentionLayout, num_blocks: usize) -> Result<DeviceLayout<D>> {
        validate_layout(layout, num_blocks)?;
        Ok(DeviceLayout {
            host: layout.clone(),
            block_tables: self.upload_indices(&layout.block_tables)?,
            query_seq: self.upload_indices(&layout.query_seq)?,
            query_prefix: self.upload_indices(&layout.query_prefix)?,
            window_start: self.upload_indices(&layout.window_start)?,
            window_mask: DevVec::from_host(&self.driver, &layout.window_mask)?,
        })
    }

    /// `kv_write(qkv, width, slots, pool, key_plane, value_plane)`: one block per row.
    pub(super) fn launch_kv_write(&self, pool: &mut GpuKvPool<D>, layer: usize, qkv: &GpuBuf<D>, slots: &[u32]) -> Result<()> {
        let slots_dev = self.upload_indices(slots)?;
        let (key_plane, value_plane) = (pool.plane_offset(layer, false), pool.plane_offset(layer, true));
        let launch = LaunchBuilder::new(&self.driver, (slots.len(), 1), ROW_THREADS)?
            .input(qkv)
            .i32(pool.shape.row_width())?
            .input(&slots_dev)
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
            let (src_dev, dst_dev) = (self.upload_indices(&src)?, self.upload_indices(&dst)?);
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
    pub(super) fn launch_attention(&self, qkv: &GpuBuf<D>, pool: &GpuKvPool<D>, layer: usize, layout: &AttentionLayout, out: &mut GpuBuf<D>) -> Result<()> {
        let mut cache = self.layout_cache.lock().map_err(|_| Error::Backend("attention: layout cache poisoned".into()))?;
        let dev = match &mut *cache {
            Some(dev) if dev.host == *layout => dev,
            stale => stale.insert(self.upload_layout(layout, pool.shape.num_blocks)?),
        };
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
            .input(&dev.block_tables)
            .input(&dev.query_seq)
            .input(&dev.query_prefix)
            .input(&dev.window_start)
            .i32(layout.window_len)?
            .input(&dev.window_mask)
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
