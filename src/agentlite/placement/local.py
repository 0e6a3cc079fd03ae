"""``local`` placement: every box on this machine, with the host's own runtime (the default path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentlite.box.base import BoxRuntime
from agentlite.placement.base import Placement
from agentlite.platform.adoption import RunDecision, decide_runs, follow_adopted
from agentlite.platform.ledger import RunLedger, RunRecord
from agentlite.run.protocol import Event, RunnerInput
from agentlite.run.turn import GroupKey, SessionStore, TurnResult, run_turn


class LocalPlacement(Placement):
    name = "local"

    def __init__(self, runtime: BoxRuntime, box_home: Path) -> None:
        self.runtime = runtime
        self.box_home = box_home

    async def run_turn(self, key: GroupKey, run_input: RunnerInput, sessions: SessionStore | None,
                       **options: Any) -> TurnResult:  # fmt: skip
        return await run_turn(self.runtime, self.box_home, key, run_input, sessions, **options)

    async def decide_runs(self, ledger: RunLedger, ipc_root: Path, *, agent_id: str,
                          enabled: bool = True) -> list[RunDecision]:  # fmt: skip
        return await decide_runs(ledger, self.runtime, self.box_home, ipc_root, enabled=enabled)

    async def follow_adopted(self, decision: RunDecision, *, ledger: RunLedger, ipc_root: Path,
                             deliver: Callable[[str], Awaitable[bool]],
                             on_event: Callable[[Event], None] | None = None,
                             timeout: float = 1800.0) -> RunRecord | None:  # fmt: skip
        return await follow_adopted(decision, ledger=ledger, runtime=self.runtime, box_home=self.box_home,
                                    ipc_root=ipc_root, deliver=deliver, on_event=on_event, timeout=timeout)  # fmt: skip
