"""Reads that resolve credentials to the principal behind them."""

from __future__ import annotations

import hashlib

from django.utils import timezone
from oauth2_provider.models import AccessToken

from tenants.models import PlatformApiKey
from tenants.services import platform_key_digest


def access_token_lookup(raw_token: str) -> AccessToken | None:
    """The live access token for `raw_token`, with its application, access and operator.

    Tokens are stored only as a SHA-256 checksum (RFC 9700 storage), so this is one
    indexed lookup.
    """
    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
    token = (
        AccessToken.objects.select_related("application__access__operator")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or token.expires <= timezone.now():
        return None
    return token


def platform_key_lookup(raw_key: str) -> PlatformApiKey | None:
    if not raw_key.startswith(PlatformApiKey.PREFIX):
        return None
    return PlatformApiKey.objects.filter(
        key_digest=platform_key_digest(raw_key), revoked_at__isnull=True
    ).first()


def usage_counts(*, operator_id, kind: str, since=None, until=None) -> dict:
    """The operator's counts of `kind` per (hour, key, connection): folded counters plus
    deltas not folded yet, so the answer is exact at any moment."""
    from django.db.models import Sum

    from tenants.models import UsageCounter, UsageCounterDelta

    totals: dict = {}
    for model in (UsageCounter, UsageCounterDelta):
        rows = model.objects.filter(operator_id=operator_id, kind=kind)
        if since is not None:
            rows = rows.filter(hour__gte=since)
        if until is not None:
            rows = rows.filter(hour__lt=until)
        for row in rows.values("hour", "key", "connection").annotate(total=Sum("count")):
            bucket = (row["hour"], row["key"], row["connection"])
            totals[bucket] = totals.get(bucket, 0) + row["total"]
    return totals
