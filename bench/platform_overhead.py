"""Platform overhead: from a stored message to its box's runner starting, against a bare box spawn.

What is measured, per round, on a real platform (``agentlite.create(runtime="sandbox")``, one agent
with the codex backend against an in-process ``ModelServer(scenario="text")``, one main group):

* ``t0``: the test channel calls ``ChannelConfig.deliver(chat_id, message)`` (the message object
  is built before ``t0``: parsing a chat network's payload is the driver's work, not the platform's).
* the end: the box's runner process has been spawned, i.e. ``SandboxRuntime.exec`` of
  ``python -m agentlite.guest.runner`` has returned. The platform's runtime is replaced by a subclass of
  ``SandboxRuntime`` that only timestamps ``get``/``create``/``exec`` (no behaviour change). The
  runner emits no event when it starts (its first ``run.state`` is ``idle``, after the turn), so
  the end is taken at ``exec`` rather than from an event.

That span is split into the *box spawn* (the time inside ``runtime.create`` and ``runtime.exec``)
and the *platform time* (everything else): the store writes of ``deliver``, the loop's wake-up, the
poll's store reads and queue hand-off, the group run's store reads, prompt and cursor/in-flight
writes, the IPC snapshots, the actions token, the run's folders and box spec, the ownership record
and the name check. Phase boundaries come from wrappers set on the agent instance (``_run_turn``,
``_write_snapshots``), on its message loop's ``poll_once`` (``Agent.message_loop``), on the
``process_group`` handed to its queue (``Agent.group_queue.set_process_messages``), on the actions
server's ``mint_token`` and on this process's ownership object's ``register``; behaviour is unchanged.

The platform time is compared with a *bare box spawn* measured in the same run: ``SandboxRuntime``
``create`` + ``exec(["true"])`` until ``true`` exits, with ``BoxSpec(network=False)`` as in
``bench/box_spawn.py`` (its box is removed untimed). The two are interleaved round by round,
alternating which goes first. Every platform round must really complete: the reply
``hi from the offline model`` must reach the channel; then the box is closed (``_close`` via the
queue) and the round ends only once the group's run has been released, so no box outlives its round.

Target: platform time <= 10 % of the bare box spawn (medians). Timing is reported, never asserted.

Run: ``.venv/bin/python bench/platform_overhead.py [--rounds N]`` (default 20, plus 2 warm-up rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import agentlite
from agentlite.box.base import BoxInfo, BoxSpec
from agentlite.box.ownership import ownership_for
from agentlite.box.sandbox import SandboxProcess, SandboxRuntime
from agentlite.core.agent_clis import agent_clis_bin
from agentlite.offline.model_server import ModelServer
from agentlite.placement.local import LocalPlacement
from agentlite.platform.store import Message, now_iso

TARGET_PCT = 10.0
WARMUP = 2
EXPECTED_REPLY = "hi from the offline model"
CHAT = "bench:main"
ROUND_TIMEOUT = 120.0


class BenchFailure(RuntimeError):
    """A round did not end the way it must (no reply, a box that never went away)."""


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly."""
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Clock:
    """Named instants of the current round (first occurrence wins); inactive between rounds."""

    def __init__(self) -> None:
        self.at: dict[str, float] | None = None

    def begin(self) -> dict[str, float]:
        self.at = {}
        return self.at

    def end(self) -> None:
        self.at = None

    def mark(self, name: str) -> None:
        if self.at is not None:
            self.at.setdefault(name, time.perf_counter())


class MarkingSandbox(SandboxRuntime):
    """``SandboxRuntime`` that notes when ``get``, ``create`` and ``exec`` start and return."""

    clock: Clock | None = None

    def _mark(self, name: str) -> None:
        if self.clock is not None:
            self.clock.mark(name)

    async def get(self, name: str) -> BoxInfo | None:
        self._mark("get_start")
        try:
            return await super().get(name)
        finally:
            self._mark("get_end")

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        self._mark("create_start")
        try:
            return await super().create(name, spec)
        finally:
            self._mark("create_end")

    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> SandboxProcess:
        self._mark("exec_start")
        try:
            return await super().exec(name, argv, env=env, cwd=cwd)
        finally:
            self._mark("exec_end")


def around_sync(clock: Clock, fn: Callable[..., Any], start: str, end: str) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        clock.mark(start)
        try:
            return fn(*args, **kwargs)
        finally:
            clock.mark(end)

    return wrapped


def around_async(
    clock: Clock, fn: Callable[..., Awaitable[Any]], start: str, end: str | None = None
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        clock.mark(start)
        try:
            return await fn(*args, **kwargs)
        finally:
            if end is not None:
                clock.mark(end)

    return wrapped


class BenchChannel:
    """A channel driver owning ``bench:`` chats; records what the agent sends."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.name = "bench"
        self.is_connected = False
        self.sent: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def connect(self) -> None:
        self.is_connected = True

    async def disconnect(self) -> None:
        self.is_connected = False

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith("bench:")

    async def set_typing(self, chat_id: str, on: bool) -> None:
        return None

    async def send_message(self, chat_id: str, text: str) -> None:
        self.sent.append((chat_id, text))
        self.changed.set()


# Phases of the platform time: (label, start mark, end mark). Their sum is the platform time up to
# the marks that are subtracted below ("rest of turn prep" is what the named ones leave over).
PHASES: list[tuple[str, str, str]] = [
    ("deliver: store message + chat + event", "t0", "delivered"),
    ("loop wake-up", "delivered", "poll_start"),
    ("poll: store reads, enqueue", "poll_start", "poll_end"),
    ("queue hop to the group run", "poll_end", "process_start"),
    ("group run: reads, prompt, cursors", "process_start", "turn_start"),
    ("IPC snapshots (tasks, groups)", "snap_start", "snap_end"),
    ("actions token minting", "token_start", "token_end"),
    ("ownership record", "record_start", "record_end"),
    ("name check (runtime.get)", "get_start", "create_start"),
    ("create -> exec hand-over", "create_end", "exec_start"),
]
REST_LABEL = "rest of turn prep: input, folders, spec"
BOX_PHASES: list[tuple[str, str, str]] = [
    ("create (bwrap box up)", "create_start", "create_end"),
    ("exec runner (nsenter spawned)", "exec_start", "exec_end"),
]
REQUIRED = {mark for _, a, b in PHASES + BOX_PHASES for mark in (a, b)}


def split(at: dict[str, float]) -> dict[str, float]:
    """Seconds per phase of one round, plus ``platform``, ``box`` and ``total``."""
    missing = REQUIRED - set(at)
    if missing:
        raise BenchFailure(f"round missed phase marks {sorted(missing)}")
    parts = {label: at[b] - at[a] for label, a, b in PHASES}
    named_in_prep = ("IPC snapshots (tasks, groups)", "actions token minting", "ownership record")
    # turn_start -> get_start holds snapshots, token, record and the unnamed rest.
    parts[REST_LABEL] = (at["get_start"] - at["turn_start"]) - sum(parts[k] for k in named_in_prep)
    box = {label: at[b] - at[a] for label, a, b in BOX_PHASES}
    total = at["exec_end"] - at["t0"]
    out = dict(parts)
    out.update(box)
    out["box"] = sum(box.values())
    out["total"] = total
    out["platform"] = total - out["box"]
    return out


async def drain(lines: AsyncIterator[bytes]) -> None:
    async for _ in lines:
        pass


class Bench:
    def __init__(self, root: Path, model: ModelServer) -> None:
        self.root = root
        self.model = model
        self.clock = Clock()
        self.bare_runtime = SandboxRuntime(root / "bare-home")
        self.bare_spec = BoxSpec(network=False)
        self.bare_count = 0
        self.platform: agentlite.AgentLite | None = None
        self.agent: Any = None
        self.channel: BenchChannel | None = None
        self.message_count = 0

    async def open(self) -> None:
        platform = await agentlite.create(
            workdir=self.root / "data", runtime="sandbox", timezone="UTC", idle_timeout=60
        )
        # Same home, same behaviour: only the timestamps are added.
        await platform.runtime.aclose()
        runtime = MarkingSandbox(platform.box_home)
        runtime.clock = self.clock
        platform.runtime = runtime
        # Runs reach boxes through the placement, which holds its own runtime: give it this one.
        platform.placement = LocalPlacement(runtime, platform.box_home)
        self.platform = platform
        holder: dict[str, BenchChannel] = {}

        def factory(config: Any) -> BenchChannel:
            holder["channel"] = BenchChannel(config)
            return holder["channel"]

        backend = {"type": "codex", "base_url": self.model.openai_base_url, "max_retries": 0}
        agent = await platform.get_or_create_agent("bench", backend=backend, channels={"bench": factory})
        clock = self.clock
        # The agent's own per-turn steps, looked up on the instance at each call.
        agent._run_turn = around_async(clock, agent._run_turn, "turn_start")
        agent._write_snapshots = around_sync(clock, agent._write_snapshots, "snap_start", "snap_end")
        await agent.start()
        # The loop calls self.poll_once each round; the queue runs whatever set_process_messages got.
        loop = agent.message_loop
        loop.poll_once = around_async(clock, loop.poll_once, "poll_start", "poll_end")  # type: ignore[method-assign]
        agent.group_queue.set_process_messages(around_async(clock, loop.process_group, "process_start"))
        server = agent._actions_server
        server.mint_token = around_sync(clock, server.mint_token, "token_start", "token_end")
        owner = ownership_for(platform.box_home)
        owner.register = around_sync(clock, owner.register, "record_start", "record_end")
        agent.register_group(CHAT, name="main", folder="main", is_main=True)
        self.agent = agent
        self.channel = holder["channel"]

    async def close(self) -> None:
        if self.platform is not None:
            await self.platform.close()
        for box in await self.bare_runtime.list():
            await self.bare_runtime.remove(box.name, force=True)
        await self.bare_runtime.aclose()

    async def bare_spawn(self) -> dict[str, float]:
        """Seconds of create + exec ``true`` until exit; the box is removed untimed."""
        self.bare_count += 1
        name = f"agentlite-bench-bare-{self.bare_count}"
        t0 = time.perf_counter()
        await self.bare_runtime.create(name, self.bare_spec)
        t1 = time.perf_counter()
        try:
            proc = await self.bare_runtime.exec(name, ["true"])
            await proc.close_stdin()
            await asyncio.gather(drain(proc.stdout_lines()), drain(proc.stderr_lines()))
            code = await proc.wait()
            t2 = time.perf_counter()
        finally:
            await self.bare_runtime.remove(name, force=True)
        if code != 0:
            raise BenchFailure(f"`true` in bare box {name} exited {code}")
        return {"create": t1 - t0, "exec": t2 - t1, "total": t2 - t0}

    async def platform_round(self) -> tuple[dict[str, float], float]:
        """One message through the platform; (phase seconds, deliver -> reply seconds)."""
        agent, channel = self.agent, self.channel
        assert agent is not None and channel is not None
        if agent.group_queue.is_active(CHAT):
            raise BenchFailure("the previous round's run is still active")
        self.message_count += 1
        message = Message(id=f"b{self.message_count}-{uuid.uuid4().hex}", chat_id=CHAT, sender="u1",
                          sender_name="U1", content=f"hello {self.message_count}", timestamp=now_iso())  # fmt: skip
        replies_before = len(channel.sent)
        at = self.clock.begin()
        at["t0"] = time.perf_counter()
        ok = await channel.config.deliver(CHAT, message)
        at["delivered"] = time.perf_counter()
        if not ok:
            raise BenchFailure("deliver() reported a failing on_message")
        deadline = time.monotonic() + ROUND_TIMEOUT
        while len(channel.sent) == replies_before:
            channel.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchFailure(f"no reply within {ROUND_TIMEOUT:g} s")
            try:
                await asyncio.wait_for(channel.changed.wait(), left)
            except TimeoutError:
                pass
        replied = time.perf_counter() - at["t0"]
        self.clock.end()
        reply = channel.sent[-1]
        if reply != (CHAT, EXPECTED_REPLY):
            raise BenchFailure(f"unexpected reply {reply!r}")
        # The runner now waits for follow-ups: close it and wait until the queue released the run
        # (the box is removed and its record deleted before that).
        agent.group_queue.close_stdin(CHAT)
        while agent.group_queue.is_active(CHAT):
            if time.monotonic() > deadline:
                raise BenchFailure("the run did not end after _close")
            await asyncio.sleep(0.02)
        return split(at), replied


def print_table(rows: list[tuple[str, list[float]]], indent: str = "") -> None:
    for label, values in rows:
        print(f"{indent + label:<48}{statistics.median(values) * 1000:>10.2f}{pct(values, 95) * 1000:>10.2f}")


async def run(rounds: int) -> int:
    root = Path(tempfile.mkdtemp(prefix="agentlite-bench-overhead-"))
    platform_samples: list[dict[str, float]] = []
    reply_times: list[float] = []
    bare_samples: list[dict[str, float]] = []
    try:
        async with ModelServer(scenario="text") as model:
            bench = Bench(root, model)
            try:
                await bench.open()
                for _ in range(WARMUP):
                    await bench.platform_round()
                    await bench.bare_spawn()
                for round_no in range(rounds):
                    if round_no % 2 == 0:
                        sample, replied = await bench.platform_round()
                        bare = await bench.bare_spawn()
                    else:
                        bare = await bench.bare_spawn()
                        sample, replied = await bench.platform_round()
                    platform_samples.append(sample)
                    reply_times.append(replied)
                    bare_samples.append(bare)
            finally:
                await bench.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def column(samples: list[dict[str, float]], key: str) -> list[float]:
        return [s[key] for s in samples]

    print(
        f"platform overhead: {rounds} interleaved rounds ({WARMUP} warm-up rounds untimed); codex against"
        " ModelServer(scenario='text'), one main group, sandbox runtime"
    )
    print("span: deliver() of a message -> the box's runner process spawned (runtime.exec returned)")
    print(f"{'phase':<48}{'p50 ms':>10}{'p95 ms':>10}")
    labels = [label for label, _, _ in PHASES[:5]] + [
        "IPC snapshots (tasks, groups)",
        "actions token minting",
        REST_LABEL,
        "ownership record",
        "name check (runtime.get)",
        "create -> exec hand-over",
    ]
    print_table([(label, column(platform_samples, label)) for label in labels], indent="  ")
    platform = column(platform_samples, "platform")
    print_table([("platform time (sum of the above)", platform)])
    print_table([(label, column(platform_samples, label)) for label, _, _ in BOX_PHASES], indent="  ")
    print_table([("box spawn inside the platform", column(platform_samples, "box"))])
    print_table([("deliver -> runner spawned (total)", column(platform_samples, "total"))])
    print_table([("deliver -> reply in the channel (info)", reply_times)])
    print_table(
        [
            ("  create", column(bare_samples, "create")),
            ("  exec true until exit", column(bare_samples, "exec")),
        ]
    )
    bare = column(bare_samples, "total")
    print_table([("bare box spawn (create + exec true, no network)", bare)])
    ratio = statistics.median(platform) / statistics.median(bare)
    paired = statistics.median(p / b for p, b in zip(platform, bare, strict=True))
    box_ratio = statistics.median(platform) / statistics.median(column(platform_samples, "box"))
    print(
        f"ratio platform / bare spawn (p50/p50): {ratio * 100:.1f}% (per-round pairs, p50: {paired * 100:.1f}%)"
    )
    print(f"ratio platform / box spawn inside the platform (p50/p50): {box_ratio * 100:.1f}%")
    verdict = "PASS" if ratio * 100 <= TARGET_PCT else "MISS"
    print(
        f"target: platform time <= {TARGET_PCT:.0f}% of the bare box spawn -> {verdict} ({ratio * 100:.1f}%)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Platform overhead before a box's runner starts, vs a bare spawn."
    )
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (>= 5, default 20)")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    folder = agent_clis_bin()
    if folder is None or not (folder / "codex").exists():
        print(
            "platform overhead: skipped: the codex CLI is not installed in agent-clis/ (scripts/install.sh)"
        )
        return 1
    return asyncio.run(run(args.rounds))


if __name__ == "__main__":
    sys.exit(main())
