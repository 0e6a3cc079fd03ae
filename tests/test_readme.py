"""The README's Python examples run as written, and docs/config.md is the config models' own page.

Each ```python block of the README runs in a subprocess in a fresh folder, against the offline model
on 127.0.0.1 (``OPENAI_BASE_URL``, which the example reads) and real sandbox boxes. A block that needs
something this machine cannot give (a live chat token) starts with ``# readme-test: skip (why)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentlite.box.ownership import RecordStore
from agentlite.platform.config_doc import SECTIONS, render_config_doc
from agentlite.platform.service import load_config
from agentlite.testing import ModelServer
from conftest import needs_codex

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "config.md"
SKIP_MARK = "# readme-test: skip"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def tool_outputs(body: dict[str, Any]) -> list[Any]:
    """The JSON values among the tool results a codex request sends back to the model."""
    found = []
    for item in body.get("input", []):
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            for part in item.get("output") or []:
                with contextlib.suppress(TypeError, ValueError):
                    found.append(json.loads(part["text"]))
    return found


def test_the_readme_has_python_examples_and_few_skipped() -> None:
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no ```python block"
    assert sum(b.startswith(SKIP_MARK) for b in blocks) <= 1


@needs_codex
@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text()))))
async def test_a_readme_python_example_runs(tmp_path: Path, index: int) -> None:
    block = python_blocks(README.read_text())[index]
    if block.startswith(SKIP_MARK):
        pytest.skip(block.splitlines()[0].removeprefix(SKIP_MARK).strip(" ()") or "marked in the README")
    (tmp_path / "example.py").write_text(block)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    # Every turn of the example calls its `weather` action with a payload, as a model would.
    async with ModelServer(scenario="tool_call") as model:
        model.tool = ("mcp__agentlite__call_action", {"name": "weather", "payload": {"city": "Berlin"}})
        env.update(OPENAI_BASE_URL=model.openai_base_url, AGENTLITE_RUNTIME="sandbox")
        ran = await asyncio.to_thread(subprocess.run, [sys.executable, "example.py"], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=300)  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-4000:]
        turns = [r for r in model.requests if r.path == "/v1/responses"]
    if "weather" in block:  # the action got the payload: its answer went back to the model
        assert turns and {"city": "Berlin", "sunny": True} in tool_outputs(turns[-1].body)
        assert "success Called the tool." in ran.stdout
    boxes = tmp_path / "data" / ".boxlite"
    assert not boxes.exists() or RecordStore(boxes).record_names() == []  # no box left


def test_config_doc_is_generated_from_the_config_models() -> None:
    assert CONFIG_DOC.read_text() == render_config_doc(), (
        "docs/config.md is stale: python -m agentlite.platform.config_doc > docs/config.md"
    )
    assert "docs/config.md" in README.read_text()  # where users look, the README points to it


def test_every_config_key_has_a_description() -> None:
    missing = [f"{model.__name__}.{name}" for _, model in SECTIONS
               for name, field in model.model_fields.items() if not field.description]  # fmt: skip
    assert missing == []


def test_the_config_docs_example_is_a_valid_config(tmp_path: Path) -> None:
    example = re.search(r"^```toml\n(.*?)^```$", CONFIG_DOC.read_text(), flags=re.S | re.M)
    assert example is not None
    (tmp_path / "agentlite.toml").write_text(example.group(1))
    config = load_config(tmp_path / "agentlite.toml", env={})
    assert [a.name for a in config.agents] == ["main"] and config.agents[0].groups[0].is_main
