"""The platform registry of agents: real SQLite files, including hand-made legacy ones."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import CapturedLog, captured_log, raw_sql

from agentlite.core.errors import ConfigError, StoreError
from agentlite.platform import registry as _registry
from agentlite.platform.registry import AgentRecord, Registry, normalize_backend
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE, BackendConfig

ALLOWLIST = {
    "allowedRoots": [{"path": "~/projects", "allowReadWrite": True, "description": "code"}],
    "blockedPatterns": ["password"],
    "nonMainReadOnly": True,
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "platform" / "store" / "agentlite.db"


@pytest.fixture
def registry(db_path: Path) -> Iterator[Registry]:
    r = Registry(db_path)
    yield r
    r.close()


@pytest.fixture
def registry_log() -> Iterator[CapturedLog]:
    with captured_log("agentlite.registry") as handler:
        yield handler


def make(registry: Registry, name: str = "alice", **kw: Any) -> AgentRecord:
    values: dict[str, Any] = {"workdir": f"/srv/agents/{name}", "assistant_name": "Andy", "backend": None}
    values.update(kw)
    return registry.create(name, **values)


# -- create, get, list ------------------------------------------------------------------------------


def test_creates_the_file_and_persists_new_agents(db_path: Path, registry: Registry) -> None:
    rec = make(
        registry,
        "alice",
        workdir="/srv/alice",
        assistant_name="Robo",
        backend={"type": "codex", "model": "gpt-5.1-codex"},
        mount_allowlist=ALLOWLIST,
    )
    assert db_path.exists()
    assert raw_sql(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert re.fullmatch(r"[0-9A-Za-z]{8}", rec.agent_id)
    assert rec.backend == BackendConfig(type="codex", model="gpt-5.1-codex")
    assert (rec.workdir, rec.assistant_name, rec.mount_allowlist) == ("/srv/alice", "Robo", ALLOWLIST)
    assert rec.created_at == rec.updated_at
    assert registry.get("alice") == rec
    registry.close()
    with Registry(db_path) as again:
        assert again.get("alice") == rec
        assert again.list() == [rec]


def test_a_read_only_registry_reads_and_never_writes(db_path: Path, registry: Registry) -> None:
    alice = make(registry)
    with Registry.read_only(db_path) as look:
        assert [r.agent_id for r in look.list()] == [alice.agent_id]
        with pytest.raises(StoreError, match="read-only"):
            look.delete("alice")
    assert registry.get("alice") is not None
    missing = db_path.with_name("none.db")
    with pytest.raises(StoreError):
        Registry.read_only(missing)
    assert not missing.exists(), "a read-only open creates nothing"


def test_get_unknown_is_none(registry: Registry) -> None:
    assert registry.get("nobody") is None


def test_workdir_may_be_a_path(registry: Registry, tmp_path: Path) -> None:
    assert make(registry, workdir=tmp_path / "a").workdir == str(tmp_path / "a")


def test_list_is_ordered_by_name(registry: Registry) -> None:
    for name in ("carol", "alice", "bob"):
        make(registry, name)
    assert [r.name for r in registry.list()] == ["alice", "bob", "carol"]


def test_duplicate_name_is_refused_and_the_first_row_kept(registry: Registry) -> None:
    first = make(registry, "alice")
    with pytest.raises(ConfigError, match="agent `alice` already exists"):
        make(registry, "alice", workdir="/elsewhere")
    assert registry.list() == [first]


def test_agent_id_is_drawn_again_on_collision(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["AAAAAAAA", "AAAAAAAA", "AAAAAAAA", "BBBBBBBB"])
    monkeypatch.setattr(_registry, "new_agent_id", lambda: next(ids))
    assert make(registry, "alice").agent_id == "AAAAAAAA"
    assert make(registry, "bob").agent_id == "BBBBBBBB"


def test_a_callers_own_agent_id_is_kept_checked_and_unique(registry: Registry) -> None:
    assert (
        registry.create("cli", workdir="/w/cli", assistant_name="Andy", backend=None, agent_id="cli").agent_id
        == "cli"
    )
    assert registry.get("cli").agent_id == "cli"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="agent id `cli` is taken"):
        registry.create("other", workdir="/w/o", assistant_name="Andy", backend=None, agent_id="cli")
    with pytest.raises(ConfigError, match=r"agent id `a\.b`"):
        registry.create("dotted", workdir="/w/d", assistant_name="Andy", backend=None, agent_id="a.b")
    assert [r.name for r in registry.list()] == ["cli"]


def test_agent_ids_are_random_and_well_formed() -> None:
    ids = {_registry.new_agent_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9A-Za-z]{8}", i) for i in ids)


@pytest.mark.parametrize("name", ["", " ", " alice", "alice ", None])
def test_bad_names_are_refused(registry: Registry, name: Any) -> None:
    with pytest.raises(ConfigError, match="agent name"):
        make(registry, name)
    assert registry.list() == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("workdir", "", "agent workdir"),
        ("assistant_name", "  ", "agent assistant_name"),
        ("skills", "not-a-list", "field `skills`"),
        ("mcp_servers", {"fs": "not-a-dict"}, "field `mcp_servers.fs`"),
        ("mount_allowlist", {"when": object()}, "mount allowlist"),
        ("mcp_servers", {"fs": {"env": {1, 2}}}, "mcp servers"),
    ],
)
def test_invalid_values_are_refused_and_nothing_is_written(
    registry: Registry, field: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make(registry, **{field: value})
    assert registry.list() == []


# -- backend --------------------------------------------------------------------------------------


def test_backend_normalization() -> None:
    assert normalize_backend(None) == BackendConfig(type=DEFAULT_BACKEND_TYPE) == BackendConfig()
    assert normalize_backend({"type": "codex"}) == BackendConfig(type="codex")
    assert normalize_backend({"type": "codex", "model": "  gpt-5  "}).model == "gpt-5"
    assert normalize_backend({"type": "claude_code", "model": "   "}).model is None
    given = BackendConfig(type="acp", command=["codex-acp"])
    copy = normalize_backend(given)
    assert copy == given and copy is not given


@pytest.mark.parametrize(
    "bad",
    [
        "codex",
        {"type": "claude"},
        {"type": "claudeCode"},
        {},
        [],
        3,
        {"type": "codex", "colour": "red"},
        {"model": "x"},
    ],
)
def test_invalid_backends_are_refused(registry: Registry, bad: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"Invalid agent backend `.*`; expected \{type: codex \| claude_code \| acp\}"
    ):
        make(registry, backend=bad)
    assert registry.list() == []


def test_backend_is_stored_in_type_and_model_columns(db_path: Path, registry: Registry) -> None:
    make(registry, "alice", backend={"type": "codex", "model": " gpt-5 "})
    make(registry, "bob")
    make(registry, "carol", backend=BackendConfig(type="acp", command=["codex-acp"], base_url="http://m:1"))
    rows = raw_sql(
        db_path, "SELECT name, backend_type, backend_model, backend_options_json FROM agents ORDER BY name"
    )
    assert rows == [
        ("alice", "codex", "gpt-5", None),
        ("bob", DEFAULT_BACKEND_TYPE, None, None),  # no backend given: the default
        ("carol", "acp", None, '{"base_url":"http://m:1","command":["codex-acp"]}'),
    ]
    carol = registry.get("carol")
    assert carol is not None and carol.backend == BackendConfig(
        type="acp", command=["codex-acp"], base_url="http://m:1"
    )


# -- JSON columns ---------------------------------------------------------------------------------


def test_customizations_round_trip_and_mcp_keys_are_sorted(db_path: Path, registry: Registry) -> None:
    mcp = {
        "zeta": {"source": "/mcp/z", "command": "node", "args": ["z.js"]},
        "alpha": {"command": "a", "source": "/a"},
    }
    rec = make(registry, instructions="Be brief.", skills=["/skills/a", "/skills/b"], mcp_servers=mcp)
    assert rec.mcp_servers == mcp
    assert list(rec.mcp_servers or {}) == ["alpha", "zeta"]
    assert registry.get("alice") == rec
    (stored,) = raw_sql(db_path, "SELECT mcp_servers_json, skills_sources_json, instructions FROM agents")
    assert stored[0] == json.dumps(mcp, sort_keys=True, separators=(",", ":"))
    assert json.loads(stored[1]) == ["/skills/a", "/skills/b"]
    assert stored[2] == "Be brief."


def test_empty_skills_and_mcp_maps_are_stored_as_none(db_path: Path, registry: Registry) -> None:
    rec = make(registry, skills=[], mcp_servers={})
    assert (rec.skills, rec.mcp_servers) == (None, None)
    assert raw_sql(db_path, "SELECT skills_sources_json, mcp_servers_json FROM agents") == [(None, None)]


# -- update and delete ----------------------------------------------------------------------------


def test_update_sets_only_given_fields_and_bumps_updated_at(db_path: Path, registry: Registry) -> None:
    rec = make(registry, mount_allowlist=ALLOWLIST, instructions="old", skills=["/s"])
    # Another process changes the instructions meanwhile; an update of other fields keeps that.
    raw_sql(db_path, "UPDATE agents SET instructions = 'changed elsewhere'")
    updated = registry.update("alice", backend={"type": "codex", "model": "gpt-5"}, skills=["/s", "/t"])
    assert updated.backend == BackendConfig(type="codex", model="gpt-5")
    assert updated.skills == ["/s", "/t"]
    assert updated.instructions == "changed elsewhere"
    assert (updated.agent_id, updated.workdir, updated.mount_allowlist) == (
        rec.agent_id,
        rec.workdir,
        ALLOWLIST,
    )
    assert updated.created_at == rec.created_at
    assert updated.updated_at > rec.updated_at
    assert registry.get("alice") == updated
    again = registry.update("alice", instructions=None)
    assert again.instructions is None and again.updated_at > updated.updated_at


def test_update_can_clear_a_model(registry: Registry) -> None:
    make(registry, backend={"type": "codex", "model": "gpt-5"})
    assert registry.update("alice", backend={"type": "codex"}).backend == BackendConfig(type="codex")


def test_invalid_updates_change_nothing(db_path: Path, registry: Registry) -> None:
    make(registry, backend={"type": "codex"})
    before = raw_sql(db_path, "SELECT * FROM agents")
    with pytest.raises(ConfigError, match="Invalid agent backend"):
        registry.update("alice", backend={"type": "claude"})
    with pytest.raises(ConfigError, match="cannot update agent field `agent_id`"):
        registry.update("alice", agent_id="XXXXXXXX")
    with pytest.raises(ConfigError, match="cannot update agent field `name`"):
        registry.update("alice", name="bob")
    with pytest.raises(ConfigError, match="field `skills`"):
        registry.update("alice", instructions="new", skills=5)
    with pytest.raises(ConfigError, match="agent `nobody` does not exist"):
        registry.update("nobody", instructions="x")
    assert raw_sql(db_path, "SELECT * FROM agents") == before


def test_delete(registry: Registry) -> None:
    make(registry, "alice")
    bob = make(registry, "bob")
    assert registry.delete("alice") is True
    assert registry.delete("alice") is False
    assert registry.list() == [bob]
    # The name is free again, under a new id.
    assert make(registry, "alice").name == "alice"


# -- legacy files and corrupt values --------------------------------------------------------------


def make_legacy(path: Path, columns: str, rows: list[tuple[Any, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE agents ({columns})")
    marks = ", ".join("?" * len(rows[0]))
    conn.executemany(f"INSERT INTO agents VALUES ({marks})", rows)
    conn.commit()
    conn.close()


T0 = "2026-01-01T00:00:00.000Z"


def test_rows_from_before_backend_model_keep_their_type(db_path: Path) -> None:
    make_legacy(
        db_path,
        "name TEXT PRIMARY KEY, agent_id TEXT NOT NULL UNIQUE, workdir TEXT NOT NULL,"
        " assistant_name TEXT NOT NULL, backend_type TEXT, mount_allowlist_json TEXT,"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL",
        [
            ("alice", "AAAAAAAA", "/srv/alice", "Andy", "codex", json.dumps(ALLOWLIST), T0, T0),
            ("bob", "BBBBBBBB", "/srv/bob", "Bobby", "claudeCode", None, T0, T0),
            ("carol", "CCCCCCCC", "/srv/carol", "Andy", None, None, T0, T0),
        ],
    )
    with Registry(db_path) as registry:
        alice, bob, carol = registry.list()
        assert alice.backend == BackendConfig(type="codex")
        assert alice.backend.model is None
        assert (alice.agent_id, alice.workdir, alice.mount_allowlist) == ("AAAAAAAA", "/srv/alice", ALLOWLIST)
        assert (bob.backend.type, bob.assistant_name) == ("claude_code", "Bobby")
        assert carol.backend.type == "claude_code"
        assert registry.update("alice", backend={"type": "codex", "model": "gpt-5"}).backend.model == "gpt-5"
    columns = {r[1] for r in raw_sql(db_path, "PRAGMA table_info(agents)")}
    assert {
        "backend_model",
        "skills_sources_json",
        "mcp_servers_json",
        "instructions",
        "backend_options_json",
    } <= columns
    assert raw_sql(db_path, "SELECT name FROM schema_migrations ORDER BY id") == [
        ("agents_table",),
        ("agents_missing_columns",),
        ("backend_options",),
    ]


def test_rows_from_before_backend_types_read_as_the_legacy_backend(db_path: Path) -> None:
    make_legacy(
        db_path,
        "name TEXT PRIMARY KEY, agent_id TEXT NOT NULL UNIQUE, workdir TEXT NOT NULL,"
        " assistant_name TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL",
        [("alice", "AAAAAAAA", "/srv/alice", "Andy", T0, T0)],
    )
    with Registry(db_path) as registry:
        alice = registry.get("alice")
        assert alice is not None and alice.backend == BackendConfig(type="claude_code")


def test_corrupt_values_fall_back_and_are_logged(
    db_path: Path, registry: Registry, registry_log: CapturedLog
) -> None:
    make(registry, "alice", mount_allowlist=ALLOWLIST, skills=["/s"], mcp_servers={"fs": {"command": "x"}})
    bob = make(registry, "bob", backend={"type": "codex", "model": "m"})
    make(registry, "carol", backend=BackendConfig(type="acp", command=["x"]))
    raw_sql(
        db_path,
        "UPDATE agents SET mount_allowlist_json = '{broken', skills_sources_json = '\"just a string\"',"
        " mcp_servers_json = 'garbage' WHERE name = 'alice'",
    )
    raw_sql(
        db_path,
        "UPDATE agents SET backend_type = 'gpt-bot', backend_options_json = '[1' WHERE name = 'carol'",
    )
    alice, got_bob, carol = registry.list()
    assert (alice.mount_allowlist, alice.skills, alice.mcp_servers) == (None, None, None)
    assert alice.agent_id  # the rest of the row is intact
    assert got_bob == bob
    assert carol.backend == BackendConfig(type=DEFAULT_BACKEND_TYPE)
    logged = registry_log.text()
    assert "'alice': stored mount allowlist is not valid JSON" in logged
    assert "'alice': stored skills is not a JSON list" in logged
    assert "'alice': stored mcp servers is not valid JSON" in logged
    assert "'carol': stored backend type 'gpt-bot' is unknown; using codex" in logged
    assert "'carol': stored backend options is not valid JSON" in logged


def test_invalid_backend_options_are_ignored(
    db_path: Path, registry: Registry, registry_log: CapturedLog
) -> None:
    make(registry, "alice", backend={"type": "codex", "model": "m"})
    raw_sql(db_path, "UPDATE agents SET backend_options_json = '{\"max_retries\": 99}'")
    alice = registry.get("alice")
    assert alice is not None and alice.backend == BackendConfig(type="codex", model="m")
    assert "stored backend options are invalid" in registry_log.text()


def test_an_unreadable_row_is_left_out_of_the_list(
    db_path: Path, registry: Registry, registry_log: CapturedLog
) -> None:
    make(registry, "alice")
    bob = make(registry, "bob")
    raw_sql(db_path, "UPDATE agents SET agent_id = '../../x' WHERE name = 'alice'")  # unsafe in a box name
    assert registry.list() == [bob]
    assert registry.get("alice") is None
    assert "skipping unreadable registry row 'alice'" in registry_log.text()
    with pytest.raises(ConfigError, match="unreadable registry row"):
        registry.update("alice", instructions="x")
    assert registry.delete("alice") is True


# -- concurrency ----------------------------------------------------------------------------------


async def test_concurrent_creates_from_threads(registry: Registry) -> None:
    names = [f"agent{i:02d}" for i in range(20)]
    records = await asyncio.gather(*(asyncio.to_thread(make, registry, n) for n in names))
    assert [r.name for r in registry.list()] == names
    assert len({r.agent_id for r in records}) == 20


def test_two_registries_on_one_file_see_each_other(db_path: Path) -> None:
    with Registry(db_path) as a, Registry(db_path) as b:
        make(a, "alice")
        with pytest.raises(ConfigError, match="already exists"):
            make(b, "alice")
        make(b, "bob")
        assert [r.name for r in a.list()] == ["alice", "bob"]
