#!/usr/bin/env bash
# Race and memory checks of every kernel on the CUDA emulator (kernels/emu/): builds the kernel
# tests with the kernels (and the emulator) instrumented by ThreadSanitizer, then by
# AddressSanitizer + UBSan (build.rs: SPIRE_EMU_SANITIZE=thread|address; the Rust side is not
# instrumented), runs them, and fails on any sanitizer report. A self-check first proves the
# race detector works here: the emulator's `racy_block_sum` (common.cuh's block reduction with its
# first __syncthreads removed, kernels/emu/selftest.cu) must be reported by ThreadSanitizer.
#
# Needs only g++ (with its libtsan/libasan/libubsan) and cargo; no GPU, no CUDA toolkit. Each mode
# has its own target dir (target/sanitize-<mode>); the first run builds everything (minutes).
# Usage: tools/check_kernels_emulated.sh [thread|address]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."

modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(thread address)

# gcc 12's libtsan cannot map its shadow memory with more than 28 bits of mmap randomisation.
run_tsan() {
    if [[ $(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28) -gt 28 ]] && command -v setarch >/dev/null; then
        setarch "$(uname -m)" -R "$@"
    else
        "$@"
    fi
}

# cargo test of the kernel test targets in one sanitizer mode, output to $2; the remaining
# arguments go to the test harness. Debug info is kept (no strip) so reports name kernel lines.
run_tests() {
    local mode=$1 log=$2
    shift 2
    # The statistical acceptance test runs the same kernel as the exact twin test, 40,000 times:
    # skipped here, where every launch is 5-20x slower.
    local -a cmd=(cargo test --release --no-fail-fast --test gpu_kernels --test emulator -- --test-threads=1 --skip fused_acceptance_emits_the_target_law "$@")
    export SPIRE_EMU_SANITIZE=$mode CARGO_TARGET_DIR=target/sanitize-$mode CARGO_PROFILE_RELEASE_STRIP=none
    case $mode in
        # exitcode=0: the exit status reflects the tests; reports are counted from the log.
        thread) TSAN_OPTIONS="halt_on_error=0 exitcode=0" run_tsan "${cmd[@]}" >"$log" 2>&1 ;;
        address) ASAN_OPTIONS="detect_leaks=1 detect_stack_use_after_return=1" UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1" "${cmd[@]}" >"$log" 2>&1 ;;
    esac
}

# Sanitizer reports that involve kernel or emulator code. The Rust side is not instrumented, so
# ThreadSanitizer also flags the test harness's own channels (std's atomics are invisible to
# it): those reports, whose stacks hold no kernel frame, are false positives and not counted.
reports() {
    # Only the access stacks count (a report's "Thread T.. created at" part can name emulator
    # frames for a fiber whose thread id a harness thread reuses).
    awk '/^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: (Address|Leak)Sanitizer)|runtime error:/ { if (inside && kernel) n++; inside = 1; access = 1; kernel = 0 }
         /^  (Location is|Thread T|Mutex M)/ { access = 0 }
         access && /spire_emu|fiber_entry|kernels\// { kernel = 1 }
         /runtime error:/ { kernel = 1 }
         END { if (inside && kernel) n++; print n + 0 }' "$1"
}

status=0
logs=$(mktemp -d)
for mode in "${modes[@]}"; do
    case $mode in
        thread | address) ;;
        *) echo "unknown mode $mode (thread or address)" >&2; exit 2 ;;
    esac
    echo "=== $mode: building the kernel tests with the sanitizer (target/sanitize-$mode)"
    SPIRE_EMU_SANITIZE=$mode CARGO_TARGET_DIR=target/sanitize-$mode CARGO_PROFILE_RELEASE_STRIP=none cargo test --release --test gpu_kernels --test emulator --no-run 2>&1 | tail -n 2
    if [[ $mode == thread ]]; then
        log=$logs/selfcheck.log
        run_tests thread "$log" --exact a_missing_syncthreads_reads_poisoned_shared_memory || true
        if [[ $(reports "$log") -gt 0 ]] && grep -q 'data race .* in racy_block_sum' "$log"; then
            echo "ok   self-check: ThreadSanitizer reports the race of racy_block_sum ($(grep -m1 -oE 'selftest.cu:[0-9]+' "$log" || echo 'no line info'))"
        else
            echo "FAIL self-check: ThreadSanitizer did not report racy_block_sum's missing __syncthreads (log: $log)"
            status=1
        fi
    fi
    log=$logs/$mode.log
    rc=0
    run_tests "$mode" "$log" --skip a_missing_syncthreads_reads_poisoned_shared_memory || rc=$?
    found=$(reports "$log")
    ignored=$(grep -cE '^WARNING: ThreadSanitizer' "$log" || true)
    summary=$(grep -E '^test result:' "$log" | tr '\n' ' ')
    if [[ $rc -eq 0 && $found -eq 0 && $(grep -c '^test result: ok' "$log") -eq 2 ]]; then
        echo "ok   $mode: no reports on kernel code ($ignored on the uninstrumented Rust harness ignored); $summary"
    else
        echo "FAIL $mode: exit $rc, $found sanitizer report(s); $summary (log: $log)"
        grep -E -A 12 'WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|panicked' "$log" | head -n 60
        status=1
    fi
done
[[ $status -eq 0 ]] && rm -rf "$logs"
exit $status
