#!/bin/sh
# The whole continuous-demo pipeline as it was run for weights/demo-mar (README.md): data, KL
# autoencoder, MAR target, its head polished at the sampler's first timestep (polish_head.py), then
# the MAR draft distilled from the finished target (it starts from the target's embeddings, first
# blocks and polished head, which stays frozen), one thread each, one
# after the other; export to weights/demo-mar/ through tools/convert_mar.py, golden file.
# Smoke test of every step: SMOKE="--max-steps 3" OUTDIR=/tmp/x sh run_all.sh (overwrites out/).
set -e
cd "$(dirname "$0")"
PY=${PY:-python3}
OUTDIR=${OUTDIR:-../../weights/demo-mar}
mkdir -p out
$PY ../train/prep_data.py --out out/data.npz
$PY train_vae.py --budget-s 360 $SMOKE > out/vae.stdout 2>&1
$PY train_mar.py --model target --budget-s 1500 $SMOKE > out/target.stdout 2>&1
$PY polish_head.py --budget-s 180 $SMOKE > out/polish.stdout 2>&1
$PY train_mar.py --model draft --distill-from out/target.pt --init-matching out/target.pt --freeze-head \
    --label-drop 0.25 --warmup 20 --budget-s 540 $SMOKE > out/draft.stdout 2>&1
$PY export.py --out "$OUTDIR"
$PY export_golden.py --dir "$OUTDIR"
