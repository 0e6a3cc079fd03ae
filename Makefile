# Two entry points for newcomers: `make demo` (install, then a real command in a fresh box) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench chaos

$(STAMP): pyproject.toml scripts/install.sh agent-clis/package-lock.json
	bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/agentlite doctor
	$(VENV)/bin/agentlite exec -- sh -c 'echo "hello from box $$(hostname) as uid $$(id -u)"'
	$(VENV)/bin/agentlite run --workspace $(CURDIR)/.demo-workspace "Say hello from inside the box"

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: install
	$(PY) bench/box_spawn.py
	$(PY) bench/cleanup_sweep.py

chaos: install
	$(PY) -m agentlite.chaos --trials 100
