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

use super::{checks, AttentionLayout, Backend, KvShape};
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
        checks::embedding(table.len(), ids, out_rows, dim, out.len())?;
        self.launch_embedding(table, ids, out_rows, dim, out)
    }

    fn concat_rows(&self, a: &CudaBuf, a_dim: usize, b: &CudaBuf, b_dim: usize, out: &mut CudaBuf) -> Result<()> {
        checks::concat_rows(a.len(), a_dim, b.len(), b_dim, out.len())?;
        let rows = a.len() / a_dim;
        self.launch_concat_rows(a, a_dim, b, b_dim, rows, out)
    }

    fn rms_norm(&self, x: &CudaBuf, weight: &CudaWeight, eps: f32, dim: usize, out: &mut CudaBuf) -> Result<()> {
        checks::rms_norm(x.len(), weight.len(), dim, out.len())?;
        self.launch_rms_norm(None, x, weight.f32("rms_norm")?, eps, dim, out)
    }

    fn add_rms_norm(&self, residual: &mut CudaBuf, x: &CudaBuf, weight: &CudaWeight, eps: f32, dim: usize, out: &mut CudaBuf) -> Result<()> {
        checks::same_len("add_rms_norm", &[residual.len(), x.len()])?;
        checks::rms_norm(x.len(), weight.len(), dim, out.len())?;
        self.launch_rms_norm(Some(residual), x, weight.f32("add_rms_norm")?, eps, dim, out)
    }

    fn add_assign(&self, acc: &mut CudaBuf, x: &CudaBuf) -> Result<()> {
        checks::same_len("add_assign", &[acc.len(), x.len()])?;
        self.launch_add_assign(acc, x)
    }

    fn linear(&self, x: &CudaBuf, weight: &CudaWeight, rows: usize, in_dim: usize, out_dim: usize, out: &mut CudaBuf) -> Result<()> {
        checks::linear(x.len(), weight.len(), rows, in_dim, out_dim, out.len())?;
        self.gemm(x, weight, rows, in_dim, out_dim, out)
    }

    fn swiglu(&self, gate: &CudaBuf, up: &CudaBuf, out: &mut CudaBuf) -> Result<()> {
        checks::same_len("swiglu", &[gate.len(), up.len(), out.len()])?;
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
        checks::rope(x.len(), rows, row_stride, n_rot_heads, head_dim, table.len(), positions)?;
        self.launch_rope(x, row_stride, n_rot_heads, head_dim, table, positions)
    }

    fn kv_write(&self, pool: &mut CudaKvPool, layer: usize, qkv: &CudaBuf, slots: &[u32]) -> Result<()> {
        checks::kv_write(&pool.shape, layer, qkv.len(), slots)?;
        self.launch_kv_write(pool, layer, qkv, slots)
    }

    fn kv_copy(&self, pool: &mut CudaKvPool, src: &[u32], dst: &[u32]) -> Result<()> {
        checks::kv_copy(&pool.shape, src, dst)?;
        self.launch_kv_copy(pool, src, dst)
    }

    fn attention(&self, qkv: &CudaBuf, pool: &CudaKvPool, layer: usize, layout: &AttentionLayout, out: &mut CudaBuf) -> Result<()> {
        checks::attention(&pool.shape, layer, qkv.len(), out.len(), layout)?;
        check(layout.head_dim <= kernels::MAX_HEAD_DIM, "attention", || {
            format!("head_dim {} above the kernel's maximum {}", layout.head_dim, kernels::MAX_HEAD_DIM)
        })?;
        self.launch_attention(qkv, pool, layer, layout, out)
    }
}
