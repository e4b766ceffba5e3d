//! The CPU reference backend: f32 compute, SIMD GEMMs over weights in their stored precision
//! ([`gemm`]), and rayon's pool for the ops large enough to split.
//!
//! Every GPU kernel is tested against these implementations.

pub mod accept;
mod attention;
mod block_cdf;
pub mod children;
pub mod erf;
pub mod gemm;
pub(crate) mod kernels;
pub mod sampling;
mod weight;

use std::sync::Arc;

pub use weight::CpuWeight;

use super::ops::check_parts;
use half::bf16;

use super::{checks, Activation, Backend, BlockLayout, ChildDraws, CopyList, ForwardPlan, KvDtype, KvShape, LogitsMap, PlanOffsets, RowGather, NO_TOKEN};
use crate::error::Result;
use crate::sampling::SamplingParams;
use crate::weights::WeightFile;

/// The CPU backend (stateless; parallelism comes from rayon's global pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// Keys and values of every layer, `[layer][slot, n_head * head_dim]`, in f32 (a bf16 pool holds
/// bf16-rounded values, as the kernels store them).
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
    type Words = Vec<u32>;

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

    fn words(&self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }

    fn upload_words_into(&self, buf: &mut Vec<u32>, values: &[u32]) -> Result<()> {
        buf.clear();
        buf.extend_from_slice(values);
        Ok(())
    }

    fn download_words(&self, buf: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(buf.clone())
    }

    fn resize_words(&self, buf: &mut Vec<u32>, len: usize) -> Result<()> {
        buf.resize(len, 0);
        Ok(())
    }

    fn plan_in(&self, _words: &Arc<Vec<u32>>, plan: ForwardPlan, _at: PlanOffsets) -> Result<ForwardPlan> {
        Ok(plan)
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

    fn embedding(&self, table: &CpuWeight, plan: &ForwardPlan, gather: usize, tokens: Option<&Vec<u32>>, dim: usize, out: &mut Vec<f32>) -> Result<()> {
        let part = checks::embedding(table.len(), plan, gather, tokens.is_some(), dim, out.len())?;
        let table_rows = table.len() / dim;
        for (&id, &row) in part.ids.iter().zip(&part.rows) {
            let id = match tokens.filter(|_| part.indirect) {
                Some(tokens) => tokens.get(id as usize).copied().unwrap_or(NO_TOKEN),
                None => id,
            } as usize;
            let out_row = &mut out[row as usize * dim..(row as usize + 1) * dim];
            match table.get(id * dim..(id + 1) * dim).filter(|_| id < table_rows) {
                Some(src) => out_row.copy_from_slice(src),
                None => out_row.fill(0.0),
            }
        }
        Ok(())
    }

    fn gather_rows(&self, src: &Vec<f32>, width: usize, words: &Vec<u32>, gather: RowGather, out: &mut Vec<f32>) -> Result<()> {
        checks::gather_rows(src.len(), width, words.len(), gather, out.len())?;
        for (i, &from) in words[gather.at..][..gather.rows].iter().enumerate() {
            let dst = &mut out[i * width..(i + 1) * width];
            match src.get(from as usize * width..(from as usize + 1) * width) {
                Some(row) => dst.copy_from_slice(row),
                None => dst.fill(0.0),
            }
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
        let store = |dst: &mut [f32], src: &[f32]| match pool.shape.dtype {
            KvDtype::F32 => dst.copy_from_slice(src),
            KvDtype::Bf16 => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = bf16::from_f32(v).to_f32()),
        };
        for (row, &slot) in qkv.chunks(3 * width).zip(&plan.slots) {
            let dst = slot as usize * width..(slot as usize + 1) * width;
            store(&mut pool.keys[layer][dst.clone()], &row[width..2 * width]);
            store(&mut pool.values[layer][dst], &row[2 * width..]);
        }
        Ok(())
    }

    fn kv_copy(&self, pool: &mut CpuKvPool, words: &Vec<u32>, copies: CopyList) -> Result<()> {
        check_parts("kv_copy", words.len(), &[(copies.src_at, copies.pairs), (copies.dst_at, copies.pairs)])?;
        let (width, slots) = (pool.shape.row_width(), pool.shape.num_slots());
        let pairs = words[copies.src_at..][..copies.pairs].iter().zip(&words[copies.dst_at..][..copies.pairs]);
        let pairs: Vec<(usize, usize)> = pairs.map(|(&s, &d)| (s as usize, d as usize)).filter(|&(s, d)| s < slots && d < slots).collect();
        for layer in pool.keys.iter_mut().chain(pool.values.iter_mut()) {
            for &(s, d) in &pairs {
                layer.copy_within(s * width..(s + 1) * width, d * width);
            }
        }
        Ok(())
    }

    fn kv_shape(&self, pool: &CpuKvPool) -> KvShape {
        pool.shape
    }

    fn attention(&self, qkv: &Vec<f32>, pool: &CpuKvPool, layer: usize, plan: &ForwardPlan, out: &mut Vec<f32>) -> Result<()> {
        checks::attention(&pool.shape, layer, qkv.len(), out.len(), &plan.layout)?;
        attention::paged_attention(qkv, &pool.keys[layer], &pool.values[layer], &plan.layout, out);
        Ok(())
    }

    fn process_logits(&self, logits: &Vec<f32>, words: &Vec<u32>, map: LogitsMap, params: &SamplingParams, probs: &mut Vec<f32>, flags: &mut Vec<u32>) -> Result<()> {
        sampling::process_logits(logits, words, &map, params, probs, flags)
    }

    fn sample_children(&self, probs: &Vec<f32>, words: &Vec<u32>, draws: ChildDraws, tokens: &mut Vec<u32>) -> Result<()> {
        children::sample_children(probs, words, draws, tokens)
    }

    fn accept_block(&self, p: &Vec<f32>, q: &Vec<f32>, plan: &Vec<u32>, block: &BlockLayout, state: &mut Vec<u32>) -> Result<()> {
        accept::accept_into_state(p, q, plan, block, state)
    }

    fn layer_norm(&self, x: &Vec<f32>, affine: Option<(&CpuWeight, &CpuWeight)>, eps: f32, dim: usize, out: &mut Vec<f32>) -> Result<()> {
        checks::layer_norm(x.len(), affine.map(|(w, b)| (w.len(), b.len())), dim, out.len())?;
        kernels::layer_norm(x, affine.map(|(w, b)| (&w[..], &b[..])), eps, dim, out);
        Ok(())
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &CpuWeight, width: usize) -> Result<()> {
        checks::add_bias(x.len(), bias.len(), width)?;
        kernels::add_bias(x, bias);
        Ok(())
    }

    fn activate(&self, x: &mut Vec<f32>, activation: Activation) -> Result<()> {
        kernels::activate(x, activation);
        Ok(())
    }

    fn dense_attention(&self, qkv: &Vec<f32>, seq_len: usize, n_head: usize, head_dim: usize, out: &mut Vec<f32>) -> Result<()> {
        checks::dense_attention(qkv.len(), seq_len, n_head, head_dim, out.len())?;
        attention::dense_attention(qkv, seq_len, n_head, head_dim, out);
        Ok(())
    }

    fn ragged_attention(&self, qkv: &Vec<f32>, seq_lens: &[usize], n_head: usize, head_dim: usize, out: &mut Vec<f32>) -> Result<()> {
        checks::ragged_attention(qkv.len(), seq_lens, n_head, head_dim, out.len())?;
        attention::ragged_attention(qkv, seq_lens, n_head, head_dim, out);
        Ok(())
    }

    fn modulate(&self, x: &mut Vec<f32>, mods: &Vec<f32>, mods_width: usize, at: usize, dim: usize) -> Result<()> {
        checks::modulation("modulate", x.len(), mods.len(), mods_width, at, dim, 2 * dim)?;
        kernels::modulate(x, mods, mods_width, at, dim);
        Ok(())
    }

    fn add_gated(&self, acc: &mut Vec<f32>, x: &Vec<f32>, mods: &Vec<f32>, mods_width: usize, at: usize, dim: usize) -> Result<()> {
        checks::same_len("add_gated", &[acc.len(), x.len()])?;
        checks::modulation("add_gated", acc.len(), mods.len(), mods_width, at, dim, dim)?;
        kernels::add_gated(acc, x, mods, mods_width, at, dim);
        Ok(())
    }
}
