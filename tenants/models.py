from __future__ import annotations

import re
import uuid
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

# ISO 4217 currency codes, as operators' base and accounts' invoice currencies are written.
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


class Operator(models.Model):
    """A tenant: one company sending usage to Tally. Every operator-owned row points here.

    A suspended operator keeps its data but its tokens are refused (403) everywhere and
    no new token is issued for it.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # ISO 4217: the currency price plans are written in and revenue is kept in.
    base_currency = models.CharField(max_length=3, default="USD", db_default="USD")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_active_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status"], name="operator_status_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class OperatorMembership(models.Model):
    """Gives a browser user access to one operator's dashboard."""

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="operator_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["operator", "user"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.operator} ({self.get_role_display()})"


class ApplicationAccess(models.Model):
    """An OAuth2 client-credentials client owned by one operator.

    The django-oauth-toolkit `Application` holds the client id and the hashed secret; this
    row ties it to its operator and lists the scopes its tokens may carry.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, related_name="application_accesses"
    )
    application = models.OneToOneField(
        "oauth2_provider.Application", on_delete=models.CASCADE, related_name="access"
    )
    scopes = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # A quick check of the client secret, so that verifying one is no CPU lever: the
    # SHA-256 of the secret (random, 64 characters: a slow hash adds nothing to it, its
    # slowness protects guessable passwords), valid only while the application's stored
    # hash is still the one whose SHA-256 is kept beside it.
    secret_sha256 = models.CharField(max_length=64, blank=True, default="", editable=False)
    secret_hash_sha256 = models.CharField(max_length=64, blank=True, default="", editable=False)

    class Meta:
        verbose_name = "application access"
        verbose_name_plural = "application accesses"
        indexes = [models.Index(fields=["operator"], name="appaccess_operator_idx")]

    def __str__(self) -> str:
        return self.application.name

    @property
    def client_id(self) -> str:
        return self.application.client_id


def _weight_field(default: Decimal) -> models.DecimalField:
    return models.DecimalField(
        max_digits=20,
        decimal_places=10,
        default=default,
        db_default=default,
        validators=[MinValueValidator(0)],
    )


class PlatformSettings(models.Model):
    """The platform's own profile (one row), read and written by the platform API."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    name = models.CharField(max_length=200, default="Tally")
    contact_email = models.EmailField(blank=True)
    webhook_url = models.URLField(max_length=2000, blank=True)
    # The billing report's units per API call, gateway request, event ingested and
    # (decimal) gigabyte stored. By default every call, request and event is one unit
    # and storage is free.
    billing_api_call_weight = _weight_field(Decimal(1))
    billing_gateway_request_weight = _weight_field(Decimal(1))
    billing_event_weight = _weight_field(Decimal(1))
    billing_storage_gb_weight = _weight_field(Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    BILLING_WEIGHTS = (
        "billing_api_call_weight",
        "billing_gateway_request_weight",
        "billing_event_weight",
        "billing_storage_gb_weight",
    )

    class Meta:
        verbose_name = "platform settings"
        verbose_name_plural = "platform settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="platformsettings_singleton"),
            models.CheckConstraint(
                condition=models.Q(
                    billing_api_call_weight__gte=0,
                    billing_gateway_request_weight__gte=0,
                    billing_event_weight__gte=0,
                    billing_storage_gb_weight__gte=0,
                ),
                name="platformsettings_weights_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def load(cls) -> PlatformSettings:
        settings_row, _ = cls.objects.get_or_create(id=cls.SINGLETON_ID)
        return settings_row


class PlatformApiKey(models.Model):
    """A key for the platform API. Only its SHA-256 digest is stored; the key is shown once."""

    PREFIX = "tly_platform_"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    # The first characters, so staff can tell keys apart without the key itself.
    display_prefix = models.CharField(max_length=32, editable=False)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "platform API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class UsageCounter(models.Model):
    """An hourly count of one kind of platform usage for one operator.

    `kind` says what is counted (`gateway_request`, `api_call`, `event`); `key` names the
    thing it went through (for gateway requests the connector slug, for API calls the
    endpoint category, for events the record type) and `connection` the operator's
    instance of it (a collector id, a webhook endpoint id, `<stream id>/<node id>`); see
    `tenants.accounting`. Writers never update these rows (a per-operator hot row would
    serialise every request of that operator on its commit): counts arrive as
    `UsageCounterDelta` rows (appended by the ingestion statement, or by the fold of the
    counts kept in Redis), and `usage_counters_fold` moves them in here and into the
    daily, dekad and monthly rollups in one statement. `selectors.usage_counts` and
    `selectors.usage_totals` add the pending deltas, so counts are always exact.
    """

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="usage_counters")
    hour = models.DateTimeField()
    kind = models.CharField(max_length=32)
    key = models.CharField(max_length=100, blank=True, default="")
    connection = models.CharField(max_length=100, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "hour", "kind", "key", "connection"],
                name="usagecounter_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["hour", "kind"], name="usagecounter_hour_kind_idx")]

    def __str__(self) -> str:
        return f"{self.kind} · {self.key} · {self.hour:%Y-%m-%d %H}:00 UTC: {self.count}"


class UsageCounterDelta(models.Model):
    """An addition to a `UsageCounter` bucket not folded in yet (append-only)."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    hour = models.DateTimeField()
    kind = models.CharField(max_length=32)
    key = models.CharField(max_length=100, blank=True, default="")
    connection = models.CharField(max_length=100, blank=True, default="")
    count = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.kind} · {self.key} · {self.hour:%Y-%m-%d %H}:00 UTC: +{self.count}"


class _UsageCounterPeriod(models.Model):
    """What the daily, dekad, monthly, quarterly and yearly counters share: the hourly
    buckets' identity and a count; each names the date field its period starts on
    (`PERIOD`)."""

    PERIOD = ""

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32)
    key = models.CharField(max_length=100, blank=True, default="")
    connection = models.CharField(max_length=100, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.kind} · {self.key} · {getattr(self, self.PERIOD)}: {self.count}"


class UsageCounterDaily(_UsageCounterPeriod):
    """The `UsageCounter` buckets of one UTC day, summed: what reports over whole days
    read (a year is 365 rows per bucket instead of 8,760). Written only by the fold, in
    the statement that writes the hourly buckets."""

    PERIOD = "day"
    day = models.DateField()

    class Meta:
        verbose_name = "usage counter (daily)"
        verbose_name_plural = "usage counters (daily)"
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "day", "kind", "key", "connection"],
                name="usagecounterdaily_unique_bucket",
            ),
        ]
        # Reports read a range of days for every operator.
        indexes = [models.Index(fields=["day"], name="usagecounterdaily_day_idx")]


class UsageCounterDekad(_UsageCounterPeriod):
    """The `UsageCounter` buckets of one dekad, summed: the 1st to the 10th, the 11th to
    the 20th, or the 21st to the end of a UTC month (`dekad` is its first day). Reports
    over ranges that cut months read these for most of the days of the partial months
    (`selectors.usage_totals`), so that no range reads more than a few days' rows."""

    PERIOD = "dekad"
    dekad = models.DateField()

    class Meta:
        verbose_name = "usage counter (dekad)"
        verbose_name_plural = "usage counters (dekad)"
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "dekad", "kind", "key", "connection"],
                name="usagecounterdekad_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["dekad"], name="usagecounterdekad_dekad_idx")]


class UsageCounterMonthly(_UsageCounterPeriod):
    """The `UsageCounter` buckets of one UTC calendar month, summed (`month` is its
    first day). A report over a year reads twelve rows per bucket, plus dekad and daily
    rows for the months it covers only in part (`selectors.usage_totals`)."""

    PERIOD = "month"
    month = models.DateField()

    class Meta:
        verbose_name = "usage counter (monthly)"
        verbose_name_plural = "usage counters (monthly)"
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "month", "kind", "key", "connection"],
                name="usagecountermonthly_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["month"], name="usagecountermonthly_month_idx")]

    def __str__(self) -> str:
        return f"{self.kind} · {self.key} · {self.month:%Y-%m}: {self.count}"


class UsageCounterQuarterly(_UsageCounterPeriod):
    """The `UsageCounter` buckets of one UTC calendar quarter, summed (`quarter` is its
    first day: the 1st of January, April, July or October). Ranges that cut years read
    these for most of the months of the partial years (`selectors.usage_windows`)."""

    PERIOD = "quarter"
    quarter = models.DateField()

    class Meta:
        verbose_name = "usage counter (quarterly)"
        verbose_name_plural = "usage counters (quarterly)"
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "quarter", "kind", "key", "connection"],
                name="usagecounterquarterly_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["quarter"], name="usagecounterqtr_quarter_idx")]


class UsageCounterYearly(_UsageCounterPeriod):
    """The `UsageCounter` buckets of one UTC calendar year, summed (`year` is its 1st of
    January). A report over the last twelve months reads this year's row less the
    months and days still to come, instead of a row per month
    (`selectors.usage_windows`)."""

    PERIOD = "year"
    year = models.DateField()

    class Meta:
        verbose_name = "usage counter (yearly)"
        verbose_name_plural = "usage counters (yearly)"
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "year", "kind", "key", "connection"],
                name="usagecounteryearly_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["year"], name="usagecounteryearly_year_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} {self.year:%Y}: {self.count}"


class UsageFold(models.Model):
    """A marker: the counts Redis held under one folding key were written (see
    `tenants.accounting`). Its primary key lets exactly one fold write them; markers
    are deleted once their folding key has expired for certain."""

    id = models.UUIDField(primary_key=True, editable=False)
    hour = models.DateTimeField()
    folded_at = models.DateTimeField(default=timezone.now)
    counted = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "usage fold"
        indexes = [models.Index(fields=["folded_at"], name="usagefold_folded_at_idx")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h folded at {self.folded_at:%Y-%m-%d %H:%M:%S}"
