# Shortcuts; the README's commands are ./scripts/demo and ./scripts/test (no make needed).
.PHONY: demo test lint bench chaos

demo:
	./scripts/demo

test:
	./scripts/test

lint:
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench

bench:
	.venv/bin/python bench/box_spawn.py
	.venv/bin/python bench/cleanup_sweep.py
	.venv/bin/python bench/run_overhead.py
	.venv/bin/python bench/host_jsonl.py

chaos:
	.venv/bin/python -m agentlite.chaos --trials 100
