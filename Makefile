# flowgpu: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,images,etl

.PHONY: demo test test-cpu test-sim gpu-check bench soak lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flowgpu demo

test: test-cpu test-sim

test-cpu: $(STAMP)
	$(PY) -m pytest -q

# The CUDA simulator must be on before numba is imported: its own process.
test-sim: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q tests/sim

# On a machine with an NVIDIA GPU (install the gpu-cu12 or gpu-cu13 extra):
# the real-GPU tests, then the GPU benchmarks, with a short table last.
gpu-check: $(STAMP)
	$(PY) -m pytest -q --real-gpu tests/sim tests/gpu
	$(PY) benchmarks/gpu_check.py

# Every CPU benchmark, each against its peers in one run (tables for BENCHMARKS.md).
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/overhead.py --repeat 5
	$(PY) benchmarks/channel_bench.py
	$(PY) benchmarks/elementwise.py
	$(PY) benchmarks/stencil.py
	$(PY) benchmarks/images.py
	$(PY) benchmarks/flights.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/metrics_overhead.py

# 10,000 randomised fault-injection runs (tests/faultlib.py), then 5,000 with the GIL
# handed over every 10 us (races show up sooner); exits 1 on any bad run.
soak: $(STAMP)
	$(PY) benchmarks/soak.py --runs 10000
	$(PY) benchmarks/soak.py --runs 5000 --seed 10000 --switch-interval 1e-5

lint: $(STAMP)
	$(VENV)/bin/ruff check flowgpu kernels graphs tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info demo-out
