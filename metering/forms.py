"""Admin forms for meter types and meters: the API's rules, in form fields.

Thresholds are edited as rows (name, kind, number, custom fields) and checked by
metering.thresholds, the same rules the API applies; numbers are shown without the
column's trailing zeros.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from common.json import normalize_decimal
from metering.models import Meter, MeterType, meter_type_name_problem
from metering.schedule import cron_problem, timezone_problem
from metering.thresholds import (
    ABSOLUTE,
    MAX_THRESHOLDS,
    PERCENTAGE,
    ThresholdsInvalid,
    thresholds_from_stored,
    thresholds_parse,
    thresholds_to_stored,
)

KIND_CHOICES = [("", "—"), (ABSOLUTE, "absolute value"), (PERCENTAGE, "% of capacity")]
COLUMNS = ("name", "kind", "number", "custom fields")


def plain_number(value: Any) -> Any:
    """49.5 for a stored 49.5000000000; anything that is not a Decimal as it is."""
    return normalize_decimal(value) if isinstance(value, Decimal) else value


def thresholds_summary(stored: list[dict] | None) -> str:
    """ "EMAIL: 90 %, 10000" for a list page."""
    parts = []
    for threshold in thresholds_from_stored(stored):
        number = plain_number(threshold.number)
        shown = f"{number} %" if threshold.kind == PERCENTAGE else str(number)
        parts.append(f"{threshold.name}: {shown}" if threshold.name else shown)
    return ", ".join(parts) or "-"


class PlainDecimalField(forms.DecimalField):
    """A decimal input that shows 200, not the column's 200.0000000000."""

    def prepare_value(self, value):
        return plain_number(super().prepare_value(value))


class ThresholdRowsWidget(forms.MultiWidget):
    template_name = "metering/widgets/threshold_rows.html"

    def __init__(self, attrs=None):
        widgets = []
        for _ in range(MAX_THRESHOLDS):
            widgets += [
                forms.TextInput(attrs={"size": 18, "maxlength": 100}),
                forms.Select(choices=KIND_CHOICES),
                forms.TextInput(attrs={"size": 10, "inputmode": "decimal"}),
                forms.TextInput(attrs={"size": 40, "placeholder": "a JSON object"}),
            ]
        super().__init__(widgets, attrs)

    def decompress(self, value):
        return ThresholdRowsField.rows_of(value)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        subwidgets = context["widget"]["subwidgets"]
        width = len(COLUMNS)
        context["widget"]["columns"] = COLUMNS
        context["widget"]["rows"] = [
            subwidgets[start : start + width] for start in range(0, len(subwidgets), width)
        ]
        return context


class StoredRowsField(forms.MultiValueField):
    """A JSON value of a model (a list, an object) edited as rows of plain fields.

    The form is given the stored value and shows it as rows (`stored_rows`); what comes
    back is rows, cleaned into the stored shape. Changed means: the rows would store
    something other than what is stored."""

    empty: Any = []  # what is stored when there is nothing: [] or {}

    def is_stored(self, value) -> bool:
        """Whether `value` is the stored shape rather than submitted rows (plain values):
        an object, or a list of objects."""
        if isinstance(self.empty, dict):
            return isinstance(value, dict)
        return isinstance(value, list) and any(isinstance(item, dict) for item in value)

    def stored_rows(self, stored) -> list[Any]:
        raise NotImplementedError

    def prepare_value(self, value):
        if value is None or self.is_stored(value):
            return self.stored_rows(value)
        return value

    def has_changed(self, initial, data) -> bool:
        try:
            return self.clean(data) != (initial or self.empty)
        except forms.ValidationError:
            return True


class ThresholdRowsField(StoredRowsField):
    """Up to five threshold rows in, the stored thresholds list out. Blank rows are
    skipped; every other row must be a threshold by metering.thresholds' rules."""

    widget = ThresholdRowsWidget

    def __init__(self, **kwargs):
        fields = []
        for _ in range(MAX_THRESHOLDS):
            fields += [
                forms.CharField(required=False),
                forms.ChoiceField(choices=KIND_CHOICES, required=False),
                forms.DecimalField(required=False),
                forms.JSONField(required=False),
            ]
        kwargs.setdefault("required", False)
        super().__init__(fields, require_all_fields=False, **kwargs)

    @staticmethod
    def rows_of(stored: list[dict] | None) -> list[Any]:
        """The flat list of row values the widget shows for stored thresholds."""
        values: list[Any] = []
        for threshold in thresholds_from_stored(stored):
            custom = threshold.custom_fields
            values += [
                threshold.name or "",
                threshold.kind,
                plain_number(threshold.number),
                "" if custom is None else forms.JSONField().prepare_value(custom),
            ]
        return values + [None] * (len(COLUMNS) * MAX_THRESHOLDS - len(values))

    def stored_rows(self, stored) -> list[Any]:
        return self.rows_of(stored)

    def compress(self, data_list):
        width = len(COLUMNS)
        items, row_numbers, problems = [], [], []
        for start in range(0, len(data_list), width):
            name, kind, number, custom_fields = data_list[start : start + width]
            row = start // width + 1
            if not name and not kind and number is None and custom_fields in (None, ""):
                continue
            if not kind or number is None:
                problems.append(f"Row {row}: choose a kind and give a number.")
                continue
            item: dict[str, Any] = {kind: number}
            if name:
                item["name"] = name
            if custom_fields not in (None, ""):
                item["customFields"] = custom_fields
            items.append(item)
            row_numbers.append(row)
        if problems:
            raise forms.ValidationError(problems)
        try:
            return thresholds_to_stored(thresholds_parse(items))
        except ThresholdsInvalid as exc:
            raise forms.ValidationError(
                [_row_message(path, message, row_numbers) for path, message in exc.problems]
            ) from None


def _row_message(path: str, message: str, row_numbers: list[int]) -> str:
    if not path.startswith("["):
        return message
    index, _, field = path[1:].partition("]")
    field = field.lstrip(".")
    if field in (ABSOLUTE, PERCENTAGE):
        field = "number"
    elif field == "customFields":
        field = "custom fields"
    where = f"Row {row_numbers[int(index)]}"
    return f"{where}, {field}: {message}" if field else f"{where}: {message}"


def _clean_capacity(value):
    if value is not None and value < 0:
        raise forms.ValidationError("Must not be negative.")
    return value


class MeterTypeForm(forms.ModelForm):
    """Validates like the API: name pattern, cron, timezone, thresholds, capacity."""

    capacity = PlainDecimalField(required=False, max_digits=38, decimal_places=10)
    thresholds = ThresholdRowsField(
        help_text="Reached when the value is at or above the level (at or below, for Min). "
        "Custom fields are a JSON object sent with the alert."
    )

    class Meta:
        model = MeterType
        fields = [
            "operator",
            "name",
            "external_ref",
            "category",
            "description",
            "unit",
            "aggregation",
            "capacity",
            "timezone",
            "reset_cron",
            "thresholds",
            "active_from",
            "active_to",
        ]
        labels = {"reset_cron": "Reset schedule (cron)"}
        help_texts = {
            "reset_cron": "Five crontab fields: minute hour day month weekday, in the "
            "meter type's timezone (0 0 1 * * resets on the 1st at midnight)."
        }

    def clean_name(self):
        problem = meter_type_name_problem(self.cleaned_data["name"])
        if problem:
            raise forms.ValidationError(problem)
        return self.cleaned_data["name"]

    def clean_reset_cron(self):
        problem = cron_problem(self.cleaned_data["reset_cron"])
        if problem:
            raise forms.ValidationError(problem)
        return " ".join(self.cleaned_data["reset_cron"].split())

    def clean_timezone(self):
        problem = timezone_problem(self.cleaned_data["timezone"])
        if problem:
            raise forms.ValidationError(problem)
        return self.cleaned_data["timezone"]

    def clean_thresholds(self):
        return self.cleaned_data.get("thresholds") or []

    def clean_capacity(self):
        return _clean_capacity(self.cleaned_data.get("capacity"))

    def clean_external_ref(self):
        return self.cleaned_data.get("external_ref") or None

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("active_from"), cleaned.get("active_to")
        if start and end and end <= start:
            self.add_error("active_to", "Must be after active from.")
        return cleaned


class MeterForm(forms.ModelForm):
    """A meter's own capacity and thresholds, or its type's."""

    capacity = PlainDecimalField(
        required=False,
        max_digits=38,
        decimal_places=10,
        help_text="Empty: the meter type's capacity applies.",
    )
    uses_type_thresholds = forms.BooleanField(
        required=False,
        label="Use the meter type's thresholds",
        help_text="Untick to give this meter thresholds of its own (the rows below).",
    )
    thresholds = ThresholdRowsField()

    class Meta:
        model = Meter
        fields = [
            "capacity",
            "uses_type_thresholds",
            "thresholds",
            "custom_fields",
            "delete_on_reset",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["uses_type_thresholds"].initial = self.instance.thresholds is None

    def clean_capacity(self):
        return _clean_capacity(self.cleaned_data.get("capacity"))

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("uses_type_thresholds"):
            cleaned["thresholds"] = None
        elif "thresholds" in cleaned:
            cleaned["thresholds"] = cleaned["thresholds"] or []
        return cleaned
