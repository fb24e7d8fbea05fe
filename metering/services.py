"""Writes for customers, meter types and meters."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.errors import ServiceConflict
from metering.models import Customer, Meter, MeterType
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
