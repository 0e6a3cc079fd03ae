"""An ACP adapter running in a box of its own, and the host's ACP client connection to it.

Used both ways: by ``agentlite acp`` (each editor session a box) and by outbound delegation (each
peer a box). The box is made under the usual lifecycle (ownership record first, teardown bounded,
the orphan sweep for a dead host), with one host folder mounted read-write at ``/workspace/group``
and a persistent agent home; ``python -m agentlite.guest.acp_launch`` configures the adapter for the
model and becomes it, so the host speaks ACP straight to the adapter's stdio (the SDK frames it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shlex
from pathlib import Path
from typing import Any

import acp
from acp import schema

from agentlite.box.base import BoxProcess, BoxRuntime, BoxSpec, Volume
from agentlite.box.lifecycle import claim_box_name, shielded, teardown_box
from agentlite.box.network import NetworkMode, loopback_ports, model_endpoint_entries
from agentlite.box.ownership import ownership_for
from agentlite.core.box_env import ANTHROPIC_KEY_ENV, ENV_ACP_INPUT, OPENAI_KEY_ENV
from agentlite.core.errors import UnknownBackend
from agentlite.run import box_bytecode
from agentlite.run.box_run import GUEST_WORKSPACE, runner_env
from agentlite.run.guest_input import guest_runner_input
from agentlite.run.protocol import BackendConfig, RunnerInput

log = logging.getLogger("agentlite.acp")

#: The adapter's output lines may carry whole files (multimodal prompts): the SDK's own default.
_STREAM_LIMIT = 50 * 1024 * 1024
_STDERR_KEEP = 64 * 1024


def adapter_backend(backend: str, model: str | None, base_url: str | None) -> BackendConfig:
    """The backend config of the adapter for ``--backend`` (``codex``, ``claude_code``, ``acp:CMD``)."""

    if backend == "codex":
        return BackendConfig(type="acp", command=["codex-acp"], model=model, base_url=base_url,
                             api_key_env=OPENAI_KEY_ENV)  # fmt: skip
    if backend == "claude_code":
        return BackendConfig(type="acp", command=["claude-agent-acp"], model=model, base_url=base_url,
                             api_key_env=ANTHROPIC_KEY_ENV)  # fmt: skip
    if backend.startswith("acp:") and shlex.split(backend[4:]):
        return BackendConfig(type="acp", command=shlex.split(backend[4:]), model=model, base_url=base_url)
    raise UnknownBackend(backend, ("codex", "claude_code", "acp:<command>"))


class _BoxStdinTransport(asyncio.WriteTransport):
    """A box process's stdin as the write transport of an ``asyncio.StreamWriter`` (what the ACP
    SDK writes its messages to): bytes are written to the process in order by one task."""

    def __init__(self, proc: BoxProcess) -> None:
        super().__init__()
        self._proc = proc
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while (data := await self._queue.get()) is not None:
                await self._proc.write_stdin(data)
        except (OSError, RuntimeError) as exc:
            log.debug("box stdin closed: %s", exc)
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                await self._proc.close_stdin()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._queue.put_nowait(bytes(data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)

    def abort(self) -> None:
        self.close()
        self._task.cancel()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _NoFlowControl(asyncio.BaseProtocol):
    """The writer's protocol: never paused (the pump task above does the waiting)."""

    async def _drain_helper(self) -> None:
        return None


def _box_stdin_writer(proc: BoxProcess) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    return asyncio.StreamWriter(_BoxStdinTransport(proc), _NoFlowControl(), None, loop)


class AdapterBox:
    """A box running one ACP adapter, with ``folder`` at ``/workspace/group``; ``client`` answers
    the adapter's requests and notifications (an object of the SDK's ``Client`` protocol)."""

    def __init__(self, runtime: BoxRuntime, home: Path, *, agent_id: str, group: str, folder: Path,
                 agent_home: Path, backend: BackendConfig, spec: BoxSpec, client: Any) -> None:  # fmt: skip
        self.runtime = runtime
        self.home = home
        self.agent_id = agent_id
        self.group = group
        self.folder = folder
        self.agent_home = agent_home
        self.backend = backend
        self.spec = spec
        self.client = client
        self.box = ""
        self.conn: Any = None
        self.stderr_tail = bytearray()
        self._proc: BoxProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ownership = ownership_for(home)
        self._owned = False
        #: Set when the adapter's output ends (it exited, or its box went).
        self.ended = asyncio.Event()

    async def start(self, client_capabilities: schema.ClientCapabilities | None = None) -> Any:
        """Make the box, start the adapter and ``initialize`` it; returns the adapter's answer."""
        layout = self.runtime.guest_layout()
        self.agent_home.mkdir(parents=True, exist_ok=True)
        run_input = guest_runner_input(
            layout,
            RunnerInput(
                prompt="", group_folder=self.group, chat_id="acp", is_main=True, backend=self.backend
            ),
        )
        env = layout.box_env(runner_env(self.backend, single_turn=False, layout=layout))
        env[ENV_ACP_INPUT] = run_input.model_dump_json()
        base = self.spec
        allowlist = base.net_mode is NetworkMode.ALLOWLIST
        spec = dataclasses.replace(
            base,
            env={**base.env, **env},
            volumes=[
                *base.volumes,
                Volume(self.agent_home, layout.home),
                Volume(self.folder, GUEST_WORKSPACE),
            ],
            working_dir=GUEST_WORKSPACE,
            allow_net=[
                *base.allow_net,
                *(model_endpoint_entries(self.backend.base_url) if allowlist else []),
            ],
            exposed_ports=[*base.exposed_ports, *loopback_ports([self.backend.base_url])],
        )
        await asyncio.to_thread(box_bytecode.ensure)
        self.box = await claim_box_name(self.runtime, self._ownership, self.agent_id, self.group)
        self._owned = True
        try:
            await self.runtime.create(self.box, spec)
        except BaseException:
            self._ownership.unregister(self.box)
            self._owned = False
            raise
        self._proc = await self.runtime.exec(self.box, [layout.python, "-m", "agentlite.guest.acp_launch"])
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
        self._tasks = [
            asyncio.create_task(self._pump_stdout(self._proc, reader)),
            asyncio.create_task(self._pump_stderr(self._proc)),
        ]
        self._writer = _box_stdin_writer(self._proc)
        self.conn = acp.connect_to_agent(self.client, self._writer, reader)
        return await self.conn.initialize(
            protocol_version=acp.PROTOCOL_VERSION,
            client_capabilities=client_capabilities or schema.ClientCapabilities(),
        )

    async def close(self) -> None:
        """Remove the box and its record, whatever state it is in (bounded, see _lifecycle)."""
        if not self._owned:
            return
        self._owned = False
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
        await shielded(teardown_box(self.runtime, self._ownership, self.box, self._proc))
        if self._writer is not None:
            self._writer.close()  # an unclosed writer complains when collected after its loop
        for task in self._tasks:
            task.cancel()

    async def _pump_stdout(self, proc: BoxProcess, reader: asyncio.StreamReader) -> None:
        try:
            async for line in proc.stdout_lines():
                reader.feed_data(line)
        finally:
            reader.feed_eof()
            self.ended.set()

    async def _pump_stderr(self, proc: BoxProcess) -> None:
        async for line in proc.stderr_lines():
            self.stderr_tail += line
            del self.stderr_tail[:-_STDERR_KEEP]
            log.debug("adapter[%s]: %s", self.box, line.decode(errors="replace").rstrip())

    def failure_text(self, what: str, exc: BaseException) -> str:
        tail = bytes(self.stderr_tail[-600:]).decode(errors="replace").strip()
        return f"{what}: {exc}" + (f" (adapter stderr: {tail})" if tail else "")
