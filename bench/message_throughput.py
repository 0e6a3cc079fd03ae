"""Message throughput: many messages over many groups through the agent's loop with a trivial backend.

A real platform and agent (``agentlite.create``, SQLite store, channel manager, message loop, group
queue, event hub, IPC watcher and scheduler all running) but no boxes: the agent's per-turn step
``_run_turn`` is replaced on the instance by a coroutine that notes which messages its prompt
carried, sends ``ok`` through the turn's ``deliver`` and returns ``"success"``. Everything before
and after the turn (storing, polling, cursors, in-flight records, prompt building, typing, replies,
events) is the platform's own code.

``--groups`` chats are registered with ``requires_trigger=False``. ``--messages`` messages are
pushed round-robin over them through ``ChannelConfig.deliver``, yielding to the event loop after
each one, as a channel's read loop does between network reads. The clock runs from the first
``deliver`` until every message has been seen in some turn's prompt; if no new message shows up
for ``STALL_SECONDS`` (more than the loop's 2 s poll interval), the run stops and the messages that
never reached a turn are reported as stranded.

Message timestamps (``--timestamps``):

* ``unique`` (default): each message gets its own millisecond (the wall clock, bumped forward when
  two messages would share one), so the loop's ``timestamp > cursor`` queries can see every message.
* ``wallclock``: ``now_iso()`` at delivery, as the bundled channels stamp messages; at this rate
  many messages share a millisecond.

The store's share: every method of the agent's ``AgentStore`` instance is wrapped with a timer
(outermost calls add up to the store total, so nested calls such as ``get_state`` inside
``get_json_state`` are not counted twice). The timers themselves cost well under a microsecond a
call. ``--profile`` instead runs the same workload under cProfile (without the store timers) and prints
the loop's hot spots (slower; its timings are not the benchmark's).

Run: ``.venv/bin/python bench/message_throughput.py [--messages 10000] [--groups 100]
[--timestamps unique|wallclock] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agentlite
from agentlite.platform.store import AgentStore, Message, now_iso
from agentlite.run.turn import TurnResult

STALL_SECONDS = 5.0
TOKEN = re.compile(r">msg-(\d+)</message>")
TOP_METHODS = 8


class BenchChannel:
    """A channel driver owning ``bench:`` chats; counts what the agent sends."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.name = "bench"
        self.is_connected = False
        self.sent = 0

    async def connect(self) -> None:
        self.is_connected = True

    async def disconnect(self) -> None:
        self.is_connected = False

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith("bench:")

    async def set_typing(self, chat_id: str, on: bool) -> None:
        return None

    async def send_message(self, chat_id: str, text: str) -> None:
        self.sent += 1


class StoreTimer:
    """Wall time spent in the methods of one ``AgentStore`` instance."""

    def __init__(self) -> None:
        self.depth = 0
        self.total = 0.0
        #: name -> [outermost calls, outermost seconds, nested calls, nested seconds]
        self.methods: dict[str, list[float]] = {}

    def install(self, store: AgentStore) -> None:
        for name, member in vars(AgentStore).items():
            if name.startswith("__") or name == "close":
                continue
            if isinstance(member, staticmethod | classmethod) or callable(member):
                setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        entry = self.methods.setdefault(name, [0, 0.0, 0, 0.0])

        def timed(*args: Any, **kwargs: Any) -> Any:
            outermost = self.depth == 0
            self.depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                self.depth -= 1
                if outermost:
                    entry[0] += 1
                    entry[1] += spent
                    self.total += spent
                else:
                    entry[2] += 1
                    entry[3] += spent

        return timed


class Tracker:
    """Which messages reached a turn, and when the last new one did."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen: set[int] = set()
        self.duplicates = 0
        self.turns = 0
        self.largest_batch = 0
        self.last_progress = time.perf_counter()
        self.done = asyncio.Event()

    def saw(self, prompt: str) -> None:
        ids = [int(x) for x in TOKEN.findall(prompt)]
        self.turns += 1
        self.largest_batch = max(self.largest_batch, len(ids))
        before = len(self.seen)
        self.seen.update(ids)
        self.duplicates += len(ids) - (len(self.seen) - before)
        if len(self.seen) > before:
            self.last_progress = time.perf_counter()
        if len(self.seen) >= self.total:
            self.done.set()


class UniqueStamps:
    """ISO timestamps, one distinct millisecond per call, never behind the wall clock."""

    def __init__(self) -> None:
        self.last_ms = 0

    def __call__(self) -> str:
        ms = max(time.time_ns() // 1_000_000, self.last_ms + 1)
        self.last_ms = ms
        moment = datetime.fromtimestamp(ms // 1000, UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


async def workload(
    root: Path, messages: int, groups: int, stamps: Callable[[], str], profiler: cProfile.Profile | None
) -> dict[str, Any]:
    platform = await agentlite.create(workdir=root / "data", runtime="sandbox", timezone="UTC")
    try:
        holder: dict[str, BenchChannel] = {}

        def factory(config: Any) -> BenchChannel:
            holder["channel"] = BenchChannel(config)
            return holder["channel"]

        agent = await platform.get_or_create_agent(
            "bench", backend={"type": "codex"}, channels={"bench": factory}
        )
        tracker = Tracker(messages)

        async def trivial_turn(
            group: Any, prompt: str, deliver: Callable[[str], Any], **options: Any
        ) -> TurnResult:
            tracker.saw(prompt)
            await deliver("ok")
            return TurnResult(status="success", result="ok")

        agent._run_turn = trivial_turn
        await agent.start()
        channel = holder["channel"]
        jids = [f"bench:g{i:04d}" for i in range(groups)]
        for i, jid in enumerate(jids):
            agent.register_group(jid, name=f"group {i}", folder=f"g{i:04d}", requires_trigger=False)
        polls = [0]
        loop = agent.message_loop  # it calls self.poll_once each round
        original_poll = loop.poll_once

        async def counted_poll() -> None:
            polls[0] += 1
            await original_poll()

        loop.poll_once = counted_poll  # type: ignore[method-assign]
        timer = StoreTimer()
        if profiler is None:  # under cProfile the timers would only add noise to the profile
            timer.install(agent.store)
        batch = [
            Message(
                id=f"m{i}",
                chat_id=jids[i % groups],
                sender="u1",
                sender_name="U1",
                content=f"msg-{i}",
                timestamp="",
            )
            for i in range(messages)
        ]
        deliver = channel.config.deliver
        last_stamp: dict[str, str] = {}
        await asyncio.sleep(0.2)  # let start-up settle (first poll, IPC and scheduler loops)
        polls[0] = 0
        if profiler is not None:
            profiler.enable()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for message in batch:
            message.timestamp = stamps()
            last_stamp[message.chat_id] = message.timestamp
            await deliver(message.chat_id, message)
            await asyncio.sleep(0)
        delivered = time.perf_counter()
        while not tracker.done.is_set():
            waited = time.perf_counter() - tracker.last_progress
            if waited >= STALL_SECONDS:
                break
            try:
                await asyncio.wait_for(tracker.done.wait(), STALL_SECONDS - waited)
            except TimeoutError:
                pass
        end = tracker.last_progress if not tracker.done.is_set() else time.perf_counter()
        cpu = time.process_time() - cpu0
        if profiler is not None:
            profiler.disable()
        # Each group's answered cursor, as the turn book keeps it in the store.
        cursors = agent.store.get_json_state("last_agent_timestamp", {})
        covered = sum(1 for jid in jids if cursors.get(jid, "") >= last_stamp[jid])
        result = {
            "elapsed": end - t0,
            "deliver_phase": delivered - t0,
            "cpu": cpu,
            "store_total": timer.total,
            "methods": timer.methods,
            "seen": len(tracker.seen),
            "duplicates": tracker.duplicates,
            "turns": tracker.turns,
            "largest_batch": tracker.largest_batch,
            "replies": channel.sent,
            "polls": polls[0],
            "covered": covered,
            "stalled": not tracker.done.is_set(),
            "distinct_stamps": len({m.timestamp for m in batch}),
        }
        await agent.stop()
        return result
    finally:
        await platform.close()


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    n, elapsed = args.messages, r["elapsed"]
    print(
        f"message throughput: {n} messages over {args.groups} groups (requires_trigger=False), trivial"
        f" in-process turn, timestamps={args.timestamps}"
    )
    print(f"messages/s                      {r['seen'] / elapsed:>12.0f}")
    print(f"total time                      {elapsed * 1000:>12.1f} ms  (CPU {r['cpu'] * 1000:.1f} ms)")
    print(f"  of which pushing (deliver)    {r['deliver_phase'] * 1000:>12.1f} ms")
    if not args.profile:
        share = r["store_total"] / elapsed * 100
        print(
            f"store time                      {r['store_total'] * 1000:>12.1f} ms  ({share:.1f}% of the total)"
        )
    print(f"turns (replies sent)            {r['turns']:>12d}  ({r['replies']} replies)")
    print(
        f"messages per turn               {r['seen'] / max(r['turns'], 1):>12.1f}  (largest {r['largest_batch']})"
    )
    print(f"loop polls                      {r['polls']:>12d}")
    print(f"distinct message timestamps     {r['distinct_stamps']:>12d}")
    stranded = n - r["seen"]
    print(
        f"messages that reached a turn    {r['seen']:>12d}  (stranded {stranded}, seen twice {r['duplicates']})"
    )
    print(f"groups whose cursor covers their last message: {r['covered']}/{args.groups}")
    if r["stalled"]:
        print(f"  stopped: no message reached a turn for {STALL_SECONDS:g} s")
    if args.profile:
        return
    print("top store methods by time (outermost calls):")
    print(f"  {'method':<24}{'calls':>8}{'ms':>10}{'us/call':>10}{'% total':>9}")
    rows = sorted(r["methods"].items(), key=lambda kv: kv[1][1], reverse=True)
    for name, (calls, seconds, _, _) in rows[:TOP_METHODS]:
        if calls:
            print(
                f"  {name:<24}{int(calls):>8d}{seconds * 1000:>10.1f}{seconds / calls * 1e6:>10.1f}"
                f"{seconds / elapsed * 100:>8.1f}%"
            )
    nested = [(name, m) for name, m in r["methods"].items() if m[2]]
    if nested:
        print("  nested inside the above:")
        for name, (_, _, calls, seconds) in sorted(nested, key=lambda kv: kv[1][3], reverse=True):
            print(f"  {'  ' + name:<24}{int(calls):>8d}{seconds * 1000:>10.1f}{seconds / calls * 1e6:>10.1f}")


async def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="agentlite-bench-throughput-"))
    stamps: Callable[[], str] = UniqueStamps() if args.timestamps == "unique" else now_iso
    profiler = cProfile.Profile() if args.profile else None
    try:
        result = await workload(root, args.messages, args.groups, stamps, profiler)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(args, result)
    if profiler is not None:
        for title, key, restriction in (
            ("top 15 functions by own time", "tottime", ()),
            ("top 15 agentlite functions by cumulative time", "cumulative", ("agentlite/",)),
        ):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(*restriction, 15)
            body = out.getvalue()
            table = body[body.index("   ncalls") :] if "   ncalls" in body else body
            print(f"cProfile (under the profiler, so slower): {title}")
            print(table.rstrip())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Messages through the agent's loop with a trivial backend.")
    parser.add_argument("--messages", type=int, default=10_000, help="messages to push (default 10000)")
    parser.add_argument("--groups", type=int, default=100, help="groups to spread them over (default 100)")
    parser.add_argument("--timestamps", choices=("unique", "wallclock"), default="unique",
                        help="unique ms per message (default), or now_iso() at delivery like the channels")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print hot spots")
    args = parser.parse_args()
    if args.messages < 1 or args.groups < 1:
        parser.error("--messages and --groups must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
