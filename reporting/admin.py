"""Reporting in the admin: metric definitions (with a metric's value for a chosen
customer) and the connector catalogue with each connector's adoption.

`Connector` is a streams model, but its admin lives here: its counts are derived by
`reporting.platform` (connections from collectors, webhook endpoints and stream nodes;
gateway calls from the usage counters), which streams may not import. Django lists it
under Streams all the same.

The hourly rollups of indexed metrics (`MetricRollup`, `MetricDistinctRollup`) have no
page: they are an index, read through a metric's value, and a metric's change page
shows how far its backfill has come.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import capfirst
from unfold.contrib.filters.admin import AutocompleteSelectFilter, RadioFilter

from common.admin import (
    ModelAdmin,
    ReadOnlyAdmin,
    ServiceAdminMixin,
    admin_link,
    adopt_created,
    exact_number,
    shortened,
    style_widget,
)
from common.errors import ServiceConflict
from common.json import ExactJSONEncoder, InvalidJSON, loads
from reporting import definitions
from reporting.models import INDEXED_EVERYTHING, MetricDefinition
from reporting.platform import ConnectorFigures, connector_figures
from reporting.sandbox import SqlFailed, SqlRejected
from reporting.selectors import MetricBackfilling, NoCurrentCycle, metric_value, timeframe_window
from reporting.services import (
    EDITABLE_FIELDS,
    IMMUTABLE_FIELDS,
    MetricNameTaken,
    metric_create,
    metric_delete,
    metric_update,
)
from streams.models import Connector

# -- Metric definitions ---------------------------------------------------------------------

INDEX_STATUS_LABELS = {
    MetricDefinition.IndexStatus.BACKFILLING.value: "warning",
    MetricDefinition.IndexStatus.READY.value: "success",
}

# The API's names of a definition's fields (as `definition_check` reports them) and the
# form's: an error lands on the field it is about, in the API's words.
FORM_FIELD_OF = {
    "queryType": "query_type",
    "aggregationType": "aggregation_type",
    "eventName": "event_name",
    "valueType": "value_type",
    "valueProperty": "value_property",
    "filters": "filters",
    "sql": "sql",
}
COMPUTING_FORM_FIELDS = tuple(FORM_FIELD_OF.values())


def index_status_text(metric: MetricDefinition) -> str:
    """The index status as staff read it: "Backfilling 42%", "Ready", or "" for a
    metric without an index."""
    if metric.index_status == MetricDefinition.IndexStatus.BACKFILLING:
        return f"Backfilling {metric.backfill_percent()}%"
    if metric.index_status == MetricDefinition.IndexStatus.READY:
        return "Ready"
    return ""


class MetricStateFilter(RadioFilter):
    """Live definitions unless asked otherwise: a deleted one is gone from the API and
    only kept for the record."""

    title = "state"
    parameter_name = "state"
    all_option = None
    LIVE, DELETED, ALL = "live", "deleted", "all"

    def lookups(self, request, model_admin):
        return [(self.LIVE, "Live"), (self.DELETED, "Deleted"), (self.ALL, "All")]

    def value(self) -> str:
        return super().value() or self.LIVE

    def queryset(self, request, queryset):
        if self.value() == self.DELETED:
            return queryset.filter(deleted_at__isnull=False)
        if self.value() == self.ALL:
            return queryset
        return queryset.live()


class _FormJSONDecoder(json.JSONDecoder):
    """Tally's exact JSON (fractions as Decimal, as the API reads them) with the error
    Django's JSONField form field expects: it catches json.JSONDecodeError only, and
    `ExactJSONDecoder` raises InvalidJSON, which would fail the page instead of showing
    "Enter a valid JSON." (an empty box too, when a form with errors is shown again)."""

    def decode(self, s: str, *args: Any) -> Any:
        try:
            return loads(s)
        except InvalidJSON as error:
            raise json.JSONDecodeError(error.message, s, 0) from None


class MetricDefinitionForm(forms.ModelForm):
    """A definition's fields, checked together by `reporting.definitions` as the API
    checks them; an error names the API's field, as the API's answer does."""

    filters = forms.JSONField(
        required=False,
        encoder=ExactJSONEncoder,
        decoder=_FormJSONDecoder,
        widget=forms.Textarea(attrs={"rows": 4}),
    )

    class Meta:
        model = MetricDefinition
        fields = ["operator", "name", "description", *COMPUTING_FORM_FIELDS]
        labels = {"sql": "SQL"}
        help_texts = {
            "query_type": "simple: computed from the records when asked; indexed: kept in "
            "hourly rollups (existing records are backfilled first); complex: your SQL.",
            "aggregation_type": "Simple and indexed metrics. Fixed once created.",
            "event_name": "The records' type this metric reads (simple and indexed).",
            "value_type": "Fixed once created. Complex metrics are NUMERIC.",
            "value_property": "Where the value is in a record: $.tokens.output, "
            '$.items[0].n, $["a key"]. Empty for a COUNT of records.',
            "filters": 'JSON, e.g. [{"property": "$.model", "op": "eq", "value": "gpt-4"}]; '
            f"op is one of {', '.join(definitions.FILTER_OPS)}.",
            "sql": "Complex metrics: one SELECT over events(id, type, customer_id, "
            "account_id, event_time, payload) returning one number.",
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self._name_check(cleaned)
        if any(self.has_error(field) for field in COMPUTING_FORM_FIELDS if field in self.fields):
            return cleaned  # checked together once each field is valid alone
        values = {
            field: cleaned.get(field) if field in self.fields else getattr(self.instance, field)
            for field in COMPUTING_FORM_FIELDS
        }
        try:
            definitions.definition_from(values)
        except definitions.DefinitionInvalid as invalid:
            for where, message in invalid.problems:
                self._problem_add(where, message)
        return cleaned

    def _name_check(self, cleaned: dict[str, Any]) -> None:
        # A taken name is the API's 409; here it belongs to the name field. (The service
        # still refuses a name taken meanwhile: the admin shows that on the form too.)
        name = cleaned.get("name")
        operator_id = (
            cleaned["operator"].pk if cleaned.get("operator") else self.instance.operator_id
        )
        if not name or operator_id is None:
            return
        taken = (
            MetricDefinition.objects.live()
            .filter(operator_id=operator_id, name=name)
            .exclude(pk=self.instance.pk)
        )
        if taken.exists():
            self.add_error("name", f"A metric named {name!r} exists already.")

    def _problem_add(self, where: str, message: str) -> None:
        api_field = where.split("[", 1)[0].split(".", 1)[0]
        field = FORM_FIELD_OF.get(api_field)
        if field not in self.fields:
            self.add_error(None, f"{where}: {message}")
        elif where == api_field:
            self.add_error(field, message)
        else:  # filters[1].op: say which filter
            self.add_error(field, f"{where}: {message}")


class MetricValueForm(forms.Form):
    """Which customer and timeframe to compute a metric's value for (a GET form)."""

    prefix = "value"

    customer = forms.CharField(label="Customer id", max_length=320)
    timeframe = forms.ChoiceField(
        choices=[
            (definitions.ALL, "All time"),
            (definitions.RANGE, "Range"),
            (definitions.CURRENT_CYCLE, "Current cycle"),
        ],
        initial=definitions.ALL,
        required=False,  # all time, when a link leaves it out
    )
    start = forms.DateTimeField(
        required=False,
        help_text="Range: included. 2026-01-01 00:00, UTC unless a zone is given.",
    )
    end = forms.DateTimeField(required=False, help_text="Range: excluded.")
    account = forms.CharField(
        label="Billing account",
        required=False,
        max_length=320,
        help_text="Current cycle: which account's, when the customer has several.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            style_widget(field.widget)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("timeframe") or definitions.ALL
        raw: dict[str, Any] = {"type": kind}
        if kind == definitions.RANGE:
            for field in ("start", "end"):
                if cleaned.get(field) is None and not self.has_error(field):
                    self.add_error(field, f"A range needs its {field}.")
            if self.errors:
                return cleaned
            raw.update(start=cleaned["start"].isoformat(), end=cleaned["end"].isoformat())
        elif kind == definitions.CURRENT_CYCLE and cleaned.get("account"):
            raw["accountId"] = cleaned["account"]
        if self.errors:
            return cleaned
        # The API's reading of a timeframe, so both refuse the same ones.
        try:
            cleaned["parsed"] = definitions.timeframe_parse(raw)
        except definitions.DefinitionInvalid as invalid:
            fields = {"timeframe.start": "start", "timeframe.end": "end"}
            for where, message in invalid.problems:
                self.add_error(fields.get(where), message)
        return cleaned


@dataclass
class MetricValueShown:
    """What the value panel shows: the value and what it covers, or why there is none."""

    form: MetricValueForm
    value: str | None = None
    covers: str = ""
    problem: str = ""
    problem_kind: str = "warning"


def _value_text(value: Any) -> str:
    if value is None:
        return "null (no record counted)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(exact_number(value))


def _moment_text(moment: datetime.datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S %Z}"


def _covers_text(customer_id: str, answered: dict) -> str:
    kind = answered["type"]
    if kind == definitions.RANGE:
        span = f"{_moment_text(answered['start'])} to {_moment_text(answered['end'])} (excluded)"
    elif kind == definitions.CURRENT_CYCLE:
        span = (
            f"the current cycle of account {answered['accountId']}: "
            f"{_moment_text(answered['start'])} to {_moment_text(answered['end'])} (excluded)"
        )
    else:
        span = "all time"
    return f"Customer {customer_id}, {span}."


def metric_value_shown(metric: MetricDefinition, params) -> MetricValueShown:
    """The value panel of `metric` for the GET parameters `params`: the value as the
    API's /v1/metrics/{id}/value computes it, or why there is none."""
    if not any(key.startswith(f"{MetricValueForm.prefix}-") for key in params):
        return MetricValueShown(MetricValueForm())
    form = MetricValueForm(params)
    if not form.is_valid():
        return MetricValueShown(form)
    customer_id = form.cleaned_data["customer"]
    try:
        window, answered = timeframe_window(
            operator_id=metric.operator_id,
            customer_id=customer_id,
            timeframe=form.cleaned_data["parsed"],
            now=timezone.now(),
        )
        value = metric_value(
            operator_id=metric.operator_id,
            spec=metric.spec(),
            customer_id=customer_id,
            window=window,
            metric=metric,
        )
    except MetricBackfilling:
        return MetricValueShown(
            form,
            problem=f"The metric is backfilling: its rollups cover {metric.backfill_percent()}% "
            "of the records stored before it. It has a value once it is Ready; ask again "
            "shortly.",
        )
    except NoCurrentCycle as missing:
        return MetricValueShown(form, problem=str(missing))
    except SqlRejected as rejected:
        return MetricValueShown(
            form, problem=f"The metric's SQL is not allowed: {rejected}", problem_kind="error"
        )
    except definitions.DefinitionInvalid as invalid:
        # Stored under other rules (the SQL allowlist changed since, say).
        return MetricValueShown(
            form, problem=f"The stored definition is not valid: {invalid}", problem_kind="error"
        )
    except SqlFailed as failed:
        return MetricValueShown(
            form, problem=f"The metric's SQL failed: {failed}", problem_kind="error"
        )
    return MetricValueShown(
        form, value=_value_text(value), covers=_covers_text(customer_id, answered)
    )


@admin.register(MetricDefinition)
class MetricDefinitionAdmin(ServiceAdminMixin, ModelAdmin):
    """Definitions are written through `reporting.services`, as the API writes them:
    checked the same way, indexed ones backfilled by a task, deletes soft (the row
    stays, with `deleted_at`; the API answers 404)."""

    form = MetricDefinitionForm
    list_display = [
        "name",
        "operator_link",
        "query_type",
        "aggregation",
        "event",
        "value_type",
        "index_status_label",
        "created_at",
    ]
    list_filter = [
        MetricStateFilter,
        ("operator", AutocompleteSelectFilter),
        "query_type",
        "aggregation_type",
        "index_status",
    ]
    list_select_related = ["operator"]
    search_fields = ["name", "event_name", "operator__name"]
    ordering = ["-created_at", "id"]
    # The value panel: a GET form of its own, outside the change form.
    change_form_outer_after_template = "admin/reporting/metricdefinition/value.html"

    BACKFILL_FIELDS = [
        "index_status_label",
        "backfill_percent",
        "backfill_position",
        "backfill_started_at",
        "backfill_finished_at",
    ]
    HISTORY_FIELDS = ["created_at", "updated_at", "deleted_at"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["operator", "name", "description"]}),
            (
                "Definition",
                {
                    "fields": list(COMPUTING_FORM_FIELDS),
                    "description": "Checked as the API checks a definition. The query "
                    "type, aggregation and value type are fixed once the metric exists.",
                },
            ),
        ]
        if obj is None:
            return fieldsets
        if obj.query_type == definitions.INDEXED:
            fieldsets.append(("Index", {"fields": self.BACKFILL_FIELDS}))
        fieldsets.append(("History", {"fields": self.HISTORY_FIELDS}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # The operator owns the metric for life; the immutable fields would make it
        # another metric (the API refuses them on update too).
        return ["operator", *IMMUTABLE_FIELDS, *self.BACKFILL_FIELDS, *self.HISTORY_FIELDS]

    def has_change_permission(self, request, obj=None) -> bool:
        # A deleted definition is kept for the record only.
        if obj is not None and obj.is_deleted:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.is_deleted:
            return False
        return super().has_delete_permission(request, obj)

    # -- Columns and read-only fields

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: MetricDefinition) -> str:
        return admin_link(obj.operator)

    @admin.display(description="aggregation", ordering="aggregation_type")
    def aggregation(self, obj: MetricDefinition) -> str:
        return obj.aggregation_type or "-"

    @admin.display(description="event name", ordering="event_name")
    def event(self, obj: MetricDefinition) -> str:
        return shortened(obj.event_name, 32)

    @admin.display(description="index status", ordering="index_status")
    def index_status_label(self, obj: MetricDefinition) -> str:
        text = "" if obj.is_deleted else index_status_text(obj)
        if not text:
            return "-"
        return render_to_string(
            "unfold/helpers/label.html",
            {"text": text, "type": INDEX_STATUS_LABELS.get(obj.index_status)},
        )

    @admin.display(description="backfill progress")
    def backfill_percent(self, obj: MetricDefinition) -> str:
        percent = obj.backfill_percent()
        return "-" if percent is None else f"{percent}%"

    @admin.display(description="indexed through")
    def backfill_position(self, obj: MetricDefinition) -> str:
        if obj.index_status == MetricDefinition.IndexStatus.NONE:
            return "-"
        if obj.indexed_through >= INDEXED_EVERYTHING:
            return "every record (processing adds new ones as they come)"
        return (
            f"record id {obj.indexed_through} of {obj.backfill_target} (the newest when it began)"
        )

    # -- Saving and deleting through the services

    def save_model(self, request, obj: MetricDefinition, form, change) -> None:
        data = form.cleaned_data
        try:
            if change:
                changes = {
                    name: data[name] for name in form.changed_data if name in EDITABLE_FIELDS
                }
                if changes:
                    metric_update(metric=obj, changes=changes)
                return
            created = metric_create(
                operator=data["operator"],
                name=data["name"],
                query_type=data["query_type"],
                description=data["description"],
                **{name: data[name] for name in COMPUTING_FORM_FIELDS if name != "query_type"},
            )
        except MetricNameTaken as taken:
            raise ServiceConflict(f"A metric named {str(taken)!r} exists already.") from taken
        except MetricDefinition.DoesNotExist as gone:
            raise ServiceConflict("The metric was deleted meanwhile.") from gone
        except definitions.DefinitionInvalid as invalid:  # the form checked it: a race
            raise ServiceConflict(str(invalid)) from invalid
        adopt_created(obj, created)

    def get_deleted_objects(self, objs, request):
        # A soft delete: only the definitions go (their rollups with them), nothing
        # else is touched, so the confirmation lists just them.
        metrics = [metric for metric in objs if not metric.is_deleted]
        opts = self.model._meta
        listed = [
            format_html("{}: {}", capfirst(opts.verbose_name), admin_link(metric))
            for metric in metrics
        ]
        return listed, {opts.verbose_name_plural: len(metrics)}, set(), []

    def delete_model(self, request, obj: MetricDefinition) -> None:
        # Deleted meanwhile: what was asked is done.
        with contextlib.suppress(MetricDefinition.DoesNotExist):
            metric_delete(metric=obj)

    def delete_queryset(self, request, queryset) -> None:
        for metric in queryset.live().order_by("pk"):
            self.delete_model(request, metric)

    # -- The value for a chosen customer

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and not obj.is_deleted:
            # Computed on GET only: the panel is a read, never part of a save.
            params = request.GET if request.method == "GET" else {}
            context["metric_value"] = metric_value_shown(obj, params)
            context["metric_value_keep"] = {
                key: request.GET[key] for key in ("_changelist_filters",) if key in request.GET
            }
        return super().render_change_form(request, context, add, change, form_url, obj)


# -- Connectors ---------------------------------------------------------------------------


@admin.register(Connector)
class ConnectorAdmin(ReadOnlyAdmin):
    """Read-only: the catalogue is seeded by migration and its slugs key the counters."""

    list_display = ["id", "name", "direction"]
    list_filter = ["direction"]
    search_fields = ["id", "name"]
    fields = ["id", "name", "direction", "description"]

    def get_list_display(self, request):
        # The figures of every connector, read once per page (a few queries, whatever
        # the number of rows) and shown through columns that close over them.
        figures: dict[str, ConnectorFigures] = {}

        def figure(obj: Connector) -> ConnectorFigures | None:
            if not figures:
                figures.update((item.id, item) for item in connector_figures())
            return figures.get(obj.pk)

        @admin.display(description="active connections")
        def active_connections(obj: Connector) -> int:
            found = figure(obj)
            return found.connections.active if found else 0

        @admin.display(description="inactive connections")
        def inactive_connections(obj: Connector) -> int:
            found = figure(obj)
            return found.connections.inactive if found else 0

        @admin.display(description="operators using")
        def operators_using(obj: Connector) -> int:
            found = figure(obj)
            return found.operators_using if found else 0

        @admin.display(description="gateway calls")
        def gateway_calls(obj: Connector) -> int:
            found = figure(obj)
            return found.gateway_calls if found else 0

        return [
            "id",
            "name",
            "direction",
            active_connections,
            inactive_connections,
            operators_using,
            gateway_calls,
        ]
