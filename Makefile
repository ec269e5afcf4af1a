# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv, install trainlab into it and make Fashion-MNIST available.
VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test install data lint format bench clean

$(VENV)/.installed: pyproject.toml
	@# Reuse a torch that the system Python already has (a CUDA build, say); else pin the CPU build.
	@if python3 -c "import torch" 2>/dev/null; then \
		python3 -m venv --system-site-packages $(VENV); \
	else \
		python3 -m venv $(VENV) && $(PY) -m pip install -q "$(TORCH)"; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

data: install
	@$(VENV)/bin/trainlab data info fashion-mnist >/dev/null 2>&1 || sh scripts/get-fashion-mnist.sh $(VENV)/bin/trainlab

demo: data
	$(VENV)/bin/trainlab train --out runs/demo

lint: install
	$(VENV)/bin/ruff check trainlab tests bench
	$(VENV)/bin/ruff format --check trainlab tests bench

format: install
	$(VENV)/bin/ruff format trainlab tests bench
	$(VENV)/bin/ruff check --fix trainlab tests bench

test: data lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/trainer_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info
