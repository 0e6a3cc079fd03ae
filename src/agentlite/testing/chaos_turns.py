"""Chaos harness for turns: ``python -m agentlite.testing.chaos_turns --trials N``.

Each trial is one chat message on a fresh platform (sandbox boxes, the codex CLI, the scripted
model on 127.0.0.1 with a random delay of 0.5 to 3 s per call). A first host process says the
message and is killed with SIGKILL at a random point of the turn: at a random time into it, at a
random time into its model call (its box runs on and is adopted), inside the channel's send (the
final is in the ledger, not yet delivered), or not at all. A second host then
starts on the same workdir and runs until the message is answered and nothing is in flight. Every
reply either host sent is appended to a file; after the trial:

* ``lost``: the message got no reply;
* ``duplicated``: it got more than one;
* ``left``: a box or an ownership record of the trial is still there.

It prints ``N trials: X lost, Y duplicated, Z left`` (target 0, 0, 0) and exits 1 when any is
not 0. Needs the agent CLIs (``scripts/install.sh``) and the sandbox runtime.

The same module is the host process (``python -m agentlite.testing.chaos_turns host ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

REPLY = "hi from the offline model"
CHAT = "t:main"


async def _host(args: argparse.Namespace) -> int:
    import agentlite
    from agentlite.box.ownership import RecordStore
    from agentlite.platform.layout import PlatformPaths
    from agentlite.platform.store import Message, now_iso
    from agentlite.testing.channels import RecordingChannels

    def kill_self(_chat_id: str, _text: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # between the run ledger and the chat

    channels = RecordingChannels(name="chaos", replies_file=Path(args.replies),
                                 before_send=kill_self if args.kill_on_send else None)  # fmt: skip

    workdir = Path(args.workdir)
    async with await agentlite.create(workdir=workdir, runtime="sandbox", idle_timeout=30) as platform:
        backend = {"type": "codex", "base_url": args.base_url, "max_retries": 0}
        agent = await platform.get_or_create_agent("chaos", backend=backend, channels={"chaos": channels})
        await agent.start()
        if CHAT not in agent.registered_groups():
            agent.register_group(CHAT, name="main", folder="main", is_main=True)
        if args.send:
            message = Message(id=f"m-{time.time_ns()}", chat_id=CHAT, sender="u1", sender_name="U1",
                              content="please answer", timestamp=now_iso())  # fmt: skip
            await channels.channel.config.deliver(CHAT, message)
        print("ready", flush=True)
        records = RecordStore(PlatformPaths(workdir).box_home)
        deadline = time.monotonic() + args.timeout
        # Settled: a run exists, none is unfinished, the message is answered, no box record is left.
        while time.monotonic() < deadline:
            if (
                agent.store.runs.list()
                and not agent.store.runs.unfinished()
                and not agent._loop.has_unanswered(CHAT)
                and not records.record_names()
            ):
                break
            await asyncio.sleep(0.1)  # polling the agent's state with a deadline
        await agent.stop()
    print("settled", flush=True)
    return 0


async def _start_host(workdir: Path, base_url: str, replies: Path, *, send: bool, kill_on_send: bool,
                      log: Path) -> asyncio.subprocess.Process:  # fmt: skip
    argv = [sys.executable, "-m", "agentlite.testing.chaos_turns", "host", "--workdir", str(workdir), "--base-url", base_url,
            "--replies", str(replies)]  # fmt: skip
    argv += ["--send"] if send else []
    argv += ["--kill-on-send"] if kill_on_send else []
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 120)
    return proc


async def _trial(root: Path, trial: int, rng: random.Random, quiet: bool) -> tuple[int, int, int]:
    from agentlite.box.ownership import RecordStore
    from agentlite.box.sandbox import SandboxRuntime
    from agentlite.offline.model_server import ModelServer
    from agentlite.platform.layout import PlatformPaths

    workdir = root / f"trial-{trial}"
    replies = root / f"trial-{trial}.replies"
    log = root / f"trial-{trial}.log"
    delay = rng.uniform(0.5, 3.0)
    # timed: at a random time into the turn; in_call: while the model call is open (the box runs on
    # and is adopted); on_send: between the ledger and the chat; none: the first host finishes.
    strike = rng.choice(("timed", "timed", "in_call", "in_call", "on_send", "none"))
    kill_after = rng.uniform(0.0, delay + 2.0) if strike == "timed" else rng.uniform(0.0, delay * 0.8)
    async with ModelServer(scenario="text", delay=delay) as model:
        first = await _start_host(workdir, model.openai_base_url, replies, send=True,
                                  kill_on_send=strike == "on_send", log=log)  # fmt: skip
        if strike == "in_call":
            calls_before = time.monotonic() + 120
            while time.monotonic() < calls_before:
                if any(r.path == "/v1/responses" for r in model.requests):
                    break
                await asyncio.sleep(0.02)  # polling the model server's log with a deadline
        if strike in ("timed", "in_call"):
            try:
                await asyncio.wait_for(first.wait(), kill_after)
            except TimeoutError:
                first.kill()
        await asyncio.wait_for(first.wait(), 300)
        second = await _start_host(
            workdir, model.openai_base_url, replies, send=False, kill_on_send=False, log=log
        )
        assert second.stdout is not None
        await asyncio.wait_for(second.stdout.read(), 300)
        await second.wait()
    texts = (
        [json.loads(line)["text"] for line in replies.read_text().splitlines()] if replies.exists() else []
    )
    box_home = PlatformPaths(workdir).box_home
    boxes = await SandboxRuntime(box_home).list()
    left = len(boxes) + len(RecordStore(box_home).record_names())
    lost, duplicated = int(not texts), int(len(texts) > 1)
    if not quiet:
        print(f"trial {trial}: strike={strike} after={kill_after:.2f}s delay={delay:.2f}s replies={len(texts)} "
              f"left={left}", file=sys.stderr)  # fmt: skip
    return lost, duplicated, int(left > 0)


async def _harness(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    totals = [0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="agentlite-chaos-turns-") as tmp:
        for trial in range(args.trials):
            for i, value in enumerate(await _trial(Path(tmp), trial, rng, args.quiet)):
                totals[i] += value
    lost, duplicated, left = totals
    print(f"{args.trials} trials: {lost} lost, {duplicated} duplicated, {left} left")
    return 0 if totals == [0, 0, 0] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentlite.testing.chaos_turns", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    host = sub.add_parser("host", help="one host process (used by the harness)")
    host.add_argument("--workdir", required=True)
    host.add_argument("--base-url", required=True)
    host.add_argument("--replies", required=True)
    host.add_argument("--send", action="store_true")
    host.add_argument("--kill-on-send", action="store_true")
    host.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "host":
        return asyncio.run(_host(args))
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return asyncio.run(_harness(args))


if __name__ == "__main__":
    sys.exit(main())
