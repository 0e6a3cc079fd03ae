"""The guest layout: what a box's runner and MCP server run with, and how the guest reaches the host.

The BoxLite case runs the real run layer and real BoxLite (create and remove work without a VM);
only its ``exec`` is recorded instead of booting. The image-mode sandbox turn is the closest proof of
the VM path on a machine without hardware virtualization: the same layout, a real agent turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from tests.oci import make_oci_layout

from agentlite.box import sandbox
from agentlite.box.base import BoxRuntime, BoxSpec
from agentlite.box.boxlite import BoxliteRuntime
from agentlite.box.guest_layout import (
    BOXLITE_HOST_IP,
    GUEST_HOME,
    GUEST_PATH,
    GUEST_PYTHON,
    GUEST_UID,
    GuestLayout,
    host_layout,
    image_layout,
)
from agentlite.box.probe import boxlite_checks
from agentlite.box.sandbox import SandboxRuntime
from agentlite.run.box_run import run_agent
from agentlite.run.guest_input import guest_runner_input
from agentlite.run.protocol import ActionsAuth, BackendConfig, McpServer, RunnerInput
from agentlite.run.turn import GroupKey, run_turn

ACTIONS = "http://127.0.0.1:4567"
MODEL = "http://localhost:9999/v1"


def turn_input() -> RunnerInput:
    mcp_env = {"AGENTLITE_ACTIONS_URL": ACTIONS, "AGENTLITE_ACTIONS_TOKEN": "per-run-token"}
    return RunnerInput(
        prompt="hi",
        group_folder="main",
        chat_id="c1",
        is_main=True,
        backend=BackendConfig(type="codex", base_url=MODEL),
        mcp_servers={
            "agentlite": McpServer(
                command=sys.executable, args=["-m", "agentlite.guest.mcp_server"], env=mcp_env
            ),
            "other": McpServer(command="/usr/bin/node", args=["server.js"]),
        },
        actions_auth=ActionsAuth(url=ACTIONS, token="per-run-token"),
    )


class _Exited:
    """A command that read its stdin and exited 0 without output (no VM boots here)."""

    def __init__(self) -> None:
        self.stdin = b""

    async def _nothing(self) -> AsyncIterator[bytes]:
        for line in ():
            yield line

    def stdout_lines(self) -> AsyncIterator[bytes]:
        return self._nothing()

    def stderr_lines(self) -> AsyncIterator[bytes]:
        return self._nothing()

    async def write_stdin(self, data: bytes) -> None:
        self.stdin += data

    async def close_stdin(self) -> None:
        pass

    async def wait(self) -> int:
        return 0

    async def kill(self) -> None:
        pass


class RecordingBoxlite(BoxliteRuntime):
    """The real adapter (real BoxLite create/remove), with exec recorded instead of booting."""

    specs: list[BoxSpec]
    execs: list[tuple[list[str], _Exited]]

    async def create(self, name: str, spec: BoxSpec):  # type: ignore[no-untyped-def]
        self.specs.append(spec)
        return await super().create(name, spec)

    async def exec(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> _Exited:  # type: ignore[override]
        assert await self.get(name) is not None  # the box really exists in BoxLite
        process = _Exited()
        self.execs.append((list(argv), process))
        return process


async def test_a_boxlite_turn_runs_the_image_python_and_reaches_the_host_at_boxlites_address(
    tmp_path: Path,
) -> None:
    runtime = RecordingBoxlite(tmp_path / "home", rootfs_path=make_oci_layout(tmp_path / "oci"))
    runtime.specs, runtime.execs = [], []
    await run_agent(runtime, tmp_path / "home", turn_input(), workspace=tmp_path / "ws", single_turn=True,
                    timeout=60, idle_timeout=5)  # fmt: skip
    [(argv, process)] = runtime.execs
    assert argv == [GUEST_PYTHON, "-m", "agentlite.guest.runner"]
    env = runtime.specs[0].env
    assert env["PATH"].startswith(GUEST_PATH + ":") and env["HOME"] == "/home/agent"
    sent = RunnerInput.model_validate_json(process.stdin)
    ours, other = sent.mcp_servers["agentlite"], sent.mcp_servers["other"]
    assert (ours.command, ours.args) == (GUEST_PYTHON, ["-m", "agentlite.guest.mcp_server"])
    assert ours.env == {
        "AGENTLITE_ACTIONS_URL": f"http://{BOXLITE_HOST_IP}:4567",
        "AGENTLITE_ACTIONS_TOKEN": "per-run-token",
    }
    assert other.command == "/usr/bin/node"  # only the host's own Python is swapped
    assert sent.actions_auth == ActionsAuth(url=f"http://{BOXLITE_HOST_IP}:4567", token="per-run-token")
    assert sent.backend.base_url == f"http://{BOXLITE_HOST_IP}:9999/v1"
    assert await runtime.list() == []
    await runtime.aclose()


def test_host_root_sandbox_keeps_the_host_python_and_urls(tmp_path: Path) -> None:
    layout = SandboxRuntime(tmp_path / "home").guest_layout()
    assert layout == host_layout()
    sent = guest_runner_input(layout, turn_input())
    assert sent == turn_input()
    assert layout.runner_argv() == [sys.executable, "-m", "agentlite.guest.runner"]
    # The host's own user, the sandbox's agent home, the host's system PATH folders.
    runtime = SandboxRuntime(tmp_path / "home")
    assert (layout.uid, layout.home, layout.base_path) == (
        runtime.box_uid_inside,
        sandbox.BOX_HOME,
        sandbox.BASE_PATH,
    )


def test_image_sandbox_uses_the_image_python_and_keeps_loopback_urls(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("agent:x:1000:1000::/home/agent:/bin/sh\n")
    layout = SandboxRuntime(tmp_path / "home", rootfs=rootfs).guest_layout()
    sent = guest_runner_input(layout, turn_input())
    assert layout.runner_argv()[0] == GUEST_PYTHON and sent.mcp_servers["agentlite"].command == GUEST_PYTHON
    # The sandbox bridges the host's loopback ports a run needs, so the URLs stay as they are.
    assert sent.actions_auth == turn_input().actions_auth and sent.backend.base_url == MODEL
    env = layout.box_env({"PATH": "/host/clis:/usr/bin", "A": "1"})
    assert env["PATH"] == GUEST_PATH + ":/host/clis" and env["A"] == "1"
    assert (layout.uid, layout.home) == (GUEST_UID, GUEST_HOME) == (sandbox.IMAGE_UID, GUEST_HOME)
    # BoxLite boxes run the same image: the same layout, but the host's loopback elsewhere.
    boxlite = image_layout(host_loopback=BOXLITE_HOST_IP)
    assert (boxlite.python, boxlite.uid, boxlite.home, dict(boxlite.env)) == (
        layout.python, layout.uid, layout.home, dict(layout.env))  # fmt: skip


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/x?y=1", "http://10.0.0.9:8080/x?y=1"),
        ("https://localhost/v1", "https://10.0.0.9/v1"),
        ("http://user:pw@127.0.0.1:1/", "http://user:pw@10.0.0.9:1/"),
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_guest_url_moves_only_loopback_urls(url: str, expected: str) -> None:
    assert GuestLayout(python="/p", host_loopback="10.0.0.9").guest_url(url) == expected


# -- the same layout through a real agent turn, in image-mode sandbox ------------------------------


class _Sessions:
    """A session store in memory (the platform's is the agent's SQLite store)."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], str] = {}

    def get_session(self, folder: str, backend_type: str) -> str | None:
        return self.saved.get((folder, backend_type))

    def set_session(self, folder: str, backend_type: str, session_id: str) -> None:
        self.saved[(folder, backend_type)] = session_id


IMAGE_HOME = Path(os.environ.get("AGENTLITE_TEST_IMAGE_HOME", "/var/tmp/agentlite-test-image"))
_why_not_image = []
if shutil.which("mmdebstrap") is None:
    _why_not_image.append("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
if os.geteuid() != 0:
    _why_not_image.append("building the image needs root here")
if not shutil.which("bwrap"):
    _why_not_image.append("bubblewrap is not installed")


async def _mcp_turn(runtime: BoxRuntime, tmp_path: Path) -> None:
    """A real codex turn whose first model call uses the in-box MCP server's send_message, through
    the turn pipeline, as the platform and host mode run a turn."""
    from agentlite.testing import ModelServer

    ipc = tmp_path / "ipc"
    async with ModelServer(scenario="tool_call") as server:
        server.tool = ("mcp__agentlite__send_message", {"text": "from the image's MCP server"})
        mcp_env = {"AGENTLITE_CHAT_JID": "c1", "AGENTLITE_GROUP_FOLDER": "main", "AGENTLITE_IS_MAIN": "1",
                   "AGENTLITE_IPC_DIR": "/workspace/ipc"}  # fmt: skip
        run_input = turn_input().model_copy(
            update={
                "backend": BackendConfig(
                    type="codex", base_url=server.openai_base_url, model="m", max_retries=0
                ),
                "mcp_servers": {
                    "agentlite": McpServer(
                        command=sys.executable, args=["-m", "agentlite.guest.mcp_server"], env=mcp_env
                    )
                },
                "actions_auth": None,
            }
        )
        sessions = _Sessions()
        result = await run_turn(runtime, tmp_path / "home", GroupKey("image-test", "main"), run_input, sessions,
                                workspace=tmp_path / "ws", ipc_dir=ipc, single_turn=True, timeout=300,
                                idle_timeout=5)  # fmt: skip
    logs = sorted((tmp_path / "home" / "logs").glob("*.log"))
    log = logs[-1].read_text()[-3000:] if logs else ""
    assert result.status == "success", (result, log)
    assert result.session_id and sessions.saved == {("main", "codex"): result.session_id}
    assert result.timings is not None and result.timings.run_s > 0
    sent = [json.loads(p.read_text()) for p in sorted((ipc / "messages").glob("*.json"))]
    assert [m["text"] for m in sent] == ["from the image's MCP server"], log
    assert await runtime.list() == []


def _image_layout_dir() -> Path:
    from agentlite.image.builder import build_image

    return build_image(IMAGE_HOME).layout


@pytest.mark.skipif(bool(_why_not_image), reason="; ".join(_why_not_image) or "-")
@pytest.mark.timeout(900)
async def test_an_mcp_turn_in_image_mode_runs_through_the_guest_layout(tmp_path: Path) -> None:
    """The closest proof of the VM path here: the same layout (the image's Python for the runner and
    the MCP server, the image's PATH, home and user) in an image-mode sandbox box; the host's
    Python path does not exist in the image."""
    from agentlite.image.builder import image_rootfs_for_sandbox

    await asyncio.to_thread(_image_layout_dir)
    await _mcp_turn(SandboxRuntime(tmp_path / "home", rootfs=image_rootfs_for_sandbox(IMAGE_HOME)), tmp_path)


_vm_missing = [c for c in boxlite_checks() if not c.ok]


@pytest.mark.vm
@pytest.mark.skipif(
    bool(_vm_missing),
    reason="BoxLite VMs cannot boot here: " + "; ".join(f"{c.name}: {c.detail}" for c in _vm_missing),
)
@pytest.mark.skipif(bool(_why_not_image), reason="; ".join(_why_not_image) or "-")
@pytest.mark.timeout(900)
async def test_an_mcp_turn_in_a_boxlite_vm(tmp_path: Path) -> None:
    """The same turn in a booted VM: model and MCP traffic reach the host at BoxLite's address."""
    layout = await asyncio.to_thread(_image_layout_dir)
    runtime = BoxliteRuntime(tmp_path / "home", rootfs_path=layout)
    try:
        await _mcp_turn(runtime, tmp_path)
    finally:
        await runtime.aclose()
