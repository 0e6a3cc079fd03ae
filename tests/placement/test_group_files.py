"""A group's files between its node and the host, without a cluster: the copy of its state, the
relay of its IPC requests and of the host's writes, all on real folders a box could have planted
symlinks, fifos and hostile names in."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from agentlite.placement import PlacementConfig
from agentlite.placement.group_files import (
    CopyTooLarge,
    HostIpcMirror,
    node_group_paths,
    pack_state,
    take_requests,
    unpack_state,
)


def test_a_copy_carries_folders_and_files_and_follows_no_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's own file")
    old = node_group_paths(tmp_path / "node-a", "agent", "g")
    (old.workspace / "src").mkdir(parents=True)
    (old.workspace / "src" / "note.txt").write_text("written by the last turn")
    (old.agent_home / ".codex").mkdir(parents=True)
    (old.agent_home / ".codex" / "session.jsonl").write_text("{}")
    # What a box may plant: links to the host's files and folders, a fifo.
    (old.workspace / "link-to-secret").symlink_to(secret)
    (old.workspace / "link-to-root").symlink_to("/")
    os.mkfifo(old.workspace / "pipe")

    packed = pack_state(old)
    assert packed.files == 2
    assert sorted(packed.skipped) == ["workspace/link-to-root", "workspace/link-to-secret", "workspace/pipe"]
    assert b"the host's own file" not in packed.data

    new = node_group_paths(tmp_path / "node-b", "agent", "g")
    new.workspace.mkdir(parents=True)
    (new.workspace / "stale.txt").write_text("from an earlier stay on this node")
    (new.workspace / "src").symlink_to(tmp_path)  # unpacking must not write through it
    assert unpack_state(packed.data, new) == 2
    assert (new.workspace / "src" / "note.txt").read_text() == "written by the last turn"
    assert not (new.workspace / "src").is_symlink()
    assert not (tmp_path / "note.txt").exists()
    assert not (new.workspace / "stale.txt").exists()
    assert (new.agent_home / ".codex" / "session.jsonl").read_text() == "{}"
    assert not (new.workspace / "link-to-secret").exists()


def test_unpacking_takes_only_plain_folders_and_files(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("workspace/../escaped.txt", "/abs.txt", "elsewhere/x.txt", "workspace/ok.txt"):
            entry = tarfile.TarInfo(name)
            entry.size = 2
            archive.addfile(entry, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("workspace/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        archive.addfile(link)
    paths = node_group_paths(tmp_path / "node", "agent", "g")
    assert unpack_state(buffer.getvalue(), paths) == 1
    assert sorted(p.name for p in paths.workspace.iterdir()) == ["ok.txt"]
    assert not (tmp_path / "node" / "groups" / "agent" / "escaped.txt").exists()


def test_a_copy_over_the_limit_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    paths = node_group_paths(tmp_path, "agent", "g")
    paths.workspace.mkdir(parents=True)
    (paths.workspace / "big.bin").write_bytes(b"x" * 4096)
    with pytest.raises(CopyTooLarge, match=r"over 1024 bytes .*shared folder"):
        pack_state(paths, limit=1024)


def test_ipc_requests_are_taken_once_and_planted_entries_are_not_read(tmp_path: Path) -> None:
    paths = node_group_paths(tmp_path, "agent", "g")
    (paths.ipc_dir / "messages").mkdir(parents=True)
    (paths.ipc_dir / "tasks").mkdir()
    (paths.ipc_dir / "messages" / "1.json").write_text('{"type": "message", "text": "hi"}')
    (paths.ipc_dir / "messages" / ".2.json.tmp").write_text("half written")
    (paths.ipc_dir / "tasks" / "t.json").write_text('{"type": "schedule_task"}')
    secret = tmp_path / "secret.json"
    secret.write_text("host secret")
    (paths.ipc_dir / "messages" / "3.json").symlink_to(secret)
    taken = take_requests(paths.ipc_dir)
    assert [(kind, name) for kind, name, _ in taken] == [("messages", "1.json"), ("tasks", "t.json")]
    assert take_requests(paths.ipc_dir) == []
    assert secret.read_text() == "host secret"
    assert (paths.ipc_dir / "messages" / ".2.json.tmp").exists()


def test_the_host_mirror_moves_inputs_once_and_sends_snapshots_when_they_change(tmp_path: Path) -> None:
    ipc = tmp_path / "ipc" / "g"
    (ipc / "input").mkdir(parents=True)
    (ipc / "current_tasks.json").write_text("[]")
    (ipc / "input" / "1-a.json").write_text('{"type": "message", "text": "follow-up"}')
    mirror = HostIpcMirror(ipc)
    first = mirror.pending()
    assert [(sub, name) for sub, name, _ in first] == [(None, "current_tasks.json"), ("input", "1-a.json")]
    assert not (ipc / "input" / "1-a.json").exists()
    assert mirror.pending() == []
    (ipc / "current_tasks.json").write_text('[{"id": "t1"}]')
    assert [(sub, name) for sub, name, _ in mirror.pending()] == [(None, "current_tasks.json")]


def test_per_node_slots() -> None:
    config = PlacementConfig(kind="ray", node_slots={"abc": 1, "10.0.0.7": 3, "*": 2})
    assert config.slots_of("abcdef", "10.0.0.5", 4) == 1  # by node id prefix
    assert config.slots_of("zzz", "10.0.0.7", 4) == 3  # by address
    assert config.slots_of("zzz", "10.0.0.8", 4) == 2  # the others
    assert config.slots_of("zzz", "10.0.0.7", 2) == 2  # never more than the node offers
    assert PlacementConfig(kind="ray").slots_of("n", "a", 5) == 5
    assert PlacementConfig(kind="ray", node_slots=3).slots_of("n", "a", 5) == 3
    from agentlite.core.errors import ConfigError

    with pytest.raises(ConfigError, match="node_slots must be at least 1 for `abc`, got 0"):
        PlacementConfig(kind="ray", node_slots={"abc": 0})
