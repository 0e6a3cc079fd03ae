"""Which failed turns are retried, and after how long (the reference's policy).

A rate limit (HTTP 429, "rate limit", "too many requests") or a transient server error (500, 503,
"overloaded", "service unavailable", "internal server error", "temporarily unavailable") is
retried: 1 s doubling per attempt, plus up to as much again in jitter, 60 s at most, 5 retries.
A box lost with its node ("box lost", a Ray placement's node died or was removed) is retried
the same way, on another node. Nothing else is, and never a turn that already emitted a result.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agentlite.run.turn import TurnResult

RetryClass = Literal["rate_limit", "transient", "node_lost"]

_RATE_LIMIT = re.compile(r"\b429\b|rate[ _-]?limit|too many requests", re.IGNORECASE)
_TRANSIENT = re.compile(
    r"\b50[03]\b|overloaded|service unavailable|internal server error|temporar(?:il)?y unavailable",
    re.IGNORECASE,
)
_NODE_LOST = re.compile(r"\bbox lost\b", re.IGNORECASE)


def classify(error: str | None) -> RetryClass | None:
    """The retry class of a turn's error text, or ``None`` when it must not be retried."""
    if not error:
        return None
    if _RATE_LIMIT.search(error):
        return "rate_limit"
    if _TRANSIENT.search(error):
        return "transient"
    if _NODE_LOST.search(error):
        return "node_lost"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1-based): min(cap, base * 2^(attempt-1)) plus jitter
        of up to that much again, capped."""
        core = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return min(self.cap_s, core + core * self.random())


def retry_class(result: TurnResult, emitted_result: bool) -> RetryClass | None:
    """Whether a turn's final calls for a retry: an error of a retryable class, no result out yet."""
    if result.status != "error" or emitted_result:
        return None
    return classify(result.error)
