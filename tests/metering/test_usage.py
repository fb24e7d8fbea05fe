"""Applying usage: aggregation, groups, carries, meter creation, late records, rollups,
thresholds, and a constant number of queries per batch."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.models import (
    Alert,
    Customer,
    Meter,
    MeterPeriod,
    MeterType,
    Notification,
    UsageRollup,
)
from metering.usage import UsageUpdate, usage_apply
from tests.metering.meter_helpers import make_type, stored, utc

pytestmark = pytest.mark.django_db

SUM, INCREMENT = MeterType.Aggregation.SUM, MeterType.Aggregation.INCREMENT
MAX, MIN = MeterType.Aggregation.MAX, MeterType.Aggregation.MIN
# Daily periods: the one containing NOW is 2026-03-10 00:00 to 2026-03-11 00:00 UTC.
NOW = utc(2026, 3, 10, 12)
START, END = utc(2026, 3, 10), utc(2026, 3, 11)


def update(meter_type, value="1", *, at=NOW, key="k1", user="alice", group=None, record=None):
    return UsageUpdate(
        meter_type_id=meter_type.pk,
        category=None,
        meter_key=key,
        user_id=user,
        value=Decimal(value),
        event_time=at,
        group=group,
        record=record,
    )


def meter_of(meter_type, key="k1", user="alice") -> Meter:
    return Meter.objects.get(meter_type=meter_type, meter_key=key, user_id=user)


def breakdowns(meter) -> dict[str, Decimal]:
    return {group: Decimal(value) for group, value in meter.group_breakdowns.items()}


def minutes(n) -> datetime.datetime:
    return NOW + datetime.timedelta(minutes=n)


# -- Aggregations ----------------------------------------------------------------------


def test_sum_adds_per_meter_and_per_group_keeping_carries_and_metadata(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[
            update(meter_type, "2.5", at=minutes(5), group="eu", record={"n": 1}),
            update(meter_type, "-1", at=minutes(1), group="us", record={"n": 2}),
            update(meter_type, "10", at=minutes(9), group="eu", record={"n": 3}),
            update(meter_type, "0.25", at=minutes(3), record={"n": 4}),
        ],
    )
    assert (result.applied, result.meters_created) == (4, 1)
    meter = meter_of(meter_type)
    assert meter.value == Decimal("11.75")
    assert breakdowns(meter) == {"eu": Decimal("12.5"), "us": Decimal(-1)}
    assert (meter.carry_first, meter.carry_last) == ({"n": 2}, {"n": 3})
    assert meter.record_count == 4
    assert (meter.first_event_at, meter.last_event_at) == (minutes(1), minutes(9))

    # A later batch: a tie on the last event time goes to the newer record, an earlier
    # record becomes the first, and existing groups keep adding up.
    usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[
            update(meter_type, "1", at=minutes(9), group="eu", record={"n": 5}),
            update(meter_type, "1", at=minutes(0), group="apac", record={"n": 6}),
            update(meter_type, "1", at=minutes(0), record={"n": 7}),
        ],
    )
    meter.refresh_from_db()
    assert meter.value == Decimal("14.75")
    assert breakdowns(meter) == {"eu": Decimal("13.5"), "us": Decimal(-1), "apac": Decimal(1)}
    assert (meter.carry_first, meter.carry_last) == ({"n": 6}, {"n": 5})
    assert (meter.record_count, meter.first_event_at) == (7, minutes(0))


def test_increment_counts_records_whatever_their_value(acme):
    meter_type = make_type(acme.operator, aggregation=INCREMENT)
    updates = [update(meter_type, value, group=group) for value, group in [("7", "a"), ("-3", "a")]]
    updates.append(update(meter_type, "100", group="b"))
    usage_apply(operator=acme.operator, now=NOW, updates=updates)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "9", group="b")])
    meter = meter_of(meter_type)
    assert (meter.value, meter.record_count) == (4, 4)
    assert breakdowns(meter) == {"a": 2, "b": 2}


@pytest.mark.parametrize(
    "aggregation, first_batch, second_batch, after_first, after_second",
    [
        # A new meter has no value: the extreme of negatives is not 0.
        (MAX, ["-5", "-3", "-9"], ["-4", "-1"], "-3", "-1"),
        (MIN, ["5", "3", "9"], ["4", "6"], "3", "3"),
        (MIN, ["5", "3"], ["-2"], "3", "-2"),
        (MAX, ["1.5"], ["1.4999999999"], "1.5", "1.5"),
    ],
)
def test_max_and_min_keep_the_extreme(
    acme, aggregation, first_batch, second_batch, after_first, after_second
):
    meter_type = make_type(acme.operator, aggregation=aggregation)
    usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[update(meter_type, value, group="g") for value in first_batch],
    )
    meter = meter_of(meter_type)
    assert meter.value == Decimal(after_first)
    assert breakdowns(meter) == {"g": Decimal(after_first)}
    usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[update(meter_type, value, group="g") for value in second_batch],
    )
    meter.refresh_from_db()
    assert meter.value == Decimal(after_second)
    assert breakdowns(meter) == {"g": Decimal(after_second)}
    assert meter.record_count == len(first_batch) + len(second_batch)


def test_values_stay_exact_decimals(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    updates = [update(meter_type, "0.1", group="g") for _ in range(10)]
    updates.append(update(meter_type, "12345678901234567890.0000000001"))
    usage_apply(operator=acme.operator, now=NOW, updates=updates)
    meter = meter_of(meter_type)
    assert meter.value == Decimal("12345678901234567891.0000000001")
    assert meter.group_breakdowns == {"g": "1.0"}


# -- Which meters ----------------------------------------------------------------------


def test_category_update_reaches_every_meter_type_of_the_category(acme, globex):
    calls = make_type(acme.operator, name="calls", category="api", aggregation=INCREMENT)
    largest = make_type(acme.operator, name="largest", category="api", aggregation=MAX)
    other = make_type(acme.operator, name="storage", category="disk")
    foreign = make_type(globex.operator, name="calls", category="api")
    updates = [UsageUpdate(None, "api", "k1", "alice", Decimal(value), NOW) for value in ("4", "6")]
    result = usage_apply(operator=acme.operator, now=NOW, updates=updates)
    assert (result.applied, result.meters_created) == (4, 2)
    assert meter_of(calls).value == 2
    assert meter_of(largest).value == 6
    assert not Meter.objects.filter(meter_type__in=[other, foreign]).exists()


def test_a_meter_type_may_be_named_by_its_id_as_text(acme):
    meter_type = make_type(acme.operator)
    updates = [UsageUpdate(str(meter_type.pk), None, "k1", "alice", Decimal(2), NOW)]
    assert usage_apply(operator=acme.operator, now=NOW, updates=updates).applied == 1
    assert meter_of(meter_type).value == 2


def test_unknown_category_is_ignored(acme):
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[UsageUpdate(None, "nothing", "k1", "alice", Decimal(1), NOW)],
    )
    assert (result.applied, result.ignored_unknown) == (0, 1)
    assert not Meter.objects.exists()


def test_inactive_meter_types_ignore_usage(acme):
    future = make_type(acme.operator, name="future", active_from=NOW + datetime.timedelta(days=1))
    past = make_type(acme.operator, name="past", active_to=NOW - datetime.timedelta(days=1))
    # Active until 12:30: what happened before counts, what happened after does not.
    window = make_type(acme.operator, name="window", active_to=minutes(30))
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[
            update(future, "1"),
            update(past, "1"),
            update(window, "1", at=minutes(29)),
            update(window, "5", at=minutes(30)),
        ],
    )
    assert (result.applied, result.ignored_inactive) == (1, 3)
    assert list(Meter.objects.values_list("meter_type__name", "value")) == [("window", 1)]


def test_another_operators_meter_type_is_ignored(acme, globex):
    foreign = make_type(globex.operator, name="theirs")
    result = usage_apply(operator=acme.operator, now=NOW, updates=[update(foreign, "5")])
    assert (result.applied, result.ignored_unknown, result.meters_created) == (0, 1, 0)
    assert not Meter.objects.exists()
    assert not Customer.objects.filter(operator=acme.operator).exists()


def test_meters_are_created_on_first_use_with_a_first_period_from_now(acme):
    monthly = make_type(acme.operator, cron="0 0 1 * *", tz="Europe/Berlin")
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[update(monthly, user=user, key=key) for user in ("a", "b") for key in "xy"],
    )
    assert result.meters_created == 4
    meter = meter_of(monthly, key="x", user="a")
    # From its creation to the next fire: 1 April 00:00 CEST in Berlin.
    assert (meter.period_start, meter.period_end) == (NOW, utc(2026, 3, 31, 22))
    assert meter.created_at == NOW
    assert meter.customer.external_id == "a" and meter.customer.operator == acme.operator
    assert meter.operator == acme.operator
    again = usage_apply(operator=acme.operator, now=NOW, updates=[update(monthly, user="a")])
    assert again.meters_created == 1  # key k1 is new; ("x", "a") etc. are not
    assert Customer.objects.filter(operator=acme.operator).count() == 2


def test_updates_are_validated():
    with pytest.raises(ValueError, match="not both"):
        UsageUpdate(uuid.uuid4(), "api", "k", "u", Decimal(1), NOW)
    with pytest.raises(ValueError, match="not both"):
        UsageUpdate(None, None, "k", "u", Decimal(1), NOW)
    with pytest.raises(ValueError, match="aware"):
        UsageUpdate(None, "api", "k", "u", Decimal(1), datetime.datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="Decimal"):
        UsageUpdate(None, "api", "k", "u", 1.5, NOW)
    assert UsageUpdate(None, "api", "k", "u", 3, NOW).value == Decimal(3)


# -- Rollups ---------------------------------------------------------------------------


def rollups(meter_type) -> list[tuple]:
    rows = UsageRollup.objects.filter(meter_type=meter_type).order_by("user_id", "hour")
    return [(row.user_id, row.hour, row.value, row.record_count) for row in rows]


def test_rollups_are_hourly_per_meter_type_and_user(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    at = utc(2026, 3, 10, 10)
    usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[
            update(meter_type, "1", at=at.replace(minute=5)),
            update(meter_type, "2", at=at.replace(minute=59, second=59), key="other-key"),
            update(meter_type, "4", at=at.replace(hour=11)),
            update(meter_type, "8", at=at.replace(minute=30), user="bob"),
        ],
    )
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "16", at=at)])
    assert rollups(meter_type) == [
        ("alice", at, 19, 3),
        ("alice", at.replace(hour=11), 4, 1),
        ("bob", at, 8, 1),
    ]


@pytest.mark.parametrize("aggregation, expected", [(MAX, "7"), (MIN, "-2"), (INCREMENT, "4")])
def test_rollups_follow_the_aggregation_within_the_hour(acme, aggregation, expected):
    meter_type = make_type(acme.operator, aggregation=aggregation)
    for batch in (["3", "7"], ["-2", "5"]):
        usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, v) for v in batch])
    assert rollups(meter_type) == [("alice", NOW, Decimal(expected), 4)]


# -- Late records ----------------------------------------------------------------------


def closed_period(meter, start, end, **fields) -> MeterPeriod:
    return MeterPeriod.objects.create(
        operator=meter.operator,
        meter=meter,
        meter_type=meter.meter_type,
        meter_key=meter.meter_key,
        user_id=meter.user_id,
        period_start=start,
        period_end=end,
        **fields,
    )


def counting_since_before_today(meter_type) -> Meter:
    """The meter as if it had been created before its current period (one that has
    had resets), for scenes with hand-made closed periods."""
    Meter.objects.filter(meter_type=meter_type).update(
        period_start=START, created_at=START - datetime.timedelta(days=2)
    )
    return meter_of(meter_type)


def test_late_records_correct_the_closed_period_and_its_rollup_only(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "3")])
    meter = counting_since_before_today(meter_type)
    yesterday = START - datetime.timedelta(days=1)
    period = closed_period(
        meter,
        yesterday,
        START,
        value=Decimal(10),
        record_count=2,
        group_breakdowns={"eu": "10"},
        carry_first={"n": "first"},
        carry_last={"n": "last"},
        first_event_at=yesterday + datetime.timedelta(hours=5),
        last_event_at=yesterday + datetime.timedelta(hours=20),
    )
    late_at = yesterday + datetime.timedelta(hours=3, minutes=15)
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[
            update(meter_type, "4", at=late_at, group="eu", record={"n": "earlier"}),
            update(meter_type, "1", at=late_at + datetime.timedelta(hours=17), record={"n": "x"}),
            update(meter_type, "2", at=minutes(1)),
        ],
    )
    assert (result.applied, result.late_applied, result.late_unmatched) == (1, 2, 0)

    period.refresh_from_db()
    assert (period.value, period.record_count) == (15, 4)
    assert breakdowns(period) == {"eu": 14}
    # 03:15 is before the period's first record; 20:15 after its last.
    assert (period.carry_first, period.carry_last) == ({"n": "earlier"}, {"n": "x"})
    assert period.corrected_at == NOW
    meter.refresh_from_db()
    assert (meter.value, meter.record_count) == (5, 2)  # the current period only

    hour = late_at.replace(minute=0)
    assert ("alice", hour, 4, 1) in rollups(meter_type)
    notification = Notification.objects.get(kind=Notification.Kind.PERIOD_CORRECTED)
    assert notification.payload["periodId"] == str(period.pk)
    assert Decimal(str(notification.payload["previousValue"])) == 10
    assert Decimal(str(notification.payload["value"])) == 15
    assert notification.payload["lateRecords"] == 2


def test_records_from_before_a_meters_creation_count_in_its_first_period(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    long_ago = START - datetime.timedelta(days=30)
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[update(meter_type, "4", at=long_ago), update(meter_type, "1", at=minutes(-5))],
    )
    assert (result.applied, result.late_applied, result.late_unmatched) == (2, 0, 0)
    meter = meter_of(meter_type)
    assert (meter.period_start, meter.value, meter.first_event_at) == (NOW, 5, long_ago)

    # Still its first period: a later batch with early records counts them too.
    again = usage_apply(
        operator=acme.operator, now=NOW, updates=[update(meter_type, "2", at=START)]
    )
    assert (again.applied, meter_of(meter_type).value) == (1, 7)


def test_late_records_without_a_stored_period_are_ignored(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "0")])
    counting_since_before_today(meter_type)
    long_ago = START - datetime.timedelta(days=30)
    result = usage_apply(
        operator=acme.operator, now=NOW, updates=[update(meter_type, "4", at=long_ago)]
    )
    assert (result.applied, result.late_applied, result.late_unmatched) == (0, 0, 1)
    assert meter_of(meter_type).value == 0  # nothing counted
    assert not UsageRollup.objects.filter(hour__lt=START).exists()
    assert not Notification.objects.filter(kind=Notification.Kind.PERIOD_CORRECTED).exists()


def test_a_period_closed_by_the_reset_takes_late_records_after_it(acme):
    meter_type = make_type(acme.operator, aggregation=MAX)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "5")])
    # Past the period end: the same call closes the period, then a record from the old
    # period corrects it and one from the new period starts the new value.
    later = END + datetime.timedelta(minutes=30)
    result = usage_apply(
        operator=acme.operator,
        now=later,
        updates=[
            update(meter_type, "9", at=END - datetime.timedelta(minutes=1)),
            update(meter_type, "2", at=END + datetime.timedelta(minutes=1)),
        ],
    )
    assert (result.applied, result.late_applied) == (1, 1)
    period = MeterPeriod.objects.get()
    assert (period.period_start, period.period_end) == (NOW, END)  # created at NOW
    assert (period.value, period.record_count, period.corrected_at) == (9, 2, later)
    meter = meter_of(meter_type)
    assert (meter.period_start, meter.value, meter.record_count) == (END, 2, 1)


def test_a_meter_deleted_on_reset_starts_again_with_the_usage_after_it(acme):
    meter_type = make_type(acme.operator, aggregation=SUM)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "5")])
    Meter.objects.update(delete_on_reset=True)
    old = meter_of(meter_type)
    later = END + datetime.timedelta(minutes=30)
    result = usage_apply(
        operator=acme.operator,
        now=later,
        updates=[update(meter_type, "2", at=later), update(meter_type, "1", at=minutes(1))],
    )
    assert (result.applied, result.late_applied, result.meters_created) == (1, 1, 1)
    period = MeterPeriod.objects.get()
    assert (period.meter_id, period.value, period.record_count) == (None, 6, 2)
    meter = meter_of(meter_type)
    assert meter.pk != old.pk
    # A new meter: its first period runs from its creation to the next fire.
    assert (meter.period_start, meter.period_end, meter.value) == (later, END + (END - START), 2)


# -- Thresholds ------------------------------------------------------------------------


def test_thresholds_fire_once_per_period(acme):
    meter_type = make_type(acme.operator, aggregation=SUM, thresholds=[{"value": 10}])
    first = usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "6")])
    second = usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "6")])
    third = usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "6")])
    assert (len(first.alerts), len(second.alerts), len(third.alerts)) == (0, 1, 0)
    alert = Alert.objects.get()
    assert (alert.meter_value, alert.period_start) == (12, NOW)


@pytest.mark.parametrize(
    "type_thresholds, meter_thresholds, fired",
    [([{"value": 1}], [], 0), ([], [{"value": 1}], 1), ([{"value": 1}], None, 1)],
)
def test_a_meters_own_thresholds_replace_its_types(acme, type_thresholds, meter_thresholds, fired):
    meter_type = make_type(acme.operator, aggregation=SUM, thresholds=type_thresholds)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "0")])
    Meter.objects.update(thresholds=stored(meter_thresholds))
    result = usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "5")])
    assert len(result.alerts) == Alert.objects.count() == fired


def test_a_late_record_never_fires_the_current_periods_threshold(acme):
    meter_type = make_type(acme.operator, aggregation=SUM, thresholds=[{"value": 10}])
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "5")])
    meter = counting_since_before_today(meter_type)
    yesterday = START - datetime.timedelta(days=1)
    closed_period(meter, yesterday, START, value=Decimal(1), record_count=1)
    result = usage_apply(
        operator=acme.operator,
        now=NOW,
        updates=[update(meter_type, "100", at=yesterday + datetime.timedelta(hours=1))],
    )
    assert result.late_applied == 1 and result.alerts == []
    assert not Alert.objects.exists()
    meter.refresh_from_db()
    assert meter.value == 5


# -- Queries ---------------------------------------------------------------------------


def mixed_batch(meter_types, size: int, late_at, fresh="") -> list[UsageUpdate]:
    """Existing meters and (with keys prefixed by `fresh`) new ones, groups, records,
    late records and a category."""
    updates = []
    for i in range(size):
        meter_type = meter_types[i % len(meter_types)]
        at = late_at if i % 7 == 0 else minutes(i % 60)
        key = f"k{i % 13}" if i % 2 else f"{fresh}k{i % 13}"
        updates.append(
            update(meter_type, str(i), at=at, key=key, user=f"u{i % 17}", record={"i": i})
        )
    updates.append(UsageUpdate(None, "api", "k1", "u1", Decimal(1), NOW))
    return updates


def test_query_count_does_not_depend_on_the_batch_size(acme, django_assert_max_num_queries):
    meter_types = [
        make_type(acme.operator, name=str(agg), aggregation=agg, category="api", thresholds=t)
        for agg, t in [(SUM, [{"value": 1}]), (INCREMENT, []), (MAX, []), (MIN, [])]
    ]
    yesterday = START - datetime.timedelta(days=1)
    late_at = yesterday + datetime.timedelta(hours=2)
    usage_apply(operator=acme.operator, now=NOW, updates=mixed_batch(meter_types, 20, late_at))
    for meter in Meter.objects.all():
        closed_period(meter, yesterday, START)

    counts = []
    for size in (20, 400):
        # New meters each time, so creation is part of both counts.
        updates = mixed_batch(meter_types, size, late_at, fresh=f"n{size}-")
        with CaptureQueriesContext(connection) as queries:
            result = usage_apply(operator=acme.operator, now=NOW, updates=updates)
        assert result.meters_created and result.late_applied and result.alerts
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    with django_assert_max_num_queries(counts[1]):
        usage_apply(
            operator=acme.operator,
            now=NOW,
            updates=mixed_batch(meter_types, 1000, late_at, fresh="n1000-"),
        )


# -- The property: any sequence of batches equals a plain Python fold ------------------


def python_model(aggregation, batches):
    """The meter's state after these batches, computed the obvious way."""
    value, groups, count = None, {}, 0
    first = last = None  # (event time, record)
    for batch in batches:
        for amount, group, at, record in batch:
            amount = Decimal(1) if aggregation == INCREMENT else amount
            if aggregation in (SUM, INCREMENT):
                value = amount if value is None else value + amount
                if group is not None:
                    groups[group] = groups.get(group, 0) + amount
            else:
                pick = max if aggregation == MAX else min
                value = amount if value is None else pick(value, amount)
                if group is not None:
                    groups[group] = pick(groups[group], amount) if group in groups else amount
            count += 1
            if first is None or at < first[0]:
                first = (at, record)
            if last is None or at >= last[0]:
                last = (at, record)
    return value, groups, count, first, last


amounts = st.decimals(
    min_value=Decimal("-1000000"),
    max_value=Decimal("1000000"),
    places=4,
    allow_nan=False,
    allow_infinity=False,
)
offsets = st.integers(min_value=0, max_value=24 * 3600 * 1000 - 1)  # ms into the period
entries = st.tuples(amounts, st.sampled_from([None, "a", "b", "c"]), offsets)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    aggregation=st.sampled_from([SUM, INCREMENT, MAX, MIN]),
    raw_batches=st.lists(st.lists(entries, min_size=1, max_size=15), min_size=1, max_size=4),
)
def test_any_sequence_of_batches_matches_a_plain_python_model(acme, aggregation, raw_batches):
    # One meter type per aggregation across the examples of this run.
    meter_type = MeterType.objects.filter(
        operator=acme.operator, name=f"prop-{aggregation}"
    ).first() or make_type(acme.operator, name=f"prop-{aggregation}", aggregation=aggregation)
    key = uuid.uuid4().hex[:20]  # a fresh meter for every example
    batches, n = [], 0
    for raw in raw_batches:
        batch = []
        for amount, group, offset in raw:
            at = START + datetime.timedelta(milliseconds=offset)
            batch.append((amount, group, at, {"i": n}))
            n += 1
        batches.append(batch)
        usage_apply(
            operator=acme.operator,
            now=NOW,
            updates=[
                UsageUpdate(meter_type.pk, None, key, "prop", a, at, group, record)
                for a, group, at, record in batch
            ],
        )
    value, groups, count, first, last = python_model(aggregation, batches)
    meter = meter_of(meter_type, key=key, user="prop")
    assert meter.value == value
    assert breakdowns(meter) == groups
    assert meter.record_count == count
    assert (meter.first_event_at, meter.carry_first) == first
    assert (meter.last_event_at, meter.carry_last) == last
    # Created at NOW, it takes the records from earlier in the day too.
    assert (meter.period_start, meter.period_end) == (NOW, END)
