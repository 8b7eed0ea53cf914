# Sourced by the scripts that run on the lent GPU machine (no internet, no venv; python3 holds torch):
# installs the wheels carried in .whl/ (made on the development machine by `make device-wheels`) into
# $SITE and puts them and the repo on PYTHONPATH. Sets PYTHON.
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'make device-wheels' on the development machine and carry .whl" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
