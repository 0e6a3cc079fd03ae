"""The host side of an agent run: the runner in a fresh box, its events, and one outcome.

On top of :func:`agentlite.box.lifecycle.run_in_box` (ownership record, teardown on every path):
frames are parsed from the runner's stdout as they stream; every parsed event re-arms the hard
timeout (stderr does not); the output callback sees events one at a time, in order; stdout and
stderr are kept for the run log up to a cap; and the end is classified as the reference does:
``exit``, ``error_exit``, ``timeout`` or ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentlite.box.base import BoxRuntime, BoxSpec, Volume
from agentlite.box.guest_layout import GuestLayout, host_layout
from agentlite.box.lifecycle import Deadline, run_in_box
from agentlite.box.network import HOST_MODE_WARNING, NetworkMode, loopback_ports, model_endpoint_entries
from agentlite.core.agent_clis import agent_clis_bin
from agentlite.core.box_env import ENV_IPC_INPUT, ENV_SINGLE_TURN, ENV_WORKSPACE
from agentlite.core.errors import RunError, RunTimeout
from agentlite.run import box_bytecode
from agentlite.run.guest_input import guest_runner_input
from agentlite.run.protocol import (
    BackendConfig,
    ErrorEvent,
    Event,
    FrameParser,
    ResultEvent,
    RunnerInput,
    StateEvent,
    session_id_of,
)
from agentlite.run.runner_input import input_folder, request_close

log = logging.getLogger("agentlite.run")

EventHandler = Callable[[Event], Awaitable[None] | None]
DEFAULT_TIMEOUT = 30 * 60.0
DEFAULT_IDLE_TIMEOUT = 30 * 60.0
DEFAULT_MAX_OUTPUT = 10 * 1024 * 1024
#: The hard timeout is never shorter than the idle timeout plus this, so an idle box is closed
#: politely (``_close``) before it is killed.
IDLE_GRACE = 30.0
GUEST_WORKSPACE = "/workspace/group"
GUEST_IPC = "/workspace/ipc"


@dataclass
class RunOutcome:
    """How a run ended: ``status`` plus the turn's result or error and the session to resume."""

    status: Literal["success", "error"]
    reason: Literal["exit", "error_exit", "timeout", "idle_timeout"]
    result: str | None
    error: str | None
    session_id: str | None
    exit_code: int
    box: str
    log_path: Path | None = None
    #: The hard timeout in seconds, when that is what ended the run (``reason`` ``timeout``).
    timeout: float | None = None

    def raise_for_status(self) -> RunOutcome:
        """This outcome if the run succeeded; else :class:`RunTimeout` (the hard timeout ended it)
        or :class:`RunError` with the run's error, for a caller that wants an exception."""
        if self.status == "success":
            return self
        if self.reason == "timeout" and self.timeout is not None:
            raise RunTimeout(self.box, self.timeout)
        raise RunError(self.error or f"the run in box `{self.box}` failed (exit {self.exit_code})")


@dataclass
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk


def runner_env(
    backend: BackendConfig, *, single_turn: bool, layout: GuestLayout | None = None
) -> dict[str, str]:
    """The environment the in-box runner starts with: where its CLIs, IPC and workspace are, and
    the one API key this backend needs (from the host's environment), never any other secret.
    ``layout`` is the box's (:meth:`BoxRuntime.guest_layout`; default a host-root box's)."""
    layout = layout or host_layout()
    env = {
        "PATH": ":".join(p for p in (str(agent_clis_bin() or ""), layout.base_path) if p),
        ENV_IPC_INPUT: f"{GUEST_IPC}/input",
        ENV_WORKSPACE: GUEST_WORKSPACE,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if single_turn:
        env[ENV_SINGLE_TURN] = "1"
    key_env = backend.key_env()
    if os.environ.get(key_env):
        env[key_env] = os.environ[key_env]
    return env


async def run_agent(
    runtime: BoxRuntime,
    home: Path,
    run_input: RunnerInput,
    *,
    workspace: Path,
    ipc_dir: Path | None = None,
    agent_home: Path | None = None,
    on_event: EventHandler | None = None,
    agent_id: str = "cli",
    group: str = "main",
    timeout: float = DEFAULT_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    single_turn: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    spec: BoxSpec | None = None,
    on_box: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Run the in-box runner for ``run_input`` in a fresh box and return how it ended.

    ``on_event`` gets every event, one call at a time, in order; if it raises, the run is killed
    and the exception re-raised once the box is gone. ``single_turn`` ends the run after its first
    turn; otherwise the runner waits for follow-ups (:func:`write_follow_up`) and ends
    ``idle_timeout`` seconds after going idle, or at :func:`request_close`.
    """
    workspace = workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    ipc_dir = (ipc_dir or home / "ipc" / agent_id / _safe(group)).resolve()
    input_folder(ipc_dir).close()
    # The agents' own state (codex threads, Claude sessions) outlives the box, so a later run of the
    # group can resume its session.
    agent_home = (agent_home or home / "agent-homes" / agent_id / _safe(group)).resolve()
    agent_home.mkdir(parents=True, exist_ok=True)
    # The box's own Python, environment and view of the host (a VM reaches the host elsewhere).
    layout = runtime.guest_layout()
    env = layout.box_env(runner_env(run_input.backend, single_turn=single_turn, layout=layout))
    guest_input = guest_runner_input(layout, run_input)
    base = spec or BoxSpec()
    # In allowlist mode the run's own remote model endpoint is always allowed (its host and port).
    allowlist = base.net_mode is NetworkMode.ALLOWLIST
    model_allow = model_endpoint_entries(run_input.backend.base_url) if allowlist else []
    box_spec = dataclasses.replace(
        base,
        env={**base.env, **env},
        volumes=[
            *base.volumes,
            Volume(agent_home, layout.home),
            Volume(workspace, GUEST_WORKSPACE),
            Volume(ipc_dir, GUEST_IPC),
        ],
        working_dir=GUEST_WORKSPACE,
        allow_net=[*base.allow_net, *model_allow],
        # The run's own endpoints on the host's loopback reach the box at the same URLs.
        exposed_ports=[*base.exposed_ports, *loopback_ports(_run_endpoints(run_input))],
    )
    if box_spec.net_mode is NetworkMode.HOST:
        log.warning("%s (agent=%s group=%s)", HOST_MODE_WARNING, agent_id, group)
    hard_timeout = max(timeout, idle_timeout + IDLE_GRACE)
    deadline = Deadline(hard_timeout)
    parser = FrameParser()
    stdout, stderr = _Capture(max_output), _Capture(max_output)
    last_state: str | None = None
    session_id = run_input.session_id
    result: str | None = None
    error: str | None = None
    errors_delivered = 0
    idle_timer: asyncio.TimerHandle | None = None
    loop = asyncio.get_running_loop()

    async def deliver(event: Event) -> None:
        nonlocal errors_delivered
        errors_delivered += isinstance(event, ErrorEvent)
        if on_event is not None:
            outcome = on_event(event)
            if inspect.isawaitable(outcome):
                await outcome

    async def on_stdout(line: bytes) -> None:
        nonlocal last_state, session_id, result, error, idle_timer
        stdout.add(line)
        for event in parser.feed(line.decode(errors="replace")):
            deadline.rearm()
            session_id = session_id_of(event) or session_id
            if isinstance(event, StateEvent):
                last_state = event.state
                if idle_timer is not None:
                    idle_timer.cancel()
                    idle_timer = None
                if event.state == "idle":
                    idle_timer = loop.call_later(idle_timeout, request_close, ipc_dir)
            elif isinstance(event, ResultEvent):
                result, error = event.result, None
            elif isinstance(event, ErrorEvent):
                error = event.error
            await deliver(event)

    started = time.time()
    box_name = "?"
    outcome: RunOutcome | None = None

    def remember_box(name: str) -> None:
        nonlocal box_name
        box_name = name
        if on_box is not None:
            on_box(name)

    try:
        await asyncio.to_thread(box_bytecode.ensure)  # once per process: a box cannot cache it
        command = await run_in_box(
            runtime,
            home,
            layout.runner_argv(),
            agent_id=agent_id,
            group=group,
            spec=box_spec,
            stdin=guest_input.model_dump_json().encode(),
            on_stdout=on_stdout,
            on_stderr=stderr.add,
            deadline=deadline,
            on_box=remember_box,
        )
        oom_mib = box_spec.memory_mib if runtime.out_of_memory(command.box) else None
        outcome = _classify(command.exit_code, command.timed_out, last_state, result, error, session_id,
                            bytes(stderr.data), hard_timeout, command.box, oom_mib=oom_mib)  # fmt: skip
        if oom_mib is not None and not errors_delivered:
            await deliver(ErrorEvent(error=outcome.error or "", new_session_id=outcome.session_id))
        await deliver(StateEvent(state="stopped", reason=outcome.reason, exit_code=outcome.exit_code,
                                 new_session_id=outcome.session_id))  # fmt: skip
        return outcome
    finally:
        if idle_timer is not None:
            idle_timer.cancel()
        log_path = _write_run_log(home, box_name, run_input, started, outcome, stdout, stderr, box_spec,
                                  runtime.unenforced_limits())  # fmt: skip
        if outcome is not None:
            outcome.log_path = log_path


def _run_endpoints(run_input: RunnerInput) -> list[str | None]:
    actions = run_input.actions_auth.url if run_input.actions_auth is not None else None
    return [run_input.backend.base_url, actions]


def _network_note(spec: BoxSpec) -> str:
    mode = spec.net_mode
    if mode is NetworkMode.HOST:
        return "host: " + HOST_MODE_WARNING.split(": ", 1)[1]
    if mode is NetworkMode.ALLOWLIST:
        return f"allowlist: {', '.join(str(e) for e in spec.allow_entries) or '(empty)'}"
    return str(mode)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _classify(exit_code: int, timed_out: bool, last_state: str | None, result: str | None, error: str | None,
              session_id: str | None, stderr: bytes, timeout: float, box: str,
              oom_mib: int | None = None) -> RunOutcome:  # fmt: skip
    """``oom_mib``: the box's memory limit when the kernel killed one of its processes for it."""
    if timed_out and last_state == "idle":
        return RunOutcome("success", "idle_timeout", result, None, session_id, exit_code, box)
    if timed_out:
        return RunOutcome(
            "error",
            "timeout",
            None,
            f"Box timed out after {timeout:g} s",
            session_id,
            exit_code,
            box,
            timeout=timeout,
        )
    if oom_mib is not None:  # a result reached after the kernel killed part of the box is not trusted
        return RunOutcome("error", "error_exit", None, f"box ran out of memory ({oom_mib} MiB)", session_id,
                          exit_code, box)  # fmt: skip
    if exit_code != 0:
        text = error or f"Box exited with code {exit_code}: {stderr.decode(errors='replace')[-200:].strip()}"
        return RunOutcome("error", "error_exit", None, text, session_id, exit_code, box)
    if error is not None:
        return RunOutcome("error", "exit", None, error, session_id, exit_code, box)
    return RunOutcome("success", "exit", result, None, session_id, exit_code, box)


def _write_run_log(home: Path, box: str, run_input: RunnerInput, started: float, outcome: RunOutcome | None,
                   stdout: _Capture, stderr: _Capture, spec: BoxSpec | None = None,
                   limits_not_enforced: dict[str, str] | None = None) -> Path | None:  # fmt: skip
    """One log file per run: what ran, how it ended, which box limits did not hold here (first, so
    it is read before the output), and its (capped) output."""
    folder = home / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{box}.log"
        header = {
            "box": box,
            "limits_not_enforced": limits_not_enforced or {},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_s": round(time.time() - started, 3),
            "backend": run_input.backend.model_dump(exclude_none=True),
            "group_folder": run_input.group_folder,
            "network": None if spec is None else _network_note(spec),
            "outcome": None
            if outcome is None
            else {k: v for k, v in vars(outcome).items() if k != "log_path"},
            "stdout_truncated": stdout.truncated,
            "stderr_truncated": stderr.truncated,
        }
        text = (
            json.dumps(header, indent=2, default=str)
            + "\n\n=== stdout ===\n" + stdout.data.decode(errors="replace")
            + "\n=== stderr ===\n" + stderr.data.decode(errors="replace")
        )  # fmt: skip
        path.write_text(text)
        return path
    except OSError as exc:
        log.warning("could not write run log box=%s error=%s", box, exc)
        return None
