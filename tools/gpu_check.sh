#!/usr/bin/env bash
# One-call GPU validation, run ON the GPU machine (x86-64, no Rust, no network) from the bundle
# that tools/build_gpu_bundle.sh wrote into device-run/. With the device tool:
#
#   run  command: bash tools/gpu_check.sh   carry: ["device-run"]   timeout_s: 600
#
# In about 8 minutes at most (a deadline; each step has its own `timeout` and steps that no longer
# fit are reported as not run), in this order:
#   1. every test executable in device-run/tests (harness defaults, so in parallel as `cargo test`
#      runs them; a failing one is rerun with --test-threads=1 to tell a race between tests from a
#      plain failure). Here a GPU test must not skip: "skipped:" in the output is a failure.
#   2. compute-sanitizer memcheck, racecheck, synccheck (and initcheck, if time is left) on the
#      kernel test executables ($SANITIZE_TESTS), --test-threads=1.
#   3. the kernel benches (benches/cuda_kernels, short criterion times; each kernel against the
#      cost model of src/backend/gpu/cost.rs).
#   4. the GPT-XL end-to-end bench (benches/gpt_xl, criterion --quick).
#   5. the PyTorch baseline tools/bench/torch_llamagen.py (eager, then torch.compile if time is
#      left), if torch is importable and sees the GPU.
# Writes $OUT/report.md (markdown for benches/RESULTS.md: environment, test table, sanitizer
# verdicts, bench numbers) and raw logs $OUT/{env,tests,sanitizer,bench_kernels,bench_gpt_xl,
# torch}.log; $OUT defaults to device-run/gpu-report. One failing step never stops the others;
# the exit status is 1 if anything failed.
#
# Overrides: SPIRE_BUNDLE (device-run), SPIRE_GPU_CHECK_DEADLINE_S (470),
# SPIRE_COMPUTE_SANITIZER (path), SPIRE_TORCH_BENCH (the baseline script).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# ---- what to run (edit here) ---------------------------------------------------------------------
# Kernel test executables (device-run/tests/<name>) run under compute-sanitizer; missing ones are
# passed over.
SANITIZE_TESTS="gpu_kernels"
SANITIZER_TOOLS="memcheck racecheck synccheck"
SANITIZER_TOOLS_IF_TIME="initcheck"
KERNEL_BENCH=cuda_kernels
KERNEL_BENCH_ARGS="--bench --warm-up-time 1 --measurement-time 2"
E2E_BENCH=gpt_xl
E2E_BENCH_ARGS="--bench --quick --measurement-time 8"
TORCH_BENCH=${SPIRE_TORCH_BENCH:-tools/bench/torch_llamagen.py}
TORCH_ARGS="--model GPT-XL --image-size 256 --device cuda --dtype bf16"
# Per-step limits in seconds, and the whole run's.
TEST_TIMEOUT=150
SANITIZER_TIMEOUT=120
KERNEL_BENCH_TIMEOUT=150
E2E_BENCH_TIMEOUT=180
TORCH_EAGER_TIMEOUT=90
TORCH_COMPILE_TIMEOUT=240
DEADLINE_S=${SPIRE_GPU_CHECK_DEADLINE_S:-470}

# ---- set-up --------------------------------------------------------------------------------------
t0=$SECONDS
repo=$PWD
bundle=${SPIRE_BUNDLE:-device-run}
OUT=${OUT:-$bundle/gpu-report}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
env_log=$OUT/env.log
tests_log=$OUT/tests.log
san_log=$OUT/sanitizer.log
kb_log=$OUT/bench_kernels.log
e2e_log=$OUT/bench_gpt_xl.log
torch_log=$OUT/torch.log
report=$OUT/report.md
: >"$env_log"; : >"$tests_log"; : >"$san_log"; : >"$kb_log"; : >"$e2e_log"; : >"$torch_log"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CRITERION_HOME=$work/criterion
export PYTHONUNBUFFERED=1
export RUST_BACKTRACE=1
failed=0
steps=()      # markdown rows of the steps table
test_rows=()  # markdown rows of the test table
san_rows=()   # markdown rows of the sanitizer table

note() { echo "$*" | tee -a "$env_log"; }
remaining() { echo $((DEADLINE_S - (SECONDS - t0))); }
# A step's timeout: its own limit, or what is left before the deadline.
limit() {
    local left
    left=$(remaining)
    if [[ $1 -lt $left ]]; then echo "$1"; else echo "$left"; fi
}
# step_row NAME STATUS SECONDS LOG
step_row() {
    steps+=("| ${1//|//} | ${2//|//} | $3 | $(basename "$4") |")
    case "$2" in FAIL* | TIMEOUT*) failed=1 ;; esac
    echo "=== $1: $2 (${3}s, at $((SECONDS - t0))s)"
}
# run_logged TIMEOUT LOG CMD...: the command's output appended to LOG (and to $work/last);
# returns its status (124 after a timeout).
run_logged() {
    local t=$1 log=$2
    shift 2
    {
        echo
        echo "\$ $*    (timeout ${t}s, at $((SECONDS - t0))s)"
    } >>"$log"
    # Through tee, so the log is complete up to the moment even if this whole script is stopped.
    timeout -k 10 "$t" "$@" 2>&1 | tee "$work/last" >>"$log"
    local rc=${PIPESTATUS[0]}
    echo "[exit $rc]" >>"$log"
    return "$rc"
}

echo "gpu_check.sh: bundle $bundle, report $OUT, deadline ${DEADLINE_S}s"
{
    echo "# gpu_check.sh environment, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "repo: $repo"
    uname -a
} >>"$env_log"

# Unpack the bundle's archives (once per bundle: MANIFEST is the stamp).
if [[ ! -f "$bundle/MANIFEST" ]]; then
    note "FAIL: no $bundle/MANIFEST: build it with tools/build_gpu_bundle.sh and carry [\"$bundle\"]"
    failed=1
elif ! cmp -s "$bundle/MANIFEST" "$bundle/.unpacked"; then
    rm -rf "${bundle:?}/tests" "${bundle:?}/benches" "${bundle:?}/bin" "${bundle:?}/nvrtc"
    unpacked=1
    for archive in "$bundle"/*.tar.xz; do
        [[ -f "$archive" ]] || continue
        if tar -C "$bundle" -xJf "$archive" 2>>"$env_log" ||
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$archive" "$bundle" 2>>"$env_log"; then
            note "unpacked $archive (at $((SECONDS - t0))s)"
        else
            note "FAIL: cannot unpack $archive"
            failed=1
            unpacked=0
        fi
    done
    [[ $unpacked -eq 1 ]] && cp "$bundle/MANIFEST" "$bundle/.unpacked"
fi
manifest() { sed -n "s/^$1=//p" "$bundle/MANIFEST" 2>/dev/null | head -n 1; }
{ echo; echo "## MANIFEST"; cat "$bundle/MANIFEST" 2>/dev/null; } >>"$env_log"

# The tests were built in $manifest_dir and read weights/, tests/data/ and the spire binary
# through paths baked in at build time (CARGO_MANIFEST_DIR, CARGO_BIN_EXE_spire): make those
# paths lead to this checkout and this bundle.
manifest_dir=$(manifest manifest_dir)
spire_bin=$(manifest spire_bin)
if [[ -n "$manifest_dir" && ! "$manifest_dir" -ef "$repo" ]]; then
    if [[ -e "$manifest_dir" ]]; then
        note "WARNING: the build's $manifest_dir exists here and is not this checkout: tests read files from there"
    elif mkdir -p "$(dirname "$manifest_dir")" && ln -s "$repo" "$manifest_dir"; then
        note "linked $manifest_dir -> $repo (the build's CARGO_MANIFEST_DIR)"
    else
        note "WARNING: cannot link $manifest_dir -> $repo: tests that read weights/ or tests/data/ will fail"
    fi
fi
if [[ -n "$spire_bin" && -x "$bundle/bin/spire" && ! -e "$spire_bin" ]]; then
    if mkdir -p "$(dirname "$spire_bin")" && ln -s "$repo/$bundle/bin/spire" "$spire_bin"; then
        note "linked $spire_bin -> $bundle/bin/spire (the tests' CARGO_BIN_EXE_spire)"
    else
        note "WARNING: cannot place the spire binary at $spire_bin: the CLI tests will fail"
    fi
fi

# Libraries cudarc opens by name: it tries libX.so first, then libX.so.12 (it knows no .so.13).
libs=$work/lib
mkdir -p "$libs"
# find_lib PATTERN...: the first existing file for the first pattern that has one.
find_lib() {
    local pattern hit
    for pattern in "$@"; do
        hit=$(ldconfig -p 2>/dev/null | awk -v p="$pattern" '$1 == p { print $NF; exit }')
        if [[ -z "$hit" ]]; then
            # shellcheck disable=SC2086  # the glob list is meant to expand
            hit=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
                /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /opt /usr/local/lib -maxdepth 10 \
                -name "$pattern" \( -type f -o -type l \) 2>/dev/null | head -n 1)
        fi
        if [[ -n "$hit" ]]; then
            echo "$hit"
            return 0
        fi
    done
    return 1
}
ld_dirs=()
if [[ -f "$bundle/nvrtc/libnvrtc.so.12" ]]; then
    ln -sf libnvrtc.so.12 "$bundle/nvrtc/libnvrtc.so"
    ld_dirs+=("$repo/$bundle/nvrtc")
    nvrtc_used="bundled $(manifest cuda_toolchain) ($bundle/nvrtc/libnvrtc.so.12)"
elif nvrtc=$(find_lib libnvrtc.so.12 libnvrtc.so.13 libnvrtc.so); then
    ln -sf "$nvrtc" "$libs/libnvrtc.so"
    ld_dirs+=("$(dirname "$nvrtc")")
    nvrtc_used="device's $nvrtc"
else
    nvrtc_used="none found"
fi
if cublas=$(find_lib libcublas.so.12 libcublas.so.13 libcublas.so); then
    ln -sf "$cublas" "$libs/libcublas.so"
    ld_dirs+=("$(dirname "$cublas")")  # for its libcublasLt
    cublas_used=$cublas
else
    cublas_used="none found"
fi
ld_dirs+=("$libs")
orig_ld_library_path=${LD_LIBRARY_PATH:-}
[[ -d /usr/local/nvidia/lib64 ]] && ld_dirs+=(/usr/local/nvidia/lib64)
LD_LIBRARY_PATH=$(IFS=:; echo "${ld_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
cuda_driver=$(find_lib libcuda.so.1 libcuda.so || echo "none found")

sanitizer=${SPIRE_COMPUTE_SANITIZER:-}
if [[ -z "$sanitizer" ]]; then
    for candidate in "$bundle/sanitizer/compute-sanitizer" "$(command -v compute-sanitizer 2>/dev/null)" \
        /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
        /usr/local/cuda-*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            sanitizer=$candidate
            break
        fi
    done
fi

# "2.11.0+cu130 13.0 True", or why torch cannot be used.
torch_info=$(LD_LIBRARY_PATH=$orig_ld_library_path python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -n 1)
{
    echo
    echo "## nvidia-smi"
    nvidia-smi 2>&1 || echo "(nvidia-smi failed)"
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv 2>&1
    echo
    echo "## libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
    echo "driver: $cuda_driver"
    echo "NVRTC: $nvrtc_used"
    echo "cuBLAS: $cublas_used"
    echo
    echo "## tools"
    echo "compute-sanitizer: ${sanitizer:-none found}"
    [[ -n "$sanitizer" ]] && "$sanitizer" --version 2>&1 | tail -n 2
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    echo "python3: $(python3 --version 2>&1); torch: $torch_info"
    echo "cpus: $(nproc)"
} >>"$env_log" 2>&1
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
cuda_version=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -n 1 | sed 's/CUDA Version: //')
sanitizer_version=$([[ -n "$sanitizer" ]] && "$sanitizer" --version 2>/dev/null | grep -o 'Version [0-9.]*' | head -n 1)
torch_version=$([[ "$torch_info" == *" True" ]] && echo "${torch_info%% *}")
step_row "set-up (unpack, paths, libraries)" ok $((SECONDS - t0)) "$env_log"

# ---- 1. tests ------------------------------------------------------------------------------------
# check_output LOG: "skipped:" in a run's output means the GPU half did not run.
skipped_in() { grep -m 3 'skipped:' "$1"; }
# "test result: ok. 3 passed; 0 failed; 1 ignored; ..." summed over the run.
counts() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
         END { printf "%d\t%d\t%d\n", p, f, g }' "$1"
}

# The kernel tests first (the reason for the machine), then the others, by name.
test_names=()
for name in $SANITIZE_TESTS; do
    [[ -x "$bundle/tests/$name" ]] && test_names+=("$name")
done
for exe in "$bundle"/tests/*; do
    name=$(basename "$exe")
    [[ -f "$exe" && -x "$exe" && " $SANITIZE_TESTS " != *" $name "* ]] && test_names+=("$name")
done
[[ ${#test_names[@]} -gt 0 ]] || { note "FAIL: no test executables in $bundle/tests"; failed=1; }
for name in "${test_names[@]}"; do
    start=$SECONDS
    t=$(limit $TEST_TIMEOUT)
    if [[ $t -lt 10 ]]; then
        test_rows+=("| $name | NOT RUN (deadline) | | | | |")
        step_row "test $name" "FAIL (not run: deadline)" 0 "$tests_log"
        continue
    fi
    run_logged "$t" "$tests_log" "$bundle/tests/$name" --show-output
    rc=$?
    IFS=$'\t' read -r passed nfailed ignored < <(counts "$work/last")
    skips=$(skipped_in "$work/last")
    status=ok
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        status="TIMEOUT (${t}s)"
    elif [[ $rc -ne 0 ]]; then
        status="FAIL (exit $rc)"
        # A race between tests, or a plain failure? Once more, one test at a time.
        t=$(limit $TEST_TIMEOUT)
        if [[ $t -ge 10 ]] && run_logged "$t" "$tests_log" "$bundle/tests/$name" --show-output --test-threads=1; then
            status="FAIL (exit $rc in parallel; passes with --test-threads=1)"
        fi
    elif [[ -n "$skips" ]]; then
        status="FAIL (skipped on the GPU machine: $(echo "$skips" | head -n 1 | sed 's/.*skipped: //' | cut -c1-120))"
    fi
    test_rows+=("| $name | ${status//|//} | $passed | $nfailed | $ignored | $((SECONDS - start)) s |")
    step_row "test $name" "$status" $((SECONDS - start)) "$tests_log"
done

# ---- 2. compute-sanitizer ------------------------------------------------------------------------
san_targets=()
for name in $SANITIZE_TESTS; do
    [[ -x "$bundle/tests/$name" ]] && san_targets+=("$name")
done
run_sanitizer() {  # TOOL NAME
    local tool=$1 name=$2 start=$SECONDS t rc verdict errors
    t=$(limit $SANITIZER_TIMEOUT)
    if [[ $t -lt 20 ]]; then
        san_rows+=("| $tool | $name | not run (deadline) | |")
        [[ " $SANITIZER_TOOLS " == *" $tool "* ]] && step_row "compute-sanitizer $tool $name" "FAIL (not run: deadline)" 0 "$san_log"
        return
    fi
    run_logged "$t" "$san_log" "$sanitizer" --tool "$tool" --error-exitcode 97 --print-limit 20 \
        "$bundle/tests/$name" --test-threads=1 --show-output
    rc=$?
    errors=$(grep -oE '(ERROR SUMMARY: [0-9]+ errors?|RACECHECK SUMMARY: [0-9]+ hazards? displayed \([0-9]+ errors?, [0-9]+ warnings?\))' "$work/last" | tail -n 1)
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        verdict="TIMEOUT (${t}s)"
    elif [[ $rc -eq 97 ]]; then
        verdict="FAIL: ${errors:-errors reported}"
    elif grep -qE 'Device not supported|Unable to find injection library|Target application terminated before first instrumented' "$work/last"; then
        verdict="FAIL (the sanitizer could not instrument: $(grep -m 1 -oE 'Device not supported|Unable to find injection library|Target application terminated before first instrumented' "$work/last"))"
    elif [[ $rc -ne 0 ]]; then
        verdict="FAIL (the tests failed under the sanitizer, exit $rc)"
    elif [[ -n "$(skipped_in "$work/last")" ]]; then
        verdict="FAIL (GPU tests skipped: nothing was checked)"
    else
        verdict="clean${errors:+ ($errors)}"
    fi
    san_rows+=("| $tool | $name | ${verdict//|//} | $((SECONDS - start)) s |")
    [[ "$verdict" == clean* ]] && verdict=ok
    step_row "compute-sanitizer $tool $name" "$verdict" $((SECONDS - start)) "$san_log"
}
if [[ -z "$sanitizer" ]]; then
    san_rows+=("| all | | FAIL: no compute-sanitizer (not in PATH, /usr/local/cuda, \$SPIRE_COMPUTE_SANITIZER) | |")
    step_row "compute-sanitizer" "FAIL (not found)" 0 "$san_log"
elif [[ ${#san_targets[@]} -eq 0 ]]; then
    san_rows+=("| all | | FAIL: none of the kernel test executables ($SANITIZE_TESTS) is in the bundle | |")
    step_row "compute-sanitizer" "FAIL (no kernel tests)" 0 "$san_log"
else
    for tool in $SANITIZER_TOOLS; do
        for name in "${san_targets[@]}"; do run_sanitizer "$tool" "$name"; done
    done
fi

# ---- 3./4. benches -------------------------------------------------------------------------------
run_bench() {  # NAME ARGS TIMEOUT LOG
    local name=$1 args=$2 t log=$4 start=$SECONDS rc status
    t=$(limit "$3")
    if [[ ! -x "$bundle/benches/$name" ]]; then
        step_row "bench $name" "FAIL (not in the bundle)" 0 "$log"
        return
    fi
    if [[ $t -lt 30 ]]; then
        step_row "bench $name" "FAIL (not run: deadline)" 0 "$log"
        return
    fi
    # shellcheck disable=SC2086  # ARGS are words
    run_logged "$t" "$log" "$bundle/benches/$name" $args
    rc=$?
    status=ok
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        status="TIMEOUT (${t}s)"
    elif [[ $rc -ne 0 ]]; then
        status="FAIL (exit $rc)"
    elif [[ -n "$(skipped_in "$work/last")" ]]; then
        status="FAIL (skipped on the GPU machine)"
    fi
    step_row "bench $name" "$status" $((SECONDS - start)) "$log"
}
run_bench "$KERNEL_BENCH" "$KERNEL_BENCH_ARGS" $KERNEL_BENCH_TIMEOUT "$kb_log"
run_bench "$E2E_BENCH" "$E2E_BENCH_ARGS" $E2E_BENCH_TIMEOUT "$e2e_log"

# ---- 5. PyTorch baseline, and what runs only if time is left --------------------------------------
torch_json=()
run_torch() {  # eager|compile
    local mode=$1 start=$SECONDS t rc extra=()
    if [[ $mode == eager ]]; then
        t=$(limit $TORCH_EAGER_TIMEOUT)
        extra=(--no-compile)
    else
        t=$(limit $TORCH_COMPILE_TIMEOUT)
    fi
    if [[ $t -lt 30 ]]; then
        step_row "PyTorch baseline ($mode)" "not run (deadline)" 0 "$torch_log"
        [[ $mode == eager ]] && failed=1
        return
    fi
    # shellcheck disable=SC2086  # TORCH_ARGS are words
    # With the machine's own library path: the links above are for spire's cudarc, not torch.
    run_logged "$t" "$torch_log" env LD_LIBRARY_PATH="$orig_ld_library_path" python3 "$TORCH_BENCH" $TORCH_ARGS "${extra[@]}"
    rc=$?
    if [[ $rc -eq 0 ]]; then
        torch_json+=("$(sed -n '/^{/,/^}/p' "$work/last")")
        step_row "PyTorch baseline ($mode)" ok $((SECONDS - start)) "$torch_log"
    elif [[ $mode == compile && ($rc -eq 124 || $rc -eq 137) ]]; then
        # torch.compile's first compilation can outlast what is left; the eager numbers stand.
        step_row "PyTorch baseline ($mode)" "not finished in ${t}s" $((SECONDS - start)) "$torch_log"
    else
        step_row "PyTorch baseline ($mode)" "FAIL (exit $rc)" $((SECONDS - start)) "$torch_log"
    fi
}
have_torch=0
if [[ "$torch_info" == *" True" ]]; then
    have_torch=1
    run_torch eager
else
    echo "torch is not importable or sees no GPU: $torch_info" >>"$torch_log"
    step_row "PyTorch baseline" "skipped (no torch with CUDA: $torch_info)" 0 "$torch_log"
fi
if [[ -n "$sanitizer" ]]; then
    for tool in $SANITIZER_TOOLS_IF_TIME; do
        for name in "${san_targets[@]}"; do run_sanitizer "$tool" "$name"; done
    done
fi
[[ $have_torch -eq 1 ]] && run_torch compile
printf '%s\n' "${torch_json[@]}" >"$work/torch.json"

# ---- the report ----------------------------------------------------------------------------------
overall=$([[ $failed -eq 0 ]] && echo "all checks passed" || echo "SOME CHECKS FAILED")
{
    echo "## GPU: ${gpu_name:-unknown GPU} ($(date -u +%Y-%m-%d), tools/gpu_check.sh)"
    echo
    echo "Result: **$overall** in $((SECONDS - t0)) s. Bundle: commit \`$(manifest commit)\`, built $(manifest built), features \`$(manifest features)\`."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| GPU | ${gpu_name:-?} |"
    echo "| driver | ${driver:-?} (CUDA ${cuda_version:-?}) |"
    echo "| NVRTC | $nvrtc_used |"
    echo "| cuBLAS | $cublas_used |"
    echo "| compute-sanitizer | ${sanitizer:-none} ${sanitizer_version:-} |"
    echo "| PyTorch | ${torch_version:-not importable} |"
    echo "| host | $(nproc) CPUs, $(uname -r) |"
    echo
    echo "### Tests (device-run/tests, harness defaults)"
    echo
    echo "| executable | result | passed | failed | ignored | time |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${test_rows[@]}"
    echo
    echo "### compute-sanitizer (--test-threads=1)"
    echo
    echo "| tool | executable | verdict | time |"
    echo "|---|---|---|---|"
    printf '%s\n' "${san_rows[@]}"
    echo
    python3 - "$kb_log" "$e2e_log" "$work/torch.json" <<'PY' || echo "(bench tables unavailable: python3 failed; see the logs)"
import json, re, sys

def criterion(path):
    """(id, low, mid, high, thrpt-mid) per criterion result in a log."""
    rows, last = [], None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line and not line[0].isspace() and not line.startswith(("Benchmarking", "Warning", "Found", "$", "[exit", "running", "test ", "skipped")):
            head = line.split("  ")[0].strip()
            if head and "time:" not in head:
                last = head
        m = re.search(r"time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", line)
        if m:
            name = line[: line.index("time:")].strip() or last
            rows.append([name, m.group(1), m.group(2), m.group(3), ""])
        m = re.search(r"thrpt:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
        if m and rows and not rows[-1][4]:
            rows[-1][4] = m.group(1)
    return rows

kernel_lines = [l.rstrip() for l in open(sys.argv[1], errors="replace") if " us model " in l]
print("### Kernel benches (benches/cuda_kernels)")
print()
heading = [l.strip() for l in open(sys.argv[1], errors="replace") if "precompiled PTX" in l]
if heading:
    print(f"`{heading[0]}`")
    print()
if kernel_lines:
    print("50 back-to-back launches, one sync, against the cost model (src/backend/gpu/cost.rs, host-launched):")
    print()
    print("| kernel | measured per launch | model | measured / model | achieved | of HBM |")
    print("|---|---|---|---|---|---|")
    for l in kernel_lines:
        m = re.match(r"(\S+)\s+([\d.]+) us measured\s+([\d.]+) us model \(\s*([\d.]+)x\)\s+([\d.]+) GB/s\s+([\d.]+)% of (.+) HBM", l.strip())
        if m:
            print(f"| {m.group(1)} | {m.group(2)} µs | {m.group(3)} µs | {m.group(4)}x | {m.group(5)} GB/s | {m.group(6)} % ({m.group(7)}) |")
    print()
rows = criterion(sys.argv[1])
if rows:
    print("criterion (one sync per iteration, launch latency included):")
    print()
    print("| bench | time (low / mid / high) | throughput |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} / **{r[2]}** / {r[3]} | {r[4]} |")
    print()
if not kernel_lines and not rows:
    print("(no numbers: see bench_kernels.log)")
    print()

print("### End to end (benches/gpt_xl: GPT-XL-shaped, random bf16 weights, 256 tokens, CFG)")
print()
rows = criterion(sys.argv[2])
if rows:
    print("| mode | time per image (low / mid / high) |")
    print("|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} / **{r[2]}** / {r[3]} |")
else:
    print("(no numbers: see bench_gpt_xl.log)")
print()

print("### PyTorch baseline (tools/bench/torch_llamagen.py --model GPT-XL --image-size 256 --dtype bf16)")
print()
text = open(sys.argv[3]).read().strip()
results = []
depth, start = 0, None
for i, c in enumerate(text):  # the JSON objects one after another
    if c == "{":
        depth += 1
        start = i if depth == 1 else start
    elif c == "}":
        depth -= 1
        if depth == 0:
            try:
                results.append(json.loads(text[start : i + 1]))
            except ValueError:
                pass
best = {}
for r in results:
    best.update({k: v for k, v in r.items() if v is not None})
if best:
    print("| mode | ms per image | tokens/s |")
    print("|---|---|---|")
    for mode in ("eager", "compile"):
        if f"{mode}_ms_per_image" in best:
            print(f"| {mode} | {best[f'{mode}_ms_per_image']} | {best.get(f'{mode}_tokens_per_s', '')} |")
    print()
    print(f"torch {best.get('torch', '?')} on {best.get('gpu', '?')}")
else:
    print("(not run or no numbers: see torch.log)")
print()
PY
    echo "### Steps"
    echo
    echo "| step | status | seconds | log |"
    echo "|---|---|---|---|"
    printf '%s\n' "${steps[@]}"
} >"$report"

echo
cat "$report"
echo
echo "gpu_check.sh: $overall in $((SECONDS - t0))s; report and logs in $OUT"
exit $failed
