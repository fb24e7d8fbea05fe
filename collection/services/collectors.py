"""Collectors: create, rename, delete, and provision (the record partitions they need)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from collection.models import Collector
from collection.rules import MAX_COLLECTORS_PER_OPERATOR
from common.errors import ServiceConflict
from common.tasks import enqueue_on_commit
from tenants.models import Operator


class CollectorConflict(ServiceConflict):
    """The write would break a uniqueness or quota rule, or the collector is not ready
    (answered as 409)."""


def collector_create(*, operator: Operator, name: str) -> Collector:
    """Create a CREATING collector and queue its provisioning once committed.

    A duplicate live name, or a sixth live collector, is a CollectorConflict.
    """
    with transaction.atomic():
        # The operator row serialises concurrent creates, so the quota cannot be overrun.
        Operator.objects.select_for_update().filter(pk=operator.pk).first()
        if Collector.objects.live().filter(operator=operator).count() >= (
            MAX_COLLECTORS_PER_OPERATOR
        ):
            raise CollectorConflict(
                f"An operator may have at most {MAX_COLLECTORS_PER_OPERATOR} collectors."
            )
        collector = Collector(operator=operator, name=name)
        try:
            with transaction.atomic():
                collector.save(force_insert=True)
        except IntegrityError:
            raise CollectorConflict(f"A collector named {name!r} already exists.") from None
        enqueue_on_commit("collection.tasks.collector_provision", str(collector.pk))
    return collector


def collector_rename(*, collector: Collector, name: str) -> Collector:
    """Change the name (the only field that may change); a taken name is a conflict."""
    collector.name = name
    collector.updated_at = timezone.now()
    try:
        with transaction.atomic():
            collector.save(update_fields=["name", "updated_at"])
    except IntegrityError:
        raise CollectorConflict(f"A collector named {name!r} already exists.") from None
    return collector


def collector_delete(*, collector: Collector) -> int:
    """Stop the collector at once; its records, rollups and ingestions stay."""
    now = timezone.now()
    return Collector.objects.filter(pk=collector.pk, deleted_at__isnull=True).update(
        deleted_at=now, updated_at=now
    )


def record_partitions_ensure(*, now: datetime | None = None, months_ahead: int = 2) -> int:
    """Make sure the record table has a partition for this month and the next ones.

    Returns how many partitions were created. Idempotent.
    """
    now = now or timezone.now()
    first = now.astimezone(UTC).date().replace(day=1)
    created = 0
    with connection.cursor() as cursor:
        for offset in range(months_ahead + 1):
            year, month = divmod(first.month - 1 + offset, 12)
            cursor.execute(
                "SELECT collection_record_partition_ensure(%s)",
                [first.replace(year=first.year + year, month=month + 1)],
            )
            created += bool(cursor.fetchone()[0])
    return created


def collector_provision(*, collector_id: uuid.UUID | str, now: datetime | None = None) -> bool:
    """Give a CREATING collector what it needs to take data, then make it ACTIVE.

    True when this call activated it; running it again changes nothing.
    """
    record_partitions_ensure(now=now)
    changed = Collector.objects.filter(
        pk=collector_id, status=Collector.Status.CREATING, deleted_at__isnull=True
    ).update(status=Collector.Status.ACTIVE, updated_at=timezone.now())
    return changed == 1
