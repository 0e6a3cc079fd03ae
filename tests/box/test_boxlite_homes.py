"""One BoxLite home per host, against the real ``boxlite`` package and real second processes.

BoxLite lets one process use a home at a time, so every host here is its own process
(``tests/boxlite_host.py``) that creates boxes without booting them, the way a host does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.oci import make_oci_layout

from agentlite.box import boxlite_homes as homes
from agentlite.box.boxlite import BoxliteRuntime
from agentlite.box.lifecycle import cleanup_orphans, run_in_box
from agentlite.box.ownership import OwnerRecord, RecordStore, ownership_for
from agentlite.box.probe import boxlite_checks
from conftest import until_sync

REPO = Path(__file__).resolve().parents[2]


class Host:
    """A BoxLite host in a child process, talking JSON lines over its stdin and stdout."""

    def __init__(self, home: Path, layout: Path, agent: str, boxes: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.boxlite_host", str(home), str(layout), agent, str(boxes)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.pid: int = hello["pid"]
        self.box_home = Path(hello["box_home"])
        self.boxes: list[str] = hello["boxes"]

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"host exited early with {self.proc.wait()}"
        return json.loads(line)

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            with_signal(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def with_signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return make_oci_layout(tmp_path / "oci")


@pytest.fixture
def start_host(layout: Path) -> Iterator[Callable[..., Host]]:
    started: list[Host] = []

    def start(home: Path, agent: str = "two", boxes: int = 2) -> Host:
        started.append(Host(home, layout, agent, boxes))
        return started[-1]

    yield start
    for host in started:
        host.close()


def agentlite(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "AGENTLITE_HOME": str(home)}
    env.pop("AGENTLITE_RUNTIME", None)
    return subprocess.run(
        [sys.executable, "-m", "agentlite", *args, "--runtime", "boxlite"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_two_hosts_on_one_home_then_one_dies_and_the_other_sweeps_its_home(
    tmp_path: Path, start_host: Callable[..., Host]
) -> None:
    home = tmp_path / "home"
    first, second = start_host(home), start_host(home)
    # Both started and created boxes: each in a BoxLite home of its own, each home locked by its host.
    assert first.box_home != second.box_home
    assert first.box_home.parent == second.box_home.parent == home / "boxlite"
    assert homes.lock_held(first.box_home) and homes.lock_held(second.box_home)
    assert first.ask("list") == sorted(first.boxes) and second.ask("list") == sorted(second.boxes)
    store = RecordStore(home)
    for host in (first, second):
        for name in host.boxes:
            record = OwnerRecord.model_validate_json(store.read_raw(name) or b"")
            assert record.box_home == str(host.box_home)

    # `agentlite boxes` beside two live hosts lists all four boxes from what the hosts publish.
    listed = agentlite("boxes", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {*first.boxes, *second.boxes}
    assert {row["owner"]["verdict"] for row in rows.values()} == {"live"}
    assert rows[first.boxes[0]]["owner"]["pid"] == first.pid
    assert rows[first.boxes[0]]["box_home"] == str(first.box_home)
    assert homes.lock_held(first.box_home) and homes.lock_held(second.box_home)

    first.kill()
    assert not homes.lock_held(first.box_home)  # the kernel dropped the dead host's lease
    table = agentlite("boxes", home=home)
    assert table.returncode == 0, table.stderr
    dead_lines = [line for line in table.stdout.splitlines() if first.boxes[0] in line]
    assert dead_lines and "dead" in dead_lines[0]
    dry = agentlite("cleanup", "--agent", "two", "--dry-run", "--json", home=home)
    assert dry.returncode == 0, dry.stderr
    plan = {d["name"]: d for d in json.loads(dry.stdout)}
    assert {plan[n]["action"] for n in first.boxes} == {"remove"}
    assert {plan[n]["action"] for n in second.boxes} == {"keep"}
    assert f"host pid {first.pid} gone" in plan[first.boxes[0]]["reason"]
    assert f"host pid {second.pid} alive" in plan[second.boxes[0]]["reason"]
    assert first.box_home.is_dir()  # a dry run changed nothing

    # The live host's own sweep empties and deletes the dead host's home and keeps its own boxes.
    decisions = {d["name"]: d for d in second.ask("sweep")}
    assert {n: decisions[n]["removed"] for n in first.boxes} == dict.fromkeys(first.boxes, True)
    assert {decisions[n]["action"] for n in second.boxes} == {"keep"}
    assert not first.box_home.exists()
    assert second.ask("list") == sorted(second.boxes)
    assert store.record_names() == sorted(second.boxes)


def test_deleting_an_agent_asks_the_live_host_that_holds_its_box(
    tmp_path: Path, start_host: Callable[..., Host]
) -> None:
    home = tmp_path / "home"
    host = start_host(home, agent="gone", boxes=1)
    other = start_host(home, agent="stays", boxes=1)
    requester = BoxliteRuntime(home, manage_only=True)

    decisions = asyncio.run(cleanup_orphans(requester, home, "gone", include_live=True))

    assert [(d.name, d.removed, d.pending) for d in decisions] == [(host.boxes[0], True, False)]
    assert "removed by its host on request" in decisions[0].reason
    assert host.ask("list") == []
    assert other.ask("list") == other.boxes  # another agent's box is not touched
    assert homes.lock_held(host.box_home)  # the host kept its home throughout; nobody else opened it
    assert RecordStore(home).record_names() == other.boxes
    assert requester.box_home is not None and not requester.box_home.exists()  # it opened no home


def test_a_removal_request_stays_pending_while_the_host_cannot_act(
    tmp_path: Path, start_host: Callable[..., Host]
) -> None:
    home = tmp_path / "home"
    host = start_host(home, agent="slow", boxes=1)
    requester = BoxliteRuntime(home, manage_only=True)
    os.kill(host.pid, signal.SIGSTOP)  # alive (its lock held) but not serving requests
    try:
        decisions = asyncio.run(
            requester.sweep_other_homes("agentlite-slow-", include_live=True, request_wait=0.5)
        )
        assert [(d.name, d.removed, d.pending) for d in decisions] == [(host.boxes[0], False, True)]
        assert decisions[0].reason.startswith("pending: asked its host to remove it")
    finally:
        os.kill(host.pid, signal.SIGCONT)
    until_sync(lambda: not homes.request_path(host.box_home, host.boxes[0]).exists(), "the host to act")
    assert host.ask("list") == []


def test_opening_a_held_home_waits_a_bounded_time_then_names_the_holder(
    tmp_path: Path, start_host: Callable[..., Host]
) -> None:
    host = start_host(tmp_path / "home", boxes=1)
    with pytest.raises(homes.HomeBusy) as caught:
        homes.open_home(host.box_home, wait=0.3)
    message = str(caught.value)
    assert f"held by host pid {host.pid}" in message and "waited 0.3 s" in message
    assert "`agentlite boxes` lists its boxes without opening its home" in message
    assert host.ask("list") == host.boxes


def test_a_dead_home_with_another_agents_box_is_kept_until_empty(
    tmp_path: Path, start_host: Callable[..., Host]
) -> None:
    home = tmp_path / "home"
    host = start_host(home, agent="mine", boxes=1)
    host.kill()
    sweeper = BoxliteRuntime(home, manage_only=True)
    assert asyncio.run(cleanup_orphans(sweeper, home, "other")) == []
    assert host.box_home.is_dir()  # the other agent's sweep left this agent's box alone
    decisions = asyncio.run(cleanup_orphans(sweeper, home, "mine"))
    assert [(d.name, d.removed) for d in decisions] == [(host.boxes[0], True)]
    assert not host.box_home.exists()


def test_a_host_makes_its_home_at_its_first_box_and_deletes_it_when_empty(
    tmp_path: Path, layout: Path
) -> None:
    home = tmp_path / "home"
    runtime = BoxliteRuntime(home, rootfs_path=layout)
    assert runtime.box_home is not None and not runtime.box_home.exists()
    seen: dict[str, bytes | None] = {}
    created = asyncio.Event()

    async def run_and_stop() -> None:
        def on_box(name: str) -> None:
            seen[name] = RecordStore(home).read_raw(name)
            created.set()

        task = asyncio.create_task(run_in_box(runtime, home, ["true"], agent_id="rec", on_box=on_box))
        await created.wait()
        # Without a VM the exec would only time out: stop the run here; teardown removes the box.
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await runtime.list() == []
        await runtime.aclose()

    asyncio.run(run_and_stop())
    [raw] = seen.values()
    assert OwnerRecord.model_validate_json(raw or b"").box_home == str(runtime.box_home)
    assert not runtime.box_home.exists() and RecordStore(home).record_names() == []


def test_boxes_an_earlier_version_left_in_the_shared_home_are_judged_by_their_records(
    tmp_path: Path, layout: Path
) -> None:
    import boxlite

    home = tmp_path / "home"
    home.mkdir()

    async def leave_boxes() -> None:
        shared = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))  # the layout before one home per host
        for name in ("agentlite-old-g-1", "agentlite-old-g-2"):
            await shared.create(boxlite.BoxOptions(rootfs_path=str(layout), auto_remove=False), name=name)
        await shared.shutdown()  # as that version's host did when it exited

    ownership_for(home).register("agentlite-old-g-2")  # a live owner (this process), record first
    asyncio.run(leave_boxes())
    assert not homes.lock_held(home)
    try:
        sweeper = BoxliteRuntime(home, manage_only=True)
        dry = {d.name: d.action for d in asyncio.run(cleanup_orphans(sweeper, home, "old", dry_run=True))}
        assert dry == {"agentlite-old-g-1": "remove", "agentlite-old-g-2": "keep"}
        done = asyncio.run(cleanup_orphans(sweeper, home, "old"))
        assert [(d.name, d.removed) for d in done if d.action == "remove"] == [("agentlite-old-g-1", True)]
        assert "shared BoxLite home of an earlier version" in done[0].reason
        deleted = asyncio.run(cleanup_orphans(sweeper, home, "old", include_live=True))
        assert [(d.name, d.removed) for d in deleted] == [("agentlite-old-g-2", True)]
    finally:
        ownership_for(home).unregister("agentlite-old-g-2")


# -- with a booted VM (hardware virtualization only) ----------------------------------------------

_vm_missing = [c for c in boxlite_checks() if not c.ok]
needs_vm = pytest.mark.skipif(
    bool(_vm_missing),
    reason="BoxLite VMs cannot boot here: " + "; ".join(f"{c.name}: {c.detail}" for c in _vm_missing),
)


@pytest.mark.vm
@needs_vm
def test_two_hosts_boot_their_boxes_and_the_survivor_reaps_the_dead_hosts_running_vm(
    tmp_path: Path, start_host: Callable[..., Host]
) -> None:
    home = tmp_path / "home"
    first, second = start_host(home, boxes=1), start_host(home, boxes=1)
    assert first.ask("boot") == {"exit_code": 0, "stdout": "up\n"}
    assert second.ask("boot") == {"exit_code": 0, "stdout": "up\n"}
    first.kill()  # its VM may outlive it: the sweep must stop and remove it
    decisions = {d["name"]: d for d in second.ask("sweep")}
    assert decisions[first.boxes[0]]["removed"] is True
    assert not first.box_home.exists()
    assert second.ask("list") == second.boxes
    assert second.ask("boot") == {"exit_code": 0, "stdout": "up\n"}
