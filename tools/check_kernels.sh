#!/usr/bin/env bash
# Compile every kernels/*.cu to PTX for sm_80 and sm_90 (warnings are errors), assemble each PTX
# with ptxas -v, and print per kernel: registers, static shared memory, spill stores / loads and
# stack frame. Fails (exit 1) on a compile error, a warning, a ptxas error, or any spill. Needs no
# GPU. Without a toolchain (no network for tools/cuda_toolchain.sh, no nvcc) it prints
# "skipped: <reason>" and exits 0.
#
#   tools/check_kernels.sh                    # the pinned CUDA 12.2 wheels (installed on first use)
#   tools/check_kernels.sh --no-install       # only an existing install of the wheels
#   tools/check_kernels.sh --compiler nvcc    # a CUDA toolkit's nvcc ($NVCC, $CUDA_HOME, PATH)
#                                             # with that toolkit's ptxas
#   tools/check_kernels.sh --table FILE       # also write the markdown table to FILE
#
# Compilers. `nvrtc` (default): the pinned NVRTC 12.2 (tools/cuda_toolchain.sh; PyPI has no CUDA
# 12 nvcc wheel), called with exactly what src/backend/cuda/modules.rs passes at run time
# (`--gpu-architecture=compute_XX --std=c++17 -DNAME=value...`, the `#include "common.cuh"` line
# replaced by the header's text), so the table describes the PTX spire's NVRTC fallback loads;
# then the pinned ptxas 12.2. `nvcc`: build.rs's flags (`-ptx -arch=sm_XX -std=c++17 -O3
# -lineinfo -Ikernels`) plus `--Werror all-warnings` and the -D flags; its own ptxas, so the PTX
# ISA always matches (nvcc 13's ISA 9.x PTX is refused by a 12.x ptxas).
#
# -D flags: every line `pub const NAME: u32 = VALUE;` (or usize) of src/backend/gpu/geometry.rs
# becomes `-DNAME=VALUE` (none while that file does not exist). Shared memory is the static
# `__shared__` use ptxas reports; dynamic shared memory is sized at launch and not included.
set -euo pipefail
cd "$(dirname "$0")/.."

compiler=nvrtc
install=1
table_file=
archs=(sm_80 sm_90)
while [[ $# -gt 0 ]]; do
    case "$1" in
        --install) install=1 ;;  # the default; kept for old callers
        --no-install) install=0 ;;
        --compiler) compiler=${2:?--compiler needs nvrtc or nvcc}; shift ;;
        --table) table_file=${2:?--table needs a file}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_kernels.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

skipped() {
    echo "skipped: $*"
    exit 0
}

# ---- the -D flags -------------------------------------------------------------------------------
geometry=${SPIRE_GEOMETRY_RS:-src/backend/gpu/geometry.rs}
defines=()
if [[ -f "$geometry" ]]; then
    while IFS='=' read -r name value; do
        defines+=("-D$name=${value//_/}")  # 1_024 -> 1024
    done < <(sed -nE 's/^pub const ([A-Za-z_][A-Za-z0-9_]*): *(u32|usize) *= *([0-9][0-9_]*) *;.*$/\1=\3/p' "$geometry")
fi

# ---- the toolchain ------------------------------------------------------------------------------
case "$compiler" in
    nvrtc)
        flags=()
        [[ $install -eq 0 ]] && flags=(--no-install)
        rc=0
        toolchain=$(tools/cuda_toolchain.sh "${flags[@]}") || rc=$?
        [[ $rc -eq 3 ]] && skipped "no CUDA toolchain (tools/cuda_toolchain.sh skipped, reason above)"
        [[ $rc -eq 0 ]] || { echo "check_kernels.sh: tools/cuda_toolchain.sh failed (exit $rc)" >&2; exit 1; }
        eval "$toolchain"
        ptxas=$SPIRE_PTXAS
        command -v python3 >/dev/null || skipped "no python3 to drive NVRTC"
        version="NVRTC $SPIRE_CUDA_VERSION + ptxas $("$ptxas" --version | grep -o 'V[0-9][0-9.]*' | head -n 1)"
        ;;
    nvcc)
        nvcc=${NVCC:-}
        [[ -z "$nvcc" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]] && nvcc="$CUDA_HOME/bin/nvcc"
        [[ -z "$nvcc" ]] && nvcc=$(command -v nvcc || true)
        [[ -n "$nvcc" ]] || skipped "no nvcc (set NVCC or CUDA_HOME, or put nvcc on PATH)"
        ptxas="$(dirname "$nvcc")/ptxas"
        [[ -x "$ptxas" ]] || ptxas=$(command -v ptxas || true)
        [[ -n "$ptxas" ]] || skipped "no ptxas beside $nvcc"
        version="nvcc $("$nvcc" --version | grep -o 'V[0-9][0-9.]*' | head -n 1) + ptxas $("$ptxas" --version | grep -o 'V[0-9][0-9.]*' | head -n 1)"
        ;;
    *) echo "check_kernels.sh: --compiler must be nvrtc or nvcc" >&2; exit 2 ;;
esac

sources=(kernels/*.cu)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "compiler: $version; archs: ${archs[*]}; defines: ${defines[*]:-(none: $geometry not found)}"

# ---- .cu -> PTX ---------------------------------------------------------------------------------
failed=0
if [[ "$compiler" == nvrtc ]]; then
    # One NVRTC program per (module, arch), on a thread pool (NVRTC releases the GIL in ctypes).
    NVRTC_LIB=$SPIRE_NVRTC_LIB OUT_DIR=$work ARCHS="${archs[*]}" DEFINES="${defines[*]}" \
        python3 - "${sources[@]}" <<'PY' || failed=1
import ctypes, os, sys
from concurrent.futures import ThreadPoolExecutor

lib = ctypes.CDLL(os.environ["NVRTC_LIB"])
lib.nvrtcGetErrorString.restype = ctypes.c_char_p
out_dir, archs, defines = os.environ["OUT_DIR"], os.environ["ARCHS"].split(), os.environ["DEFINES"].split()
common = open("kernels/common.cuh").read()

def compile_one(path, arch):
    module = os.path.splitext(os.path.basename(path))[0]
    source = open(path).read().replace('#include "common.cuh"', common)
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{module}.cu".encode(), 0, None, None)
    if rc:
        return f"{path} {arch}: nvrtcCreateProgram: {lib.nvrtcGetErrorString(rc).decode()}"
    options = [f"--gpu-architecture=compute_{arch[3:]}", "--std=c++17"] + defines
    argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), argv)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    log = log.value.decode(errors="replace").strip()
    error = None
    if rc:
        error = f"{path} {arch}: NVRTC failed ({lib.nvrtcGetErrorString(rc).decode()}):\n{log}"
    else:
        if "warning" in log:
            error = f"{path} {arch}: NVRTC warnings (warnings are errors):\n{log}"
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        with open(os.path.join(out_dir, f"{module}.{arch}.ptx"), "wb") as f:
            f.write(ptx.value)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return error

jobs = [(p, a) for p in sys.argv[1:] for a in archs]
with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
    errors = [e for e in pool.map(lambda job: compile_one(*job), jobs) if e]
for e in errors:
    print(f"FAIL  {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
else
    pids=()
    for source in "${sources[@]}"; do
        name=$(basename "$source" .cu)
        for arch in "${archs[@]}"; do
            "$nvcc" -ptx -arch="$arch" -std=c++17 -O3 -lineinfo -Ikernels --Werror all-warnings "${defines[@]}" \
                "$source" -o "$work/$name.$arch.ptx" 2>"$work/$name.$arch.nvcc.log" &
            pids+=($!)
        done
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    for log in "$work"/*.nvcc.log; do
        [[ -s "$log" ]] && { echo "FAIL  nvcc $(basename "$log" .nvcc.log):"; cat "$log"; } >&2
    done
fi

# ---- ptxas -v, the table -------------------------------------------------------------------------
rows="$work/rows"
: >"$rows"
for source in "${sources[@]}"; do
    name=$(basename "$source" .cu)
    for arch in "${archs[@]}"; do
        ptx="$work/$name.$arch.ptx"
        if [[ ! -f "$ptx" ]]; then
            echo "FAIL  $source $arch: no PTX (compile failed above)" >&2
            failed=1
            continue
        fi
        if ! "$ptxas" -v --warning-as-error -arch="$arch" "$ptx" -o /dev/null >"$work/ptxas.log" 2>&1; then
            echo "FAIL  ptxas $source $arch:" >&2
            cat "$work/ptxas.log" >&2
            failed=1
            continue
        fi
        # Per entry function: "Compiling entry function 'K' for 'sm_XX'", then "Function
        # properties for K" / "N bytes stack frame, N bytes spill stores, N bytes spill loads",
        # then "Used N registers, [used N barriers, ][N bytes smem, ]N bytes cmem[0]".
        awk -v module="$name" -v arch="$arch" '
            function flush() {
                if (kernel != "") printf "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", module, kernel, arch, regs, smem, stores, loads, stack
                kernel = ""
            }
            function num_before(line, word,    m) {
                if (match(line, "[0-9]+ bytes " word)) { m = substr(line, RSTART, RLENGTH); sub(/ .*/, "", m); return m + 0 }
                return 0
            }
            /Compiling entry function/ {
                flush()
                kernel = $0; sub(/.*entry function \047/, "", kernel); sub(/\047.*/, "", kernel)
                regs = smem = stores = loads = stack = 0
                next
            }
            kernel != "" && /bytes stack frame/ {
                stack = num_before($0, "stack frame"); stores = num_before($0, "spill stores"); loads = num_before($0, "spill loads")
            }
            kernel != "" && /Used [0-9]+ registers/ {
                match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15) + 0
                smem = num_before($0, "smem")
            }
            END { flush() }
        ' "$work/ptxas.log" >>"$rows"
    done
done

table="$work/table.md"
{
    echo "| module | kernel | arch | registers | smem (bytes) | spill stores | spill loads | stack frame |"
    echo "|---|---|---|---|---|---|---|---|"
    sort -t $'\t' -k1,1 -k2,2 -k3,3 "$rows" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
} >"$table"
cat "$table"
[[ -n "$table_file" ]] && cp "$table" "$table_file"

kernels=$(wc -l <"$rows")
spills=$(awk -F'\t' '$6 > 0 || $7 > 0 { printf "  %s %s (%s): %s bytes spill stores, %s bytes spill loads\n", $1, $2, $3, $6, $7 }' "$rows")
if [[ -n "$spills" ]]; then
    echo "FAIL  register spills:" >&2
    echo "$spills" >&2
    failed=1
fi
if [[ $kernels -eq 0 ]]; then
    echo "FAIL  ptxas reported no kernels" >&2
    failed=1
fi
if [[ $failed -ne 0 ]]; then
    echo "check_kernels: FAILED ($version)"
    exit 1
fi
echo "check_kernels: ok: $kernels (kernel, arch) pairs from ${#sources[@]} modules for ${archs[*]}, no spills ($version)"
