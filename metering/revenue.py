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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from django.db.models import Q

from common.json import encode
from metering.cycles import Cycle, Schedule, cycle_at
from metering.models import (
    VALUE_PLACES,
    BillingAccount,
    CycleRollup,
    PlanAssignment,
    PlanRate,
)
from metering.pricing import Tier, tiers_parse, total_price
from tenants.models import Operator

_CYCLE = CycleRollup._meta.db_table
ZERO = Decimal(0)
# Charges are kept to the places of the columns that store them, so the hourly
# revenue of a cycle adds up to exactly its stored charge.
_PLACES = Decimal(1).scaleb(-VALUE_PLACES)


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
    operator: Operator,
    accruals: Sequence[Accrual],
    combine: Callable[[str, Decimal | None, Decimal], Decimal],
) -> None:
    """Attribute each accrual to an account and, where it falls in a pricing cycle, add
    it to the cycle's usage and charge; fills `account_key` and `revenue`."""
    if not accruals:
        return
    for accrual in accruals:  # as sent, until a billing account says otherwise
        accrual.account_key = accrual.account_hint or ""
    accounts = _accounts_resolve(operator, accruals)
    if not accounts:
        return
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
    rates = _rates_load({cycle.schedule.ref for _, cycle in cycles.values()}, by_key)
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


def _accounts_resolve(operator: Operator, accruals: Sequence[Accrual]) -> dict[str, _Account]:
    """The operator's billing accounts the batch may reach, keyed by "#<account id>" and
    (for customers with exactly one) "@<user id>", with their schedules."""
    hints = {accrual.account_hint for accrual in accruals if accrual.account_hint}
    users = {accrual.user_id for accrual in accruals if not accrual.account_hint}
    rows = list(
        BillingAccount.objects.filter(operator=operator)
        .filter(Q(account_id__in=hints) | Q(customer__external_id__in=users))
        .values_list("id", "account_id", "customer__external_id")
    )
    if not rows:
        return {}
    found: dict[str, _Account] = {}
    per_user: dict[str, list[_Account]] = {}
    for pk, account_id, user_id in rows:
        account = _Account(str(pk), account_id, user_id)
        if account_id in hints:
            found[f"#{account_id}"] = account
        per_user.setdefault(user_id, []).append(account)
    for user_id, owned in per_user.items():
        if user_id in users and len(owned) == 1:
            found.setdefault(f"@{user_id}", owned[0])
    wanted = {account.pk: account for account in found.values()}
    for assignment in PlanAssignment.objects.filter(account_id__in=list(wanted)).values(
        "account_id", "plan_id", "effective_from", "cycle", "anchor_day", "created_at"
    ):
        wanted[str(assignment["account_id"])].schedules.append(
            Schedule(
                assignment["effective_from"],
                assignment["cycle"],
                assignment["anchor_day"],
                ref=str(assignment["plan_id"]),
            )
        )
    return found


def _account_of(accrual: Accrual, accounts: dict[str, _Account]) -> _Account | None:
    if accrual.account_hint:
        return accounts.get(f"#{accrual.account_hint}")
    return accounts.get(f"@{accrual.user_id}")


def _rates_load(
    plans: set[str], by_key: dict[tuple[str, str, datetime.date], list[Accrual]]
) -> dict[tuple[str, str], _Rate]:
    types = {type_key for _, type_key, _ in by_key}
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
