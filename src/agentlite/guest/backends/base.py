"""The interface every backend implements, and what backends share.

A backend turns one prompt into one turn of a real agent CLI. It emits events through ``emit`` as
they happen (``state``, ``sdk_message``, ``usage``) and exactly one ``result`` for the turn, only
once the agent has really finished it. A failed turn raises :class:`TurnFailed` instead, and the
runner turns that into one ``error`` event. Events are the plain dicts of :mod:`agentlite.run.wire`:
this runs in the box, where pydantic is not imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from agentlite.core.box_env import ANTHROPIC_KEY_ENV
from agentlite.core.errors import RunError
from agentlite.guest.runner._input import BackendSettings, TurnInput
from agentlite.run.wire import Event

Emit = Callable[[Event], None]
#: The in-box MCP server the host adds to every run (:mod:`agentlite.guest.mcp_server`); the backend waits
#: for it before the agent's first model call, so its tools are there from the start.
BOX_MCP_SERVER = "agentlite"
#: Seconds a CLI waits for an MCP server to answer at start-up (ours answers in well under 1 s).
MCP_STARTUP_TIMEOUT = 30.0


class TurnFailed(RunError):
    """The agent failed the turn; the message names the cause (exit code, API error, ...)."""


class Backend(Protocol):
    """One agent inside the box, kept across the turns of a run.

    Plain blocking calls: the runner does one thing at a time (a turn, or waiting for the next
    one), so codex and claude need no event loop; only the ACP backend runs one, inside itself.
    """

    def run_turn(self, prompt: str, session_id: str | None) -> str | None:
        """Run one turn; emit its events and one result. Returns the session id to resume with."""
        ...

    def close(self) -> None:
        """Stop the agent process, if one is kept between turns."""
        ...


class BackendContext:
    """Where a backend works inside the box and the settings from the runner input."""

    def __init__(self, run_input: TurnInput, emit: Emit, workspace: Path, home: Path) -> None:
        self.input = run_input
        self.config: BackendSettings = run_input.backend
        self.emit = emit
        self.workspace = workspace
        self.home = home

    def api_key(self) -> str:
        """The API key from the configured variable; a placeholder for keyless local endpoints."""
        return os.environ.get(self.config.key_env(), "") or "agentlite-no-key"

    def codex_home(self) -> Path:
        # Never under /tmp: codex refuses to create its helper binaries there.
        return self.home / ".codex"

    def claude_env(self) -> dict[str, str]:
        env = {
            ANTHROPIC_KEY_ENV: self.api_key(),
            "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(self.config.max_retries),
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            # The box is the sandbox: Claude Code allows bypassing its permissions as root only here.
            "IS_SANDBOX": "1",
            # Connect the MCP servers before the first model call, however the CLI defaults.
            "MCP_CONNECTION_NONBLOCKING": "0",
            "MCP_TIMEOUT": str(int(MCP_STARTUP_TIMEOUT * 1000)),
        }
        if self.config.base_url:
            # Claude appends /v1/messages itself; a base URL given OpenAI-style (ending in /v1) works too.
            env["ANTHROPIC_BASE_URL"] = self.config.base_url.rstrip("/").removesuffix("/v1")
        return env

    def write_codex_config(self) -> Path:
        """Write ``$CODEX_HOME/config.toml``: our model provider, bounded retries, nothing phoning home."""
        home = self.codex_home()
        home.mkdir(parents=True, exist_ok=True)
        q = _toml_string
        lines = []
        if self.config.model:
            lines.append(f"model = {q(self.config.model)}")
        lines += [
            'model_provider = "agentlite"',
            "check_for_update_on_startup = false",
            "",
            "[model_providers.agentlite]",
            'name = "agentlite"',
            f"base_url = {q(self.config.base_url or 'https://api.openai.com/v1')}",
            f"env_key = {q(self.config.key_env())}",
            'wire_api = "responses"',
            f"request_max_retries = {self.config.max_retries}",
            f"stream_max_retries = {self.config.max_retries}",
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[features]",
            "plugins = false",
            "unbounded_connection_retries = false",
            "",
            f"[projects.{q(str(self.workspace))}]",
            'trust_level = "trusted"',
        ]
        for name in sorted(self.input.mcp_servers):
            server = self.input.mcp_servers[name]
            lines += ["", f"[mcp_servers.{q(name)}]", f"command = {q(server.command)}"]
            if server.args:
                lines.append("args = [" + ", ".join(q(a) for a in server.args) + "]")
            if name == BOX_MCP_SERVER:
                # codex builds the model's tool list without waiting for MCP servers, unless one is
                # required: then the first model call already has our tools (send_message, ...).
                lines += ["required = true", f"startup_timeout_sec = {MCP_STARTUP_TIMEOUT:g}"]
            if server.env:
                lines += ["", f"[mcp_servers.{q(name)}.env]"]
                lines += [f"{q(k)} = {q(v)}" for k, v in sorted(server.env.items())]
        path = home / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def codex_env(self) -> dict[str, str]:
        return {"CODEX_HOME": str(self.codex_home()), self.config.key_env(): self.api_key()}


def _toml_string(value: str) -> str:
    import json

    return json.dumps(value)  # a JSON string is a valid TOML basic string


def json_lines(stream: IO[bytes], label: str) -> Iterator[dict[str, Any]]:
    """The JSON objects a CLI prints one per line, as they come; blank and unparsable lines are
    skipped (logged)."""
    for raw in stream:
        line = raw.decode(errors="replace").strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            print(f"[agent-runner] Failed to parse {label} JSON line: {line[:200]}", file=sys.stderr)
            continue
        if isinstance(event, dict):
            yield event


class StderrTail:
    """Reads a process's stderr on a thread (so it never fills its pipe), keeping the last 64 KiB."""

    LIMIT = 65536

    def __init__(self, stream: IO[bytes]) -> None:
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        while chunk := stream.read1(self.LIMIT):  # type: ignore[attr-defined]
            self._data += chunk
            del self._data[: -self.LIMIT]

    def text(self, wait: float = 5.0) -> str:
        """What was kept, once the process closed its stderr (or after ``wait`` seconds, when a
        child it left behind still holds the pipe)."""
        self._thread.join(wait)
        return bytes(self._data).decode(errors="replace")


def start_cli(argv: list[str], context: BackendContext, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The agent CLI with all three standard streams piped, in the workspace."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=context.workspace, env={**os.environ, **env})  # fmt: skip
    except OSError as exc:
        raise TurnFailed(f"could not start `{argv[0]}`: {exc}") from exc


def tail(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]
