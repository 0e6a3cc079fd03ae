"""Re-adoption at start: a host restart is a pause, not a lost turn.

Before its orphan sweep, a starting agent looks at the ledger's unfinished runs
(:func:`decide_runs`):

* ``final_ready``: the final was written but not delivered; it is delivered now, once.
* ``starting`` / ``running`` on a box that still runs, whose owner is gone and whose runner is
  alive (it holds the lock on its journal, :func:`agentlite.run.journal.runner_alive`): **adopted**.
  The ledger's token is replaced in one guarded update (a second starting host loses that race),
  then the ownership record is taken over in one rename (new owner, new lease, same box), so the
  sweep that follows sees a live owner. :func:`follow_adopted` then replays the run's journal,
  follows it to the final, writes the final to the ledger and delivers it once, and closes the box.
* anything else (no box, a stopped box, a dead runner, adoption turned off): ``abandoned``; the
  sweep reaps the box and the message loop's in-flight record rolls the cursor back, so the message
  is answered by a new run.

The box needs nothing else from its old host: its network helpers outlive the host
(:mod:`agentlite.box.boxnet`), the model endpoint is reached through them, and events travel
through the journal, not the dead host's pipe. The actions server is the new host's: a tool call
the adopted turn makes with its old token is refused (the turn goes on without that action).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentlite.box.base import BoxRuntime
from agentlite.box.lifecycle import box_prefix
from agentlite.box.ownership import RecordStore, ownership_for
from agentlite.core.errors import BoxNotFound, ConfigError, StoreError
from agentlite.platform.layout import AgentPaths, PlatformPaths
from agentlite.platform.ledger import RunLedger, RunRecord
from agentlite.platform.ledger_turn import add_usage
from agentlite.platform.registry import Registry
from agentlite.platform.store import ReadOnlyDatabase
from agentlite.run.journal import follow_journal, journal_of, runner_alive
from agentlite.run.protocol import ErrorEvent, Event, ResultEvent, UsageEvent, session_id_of

log = logging.getLogger("agentlite.adoption")

#: ``0``/``false``/``no``/``off`` turns adoption off (the old behaviour: reap and run again).
ADOPT_ENV = "AGENTLITE_ADOPT_RUNS"
#: How long an adopted runner gets to end after ``_close`` before its box is removed anyway.
CLOSE_WAIT_SECONDS = 10.0

Action = Literal["deliver", "adopt", "abandon", "leave"]


def adoption_enabled(value: bool | None = None) -> bool:
    """``value`` if given, else :data:`ADOPT_ENV` (default on)."""
    if value is not None:
        return value
    raw = os.environ.get(ADOPT_ENV)
    if raw is None or raw.strip().lower() in ("", "1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ADOPT_ENV}={raw!r}: expected 1/0, true/false, yes/no or on/off")


@dataclass(frozen=True)
class RunDecision:
    run: RunRecord
    action: Action
    reason: str
    #: The new fencing token of an adopted run.
    token: str | None = None


async def judge_run(
    run: RunRecord, runtime: BoxRuntime, box_home: Path, ipc_root: Path
) -> tuple[Action, str]:
    """What a starting host should do with one unfinished run (reads only)."""
    if run.state == "final_ready":
        return "deliver", "final written, not delivered"
    if run.box is None:
        return "abandon", "the host died before its box existed"
    judgement = RecordStore(box_home).judge(run.box)
    if judgement.verdict.keeps_box and (judgement.record is None or judgement.record.pid != os.getpid()):
        return "leave", f"box `{run.box}` has a live owner ({judgement.reason})"
    try:
        info = await runtime.get(run.box)
    except Exception as exc:  # a damaged box state is a box we cannot adopt
        return "abandon", f"box `{run.box}` unreadable: {exc}"
    if info is None:
        return "abandon", f"box `{run.box}` is gone"
    if not info.running:
        return "abandon", f"box `{run.box}` is {info.state}"
    if not runner_alive(journal_of(ipc_root, run)):
        return "abandon", f"the runner in box `{run.box}` is gone"
    return "adopt", f"box `{run.box}` runs on, its runner alive ({judgement.reason})"


async def decide_runs(ledger: RunLedger, runtime: BoxRuntime, box_home: Path, ipc_root: Path, *,
                      enabled: bool = True) -> list[RunDecision]:  # fmt: skip
    """Judge every unfinished run and act on the ledger and ownership records at once (adopt: new
    token and record; abandon: the run's end). Delivering and following are the caller's."""
    decisions: list[RunDecision] = []
    for run in ledger.unfinished():
        action, reason = await judge_run(run, runtime, box_home, ipc_root)
        if action == "adopt" and not enabled:
            action, reason = "abandon", f"adoption is turned off ({ADOPT_ENV}); {reason}"
        if action in ("deliver", "adopt") and run.deliver_to != "chat":
            # The caller that asked (a client on a pipe) went with the old host.
            # Its answer was never the chat's: ending it is all a new host can do.
            ledger.end(
                run.run_id, "failed" if action == "deliver" else "abandoned", "the caller that asked is gone"
            )
            decisions.append(RunDecision(run, "abandon", "the caller that asked is gone"))
            continue
        token = None
        if action == "adopt":
            token = ledger.take_over(run.run_id, run.token)
            if token is None:
                decisions.append(RunDecision(run, "leave", "another host adopted it first"))
                continue
            assert run.box is not None
            ownership_for(box_home).adopt(run.box, box_home=runtime.box_home)
        elif action == "abandon":
            ledger.end(run.run_id, "abandoned", reason)
        log.info("run=%s box=%s %s: %s", run.run_id, run.box, action, reason)
        decisions.append(RunDecision(run, action, reason, token))
    return decisions


def finals_before(ledger: RunLedger, run: RunRecord) -> int:
    """How many finals the box journaled for its earlier runs: a box that answered follow-ups
    journals several turns, and ``run``'s final is the one after theirs."""
    return sum(
        1 for r in ledger.list(group=run.group_folder) if r.box == run.box and r.created_at < run.created_at
    )


@dataclass
class AdoptedReplay:
    """An adopted run's events replayed from the start of its box's stream: the events of the box's
    earlier runs are skipped; this run's are passed on, their usage summed, up to its final."""

    earlier: int
    session_id: str | None
    on_event: Callable[[Event], None] | None = None
    finals: int = 0
    usage: dict[str, Any] | None = None
    final: Event | None = None

    def take(self, event: Event) -> bool:
        """Count one event; ``True`` once it is this run's final."""
        self.session_id = session_id_of(event) or self.session_id
        if self.finals >= self.earlier:
            if isinstance(event, UsageEvent):
                self.usage = add_usage(self.usage, event)
            if self.on_event is not None:
                self.on_event(event)
        if isinstance(event, ResultEvent | ErrorEvent):
            self.finals += 1
            if self.finals == self.earlier + 1:
                self.final = event
                return True
        return False


async def settle_adopted(ledger: RunLedger, run: RunRecord, token: str, replay: AdoptedReplay, offset: int,
                         deliver: Callable[[str], Awaitable[bool]], *, fenced_out: bool = False) -> None:  # fmt: skip
    """Write the adopted run's final (fenced by ``token``) and deliver it once; a run without a
    result (or whose copy was superseded: ``fenced_out``) ends failed."""
    final = replay.final
    if isinstance(final, ResultEvent) and not fenced_out:
        accepted = ledger.accept_final(run.run_id, token, run.box, status="success", text=final.result,
                                       session_id=replay.session_id, journal_offset=offset, usage=replay.usage)  # fmt: skip
        if accepted and (not final.result or await deliver(final.result)):
            ledger.mark_delivered(run.run_id)
        return
    if fenced_out:
        why = "its copy was superseded"
    else:
        why = final.error if isinstance(final, ErrorEvent) else "the run ended without a final"
    ledger.end(run.run_id, "failed", f"adopted run: {why}", token=token)


async def follow_adopted(
    decision: RunDecision, *, ledger: RunLedger, runtime: BoxRuntime, box_home: Path, ipc_root: Path,
    deliver: Callable[[str], Awaitable[bool]], on_event: Callable[[Event], None] | None = None,
    timeout: float = 1800.0,
) -> RunRecord | None:  # fmt: skip
    """Follow an adopted run's journal to its final, write it (fenced) and deliver it once; then
    close the box. ``deliver`` returns whether the text reached the chat. Returns the run's row."""
    run, token = decision.run, decision.token
    assert run.box is not None and token is not None
    path = journal_of(ipc_root, run)
    replay = AdoptedReplay(earlier=finals_before(ledger, run), session_id=run.session_id, on_event=on_event)
    deadline = time.monotonic() + timeout
    offset = 0
    try:
        while replay.final is None:
            entries = await follow_journal(path, offset, alive=lambda: runner_alive(path), deadline=deadline)
            if not entries:
                break
            for entry in entries:
                offset = entry.end
                if replay.take(entry.event):
                    break
            if replay.final is None and (not runner_alive(path) or time.monotonic() > deadline):
                break
        await settle_adopted(ledger, run, token, replay, offset, deliver)
    finally:
        await _close_box(runtime, box_home, ipc_root, run)
    return ledger.get(run.run_id)


async def _close_box(runtime: BoxRuntime, box_home: Path, ipc_root: Path, run: RunRecord) -> None:
    from agentlite.run.runner_input import request_close

    assert run.box is not None
    path = journal_of(ipc_root, run)
    try:
        request_close(ipc_root / run.group_folder)
    except OSError as exc:
        log.warning("could not ask the adopted runner to close box=%s: %s", run.box, exc)
    give_up = time.monotonic() + CLOSE_WAIT_SECONDS
    while time.monotonic() < give_up:  # polling the kernel's lock: the runner's end has no other signal here
        if not runner_alive(path):
            break
        await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(runtime.remove(run.box, force=True), 30)
    except BoxNotFound:
        pass
    except Exception as exc:  # the record goes anyway: the next sweep reaps an unowned box
        log.warning("could not remove adopted box=%s: %s", run.box, exc)
    finally:
        ownership_for(box_home).unregister(run.box)


# -- the "adoptable" verdict for boxes listings and cleanups ----------------------------------------


def adoptable_run(box_home: Path, box_name: str) -> str | None:
    """The run id a starting agent would adopt ``box_name`` for, or None. Reads only (the platform's
    registry and the agent's ledger, opened read-only); the caller knows the owner is gone and the
    box runs. ``box_home`` is a platform's ``<workdir>/.boxlite``; other homes have no ledger."""
    registry_path = PlatformPaths.of_box_home(box_home).registry
    if not registry_path.is_file():
        return None
    try:
        with contextlib.closing(Registry.read_only(registry_path)) as registry:
            owner = next((r for r in registry.list() if box_name.startswith(box_prefix(r.agent_id))), None)
        if owner is None:
            return None
        paths = AgentPaths(Path(owner.workdir))
        if not paths.store.is_file():
            return None
        with ReadOnlyDatabase(paths.store) as store:
            run = RunLedger(store).live_run_on(box_name)
    except StoreError:  # no ledger yet (an older store), or a file we cannot read: not adoptable
        return None
    if run is None:
        return None
    return run.run_id if runner_alive(journal_of(paths.ipc_root, run)) else None
