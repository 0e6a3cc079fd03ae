"""The schedule rules: when a ``cron``, ``interval`` or ``once`` schedule fires next.

Box-side: the scheduler on the host and the in-box MCP server (which tells the agent about a bad
schedule at once) both use these rules, so this module imports only the standard library and
:mod:`agentlite.core.errors`; croniter is imported on the first cron schedule, not at start-up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from agentlite.core.clock import iso_utc, parse_iso
from agentlite.core.errors import ConfigError


def resolve_tz(tz: str | tzinfo) -> tzinfo:
    """An IANA zone name (or a ready tzinfo) as a tzinfo; ConfigError for an unknown name."""
    if isinstance(tz, tzinfo):
        return tz
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConfigError(f"time zone `{tz}` is not a known IANA zone name") from exc


def aware_utc(moment: datetime | None) -> datetime:
    """``moment`` with a time zone (naive means UTC); ``None`` is now."""
    if moment is None:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _interval_ms(value: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"interval `{value}` must be a positive whole number of milliseconds")
    return int(text)


def _once_local(value: str, zone: tzinfo) -> datetime:
    text = value.strip()
    try:
        local = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"once timestamp `{value}` is not an ISO date-time (e.g. 2026-02-01T15:30:00)"
        ) from exc
    if local.tzinfo is not None:
        raise ConfigError(
            f"once timestamp `{value}` must be a local time without `Z` or an offset; "
            "it is read in the configured time zone"
        )
    return local.replace(tzinfo=zone)


def _cron_next(value: str, after: datetime, zone: tzinfo) -> datetime:
    text = value.strip()
    if not text:
        raise ConfigError("cron expression `` is empty")
    from croniter import croniter  # ~30 ms of imports: only once a cron schedule is checked

    try:
        nxt = croniter(text, after.astimezone(zone)).get_next(datetime)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # croniter's errors are ValueErrors
        raise ConfigError(f"cron expression `{value}` is invalid: {exc}") from exc
    return nxt


def compute_next_run(
    schedule_type: str,
    value: str,
    tz: str | tzinfo = "UTC",
    after: datetime | None = None,
    *,
    anchor: str | datetime | None = None,
) -> str:
    """When a schedule next fires, as a UTC ISO string; ConfigError naming a bad value.

    - ``cron``: the next occurrence strictly after ``after`` (default now), in ``tz``;
    - ``interval``: ``anchor`` (the previous scheduled time) plus the interval, stepped forward by
      whole intervals until it is after ``after``; without an anchor, ``after`` plus the interval;
    - ``once``: the local timestamp read in ``tz`` (whether it is past or not: a past one is
      simply due). Completing a once task after its run is the scheduler's business.
    """
    zone = resolve_tz(tz)
    now = aware_utc(after)
    if schedule_type == "cron":
        return iso_utc(_cron_next(value, now, zone))
    if schedule_type == "interval":
        step = _interval_ms(value)
        if anchor is None:
            return iso_utc(now + timedelta(milliseconds=step))
        base = parse_iso(anchor) if isinstance(anchor, str) else aware_utc(anchor)
        behind_ms = (now - base) // timedelta(milliseconds=1)
        steps = 1 if behind_ms < 0 else behind_ms // step + 1
        return iso_utc(base + timedelta(milliseconds=steps * step))
    if schedule_type == "once":
        return iso_utc(_once_local(value, zone))
    raise ConfigError(f"schedule type `{schedule_type}` must be one of cron, interval, once")


def validate_schedule(schedule_type: str, value: str, tz: str | tzinfo = "UTC") -> None:
    """Raise ConfigError (naming the value) unless the schedule can be computed."""
    compute_next_run(schedule_type, value, tz)
