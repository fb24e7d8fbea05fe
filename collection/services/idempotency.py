"""Idempotency-Keys: one answer per key and body, however often a request is retried."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from collection.models import Collector, IdempotencyKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdempotencyState:
    """What an Idempotency-Key says about a request: go on (`key_id`), replay
    (`response`), or refuse (`conflict`: "in_flight" or "mismatch")."""

    key_id: int | None = None
    response: dict[str, Any] | None = None
    conflict: str | None = None


def body_digest(body: bytes, content_type: str) -> str:
    return hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()


def idempotency_begin(
    *, collector: Collector, key: str, digest: str, now: datetime | None = None
) -> IdempotencyState:
    """Register the key as in flight (its own statement, visible to other requests at
    once), or say why the request must not run: a stored answer, another body, or a
    request with the key still running. A key in flight for longer than the in-flight
    timeout belongs to a request that died; this request takes it over."""
    now = now or timezone.now()
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (collector_id, key, body_digest, response, created_at)
            VALUES (%s, %s, %s, NULL, %s)
            ON CONFLICT (collector_id, key) DO NOTHING
            RETURNING id
            """,  # noqa: S608 - the table name is the model's own
            [collector.pk, key, digest, now],
        )
        row = cursor.fetchone()
    if row is not None:
        return IdempotencyState(key_id=row[0])
    existing = IdempotencyKey.objects.filter(collector=collector, key=key).first()
    if existing is None:  # swept between the two statements: try once more
        return idempotency_begin(collector=collector, key=key, digest=digest, now=now)
    if existing.body_digest != digest:
        return IdempotencyState(conflict="mismatch")
    if existing.response is not None:
        return IdempotencyState(response=existing.response)
    stale_before = now - timedelta(
        seconds=settings.TALLY["COLLECTION"]["IDEMPOTENCY_IN_FLIGHT_SECONDS"]
    )
    if existing.created_at < stale_before:
        taken = IdempotencyKey.objects.filter(
            pk=existing.pk, created_at=existing.created_at, response__isnull=True
        ).update(created_at=now)
        if taken == 1:
            return IdempotencyState(key_id=existing.pk)
    return IdempotencyState(conflict="in_flight")


def idempotency_release(*, key_id: int) -> None:
    """Forget an in-flight key whose request failed, so that a retry can run."""
    try:
        IdempotencyKey.objects.filter(pk=key_id, response__isnull=True).delete()
    except Exception:
        logger.exception("Could not release idempotency key %s", key_id)


def idempotency_keys_sweep(*, now: datetime | None = None) -> int:
    """Forget Idempotency-Keys older than their retention."""
    hours = settings.TALLY["COLLECTION"]["IDEMPOTENCY_KEY_HOURS"]
    cutoff = (now or timezone.now()) - timedelta(hours=hours)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
