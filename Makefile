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

clean:
	rm -rf $(VENV) output .pytest_cache
