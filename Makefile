# Two entry points: `make demo` (the main job on the built-in default) and `make test`.
# Both build a virtual environment in .venv first. On a machine without an NVIDIA GPU,
# torch is pinned to the CPU build so pip never pulls the multi-GB CUDA wheels.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH_CPU_PIN := torch==2.13.0

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing torch from the default index"; \
		echo "" > $(VENV)/constraints.txt; \
	else \
		echo "No NVIDIA GPU: pinning $(TORCH_CPU_PIN) (CPU wheel)"; \
		echo "$(TORCH_CPU_PIN)" > $(VENV)/constraints.txt; \
		$(BIN)/pip install -q "$(TORCH_CPU_PIN)"; \
	fi
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
