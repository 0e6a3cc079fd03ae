"""One turn's record in the run ledger, kept by the host while the turn runs.

The agent makes a :class:`LedgerTurn` before the box starts (the run id exists first), tells it the
box name (``starting``), the first event (``running``), and every final: :meth:`LedgerTurn.final`
writes it to the ledger and says whether this copy of the run may deliver it (fencing); the caller
delivers and then calls :meth:`LedgerTurn.delivered`. A box that answers follow-ups runs several
turns; each later answer gets a run of its own, on the same box.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from agentlite.core.box_env import ENV_JOURNAL
from agentlite.platform.ledger import RunLedger, RunRecord
from agentlite.run.journal import guest_journal_path

log = logging.getLogger("agentlite.ledger")

JOURNAL_ENV = ENV_JOURNAL


def add_usage(total: dict[str, Any] | None, event: Any) -> dict[str, Any]:
    """``total`` plus one :class:`~agentlite.run.protocol.UsageEvent` (the ledger's usage shape)."""
    total = dict(total or {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "model": None})
    for key in ("input_tokens", "output_tokens", "cached_input_tokens"):
        total[key] += getattr(event, key, 0) or 0
    total["model"] = total["model"] or getattr(event, "model", None)
    return total


@contextlib.contextmanager
def delivering(run_id: str) -> Iterator[None]:
    """Mark what is sent to a chat inside as ``run_id``'s reply (drivers that take a ``run_id``
    get it, so a channel can deduplicate a re-delivery)."""
    from agentlite.channels.base import DELIVERING_RUN

    token = DELIVERING_RUN.set(run_id)
    try:
        yield
    finally:
        DELIVERING_RUN.reset(token)


class LedgerTurn:
    """The ledger's view of one box run (and the turns it answers)."""

    def __init__(self, ledger: RunLedger, record: RunRecord) -> None:
        self.ledger = ledger
        self.run_id = record.run_id
        self.token = record.token
        self.box: str | None = None
        self.first_run_id = record.run_id
        self._record = record
        self._running = False
        self._done = False
        #: Tokens of this turn so far (from its usage events), kept with its final.
        self.usage: dict[str, Any] | None = None

    @classmethod
    def begin(cls, ledger: RunLedger, **fields: Any) -> LedgerTurn:
        return cls(ledger, ledger.begin(**fields))

    @property
    def journal_env(self) -> dict[str, str]:
        """What the runner needs to journal its events (the first run's file for the whole box)."""
        return {JOURNAL_ENV: guest_journal_path(self.first_run_id)}  # the first run's = its `journal`

    def on_box(self, name: str) -> None:
        self.box = name
        self.ledger.starting(self.run_id, self.token, name)

    def on_event(self, session_id: str | None = None) -> None:
        if self._done:  # a follow-up turn on the same box: a run of its own
            record = self.ledger.begin(agent_id=self._record.agent_id, group_folder=self._record.group_folder,
                                       backend=self._record.backend, chat_id=self._record.chat_id,
                                       deliver_to=self._record.deliver_to,
                                       journal=self._record.journal)  # fmt: skip
            self.run_id, self.token, self._done, self._running = record.run_id, record.token, False, False
            self.usage = None
            if self.box is not None:
                self.ledger.starting(self.run_id, self.token, self.box)
        if not self._running and self.box is not None:
            self.ledger.running(self.run_id, self.token, self.box, session_id=session_id)
            self._running = True

    def count_usage(self, event: Any) -> None:
        """Count one usage event of the current turn."""
        self.usage = add_usage(self.usage, event)

    def final(self, *, status: str, text: str | None = None, error: str | None = None,
              usage: dict[str, Any] | None = None, session_id: str | None = None) -> bool:  # fmt: skip
        """Write this turn's final; True when this copy holds the run and may deliver it."""
        if self._done:
            return False
        accepted = self.ledger.accept_final(self.run_id, self.token, self.box, status=status, text=text,
                                            error=error, usage=usage or self.usage, session_id=session_id)  # fmt: skip
        self._done = True
        return accepted

    def delivered(self) -> None:
        self.ledger.mark_delivered(self.run_id)

    def failed(self, note: str) -> None:
        """The run ended without a final (an error before any answer)."""
        if not self._done:
            self.ledger.end(self.run_id, "failed", note, token=self.token)
            self._done = True

    @property
    def has_final(self) -> bool:
        return self._done
