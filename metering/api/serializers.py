from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api.errors import NON_FIELD
from common.api.serializers import (
    DateTimeField,
    NumberField,
    StrictCharField,
    StrictIntegerField,
    TallyModelSerializer,
    TallySerializer,
)
from common.json import normalize_decimal
from metering.cycles import Schedule
from metering.models import (
    BillingAccount,
    ExchangeRate,
    Meter,
    MeterPeriod,
    MeterType,
    PlanAssignment,
    PlanRate,
    PricePlan,
    meter_type_name_problem,
)
from metering.pricing import PricingInvalid, tiers_parse
from metering.schedule import (
    SCHEDULE_FIELDS,
    ScheduleInvalid,
    cron_problem,
    cron_to_schedule_fields,
    schedule_fields_to_cron,
    timezone_problem,
)
from metering.thresholds import (
    ABSOLUTE,
    ABSOLUTE_SYNONYM,
    MAX_NAME_LENGTH,
    MAX_THRESHOLDS,
    PERCENTAGE,
    ThresholdsInvalid,
    thresholds_parse,
    thresholds_to_stored,
    thresholds_to_wire,
)
from tenants.models import CURRENCY_PATTERN

# Clients compute "now" on their own clocks; a time this close to ours is not "past".
CLOCK_SKEW = timedelta(seconds=60)


def _exact(value) -> Decimal:
    return normalize_decimal(Decimal(str(value)))


def _error_detail(problems: list[tuple[str, str]]) -> dict:
    """Problems named by relative paths ("", "hour", "[0].name") as DRF's nested error
    detail, which the error handler flattens to "thresholds[0].name" and the like."""
    detail: dict = {}
    for path, message in problems:
        node = detail
        for index, key in _PATH_STEP.findall(path):
            node = node.setdefault(int(index) if index else key, {})
        node.setdefault(NON_FIELD, []).append(message)
    return detail


_PATH_STEP = re.compile(r"\[(\d+)\]|\.?(\w+)")

_THRESHOLD_EXTRAS = {
    "name": {"type": "string", "maxLength": MAX_NAME_LENGTH},
    "customFields": {"type": "object", "additionalProperties": True},
}


@extend_schema_field(
    {
        "type": "array",
        "maxItems": MAX_THRESHOLDS,
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "title": "Using absolute value",
                    "properties": {
                        ABSOLUTE: {"type": "number", "minimum": 0},
                        **_THRESHOLD_EXTRAS,
                    },
                    "required": [ABSOLUTE],
                },
                {
                    "type": "object",
                    "title": "Using percentage of capacity",
                    "properties": {
                        PERCENTAGE: {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                        **_THRESHOLD_EXTRAS,
                    },
                    "required": [PERCENTAGE],
                },
                {
                    "type": "object",
                    "title": "Using value (input only; same as absoluteValue)",
                    "properties": {
                        ABSOLUTE_SYNONYM: {"type": "number", "minimum": 0},
                        **_THRESHOLD_EXTRAS,
                    },
                    "required": [ABSOLUTE_SYNONYM],
                },
            ]
        },
    }
)
class ThresholdListField(serializers.Field):
    """Thresholds by the rules of metering.thresholds: the wire form in, the stored form
    in the model, the wire form out."""

    def to_internal_value(self, data):
        try:
            return thresholds_to_stored(thresholds_parse(data))
        except ThresholdsInvalid as exc:
            raise serializers.ValidationError(_error_detail(exc.problems)) from None

    def to_representation(self, value):
        return thresholds_to_wire(value)


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "type": {
                "type": "string",
                "enum": MeterType.Aggregation.values,
                "description": "Any letter case on input (sum, SUM); answered as shown.",
            }
        },
        "required": ["type"],
    }
)
class AggregationField(serializers.Field):
    """`{"type": "Sum"}` on the wire, in any letter case; one column in the model."""

    _BY_LOWER = {value.lower(): value for value in MeterType.Aggregation.values}

    def to_internal_value(self, data):
        if not isinstance(data, dict) or set(data) != {"type"}:
            raise serializers.ValidationError('Must be an object like {"type": "Sum"}.')
        aggregation = (
            self._BY_LOWER.get(data["type"].lower()) if isinstance(data["type"], str) else None
        )
        if aggregation is None:
            allowed = ", ".join(MeterType.Aggregation.values)
            raise serializers.ValidationError({"type": f"Must be one of: {allowed}."})
        return aggregation

    def to_representation(self, value):
        return {"type": value}


_CRONTAB_FIELD = {"type": "string", "example": "*"}


@extend_schema_field(
    {
        "oneOf": [
            {
                "type": "object",
                "title": "Crontab fields",
                "properties": {
                    "minute": {**_CRONTAB_FIELD, "example": "0"},
                    "hour": {**_CRONTAB_FIELD, "example": "0"},
                    "day": {**_CRONTAB_FIELD, "example": "1"},
                    "month": _CRONTAB_FIELD,
                    "weekday": _CRONTAB_FIELD,
                },
                "required": list(SCHEDULE_FIELDS),
            },
            {
                "type": "object",
                "title": "Cron line (input only)",
                "properties": {"cron": {"type": "string", "example": "0 0 1 * *"}},
                "required": ["cron"],
            },
        ]
    }
)
class ResetScheduleField(serializers.Field):
    """`{"minute", "hour", "day", "month", "weekday"}` on the wire (`{"cron": "…"}` is
    taken too); the cron line in the model."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                'Must be an object like {"minute": "0", "hour": "0", "day": "1", '
                '"month": "*", "weekday": "*"}.'
            )
        if "cron" in data:
            return self._from_cron(data)
        try:
            return schedule_fields_to_cron(data)
        except ScheduleInvalid as exc:
            raise serializers.ValidationError(_error_detail(exc.problems)) from None

    def _from_cron(self, data: dict) -> str:
        if set(data) != {"cron"}:
            raise serializers.ValidationError(
                'Send either "cron" alone or the five crontab fields, not both.'
            )
        expression = data["cron"]
        problem = cron_problem(expression)
        if problem:
            raise serializers.ValidationError({"cron": problem})
        return " ".join(expression.split())

    def to_representation(self, value):
        return cron_to_schedule_fields(value)


class MeterTypeSerializer(TallyModelSerializer):
    """Meter types as the API reads and writes them."""

    account_id = serializers.UUIDField(source="operator_id", read_only=True)
    name = StrictCharField(max_length=80)
    external_ref = StrictCharField(max_length=100, required=False, allow_null=True)
    category = StrictCharField(max_length=50, required=False, allow_null=True)
    description = StrictCharField(max_length=200, required=False, allow_blank=True)
    unit = StrictCharField(max_length=50)
    capacity = NumberField(required=False, allow_null=True, min_value=0)
    timezone = StrictCharField(max_length=64)
    aggregation = AggregationField()
    reset_schedule = ResetScheduleField(source="reset_cron")
    thresholds = ThresholdListField(required=False)
    active_from = DateTimeField(required=False, allow_null=True)
    active_to = DateTimeField(required=False, allow_null=True)
    number_of_meters = serializers.IntegerField(read_only=True)

    class Meta:
        model = MeterType
        fields = [
            "id",
            "account_id",
            "name",
            "external_ref",
            "category",
            "description",
            "unit",
            "aggregation",
            "capacity",
            "timezone",
            "reset_schedule",
            "thresholds",
            "active_from",
            "active_to",
            "number_of_meters",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        immutable_fields = ["aggregation"]

    def validate_name(self, value: str) -> str:
        problem = meter_type_name_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_timezone(self, value: str) -> str:
        problem = timezone_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_category(self, value: str | None) -> str:
        return value or MeterType.DEFAULT_CATEGORY

    def validate_external_ref(self, value: str | None) -> str | None:
        return value or None

    def validate(self, attrs):
        if self.partial and not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        now = timezone.now()
        errors = {}
        for field in ("active_from", "active_to"):
            value = attrs.get(field)
            if value is not None and value < now - CLOCK_SKEW:
                errors[_wire(field)] = "Must not be in the past."
        start = attrs.get("active_from", getattr(self.instance, "active_from", None))
        end = attrs.get("active_to", getattr(self.instance, "active_to", None))
        if start is not None and end is not None and end <= start:
            errors["activeTo"] = "Must be after activeFrom."
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if data.get("numberOfMeters") is None:
            data["numberOfMeters"] = instance.meters.count()
        return data


def _wire(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


class MeterSerializer(TallyModelSerializer):
    """A meter with its current period's state. Capacity and thresholds are the ones in
    force: the meter's own, else its type's."""

    meter_type_id = serializers.UUIDField(read_only=True)
    meter_type_name = serializers.CharField(source="meter_type.name", read_only=True)
    timezone = serializers.CharField(source="meter_type.timezone", read_only=True)
    unit = serializers.CharField(source="meter_type.unit", read_only=True)
    capacity = serializers.SerializerMethodField()
    thresholds = serializers.SerializerMethodField()
    value = NumberField(read_only=True)
    groups = serializers.SerializerMethodField()
    group_breakdowns = serializers.SerializerMethodField()
    meter_meta_data = serializers.SerializerMethodField()

    class Meta:
        model = Meter
        fields = [
            "id",
            "meter_type_id",
            "meter_type_name",
            "meter_key",
            "user_id",
            "custom_fields",
            "value",
            "capacity",
            "thresholds",
            "unit",
            "timezone",
            "period_start",
            "period_end",
            "groups",
            "group_breakdowns",
            "carry_first",
            "carry_last",
            "meter_meta_data",
            "delete_on_reset",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_capacity(self, meter: Meter) -> Decimal | None:
        capacity = meter.effective_capacity
        return None if capacity is None else _exact(capacity)

    def get_thresholds(self, meter: Meter) -> list[dict]:
        return thresholds_to_wire(meter.effective_thresholds)

    def get_groups(self, meter: Meter) -> list[str]:
        return sorted(meter.group_breakdowns)

    def get_group_breakdowns(self, meter: Meter) -> list[dict]:
        return [
            {"group": group, "value": _exact(value)}
            for group, value in sorted(meter.group_breakdowns.items())
        ]

    def get_meter_meta_data(self, meter: Meter) -> dict:
        return {
            "recordCount": meter.record_count,
            "firstEventAt": _timestamp(meter.first_event_at),
            "lastEventAt": _timestamp(meter.last_event_at),
        }


def _timestamp(value):
    return DateTimeField().to_representation(value)


class MeterCreateSerializer(TallySerializer):
    meter_type_id = serializers.UUIDField(required=False)
    meter_type_external_ref = StrictCharField(required=False, max_length=100)
    meter_key = StrictCharField(max_length=36)
    user_id = StrictCharField(max_length=320)
    custom_fields = serializers.DictField(required=False)

    def validate(self, attrs):
        given = [key for key in ("meter_type_id", "meter_type_external_ref") if key in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                "Send exactly one of meterTypeId and meterTypeExternalRef."
            )
        return attrs


class MeterUpdateSerializer(TallySerializer):
    capacity = NumberField(required=False, allow_null=True, min_value=0)
    custom_fields = serializers.DictField(required=False)
    delete_on_reset = serializers.BooleanField(required=False)
    thresholds = ThresholdListField(required=False, allow_null=True)

    class Meta:
        # Refused by the shared mixin when the view passes the meter as instance.
        immutable_fields = ["meterKey", "userId", "meterTypeId", "meterTypeExternalRef"]

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs

    def validate_delete_on_reset(self, value):
        if not isinstance(self.initial_data.get("deleteOnReset"), bool):
            raise serializers.ValidationError("Must be true or false.")
        return value


class MeterPeriodSerializer(TallyModelSerializer):
    value = NumberField(read_only=True)
    group_breakdowns = serializers.SerializerMethodField()

    class Meta:
        model = MeterPeriod
        fields = [
            "id",
            "period_start",
            "period_end",
            "value",
            "group_breakdowns",
            "carry_first",
            "carry_last",
            "record_count",
            "closed_at",
            "corrected_at",
        ]
        read_only_fields = fields

    def get_group_breakdowns(self, period: MeterPeriod) -> list[dict]:
        return [
            {"group": group, "value": _exact(value)}
            for group, value in sorted(period.group_breakdowns.items())
        ]


# -- Billing: accounts, price plans, plan assignments, exchange rates ---------------------


def _currency(value: str) -> str:
    if not CURRENCY_PATTERN.match(value):
        raise serializers.ValidationError(
            "Must be an ISO 4217 code: three upper-case letters, like USD."
        )
    return value


class BillingAccountSerializer(TallyModelSerializer):
    """A billing account, addressed by the operator's own `accountId`."""

    account_id = StrictCharField(max_length=320)
    customer_id = StrictCharField(max_length=320, source="customer.external_id")
    name = StrictCharField(max_length=200, required=False, allow_blank=True)
    invoice_currency = StrictCharField()

    class Meta:
        model = BillingAccount
        fields = ["id", "account_id", "customer_id", "name", "invoice_currency", "created_at"]
        read_only_fields = ["id", "created_at"]
        immutable_fields = ["accountId", "customerId"]

    def validate_account_id(self, value: str) -> str:
        # The id is a path segment (/accounts/{accountId}): it must be addressable.
        if not value.strip() or "/" in value:
            raise serializers.ValidationError("Must be non-blank and contain no '/'.")
        return value

    def validate_customer_id(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Must not be blank.")
        return value

    def validate_invoice_currency(self, value: str) -> str:
        return _currency(value)

    def validate(self, attrs):
        if self.partial and not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs


MAX_TIERS = 20


@extend_schema_field(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_TIERS,
        "nullable": True,
        "items": {
            "type": "object",
            "properties": {
                "upTo": {
                    "type": "number",
                    "nullable": True,
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "description": "Upper bound of the tier (cumulative usage in the "
                    "cycle); null: no bound, allowed for the last tier only.",
                },
                "unitPrice": {"type": "number", "minimum": 0},
            },
            "required": ["upTo", "unitPrice"],
        },
    }
)
class TiersField(serializers.Field):
    """Graduated tiers `[{"upTo": 1000, "unitPrice": 0.1}, {"upTo": null, …}]`: bounds
    positive and strictly rising, only the last open, prices not negative (the rules of
    metering.pricing.tiers_parse, each problem named by its path)."""

    def to_internal_value(self, data):
        if isinstance(data, list) and len(data) > MAX_TIERS:
            raise serializers.ValidationError(f"At most {MAX_TIERS} tiers.")
        try:
            tiers = tiers_parse(data)
        except PricingInvalid as exc:
            if exc.problems[0][0] == "":
                raise serializers.ValidationError(exc.problems[0][1]) from None
            raise serializers.ValidationError(_error_detail(exc.problems)) from None
        return [
            {
                "upTo": None if tier.up_to is None else normalize_decimal(tier.up_to),
                "unitPrice": normalize_decimal(tier.unit_price),
            }
            for tier in tiers
        ]

    def to_representation(self, value):
        return [
            {
                "upTo": None if tier.get("upTo") is None else _exact(tier["upTo"]),
                "unitPrice": _exact(tier["unitPrice"]),
            }
            for tier in value or []
        ]


class PlanRateSerializer(TallySerializer):
    """One meter type's price in a plan."""

    meter_type_id = serializers.UUIDField()
    model = serializers.ChoiceField(choices=PlanRate.Model.choices)
    unit_price = NumberField(required=False, allow_null=True, min_value=0)
    tiers = TiersField(required=False, allow_null=True)

    def validate(self, attrs):
        errors = {}
        unit_price, tiers = attrs.get("unit_price"), attrs.get("tiers")
        if attrs["model"] == PlanRate.Model.PER_UNIT:
            if unit_price is None:
                errors["unitPrice"] = "Required for PER_UNIT rates."
            if tiers:
                errors["tiers"] = "Only GRADUATED rates have tiers."
        else:
            if not tiers:
                errors["tiers"] = "GRADUATED rates need at least one tier."
            if unit_price is not None:
                errors["unitPrice"] = "GRADUATED rates are priced by their tiers."
        if errors:
            raise serializers.ValidationError(errors)
        attrs["tiers"] = tiers or []
        attrs["unit_price"] = unit_price
        return attrs

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.model == PlanRate.Model.GRADUATED:
            data.pop("unitPrice")
        else:
            data.pop("tiers")
        return data


class PricePlanSerializer(TallyModelSerializer):
    """A price plan with its rates, in the operator's base currency. The view passes the
    caller's operator in the context: rates may price only its meter types."""

    name = StrictCharField(max_length=200)
    description = StrictCharField(required=False, allow_blank=True)
    currency = serializers.CharField(source="operator.base_currency", read_only=True)
    rates = PlanRateSerializer(many=True, required=False)

    class Meta:
        model = PricePlan
        fields = ["id", "name", "description", "currency", "rates", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Must not be blank.")
        return value

    def validate_rates(self, rates: list[dict]) -> list[dict]:
        wanted = {rate["meter_type_id"] for rate in rates}
        own = set(
            MeterType.objects.filter(operator=self.context["operator"], pk__in=wanted).values_list(
                "pk", flat=True
            )
        )
        problems, seen = [], set()
        for index, rate in enumerate(rates):
            meter_type_id = rate["meter_type_id"]
            if meter_type_id not in own:
                problems.append((f"[{index}].meterTypeId", "No such meter type."))
            elif meter_type_id in seen:
                problems.append((f"[{index}].meterTypeId", "This meter type already has a rate."))
            seen.add(meter_type_id)
        if problems:
            raise serializers.ValidationError(_error_detail(problems))
        return rates


class CycleSerializer(TallySerializer):
    start = serializers.DateField()
    end = serializers.DateField()


class PlanAssignmentSerializer(TallyModelSerializer):
    """An account on a plan from a day; `firstCycle` is the cycle it starts (cut short
    by a later assignment), from the view's context."""

    account_id = serializers.CharField(source="account.account_id", read_only=True)
    price_plan_id = serializers.UUIDField(source="plan_id", read_only=True)
    price_plan_name = serializers.CharField(source="plan.name", read_only=True)
    first_cycle = serializers.SerializerMethodField()

    class Meta:
        model = PlanAssignment
        fields = [
            "id",
            "account_id",
            "price_plan_id",
            "price_plan_name",
            "effective_from",
            "cycle",
            "anchor_day",
            "first_cycle",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(CycleSerializer(allow_null=True))
    def get_first_cycle(self, assignment: PlanAssignment) -> dict | None:
        cycle = self.context.get("first_cycles", {}).get(assignment.pk)
        if cycle is None:
            return None
        return {"start": cycle.start.isoformat(), "end": cycle.end.isoformat()}


class PlanAssignmentCreateSerializer(TallySerializer):
    """The account (by its `accountId`) and plan must be the caller's operator's."""

    account_id = StrictCharField(max_length=320)
    price_plan_id = serializers.UUIDField()
    effective_from = serializers.DateField(input_formats=["%Y-%m-%d"])
    cycle = serializers.ChoiceField(choices=PlanAssignment.Cycle.choices)
    anchor_day = StrictIntegerField(min_value=1, max_value=31)

    def validate_account_id(self, value: str) -> BillingAccount:
        found = BillingAccount.objects.filter(
            operator=self.context["operator"], account_id=value
        ).first()
        if found is None:
            raise serializers.ValidationError("No such account.")
        return found

    def validate_price_plan_id(self, value) -> PricePlan:
        found = PricePlan.objects.filter(operator=self.context["operator"], pk=value).first()
        if found is None:
            raise serializers.ValidationError("No such price plan.")
        return found

    def validate(self, attrs):
        try:
            Schedule(attrs["effective_from"], attrs["cycle"], attrs["anchor_day"])
        except ValueError as exc:
            raise serializers.ValidationError({"anchorDay": str(exc).capitalize() + "."}) from None
        return attrs


class ExchangeRateSerializer(TallyModelSerializer):
    """How many units of `currency` one unit of the operator's base currency buys from
    `date` on (until the next rate)."""

    currency = serializers.CharField(read_only=True)
    date = serializers.DateField(read_only=True)
    rate = NumberField(read_only=True)

    class Meta:
        model = ExchangeRate
        fields = ["currency", "date", "rate"]


class ExchangeRateSetSerializer(TallySerializer):
    """The body of PUT …/exchange-rates/{currency}/{date}."""

    rate = NumberField()

    def validate_rate(self, value: Decimal) -> Decimal:
        if value <= 0:
            raise serializers.ValidationError("Must be above zero.")
        return value


class ExchangeRateKeySerializer(TallySerializer):
    """The path's two parts: a bad one is a 400 naming it, not a 404."""

    currency = StrictCharField()
    date = serializers.DateField(input_formats=["%Y-%m-%d"])

    def validate_currency(self, value: str) -> str:
        return _currency(value)
