//! Build script. Without the `cuda` feature it does nothing. With it, it compiles each
//! `kernels/*.cu` to PTX for sm_80 and sm_90 when an `nvcc` is found (`$NVCC`,
//! `$CUDA_HOME/bin/nvcc`, or `nvcc` on `PATH`) and writes `$OUT_DIR/cuda_ptx.rs`, a table of
//! `(module, arch, ptx)` that `src/backend/cuda/modules.rs` embeds. Without nvcc (or when nvcc
//! fails on a kernel) the table lacks those entries and the backend compiles the embedded `.cu`
//! sources with NVRTC at run time instead. A missing CUDA toolkit never fails the build.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// GPU architectures PTX is generated for (Ampere, Hopper).
const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = manifest.join("kernels");
    let mut entries = String::new();
    match find_nvcc() {
        Some(nvcc) => {
            let jobs: Vec<(String, PathBuf, &str)> = cu_files(&kernels)
                .into_iter()
                .flat_map(|source| {
                    let module = source.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    ARCHS.map(|arch| (module.clone(), source.clone(), arch))
                })
                .collect();
            // One nvcc per (kernel, arch), in parallel.
            let results: Vec<Result<PathBuf, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .iter()
                    .map(|(module, source, arch)| {
                        let ptx = out_dir.join(format!("{module}.{arch}.ptx"));
                        let (nvcc, kernels) = (&nvcc, &kernels);
                        scope.spawn(move || compile(nvcc, kernels, source, arch, &ptx).map(|()| ptx))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("nvcc thread panicked".into()))).collect()
            });
            for ((module, source, arch), result) in jobs.iter().zip(results) {
                match result {
                    Ok(ptx) => entries.push_str(&format!("    ({module:?}, {arch:?}, include_str!({ptx:?})),\n")),
                    Err(e) => println!("cargo:warning=nvcc failed on {} for {arch} (NVRTC will compile it at run time): {e}", source.display()),
                }
            }
        }
        None => println!(
            "cargo:warning=nvcc not found ($NVCC, $CUDA_HOME/bin/nvcc, PATH): CUDA kernels will be compiled with NVRTC at run time"
        ),
    }
    let table = format!("/// Precompiled PTX: (module, arch, ptx text).\npub(crate) const PTX: &[(&str, &str, &str)] = &[\n{entries}];\n");
    fs::write(out_dir.join("cuda_ptx.rs"), table).expect("writing cuda_ptx.rs into OUT_DIR");
}

/// The first nvcc of `$NVCC`, `$CUDA_HOME/bin/nvcc` and `nvcc` on `PATH` that runs.
fn find_nvcc() -> Option<PathBuf> {
    let candidates = [
        env::var_os("NVCC").map(PathBuf::from),
        env::var_os("CUDA_HOME").map(|home| Path::new(&home).join("bin").join("nvcc")),
        Some(PathBuf::from("nvcc")),
    ];
    candidates.into_iter().flatten().find(|nvcc| Command::new(nvcc).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// `kernels/*.cu`, sorted (headers are pulled in by `#include`).
fn cu_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// `nvcc -ptx` of one kernel file for one architecture (the flags of tools/check_kernels.sh).
fn compile(nvcc: &Path, include: &Path, source: &Path, arch: &str, out: &Path) -> Result<(), String> {
    let output = Command::new(nvcc)
        .args(["-ptx", &format!("-arch={arch}"), "-std=c++17", "-O3", "-lineinfo", "-I"])
        .arg(include)
        .arg(source)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        // cargo:warning takes one line.
        Err(String::from_utf8_lossy(&output.stderr).trim().replace('\n', " | "))
    }
}
