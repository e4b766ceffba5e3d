//! The CUDA emulator driver (feature `emulator`, on by default): [`GpuBackend`] on the CPU,
//! running the unmodified `kernels/*.cu` sources compiled for the host against
//! `kernels/emu/cuda_emu.h` (blocks one after another, one fiber per CUDA thread, barriers and
//! warp intrinsics that detect misuse, shared memory poisoned before every block), with the CPU
//! backend's GEMM in place of cuBLAS. It exists so that every kernel and the whole device launch
//! path run in `cargo test` on machines without a GPU; it is not meant to be fast.

use std::borrow::Cow;
use std::ffi::{c_char, c_void};

use half::bf16;

use crate::backend::cpu::kernels::linear;
use crate::backend::gpu::{Driver, GemmInputs, GemmShape, GemmWork, GpuBackend, Kernel, Launch, Work};
use crate::error::{Error, Result};

mod ffi {
    //! The launch entry points build.rs generated and compiled (`OUT_DIR/emu_kernels.rs`).
    use std::ffi::{c_char, c_int, c_void};

    /// `spire_emu_launch_t` of kernels/emu/cuda_emu.h.
    #[repr(C)]
    pub struct LaunchCfg {
        pub grid: [u32; 3],
        pub block: [u32; 3],
        pub shared_bytes: u64,
    }

    /// `int spire_emu_launch_<kernel>(const spire_emu_launch_t*, void** args, char* err, size_t err_len)`.
    pub type LaunchFn = unsafe extern "C" fn(*const LaunchCfg, *mut *mut c_void, *mut c_char, usize) -> c_int;

    include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));
}

/// The kernel backend on the CUDA emulator.
pub type EmuBackend = GpuBackend<EmuDriver>;

/// Bytes of the message buffer a failed launch writes into.
const ERROR_LEN: usize = 2048;

/// Host memory standing in for device memory, 16-byte aligned (as `cudaMalloc`'s is at least)
/// so vectorised kernel loads are valid.
pub struct EmuMem {
    words: Vec<u128>,
}

/// Runs kernels on the emulator (see the module docs). Launches are synchronous.
pub struct EmuDriver {
    launchers: Vec<ffi::LaunchFn>,
}

impl GpuBackend<EmuDriver> {
    /// A backend on the emulator; an error if build.rs could not compile it (no C++ compiler).
    pub fn new() -> Result<Self> {
        Ok(Self::with_driver(EmuDriver::new()?))
    }
}

impl EmuDriver {
    /// Resolve every kernel's launch entry point.
    pub fn new() -> Result<Self> {
        if let Some(reason) = ffi::UNAVAILABLE {
            return Err(Error::Backend(format!("the CUDA emulator was not built: {reason}")));
        }
        let launchers = Kernel::ALL
            .iter()
            .map(|kernel| {
                launcher(kernel.name()).ok_or_else(|| Error::Backend(format!("emulator: kernel `{}` was not compiled", kernel.name())))
            })
            .collect::<Result<_>>()?;
        Ok(Self { launchers })
    }
}

/// The emulator's entry point for the kernel called `name` (any `extern "C" __global__` function
/// of `kernels/*.cu` or of the emulator's self-test kernels, `kernels/emu/selftest.cu`).
fn launcher(name: &str) -> Option<ffi::LaunchFn> {
    ffi::KERNELS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// Run the emulated kernel called `name` (see [`EmuDriver`]'s launch for the conventions); for
/// the emulator's self-test kernels, which no [`Kernel`] names.
///
/// # Safety
/// As [`Driver::launch`]: the parameters must match the kernel's signature and cover its memory.
pub unsafe fn launch_by_name(name: &str, launch: &Launch) -> Result<()> {
    let f = launcher(name).ok_or_else(|| Error::Backend(format!("emulator: no kernel `{name}`")))?;
    // SAFETY: forwarded from the caller.
    unsafe { run(f, name, launch) }
}

/// Call one generated entry point; a misuse the emulator detected becomes an error with its
/// message.
unsafe fn run(f: ffi::LaunchFn, name: &str, launch: &Launch) -> Result<()> {
    if launch.is_empty() {
        return Ok(());
    }
    let cfg = ffi::LaunchCfg { grid: launch.grid, block: launch.block, shared_bytes: u64::from(launch.shared_bytes) };
    let mut slots: Vec<u64> = launch.args.iter().map(|a| a.slot()).collect();
    let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast()).collect();
    let mut message = vec![0u8; ERROR_LEN];
    // SAFETY: the caller guarantees the parameters; each points at an 8-byte slot holding its
    // value in the low bytes, as the emulator reads them; `message` has ERROR_LEN bytes.
    let status = unsafe { f(&cfg, params.as_mut_ptr(), message.as_mut_ptr().cast::<c_char>(), ERROR_LEN) };
    if status == 0 {
        return Ok(());
    }
    let end = message.iter().position(|&b| b == 0).unwrap_or(message.len());
    Err(Error::Backend(format!("emulated kernel `{name}`: {}", String::from_utf8_lossy(&message[..end]))))
}

impl EmuMem {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.words)
    }
}

/// The `len` values at `address` as f32: in place, or converted from bf16 bit patterns.
///
/// # Safety
/// `address` must point at `len` live elements of the `inputs` type.
unsafe fn gemm_operand<'a>(address: u64, inputs: GemmInputs, len: usize) -> Cow<'a, [f32]> {
    // SAFETY: forwarded from the caller (emulated device memory is 16-byte-aligned host memory).
    unsafe {
        match inputs {
            GemmInputs::F32 => Cow::Borrowed(std::slice::from_raw_parts(address as *const f32, len)),
            GemmInputs::Bf16 => Cow::Owned(std::slice::from_raw_parts(address as *const u16, len).iter().map(|&v| bf16::from_bits(v).to_f32()).collect()),
        }
    }
}

impl Driver for EmuDriver {
    type Mem = EmuMem;
    /// The emulator's graph: the captured work, run again piece by piece.
    type Graph = Vec<Work>;

    fn describe(&self) -> String {
        "cuda emulator (kernels on the CPU)".into()
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<EmuMem> {
        Ok(EmuMem { words: vec![0; bytes.div_ceil(16).max(1)] })
    }

    fn write(&self, mem: &mut EmuMem, bytes: &[u8]) -> Result<()> {
        let dst = mem.bytes_mut().get_mut(..bytes.len()).ok_or_else(|| Error::Backend("emulator upload: past the allocation".into()))?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    fn read(&self, mem: &EmuMem, out: &mut [u8]) -> Result<()> {
        let src = mem.bytes().get(..out.len()).ok_or_else(|| Error::Backend("emulator download: past the allocation".into()))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn address(&self, mem: &EmuMem) -> u64 {
        mem.words.as_ptr() as u64
    }

    fn address_mut(&self, mem: &mut EmuMem) -> u64 {
        mem.words.as_mut_ptr() as u64
    }

    unsafe fn launch(&self, kernel: Kernel, launch: &Launch) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { run(self.launchers[kernel as usize], kernel.name(), launch) }
    }

    unsafe fn gemm(&self, gemm: &GemmWork) -> Result<()> {
        let GemmShape { rows, k, n } = gemm.shape;
        // SAFETY: the caller guarantees live operands of the shape; `out` does not overlap them.
        let (x, w, out) = unsafe {
            (gemm_operand(gemm.x, gemm.inputs, rows * k), gemm_operand(gemm.w, gemm.inputs, n * k), std::slice::from_raw_parts_mut(gemm.out as *mut f32, rows * n))
        };
        if gemm.accumulate {
            let mut product = vec![0.0; rows * n];
            linear(&x, &w, rows, k, n, &mut product);
            out.iter_mut().zip(product).for_each(|(o, p)| *o += p);
        } else {
            linear(&x, &w, rows, k, n, out);
        }
        Ok(())
    }

    unsafe fn capture(&self, work: &[Work]) -> Result<Vec<Work>> {
        Ok(work.to_vec())
    }

    unsafe fn replay(&self, graph: &Vec<Work>) -> Result<()> {
        // SAFETY: forwarded from the caller.
        graph.iter().try_for_each(|work| unsafe { self.execute(work) })
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
