#!/usr/bin/env bash
# `make gpu-check` on the lent GPU machine: the carried wheels installed (benchmarks/device_env.sh), then
# benchmarks/gpu_check.py; the table and the log go to $OUT (or the repo root).
#   device run: command "bash benchmarks/gpu_check_device.sh", carry [".whl"], timeout 540 s.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
out=${OUT:-.}
"$PYTHON" benchmarks/gpu_check.py --out "$out/gpu_check.md" "$@" 2>&1 | tee "$out/gpu_check.log"
