# Two entry points: `make demo` (end-to-end refinement on the shipped demo model) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on disk; any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m magicboost_core.cli demo --out output

# pytest exits 5 when it collects no tests: that is a failure, never a silent pass.
test: $(STAMP)
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/render.py
	$(PY) benchmarks/unet.py
	$(PY) benchmarks/refine.py

# GPU machine check (renderer parity, UNet precision, full-size refinement, rasterizer): writes gpu_check.md;
# without CUDA it says so and runs the CPU parts (tests/test_gpu_check.py runs them inside `make test`).
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --out gpu_check.md

# The lent GPU machine has no internet and no venv: download what it lacks here (cp312 manylinux wheels into
# .whl/, git-ignored), carry .whl, and run `bash benchmarks/gpu_check_device.sh` there (README, Tests).
DEVICE_PY ?= 3.12
.PHONY: device-wheels
device-wheels: $(STAMP)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(DEVICE_PY) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/device-wheels.txt

clean:
	rm -rf $(VENV) output .pytest_cache
