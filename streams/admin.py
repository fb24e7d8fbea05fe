from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from common.admin import ReadOnlyInline
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
class SolutionAdmin(admin.ModelAdmin):
    list_display = ["name", "operator", "is_default", "created_at"]
    list_filter = ["is_default", "operator"]
    list_select_related = ["operator"]
    search_fields = ["name", "operator__name"]
    readonly_fields = ["is_default", "created_at"]


class VersionInline(ReadOnlyInline):
    model = StreamVersion
    fields = ["tag", "is_latest", "schema_version", "created_at", "node_count"]
    ordering = ["-is_latest", "-created_at"]

    @admin.display(description="nodes")
    def node_count(self, obj: StreamVersion) -> int:
        return len(obj.config.get("nodes", []))


class KeyInline(ReadOnlyInline):
    model = StreamKey
    fields = ["node_id", "kind", "value"]


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    """Streams are written by importing them (the API); here they are read and exported."""

    list_display = [
        "name",
        "solution",
        "operator",
        "processing_type",
        "enabled",
        "cas",
        "updated_at",
    ]
    list_filter = ["processing_type", "enabled", "operator"]
    list_select_related = ["solution", "operator"]
    search_fields = ["name", "description", "id"]
    fields = [
        "operator",
        "solution",
        "name",
        "description",
        "processing_type",
        "enabled",
        "schedule",
        "next_run_at",
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

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # read-only here: streams change by importing them

    @admin.display(description="export")
    def export_link(self, obj: Stream) -> str:
        url = reverse("admin:streams_stream_changelist") + f"?id__exact={obj.pk}"
        return format_html('<a href="{}">select it on the list, then "Download exports"</a>', url)

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
            "<table><thead><tr><th>id</th><th>name</th><th>type</th><th>params</th></tr>"
            "</thead><tbody>{}</tbody></table>",
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
            "<table><thead><tr><th>node</th><th>id</th><th>type</th><th>in</th><th>out</th>"
            "<th>failed</th><th>last error</th></tr></thead><tbody>{}</tbody></table>",
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
        return format_html("<pre>{}</pre>", dumps_pretty(config))

    def get_urls(self):
        own = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="streams_stream_import",
            )
        ]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra = {"import_url": reverse("admin:streams_stream_import"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def import_view(self, request):
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


class StreamImportForm(forms.Form):
    solution = forms.ModelChoiceField(queryset=Solution.objects.select_related("operator"))
    file = forms.FileField(help_text="A stream export file (JSON), at most 2 MB.")
    on_name_conflict = forms.ChoiceField(
        choices=[(value, value) for value in services.ON_NAME_CONFLICT], initial="overwrite"
    )
    allow_node_deletion = forms.BooleanField(required=False)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 2 * 1024 * 1024:
            raise forms.ValidationError("The file is larger than 2 MB.")
        try:
            return loads(upload.read())
        except InvalidJSON as exc:
            raise forms.ValidationError(f"Not a stream export: {exc.message}") from None


@admin.register(StreamExecution)
class StreamExecutionAdmin(admin.ModelAdmin):
    """Batch executions: read only (run one with the streams list's action)."""

    list_display = [
        "stream",
        "status",
        "trigger",
        "created_at",
        "started_at",
        "ended_at",
        "records_read",
        "records_failed",
    ]
    list_filter = ["status", "trigger", "operator"]
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

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="per node")
    def counts_table(self, obj: StreamExecution) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.node_counts))

    @admin.display(description="first errors")
    def errors_list(self, obj: StreamExecution) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.errors))


@admin.register(StreamLogLine)
class StreamLogLineAdmin(admin.ModelAdmin):
    """A stream's log (writers/log and script log calls), newest first."""

    list_display = ["created_at", "stream", "node_name", "level", "short_message"]
    list_filter = ["level", "operator"]
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
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="message")
    def short_message(self, obj: StreamLogLine) -> str:
        return obj.message[:120]

    @admin.display(description="payload")
    def payload_json(self, obj: StreamLogLine) -> str:
        return format_html("<pre>{}</pre>", dumps_pretty(obj.payload))


class RuntimeOwnedAdmin(admin.ModelAdmin):
    """Rows the stream runtime writes (stores, sessions, flushes): shown, never added,
    changed or deleted here, where an edit would race the batches that own them."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AggregationStore)
class AggregationStoreAdmin(RuntimeOwnedAdmin):
    """An aggregator node's store, made when a stream with the node is imported; its id
    is the node's storeId."""

    list_display = ["id", "kind", "stream", "node_id", "session_count", "sessions_link"]
    list_filter = ["kind", "operator"]
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

    @admin.display(description="sessions", ordering="session_total")
    def session_count(self, obj: AggregationStore) -> int:
        return obj.session_total

    @admin.display(description="")
    def sessions_link(self, obj: AggregationStore) -> str:
        url = reverse("admin:streams_aggregationsession_changelist") + f"?store__exact={obj.pk}"
        return format_html('<a href="{}">sessions</a>', url)

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
class AggregationSessionAdmin(RuntimeOwnedAdmin):
    """One group of an aggregator, as the runtime keeps it until it is flushed."""

    list_display = ["key", "store", "updated_at", "timeout_at"]
    list_filter = ["store__kind"]
    list_select_related = ["store"]
    search_fields = ["key"]
    show_full_result_count = False
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
class AggregationFlushAdmin(RuntimeOwnedAdmin):
    """That a session was flushed (kept a week): what makes each flush happen once."""

    list_display = ["key", "store", "flush_type", "session_id", "flushed_at"]
    list_filter = ["flush_type", "store__kind"]
    list_select_related = ["store"]
    search_fields = ["key"]
    show_full_result_count = False
    fields = ["id", "operator", "store", "session_id", "key", "flush_type", "flushed_at"]
    readonly_fields = fields
