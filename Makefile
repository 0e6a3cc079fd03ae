# Shortcuts; the README's commands are ./scripts/demo and ./scripts/test (no make needed).
.PHONY: demo test lint bench chaos chaos-turns

demo:
	./scripts/demo

test:
	./scripts/test

lint:
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench

bench:
	for b in box_spawn proxy_throughput cleanup_sweep run_overhead host_jsonl platform_overhead message_throughput ledger_overhead image_build image_spawn acp_first_update; do \
		.venv/bin/python bench/$$b.py || exit 1; done

chaos:
	.venv/bin/python -m agentlite.testing.chaos --trials 100

chaos-turns:
	.venv/bin/python -m agentlite.testing.chaos_turns --trials 50
