//! The embedded kernel sources compile with NVRTC for sm_80 and sm_90. Needs only the NVRTC
//! library (no GPU): without it the test prints "skipped: <reason>" and passes. (The same
//! sources compile with nvcc in tools/check_kernels.sh.)
#![cfg(feature = "cuda")]

use spire::backend::cuda::{compile_with_nvrtc, nvrtc_available, MODULES};

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if !nvrtc_available() {
        println!("skipped: the NVRTC library (libnvrtc.so.12) cannot be loaded; put it on LD_LIBRARY_PATH");
        return;
    }
    for (name, source) in MODULES {
        for arch in ["sm_80", "sm_90"] {
            let ptx = compile_with_nvrtc(name, arch).unwrap_or_else(|e| panic!("{e}"));
            let target = format!(".target {arch}");
            assert!(ptx.contains(&target), "{name} for {arch}: no `{target}` in the PTX");
            // Every extern "C" kernel of the source is in the PTX under its own name.
            for line in source.lines().filter(|l| l.starts_with("extern \"C\" __global__ void ")) {
                let kernel = line["extern \"C\" __global__ void ".len()..].split('(').next().unwrap_or_default();
                assert!(ptx.contains(&format!(".entry {kernel}(")), "{name} for {arch}: kernel {kernel} missing");
            }
        }
    }
}
