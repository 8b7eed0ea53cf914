#!/usr/bin/env bash
# Issue #13 on the lent GPU machine, one device call (~9 min): render the procedural training data with
# all cores, train a wider v-prediction demo model with multi-view attention also at 32 px on CUDA (bf16)
# for at most $MINUTES, evaluate it on the 64 held-out objects (DDIM 20 from noise, CFG 3, one-step x0) and
# export its EMA weights as float16 to $OUT/model (compare: training/demo-model-v/README.md, BENCHMARKS.md "v-prediction demo model").
#   device run: command "bash training/gpu_vpred_device.sh", carry [".whl"], timeout 600 s.
# Knobs (environment): MINUTES 6, STEPS 8000, BATCH 64, CHANNELS 64 (about 10 MB as float16), OBJECTS 4000,
# DEVICE cuda, WORKERS = cores - 1.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
out=${OUT:-/tmp/vpred-out}
run=${RUN:-/tmp/vpred-run}
cache=${CACHE:-/tmp/vpred-cache}
mkdir -p "$out"
"$PYTHON" -m magicboost_core.cli train --device "${DEVICE:-cuda}" --out "$run" --cache "$cache" \
    --objects "${OBJECTS:-4000}" --data-workers "${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}" \
    --steps "${STEPS:-8000}" --batch-size "${BATCH:-64}" --lr 1e-3 --warmup-steps 200 --ema-decay 0.999 \
    --checkpoint-every 1000 --max-minutes "${MINUTES:-6}" --prediction-type v_prediction \
    --model-channels "${CHANNELS:-64}" --attention-resolutions 1,2,4 2>&1 \
    | tr '\r' '\n' | awk '!/^train: / || NR % 50 == 0' | tee "$out/train.log"
"$PYTHON" -m magicboost_core.cli export-checkpoint "$run/checkpoint.pt" "$out/model" --half \
    --notes "v-prediction, ${CHANNELS:-64} channels, attention at 32/16/8 px, trained on $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"
"$PYTHON" -m magicboost_core.cli eval-views "$out/model" --device "${DEVICE:-cuda}" --objects 64 --steps 20 --cfg 3 --denoise \
    --cache "$cache" --json "$out/eval.json" 2>&1 | tee "$out/eval.log"
