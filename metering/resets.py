"""Resets: closing meters' periods when their cron fires.

A meter's period runs from `period_start` to `period_end` (two consecutive fires of its
type's cron, in the type's timezone; see metering/schedule.py for DST). Once
`period_end` has passed, the period is stored as a `MeterPeriod`, announced with a
`meter.period_closed` notification, and the meter starts again from zero in the next
period (or is deleted, when `delete_on_reset`).

Exactly once, whoever runs it: the caller holds the meters' row locks, a period is only
closed while `period_end <= now` on the locked row, and MeterPeriod's unique
(meter, period_start) would refuse a second copy anyway.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from cronsim import CronSimError
from django.db import connection, transaction
from django.utils import timezone

from metering.models import Meter, MeterPeriod, MeterType, Notification
from metering.notifications import notifications_sweep_on_commit
from metering.schedule import next_fire

logger = logging.getLogger(__name__)

# Meters closed per transaction: large enough to amortise each statement, small enough
# that usage waiting on a locked meter waits well under a second.
BATCH_SIZE = 1000

# Aggregations for which an empty period has no value (rather than zero).
NO_VALUE_WHEN_EMPTY = {MeterType.Aggregation.MAX, MeterType.Aggregation.MIN}


# Called with the ids of the periods a reset closes, in its transaction, after they are
# stored: the stream runtime queues them for its meter nodes' `reset` outputs.
_period_listeners: list = []


def period_listener_add(listener) -> None:
    if listener not in _period_listeners:
        _period_listeners.append(listener)


@dataclass
class ResetOutcome:
    """What `meters_close_periods` did: periods stored, and meters deleted on reset."""

    periods_closed: int = 0
    deleted_ids: set = field(default_factory=set)


def meters_close_periods(*, meters: Sequence[Meter], now: datetime.datetime) -> ResetOutcome:
    """Close every period of these meters that ended at or before `now`.

    The meters must be locked by the caller (select_for_update, inside its transaction)
    and have `meter_type` loaded. The in-memory instances are moved along too, so a
    caller can go on applying usage to them; meters deleted on reset are listed in the
    outcome (their instances keep their pk but no longer exist).

    1. For each meter, while its period has ended: record the period and its
       notification, then start the next period from zero. A meter that missed several
       periods closes each one, empty ones included. A `delete_on_reset` meter closes
       its period and is deleted.
    2. Write it all in bulk: one COPY of periods, one of notifications, one UPDATE of
       the meters, one DELETE. (100,000 meters are a routine hourly reset, so rows go
       in by COPY rather than as model instances.)
    """
    outcome = ResetOutcome()
    closes: list[tuple] = []  # (meter id, period id, start, end, first of this meter's?)
    moved: list[Meter] = []
    fires: dict[tuple[str, str, datetime.datetime], datetime.datetime] = {}
    closed_at = timezone.now()

    # 1. Walk each meter through its ended periods.
    for meter in meters:
        meter_type = meter.meter_type
        first = True
        while meter.period_end <= now:
            next_end = None
            if not meter.delete_on_reset:
                # Many meters share a schedule and a period end: compute each fire once.
                key = (meter_type.reset_cron, meter_type.timezone, meter.period_end)
                if key not in fires:
                    fires[key] = _next_fire(*key)
                next_end = fires[key]
                if next_end is None:  # a schedule that cannot be read: leave it as is
                    break
            closes.append((meter.pk, uuid.uuid4(), meter.period_start, meter.period_end, first))
            if meter.delete_on_reset:
                outcome.deleted_ids.add(meter.pk)
                break
            meter.period_start, meter.period_end = meter.period_end, next_end
            meter.value = Decimal(0)
            meter.group_breakdowns = {}
            meter.carry_first = meter.carry_last = None
            meter.record_count = 0
            meter.first_event_at = meter.last_event_at = None
            meter.updated_at = closed_at
            first = False
        if not first and meter.pk not in outcome.deleted_ids:
            moved.append(meter)

    # 2. Write in bulk: periods and their notifications first (they read the meters'
    # stored values), then the meters' new periods.
    if closes:
        _periods_close(closes, outcome.deleted_ids, closed_at)
        notifications_sweep_on_commit()
        period_ids = [close[1] for close in closes]
        for listener in _period_listeners:
            listener(period_ids)
    if moved:
        _meters_move(moved, closed_at)
    if outcome.deleted_ids:
        # Periods and alerts survive: their meter link is set to NULL.
        Meter.objects.filter(pk__in=outcome.deleted_ids).delete()
    outcome.periods_closed = len(closes)
    return outcome


def meters_reset_due(*, now: datetime.datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Close the ended periods of every due meter; returns how many periods were closed.

    Batches of due meters are each locked and closed in their own transaction. Locked
    rows are skipped, so several workers (or a retried task) share the work without
    waiting on each other, and a row is re-checked against `period_end <= now` when its
    lock is taken, so a period another worker just closed is not closed again. (Taking
    the rows in period_end order rather than by id is safe: a SKIP LOCKED select never
    waits, so it cannot deadlock; and it reads the index without sorting every due row.)
    """
    now = now or timezone.now()
    meter_types: dict = {}
    closed = 0
    while True:
        with transaction.atomic():
            batch = list(
                Meter.objects.due_for_reset(now)
                .only(*_CLOSE_FIELDS)
                .select_for_update(skip_locked=True)
                .order_by("period_end")[:batch_size]
            )
            if not batch:
                break
            _attach_meter_types(batch, meter_types)
            closed_now = meters_close_periods(meters=batch, now=now).periods_closed
        closed += closed_now
        # Done when the due rows run out, or when none of a full batch could be closed
        # (every one has a broken schedule; taking them again would loop forever).
        if len(batch) < batch_size or not closed_now:
            break
    return closed


def _next_fire(cron: str, timezone_name: str, after: datetime.datetime):
    """The next fire, or None (logged) when the stored schedule cannot be evaluated: one
    broken meter type must not stop every other meter's reset."""
    try:
        return next_fire(cron, timezone_name, after)
    except (CronSimError, ValueError, StopIteration):
        logger.exception("Cannot evaluate reset schedule %r in %r.", cron, timezone_name)
        return None


# What closing a period reads in Python (the values are copied inside PostgreSQL).
_CLOSE_FIELDS = ("meter_type_id", "delete_on_reset", "period_start", "period_end")


def _attach_meter_types(meters: list[Meter], cache: dict) -> None:
    """Load each meter type once per run instead of joining it onto every meter."""
    missing = {meter.meter_type_id for meter in meters} - cache.keys()
    if missing:
        cache.update(MeterType.objects.in_bulk(missing))
    for meter in meters:
        meter.meter_type = cache[meter.meter_type_id]


_PERIOD_COLUMNS = (
    "id",
    "operator_id",
    "meter_id",
    "meter_type_id",
    "meter_key",
    "user_id",
    "period_start",
    "period_end",
    "value",
    "group_breakdowns",
    "carry_first",
    "carry_last",
    "record_count",
    "first_event_at",
    "last_event_at",
)


# Closing a batch is one statement. The period rows are copied from the locked meter
# rows inside PostgreSQL (the first period a meter closes takes its values; further
# missed periods are empty), and each period's `meter.period_closed` notification is
# built from the inserted row with jsonb_build_object, so 100,000 meters never travel
# through Python as JSON. Times are ISO 8601 UTC with milliseconds and quantities exact
# JSON numbers, as in the API; group values (decimal strings) become numbers too.
_CLOSE_SQL = f"""
WITH closing AS (
    SELECT * FROM unnest(%(meter_ids)s::uuid[], %(period_ids)s::uuid[],
                         %(starts)s::timestamptz[], %(ends)s::timestamptz[],
                         %(firsts)s::boolean[], %(deleted)s::boolean[])
        AS c(meter_id, period_id, period_start, period_end, first, deleted)
),
periods AS (
    INSERT INTO {MeterPeriod._meta.db_table} (
        id, operator_id, meter_id, meter_type_id, meter_key, user_id, period_start,
        period_end, value, group_breakdowns, carry_first, carry_last, record_count,
        first_event_at, last_event_at, closed_at)
    SELECT c.period_id, m.operator_id, m.id, m.meter_type_id, m.meter_key, m.user_id,
           c.period_start, c.period_end,
           CASE WHEN c.first THEN m.value ELSE 0 END,
           CASE WHEN c.first THEN m.group_breakdowns ELSE '{{}}'::jsonb END,
           CASE WHEN c.first THEN m.carry_first END,
           CASE WHEN c.first THEN m.carry_last END,
           CASE WHEN c.first THEN m.record_count ELSE 0 END,
           CASE WHEN c.first THEN m.first_event_at END,
           CASE WHEN c.first THEN m.last_event_at END,
           %(closed_at)s
    FROM closing c
    JOIN {Meter._meta.db_table} m ON m.id = c.meter_id
    -- Repeating the ids lets PostgreSQL find the meters by primary key instead of
    -- hashing the whole table for the join.
    WHERE m.id = ANY(%(meter_ids)s::uuid[])
    RETURNING *
)
INSERT INTO {Notification._meta.db_table} (
    id, operator_id, kind, payload, status, attempts, next_attempt_at, created_at)
SELECT gen_random_uuid(), p.operator_id, %(kind)s, jsonb_build_object(
        'periodId', p.id,
        'meterId', p.meter_id,
        'meterTypeId', p.meter_type_id,
        'meterTypeName', t.name,
        'userId', p.user_id,
        'meterKey', p.meter_key,
        'periodStart', to_char(p.period_start AT TIME ZONE 'UTC', %(iso)s),
        'periodEnd', to_char(p.period_end AT TIME ZONE 'UTC', %(iso)s),
        'value', CASE WHEN p.record_count = 0 AND t.aggregation = ANY(%(no_value)s)
                      THEN NULL ELSE trim_scale(p.value) END,
        'groupBreakdowns', (
            SELECT coalesce(jsonb_object_agg(g.key, CASE
                WHEN jsonb_typeof(g.value) = 'string' AND g.value #>> '{{}}' ~ %(number)s
                THEN to_jsonb(trim_scale((g.value #>> '{{}}')::numeric))
                ELSE g.value END), '{{}}'::jsonb)
            FROM jsonb_each(p.group_breakdowns) AS g),
        'carryFirst', p.carry_first,
        'carryLast', p.carry_last,
        'recordCount', p.record_count,
        'meterDeleted', c.deleted),
    %(pending)s, 0, %(closed_at)s, %(closed_at)s
FROM periods p
JOIN closing c ON c.period_id = p.id
JOIN {MeterType._meta.db_table} t ON t.id = p.meter_type_id
"""  # noqa: S608 (table names are ours, values are parameters)


def _periods_close(closes: list[tuple], deleted_ids: set, closed_at: datetime.datetime) -> None:
    """Store the periods and queue their notifications: one statement. A second close
    of the same period would violate the unique (meter, period_start) and roll the whole
    batch back."""
    meter_ids, period_ids, starts, ends, firsts = (
        list(column) for column in zip(*closes, strict=True)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _CLOSE_SQL,
            {
                "meter_ids": meter_ids,
                "period_ids": period_ids,
                "starts": starts,
                "ends": ends,
                "firsts": firsts,
                "deleted": [meter_id in deleted_ids for meter_id in meter_ids],
                "closed_at": closed_at,
                "kind": Notification.Kind.PERIOD_CLOSED.value,
                "pending": Notification.Status.PENDING.value,
                "iso": 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"',
                "no_value": sorted(NO_VALUE_WHEN_EMPTY),
                "number": r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$",
            },
        )


def _meters_move(meters: list[Meter], updated_at: datetime.datetime) -> None:
    """Start the meters' new periods, everything else zeroed: one UPDATE per distinct
    new period (a batch of a mass reset shares one), each finding its rows by primary
    key. (A join against an unnest of ids is planned as a scan of the whole table.)"""
    by_period: dict[tuple, list] = defaultdict(list)
    for meter in meters:
        by_period[meter.period_start, meter.period_end].append(meter.pk)
    with connection.cursor() as cursor:
        for (period_start, period_end), ids in by_period.items():
            cursor.execute(
                f"""
                UPDATE {Meter._meta.db_table}
                SET value = 0, group_breakdowns = '{{}}'::jsonb, carry_first = NULL,
                    carry_last = NULL, record_count = 0, first_event_at = NULL,
                    last_event_at = NULL, period_start = %s, period_end = %s,
                    updated_at = %s
                WHERE id = ANY(%s::uuid[])
                """,  # noqa: S608 (the table name is ours, values are parameters)
                [period_start, period_end, updated_at, ids],
            )
