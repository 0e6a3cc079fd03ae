"""The host side of the filesystem IPC: requests boxes drop into their IPC folder, and snapshots back.

Each box sees only ``<ipc_root>/<folder>/`` (mounted at ``/workspace/ipc``), so the **directory name
is the caller's identity**: whatever a request file claims about its group or main status is
ignored, and a group is main only when that folder belongs to a registered main group. The file
formats are documented in :mod:`agentlite.guest.mcp_server`, which writes them.

Authorization (reference section 8), enforced before the handler sees anything:

* ``message``: main may send to any chat; other groups only to chats registered to their own folder.
* ``schedule_task``: the target chat must be registered; a non-main group may only target its own;
  the request's ``task_id`` becomes the task's id (the box told its agent that id), so a taken one is refused.
* ``pause_task`` / ``resume_task`` / ``cancel_task`` / ``update_task``: main, or the folder owning the task.
* ``register_group`` / ``refresh_groups``: main only; ``is_main`` can never be set over IPC.

Every file processed is deleted; a file that fails (unreadable, bad JSON, unauthorized, or the
handler raised) is moved to ``<ipc_root>/errors/<folder>-<file>`` and logged, so nothing is retried
forever and a human can inspect what a box tried. The IPC folders are the boxes' to write, so the
host reads, lists, moves and deletes there only through no-follow descriptors
(:mod:`agentlite.core.safefs`): a symlinked request file or ``messages/`` folder is refused and reported
to ``on_refused`` (the agent's ``path.refused`` event), never followed. Task ids are checked with
:func:`agentlite.core.names.check_task_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agentlite.core.clock import now_iso
from agentlite.core.errors import AgentliteError
from agentlite.core.names import InvalidName, check_group_folder, check_task_id, valid_group_folder
from agentlite.core.safefs import BoxDir, UnsafePath

log = logging.getLogger("agentlite.ipc")

#: Folders under the IPC root that are not groups.
SKIP_DIRS = frozenset({"errors", "input"})
#: A request file larger than this is not read (a box could otherwise make the host load anything).
MAX_REQUEST_BYTES = 1024 * 1024
#: Requests taken from one group's folder of one kind per poll: a box flooding its folder with files
#: waits for its next turn instead of holding up every other group's requests.
MAX_REQUESTS_PER_POLL = 64
#: Passes of at most that many a drain makes before a turn's final (the rest wait for the poll).
DRAIN_PASSES = 4
#: Refused requests kept in ``errors/`` for inspection; past this many, a refused one is deleted, so
#: a flood of bad files cannot fill the host's disk through the quarantine.
MAX_QUARANTINED = 1000


#: The group-folder rule as a predicate (the one definition lives in core.names).
valid_folder = valid_group_folder


class GroupLike(Protocol):
    """What the watcher needs from a registered group (``agentlite.platform.store.RegisteredGroup`` fits)."""

    @property
    def jid(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def is_main(self) -> bool: ...


class IpcHandler(Protocol):
    """What the host does with an authorized request. Raising marks the request as failed.

    Implementations should refresh the snapshots (:func:`write_snapshots`) after any task change.
    """

    async def send_message(self, chat_id: str, text: str, sender: str | None) -> None: ...

    async def schedule_task(
        self,
        *,
        task_id: str,
        group_folder: str,
        chat_id: str,
        prompt: str,
        schedule_type: str,
        schedule_value: str,
        context_mode: str,
    ) -> None: ...

    async def pause_task(self, task_id: str) -> None: ...
    async def resume_task(self, task_id: str) -> None: ...
    async def cancel_task(self, task_id: str) -> None: ...
    async def update_task(self, task_id: str, **changes: str) -> None: ...
    async def register_group(self, jid: str, name: str, folder: str, trigger: str) -> None: ...
    async def refresh_groups(self) -> None: ...


class IpcRejected(AgentliteError):
    """A request was refused (malformed or unauthorized); the file goes to ``errors/``."""


class IpcWatcher:
    """Polls every group's ``messages/`` and ``tasks/`` folders and hands requests to ``handler``.

    ``groups()`` returns the registered groups by jid; ``task_owner(task_id)`` returns the folder
    owning a task, or None when there is no such task. Both are called on every request, so a
    group registered a moment ago is honoured at once.
    """

    def __init__(
        self,
        ipc_root: Path,
        groups: Callable[[], Mapping[str, GroupLike]],
        handler: IpcHandler,
        *,
        task_owner: Callable[[str], str | None],
        poll_interval: float = 1.0,
        on_refused: Callable[[UnsafePath], None] | None = None,
    ) -> None:
        self.ipc_root = Path(ipc_root)
        self._groups = groups
        self._handler = handler
        self._task_owner = task_owner
        self.poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._on_refused = on_refused
        #: One pass at a time per folder and kind: a drain and the poll never handle one file twice.
        self._passes: dict[tuple[str, str], asyncio.Lock] = {}

    async def start(self, spawn: Callable[..., asyncio.Task[Any]] | None = None) -> None:
        """Start polling in the background (under ``spawn``, an owner's supervisor, if given;
        idempotent); async to pair with :meth:`stop`."""
        if self._task is None or self._task.done():
            if spawn is not None:
                self._task = spawn(self._loop(), name="agentlite-ipc-watcher")
            else:
                self._task = asyncio.get_running_loop().create_task(
                    self._loop(), name="agentlite-ipc-watcher"
                )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller is being cancelled too: never swallow that

    async def _loop(self) -> None:
        while True:
            try:
                await self.process_once()
            except Exception:
                log.exception("IPC poll failed")
            await asyncio.sleep(self.poll_interval)

    async def process_once(self) -> int:
        """Handle every pending request file once; returns how many files were handled (ok or not)."""
        handled = 0
        try:
            folders = sorted(os.listdir(self.ipc_root))
        except FileNotFoundError:
            return 0
        for folder in folders:
            if folder in SKIP_DIRS or not valid_folder(folder):
                continue
            for kind in ("messages", "tasks"):
                handled += await self._process_dir(folder, kind)
        return handled

    async def drain_messages(self, folder: str) -> int:
        """Handle the group's pending ``messages/`` now, in order (a turn's final waits for them);
        returns how many files were handled."""
        if not valid_folder(folder):
            return 0
        handled = 0
        for _ in range(DRAIN_PASSES):  # bounded: a box writing without end cannot hold its final forever
            batch = await self._process_dir(folder, "messages")
            handled += batch
            if batch < MAX_REQUESTS_PER_POLL:
                break
        return handled

    def _refused(self, exc: UnsafePath) -> None:
        log.warning("IPC %s", exc)
        if self._on_refused is not None:
            self._on_refused(exc)

    async def _process_dir(self, folder: str, kind: str) -> int:
        async with self._passes.setdefault((folder, kind), asyncio.Lock()):
            return await self._process_dir_once(folder, kind)

    async def _process_dir_once(self, folder: str, kind: str) -> int:
        # A box controls its own IPC folder: any entry may be a symlink planted to make the host
        # read or delete a file elsewhere. Everything goes through no-follow descriptors.
        try:
            directory = BoxDir.open(self.ipc_root, folder, kind)
        except FileNotFoundError:
            return 0
        except UnsafePath as exc:
            self._refused(exc)
            return 0
        with directory:
            names = [n for n in directory.names() if n.endswith(".json")][:MAX_REQUESTS_PER_POLL]
            for name in names:
                try:
                    request = _read_request(directory, name)
                    await self._handle(folder, kind, request)
                except FileNotFoundError:
                    continue  # gone meanwhile
                except Exception as exc:
                    if isinstance(exc, UnsafePath):
                        self._refused(exc)
                    level = logging.WARNING if isinstance(exc, IpcRejected | UnsafePath) else logging.ERROR
                    log.log(level, "IPC %s/%s/%s failed: %s", folder, kind, name, exc)
                    self._quarantine(folder, directory, name)
                else:
                    directory.unlink(name)
        return len(names)

    def _quarantine(self, folder: str, directory: BoxDir, name: str) -> None:
        # The entry itself moves (a symlink stays a symlink, its target untouched).
        try:
            with BoxDir.open(self.ipc_root, "errors", create=True) as errors:
                if len(errors.names()) >= MAX_QUARANTINED:
                    directory.unlink(name)
                    return
                directory.move_to(name, errors, f"{folder}-{name}")
        except OSError as exc:
            log.error("could not move %s/%s to errors/: %s", directory.path, name, exc)
            with contextlib.suppress(OSError):
                directory.unlink(name)

    # -- authorization and dispatch ----------------------------------------------------------------

    async def _handle(self, folder: str, kind: str, request: dict[str, Any]) -> None:
        groups = self._groups()
        is_main = any(g.folder == folder and g.is_main for g in groups.values())
        rtype = request.get("type")
        if kind == "messages":
            if rtype != "message":
                raise IpcRejected(f"unknown message type {rtype!r}")
            await self._message(folder, is_main, groups, request)
            return
        if rtype == "schedule_task":
            await self._schedule(folder, is_main, groups, request)
        elif rtype in ("pause_task", "resume_task", "cancel_task", "update_task"):
            task_id = _task_id(request)
            owner = self._task_owner(task_id)
            if owner is None:
                raise IpcRejected(f"unknown task {task_id!r}")
            if not is_main and owner != folder:
                raise IpcRejected(f"group {folder!r} may not {rtype} task {task_id!r} of {owner!r}")
            if rtype == "update_task":
                changes = {
                    k: _text(request, k)
                    for k in ("prompt", "schedule_type", "schedule_value")
                    if k in request
                }
                if not changes:
                    raise IpcRejected("update_task without changes")
                await self._handler.update_task(task_id, **changes)
            else:
                await getattr(self._handler, rtype)(task_id)
        elif rtype == "register_group":
            if not is_main:
                raise IpcRejected(f"group {folder!r} is not main: register_group refused")
            new_folder = _text(request, "folder")
            if not valid_folder(new_folder):
                raise IpcRejected(f"invalid group folder {new_folder!r}")
            # Deliberately no is_main: a main group can only be made on the host.
            await self._handler.register_group(
                _text(request, "jid"), _text(request, "name"), new_folder, _text(request, "trigger")
            )
        elif rtype == "refresh_groups":
            if not is_main:
                raise IpcRejected(f"group {folder!r} is not main: refresh_groups refused")
            await self._handler.refresh_groups()
        else:
            raise IpcRejected(f"unknown task request type {rtype!r}")

    async def _message(
        self, folder: str, is_main: bool, groups: Mapping[str, GroupLike], request: dict[str, Any]
    ) -> None:
        chat_id = _text(request, "chat_id")
        text = _text(request, "text")
        sender = request.get("sender")
        if sender is not None and not isinstance(sender, str):
            raise IpcRejected("`sender` must be a string")
        if not is_main:
            target = groups.get(chat_id)
            if target is None or target.folder != folder:
                raise IpcRejected(f"group {folder!r} may not send to {chat_id!r}")
        await self._handler.send_message(chat_id, text, sender or None)

    async def _schedule(
        self, folder: str, is_main: bool, groups: Mapping[str, GroupLike], request: dict[str, Any]
    ) -> None:
        target_jid = _text(request, "target_chat_id")
        target = groups.get(target_jid)
        if target is None:
            raise IpcRejected(f"schedule_task target {target_jid!r} is not a registered group")
        if not is_main and target.folder != folder:
            raise IpcRejected(f"group {folder!r} may not schedule tasks for {target.folder!r}")
        task_id = _task_id(request)
        if self._task_owner(task_id) is not None:  # the box's id becomes the task's: never a taken one
            raise IpcRejected(f"task id {task_id!r} is taken")
        mode = request.get("context_mode")
        await self._handler.schedule_task(
            task_id=task_id,
            group_folder=target.folder,
            chat_id=target_jid,
            prompt=_text(request, "prompt"),
            schedule_type=_text(request, "schedule_type"),
            schedule_value=_text(request, "schedule_value"),
            context_mode=mode if mode in ("group", "isolated") else "isolated",
        )


def _read_request(directory: BoxDir, name: str) -> dict[str, Any]:
    try:
        data = directory.read_bytes(name, limit=MAX_REQUEST_BYTES)
    except UnsafePath as exc:
        if "too large" in exc.reason:
            raise IpcRejected(f"file {exc.reason}") from None
        raise
    try:
        request = json.loads(data)
    except ValueError as exc:
        raise IpcRejected(f"invalid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise IpcRejected("request is not a JSON object")
    return request


def _task_id(request: Mapping[str, Any]) -> str:
    task_id = _text(request, "task_id")
    try:
        return check_task_id(task_id)
    except InvalidName as exc:
        raise IpcRejected(str(exc)) from None


def _text(request: Mapping[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise IpcRejected(f"`{key}` must be a non-empty string")
    return value


# -- snapshots -------------------------------------------------------------------------------------


def _field(item: Any, key: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(key)
    return getattr(item, key, None)


def write_snapshots(
    ipc_root: Path,
    folder: str,
    is_main: bool,
    tasks: Iterable[Any],
    groups: Iterable[Any],
    *,
    last_sync: str | None = None,
) -> None:
    """Write ``current_tasks.json`` and ``available_groups.json`` into ``<ipc_root>/<folder>/``.

    ``tasks`` are ``Task`` models or mappings with ``id, group_folder, prompt, schedule_type,
    schedule_value, status, next_run``; main sees all of them, another group only its own.
    ``groups`` are mappings or objects with ``jid, name, last_activity, is_registered``; only main
    gets them (a non-main box must not learn which other chats exist).

    Formats::

        current_tasks.json    [{"id", "group_folder", "prompt", "schedule_type", "schedule_value",
                                "status", "next_run"}]
        available_groups.json {"groups": [{"jid", "name", "last_activity", "is_registered"}],
                               "last_sync": iso}
    """
    task_keys = ("id", "group_folder", "prompt", "schedule_type", "schedule_value", "status", "next_run")
    visible = [
        {k: _field(t, k) for k in task_keys} for t in tasks if is_main or _field(t, "group_folder") == folder
    ]
    group_keys = ("jid", "name", "last_activity", "is_registered")
    listed = [{k: _field(g, k) for k in group_keys} for g in groups] if is_main else []
    snapshot = json.dumps({"groups": listed, "last_sync": last_sync or now_iso()}, indent=2).encode()
    with BoxDir.open(Path(ipc_root), check_group_folder(folder), create=True) as target:
        target.write_atomic("current_tasks.json", json.dumps(visible, indent=2).encode())
        target.write_atomic("available_groups.json", snapshot)
