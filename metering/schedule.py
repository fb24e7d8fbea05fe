"""Reset schedules: 5-field cron expressions evaluated in the meter type's timezone.

The API speaks them as an object of crontab fields (`{"minute": "0", "hour": "0",
"day": "1", "month": "*", "weekday": "*"}`); the model keeps the cron line.

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


# The API's resetSchedule object, in crontab order.
SCHEDULE_FIELDS = ("minute", "hour", "day", "month", "weekday")
# cronsim names the field it could not read ("Bad day-of-month"); the API names ours.
_CRONSIM_FIELD_NAMES = {
    "minute": "minute",
    "hour": "hour",
    "day-of-month": "day",
    "month": "month",
    "day-of-week": "weekday",
}


class ScheduleInvalid(ValueError):
    """A reset schedule that cannot be read: (field, message) pairs, field "" for the
    schedule as a whole."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


def schedule_fields_to_cron(fields: dict) -> str:
    """The cron expression of a `{"minute", "hour", "day", "month", "weekday"}` object.

    Each field is a string in crontab syntax ("0", "*", "*/15", "1-5", "MON-FRI", …; a
    whole number is taken as its digits) and is checked on its own, so an error names
    the field; then the whole line is checked (a 30th of February never fires).
    """
    problems = [(key, "Unknown field.") for key in fields if key not in SCHEDULE_FIELDS]
    parts = []
    for position, name in enumerate(SCHEDULE_FIELDS):
        value = fields.get(name)
        if value is None:
            problems.append((name, "This field is required."))
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
            problems.append((name, 'Must be one crontab field as a string, e.g. "0" or "*/15".'))
            continue
        alone = ["*"] * len(SCHEDULE_FIELDS)
        alone[position] = value
        try:
            CronSim(" ".join(alone), datetime.datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            problems.append((name, f"Not a valid crontab {name} field: {exc}."))
            continue
        parts.append(value)
    if problems:
        raise ScheduleInvalid(problems)
    expression = " ".join(parts)
    problem = cron_problem(expression)
    if problem:
        raise ScheduleInvalid([(_field_named_in(problem), problem)])
    return expression


def cron_to_schedule_fields(expression: str) -> dict[str, str]:
    """The API's resetSchedule object for a stored cron expression."""
    return dict(zip(SCHEDULE_FIELDS, expression.split(), strict=True))


def _field_named_in(problem: str) -> str:
    for cronsim_name, name in _CRONSIM_FIELD_NAMES.items():
        if f"Bad {cronsim_name}" in problem:
            return name
    return ""


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
