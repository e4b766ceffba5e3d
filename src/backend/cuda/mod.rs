//! The CUDA driver (feature `cuda`): [`GpuBackend`] on an NVIDIA GPU (sm_80 or newer) through
//! cudarc, with cuBLAS GEMMs.
//!
//! cudarc loads the driver, cuBLAS and NVRTC at run time, so a `cuda` build needs no toolkit
//! and [`CudaBackend::new`] returns an [`Error::Backend`] (never panics) on a machine without a
//! driver or GPU. Kernels come from `kernels/*.cu` (PTX precompiled by build.rs when a CUDA 12
//! nvcc was found, else NVRTC at start-up, see [`modules`]).

mod gemm;
mod graph;
mod modules;

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

pub use graph::CudaGraphExec;

pub use modules::{arch_for, compile_with_nvrtc, has_precompiled, nvrtc_available, MODULES};

use crate::backend::gpu::{Driver, GemmWork, GpuBackend, Kernel, Launch, Work};
use crate::error::{Error, Result};

/// The kernel backend on an NVIDIA GPU.
pub type CudaBackend = GpuBackend<CudaDriver>;

/// Map a cudarc error to a backend error naming the operation.
pub(crate) fn cuda_error<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Backend(format!("cuda {what}: {e:?}"))
}

/// One GPU: a context, one stream all work is queued on (its own, not the legacy default
/// stream, which cannot be captured into graphs), a cuBLAS handle with a fixed workspace (so
/// GEMMs can be captured) and the loaded kernels (indexed like [`Kernel::ALL`]).
pub struct CudaDriver {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// cuBLAS's workspace, owned here for the handle's lifetime.
    _blas_workspace: CudaSlice<u8>,
    functions: Vec<CudaFunction>,
    name: String,
}

/// Bytes of cuBLAS workspace (NVIDIA's recommendation for Hopper).
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

impl GpuBackend<CudaDriver> {
    /// Open GPU `ordinal`, load cuBLAS and the kernels. Errors (never panics) with
    /// `"no CUDA device: ..."` when there is no driver or no such GPU.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(Self::with_driver(CudaDriver::new(ordinal)?))
    }
}

impl CudaDriver {
    /// Open GPU `ordinal` (see [`CudaBackend::new`]).
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: these only probe whether the shared libraries can be opened; cudarc would panic
        // on first use of a missing one, so check before touching it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Backend("no CUDA device: the NVIDIA driver library (libcuda.so) cannot be loaded".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::Backend(format!("no CUDA device: cannot open GPU {ordinal}: {e:?}")))?;
        // SAFETY: all work goes to the driver's one stream, which orders every use of every
        // allocation, so cudarc's per-allocation cross-stream events are pure overhead; turned off
        // before anything is allocated.
        unsafe { ctx.disable_event_tracking() };
        // SAFETY: as above.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Backend("cuBLAS (libcublas.so.12) cannot be loaded: install the CUDA 12 runtime libraries or put them on LD_LIBRARY_PATH".into()));
        }
        let capability = ctx.compute_capability().map_err(cuda_error("compute capability"))?;
        let arch = modules::arch_for(capability)?;
        let stream = ctx.new_stream().map_err(cuda_error("stream"))?;
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(cuda_error("cuBLAS init"))?;
        let mut blas_workspace = stream.alloc_zeros::<u8>(BLAS_WORKSPACE_BYTES).map_err(cuda_error("cuBLAS workspace"))?;
        let workspace = blas_workspace.device_ptr_mut(&stream).0;
        // SAFETY: the handle is valid and the workspace is a live device allocation of the given
        // size, kept as long as the handle (both owned by the driver).
        unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), workspace as *mut _, BLAS_WORKSPACE_BYTES) }
            .result()
            .map_err(cuda_error("cuBLAS workspace"))?;
        let mut loaded = Vec::new();
        let mut functions = Vec::with_capacity(Kernel::ALL.len());
        for kernel in Kernel::ALL {
            let module = match loaded.iter().find(|(name, _)| *name == kernel.module()) {
                Some((_, module)) => Arc::clone(module),
                None => {
                    let module = modules::load(&ctx, kernel.module(), arch)?;
                    loaded.push((kernel.module(), Arc::clone(&module)));
                    module
                }
            };
            let function = module.load_function(kernel.name()).map_err(|e| {
                Error::Backend(format!("kernel `{}` missing from kernels/{}.cu: {e:?}", kernel.name(), kernel.module()))
            })?;
            functions.push(function);
        }
        let device = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        Ok(Self { stream, blas, _blas_workspace: blas_workspace, functions, name: format!("cuda:{ordinal} ({device}, sm_{}{})", capability.0, capability.1) })
    }
}

impl Driver for CudaDriver {
    type Mem = CudaSlice<u8>;
    type Graph = CudaGraphExec;

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        // CUDA cannot allocate zero bytes.
        self.stream.alloc_zeros(bytes.max(1)).map_err(cuda_error("alloc"))
    }

    fn write(&self, mem: &mut CudaSlice<u8>, bytes: &[u8]) -> Result<()> {
        self.stream.memcpy_htod(bytes, &mut mem.slice_mut(..bytes.len())).map_err(cuda_error("upload"))
    }

    fn read(&self, mem: &CudaSlice<u8>, out: &mut [u8]) -> Result<()> {
        // A copy into pageable host memory returns once it is complete.
        self.stream.memcpy_dtoh(&mem.slice(..out.len()), out).map_err(cuda_error("download"))
    }

    fn address(&self, mem: &CudaSlice<u8>) -> u64 {
        mem.device_ptr(&self.stream).0
    }

    fn address_mut(&self, mem: &mut CudaSlice<u8>) -> u64 {
        mem.device_ptr_mut(&self.stream).0
    }

    unsafe fn launch(&self, kernel: Kernel, launch: &Launch) -> Result<()> {
        let mut slots: Vec<u64> = launch.args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut std::ffi::c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast()).collect();
        let [gx, gy, gz] = launch.grid;
        let [bx, by, bz] = launch.block;
        let function = &self.functions[kernel as usize];
        // SAFETY: the caller guarantees the parameters match the kernel's signature and cover its
        // memory; each parameter points at an 8-byte slot holding its value in the low bytes
        // (little-endian), which outlives the call.
        unsafe {
            cudarc::driver::result::launch_kernel(
                function.cu_function(),
                (gx, gy, gz),
                (bx, by, bz),
                launch.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::Backend(format!("cuda {}: launch failed: {e:?}", kernel.name())))
    }

    unsafe fn gemm(&self, work: &GemmWork) -> Result<()> {
        gemm::gemm(&self.blas, work.inputs, work.shape, (work.x, work.w, work.out), work.accumulate)
    }

    unsafe fn capture(&self, work: &[Work]) -> Result<CudaGraphExec> {
        // SAFETY: forwarded from the caller.
        CudaGraphExec::capture(&self.stream, || work.iter().try_for_each(|w| unsafe { self.execute(w) }))
    }

    unsafe fn replay(&self, graph: &CudaGraphExec) -> Result<()> {
        graph.launch()
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_error("synchronize"))
    }
}
