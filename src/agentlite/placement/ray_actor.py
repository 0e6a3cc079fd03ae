"""The box actor: one named, detached Ray actor per box run, on the node the host placed it.

It makes the box with the node's own runtime (in ``<node_root>/<node id>``, where the node's
ownership records live too), runs the turn there with :func:`agentlite.run.box_run.run_agent`, and
keeps every event the runner emits in a journal with offsets. :meth:`BoxActor.stream` replays that
journal from an offset and follows it to the run's end (a streaming generator), so a host that
restarted re-attaches by the actor's name and reads on from where it wants. Every item carries the
run's fencing token. A guard process (:mod:`agentlite.placement.node_guard`) removes the box when
the actor or its raylet dies.

Files (no shared folder): the group's workspace, agent home and IPC folder are this node's
(:mod:`agentlite.placement.group_files`); :meth:`BoxActor.start` may bring a copy of the group's
state to unpack first (the group moved here), the box's IPC requests are journalled as ``ipc``
items for the host, :meth:`BoxActor.put_ipc` takes the host's writes, and :meth:`BoxActor.pack`
copies the state back after the turn.

Importing this module imports Ray: only :mod:`agentlite.placement.ray_placement` does, lazily.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import ray

from agentlite.core.errors import RunError
from agentlite.placement.group_files import (
    node_group_paths,
    pack_state,
    take_requests,
    unpack_state,
    write_ipc_file,
)
from agentlite.run.protocol import Event, RunnerInput

log = logging.getLogger("agentlite.placement.actor")

#: How often the actor takes the box's IPC requests from the node's folder.
RELAY_POLL_SECONDS = 0.2


def node_home(node_root: str, node_id: str) -> Path:
    """The node-local folder of one node's boxes (short: socket paths live under it)."""
    return Path(node_root) / node_id[:16]


def _raylet_pid() -> int:
    """The raylet that started this worker (its parent), or 0 when the parent is something else."""
    parent = os.getppid()
    try:
        name = psutil.Process(parent).name()
    except psutil.NoSuchProcess:
        return 0
    return parent if "raylet" in name else 0


@ray.remote(num_cpus=0, max_retries=0)
def pack_on_node(node_root: str, agent_id: str, group: str) -> tuple[bytes, int, list[str]]:
    """A copy of a group's state on the node this task runs on (a group moving off a live node)."""
    home = node_home(node_root, ray.get_runtime_context().get_node_id())
    packed = pack_state(node_group_paths(home, agent_id, group))
    return packed.data, packed.files, packed.skipped


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class BoxActor:
    """One box run on this node. Items of :meth:`stream`: ``("box", token, name)``,
    ``("event", token, offset, event)``, ``("ipc", token, kind, name, content, count)`` (a request
    of the box for the host, node-local files only; ``count`` is what to acknowledge once it is written), and last ``("end", token, outcome | None, failure | None)``."""

    def __init__(
        self, node_root: str, agent_id: str, group: str, token: str, runtime_name: str | None
    ) -> None:
        self.node_id = ray.get_runtime_context().get_node_id()
        self.home = node_home(node_root, self.node_id)
        self.home.mkdir(parents=True, exist_ok=True)
        self.agent_id, self.group, self.token, self.runtime_name = agent_id, group, token, runtime_name
        self.box: str | None = None
        self.events: list[Event] = []
        #: The box's IPC requests taken from the node's folder, in order, for the host.
        self.requests: list[tuple[str, str, bytes]] = []
        #: How many of them a host has written into its own IPC folder (a host that re-attaches goes on from here).
        self.requests_acked = 0
        self.files = node_group_paths(self.home, agent_id, group)
        self.node_files = False
        self.outcome: Any = None
        self.failure: str | None = None
        self.done = False
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # replaced on each change; binds to the actor's loop on first wait
        guard_argv = [sys.executable, "-m", "agentlite.placement.node_guard", "--actor", str(os.getpid()),
                      "--raylet", str(_raylet_pid()), "--home", str(self.home), "--agent", agent_id]  # fmt: skip
        if runtime_name:
            guard_argv += ["--runtime", runtime_name]
        with (self.home / "guard.log").open("ab") as guard_log:
            # A session of its own: the guard outlives the worker's process group to clean up after it.
            self._guard = subprocess.Popen(guard_argv, stdin=subprocess.DEVNULL, stdout=guard_log, stderr=guard_log,
                                           start_new_session=True)  # fmt: skip

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "agent_id": self.agent_id, "group": self.group, "token": self.token,
                "box": self.box, "events": len(self.events), "done": self.done, "failure": self.failure,
                "pid": os.getpid(), "guard_pid": self._guard.pid, "home": str(self.home),
                "requests_acked": self.requests_acked}  # fmt: skip

    async def start(
        self, run_input: RunnerInput, options: dict[str, Any], env: dict[str, str],
        node_files: bool = False, copy: bytes | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Begin the run in the background and return at once (the host follows it with :meth:`stream`).

        ``node_files``: the group's folders are this node's (``copy``, if given, replaces its state
        first); otherwise ``options`` name the host's paths, which this node sees."""
        if self._task is not None:
            raise RunError(f"box actor for run {self.token} already started")
        os.environ.update(env)  # the backend's key: one run per actor process, so nothing leaks across runs
        if node_files:
            self.node_files = True
            if copy is not None:
                await asyncio.to_thread(unpack_state, copy, self.files)
            options = {**options, "workspace": self.files.workspace, "ipc_dir": self.files.ipc_dir,
                       "agent_home": self.files.agent_home}  # fmt: skip
        self._notify()
        self._task = asyncio.create_task(self._run(run_input, options))
        return self.describe()

    async def _run(self, run_input: RunnerInput, options: dict[str, Any]) -> None:
        from agentlite.box.lifecycle import cleanup_orphans
        from agentlite.image.guest_root import open_configured_runtime
        from agentlite.run.box_run import run_agent

        def on_box(name: str) -> None:
            self.box = name
            self._notify()

        def on_event(event: Event) -> None:
            if self.node_files:  # requests the box wrote before this event reach the host before it
                self._relay_requests()
            self.events.append(event)
            self._notify()

        try:
            # The node's own choice of guest root (its environment), as a local host's would be.
            runtime, _ = open_configured_runtime(self.home, self.runtime_name, progress=None)
            async with runtime:
                # The node's own sweep: boxes of this agent whose actor died are removed first.
                await cleanup_orphans(runtime, self.home, self.agent_id)
                relay = asyncio.create_task(self._relay_loop()) if self.node_files else None
                try:
                    self.outcome = await run_agent(runtime, self.home, run_input, on_event=on_event,
                                                   agent_id=self.agent_id, group=self.group, on_box=on_box,
                                                   **options)  # fmt: skip
                finally:
                    if relay is not None:
                        relay.cancel()
                        self._relay_requests()  # the last ones, before the end
        except asyncio.CancelledError:
            self.failure = "the run was cancelled by its host"
        except Exception as exc:  # the host gets it as the run's failure
            log.exception("box run failed token=%s", self.token)
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.done = True
            self._notify()

    def _relay_requests(self) -> None:
        try:
            taken = take_requests(self.files.ipc_dir)
        except OSError as exc:
            log.warning("IPC relay token=%s: %s", self.token, exc)
            return
        if taken:
            self.requests.extend(taken)
            self._notify()

    async def _relay_loop(self) -> None:
        while True:  # the box writes its requests without telling anyone: polled, as the host's watcher does
            await asyncio.sleep(RELAY_POLL_SECONDS)
            self._relay_requests()

    def ack_requests(self, count: int) -> None:
        """The host has the first ``count`` requests in its IPC folder."""
        self.requests_acked = max(self.requests_acked, count)

    def put_ipc(self, files: list[tuple[str | None, str, bytes]]) -> int:
        """Write the host's files into the group's IPC folder here (follow-ups, snapshots, budget)."""
        for subfolder, name, data in files:
            write_ipc_file(self.files.ipc_dir, subfolder, name, data)
        return len(files)

    def request_close(self) -> None:
        """Ask the runner to end after its current turn (node-local files)."""
        from agentlite.run.runner_input import request_close

        request_close(self.files.ipc_dir)

    async def pack(self) -> tuple[bytes, int, list[str]]:
        """A copy of the group's state here (archive, files, entries left out), for the host to keep."""
        packed = await asyncio.to_thread(pack_state, self.files)
        return packed.data, packed.files, packed.skipped

    @ray.method(num_returns="streaming")  # type: ignore[misc]
    async def stream(self, offset: int = 0, requests_from: int | None = None) -> Any:
        """The run's journal from ``offset``, followed to its end; the box's IPC requests from
        ``requests_from`` (``None``: none; a host that re-attaches does not take them twice)."""
        sent_box = False
        while True:
            changed = self._changed
            if self.box is not None and not sent_box:
                sent_box = True
                yield ("box", self.token, self.box)
            while requests_from is not None and requests_from < len(self.requests):
                yield ("ipc", self.token, *self.requests[requests_from], requests_from + 1)
                requests_from += 1
            while offset < len(self.events):
                yield ("event", self.token, offset, self.events[offset])
                offset += 1
            if self.done:
                yield ("end", self.token, self.outcome, self.failure)
                return
            await changed.wait()

    async def cancel(self) -> None:
        """Stop the run: its box is removed by the run's own teardown."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=60)
