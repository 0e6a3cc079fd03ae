"""The one timestamp format AgentLite stores and compares as text: ``2026-11-25T13:24:47.123Z``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from agentlite.core.errors import ConfigError


def iso_utc(moment: datetime) -> str:
    """``moment`` in UTC with milliseconds and ``Z`` (a naive ``moment`` is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso_utc(datetime.now(UTC))


def parse_iso(value: str) -> datetime:
    """Read a stored timestamp back (an offset-less value is taken as UTC)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_RELATIVE = re.compile(r"(\d+)([mhd])")


def parse_since(text: str | None, now: datetime | None = None, *, what: str = "--since") -> datetime | None:
    """``7d``, ``24h``, ``30m`` (ago), or an ISO date or time (UTC unless it says otherwise);
    ``what`` names the input in the error (the CLI's option, the dashboard's field)."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: amount})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{what} `{text}`: use 7d, 24h, 30m or an ISO date such as 2026-01-31") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
