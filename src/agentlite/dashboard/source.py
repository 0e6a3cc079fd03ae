"""What the dashboard shows, read through the same SDK calls the CLI makes (nothing computed here
that the CLI computes elsewhere): boxes and cleanup decisions, agents and their groups, the run
ledger and journals, tasks, usage and budgets.

It works on a platform object: the one ``agentlite serve --dashboard`` runs (its started agents'
open stores), or one opened only to read (``agentlite dashboard``), whose agents' stores are opened
for each look, beside the service that writes them, as the CLI does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agentlite.box.base import BoxRuntime
from agentlite.box.lifecycle import CleanupReport, cleanup_orphans
from agentlite.core.errors import ConfigError
from agentlite.core.names import check_agent_name, check_task_id
from agentlite.platform.adoption import adoptable_run
from agentlite.platform.agent import Agent
from agentlite.platform.app import AgentLite
from agentlite.platform.box_listing import list_boxes
from agentlite.platform.budgets import Budgets, budget_statuses
from agentlite.platform.ledger import RUN_STATES, RunRecord
from agentlite.platform.scheduler import store_scheduler
from agentlite.platform.store import AgentStore
from agentlite.platform.turn_book import TurnBook
from agentlite.platform.usage import usage_summary
from agentlite.run.journal import journal_of

#: Finished ledger states: the run's journal holds everything it will hold.
FINISHED_STATES = frozenset({"delivered", "failed", "abandoned"})
#: How many runs of each agent the Runs page lists (newest first).
RUNS_SHOWN = 200


@dataclass(frozen=True)
class RunFilter:
    """The Runs page's filter, from its query (empty fields: no filter)."""

    agent: str | None = None
    group: str | None = None
    state: str | None = None

    @classmethod
    def of(cls, query: Mapping[str, str]) -> RunFilter:
        state = query.get("state") or None
        if state is not None and state not in RUN_STATES:
            raise ConfigError(f"state `{state}` is not a run state ({', '.join(RUN_STATES)})")
        return cls(query.get("agent") or None, query.get("group") or None, state)


class DashboardSource:
    """The dashboard's one door to the platform."""

    def __init__(
        self, platform: AgentLite, *, box_home: Path | None = None, box_runtime: BoxRuntime | None = None
    ) -> None:
        self.platform = platform
        #: Whose boxes the Boxes page lists: the platform's home unless another is given.
        self.box_home = box_home or platform.box_home
        self.box_runtime = box_runtime or platform.runtime

    # -- stores ---------------------------------------------------------------------------------

    def agents(self) -> list[Agent]:
        """The agents as the registry has them now: those started in this process as they run,
        the others read afresh (another process may have created, changed or deleted them)."""
        running = {name: a for name, a in self.platform.agents.items() if a.started}
        found = [running.get(r.name) or Agent(self.platform, r) for r in self.platform.registry.list()]
        return sorted(found, key=lambda a: a.name)

    def find_agent(self, name: str) -> Agent | None:
        return next((a for a in self.agents() if a.name == name), None)

    def agent(self, name: str) -> Agent:
        check_agent_name(name)
        agent = self.find_agent(name)
        if agent is None:
            raise ConfigError(f"unknown agent `{name}`")
        return agent

    @contextlib.contextmanager
    def store(self, agent: Agent) -> Iterator[AgentStore | None]:
        """The agent's store: its own when it runs in this process, else opened for this look
        (None when it never ran)."""
        if agent.started:
            yield agent.store
            return
        path = agent.paths.store
        if not path.is_file():
            yield None
            return
        store = AgentStore(path)
        try:
            yield store
        finally:
            store.close()

    # -- boxes ----------------------------------------------------------------------------------

    async def boxes(self) -> list[dict[str, Any]]:
        """`agentlite boxes` rows, each with what `cleanup --dry-run` would do with it and why."""
        rows = await list_boxes(self.box_runtime, self.box_home)
        plans = {d.name: d for d in await self.cleanup_plan()}
        for row in rows:
            plan = plans.get(row["name"])
            row["cleanup"] = None if plan is None else plan.as_json()
        return rows

    async def cleanup_plan(self, name: str | None = None) -> CleanupReport:
        return await cleanup_orphans(
            self.box_runtime, self.box_home, dry_run=True, only=name, adoptable=adoptable_run
        )

    async def remove_box(self, name: str, *, include_live: bool) -> CleanupReport:
        """The cleanup of this one box, by cleanup's own rules (a live owner's box only with
        ``include_live``, as ``cleanup --include-live``)."""
        return await cleanup_orphans(
            self.box_runtime, self.box_home, include_live=include_live, only=name, adoptable=adoptable_run
        )

    # -- agents and groups ----------------------------------------------------------------------

    def agent_rows(self) -> list[dict[str, Any]]:
        rows = []
        for agent in self.agents():
            backend = agent.get_backend()
            row: dict[str, Any] = {"name": agent.name, "id": agent.id, "backend": backend.type,
                                   "model": backend.model, "groups": []}  # fmt: skip
            with self.store(agent) as store:
                if store is not None:
                    row["groups"] = self._group_rows(agent, store, backend.type)
            rows.append(row)
        return rows

    def _group_rows(self, agent: Agent, store: AgentStore, backend_type: str) -> list[dict[str, Any]]:
        book = TurnBook(store, backend_type)
        budgets = Budgets(store, timezone=self.platform.timezone)
        groups = []
        for jid, group in sorted(store.get_registered_groups().items()):
            last = store.runs.list(group=group.folder, limit=1)
            paused = budgets.paused(jid)
            groups.append(
                {
                    "jid": jid,
                    "name": group.name,
                    "folder": group.folder,
                    "session": store.get_session(group.folder, backend_type),
                    # Messages after the group's answered cursor: what its next run takes.
                    "queued": len(book.pending(jid, agent.assistant_name)),
                    "paused": None if paused is None else f"{paused.budget.scope}: {paused.paused}",
                    "last_run": last[0] if last else None,
                }
            )
        return groups

    # -- runs -----------------------------------------------------------------------------------

    def runs(self, *, agent: str | None = None, group: str | None = None,
             state: str | None = None) -> list[tuple[str, RunRecord]]:  # fmt: skip
        """(agent name, run) of every agent (or one), newest first, filtered as ``agentlite runs``."""
        found: list[tuple[str, RunRecord]] = []
        for each in self.agents():
            if agent is not None and each.name != agent:
                continue
            with self.store(each) as store:
                if store is not None:
                    records = store.runs.list(
                        group=group, states=(state,) if state else None, limit=RUNS_SHOWN
                    )
                    found += [(each.name, r) for r in records]
        return sorted(found, key=lambda item: (item[1].created_at, item[1].run_id), reverse=True)

    def run(self, agent_name: str, run_id: str) -> tuple[RunRecord, Path] | None:
        """The run's ledger entry and its journal's path (None for an unknown agent or run)."""
        agent = self.find_agent(agent_name)
        if agent is None:
            return None
        with self.store(agent) as store:
            record = None if store is None else store.runs.get(run_id)
        if record is None:
            return None
        return record, journal_of(agent.ipc_root, record)

    # -- tasks ----------------------------------------------------------------------------------

    def tasks(self) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for agent in self.agents():
            with self.store(agent) as store:
                if store is not None:
                    found += [(agent.name, t) for t in store.list_tasks()]
        return found

    async def change_task(self, agent_name: str, task_id: str, action: str) -> Any:
        """Pause or resume a task: through the agent's scheduler when it runs here, else on its
        store (the service's scheduler picks it up at its next poll), as ``agentlite tasks``."""
        if action not in ("pause", "resume"):
            raise ConfigError(f"task action `{action}`: choose pause or resume")
        check_task_id(task_id)
        agent = self.agent(agent_name)
        if agent.started:
            return await getattr(agent, f"{action}_task")(task_id)
        with self.store(agent) as store:
            if store is None:
                return None
            scheduler = store_scheduler(store, tz=self.platform.timezone, agent_id=agent.id)
            return await getattr(scheduler, f"{action}_task")(task_id)

    # -- usage and budgets ----------------------------------------------------------------------

    def usage(self, since: datetime | None = None) -> dict[str, Any]:
        """Sums per agent, group, model and day from ``since`` (each row names its agent), and
        every budget (their spend is their own period's, whatever ``since``)."""
        summary: dict[str, Any] = {"agent": [], "group": [], "model": [], "day": [], "budgets": []}
        tz = self.platform.timezone
        for agent in self.agents():
            with self.store(agent) as store:
                if store is None:
                    continue
                for by in ("agent", "group", "model", "day"):
                    rows = usage_summary(store, timezone=tz, by=by, agent=agent.name, since=since)  # type: ignore[arg-type]
                    summary[by] += [{**r, "agent": agent.name} for r in rows]
                summary["budgets"] += [
                    {"agent": agent.name, **s} for s in budget_statuses(store, timezone=tz)
                ]
        return summary
