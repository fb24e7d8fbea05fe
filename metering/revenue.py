"""Revenue as usage arrives: which billing account a piece of usage belongs to, the
pricing cycle it falls in, and what it adds to that cycle's charge.

Called by `metering.usage.usage_apply` inside its transaction, so cycle rollups change
exactly when meters do (a retried batch never counts twice).

* **Account.** The record's `accountId` when it has one (as it reaches the meter node);
  otherwise the customer's billing account when the customer has exactly one. Usage
  with neither keeps an empty account and earns no revenue.
* **Cycle.** The account's plan assignments give its cycles (`metering.cycles`); the
  usage's event time (its UTC day) picks one. No assignment yet: no cycle, no revenue.
* **Charge.** The cycle row holds the cumulative usage (combined as the meter type
  aggregates: summed, or the extreme for Max/Min) and the charge of that usage under the
  cycle's plan rate for the type (`metering.pricing`). Each piece of usage adds the
  difference it makes to the charge; pieces are taken in event-time order within a
  batch, so tiers are crossed where the usage crossed them. A type the plan does not
  price counts usage at no charge.

Cycle rows are created with `INSERT … ON CONFLICT DO NOTHING` and then locked with
`FOR UPDATE`, both in key order, so two batches touching one cycle serialize (each adds
to what the other committed) without deadlocking.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext

from django.db import connection, transaction
from django.db.models import Min

from common.json import encode
from metering.aggregation import KIND, combine
from metering.cycles import Cycle, Schedule, cycle_at
from metering.models import (
    VALUE_PLACES,
    BillingAccount,
    Customer,
    CycleRollup,
    MeterType,
    PlanAssignment,
    PlanRate,
    UsageRollup,
    UsageTypeRollup,
)
from metering.pricing import Tier, tiers_parse, total_price
from tenants.models import Operator

_CYCLE = CycleRollup._meta.db_table
ZERO = Decimal(0)
# Charges are kept to the places of the columns that store them, so the hourly
# revenue of a cycle adds up to exactly its stored charge.
_PLACES = Decimal(1).scaleb(-VALUE_PLACES)
# Enough digits for sums of numeric(38, 10) values and their prices.
_CONTEXT = Context(prec=80)


@dataclass(slots=True)
class Accrual:
    """One piece of usage that counted: what `revenue_accrue` reads (the first six
    fields) and fills in (`account_key`, `revenue`)."""

    type_key: str
    kind: str  # "add", "max" or "min"
    user_id: str
    account_hint: str | None
    value: Decimal
    event_time: datetime.datetime
    account_key: str = ""
    revenue: Decimal = ZERO


@dataclass(slots=True)
class _Account:
    pk: str
    account_id: str
    user_id: str
    schedules: list[Schedule] = field(default_factory=list)
    cycles: dict[datetime.date, Cycle | None] = field(default_factory=dict)

    def cycle_on(self, day: datetime.date) -> Cycle | None:
        if day not in self.cycles:
            self.cycles[day] = cycle_at(self.schedules, day) if self.schedules else None
        return self.cycles[day]


@dataclass(frozen=True, slots=True)
class _Rate:
    model: str
    unit_price: Decimal | None
    tiers: tuple[Tier, ...]

    def price(self, usage: Decimal) -> Decimal:
        return total_price(
            model=self.model, usage=usage, unit_price=self.unit_price, tiers=self.tiers
        )


def revenue_accrue(
    operator: Operator, accounts: dict[str, _Account], accruals: Sequence[Accrual]
) -> None:
    """Attribute each accrual to one of `accounts` (`accounts_find`) and, where it falls
    in a pricing cycle, add it to the cycle's usage and charge; fills `account_key` and
    `revenue`."""
    for accrual in accruals:  # as sent, until a billing account says otherwise
        accrual.account_key = accrual.account_hint or ""
    by_key: dict[tuple[str, str, datetime.date], list[Accrual]] = {}
    cycles: dict[tuple[str, str, datetime.date], tuple[_Account, Cycle]] = {}
    for accrual in accruals:
        account = _account_of(accrual, accounts)
        if account is None:
            continue
        accrual.account_key = account.account_id
        cycle = account.cycle_on(accrual.event_time.astimezone(datetime.UTC).date())
        if cycle is None:
            continue
        key = (account.pk, accrual.type_key, cycle.start)
        by_key.setdefault(key, []).append(accrual)
        cycles[key] = (account, cycle)
    if not by_key:
        return
    plans = {cycle.schedule.ref for _, cycle in cycles.values()}
    rates = _rates_load(plans, {type_key for _, type_key, _ in by_key})
    stored = _cycles_lock(operator, cycles)
    changes = []
    for key, pieces in by_key.items():
        account, cycle = cycles[key]
        usage, revenue, _count = stored[key]
        rate = rates.get((cycle.schedule.ref, key[1]))
        pieces.sort(key=lambda accrual: accrual.event_time)
        for accrual in pieces:
            usage = combine(accrual.kind, usage, accrual.value)
            if rate is not None:
                charged = rate.price(usage).quantize(_PLACES)
                accrual.revenue = charged - revenue
                revenue = charged
        changes.append(
            {"a": key[0], "t": key[1], "s": key[2], "u": usage, "r": revenue, "n": len(pieces)}
        )
    _cycles_write(changes)


def accounts_find(operator: Operator, *, hints: set[str], users: set[str]) -> dict[str, _Account]:
    """The operator's billing accounts a batch may reach: those named by `hints` (the
    records' accountIds) and the only account of each of `users` (customers of usage
    naming none), keyed "#<account id>" and "@<user id>", with their schedules. Empty
    (one query) for an operator without billing.

    The accounts are share-locked: batches go on side by side, while a repricing (which
    locks its account for update) waits for them, and they for it."""
    hints, users = sorted(hints), sorted(users)
    accounts, customers = BillingAccount._meta.db_table, Customer._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT a.id::text, a.account_id, c.external_id
            FROM {accounts} a
            JOIN {customers} c ON c.id = a.customer_id
            WHERE a.id IN (
                -- Two index lookups: by account id, and by customer id.
                SELECT id FROM {accounts} WHERE operator_id = %s AND account_id = ANY(%s)
                UNION
                SELECT b.id FROM {customers} u JOIN {accounts} b ON b.customer_id = u.id
                WHERE u.operator_id = %s AND u.external_id = ANY(%s)
            )
            ORDER BY a.id
            FOR SHARE OF a
            """,  # noqa: S608 (our tables)
            [operator.pk, hints, operator.pk, users],
        )
        rows = cursor.fetchall()
    if not rows:
        return {}
    hinted = set(hints)
    found: dict[str, _Account] = {}
    per_user: dict[str, list[_Account]] = {}
    for pk, account_id, user_id in rows:
        account = _Account(pk, account_id, user_id)
        if account_id in hinted:
            found[f"#{account_id}"] = account
        per_user.setdefault(user_id, []).append(account)
    wanted_users = set(users)
    for user_id, owned in per_user.items():
        if user_id in wanted_users and len(owned) == 1:
            found.setdefault(f"@{user_id}", owned[0])
    wanted = {account.pk: account for account in found.values()}
    for account_pk, schedule in _schedules_of(list(wanted)):
        wanted[account_pk].schedules.append(schedule)
    return found


def _schedules_of(account_pks: list[str]) -> list[tuple[str, Schedule]]:
    """Each account's plan assignments as schedules (`ref`: the plan id)."""
    return [
        (
            str(account_pk),
            Schedule(effective_from, cycle, anchor_day, ref=str(plan_id)),
        )
        for account_pk, plan_id, effective_from, cycle, anchor_day in PlanAssignment.objects.filter(
            account_id__in=account_pks
        )
        .order_by("account_id", "effective_from")
        .values_list("account_id", "plan_id", "effective_from", "cycle", "anchor_day")
    ]


def _account_of(accrual: Accrual, accounts: dict[str, _Account]) -> _Account | None:
    if accrual.account_hint:
        return accounts.get(f"#{accrual.account_hint}")
    return accounts.get(f"@{accrual.user_id}")


def _rates_load(plans: set[str], types: set[str]) -> dict[tuple[str, str], _Rate]:
    """The rates of these plans for these meter types, by (plan id, type id)."""
    rates = {}
    for plan_id, type_id, model, unit_price, tiers in PlanRate.objects.filter(
        plan_id__in=list(plans), meter_type_id__in=list(types)
    ).values_list("plan_id", "meter_type_id", "model", "unit_price", "tiers"):
        parsed = tuple(tiers_parse(tiers)) if model == PlanRate.Model.GRADUATED else ()
        rates[(str(plan_id), str(type_id))] = _Rate(model, unit_price, parsed)
    return rates


def _cycles_lock(
    operator: Operator, cycles: dict[tuple[str, str, datetime.date], tuple[_Account, Cycle]]
) -> dict[tuple[str, str, datetime.date], tuple[Decimal | None, Decimal, int]]:
    """Create the missing cycle rows, then lock all of them, in key order; returns each
    one's (usage, revenue, record count)."""
    rows = [
        {
            "a": key[0],
            "t": key[1],
            "s": key[2],
            "e": cycle.end,
            "u": account.user_id,
            "k": account.account_id,
            "p": cycle.schedule.ref,
        }
        for key, (account, cycle) in cycles.items()
    ]
    document = encode(rows).decode()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {_CYCLE} AS c (operator_id, account_id, meter_type_id, user_id,
                account_key, plan_id, cycle_start, cycle_end, usage, revenue, record_count,
                updated_at)
            SELECT %s, v.a, v.t, v.u, v.k, v.p, v.s, v.e, NULL, 0, 0, now()
            FROM json_to_recordset(%s::json)
                 AS v(a uuid, t uuid, s date, e date, u text, k text, p uuid)
            ORDER BY v.a, v.t, v.s
            ON CONFLICT (account_id, meter_type_id, cycle_start) DO NOTHING
            """,  # noqa: S608 (our table)
            [operator.pk, document],
        )
        cursor.execute(
            f"""
            SELECT c.account_id::text, c.meter_type_id::text, c.cycle_start, c.usage,
                   c.revenue, c.record_count
            FROM {_CYCLE} c
            JOIN json_to_recordset(%s::json) AS v(a uuid, t uuid, s date)
              ON c.account_id = v.a AND c.meter_type_id = v.t AND c.cycle_start = v.s
            ORDER BY c.account_id, c.meter_type_id, c.cycle_start
            FOR UPDATE OF c
            """,  # noqa: S608 (our table)
            [document],
        )
        return {(a, t, s): (u, r, n) for a, t, s, u, r, n in cursor.fetchall()}


def _cycles_write(changes: list[dict]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_CYCLE} c
            SET usage = v.u, revenue = v.r, record_count = c.record_count + v.n,
                updated_at = now()
            FROM json_to_recordset(%s::json) AS v(a uuid, t uuid, s date, u numeric,
                                                  r numeric, n bigint)
            WHERE c.account_id = v.a AND c.meter_type_id = v.t AND c.cycle_start = v.s
            """,  # noqa: S608 (our table)
            [encode(changes).decode()],
        )


# -- Pricing again after a change ----------------------------------------------------------


def reprice_mark(*, account_ids: Sequence, since: datetime.date) -> None:
    """Ask for the revenue of these accounts from `since` on to be computed again (in
    the caller's transaction; `revenue_reprice` does it, queued on commit and swept by
    Beat)."""
    from common.tasks import enqueue_on_commit

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {BillingAccount._meta.db_table}
            SET reprice_from = LEAST(coalesce(reprice_from, %s), %s)
            WHERE id = ANY(%s::uuid[])
            """,  # noqa: S608 (our table)
            [since, since, [str(pk) for pk in account_ids]],
        )
    for pk in account_ids:
        enqueue_on_commit("metering.tasks.revenue_reprice", str(pk))


def revenue_reprice(*, account_id) -> bool:
    """Compute an account's revenue again from its `reprice_from` day on, from the hourly
    usage rollups, under the account's current assignments and plan rates; True if
    there was something to do. One transaction, holding the account's row lock (usage
    batches reaching the account wait, and are waited for).

    First, when the account is its customer's only one, usage of the customer that was
    applied without an account is attributed to it. Then every cycle from the one
    holding `reprice_from` on is rebuilt: the hourly rows are taken in time order, each
    adding to its cycle's usage and earning what it adds to the cycle's charge (usage
    within one hour is priced together), and the per-type rollup takes the change."""
    with transaction.atomic(), localcontext(_CONTEXT):
        account = (
            BillingAccount.objects.select_for_update(of=("self",))
            .select_related("customer")
            .filter(pk=account_id)
            .first()
        )
        if account is None or account.reprice_from is None:
            return False
        since = account.reprice_from
        adopted = _usage_adopt(account)
        if adopted is not None and adopted < since:
            since = adopted
        schedules = [schedule for _, schedule in _schedules_of([str(account.pk)])]
        start = since
        holding = cycle_at(schedules, since) if schedules else None
        if holding is not None:
            start = min(start, holding.start)
        stored = CycleRollup.objects.filter(account=account, cycle_end__gt=start).aggregate(
            first=Min("cycle_start")
        )["first"]
        if stored is not None:
            start = min(start, stored)
        CycleRollup.objects.filter(account=account, cycle_start__gte=start).delete()
        _reprice_rows(account, schedules, start)
        BillingAccount.objects.filter(pk=account.pk).update(reprice_from=None)
    return True


def _usage_adopt(account: BillingAccount) -> datetime.date | None:
    """Usage of the account's customer applied without an account becomes the account's
    when it is the customer's only one; returns the first day moved, if any."""
    if BillingAccount.objects.filter(customer_id=account.customer_id).count() != 1:
        return None
    table = UsageRollup._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH moved AS (
                DELETE FROM {table}
                WHERE operator_id = %s AND user_id = %s AND account_id = ''
                RETURNING meter_type_id, hour, value, revenue, record_count
            ), merged AS (
                INSERT INTO {table} AS r (operator_id, user_id, meter_type_id, account_id,
                                          hour, value, revenue, record_count)
                SELECT %s, %s, meter_type_id, %s, hour, value, revenue, record_count
                FROM moved ORDER BY meter_type_id, hour
                ON CONFLICT (operator_id, user_id, meter_type_id, account_id, hour)
                DO UPDATE SET
                    value = CASE (SELECT aggregation FROM {MeterType._meta.db_table} t
                                  WHERE t.id = r.meter_type_id)
                        WHEN 'Max' THEN GREATEST(r.value, EXCLUDED.value)
                        WHEN 'Min' THEN LEAST(r.value, EXCLUDED.value)
                        ELSE r.value + EXCLUDED.value
                    END,
                    revenue = r.revenue + EXCLUDED.revenue,
                    record_count = r.record_count + EXCLUDED.record_count
            )
            SELECT min(hour) FROM moved
            """,  # noqa: S608 (our tables)
            [
                account.operator_id,
                account.customer.external_id,
                account.operator_id,
                account.customer.external_id,
                account.account_id,
            ],
        )
        first = cursor.fetchone()[0]
    return first.astimezone(datetime.UTC).date() if first is not None else None


def _reprice_rows(account: BillingAccount, schedules: list[Schedule], start: datetime.date) -> None:
    rollup, by_type = UsageRollup._meta.db_table, UsageTypeRollup._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT r.id, r.meter_type_id::text, r.hour, r.value, r.revenue, r.record_count,
                   t.aggregation
            FROM {rollup} r JOIN {MeterType._meta.db_table} t ON t.id = r.meter_type_id
            WHERE r.operator_id = %s AND r.account_id = %s AND r.hour >= %s
            ORDER BY r.hour, r.meter_type_id, r.id
            FOR UPDATE OF r
            """,  # noqa: S608 (our tables)
            [account.operator_id, account.account_id, _midnight(start)],
        )
        rows = cursor.fetchall()
    if not rows:
        return
    rates = _rates_load(
        {schedule.ref for schedule in schedules}, {type_id for _, type_id, *_ in rows}
    )
    cycles: dict[tuple[str, datetime.date], dict] = {}
    days: dict[datetime.date, Cycle | None] = {}
    changed, type_changes = [], {}
    for row_id, type_id, hour, value, old_revenue, records, aggregation in rows:
        day = hour.astimezone(datetime.UTC).date()
        if day not in days:
            days[day] = cycle_at(schedules, day) if schedules else None
        cycle, revenue = days[day], ZERO
        if cycle is not None:
            entry = cycles.get((type_id, cycle.start))
            if entry is None:
                entry = cycles[(type_id, cycle.start)] = {
                    "a": str(account.pk),
                    "t": type_id,
                    "s": cycle.start,
                    "e": cycle.end,
                    "p": cycle.schedule.ref,
                    "u": None,
                    "r": ZERO,
                    "n": 0,
                }
            entry["u"] = combine(KIND[aggregation], entry["u"], value)
            entry["n"] += records
            rate = rates.get((cycle.schedule.ref, type_id))
            if rate is not None:
                charged = rate.price(entry["u"]).quantize(_PLACES)
                revenue, entry["r"] = charged - entry["r"], charged
        if revenue != old_revenue:
            changed.append({"id": row_id, "r": revenue})
            key = (type_id, hour)
            type_changes[key] = type_changes.get(key, ZERO) + revenue - old_revenue
    with connection.cursor() as cursor:
        if changed:
            cursor.execute(
                f"""
                UPDATE {rollup} r SET revenue = v.r
                FROM json_to_recordset(%s::json) AS v(id bigint, r numeric)
                WHERE r.id = v.id
                """,  # noqa: S608 (our table)
                [encode(changed).decode()],
            )
        deltas = [
            {"t": type_id, "h": hour, "d": delta}
            for (type_id, hour), delta in sorted(type_changes.items())
            if delta
        ]
        if deltas:
            # In (type, hour) order, as usage batches upsert these rows.
            cursor.execute(
                f"""
                UPDATE {by_type} r SET revenue = r.revenue + v.d
                FROM (SELECT * FROM json_to_recordset(%s::json)
                      AS v(t uuid, h timestamptz, d numeric) ORDER BY v.t, v.h) v
                WHERE r.operator_id = %s AND r.meter_type_id = v.t AND r.hour = v.h
                """,  # noqa: S608 (our table)
                [encode(deltas).decode(), account.operator_id],
            )
        if cycles:
            cursor.execute(
                f"""
                INSERT INTO {_CYCLE} (operator_id, account_id, meter_type_id, user_id,
                    account_key, plan_id, cycle_start, cycle_end, usage, revenue,
                    record_count, updated_at)
                SELECT %s, v.a, v.t, %s, %s, v.p, v.s, v.e, v.u, v.r, v.n, now()
                FROM json_to_recordset(%s::json) AS v(a uuid, t uuid, s date, e date,
                    p uuid, u numeric, r numeric, n bigint)
                """,  # noqa: S608 (our table)
                [
                    account.operator_id,
                    account.customer.external_id,
                    account.account_id,
                    encode(list(cycles.values())).decode(),
                ],
            )


def revenue_forget(*, account: BillingAccount) -> None:
    """Before an account is deleted: the revenue its usage earned is taken back out of
    the rollups (its cycles go with it), in the caller's transaction."""
    rollup, by_type = UsageRollup._meta.db_table, UsageTypeRollup._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH taken AS (
                UPDATE {rollup} r SET revenue = 0
                FROM (SELECT id, revenue FROM {rollup}
                      WHERE operator_id = %s AND account_id = %s AND revenue <> 0
                      ORDER BY id FOR UPDATE) old
                WHERE r.id = old.id
                RETURNING r.meter_type_id, r.hour, old.revenue
            ), summed AS (
                SELECT meter_type_id, hour, sum(revenue) AS revenue FROM taken
                GROUP BY meter_type_id, hour
            )
            UPDATE {by_type} r SET revenue = r.revenue - s.revenue
            FROM (SELECT * FROM summed ORDER BY meter_type_id, hour) s
            WHERE r.operator_id = %s AND r.meter_type_id = s.meter_type_id AND r.hour = s.hour
            """,  # noqa: S608 (our tables)
            [account.operator_id, account.account_id, account.operator_id],
        )


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
