#!/usr/bin/env bash
# spire's CPU backend against the official LlamaGen sampler (eager PyTorch) on the same workload:
# AR images of the demo model (or any spire weights directory), CFG 2, temperature 1, the same
# number of threads. The two run alternately, ROUNDS times, so both see the same machine load;
# each round prints both times and their ratio, the last line the median ratio and its spread.
#
#   tools/bench/cpu_vs_torch.sh --llamagen ../LlamaGen [--weights weights/demo] [--threads 2] \
#       [--images 20] [--rounds 5]
#
# --llamagen: a checkout of FoundationVision/LlamaGen (tools/bench/official_sampler.py imports
# its gpt.py and generate.py). Python: $PYTHON, default .venv/bin/python (tools/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

llamagen="" weights=weights/demo threads=2 images=20 rounds=5
while [[ $# -gt 0 ]]; do
    case $1 in
        --llamagen) llamagen=$2 ;;
        --weights) weights=$2 ;;
        --threads) threads=$2 ;;
        --images) images=$2 ;;
        --rounds) rounds=$2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
[[ -n $llamagen ]] || { echo "--llamagen PATH (a checkout of FoundationVision/LlamaGen) is required" >&2; exit 2; }
python=${PYTHON:-.venv/bin/python}

cargo build --release --quiet
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads; $images images per run"
ratios=()
for round in $(seq "$rounds"); do
    spire_ms=$(RAYON_NUM_THREADS=$threads target/release/spire bench --weights "$weights" --images "$images" --modes none --cfg 2 --json 2>/dev/null \
        | "$python" -c 'import json, sys; print(json.load(sys.stdin)[0]["latency_ms_per_image"])')
    torch_ms=$("$python" -W ignore tools/bench/official_sampler.py --llamagen "$llamagen" --weights "$weights" --threads "$threads" --images "$images" \
        | "$python" -c 'import json, sys; print(json.load(sys.stdin)["ms_per_image"])')
    ratio=$("$python" -c "print(f'{$torch_ms / $spire_ms:.2f}')")
    ratios+=("$ratio")
    printf 'round %d: spire AR %8.1f ms/image, official LlamaGen (eager) %8.1f ms/image, spire %sx faster\n' "$round" "$spire_ms" "$torch_ms" "$ratio"
done
"$python" -c "import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f'median {statistics.median(r):.2f}x (min {r[0]:.2f}x, max {r[-1]:.2f}x) over {len(r)} rounds')" "${ratios[@]}"
