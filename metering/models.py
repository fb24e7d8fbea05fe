from __future__ import annotations

import re
import uuid
from decimal import Decimal

from django.db import models
from django.utils.timezone import now

from common.json import ExactJSONDecoder, ExactJSONEncoder, normalize_decimal
from tenants.models import Operator

# Meter values and capacities: exact decimals with room for large counters.
VALUE_DIGITS = 38
VALUE_PLACES = 10


def value_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=VALUE_DIGITS, decimal_places=VALUE_PLACES, **kwargs)


def client_json_field(**kwargs) -> models.JSONField:
    """JSON a client sent (custom fields, thresholds): fractions stay exact decimals."""
    return models.JSONField(encoder=ExactJSONEncoder, decoder=ExactJSONDecoder, **kwargs)


class Customer(models.Model):
    """Someone an operator meters usage for, keyed by the operator's own id for them
    (the API's `userId` / `customerId`). Created on first use."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="customers")
    external_id = models.CharField(max_length=320)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "external_id"], name="customer_unique_external_id"
            ),
        ]

    def __str__(self) -> str:
        if self.name and self.name != self.external_id:
            return f"{self.name} ({self.external_id})"
        return self.external_id


METER_TYPE_NAME_PATTERN = re.compile(r"^[\w\s().-]+$")


def meter_type_name_problem(name: str) -> str | None:
    """Why `name` cannot name a meter type, or None (the API's and the admin's rule)."""
    if not METER_TYPE_NAME_PATTERN.match(name):
        return "May contain only letters, digits, spaces and - _ . ( )."
    return None


class MeterType(models.Model):
    """What is measured and how: the aggregation, unit, capacity, thresholds and the cron
    schedule (in the type's own IANA timezone) on which its meters reset.

    A changed schedule applies from each meter's next period: a meter's current period
    end is stored on the meter and is not moved by an edit.
    """

    class Aggregation(models.TextChoices):
        SUM = "Sum"
        INCREMENT = "Increment"
        MAX = "Max"
        MIN = "Min"

    DEFAULT_CATEGORY = "DEFAULT"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="meter_types")
    name = models.CharField(max_length=80)
    # NULL, not "", when absent: the unique constraint applies only to set references.
    external_ref = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    category = models.CharField(max_length=50, default=DEFAULT_CATEGORY)
    description = models.CharField(max_length=200, blank=True, default="")
    unit = models.CharField(max_length=50)
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    capacity = value_field(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="Etc/UTC")
    # Five crontab fields, "minute hour day month weekday" (the API's resetSchedule).
    reset_cron = models.CharField(max_length=120)
    # At most five, in the stored form of metering.thresholds (read it with that module).
    thresholds = client_json_field(default=list, blank=True)
    active_from = models.DateTimeField(null=True, blank=True)
    active_to = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=now, editable=False)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["operator", "name"], name="metertype_unique_name"),
            models.UniqueConstraint(
                fields=["operator", "external_ref"],
                condition=models.Q(external_ref__isnull=False),
                name="metertype_unique_external_ref",
            ),
        ]
        indexes = [
            models.Index(fields=["operator", "category"], name="metertype_category_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def is_active_at(self, moment) -> bool:
        if self.active_from is not None and moment < self.active_from:
            return False
        return self.active_to is None or moment < self.active_to


class MeterQuerySet(models.QuerySet):
    def due_for_reset(self, now):
        """Meters whose period has ended (served by the period_end index)."""
        return self.filter(period_end__lte=now)


class Meter(models.Model):
    """One customer's running counter for one meter type and meter key.

    `value` is the current period's aggregate; `group_breakdowns` splits it by the value
    of a group field; `carry_first`/`carry_last` hold the period's first and last record.
    Capacity and thresholds here override the type's when set.

    Periods: the first runs from the meter's creation to its schedule's next fire, and
    takes every record whose event time is before the creation too (usage that happened
    a moment before its meter existed still counts); each later period runs from one
    fire to the next. So the meter is in its first period exactly while
    `period_start <= created_at`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="meters")
    meter_type = models.ForeignKey(MeterType, on_delete=models.PROTECT, related_name="meters")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="meters")
    meter_key = models.CharField(max_length=36)
    # The customer's external id, kept here for lookups and uniqueness.
    user_id = models.CharField(max_length=320)
    custom_fields = client_json_field(default=dict, blank=True)
    capacity = value_field(null=True, blank=True)
    # None: the meter type's thresholds apply; stored as metering.thresholds says.
    thresholds = client_json_field(null=True, blank=True)
    delete_on_reset = models.BooleanField(default=False)

    value = value_field(default=Decimal(0))
    # {"<group value>": "<decimal>"}; decimals as strings keep them exact in JSON.
    group_breakdowns = models.JSONField(default=dict, blank=True)
    carry_first = models.JSONField(null=True, blank=True)
    carry_last = models.JSONField(null=True, blank=True)
    record_count = models.BigIntegerField(default=0)
    first_event_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    created_at = models.DateTimeField(default=now, editable=False)
    updated_at = models.DateTimeField(default=now)

    objects = MeterQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["meter_type", "meter_key", "user_id"], name="meter_unique_identity"
            ),
        ]
        indexes = [
            models.Index(fields=["period_end"], name="meter_period_end_idx"),
            models.Index(fields=["operator", "user_id"], name="meter_user_idx"),
            models.Index(fields=["operator", "meter_key"], name="meter_key_idx"),
        ]

    def __str__(self) -> str:
        # "carol@example.com · API calls": whose usage, of what (reads the meter type).
        return f"{self.user_id} · {self.meter_type.name}"

    @property
    def effective_capacity(self) -> Decimal | None:
        return self.capacity if self.capacity is not None else self.meter_type.capacity

    @property
    def effective_thresholds(self) -> list[dict]:
        return self.thresholds if self.thresholds is not None else self.meter_type.thresholds


class MeterPeriod(models.Model):
    """A closed period of a meter: what it counted between two resets.

    Kept when the meter itself is deleted (deleteOnReset), so identity fields are copied.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    meter = models.ForeignKey(Meter, null=True, on_delete=models.SET_NULL, related_name="periods")
    # Deleting a meter type (allowed once it has no meters) takes its history with it.
    meter_type = models.ForeignKey(MeterType, on_delete=models.CASCADE, related_name="+")
    meter_key = models.CharField(max_length=36)
    user_id = models.CharField(max_length=320)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    value = value_field(default=Decimal(0))
    group_breakdowns = models.JSONField(default=dict, blank=True)
    carry_first = models.JSONField(null=True, blank=True)
    carry_last = models.JSONField(null=True, blank=True)
    record_count = models.BigIntegerField(default=0)
    # Event times of carry_first / carry_last, so a late record can tell whether it is
    # the period's new first or last record (copied from the meter at close).
    first_event_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(default=now)
    # Set when a late record changed the period after it closed.
    corrected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A period closes once, whoever runs the reset.
            models.UniqueConstraint(fields=["meter", "period_start"], name="period_unique_start"),
        ]
        indexes = [
            models.Index(
                fields=["operator", "meter_type", "period_start"], name="period_type_start_idx"
            ),
            # A late record finds its period by the meter's identity, which outlives a
            # meter deleted on reset.
            models.Index(
                fields=["operator", "meter_type", "meter_key", "user_id", "period_start"],
                name="period_identity_idx",
            ),
        ]
        ordering = ["-period_start"]

    def __str__(self) -> str:
        return (
            f"{self.user_id} · {self.meter_type.name} · "
            f"{self.period_start:%Y-%m-%d %H:%M} → {self.period_end:%Y-%m-%d %H:%M}"
        )


class UsageRollup(models.Model):
    """Hourly usage and revenue per operator x customer x meter type x account, written
    with every update so reports never scan records.

    `value` follows the type's aggregation within the hour (a sum for Sum/Increment, the
    extreme for Max/Min). `revenue` is what the hour's usage added to its pricing cycle's
    charge, in the operator's base currency (always summed). `account_id` is the billing
    account the usage was attributed to (`metering.revenue`), or "" for none.
    """

    # The composite indexes lead with the operator: no index of its own to maintain.
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    meter_type = models.ForeignKey(MeterType, on_delete=models.CASCADE, related_name="+")
    user_id = models.CharField(max_length=320)
    account_id = models.CharField(max_length=320, blank=True, default="")
    hour = models.DateTimeField()
    value = value_field(default=Decimal(0))
    revenue = value_field(default=Decimal(0))
    record_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Customer, then hour: a customer's usage over a window is one index range.
            models.UniqueConstraint(
                fields=["operator", "user_id", "hour", "meter_type", "account_id"],
                name="rollup_unique_bucket",
            ),
        ]
        indexes = [
            models.Index(fields=["operator", "account_id", "hour"], name="rollup_account_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} · {self.meter_type.name} · {self.hour:%Y-%m-%d %H}:00 UTC"


class UsageTypeRollup(models.Model):
    """Hourly usage and revenue per operator x meter type, over all customers: what a
    query that neither filters nor groups by customer or account reads (a few hundred
    rows for a month, where the per-customer rollup holds one per customer). Written in
    the same statement batch as `UsageRollup`; Max/Min keep the extreme across
    customers too."""

    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    meter_type = models.ForeignKey(MeterType, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    value = value_field(default=Decimal(0))
    revenue = value_field(default=Decimal(0))
    record_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "meter_type", "hour"], name="typerollup_unique_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.meter_type.name} · {self.hour:%Y-%m-%d %H}:00 UTC"


class CycleRollup(models.Model):
    """Usage and revenue of one billing account and meter type in one pricing cycle,
    stored against the cycle's start (the *_FOR_CYCLE metrics). `usage` is the cycle's
    cumulative usage (the extreme for Max/Min types); `revenue` is its charge under the
    plan of the cycle, in the operator's base currency, kept exact."""

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(
        "BillingAccount", on_delete=models.CASCADE, related_name="cycle_rollups"
    )
    meter_type = models.ForeignKey(MeterType, on_delete=models.CASCADE, related_name="+")
    # The account's customer and account id, copied for filtering without joins.
    user_id = models.CharField(max_length=320)
    account_key = models.CharField(max_length=320)
    plan = models.ForeignKey("PricePlan", on_delete=models.SET_NULL, null=True, related_name="+")
    cycle_start = models.DateField()
    cycle_end = models.DateField()
    usage = value_field(null=True, blank=True)  # None: nothing counted yet
    revenue = value_field(default=Decimal(0))
    record_count = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "meter_type", "cycle_start"], name="cyclerollup_unique_cycle"
            ),
        ]
        indexes = [
            models.Index(fields=["operator", "cycle_start"], name="cyclerollup_start_idx"),
        ]
        ordering = ["account", "meter_type", "cycle_start"]

    def __str__(self) -> str:
        return (
            f"{self.account_key} · {self.meter_type.name} · {self.cycle_start} → {self.cycle_end}"
        )


class Alert(models.Model):
    """A threshold reached in one period of one meter. The unique constraint makes it
    fire once per meter, period and threshold; each alert is also queued as a
    `meter.threshold_crossed` notification."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    meter = models.ForeignKey(Meter, null=True, on_delete=models.SET_NULL, related_name="alerts")
    period_start = models.DateTimeField()
    # "absoluteValue:800", "capacityPercentage:80#EMAIL_MAINTENANCE": Threshold.key.
    threshold_key = models.CharField(max_length=200)
    threshold_name = models.CharField(max_length=100, blank=True, default="")
    # The threshold as configured when it fired (stored form, with its custom fields).
    threshold = client_json_field(default=dict)
    threshold_value = value_field()
    meter_value = value_field()
    crossed_at = models.DateTimeField(default=now)

    class Meta:
        ordering = ["-crossed_at"]
        # The dashboard's recent alerts of one operator.
        indexes = [
            models.Index(fields=["operator", "-crossed_at"], name="alert_operator_recent_idx")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["meter", "period_start", "threshold_key"], name="alert_unique_once"
            ),
        ]

    def __str__(self) -> str:
        threshold = self.threshold_name or self.threshold_key
        return f"{threshold} reached at {normalize_decimal(self.meter_value)}"


class WebhookEndpoint(models.Model):
    """Where an operator's notifications go, and the secret that signs them."""

    operator = models.OneToOneField(
        Operator, on_delete=models.CASCADE, primary_key=True, related_name="webhook_endpoint"
    )
    url = models.URLField(max_length=2000)
    signing_secret = models.CharField(max_length=128)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=now, editable=False)

    def __str__(self) -> str:
        return self.url


class Notification(models.Model):
    """The outbox: one event to deliver to the operator's webhook."""

    class Kind(models.TextChoices):
        THRESHOLD_CROSSED = "meter.threshold_crossed"
        PERIOD_CLOSED = "meter.period_closed"
        PERIOD_CORRECTED = "meter.period_corrected"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # gave up after the last retry
        SKIPPED = "skipped"  # no endpoint configured

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=now)
    created_at = models.DateTimeField(default=now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["status", "next_attempt_at"],
                name="notification_due_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["operator", "created_at"], name="notification_operator_idx"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        # The payload names the meter (user id and meter type) for meter notifications.
        payload = self.payload if isinstance(self.payload, dict) else {}
        about = " · ".join(
            str(payload[key]) for key in ("userId", "meterTypeName") if payload.get(key)
        )
        kind = self.get_kind_display()
        return f"{kind}: {about} ({self.status})" if about else f"{kind} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at delivering a notification: what came back and how long it took."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    attempted_at = models.DateTimeField(default=now)
    succeeded = models.BooleanField(default=False)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-attempted_at"]

    def __str__(self) -> str:
        outcome = "ok" if self.succeeded else (self.response_status or self.error or "failed")
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {outcome}"


# -- Pricing: accounts, plans, assignments, exchange rates --------------------------------


class BillingAccount(models.Model):
    """What a customer is invoiced through (the API's `accountId`), in its invoice
    currency. A customer may have several."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="accounts")
    account_id = models.CharField(max_length=320)
    name = models.CharField(max_length=200, blank=True)
    invoice_currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(default=now, editable=False)
    # Set when pricing changed under usage already applied (a plan assignment made or
    # removed, a plan's rates replaced, the account new): revenue from this day on is
    # computed again from the hourly usage (`metering.revenue.revenue_reprice`).
    reprice_from = models.DateField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "account_id"], name="billingaccount_unique_account_id"
            ),
        ]
        indexes = [
            models.Index(
                fields=["reprice_from"],
                name="billingaccount_reprice_idx",
                condition=models.Q(reprice_from__isnull=False),
            ),
        ]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        if self.name and self.name != self.account_id:
            return f"{self.name} ({self.account_id})"
        return self.account_id


class PricePlan(models.Model):
    """Prices of meter types (its rates), in the operator's base currency."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["operator", "name"], name="priceplan_unique_name"),
        ]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.name


class PlanRate(models.Model):
    """The price of one meter type in a plan: a unit price, or graduated tiers
    (`[{"upTo": 1000, "unitPrice": 0.10}, {"upTo": null, "unitPrice": 0.08}]`, each
    tier priced on the cycle's cumulative usage that falls in it)."""

    class Model(models.TextChoices):
        PER_UNIT = "PER_UNIT"
        GRADUATED = "GRADUATED"

    plan = models.ForeignKey(PricePlan, on_delete=models.CASCADE, related_name="rates")
    meter_type = models.ForeignKey(MeterType, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=16, choices=Model.choices)
    unit_price = value_field(null=True, blank=True)
    tiers = client_json_field(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "meter_type"], name="planrate_unique_type"),
        ]

    def __str__(self) -> str:
        return f"{self.plan.name} · {self.meter_type.name}"


class PlanAssignment(models.Model):
    """An account on a plan from a date (UTC), invoiced in cycles of `cycle` anchored on
    `anchor_day` (metering.cycles). A later assignment closes the running cycle."""

    class Cycle(models.TextChoices):
        WEEKLY = "WEEKLY"
        MONTHLY = "MONTHLY"
        QUARTERLY = "QUARTERLY"
        YEARLY = "YEARLY"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(
        BillingAccount, on_delete=models.CASCADE, related_name="assignments"
    )
    plan = models.ForeignKey(PricePlan, on_delete=models.PROTECT, related_name="assignments")
    effective_from = models.DateField()
    cycle = models.CharField(max_length=16, choices=Cycle.choices)
    anchor_day = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "effective_from"], name="planassignment_one_per_day"
            ),
        ]
        ordering = ["account", "effective_from"]

    def __str__(self) -> str:
        return f"{self.account} on {self.plan} from {self.effective_from}"


class ExchangeRate(models.Model):
    """How many units of `currency` one unit of the operator's base currency buys on
    `date` (the latest rate on or before a day applies)."""

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    currency = models.CharField(max_length=3)
    date = models.DateField()
    rate = value_field()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "currency", "date"], name="exchangerate_unique_day"
            ),
        ]
        ordering = ["currency", "-date"]

    def __str__(self) -> str:
        return f"{self.currency} on {self.date}: {normalize_decimal(self.rate)}"
