#!/usr/bin/env bash
# Build, here (Rust, network), everything tools/gpu_check.sh needs on a GPU machine that has no
# Rust and no network, into the git-ignored folder device-run/:
#
#   device-run/bundle.tar.xz   tests/<name>      test executables (`cargo test --no-run`), by target
#                                                name; the lib's and bin's unit tests as
#                                                unit-lib-<name> / unit-bin-<name>
#                              benches/<name>    bench executables (`cargo build --benches`)
#                              bin/spire         the release binary (its path is baked into tests)
#   device-run/nvrtc.tar.xz    nvrtc/            the pinned NVRTC 12.2 (libnvrtc.so.12 + builtins),
#                                                when tools/cuda_toolchain.sh could get it
#   device-run/MANIFEST        key=value: commit, build paths, what is inside (read by gpu_check.sh)
#
# Then, with the device tool:  run  command "bash tools/gpu_check.sh"  carry ["device-run"]
#
#   tools/build_gpu_bundle.sh              # the test targets that can touch a GPU (their source
#                                          # mentions cuda/gpu/devices), and the unit tests
#   tools/build_gpu_bundle.sh --all-tests  # every test target
#   tools/build_gpu_bundle.sh --no-nvrtc   # leave NVRTC out (gpu_check.sh then uses the device's)
#
# Features: `--features cuda` plus the defaults ($SPIRE_BUNDLE_FEATURES overrides "cuda"). The
# target dir is cargo's ($CARGO_TARGET_DIR or target/), so an earlier
# `cargo test --release --features cuda` is reused. Binaries are stripped and everything is
# packed with xz (the binaries share most of their code, which xz's 64 MiB window finds), because
# the device tool carries at most 64 MiB in all, the working tree included.
#
# PyTorch for tools/bench/torch_llamagen.py is not bundled: the H200 machine has torch 2.11
# (cu130), the script needs nothing else beyond the standard library, and a CUDA torch wheel
# (~900 MB) could not travel anyway. gpu_check.sh skips the baseline where torch is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

all_tests=0
nvrtc=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --all-tests) all_tests=1 ;;
        --no-nvrtc) nvrtc=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_gpu_bundle.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

features=${SPIRE_BUNDLE_FEATURES:-cuda}
out=device-run
readonly CARRY_LIMIT=$((64 * 1024 * 1024))
for tool in cargo python3 xz tar; do
    command -v "$tool" >/dev/null || { echo "build_gpu_bundle.sh: needs $tool" >&2; exit 1; }
done
if [[ "$(uname -m)" != x86_64 ]]; then
    echo "build_gpu_bundle.sh: the GPU machine is x86-64; this is $(uname -m), so its binaries would not run there" >&2
    exit 1
fi
start=$SECONDS
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/tests" "$stage/benches" "$stage/bin"

# cargo ... --message-format=json-render-diagnostics: JSON artifacts on stdout, readable
# diagnostics on stderr. Prints "kind<TAB>name<TAB>test<TAB>src_path<TAB>executable" per
# executable artifact.
artifacts() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        t = m["target"]
        print("\t".join([t["kind"][0], t["name"], str(m["profile"]["test"]).lower(), t["src_path"], m["executable"]]))
'
}

echo "=== cargo test --release --features $features --no-run"
cargo test --release --features "$features" --no-run --message-format=json-render-diagnostics | artifacts >"$stage/tests.tsv"
echo "=== cargo build --release --features $features --benches"
cargo build --release --features "$features" --benches --message-format=json-render-diagnostics | artifacts >"$stage/benches.tsv"

gpu_source() { grep -qiE 'cuda|gpu|devices::|on_every_device' "$1"; }

tests=()
left_out=()
while IFS=$'\t' read -r kind name is_test src exe; do
    [[ "$is_test" == true ]] || continue
    case "$kind" in
        test)
            if [[ $all_tests -eq 1 ]] || gpu_source "$src"; then
                cp "$exe" "$stage/tests/$name"
                tests+=("$name")
            else
                left_out+=("$name")
            fi
            ;;
        lib | bin)
            cp "$exe" "$stage/tests/unit-$kind-$name"
            tests+=("unit-$kind-$name")
            ;;
    esac
done <"$stage/tests.tsv"

benches=()
while IFS=$'\t' read -r kind name _ _ exe; do
    [[ "$kind" == bench ]] || continue
    cp "$exe" "$stage/benches/$name"
    benches+=("$name")
done <"$stage/benches.tsv"

# The binary `cargo test` built for the tests (CARGO_BIN_EXE_spire): built with the features of
# the dev-dependencies unified in, so a plain `cargo build --bin spire` would build (and put at the
# same path) another one.
spire_bin=$(awk -F'\t' '$1 == "bin" && $2 == "spire" && $3 == "false" { print $5 }' "$stage/tests.tsv" | tail -n 1)
if [[ -z "$spire_bin" ]]; then
    echo "=== cargo build --release --features $features --bin spire"
    cargo build --release --features "$features" --bin spire --message-format=json-render-diagnostics | artifacts >"$stage/bin.tsv"
    spire_bin=$(awk -F'\t' '$1 == "bin" && $2 == "spire" && $3 == "false" { print $5 }' "$stage/bin.tsv" | tail -n 1)
fi
[[ -n "$spire_bin" ]] || { echo "build_gpu_bundle.sh: cargo reported no spire binary" >&2; exit 1; }
cp "$spire_bin" "$stage/bin/spire"
[[ ${#tests[@]} -gt 0 ]] || { echo "build_gpu_bundle.sh: no test executables" >&2; exit 1; }

# Symbols stay (panic backtraces and compute-sanitizer stacks name functions); debug info goes.
if command -v strip >/dev/null; then
    strip --strip-debug "$stage"/tests/* "$stage"/benches/* "$stage"/bin/*
fi

nvrtc_note="device (none bundled)"
nvrtc_archive=
toolchain_version=none
if [[ $nvrtc -eq 1 ]]; then
    rc=0
    toolchain=$(tools/cuda_toolchain.sh) || rc=$?
    if [[ $rc -eq 0 ]]; then
        eval "$toolchain"
        # Packed once per toolchain install (xz -9 of the 58 MB library takes about a minute).
        nvrtc_archive="$SPIRE_CUDA_TOOLS/nvrtc-bundle.tar.xz"
        if [[ ! -f "$nvrtc_archive" ]]; then
            echo "=== packing NVRTC $SPIRE_CUDA_VERSION once into $nvrtc_archive"
            mkdir -p "$stage/nvrtc-pack/nvrtc"
            cp "$SPIRE_NVRTC_LIB_DIR"/libnvrtc.so.12 "$SPIRE_NVRTC_LIB_DIR"/libnvrtc-builtins.so.* "$stage/nvrtc-pack/nvrtc/"
            tar -C "$stage/nvrtc-pack" -cf - nvrtc | xz -T0 -9 -c >"$nvrtc_archive.tmp"
            mv "$nvrtc_archive.tmp" "$nvrtc_archive"
            rm -rf "$stage/nvrtc-pack"
        fi
        nvrtc_note="bundled $SPIRE_CUDA_VERSION"
        toolchain_version=$SPIRE_CUDA_VERSION
    else
        echo "note: no pinned NVRTC to bundle (tools/cuda_toolchain.sh exit $rc); gpu_check.sh will use the device's NVRTC"
    fi
fi

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+uncommitted"
rm -rf "$out"
mkdir -p "$out"
[[ -n "$nvrtc_archive" ]] && cp "$nvrtc_archive" "$out/nvrtc.tar.xz"
{
    echo "# Written by tools/build_gpu_bundle.sh; read by tools/gpu_check.sh."
    echo "commit=$commit"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "features=$features"
    echo "manifest_dir=$PWD"
    echo "spire_bin=$spire_bin"
    echo "cuda_toolchain=$toolchain_version"
    echo "nvrtc=$nvrtc_note"
    echo "tests=${tests[*]}"
    echo "benches=${benches[*]}"
    echo "tests_left_out=${left_out[*]:-}"
} >"$out/MANIFEST"
cp "$out/MANIFEST" "$stage/MANIFEST"
rm -f "$stage"/*.tsv

echo "=== packing (xz -9)"
raw=$(du -sb "$stage" | cut -f1)
[[ -n "$nvrtc_archive" ]] && raw=$((raw + $(xz --robot --list "$nvrtc_archive" | awk '$1 == "totals" { print $5 }')))
tar -C "$stage" -cf - . | xz -T0 -9 -c >"$out/bundle.tar.xz"
bundle=$(du -sb "$out" | cut -f1)

# What the device tool would carry: tracked and untracked-not-ignored files, plus device-run/.
tree=$({ git ls-files -z --cached --others --exclude-standard 2>/dev/null || true; } | python3 -c '
import os, sys
print(sum(os.lstat(p).st_size for p in sys.stdin.read().split("\0") if p and os.path.lexists(p)))')
total=$((tree + bundle))
mib() { python3 -c "print(f'{$1 / 1048576:.1f} MiB')"; }

echo
echo "tests:   ${tests[*]}"
[[ ${#left_out[@]} -eq 0 ]] || echo "left out (CPU-only; --all-tests ships them): ${left_out[*]}"
echo "benches: ${benches[*]}"
echo "NVRTC:   $nvrtc_note"
echo "size:    binaries $(mib "$raw") unpacked, device-run/ $(mib "$bundle"); with the working tree $(mib "$tree"): $(mib "$total") of the tool's 64 MiB"
echo "built in $((SECONDS - start))s"
if [[ $total -gt $CARRY_LIMIT ]]; then
    echo "build_gpu_bundle.sh: $(mib "$total") is over the device tool's 64 MiB (try --no-nvrtc, or fewer tests)" >&2
    exit 1
fi
cat <<EOF

Next, with the device tool (one call; the script stays under 8 minutes):
  run  command: bash tools/gpu_check.sh   carry: ["device-run"]   timeout_s: 600
It writes \$OUT/report.md (paste into benches/RESULTS.md) and \$OUT/*.log.
EOF
