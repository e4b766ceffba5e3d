//! Handles to every kernel function, loaded once per backend, and the launch helper.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchArgs, LaunchConfig};

use super::modules;
use crate::error::{Error, Result};

/// Threads per block of the row-wise kernels (see the launch geometry in each `kernels/*.cu`).
pub const ROW_THREADS: u32 = 256;
/// Threads per block of `rope` (kernels/rope.cu).
pub const ROPE_THREADS: u32 = 128;
/// Warps per block of `paged_attention` (`ATTN_WARPS` in kernels/attention.cu).
pub const ATTENTION_WARPS: u32 = 4;
/// Largest head width `paged_attention` handles (`MAX_HEAD_DIM` in kernels/attention.cu).
pub const MAX_HEAD_DIM: usize = 256;
/// Threads per block of `accept_block` (`ACCEPT_THREADS` in kernels/accept.cu).
pub const ACCEPT_THREADS: u32 = 256;

/// Every kernel the backend launches.
pub struct Kernels {
    pub(crate) rms_norm: CudaFunction,
    pub(crate) add_rms_norm: CudaFunction,
    pub(crate) rope: CudaFunction,
    pub(crate) kv_write: CudaFunction,
    pub(crate) kv_copy: CudaFunction,
    pub(crate) paged_attention: CudaFunction,
    pub(crate) swiglu: CudaFunction,
    pub(crate) add_assign: CudaFunction,
    pub(crate) concat_rows: CudaFunction,
    pub(crate) f32_to_bf16: CudaFunction,
    pub(crate) embedding_f32: CudaFunction,
    pub(crate) embedding_bf16: CudaFunction,
    pub(crate) accept_block: CudaFunction,
}

fn function(module: &Arc<CudaModule>, module_name: &str, name: &str) -> Result<CudaFunction> {
    module
        .load_function(name)
        .map_err(|e| Error::Backend(format!("kernel `{name}` missing from kernels/{module_name}.cu: {e:?}")))
}

impl Kernels {
    /// Load all modules into `ctx` for `arch` ("sm_80" or "sm_90").
    pub fn load(ctx: &Arc<CudaContext>, arch: &str) -> Result<Self> {
        let load = |name: &str| modules::load(ctx, name, arch);
        let (norm, rope, kv, attention) = (load("norm")?, load("rope")?, load("kv_cache")?, load("attention")?);
        let (swiglu, elementwise, embedding, accept) = (load("swiglu")?, load("elementwise")?, load("embedding")?, load("accept")?);
        Ok(Self {
            rms_norm: function(&norm, "norm", "rms_norm")?,
            add_rms_norm: function(&norm, "norm", "add_rms_norm")?,
            rope: function(&rope, "rope", "rope")?,
            kv_write: function(&kv, "kv_cache", "kv_write")?,
            kv_copy: function(&kv, "kv_cache", "kv_copy")?,
            paged_attention: function(&attention, "attention", "paged_attention")?,
            swiglu: function(&swiglu, "swiglu", "swiglu")?,
            add_assign: function(&elementwise, "elementwise", "add_assign")?,
            concat_rows: function(&elementwise, "elementwise", "concat_rows")?,
            f32_to_bf16: function(&elementwise, "elementwise", "f32_to_bf16")?,
            embedding_f32: function(&embedding, "embedding", "embedding_f32")?,
            embedding_bf16: function(&embedding, "embedding", "embedding_bf16")?,
            accept_block: function(&accept, "accept", "accept_block")?,
        })
    }
}

/// `grid` blocks of `threads` threads, no dynamic shared memory.
pub fn config(grid: (u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (grid.0, grid.1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// One thread per element, `ROW_THREADS` per block.
pub fn elementwise_config(n: usize) -> LaunchConfig {
    config((n.div_ceil(ROW_THREADS as usize) as u32, 1), ROW_THREADS)
}

/// Launch `args` with `cfg`; `what` names the kernel in errors. Empty grids launch nothing.
pub fn launch(mut args: LaunchArgs<'_>, cfg: LaunchConfig, what: &str) -> Result<()> {
    if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 {
        return Ok(());
    }
    // SAFETY: every caller passes the argument list of the kernel's C signature (documented next
    // to each launch) and buffers whose sizes it checked against the launch geometry.
    unsafe { args.launch(cfg) }.map(|_| ()).map_err(|e| Error::Backend(format!("cuda {what}: launch failed: {e:?}")))
}
