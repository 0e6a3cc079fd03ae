"""The platform's list of agents: ``<platform workdir>/store/agentlite.db``, table ``agents``.

The registry is what lets a platform restart bring its agents back (not started) with the same ids,
workdirs, backends and customizations. It keeps only settings that can be written down; runtime
objects (channels, credentials, ACP peers) are supplied again by the caller on every start.

Storage rules, and why:

* one row per agent name; the 8-character ``agent_id`` is what boxes and ownership records carry,
  so it is unique too and is drawn again on the (unlikely) collision;
* the backend is split into ``backend_type`` and ``backend_model`` columns so older files and other
  tools can read them; any further backend settings (endpoint, key variable, ACP command) go to
  ``backend_options_json``;
* mount allowlist, skills and MCP servers are JSON, MCP servers with sorted keys so that comparing
  two stored values is a string comparison;
* a file from before the ``backend_model`` column gains it on open and its rows keep their backend
  type (``codex`` stays ``codex``, with no model); a row with no backend reads as ``claude_code``;
* a corrupt stored value (JSON that does not parse, an unknown backend type) is logged on
  ``agentlite.registry`` and read as its default, so one damaged row never hides the others.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import sqlite3
import string
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agentlite.core.errors import ConfigError, describe_validation_error
from agentlite.core.names import check_agent_id, check_agent_name
from agentlite.platform.schema import add_column
from agentlite.platform.store import Database, Migration, ReadOnlyDatabase, now_iso
from agentlite.run.protocol import BACKEND_TYPES, DEFAULT_BACKEND_TYPE, BackendConfig

log = logging.getLogger("agentlite.registry")

#: What a row without a backend type meant: those rows were written by the reference, whose agents
#: ran claude_code when they named none (read as that, so an upgrade never switches an agent's backend).
LEGACY_BACKEND_TYPE = "claude_code"
AGENT_ID_LENGTH = 8
_ID_ALPHABET = string.digits + string.ascii_letters
#: Spellings of backend types written by other versions of AgentLite.
_BACKEND_ALIASES = {"claudeCode": "claude_code", "claude-code": "claude_code"}
_UPDATABLE = frozenset(
    {"workdir", "assistant_name", "backend", "mount_allowlist", "instructions", "skills", "mcp_servers"}
)


class AgentRecord(BaseModel):
    """One registered agent's persisted settings."""

    name: str
    #: 8 characters of ``[0-9A-Za-z]`` when created here; names the agent's boxes and ownership
    #: records, so a stored id outside the box-name alphabet makes the row unreadable.
    agent_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    workdir: str
    #: The assistant's name in chats, and its trigger word (``@Andy``).
    assistant_name: str = "Andy"
    backend: BackendConfig
    mount_allowlist: dict[str, Any] | None = None
    instructions: str | None = None
    #: Directories that each hold a ``SKILL.md``.
    skills: list[str] | None = None
    #: ``{server name: {source, command, args?, env?}}``.
    mcp_servers: dict[str, dict[str, Any]] | None = None
    created_at: str
    updated_at: str


# -- schema ---------------------------------------------------------------------------------------


def _m1_agents(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS agents ("
        " name TEXT PRIMARY KEY, agent_id TEXT NOT NULL UNIQUE, workdir TEXT NOT NULL,"
        " assistant_name TEXT NOT NULL, backend_type TEXT NOT NULL DEFAULT 'claude_code',"
        " backend_model TEXT, mount_allowlist_json TEXT, instructions TEXT, skills_sources_json TEXT,"
        " mcp_servers_json TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )


def _m2_missing_columns(conn: sqlite3.Connection) -> None:
    # Files written before these columns existed. Rows keep their stored backend type; a file that
    # predates backend types altogether gets the default for every row.
    add_column(conn, "agents", "backend_type", "TEXT NOT NULL DEFAULT 'claude_code'")
    for column in (
        "backend_model",
        "mount_allowlist_json",
        "instructions",
        "skills_sources_json",
        "mcp_servers_json",
    ):
        add_column(conn, "agents", column, "TEXT")
    for old, new in _BACKEND_ALIASES.items():
        conn.execute("UPDATE agents SET backend_type = ? WHERE backend_type = ?", (new, old))


def _m3_backend_options(conn: sqlite3.Connection) -> None:
    add_column(conn, "agents", "backend_options_json", "TEXT")


REGISTRY_MIGRATIONS = [
    Migration(1, "agents_table", _m1_agents),
    Migration(2, "agents_missing_columns", _m2_missing_columns),
    Migration(3, "backend_options", _m3_backend_options),
]

_COLUMNS = (
    "name, agent_id, workdir, assistant_name, backend_type, backend_model, backend_options_json,"
    " mount_allowlist_json, instructions, skills_sources_json, mcp_servers_json, created_at, updated_at"
)


# -- value handling -------------------------------------------------------------------------------


def new_agent_id() -> str:
    """A random 8-character ``[0-9A-Za-z]`` id (62^8 values, so collisions are rare but handled)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(AGENT_ID_LENGTH))


def normalize_backend(value: BackendConfig | Mapping[str, Any] | None) -> BackendConfig:
    """A validated copy of ``value``; None means the default backend
    (:data:`agentlite.run.protocol.DEFAULT_BACKEND_TYPE`).

    A mapping must name its ``type``: ``{}`` is refused rather than read as some default backend.
    """
    if value is None:
        return BackendConfig(type=DEFAULT_BACKEND_TYPE)
    if isinstance(value, BackendConfig):
        return value.model_copy(deep=True)
    if isinstance(value, Mapping) and isinstance(value.get("type"), str):
        try:
            return BackendConfig.model_validate(dict(value))
        except ValidationError as exc:
            raise _bad_backend(value, exc) from exc
    raise _bad_backend(value, None)


def _bad_backend(value: object, exc: ValidationError | None) -> ConfigError:
    detail = f": {describe_validation_error(exc, 'backend', first_only=True)}" if exc is not None else ""
    return ConfigError(
        f"Invalid agent backend `{value!r}`; expected {{type: {' | '.join(BACKEND_TYPES)}}}{detail}"
    )


def _dumps(value: Any, what: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} `{value!r}` cannot be stored as JSON: {exc}") from exc


def _loads(raw: str | None, expected: type, what: str, name: str) -> Any:
    """Parse a stored JSON column; None (logged) when it is corrupt or has the wrong shape."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        log.warning("agent %r: stored %s is not valid JSON (%s); using none", name, what, exc)
        return None
    if value is not None and not isinstance(value, expected):
        log.warning("agent %r: stored %s is not a JSON %s; using none", name, what, expected.__name__)
        return None
    return value


def _backend_from_row(row: sqlite3.Row) -> BackendConfig:
    name = row["name"]
    raw_type = row["backend_type"]
    backend_type = _BACKEND_ALIASES.get(raw_type, raw_type) if raw_type else LEGACY_BACKEND_TYPE
    if backend_type not in BACKEND_TYPES:
        log.warning(
            "agent %r: stored backend type %r is unknown; using %s", name, raw_type, DEFAULT_BACKEND_TYPE
        )
        backend_type = DEFAULT_BACKEND_TYPE
    model = row["backend_model"] if isinstance(row["backend_model"], str) else None
    base = BackendConfig(type=backend_type, model=model)
    options = _loads(row["backend_options_json"], dict, "backend options", name)
    if not options:
        return base
    try:
        return BackendConfig.model_validate({**options, "type": base.type, "model": base.model})
    except ValidationError as exc:
        log.warning("agent %r: stored backend options are invalid (%s); ignoring them", name, exc)
        return base


def _record_from_row(row: sqlite3.Row) -> AgentRecord | None:
    name = row["name"]
    skills = _loads(row["skills_sources_json"], list, "skills", name)
    mcp = _loads(row["mcp_servers_json"], dict, "mcp servers", name)
    try:
        return AgentRecord(
            name=name,
            agent_id=row["agent_id"],
            workdir=row["workdir"],
            assistant_name=row["assistant_name"],
            backend=_backend_from_row(row),
            mount_allowlist=_loads(row["mount_allowlist_json"], dict, "mount allowlist", name),
            instructions=row["instructions"],
            skills=skills,
            mcp_servers=mcp,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
    except ValidationError as exc:
        log.warning("skipping unreadable registry row %r: %s", name, exc)
        return None


def _later_than(previous: str) -> str:
    """Now, but strictly after ``previous`` (two updates in one millisecond still order)."""
    now = now_iso()
    if now > previous:
        return now
    try:
        then = datetime.strptime(previous, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return now
    return (then + timedelta(milliseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- the registry ---------------------------------------------------------------------------------


class Registry:
    """The shared agents table. Every call is one transaction; safe to share between threads.

    >>> registry = Registry(PlatformPaths(workdir).registry)
    >>> rec = registry.create("alice", workdir="/srv/agents/alice", assistant_name="Andy",
    ...                       backend={"type": "codex", "model": "gpt-5"})
    >>> registry.get("alice").agent_id == rec.agent_id
    True
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: Database | ReadOnlyDatabase = Database(self.path, REGISTRY_MIGRATIONS, log)

    @classmethod
    def read_only(cls, path: Path) -> Registry:
        """The registry at ``path`` opened to read only (never created nor migrated; writing
        raises :class:`~agentlite.core.errors.StoreError`). For a look from another process."""
        registry = cls.__new__(cls)
        registry.path = Path(path)
        registry._db = ReadOnlyDatabase(registry.path)
        return registry

    def close(self) -> None:
        """Close the file; idempotent."""
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(
        self,
        name: str,
        *,
        workdir: str | Path,
        assistant_name: str,
        backend: BackendConfig | Mapping[str, Any] | None,
        mount_allowlist: dict[str, Any] | None = None,
        instructions: str | None = None,
        skills: builtins.list[str] | None = None,
        mcp_servers: dict[str, dict[str, Any]] | None = None,
        agent_id: str | None = None,
    ) -> AgentRecord:
        """Register a new agent under a fresh id (or ``agent_id``, a caller's own such as ``cli``);
        :class:`ConfigError` if ``name`` or that id is taken.

        Nothing is written when a value is invalid. An empty skills list or MCP map is stored as
        none, the same as not giving one.
        """
        check_agent_name(name)
        if agent_id is not None:
            check_agent_id(agent_id)
        now = now_iso()
        record = self._validated(
            {
                "name": name,
                "agent_id": "0" * AGENT_ID_LENGTH,
                "workdir": workdir,
                "assistant_name": assistant_name,
                "backend": normalize_backend(backend),
                "mount_allowlist": mount_allowlist,
                "instructions": instructions,
                "skills": skills,
                "mcp_servers": mcp_servers,
                "created_at": now,
                "updated_at": now,
            }
        )
        with self._db.write() as conn:
            if conn.execute("SELECT 1 FROM agents WHERE name = ?", (name,)).fetchone():
                raise ConfigError(f"agent `{name}` already exists")
            if agent_id is not None:
                if conn.execute("SELECT 1 FROM agents WHERE agent_id = ?", (agent_id,)).fetchone():
                    raise ConfigError(f"agent id `{agent_id}` is taken by another agent")
            else:
                for _ in range(100):
                    agent_id = new_agent_id()
                    if not conn.execute("SELECT 1 FROM agents WHERE agent_id = ?", (agent_id,)).fetchone():
                        break
                else:  # pragma: no cover - 100 collisions in a 62^8 space means a broken generator
                    raise ConfigError("could not draw an unused agent id")
            record = record.model_copy(update={"agent_id": agent_id})
            conn.execute(
                f"INSERT INTO agents ({_COLUMNS}) VALUES ({', '.join('?' * 13)})", self._row_values(record)
            )
        return record

    def get(self, name: str) -> AgentRecord | None:
        with self._db.read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM agents WHERE name = ?", (name,)).fetchone()
        return None if row is None else _record_from_row(row)

    def list(self) -> builtins.list[AgentRecord]:
        """Every readable agent, ordered by name (unreadable rows are logged and left out)."""
        with self._db.read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM agents ORDER BY name").fetchall()
        return [r for r in (_record_from_row(row) for row in rows) if r is not None]

    def update(self, name: str, /, **fields: Any) -> AgentRecord:
        """Set only the given fields (any of workdir, assistant_name, backend, mount_allowlist,
        instructions, skills, mcp_servers) and bump ``updated_at``.

        Raises :class:`ConfigError` for an unknown agent, an unknown field or an invalid value; the
        stored row is then unchanged.
        """
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise ConfigError(
                f"cannot update agent field `{unknown[0]}`; updatable: {', '.join(sorted(_UPDATABLE))}"
            )
        if "backend" in fields:
            fields["backend"] = normalize_backend(fields["backend"])
        with self._db.write() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM agents WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ConfigError(f"agent `{name}` does not exist")
            current = _record_from_row(row)
            if current is None:
                raise ConfigError(f"agent `{name}` has an unreadable registry row; delete and re-create it")
            merged = current.model_dump()
            merged.update(fields, updated_at=_later_than(current.updated_at))
            record = self._validated(merged)
            conn.execute(
                f"UPDATE agents SET ({_COLUMNS}) = ({', '.join('?' * 13)}) WHERE name = ?",
                [*self._row_values(record), name],
            )
        return record

    def delete(self, name: str) -> bool:
        """Remove an agent's row; False when there was none."""
        with self._db.write() as conn:
            cursor = conn.execute("DELETE FROM agents WHERE name = ?", (name,))
        return cursor.rowcount > 0

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _validated(values: dict[str, Any]) -> AgentRecord:
        if isinstance(values.get("workdir"), Path):
            values["workdir"] = str(values["workdir"])
        for key in ("skills", "mcp_servers"):
            if isinstance(values.get(key), list | tuple | dict) and not values[key]:
                values[key] = None
        for key in ("workdir", "assistant_name"):
            value = values.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"agent {key} `{value!r}` must be a non-empty string")
        try:
            record = AgentRecord.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(
                f"invalid agent `{values.get('name')}` field {describe_validation_error(exc, 'agent', first_only=True)}"
            ) from exc
        # Refuse values that would not survive the trip through JSON before anything is written, and
        # return exactly what a later get() will read (MCP keys sorted, tuples as lists).
        allowlist = _dumps(record.mount_allowlist, "mount allowlist")
        mcp = _dumps(record.mcp_servers, "mcp servers")
        return record.model_copy(
            update={
                "mount_allowlist": None if allowlist is None else json.loads(allowlist),
                "mcp_servers": None if mcp is None else json.loads(mcp),
            }
        )

    @staticmethod
    def _row_values(r: AgentRecord) -> builtins.list[Any]:
        options = r.backend.model_dump(exclude_defaults=True, exclude={"type", "model"})
        return [
            r.name,
            r.agent_id,
            r.workdir,
            r.assistant_name,
            r.backend.type,
            r.backend.model,
            _dumps(options, "backend options") if options else None,
            _dumps(r.mount_allowlist, "mount allowlist"),
            r.instructions,
            _dumps(r.skills, "skills"),
            _dumps(r.mcp_servers, "mcp servers"),
            r.created_at,
            r.updated_at,
        ]
