"""One agent's durable state in one SQLite file: chat messages, groups, sessions, tasks.

Why SQLite and why this shape:

* Channels write messages as they arrive and the message loop polls for new ones every couple of
  seconds, so the file is opened in WAL mode: readers never block the writer, and a crash loses at
  most the last unfinished transaction.
* Every write runs in its own ``BEGIN IMMEDIATE`` transaction. A write that fails (a constraint, an
  invalid group folder, a value that is not JSON) raises and leaves what was stored untouched.
* The schema is an append-only list of numbered, named migrations recorded in
  ``schema_migrations``, so a file written by an older version upgrades in place without losing
  rows. Migrations never edit an older entry; a change is always a new entry at the end.
* Values read back are checked one row at a time: a corrupt row (a ``container_config`` that is not
  JSON, a task with an unknown status) is logged on ``agentlite.store`` and skipped or defaulted,
  never allowed to crash the caller or hide the other rows.

The API is synchronous. One connection is kept open and guarded by a lock, so the same store can be
called from asyncio code directly (calls take microseconds) or from ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from agentlite.channels.message import Message
from agentlite.core.clock import now_iso
from agentlite.core.errors import ConfigError, StoreError, describe_validation_error
from agentlite.core.names import check_group_folder
from agentlite.platform.ledger import RunLedger, add_journal_column, create_runs_table
from agentlite.platform.schema import add_column, columns_of
from agentlite.run.protocol import BACKEND_TYPES

log = logging.getLogger("agentlite.store")

#: Milliseconds a writer waits for another connection's lock before SQLite reports "database is locked".
BUSY_TIMEOUT_MS = 5000


# -- models ---------------------------------------------------------------------------------------


class RegisteredGroup(BaseModel):
    """A chat the agent answers in; ``folder`` names its memory and IPC directories."""

    jid: str
    name: str
    folder: str
    trigger: str
    added_at: str
    container_config: dict[str, Any] | None = None
    requires_trigger: bool = True
    is_main: bool = False


class Task(BaseModel):
    """A scheduled prompt: ``cron``, ``interval`` (milliseconds) or ``once`` (a local time)."""

    id: str
    group_folder: str
    chat_id: str
    prompt: str
    schedule_type: Literal["cron", "interval", "once"]
    schedule_value: str
    context_mode: Literal["group", "isolated"] = "isolated"
    status: Literal["active", "paused", "completed"] = "active"
    next_run: str | None = None
    last_run: str | None = None
    last_result: str | None = None
    created_at: str


class TaskRun(BaseModel):
    """The log line of one run of a task."""

    task_id: str
    run_at: str
    duration_ms: int
    status: Literal["success", "error"]
    result: str | None = None
    error: str | None = None


# -- migrations (shared with the registry) ----------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One schema step. ``id`` numbers it (1, 2, ... in order); ``name`` is recorded next to it.

    ``apply`` runs inside the migration's transaction and must be idempotent: a file written before
    migrations were tracked may already have some of the tables or columns it adds.
    """

    id: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """The one boundary where sqlite3's errors become ours: a refused constraint is bad input
    (:class:`ConfigError`), anything else (a corrupt file, a full disk, a lock held too long) a
    :class:`StoreError` naming the file."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ConfigError(f"write rejected by database `{path}`: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(path, str(exc)) from exc


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating the folder if needed) a SQLite file in WAL mode with explicit transactions."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(path, f"cannot create its folder: {exc.strerror or exc}") from exc
    # isolation_level=None: the sqlite3 module must not open transactions on its own; every write
    # below says BEGIN IMMEDIATE itself, so the write lock is taken before anything is read.
    with sqlite_errors(path):
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across a crash of the process in WAL mode; only a power loss can drop
        # the last commits. FULL would cost an fsync per stored message.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(path, f"cannot open it: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _rollback(conn: sqlite3.Connection) -> None:
    # A failed COMMIT may already have ended the transaction; ROLLBACK would then raise.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration], *, path: Path, logger: logging.Logger
) -> list[int]:
    """Bring the file up to the last migration; returns the ids applied now.

    Each migration runs in its own transaction together with its ``schema_migrations`` row, so a
    failure leaves the file at the previous version. A file that records a migration this code does
    not know was written by a newer version and is refused rather than silently misread.
    """
    ids = [m.id for m in migrations]
    if ids != list(range(1, len(ids) + 1)):
        raise AssertionError(f"migration ids must be 1..n in order, got {ids}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0]: row[1] for row in conn.execute("SELECT id, name FROM schema_migrations")}
    known = {m.id: m.name for m in migrations}
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise StoreError(
            path,
            f"it has schema migration {unknown[-1]} (`{applied[unknown[-1]]}`), which this"
            " version of agentlite does not know; it was written by a newer version",
        )
    for mid, name in applied.items():
        if known[mid] != name:
            raise StoreError(path, f"it records migration {mid} as `{name}`, expected `{known[mid]}`")
    done: list[int] = []
    for migration in migrations:
        if migration.id in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated the file while we waited for the lock.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE id = ?", (migration.id,)).fetchone():
                conn.execute("COMMIT")
                continue
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)",
                (migration.id, migration.name, now_iso()),
            )
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            raise StoreError(path, f"migration {migration.id} `{migration.name}` failed: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise
        logger.info("applied migration %d %s to %s", migration.id, migration.name, path)
        done.append(migration.id)
    return done


class Database:
    """One open connection, a lock around it, and a transaction helper shared by store and registry."""

    def __init__(self, path: Path, migrations: Sequence[Migration], logger: logging.Logger) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = open_database(self.path)
        try:
            with sqlite_errors(self.path):
                apply_migrations(self._conn, migrations, path=self.path, logger=logger)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def close(self) -> None:
        """Close the connection; calling it again does nothing."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(self.path, "it is closed")
        return self._conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, locked; a sqlite3 error in the block becomes a :class:`StoreError`."""
        with self._lock, sqlite_errors(self.path):
            yield self._live()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception;
        sqlite3 errors become ours (:func:`sqlite_errors`)."""
        with self._lock, sqlite_errors(self.path):
            conn = self._live()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise


class ReadOnlyDatabase:
    """A store or registry file opened read-only (``mode=ro``): never created, migrated or written.
    For a look from outside the process that owns the file (a box listing, a cleanup's verdict)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        with sqlite_errors(self.path):
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )  # fmt: skip
        self._conn.row_factory = sqlite3.Row  # as the writers' connections: rows by column name

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, sqlite_errors(self.path):
            if self._conn is None:
                raise StoreError(self.path, "it is closed")
            yield self._conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        raise StoreError(self.path, "it is open read-only")
        yield  # a generator, like Database.write  # pragma: no cover


# -- the agent store's schema ---------------------------------------------------------------------


def _m1_base_tables(conn: sqlite3.Connection) -> None:
    # The first shape of the file. Later columns arrive through later migrations, never here.
    for statement in (
        "CREATE TABLE IF NOT EXISTS chats (jid TEXT PRIMARY KEY, name TEXT, last_message_time TEXT)",
        "CREATE TABLE IF NOT EXISTS messages ("
        " id TEXT NOT NULL, chat_id TEXT NOT NULL, sender TEXT, sender_name TEXT, content TEXT,"
        " timestamp TEXT NOT NULL, is_from_me INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (id, chat_id))",
        "CREATE INDEX IF NOT EXISTS idx_messages_timestamp ON messages (timestamp)",
        "CREATE TABLE IF NOT EXISTS scheduled_tasks ("
        " id TEXT PRIMARY KEY, group_folder TEXT NOT NULL, chat_id TEXT NOT NULL, prompt TEXT NOT NULL,"
        " schedule_type TEXT NOT NULL, schedule_value TEXT NOT NULL, next_run TEXT, last_run TEXT,"
        " last_result TEXT, status TEXT NOT NULL DEFAULT 'active', created_at TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS task_run_logs ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " task_id TEXT NOT NULL REFERENCES scheduled_tasks (id) ON DELETE CASCADE,"
        " run_at TEXT NOT NULL, duration_ms INTEGER NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT)",
        "CREATE INDEX IF NOT EXISTS idx_task_run_logs_task ON task_run_logs (task_id, run_at)",
        "CREATE TABLE IF NOT EXISTS router_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS sessions (group_folder TEXT PRIMARY KEY, session_id TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS registered_groups ("
        " jid TEXT PRIMARY KEY, name TEXT NOT NULL, folder TEXT NOT NULL UNIQUE,"
        " trigger_pattern TEXT NOT NULL, added_at TEXT NOT NULL, container_config TEXT,"
        " requires_trigger INTEGER NOT NULL DEFAULT 1)",
    ):
        conn.execute(statement)


def _m2_task_context_mode(conn: sqlite3.Connection) -> None:
    add_column(conn, "scheduled_tasks", "context_mode", "TEXT NOT NULL DEFAULT 'isolated'")


def _m3_message_bot_flag(conn: sqlite3.Connection) -> None:
    # Older rows cannot be classified here (the assistant's name is not known to the store); the
    # `Name:` prefix backstop in the message queries keeps the assistant's own lines out instead.
    add_column(conn, "messages", "is_bot_message", "INTEGER NOT NULL DEFAULT 0")


def _m4_group_is_main(conn: sqlite3.Connection) -> None:
    if add_column(conn, "registered_groups", "is_main", "INTEGER NOT NULL DEFAULT 0"):
        conn.execute("UPDATE registered_groups SET is_main = 1 WHERE folder = 'main'")


def _m5_chat_channel(conn: sqlite3.Connection) -> None:
    added = add_column(conn, "chats", "channel", "TEXT")
    add_column(conn, "chats", "is_group", "INTEGER")
    if added:
        # Best guess for old rows from the JID shapes the channels use.
        for pattern, channel, is_group in (
            ("%@g.us", "whatsapp", 1),
            ("%@s.whatsapp.net", "whatsapp", 0),
            ("dc:%", "discord", 1),
            ("tg:%", "telegram", 1),
        ):
            conn.execute(
                "UPDATE chats SET channel = ?, is_group = ? WHERE jid LIKE ? AND channel IS NULL",
                (channel, is_group, pattern),
            )


def _m6_sessions_per_backend(conn: sqlite3.Connection, legacy_backend_type: str) -> None:
    if "backend_type" in columns_of(conn, "sessions"):
        return
    conn.execute("ALTER TABLE sessions RENAME TO sessions_single_backend")
    conn.execute(
        "CREATE TABLE sessions (group_folder TEXT NOT NULL, backend_type TEXT NOT NULL,"
        " session_id TEXT NOT NULL, PRIMARY KEY (group_folder, backend_type))"
    )
    conn.execute(
        "INSERT INTO sessions (group_folder, backend_type, session_id)"
        " SELECT group_folder, ?, session_id FROM sessions_single_backend",
        (legacy_backend_type,),
    )
    conn.execute("DROP TABLE sessions_single_backend")


def _m7_backend_handoffs(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS backend_handoffs (group_folder TEXT PRIMARY KEY,"
        " from_backend_type TEXT NOT NULL, to_backend_type TEXT NOT NULL, created_at TEXT NOT NULL)"
    )


def _m8_query_indexes(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX IF NOT EXISTS idx_messages_chat_time ON messages (chat_id, timestamp)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_tasks_due ON scheduled_tasks (status, next_run)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_tasks_group ON scheduled_tasks (group_folder)")


def _m10_usage_and_budgets(conn: sqlite3.Connection) -> None:
    # One row per run and model (a run's rows are replaced, never added to, so a re-delivered final
    # cannot count twice); cost NULL = unknown (a model without a price), never 0.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS usage (run_id TEXT NOT NULL, model TEXT NOT NULL, chat_id TEXT NOT NULL,"
        " group_folder TEXT NOT NULL, backend_type TEXT NOT NULL, at TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
        " output_tokens INTEGER NOT NULL, cached_input_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,"
        " cost_usd REAL, cost_source TEXT NOT NULL, tokens_known INTEGER NOT NULL, PRIMARY KEY (run_id, model))"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS idx_usage_chat_at ON usage (chat_id, at)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_usage_at ON usage (at)")
    # scope: a chat id, or `*` for the whole agent.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS budgets (scope TEXT PRIMARY KEY, unit TEXT NOT NULL, daily_limit REAL,"
        " total_limit REAL, reset_hour INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS budget_state (scope TEXT PRIMARY KEY, paused_reason TEXT, paused_at TEXT,"
        " paused_period TEXT, warned_period TEXT, warned_total INTEGER NOT NULL DEFAULT 0,"
        " daily_base REAL NOT NULL DEFAULT 0, daily_base_period TEXT, total_base REAL NOT NULL DEFAULT 0)"
    )


def store_migrations(legacy_backend_type: str = "claude_code") -> list[Migration]:
    """The agent store's schema history, oldest first. Append only."""
    return [
        Migration(1, "base_tables", _m1_base_tables),
        Migration(2, "task_context_mode", _m2_task_context_mode),
        Migration(3, "message_bot_flag", _m3_message_bot_flag),
        Migration(4, "group_is_main", _m4_group_is_main),
        Migration(5, "chat_channel", _m5_chat_channel),
        Migration(6, "sessions_per_backend", lambda c: _m6_sessions_per_backend(c, legacy_backend_type)),
        Migration(7, "backend_handoffs", _m7_backend_handoffs),
        Migration(8, "query_indexes", _m8_query_indexes),
        Migration(9, "run_ledger", create_runs_table),
        Migration(10, "usage_and_budgets", _m10_usage_and_budgets),
        Migration(11, "run_journal", add_journal_column),
    ]


# -- the store ------------------------------------------------------------------------------------

_MESSAGE_COLUMNS = "id, chat_id, sender, sender_name, content, timestamp, is_from_me, is_bot_message"
_TASK_COLUMNS = (
    "id, group_folder, chat_id, prompt, schedule_type, schedule_value, context_mode, status,"
    " next_run, last_run, last_result, created_at"
)
_TASK_FIELDS = frozenset(Task.model_fields)


def _check_backend_type(backend_type: str) -> str:
    if backend_type not in BACKEND_TYPES:
        raise ConfigError(f"backend type `{backend_type}` is not one of {', '.join(BACKEND_TYPES)}")
    return backend_type


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} `{value!r}` cannot be stored as JSON: {exc}") from exc


class AgentStore:
    """One agent's SQLite file (``<agent workdir>/store/messages.db``).

    >>> store = AgentStore(AgentPaths(workdir).store)
    >>> store.store_message(Message(id="1", chat_id="tg:1", sender="u", sender_name="Ann",
    ...                             content="hi", timestamp=now_iso()))
    >>> messages, cursor = store.get_new_messages(["tg:1"], "", "Andy")

    ``legacy_backend_type`` only matters when upgrading a file whose ``sessions`` table predates
    backend types: its sessions are kept under that type (the agent's backend at the time).
    """

    def __init__(self, path: Path, *, legacy_backend_type: str = "claude_code") -> None:
        self.path = Path(path)
        self._db = Database(self.path, store_migrations(_check_backend_type(legacy_backend_type)), log)

    def close(self) -> None:
        """Close the file; idempotent. Any later call raises :class:`StoreError`."""
        self._db.close()

    @property
    def runs(self) -> RunLedger:
        """The run ledger (:mod:`agentlite.platform.ledger`) in this file."""
        return RunLedger(self._db)

    @property
    def database(self) -> Database:
        """The open file, for the modules that keep their own tables in it (usage, budgets)."""
        return self._db

    def __enter__(self) -> AgentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- messages and chats -----------------------------------------------------------------------

    def store_message(self, m: Message) -> None:
        """Insert or replace the message ``(m.id, m.chat_id)``; a message with empty content is dropped.

        Empty content carries nothing for the agent (a reaction, a deleted message), so it is not
        stored rather than filtered on every read.
        """
        if not m.content:
            return
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id, chat_id) DO UPDATE SET sender = excluded.sender,"
                " sender_name = excluded.sender_name, content = excluded.content,"
                " timestamp = excluded.timestamp, is_from_me = excluded.is_from_me,"
                " is_bot_message = excluded.is_bot_message",
                (
                    m.id,
                    m.chat_id,
                    m.sender,
                    m.sender_name,
                    m.content,
                    m.timestamp,
                    int(m.is_from_me),
                    int(m.is_bot_message),
                ),
            )

    def store_chat_metadata(
        self,
        chat_id: str,
        timestamp: str,
        name: str | None = None,
        channel: str | None = None,
        is_group: bool | None = None,
    ) -> None:
        """Record that a chat exists and was active at ``timestamp``.

        The latest activity time is kept (an older timestamp never moves it back); name, channel
        and group flag are only overwritten when given. A new chat without a name is named after
        its id.
        """
        group_flag = None if is_group is None else int(is_group)
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO chats (jid, name, last_message_time, channel, is_group)"
                " VALUES (:jid, COALESCE(:name, :jid), :ts, :channel, :is_group)"
                " ON CONFLICT (jid) DO UPDATE SET"
                " name = COALESCE(:name, chats.name),"
                " last_message_time = CASE WHEN chats.last_message_time IS NULL"
                "   OR excluded.last_message_time > chats.last_message_time"
                "   THEN excluded.last_message_time ELSE chats.last_message_time END,"
                " channel = COALESCE(:channel, chats.channel),"
                " is_group = COALESCE(:is_group, chats.is_group)",
                {"jid": chat_id, "name": name, "ts": timestamp, "channel": channel, "is_group": group_flag},
            )

    def _pending_query(
        self, chat_ids: Sequence[str], since: str, assistant_name: str, limit: int
    ) -> list[Message]:
        if limit <= 0:
            return []
        prefix = f"{assistant_name}:"
        # json_each takes the chat list as one parameter, so any number of groups fits in one query.
        # substr() is an exact, case-sensitive prefix test; LIKE would treat `_` and `%` in the
        # assistant's name as wildcards.
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            " WHERE chat_id IN (SELECT value FROM json_each(?)) AND timestamp > ?"
            " AND is_bot_message = 0 AND content IS NOT NULL AND content != ''"
            " AND substr(content, 1, ?) != ?"
            " ORDER BY timestamp DESC, rowid DESC LIMIT ?"
        )
        with self._db.read() as conn:
            rows = conn.execute(
                sql, (json.dumps(list(chat_ids)), since, len(prefix), prefix, limit)
            ).fetchall()
        return [m for m in (self._row_to_message(r) for r in reversed(rows)) if m is not None]

    def get_new_messages(
        self, chat_ids: list[str], since: str, assistant_name: str, limit: int = 200
    ) -> tuple[list[Message], str]:
        """New input for the message loop: ``(messages, new_since)``.

        Returns the newest ``limit`` messages of ``chat_ids`` with a timestamp after ``since``, in
        chronological order, leaving out the assistant's own messages (the bot flag, and as a
        backstop any content starting with ``"<assistant_name>:"``). ``new_since`` is the newest
        returned timestamp, or ``since`` when there is nothing new. An empty ``since`` means all.
        """
        if not chat_ids:
            return [], since
        messages = self._pending_query(chat_ids, since, assistant_name, limit)
        return messages, (messages[-1].timestamp if messages else since)

    def get_messages_since(
        self, chat_id: str, since: str, assistant_name: str, limit: int = 200
    ) -> list[Message]:
        """The pending messages of one chat after ``since``, same filter and limit as above."""
        return self._pending_query([chat_id], since, assistant_name, limit)

    def recent_messages(self, chat_id: str, limit: int, *, exclude_ids: Iterable[str] = ()) -> list[Message]:
        """The newest ``limit`` messages of one chat from both sides (the chat's and the agent's own,
        ``is_bot_message``), leaving out ``exclude_ids``, in chronological order."""
        if limit <= 0:
            return []
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE chat_id = ? AND content IS NOT NULL"
                " AND content != '' AND id NOT IN (SELECT value FROM json_each(?))"
                " ORDER BY timestamp DESC, rowid DESC LIMIT ?",
                (chat_id, json.dumps(sorted(set(exclude_ids))), limit),
            ).fetchall()
        return [m for m in (self._row_to_message(r) for r in reversed(rows)) if m is not None]

    def list_chats(self) -> list[dict[str, Any]]:
        """Every known chat, most recently active first: jid, name, last_message_time, channel, is_group."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT jid, name, last_message_time, channel, is_group FROM chats"
                " ORDER BY last_message_time DESC, jid"
            ).fetchall()
        return [
            {
                "jid": r["jid"],
                "name": r["name"],
                "last_message_time": r["last_message_time"],
                "channel": r["channel"],
                "is_group": None if r["is_group"] is None else bool(r["is_group"]),
            }
            for r in rows
        ]

    @staticmethod
    def _row_to_message(row: sqlite3.Row) -> Message | None:
        try:
            return Message(
                id=row["id"],
                chat_id=row["chat_id"],
                sender=row["sender"] or "",
                sender_name=row["sender_name"] or "",
                content=row["content"] or "",
                timestamp=row["timestamp"],
                is_from_me=bool(row["is_from_me"]),
                is_bot_message=bool(row["is_bot_message"]),
            )
        except ValidationError as exc:
            log.warning("skipping unreadable message %r in chat %r: %s", row["id"], row["chat_id"], exc)
            return None

    # -- router state -----------------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """The raw value stored under ``key``, or None."""
        with self._db.read() as conn:
            row = conn.execute("SELECT value FROM router_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise ConfigError(f"router state `{key}` must be a string, got `{value!r}`")
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO router_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_json_state(self, key: str, default: Any) -> Any:
        """The JSON value under ``key``; ``default`` when absent or when the stored text is corrupt.

        A corrupt value (a half-written file from another tool, a manual edit) must not stop the
        message loop, so it is logged and the default is used. The stored text is left as is.
        """
        raw = self.get_state(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError as exc:
            log.warning("router state %r is not valid JSON (%s); using the default", key, exc)
            return default

    def set_json_state(self, key: str, value: Any) -> None:
        self.set_state(key, _dumps(value, f"router state `{key}`"))

    # -- sessions and handoffs --------------------------------------------------------------------

    def get_session(self, folder: str, backend_type: str) -> str | None:
        """The native session id a backend type last used in a group, or None."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT session_id FROM sessions WHERE group_folder = ? AND backend_type = ?",
                (folder, backend_type),
            ).fetchone()
        return None if row is None else row[0]

    def set_session(self, folder: str, backend_type: str, session_id: str) -> None:
        check_group_folder(folder)
        _check_backend_type(backend_type)
        if not session_id:
            raise ConfigError(f"session id for group `{folder}` must not be empty")
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO sessions (group_folder, backend_type, session_id) VALUES (?, ?, ?)"
                " ON CONFLICT (group_folder, backend_type) DO UPDATE SET session_id = excluded.session_id",
                (folder, backend_type, session_id),
            )

    def delete_session(self, folder: str, backend_type: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM sessions WHERE group_folder = ? AND backend_type = ?", (folder, backend_type)
            )

    def get_sessions(self, backend_type: str) -> dict[str, str]:
        """``{group folder: session id}`` for one backend type (only the current one is loaded)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT group_folder, session_id FROM sessions WHERE backend_type = ? ORDER BY group_folder",
                (backend_type,),
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def get_handoff(self, folder: str) -> dict[str, str] | None:
        """The pending backend handoff of a group, keyed like its columns:
        ``{group_folder, from_backend_type, to_backend_type, created_at}``; None when there is none."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT group_folder, from_backend_type, to_backend_type, created_at"
                " FROM backend_handoffs WHERE group_folder = ?",
                (folder,),
            ).fetchone()
        if row is None:
            return None
        return {
            "group_folder": row[0],
            "from_backend_type": row[1],
            "to_backend_type": row[2],
            "created_at": row[3],
        }

    def set_handoff(self, folder: str, from_type: str, to_type: str) -> None:
        """Mark that the group's next run on ``to_type`` starts with a handoff summary (replaces any)."""
        check_group_folder(folder)
        _check_backend_type(from_type)
        _check_backend_type(to_type)
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO backend_handoffs (group_folder, from_backend_type, to_backend_type, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (group_folder) DO UPDATE SET"
                " from_backend_type = excluded.from_backend_type,"
                " to_backend_type = excluded.to_backend_type, created_at = excluded.created_at",
                (folder, from_type, to_type, now_iso()),
            )

    def clear_handoff(self, folder: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM backend_handoffs WHERE group_folder = ?", (folder,))

    # -- registered groups ------------------------------------------------------------------------

    def register_group(self, g: RegisteredGroup) -> None:
        """Insert or update the group ``g.jid``.

        Raises :class:`ConfigError` for an unsafe folder, or a folder already used by another chat
        (two chats sharing one memory folder would read each other's files); nothing is written then.
        """
        check_group_folder(g.folder)
        config = None if g.container_config is None else _dumps(g.container_config, "container config")
        with self._db.write() as conn:
            other = conn.execute(
                "SELECT jid FROM registered_groups WHERE folder = ? AND jid != ?", (g.folder, g.jid)
            ).fetchone()
            if other is not None:
                raise ConfigError(f"group folder `{g.folder}` is already used by chat `{other[0]}`")
            conn.execute(
                "INSERT INTO registered_groups (jid, name, folder, trigger_pattern, added_at,"
                " container_config, requires_trigger, is_main) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (jid) DO UPDATE SET name = excluded.name, folder = excluded.folder,"
                " trigger_pattern = excluded.trigger_pattern, added_at = excluded.added_at,"
                " container_config = excluded.container_config,"
                " requires_trigger = excluded.requires_trigger, is_main = excluded.is_main",
                (
                    g.jid,
                    g.name,
                    g.folder,
                    g.trigger,
                    g.added_at,
                    config,
                    int(g.requires_trigger),
                    int(g.is_main),
                ),
            )

    def get_registered_groups(self) -> dict[str, RegisteredGroup]:
        """``{jid: group}``. Rows with an unsafe folder or unreadable fields are skipped and logged;
        a ``container_config`` that is not a JSON object is read as None and logged."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT jid, name, folder, trigger_pattern, added_at, container_config, requires_trigger,"
                " is_main FROM registered_groups ORDER BY jid"
            ).fetchall()
        groups: dict[str, RegisteredGroup] = {}
        for r in rows:
            try:
                check_group_folder(r["folder"])
            except ConfigError as exc:
                log.warning("skipping registered group %r: %s", r["jid"], exc)
                continue
            config: dict[str, Any] | None = None
            if r["container_config"] is not None:
                try:
                    parsed = json.loads(r["container_config"])
                except ValueError as exc:
                    log.warning(
                        "group %r: container_config is not valid JSON (%s); ignoring it", r["jid"], exc
                    )
                else:
                    if isinstance(parsed, dict):
                        config = parsed
                    elif parsed is not None:
                        log.warning("group %r: container_config is not a JSON object; ignoring it", r["jid"])
            try:
                groups[r["jid"]] = RegisteredGroup(
                    jid=r["jid"],
                    name=r["name"],
                    folder=r["folder"],
                    trigger=r["trigger_pattern"],
                    added_at=r["added_at"],
                    container_config=config,
                    requires_trigger=bool(r["requires_trigger"]),
                    is_main=bool(r["is_main"]),
                )
            except ValidationError as exc:
                log.warning("skipping unreadable registered group %r: %s", r["jid"], exc)
        return groups

    # -- scheduled tasks --------------------------------------------------------------------------

    @staticmethod
    def _row_to_task(row: sqlite3.Row) -> Task | None:
        try:
            return Task.model_validate(dict(row))
        except ValidationError as exc:
            log.warning("skipping unreadable task %r: %s", row["id"], exc)
            return None

    def create_task(self, t: Task) -> None:
        """Insert a new task; a task id that already exists raises :class:`ConfigError`."""
        values = t.model_dump()
        with self._db.write() as conn:
            if conn.execute("SELECT 1 FROM scheduled_tasks WHERE id = ?", (t.id,)).fetchone():
                raise ConfigError(f"task `{t.id}` already exists")
            columns = [c.strip() for c in _TASK_COLUMNS.split(",")]
            conn.execute(
                f"INSERT INTO scheduled_tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * len(columns))})",
                [values[c] for c in columns],
            )

    def get_task(self, task_id: str) -> Task | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM scheduled_tasks WHERE id = ?", (task_id,)
            ).fetchone()
        return None if row is None else self._row_to_task(row)

    def list_tasks(self, group_folder: str | None = None) -> list[Task]:
        """All tasks, or one group's, newest first."""
        sql = f"SELECT {_TASK_COLUMNS} FROM scheduled_tasks"
        params: tuple[str, ...] = ()
        if group_folder is not None:
            sql += " WHERE group_folder = ?"
            params = (group_folder,)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY created_at DESC, id", params).fetchall()
        return [t for t in (self._row_to_task(r) for r in rows) if t is not None]

    def update_task(self, task_id: str, **fields: Any) -> Task | None:
        """Set only the given fields of a task; returns the updated task, or None if it does not exist.

        The merged task is validated first, so an unknown field or a bad value (``status="done"``)
        raises :class:`ConfigError` and changes nothing.
        """
        unknown = sorted(set(fields) - (_TASK_FIELDS - {"id"}))
        if unknown:
            raise ConfigError(f"cannot update task field `{unknown[0]}`")
        with self._db.write() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM scheduled_tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None:
                return None
            try:
                updated = Task.model_validate({**dict(row), **fields})
            except ValidationError as exc:
                raise ConfigError(
                    f"invalid update of task `{task_id}`: {describe_validation_error(exc, 'task')}"
                ) from exc
            if fields:
                values = updated.model_dump()
                assignments = ", ".join(f"{name} = ?" for name in fields)
                conn.execute(
                    f"UPDATE scheduled_tasks SET {assignments} WHERE id = ?",
                    [values[name] for name in fields] + [task_id],
                )
        return updated

    def delete_task(self, task_id: str) -> bool:
        """Delete a task and its run logs; False when there was no such task."""
        with self._db.write() as conn:
            # Explicit, not only ON DELETE CASCADE: a table created by an older tool may lack the key.
            conn.execute("DELETE FROM task_run_logs WHERE task_id = ?", (task_id,))
            cursor = conn.execute("DELETE FROM scheduled_tasks WHERE id = ?", (task_id,))
        return cursor.rowcount > 0

    def get_due_tasks(self, now: str) -> list[Task]:
        """Active tasks whose ``next_run`` is at or before ``now``, the most overdue first."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM scheduled_tasks"
                " WHERE status = 'active' AND next_run IS NOT NULL AND next_run <= ?"
                " ORDER BY next_run, id",
                (now,),
            ).fetchall()
        return [t for t in (self._row_to_task(r) for r in rows) if t is not None]

    def log_task_run(self, run: TaskRun) -> None:
        """Append a run log line; raises :class:`ConfigError` if the task no longer exists."""
        with self._db.write() as conn:
            if not conn.execute("SELECT 1 FROM scheduled_tasks WHERE id = ?", (run.task_id,)).fetchone():
                raise ConfigError(f"cannot log a run of task `{run.task_id}`: no such task")
            conn.execute(
                "INSERT INTO task_run_logs (task_id, run_at, duration_ms, status, result, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run.task_id, run.run_at, run.duration_ms, run.status, run.result, run.error),
            )

    def get_task_runs(self, task_id: str) -> list[TaskRun]:
        """A task's run logs, newest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT task_id, run_at, duration_ms, status, result, error FROM task_run_logs"
                " WHERE task_id = ? ORDER BY run_at DESC, id DESC",
                (task_id,),
            ).fetchall()
        runs: list[TaskRun] = []
        for r in rows:
            try:
                runs.append(TaskRun.model_validate(dict(r)))
            except ValidationError as exc:
                log.warning("skipping unreadable run log of task %r: %s", task_id, exc)
        return runs
