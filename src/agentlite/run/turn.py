"""The run layer's one way to run a turn: a group's session in, typed events out, one result.

:func:`run_turn` takes the group key, the runner input (prompt and backend config) and a session
store; it resumes the group's session for that backend, streams the runner's events to the
caller, keeps every new session id in the store as it appears, and ends in exactly one
:class:`TurnResult`, whatever happens (a run that raises is a result with status ``error``; only
cancellation propagates). The same model is the ``final`` object ``agentlite run --json`` and
``agentlite host --jsonl`` print, so the final is built in one place.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, PrivateAttr

from agentlite.box.base import BoxRuntime
from agentlite.core.clock import iso_utc
from agentlite.core.errors import RunError, RunTimeout
from agentlite.core.safefs import UnsafePath
from agentlite.run.box_run import RunOutcome, run_agent
from agentlite.run.protocol import ErrorEvent, Event, ResultEvent, RunnerInput, StateEvent, UsageEvent
from agentlite.run.usage_tally import Counts, RunStopped, UsageTally

log = logging.getLogger("agentlite.turn")

TurnEventHandler = Callable[[Event], Awaitable[None] | None]
#: What runs the box part of a turn: :func:`run_agent`'s signature (a placement may run it elsewhere).
AgentRunner = Callable[..., Awaitable[RunOutcome]]


class TurnUsage(BaseModel):
    """Tokens the backend reported for the turn (summed over its usage events)."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    model: str | None = None
    cache_write_tokens: int = 0
    #: USD: the backend's own figure, else the price table's; ``None`` when a model has no price.
    cost_usd: float | None = None

    @classmethod
    def of(cls, tally: UsageTally) -> TurnUsage | None:
        by_model = tally.by_model()
        if not tally.events:
            return None
        total = sum(by_model.values(), Counts())
        model = max(by_model.items(), key=lambda kv: (kv[1].tokens, kv[0]))[0] if by_model else ""
        cost = tally.cost_usd
        return cls(input_tokens=total.input_tokens, output_tokens=total.output_tokens,
                   cached_input_tokens=total.cached_input_tokens, cache_write_tokens=total.cache_write_tokens,
                   model=model or None, cost_usd=None if cost is None else round(cost, 8))  # fmt: skip


class TurnTimings(BaseModel):
    """When the turn ran and how long its parts took, in seconds."""

    model_config = ConfigDict(extra="forbid")

    started_at: str
    #: From the request being accepted to its box being asked for (time spent in the queue).
    queued_s: float = 0.0
    #: From asking for the box to the result.
    run_s: float


class TurnResult(BaseModel):
    """How one turn ended; also the JSONL ``final`` object (``id`` is the request's, if any)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["final"] = "final"
    id: str | int | None = None
    status: Literal["success", "error"]
    result: str | None = None
    error: str | None = None
    session_id: str | None = None
    usage: TurnUsage | None = None
    timings: TurnTimings | None = None
    #: Set when the answer came from the built-in offline demo model (no API key was found).
    offline_demo_model: bool | None = None
    #: (box, seconds) when the box's hard timeout ended the turn; not part of the ``final`` line.
    _timed_out: tuple[str, float] | None = PrivateAttr(default=None)

    @classmethod
    def failed(
        cls, error: str, *, request_id: str | int | None = None, session_id: str | None = None
    ) -> TurnResult:
        """A final for a request that never ran (bad input, a stopped host)."""
        return cls(id=request_id, status="error", error=error, session_id=session_id)

    def raise_for_status(self) -> TurnResult:
        """This result if the turn succeeded; else raise :class:`RunTimeout` (the box's hard timeout
        ended it) or :class:`RunError` naming the turn's error, for a caller that wants exceptions
        rather than checking ``status``."""
        if self.status == "success":
            return self
        if self._timed_out is not None:
            raise RunTimeout(*self._timed_out)
        raise RunError(self.error or "the turn failed")

    def line(self) -> dict[str, Any]:
        """The JSON object written as the ``final`` line."""
        return self.model_dump(mode="json")


class SessionStore(Protocol):
    """Where a group's native session ids live, per backend type (the agent's SQLite store)."""

    def get_session(self, folder: str, backend_type: str) -> str | None: ...

    def set_session(self, folder: str, backend_type: str, session_id: str) -> None: ...


@dataclass(frozen=True)
class GroupKey:
    """Which group's box, session and folders a turn uses."""

    agent_id: str
    folder: str


async def run_turn(
    runtime: BoxRuntime,
    box_home: Path,
    key: GroupKey,
    run_input: RunnerInput,
    sessions: SessionStore | None,
    *,
    on_event: TurnEventHandler | None = None,
    resume: bool = True,
    keep_session: Callable[[], bool] = lambda: True,
    request_id: str | int | None = None,
    accepted_at: float | None = None,
    errors_as_results: bool = True,
    tally: UsageTally | None = None,
    runner: AgentRunner | None = None,
    **run_options: Any,
) -> TurnResult:
    """Run one turn of ``key``'s group and return its one :class:`TurnResult`.

    With ``resume`` the group's stored session for the backend's type is resumed (unless the input
    already names one; without it the turn starts a fresh session). New session ids are written to
    ``sessions`` (``None``: kept nowhere) while ``keep_session()`` holds (the agent's backend may
    switch mid-run). A run that raises is a result with status ``error`` (logged), or with
    ``errors_as_results=False`` the caller's to report. ``run_options`` go to :func:`run_agent`.
    ``tally`` collects the run's usage (priced); its ``on_change`` raising stops the box at once.
    ``runner`` runs the box (default :func:`run_agent`, here; a Ray placement's runs it on a node).
    """
    started = time.time()
    backend_type = run_input.backend.type
    if resume and sessions is not None and run_input.session_id is None:
        run_input = run_input.model_copy(
            update={"session_id": sessions.get_session(key.folder, backend_type)}
        )
    tally = tally if tally is not None else UsageTally()
    errored: str | None = None
    last_session = run_input.session_id

    def remember(session_id: str | None) -> None:
        nonlocal last_session
        if not session_id:
            return
        last_session = session_id
        if sessions is not None and keep_session():
            sessions.set_session(key.folder, backend_type, session_id)

    async def relay(event: Event) -> None:
        nonlocal errored
        if isinstance(event, StateEvent | ResultEvent | ErrorEvent):
            remember(event.new_session_id)
        if isinstance(event, UsageEvent):
            tally.observe(event)  # may raise (a budget crossed): the box is stopped at once
        elif isinstance(event, ErrorEvent):
            errored = event.error
        if on_event is not None:
            outcome = on_event(event)
            if inspect.isawaitable(outcome):
                await outcome

    def timings() -> TurnTimings:
        queued = max(0.0, started - accepted_at) if accepted_at is not None else 0.0
        return TurnTimings(started_at=iso_utc(datetime.fromtimestamp(started, UTC)), queued_s=round(queued, 3),
                           run_s=round(time.time() - started, 3))  # fmt: skip

    def usage() -> TurnUsage | None:
        return TurnUsage.of(tally)

    try:
        outcome: RunOutcome = await (runner or run_agent)(runtime, box_home, run_input, on_event=relay, agent_id=key.agent_id,
                                              group=key.folder, **run_options)  # fmt: skip
    except UnsafePath:
        raise  # the caller reports refused paths in its own terms
    except RunStopped as exc:  # the host stopped the box (a budget reached): the final says why
        return TurnResult(id=request_id, status="error", error=str(exc), session_id=last_session, usage=usage(),
                          timings=timings())  # fmt: skip
    except Exception as exc:  # one turn's failure is its result, never the caller's crash
        if not errors_as_results:
            raise
        log.exception("run failed agent=%s group=%s", key.agent_id, key.folder)
        return TurnResult(id=request_id, status="error", error=f"{type(exc).__name__}: {exc}",
                          session_id=last_session, usage=usage(), timings=timings())  # fmt: skip
    remember(outcome.session_id)
    if outcome.status == "success" and errored is None:
        return TurnResult(id=request_id, status="success", result=outcome.result, session_id=last_session,
                          usage=usage(), timings=timings())  # fmt: skip
    failed = TurnResult(id=request_id, status="error", error=outcome.error or errored, session_id=last_session,
                        usage=usage(), timings=timings())  # fmt: skip
    if outcome.reason == "timeout" and outcome.timeout is not None:
        failed._timed_out = (outcome.box, outcome.timeout)
    return failed
