"""Reset schedules: 5-field cron expressions evaluated in the meter type's timezone.

cronsim follows Debian cron around DST changes, which is what a person reading a cron
line expects: a job at a fixed local time (say 02:30 daily) runs once on the night the
clocks go back, not twice, and on the night they go forward it runs right after the
gap instead of being skipped. Hourly and finer jobs keep running every real hour.
All values going in and out are aware datetimes; storage is UTC.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

UTC = datetime.UTC


def timezone_problem(name: str) -> str | None:
    """Why `name` is not a canonical IANA timezone, or None."""
    if not isinstance(name, str) or name not in _timezones():
        return f"{name!r} is not an IANA timezone name (e.g. Europe/Berlin, Etc/UTC)."
    return None


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a valid 5-field cron expression, or None."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        return "Must be a 5-field cron expression (minute hour day month weekday)."
    try:
        CronSim(expression, datetime.datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        return f"Not a valid cron expression: {exc}."
    return None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown timezone {name!r}.") from None


def next_fire(expression: str, timezone_name: str, after: datetime.datetime) -> datetime.datetime:
    """The first time the schedule fires strictly after `after`, in UTC."""
    local = after.astimezone(_zone(timezone_name))
    return next(CronSim(expression, local)).astimezone(UTC)


def previous_fire(
    expression: str, timezone_name: str, before: datetime.datetime
) -> datetime.datetime:
    """The last time the schedule fired strictly before `before`, in UTC."""
    local = before.astimezone(_zone(timezone_name))
    return next(CronSim(expression, local, reverse=True)).astimezone(UTC)


def period_bounds(
    expression: str, timezone_name: str, at: datetime.datetime
) -> tuple[datetime.datetime, datetime.datetime]:
    """The period containing `at`: (start, end) with start <= at < end.

    The end is the next fire after `at`; the start is the fire just before that end.
    """
    end = next_fire(expression, timezone_name, at)
    return previous_fire(expression, timezone_name, end), end


_TIMEZONES: frozenset[str] | None = None


def _timezones() -> frozenset[str]:
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = frozenset(available_timezones())
    return _TIMEZONES
