"""Resets: periods follow the type's cron in its timezone, each closed exactly once."""

from __future__ import annotations

import datetime
import itertools
import threading
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from metering import notifications
from metering.models import Meter, MeterPeriod, MeterType, Notification
from metering.resets import meters_close_periods, meters_reset_due
from metering.tasks import reset_due_meters
from tests.factories import OperatorFactory
from tests.metering.meter_helpers import make_meter, make_type, utc

pytestmark = pytest.mark.django_db

HOUR = datetime.timedelta(hours=1)
BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
CRONS = {"hourly": "0 * * * *", "daily-0230": "30 2 * * *", "daily": "0 0 * * *"}
CRONS["monthly"] = "0 0 1 * *"


def expected_fires(cron: str, tz: str, start: datetime.datetime, end: datetime.datetime):
    """The fires in [start, end], worked out from wall-clock rules without cron code:
    hourly jobs every real hour; fixed-time jobs at that local time each day (the first
    one when it happens twice, the end of the gap when it does not happen)."""
    zone = ZoneInfo(tz)
    if cron == CRONS["hourly"]:
        fires, moment = [], start
        while moment <= end:
            fires.append(moment)
            moment += HOUR
        return fires
    minute, hour, day = (int(field) if field != "*" else None for field in cron.split()[:3])
    fires = []
    date = (start - datetime.timedelta(days=2)).astimezone(zone).date()
    while date <= end.astimezone(zone).date():
        if day is None or date.day == day:
            local = datetime.datetime(date.year, date.month, date.day, hour, minute, tzinfo=zone)
            back = local.astimezone(datetime.UTC).astimezone(zone)
            if back.replace(tzinfo=None) != local.replace(tzinfo=None):  # in the spring gap
                local = datetime.datetime(date.year, date.month, date.day, 3, tzinfo=zone)
            fire = local.astimezone(datetime.UTC)
            if start <= fire <= end:
                fires.append(fire)
        date += datetime.timedelta(days=1)
    return fires


def simulate(operator, start, end, step=datetime.timedelta(minutes=20)):
    """One meter per timezone and cron; the scheduler runs every `step` from start to end."""
    meters = {}
    for tz in (BERLIN, NEW_YORK):
        for label, cron in CRONS.items():
            meter_type = make_type(operator, name=f"{tz}-{label}", cron=cron, tz=tz)
            meters[tz, label] = make_meter(meter_type, at=start)
    now = start
    while now < end:
        now = min(now + step, end)
        meters_reset_due(now=now)
    return meters


def boundaries(meter: Meter) -> list[datetime.datetime]:
    periods = list(MeterPeriod.objects.filter(meter=meter).order_by("period_start"))
    for earlier, later in itertools.pairwise(periods):
        assert earlier.period_end == later.period_start  # contiguous: no gap, no overlap
    assert len({period.period_start for period in periods}) == len(periods)
    meter.refresh_from_db()
    assert meter.period_start == periods[-1].period_end  # the meter runs on from there
    return [period.period_start for period in periods] + [periods[-1].period_end]


def fires_on(meters, tz, label, date) -> list[datetime.datetime]:
    local = (fire.astimezone(ZoneInfo(tz)) for fire in boundaries(meters[tz, label]))
    return [moment for moment in local if moment.date() == date]


def period_length(meters, tz, label, local_start: datetime.datetime) -> datetime.timedelta:
    periods = MeterPeriod.objects.filter(meter=meters[tz, label])
    period = periods.get(period_start=local_start.replace(tzinfo=ZoneInfo(tz)))
    return period.period_end - period.period_start


def test_a_month_across_autumn_dst_gives_one_period_per_cron_interval(acme):
    start, end = utc(2026, 10, 10), utc(2026, 11, 10)
    meters = simulate(acme.operator, start, end)

    assert_one_period_per_interval(meters, start, end)
    # 02:30 on the night Berlin's clocks go back (02:00-03:00 happens twice): once.
    (fire,) = fires_on(meters, BERLIN, "daily-0230", datetime.date(2026, 10, 25))
    assert (fire.hour, fire.minute, fire.fold) == (2, 30, 0)
    # Hourly meters close every real hour: 25 on the long day.
    assert len(fires_on(meters, BERLIN, "hourly", datetime.date(2026, 10, 25))) == 25
    assert len(fires_on(meters, NEW_YORK, "hourly", datetime.date(2026, 11, 1))) == 25
    # The daily period spanning the change lasts 25 real hours.
    assert period_length(meters, BERLIN, "daily", datetime.datetime(2026, 10, 25)) == 25 * HOUR
    assert period_length(meters, NEW_YORK, "daily", datetime.datetime(2026, 11, 1)) == 25 * HOUR


def test_a_month_across_spring_dst_gives_one_period_per_cron_interval(acme):
    start, end = utc(2026, 3, 1), utc(2026, 4, 2)
    meters = simulate(acme.operator, start, end)

    assert_one_period_per_interval(meters, start, end)
    # 02:30 on the night the clocks go forward (02:00-03:00 does not exist) still fires,
    # right after the gap.
    (fire,) = fires_on(meters, BERLIN, "daily-0230", datetime.date(2026, 3, 29))
    assert (fire.hour, fire.minute) == (3, 0)
    (fire,) = fires_on(meters, NEW_YORK, "daily-0230", datetime.date(2026, 3, 8))
    assert (fire.hour, fire.minute) == (3, 0)
    assert len(fires_on(meters, BERLIN, "hourly", datetime.date(2026, 3, 29))) == 23
    assert len(fires_on(meters, NEW_YORK, "hourly", datetime.date(2026, 3, 8))) == 23
    assert period_length(meters, BERLIN, "daily", datetime.datetime(2026, 3, 29)) == 23 * HOUR
    assert period_length(meters, NEW_YORK, "daily", datetime.datetime(2026, 3, 8)) == 23 * HOUR
    # The monthly period of March is one hour short in both zones.
    march = datetime.timedelta(days=31) - HOUR
    assert period_length(meters, BERLIN, "monthly", datetime.datetime(2026, 3, 1)) == march
    assert period_length(meters, NEW_YORK, "monthly", datetime.datetime(2026, 3, 1)) == march


def assert_one_period_per_interval(meters, start, end):
    for (tz, label), meter in meters.items():
        fires = boundaries(meter)
        assert fires == expected_fires(CRONS[label], tz, fires[0], end), (tz, label)
        assert fires[0] <= start < fires[1]  # the first period is the one we started in
        assert meter.period_start <= end < meter.period_end  # every ended period closed


def test_reset_moves_value_into_period_history_and_starts_from_zero(acme):
    meter_type = make_type(acme.operator, cron="0 0 * * *")
    meter = make_meter(
        meter_type,
        at=utc(2026, 5, 1, 12),
        value=Decimal("12.5"),
        group_breakdowns={"eu": "10", "us": "2.5"},
        carry_first={"id": "r1"},
        carry_last={"id": "r9"},
        record_count=9,
        first_event_at=utc(2026, 5, 1, 1),
        last_event_at=utc(2026, 5, 1, 11),
    )

    assert meters_reset_due(now=utc(2026, 5, 2, 0, 1)) == 1

    period = MeterPeriod.objects.get(meter=meter)
    assert (period.period_start, period.period_end) == (utc(2026, 5, 1), utc(2026, 5, 2))
    assert period.value == Decimal("12.5")
    assert period.group_breakdowns == {"eu": "10", "us": "2.5"}
    assert (period.carry_first, period.carry_last) == ({"id": "r1"}, {"id": "r9"})
    assert (period.record_count, period.meter_key, period.user_id) == (9, "m1", "alice")
    assert (period.first_event_at, period.last_event_at) == (
        utc(2026, 5, 1, 1),
        utc(2026, 5, 1, 11),
    )
    meter.refresh_from_db()
    assert (meter.period_start, meter.period_end) == (utc(2026, 5, 2), utc(2026, 5, 3))
    assert meter.value == 0 and meter.record_count == 0 and meter.group_breakdowns == {}
    assert meter.carry_first is meter.carry_last is meter.first_event_at is None
    notification = Notification.objects.get(kind=Notification.Kind.PERIOD_CLOSED)
    assert notification.operator_id == acme.operator.pk
    assert notification.payload["meterId"] == str(meter.pk)
    assert notification.payload["periodStart"] == "2026-05-01T00:00:00.000Z"
    assert notification.payload["value"] == 12.5  # a JSON number
    assert notification.payload["groupBreakdowns"] == {"eu": 10, "us": 2.5}


def test_missed_periods_are_each_closed_empty_ones_included(acme):
    meter_type = make_type(acme.operator, cron="0 * * * *")
    meter = make_meter(meter_type, at=utc(2026, 5, 1, 9, 30), value=Decimal(4), record_count=2)

    # The scheduler was down from 10:00 until 12:05: three periods ended meanwhile.
    assert meters_reset_due(now=utc(2026, 5, 1, 12, 5)) == 3

    periods = list(MeterPeriod.objects.filter(meter=meter).order_by("period_start"))
    assert [(p.period_start.hour, p.period_end.hour) for p in periods] == [
        (9, 10),
        (10, 11),
        (11, 12),
    ]
    assert [(p.value, p.record_count) for p in periods] == [(4, 2), (0, 0), (0, 0)]
    assert Notification.objects.filter(kind=Notification.Kind.PERIOD_CLOSED).count() == 3
    meter.refresh_from_db()
    assert (meter.period_start, meter.period_end) == (utc(2026, 5, 1, 12), utc(2026, 5, 1, 13))


def test_an_empty_min_period_is_announced_without_a_value(acme):
    meter_type = make_type(acme.operator, aggregation="Min", cron="0 * * * *")
    make_meter(meter_type, at=utc(2026, 5, 1, 9, 30))

    meters_reset_due(now=utc(2026, 5, 1, 10))

    assert Notification.objects.get().payload["value"] is None


def test_a_reset_run_twice_closes_nothing_more(acme):
    meter_type = make_type(acme.operator, cron="0 * * * *")
    for user in ("alice", "bob", "charlie"):
        make_meter(meter_type, user_id=user, at=utc(2026, 5, 1, 9, 30))
    now = utc(2026, 5, 1, 11, 1)

    assert meters_reset_due(now=now, batch_size=2) == 6
    assert meters_reset_due(now=now, batch_size=2) == 0

    assert MeterPeriod.objects.count() == 6
    assert Notification.objects.count() == 6


def test_meters_not_yet_due_are_left_alone(acme, django_assert_num_queries):
    meter_type = make_type(acme.operator, cron="0 0 * * *")
    meter = make_meter(meter_type, at=utc(2026, 5, 1, 12), value=Decimal(3))

    with django_assert_num_queries(1 + 2):  # the SELECT, in a savepoint here
        assert meters_reset_due(now=utc(2026, 5, 1, 23, 59)) == 0

    meter.refresh_from_db()
    assert meter.value == 3 and not MeterPeriod.objects.exists()


def test_a_batch_of_meters_is_closed_in_a_fixed_number_of_queries(acme, django_assert_num_queries):
    meter_type = make_type(acme.operator, cron="0 * * * *")
    for index in range(20):
        make_meter(meter_type, user_id=f"user-{index}", at=utc(2026, 5, 1, 9, 30))

    # SELECT … FOR UPDATE, SELECT meter types, INSERT periods with their notifications,
    # UPDATE meters, INSERT the stream runtime's pending flushes (its period listener);
    # and the savepoint that stands in for the batch's transaction here.
    with django_assert_num_queries(5 + 2):
        assert meters_reset_due(now=utc(2026, 5, 1, 12)) == 60


def test_delete_on_reset_closes_the_period_then_deletes_the_meter(acme):
    meter_type = make_type(acme.operator, cron="0 * * * *")
    meter = make_meter(
        meter_type, at=utc(2026, 5, 1, 9, 30), delete_on_reset=True, value=Decimal(7)
    )
    kept = make_meter(meter_type, user_id="bob", at=utc(2026, 5, 1, 9, 30))

    assert meters_reset_due(now=utc(2026, 5, 1, 12)) == 1 + 3

    assert not Meter.objects.filter(pk=meter.pk).exists()
    period = MeterPeriod.objects.get(meter=None)  # the history outlives the meter
    assert (period.user_id, period.meter_key, period.value) == ("alice", "m1", 7)
    assert period.period_end == utc(2026, 5, 1, 10)
    assert MeterPeriod.objects.filter(meter=kept).count() == 3
    payload = Notification.objects.get(payload__userId="alice").payload
    assert payload["meterDeleted"] is True


def test_close_periods_moves_the_callers_locked_instances(acme):
    meter_type = make_type(acme.operator, cron="0 * * * *")
    make_meter(meter_type, at=utc(2026, 5, 1, 9, 30), value=Decimal(2), record_count=1)
    meters = list(Meter.objects.select_related("meter_type").select_for_update())

    outcome = meters_close_periods(meters=meters, now=utc(2026, 5, 1, 10, 30))

    (meter,) = meters
    assert outcome.periods_closed == 1 and not outcome.deleted_ids
    assert (meter.period_start, meter.period_end) == (utc(2026, 5, 1, 10), utc(2026, 5, 1, 11))
    assert meter.value == 0 and meter.record_count == 0
    meter.refresh_from_db()
    assert meter.period_start == utc(2026, 5, 1, 10)


def test_the_reset_task_calls_the_service(acme):
    meter_type = make_type(acme.operator, cron="0 0 * * *")
    make_meter(meter_type, at=timezone.now() - datetime.timedelta(days=3))

    assert reset_due_meters() == 3
    assert reset_due_meters() == 0


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_close_each_period_once(monkeypatch):

    sweeps = []
    monkeypatch.setattr(notifications, "_schedule_sweep", lambda: sweeps.append(1))
    operator = OperatorFactory(name="Initech")
    meter_type = make_type(operator, cron="0 * * * *")
    meters = [
        make_meter(meter_type, user_id=f"user-{index}", at=utc(2026, 5, 1, 9, 30))
        for index in range(120)
    ]
    now = utc(2026, 5, 1, 12, 1)  # three periods each
    start = threading.Barrier(2)
    closed: list[int] = []
    errors: list[BaseException] = []

    def worker():
        try:
            start.wait()
            closed.append(meters_reset_due(now=now, batch_size=7))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert sum(closed) == len(meters) * 3
    assert MeterPeriod.objects.count() == len(meters) * 3
    for meter in meters:
        starts = MeterPeriod.objects.filter(meter=meter).values_list("period_start", flat=True)
        assert sorted(starts) == [utc(2026, 5, 1, 9), utc(2026, 5, 1, 10), utc(2026, 5, 1, 11)]
    assert Notification.objects.count() == len(meters) * 3
    assert sweeps  # delivery was scheduled after commit


def test_a_meter_type_with_a_broken_schedule_does_not_stop_other_resets(acme, caplog):
    broken = make_type(acme.operator, name="broken", cron="0 * * * *")
    stuck = make_meter(broken, at=utc(2026, 5, 1, 9, 30))
    MeterType.objects.filter(pk=broken.pk).update(reset_cron="99 * * * *")
    fine = make_meter(make_type(acme.operator, cron="0 * * * *"), at=utc(2026, 5, 1, 9, 30))

    assert meters_reset_due(now=utc(2026, 5, 1, 10, 1)) == 1

    assert MeterPeriod.objects.get().meter_id == fine.pk
    stuck.refresh_from_db()
    assert stuck.period_end == utc(2026, 5, 1, 10)  # left due, and logged
    assert "Cannot evaluate reset schedule" in caplog.text


def test_a_full_batch_of_broken_schedules_ends_the_run(acme):
    broken = make_type(acme.operator, name="broken", cron="0 * * * *")
    for user in ("alice", "bob"):
        make_meter(broken, user_id=user, at=utc(2026, 5, 1, 9, 30))
    MeterType.objects.filter(pk=broken.pk).update(timezone="Mars/Olympus")

    assert meters_reset_due(now=utc(2026, 5, 1, 10, 1), batch_size=2) == 0


def test_a_large_reset_asks_other_workers_to_join(acme, monkeypatch, settings):
    from metering import tasks

    settings.TALLY["RESET_WORKERS"] = 3
    monkeypatch.setattr(tasks, "BATCH_SIZE", 2)
    helpers = []
    monkeypatch.setattr(
        tasks.reset_due_meters, "apply_async", lambda **options: helpers.append(options)
    )
    meter_type = make_type(acme.operator, cron="0 0 * * *")
    for user in ("alice", "bob", "charlie"):
        make_meter(meter_type, user_id=user, at=timezone.now() - datetime.timedelta(days=1))

    assert tasks.reset_due_meters() == 3
    assert helpers == [{"kwargs": {"joining": True}, "retry": False}] * 2
    assert tasks.reset_due_meters(joining=True) == 0  # a helper finds the work done
    assert tasks.reset_due_meters() == 0  # and nothing due: nobody is asked
    assert len(helpers) == 2
