"""The platform's turn bookkeeping for one agent: where each group's answered messages end (its
cursor), the runs in flight that a crash would interrupt, and the groups' native sessions.

Everything here is kept in the agent's store, so a restarted agent answers what it had not yet
answered and resumes each group's session. Timestamps have millisecond resolution, so a cursor is a
timestamp plus the ids of the handled messages that carry it: a later message stored in the same
millisecond is not skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agentlite.core.clock import iso_utc, parse_iso
from agentlite.platform.store import AgentStore, Message

log = logging.getLogger("agentlite.agent")


@dataclass(frozen=True)
class Cursor:
    """The newest handled timestamp and the ids handled at exactly that timestamp."""

    timestamp: str = ""
    ids: frozenset[str] = frozenset()

    def unseen(self, messages: Iterable[Message]) -> list[Message]:
        return [m for m in messages if m.timestamp > self.timestamp or
                (m.timestamp == self.timestamp and m.id not in self.ids)]  # fmt: skip

    def advanced(self, handled: Iterable[Message]) -> Cursor:
        handled = list(handled)
        newest = max((m.timestamp for m in handled), default=self.timestamp)
        at_newest = frozenset(m.id for m in handled if m.timestamp == newest)
        return Cursor(newest, self.ids | at_newest) if newest == self.timestamp else Cursor(newest, at_newest)

    def query_from(self) -> str:
        """One millisecond before the timestamp, to query the store inclusively."""
        if not self.timestamp:
            return ""
        return iso_utc(parse_iso(self.timestamp) - timedelta(milliseconds=1))


class TurnBook:
    """The cursors (the loop's and each group's), runs in flight and sessions of one agent."""

    def __init__(self, store: AgentStore, backend_type: str) -> None:
        self.store = store
        last_ids = store.get_json_state("last_timestamp_ids", [])
        #: The message loop's cursor over all groups (what it has seen, not what was answered).
        self.seen = Cursor(store.get_state("last_timestamp") or "",
                           frozenset(last_ids) if isinstance(last_ids, list) else frozenset())  # fmt: skip
        stamps = store.get_json_state("last_agent_timestamp", {})
        ids = store.get_json_state("last_agent_ids", {})
        stamps = stamps if isinstance(stamps, dict) else {}
        ids = ids if isinstance(ids, dict) else {}
        self._answered: dict[str, Cursor] = {
            jid: Cursor(
                stamp, frozenset(ids.get(jid) or []) if isinstance(ids.get(jid), list) else frozenset()
            )
            for jid, stamp in stamps.items()
            if isinstance(stamp, str)
        }
        self._inflight: dict[str, dict[str, Any]] = {}
        #: The current backend's session per group folder (the store has every backend's).
        self.sessions: dict[str, str] = store.get_sessions(backend_type)
        self.backend_type = backend_type

    # -- the loop's cursor ----------------------------------------------------------------------

    def take_new(self, jids: list[str], assistant_name: str) -> list[Message]:
        """Messages in ``jids`` the loop has not seen yet; marks them seen."""
        fetched, _ = self.store.get_new_messages(jids, self.seen.query_from(), assistant_name)
        messages = self.seen.unseen(fetched)
        if not messages:
            return []
        previous = self.seen
        self.seen = previous.advanced(messages)
        if self.seen.timestamp != previous.timestamp:
            self.store.set_state("last_timestamp", self.seen.timestamp)
        self.store.set_json_state("last_timestamp_ids", sorted(self.seen.ids))
        return messages

    # -- each group's answered cursor -----------------------------------------------------------

    def answered(self, jid: str) -> Cursor:
        return self._answered.get(jid, Cursor())

    def pending(self, jid: str, assistant_name: str) -> list[Message]:
        """The group's messages after its cursor, including ones stored later in the same millisecond."""
        cursor = self.answered(jid)
        return cursor.unseen(self.store.get_messages_since(jid, cursor.query_from(), assistant_name))

    def move(self, jid: str, handled: list[Message]) -> None:
        self._answered[jid] = self.answered(jid).advanced(handled)
        self._save()

    def rewind(self, jid: str, cursor: Cursor) -> None:
        """Put the group's cursor back (its run failed having sent nothing: the retry sees them)."""
        self._answered[jid] = cursor
        self._save()

    def _save(self) -> None:
        self.store.set_json_state("last_agent_timestamp", {j: c.timestamp for j, c in self._answered.items()})
        self.store.set_json_state("last_agent_ids", {j: sorted(c.ids) for j, c in self._answered.items()})

    # -- runs in flight -------------------------------------------------------------------------

    def set_inflight(self, jid: str, previous: Cursor | None) -> None:
        """Note (or clear) that a run of ``jid`` has not answered yet; ``previous`` is its cursor before."""
        entry = None if previous is None else {"cursor": previous.timestamp, "ids": sorted(previous.ids)}
        if self._inflight.get(jid) == entry:
            return
        if entry is None:
            self._inflight.pop(jid, None)
        else:
            self._inflight[jid] = entry
        self.store.set_json_state("inflight_cursors", self._inflight)

    def recover(self, jids: Iterable[str], settled: Iterable[str] = ()) -> dict[str, Cursor]:
        """At start: roll back the cursors of runs a crash interrupted before they answered.

        ``settled``: groups whose interrupted run the run ledger carries on (adopted, or its final
        about to be delivered): their cursors stay; what they would have rolled back to is returned.
        """
        known, kept = set(jids), set(settled)
        held: dict[str, Cursor] = {}
        inflight = self.store.get_json_state("inflight_cursors", {})
        for jid, previous in (inflight if isinstance(inflight, dict) else {}).items():
            if jid in known and isinstance(previous, dict) and isinstance(previous.get("cursor"), str):
                cursor = Cursor(previous["cursor"], frozenset(previous.get("ids") or []))
                if jid in kept:
                    held[jid] = cursor
                    continue
                log.info("run in %s was interrupted before it answered; its messages are pending again", jid)
                self._answered[jid] = cursor
        self._save()
        self.store.set_json_state("inflight_cursors", {})
        self._inflight = {}
        return held

    # -- sessions (the turn pipeline's SessionStore) --------------------------------------------

    def get_session(self, folder: str, backend_type: str) -> str | None:
        if backend_type == self.backend_type and folder in self.sessions:
            return self.sessions[folder]
        return self.store.get_session(folder, backend_type)

    def set_session(self, folder: str, backend_type: str, session_id: str) -> None:
        if backend_type == self.backend_type:
            self.sessions[folder] = session_id
        self.store.set_session(folder, backend_type, session_id)

    def switch_backend(self, backend_type: str) -> None:
        """The agent's backend type changed: load that type's sessions."""
        self.backend_type = backend_type
        self.sessions = self.store.get_sessions(backend_type)
