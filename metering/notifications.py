"""The notification outbox: events for the operator's webhook.

Writers call `notification_enqueue` (or `notifications_enqueue_many`) inside their own
transaction; the rows commit (or not) with the change they report, and delivery is
started only after commit. Delivery failures never reach the writer: a broker that is
down only delays delivery until the next sweep (`deliver_due_notifications`, every
minute), and a webhook that fails is retried with exponential backoff.

Payloads are stored as exact JSON: decimals are written as JSON numbers with their own
digits (PostgreSQL's jsonb keeps them exactly) and sent on as they are stored.

A delivery is a POST of `{"id", "type", "createdAt", "data"}` with the headers
`Tally-Event`, `Tally-Delivery` and `Tally-Signature: t=<unix seconds>,v1=<hex>`, where
the hex is HMAC-SHA256, keyed with the endpoint's signing secret, of `"<t>." + body`.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from common.json import Raw, dumps
from common.tasks import enqueue
from metering.bulk import copy_rows
from metering.models import DeliveryAttempt, Notification, WebhookEndpoint
from tenants.accounting import GATEWAY_REQUEST, WEBHOOK, usage_count
from tenants.models import Operator

logger = logging.getLogger(__name__)

# Longest wait between two tries, whatever the attempt number.
MAX_RETRY_DELAY = datetime.timedelta(hours=1)
# How long a claimed notification stays away from other workers, beyond the request timeout.
CLAIM_MARGIN = datetime.timedelta(seconds=60)
ERROR_LENGTH = DeliveryAttempt._meta.get_field("error").max_length
USER_AGENT = "Tally-Webhooks/1"


class NotificationItem(NamedTuple):
    """One notification to enqueue. The payload may hold Decimal, UUID and datetime."""

    operator_id: Any
    kind: str
    payload: dict[str, Any]


def _setting(name: str, default: int) -> int:
    return int(settings.TALLY.get(name, default))


# 1. Enqueue -------------------------------------------------------------------------


def notification_enqueue(*, operator_id, kind: str, payload: dict[str, Any]) -> Notification:
    """Store a notification and schedule its delivery once the transaction commits."""
    created = timezone.now()
    (notification_id,) = _insert([NotificationItem(operator_id, kind, payload)], created)
    notification = Notification(
        id=notification_id,
        operator_id=operator_id,
        kind=kind,
        payload=payload,
        next_attempt_at=created,
        created_at=created,
    )
    notification._state.adding = False
    notification._state.db = connection.alias
    transaction.on_commit(lambda: _schedule_delivery(notification_id))
    return notification


def notifications_enqueue_many(items: Iterable[NotificationItem]) -> list[uuid.UUID]:
    """Store many notifications in one COPY and schedule one delivery sweep on commit;
    returns their ids.

    For bulk writers (resets, threshold batches): one statement and one task, however
    many notifications.
    """
    items = list(items)
    if not items:
        return []
    ids = _insert(items, timezone.now())
    if ids:
        transaction.on_commit(_schedule_sweep)
    return ids


def notifications_sweep_on_commit() -> None:
    """Schedule one delivery sweep after the current transaction commits (for writers
    that insert notifications with their own SQL)."""
    transaction.on_commit(_schedule_sweep)


def _insert(items: list[NotificationItem], created: datetime.datetime) -> list[uuid.UUID]:
    # The payload goes in as text, so decimals stay exact JSON numbers (JSONField would
    # go through json.dumps, which refuses Decimal); jsonb keeps them exactly.
    ids = [uuid.uuid4() for _ in items]
    pending = Notification.Status.PENDING.value
    copy_rows(
        Notification._meta.db_table,
        [
            "id",
            "operator_id",
            "kind",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "created_at",
        ],
        (
            (
                notification_id,
                item.operator_id,
                str(item.kind),
                dumps(item.payload).decode(),
                pending,
                0,
                created,
                created,
            )
            for notification_id, item in zip(ids, items, strict=True)
        ),
    )
    return ids


def _schedule_delivery(notification_id) -> None:
    enqueue("metering.tasks.deliver_notification", str(notification_id))


def _schedule_sweep() -> None:
    enqueue("metering.tasks.deliver_due_notifications")


# 2. Endpoints and signatures --------------------------------------------------------


def webhook_endpoint_set(*, operator: Operator, url: str, enabled: bool = True) -> WebhookEndpoint:
    """Point the operator's notifications at `url`. The signing secret is generated the
    first time and kept on later changes, so receivers need not be reconfigured."""
    with transaction.atomic():
        endpoint, created = WebhookEndpoint.objects.select_for_update().get_or_create(
            operator=operator,
            defaults={"url": url, "enabled": enabled, "signing_secret": _new_secret()},
        )
        if not created:
            endpoint.url = url
            endpoint.enabled = enabled
            endpoint.save(update_fields=["url", "enabled"])
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Give the endpoint a new signing secret: every delivery from now on, retries of
    older notifications included, is signed with it, so the receiver needs it at once."""
    endpoint.signing_secret = _new_secret()
    endpoint.save(update_fields=["signing_secret"])
    return endpoint


def _new_secret() -> str:
    return "whsec_" + secrets.token_hex(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Tally-Signature` header value: `t=<timestamp>,v1=<hex HMAC-SHA256>` of
    `"<timestamp>." + body`, keyed with the endpoint's signing secret."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# 3. Delivery ------------------------------------------------------------------------


def notification_deliver(notification_id, now: datetime.datetime | None = None) -> str | None:
    """Try to deliver one notification, if it is due; returns its new status, or None
    when there was nothing to do (not due, already done, or another worker has it).

    1. Claim it with a conditional update that pushes `next_attempt_at` out by a lease
       longer than the request timeout; only the worker whose update hit one row sends.
    2. Without an enabled endpoint, mark it SKIPPED.
    3. POST it signed; record the attempt (status, response code, duration, error) and
       count it as a gateway request of the `webhook` connector (in Redis).
    4. 2xx → DELIVERED; otherwise retry after base * 2**(attempts - 1) seconds (at most
       an hour), until the attempt limit → FAILED. Every outcome is written only while
       the claim is still ours.
    """
    now = now or timezone.now()
    timeout = _setting("NOTIFICATION_TIMEOUT_SECONDS", 10)
    lease_until = now + datetime.timedelta(seconds=timeout) + CLAIM_MARGIN
    claimed = Notification.objects.filter(
        pk=notification_id, status=Notification.Status.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=lease_until)
    if claimed != 1:
        return None
    notification = (
        Notification.objects.annotate(payload_text=Cast("payload", TextField()))
        .defer("payload")
        .get(pk=notification_id)
    )
    ours = Notification.objects.filter(
        pk=notification_id, status=Notification.Status.PENDING, next_attempt_at=lease_until
    )

    endpoint = WebhookEndpoint.objects.filter(operator_id=notification.operator_id).first()
    if endpoint is None or not endpoint.enabled:
        ours.update(status=Notification.Status.SKIPPED, next_attempt_at=now)
        return Notification.Status.SKIPPED

    body = dumps(
        {
            "id": notification.id,
            "type": notification.kind,
            "createdAt": notification.created_at,
            "data": Raw(notification.payload_text),
        }
    )
    succeeded, response_status, error, duration_ms = _post(endpoint, notification, body, timeout)
    # Each attempt, answered or not, is a gateway request through the endpoint.
    usage_count(
        operator_id=notification.operator_id,
        kind=GATEWAY_REQUEST,
        key=WEBHOOK,
        connection=str(endpoint.pk),
        at=now,
    )
    DeliveryAttempt.objects.create(
        notification_id=notification.pk,
        attempted_at=now,
        succeeded=succeeded,
        response_status=response_status,
        error=error,
        duration_ms=duration_ms,
    )

    attempts = notification.attempts + 1
    if succeeded:
        status = Notification.Status.DELIVERED
        ours.update(status=status, attempts=attempts, delivered_at=now, next_attempt_at=now)
    elif attempts >= _setting("NOTIFICATION_MAX_ATTEMPTS", 8):
        status = Notification.Status.FAILED
        ours.update(status=status, attempts=attempts, next_attempt_at=now)
    else:
        status = Notification.Status.PENDING
        base = _setting("NOTIFICATION_RETRY_BASE_SECONDS", 30)
        delay = min(datetime.timedelta(seconds=base * 2 ** (attempts - 1)), MAX_RETRY_DELAY)
        ours.update(attempts=attempts, next_attempt_at=now + delay)
    return status


def _post(
    endpoint: WebhookEndpoint, notification: Notification, body: bytes, timeout: int
) -> tuple[bool, int | None, str, int]:
    """One signed POST: (succeeded, response status, error, duration in ms). Never raises
    for network or HTTP errors; the error text never contains the secret."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Tally-Event": notification.kind,
        "Tally-Delivery": str(notification.pk),
        "Tally-Signature": sign(endpoint.signing_secret, int(time.time()), body),
    }
    started = time.monotonic()
    response_status, error = None, ""
    try:
        response = requests.post(
            endpoint.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
        response_status = response.status_code
        if not 200 <= response_status < 300:
            error = f"HTTP {response_status}"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = int((time.monotonic() - started) * 1000)
    error = error.replace(endpoint.signing_secret, "[secret]")[:ERROR_LENGTH]
    return not error, response_status, error, duration_ms


def notifications_deliver_due(
    *, now: datetime.datetime | None = None, limit: int = 500, seconds: float = 50
) -> int:
    """The sweep: deliver due notifications; returns how many were tried.

    1. Notifications of operators without an enabled endpoint are marked SKIPPED in one
       statement, so a reset of 100,000 meters costs one UPDATE here, not 100,000.
    2. The rest are delivered oldest first, at most `limit` of them and for about
       `seconds` (the sweep runs every minute and must not pile up behind a slow
       endpoint). After a failed try, the operator's other notifications wait for the
       next sweep instead of each waiting for the same dead endpoint.
    """
    due_at = now or timezone.now()
    pending = Notification.objects.filter(
        status=Notification.Status.PENDING, next_attempt_at__lte=due_at
    )
    with_endpoint = WebhookEndpoint.objects.filter(enabled=True).values("operator_id")
    pending.exclude(operator_id__in=with_endpoint).update(status=Notification.Status.SKIPPED)

    started = time.monotonic()
    failing: set = set()
    tried = 0
    due = pending.order_by("next_attempt_at").values_list("pk", "operator_id")[:limit]
    for notification_id, operator_id in due:
        if time.monotonic() - started > seconds:
            break
        if operator_id in failing:
            continue
        try:
            status = notification_deliver(notification_id, now=now)
        except Exception:  # one broken row must not stop the others
            logger.exception("Delivering notification %s failed.", notification_id)
            continue
        if status is not None:
            tried += 1
        if status in (Notification.Status.PENDING, Notification.Status.FAILED):
            failing.add(operator_id)
    return tried


def notification_resend(*, notification: Notification) -> Notification:
    """Queue a notification again (whatever its status) with a fresh set of attempts."""
    now = timezone.now()
    Notification.objects.filter(pk=notification.pk).update(
        status=Notification.Status.PENDING, attempts=0, next_attempt_at=now, delivered_at=None
    )
    notification.status = Notification.Status.PENDING
    notification.attempts = 0
    notification.next_attempt_at = now
    notification.delivered_at = None
    transaction.on_commit(lambda: _schedule_delivery(notification.pk))
    return notification
