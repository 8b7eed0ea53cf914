#!/usr/bin/env bash
# `make gpu-check` on the lent GPU machine, which has python3 + torch but no internet and no venv:
# install the wheels carried in .whl/ (made on the development machine by `make device-wheels`) into
# /tmp/site, then run benchmarks/gpu_check.py; the table and the log go to $OUT (or the repo root).
#   device run: command "bash benchmarks/gpu_check_device.sh", carry [".whl"], timeout 540 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check_device: no wheels in .whl/; run 'make device-wheels' on the development machine and carry .whl" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${OUT:-.}
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
"$PYTHON" benchmarks/gpu_check.py --out "$out/gpu_check.md" "$@" 2>&1 | tee "$out/gpu_check.log"
