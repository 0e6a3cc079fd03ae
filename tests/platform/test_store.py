"""The agent store: real SQLite files under tmp_path, including hand-made files from older versions."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import CapturedLog, captured_log, raw_sql

from agentlite.core.errors import AgentliteError, ConfigError, StoreError
from agentlite.core.names import shown
from agentlite.platform.store import (
    AgentStore,
    Message,
    Migration,
    RegisteredGroup,
    Task,
    TaskRun,
    apply_migrations,
    check_group_folder,
    now_iso,
    open_database,
    store_migrations,
)

T0 = "2026-01-01T00:00:00.000Z"


def ts(n: int) -> str:
    """A distinct timestamp n seconds after T0, in the store's string format."""
    minutes, seconds = divmod(n, 60)
    hours, minutes = divmod(minutes, 60)
    return f"2026-01-01T{hours:02d}:{minutes:02d}:{seconds:02d}.000Z"


def msg(mid: str, chat: str = "tg:1", content: str = "hello", at: int = 1, **kw: Any) -> Message:
    return Message(
        id=mid, chat_id=chat, sender="u1", sender_name="Ann", content=content, timestamp=ts(at), **kw
    )


def group(jid: str = "tg:1", folder: str = "family", **kw: Any) -> RegisteredGroup:
    return RegisteredGroup(jid=jid, name=f"name {jid}", folder=folder, trigger="@Andy", added_at=T0, **kw)


def task(tid: str = "t1", folder: str = "family", **kw: Any) -> Task:
    values: dict[str, Any] = {
        "id": tid,
        "group_folder": folder,
        "chat_id": "tg:1",
        "prompt": "say hi",
        "schedule_type": "interval",
        "schedule_value": "60000",
        "created_at": T0,
    }
    values.update(kw)
    return Task(**values)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agent" / "store" / "messages.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(db_path)
    yield s
    s.close()


@pytest.fixture
def store_log() -> Iterator[CapturedLog]:
    with captured_log("agentlite.store") as handler:
        yield handler


# -- group folders and time -------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["main", "family-chat", "A_1", "0", "a" * 64, "globalx", "my_global"])
def test_valid_group_folders(folder: str) -> None:
    assert check_group_folder(folder) == folder


@pytest.mark.parametrize(
    "folder",
    [
        *(
            "",
            "global",
            "GLOBAL",
            "Global",
            "..",
            "../x",
            "a/b",
            "a\\b",
            " a",
            "a ",
            "a\n",
            "a b",
            "-a",
            "_a",
        ),
        *("a.b", "a" * 65, "é"),
    ],
)
def test_invalid_group_folders_name_the_value(folder: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_group_folder(folder)
    assert f"`{shown(folder)}`" in str(info.value)  # control characters escaped


def test_group_folder_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        check_group_folder(None)  # type: ignore[arg-type]


def test_now_iso_is_utc_with_milliseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now_iso())


# -- the file -------------------------------------------------------------------------------------


def test_creates_the_folder_in_wal_mode_with_every_migration(db_path: Path, store: AgentStore) -> None:
    assert db_path.exists()
    assert raw_sql(db_path, "PRAGMA journal_mode") == [("wal",)]
    recorded = raw_sql(db_path, "SELECT id, name FROM schema_migrations ORDER BY id")
    assert recorded == [(m.id, m.name) for m in store_migrations()]
    assert [r[0] for r in recorded] == list(range(1, len(store_migrations()) + 1))


def test_reopening_applies_nothing_and_keeps_data(db_path: Path, store: AgentStore) -> None:
    store.store_message(msg("1"))
    store.close()
    with AgentStore(db_path) as again:
        assert [m.id for m in again.get_messages_since("tg:1", "", "Andy")] == ["1"]
    assert raw_sql(db_path, "SELECT count(*) FROM schema_migrations") == [(len(store_migrations()),)]


def test_closed_store_raises_a_clear_error(store: AgentStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        store.get_state("x")


def test_a_file_that_is_not_sqlite_is_refused_clearly(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database, just text that is long enough" * 40)
    with pytest.raises(
        StoreError, match=r"store `.*messages\.db`: cannot open it: file is not a database"
    ) as e:
        AgentStore(db_path)
    assert e.value.path == db_path


def test_bad_legacy_backend_type_is_refused(db_path: Path) -> None:
    with pytest.raises(ConfigError, match="`claude`"):
        AgentStore(db_path, legacy_backend_type="claude")


# -- messages -------------------------------------------------------------------------------------


def test_store_message_upserts_on_id_and_chat(store: AgentStore) -> None:
    store.store_message(msg("1", content="first"))
    store.store_message(msg("1", content="edited"))
    store.store_message(msg("1", chat="tg:2", content="other chat"))
    assert [m.content for m in store.get_messages_since("tg:1", "", "Andy")] == ["edited"]
    assert [m.content for m in store.get_messages_since("tg:2", "", "Andy")] == ["other chat"]


def test_empty_content_is_not_stored(store: AgentStore, db_path: Path) -> None:
    store.store_message(msg("1", content=""))
    assert raw_sql(db_path, "SELECT count(*) FROM messages") == [(0,)]


def test_message_flags_round_trip(store: AgentStore) -> None:
    store.store_message(msg("1", is_from_me=True))
    (got,) = store.get_messages_since("tg:1", "", "Andy")
    assert got == msg("1", is_from_me=True)


def test_messages_since_leave_out_the_assistant(store: AgentStore) -> None:
    store.store_message(msg("1", content="hi", at=1))
    store.store_message(msg("2", content="bot reply", at=2, is_bot_message=True))
    store.store_message(msg("3", content="Andy: an old reply without the flag", at=3))
    store.store_message(msg("4", content="Andy says hi", at=4))
    store.store_message(msg("5", content="andy: lower case is a user", at=5))
    got = store.get_messages_since("tg:1", "", "Andy")
    assert [m.id for m in got] == ["1", "4", "5"]


def test_prefix_backstop_is_exact_not_a_pattern(store: AgentStore) -> None:
    store.store_message(msg("1", content="A_x: user text", at=1))
    store.store_message(msg("2", content="A%x: user text", at=2))
    store.store_message(msg("3", content="A_x: bot text", at=3, chat="tg:2"))
    assert [m.id for m in store.get_messages_since("tg:1", "", "A%x")] == ["1"]
    assert [m.id for m in store.get_messages_since("tg:1", "", "A_x")] == ["2"]


def test_since_is_exclusive_and_empty_since_means_everything(store: AgentStore) -> None:
    for i in range(1, 4):
        store.store_message(msg(str(i), at=i))
    assert [m.id for m in store.get_messages_since("tg:1", "", "Andy")] == ["1", "2", "3"]
    assert [m.id for m in store.get_messages_since("tg:1", ts(2), "Andy")] == ["3"]
    assert store.get_messages_since("tg:1", ts(3), "Andy") == []


def test_get_new_messages_spans_chats_and_advances_the_cursor(store: AgentStore) -> None:
    store.store_message(msg("a1", chat="tg:1", at=1))
    store.store_message(msg("b1", chat="tg:2", at=2))
    store.store_message(msg("c1", chat="tg:3", at=3))
    store.store_message(msg("a2", chat="tg:1", at=4, is_bot_message=True))
    got, cursor = store.get_new_messages(["tg:1", "tg:2"], "", "Andy")
    assert [(m.chat_id, m.id) for m in got] == [("tg:1", "a1"), ("tg:2", "b1")]
    assert cursor == ts(2)
    assert store.get_new_messages(["tg:1", "tg:2"], cursor, "Andy") == ([], cursor)
    assert store.get_new_messages([], T0, "Andy") == ([], T0)


def test_limit_returns_the_newest_in_chronological_order(store: AgentStore) -> None:
    for i in range(1, 11):
        store.store_message(msg(str(i), at=i))
    got, cursor = store.get_new_messages(["tg:1"], "", "Andy", limit=3)
    assert [m.id for m in got] == ["8", "9", "10"]
    assert cursor == ts(10)
    assert [m.id for m in store.get_messages_since("tg:1", ts(2), "Andy", limit=2)] == ["9", "10"]
    assert store.get_new_messages(["tg:1"], "", "Andy", limit=0) == ([], "")


def test_default_limit_is_200(store: AgentStore) -> None:
    for i in range(250):
        store.store_message(msg(f"m{i}", at=i))
    got, _ = store.get_new_messages(["tg:1"], "", "Andy")
    assert len(got) == 200
    assert got[0].id == "m50" and got[-1].id == "m249"


# -- chats ----------------------------------------------------------------------------------------


def test_chat_metadata_defaults_the_name_and_keeps_the_newest_time(store: AgentStore) -> None:
    store.store_chat_metadata("tg:1", ts(5))
    assert store.list_chats() == [
        {"jid": "tg:1", "name": "tg:1", "last_message_time": ts(5), "channel": None, "is_group": None}
    ]
    store.store_chat_metadata("tg:1", ts(3), name="Family", channel="telegram", is_group=True)
    store.store_chat_metadata("tg:1", ts(4))  # no name: keeps "Family"
    (chat,) = store.list_chats()
    assert chat == {
        "jid": "tg:1",
        "name": "Family",
        "last_message_time": ts(5),
        "channel": "telegram",
        "is_group": True,
    }
    store.store_chat_metadata("tg:1", ts(9), is_group=False)
    (chat,) = store.list_chats()
    assert (chat["last_message_time"], chat["is_group"], chat["name"]) == (ts(9), False, "Family")


def test_list_chats_newest_first(store: AgentStore) -> None:
    store.store_chat_metadata("a", ts(1))
    store.store_chat_metadata("b", ts(3))
    store.store_chat_metadata("__group_sync__", ts(2))
    assert [c["jid"] for c in store.list_chats()] == ["b", "__group_sync__", "a"]


# -- router state ---------------------------------------------------------------------------------


def test_state_round_trips(store: AgentStore) -> None:
    assert store.get_state("last_timestamp") is None
    store.set_state("last_timestamp", ts(1))
    store.set_state("last_timestamp", ts(2))
    assert store.get_state("last_timestamp") == ts(2)
    assert store.get_json_state("last_agent_timestamp", {}) == {}
    store.set_json_state("last_agent_timestamp", {"tg:1": ts(3)})
    assert store.get_json_state("last_agent_timestamp", {}) == {"tg:1": ts(3)}


def test_corrupt_json_state_falls_back_and_is_logged(
    store: AgentStore, db_path: Path, store_log: CapturedLog
) -> None:
    store.set_state("last_timestamp", ts(1))
    raw_sql(db_path, "INSERT INTO router_state (key, value) VALUES ('last_agent_timestamp', '{not json')")
    assert store.get_json_state("last_agent_timestamp", {"fallback": True}) == {"fallback": True}
    assert any("last_agent_timestamp" in m and "not valid JSON" in m for m in store_log.messages())
    assert store.get_state("last_timestamp") == ts(1)
    assert store.get_state("last_agent_timestamp") == "{not json"  # kept for inspection


def test_unserializable_state_is_refused_and_keeps_the_old_value(store: AgentStore) -> None:
    store.set_json_state("k", [1])
    with pytest.raises(ConfigError, match="`k`"):
        store.set_json_state("k", {"when": object()})
    with pytest.raises(ConfigError, match="must be a string"):
        store.set_state("k", 5)  # type: ignore[arg-type]
    assert store.get_json_state("k", None) == [1]


# -- sessions and handoffs ------------------------------------------------------------------------


def test_sessions_are_kept_per_backend_type(store: AgentStore) -> None:
    store.set_session("family", "claude_code", "c-1")
    store.set_session("family", "codex", "x-1")
    store.set_session("work", "codex", "x-2")
    store.set_session("family", "codex", "x-3")
    assert store.get_session("family", "claude_code") == "c-1"
    assert store.get_sessions("codex") == {"family": "x-3", "work": "x-2"}
    store.delete_session("family", "codex")
    assert store.get_session("family", "codex") is None
    assert store.get_session("family", "claude_code") == "c-1"
    assert store.get_sessions("acp") == {}


def test_session_writes_validate(store: AgentStore) -> None:
    with pytest.raises(ConfigError, match="`claudeCode`"):
        store.set_session("family", "claudeCode", "s")
    with pytest.raises(ConfigError, match=r"`\.\./x`"):
        store.set_session("../x", "codex", "s")
    with pytest.raises(ConfigError, match="must not be empty"):
        store.set_session("family", "codex", "")
    assert store.get_sessions("codex") == {}


def test_handoffs(store: AgentStore) -> None:
    assert store.get_handoff("family") is None
    store.set_handoff("family", "claude_code", "codex")
    first = store.get_handoff("family")
    assert first is not None
    assert (first["group_folder"], first["from_backend_type"], first["to_backend_type"]) == (
        "family",
        "claude_code",
        "codex",
    )
    assert re.fullmatch(r"\d{4}-.*Z", first["created_at"])
    store.set_handoff("family", "codex", "acp")
    second = store.get_handoff("family")
    assert second is not None
    assert (second["from_backend_type"], second["to_backend_type"]) == ("codex", "acp")
    assert second["created_at"] >= first["created_at"]
    store.clear_handoff("family")
    assert store.get_handoff("family") is None
    with pytest.raises(ConfigError):
        store.set_handoff("family", "codex", "gpt")


# -- registered groups ----------------------------------------------------------------------------


def test_groups_round_trip_with_is_main(db_path: Path, store: AgentStore) -> None:
    main = group("tg:main", "main", is_main=True, requires_trigger=False)
    fam = group("tg:1", "family", container_config={"timeout": 5, "mounts": [{"path": "/x"}]})
    store.register_group(main)
    store.register_group(fam)
    store.close()
    with AgentStore(db_path) as again:
        assert again.get_registered_groups() == {"tg:main": main, "tg:1": fam}


def test_register_group_upserts_by_jid(store: AgentStore) -> None:
    store.register_group(group("tg:1", "family"))
    renamed = group("tg:1", "family-2", container_config={"a": 1})
    store.register_group(renamed)
    assert store.get_registered_groups() == {"tg:1": renamed}


def test_invalid_folder_is_rejected_and_nothing_is_written(store: AgentStore) -> None:
    store.register_group(group("tg:1", "family"))
    with pytest.raises(ConfigError, match="`global`"):
        store.register_group(group("tg:1", "global"))
    with pytest.raises(ConfigError, match=r"`\.\./etc`"):
        store.register_group(group("tg:2", "../etc"))
    assert store.get_registered_groups() == {"tg:1": group("tg:1", "family")}


def test_a_folder_belongs_to_one_chat(store: AgentStore) -> None:
    store.register_group(group("tg:1", "family"))
    with pytest.raises(ConfigError, match="`family` is already used by chat `tg:1`"):
        store.register_group(group("tg:2", "family"))
    assert list(store.get_registered_groups()) == ["tg:1"]


def test_unstorable_container_config_is_refused(store: AgentStore) -> None:
    with pytest.raises(ConfigError, match="container config"):
        store.register_group(group(container_config={"x": object()}))
    assert store.get_registered_groups() == {}


def test_corrupt_group_rows_do_not_hide_the_others(
    store: AgentStore, db_path: Path, store_log: CapturedLog
) -> None:
    store.register_group(group("tg:1", "family"))
    store.register_group(group("tg:2", "work", container_config={"a": 1}))
    store.register_group(group("tg:3", "list", container_config={"a": 1}))
    raw_sql(db_path, "UPDATE registered_groups SET container_config = 'garbage{' WHERE jid = 'tg:2'")
    raw_sql(db_path, "UPDATE registered_groups SET container_config = '[1, 2]' WHERE jid = 'tg:3'")
    raw_sql(
        db_path,
        "INSERT INTO registered_groups (jid, name, folder, trigger_pattern, added_at)"
        " VALUES ('tg:evil', 'evil', '../../etc', '@Andy', ?)",
        (T0,),
    )
    groups = store.get_registered_groups()
    assert sorted(groups) == ["tg:1", "tg:2", "tg:3"]
    assert groups["tg:2"].container_config is None
    assert groups["tg:3"].container_config is None
    logged = "\n".join(store_log.messages())
    assert "'tg:2': container_config is not valid JSON" in logged
    assert "'tg:3': container_config is not a JSON object" in logged
    assert "skipping registered group 'tg:evil'" in logged


# -- tasks ----------------------------------------------------------------------------------------


def test_task_crud(store: AgentStore) -> None:
    t = task("t1", next_run=ts(10))
    store.create_task(t)
    store.create_task(task("t2", folder="work", created_at=ts(5)))
    assert store.get_task("t1") == t
    assert store.get_task("nope") is None
    assert [x.id for x in store.list_tasks()] == ["t2", "t1"]  # newest first
    assert [x.id for x in store.list_tasks("work")] == ["t2"]
    assert store.list_tasks("none") == []

    updated = store.update_task("t1", status="paused", prompt="say bye")
    assert updated == t.model_copy(update={"status": "paused", "prompt": "say bye"})
    assert store.get_task("t1") == updated
    assert store.update_task("nope", status="paused") is None
    assert store.update_task("t1") == updated

    assert store.delete_task("t1") is True
    assert store.delete_task("t1") is False
    assert store.get_task("t1") is None


def test_update_task_sets_only_the_given_fields(store: AgentStore, db_path: Path) -> None:
    store.create_task(task("t1", next_run=ts(10), last_result="ok"))
    # Someone else changes the prompt between our read and our update: it must survive.
    raw_sql(db_path, "UPDATE scheduled_tasks SET prompt = 'changed elsewhere' WHERE id = 't1'")
    store.update_task("t1", next_run=None, last_run=ts(11))
    got = store.get_task("t1")
    assert got is not None
    assert (got.prompt, got.next_run, got.last_run, got.last_result) == (
        "changed elsewhere",
        None,
        ts(11),
        "ok",
    )


def test_invalid_task_updates_change_nothing(store: AgentStore) -> None:
    t = task("t1")
    store.create_task(t)
    with pytest.raises(ConfigError, match="`bogus`"):
        store.update_task("t1", bogus=1)
    with pytest.raises(ConfigError, match="`id`"):
        store.update_task("t1", id="t2")
    with pytest.raises(ConfigError, match="invalid update of task `t1`"):
        store.update_task("t1", status="done", prompt="changed")
    assert store.get_task("t1") == t


def test_duplicate_task_id_is_refused(store: AgentStore) -> None:
    store.create_task(task("t1"))
    with pytest.raises(ConfigError, match="task `t1` already exists"):
        store.create_task(task("t1", prompt="other"))
    assert store.get_task("t1") == task("t1")


def test_due_tasks(store: AgentStore) -> None:
    store.create_task(task("late", next_run=ts(5)))
    store.create_task(task("later", next_run=ts(8)))
    store.create_task(task("exact", next_run=ts(10)))
    store.create_task(task("future", next_run=ts(11)))
    store.create_task(task("paused", next_run=ts(1), status="paused"))
    store.create_task(task("done", next_run=None, status="completed"))
    store.create_task(task("no-next", next_run=None))
    assert [t.id for t in store.get_due_tasks(ts(10))] == ["late", "later", "exact"]


def test_run_logs_newest_first_and_deleted_with_the_task(store: AgentStore, db_path: Path) -> None:
    store.create_task(task("t1"))
    store.create_task(task("t2"))
    runs = [
        TaskRun(task_id="t1", run_at=ts(1), duration_ms=10, status="success", result="one"),
        TaskRun(task_id="t1", run_at=ts(3), duration_ms=30, status="error", error="boom"),
        TaskRun(task_id="t1", run_at=ts(2), duration_ms=20, status="success", result="two"),
        TaskRun(task_id="t2", run_at=ts(2), duration_ms=5, status="success"),
    ]
    for run in runs:
        store.log_task_run(run)
    assert store.get_task_runs("t1") == [runs[1], runs[2], runs[0]]
    store.delete_task("t1")
    assert store.get_task_runs("t1") == []
    assert raw_sql(db_path, "SELECT task_id FROM task_run_logs") == [("t2",)]


def test_logging_a_run_of_a_missing_task_is_refused(store: AgentStore) -> None:
    with pytest.raises(ConfigError, match="`gone`"):
        store.log_task_run(TaskRun(task_id="gone", run_at=ts(1), duration_ms=1, status="success"))


def test_corrupt_task_rows_are_skipped_and_logged(
    store: AgentStore, db_path: Path, store_log: CapturedLog
) -> None:
    store.create_task(task("good", next_run=ts(1)))
    store.create_task(task("bad", next_run=ts(1)))
    raw_sql(db_path, "UPDATE scheduled_tasks SET status = 'exploded' WHERE id = 'bad'")
    raw_sql(db_path, "UPDATE scheduled_tasks SET schedule_type = 'active' WHERE id = 'bad'")
    assert [t.id for t in store.list_tasks()] == ["good"]
    assert store.get_task("bad") is None
    assert any("skipping unreadable task 'bad'" in m for m in store_log.messages())
    store.create_task(task("bad-run"))
    store.log_task_run(TaskRun(task_id="bad-run", run_at=ts(1), duration_ms=1, status="success"))
    store.log_task_run(TaskRun(task_id="bad-run", run_at=ts(2), duration_ms=1, status="success"))
    raw_sql(db_path, "UPDATE task_run_logs SET status = 'weird' WHERE run_at = ?", (ts(2),))
    assert [r.run_at for r in store.get_task_runs("bad-run")] == [ts(1)]


# -- transactions ---------------------------------------------------------------------------------


def test_a_failed_write_rolls_back_all_of_it(store: AgentStore, db_path: Path) -> None:
    """delete_task deletes run logs, then the task; if the second step fails the first is undone."""
    store.create_task(task("t1"))
    store.log_task_run(TaskRun(task_id="t1", run_at=ts(1), duration_ms=1, status="success"))
    raw_sql(
        db_path,
        "CREATE TRIGGER keep_t1 BEFORE DELETE ON scheduled_tasks WHEN OLD.id = 't1'"
        " BEGIN SELECT RAISE(ABORT, 'task t1 is protected'); END",
    )
    with pytest.raises(ConfigError, match="task t1 is protected"):
        store.delete_task("t1")
    assert store.get_task("t1") is not None
    assert len(store.get_task_runs("t1")) == 1
    # The connection is usable afterwards (no transaction left open).
    store.set_state("after", "ok")
    assert store.get_state("after") == "ok"


def test_constraint_violations_become_config_errors(store: AgentStore, db_path: Path) -> None:
    raw_sql(
        db_path,
        "CREATE TRIGGER no_spam BEFORE INSERT ON messages WHEN NEW.content = 'spam'"
        " BEGIN SELECT RAISE(ABORT, 'spam is not stored'); END",
    )
    store.store_message(msg("1", content="fine"))
    with pytest.raises(ConfigError, match="spam is not stored"):
        store.store_message(msg("2", content="spam"))
    assert [m.id for m in store.get_messages_since("tg:1", "", "Andy")] == ["1"]


# -- migrations -----------------------------------------------------------------------------------

V1_SCHEMA = [
    "CREATE TABLE chats (jid TEXT PRIMARY KEY, name TEXT, last_message_time TEXT)",
    "CREATE TABLE messages (id TEXT NOT NULL, chat_id TEXT NOT NULL, sender TEXT, sender_name TEXT,"
    " content TEXT, timestamp TEXT NOT NULL, is_from_me INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (id, chat_id))",
    "CREATE TABLE scheduled_tasks (id TEXT PRIMARY KEY, group_folder TEXT NOT NULL, chat_id TEXT NOT NULL,"
    " prompt TEXT NOT NULL, schedule_type TEXT NOT NULL, schedule_value TEXT NOT NULL, next_run TEXT,"
    " last_run TEXT, last_result TEXT, status TEXT NOT NULL DEFAULT 'active', created_at TEXT NOT NULL)",
    "CREATE TABLE task_run_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,"
    " run_at TEXT NOT NULL, duration_ms INTEGER NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT)",
    "CREATE TABLE router_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE sessions (group_folder TEXT PRIMARY KEY, session_id TEXT NOT NULL)",
    "CREATE TABLE registered_groups (jid TEXT PRIMARY KEY, name TEXT NOT NULL, folder TEXT NOT NULL UNIQUE,"
    " trigger_pattern TEXT NOT NULL, added_at TEXT NOT NULL, container_config TEXT,"
    " requires_trigger INTEGER NOT NULL DEFAULT 1)",
]


def make_v1_file(path: Path) -> None:
    """A file as the first version wrote it, before migrations were tracked, with data in every table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO chats VALUES (?, ?, ?)",
        [("tg:1", "Family", ts(2)), ("123@g.us", "WA group", ts(1)), ("x@s.whatsapp.net", "Bob", ts(1))],
    )
    conn.executemany(
        "INSERT INTO messages VALUES (?, ?, 'u1', 'Ann', ?, ?, ?)",
        [("1", "tg:1", "hello", ts(1), 0), ("2", "tg:1", "me again", ts(2), 1)],
    )
    conn.execute(
        "INSERT INTO scheduled_tasks VALUES ('t1', 'family', 'tg:1', 'say hi', 'cron', '0 9 * * *', ?, NULL,"
        " NULL, 'active', ?)",
        (ts(100), T0),
    )
    conn.execute(
        "INSERT INTO task_run_logs (task_id, run_at, duration_ms, status) VALUES ('t1', ?, 5, 'success')",
        (ts(50),),
    )
    conn.execute("INSERT INTO router_state VALUES ('last_timestamp', ?)", (ts(2),))
    conn.execute("INSERT INTO sessions VALUES ('family', 'sess-1')")
    conn.executemany(
        "INSERT INTO registered_groups VALUES (?, ?, ?, '@Andy', ?, ?, ?)",
        [("tg:main", "Main", "main", T0, None, 0), ("tg:1", "Family", "family", T0, '{"timeout": 5}', 1)],
    )
    conn.commit()
    conn.close()


def test_a_v1_file_upgrades_without_losing_data(db_path: Path) -> None:
    make_v1_file(db_path)
    with AgentStore(db_path, legacy_backend_type="codex") as store:
        assert [
            (m.id, m.is_from_me, m.is_bot_message) for m in store.get_messages_since("tg:1", "", "Andy")
        ] == [
            ("1", False, False),
            ("2", True, False),
        ]
        t = store.get_task("t1")
        assert t is not None and (t.context_mode, t.next_run, t.schedule_type) == (
            "isolated",
            ts(100),
            "cron",
        )
        assert [r.duration_ms for r in store.get_task_runs("t1")] == [5]
        assert store.get_state("last_timestamp") == ts(2)
        # Sessions from before backend types are kept under the agent's backend of that time.
        assert store.get_sessions("codex") == {"family": "sess-1"}
        assert store.get_sessions("claude_code") == {}
        groups = store.get_registered_groups()
        assert groups["tg:main"].is_main is True and groups["tg:main"].requires_trigger is False
        assert groups["tg:1"].is_main is False and groups["tg:1"].container_config == {"timeout": 5}
        chats = {c["jid"]: c for c in store.list_chats()}
        assert (chats["tg:1"]["channel"], chats["tg:1"]["is_group"]) == ("telegram", True)
        assert (chats["123@g.us"]["channel"], chats["123@g.us"]["is_group"]) == ("whatsapp", True)
        assert (chats["x@s.whatsapp.net"]["channel"], chats["x@s.whatsapp.net"]["is_group"]) == (
            "whatsapp",
            False,
        )
        # New features work on the upgraded file.
        store.store_message(msg("3", content="Andy: reply", at=3, is_bot_message=True))
        store.set_handoff("family", "codex", "claude_code")
        assert store.get_handoff("family") is not None
    columns = {r[1] for r in raw_sql(db_path, "PRAGMA table_info(messages)")}
    assert "is_bot_message" in columns
    indexes = {r[0] for r in raw_sql(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_messages_timestamp", "idx_messages_chat_time", "idx_tasks_due"} <= indexes
    assert [r[0] for r in raw_sql(db_path, "SELECT id FROM schema_migrations ORDER BY id")] == list(
        range(1, len(store_migrations()) + 1)
    )


def test_a_file_at_migration_1_upgrades(db_path: Path) -> None:
    """A file our own first version wrote: it records migration 1 only."""
    conn = open_database(db_path)
    apply_migrations(conn, store_migrations()[:1], path=db_path, logger=logging.getLogger("test"))
    conn.execute("INSERT INTO sessions VALUES ('family', 'sess-1')")
    conn.close()
    with AgentStore(db_path) as store:
        assert store.get_sessions("claude_code") == {"family": "sess-1"}
    assert raw_sql(db_path, "SELECT count(*) FROM schema_migrations") == [(len(store_migrations()),)]


def test_a_file_from_a_newer_version_is_refused(db_path: Path) -> None:
    AgentStore(db_path).close()
    future = len(store_migrations()) + 1
    raw_sql(db_path, "INSERT INTO schema_migrations VALUES (?, 'from_the_future', ?)", (future, T0))
    with pytest.raises(AgentliteError, match=rf"migration {future} .*newer version"):
        AgentStore(db_path)


def test_a_renamed_migration_is_refused(db_path: Path) -> None:
    AgentStore(db_path).close()
    raw_sql(db_path, "UPDATE schema_migrations SET name = 'something_else' WHERE id = 3")
    with pytest.raises(AgentliteError, match="`something_else`, expected `message_bot_flag`"):
        AgentStore(db_path)


def test_a_failing_migration_leaves_the_previous_version(db_path: Path) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk on fire")

    migrations = [
        Migration(1, "one", lambda c: c.execute("CREATE TABLE one (x INTEGER)")),
        Migration(2, "two", half_then_fail),
    ]
    conn = open_database(db_path)
    with pytest.raises(AgentliteError, match="migration 2 `two` failed: disk on fire"):
        apply_migrations(conn, migrations, path=db_path, logger=logging.getLogger("test"))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "one" in tables and "half_done" not in tables
    assert [tuple(r) for r in conn.execute("SELECT id FROM schema_migrations")] == [(1,)]
    assert not conn.in_transaction
    conn.close()


# -- concurrency and speed ------------------------------------------------------------------------


async def test_usable_from_threads_concurrently(store: AgentStore) -> None:
    def writer(n: int) -> None:
        for i in range(50):
            store.store_message(msg(f"{n}-{i}", chat=f"tg:{n}", at=i))
            store.get_new_messages([f"tg:{n}"], "", "Andy")

    await asyncio.gather(*(asyncio.to_thread(writer, n) for n in range(8)))
    got, _ = store.get_new_messages([f"tg:{n}" for n in range(8)], "", "Andy", limit=1000)
    assert len(got) == 400


def test_two_connections_to_one_file(db_path: Path) -> None:
    with AgentStore(db_path) as a, AgentStore(db_path) as b:
        a.store_message(msg("1"))
        b.store_message(msg("2", at=2))
        assert [m.id for m in a.get_messages_since("tg:1", "", "Andy")] == ["1", "2"]


def test_ten_thousand_messages_over_a_hundred_groups(store: AgentStore, db_path: Path) -> None:
    chats = [f"tg:{g}" for g in range(100)]
    started = time.perf_counter()
    for i in range(10_000):
        store.store_message(msg(f"m{i}", chat=chats[i % 100], at=i, is_bot_message=i % 7 == 0))
    stored = time.perf_counter() - started

    started = time.perf_counter()
    got, cursor = store.get_new_messages(chats, "", "Andy")
    assert len(got) == 200 and cursor == ts(9_999)
    assert [m.timestamp for m in got] == sorted(m.timestamp for m in got)
    for g, chat in enumerate(chats):
        expected = [f"m{i}" for i in range(5_001, 10_000) if i % 100 == g and i % 7 != 0]
        assert [m.id for m in store.get_messages_since(chat, ts(5_000), "Andy")] == expected
    queried = time.perf_counter() - started

    conn = sqlite3.connect(db_path)
    plan = " ".join(
        str(r[3])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE chat_id = ? AND timestamp > ? ORDER BY timestamp",
            ("tg:1", T0),
        )
    )
    conn.close()
    assert "idx_messages_chat_time" in plan
    # Generous bounds for slow CI machines; typical: ~1 s to store, a few ms per query.
    assert stored < 30, f"storing 10,000 messages took {stored:.1f} s"
    assert queried < 5, f"101 queries took {queried:.1f} s"
