from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from unfold.contrib.filters.admin import AutocompleteSelectFilter
from unfold.decorators import action, display

from collection.models import Collector
from common.admin import (
    LargeTableAdminMixin,
    ModelAdmin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    admin_link,
    changelist_link,
    shortened,
    style_widget,
)
from common.json import InvalidJSON, dumps, dumps_pretty, loads
from streams import services
from streams.diagram import stream_svg
from streams.models import (
    AggregationFlush,
    AggregationSession,
    AggregationStore,
    NodeError,
    Solution,
    Stream,
    StreamExecution,
    StreamKey,
    StreamLogLine,
    StreamVersion,
)
from streams.runtime.runner import node_counts
from streams.selectors import (
    store_group_fields,
    store_node,
    store_session_count,
    stream_config_with_keys,
    stream_version,
)


@admin.register(Solution)
class SolutionAdmin(ModelAdmin):
    list_display = ["name", "operator", "is_default", "stream_count", "created_at"]
    list_filter = ["is_default", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["operator"]
    search_fields = ["name", "operator__name"]
    readonly_fields = ["is_default", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_stream_count=Count("streams"))

    @admin.display(description="streams", ordering="_stream_count")
    def stream_count(self, obj: Solution) -> str:
        return changelist_link(Stream, obj._stream_count, solution__id__exact=obj.pk)


class VersionInline(ReadOnlyInline):
    model = StreamVersion
    fields = ["tag", "is_latest", "schema_version", "created_at", "node_count"]
    ordering = ["-is_latest", "-created_at"]
    show_change_link = True
    per_page = 10

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("stream")

    @admin.display(description="nodes")
    def node_count(self, obj: StreamVersion) -> int:
        return len(obj.config.get("nodes", []))


class KeyInline(ReadOnlyInline):
    model = StreamKey
    fields = ["node_id", "kind", "value"]


class SolutionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Solution) -> str:
        return f"{obj.operator.name} · {obj.name}"


class StreamImportForm(forms.Form):
    solution = SolutionChoiceField(
        queryset=Solution.objects.select_related("operator").order_by("operator__name", "name")
    )
    file = forms.FileField(help_text="A stream export file (JSON), at most 2 MB.")
    on_name_conflict = forms.ChoiceField(
        choices=[(value, value) for value in services.ON_NAME_CONFLICT], initial="overwrite"
    )
    allow_node_deletion = forms.BooleanField(required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            style_widget(field.widget)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 2 * 1024 * 1024:
            raise forms.ValidationError("The file is larger than 2 MB.")
        try:
            return loads(upload.read())
        except InvalidJSON as exc:
            raise forms.ValidationError(f"Not a stream export: {exc.message}") from None


def _collector_ids(config: dict) -> list[str]:
    return [
        str(node.get("params", {}).get("collectorId"))
        for node in config.get("nodes", [])
        if node.get("type") == "readers/online_collection"
        and node.get("params", {}).get("collectorId")
    ]


@admin.register(Stream)
class StreamAdmin(ModelAdmin):
    """Streams are written by importing them (the API, or the list's "Import a stream");
    here they are read, exported and run."""

    list_display = [
        "name",
        "solution",
        "operator",
        "processing_type",
        "enabled",
        "cas",
        "updated_at",
    ]
    list_filter = ["processing_type", "enabled", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["solution", "operator"]
    search_fields = ["name", "description", "=id"]
    fields = [
        "operator",
        "solution",
        "name",
        "description",
        "processing_type",
        "enabled",
        "schedule",
        "next_run_at",
        "collectors",
        "cas",
        "node_activity",
        "created_by",
        "updated_by",
        "created_at",
        "updated_at",
        "export_link",
        "diagram",
        "node_params",
        "latest_configuration",
    ]
    readonly_fields = fields
    inlines = [VersionInline, KeyInline]
    actions = ["download_exports", "execute_now"]
    actions_list = ["import_stream"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # read-only here: streams change by importing them

    def has_import_permission(self, request) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.add_{opts.model_name}")

    @admin.display(description="export")
    def export_link(self, obj: Stream) -> str:
        url = reverse("admin:streams_stream_changelist") + f"?id__exact={obj.pk}"
        return format_html(
            '<a class="text-link" href="{}">select it on the list, then "Download exports"</a>', url
        )

    @admin.display(description="reads collectors")
    def collectors(self, obj: Stream) -> str:
        ids = _collector_ids(stream_version(obj).config)
        found = {str(c.pk): c for c in Collector.objects.filter(pk__in=ids)} if ids else {}
        links = [admin_link(found[pk]) if pk in found else pk for pk in ids]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "-"

    @admin.display(description="diagram")
    def diagram(self, obj: Stream) -> str:
        # stream_svg escapes every text it draws.
        return mark_safe(stream_svg(stream_version(obj).config))  # noqa: S308

    @admin.display(description="nodes")
    def node_params(self, obj: Stream) -> str:
        config = stream_config_with_keys(obj, stream_version(obj))
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            (
                (
                    node.get("id"),
                    node.get("name", ""),
                    node.get("type"),
                    dumps_pretty(node.get("params", {})),
                )
                for node in config.get("nodes", [])
            ),
        )
        return format_html(
            '<details><summary class="cursor-pointer">{} nodes: ids, names, types and '
            "params</summary>"
            '<table class="tally-table"><thead><tr><th>id</th><th>name</th><th>type</th>'
            "<th>params</th></tr></thead><tbody>{}</tbody></table></details>",
            len(config.get("nodes", [])),
            rows,
        )

    @admin.display(description="node activity")
    def node_activity(self, obj: Stream) -> str:
        """Per node: records in, out and failed (all time) and the last error."""
        counts = node_counts(obj.pk)
        errors = {e.node_id: e for e in NodeError.objects.filter(stream=obj)}
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (
                    node.get("name", ""),
                    node.get("id"),
                    node.get("type"),
                    counts.get(node.get("id"), {}).get("in", 0),
                    counts.get(node.get("id"), {}).get("out", 0),
                    counts.get(node.get("id"), {}).get("failed", 0),
                    (
                        f"{errors[node['id']].at:%Y-%m-%d %H:%M:%S} {errors[node['id']].reason}"
                        if node.get("id") in errors
                        else ""
                    ),
                )
                for node in stream_version(obj).config.get("nodes", [])
            ),
        )
        return format_html(
            '<table class="tally-table"><thead><tr><th>node</th><th>id</th><th>type</th>'
            "<th>in</th><th>out</th><th>failed</th><th>last error</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.action(description="Execute the selected batch streams now")
    def execute_now(self, request, queryset) -> None:
        for stream in queryset:
            try:
                services.execution_create(stream=stream, trigger=StreamExecution.Trigger.ADMIN)
            except services.StreamConflict as exc:
                self.message_user(request, f"{stream.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{stream.name}: execution queued.", messages.SUCCESS)

    @admin.display(description="latest configuration")
    def latest_configuration(self, obj: Stream) -> str:
        config = stream_config_with_keys(obj, stream_version(obj))
        return format_html(
            '<details><summary class="cursor-pointer">The export, as JSON</summary>'
            "<pre>{}</pre></details>",
            dumps_pretty(config),
        )

    @action(
        description="Import a stream",
        url_path="import",
        icon="upload",
        permissions=["import"],
    )
    def import_stream(self, request):
        """Import a stream from an uploaded export file, as the API's import does."""
        form = StreamImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            user = request.user
            try:
                result = services.stream_import(
                    operator=data["solution"].operator,
                    solution=data["solution"],
                    config=data["file"],
                    on_name_conflict=data["on_name_conflict"],
                    allow_node_deletion=data["allow_node_deletion"],
                    actor={"type": "user", "id": str(user.pk), "name": user.get_username()},
                )
            except services.StreamConfigInvalid as exc:
                for where, message in exc.problems:
                    form.add_error(None, f"{where}: {message}")
            except services.StreamConflict as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Stream {result.stream.name!r}: {result.action}.")
                change = reverse("admin:streams_stream_change", args=[result.stream.pk])
                return HttpResponseRedirect(change)
        context = {
            **self.admin_site.each_context(request),
            "title": "Import a stream",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/streams/stream/import.html", context)

    @admin.action(description="Download exports (JSON)")
    def download_exports(self, request, queryset) -> HttpResponse:
        streams = list(queryset.select_related("solution"))
        exported = [stream_config_with_keys(s, stream_version(s)) for s in streams]
        body = dumps(exported[0] if len(exported) == 1 else exported)
        name = streams[0].name if len(streams) == 1 else "streams"
        response = HttpResponse(body, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response


@admin.register(StreamVersion)
class StreamVersionAdmin(ReadOnlyAdmin):
    """Each stream's latest configuration and its tagged snapshots."""

    list_display = [
        "version",
        "stream_link",
        "is_latest",
        "schema_version",
        "node_count",
        "created_at",
    ]
    list_display_links = ["version"]
    list_filter = ["is_latest", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["stream"]
    search_fields = ["=stream__id", "stream__name", "tag"]
    ordering = ["-created_at"]
    fields = [
        "operator",
        "stream",
        "tag",
        "is_latest",
        "schema_version",
        "created_by",
        "created_at",
        "diagram",
        "config",
    ]
    readonly_fields = fields

    @admin.display(description="version", ordering="tag")
    def version(self, obj: StreamVersion) -> str:
        return obj.tag or "latest"

    @admin.display(description="stream", ordering="stream__name")
    def stream_link(self, obj: StreamVersion) -> str:
        return admin_link(obj.stream)

    @admin.display(description="nodes")
    def node_count(self, obj: StreamVersion) -> int:
        return len(obj.config.get("nodes", []))

    @admin.display(description="diagram")
    def diagram(self, obj: StreamVersion) -> str:
        return mark_safe(stream_svg(obj.config))  # noqa: S308 (stream_svg escapes its texts)


EXECUTION_STATUS_LABELS = {
    "QUEUED": "info",
    "RUNNING": "warning",
    "SUCCEEDED": "success",
    "FAILED": "danger",
}


@admin.register(StreamExecution)
class StreamExecutionAdmin(ReadOnlyAdmin):
    """Batch executions: read only (run one with the streams list's action)."""

    list_display = [
        "created_at",
        "stream_link",
        "status_label",
        "trigger",
        "started_at",
        "ended_at",
        "records_read",
        "records_failed",
    ]
    list_display_links = ["created_at"]
    list_filter = ["status", "trigger", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["stream"]
    search_fields = ["=id", "stream__name"]
    fields = [
        "id",
        "operator",
        "stream",
        "status",
        "trigger",
        "created_at",
        "started_at",
        "ended_at",
        "records_read",
        "records_failed",
        "counts_table",
        "errors_list",
    ]
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return True

    @admin.display(description="stream", ordering="stream__name")
    def stream_link(self, obj: StreamExecution) -> str:
        return admin_link(obj.stream)

    @display(description="status", ordering="status", label=EXECUTION_STATUS_LABELS)
    def status_label(self, obj: StreamExecution) -> str:
        return obj.status

    @admin.display(description="per node")
    def counts_table(self, obj: StreamExecution) -> str:
        if not obj.node_counts:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (node, counts.get("in", 0), counts.get("out", 0), counts.get("failed", 0))
                for node, counts in obj.node_counts.items()
            ),
        )
        return format_html(
            '<table class="tally-table"><thead><tr><th>node</th><th>in</th><th>out</th>'
            "<th>failed</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="first errors")
    def errors_list(self, obj: StreamExecution) -> str:
        if not obj.errors:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            (
                (error.get("nodeName", ""), error.get("nodeId", ""), error.get("reason", ""))
                for error in obj.errors
            ),
        )
        return format_html(
            '<table class="tally-table"><thead><tr><th>node</th><th>id</th><th>reason</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(NodeError)
class NodeErrorAdmin(ReadOnlyAdmin):
    """The last error of each stream node that met one."""

    list_display = ["at", "stream_link", "node", "reason_shown"]
    list_display_links = ["at"]
    list_filter = [("operator", AutocompleteSelectFilter)]
    list_select_related = ["stream"]
    search_fields = ["=stream__id", "stream__name", "node_id", "node_name"]
    ordering = ["-at"]
    fields = ["operator", "stream", "node_id", "node_name", "reason", "at"]
    readonly_fields = fields

    @admin.display(description="stream", ordering="stream__name")
    def stream_link(self, obj: NodeError) -> str:
        return admin_link(obj.stream)

    @admin.display(description="node", ordering="node_name")
    def node(self, obj: NodeError) -> str:
        return obj.node_name or obj.node_id

    @admin.display(description="reason")
    def reason_shown(self, obj: NodeError) -> str:
        return shortened(obj.reason, 80)


@admin.register(StreamLogLine)
class StreamLogLineAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    """A stream's log (writers/log and script log calls), newest first."""

    list_display = ["created_at", "stream_link", "node_name", "level", "short_message"]
    list_display_links = ["created_at"]
    list_filter = ["level", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["stream"]
    search_fields = ["=stream__id", "node_id", "node_name"]
    fields = [
        "created_at",
        "operator",
        "stream",
        "node_id",
        "node_name",
        "level",
        "message",
        "payload_json",
    ]
    readonly_fields = fields

    @admin.display(description="stream", ordering="stream__name")
    def stream_link(self, obj: StreamLogLine) -> str:
        return admin_link(obj.stream)

    @admin.display(description="message")
    def short_message(self, obj: StreamLogLine) -> str:
        return shortened(obj.message, 80)

    @admin.display(description="payload")
    def payload_json(self, obj: StreamLogLine) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.payload))


class RuntimeOwnedAdmin(ReadOnlyAdmin):
    """Rows the stream runtime writes (stores, sessions, flushes): shown, never added,
    changed or deleted here, where an edit would race the batches that own them."""


@admin.register(AggregationStore)
class AggregationStoreAdmin(RuntimeOwnedAdmin):
    """An aggregator node's store, made when a stream with the node is imported; its id
    is the node's storeId."""

    list_display = ["id", "kind", "stream_link", "node_id", "session_count", "sessions_link"]
    list_filter = ["kind", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["stream"]
    search_fields = ["=id", "stream__name"]
    fields = [
        "id",
        "operator",
        "stream",
        "node_id",
        "node_name",
        "kind",
        "group_fields",
        "session_count",
        "sessions_link",
        "created_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(session_total=store_session_count())

    @admin.display(description="stream", ordering="stream__name")
    def stream_link(self, obj: AggregationStore) -> str:
        return admin_link(obj.stream)

    @admin.display(description="sessions", ordering="session_total")
    def session_count(self, obj: AggregationStore) -> int:
        return obj.session_total

    @admin.display(description="")
    def sessions_link(self, obj: AggregationStore) -> str:
        return changelist_link(AggregationSession, "sessions", store__exact=obj.pk)

    @admin.display(description="node name")
    def node_name(self, obj: AggregationStore) -> str:
        node = store_node(obj)
        return node.get("name", "") if node is not None else "(not in the latest version)"

    @admin.display(description="group fields")
    def group_fields(self, obj: AggregationStore) -> str:
        node = store_node(obj)
        field_lists = store_group_fields(obj.kind, node) if node is not None else []
        return " or ".join(", ".join(fields) for fields in field_lists) or "-"


@admin.register(AggregationSession)
class AggregationSessionAdmin(LargeTableAdminMixin, RuntimeOwnedAdmin):
    """One group of an aggregator, as the runtime keeps it until it is flushed."""

    list_display = ["key", "store", "updated_at", "timeout_at"]
    list_filter = ["store__kind"]
    list_select_related = ["store__stream"]
    search_fields = ["key"]
    fields = [
        "id",
        "operator",
        "store",
        "key",
        "key_values_json",
        "data_json",
        "meta_json",
        "created_at",
        "updated_at",
        "timeout_at",
    ]
    readonly_fields = fields

    @admin.display(description="key values")
    def key_values_json(self, obj: AggregationSession) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.key_values))

    @admin.display(description="data")
    def data_json(self, obj: AggregationSession) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.data))

    @admin.display(description="meta")
    def meta_json(self, obj: AggregationSession) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.meta))


@admin.register(AggregationFlush)
class AggregationFlushAdmin(LargeTableAdminMixin, RuntimeOwnedAdmin):
    """That a session was flushed (kept a week): what makes each flush happen once."""

    list_display = ["key", "store", "flush_type", "session_id", "flushed_at"]
    list_filter = ["flush_type", "store__kind"]
    list_select_related = ["store__stream"]
    search_fields = ["key"]
    fields = ["id", "operator", "store", "session_id", "key", "flush_type", "flushed_at"]
    readonly_fields = fields
