"""Pricing cycles: the periods an account is invoiced for, from its plan assignments.

An assignment gives an account a cycle interval (`WEEKLY`, `MONTHLY`, `QUARTERLY`,
`YEARLY`) and an anchor day from a date on. Cycles start on the anchor: the weekday
(1 = Monday … 7 = Sunday) for weekly cycles, the day of the month otherwise (clamped to
the month's last day: 31 means the last day of February). Quarterly and yearly cycles
count their months from the month the assignment takes effect in.

A new assignment closes the running cycle at its effective date and starts a cycle
there that runs to its own next anchor, after which its regular cycles follow. This is
the reference's storage example: monthly on the 5th, then from 2020-03-15 a plan
invoicing on the 1st gives cycles starting 2020-03-05, 2020-03-15, 2020-04-01,
2020-05-01. All dates are UTC days; a cycle is [start, end).
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

INTERVALS = ("WEEKLY", "MONTHLY", "QUARTERLY", "YEARLY")
_MONTHS = {"MONTHLY": 1, "QUARTERLY": 3, "YEARLY": 12}


@dataclass(frozen=True)
class Schedule:
    """One plan assignment's cycle: from `effective_from`, `interval` anchored on
    `anchor_day`. `ref` is whatever the caller wants back (the assignment)."""

    effective_from: datetime.date
    interval: str
    anchor_day: int
    ref: Any = None

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
        low, high = (1, 7) if self.interval == "WEEKLY" else (1, 31)
        if not low <= self.anchor_day <= high:
            raise ValueError(f"anchor day must be {low} to {high} for {self.interval} cycles")


@dataclass(frozen=True)
class Cycle:
    start: datetime.date
    end: datetime.date
    schedule: Schedule


def _month_anchor(year: int, month: int, day: int) -> datetime.date:
    return datetime.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def next_anchor(schedule: Schedule, after: datetime.date) -> datetime.date:
    """The first anchor date strictly after `after`."""
    if schedule.interval == "WEEKLY":
        ahead = (schedule.anchor_day - after.isoweekday()) % 7 or 7
        return after + datetime.timedelta(days=ahead)
    step = _MONTHS[schedule.interval]
    origin = schedule.effective_from
    # Months since the assignment's month, rounded down to the interval.
    months = (after.year - origin.year) * 12 + after.month - origin.month
    months -= months % step
    while True:
        year, month = divmod(origin.month - 1 + months, 12)
        candidate = _month_anchor(origin.year + year, month + 1, schedule.anchor_day)
        if candidate > after:
            return candidate
        months += step


def _schedule_cycles(schedule: Schedule, until: datetime.date | None) -> Iterator[Cycle]:
    """One assignment's cycles from its effective date, the last cut at `until`."""
    start = schedule.effective_from
    while until is None or start < until:
        end = next_anchor(schedule, start)
        if until is not None and end > until:
            end = until
        yield Cycle(start, end, schedule)
        start = end


def cycles(schedules: Sequence[Schedule], start: datetime.date, end: datetime.date) -> list[Cycle]:
    """The cycles that overlap [start, end), in order. Schedules may come in any order;
    of two taking effect the same day, the later in the list wins."""
    ordered = sorted(enumerate(schedules), key=lambda pair: (pair[1].effective_from, pair[0]))
    chosen: list[Schedule] = []
    for _, schedule in ordered:
        if chosen and chosen[-1].effective_from == schedule.effective_from:
            chosen[-1] = schedule
        else:
            chosen.append(schedule)
    found: list[Cycle] = []
    for index, schedule in enumerate(chosen):
        until = chosen[index + 1].effective_from if index + 1 < len(chosen) else None
        if until is not None and until <= start:
            continue
        for cycle in _schedule_cycles(schedule, until):
            if cycle.start >= end:
                break
            if cycle.end > start:
                found.append(cycle)
    return found


def cycle_at(schedules: Sequence[Schedule], day: datetime.date) -> Cycle | None:
    """The cycle holding `day`, or None before the first assignment."""
    found = cycles(schedules, day, day + datetime.timedelta(days=1))
    return found[0] if found else None
