"""Shared fixtures: a fresh home per test, the real sandbox runtime, and real host processes."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agentlite.box.probe import sandbox_checks
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.agent_clis import agent_clis_bin
from agentlite.testing import ModelServer
from agentlite.testing.chaos import host_argv

_missing = [c for c in sandbox_checks() if not c.ok]
SANDBOX_REASON = "; ".join(f"{c.name}: {c.detail} (fix: {c.fix})" for c in _missing)
needs_sandbox = pytest.mark.skipif(bool(_missing), reason=f"sandbox runtime unavailable: {SANDBOX_REASON}")


def needs_agent_clis(*names: str) -> pytest.MarkDecorator:
    """Skip unless every named agent CLI is installed in agent-clis/."""
    bin_dir = agent_clis_bin()
    missing = [n for n in names if bin_dir is None or not (bin_dir / n).exists()]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"agent CLI {', '.join(missing)} not installed in agent-clis/ (run scripts/install.sh)",
    )


needs_codex = needs_agent_clis("codex")


def _described(condition: Callable[[], Any], what: str | None) -> str:
    if what is not None:
        return what
    try:  # the condition's own source line says what never happened
        return inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return repr(condition)


async def until(condition: Callable[[], Any], what: str | None = None, timeout: float = 120,
                interval: float = 0.05) -> Any:  # fmt: skip
    """Poll ``condition`` (a function, or one returning an awaitable) until it gives a true value,
    and return that value; fail naming ``what`` (default: the condition's source) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_described(condition, what)}")
        await asyncio.sleep(interval)


def until_sync(condition: Callable[[], Any], what: str | None = None, timeout: float = 120,
               interval: float = 0.05) -> Any:  # fmt: skip
    """:func:`until` for tests without an event loop: blocks between polls."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_described(condition, what)}")
        time.sleep(interval)
    return value


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    """The offline model server answering every call with text (files may override it)."""
    async with ModelServer(scenario="text") as server:
        yield server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def sandbox(home: Path) -> Iterator[SandboxRuntime]:
    if _missing:
        pytest.skip(f"sandbox runtime unavailable: {SANDBOX_REASON}")
    yield SandboxRuntime(home)
    # No test may leave a running box behind.
    import asyncio

    leftover = [b for b in asyncio.run(SandboxRuntime(home).list()) if b.running]
    for box in leftover:
        asyncio.run(SandboxRuntime(home).remove(box.name, force=True))
    assert not leftover, f"test left running boxes: {leftover}"


class ScriptedHost:
    """A host process running a test's own script, which prints ``ready`` once started and its
    chat's replies as one JSON line when it ends (the shape of the adoption and Ray scenarios)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    @classmethod
    async def launch(cls, script: Path, *args: str, log: Path, env: dict[str, str] | None = None,
                     ready_timeout: float = 120) -> Any:  # fmt: skip
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                env={**os.environ, **(env or {})},
            )  # fmt: skip
        host = cls(proc, log)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout)
        assert line == b"ready\n", host.log.read_text()[-3000:]
        return host

    async def replies(self, timeout: float = 180) -> list[str]:
        assert self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        assert await self.proc.wait() == 0, self.log.read_text()[-3000:]
        return json.loads(out.decode().strip().splitlines()[-1])

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()


class HostProcess:
    """A real host process (``python -m agentlite.testing.chaos host``) that reports its phases."""

    def __init__(
        self,
        home: Path,
        agent: str,
        *,
        group: str = "main",
        hold: float = 2.0,
        pause_at: str | None = None,
        fail_remove: bool = False,
        cleanup_first: bool = True,
    ) -> None:
        argv = host_argv(
            home,
            agent,
            group=group,
            hold=hold,
            pause_at=pause_at,
            fail_remove=fail_remove,
            cleanup_first=cleanup_first,
        )
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []

    @property
    def box(self) -> str | None:
        return next((e["box"] for e in reversed(self.events) if "box" in e), None)

    def wait_for(self, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        """Read events until one has ``phase`` (or ``event``) equal to ``phase``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"host exited before {phase!r}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            event = json.loads(line)
            self.events.append(event)
            if phase in (event.get("phase"), event.get("event")):
                return event
        raise AssertionError(f"host did not reach {phase!r} in {timeout} s")

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        done = self.wait_for("done", timeout)
        assert self.proc.wait(timeout=10) == 0
        return done

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def hosts() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for host in started:
        host.close()


class CapturedLog(logging.Handler):
    """Records of one logger, kept for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def text(self) -> str:
        return "\n".join(self.messages())


@contextmanager
def captured_log(name: str) -> Iterator[CapturedLog]:
    """Capture a logger through a handler on the logger itself: the CLI's logging setup turns off
    propagation to the root, which would hide records from caplog when CLI tests ran first."""
    logger = logging.getLogger(name)
    handler = CapturedLog()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def raw_sql(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on a database file through a separate connection, as another tool or process would."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()
