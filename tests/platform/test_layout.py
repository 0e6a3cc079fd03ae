"""The folder layout: what a platform and a started agent make is where the layout says it is."""

from __future__ import annotations

from pathlib import Path

import agentlite
from agentlite.platform.adoption import adoptable_run
from agentlite.platform.layout import AgentPaths, PlatformPaths


async def test_the_platform_and_a_started_agent_keep_their_files_where_the_layout_says(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "data"
    async with await agentlite.create(workdir=workdir, runtime="sandbox") as platform:
        paths = PlatformPaths(workdir.resolve())
        assert platform.paths == paths and platform.box_home == paths.box_home
        assert PlatformPaths.of_box_home(platform.box_home) == paths
        assert paths.registry.is_file()
        agent = await platform.create_agent("main", backend={"type": "codex"})
        assert agent.workdir == paths.agents_dir / "main"
        await agent.start()
        try:
            assert agent.paths == AgentPaths(agent.workdir)
            assert agent.paths.store.is_file() and agent.store.path == agent.paths.store
            assert agent.groups_dir == agent.paths.groups_dir and agent.groups_dir.is_dir()
            assert agent.ipc_root == agent.paths.ipc_root == agent.workdir / "data" / "ipc"
            # Another process's look finds this agent's ledger through the same layout: no run, none.
            assert adoptable_run(platform.box_home, f"agentlite-{agent.id}-main-1") is None
        finally:
            await agent.stop()
