"""What an orphan cleanup decided, box by box (:func:`agentlite.box.lifecycle.cleanup_orphans`).

Its own module so that the runtimes (:mod:`agentlite.box.base` and those below the sweep) can
speak of decisions without importing the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentlite.box.ownership import Verdict


@dataclass(frozen=True)
class CleanupDecision:
    """What cleanup decided for one box (or one box-less record), and why."""

    name: str
    action: Literal["keep", "remove"]
    reason: str
    removed: bool = False
    error: str | None = None
    verdict: Verdict | None = None
    #: Its live host was asked to remove it and has not yet (BoxLite boxes in another host's home).
    pending: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "reason": self.reason,
            "removed": self.removed,
            "error": self.error,
            "pending": self.pending,
        }


class CleanupReport(list[CleanupDecision]):
    """The decisions of one cleanup (a list of them, as callers always had), the counts a caller
    logs, and ``error``: why the sweep itself stopped early, if it did (it never raises)."""

    error: str | None = None

    @property
    def removed(self) -> int:
        """Boxes or records removed (or, on a dry run, that would be)."""
        return sum(d.action == "remove" and d.error is None for d in self)

    @property
    def kept(self) -> int:
        return sum(d.action == "keep" for d in self)

    @property
    def failed(self) -> int:
        """Removals that failed, plus one when the sweep itself failed."""
        return sum(d.error is not None for d in self) + (self.error is not None)

    def counts(self) -> dict[str, int]:
        return {"removed": self.removed, "kept": self.kept, "failed": self.failed}

    def failures(self) -> list[str]:
        """Each failure with its reason, for the log."""
        found = [f"{d.name}: {d.error}" for d in self if d.error is not None]
        return [*found, f"the sweep itself: {self.error}"] if self.error is not None else found
