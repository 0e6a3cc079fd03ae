"""The run ledger: every turn of an agent, from the moment it is accepted to its delivered final.

One row per run in the agent's SQLite store (table ``runs``, migration ``run_ledger``). A run gets
its id before its box starts and moves through::

    queued -> starting -> running -> final_ready -> delivered
                  \\           \\-> failed | abandoned
                   \\-> failed | abandoned

The final (status, text or error, usage) is written (``final_ready``) *before* it is delivered to a
chat or a client and marked ``delivered`` after, so a host that dies in between finds it at its
next start and delivers it then, once.

Fencing: each run carries a random ``token`` and the name of the box that holds it. A final is
accepted only with the run's current token and box (:meth:`RunLedger.accept_final`); a host that
adopts a live box takes a new token (:meth:`RunLedger.take_over`), so a superseded copy of the run
(a box reaped while a host thought it dead, a host that was only paused) cannot land its final.
Every state change is one ``BEGIN IMMEDIATE`` transaction guarded by the state it expects, so two
hosts racing for the same run cannot both win.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agentlite.core.clock import now_iso
from agentlite.core.errors import AgentliteError, ConfigError
from agentlite.platform.schema import add_column
from agentlite.run.journal import journal_name


class Database(Protocol):
    """The store's database as the ledger uses it (:class:`agentlite.platform.store.Database`); typed here
    so the ledger, which the store opens, does not import the store back."""

    def read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def write(self) -> AbstractContextManager[sqlite3.Connection]: ...


log = logging.getLogger("agentlite.ledger")

RunState = Literal["queued", "starting", "running", "final_ready", "delivered", "failed", "abandoned"]
RUN_STATES: tuple[RunState, ...] = (
    "queued", "starting", "running", "final_ready", "delivered", "failed", "abandoned",
)  # fmt: skip
#: States a run can still leave: a restarted host looks at these.
UNFINISHED: tuple[RunState, ...] = ("queued", "starting", "running", "final_ready")
#: States in which a box may still produce the run's final.
IN_FLIGHT: tuple[RunState, ...] = ("queued", "starting", "running")
#: Which state each state may move to (anything unfinished may also fail or be abandoned).
_NEXT: dict[str, tuple[str, ...]] = {
    "queued": ("starting", "failed", "abandoned"),
    "starting": ("running", "final_ready", "failed", "abandoned"),
    "running": ("final_ready", "failed", "abandoned"),
    "final_ready": ("delivered", "failed"),
}


def create_runs_table(conn: sqlite3.Connection) -> None:
    """The ``run_ledger`` migration (idempotent)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS runs ("
        " run_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, group_folder TEXT NOT NULL,"
        " chat_id TEXT, backend TEXT NOT NULL, state TEXT NOT NULL, token TEXT NOT NULL,"
        " box TEXT, session_id TEXT, journal_offset INTEGER NOT NULL DEFAULT 0,"
        " deliver_to TEXT, request_id TEXT,"
        " final_status TEXT, final_text TEXT, final_error TEXT, final_usage TEXT,"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT,"
        " state_times TEXT NOT NULL DEFAULT '{}', note TEXT)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS idx_runs_state ON runs (state)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_runs_group ON runs (group_folder, created_at)")


def add_journal_column(conn: sqlite3.Connection) -> None:
    """The ``run_journal`` migration: which journal file holds a run's events (a box that answers
    follow-ups journals all its turns in its first run's file)."""
    add_column(conn, "runs", "journal", "TEXT")


def new_run_id() -> str:
    """Sortable by creation time, unique without coordination: ``run-<epoch ms>-<12 hex>``."""
    return f"run-{int(time.time() * 1000)}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class RunRecord:
    """One row of the ledger."""

    run_id: str
    agent_id: str
    group_folder: str
    chat_id: str | None
    backend: str
    state: RunState
    token: str
    box: str | None
    session_id: str | None
    journal_offset: int
    #: Where the final goes: ``"chat"`` (sent to ``chat_id``) or ``"result"`` (a caller's answer).
    deliver_to: str | None
    request_id: str | None
    final_status: str | None
    final_text: str | None
    final_error: str | None
    final_usage: dict[str, Any] | None
    created_at: str
    updated_at: str
    finished_at: str | None
    state_times: dict[str, str]
    note: str | None
    #: The journal's file name in the group's IPC folder (``journal/<name>``).
    journal: str | None = None

    @property
    def duration_s(self) -> float | None:
        """From ``starting`` to the final (or to now for a run still going)."""
        from datetime import datetime

        begun = self.state_times.get("starting")
        if begun is None:
            return None
        end = self.state_times.get("final_ready") or self.finished_at
        try:
            start_ts = datetime.fromisoformat(begun.replace("Z", "+00:00")).timestamp()
            end_ts = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp() if end else time.time()
        except ValueError:
            return None
        return round(max(0.0, end_ts - start_ts), 3)

    def as_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data.pop("token")  # the fencing token is the host's, not the user's
        data["duration_s"] = self.duration_s
        return data


class FencedOut(AgentliteError):
    """A final or state change came from a copy of the run the ledger no longer holds as current."""


_COLUMNS = (
    "run_id, agent_id, group_folder, chat_id, backend, state, token, box, session_id, journal_offset,"
    " deliver_to, request_id, final_status, final_text, final_error, final_usage, created_at,"
    " updated_at, finished_at, state_times, note, journal"
)


def _row(row: sqlite3.Row | tuple[Any, ...]) -> RunRecord:
    values = list(row)
    values[15] = json.loads(values[15]) if values[15] else None
    values[19] = json.loads(values[19] or "{}")
    return RunRecord(*values)


class RunLedger:
    """The ``runs`` table of one agent store (get it as :attr:`AgentStore.runs`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reading ----------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord | None:
        with self._db.read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _row(row)

    def list(
        self, *, group: str | None = None, states: tuple[str, ...] | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs oldest first, filtered by group folder and states."""
        where, args = [], []
        if group is not None:
            where.append("group_folder = ?")
            args.append(group)
        if states:
            bad = [s for s in states if s not in RUN_STATES]
            if bad:
                raise ConfigError(f"unknown run state `{bad[0]}`: expected one of {', '.join(RUN_STATES)}")
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(states)
        sql = f"SELECT {_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, run_id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY created_at, run_id"
        with self._db.read() as conn:
            return [_row(r) for r in conn.execute(sql, args).fetchall()]

    def unfinished(self) -> list[RunRecord]:
        return self.list(states=UNFINISHED)

    def live_run_on(self, box: str) -> RunRecord | None:
        """The newest run the box ``box`` is still working on (``starting`` or ``running``)."""
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE box = ? AND state IN ('starting', 'running')"
                " ORDER BY created_at DESC, run_id DESC LIMIT 1",
                (box,),
            ).fetchone()
        return None if row is None else _row(row)

    # -- writing ----------------------------------------------------------------------------------

    def begin(
        self, *, agent_id: str, group_folder: str, backend: str, chat_id: str | None = None,
        deliver_to: str | None = None, request_id: str | int | None = None, run_id: str | None = None,
        journal: str | None = None,
    ) -> RunRecord:  # fmt: skip
        """A new run in state ``queued``, with its id and first fencing token; its events go to
        ``journal`` (default: a file named after the run)."""
        run_id = run_id or new_run_id()
        now = now_iso()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, agent_id, group_folder, chat_id, backend, state, token,"
                " deliver_to, request_id, created_at, updated_at, state_times, journal)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                (run_id, agent_id, group_folder, chat_id, backend, secrets.token_hex(16), deliver_to,
                 None if request_id is None else str(request_id), now, now, json.dumps({"queued": now}),
                 journal or journal_name(run_id)),
            )  # fmt: skip
        record = self.get(run_id)
        assert record is not None
        return record

    def _move(
        self, conn: sqlite3.Connection, run_id: str, state: str, *, token: str | None,
        sets: dict[str, Any] | None = None, box: str | None = None,
    ) -> RunRecord:  # fmt: skip
        row = conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise FencedOut(f"run `{run_id}` is not in the ledger")
        current = _row(row)
        if token is not None and current.token != token:
            raise FencedOut(f"run `{run_id}` is held by another copy (token superseded)")
        if box is not None and current.box is not None and current.box != box:
            raise FencedOut(f"run `{run_id}` is held by box `{current.box}`, not `{box}`")
        repeat = state == current.state == "running"  # a session id arriving later
        if not repeat and state not in _NEXT.get(current.state, ()):
            raise FencedOut(f"run `{run_id}` is `{current.state}`; it cannot become `{state}`")
        now = now_iso()
        times = {**current.state_times, state: current.state_times.get(state, now)}
        fields: dict[str, Any] = {"state": state, "updated_at": now, "state_times": json.dumps(times)}
        if state in ("delivered", "failed", "abandoned"):
            fields["finished_at"] = now
        fields |= sets or {}
        assignments = ", ".join(f"{k} = ?" for k in fields)
        conn.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id))
        return current

    def starting(self, run_id: str, token: str, box: str) -> None:
        """The run's box name is known (its ownership record exists, the box is being made)."""
        with self._db.write() as conn:
            self._move(conn, run_id, "starting", token=token, sets={"box": box})

    def running(self, run_id: str, token: str, box: str, *, session_id: str | None = None) -> None:
        with self._db.write() as conn:
            sets = {"session_id": session_id} if session_id else None
            self._move(conn, run_id, "running", token=token, box=box, sets=sets)

    def progress(self, run_id: str, token: str, journal_offset: int, session_id: str | None = None) -> bool:
        """Record how far into the journal this host has read (and the session, once known).
        False when the run is no longer this copy's."""
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET journal_offset = MAX(journal_offset, ?), session_id = COALESCE(?, session_id),"
                " updated_at = ? WHERE run_id = ? AND token = ? AND state IN ('queued', 'starting', 'running')",
                (journal_offset, session_id, now_iso(), run_id, token),
            )
            return cursor.rowcount == 1

    def accept_final(
        self, run_id: str, token: str, box: str | None, *, status: str, text: str | None = None,
        error: str | None = None, usage: dict[str, Any] | None = None, session_id: str | None = None,
        journal_offset: int | None = None,
    ) -> bool:  # fmt: skip
        """Write the run's final (state ``final_ready``) if ``token`` and ``box`` are the run's
        current ones. A final from a superseded copy is refused and logged; returns False then."""
        sets: dict[str, Any] = {"final_status": status, "final_text": text, "final_error": error,
                                "final_usage": json.dumps(usage) if usage is not None else None}  # fmt: skip
        if session_id:
            sets["session_id"] = session_id
        if journal_offset is not None:
            sets["journal_offset"] = journal_offset
        try:
            with self._db.write() as conn:
                self._move(conn, run_id, "final_ready", token=token, box=box, sets=sets)
        except FencedOut as exc:
            log.warning("refused a final run=%s box=%s: %s", run_id, box, exc)
            return False
        return True

    def mark_delivered(self, run_id: str) -> bool:
        """``final_ready`` -> ``delivered``; False when it was not ``final_ready`` (already delivered)."""
        now = now_iso()
        with self._db.write() as conn:
            row = conn.execute("SELECT state_times FROM runs WHERE run_id = ? AND state = 'final_ready'",
                               (run_id,)).fetchone()  # fmt: skip
            if row is None:
                return False
            times = {**json.loads(row[0] or "{}"), "delivered": now}
            conn.execute(
                "UPDATE runs SET state = 'delivered', updated_at = ?, finished_at = ?, state_times = ?"
                " WHERE run_id = ? AND state = 'final_ready'",
                (now, now, json.dumps(times), run_id),
            )
        return True

    def end(self, run_id: str, state: Literal["failed", "abandoned"], note: str | None = None,
            token: str | None = None) -> bool:  # fmt: skip
        """End an unfinished run without a delivered final. False when it had already ended (or,
        with ``token``, when another copy holds it)."""
        try:
            with self._db.write() as conn:
                self._move(conn, run_id, state, token=token, sets={"note": note} if note else None)
        except FencedOut as exc:
            log.info("run=%s not marked %s: %s", run_id, state, exc)
            return False
        return True

    def take_over(self, run_id: str, old_token: str) -> str | None:
        """Adopt a run: a new fencing token replaces ``old_token`` in one guarded update. Returns
        the new token, or None when someone else took the run first (or it ended)."""
        token = secrets.token_hex(16)
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET token = ?, updated_at = ? WHERE run_id = ? AND token = ?"
                " AND state IN ('queued', 'starting', 'running')",
                (token, now_iso(), run_id, old_token),
            )
        return token if cursor.rowcount == 1 else None
