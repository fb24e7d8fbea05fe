"""Writes for customers, meter types, meters and pricing (billing accounts, price plans,
plan assignments, exchange rates)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Min
from django.utils import timezone

from common.errors import ServiceConflict
from metering.models import (
    BillingAccount,
    Customer,
    ExchangeRate,
    Meter,
    MeterType,
    PlanAssignment,
    PlanRate,
    PricePlan,
)
from metering.revenue import reprice_mark, revenue_forget
from metering.schedule import next_fire
from tenants.models import Operator


def customers_ensure(*, operator: Operator, external_ids: Iterable[str]) -> dict[str, Customer]:
    """The operator's customers with these external ids, creating missing ones.

    One INSERT … ON CONFLICT DO NOTHING and one SELECT, whatever the count, and safe
    against concurrent callers creating the same customer.
    """
    wanted = sorted(set(external_ids))
    if not wanted:
        return {}
    table = Customer._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (id, operator_id, external_id, name, email, created_at)
            SELECT gen_random_uuid(), %s, external_id, '', '', now()
            FROM unnest(%s::text[]) AS external_id
            ON CONFLICT (operator_id, external_id) DO NOTHING
            """,  # noqa: S608 (the table name is ours, values are parameters)
            [operator.pk, wanted],
        )
    customers = Customer.objects.filter(operator=operator, external_id__in=wanted)
    return {customer.external_id: customer for customer in customers}


class MeteringConflict(ServiceConflict):
    """A write that breaks a uniqueness or dependency rule (answered as 409)."""


def customer_create(*, operator: Operator, external_id: str, name: str = "", email: str = ""):
    """Create a customer ahead of its first usage; an external id in use is a conflict."""
    customer = Customer(operator=operator, external_id=external_id, name=name, email=email)
    try:
        with transaction.atomic():
            customer.save(force_insert=True)
    except IntegrityError:
        raise MeteringConflict(f"A customer with the id {external_id!r} exists.") from None
    return customer


def customer_update(*, customer: Customer, name: str, email: str) -> Customer:
    """Change a customer's display name and e-mail (the external id is its identity)."""
    customer.name, customer.email = name, email
    customer.save(update_fields=["name", "email"])
    return customer


def meter_type_create(*, operator: Operator, **fields) -> MeterType:
    """Create a meter type; a name or external reference already in use is a conflict."""
    fields.setdefault("active_from", timezone.now())
    meter_type = MeterType(operator=operator, **fields)
    _save_unique(meter_type, force_insert=True)
    return meter_type


def meter_type_update(*, meter_type: MeterType, **fields) -> MeterType:
    """Change a meter type. A new reset schedule applies from each meter's next period:
    meters keep the period end they already have."""
    for name, value in fields.items():
        setattr(meter_type, name, value)
    meter_type.updated_at = timezone.now()
    _save_unique(meter_type, update_fields=[*fields, "updated_at"])
    return meter_type


def meter_type_delete(*, meter_type: MeterType) -> None:
    """Delete a meter type that has no meters."""
    with transaction.atomic():
        locked = MeterType.objects.select_for_update().get(pk=meter_type.pk)
        if locked.meters.exists():
            raise MeteringConflict(
                "This meter type still has meters; delete them before the meter type."
            )
        locked.delete()


def _save_unique(instance, **save_kwargs) -> None:
    try:
        with transaction.atomic():
            instance.save(**save_kwargs)
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "") or ""
        if "external_ref" in constraint:
            raise MeteringConflict("Another meter type has this externalRef.") from None
        if "name" in constraint:
            raise MeteringConflict("Another meter type has this name.") from None
        if "identity" in constraint:
            raise MeteringConflict(
                "A meter with this meter type, meter key and user id already exists."
            ) from None
        raise


def meter_create(
    *,
    operator: Operator,
    meter_type: MeterType,
    meter_key: str,
    user_id: str,
    custom_fields: dict | None = None,
    now=None,
) -> Meter:
    """Create a meter. Its first period runs from now to the schedule's next fire (a
    monthly meter created on the 10th runs to the 1st); later ones from fire to fire."""
    now = now or timezone.now()
    end = next_fire(meter_type.reset_cron, meter_type.timezone, now)
    with transaction.atomic():
        customer = customers_ensure(operator=operator, external_ids=[user_id])[user_id]
        meter = Meter(
            operator=operator,
            meter_type=meter_type,
            customer=customer,
            meter_key=meter_key,
            user_id=user_id,
            custom_fields=custom_fields or {},
            period_start=now,
            period_end=end,
            created_at=now,
            updated_at=now,
        )
        _save_unique(meter, force_insert=True)
    return meter


def meter_update(*, meter: Meter, **fields) -> Meter:
    """Change a meter's capacity, thresholds (None: back to the type's), custom fields or
    delete-on-reset flag."""
    for name, value in fields.items():
        setattr(meter, name, value)
    meter.updated_at = timezone.now()
    meter.save(update_fields=[*fields, "updated_at"])
    return meter


def meter_delete(*, meter: Meter) -> None:
    meter.delete()


# -- Pricing ------------------------------------------------------------------------------


def _constraint(exc: IntegrityError) -> str:
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "") or ""


def billing_account_create(
    *, operator: Operator, account_id: str, customer_id: str, invoice_currency: str, name: str = ""
) -> BillingAccount:
    """Create a billing account for a customer, creating the customer on first use (as
    meters do); an `account_id` in use is a conflict."""
    try:
        with transaction.atomic():
            customer = customers_ensure(operator=operator, external_ids=[customer_id])[customer_id]
            account = BillingAccount.objects.create(
                operator=operator,
                customer=customer,
                account_id=account_id,
                name=name,
                invoice_currency=invoice_currency,
            )
            # Usage already applied may name this account, or become its (the customer's
            # only account's): priced once the account has a plan, attributed now.
            reprice_mark(account_ids=[account.pk], since=datetime.date.min)
    except IntegrityError as exc:
        if "billingaccount_unique_account_id" in _constraint(exc):
            raise MeteringConflict(f"An account with the id {account_id!r} exists.") from None
        raise
    return account


def billing_account_update(*, account: BillingAccount, **fields) -> BillingAccount:
    """Change an account's name or invoice currency (its ids are its identity)."""
    for name, value in fields.items():
        setattr(account, name, value)
    account.save(update_fields=list(fields))
    return account


def billing_account_delete(*, account: BillingAccount) -> None:
    """Delete an account with its plan assignments and pricing cycles, and take the
    revenue its usage earned back out of the rollups (its customer and usage stay)."""
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().filter(pk=account.pk).first()
        if locked is None:
            return
        revenue_forget(account=locked)
        locked.delete()


def _rates_replace(plan: PricePlan, rates: list[dict]) -> None:
    PlanRate.objects.filter(plan=plan).delete()
    PlanRate.objects.bulk_create(
        PlanRate(
            plan=plan,
            meter_type_id=rate["meter_type_id"],
            model=rate["model"],
            unit_price=rate.get("unit_price"),
            tiers=rate.get("tiers") or [],
        )
        for rate in rates
    )


def _plan_name_conflict(exc: IntegrityError, name: str) -> Exception:
    if "priceplan_unique_name" in _constraint(exc):
        return MeteringConflict(f"A price plan named {name!r} exists.")
    return exc


def price_plan_create(
    *, operator: Operator, name: str, description: str = "", rates: list[dict] = ()
) -> PricePlan:
    """Create a plan with its rates (meter types already checked to be the operator's);
    a name in use is a conflict."""
    try:
        with transaction.atomic():
            plan = PricePlan.objects.create(operator=operator, name=name, description=description)
            _rates_replace(plan, list(rates))
    except IntegrityError as exc:
        raise _plan_name_conflict(exc, name) from None
    return plan


def price_plan_replace(
    *, plan: PricePlan, name: str, description: str = "", rates: list[dict] = ()
) -> PricePlan:
    """Replace a plan's name, description and rates as a whole (PUT). Assigned accounts
    are priced by the new rates from then on."""
    try:
        with transaction.atomic():
            PricePlan.objects.select_for_update().filter(pk=plan.pk).first()
            plan.name, plan.description = name, description
            plan.save(update_fields=["name", "description"])
            _rates_replace(plan, list(rates))
            price_plan_reprice(plan=plan)
    except IntegrityError as exc:
        raise _plan_name_conflict(exc, name) from None
    return plan


def price_plan_reprice(*, plan: PricePlan) -> None:
    """After a plan's rates changed: every account on the plan is priced again from its
    first assignment to it (in the caller's transaction)."""
    assigned = PlanAssignment.objects.filter(plan=plan).values("account_id")
    for account_id, since in assigned.annotate(since=Min("effective_from")).values_list(
        "account_id", "since"
    ):
        reprice_mark(account_ids=[account_id], since=since)


def price_plan_delete(*, plan: PricePlan) -> None:
    """Delete a plan no account is assigned to. The plan row is locked, as
    plan_assignment_create locks it, so an assignment cannot slip in between."""
    with transaction.atomic():
        locked = PricePlan.objects.select_for_update().filter(pk=plan.pk).first()
        if locked is None:
            return
        if PlanAssignment.objects.filter(plan=locked).exists():
            raise MeteringConflict(
                "Accounts are assigned to this price plan; delete their assignments first."
            )
        locked.delete()


def plan_assignment_create(
    *,
    operator: Operator,
    account: BillingAccount,
    plan: PricePlan,
    effective_from: datetime.date,
    cycle: str,
    anchor_day: int,
) -> PlanAssignment:
    """Put an account on a plan from a day; a second assignment of the account for the
    same day is a conflict (one plan per account and day)."""
    try:
        with transaction.atomic():
            if not PricePlan.objects.select_for_update().filter(pk=plan.pk).exists():
                raise MeteringConflict("The price plan was deleted meanwhile.")
            assignment = PlanAssignment.objects.create(
                operator=operator,
                account=account,
                plan=plan,
                effective_from=effective_from,
                cycle=cycle,
                anchor_day=anchor_day,
            )
            # Usage already applied from that day on is priced under the new cycles.
            reprice_mark(account_ids=[account.pk], since=effective_from)
    except IntegrityError as exc:
        if "planassignment_one_per_day" in _constraint(exc):
            raise MeteringConflict(
                f"The account already has a plan assignment from {effective_from}."
            ) from None
        raise
    return assignment


def plan_assignment_delete(*, assignment: PlanAssignment) -> None:
    """Remove an assignment; usage from its day on is priced again without it."""
    with transaction.atomic():
        reprice_mark(account_ids=[assignment.account_id], since=assignment.effective_from)
        assignment.delete()


def exchange_rate_set(
    *, operator: Operator, currency: str, date: datetime.date, rate: Decimal
) -> tuple[ExchangeRate, bool]:
    """Set the rate of `currency` on `date` (insert or replace); True when created."""
    return ExchangeRate.objects.update_or_create(
        operator=operator, currency=currency, date=date, defaults={"rate": rate}
    )


def exchange_rate_delete(*, exchange_rate: ExchangeRate) -> None:
    exchange_rate.delete()
