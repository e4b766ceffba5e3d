//! Kernel modules: the `kernels/*.cu` sources embedded in the binary, the PTX that build.rs
//! precompiled with nvcc (when it found one), and loading them into a CUDA context: the
//! precompiled PTX for the device's architecture when the driver accepts it, else the source
//! compiled with NVRTC at run time.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::backend::gpu::geometry;
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/cuda_ptx.rs"));

/// The header every kernel file includes.
const COMMON_HEADER: &str = include_str!("../../../kernels/common.cuh");
/// The line that pulls the header in.
const COMMON_INCLUDE: &str = "#include \"common.cuh\"";

/// Every kernel module: (name, CUDA C++ source).
pub const MODULES: [(&str, &str); 10] = [
    ("accept", include_str!("../../../kernels/accept.cu")),
    ("attention", include_str!("../../../kernels/attention.cu")),
    ("elementwise", include_str!("../../../kernels/elementwise.cu")),
    ("embedding", include_str!("../../../kernels/embedding.cu")),
    ("gemv", include_str!("../../../kernels/gemv.cu")),
    ("kv_cache", include_str!("../../../kernels/kv_cache.cu")),
    ("norm", include_str!("../../../kernels/norm.cu")),
    ("rope", include_str!("../../../kernels/rope.cu")),
    ("sampling", include_str!("../../../kernels/sampling.cu")),
    ("swiglu", include_str!("../../../kernels/swiglu.cu")),
];

/// The PTX target for a device of compute capability `(major, minor)`: Hopper and newer run the
/// sm_90 code, Ampere and Ada the sm_80 code; older GPUs are not supported.
pub fn arch_for(compute_capability: (i32, i32)) -> Result<&'static str> {
    match compute_capability.0 {
        9.. => Ok("sm_90"),
        8 => Ok("sm_80"),
        _ => Err(Error::Backend(format!(
            "compute capability {}.{} is not supported (spire's CUDA kernels need sm_80 or newer)",
            compute_capability.0, compute_capability.1
        ))),
    }
}

/// True when build.rs embedded nvcc-compiled PTX for `arch` ("sm_80", "sm_90").
pub fn has_precompiled(arch: &str) -> bool {
    PTX.iter().any(|&(_, a, _)| a == arch)
}

/// True when the NVRTC library can be loaded (it needs no GPU).
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library can be opened; cudarc would panic on first
    // use of a missing one.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compile module `name` with NVRTC to PTX for `arch` ("sm_80" or "sm_90"). Needs only the NVRTC
/// library, no GPU; an error (never a panic) when it cannot be loaded.
pub fn compile_with_nvrtc(name: &str, arch: &str) -> Result<String> {
    let source = MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .ok_or_else(|| Error::Backend(format!("unknown kernel module `{name}`")))?;
    if !nvrtc_available() {
        return Err(Error::Backend("the NVRTC library (libnvrtc.so.12) cannot be loaded: install the CUDA toolkit or put it on LD_LIBRARY_PATH".into()));
    }
    let mut flags = vec!["--std=c++17".to_string()];
    flags.extend(geometry::DEFINES.iter().map(|(name, value)| format!("-D{name}={value}")));
    let options = CompileOptions {
        arch: Some(if arch == "sm_90" { "compute_90" } else { "compute_80" }),
        options: flags,
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source.replace(COMMON_INCLUDE, COMMON_HEADER), options)
        .map_err(|e| Error::Backend(format!("NVRTC failed on kernels/{name}.cu: {e:?}")))?;
    Ok(ptx.to_src())
}

/// Load module `name` into `ctx` for `arch`: the precompiled PTX if there is one and the driver
/// takes it, else NVRTC. A driver refuses PTX of a newer ISA than it knows (PTX from CUDA 12.N
/// needs a CUDA 12.N driver; build.rs therefore only precompiles with a CUDA 12 nvcc); the
/// fallback, and its reason, is reported on stderr once per module, and in the error if NVRTC
/// fails too.
pub fn load(ctx: &Arc<CudaContext>, name: &str, arch: &str) -> Result<Arc<CudaModule>> {
    let precompiled = PTX.iter().find(|&&(n, a, _)| n == name && a == arch).map(|&(_, _, ptx)| ptx);
    let precompiled_error = match precompiled {
        Some(ptx) => match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(module) => return Ok(module),
            Err(e) => {
                let reason = format!("the precompiled PTX ({}) was rejected by the driver ({e:?}); ", ptx_version(ptx));
                tracing::warn!(module = name, "kernels/{name}.cu: {reason}compiling it with NVRTC instead");
                reason
            }
        },
        None => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| tracing::info!("no precompiled PTX for {arch} (this binary was built without a CUDA 12 nvcc): compiling the kernels with NVRTC"));
            format!("no precompiled PTX for {arch}; ")
        }
    };
    let ptx = compile_with_nvrtc(name, arch).map_err(|e| Error::Backend(format!("loading kernels/{name}.cu: {precompiled_error}{e}")))?;
    ctx.load_module(Ptx::from_src(ptx))
        .map_err(|e| Error::Backend(format!("loading kernels/{name}.cu: {precompiled_error}the NVRTC-compiled PTX was rejected ({e:?})")))
}

/// The `.version` line of a PTX text ("PTX ISA 8.4"), for messages.
fn ptx_version(ptx: &str) -> String {
    ptx.lines()
        .find_map(|line| line.trim().strip_prefix(".version "))
        .map_or_else(|| "unknown PTX ISA".to_string(), |v| format!("PTX ISA {}", v.trim()))
}
