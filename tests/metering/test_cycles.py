"""Pricing cycles from plan assignments, the reference's storage example first."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.cycles import Schedule, cycle_at, cycles, next_anchor


def starts(found) -> list[date]:
    return [cycle.start for cycle in found]


def test_the_reference_storage_example():
    fifth = Schedule(date(2019, 12, 5), "MONTHLY", 5)
    first = Schedule(date(2020, 3, 15), "MONTHLY", 1)
    found = cycles([fifth, first], date(2020, 1, 1), date(2020, 6, 1))
    assert starts(found) == [
        date(2019, 12, 5),
        date(2020, 1, 5),
        date(2020, 2, 5),
        date(2020, 3, 5),
        date(2020, 3, 15),
        date(2020, 4, 1),
        date(2020, 5, 1),
    ]
    # The running cycle closes at the change; the new plan's first cycle runs to its anchor.
    by_start = {cycle.start: cycle for cycle in found}
    assert by_start[date(2020, 3, 5)].end == date(2020, 3, 15)
    assert by_start[date(2020, 3, 15)].end == date(2020, 4, 1)
    assert by_start[date(2020, 3, 15)].schedule is first
    # Querying: cycle starts in [2020-02-15, 2020-04-01) are 03-05 and 03-15 only.
    chosen = [cycle.start for cycle in found if date(2020, 2, 15) <= cycle.start < date(2020, 4, 1)]
    assert chosen == [date(2020, 3, 5), date(2020, 3, 15)]


def test_a_first_assignment_starts_its_first_cycle_on_its_date():
    found = cycles([Schedule(date(2024, 1, 20), "MONTHLY", 1)], date(2024, 1, 1), date(2024, 4, 1))
    assert [(c.start, c.end) for c in found] == [
        (date(2024, 1, 20), date(2024, 2, 1)),
        (date(2024, 2, 1), date(2024, 3, 1)),
        (date(2024, 3, 1), date(2024, 4, 1)),
    ]
    assert cycle_at([Schedule(date(2024, 1, 20), "MONTHLY", 1)], date(2024, 1, 19)) is None


def test_anchor_days_past_a_months_end_clamp_to_its_last_day():
    schedule = Schedule(date(2024, 1, 31), "MONTHLY", 31)
    found = cycles([schedule], date(2024, 1, 31), date(2024, 5, 1))
    assert starts(found) == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]


def test_weekly_quarterly_and_yearly_cycles():
    weekly = Schedule(date(2024, 6, 5), "WEEKLY", 1)  # a Wednesday; cycles turn on Monday
    assert starts(cycles([weekly], date(2024, 6, 1), date(2024, 6, 20))) == [
        date(2024, 6, 5),
        date(2024, 6, 10),
        date(2024, 6, 17),
    ]
    quarterly = Schedule(date(2024, 2, 10), "QUARTERLY", 15)
    assert starts(cycles([quarterly], date(2024, 1, 1), date(2024, 12, 31))) == [
        date(2024, 2, 10),
        date(2024, 2, 15),
        date(2024, 5, 15),
        date(2024, 8, 15),
        date(2024, 11, 15),
    ]
    yearly = Schedule(date(2023, 7, 1), "YEARLY", 1)
    assert starts(cycles([yearly], date(2023, 1, 1), date(2026, 1, 1))) == [
        date(2023, 7, 1),
        date(2024, 7, 1),
        date(2025, 7, 1),
    ]


def test_the_later_of_two_assignments_on_one_day_wins():
    one = Schedule(date(2024, 3, 1), "MONTHLY", 1)
    two = Schedule(date(2024, 3, 1), "WEEKLY", 1)
    assert cycle_at([one, two], date(2024, 3, 10)).schedule is two


@pytest.mark.parametrize(
    ("interval", "day"), [("WEEKLY", 0), ("WEEKLY", 8), ("MONTHLY", 32), ("DAILY", 1)]
)
def test_bad_schedules_are_refused(interval, day):
    with pytest.raises(ValueError):
        Schedule(date(2024, 1, 1), interval, day)


schedules = st.lists(
    st.builds(
        Schedule,
        st.dates(min_value=date(2019, 1, 1), max_value=date(2026, 1, 1)),
        st.sampled_from(["WEEKLY", "MONTHLY", "QUARTERLY", "YEARLY"]),
        st.integers(1, 7),
    ),
    min_size=1,
    max_size=4,
)


@given(schedules)
def test_cycles_tile_time_without_gaps_or_overlaps(found_schedules):
    start, end = date(2019, 1, 1), date(2027, 1, 1)
    found = cycles(found_schedules, start, end)
    first = min(schedule.effective_from for schedule in found_schedules)
    assert found[0].start == first
    for earlier, later in itertools.pairwise(found):
        assert earlier.end == later.start
        assert earlier.start < earlier.end
    assert found[-1].end >= end
    for day in (first, date(2022, 2, 28), date(2026, 12, 31)):
        if day >= first:
            assert cycle_at(found_schedules, day).start <= day < cycle_at(found_schedules, day).end
    assert next_anchor(found_schedules[0], first) > first
