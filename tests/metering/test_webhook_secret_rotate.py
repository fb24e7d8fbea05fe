"""A new signing secret for the webhook (`webhook_endpoint_rotate_secret`): what is sent
after it is signed with it, retries of older notifications included."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from metering.models import Notification
from metering.notifications import (
    notification_deliver,
    notification_enqueue,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_set,
)

pytestmark = pytest.mark.django_db


def signed_with(secret: str, headers: dict, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["Tally-Signature"].split(","))
    digest = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(fields["v1"], digest.hexdigest())


def test_deliveries_after_a_rotation_are_signed_with_the_new_secret(acme, receiver):
    endpoint = webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    old = endpoint.signing_secret
    queued_before = notification_enqueue(
        operator_id=acme.operator.pk, kind=Notification.Kind.THRESHOLD_CROSSED, payload={"n": 1}
    )

    rotated = webhook_endpoint_rotate_secret(endpoint=endpoint)

    assert rotated.signing_secret.startswith("whsec_") and rotated.signing_secret != old
    assert webhook_endpoint_set(operator=acme.operator, url=receiver.url).signing_secret == (
        rotated.signing_secret
    )
    notification_deliver(queued_before.pk)
    ((headers, body),) = receiver.requests
    assert signed_with(rotated.signing_secret, headers, body)
    assert not signed_with(old, headers, body)
