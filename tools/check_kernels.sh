#!/usr/bin/env bash
# Compile every kernels/*.cu with nvcc to PTX for sm_80 and sm_90 (warnings are errors), then
# assemble each PTX with ptxas to be sure it lowers to machine code, printing register and
# shared-memory use. Needs no GPU. Exits non-zero on the first failure.
#
# nvcc: $NVCC, else $CUDA_HOME/bin/nvcc, else nvcc on PATH, else the one in .venv/ (git-ignored).
# `tools/check_kernels.sh --install` first installs nvcc from PyPI into .venv/ (the
# nvidia-cuda-nvcc wheel ships nvcc, ptxas and headers; a host g++ is needed as well).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--install" ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet nvidia-cuda-nvcc
fi

venv_nvcc=$(ls .venv/lib/python3*/site-packages/nvidia/cu*/bin/nvcc 2>/dev/null | head -n 1 || true)
nvcc=${NVCC:-}
[[ -z "$nvcc" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]] && nvcc="$CUDA_HOME/bin/nvcc"
[[ -z "$nvcc" ]] && nvcc=$(command -v nvcc || true)
[[ -z "$nvcc" ]] && nvcc=$venv_nvcc
if [[ -z "$nvcc" ]]; then
    echo "no nvcc: set NVCC or CUDA_HOME, or run tools/check_kernels.sh --install" >&2
    exit 2
fi
ptxas="$(dirname "$nvcc")/ptxas"
"$nvcc" --version | tail -n 2

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for source in kernels/*.cu; do
    name=$(basename "$source" .cu)
    for arch in sm_80 sm_90; do
        # The flags of build.rs, plus warnings as errors.
        "$nvcc" -ptx -arch="$arch" -std=c++17 -O3 -lineinfo -Ikernels --Werror all-warnings \
            "$source" -o "$out/$name.$arch.ptx"
        usage=$("$ptxas" -arch="$arch" -v "$out/$name.$arch.ptx" -o /dev/null 2>&1 | grep -o 'Used [0-9]* registers.*' | tr '\n' ';')
        echo "ok  $source  $arch  $usage"
    done
done
echo "all kernels compile for sm_80 and sm_90"
