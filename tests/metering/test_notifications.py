"""Webhook delivery of notifications, against an HTTP server the test starts on loopback."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import threading
from decimal import Decimal

import pytest
from django.utils import timezone

from metering import notifications
from metering.models import DeliveryAttempt, Notification
from metering.notifications import (
    notification_deliver,
    notification_enqueue,
    notification_resend,
    notifications_deliver_due,
    notifications_enqueue_many,
    sign,
    webhook_endpoint_set,
)
from metering.tasks import deliver_due_notifications, deliver_notification
from tests.factories import OperatorFactory
from tests.metering.webhooks import Receiver

pytestmark = pytest.mark.django_db

PAYLOAD = {"meterId": "m-1", "value": Decimal("12.50"), "groupBreakdowns": {"eu": Decimal(3)}}


@pytest.fixture
def fast_retries(settings):
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 0
    settings.TALLY["NOTIFICATION_MAX_ATTEMPTS"] = 3
    settings.TALLY["NOTIFICATION_TIMEOUT_SECONDS"] = 5


def enqueue(operator, payload=PAYLOAD) -> Notification:
    return notification_enqueue(
        operator_id=operator.pk, kind=Notification.Kind.THRESHOLD_CROSSED, payload=payload
    )


def test_a_delivery_is_a_signed_json_post_that_verifies_with_the_secret(acme, receiver):
    endpoint = webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    notification = enqueue(acme.operator)

    assert notification_deliver(notification.pk) == Notification.Status.DELIVERED

    ((headers, body),) = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["Tally-Event"] == "meter.threshold_crossed"
    assert headers["Tally-Delivery"] == str(notification.pk)
    fields = dict(part.split("=", 1) for part in headers["Tally-Signature"].split(","))
    expected = hmac.new(
        endpoint.signing_secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert abs(int(fields["t"]) - timezone.now().timestamp()) < 300
    sent = json.loads(body, parse_float=Decimal)
    assert sent == {
        "id": str(notification.pk),
        "type": "meter.threshold_crossed",
        "createdAt": sent["createdAt"],
        "data": {"meterId": "m-1", "value": Decimal("12.50"), "groupBreakdowns": {"eu": 3}},
    }
    assert sent["createdAt"].endswith("Z")  # quantities are exact JSON numbers above
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("delivered", 1)
    assert notification.delivered_at is not None
    (attempt,) = DeliveryAttempt.objects.all()
    assert (attempt.succeeded, attempt.response_status, attempt.error) == (True, 200, "")


def test_sign_is_hmac_sha256_of_timestamp_dot_body():
    digest = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("s3cret", 1700000000, b"{}") == f"t=1700000000,v1={digest}"


def test_a_500_is_retried_and_the_next_try_delivers(acme, receiver, fast_retries):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    receiver.statuses = [500]
    notification = enqueue(acme.operator)

    assert notification_deliver(notification.pk) == Notification.Status.PENDING
    assert notification_deliver(notification.pk) == Notification.Status.DELIVERED

    attempts = list(DeliveryAttempt.objects.order_by("pk"))
    assert [(a.succeeded, a.response_status) for a in attempts] == [(False, 500), (True, 200)]
    assert attempts[0].error == "HTTP 500"
    assert all(attempt.duration_ms >= 0 for attempt in attempts)
    assert len(receiver.requests) == 2
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("delivered", 2)


def test_it_gives_up_after_the_attempt_limit_recording_every_attempt(acme, receiver, fast_retries):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    receiver.statuses = [500] * 10
    notification = enqueue(acme.operator)

    for _ in range(5):  # the sweep, run more often than the limit
        notifications_deliver_due()

    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("failed", 3)
    assert len(receiver.requests) == 3
    attempts = DeliveryAttempt.objects.filter(notification=notification)
    assert [(a.succeeded, a.response_status) for a in attempts] == [(False, 500)] * 3


def test_retries_back_off_exponentially_up_to_an_hour(acme, receiver, settings):
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 30
    settings.TALLY["NOTIFICATION_MAX_ATTEMPTS"] = 20
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    receiver.statuses = [500] * 20
    notification = enqueue(acme.operator)
    now = timezone.now()

    waits = []
    for _ in range(9):
        assert notification_deliver(notification.pk, now=now) == Notification.Status.PENDING
        assert notification_deliver(notification.pk, now=now) is None  # not due yet
        notification.refresh_from_db()
        waits.append(int((notification.next_attempt_at - now).total_seconds()))
        now = notification.next_attempt_at

    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert DeliveryAttempt.objects.count() == 9


def test_a_connection_failure_is_recorded_and_never_raises(acme, receiver, fast_retries):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    receiver.shutdown()
    receiver.server_close()  # nothing listens there any more
    notification = enqueue(acme.operator)

    assert notification_deliver(notification.pk) == Notification.Status.PENDING

    (attempt,) = DeliveryAttempt.objects.all()
    assert not attempt.succeeded and attempt.response_status is None
    assert attempt.error.startswith("ConnectionError")
    assert len(attempt.error) <= 500


def test_without_an_endpoint_a_notification_is_skipped(acme, globex, receiver):
    webhook_endpoint_set(operator=globex.operator, url=receiver.url, enabled=False)
    mine, theirs = enqueue(acme.operator), enqueue(globex.operator)

    assert notification_deliver(mine.pk) == Notification.Status.SKIPPED
    assert notifications_deliver_due() == 0

    theirs.refresh_from_db()
    assert theirs.status == Notification.Status.SKIPPED  # disabled counts as none
    assert not receiver.requests and not DeliveryAttempt.objects.exists()


def test_the_sweep_delivers_due_notifications_and_skips_the_rest_in_bulk(acme, globex, receiver):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    notifications_enqueue_many(
        notifications.NotificationItem(tenant.operator.pk, "meter.period_closed", {"n": n})
        for n in range(3)
        for tenant in (acme, globex)
    )

    assert deliver_due_notifications() == 3

    statuses = Notification.objects.values_list("operator_id", "status")
    assert (
        sorted(status for operator, status in statuses if operator == acme.operator.pk)
        == ["delivered"] * 3
    )
    assert {status for operator, status in statuses if operator == globex.operator.pk} == {
        "skipped"
    }
    assert len(receiver.requests) == 3


def test_a_delivered_notification_is_not_sent_again(acme, receiver):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    notification = enqueue(acme.operator)

    deliver_notification(str(notification.pk))
    deliver_notification(str(notification.pk))  # a duplicate or retried task
    notifications_deliver_due()

    assert len(receiver.requests) == 1


def test_a_notification_claimed_by_another_worker_is_left_to_it(acme, receiver):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    notification = enqueue(acme.operator)
    lease = timezone.now() + datetime.timedelta(minutes=1)
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=lease)

    assert notification_deliver(notification.pk) is None
    assert notifications_deliver_due() == 0
    assert not receiver.requests


def test_resend_queues_a_failed_notification_with_fresh_attempts(acme, receiver, fast_retries):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    receiver.statuses = [500] * 3
    notification = enqueue(acme.operator)
    for _ in range(3):
        notification_deliver(notification.pk)
    notification.refresh_from_db()
    assert notification.status == Notification.Status.FAILED

    notification_resend(notification=notification)
    assert notification_deliver(notification.pk) == Notification.Status.DELIVERED

    notification.refresh_from_db()
    assert notification.attempts == 1
    assert DeliveryAttempt.objects.filter(notification=notification).count() == 4


def test_the_signing_secret_is_made_once_and_kept_on_changes(acme):
    first = webhook_endpoint_set(operator=acme.operator, url="https://hooks.example.com/a")
    second = webhook_endpoint_set(
        operator=acme.operator, url="https://hooks.example.com/b", enabled=False
    )

    assert first.signing_secret.startswith("whsec_") and len(first.signing_secret) > 40
    assert second.signing_secret == first.signing_secret
    assert (second.url, second.enabled) == ("https://hooks.example.com/b", False)


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_never_fails_the_writer(monkeypatch):

    def broken(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(deliver_notification, "apply_async", broken)
    monkeypatch.setattr(deliver_due_notifications, "apply_async", broken)
    operator = OperatorFactory(name="Initech")

    enqueue(operator)  # on_commit runs at once outside a transaction
    notifications_enqueue_many(
        [notifications.NotificationItem(operator.pk, "meter.period_closed", {})]
    )

    assert Notification.objects.count() == 2


def test_a_failing_endpoint_waits_for_the_next_sweep_without_holding_up_others(
    acme, globex, receiver, fast_retries
):
    healthy = Receiver()
    threading.Thread(target=healthy.serve_forever, args=(0.05,), daemon=True).start()
    try:
        webhook_endpoint_set(operator=acme.operator, url=receiver.url)
        webhook_endpoint_set(operator=globex.operator, url=healthy.url)
        receiver.statuses = [500] * 10
        for _ in range(2):
            enqueue(acme.operator)
            enqueue(globex.operator)

        assert notifications_deliver_due() == 3

        assert len(receiver.requests) == 1  # acme's second waits for the next sweep
        assert len(healthy.requests) == 2
    finally:
        healthy.shutdown()
        healthy.server_close()
