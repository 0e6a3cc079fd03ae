"""Where journals live: the host's paths and the box's view follow one rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agentlite.run.journal import GUEST_IPC_DIR, guest_journal_path, journal_of, journal_path


@dataclass(frozen=True)
class _Run:
    run_id: str
    group_folder: str
    journal: str | None = None


def test_the_host_and_the_box_agree_on_where_a_run_journals(tmp_path: Path) -> None:
    ipc_root = tmp_path / "data" / "ipc"
    host = journal_path(ipc_root / "main", "run-1")
    assert journal_of(ipc_root, _Run("run-1", "main")) == host
    # The box sees the group's IPC folder at GUEST_IPC_DIR: the same file, relative to it.
    guest = PurePosixPath(guest_journal_path("run-1"))
    assert guest.relative_to(GUEST_IPC_DIR).as_posix() == host.relative_to(ipc_root / "main").as_posix()


def test_a_follow_up_run_reads_the_journal_of_the_run_that_opened_its_box(tmp_path: Path) -> None:
    opener = journal_path(tmp_path / "main", "run-1")
    assert journal_of(tmp_path, _Run("run-2", "main", journal=opener.name)) == opener
