#!/bin/sh
# The whole continuous-demo pipeline as it was run for weights/demo-mar (README.md): data, KL
# autoencoder, MAR target and draft side by side (one thread each), a continuation of the
# target, export to weights/demo-mar/ through tools/convert_mar.py, golden file.
# Smoke test of every step: SMOKE="--max-steps 3" sh run_all.sh (writes a throwaway export).
set -e
cd "$(dirname "$0")"
PY=${PY:-python3}
OUTDIR=${OUTDIR:-../../weights/demo-mar}
mkdir -p out
$PY ../train/prep_data.py --out out/data.npz
$PY train_vae.py --budget-s 420 $SMOKE > out/vae.stdout 2>&1
$PY train_mar.py --model target --budget-s 1380 $SMOKE > out/target.stdout 2>&1 &
$PY train_mar.py --model draft --budget-s 600 --lr 2e-3 $SMOKE > out/draft.stdout 2>&1
wait
$PY train_mar.py --model target --init-from out/target.pt --out out/target_b.pt --lr 5e-4 --warmup 20 --budget-s 660 $SMOKE \
    > out/target_b.stdout 2>&1
$PY export.py --target out/target_b.pt --out "$OUTDIR"
$PY export_golden.py --dir "$OUTDIR"
