"""A box's life around one command, and the sweep that reaps boxes whose owner is gone.

Order matters and is the point of this module:

* the ownership record is published *before* the box is created, so no other host can ever see
  our box without an owner, and it is deleted if creation fails;
* after that, every path out (normal exit, exec failure, stdin failure, hard timeout, an exception
  in the caller's output handler, cancellation) removes the box and then deletes the record;
* :func:`cleanup_orphans` removes a box only when its record says the owner is gone, and deletes
  that record even when the removal fails. It also reaps untracked boxes (processes of ours whose
  state was lost, :meth:`BoxRuntime.untracked`), and removes no record-less box while the records
  folder is missing or was just re-created (a tmp cleaner deleted it; live owners re-create their
  records within a heartbeat).

Timeouts hold whatever the command leaves behind: at the deadline the whole box is stopped (not just
the command), and when the command exits its output is read until quiet (:data:`DRAIN_SECONDS`)
before the box goes, so a background child holding the pipes never delays the end for long nor
hides the exit code.
Every teardown step is bounded in time (:data:`TEARDOWN_SECONDS`) and logs what it gave up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentlite.box.base import BoxProcess, BoxRuntime, BoxSpec
from agentlite.box.cleanup_report import CleanupDecision, CleanupReport
from agentlite.box.ownership import STALE_AFTER, Judgement, LeaseState, RecordStore, ownership_for
from agentlite.box.procs import one_scan_per_pass
from agentlite.core.errors import (
    AgentliteError,
    BoxExecFailed,
    BoxExists,
    BoxNotFound,
    BoxStartFailed,
    ConfigError,
)
from agentlite.core.names import check_agent_id

log = logging.getLogger("agentlite.lifecycle")
#: ``(box home, box name) -> run id`` of the turn a starting agent would adopt the box for, or None.
AdoptableRun = Callable[[Path, str], str | None]

OutputHandler = Callable[[bytes], Awaitable[None] | None]
#: After the command exits, its output is read until it has been quiet this long (what a background
#: child keeps open then is dropped with the box) ...
DRAIN_SECONDS = 1.5
#: ... or, for output that never stops (a background child writing on), this long at most.
DRAIN_CAP_SECONDS = 30.0
#: The most one teardown step (killing the command, removing the box) may take before we give up.
TEARDOWN_SECONDS = 30.0


def box_prefix(agent_id: str | None) -> str:
    return f"agentlite-{agent_id}-" if agent_id else "agentlite-"


def box_name(agent_id: str | None, group: str, epoch_ms: int | None = None) -> str:
    """``agentlite-<agent id>-<safe group>-<epoch ms>`` (the reference's naming)."""
    safe_group = re.sub(r"[^A-Za-z0-9-]", "-", group) or "group"
    ms = int(time.time() * 1000) if epoch_ms is None else epoch_ms
    return f"{box_prefix(agent_id)}{safe_group}-{ms}"


# -- hard timeout ---------------------------------------------------------------------------------


class Deadline:
    """A hard timeout that a run can push back (the run layer re-arms it on every parsed event)."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {seconds:g}")
        self.seconds = seconds
        self._at = None if seconds is None else time.monotonic() + seconds

    def rearm(self) -> None:
        if self.seconds is not None:
            self._at = time.monotonic() + self.seconds

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())


# -- one command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """How a command in a box ended."""

    box: str
    #: The command's exit code; negative when a signal ended it (for example after a timeout).
    exit_code: int
    timed_out: bool
    duration: float


async def run_in_box(
    runtime: BoxRuntime,
    home: Path,
    argv: Sequence[str],
    *,
    agent_id: str = "cli",
    group: str = "main",
    spec: BoxSpec | None = None,
    stdin: bytes | None = None,
    on_stdout: OutputHandler | None = None,
    on_stderr: OutputHandler | None = None,
    deadline: Deadline | None = None,
    on_box: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run ``argv`` in a fresh box owned by this process, then remove the box and its record.

    Output handlers are called one line at a time, in order, one call at a time per stream. If a
    handler raises, the command is killed and the first such exception is re-raised after teardown.
    Raises :class:`BoxStartFailed` or :class:`BoxExecFailed` when the box or command cannot start.
    """
    check_agent_id(agent_id)
    spec = spec or BoxSpec()
    deadline = deadline or Deadline(None)
    ownership = ownership_for(home)
    name = await claim_box_name(runtime, ownership, agent_id, group)
    started = time.monotonic()
    try:
        await runtime.create(name, spec)
    except BaseException as exc:
        ownership.unregister(name)
        if isinstance(exc, AgentliteError | asyncio.CancelledError | KeyboardInterrupt):
            raise
        raise BoxStartFailed(name, f"Box creation failed: {exc}") from exc
    if on_box is not None:
        on_box(name)
    proc: BoxProcess | None = None
    try:
        try:
            proc = await runtime.exec(name, argv)
        except AgentliteError:
            raise
        except Exception as exc:
            raise BoxExecFailed(name, f"Failed to start command in `{name}`: {exc}") from exc
        try:
            if stdin:
                await proc.write_stdin(stdin)
            await proc.close_stdin()
        except (OSError, RuntimeError) as exc:
            raise BoxExecFailed(name, f"Failed to write stdin to `{name}`: {exc}") from exc
        exit_code, timed_out = await _supervise(
            proc, on_stdout, on_stderr, deadline, stop_box=lambda: runtime.stop(name)
        )
        return CommandResult(name, exit_code, timed_out, time.monotonic() - started)
    finally:
        await shielded(teardown_box(runtime, ownership, name, proc))


async def claim_box_name(runtime: BoxRuntime, ownership: Any, agent_id: str, group: str) -> str:
    """A new box name for ``agent_id``/``group`` whose ownership record is published (see the module)."""
    ms = int(time.time() * 1000)
    for bump in range(1000):
        name = box_name(agent_id, group, ms + bump)
        try:
            ownership.register(name, box_home=runtime.box_home)
        except FileExistsError:
            continue
        if await runtime.get(name) is None:
            return name
        ownership.unregister(name)
    raise BoxExists(name, f"no free box name for agent `{agent_id}` group `{group}`")


async def _supervise(
    proc: BoxProcess,
    on_stdout: OutputHandler | None,
    on_stderr: OutputHandler | None,
    deadline: Deadline,
    stop_box: Callable[[], Awaitable[None]] | None = None,
) -> tuple[int, bool]:
    handler_error: list[BaseException] = []
    last_progress = time.monotonic()

    async def pump(lines: AsyncIterator[bytes], handler: OutputHandler | None) -> None:
        nonlocal last_progress
        async for line in lines:
            last_progress = time.monotonic()
            if handler is None or handler_error:
                continue  # keep draining so the command never blocks on a full pipe
            try:
                result = handler(line)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                handler_error.append(exc)
                await proc.kill()
            last_progress = time.monotonic()  # a slow handler is progress too, not a stall

    pumps = asyncio.gather(pump(proc.stdout_lines(), on_stdout), pump(proc.stderr_lines(), on_stderr))
    exited = asyncio.ensure_future(proc.wait())
    timed_out = False
    try:
        # Until the command exits (or, for a command that closed its output, until it exits too).
        while not exited.done():
            waiting = {exited} if pumps.done() else {exited, pumps}
            await asyncio.wait(waiting, timeout=deadline.remaining(), return_when=asyncio.FIRST_COMPLETED)
            if not exited.done() and deadline.remaining() == 0:
                timed_out = True
                break
        if timed_out:
            log.warning("box run timed out after %ss; stopping the box", deadline.seconds)
            await _bounded(_stop_everything(proc, stop_box), "stopping the timed-out box")
        # What the command wrote before it ended, until the output goes quiet: a background child
        # may keep the pipes open for ever.
        last_progress = time.monotonic()
        drain_cap = last_progress + DRAIN_CAP_SECONDS
        while not pumps.done():
            left = min(last_progress + DRAIN_SECONDS, drain_cap) - time.monotonic()
            if left <= 0:
                log.info("output still open after the command ended; closing it with the box")
                break
            await asyncio.wait({pumps}, timeout=left)
        if pumps.done():
            pumps.result()
    finally:
        for task in (pumps, exited):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    exit_code = exited.result() if exited.done() and not exited.cancelled() else -9
    if handler_error:
        raise handler_error[0]
    return exit_code, timed_out


async def _stop_everything(proc: BoxProcess, stop_box: Callable[[], Awaitable[None]] | None) -> None:
    # The command first, so its exit code says it was killed; then the whole box, because the
    # command's own kill misses what it started in another session or process group.
    await proc.kill()
    if stop_box is not None:
        try:
            await stop_box()
        except Exception as exc:
            log.warning("could not stop the timed-out box: %s", exc)


async def _bounded(work: Awaitable[None], what: str, seconds: float | None = None) -> bool:
    """Await ``work`` for at most ``seconds`` (default :data:`TEARDOWN_SECONDS`); log an error and
    go on when it takes longer."""
    seconds = TEARDOWN_SECONDS if seconds is None else seconds
    try:
        await asyncio.wait_for(work, seconds)
        return True
    except TimeoutError:
        log.error(
            "%s did not finish in %.0f s; giving up (the next cleanup reaps what is left)", what, seconds
        )
        return False


async def teardown_box(runtime: BoxRuntime, ownership: Any, name: str, proc: BoxProcess | None) -> None:
    """Kill ``proc`` and remove the box (each step bounded; a failure is logged), then delete its record."""
    try:
        if proc is not None:
            await _bounded(proc.kill(), f"killing the command in box `{name}`")
        await _bounded(runtime.remove(name, force=True), f"removing box `{name}`")
    except BoxNotFound:
        pass
    except Exception as exc:
        # The record goes anyway: an unowned box is exactly what the next cleanup reaps.
        log.warning("teardown could not remove box=%s error=%s", name, exc)
    finally:
        ownership.unregister(name)


async def shielded(coro: Coroutine[Any, Any, None]) -> None:
    """Run cleanup to the end even if the caller is cancelled, then let the cancellation through.

    ``coro`` must bound its own steps (see :func:`_bounded`); this adds an outer bound so a caller
    is never held longer than twice :data:`TEARDOWN_SECONDS` plus a margin.
    """
    task = asyncio.ensure_future(coro)
    cancelled = False
    give_up_at = time.monotonic() + 2 * TEARDOWN_SECONDS + 10
    while not task.done():
        left = give_up_at - time.monotonic()
        if left <= 0:
            log.error("cleanup did not finish in %.0f s; leaving it to run on", 2 * TEARDOWN_SECONDS + 10)
            break
        try:
            await asyncio.wait_for(asyncio.shield(task), left)
        except TimeoutError:
            continue
        except asyncio.CancelledError:
            cancelled = True
    if task.done():
        task.result()
    if cancelled:
        raise asyncio.CancelledError


# -- orphan cleanup -------------------------------------------------------------------------------


async def cleanup_orphans(
    runtime: BoxRuntime,
    home: Path,
    agent_id: str | None = None,
    *,
    include_live: bool = False,
    dry_run: bool = False,
    only: str | None = None,
    stale_after: float = STALE_AFTER,
    adoptable: AdoptableRun | None = None,
) -> CleanupReport:
    """Remove this agent's boxes whose owner is gone; keep those of live owners. Never raises: a
    failure of the sweep itself is logged with its reason and reported as ``error`` (counted in
    ``failed``), with the decisions made before it.

    ``include_live`` removes every box of the agent (agent deletion). Stopped boxes and records
    without a box are removed too when their owner is gone, so nothing is left behind. ``only``:
    decide for that one box name (and its record) alone, by the same rules (the dashboard's remove).
    ``stale_after``: the heartbeat age that makes a record old (see :class:`RecordStore`).
    ``adoptable``: the platform's answer to "which run would a starting agent adopt this running
    box for" (``None``: none); such a box is kept for its agent's next start.
    """
    report = CleanupReport()
    try:
        # Finding untracked boxes and reaping each scans for the same marked processes: once.
        with one_scan_per_pass():
            await _cleanup(
                report, runtime, home, agent_id, include_live, dry_run, only, stale_after, adoptable
            )
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        log.warning("orphan cleanup failed agent=%s error=%s", agent_id, report.error)
    return report


async def _cleanup(
    decisions: CleanupReport, runtime: BoxRuntime, home: Path, agent_id: str | None, include_live: bool,
    dry_run: bool, only: str | None = None, stale_after: float = STALE_AFTER,
    adoptable: AdoptableRun | None = None,
) -> None:  # fmt: skip
    prefix = box_prefix(agent_id)

    def wanted(name: str) -> bool:
        return name.startswith(prefix) and (only is None or name == only)

    store = RecordStore(home, stale_after=stale_after)
    ownership = ownership_for(home)
    leases: dict[str, LeaseState] = {}
    now = time.time()
    boxes = [b for b in await runtime.list() if wanted(b.name)]
    listed = {b.name for b in boxes}
    untracked = [n for n in await runtime.untracked() if wanted(n) and n not in listed]
    for box in boxes:
        judgement = store.judge(box.name, lease_cache=leases)
        if include_live:
            # One box named by an operator (the dashboard), else every box of a deleted agent.
            reason = f"{'operator request' if only else 'agent deleted'} ({judgement.reason})"
        elif judgement.verdict.keeps_box:
            decisions.append(
                CleanupDecision(box.name, "keep", f"kept: {judgement.reason}", verdict=judgement.verdict)
            )
            continue
        elif store.read_raw(box.name) is None and store.may_have_lost_record(box.created_at, now):
            # A tmp cleaner deleted the records folder: its live owner puts the record back soon.
            decisions.append(CleanupDecision(box.name, "keep", f"kept: {_UNSURE}", verdict=judgement.verdict))
            continue
        elif box.running and adoptable is not None and (run_id := adoptable(home, box.name)) is not None:
            # Its owner is gone but its runner lives on a turn the ledger holds: the agent's next
            # start adopts it (the platform's adoption) instead of running the message again.
            why = f"kept: adoptable (run {run_id}; {judgement.reason}): the agent's next start adopts it"
            decisions.append(CleanupDecision(box.name, "keep", why, verdict=judgement.verdict))
            continue
        else:
            reason = judgement.reason if box.running else f"box {box.state}, {judgement.reason}"
        decisions.append(await _remove(runtime, ownership, store, box.name, reason, judgement, dry_run))
    for name in untracked:
        judgement = store.judge(name, lease_cache=leases)
        unsure = store.read_raw(name) is None and store.may_have_lost_record(None, now)
        if not include_live and (judgement.verdict.keeps_box or unsure):
            why = _UNSURE if unsure else judgement.reason
            decisions.append(
                CleanupDecision(name, "keep", f"kept: untracked, {why}", verdict=judgement.verdict)
            )
            continue
        reason = f"untracked (box processes without state), {judgement.reason}"
        decisions.append(await _remove(runtime, ownership, store, name, reason, judgement, dry_run))
    # BoxLite keeps each host's boxes in a home of its own: visit the other hosts' homes too.
    decisions += await _sweep_other_homes(runtime, prefix, include_live, dry_run, only)
    listed |= set(untracked) | {d.name for d in decisions}
    for record_name in store.record_names():
        if not wanted(record_name) or record_name in listed:
            continue
        judgement = store.judge(record_name, lease_cache=leases)
        if judgement.verdict.keeps_box and not include_live:
            continue  # a live host publishes its record just before it creates the box
        decisions.append(
            await _remove(
                runtime,
                ownership,
                store,
                record_name,
                f"record without a box, {judgement.reason}",
                judgement,
                dry_run,
                box_exists=False,
            )
        )
    if not dry_run:
        store.sweep_leases()
        store.sweep_temp_files()
    log.info("orphan cleanup agent=%s removed=%d kept=%d failed=%d dry_run=%s", agent_id or "*",
             decisions.removed, decisions.kept, decisions.failed, dry_run)  # fmt: skip


async def _sweep_other_homes(
    runtime: BoxRuntime, prefix: str, include_live: bool, dry_run: bool, only: str | None
) -> list[CleanupDecision]:
    sweep = runtime.sweep_other_homes
    if only is None:
        return list(await sweep(prefix, include_live=include_live, dry_run=dry_run))
    # The other homes' sweep matches a prefix: act only when the one name prefixes no other box.
    planned = [
        d for d in await sweep(only, include_live=include_live, dry_run=True) if d.name.startswith(only)
    ]
    if dry_run:
        return [d for d in planned if d.name == only]
    if any(d.name != only for d in planned):
        why = "not removed: other boxes' names start with this one (remove it with `agentlite cleanup`)"
        return [replace(d, action="keep", reason=why) for d in planned if d.name == only]
    return list(await sweep(only, include_live=include_live, dry_run=False))


_UNSURE = "no record, but the records folder is missing or newer than the box (a tmp cleaner?)"


async def _remove(
    runtime: BoxRuntime,
    ownership: Any,
    store: RecordStore,
    name: str,
    reason: str,
    judgement: Judgement,
    dry_run: bool,
    *,
    box_exists: bool = True,
) -> CleanupDecision:
    if dry_run:
        return CleanupDecision(name, "remove", f"would remove: {reason}", verdict=judgement.verdict)
    error = None
    removed = False
    try:
        if box_exists:
            await runtime.remove(name, force=True)
        removed = True
    except BoxNotFound:
        removed = True  # it went away by itself in the meantime
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("cleanup could not remove box=%s error=%s", name, error)
    finally:
        # Always, even when removal failed: the box may have exited; a stale record helps nobody.
        if ownership.owns(name):
            ownership.unregister(name)
        else:
            store.delete(name)
    return CleanupDecision(name, "remove", f"removed: {reason}", removed, error, judgement.verdict)
