"""Where a platform and its agents keep their files: the one place that spells the folder layout.

A platform's work folder (:class:`PlatformPaths`)::

    <workdir>/store/agentlite.db    the registry of agents
    <workdir>/.boxlite/             the box home: boxes and their ownership records
    <workdir>/agents/<name>/        an agent's work folder, unless it was given one

An agent's work folder (:class:`AgentPaths`)::

    <workdir>/store/messages.db     its store: messages, groups, tasks, the run ledger
    <workdir>/groups/<folder>/      each group's folder (``global``: shared by the non-main groups)
    <workdir>/data/ipc/<folder>/    each group's IPC folder (the box's /workspace/ipc)
    <workdir>/data/sessions/<folder>/  each group's agent home in the box
    <workdir>/agent/                its own instructions and skills (the box's /workspace/agent)

Everything here composes paths only; nothing is created or read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STORE_DIR = "store"
DATA_DIR = "data"
GROUPS_DIR = "groups"


@dataclass(frozen=True)
class PlatformPaths:
    """The layout of a platform's work folder."""

    workdir: Path

    @classmethod
    def of_box_home(cls, box_home: Path) -> PlatformPaths:
        """The platform whose box home is ``box_home`` (a platform keeps it in its work folder)."""
        return cls(box_home.parent)

    @property
    def store_dir(self) -> Path:
        return self.workdir / STORE_DIR

    @property
    def registry(self) -> Path:
        """The registry of agents (:class:`agentlite.platform.registry.Registry`)."""
        return self.store_dir / "agentlite.db"

    @property
    def box_home(self) -> Path:
        return self.workdir / ".boxlite"

    @property
    def agents_dir(self) -> Path:
        """Where agents created without a work folder of their own get one, by name."""
        return self.workdir / "agents"


@dataclass(frozen=True)
class AgentPaths:
    """The layout of one agent's work folder."""

    workdir: Path

    @property
    def store(self) -> Path:
        """The agent's store (:class:`agentlite.platform.store.AgentStore`)."""
        return self.workdir / STORE_DIR / "messages.db"

    @property
    def groups_dir(self) -> Path:
        return self.workdir / GROUPS_DIR

    @property
    def global_group_dir(self) -> Path:
        """The folder every non-main group's box sees read-only at /workspace/global."""
        return self.groups_dir / "global"

    @property
    def data_dir(self) -> Path:
        return self.workdir / DATA_DIR

    @property
    def ipc_root(self) -> Path:
        """The IPC folders of all groups (``<ipc_root>/<group folder>``)."""
        return self.data_dir / "ipc"

    def ipc_dir(self, folder: str) -> Path:
        return self.ipc_root / folder

    def sessions_dir(self, folder: str) -> Path:
        """The group's agent home in the box (its CLI's sessions and settings)."""
        return self.data_dir / "sessions" / folder

    @property
    def agent_dir(self) -> Path:
        """The agent's own instructions and skills, seen read-only at /workspace/agent."""
        return self.workdir / "agent"

    def top_dirs(self) -> tuple[Path, ...]:
        """The folders a starting agent makes."""
        return (self.workdir / STORE_DIR, self.groups_dir, self.data_dir)
