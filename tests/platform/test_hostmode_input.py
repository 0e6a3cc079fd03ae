"""``agentlite host --jsonl`` with hostile input: stdin a regular file, over-long lines, duplicate
ids, bad JSON, and group names that would leave the home. A real host process, real boxes, the
real codex against the built-in model server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from agentlite.box.ownership import RecordStore
from agentlite.platform.hostmode import MAX_LINE_BYTES, read_lines
from agentlite.testing import ModelServer
from conftest import needs_codex
from test_hostmode import host

BAD_GROUPS = ["..", "../x", "a/b", "a\0b", "x" * 300, ".hidden", "-x"]


def request(request_id: Any, group: str, prompt: str = "hello") -> str:
    return json.dumps({"id": request_id, "agent": "jsonl", "group": group, "prompt": prompt}) + "\n"


async def host_from_file(
    home: Path, model: ModelServer, lines: list[str], timeout: float = 600
) -> list[dict]:
    """Run the host with stdin a regular file holding ``lines``; its output objects."""
    requests = home.parent / "requests.jsonl"
    requests.write_text("".join(lines))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["AGENTLITE_HOME"] = str(home)
    with requests.open("rb") as stdin:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentlite", "host", "--jsonl", "--base-url", model.openai_base_url,
            stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return [json.loads(line) for line in out.decode().splitlines()]


def group_entries(home: Path, agent: str) -> dict[str, list[str]]:
    """The per-group entries of a host agent's workspaces, IPC and agent-home folders (the host is
    a platform on ``<home>/host``; its layout seeds the ``main`` and ``global`` memory folders)."""
    base = home / "host" / "agents" / agent
    folders = {
        "workspaces": base / "groups",
        "ipc": base / "data" / "ipc",
        "sessions": base / "data" / "sessions",
    }
    seeded = {"main", "global"}
    return {kind: sorted(set(os.listdir(path)) - seeded) for kind, path in folders.items()}


def finals_of(out: list[dict]) -> list[dict]:
    return [o for o in out if o["type"] == "final"]


@needs_codex
async def test_a_file_on_stdin_with_bad_lines_gets_one_final_each(
    home: Path, model: ModelServer, tmp_path: Path
) -> None:
    before_outside = sorted([*os.listdir(tmp_path), "requests.jsonl"])
    lines = [request("a1", "alpha"), request("b1", "beta")]
    lines.append("{not json\n")
    long_line = '{"id": "long", "group": "alpha", "prompt": "' + "x" * (MAX_LINE_BYTES + 10) + '"}\n'
    lines.append(long_line)
    lines.append(request("a1", "beta"))  # a1 is still queued or running: refused
    lines += [request(f"bad-{n}", group) for n, group in enumerate(BAD_GROUPS)]
    lines += [request("a2", "alpha"), request("b2", "beta")]
    out = await host_from_file(home, model, lines)
    finals = finals_of(out)
    assert len(finals) == 4 + 1 + 1 + 1 + len(BAD_GROUPS)
    ok = [f["id"] for f in finals if f["status"] == "success"]
    assert sorted(ok) == ["a1", "a2", "b1", "b2"]
    errors = [f for f in finals if f["status"] == "error"]
    by_id: dict[Any, list[dict]] = {}
    for final in errors:
        by_id.setdefault(final["id"], []).append(final)
    nulls = sorted(f["error"].split(":")[0] for f in by_id.pop(None))
    too_long = f"line 4 is too long ({len(long_line) - 1} bytes or more; the limit is {MAX_LINE_BYTES} bytes)"
    assert nulls == ["invalid JSON", too_long]
    assert [f["error"] for f in by_id.pop("a1")] == ["duplicate id: request 'a1' is still running"]
    assert sorted(by_id) == sorted(f"bad-{n}" for n in range(len(BAD_GROUPS)))
    assert all("group folder" in f[0]["error"] for f in by_id.values())
    # Nothing was made for a bad group, inside the home or outside it.
    for kind, entries in group_entries(home, "jsonl").items():
        assert entries == ["alpha", "beta"], kind
    assert sorted(os.listdir(tmp_path)) == before_outside
    assert RecordStore(home).record_names() == []


@needs_codex
async def test_an_over_long_line_on_a_pipe_is_one_final_and_the_host_goes_on(
    home: Path, model: ModelServer
) -> None:
    data = request(1, "g") + "y" * (2 * MAX_LINE_BYTES) + "\n" + request(2, "g")
    out, err, returncode = await host(home, model, [data])
    assert returncode == 0, err
    finals = finals_of(out)
    assert [(f["id"], f["status"]) for f in finals if f["id"] is not None] == [(1, "success"), (2, "success")]
    assert [f["error"].split(" (")[0] for f in finals if f["id"] is None] == ["line 2 is too long"]


@needs_codex
async def test_a_hundred_requests_over_ten_groups_and_ten_invalid_lines(
    home: Path, model: ModelServer
) -> None:
    lines = [request(f"r{n}", f"g{n % 10}", f"question {n}") for n in range(100)]
    invalid = ["{bad json\n", "[]\n", '{"id": "x"}\n', request("r0", "g0"),
               request("long", "g1", "z" * (MAX_LINE_BYTES + 1)), request("up", ".."),
               request("slash", "a/b"), request("nul", "a\0b"), request("huge", "g" * 300),
               request("agent", "g1") .replace('"jsonl"', '"../x"')]  # fmt: skip
    for n, line in enumerate(invalid):
        lines.insert(5 + n * 9, line)
    out = await host_from_file(home, model, lines)
    finals = finals_of(out)
    assert len(finals) == 110
    assert sum(f["status"] == "success" for f in finals) == 100
    assert group_entries(home, "jsonl")["workspaces"] == sorted(f"g{n}" for n in range(10))
    assert RecordStore(home).record_names() == []


# -- the line reader ----------------------------------------------------------------------------


async def test_read_lines_skips_an_over_long_line_whatever_the_chunking() -> None:
    data = b"one\n" + b"x" * 50 + b"\ntwo\n" + b"y" * 30 + b"\nlast-without-newline"
    for chunk_size in (1, 3, 7, 64, 1000):
        position = 0

        async def read(_: int, size: int = chunk_size) -> bytes:
            nonlocal position
            chunk = data[position : position + size]
            position += len(chunk)
            return chunk

        got = [line async for line in read_lines(read, limit=20)]
        assert got == [b"one", 50, b"two", 30, b"last-without-newline"], chunk_size
