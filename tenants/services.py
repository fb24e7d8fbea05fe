"""Writes for operators, their OAuth applications, platform keys and platform settings."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application

from common.db import deltas_fold
from tenants import accounting
from tenants.models import (
    CURRENCY_PATTERN,
    ApplicationAccess,
    Operator,
    OperatorMembership,
    PlatformApiKey,
    PlatformSettings,
    UsageCounter,
    UsageCounterDaily,
    UsageCounterDekad,
    UsageCounterDelta,
    UsageCounterMonthly,
    UsageCounterQuarterly,
    UsageCounterYearly,
    UsageFold,
)
from tenants.scopes import ALL_SCOPES, normalize_scopes

logger = logging.getLogger(__name__)

# last_active_at is written at most this often per operator; a Redis key gates the write.
LAST_ACTIVE_RESOLUTION = timedelta(minutes=1)


def operator_create(*, name: str) -> Operator:
    """Create an active operator."""
    name = name.strip()
    if not name:
        raise ValueError("An operator needs a name.")
    return Operator.objects.create(name=name)


def operator_rename(*, operator: Operator, name: str) -> Operator:
    """Change an operator's display name."""
    name = name.strip()
    if not name:
        raise ValueError("An operator needs a name.")
    operator.name = name
    operator.save(update_fields=["name"])
    return operator


def operator_set_base_currency(*, operator: Operator, currency: str) -> Operator:
    """Set the currency (ISO 4217) the operator's price plans are written in. Prices are
    not converted: a plan's numbers are read in the new currency from now on."""
    currency = currency.strip().upper()
    if not CURRENCY_PATTERN.match(currency):
        raise ValueError("A base currency is an ISO 4217 code of three letters, such as EUR.")
    operator.base_currency = currency
    operator.save(update_fields=["base_currency"])
    return operator


def operator_membership_set(
    *, operator: Operator, user, role: str = OperatorMembership.Role.VIEWER
) -> OperatorMembership:
    """Give a browser user access to the operator's dashboard, or change their role."""
    if role not in OperatorMembership.Role.values:
        raise ValueError(f"Unknown role {role!r}.")
    membership, _ = OperatorMembership.objects.update_or_create(
        operator=operator, user=user, defaults={"role": role}
    )
    return membership


def operator_set_status(*, operator: Operator, status: str) -> Operator:
    """Suspend or reactivate an operator. Suspension revokes nothing; tokens are refused."""
    if status not in Operator.Status.values:
        raise ValueError(f"Unknown operator status {status!r}.")
    operator.status = status
    operator.save(update_fields=["status"])
    logger.info("Operator %s is now %s", operator.id, status)
    return operator


# Per process: when this process last passed an operator's activity on to Redis.
_last_marked: dict = {}


def operator_mark_active(*, operator_id) -> None:
    """Record that the operator used the API, without a write per request: at most once a
    minute per process reaches Redis, and once a minute overall reaches the database."""
    seconds = LAST_ACTIVE_RESOLUTION.total_seconds()
    moment = time.monotonic()
    if moment - _last_marked.get(operator_id, -seconds) < seconds:
        return
    _last_marked[operator_id] = moment
    if not _cache_add_once(f"operator-active:{operator_id}", seconds):
        return
    Operator.objects.filter(pk=operator_id).update(last_active_at=timezone.now())


def _cache_add_once(key: str, seconds: float) -> bool:
    """True the first time `key` is set across processes within `seconds`. Without
    Redis it answers False: last-activity stamps wait, requests never fail for them."""
    try:
        return cache.add(key, 1, seconds)
    except Exception:
        logger.warning("Redis is unreachable; activity stamps are skipped for now.")
        return False


@dataclass(frozen=True)
class IssuedApplication:
    access: ApplicationAccess
    client_secret: str  # shown once, never stored in plain text

    @property
    def client_id(self) -> str:
        return self.access.application.client_id


def application_access_create(
    *, operator: Operator, name: str, scopes: Iterable[str] | None = None
) -> IssuedApplication:
    """Create a client-credentials OAuth application for `operator`.

    `scopes` defaults to every scope; short forms are accepted. The secret is returned
    once and stored hashed by django-oauth-toolkit.
    """
    allowed = normalize_scopes(ALL_SCOPES if scopes is None else scopes)
    name = name.strip()
    if not name:
        raise ValueError("An application needs a name.")
    secret = _new_client_secret()
    with transaction.atomic():
        application = Application.objects.create(
            name=name,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            client_secret=secret,
            hash_client_secret=True,
            skip_authorization=True,
        )
        access = ApplicationAccess.objects.create(
            operator=operator,
            application=application,
            scopes=allowed,
            **_secret_check_fields(secret, application.client_secret),
        )
    return IssuedApplication(access=access, client_secret=secret)


def application_access_update_scopes(
    *, access: ApplicationAccess, scopes: Iterable[str]
) -> ApplicationAccess:
    """Change what new tokens may carry; existing tokens lose scopes they no longer have."""
    access.scopes = normalize_scopes(scopes)
    with transaction.atomic():
        access.save(update_fields=["scopes"])
        # A narrower grant must take effect now, not when old tokens expire.
        AccessToken.objects.filter(application=access.application).delete()
    return access


def application_access_rename(*, access: ApplicationAccess, name: str) -> ApplicationAccess:
    """Change the application's display name (its client id and secret stay)."""
    name = name.strip()
    if not name:
        raise ValueError("An application needs a name.")
    application = access.application
    if application.name != name:
        application.name = name
        application.save(update_fields=["name", "updated"])
    return access


def application_access_rotate_secret(*, access: ApplicationAccess) -> IssuedApplication:
    """Give the application a new secret and revoke every token issued with the old one."""
    secret = _new_client_secret()
    with transaction.atomic():
        application = access.application
        application.client_secret = secret
        application.save(update_fields=["client_secret", "updated"])
        fields = _secret_check_fields(secret, application.client_secret)
        ApplicationAccess.objects.filter(pk=access.pk).update(**fields)
        for name, value in fields.items():
            setattr(access, name, value)
        AccessToken.objects.filter(application=application).delete()
    return IssuedApplication(access=access, client_secret=secret)


def application_access_revoke(*, access: ApplicationAccess) -> None:
    """Revoke an application for good: its OAuth client is deleted with its tokens (and
    the access row with it), so its client id and secret get no new token and its
    tokens are refused (within TALLY["TOKEN_CACHE_SECONDS"]). Revoking one already
    revoked changes nothing."""
    with transaction.atomic():
        Application.objects.filter(pk=access.application_id).delete()


def client_secret_verify(
    *, access: ApplicationAccess | None, provided: str, stored: str, slow_check
) -> bool:
    """Is `provided` the client secret whose slow hash is `stored`?

    While the access row holds a quick check made with this very stored hash, the
    answer costs one SHA-256, right or wrong: guessing secrets is no CPU lever. Else
    (an application from before the quick check, or whose secret was changed outside
    Tally's services) `slow_check` decides once, and a right secret leaves the quick
    check for next time. A rotated secret is a new stored hash: the old quick check
    no longer applies, at once.
    """
    if access is not None and access.secret_hash_sha256 == _sha256(stored):
        return hmac.compare_digest(access.secret_sha256, _sha256(provided))
    if not slow_check(provided, stored):
        return False
    if access is not None:
        ApplicationAccess.objects.filter(pk=access.pk).update(
            **_secret_check_fields(provided, stored)
        )
    return True


def _secret_check_fields(secret: str, stored_hash: str) -> dict[str, str]:
    return {"secret_sha256": _sha256(secret), "secret_hash_sha256": _sha256(stored_hash)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _new_client_secret() -> str:
    return secrets.token_urlsafe(48)


def platform_key_digest(raw_key: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is enough; no slow hash is needed.
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedPlatformKey:
    key: PlatformApiKey
    raw_key: str  # shown once


def platform_key_create(*, name: str, created_by=None) -> IssuedPlatformKey:
    """Create a platform API key; the returned raw key is the only copy."""
    name = name.strip()
    if not name:
        raise ValueError("A platform key needs a name.")
    raw_key = PlatformApiKey.PREFIX + secrets.token_urlsafe(32)
    key = PlatformApiKey.objects.create(
        name=name,
        display_prefix=raw_key[: len(PlatformApiKey.PREFIX) + 6],
        key_digest=platform_key_digest(raw_key),
        created_by=created_by,
    )
    return IssuedPlatformKey(key=key, raw_key=raw_key)


def platform_key_revoke(*, key: PlatformApiKey) -> PlatformApiKey:
    PlatformApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    key.refresh_from_db(fields=["revoked_at"])
    return key


def platform_key_rotate(*, key: PlatformApiKey, created_by=None) -> IssuedPlatformKey:
    """Replace a key: issue a new one under the same name and revoke the old one, in
    one transaction. A revoked key is not rotated (ValueError): it may have been
    revoked because it leaked, and its successor is issued by hand."""
    with transaction.atomic():
        locked = PlatformApiKey.objects.select_for_update().get(pk=key.pk)
        if locked.is_revoked:
            raise ValueError(f"The key {locked.name!r} is revoked.")
        issued = platform_key_create(name=locked.name, created_by=created_by)
        platform_key_revoke(key=locked)
    key.revoked_at = locked.revoked_at
    return issued


def platform_key_mark_used(*, key: PlatformApiKey) -> None:
    if _cache_add_once(f"platform-key-used:{key.pk}", LAST_ACTIVE_RESOLUTION.total_seconds()):
        PlatformApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())


def platform_settings_update(
    *,
    name: str,
    contact_email: str,
    webhook_url: str,
    billing: Mapping[str, Decimal] | None = None,
) -> PlatformSettings:
    """Replace the platform profile (PUT semantics) and set the billing weights named in
    `billing` (field name → units, at least 0); weights not named keep their values, so
    a profile update never resets what the billing report charges."""
    billing = dict(billing or {})
    unknown = set(billing) - set(PlatformSettings.BILLING_WEIGHTS)
    if unknown:
        raise ValueError(f"Unknown billing weight {sorted(unknown)[0]!r}.")
    for field, weight in billing.items():
        if not isinstance(weight, Decimal) or not weight.is_finite() or weight < 0:
            raise ValueError(f"{field} must be a decimal number of at least 0.")
    with transaction.atomic():
        row = PlatformSettings.objects.select_for_update().filter(
            id=PlatformSettings.SINGLETON_ID
        ).first() or PlatformSettings(id=PlatformSettings.SINGLETON_ID)
        row.name = name
        row.contact_email = contact_email
        row.webhook_url = webhook_url
        for field, weight in billing.items():
            setattr(row, field, weight)
        row.save()
    return row


# Usage counters (API-call, gateway and event accounting; see tenants.accounting)

GATEWAY_REQUEST = accounting.GATEWAY_REQUEST
# Fold markers outlive their folding keys (kept in Redis at most REDIS_HOURS) this much.
FOLD_MARKER_MARGIN = timedelta(days=1)


def usage_counter_add(
    *,
    operator_id,
    kind: str,
    key: str = "",
    connection: str = "",
    count: int = 1,
    at: datetime | None = None,
) -> None:
    """Add `count` to the operator's counter for the hour of `at` (default: now), in the
    caller's transaction: for counts that must commit or roll back with a write (most
    counts go to Redis instead, `accounting.usage_count`).

    Appends one delta row: no row is updated, so concurrent writers never wait.
    """
    hour = (at or timezone.now()).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    UsageCounterDelta.objects.create(
        operator_id=operator_id, hour=hour, kind=kind, key=key, connection=connection, count=count
    )


def usage_counters_fold(*, now: datetime | None = None) -> int:
    """Fold usage counts into the hourly, daily, dekad, monthly, quarterly and yearly
    counters; returns how many deltas were folded.

    1. Each hour's counts in Redis are renamed to a folding key, and folding keys a
       previous run left behind are taken up again (`tenants.accounting`).
    2. Each folding key's counts become delta rows, in the statement that inserts its
       marker: exactly once, whoever folds it and however often (`_usage_fold_one`).
    3. All deltas, these and those written with ingestions, move into the six sets of
       buckets in one statement (`common.db.deltas_fold`).
    4. Markers older than any folding key can be are deleted.
    A Redis that cannot be reached skips steps 1-2; its counts wait for the next run.
    """
    now = now or timezone.now()
    try:
        foldings = accounting.foldings_left_over() + accounting.hours_claim()
    except redis.exceptions.RedisError as error:
        logger.warning("Redis is unreachable (%s); usage counts there wait.", error)
        foldings = []
    for folding in foldings:
        try:
            _usage_fold_one(folding)
        except redis.exceptions.RedisError as error:
            logger.warning("Could not read %s (%s); the next fold will.", folding.key, error)
    folded = deltas_fold(
        deltas_table=UsageCounterDelta._meta.db_table,
        buckets_table=UsageCounter._meta.db_table,
        keys=USAGE_BUCKET_KEYS,
        also=[
            (UsageCounterDaily._meta.db_table, _bucket_keys("day"), []),
            (UsageCounterDekad._meta.db_table, _bucket_keys("dekad"), []),
            (UsageCounterMonthly._meta.db_table, _bucket_keys("month"), []),
            (UsageCounterQuarterly._meta.db_table, _bucket_keys("quarter"), []),
            (UsageCounterYearly._meta.db_table, _bucket_keys("year"), []),
        ],
        # UTC days, dekads, months, quarters and years, whatever the session's time zone.
        computed={
            "day": "(hour AT TIME ZONE 'UTC')::date",
            "dekad": DEKAD_OF_HOUR,
            "month": "date_trunc('month', hour AT TIME ZONE 'UTC')::date",
            "quarter": "date_trunc('quarter', hour AT TIME ZONE 'UTC')::date",
            "year": "date_trunc('year', hour AT TIME ZONE 'UTC')::date",
        },
    )
    kept = timedelta(hours=settings.TALLY["USAGE"]["REDIS_HOURS"]) + FOLD_MARKER_MARGIN
    UsageFold.objects.filter(folded_at__lt=now - kept).delete()
    return folded


USAGE_BUCKET_KEYS = ["operator_id", "hour", "kind", "key", "connection"]
# The first day of the hour's dekad: its month's 1st, 11th or 21st (UTC).
DEKAD_OF_HOUR = (
    "(date_trunc('month', hour AT TIME ZONE 'UTC')::date"
    " + least((extract(day FROM hour AT TIME ZONE 'UTC')::integer - 1) / 10, 2) * 10)"
)


def _bucket_keys(period: str) -> list[str]:
    return [period if column == "hour" else column for column in USAGE_BUCKET_KEYS]


# The marker and the deltas in one statement: the marker's primary key lets one fold
# through; a second waits for the first to commit, then inserts no marker and so no
# deltas. Counts of operators deleted meanwhile are dropped (the buckets reference them).
_FOLD_ONE_SQL = f"""
WITH marker AS (
    INSERT INTO {UsageFold._meta.db_table} (id, hour, folded_at, counted)
    VALUES (%(id)s, %(hour)s, now(), %(counted)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), added AS (
    INSERT INTO {UsageCounterDelta._meta.db_table} (
        operator_id, hour, kind, key, connection, count
    )
    SELECT c.operator_id, %(hour)s, c.kind, c.key, c.connection, c.count
    FROM unnest(%(operators)s::uuid[], %(kinds)s::text[], %(keys)s::text[],
        %(connections)s::text[], %(counts)s::bigint[])
        AS c(operator_id, kind, key, connection, count)
    WHERE EXISTS (SELECT FROM marker)
        AND EXISTS (SELECT FROM {Operator._meta.db_table} o WHERE o.id = c.operator_id)
)
SELECT count(*) FROM marker
"""  # noqa: S608 (our tables)


def _usage_fold_one(folding: accounting.Folding) -> bool:
    """Write a folding key's counts as deltas, unless its marker says they were; True
    when this call wrote them. The key is released once that is committed."""
    counts = accounting.folding_counts(folding)
    params = {
        "id": folding.fold_id,
        "hour": folding.hour,
        "counted": sum(count.n for count in counts),
        "operators": [count.operator_id for count in counts],
        "kinds": [count.kind for count in counts],
        "keys": [count.key for count in counts],
        "connections": [count.connection for count in counts],
        "counts": [count.n for count in counts],
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FOLD_ONE_SQL, params)
        (written,) = cursor.fetchone()
        transaction.on_commit(lambda: accounting.folding_release(folding))
    return bool(written)
