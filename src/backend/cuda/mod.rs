//! The CUDA backend (feature `cuda`): the [`Backend`] ops on an NVIDIA GPU (sm_80 or newer).
//!
//! cudarc loads the driver, cuBLAS and NVRTC at run time, so a `cuda` build needs no toolkit
//! and [`CudaBackend::new`] returns an [`Error::Backend`] (never panics) on a machine without a
//! driver or GPU. Kernels come from `kernels/*.cu` (PTX precompiled by build.rs when nvcc was
//! found, else NVRTC at start-up); GEMMs use cuBLAS. Every kernel computes what its CPU twin in
//! `src/backend/cpu/` computes; `tests/cuda_kernels.rs` checks them against each other. The
//! fused speculative acceptance kernel is [`CudaBackend::accept_block`], with its exact CPU twin
//! in [`accept_reference`].

mod accept;
pub mod accept_reference;
mod buffer;
mod gemm;
mod kernels;
mod modules;
mod paged;
mod rows;

use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaStream};

pub use accept::{Acceptance, DraftBlock};
pub use buffer::{CudaBuf, CudaKvPool, CudaWeight};
pub use modules::{arch_for, compile_with_nvrtc, has_precompiled, nvrtc_available, MODULES};

use super::{AttentionLayout, Backend, KvShape};
use crate::error::{Error, Result};
use crate::weights::{DType, WeightFile};
use buffer::{alloc_zeros, cuda_error, upload_slice};
use kernels::Kernels;

/// The CUDA backend on one GPU: a context, one stream all work is queued on, a cuBLAS handle and
/// the loaded kernels.
pub struct CudaBackend {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    name: String,
    /// The attention layout last uploaded, reused while the layers of one step pass the same one.
    layout_cache: Mutex<Option<paged::DeviceLayout>>,
}

fn check(cond: bool, op: &str, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Backend(format!("cuda {op}: {}", what())))
    }
}

impl CudaBackend {
    /// Open GPU `ordinal`, load cuBLAS and the kernels. Errors (never panics) with
    /// `"no CUDA device: ..."` when there is no driver or no such GPU.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: these only probe whether the shared libraries can be opened; cudarc would panic
        // on first use of a missing one, so check before touching it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Backend("no CUDA device: the NVIDIA driver library (libcuda.so) cannot be loaded".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::Backend(format!("no CUDA device: cannot open GPU {ordinal}: {e:?}")))?;
        // SAFETY: all work goes to the one default stream, which orders every use of every
        // allocation, so cudarc's per-allocation cross-stream events are pure overhead; turned off
        // before anything is allocated.
        unsafe { ctx.disable_event_tracking() };
        // SAFETY: as above.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Backend("cuBLAS (libcublas.so.12) cannot be loaded: install the CUDA 12 runtime libraries or put them on LD_LIBRARY_PATH".into()));
        }
        let capability = ctx.compute_capability().map_err(cuda_error("compute capability"))?;
        let arch = modules::arch_for(capability)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(cuda_error("cuBLAS init"))?;
        let kernels = Kernels::load(&ctx, arch)?;
        let device = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        Ok(Self {
            stream,
            blas,
            kernels,
            name: format!("cuda:{ordinal} ({device}, sm_{}{})", capability.0, capability.1),
            layout_cache: Mutex::new(None),
        })
    }

    /// Wait for all queued work (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_error("synchronize"))
    }

    fn buf_zeros(&self, len: usize) -> Result<CudaBuf> {
        Ok(CudaBuf::new(alloc_zeros(&self.stream, len)?, len))
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Weight = CudaWeight;
    type KvPool = CudaKvPool;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn load_weight(&self, file: &Arc<WeightFile>, name: &str, shape: &[usize]) -> Result<CudaWeight> {
        let tensor = file.tensor_with_shape(name, shape)?;
        if tensor.dtype == DType::BF16 && shape.len() == 2 {
            let bits: Vec<u16> = tensor.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            return Ok(CudaWeight::Bf16 { data: upload_slice(&self.stream, &bits)?, len: bits.len() });
        }
        self.weight_from_host(&tensor.to_f32())
    }

    fn weight_from_host(&self, values: &[f32]) -> Result<CudaWeight> {
        Ok(CudaWeight::F32(self.upload(values)?))
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        self.buf_zeros(len)
    }

    fn upload(&self, values: &[f32]) -> Result<CudaBuf> {
        Ok(CudaBuf::new(upload_slice(&self.stream, values)?, values.len()))
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        self.stream.clone_dtoh(&buf.data.slice(..buf.len())).map_err(cuda_error("download"))
    }

    fn kv_pool(&self, shape: KvShape) -> Result<CudaKvPool> {
        let len = 2 * shape.n_layer * shape.num_slots() * shape.row_width();
        Ok(CudaKvPool { shape, data: alloc_zeros(&self.stream, len)? })
    }

    fn embedding(&self, table: &CudaWeight, ids: &[u32], out_rows: &[u32], dim: usize, out: &mut CudaBuf) -> Result<()> {
        let table_rows = table.len() / dim;
        check(ids.len() == out_rows.len(), "embedding", || "ids and out_rows differ in length".into())?;
        check(ids.iter().all(|&id| (id as usize) < table_rows), "embedding", || format!("id outside a table of {table_rows} rows"))?;
        check(out_rows.iter().all(|&r| (r as usize + 1) * dim <= out.len()), "embedding", || "output row out of range".into())?;
        self.launch_embedding(table, ids, out_rows, dim, out)
    }

    fn concat_rows(&self, a: &CudaBuf, a_dim: usize, b: &CudaBuf, b_dim: usize, out: &mut CudaBuf) -> Result<()> {
        let rows = a.len() / a_dim;
        check(b.len() == rows * b_dim && out.len() == rows * (a_dim + b_dim), "concat_rows", || "shape mismatch".into())?;
        self.launch_concat_rows(a, a_dim, b, b_dim, rows, out)
    }

    fn rms_norm(&self, x: &CudaBuf, weight: &CudaWeight, eps: f32, dim: usize, out: &mut CudaBuf) -> Result<()> {
        check(weight.len() == dim && x.len() == out.len() && x.len().is_multiple_of(dim), "rms_norm", || "shape mismatch".into())?;
        self.launch_rms_norm(None, x, weight.f32("rms_norm")?, eps, dim, out)
    }

    fn add_rms_norm(&self, residual: &mut CudaBuf, x: &CudaBuf, weight: &CudaWeight, eps: f32, dim: usize, out: &mut CudaBuf) -> Result<()> {
        check(
            weight.len() == dim && x.len() == residual.len() && x.len() == out.len() && x.len().is_multiple_of(dim),
            "add_rms_norm",
            || "shape mismatch".into(),
        )?;
        self.launch_rms_norm(Some(residual), x, weight.f32("add_rms_norm")?, eps, dim, out)
    }

    fn add_assign(&self, acc: &mut CudaBuf, x: &CudaBuf) -> Result<()> {
        check(acc.len() == x.len(), "add_assign", || format!("{} vs {} elements", acc.len(), x.len()))?;
        self.launch_add_assign(acc, x)
    }

    fn linear(&self, x: &CudaBuf, weight: &CudaWeight, rows: usize, in_dim: usize, out_dim: usize, out: &mut CudaBuf) -> Result<()> {
        check(
            x.len() >= rows * in_dim && weight.len() == out_dim * in_dim && out.len() >= rows * out_dim,
            "linear",
            || format!("x {} / weight {} / out {} for [{rows}x{in_dim}]·[{out_dim}x{in_dim}]ᵀ", x.len(), weight.len(), out.len()),
        )?;
        self.gemm(x, weight, rows, in_dim, out_dim, out)
    }

    fn swiglu(&self, gate: &CudaBuf, up: &CudaBuf, out: &mut CudaBuf) -> Result<()> {
        check(gate.len() == up.len() && up.len() == out.len(), "swiglu", || "shape mismatch".into())?;
        self.launch_swiglu(gate, up, out)
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &CudaBuf,
        positions: &[u32],
    ) -> Result<()> {
        let max_pos = table.len() / head_dim;
        check(positions.len() == rows && x.len() >= rows * row_stride, "rope", || "shape mismatch".into())?;
        check(n_rot_heads * head_dim <= row_stride && head_dim.is_multiple_of(2), "rope", || "heads wider than the row".into())?;
        check(positions.iter().all(|&p| (p as usize) < max_pos), "rope", || format!("position beyond the table ({max_pos})"))?;
        self.launch_rope(x, row_stride, n_rot_heads, head_dim, table, positions)
    }

    fn kv_write(&self, pool: &mut CudaKvPool, layer: usize, qkv: &CudaBuf, slots: &[u32]) -> Result<()> {
        let width = pool.shape.row_width();
        check(layer < pool.shape.n_layer, "kv_write", || format!("layer {layer} out of range"))?;
        check(slots.iter().all(|&s| (s as usize) < pool.shape.num_slots()), "kv_write", || "KV slot out of range".into())?;
        check(qkv.len() == slots.len() * 3 * width, "kv_write", || "qkv rows do not match slots".into())?;
        self.launch_kv_write(pool, layer, qkv, slots)
    }

    fn kv_copy(&self, pool: &mut CudaKvPool, src: &[u32], dst: &[u32]) -> Result<()> {
        let n = pool.shape.num_slots();
        check(src.len() == dst.len(), "kv_copy", || "src and dst differ in length".into())?;
        check(src.iter().chain(dst).all(|&s| (s as usize) < n), "kv_copy", || format!("KV slot out of range (pool has {n} slots)"))?;
        self.launch_kv_copy(pool, src, dst)
    }

    fn attention(&self, qkv: &CudaBuf, pool: &CudaKvPool, layer: usize, layout: &AttentionLayout, out: &mut CudaBuf) -> Result<()> {
        let width = layout.n_head * layout.head_dim;
        check(
            qkv.len() == layout.rows() * 3 * width && out.len() == layout.rows() * width && width == pool.shape.row_width(),
            "attention",
            || "shape mismatch".into(),
        )?;
        check(layer < pool.shape.n_layer && layout.head_dim <= kernels::MAX_HEAD_DIM, "attention", || {
            format!("layer {layer} or head_dim {} (max {}) out of range", layout.head_dim, kernels::MAX_HEAD_DIM)
        })?;
        self.launch_attention(qkv, pool, layer, layout, out)
    }
}
