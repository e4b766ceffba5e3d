//! Build script, two independent jobs:
//!
//! - Feature `emulator` (default): compile every `kernels/*.cu` (and the emulator's self-test
//!   kernels, `kernels/emu/selftest.cu`) for the host against `kernels/emu/cuda_emu.h` with the
//!   system C++ compiler (the `cc` crate), one translation unit per module plus a generated
//!   launch entry point `spire_emu_launch_<kernel>` per `extern "C" __global__` function (after
//!   the one rewrite the emulator needs, of `__shared__` declarations: `rewrite_shared`), and
//!   write `$OUT_DIR/emu_kernels.rs`, the table `src/backend/emu` links against. Without a C++
//!   compiler the table is empty and says why (the emulator backend then reports it; the build
//!   never fails). `SPIRE_EMU_SANITIZE=thread` or `=address` builds the kernels with
//!   ThreadSanitizer or AddressSanitizer + UBSan (`tools/check_kernels_emulated.sh`).
//! - Feature `cuda`: compile each `kernels/*.cu` to PTX for sm_80 and sm_90 when a CUDA 12 `nvcc`
//!   is found (`$NVCC`, `$CUDA_HOME/bin/nvcc`, or `nvcc` on `PATH`) and write
//!   `$OUT_DIR/cuda_ptx.rs`, a table of `(module, arch, ptx)` that `src/backend/cuda/modules.rs`
//!   embeds. Without such an nvcc (or when it fails on a kernel) the table lacks those entries
//!   and the backend compiles the embedded sources with NVRTC at run time. nvcc 13 is not used:
//!   its PTX (ISA 9.x) is refused by CUDA 12 drivers. A missing toolkit never fails the build.
//!
//! Both pass every launch-geometry constant of `src/backend/gpu/geometry.rs` as `-DNAME=value`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
#[path = "src/backend/gpu/geometry.rs"]
mod geometry;

/// GPU architectures PTX is generated for (Ampere, Hopper).
const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/backend/gpu/geometry.rs");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = manifest.join("kernels");
    if env::var_os("CARGO_FEATURE_EMULATOR").is_some() {
        emulator(&kernels, &out_dir);
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda_ptx(&kernels, &out_dir);
    }
}

/// `-DNAME=value` for every geometry constant.
fn defines() -> Vec<String> {
    geometry::DEFINES.iter().map(|(name, value)| format!("-D{name}={value}")).collect()
}

/// `dir/*.cu`, sorted (headers are pulled in by `#include`).
fn cu_files(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "cu")
}

/// `dir/*.<extension>`, sorted.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == extension)).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn module_name(source: &Path) -> String {
    source.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------------
// The emulator

fn emulator(kernels: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=SPIRE_EMU_SANITIZE");
    let emu_dir = out_dir.join("emu");
    fs::create_dir_all(&emu_dir).expect("creating OUT_DIR/emu");
    // Headers get the same rewrite; the copies sit beside the rewritten sources, so their
    // `#include "common.cuh"` finds the rewritten header first.
    for header in files_with_extension(kernels, "cuh") {
        let text = fs::read_to_string(&header).unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
        fs::write(emu_dir.join(header.file_name().expect("a file name")), rewrite_shared(&text, &header)).expect("writing the emulator copy of a header");
    }
    let mut sources = cu_files(kernels);
    sources.extend(cu_files(&kernels.join("emu")));
    let mut entries = Vec::new();
    let mut build = cc::Build::new();
    for source in &sources {
        let module = module_name(source);
        let text = fs::read_to_string(source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
        let names = kernel_names(&text);
        let rewritten = emu_dir.join(format!("{module}.cu"));
        fs::write(&rewritten, rewrite_shared(&text, source)).expect("writing the emulator copy of a kernel");
        let wrapper = emu_dir.join(format!("{module}_launch.cpp"));
        fs::write(&wrapper, emu_wrapper(&module, &rewritten, &names)).expect("writing an emulator wrapper");
        build.file(&wrapper);
        entries.extend(names);
    }
    for runtime in files_with_extension(&kernels.join("emu"), "cpp") {
        build.file(runtime);
    }
    build
        .cpp(true)
        .std("c++17")
        .include(&emu_dir)
        .include(kernels.join("emu"))
        .flag("-ffp-contract=off")
        .flag("-fno-fast-math")
        .flag("-pthread")
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(true);
    for define in defines() {
        build.flag(&define);
    }
    match env::var("SPIRE_EMU_SANITIZE").as_deref() {
        Ok("thread") => sanitize(&mut build, "thread", &["tsan"]),
        Ok("address") => sanitize(&mut build, "address,undefined", &["asan", "ubsan"]),
        _ => {
            build.opt_level(2);
        }
    }
    let table = match build.try_compile("spire_emu") {
        Ok(()) => {
            println!("cargo:rustc-link-lib=pthread");
            emu_table(&entries, None)
        }
        Err(e) => {
            let reason = format!("compiling kernels/*.cu for the host failed (a C++17 compiler is needed): {e}");
            println!("cargo:warning=CUDA emulator disabled: {}", reason.replace('\n', " | "));
            emu_table(&[], Some(&reason))
        }
    };
    fs::write(out_dir.join("emu_kernels.rs"), table).expect("writing emu_kernels.rs into OUT_DIR");
}

/// Instrument the kernels with `-fsanitize=<what>` and link the sanitizer runtimes (`runtimes`,
/// e.g. `tsan`) into the binaries: rustc links with `-nodefaultlibs`, so a `-fsanitize` link
/// argument alone does not bring them in.
fn sanitize(build: &mut cc::Build, what: &str, runtimes: &[&str]) {
    build.opt_level(1).debug(true).flag(format!("-fsanitize={what}")).flag("-fno-omit-frame-pointer").flag("-fno-sanitize-recover=all");
    for runtime in runtimes {
        let compiler = build.get_compiler();
        let found = Command::new(compiler.path()).arg(format!("-print-file-name=lib{runtime}.so")).output();
        if let Some(dir) = found.ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|p| Path::new(p.trim()).parent().map(Path::to_path_buf)) {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        println!("cargo:rustc-link-lib=dylib={runtime}");
    }
}

/// The names of the `extern "C" __global__` functions of a kernel source (comments ignored).
fn kernel_names(text: &str) -> Vec<String> {
    let code = strip_comments(text);
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("__global__") {
        rest = &rest[at + "__global__".len()..];
        let after = rest.trim_start();
        if let Some(after) = after.strip_prefix("void") {
            let ident: String = after.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !ident.is_empty() && !names.contains(&ident) {
                names.push(ident);
            }
        }
    }
    names
}

/// `text` with its `//` and `/* */` comments blanked out, newlines kept (so line numbers, which
/// the emulator's messages cite, stay those of the source; kernels hold no comment markers in
/// string literals).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        let (at, end_marker) = match (line, block) {
            (Some(l), Some(b)) if b < l => (b, "*/"),
            (Some(l), _) => (l, "\n"),
            (None, Some(b)) => (b, "*/"),
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        let end = rest[at..].find(end_marker).map_or(rest.len(), |e| at + e + if end_marker == "*/" { 2 } else { 0 });
        out.extend(rest[at..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The one textual change the emulator needs (C++ has no per-block storage class): rewrite each
/// `[static] [volatile] __shared__ [__align__(N)] T name[dims];` into
/// `typedef [volatile] [__align__(N)] T spire_emu_shared_t_name[dims]; SPIRE_EMU_SHARED_BIND(name);`
/// (a reference into the emulator's shared arena, poisoned before every block) and each
/// `extern __shared__ [__align__(N)] T name[];` into
/// `T* const name = static_cast<T*>(spire_emu::dynamic_shared());`, as kernels/emu/cuda_emu.h
/// documents. Comments are blanked first; everything else reaches the compiler unchanged, and the
/// returned text starts with a `#line` directive naming `origin`, so messages cite the source.
fn rewrite_shared(text: &str, origin: &Path) -> String {
    const TOKEN: &str = "__shared__";
    let code = strip_comments(text);
    let mut out = format!("#line 1 {:?}\n", origin.display().to_string());
    let mut rest = code.as_str();
    while let Some(at) = find_word(rest, TOKEN) {
        let Some(semi) = rest[at..].find(';').map(|e| at + e) else { break };
        // The storage keywords right before the token belong to the declaration.
        let mut start = at;
        let mut qualifiers = Vec::new();
        loop {
            let before = rest[..start].trim_end();
            match ["static", "volatile", "extern"].into_iter().find(|k| before.ends_with(k) && find_word(&before[before.len() - k.len()..], k) == Some(0)) {
                Some(k) => {
                    qualifiers.push(k);
                    start = before.len() - k.len();
                }
                None => break,
            }
        }
        let mut decl = rest[at + TOKEN.len()..semi].trim();
        if let Some(d) = decl.strip_prefix("volatile") {
            qualifiers.push("volatile");
            decl = d.trim_start();
        }
        let (align, decl) = match decl.strip_prefix("__align__") {
            Some(d) => d.split_once(')').map_or(("", decl), |(_, d)| (&decl[..decl.len() - d.len()], d.trim())),
            None => ("", decl),
        };
        let (head, dims) = decl.split_at(decl.find('[').unwrap_or(decl.len()));
        let head = head.trim_end();
        let name_start = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let (ty, name) = (head[..name_start].trim(), &head[name_start..]);
        out.push_str(&rest[..start]);
        if qualifiers.contains(&"extern") {
            out.push_str(&format!("{ty}* const {name} = static_cast<{ty}*>(spire_emu::dynamic_shared());"));
        } else {
            let volatile = if qualifiers.contains(&"volatile") { "volatile " } else { "" };
            out.push_str(&format!("typedef {volatile}{align} {ty} spire_emu_shared_t_{name}{dims}; SPIRE_EMU_SHARED_BIND({name});"));
        }
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}

/// Byte offset of the first occurrence of `word` in `text` as a whole identifier.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| from + i) {
        let before_ok = !text[..i].ends_with(is_ident);
        let after_ok = !text[i + word.len()..].starts_with(is_ident);
        if before_ok && after_ok {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// The translation unit of one module: the emulator header, the kernel source inside a namespace
/// of its own, and one C entry point per kernel.
fn emu_wrapper(module: &str, source: &Path, names: &[String]) -> String {
    let mut text = format!("#include \"cuda_emu.h\"\nnamespace spire_emu_mod_{module} {{\n#include {:?}\n}}\n", source.display().to_string());
    for name in names {
        text.push_str(&format!(
            "extern \"C\" int spire_emu_launch_{name}(const spire_emu_launch_t* cfg, void** args, char* err, size_t err_len) {{\n    \
             return spire_emu::launch(&spire_emu_mod_{module}::{name}, *cfg, args, err, err_len);\n}}\n"
        ));
    }
    text
}

/// `emu_kernels.rs`: the entry points and why the emulator is missing, if it is.
fn emu_table(names: &[String], unavailable: Option<&str>) -> String {
    let mut text = String::from("// Generated by build.rs.\n");
    text.push_str(&format!("/// Why the emulator was not built, if it was not.\npub const UNAVAILABLE: Option<&str> = {unavailable:?};\n"));
    if !names.is_empty() {
        text.push_str("extern \"C\" {\n");
        for name in names {
            text.push_str(&format!("    fn spire_emu_launch_{name}(cfg: *const LaunchCfg, args: *mut *mut c_void, err: *mut c_char, err_len: usize) -> c_int;\n"));
        }
        text.push_str("}\n");
    }
    text.push_str("/// Every compiled kernel: (name, entry point).\npub static KERNELS: &[(&str, LaunchFn)] = &[\n");
    for name in names {
        text.push_str(&format!("    ({name:?}, spire_emu_launch_{name}),\n"));
    }
    text.push_str("];\n");
    text
}

// ---------------------------------------------------------------------------------------------
// PTX for real GPUs

fn cuda_ptx(kernels: &Path, out_dir: &Path) {
    for var in ["NVCC", "CUDA_HOME", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let mut entries = String::new();
    match find_nvcc() {
        Ok(nvcc) => {
            let jobs: Vec<(String, PathBuf, &str)> =
                cu_files(kernels).into_iter().flat_map(|source| ARCHS.map(|arch| (module_name(&source), source.clone(), arch))).collect();
            // One nvcc per (kernel, arch), in parallel.
            let results: Vec<Result<PathBuf, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .iter()
                    .map(|(module, source, arch)| {
                        let ptx = out_dir.join(format!("{module}.{arch}.ptx"));
                        let nvcc = &nvcc;
                        scope.spawn(move || compile_ptx(nvcc, kernels, source, arch, &ptx).map(|()| ptx))
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
        Err(why) => println!("cargo:warning={why}: CUDA kernels will be compiled with NVRTC at run time"),
    }
    let table = format!("/// Precompiled PTX: (module, arch, ptx text).\npub(crate) const PTX: &[(&str, &str, &str)] = &[\n{entries}];\n");
    fs::write(out_dir.join("cuda_ptx.rs"), table).expect("writing cuda_ptx.rs into OUT_DIR");
}

/// The first nvcc of `$NVCC`, `$CUDA_HOME/bin/nvcc` and `nvcc` on `PATH` that runs and is CUDA 12.
fn find_nvcc() -> Result<PathBuf, String> {
    let candidates = [
        env::var_os("NVCC").map(PathBuf::from),
        env::var_os("CUDA_HOME").map(|home| Path::new(&home).join("bin").join("nvcc")),
        Some(PathBuf::from("nvcc")),
    ];
    let mut refused = Vec::new();
    for nvcc in candidates.into_iter().flatten() {
        let Ok(output) = Command::new(&nvcc).arg("--version").output() else { continue };
        let text = String::from_utf8_lossy(&output.stdout);
        match text.split("release ").nth(1).and_then(|r| r.split('.').next()) {
            Some("12") if output.status.success() => return Ok(nvcc),
            Some(major) => refused.push(format!("{} is CUDA {major}, whose PTX CUDA 12 drivers refuse", nvcc.display())),
            None => {}
        }
    }
    Err(if refused.is_empty() { "nvcc not found ($NVCC, $CUDA_HOME/bin/nvcc, PATH)".to_string() } else { refused.join("; ") })
}

/// `nvcc -ptx` of one kernel file for one architecture (the flags of tools/check_kernels.sh).
fn compile_ptx(nvcc: &Path, include: &Path, source: &Path, arch: &str, out: &Path) -> Result<(), String> {
    let output = Command::new(nvcc)
        .args(["-ptx", &format!("-arch={arch}"), "-std=c++17", "-O3", "-lineinfo"])
        .args(defines())
        .arg("-I")
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
