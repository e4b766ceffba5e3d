//! Launches of the row-wise and elementwise kernels (kernels/norm.cu, rope.cu, swiglu.cu,
//! elementwise.cu, embedding.cu). Shapes are checked by the callers in `mod.rs`; the launch
//! geometry of each kernel is documented at the top of its `.cu` file.

use super::buffer::{DevVec, GpuBuf, GpuWeight, GpuWords, LaunchBuilder};
use super::driver::{Driver, GemmShape, Kernel};
use super::geometry::{ROPE_THREADS, ROW_THREADS, SKINNY_WARPS};
use super::{GpuBackend, GpuPlan};
use crate::backend::RowGather;
use crate::error::Result;

impl<D: Driver> GpuBackend<D> {
    /// `embedding_{f32,bf16}(table, table_rows, ids, tokens, tokens_len, out_rows, dim, out)`:
    /// one block per id, ids and rows read from gather `gather` of the plan (ids index `tokens`
    /// when the gather is indirect).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_embedding(
        &self,
        table: &GpuWeight<D>,
        plan: &GpuPlan<D>,
        gather: usize,
        tokens: Option<&GpuWords<D>>,
        len: usize,
        dim: usize,
        out: &mut GpuBuf<D>,
    ) -> Result<()> {
        let (ids_at, rows_at) = plan.gather_offsets(gather);
        let builder = LaunchBuilder::new(&self.driver, (len, 1), ROW_THREADS)?;
        let (kernel, builder) = match table {
            GpuWeight::F32(t) => (Kernel::EmbeddingF32, builder.input(t)),
            GpuWeight::Bf16(t) => (Kernel::EmbeddingBf16, builder.input(t)),
        };
        let builder = builder.i32(table.len() / dim)?.input_at(plan.words(), ids_at);
        let builder = match tokens {
            Some(tokens) => builder.input(tokens).i32(tokens.len())?,
            None => builder.null().i32(0)?,
        };
        let launch = builder.input_at(plan.words(), rows_at).i32(dim)?.output(out).build();
        self.run(kernel, &launch)
    }

    /// `gather_rows(src, src_rows, width, rows, out)`: one block per output row.
    pub(super) fn launch_gather_rows(&self, src: &GpuBuf<D>, width: usize, words: &GpuWords<D>, gather: RowGather, out: &mut GpuBuf<D>) -> Result<()> {
        let launch = LaunchBuilder::new(&self.driver, (gather.rows, 1), ROW_THREADS)?
            .input(src)
            .i32(src.len() / width)?
            .i32(width)?
            .input_at(words, gather.at)
            .output(out)
            .build();
        self.run(Kernel::GatherRows, &launch)
    }

    /// `concat_rows(a, a_dim, b, b_dim, out)`: one block per row.
    pub(super) fn launch_concat_rows(&self, a: &GpuBuf<D>, a_dim: usize, b: &GpuBuf<D>, b_dim: usize, rows: usize, out: &mut GpuBuf<D>) -> Result<()> {
        let launch = LaunchBuilder::new(&self.driver, (rows, 1), ROW_THREADS)?.input(a).i32(a_dim)?.input(b).i32(b_dim)?.output(out).build();
        self.run(Kernel::ConcatRows, &launch)
    }

    /// `rms_norm(x, weight, eps, dim, out)`: one block per row.
    pub(super) fn launch_rms_norm(&self, x: &GpuBuf<D>, weight: &GpuBuf<D>, eps: f32, dim: usize, out: &mut GpuBuf<D>) -> Result<()> {
        let launch = LaunchBuilder::new(&self.driver, (x.len() / dim, 1), ROW_THREADS)?.input(x).input(weight).f32(eps).i32(dim)?.output(out).build();
        self.run(Kernel::RmsNorm, &launch)
    }

    /// `add_assign(acc, x, n)`: one thread per element.
    pub(super) fn launch_add_assign(&self, acc: &mut GpuBuf<D>, x: &GpuBuf<D>) -> Result<()> {
        let n = acc.len();
        let launch = LaunchBuilder::elementwise(&self.driver, n, ROW_THREADS)?.output(acc).input(x).u64(n).build();
        self.run(Kernel::AddAssign, &launch)
    }

    /// `swiglu(gate, up, out, n)`: one thread per element.
    pub(super) fn launch_swiglu(&self, gate: &GpuBuf<D>, up: &GpuBuf<D>, out: &mut GpuBuf<D>) -> Result<()> {
        let n = out.len();
        let launch = LaunchBuilder::elementwise(&self.driver, n, ROW_THREADS)?.input(gate).input(up).output(out).u64(n).build();
        self.run(Kernel::Swiglu, &launch)
    }

    /// A skinny decode GEMM of kernels/gemv.cu, `kernel(x, [norm, eps,] weights..., out, rows,
    /// k, n)` (the norm's weight and epsilon for the kernels with the RMSNorm prologue): one warp
    /// per output column.
    pub(super) fn launch_gemm_skinny(&self, kernel: Kernel, x: &GpuBuf<D>, norm: Option<(&GpuBuf<D>, f32)>, weights: &[&DevVec<u16, D>], shape: GemmShape, out: &mut GpuBuf<D>) -> Result<()> {
        let blocks = shape.n.div_ceil(SKINNY_WARPS as usize);
        let launch = LaunchBuilder::new(&self.driver, (blocks, 1), SKINNY_WARPS * 32)?.input(x);
        let launch = match norm {
            Some((g, eps)) => launch.input(g).f32(eps),
            None => launch,
        };
        let launch = weights
            .iter()
            .fold(launch, |launch, w| launch.input(*w))
            .output(out)
            .i32(shape.rows)?
            .i32(shape.k)?
            .i32(shape.n)?
            .build();
        self.run(kernel, &launch)
    }

    /// `f32_to_bf16(x, out, n)`: one thread per element.
    pub(super) fn launch_f32_to_bf16(&self, x: &GpuBuf<D>, n: usize, out: &mut DevVec<u16, D>) -> Result<()> {
        let launch = LaunchBuilder::elementwise(&self.driver, n, ROW_THREADS)?.input(x).output(out).u64(n).build();
        self.run(Kernel::F32ToBf16, &launch)
    }

    /// `rope(x, row_stride, n_rot_heads, head_dim, table, positions)`: one block per row, the
    /// positions read from the plan.
    pub(super) fn launch_rope(
        &self,
        x: &mut GpuBuf<D>,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &GpuBuf<D>,
        plan: &GpuPlan<D>,
    ) -> Result<()> {
        let launch = LaunchBuilder::new(&self.driver, (plan.host.positions.len(), 1), ROPE_THREADS)?
            .output(x)
            .i32(row_stride)?
            .i32(n_rot_heads)?
            .i32(head_dim)?
            .input(table)
            .input_at(plan.words(), plan.positions_offset())
            .build();
        self.run(Kernel::Rope, &launch)
    }
}
