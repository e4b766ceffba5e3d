#!/usr/bin/env bash
# Full demo-model pipeline (about 60 minutes on a 2-core CPU).  Logs go to out/*.log.
# usage: PY=/work/venv/bin/python bash run_all.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
$PY selfcheck.py
$PY prep_data.py
$PY train_tokenizer.py --budget-s 600
$PY tokenize_data.py
$PY train_gpt.py --model target --budget-s 1100 --lr 1e-3
$PY train_gpt.py --model draft --budget-s 240 --lr 2e-3
$PY train_draft_head.py --budget-s 300
$PY export.py
$PY measure_acceptance.py
$PY train_eval_net.py                # the evaluation network of spire eval, ~3 min
