"""Applying usage: the one place where meter values change.

The stream runtime calls `usage_apply` with a batch of updates (one per record and meter
node). The whole batch is applied in one transaction with a number of queries that does
not depend on the batch size:

1. resolve the meter types (one query) and drop updates outside `activeFrom`/`activeTo`;
2. create missing meters in bulk, then lock every touched meter in id order;
3. close the periods of meters whose period has ended (`metering.resets`);
4. split late updates (event time before the meter's current period, once it has had a
   reset: a meter's first period also takes what happened before its creation) from
   current ones;
5. fold the batch per meter in Python, with exact decimals;
6. correct the closed periods that late updates belong to (one UPDATE, see `_MERGE`, and
   one `meter.period_corrected` notification per period, in one INSERT);
7. apply every meter's change the same way, in one UPDATE, which combines it with the
   stored value, breakdowns, carries and metadata;
8. attribute what counted to billing accounts and pricing cycles and price it
   (`metering.revenue`), then add it to the hourly rollups, per customer and account
   and per meter type, in two upserts (pipelined with 7);
9. evaluate thresholds for meters that changed in their current period.

Concurrency: all inserts (customers, meters) happen before any meter row lock is held,
inserts run in one global key order, and meters are locked in id order, so two callers
touching the same meters serialize instead of deadlocking, and each adds its change to
the value the other committed: no update is lost.

Bulk rows travel to PostgreSQL as one JSON document per statement, bound on the server
(`_bulk_cursor`) and unpacked with `json_to_recordset(...) AS v(id uuid, value numeric,
…)`. That column list is the typed cast of an `UPDATE … FROM (VALUES …)`; one parameter
instead of thousands keeps binding cheap, and `json` is only lexed where `jsonb` would
be parsed and stored first. Records and group breakdowns stay `json` until a row uses
them. Decimals are written with their own digits (msgspec), which `numeric` reads as
text: they stay exact, and jsonb numbers are never involved.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from functools import reduce
from uuid import UUID

import msgspec
import psycopg
from django.db import connection, transaction
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper
from django.db.models import Q
from django.utils import timezone

from common.ids import uuid_or_none
from common.json import encode
from metering.aggregation import ADD, KIND, MAX, MIN, combine
from metering.models import Alert, Meter, MeterPeriod, MeterType, Notification
from metering.models import UsageRollup as Rollup
from metering.models import UsageTypeRollup as TypeRollup
from metering.notifications import NotificationItem, notifications_enqueue_many
from metering.resets import meters_close_periods
from metering.revenue import Accrual, accounts_find, revenue_accrue
from metering.schedule import next_fire
from metering.services import customers_ensure
from metering.thresholds import thresholds_evaluate
from tenants.models import Operator

ONE = Decimal(1)
ZERO = Decimal(0)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_HOUR = datetime.timedelta(hours=1)
# numeric(38, 10) holds 38 digits; sums of such values need a few more while folding.
_CONTEXT = Context(prec=80)
# How the batch combines with a value (metering.aggregation).
_ADD, _MAX, _MIN, _KIND, _combine = ADD, MAX, MIN, KIND, combine

_METER = Meter._meta.db_table
_PERIOD = MeterPeriod._meta.db_table
_ROLLUP = Rollup._meta.db_table
_TYPE_ROLLUP = TypeRollup._meta.db_table


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    """One record's contribution to one meter node: a meter type (or every meter type of
    a category), the meter key and user id that pick the meter, and the value."""

    meter_type_id: UUID | None
    category: str | None
    meter_key: str
    user_id: str
    value: Decimal  # ignored for Increment, which counts 1
    event_time: datetime.datetime  # aware
    group: str | None = None
    record: dict | None = None
    account_id: str | None = None  # the record's accountId, if it names one

    def __post_init__(self) -> None:
        if (self.meter_type_id is None) == (self.category is None):
            raise ValueError("A usage update names a meter type or a category, not both.")
        if self.event_time.tzinfo is None:
            raise ValueError("A usage update's event time must be timezone-aware.")
        if not isinstance(self.value, Decimal):
            if isinstance(self.value, bool | float) or not isinstance(self.value, int):
                raise TypeError(f"Usage values are Decimal, not {type(self.value).__name__}.")
            object.__setattr__(self, "value", Decimal(self.value))


@dataclass
class UsageApplyResult:
    """What one call did. Counts are per (update, meter type): a category update counts
    once for each meter type it reaches."""

    applied: int = 0  # counted in a meter's current period
    ignored_inactive: int = 0  # the meter type was not active at the event time
    ignored_unknown: int = 0  # no meter type of this operator matched
    late_applied: int = 0  # corrected a closed period
    late_unmatched: int = 0  # before the current period, but no stored period holds it
    meters_created: int = 0
    alerts: list[Alert] = field(default_factory=list)


def usage_apply(
    *,
    operator: Operator,
    updates: Sequence[UsageUpdate],
    now: datetime.datetime | None = None,
) -> UsageApplyResult:
    """Apply a batch of usage updates to the operator's meters, in one transaction.

    Creates missing meters, folds the batch per meter (Sum adds, Increment counts,
    Max/Min keep the extreme), keeps group breakdowns, carries and metadata, corrects
    closed periods with late records (and queues `meter.period_corrected`), writes the
    hourly rollups and evaluates thresholds of meters that changed in this period.
    """
    now = now or timezone.now()
    result = UsageApplyResult()
    if not updates:
        return result
    with transaction.atomic(), localcontext(_CONTEXT):
        # 1. Meter types, and which updates they take.
        types = _types_resolve(operator, updates)
        items = _items_expand(updates, types, result)
        if not items:
            return result

        # 2. Meters: create the missing ones, then lock all of them in id order.
        keys = {(item.type.key, item.update.meter_key, item.update.user_id) for item in items}
        rows = _meters_lock(operator, types, keys, now, result)

        # 3. Meters whose period has ended are closed first, so usage lands in the period
        # it belongs to; a meter deleted on reset is created again.
        due = [row for row in rows.values() if row.period_end <= now]
        if due:
            meters = Meter.objects.filter(id__in=[row.id for row in due])
            meters_close_periods(
                meters=list(meters.select_related("meter_type").order_by("id")), now=now
            )
            due_keys = {(row.type.key, row.meter_key, row.user_id) for row in due}
            rows.update(_meters_lock(operator, types, due_keys, now, result))

        # 4. Updates from before a meter's current period belong to the stored period
        # holding their event time. A meter's first period takes its own earlier ones
        # (usage from just before the meter existed); otherwise they are late. Only
        # when periods are stored for the meter's identity is there one to look up.
        current: list[_Item] = []
        early: list[tuple[_Item, _Row]] = []
        for item in items:
            update = item.update
            row = rows[(item.type.key, update.meter_key, update.user_id)]
            if update.event_time >= row.period_start or (row.first_period and not row.history):
                current.append(item)
            else:
                early.append((item, row))
        late: list[tuple[_Item, str | None]] = []
        if early:
            for (item, row), (holding, following) in zip(
                early, _periods_locate(operator, early), strict=True
            ):
                if holding is None and row.first_period:
                    current.append(item)
                else:
                    late.append((item, holding or following))

        # 5. Fold the current updates per meter.
        folds: dict[str, _Fold] = {}  # by meter id
        for item in current:
            update = item.update
            row = rows[(item.type.key, update.meter_key, update.user_id)]
            fold = folds.get(row.id)
            if fold is None:
                folds[row.id] = _Fold(item.type.kind, item)
            else:
                fold.add(item)
        result.applied = len(current)

        # 6. Late updates correct the closed period they belong to.
        matched = _periods_correct(operator, late, now, result) if late else []

        # 8. Everything that counted somewhere is priced in its pricing cycle (locking
        # the cycle rows, so before the pipeline), then 7. every meter's change in one
        # statement and 8. the hourly rollups in two more. Pipelined: the server applies
        # the meters' change while this process builds the rollups.
        counted = current + matched
        hints, users = set(), set()
        for item in counted:
            hint = item.update.account_id
            if hint:
                hints.add(hint)
            else:
                users.add(item.update.user_id)
        accruals = None
        accounts = accounts_find(operator, hints=hints, users=users) if counted else {}
        if accounts:
            accruals = [
                Accrual(
                    item.type.key,
                    item.type.kind,
                    item.update.user_id,
                    item.update.account_id,
                    item.value,
                    item.update.event_time,
                )
                for item in counted
            ]
            revenue_accrue(operator, accounts, accruals)
        with _pipeline():
            if folds:
                _meters_write(folds, now)
            _rollups_add(operator, types, counted, accruals)

        # 9. Thresholds, for meters that changed in their current period only: a late
        # record never fires this period's threshold.
        watched = [
            row.id
            for row in rows.values()
            if row.id in folds
            and (row.own_thresholds if row.own_thresholds is not None else row.type.thresholds)
        ]
        if watched:
            meters = Meter.objects.filter(id__in=watched).select_related("meter_type")
            result.alerts = thresholds_evaluate(meters=list(meters.order_by("id")), now=now)
    return result


# -- 1. Meter types -------------------------------------------------------------------


@dataclass(slots=True)
class _Type:
    """What the hot loop needs of a meter type."""

    meter_type: MeterType
    key: str  # the id as text, as it comes back from SQL
    kind: str
    increment: bool
    always_active: bool
    thresholds: bool
    first_end: datetime.datetime | None = None

    def first_period_end(self, now: datetime.datetime) -> datetime.datetime:
        """Where the first period of a meter created `now` ends: the next fire."""
        if self.first_end is None:
            self.first_end = next_fire(self.meter_type.reset_cron, self.meter_type.timezone, now)
        return self.first_end


@dataclass(slots=True)
class _Types:
    by_id: dict[UUID, _Type]
    by_key: dict[str, _Type]
    by_category: dict[str, list[_Type]]


def _types_resolve(operator: Operator, updates: Sequence[UsageUpdate]) -> _Types:
    """The operator's meter types the batch names, in one query. Ids of other operators'
    types simply find nothing."""
    ids: set[UUID] = set()
    categories: set[str] = set()
    for update in updates:
        if update.meter_type_id is not None:
            ids.add(update.meter_type_id)
        else:
            categories.add(update.category)
    found = MeterType.objects.filter(operator=operator).filter(
        Q(id__in=[u for u in map(uuid_or_none, ids) if u is not None]) | Q(category__in=categories)
    )
    types = _Types({}, {}, {})
    for meter_type in found.order_by("id"):
        entry = _Type(
            meter_type=meter_type,
            key=str(meter_type.id),
            kind=_KIND[meter_type.aggregation],
            increment=meter_type.aggregation == MeterType.Aggregation.INCREMENT,
            always_active=meter_type.active_from is None and meter_type.active_to is None,
            thresholds=bool(meter_type.thresholds),
        )
        types.by_id[meter_type.id] = entry
        types.by_key[entry.key] = entry
        if meter_type.category in categories:
            types.by_category.setdefault(meter_type.category, []).append(entry)
    # Callers may name a type by its id as text; look those up too.
    for value in ids:
        if not isinstance(value, UUID) and uuid_or_none(value) in types.by_id:
            types.by_id[value] = types.by_id[uuid_or_none(value)]
    return types


class _Item(msgspec.Struct, gc=False):
    """An update as it reaches one meter type, with the value it brings (1 for
    Increment)."""

    type: _Type
    update: UsageUpdate
    value: Decimal


def _items_expand(
    updates: Sequence[UsageUpdate], types: _Types, result: UsageApplyResult
) -> list[_Item]:
    """An item for every meter type an update reaches and that is active at its event
    time."""
    items = []
    by_id, by_category = types.by_id, types.by_category
    for update in updates:
        if update.meter_type_id is not None:
            found = by_id.get(update.meter_type_id)
            targets = (found,) if found is not None else ()
        else:
            targets = by_category.get(update.category, ())
        if not targets:
            result.ignored_unknown += 1
            continue
        for target in targets:
            if not target.always_active and not target.meter_type.is_active_at(update.event_time):
                result.ignored_inactive += 1
                continue
            items.append(_Item(target, update, ONE if target.increment else update.value))
    return items


# -- 2. Meters: create and lock --------------------------------------------------------


class _Row(msgspec.Struct, gc=False):
    """A locked meter: who it is and its current period. Its value is not needed here:
    the write statement combines the batch with the stored state."""

    id: str
    type: _Type
    meter_key: str
    user_id: str
    period_start: datetime.datetime
    period_end: datetime.datetime
    own_thresholds: bool | None  # None: the meter type's thresholds apply
    first_period: bool  # no reset yet: earlier event times count here too
    # In a first period: are closed periods stored for this identity (of a meter
    # deleted on reset)? Without them, the first period takes every earlier update
    # without looking any up. None after the first period.
    history: bool | None


def _meters_lock(
    operator: Operator,
    types: _Types,
    keys: set[tuple[str, str, str]],
    now: datetime.datetime,
    result: UsageApplyResult,
) -> dict[tuple[str, str, str], _Row]:
    """Lock the meters with these (type, key, user) identities in id order, creating the
    missing ones.

    No row lock may be held while inserting: two callers could otherwise each hold a
    meter the other needs while waiting for the other's new, uncommitted meter. So the
    lock runs in a savepoint; when meters are missing, it is rolled back (which gives
    those row locks back), the meters are inserted, and everything is locked again. In
    the common case (all meters exist) that is one SELECT … FOR UPDATE.
    """
    ordered = list(keys)
    wanted = _json([_Key(i, t, k, u) for i, (t, k, u) in enumerate(ordered)])
    for _attempt in range(3):
        savepoint = transaction.savepoint()
        rows = _meters_select_for_update(types, ordered, wanted)
        missing = keys.difference(rows)
        if not missing:
            transaction.savepoint_commit(savepoint)
            return rows
        transaction.savepoint_rollback(savepoint)
        result.meters_created += _meters_create(operator, types, missing, now)
    # Only if meters keep being deleted as fast as they are created.
    raise RuntimeError(f"Meters {sorted(missing)[:3]} keep disappearing; giving up.")


class _Key(msgspec.Struct, gc=False):
    """One meter identity of `_meters_select_for_update`'s JSON."""

    i: int  # the index in `ordered`
    t: str
    k: str
    u: str


def _meters_select_for_update(
    types: _Types, ordered: list[tuple[str, str, str]], wanted: str
) -> dict[tuple[str, str, str], _Row]:
    """Lock the meters of `wanted` (the keys of `ordered`, with their index) in id order."""
    with _bulk_cursor() as cursor:
        # A row names its key by index rather than repeating it. Periods come back as
        # text and are parsed once per distinct value: most meters of a type share
        # their period.
        cursor.execute(
            f"""
            SELECT k.i, m.id::text, m.period_start::text, m.period_end::text,
                   CASE WHEN m.thresholds IS NULL THEN NULL
                        ELSE m.thresholds NOT IN ('[]'::jsonb, 'null'::jsonb) END,
                   m.period_start <= m.created_at,
                   CASE WHEN m.period_start <= m.created_at THEN EXISTS (
                       SELECT FROM {_PERIOD} p
                       WHERE p.operator_id = m.operator_id
                         AND p.meter_type_id = m.meter_type_id
                         AND p.meter_key = m.meter_key AND p.user_id = m.user_id) END
            FROM {_METER} m
            JOIN json_to_recordset(%s::json) AS k(i int, t uuid, k text, u text)
              ON m.meter_type_id = k.t AND m.meter_key = k.k AND m.user_id = k.u
            ORDER BY m.id
            FOR UPDATE OF m
            """,  # noqa: S608 (table names are ours, values are parameters)
            [wanted],
        )
        found = cursor.fetchall()
    by_key, moments = types.by_key, {}
    rows = {}
    for index, meter_id, start, end, own, first, history in found:
        if start not in moments:
            moments[start] = datetime.datetime.fromisoformat(start)
        if end not in moments:
            moments[end] = datetime.datetime.fromisoformat(end)
        key = ordered[index]
        type_key, meter_key, user_id = key
        rows[key] = _Row(
            meter_id,
            by_key[type_key],
            meter_key,
            user_id,
            moments[start],
            moments[end],
            own,
            first,
            history,
        )
    return rows


def _meters_create(
    operator: Operator, types: _Types, keys: set[tuple[str, str, str]], now: datetime.datetime
) -> int:
    """Insert the meters that do not exist yet, each in its first period (from now to the
    schedule's next fire); the number actually inserted."""
    customers = customers_ensure(operator=operator, external_ids={u for _, _, u in keys})
    wanted = []
    for type_key, meter_key, user_id in keys:
        start, end = now, types.by_key[type_key].first_period_end(now)
        wanted.append(
            {
                "t": type_key,
                "k": meter_key,
                "u": user_id,
                "c": customers[user_id].pk,
                "s": start,
                "e": end,
            }
        )
    with _bulk_cursor() as cursor:
        # One global insert order (the unique key's) keeps concurrent creators from
        # waiting on each other in a circle.
        cursor.execute(
            f"""
            INSERT INTO {_METER} (
                id, operator_id, meter_type_id, customer_id, meter_key, user_id,
                custom_fields, delete_on_reset, value, group_breakdowns, record_count,
                period_start, period_end, created_at, updated_at
            )
            SELECT gen_random_uuid(), %s, k.t, k.c, k.k, k.u, '{{}}', false, 0, '{{}}', 0,
                   k.s, k.e, %s, %s
            FROM json_to_recordset(%s::json)
                 AS k(t uuid, k text, u text, c uuid, s timestamptz, e timestamptz)
            ORDER BY k.t, k.k, k.u
            ON CONFLICT (meter_type_id, meter_key, user_id) DO NOTHING
            """,  # noqa: S608 (table names are ours, values are parameters)
            [operator.pk, now, now, _json(wanted)],
        )
        return cursor.rowcount


# -- 5. Folding ------------------------------------------------------------------------


class _Fold(msgspec.Struct, gc=False):
    """A batch's updates for one target (a meter's current period or a closed period),
    folded all at once by `change` with builtins (min, max, reduce), which costs a
    fraction of combining them one by one in Python.

    This and the other per-row structs here are left out of the garbage collector
    (`gc=False`: they never form cycles). A batch creates thousands of them, and
    tracked, they made CPython run full collections every few batches.
    """

    kind: str
    # One item, as for most targets of a batch spread over many, or a list of them.
    items: _Item | list[_Item]

    def add(self, item: _Item) -> None:
        if isinstance(self.items, list):
            self.items.append(item)
        else:
            self.items = [self.items, item]

    @property
    def count(self) -> int:
        return len(self.items) if isinstance(self.items, list) else 1

    def change(self, target_id: str) -> _Change:
        """The batch's contribution, as the write statements take it (see _MERGE)."""
        kind, items = self.kind, self.items
        if not isinstance(items, list):
            first = last = items
            value = items.value
            items = (items,)
        else:
            # The first of equal event times stays first; the later of equals is last.
            first = min(items, key=_event_time)
            last = max(reversed(items), key=_event_time)
            value = _fold_values(kind, [item.value for item in items])
        groups: dict[str, Decimal] = {}
        for item in items:
            group = item.update.group
            if group is not None:
                groups[group] = _combine(kind, groups.get(group), item.value)
        return _Change(
            target_id,
            kind,
            value,
            len(items),
            _texts(groups) if groups else None,
            first.update.event_time,
            first.update.record,
            last.update.event_time,
            last.update.record,
        )


class _Change(msgspec.Struct, gc=False):
    """One row of `_CHANGES`. msgspec writes a Decimal's own digits and a datetime to
    the microsecond."""

    id: str
    k: str  # the kind: _ADD, _MAX or _MIN
    v: Decimal
    n: int  # records
    g: dict[str, str] | None  # group breakdowns
    fa: datetime.datetime  # first event time, and its record
    cf: dict | None
    la: datetime.datetime  # last event time, and its record
    cl: dict | None


def _event_time(item: _Item) -> datetime.datetime:
    return item.update.event_time


def _fold_values(kind: str, values: list[Decimal]) -> Decimal:
    """The values of one target combined in one go. max() and min() return the first of
    equal values, as combining them one by one in order does."""
    if kind == _ADD:
        return reduce(Decimal.__add__, values)
    return max(values) if kind == _MAX else min(values)


def _texts(values: dict[str, Decimal]) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


# -- 6. Closed periods and 7. meters: writing ------------------------------------------

# How a batch's change `v` combines with a stored meter or period `t` (old values: in an
# UPDATE every expression reads the row as it was). Nothing stored yet (no records): the
# batch's value is the value, and its first and last records are the carries. A period
# closed without event times has records but unknown times: its carries stay.
_MERGE = """
    value = CASE WHEN t.record_count = 0 THEN v.v
                 WHEN v.k = 'add' THEN t.value + v.v
                 WHEN v.k = 'max' THEN GREATEST(t.value, v.v)
                 ELSE LEAST(t.value, v.v) END,
    group_breakdowns = CASE WHEN v.g IS NULL THEN t.group_breakdowns
        ELSE t.group_breakdowns || (
            SELECT jsonb_object_agg(g.key, (
                CASE WHEN NOT t.group_breakdowns ? g.key THEN g.value::numeric
                     WHEN v.k = 'add' THEN (t.group_breakdowns->>g.key)::numeric + g.value::numeric
                     WHEN v.k = 'max'
                         THEN GREATEST((t.group_breakdowns->>g.key)::numeric, g.value::numeric)
                     ELSE LEAST((t.group_breakdowns->>g.key)::numeric, g.value::numeric) END
            )::text)
            FROM jsonb_each_text(v.g::jsonb) AS g) END,
    carry_first = CASE WHEN t.record_count = 0 OR v.fa < t.first_event_at
                       THEN v.cf::jsonb ELSE t.carry_first END,
    first_event_at = CASE WHEN t.record_count = 0 OR v.fa < t.first_event_at
                          THEN v.fa ELSE t.first_event_at END,
    carry_last = CASE WHEN t.record_count = 0 OR v.la >= t.last_event_at
                      THEN v.cl::jsonb ELSE t.carry_last END,
    last_event_at = CASE WHEN t.record_count = 0 OR v.la >= t.last_event_at
                         THEN v.la ELSE t.last_event_at END,
    record_count = t.record_count + v.n
"""
# Groups and records stay `json` until a row uses them: turning every record into jsonb
# up front took most of the statement's time, and most carries are not replaced.
_CHANGES = """json_to_recordset(%s::json) AS v(
    id uuid, k text, v numeric, n bigint, g json, fa timestamptz, cf json, la timestamptz,
    cl json)"""


def _meters_write(folds: dict[str, _Fold], now: datetime.datetime) -> None:
    changes = [fold.change(meter_id) for meter_id, fold in folds.items()]
    with _bulk_cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_METER} AS t SET {_MERGE}, updated_at = %s
            FROM {_CHANGES}
            WHERE t.id = v.id
            """,  # noqa: S608 (table names are ours, values are parameters)
            [now, _json(changes)],
        )


def _periods_locate(
    operator: Operator, early: list[tuple[_Item, _Row]]
) -> list[tuple[str | None, str | None]]:
    """For each update, the id of the stored period holding its event time and of the
    first period after it (either may be None), in one query.

    Periods are found by identity rather than meter id: the periods of a meter deleted
    on reset are kept (with meter_id NULL) and still take their late records. A meter's
    periods run fire to fire without gaps, so the period after an event time that no
    period holds is the first period of a meter, which takes earlier records too.
    """
    wanted = _json(
        [
            {
                "i": i,
                "y": item.type.key,
                "k": item.update.meter_key,
                "u": item.update.user_id,
                "t": item.update.event_time,
            }
            for i, (item, _) in enumerate(early)
        ]
    )
    identity = """p.operator_id = %(operator)s AND p.meter_type_id = l.y
                  AND p.meter_key = l.k AND p.user_id = l.u"""
    with _bulk_cursor() as cursor:
        cursor.execute(
            f"""
            SELECT l.i, c.id::text, n.id::text
            FROM json_to_recordset(%(early)s::json)
                 AS l(i int, y uuid, k text, u text, t timestamptz)
            LEFT JOIN LATERAL (
                SELECT p.id, p.period_end FROM {_PERIOD} p
                WHERE {identity} AND p.period_start <= l.t
                ORDER BY p.period_start DESC LIMIT 1
            ) c ON c.period_end > l.t
            LEFT JOIN LATERAL (
                SELECT p.id FROM {_PERIOD} p
                WHERE {identity} AND p.period_start > l.t
                ORDER BY p.period_start LIMIT 1
            ) n ON true
            """,  # noqa: S608 (table names are ours, values are parameters)
            {"early": wanted, "operator": operator.pk},
        )
        found = {index: (holding, following) for index, holding, following in cursor}
    return [found[index] for index in range(len(early))]


def _periods_correct(
    operator: Operator,
    late: list[tuple[_Item, str | None]],
    now: datetime.datetime,
    result: UsageApplyResult,
) -> list[_Item]:
    """Fold late updates into the closed periods `_periods_locate` found for them;
    returns the updates that had one. One `meter.period_corrected` notification per
    period."""
    with _bulk_cursor() as cursor:
        # Locked in id order, like the meters.
        cursor.execute(
            f"""
            SELECT id::text, value, record_count FROM {_PERIOD}
            WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE
            """,  # noqa: S608 (table names are ours, values are parameters)
            [sorted({period_id for _, period_id in late if period_id is not None})],
        )
        found = cursor.fetchall()
    before = {period_id: (value, count) for period_id, value, count in found}
    folds: dict[str, _Fold] = {}
    matched = []
    for item, period_id in late:
        if period_id is None:
            result.late_unmatched += 1
            continue
        fold = folds.get(period_id)
        if fold is None:
            folds[period_id] = _Fold(item.type.kind, item)
        else:
            fold.add(item)
        matched.append(item)
    result.late_applied = len(matched)
    if not folds:
        return matched

    changes = [fold.change(period_id) for period_id, fold in folds.items()]
    with _bulk_cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_PERIOD} AS t SET {_MERGE}, corrected_at = %s
            FROM {_CHANGES}
            WHERE t.id = v.id
            """,  # noqa: S608 (table names are ours, values are parameters)
            [now, _json(changes)],
        )
    corrected = MeterPeriod.objects.filter(id__in=list(folds)).order_by("period_start", "id")
    notifications_enqueue_many(
        NotificationItem(
            operator.pk,
            Notification.Kind.PERIOD_CORRECTED,
            {
                "periodId": period.id,
                "meterId": period.meter_id,
                "meterTypeId": period.meter_type_id,
                "meterKey": period.meter_key,
                "userId": period.user_id,
                "periodStart": period.period_start,
                "periodEnd": period.period_end,
                "previousValue": before[str(period.id)][0],
                "value": period.value,
                "previousRecordCount": before[str(period.id)][1],
                "recordCount": period.record_count,
                "groupBreakdowns": {g: Decimal(v) for g, v in period.group_breakdowns.items()},
                "lateRecords": folds[str(period.id)].count,
                "correctedAt": now,
            },
        )
        for period in corrected
    )
    return matched


# -- 8. Rollups ------------------------------------------------------------------------


class _Bucket(msgspec.Struct, gc=False):
    """One hourly rollup row of `_rollups_add`'s JSON, folded as the batch is read."""

    t: str  # meter type
    u: str  # user ("" in the per-type rollup)
    a: str  # account ("" in the per-type rollup)
    h: int  # hours since the epoch
    v: Decimal
    r: Decimal  # revenue
    n: int  # records


# Max/Min buckets keep the extreme, Sum/Increment ones add; revenue and counts add.
_ROLLUP_MERGE = """
    value = CASE
        WHEN r.meter_type_id = ANY(%s::uuid[]) THEN GREATEST(r.value, EXCLUDED.value)
        WHEN r.meter_type_id = ANY(%s::uuid[]) THEN LEAST(r.value, EXCLUDED.value)
        ELSE r.value + EXCLUDED.value
    END,
    revenue = r.revenue + EXCLUDED.revenue,
    record_count = r.record_count + EXCLUDED.record_count
"""


def _rollups_add(
    operator: Operator, types: _Types, items: list[_Item], accruals: list[Accrual] | None
) -> None:
    """Add the updates that counted (current ones and late ones that corrected a period)
    to the hourly buckets of their event times: (customer, meter type, account, hour)
    and (meter type, hour), with the revenue each one earned (`accruals`, in the order
    of `items`; None: no billing account was reached, so the records' accountIds and no
    revenue)."""
    buckets: dict[tuple[str, str, str, int], _Bucket] = {}
    for index, item in enumerate(items):
        update = item.update
        hour = (update.event_time - _EPOCH) // _HOUR
        if accruals is None:
            account, revenue = update.account_id or "", ZERO
        else:
            accrual = accruals[index]
            account, revenue = accrual.account_key, accrual.revenue
        key = (item.type.key, update.user_id, account, hour)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = _Bucket(key[0], key[1], account, hour, item.value, revenue, 1)
        else:
            bucket.v = _combine(item.type.kind, bucket.v, item.value)
            bucket.r += revenue
            bucket.n += 1
    # The per-type buckets fold the per-customer ones (fewer than the items).
    by_type: dict[tuple[str, int], _Bucket] = {}
    for bucket in buckets.values():
        total = by_type.get((bucket.t, bucket.h))
        if total is None:
            by_type[(bucket.t, bucket.h)] = _Bucket(
                bucket.t, "", "", bucket.h, bucket.v, bucket.r, bucket.n
            )
        else:
            total.v = _combine(types.by_key[bucket.t].kind, total.v, bucket.v)
            total.r += bucket.r
            total.n += bucket.n
    if not buckets:
        return
    extreme: tuple[list[str], list[str]] = ([], [])  # Max type ids, Min type ids
    for entry in types.by_key.values():
        if entry.kind != _ADD:
            extreme[entry.kind == _MIN].append(entry.key)
    with _bulk_cursor() as cursor:
        # Ordered, so concurrent writers take the bucket rows in one order.
        cursor.execute(
            f"""
            INSERT INTO {_ROLLUP} AS r (operator_id, user_id, meter_type_id, account_id, hour,
                                         value, revenue, record_count)
            SELECT %s, b.u, b.t, b.a, to_timestamp(b.h * 3600), b.v, b.r, b.n
            FROM json_to_recordset(%s::json)
                 AS b(t uuid, u text, a text, h bigint, v numeric, r numeric, n bigint)
            ORDER BY b.u, b.t, b.a, b.h
            ON CONFLICT (operator_id, user_id, meter_type_id, account_id, hour) DO UPDATE SET
            {_ROLLUP_MERGE}
            """,  # noqa: S608 (table names are ours, values are parameters)
            [operator.pk, _json(list(buckets.values())), *extreme],
        )
        cursor.execute(
            f"""
            INSERT INTO {_TYPE_ROLLUP} AS r (operator_id, meter_type_id, hour, value, revenue,
                                              record_count)
            SELECT %s, b.t, to_timestamp(b.h * 3600), b.v, b.r, b.n
            FROM json_to_recordset(%s::json)
                 AS b(t uuid, h bigint, v numeric, r numeric, n bigint)
            ORDER BY b.t, b.h
            ON CONFLICT (operator_id, meter_type_id, hour) DO UPDATE SET
            {_ROLLUP_MERGE}
            """,  # noqa: S608 (table names are ours, values are parameters)
            [operator.pk, _json(list(by_type.values())), *extreme],
        )


# -- Helpers ---------------------------------------------------------------------------


def _bulk_cursor() -> CursorWrapper:
    """A Django cursor that binds parameters on the server.

    Django's default psycopg cursor quotes every parameter into the SQL text. For these
    statements, whose one parameter is a JSON document of some 100 kB, that quoting (and
    PostgreSQL lexing the result) took a few milliseconds per batch of 1,000 updates;
    sent as a bound parameter, the document is passed as it is. The wrapper is Django's
    own, so query logging, execute wrappers and query-count assertions still see every
    statement. (No statement is prepared: Django leaves `prepare_threshold` at None.)
    """
    connection.ensure_connection()
    connection.validate_thread_sharing()
    cursor = ServerBindingCursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)


@contextmanager
def _pipeline() -> Iterator[None]:
    """Send the statements executed inside without waiting for each one's result; the
    block waits for them all at its end, where an error surfaces as Django's."""
    if not psycopg.Pipeline.is_supported():  # libpq before 14
        yield
        return
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def _json(data) -> str:
    # Full-precision datetimes and exact decimals, for json_to_recordset.
    return encode(data).decode()


__all__ = ["UsageApplyResult", "UsageUpdate", "usage_apply"]
