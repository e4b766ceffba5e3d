//! The CPU reference backend: f32 compute, SIMD GEMMs over weights in their stored precision
//! ([`gemm`]), and rayon's pool for the ops large enough to split.
//!
//! Every GPU kernel is tested against these implementations.

pub mod accept;
mod attention;
pub mod gemm;
pub(crate) mod kernels;
mod weight;

use std::sync::Arc;

pub use weight::CpuWeight;

use super::{checks, Acceptance, Backend, DraftBlock, ForwardPlan, KvShape};
use crate::error::Result;
use crate::weights::WeightFile;

/// The CPU backend (stateless; parallelism comes from rayon's global pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// Keys and values of every layer, `[layer][slot, n_head * head_dim]`.
#[derive(Debug)]
pub struct CpuKvPool {
    shape: KvShape,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl CpuKvPool {
    /// The pool's geometry.
    pub fn shape(&self) -> KvShape {
        self.shape
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Weight = CpuWeight;
    type KvPool = CpuKvPool;
    type Plan = ForwardPlan;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn load_weight(&self, file: &Arc<WeightFile>, name: &str, shape: &[usize]) -> Result<CpuWeight> {
        Ok(CpuWeight::from_tensor(file, &file.tensor_with_shape(name, shape)?))
    }

    fn weight_from_host(&self, values: &[f32]) -> Result<CpuWeight> {
        Ok(CpuWeight::owned(values.to_vec()))
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, values: &[f32]) -> Result<Vec<f32>> {
        Ok(values.to_vec())
    }

    fn upload_into(&self, buf: &mut Vec<f32>, values: &[f32]) -> Result<()> {
        buf.clear();
        buf.extend_from_slice(values);
        Ok(())
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn resize(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        buf.resize(len, 0.0);
        Ok(())
    }

    fn upload_plan(&self, plan: ForwardPlan) -> Result<ForwardPlan> {
        Ok(plan)
    }

    fn kv_pool(&self, shape: KvShape) -> Result<CpuKvPool> {
        let len = shape.num_slots() * shape.row_width();
        Ok(CpuKvPool {
            shape,
            keys: (0..shape.n_layer).map(|_| vec![0.0; len]).collect(),
            values: (0..shape.n_layer).map(|_| vec![0.0; len]).collect(),
        })
    }

    fn embedding(&self, table: &CpuWeight, plan: &ForwardPlan, gather: usize, dim: usize, out: &mut Vec<f32>) -> Result<()> {
        let part = checks::embedding(table.len(), plan, gather, dim, out.len())?;
        for (&id, &row) in part.ids.iter().zip(&part.rows) {
            out[row as usize * dim..(row as usize + 1) * dim]
                .copy_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
        }
        Ok(())
    }

    fn concat_rows(&self, a: &Vec<f32>, a_dim: usize, b: &Vec<f32>, b_dim: usize, out: &mut Vec<f32>) -> Result<()> {
        let rows = checks::concat_rows(a.len(), a_dim, b.len(), b_dim, out.len())?;
        let width = a_dim + b_dim;
        for r in 0..rows {
            out[r * width..r * width + a_dim].copy_from_slice(&a[r * a_dim..(r + 1) * a_dim]);
            out[r * width + a_dim..(r + 1) * width].copy_from_slice(&b[r * b_dim..(r + 1) * b_dim]);
        }
        Ok(())
    }

    fn rms_norm(&self, x: &Vec<f32>, weight: &CpuWeight, eps: f32, dim: usize, out: &mut Vec<f32>) -> Result<()> {
        checks::rms_norm(x.len(), weight.len(), dim, out.len())?;
        kernels::rms_norm(x, weight, eps, dim, out);
        Ok(())
    }

    fn add_rms_norm(
        &self,
        residual: &mut Vec<f32>,
        x: &Vec<f32>,
        weight: &CpuWeight,
        eps: f32,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.add_assign(residual, x)?;
        self.rms_norm(residual, weight, eps, dim, out)
    }

    fn add_assign(&self, acc: &mut Vec<f32>, x: &Vec<f32>) -> Result<()> {
        checks::same_len("add_assign", &[acc.len(), x.len()])?;
        kernels::add_assign(acc, x);
        Ok(())
    }

    fn linear(&self, x: &Vec<f32>, weight: &CpuWeight, rows: usize, in_dim: usize, out_dim: usize, out: &mut Vec<f32>) -> Result<()> {
        checks::linear(x.len(), weight.matrix().len(), rows, in_dim, out_dim, out.len())?;
        gemm::linear(x, weight.packed(out_dim, in_dim)?, rows, out);
        Ok(())
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        checks::same_len("swiglu", &[gate.len(), up.len(), out.len()])?;
        kernels::swiglu(gate, up, out);
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &Vec<f32>,
        plan: &ForwardPlan,
    ) -> Result<()> {
        checks::rope(x.len(), rows, row_stride, n_rot_heads, head_dim, table.len(), &plan.positions)?;
        kernels::rope(&mut x[..rows * row_stride], row_stride, n_rot_heads, head_dim, table, &plan.positions);
        Ok(())
    }

    fn kv_write(&self, pool: &mut CpuKvPool, layer: usize, qkv: &Vec<f32>, plan: &ForwardPlan) -> Result<()> {
        checks::kv_write(&pool.shape, layer, qkv.len(), &plan.slots)?;
        let width = pool.shape.row_width();
        for (row, &slot) in qkv.chunks(3 * width).zip(&plan.slots) {
            let dst = slot as usize * width..(slot as usize + 1) * width;
            pool.keys[layer][dst.clone()].copy_from_slice(&row[width..2 * width]);
            pool.values[layer][dst].copy_from_slice(&row[2 * width..]);
        }
        Ok(())
    }

    fn kv_copy(&self, pool: &mut CpuKvPool, src: &[u32], dst: &[u32]) -> Result<()> {
        checks::kv_copy(&pool.shape, src, dst)?;
        let width = pool.shape.row_width();
        for layer in pool.keys.iter_mut().chain(pool.values.iter_mut()) {
            for (&s, &d) in src.iter().zip(dst) {
                layer.copy_within(s as usize * width..(s as usize + 1) * width, d as usize * width);
            }
        }
        Ok(())
    }

    fn attention(&self, qkv: &Vec<f32>, pool: &CpuKvPool, layer: usize, plan: &ForwardPlan, out: &mut Vec<f32>) -> Result<()> {
        checks::attention(&pool.shape, layer, qkv.len(), out.len(), &plan.layout)?;
        attention::paged_attention(qkv, &pool.keys[layer], &pool.values[layer], &plan.layout, out);
        Ok(())
    }

    fn accept_block(&self, p: &Vec<f32>, q: &Vec<f32>, block: &DraftBlock<'_>) -> Result<Acceptance> {
        accept::accept_block(p, q, block)
    }
}
