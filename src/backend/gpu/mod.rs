//! The kernel backend: every [`Backend`] op as a launch of a kernel of `kernels/*.cu`, written
//! once over a [`Driver`]. On an NVIDIA GPU the driver is cudarc + cuBLAS
//! (`CudaBackend`, feature `cuda`); on any CPU it is the CUDA emulator
//! ([`crate::backend::EmuBackend`], feature `emulator`), which runs the same kernel sources and
//! this same launch code, with a CPU GEMM in place of cuBLAS. Every kernel computes what its CPU
//! twin in `src/backend/cpu/` computes; `tests/gpu_kernels.rs` checks them against each other on
//! every driver present. The decoding-step ops have exact CPU twins: the fused speculative
//! acceptance kernel `Backend::accept_block` (kernels/accept.cu, `backend::cpu::accept`), the
//! drawing of a tree level's children `Backend::sample_children` (kernels/accept.cu,
//! `backend::cpu::children`) and the logits processing of a whole block and batch (CFG,
//! temperature, top-k, softmax, top-p) `Backend::process_logits` (kernels/sampling.cu,
//! `backend::cpu::sampling`).

mod accept;
mod buffer;
pub mod cost;
mod driver;
pub mod geometry;
mod graphs;
mod paged;
mod rows;
mod sampling;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use buffer::{DevVec, GpuBuf, GpuKvPool, GpuWeight, GpuWords, KvData};
pub use driver::{Driver, GemmInputs, GemmShape, GemmWork, Kernel, KernelArg, Launch, Work};
pub use graphs::MAX_GRAPHS;
pub use paged::{attention_groups, attention_splits, GpuPlan};

use super::{checks, unfused_norm_linear_swiglu, unfused_norm_qkv_rope_kv_write, Backend, RmsNorm, BlockLayout, ChildDraws, CopyList, DeviceCounts, ForwardPlan, KvDtype, KvShape, LogitsMap, PlanOffsets, RowGather};
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use crate::weights::{DType, WeightFile};

#[derive(Default)]
struct Counters {
    launches: AtomicU64,
    graph_launches: AtomicU64,
    graphed: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
    allocations: AtomicU64,
}

/// The kernel backend on one device.
pub struct GpuBackend<D: Driver> {
    driver: D,
    counters: Counters,
    /// The bf16 copy of a GEMM's activations (bf16 weights), grown as needed and reused.
    bf16_inputs: Mutex<Option<DevVec<u16, D>>>,
    /// The acceptance walk's scratch, grown as needed and reused.
    accept_work: Mutex<Option<GpuBuf<D>>>,
    /// Split-KV attention's partial states and arrival counts (`paged.rs`), grown as needed.
    attention_splits: Mutex<paged::SplitScratch<D>>,
    /// Recorded work and captured graphs (`graphs.rs`).
    graphs: Mutex<graphs::Graphs<D>>,
}

impl<D: Driver> GpuBackend<D> {
    /// A backend on `driver`.
    pub fn with_driver(driver: D) -> Self {
        Self {
            driver,
            counters: Counters::default(),
            bf16_inputs: Mutex::new(None),
            accept_work: Mutex::new(None),
            attention_splits: Mutex::new(paged::SplitScratch::default()),
            graphs: Mutex::default(),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `len` zeroed elements on the device.
    fn alloc<T: bytemuck::Pod>(&self, len: usize) -> Result<DevVec<T, D>> {
        self.flush_recording()?;
        Self::count(&self.counters.allocations);
        DevVec::zeros(&self.driver, len)
    }

    /// A device copy of `values` (one allocation, one copy unless empty).
    fn upload_vec<T: bytemuck::Pod>(&self, values: &[T]) -> Result<DevVec<T, D>> {
        self.flush_recording()?;
        Self::count(&self.counters.allocations);
        if !values.is_empty() {
            Self::count(&self.counters.uploads);
        }
        DevVec::from_host(&self.driver, values)
    }

    /// A host copy of `buf` (one copy unless empty).
    fn download_vec<T: bytemuck::Pod>(&self, buf: &DevVec<T, D>) -> Result<Vec<T>> {
        self.flush_recording()?;
        if !buf.is_empty() {
            Self::count(&self.counters.downloads);
        }
        buf.to_host(&self.driver)
    }

    /// Copy `values` into `buf`, resized to hold them (one copy unless empty).
    fn upload_into_vec<T: bytemuck::Pod>(&self, buf: &mut DevVec<T, D>, values: &[T]) -> Result<()> {
        self.resize_vec(buf, values.len())?;
        if !values.is_empty() {
            self.flush_recording()?;
            Self::count(&self.counters.uploads);
            self.driver.write(&mut buf.mem, bytemuck::cast_slice(values))?;
        }
        Ok(())
    }

    /// Make `buf` hold `len` elements, reallocating (and counting it) only beyond its capacity.
    fn resize_vec<T: bytemuck::Pod>(&self, buf: &mut DevVec<T, D>, len: usize) -> Result<()> {
        if !buf.fits(len) {
            self.flush_recording()?;
            Self::count(&self.counters.allocations);
        }
        buf.resize(&self.driver, len).map(drop)
    }

    /// The buffer in `slot`, (re)allocated to hold at least `len` elements; an allocation is
    /// counted.
    fn scratch<'s, T: bytemuck::Pod>(&self, slot: &'s mut Option<DevVec<T, D>>, len: usize) -> Result<&'s mut DevVec<T, D>> {
        match slot {
            Some(buf) => {
                self.resize_vec(buf, len)?;
                Ok(buf)
            }
            None => Ok(slot.insert(self.alloc::<T>(len)?)),
        }
    }

    /// The device driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The device address of `buf`, for launching a kernel by hand (the emulator's self-tests,
    /// single-kernel microbenchmarks).
    pub fn address_of<T>(&self, buf: &DevVec<T, D>) -> u64 {
        self.driver.address(&buf.mem)
    }

    /// Wait for all queued work (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.driver.synchronize()
    }

    /// Launch `kernel` as `launch` describes (or record it inside a graphed region).
    fn run(&self, kernel: Kernel, launch: &Launch) -> Result<()> {
        if launch.is_empty() {
            return Ok(());
        }
        self.issue(Work::Launch(kernel, launch.clone()))
    }

    /// Record `work` inside this thread's graphed region, else run it.
    fn issue(&self, work: Work) -> Result<()> {
        if self.record(&work)? {
            return Ok(());
        }
        self.execute_now(&work)
    }

    /// Run `work` now, counting it.
    fn execute_now(&self, work: &Work) -> Result<()> {
        Self::count(&self.counters.launches);
        // SAFETY: every piece of work is built by a `launch_*` method (or `gemm`) of this module
        // that pushes the parameters of the kernel's C signature (documented next to it) from
        // live buffers whose sizes `checks` (or the method itself) validated against the launch
        // geometry; recorded work runs before any buffer it uses can be reallocated
        // (`flush_recording`).
        unsafe { self.driver.execute(work) }
    }

    /// Count a graph replay of `pieces` pieces of work.
    fn count_graph(&self, pieces: usize) {
        Self::count(&self.counters.graph_launches);
        self.counters.graphed.fetch_add(pieces as u64, Ordering::Relaxed);
        self.counters.launches.fetch_add(pieces as u64, Ordering::Relaxed);
    }

    /// `out = x · wᵀ`, or `out += x · wᵀ` with `accumulate` (shapes checked by the caller): f32
    /// weights directly; bf16 weights through the skinny kernels for decode row counts
    /// (kernels/gemv.cu, f32 `x` read as it is), else after casting `x` to bf16
    /// (kernels/elementwise.cu `f32_to_bf16`); cuBLAS accumulates with beta = 1.
    fn gemm(&self, x: &GpuBuf<D>, weight: &GpuWeight<D>, shape: GemmShape, out: &mut GpuBuf<D>, accumulate: bool) -> Result<()> {
        if shape.rows == 0 || shape.n == 0 {
            return Ok(());
        }
        let out_address = self.driver.address_mut(&mut out.mem);
        let (inputs, x, w) = match weight {
            GpuWeight::F32(w) => (GemmInputs::F32, self.driver.address(&x.mem), self.driver.address(&w.mem)),
            GpuWeight::Bf16(w) if skinny(shape) => {
                let kernel = if accumulate { Kernel::GemmSkinnyAddBf16 } else { Kernel::GemmSkinnyBf16 };
                return self.launch_gemm_skinny(kernel, x, None, &[w], shape, out);
            }
            GpuWeight::Bf16(w) => {
                let len = shape.rows * shape.k;
                let mut scratch = self.bf16_inputs.lock().map_err(|_| Error::Backend("linear: the bf16 scratch buffer is poisoned".into()))?;
                let x16 = self.scratch(&mut scratch, len)?;
                self.launch_f32_to_bf16(x, len, x16)?;
                (GemmInputs::Bf16, self.driver.address(&x16.mem), self.driver.address(&w.mem))
            }
        };
        self.issue(Work::Gemm(GemmWork { inputs, shape, x, w, out: out_address, accumulate }))
    }
}

/// Whether a bf16 GEMM of `shape` runs in the skinny decode kernels (kernels/gemv.cu).
fn skinny(shape: GemmShape) -> bool {
    shape.rows <= geometry::SKINNY_ROWS as usize && shape.k.is_multiple_of(8)
}

/// The checks of a RoPE + KV-append op (`op`) over `qkv_len` elements of qkv rows of
/// `(rows, n_head, head_dim)`: the RoPE table and positions, the pool's slots and its row width.
fn check_rope_kv<D: Driver>(op: &str, qkv_len: usize, (rows, n_head, head_dim): (usize, usize, usize), table_len: usize, pool: &KvShape, layer: usize, plan: &GpuPlan<D>) -> Result<()> {
    let width = n_head * head_dim;
    checks::rope(qkv_len, rows, 3 * width, 2 * n_head, head_dim, table_len, &plan.host.positions)?;
    checks::kv_write(pool, layer, qkv_len, &plan.host.slots)?;
    check(width == pool.row_width(), op, || format!("{n_head} heads of {head_dim} do not match the pool's rows of {}", pool.row_width()))
}

fn check(cond: bool, op: &str, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Backend(format!("{op}: {}", what())))
    }
}

impl<D: Driver> Backend for GpuBackend<D> {
    type Buf = GpuBuf<D>;
    type Weight = GpuWeight<D>;
    type KvPool = GpuKvPool<D>;
    type Plan = GpuPlan<D>;
    type Words = GpuWords<D>;

    fn name(&self) -> String {
        self.driver.describe()
    }

    fn load_weight(&self, file: &Arc<WeightFile>, name: &str, shape: &[usize]) -> Result<GpuWeight<D>> {
        let tensor = file.tensor_with_shape(name, shape)?;
        if tensor.dtype == DType::BF16 && shape.len() == 2 {
            let bits: Vec<u16> = tensor.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            return Ok(GpuWeight::Bf16(self.upload_vec(&bits)?));
        }
        self.weight_from_host(&tensor.to_f32())
    }

    fn weight_from_host(&self, values: &[f32]) -> Result<GpuWeight<D>> {
        Ok(GpuWeight::F32(self.upload(values)?))
    }

    fn zeros(&self, len: usize) -> Result<GpuBuf<D>> {
        self.alloc(len)
    }

    fn upload(&self, values: &[f32]) -> Result<GpuBuf<D>> {
        self.upload_vec(values)
    }

    fn upload_into(&self, buf: &mut GpuBuf<D>, values: &[f32]) -> Result<()> {
        self.upload_into_vec(buf, values)
    }

    fn download(&self, buf: &GpuBuf<D>) -> Result<Vec<f32>> {
        self.download_vec(buf)
    }

    fn resize(&self, buf: &mut GpuBuf<D>, len: usize) -> Result<()> {
        self.resize_vec(buf, len)
    }

    fn words(&self, len: usize) -> Result<GpuWords<D>> {
        self.alloc(len)
    }

    fn upload_words_into(&self, buf: &mut GpuWords<D>, values: &[u32]) -> Result<()> {
        self.upload_into_vec(buf, values)
    }

    fn download_words(&self, buf: &GpuWords<D>) -> Result<Vec<u32>> {
        self.download_vec(buf)
    }

    fn resize_words(&self, buf: &mut GpuWords<D>, len: usize) -> Result<()> {
        self.resize_vec(buf, len)
    }

    fn plan_in(&self, words: &Arc<GpuWords<D>>, plan: ForwardPlan, at: PlanOffsets) -> Result<GpuPlan<D>> {
        GpuPlan::view(words, plan, at)
    }

    fn kv_pool(&self, shape: KvShape) -> Result<GpuKvPool<D>> {
        let len = 2 * shape.n_layer * shape.num_slots() * shape.row_width();
        let data = match shape.dtype {
            KvDtype::F32 => KvData::F32(self.alloc(len)?),
            KvDtype::Bf16 => KvData::Bf16(self.alloc(len)?),
        };
        Ok(GpuKvPool { shape, data })
    }

    fn embedding(&self, table: &GpuWeight<D>, plan: &GpuPlan<D>, gather: usize, tokens: Option<&GpuWords<D>>, dim: usize, out: &mut GpuBuf<D>) -> Result<()> {
        let part = checks::embedding(table.len(), &plan.host, gather, tokens.is_some(), dim, out.len())?;
        self.launch_embedding(table, plan, gather, tokens, part.ids.len(), dim, out)
    }

    fn gather_rows(&self, src: &GpuBuf<D>, width: usize, words: &GpuWords<D>, gather: RowGather, out: &mut GpuBuf<D>) -> Result<()> {
        checks::gather_rows(src.len(), width, words.len(), gather, out.len())?;
        self.launch_gather_rows(src, width, words, gather, out)
    }

    fn concat_rows(&self, a: &GpuBuf<D>, a_dim: usize, b: &GpuBuf<D>, b_dim: usize, out: &mut GpuBuf<D>) -> Result<()> {
        let rows = checks::concat_rows(a.len(), a_dim, b.len(), b_dim, out.len())?;
        self.launch_concat_rows(a, a_dim, b, b_dim, rows, out)
    }

    fn rms_norm(&self, x: &GpuBuf<D>, weight: &GpuWeight<D>, eps: f32, dim: usize, out: &mut GpuBuf<D>) -> Result<()> {
        checks::rms_norm(x.len(), weight.len(), dim, out.len())?;
        self.launch_rms_norm(x, weight.f32("rms_norm")?, eps, dim, out)
    }

    fn add_assign(&self, acc: &mut GpuBuf<D>, x: &GpuBuf<D>) -> Result<()> {
        checks::same_len("add_assign", &[acc.len(), x.len()])?;
        self.launch_add_assign(acc, x)
    }

    fn linear(&self, x: &GpuBuf<D>, weight: &GpuWeight<D>, rows: usize, in_dim: usize, out_dim: usize, out: &mut GpuBuf<D>) -> Result<()> {
        checks::linear(x.len(), weight.len(), rows, in_dim, out_dim, out.len())?;
        self.gemm(x, weight, GemmShape { rows, k: in_dim, n: out_dim }, out, false)
    }

    fn norm_linear_swiglu(
        &self,
        x: &GpuBuf<D>,
        norm: RmsNorm<'_, GpuWeight<D>>,
        [gate, up]: [&GpuWeight<D>; 2],
        shape: GemmShape,
        normed: &mut GpuBuf<D>,
        [gate_out, up_out]: [&mut GpuBuf<D>; 2],
        out: &mut GpuBuf<D>,
    ) -> Result<()> {
        match (gate, up) {
            (GpuWeight::Bf16(g), GpuWeight::Bf16(u)) if skinny(shape) => {
                checks::rms_norm(x.len(), norm.weight.len(), shape.k, x.len())?;
                for weight in [gate, up] {
                    checks::linear(x.len(), weight.len(), shape.rows, shape.k, shape.n, out.len())?;
                }
                let norm = (norm.weight.f32("norm_linear_swiglu")?, norm.eps);
                self.launch_gemm_skinny(Kernel::GemmSkinnyNormSwigluBf16, x, Some(norm), &[g, u], shape, out)
            }
            _ => unfused_norm_linear_swiglu(self, x, norm, [gate, up], shape, normed, [gate_out, up_out], out),
        }
    }

    fn linear_add(&self, x: &GpuBuf<D>, weight: &GpuWeight<D>, shape: GemmShape, _projected: &mut GpuBuf<D>, acc: &mut GpuBuf<D>) -> Result<()> {
        checks::linear(x.len(), weight.len(), shape.rows, shape.k, shape.n, acc.len())?;
        self.gemm(x, weight, shape, acc, true)
    }

    fn swiglu(&self, gate: &GpuBuf<D>, up: &GpuBuf<D>, out: &mut GpuBuf<D>) -> Result<()> {
        checks::same_len("swiglu", &[gate.len(), up.len(), out.len()])?;
        self.launch_swiglu(gate, up, out)
    }

    fn rope(
        &self,
        x: &mut GpuBuf<D>,
        rows: usize,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &GpuBuf<D>,
        plan: &GpuPlan<D>,
    ) -> Result<()> {
        checks::rope(x.len(), rows, row_stride, n_rot_heads, head_dim, table.len(), &plan.host.positions)?;
        self.launch_rope(x, row_stride, n_rot_heads, head_dim, table, plan)
    }

    fn kv_write(&self, pool: &mut GpuKvPool<D>, layer: usize, qkv: &GpuBuf<D>, plan: &GpuPlan<D>) -> Result<()> {
        checks::kv_write(&pool.shape, layer, qkv.len(), &plan.host.slots)?;
        self.launch_kv_write(pool, layer, qkv, plan)
    }

    fn rope_kv_write(
        &self,
        qkv: &mut GpuBuf<D>,
        rows: usize,
        n_head: usize,
        head_dim: usize,
        table: &GpuBuf<D>,
        pool: &mut GpuKvPool<D>,
        layer: usize,
        plan: &GpuPlan<D>,
    ) -> Result<()> {
        check_rope_kv("rope_kv_write", qkv.len(), (rows, n_head, head_dim), table.len(), &pool.shape, layer, plan)?;
        self.launch_rope_kv_write(qkv, head_dim, table, pool, layer, plan)
    }

    fn norm_qkv_rope_kv_write(
        &self,
        x: &GpuBuf<D>,
        norm: RmsNorm<'_, GpuWeight<D>>,
        wqkv: &GpuWeight<D>,
        (rows, n_head, head_dim): (usize, usize, usize),
        table: &GpuBuf<D>,
        (pool, layer): (&mut GpuKvPool<D>, usize),
        plan: &GpuPlan<D>,
        normed: &mut GpuBuf<D>,
        qkv: &mut GpuBuf<D>,
    ) -> Result<()> {
        let width = n_head * head_dim;
        let shape = GemmShape { rows, k: width, n: 3 * width };
        let heads = (rows, n_head, head_dim);
        let w = match wqkv {
            GpuWeight::Bf16(w) if skinny(shape) => w,
            _ => return unfused_norm_qkv_rope_kv_write(self, x, norm, wqkv, heads, table, (pool, layer), plan, normed, qkv),
        };
        checks::rms_norm(x.len(), norm.weight.len(), width, x.len())?;
        checks::linear(x.len(), wqkv.len(), rows, width, 3 * width, qkv.len())?;
        check_rope_kv("norm_qkv_rope_kv_write", qkv.len(), heads, table.len(), &pool.shape, layer, plan)?;
        self.launch_norm_qkv_rope_kv(x, (norm.weight.f32("norm_qkv_rope_kv_write")?, norm.eps), w, (shape, head_dim), table, pool, layer, plan, qkv)
    }

    fn kv_copy(&self, pool: &mut GpuKvPool<D>, words: &GpuWords<D>, copies: CopyList) -> Result<()> {
        self.launch_kv_copy(pool, words, copies)
    }

    fn kv_shape(&self, pool: &GpuKvPool<D>) -> KvShape {
        pool.shape
    }

    fn attention(&self, qkv: &GpuBuf<D>, pool: &GpuKvPool<D>, layer: usize, plan: &GpuPlan<D>, out: &mut GpuBuf<D>) -> Result<()> {
        let layout = &plan.host.layout;
        checks::attention(&pool.shape, layer, qkv.len(), out.len(), layout)?;
        check(layout.head_dim <= geometry::MAX_HEAD_DIM as usize, "attention", || {
            format!("head_dim {} above the kernel's maximum {}", layout.head_dim, geometry::MAX_HEAD_DIM)
        })?;
        self.launch_attention(qkv, pool, layer, plan, out)
    }

    fn process_logits(&self, logits: &GpuBuf<D>, words: &GpuWords<D>, map: LogitsMap, params: &SamplingParams, probs: &mut GpuBuf<D>, flags: &mut GpuWords<D>) -> Result<()> {
        self.launch_process_logits(logits, words, map, params, probs, flags)
    }

    fn sample_children(&self, probs: &GpuBuf<D>, words: &GpuWords<D>, draws: ChildDraws, tokens: &mut GpuWords<D>) -> Result<()> {
        self.launch_sample_children(probs, words, draws, tokens)
    }

    fn accept_block(&self, p: &GpuBuf<D>, q: &GpuBuf<D>, plan: &GpuWords<D>, block: &BlockLayout, state: &mut GpuWords<D>) -> Result<()> {
        self.launch_accept_block(p, q, plan, block, state)
    }

    fn graphed(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.run_graphed(work)
    }

    fn take_device_counts(&self) -> Option<DeviceCounts> {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let c = &self.counters;
        Some(DeviceCounts {
            launches: take(&c.launches),
            graph_launches: take(&c.graph_launches),
            graphed: take(&c.graphed),
            uploads: take(&c.uploads),
            downloads: take(&c.downloads),
            allocations: take(&c.allocations),
        })
    }
}
