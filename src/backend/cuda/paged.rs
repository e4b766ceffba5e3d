//! The paged KV cache on the GPU: fused append, slot copies and paged attention
//! (kernels/kv_cache.cu, kernels/attention.cu).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::buffer::{upload_slice, CudaBuf, CudaKvPool};
use super::kernels::{config, launch, ATTENTION_WARPS, ROW_THREADS};
use super::CudaBackend;
use crate::backend::AttentionLayout;
use crate::error::{Error, Result};

/// An [`AttentionLayout`] uploaded to the device, with the host copy it came from.
pub(super) struct DeviceLayout {
    host: AttentionLayout,
    block_tables: CudaSlice<u32>,
    query_seq: CudaSlice<u32>,
    query_prefix: CudaSlice<u32>,
    window_start: CudaSlice<u32>,
    window_mask: CudaSlice<u8>,
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
        Err(Error::Backend("cuda attention: layout refers to keys outside its block tables or the pool".into()))
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

impl CudaBackend {
    /// Validate `layout` and copy its arrays to the device.
    fn upload_layout(&self, layout: &AttentionLayout, num_blocks: usize) -> Result<DeviceLayout> {
        validate_layout(layout, num_blocks)?;
        Ok(DeviceLayout {
            host: layout.clone(),
            block_tables: upload_slice(&self.stream, &layout.block_tables)?,
            query_seq: upload_slice(&self.stream, &layout.query_seq)?,
            query_prefix: upload_slice(&self.stream, &layout.query_prefix)?,
            window_start: upload_slice(&self.stream, &layout.window_start)?,
            window_mask: upload_slice(&self.stream, &layout.window_mask)?,
        })
    }

    /// `kv_write(qkv, width, slots, pool, key_plane, value_plane)`: one block per row.
    pub(super) fn launch_kv_write(&self, pool: &mut CudaKvPool, layer: usize, qkv: &CudaBuf, slots: &[u32]) -> Result<()> {
        let slots_dev = upload_slice(&self.stream, slots)?;
        let width = pool.shape.row_width() as i32;
        let (key_plane, value_plane) = (pool.plane_offset(layer, false) as u64, pool.plane_offset(layer, true) as u64);
        let mut args = self.stream.launch_builder(&self.kernels.kv_write);
        args.arg(&qkv.data).arg(&width).arg(&slots_dev).arg(&mut pool.data).arg(&key_plane).arg(&value_plane);
        launch(args, config((slots.len() as u32, 1), ROW_THREADS), "kv_write")
    }

    /// `kv_copy(pool, plane_len, width, src, dst)`: one block per (pair, plane), one launch per
    /// batch of independent copies (see [`independent_batches`]).
    pub(super) fn launch_kv_copy(&self, pool: &mut CudaKvPool, src: &[u32], dst: &[u32]) -> Result<()> {
        let plane_len = pool.plane_len() as u64;
        let width = pool.shape.row_width() as i32;
        let planes = 2 * pool.shape.n_layer as u32;
        for (src, dst) in independent_batches(src, dst) {
            let (src_dev, dst_dev) = (upload_slice(&self.stream, &src)?, upload_slice(&self.stream, &dst)?);
            let mut args = self.stream.launch_builder(&self.kernels.kv_copy);
            args.arg(&mut pool.data).arg(&plane_len).arg(&width).arg(&src_dev).arg(&dst_dev);
            launch(args, config((src.len() as u32, planes), ROW_THREADS), "kv_copy")?;
        }
        Ok(())
    }

    /// `paged_attention(...)` (argument order of kernels/attention.cu): one block per
    /// (query row, head).
    pub(super) fn launch_attention(&self, qkv: &CudaBuf, pool: &CudaKvPool, layer: usize, layout: &AttentionLayout, out: &mut CudaBuf) -> Result<()> {
        let mut cache = self.layout_cache.lock().map_err(|_| Error::Backend("cuda attention: layout cache poisoned".into()))?;
        let dev = match &mut *cache {
            Some(dev) if dev.host == *layout => dev,
            stale => stale.insert(self.upload_layout(layout, pool.shape.num_blocks)?),
        };
        let plane = pool.plane_len();
        let keys = pool.data.slice(pool.plane_offset(layer, false)..pool.plane_offset(layer, false) + plane);
        let values = pool.data.slice(pool.plane_offset(layer, true)..pool.plane_offset(layer, true) + plane);
        let (n_head, head_dim) = (layout.n_head as i32, layout.head_dim as i32);
        let (block_size, max_blocks, window_len) = (layout.block_size as i32, layout.max_blocks as i32, layout.window_len as i32);
        let scale = 1.0 / (layout.head_dim as f32).sqrt();
        let mut args = self.stream.launch_builder(&self.kernels.paged_attention);
        args.arg(&qkv.data).arg(&keys).arg(&values).arg(&mut out.data);
        args.arg(&n_head).arg(&head_dim).arg(&block_size).arg(&max_blocks);
        args.arg(&dev.block_tables).arg(&dev.query_seq).arg(&dev.query_prefix).arg(&dev.window_start);
        args.arg(&window_len).arg(&dev.window_mask).arg(&scale);
        launch(args, config((layout.rows() as u32, layout.n_head as u32), ATTENTION_WARPS * 32), "attention")
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
