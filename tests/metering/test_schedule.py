"""Reset schedules: cron in the meter type's timezone, right across DST changes."""

from __future__ import annotations

import datetime
import itertools
from zoneinfo import ZoneInfo

import pytest

from metering.schedule import (
    cron_problem,
    next_fire,
    period_bounds,
    previous_fire,
    timezone_problem,
)

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.UTC)


def fires(cron, tz, start, count):
    moments = [next_fire(cron, tz, start)]
    while len(moments) < count:
        moments.append(next_fire(cron, tz, moments[-1]))
    return moments


def test_fires_come_back_in_utc():
    fire = next_fire("0 0 * * *", "Europe/Berlin", utc(2026, 6, 1, 12))
    assert fire == utc(2026, 6, 1, 22) and fire.tzinfo == datetime.UTC


def test_a_fixed_time_job_runs_once_on_the_night_clocks_go_back():
    # Berlin, 2026-10-25: 02:00-03:00 happens twice; 02:30 runs the first time only.
    moments = fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 12), 3)
    assert moments == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_a_fixed_time_job_still_runs_on_the_night_clocks_go_forward():
    # Berlin, 2026-03-29: 02:00-03:00 does not exist; 02:30 runs at 03:00 instead.
    moments = fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2)
    assert [moment.astimezone(BERLIN).strftime("%d %H:%M") for moment in moments] == [
        "29 03:00",
        "30 02:30",
    ]
    moments = fires("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2)
    assert [moment.astimezone(NEW_YORK).strftime("%d %H:%M") for moment in moments] == [
        "08 03:00",
        "09 02:30",
    ]


@pytest.mark.parametrize(
    ("tz", "day"),
    [("Europe/Berlin", utc(2026, 10, 24, 22)), ("America/New_York", utc(2026, 11, 1, 4))],
)
def test_an_hourly_job_runs_every_real_hour_across_fall_back(tz, day):
    moments = fires("0 * * * *", tz, day - datetime.timedelta(minutes=1), 26)
    assert all(b - a == datetime.timedelta(hours=1) for a, b in itertools.pairwise(moments))


def test_period_bounds_contain_the_moment_and_span_the_dst_day():
    start, end = period_bounds("0 0 * * *", "Europe/Berlin", utc(2026, 10, 25, 12))
    assert start == datetime.datetime(2026, 10, 25, tzinfo=BERLIN)
    assert end == datetime.datetime(2026, 10, 26, tzinfo=BERLIN)
    assert end - start == datetime.timedelta(hours=25)
    assert previous_fire("0 0 * * *", "Europe/Berlin", end) == start


def test_period_bounds_at_a_fire_start_a_new_period():
    start, end = period_bounds("0 * * * *", "Etc/UTC", utc(2026, 5, 1, 10))
    assert (start, end) == (utc(2026, 5, 1, 10), utc(2026, 5, 1, 11))


def test_monthly_periods_follow_local_month_starts():
    start, end = period_bounds("0 0 1 * *", "America/New_York", utc(2026, 3, 15))
    assert (start.astimezone(NEW_YORK).day, end.astimezone(NEW_YORK).month) == (1, 4)
    assert end - start == datetime.timedelta(days=31, hours=-1)  # March loses an hour


@pytest.mark.parametrize(
    ("expression", "valid"),
    [
        ("0 0 * * *", True),
        ("*/15 9-17 * * 1-5", True),
        ("0 0 1 * *", True),
        ("0 0 * *", False),
        ("0 0 * * * *", False),
        ("61 0 * * *", False),
        ("not a cron", False),
        (None, False),
    ],
)
def test_cron_problem(expression, valid):
    assert (cron_problem(expression) is None) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [("Europe/Berlin", True), ("Etc/UTC", True), ("Mars/Olympus", False), ("", False), (3, False)],
)
def test_timezone_problem(name, valid):
    assert (timezone_problem(name) is None) is valid
