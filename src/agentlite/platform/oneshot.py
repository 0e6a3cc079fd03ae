"""One turn for ``agentlite run``: a platform agent, one of its groups, the agent's store.

The command is a thin client of the platform, like ``agentlite host --jsonl``
(:mod:`agentlite.platform.hostmode`): the agent (``cli`` unless named) lives in the platform
under ``<home>/run``, the group (``main`` unless named) is one of its groups, and the turn is one
:meth:`Agent.ask` in the folder the user works in. So a second ``agentlite run`` in the same group
resumes the group's session, a run a killed earlier command left is swept when the agent starts,
and the turn has the agent's MCP tools and actions.

The platform lets one process drive an agent at a time (its start judges the runs in the agent's
ledger as left by a dead host), so a command holds the agent's lock file for its whole life; a
second command for the same agent waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from agentlite.core.names import check_agent_id, check_group_folder
from agentlite.platform.app import AgentLite
from agentlite.run.protocol import BackendConfig
from agentlite.run.turn import TurnEventHandler, TurnResult

#: Where ``agentlite run``'s platform lives, under the AgentLite home (boxes stay in the home).
RUN_PLATFORM = "run"
#: Folder of the agents' lock files, under the platform folder.
LOCKS = "locks"
#: Group JIDs of ``agentlite run`` turns: their own namespace, never a chat's.
JID_PREFIX = "run:"
#: How often a command waiting for another one's agent looks again, in seconds.
LOCK_POLL = 0.2


def platform_dir(home: Path) -> Path:
    return home / RUN_PLATFORM


@contextlib.asynccontextmanager
async def agent_lock(platform_folder: Path, agent: str, *, on_wait: Callable[[], None] | None = None,
                     poll: float = LOCK_POLL) -> AsyncIterator[None]:  # fmt: skip
    """Hold ``agent``'s lock in ``platform_folder`` (waiting for another process that holds it;
    ``on_wait`` is called once when that happens). The kernel drops the lock however we die."""
    folder = platform_folder / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{check_agent_id(agent)}.lock"  # an agent id is a safe file name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                await asyncio.sleep(poll)  # polling the lock until its holder ends
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


async def run_once(platform: AgentLite, *, agent: str, group: str, prompt: str, backend: BackendConfig,
                   workspace: Path, network: dict[str, Any] | None = None,
                   on_event: TurnEventHandler | None = None) -> TurnResult:  # fmt: skip
    """One turn of ``agent`` (created on first use, its id its name) in ``group``, in ``workspace``."""
    check_group_folder(group)
    found = platform.get_agent(agent)
    if found is None:
        found = await platform.create_agent(agent, backend=backend, agent_id=check_agent_id(agent))
    if not found.started:
        await found.start()
    jid = JID_PREFIX + group
    if jid not in found.registered_groups():
        found.register_group(jid, name=group, folder=group, requires_trigger=False)
    return await found.ask(
        jid, prompt, backend=backend, on_event=on_event, workspace=workspace, network=network
    )
