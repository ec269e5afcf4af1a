# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv, install trainlab into it and make Fashion-MNIST available.
VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
PYTEST_ARGS ?= -n 2 --dist loadgroup  # two xdist workers, one torch thread each (tests/conftest.py);
# loadgroup keeps the tests that share a module-scoped run on one worker (tests/experiments)

.PHONY: demo test install data browser lint format bench clean

# Keeps a torch that .venv itself can import (a CUDA build of the system Python, say), else installs
# $(TORCH); either way torch is pinned, so pip never picks one (the newest is a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml scripts/make-venv.sh
	sh scripts/make-venv.sh $(VENV) "$(TORCH)"
	@touch $@

install: $(VENV)/.installed

data: install
	@$(VENV)/bin/trainlab data info fashion-mnist >/dev/null 2>&1 || sh scripts/get-fashion-mnist.sh $(VENV)/bin/trainlab

browser:
	@sh scripts/get-chromium.sh

demo: data
	$(VENV)/bin/trainlab train --out runs/demo --overwrite

lint: install
	$(VENV)/bin/ruff check trainlab tests bench
	$(VENV)/bin/ruff format --check trainlab tests bench

format: install
	$(VENV)/bin/ruff format trainlab tests bench
	$(VENV)/bin/ruff check --fix trainlab tests bench

test: data browser lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/trainer_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info
