#!/usr/bin/env bash
# Find or install spire's pinned CUDA 12 toolchain wheels from PyPI, and print where they are.
#
#   eval "$(tools/cuda_toolchain.sh)"      # or: source tools/cuda_toolchain.sh
#   tools/cuda_toolchain.sh --no-install   # only find an earlier install
#
# On success (exit 0) stdout holds only `export NAME='value'` lines:
#   SPIRE_CUDA_TOOLS     the install folder
#   SPIRE_CUDA_VERSION   the pinned release (12.2.140)
#   SPIRE_NVRTC_LIB_DIR  holds libnvrtc.so.12, libnvrtc-builtins.so.12.2 and a `libnvrtc.so` link;
#                        put it on LD_LIBRARY_PATH for cudarc (tests/cuda_nvrtc.rs)
#   SPIRE_NVRTC_LIB      that folder's libnvrtc.so.12
#   SPIRE_PTXAS          the pinned ptxas
#   SPIRE_NVCC           empty: no nvidia-cuda-nvcc-cu12 wheel ships the nvcc driver (see below)
# Messages go to stderr. Exit 3 with "skipped: <reason>" when the wheels are not installed and
# cannot be fetched (no network, registry refused, no pip, not x86-64 Linux): callers treat 3 as a
# skip, never as a failure. Exit 1 only for a broken install (files missing after pip succeeded).
#
# Folder: $SPIRE_CUDA_TOOLS, else ${XDG_CACHE_HOME:-$HOME/.cache}/spire/cuda-12.2.140. It is
# outside the repository on purpose, so every clone on the machine reuses one install (~115 MB).
#
# Why 12.2.140, for both wheels (CUDA 12.2 Update 2, the last 12.2 build on PyPI):
# - The PTX-version trap: PTX carries `.version` = its compiler's PTX ISA. CUDA 12.N emits ISA
#   8.N, and a CUDA 12.M driver (or 12.M ptxas) takes it only if M >= N; CUDA 13.x emits ISA 9.x,
#   which every CUDA 12 driver and 12.x ptxas refuses. spire's cudarc bindings target CUDA 12.2,
#   the oldest driver it supports, so PTX must be ISA <= 8.2: only a 12.0, 12.1 or 12.2 compiler
#   produces PTX that every supported driver loads. 12.2 is the newest of those, and the one the
#   bindings were generated for. Newer drivers (12.3+, 13.x) JIT ISA 8.2 without complaint.
# - `pip index versions` (checked 2025-12) lists 12.2.140 for nvidia-cuda-nvrtc-cu12 and
#   nvidia-cuda-nvcc-cu12 (also 12.2.128 and 12.2.91), so both come from one release and the
#   ptxas checks (tools/check_kernels.sh) judge exactly the PTX the NVRTC fallback produces.
# - No nvidia-cuda-nvcc-cu12 wheel (12.2.140, 12.3.107, 12.4.131, 12.6.85, 12.8.93, 12.9.86
#   inspected) contains the `nvcc` driver or cicc: only ptxas, libnvvm and a few crt headers.
#   So .cu -> PTX here is done with the pinned NVRTC (the compiler spire itself falls back to),
#   and SPIRE_NVCC stays empty; a real CUDA 12 toolkit's nvcc can be named with $NVCC instead.
# - nvidia-cuda-sanitizer-api-cu12 (12.2.140 and 12.8.93 inspected) ships only the sanitizer
#   libraries, no `compute-sanitizer` executable, so it is not installed: a GPU machine's own
#   compute-sanitizer is used (tools/gpu_check.sh).

# Sourced: run in a child bash and export its result into the caller's shell, without touching
# the caller's shell options or exiting it.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _spire_toolchain_env=$(bash "${BASH_SOURCE[0]}" "$@")
    _spire_toolchain_rc=$?
    [[ $_spire_toolchain_rc -eq 0 ]] && eval "$_spire_toolchain_env"
    unset _spire_toolchain_env
    return $_spire_toolchain_rc
fi

set -euo pipefail

readonly CUDA_VERSION=12.2.140
readonly PACKAGES=("nvidia-cuda-nvrtc-cu12==$CUDA_VERSION" "nvidia-cuda-nvcc-cu12==$CUDA_VERSION")
readonly SKIP=3
# Wall-clock bound on the whole pip run (its own --timeout is per socket operation).
readonly PIP_DEADLINE_S=${SPIRE_PIP_DEADLINE_S:-240}

install=1
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "cuda_toolchain.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

dir=${SPIRE_CUDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/spire/cuda-$CUDA_VERSION}
site="$dir/site"
lib_dir="$site/nvidia/cuda_nvrtc/lib"
ptxas="$site/nvidia/cuda_nvcc/bin/ptxas"
stamp="$dir/INSTALLED"

skip() {
    echo "skipped: $*" >&2
    exit $SKIP
}

# The install is complete and runs: the stamp names this pin, the files are there, ptxas starts.
installed() {
    [[ -f "$stamp" && "$(cat "$stamp")" == "${PACKAGES[*]}" ]] || return 1
    [[ -f "$lib_dir/libnvrtc.so.12" && -x "$ptxas" ]] || return 1
    compgen -G "$lib_dir/libnvrtc-builtins.so.*" >/dev/null || return 1
    "$ptxas" --version >/dev/null 2>&1
}

if ! installed; then
    [[ $install -eq 1 ]] || skip "the CUDA $CUDA_VERSION wheels are not installed in $dir (run tools/cuda_toolchain.sh)"
    [[ "$(uname -s)/$(uname -m)" == Linux/x86_64 ]] || skip "the pinned wheels are for x86-64 Linux, this is $(uname -s)/$(uname -m)"
    command -v python3 >/dev/null || skip "no python3 to run pip"
    python3 -m pip --version >/dev/null 2>&1 || skip "python3 has no pip"
    mkdir -p "$(dirname "$dir")"
    # One installer at a time (two CI jobs, or .ci/run beside build_gpu_bundle.sh).
    if command -v flock >/dev/null; then
        exec 9>"$dir.lock"
        flock -w "$PIP_DEADLINE_S" 9 || skip "another install into $dir holds $dir.lock"
    fi
    if ! installed; then
        echo "cuda_toolchain.sh: installing ${PACKAGES[*]} into $dir" >&2
        tmp=$(mktemp -d "$dir.tmp.XXXXXX")
        chmod 755 "$tmp"
        trap 'rm -rf "$tmp"' EXIT
        log="$tmp/pip.log"
        start=$SECONDS
        if ! timeout -k 10 "$PIP_DEADLINE_S" python3 -m pip install --disable-pip-version-check --no-input \
            --no-cache-dir --no-deps --only-binary=:all: --no-compile --timeout 20 --retries 1 \
            --target "$tmp/site" "${PACKAGES[@]}" >"$log" 2>&1; then
            reason=$(grep -E 'ERROR|Error|error' "$log" | tail -n 1 | cut -c1-200 || true)
            skip "pip could not fetch ${PACKAGES[*]} within ${PIP_DEADLINE_S}s (${reason:-no error line from pip}); CUDA checks need PyPI once"
        fi
        echo "cuda_toolchain.sh: pip took $((SECONDS - start))s" >&2
        # cudarc asks for `libnvrtc.so` before `libnvrtc.so.12`: the link makes that first name
        # resolve to the pinned library even where a CUDA 13 toolkit's libnvrtc.so is on the
        # loader's path.
        ln -sf libnvrtc.so.12 "$tmp/site/nvidia/cuda_nvrtc/lib/libnvrtc.so"
        printf '%s\n' "${PACKAGES[*]}" >"$tmp/INSTALLED"
        rm -f "$tmp/pip.log"
        rm -rf "$dir"
        mv "$tmp" "$dir"
        trap - EXIT
        installed || { echo "cuda_toolchain.sh: $dir is incomplete after pip (expected $lib_dir/libnvrtc.so.12, libnvrtc-builtins, $ptxas)" >&2; exit 1; }
    fi
fi

printf 'export SPIRE_CUDA_TOOLS=%q\n' "$dir"
printf 'export SPIRE_CUDA_VERSION=%q\n' "$CUDA_VERSION"
printf 'export SPIRE_NVRTC_LIB_DIR=%q\n' "$lib_dir"
printf 'export SPIRE_NVRTC_LIB=%q\n' "$lib_dir/libnvrtc.so.12"
printf 'export SPIRE_PTXAS=%q\n' "$ptxas"
echo "export SPIRE_NVCC=''"
echo "cuda_toolchain.sh: CUDA $CUDA_VERSION (PTX ISA 8.2) in $dir" >&2
