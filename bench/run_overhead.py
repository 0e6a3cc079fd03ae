"""Host overhead per agent turn: ``run_agent`` end to end against the bare agent CLI in the same box.

Variant A is :func:`agentlite.run.box_run.run_agent` (``single_turn=True``, backend codex) against an
in-process :class:`~agentlite.offline.model_server.ModelServer`: ownership record, box create, the
in-box runner (``python -m agentlite.guest.runner``) which writes the codex config and runs ``codex exec``,
event framing and parsing on the host, box removal and the run log. Variant B ("bare") makes the
same kind of box by hand (same volumes, same box env, a ``config.toml`` written by
``BackendContext.write_codex_config()``) and times create + exec of the very command the runner
uses, ``codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox -`` with
the prompt on stdin, until it exits. B removes its box outside the timed section. ``run_agent``
removes its box inside the call; a wrapping runtime times that removal, so A is shown both as
called and without the removal, and the overhead (A - B) is judged like for like (both without
removal). CPU is what the box's processes used (the runner, codex, the box's own helpers), read
as this process's children's rusage from the start of the turn until the box is removed, for both
variants: a box's long-lived processes are only accounted when they are reaped at removal.

Settings, variants interleaved round by round (alternating which goes first), one untimed warm-up
round each:

(i)   model ``delay=1.0`` s, scenario ``calls3`` (three model calls per turn, ~3 s of model time):
      median turn time of A and B, overhead in ms and as % of A.
(ii)  instant model, scenario ``text`` (one model call): overhead in ms, CPU in the box.
(iii) a follow-up turn in a live box: A hands a follow-up to an idle ``run_agent`` box
      (``write_follow_up``) and waits for its result; B runs ``codex exec resume <thread>`` in a box
      that already ran the first turn. The runner is already up, so A - B is what the runner costs a
      turn it does not start for.
(iv)  the in-box MCP server: exec of ``python -m agentlite.guest.mcp_server`` in a live box until it answers
      ``initialize``, as an agent CLI starts it.

A summary puts every figure beside its target (issue 12): runner start <= 80 ms p50 (over the A
rounds of (i) and (ii)); MCP server first answer <= 150 ms; CPU in the box <= 1.25x the bare CLI's
(ii); overhead <= 5 % of the turn (i), <= 150 ms (ii), <= 50 ms for a follow-up (iii).

Run: ``.venv/bin/python bench/run_overhead.py [--rounds N] [--rounds-instant M] [--rounds-follow-up K]``
(defaults: 5 rounds for (i), 10 for (ii) and (iv), 5 for (iii)).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from agentlite.box.base import BoxInfo, BoxSpec, Volume
from agentlite.box.network import loopback_ports
from agentlite.box.sandbox import BOX_HOME, SandboxProcess, SandboxRuntime
from agentlite.core.agent_clis import agent_clis_bin
from agentlite.guest.backends.base import BackendContext
from agentlite.guest.backends.codex import codex_args
from agentlite.offline.model_server import ModelServer
from agentlite.run.box_run import GUEST_IPC, GUEST_WORKSPACE, run_agent, runner_env
from agentlite.run.protocol import BackendConfig, Event, ResultEvent, RunnerInput, SdkMessageEvent, StateEvent
from agentlite.run.runner_input import request_close, write_follow_up

#: Targets (issue 12): overhead of a 3-call 1-s turn, of an instant-model turn, of a follow-up turn in a
#: live box; runner start (exec -> runner up) and MCP server start -> first answer at p50; CPU in the
#: box per instant-model turn against the bare CLI's.
TARGET_PCT = 5.0
TARGET_INSTANT_MS = 150.0
TARGET_FOLLOW_UP_MS = 50.0
TARGET_RUNNER_START_MS = 80.0
TARGET_MCP_ANSWER_MS = 150.0
TARGET_CPU_RATIO = 1.25
EXPECTED = {"calls3": "Done after three model calls.", "text": "hi from the offline model"}
MCP_INITIALIZE = (
    json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}) + "\n"
)  # fmt: skip


class BenchFailure(RuntimeError):
    """A turn did not end the way the scenario says it must."""


def codex_path() -> Path | None:
    folder = agent_clis_bin()
    if folder is None or not (folder / "codex").exists():
        return None
    return folder / "codex"


# -- timing helpers ---------------------------------------------------------------------------------


@dataclass
class Marks:
    """Monotonic timestamps of one turn, named by phase boundary."""

    at: dict[str, float] = field(default_factory=dict)
    #: CPU seconds (this process, its waited-for children) at the ``start``/``end``/``exit``/``remove_end``
    #: marks.
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.at.setdefault(name, time.perf_counter())
        if name in ("start", "end", "exit", "remove_end"):
            me = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu[name] = (me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime)

    def cpu_span(self, start: str, end: str, which: int) -> float | None:
        """CPU seconds between two marks: ``which`` 0 = this process, 1 = its children."""
        if start in self.cpu and end in self.cpu:
            return self.cpu[end][which] - self.cpu[start][which]
        return None

    def span(self, start: str, end: str) -> float | None:
        if start in self.at and end in self.at:
            return self.at[end] - self.at[start]
        return None


class TimedSandbox(SandboxRuntime):
    """A SandboxRuntime that notes when create, exec and remove happen (no behaviour change)."""

    marks: Marks | None = None

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        if self.marks:
            self.marks.mark("create_start")
        info = await super().create(name, spec)
        if self.marks:
            self.marks.mark("create_end")
        return info

    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> SandboxProcess:
        if self.marks:
            self.marks.mark("exec")
        return await super().exec(name, argv, env=env, cwd=cwd)

    async def remove(self, name: str, *, force: bool = False) -> None:
        if self.marks:
            self.marks.mark("remove_start")
        await super().remove(name, force=force)
        if self.marks:
            self.marks.mark("remove_end")


def box_env(single_turn: bool = True) -> dict[str, str]:
    """The box env ``run_agent`` gives (the API key only when the host has one, as it does)."""
    return runner_env(BackendConfig(), single_turn=single_turn)


async def drain(lines: AsyncIterator[bytes], on_line: Callable[[bytes], None] | None = None) -> bytes:
    data = bytearray()
    async for line in lines:
        if on_line is not None:
            on_line(line)
        data += line
    return bytes(data)


# -- variant B: the bare CLI ------------------------------------------------------------------------


class BareCodex:
    """``codex exec`` alone in a box made like ``run_agent`` makes its box (see the docstring)."""

    def __init__(self, runtime: TimedSandbox, root: Path, base_url: str) -> None:
        self.runtime = runtime
        self.agent_home = root / "agent-home"
        self.workspace = root / "workspace"
        self.ipc = root / "ipc"
        for folder in (self.agent_home, self.workspace, self.ipc / "input"):
            folder.mkdir(parents=True, exist_ok=True)
        self.backend = BackendConfig(type="codex", base_url=base_url)
        self.spec = BoxSpec(
            env=box_env(),
            volumes=[
                Volume(self.agent_home.resolve(), BOX_HOME),
                Volume(self.workspace.resolve(), GUEST_WORKSPACE),
                Volume(self.ipc.resolve(), GUEST_IPC),
            ],
            working_dir=GUEST_WORKSPACE,
            # As run_agent does: the model server on the host's loopback reaches the box at its URL.
            exposed_ports=loopback_ports([base_url]),
        )
        self._names = itertools.count(1)

    def _context(self, prompt: str, home: Path) -> BackendContext:
        run_input = RunnerInput(
            prompt=prompt, group_folder="main", chat_id="main", is_main=False, backend=self.backend
        )

        def ignore(_event: BaseModel) -> None:
            return None

        return BackendContext(run_input, ignore, Path(GUEST_WORKSPACE), home)

    async def turn(self, prompt: str, expected: str | None) -> Marks:
        """One codex turn; ``start``..``exit`` is timed, the removal (``remove_*``) comes after."""
        # The config the runner would write inside the box (workspace /workspace/group), written
        # here on the host into the folder that the box shows as its HOME.
        self._context(prompt, self.agent_home).write_codex_config()
        codex_env = self._context(prompt, Path(BOX_HOME)).codex_env()
        name = f"bench-bare-{os.getpid()}-{next(self._names)}"
        marks = Marks()
        self.runtime.marks = marks
        marks.mark("start")
        await self.runtime.create(name, self.spec)
        try:
            proc = await self.runtime.exec(name, ["codex", *codex_args(None, None)], env=codex_env)
            await proc.write_stdin(prompt.encode())
            await proc.close_stdin()
            out, err = await asyncio.gather(
                drain(proc.stdout_lines(), lambda _line: marks.mark("first_output")),
                drain(proc.stderr_lines()),
            )
            code = await proc.wait()
            marks.mark("exit")
        finally:
            await self.runtime.remove(name, force=True)
            self.runtime.marks = None
        if code != 0:
            raise BenchFailure(f"bare codex exited {code}: {err.decode(errors='replace')[-500:]}")
        texts = []
        for line in out.decode(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            item = event.get("item")
            if (
                event.get("type") == "item.completed"
                and isinstance(item, dict)
                and item.get("type") == "agent_message"
            ):
                texts.append(item.get("text"))
        if expected is not None and (not texts or texts[-1] != expected):
            raise BenchFailure(f"bare codex gave {texts!r}, expected final text {expected!r}")
        return marks

    async def follow_up(self, prompt: str, expected: str | None) -> Marks:
        """A second codex turn in a live box: ``codex exec resume <thread>`` timed from exec to exit."""
        self._context(prompt, self.agent_home).write_codex_config()
        codex_env = self._context(prompt, Path(BOX_HOME)).codex_env()
        name = f"bench-bare-{os.getpid()}-{next(self._names)}"
        await self.runtime.create(name, self.spec)
        marks = Marks()
        try:
            first = await self.runtime.exec(name, ["codex", *codex_args(None, None)], env=codex_env)
            await first.write_stdin(prompt.encode())
            await first.close_stdin()
            out, err = await asyncio.gather(drain(first.stdout_lines()), drain(first.stderr_lines()))
            if await first.wait() != 0:
                raise BenchFailure(f"bare codex exited non-zero: {err.decode(errors='replace')[-500:]}")
            thread = next(e["thread_id"] for e in _json_lines(out) if e.get("type") == "thread.started")
            self.runtime.marks = marks
            marks.mark("start")
            proc = await self.runtime.exec(name, ["codex", *codex_args(None, thread)], env=codex_env)
            await proc.write_stdin(prompt.encode())
            await proc.close_stdin()
            out, err = await asyncio.gather(drain(proc.stdout_lines()), drain(proc.stderr_lines()))
            code = await proc.wait()
            marks.mark("exit")
        finally:
            self.runtime.marks = None
            await self.runtime.remove(name, force=True)
        if code != 0:
            raise BenchFailure(f"bare codex resume exited {code}: {err.decode(errors='replace')[-500:]}")
        return marks

    async def mcp_first_answers(self, rounds: int) -> tuple[list[float], list[float]]:
        """Seconds from exec of ``python -m agentlite.guest.mcp_server`` in a live box to its answer to
        ``initialize``, as an agent CLI starts it; and, for scale, from exec of a bare
        ``python -c 'print()'`` in the same box to its line (the floor of any Python start)."""
        name = f"bench-mcp-{os.getpid()}-{next(self._names)}"
        await self.runtime.create(name, self.spec)
        env = {"AGENTLITE_IPC_DIR": GUEST_IPC, "AGENTLITE_CHAT_JID": "main", "AGENTLITE_GROUP_FOLDER": "main"}
        answers, floors = [], []
        try:
            for _ in range(rounds + 1):  # the first one warms the page cache, untimed
                started = time.perf_counter()
                bare_python = await self.runtime.exec(name, [sys.executable, "-c", "print()"])
                await bare_python.close_stdin()
                lines = bare_python.stdout_lines()
                await anext(lines)
                floors.append(time.perf_counter() - started)
                await drain(lines)
                await drain(bare_python.stderr_lines())
                await bare_python.wait()
                started = time.perf_counter()
                proc = await self.runtime.exec(
                    name, [sys.executable, "-m", "agentlite.guest.mcp_server"], env=env
                )
                await proc.write_stdin(MCP_INITIALIZE.encode())
                lines = proc.stdout_lines()
                line = await anext(lines)
                answers.append(time.perf_counter() - started)
                if b'"protocolVersion"' not in line:
                    raise BenchFailure(f"MCP server answered {line[:300]!r}")
                await proc.close_stdin()
                await drain(lines)
                await drain(proc.stderr_lines())
                await proc.wait()
        finally:
            await self.runtime.remove(name, force=True)
        return answers[1:], floors[1:]


def _json_lines(out: bytes) -> list[dict[str, object]]:
    events = []
    for line in out.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


# -- variant A: run_agent ---------------------------------------------------------------------------


class ViaRunAgent:
    def __init__(self, runtime: TimedSandbox, home: Path, base_url: str) -> None:
        self.runtime = runtime
        self.home = home
        self.workspace = home / "run-agent-workspace"
        self.backend = BackendConfig(type="codex", base_url=base_url)

    async def turn(self, prompt: str, expected: str | None) -> Marks:
        """One ``run_agent`` call; ``start``..``end`` is timed and holds the removal."""
        marks = Marks()
        run_input = RunnerInput(
            prompt=prompt, group_folder="main", chat_id="main", is_main=False, backend=self.backend
        )

        def on_event(event: Event) -> None:
            if isinstance(event, StateEvent) and event.reason == "query_started":
                marks.mark("runner_started")
            elif isinstance(event, SdkMessageEvent):
                marks.mark("first_output")
            elif isinstance(event, ResultEvent):
                marks.mark("result")

        self.runtime.marks = marks
        marks.mark("start")
        try:
            outcome = await run_agent(
                self.runtime,
                self.home,
                run_input,
                workspace=self.workspace,
                on_event=on_event,
                single_turn=True,
            )
            marks.mark("end")
        finally:
            self.runtime.marks = None
        if outcome.status != "success" or (expected is not None and outcome.result != expected):
            raise BenchFailure(
                f"run_agent ended {outcome.status}/{outcome.reason}: result={outcome.result!r} "
                f"error={outcome.error!r} (log {outcome.log_path})"
            )
        return marks

    async def follow_up(self, prompt: str, expected: str | None) -> Marks:
        """A follow-up in the live box of a ``run_agent`` run: from handing it over
        (:func:`write_follow_up`) to its turn's result event; the first turn is untimed."""
        marks = Marks()
        ipc = self.home / "follow-up-ipc"
        results: list[str | None] = []
        run_input = RunnerInput(
            prompt=prompt, group_folder="main", chat_id="main", is_main=False, backend=self.backend
        )

        def on_event(event: Event) -> None:
            if isinstance(event, ResultEvent):
                results.append(event.result)
                if len(results) == 2:
                    marks.mark("exit")
            elif isinstance(event, StateEvent) and event.state == "idle":
                if len(results) == 1:
                    marks.mark("start")
                    write_follow_up(ipc, prompt)
                else:
                    request_close(ipc)

        outcome = await run_agent(self.runtime, self.home, run_input, workspace=self.workspace, ipc_dir=ipc,
                                  on_event=on_event, idle_timeout=60)  # fmt: skip
        if (
            outcome.status != "success"
            or len(results) != 2
            or (expected is not None and results[1] != expected)
        ):
            raise BenchFailure(f"follow-up run ended {outcome.status}/{outcome.reason}: results={results!r} "
                               f"error={outcome.error!r} (log {outcome.log_path})")  # fmt: skip
        return marks


# -- the bench --------------------------------------------------------------------------------------


def ms(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) * 1000 if present else None


def fmt(value: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.0f}"


async def measure(variants: dict[str, Callable[[], Awaitable[Marks]]], rounds: int) -> dict[str, list[Marks]]:
    samples: dict[str, list[Marks]] = {label: [] for label in variants}
    for measure_once in variants.values():  # warm-up, untimed
        await measure_once()
    order = list(variants)
    for round_no in range(rounds):
        for label in order if round_no % 2 == 0 else reversed(order):
            samples[label].append(await variants[label]())
    return samples


def breakdown(a: list[Marks], b: list[Marks]) -> None:
    """Median of each phase, to show where the overhead goes."""
    rows: list[tuple[str, float | None, float | None]] = [
        (
            "before create (names, ownership record)",
            ms([m.span("start", "create_start") for m in a]),
            ms([m.span("start", "create_start") for m in b]),
        ),
        (
            "box create",
            ms([m.span("create_start", "create_end") for m in a]),
            ms([m.span("create_start", "create_end") for m in b]),
        ),
        (
            "create -> exec call",
            ms([m.span("create_end", "exec") for m in a]),
            ms([m.span("create_end", "exec") for m in b]),
        ),
        (
            "exec -> runner up (python, imports)",
            ms([m.span("exec", "runner_started") for m in a]),
            None,
        ),
        (
            "exec|runner up -> first codex event",
            ms([m.span("runner_started", "first_output") for m in a]),
            ms([m.span("exec", "first_output") for m in b]),
        ),
        (
            "first codex event -> codex done",
            ms([m.span("first_output", "result") for m in a]),
            ms([m.span("first_output", "exit") for m in b]),
        ),
        (
            "codex done -> command exited",
            ms([m.span("result", "remove_start") for m in a]),
            None,
        ),
        (
            "box removal",
            ms([m.span("remove_start", "remove_end") for m in a]),
            ms([m.span("remove_start", "remove_end") for m in b]),
        ),
        ("after removal -> return (run log)", ms([m.span("remove_end", "end") for m in a]), None),
        (
            "CPU: this process (host side, model server)",
            ms([m.cpu_span("start", "end", 0) for m in a]),
            ms([m.cpu_span("start", "exit", 0) for m in b]),
        ),
        (
            "CPU: box processes, create to removal",
            ms([m.cpu_span("start", "end", 1) for m in a]),
            ms([m.cpu_span("start", "remove_end", 1) for m in b]),
        ),
    ]
    print(f"  {'phase (median ms)':<42}{'A':>10}{'B':>10}")
    for label, a_ms, b_ms in rows:
        print(f"  {label:<42}{fmt(a_ms)}{fmt(b_ms)}")
    print("  (B's removal is outside its timed turn; A's 'codex done' is its result event, B's is exit)")


@dataclass
class Figures:
    """What one setting measured, for the summary."""

    overhead_ms: float
    turn_ms: float
    cpu_a_ms: float | None
    cpu_b_ms: float | None


def report(title: str, a: list[Marks], b: list[Marks], *, target: bool) -> Figures:
    a_total = ms([m.span("start", "end") for m in a]) or 0.0
    a_no_rm = (
        ms([(m.span("start", "end") or 0) - (m.span("remove_start", "remove_end") or 0) for m in a]) or 0.0
    )
    b_total = ms([m.span("start", "exit") for m in b]) or 0.0
    over = a_no_rm - b_total
    over_rm = a_total - b_total
    paired = ms(
        [
            (x.span("start", "end") or 0)
            - (x.span("remove_start", "remove_end") or 0)
            - (y.span("start", "exit") or 0)
            for x, y in zip(a, b, strict=True)
        ]
    )
    print(f"\n{title} ({len(a)} interleaved rounds per variant, 1 warm-up each)")
    print(f"  {'variant':<42}{'median ms':>10}")
    print(f"  {'A run_agent, as called (incl. box removal)':<42}{fmt(a_total)}")
    print(f"  {'A run_agent without its box removal':<42}{fmt(a_no_rm)}")
    print(f"  {'B bare codex in box (removal untimed)':<42}{fmt(b_total)}")
    print(f"  {'overhead A - B (both without removal)':<42}{fmt(over)}  = {100 * over / a_no_rm:.1f} % of A")
    print(f"  {'  same, A incl. its removal':<42}{fmt(over_rm)}  = {100 * over_rm / a_total:.1f} % of A")
    print(f"  {'  median of per-round A - B differences':<42}{fmt(paired)}")
    if target:
        pct = 100 * over / a_no_rm
        verdict = "PASS" if pct <= TARGET_PCT else "MISS"
        pct_rm = 100 * over_rm / a_total
        verdict_rm = "PASS" if pct_rm <= TARGET_PCT else "MISS"
        print(
            f"  target: overhead <= {TARGET_PCT:.0f} % of the turn -> {verdict} ({pct:.1f} %; "
            f"counting A's removal: {verdict_rm}, {pct_rm:.1f} %)"
        )
    breakdown(a, b)
    return Figures(over, a_no_rm, ms([m.cpu_span("start", "end", 1) for m in a]),
                   ms([m.cpu_span("start", "remove_end", 1) for m in b]))  # fmt: skip


def verdict(measured: float | None, target: float) -> str:
    return "-" if measured is None else ("PASS" if measured <= target else "MISS")


async def run(rounds: int, rounds_instant: int, rounds_follow_up: int) -> int:
    home = Path(tempfile.mkdtemp(prefix="agentlite-bench-overhead-"))
    runtime = TimedSandbox(home)
    figures: dict[str, Figures] = {}
    runner_starts: list[float | None] = []
    try:
        async with ModelServer(scenario="text") as server:
            via_run_agent = ViaRunAgent(runtime, home, server.openai_base_url)
            bare = BareCodex(runtime, home / "bare", server.openai_base_url)
            settings = (
                ("(i) model delay 1.0 s per call, scenario calls3 (3 model calls)", 1.0, "calls3", rounds, True),
                ("(ii) instant model, scenario text (1 model call)", 0.0, "text", rounds_instant, False),
            )  # fmt: skip
            print(f"host overhead per turn: backend codex, sandbox runtime, {os.cpu_count()} CPUs")
            for title, delay, scenario, n, target in settings:
                server.delay = delay
                prompt = f"[scenario:{scenario}] do the benchmark task"
                expected = EXPECTED[scenario]
                samples = await measure(
                    {
                        "A": lambda p=prompt, e=expected: via_run_agent.turn(p, e),
                        "B": lambda p=prompt, e=expected: bare.turn(p, e),
                    },
                    n,
                )
                figures[scenario] = report(title, samples["A"], samples["B"], target=target)
                runner_starts += [m.span("exec", "runner_started") for m in samples["A"]]
            server.delay = 0.0
            prompt = "[scenario:text] the follow-up"
            follow = await measure(
                {
                    "A": lambda: via_run_agent.follow_up(prompt, EXPECTED["text"]),
                    "B": lambda: bare.follow_up(prompt, EXPECTED["text"]),
                },
                rounds_follow_up,
            )
            a_follow = ms([m.span("start", "exit") for m in follow["A"]])
            b_follow = ms([m.span("start", "exit") for m in follow["B"]])
            follow_over = None if a_follow is None or b_follow is None else a_follow - b_follow
            print(
                f"\n(iii) follow-up turn in a live box, instant model ({rounds_follow_up} interleaved rounds, 1 warm-up)"
            )
            print(f"  {'A follow-up handed over -> its result':<42}{fmt(a_follow)}")
            print(f"  {'B codex exec resume in a live box':<42}{fmt(b_follow)}")
            print(f"  {'overhead A - B':<42}{fmt(follow_over)}  (the runner is already up: no start)")
            mcp, floor = await bare.mcp_first_answers(rounds_instant)
            mcp_ms = ms(mcp)
            print(
                f"\n(iv) MCP server in a live box, exec -> answer to initialize ({len(mcp)} rounds, 1 warm-up)"
            )
            print(f"  {'median / max ms':<42}{fmt(mcp_ms)}{fmt(max(mcp) * 1000)}")
            print(
                f"  {'for scale: exec -> line of python -c print()':<42}{fmt(ms(floor))}{fmt(max(floor) * 1000)}"
            )

            instant, slow = figures["text"], figures["calls3"]
            cpu_ratio = instant.cpu_a_ms / instant.cpu_b_ms if instant.cpu_a_ms and instant.cpu_b_ms else None
            start_ms = ms(runner_starts)
            slow_pct = 100 * slow.overhead_ms / slow.turn_ms
            rows = [
                ("runner start, exec -> runner up, p50", start_ms, TARGET_RUNNER_START_MS, "ms"),
                ("MCP server exec -> first answer, p50", mcp_ms, TARGET_MCP_ANSWER_MS, "ms"),
                ("CPU in the box per turn, A / B (instant)", cpu_ratio, TARGET_CPU_RATIO, "x"),
                ("overhead, 3 calls of 1 s, % of the turn", slow_pct, TARGET_PCT, "%"),
                ("overhead, instant model", instant.overhead_ms, TARGET_INSTANT_MS, "ms"),
                ("overhead, follow-up turn in a live box", follow_over, TARGET_FOLLOW_UP_MS, "ms"),
            ]
            print(f"\nsummary (medians)\n  {'measure':<44}{'measured':>10}{'target':>10}  verdict")
            print(
                f"  (bare `python -c print()` in a box, exec -> its line: {fmt(ms(floor), 0)} ms, both starts' floor)"
            )
            for label, value, goal, unit in rows:
                shown = "-" if value is None else f"{value:.2f}" if unit == "x" else f"{value:.1f}"
                print(
                    f"  {label:<44}{shown + ' ' + unit:>10}{f'<= {goal:g} {unit}':>10}  {verdict(value, goal)}"
                )
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.marks = None
        for box in await runtime.list():
            await runtime.remove(box.name, force=True)
        await runtime.aclose()
        shutil.rmtree(home, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Host overhead per turn: run_agent vs the bare CLI in a box."
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds for setting (i), delay 1.0 s (default 5)"
    )
    parser.add_argument(
        "--rounds-instant", type=int, default=10, help="rounds for setting (ii), instant model (default 10)"
    )
    parser.add_argument(
        "--rounds-follow-up",
        type=int,
        default=5,
        help="rounds for the follow-up turn, instant model (default 5)",
    )
    parser.add_argument("--backend", default="codex", choices=["codex"], help="agent backend (codex only)")
    args = parser.parse_args()
    if args.rounds < 1 or args.rounds_instant < 1 or args.rounds_follow_up < 1:
        parser.error("rounds must be at least 1")
    if codex_path() is None:
        print(
            "codex CLI not found: install the pinned agent CLIs (scripts/install.sh, or npm ci in agent-clis/) "
            "or point AGENTLITE_AGENT_CLIS at a folder holding node_modules/.bin/codex",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(run(args.rounds, args.rounds_instant, args.rounds_follow_up))


if __name__ == "__main__":
    sys.exit(main())
