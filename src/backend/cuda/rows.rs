//! Launches of the row-wise and elementwise kernels (kernels/norm.cu, rope.cu, swiglu.cu,
//! elementwise.cu, embedding.cu). Shapes are checked by the callers in `mod.rs`.

use cudarc::driver::PushKernelArg;

use super::buffer::{upload_slice, CudaBuf, CudaWeight};
use super::kernels::{config, elementwise_config, launch, ROPE_THREADS, ROW_THREADS};
use super::CudaBackend;
use crate::error::Result;

impl CudaBackend {
    /// `embedding_{f32,bf16}(table, ids, out_rows, dim, out)`: one block per id.
    pub(super) fn launch_embedding(&self, table: &CudaWeight, ids: &[u32], out_rows: &[u32], dim: usize, out: &mut CudaBuf) -> Result<()> {
        let (ids_dev, rows_dev) = (upload_slice(&self.stream, ids)?, upload_slice(&self.stream, out_rows)?);
        let dim = dim as i32;
        let cfg = config((ids.len() as u32, 1), ROW_THREADS);
        let mut args = match table {
            CudaWeight::F32(t) => {
                let mut args = self.stream.launch_builder(&self.kernels.embedding_f32);
                args.arg(&t.data);
                args
            }
            CudaWeight::Bf16 { data, .. } => {
                let mut args = self.stream.launch_builder(&self.kernels.embedding_bf16);
                args.arg(data);
                args
            }
        };
        args.arg(&ids_dev).arg(&rows_dev).arg(&dim).arg(&mut out.data);
        launch(args, cfg, "embedding")
    }

    /// `concat_rows(a, a_dim, b, b_dim, out)`: one block per row.
    pub(super) fn launch_concat_rows(&self, a: &CudaBuf, a_dim: usize, b: &CudaBuf, b_dim: usize, rows: usize, out: &mut CudaBuf) -> Result<()> {
        let (a_dim, b_dim) = (a_dim as i32, b_dim as i32);
        let mut args = self.stream.launch_builder(&self.kernels.concat_rows);
        args.arg(&a.data).arg(&a_dim).arg(&b.data).arg(&b_dim).arg(&mut out.data);
        launch(args, config((rows as u32, 1), ROW_THREADS), "concat_rows")
    }

    /// `rms_norm(x, weight, eps, dim, out)` or, with a residual,
    /// `add_rms_norm(residual, x, weight, eps, dim, out)`: one block per row.
    pub(super) fn launch_rms_norm(&self, residual: Option<&mut CudaBuf>, x: &CudaBuf, weight: &CudaBuf, eps: f32, dim: usize, out: &mut CudaBuf) -> Result<()> {
        let cfg = config(((x.len() / dim) as u32, 1), ROW_THREADS);
        let dim = dim as i32;
        let mut args = match residual {
            Some(residual) => {
                let mut args = self.stream.launch_builder(&self.kernels.add_rms_norm);
                args.arg(&mut residual.data);
                args
            }
            None => self.stream.launch_builder(&self.kernels.rms_norm),
        };
        args.arg(&x.data).arg(&weight.data).arg(&eps).arg(&dim).arg(&mut out.data);
        launch(args, cfg, "rms_norm")
    }

    /// `add_assign(acc, x, n)`: one thread per element.
    pub(super) fn launch_add_assign(&self, acc: &mut CudaBuf, x: &CudaBuf) -> Result<()> {
        let (cfg, n) = (elementwise_config(acc.len()), acc.len() as u64);
        let mut args = self.stream.launch_builder(&self.kernels.add_assign);
        args.arg(&mut acc.data).arg(&x.data).arg(&n);
        launch(args, cfg, "add_assign")
    }

    /// `swiglu(gate, up, out, n)`: one thread per element.
    pub(super) fn launch_swiglu(&self, gate: &CudaBuf, up: &CudaBuf, out: &mut CudaBuf) -> Result<()> {
        let (cfg, n) = (elementwise_config(out.len()), out.len() as u64);
        let mut args = self.stream.launch_builder(&self.kernels.swiglu);
        args.arg(&gate.data).arg(&up.data).arg(&mut out.data).arg(&n);
        launch(args, cfg, "swiglu")
    }

    /// `rope(x, row_stride, n_rot_heads, head_dim, table, positions)`: one block per row.
    pub(super) fn launch_rope(
        &self,
        x: &mut CudaBuf,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &CudaBuf,
        positions: &[u32],
    ) -> Result<()> {
        let positions_dev = upload_slice(&self.stream, positions)?;
        let (row_stride, n_rot_heads, head_dim) = (row_stride as i32, n_rot_heads as i32, head_dim as i32);
        let mut args = self.stream.launch_builder(&self.kernels.rope);
        args.arg(&mut x.data).arg(&row_stride).arg(&n_rot_heads).arg(&head_dim).arg(&table.data).arg(&positions_dev);
        launch(args, config((positions.len() as u32, 1), ROPE_THREADS), "rope")
    }
}
