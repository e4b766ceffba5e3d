//! The kernel backends a test runs on: the CUDA emulator (feature `emulator`, always there in a
//! default build) and a GPU (feature `cuda`) when the machine has one.

#[cfg(feature = "cuda")]
use spire::backend::CudaBackend;
#[cfg(feature = "emulator")]
use spire::backend::EmuBackend;

/// The shared emulator backend. It is built by default; a build without a C++ compiler is a
/// broken set-up for the tests, so this panics with the reason rather than skipping.
#[cfg(feature = "emulator")]
pub fn emulator() -> &'static EmuBackend {
    static EMU: std::sync::OnceLock<EmuBackend> = std::sync::OnceLock::new();
    EMU.get_or_init(|| EmuBackend::new().unwrap_or_else(|e| panic!("{e} (install g++ or clang++ and rebuild)")))
}

/// The shared GPU backend, or `None` after printing why the GPU half of a test is skipped.
#[cfg(feature = "cuda")]
pub fn gpu() -> Option<&'static CudaBackend> {
    static GPU: std::sync::OnceLock<Result<CudaBackend, String>> = std::sync::OnceLock::new();
    match GPU.get_or_init(|| CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu),
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

#[allow(unused_macros)]
/// Run the generic test body `$case(&GpuBackend<D>)` on the emulator and on the GPU, if any.
macro_rules! on_every_device {
    ($case:ident) => {{
        #[cfg(feature = "emulator")]
        $case(crate::common::devices::emulator());
        #[cfg(feature = "cuda")]
        if let Some(gpu) = crate::common::devices::gpu() {
            $case(gpu);
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use on_every_device;
